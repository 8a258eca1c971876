/**
 * Tensor: a JS handle on a core tensor. Ops enqueue on the device's stream and return at once;
 * `await t.data()` is the sync point (it rejects with the first kernel error recorded since the last sync).
 *
 * Memory: `dispose()` frees at once (stream-ordered: kernels still queued keep the storage alive);
 * `tidy(fn)` disposes every tensor created inside fn that fn does not return (fn may be async: scopes follow
 * the async context, so concurrent tidies do not mix); a FinalizationRegistry is only a safety net.
 */
import { AsyncLocalStorage } from 'async_hooks';
import { native, enqueuer, type Handle } from '../native';
import {
  type DType, type DeviceName, checkDType, isFloat,
  f32ToBf16Bits, f32ToF16Bits, bf16BitsToF32, f16BitsToF32,
} from './dtype';

export type { DType, DeviceName } from './dtype';
export type DeviceSetting = DeviceName | 'auto';

let defaultDevice: DeviceName = 'cpu';
let poisonOutputs = false;
let viewHook: ((from: Tensor, view: Tensor) => void) | null = null;

/** @internal autograd follows values through reshape views with this; returns the previous hook. */
export function setViewHook(fn: ((from: Tensor, view: Tensor) => void) | null): typeof viewHook {
  const prev = viewHook;
  viewHook = fn;
  return prev;
}

/** Where new tensors go. 'auto' picks cuda when a GPU is usable, else cpu. 'cuda' without a GPU throws. */
export function setDevice(d: DeviceSetting): DeviceName {
  defaultDevice = resolveDevice(d);
  return defaultDevice;
}
export function getDevice(): DeviceName {
  return defaultDevice;
}
// The addon's CUDA status, asked once: it settles at the first query (cudaGetDeviceCount once per process), and
// each query built a new object (~0.3 us, once for every output of every op on CUDA).
let cudaSt: { available: boolean; reason: string } | undefined;
function cudaStatusOnce(): { available: boolean; reason: string } {
  return (cudaSt ??= native().cudaStatus());
}
export function resolveDevice(d: DeviceSetting | undefined): DeviceName {
  if (d === undefined) return defaultDevice;
  if (d === 'cpu') return 'cpu';
  const st = cudaStatusOnce();
  if (d === 'auto') return st.available ? 'cuda' : 'cpu';
  if (d === 'cuda') {
    if (!st.available) throw new Error(`device 'cuda' requested but ${st.reason}`);
    return 'cuda';
  }
  throw new Error(`unknown device '${String(d)}' (expected 'cpu', 'cuda' or 'auto')`);
}
export function cudaStatus(): { available: boolean; reason: string } {
  return { ...cudaStatusOnce() };
}
/** Debugging/testing: fill every newly allocated float output with NaN so an unwritten element shows. */
export function setPoison(on: boolean): void {
  poisonOutputs = on;
}

