/**
 * Parameter declaration and loading for the networks.
 *
 * A network declares every parameter (diffusers name, PyTorch shape, kind) while it is built from its
 * config; the list is then the contract for loading: missing, unexpected and misshapen keys are named in one
 * Error (strict) or reported (strict: false). Conv weights arrive as PyTorch OIHW and are repacked once to
 * OHWI (our NHWC kernels' layout). Matrix weights (linear / conv / embedding tables) may be stored as bf16 or
 * f16 to halve memory; norms and biases stay f32.
 */
import { Tensor, tensor, empty, keep, type DType, type DeviceName } from '../tensor';
import { runOp } from '../ops/runtime';
import { cast, permute } from '../ops/shape';
import { checkFloatWeight, releaseReadScratch } from '../io/safetensors';
import type { RuntimeAdapter } from './layers';

export type ParamKind = 'linear' | 'conv' | 'norm' | 'bias' | 'embedding' | 'other';
export interface ParamSpec { name: string; shape: number[]; kind: ParamKind }

/** What a weight file gives us for one key (lib/io/model_files WeightRef satisfies this). readRaw, when given,
 * returns the stored bytes (little-endian, `dtype`) in the diffusers layout: F32 / F16 / BF16 ones go to the
 * device as they are and are converted and repacked there (see ParamStore.load). */
export interface WeightSource {
  shape: number[];
  source: string;
  readF32(): Float32Array;
  readRaw?(): { dtype: string; data: Uint8Array };
  /** readRaw's bytes in a buffer valid only until the next such read (ParamStore.load copies them at once). */
  readRawTransient?(): { dtype: string; data: Uint8Array };
}

export interface LoadOptions {
  /** storage dtype of matrix weights (linear, conv, embedding): f32 (default), bf16 or f16 */
  dtype?: DType;
  device?: DeviceName;
  /** strict (default): throw listing every missing / unexpected / misshapen key */
  strict?: boolean;
}
export interface LoadReport { missing: string[]; unexpected: string[]; mismatched: { name: string; expected: number[]; got: number[] }[] }

export class ParamStore {
  readonly specs = new Map<string, ParamSpec>();
  private readonly values = new Map<string, Tensor>();
  /** Runtime LoRA adapters per module name (e.g. 'down_blocks.1.attentions.0.proj_in'), applied at forward. */
  readonly adapters = new Map<string, RuntimeAdapter[]>();
  constructor(readonly component: string) {}

  declare(name: string, shape: number[], kind: ParamKind): void {
    if (this.specs.has(name)) throw new Error(`${this.component}: parameter ${name} declared twice`);
    this.specs.set(name, { name, shape, kind });
  }
  /** The loaded tensor for a declared name (conv weights OHWI). */
  get(name: string): Tensor {
    const t = this.values.get(name);
    if (!t) {
      if (!this.specs.has(name)) throw new Error(`${this.component}: no parameter named ${name}`);
      throw new Error(`${this.component}: parameter ${name} is not loaded`);
    }
    return t;
  }
  has(name: string): boolean {
    return this.values.has(name);
  }
  /** Replaces a loaded parameter (LoRA fuse/unfuse); disposes the old one. */
  set(name: string, t: Tensor): void {
    const old = this.values.get(name);
    this.values.set(name, keep(t));
    if (old && old !== t) old.dispose();
  }
  /** Replaces a parameter without disposing the old tensor (the caller keeps it, e.g. LoRA unfuse). */
  replaceKeep(name: string, t: Tensor): void {
    this.values.set(name, keep(t));
  }
  parameterCount(): number {
    let n = 0;
    for (const s of this.specs.values()) n += s.shape.reduce((a, b) => a * b, 1);
    return n;
  }
  get loaded(): boolean {
    return this.values.size > 0;
  }

  /** Loads from a name -> source map (diffusers names within this component). */
  load(src: Map<string, WeightSource>, opts: LoadOptions = {}, fileLabel = 'weights'): LoadReport {
    const strict = opts.strict ?? true;
    const rep: LoadReport = { missing: [], unexpected: [], mismatched: [] };
    for (const [name, spec] of this.specs) {
      const w = src.get(name);
      if (!w) rep.missing.push(name);
      else if (!sameShape(squeezeTrailing(w.shape, spec.shape), spec.shape))
        rep.mismatched.push({ name, expected: spec.shape, got: w.shape });
    }
    for (const name of src.keys()) if (!this.specs.has(name) && !ignorable(name)) rep.unexpected.push(name);
    const bad = rep.missing.length + rep.mismatched.length + (strict ? rep.unexpected.length : 0);
    if (bad > 0 && strict) {
      const parts: string[] = [];
      if (rep.missing.length) parts.push(`missing ${rep.missing.length} keys: ${list(rep.missing)}`);
      if (rep.unexpected.length) parts.push(`unexpected ${rep.unexpected.length} keys: ${list(rep.unexpected)}`);
      if (rep.mismatched.length)
        parts.push(`wrong shape for ${rep.mismatched.length} keys: ${list(rep.mismatched.map((m) => `${m.name} (expected [${m.expected}], got [${m.got}])`))}`);
      throw new Error(`${this.component} (${fileLabel}): ${parts.join('; ')}`);
    }
    const skip = new Set([...rep.missing, ...rep.mismatched.map((m) => m.name)]);
    try {
      for (const [name, spec] of this.specs) {
        if (skip.has(name)) continue;
        const w = src.get(name)!;
        checkFloatWeight(w as { dtype?: string; source: string });
        this.set(name, this.uploadRaw(spec, w, opts) ?? this.upload(spec, w.readF32(), opts));
      }
    } finally {
      releaseReadScratch();
    }
    return rep;
  }