// ---- live tensor accounting and scopes ----
interface Scope { tensors: Set<Tensor> }
const scopes = new AsyncLocalStorage<Scope>();
// Live tensors (not disposed) and their bytes are counted by the addon, per handle (memory()).

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: DeviceName;
  private h: Handle | null;

  /**
   * @internal use tensor()/empty()/ops; this wraps an existing native handle (memory() counts it in the addon: a
   * view's bytes as 0, by how its handle was made).
   */
  constructor(handle: Handle, shape: readonly number[], dtype: DType, device: DeviceName, ownShape = false) {
    this.h = handle;
    // ownShape: `shape` is a fresh array nobody else holds (empty()'s checked copy): frozen in place, not copied.
    this.shape = Object.freeze(ownShape ? (shape as number[]) : shape.slice());
    this.dtype = dtype;
    this.device = device;
    scopes.getStore()?.tensors.add(this);
  }

  get size(): number {
    let n = 1;
    for (const s of this.shape) n *= s;
    return n;
  }
  get rank(): number {
    return this.shape.length;
  }
  get disposed(): boolean {
    return this.h === null;
  }
  /** @internal the native handle; throws if disposed. */
  handle(what = 'tensor'): Handle {
    if (this.h === null) throw new Error(`${what} was disposed`);
    return this.h;
  }

  /** The handle for an op's i-th input or output (the error names them; the name is built only then). */
  handleFor(op: string, kind: 'input' | 'output', i: number): Handle {
    if (this.h === null) throw new Error(`${op}: ${kind} ${i} was disposed`);
    return this.h;
  }

  dispose(): void {
    if (this.h === null) return;
    native().dispose(this.h);
    this.h = null;
  }

  /** Waits for queued work and returns the values: f32/f16/bf16 as Float32Array, i32 Int32Array, i64 BigInt64Array. */
  async data(): Promise<Float32Array | Int32Array | BigInt64Array> {
    const buf = await enqueuer().read(this.handle());
    switch (this.dtype) {
      case 'f32': return new Float32Array(buf);
      case 'i32': return new Int32Array(buf);
      case 'i64': return new BigInt64Array(buf);
      case 'f16': {
        const u = new Uint16Array(buf);
        const o = new Float32Array(u.length);
        for (let i = 0; i < u.length; i++) o[i] = f16BitsToF32(u[i]);
        return o;
      }
      case 'bf16': {
        const u = new Uint16Array(buf);
        const o = new Float32Array(u.length);
        for (let i = 0; i < u.length; i++) o[i] = bf16BitsToF32(u[i]);
        return o;
      }
    }
  }
  /** Float values as Float32Array (throws for integer tensors). */
  async floats(): Promise<Float32Array> {
    if (!isFloat(this.dtype)) throw new Error(`floats(): tensor is ${this.dtype}`);
    return (await this.data()) as Float32Array;
  }
  /** Raw little-endian bytes, as stored. */
  async bytes(): Promise<Uint8Array> {
    return new Uint8Array(await enqueuer().read(this.handle()));
  }
  async toArray(): Promise<number[]> {
    const d = await this.data();
    return Array.from(d as ArrayLike<number | bigint>, Number);
  }

  /** A copy on another device (ordered after this tensor's queued work). */
  to(device: DeviceSetting): Tensor {
    const d = resolveDevice(device);
    if (d === this.device) return this;
    return new Tensor(enqueuer().copyTo(this.handle(), d), this.shape, this.dtype, d);
  }

  /** A view with another shape over the same storage (no copy). One dimension may be -1. */
  reshape(shape: readonly number[]): Tensor {
    const s = inferShape(shape, this.size, 'reshape', this.shape);
    const v = new Tensor(native().view(this.handle(), s, null, null), s, this.dtype, this.device);
    if (viewHook) viewHook(this, v);
    return v;
  }

  toString(): string {
    return `Tensor(${this.dtype}[${this.shape.join(',')}]@${this.device})`;
  }
}

export function inferShape(shape: readonly number[], size: number, op: string, from: readonly number[]): number[] {
  const s = shape.slice();
  const neg = s.indexOf(-1);
  const known = s.reduce((a, b) => (b === -1 ? a : a * b), 1);
  if (neg >= 0) {
    if (s.indexOf(-1, neg + 1) >= 0) throw new Error(`${op}: only one dimension may be -1, got [${shape}]`);
    if (known === 0 || size % known !== 0) throw new Error(`${op}: cannot reshape [${from}] to [${shape}]`);
    s[neg] = size / known;
  }
  for (const d of s) if (!Number.isInteger(d) || d < 0) throw new Error(`${op}: invalid shape [${shape}]`);
  if (s.reduce((a, b) => a * b, 1) !== size) throw new Error(`${op}: cannot reshape [${from}] (${size} elements) to [${shape}]`);
  return s;
}

function checkShape(shape: readonly number[], what: string): number[] {
  if (!Array.isArray(shape)) throw new Error(`${what}: shape must be an array of integers`);
  for (const d of shape) if (!Number.isInteger(d) || d < 0) throw new Error(`${what}: invalid shape [${shape.join(',')}]`);
  return shape.slice();
}

export interface TensorOptions { dtype?: DType; device?: DeviceSetting }

/** An uninitialised tensor (NaN-filled when poisoning is on). */
export function empty(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  const s = checkShape(shape, 'empty');
  const dtype = checkDType(opts.dtype ?? 'f32', 'empty');
  const device = resolveDevice(opts.device);
  const t = new Tensor(native().empty(s, dtype, device), s, dtype, device, true);
  if (poisonOutputs && isFloat(dtype) && t.size > 0) enqueuer().run('fill', [], [t.handle()], { value: NaN });
  return t;
}

export function full(shape: readonly number[], value: number, opts: TensorOptions = {}): Tensor {
  const s = checkShape(shape, 'full');
  const dtype = checkDType(opts.dtype ?? 'f32', 'full');
  if (!isFloat(dtype)) throw new Error(`full: dtype ${dtype} is not a float dtype`);
  if (typeof value !== 'number') throw new Error(`full: value must be a number, got ${typeof value === 'string' ? JSON.stringify(value) : String(value)}`);
  const device = resolveDevice(opts.device);
  const t = new Tensor(native().empty(s, dtype, device), s, dtype, device);
  if (t.size > 0) enqueuer().run('fill', [], [t.handle()], { value });
  return t;
}
export const zeros = (shape: readonly number[], opts: TensorOptions = {}) => full(shape, 0, opts);
export const ones = (shape: readonly number[], opts: TensorOptions = {}) => full(shape, 1, opts);

type Data = ArrayLike<number> | Float32Array | Int32Array | BigInt64Array | Uint16Array | readonly number[];

/** A tensor from JS values. Floats are converted to f16/bf16 when asked; ints to i32/i64. */
export function tensor(data: Data, shape?: readonly number[], opts: TensorOptions = {}): Tensor {
  const n = (data as ArrayLike<unknown>).length;
  const s = checkShape(shape ?? [n], 'tensor');
  const size = s.reduce((a, b) => a * b, 1);
  if (size !== n) throw new Error(`tensor: ${n} values do not fill shape [${s.join(',')}] (${size} elements)`);
  const dtype = checkDType(opts.dtype ?? (data instanceof Int32Array ? 'i32' : data instanceof BigInt64Array ? 'i64' : 'f32'), 'tensor');
  const device = resolveDevice(opts.device);
  let buf: ArrayBufferView;
  // Integers must be whole numbers in the dtype's range (3e10 as i32 had wrapped to -64771072, 1.5 truncated).
  const int = (lo: number, hi: number) => (v: unknown, i: number) => {
    const x = Number(v);
    if (!Number.isInteger(x) || x < lo || x > hi) throw new Error(`tensor: value ${String(v)} at ${i} is not a ${dtype} (integers from ${lo} to ${hi})`);
    return x;
  };
  const i64num = int(-(2 ** 63), 2 ** 63 - 1024);  // (the doubles below 2^63)
  const i64 = (v: unknown, i: number): bigint => {
    if (typeof v !== 'bigint') return BigInt(i64num(v, i));
    if (v < -(2n ** 63n) || v >= 2n ** 63n) throw new Error(`tensor: value ${v} at ${i} is not an i64`);
    return v;
  };
  if (dtype === 'f32') buf = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>, Number);
  else if (dtype === 'i32') buf = data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>, int(-(2 ** 31), 2 ** 31 - 1));
  else if (dtype === 'i64') buf = data instanceof BigInt64Array ? data : BigInt64Array.from(data as ArrayLike<number>, i64);
  else if (data instanceof Uint16Array) buf = data; // already half bits
  else {
    const conv = dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits;
    const u = new Uint16Array(n);
    const src = data as ArrayLike<number>;
    for (let i = 0; i < n; i++) u[i] = conv(Number(src[i]));
    buf = u;
  }
  // (the addon reads plain ArrayBuffers; a view of a SharedArrayBuffer, e.g. from a worker, is copied first)
  if (typeof SharedArrayBuffer !== 'undefined' && buf.buffer instanceof SharedArrayBuffer) buf = (buf as Float32Array).slice();
  return new Tensor(enqueuer().fromBuffer(buf, s, dtype, device), s, dtype, device);
}

/**
 * Runs fn and disposes every tensor created during it that is not part of its result (a tensor, or any structure
 * holding tensors: arrays, Maps, Sets, objects, at any depth; see collect). Works with async fn.
 */