  /** Random weights for benchmarks and tests: matrices uniform with std 0.02 (cheaper to draw than normals),
   * norms ones/zeros, biases zeros. */
  initRandom(seed: number, opts: LoadOptions = {}): void {
    const device = opts.device ?? 'cpu';
    let offset = 0;
    for (const [name, spec] of this.specs) {
      const matrix = isMatrix(spec);
      const dtype = storageDtype(spec, opts);
      const shape = spec.kind === 'conv' ? [spec.shape[0], spec.shape[2], spec.shape[3], spec.shape[1]] : spec.shape;
      const t = empty(shape, { dtype, device });
      if (matrix) {
        const half = 0.02 * Math.sqrt(3);
        runOp('rand', [], [t], { seed, offset: offset++, normal: 0 });
        runOp('affine', [t], [t], { a: 2 * half, b: -half });
      } else {
        runOp('fill', [], [t], { value: name.endsWith('weight') && spec.kind === 'norm' ? 1 : 0 });
      }
      this.set(name, t);
    }
  }

  dispose(): void {
    for (const t of this.values.values()) t.dispose();
    this.values.clear();
  }

  /**
   * The stored bytes of an F32 / F16 / BF16 weight uploaded as they are, then converted to the storage dtype
   * (`cast`) and, for conv weights, repacked OIHW -> OHWI (`permute`) by the native kernels: the same values
   * as upload() below (f16 / bf16 widen exactly; the narrowing rounds to nearest even in both), without the
   * per-element JS loops that made loading SD1.5 take 25 s (f16 -> f32 and the repack were 85% of it). Null
   * for other dtypes and sources without raw bytes.
   */
  private uploadRaw(spec: ParamSpec, w: WeightSource, opts: LoadOptions): Tensor | null {
    // The transient read is safe: tensor() below copies the bytes before anything reads the file again.
    const raw = w.readRawTransient?.() ?? w.readRaw?.();
    if (!raw) return null;
    const fileType: DType | undefined = ({ F32: 'f32', F16: 'f16', BF16: 'bf16' } as Record<string, DType>)[raw.dtype];
    if (!fileType) return null;
    const size = fileType === 'f32' ? 4 : 2, n = spec.shape.reduce((a, b) => a * b, 1);
    if (raw.data.byteLength !== n * size) return null;
    // Typed-array views need aligned offsets; a misaligned slice is copied once.
    const bytes = raw.data.byteOffset % size === 0 ? raw.data : Uint8Array.from(raw.data);
    const values = fileType === 'f32' ? new Float32Array(bytes.buffer, bytes.byteOffset, n) : new Uint16Array(bytes.buffer, bytes.byteOffset, n);
    const dtype = storageDtype(spec, opts);
    const repack = spec.kind === 'conv' && spec.shape[2] * spec.shape[3] > 1;
    // A 1x1 conv weight has the same bytes in OIHW and OHWI.
    const shape = spec.kind === 'conv' && !repack ? [spec.shape[0], 1, 1, spec.shape[1]] : spec.shape;
    const tmp: Tensor[] = [];
    try {
      let t = tensor(values, shape, { dtype: fileType, device: opts.device });
      if (repack) {
        tmp.push(t);
        t = permute(t, [0, 2, 3, 1]);
      }
      if (t.dtype !== dtype) {
        tmp.push(t);
        t = cast(t, dtype);
      }
      return t;
    } finally {
      for (const x of tmp) x.dispose();
    }
  }

  private upload(spec: ParamSpec, data: Float32Array, opts: LoadOptions): Tensor {
    const dtype = storageDtype(spec, opts);
    if (spec.kind === 'conv') {
      const [o, i, kh, kw] = spec.shape;
      return tensor(oihwToOhwi(data, o, i, kh, kw), [o, kh, kw, i], { dtype, device: opts.device });
    }
    return tensor(data, spec.shape, { dtype, device: opts.device });
  }
}

/** Matrix weights (linear, conv, embedding tables, other) take the storage dtype asked for; norms and biases stay f32. */
function isMatrix(spec: ParamSpec): boolean {
  return spec.kind === 'linear' || spec.kind === 'conv' || spec.kind === 'embedding' || spec.kind === 'other';
}
function storageDtype(spec: ParamSpec, opts: LoadOptions): DType {
  return isMatrix(spec) ? opts.dtype ?? 'f32' : 'f32';
}

/** PyTorch conv weight [O, I, kh, kw] -> [O, kh, kw, I]. */
export function oihwToOhwi(w: Float32Array, o: number, i: number, kh: number, kw: number): Float32Array {
  if (kh === 1 && kw === 1) return w;
  const out = new Float32Array(w.length);
  for (let a = 0; a < o; a++)
    for (let c = 0; c < i; c++)
      for (let y = 0; y < kh; y++)
        for (let x = 0; x < kw; x++) out[((a * kh + y) * kw + x) * i + c] = w[((a * i + c) * kh + y) * kw + x];
  return out;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
/** [C, C, 1, 1] given where [C, C] is declared (1x1 conv attention weights in old VAE files). */
function squeezeTrailing(got: number[], want: number[]): number[] {
  if (got.length === want.length + 2 && got[got.length - 1] === 1 && got[got.length - 2] === 1) return got.slice(0, -2);
  return got;
}
function ignorable(name: string): boolean {
  // buffers PyTorch saves that carry no learned state
  return name.endsWith('position_ids') || name.endsWith('num_batches_tracked');
}
function list(xs: string[]): string {
  return xs.length > 12 ? `${xs.slice(0, 12).join(', ')}, ... (${xs.length - 12} more)` : xs.join(', ');
}

export { Tensor };
export const _test = { squeezeTrailing };