export function tidy<T>(fn: () => T): T {
  const scope: Scope = { tensors: new Set() };
  const parent = scopes.getStore();
  const finish = (result: unknown) => {
    const keepSet = new Set<Tensor>();
    collect(result, keepSet);
    for (const t of scope.tensors) if (!keepSet.has(t)) t.dispose();
    // Survivors belong to the enclosing scope.
    if (parent) for (const t of keepSet) if (scope.tensors.has(t)) parent.tensors.add(t);
  };
  let result: T;
  try {
    result = scopes.run(scope, fn);
  } catch (e) {
    finish(undefined);
    throw e;
  }
  if (result && typeof (result as { then?: unknown }).then === 'function') {
    return (result as unknown as Promise<unknown>).then(
      (r) => {
        finish(r);
        return r;
      },
      (e) => {
        finish(undefined);
        throw e;
      },
    ) as unknown as T;
  }
  finish(result);
  return result;
}

/** Takes a tensor out of the enclosing tidy scope, so it survives it. */
export function keep<T extends Tensor>(t: T): T {
  scopes.getStore()?.tensors.delete(t);
  return t;
}

/** The tensors a tidy result holds: through arrays, Maps (keys and values), Sets, plain and null-prototype objects
 * and class instances' own properties, at any depth (each object once, so cycles end). Typed arrays and Buffers
 * hold no tensors and are not walked. (Until session 28 Sets, class instances and anything deeper than 6 levels
 * were not searched: their tensors were disposed under the caller.) */
function collect(v: unknown, out: Set<Tensor>, seen: Set<object> = new Set()): void {
  if (v === null || typeof v !== 'object') return;
  if (v instanceof Tensor) {
    out.add(v);
    return;
  }
  if (seen.has(v) || ArrayBuffer.isView(v) || v instanceof ArrayBuffer || v instanceof Promise) return;
  seen.add(v);
  if (Array.isArray(v) || v instanceof Set) for (const x of v) collect(x, out, seen);
  else if (v instanceof Map) for (const [k, x] of v) {
    collect(k, out, seen);
    collect(x, out, seen);
  }
  else for (const x of Object.values(v)) collect(x, out, seen);
}

export interface MemoryInfo {
  /** JS tensor objects not yet disposed (and their bytes, views counted as 0). */
  tensors: number;
  bytes: number;
  cpu: { allocatedBytes: number; cachedBytes: number; peakBytes: number; liveStorages: number };
  cuda: { allocatedBytes: number; cachedBytes: number; peakBytes: number; liveStorages: number };
  /** Storages (any thread's, any device's) marked as written by an op that failed, still held by a tensor or a
   * queued op: the mark goes with the last of them. */
  failedMarks: number;
}
export function memory(): MemoryInfo {
  const m = native().memory();
  return { tensors: m.tensors, bytes: m.bytes, cpu: m.cpu, cuda: m.cuda, failedMarks: m.failedMarks };
}

/**
 * Returns the device's cached blocks that no queued op may still use to the system (on the CPU, large blocks
 * still read by queued ops go once those ops have run). The allocator keeps freed blocks for reuse, bounded by
 * the peak of memory in use; a long-running service can call this after a burst of large work.
 */
export function emptyCache(device: DeviceName = defaultDevice): void {
  native().emptyCache(checkDeviceName('emptyCache', device));
}
/** Starts memory().<device>.peakBytes again from the bytes in use now (the bound of the CPU allocator's cache too). */
export function resetPeakMemory(device: DeviceName = defaultDevice): void {
  native().resetPeak(checkDeviceName('resetPeakMemory', device));
}
function checkDeviceName(fn: string, device: DeviceName): DeviceName {
  if (device !== 'cpu' && device !== 'cuda') throw new Error(`${fn}: device must be 'cpu' or 'cuda', got ${JSON.stringify(device)}`);
  return device;
}

/** Waits until every op queued on the device so far has run; rejects with a recorded kernel error. */
export function sync(device: DeviceName = defaultDevice): Promise<void> {
  return enqueuer().sync(device);
}
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new Error(`setThreads: threads must be an integer from 1 to 1024, got ${n}`);
  enqueuer().setThreads(n);
}
export function threads(): number {
  return native().threads();
}
