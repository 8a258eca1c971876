/**
 * Training state saved and resumed: trainable weights (their f32 masters), AdamW moments, EMA shadows, the
 * step, RNG state and caller extras (data position, Philox offset, loss scale, stage), in one safetensors file.
 *
 * Atomic: lib/io/safetensors writes a temporary file beside the target, fsyncs it and renames it over the
 * target, so a crash or an error while saving leaves the previous checkpoint as it was.
 * Checked: the file carries a SHA-256 of every tensor's bytes and a fingerprint (optimizer hyper-parameters,
 * the caller's model description). load validates the header, the fingerprint, every name and shape and the
 * digest BEFORE it writes anything, so a corrupt, truncated or mismatched file gives an Error that says
 * which, and the running state is untouched. The metadata the digest does not cover is checked field by field
 * (step, ema, rng, extra, and the caller's extra through checkExtra): an Error names the file and the field.
 * Tensor keys: `master.<name>`, `exp_avg.<name>`, `exp_avg_sq.<name>`, `ema.<name>` (all F32);
 * metadata `hypersd_train_state` = JSON { version, step, rng, ema, fingerprint, extra, sha256 }.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import { SafeTensors, saveSafetensors, type StTensorIn } from '../io/safetensors';
import type { Tensor } from '../tensor';
import { AdamW, assignInPlace } from './optimizer';
import type { EMA } from './ema';
import { isRngState, type Rng } from './rng';
import { show, checkOutputFolder } from './show';

const FORMAT = 'hypersd_train_state';
const VERSION = 1;

export interface TrainingState {
  optimizer: AdamW;
  ema?: EMA | null;
  rng?: Rng | null;
  /** what the run is (model config, LoRA rank, stage...): a resumed run must describe itself the same way */
  fingerprint?: Record<string, unknown>;
}

interface Meta {
  version: number;
  step: number;
  rng: number[] | null;
  ema: { decay: number; updates: number } | null;
  fingerprint: unknown;
  extra: Record<string, unknown>;
  sha256: string;
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

function fingerprintOf(s: TrainingState): string {
  return stableJson({ optimizer: s.optimizer.describe(), model: s.fingerprint ?? null, ema: s.ema ? { decay: s.ema.decay, warmup: s.ema.warmup } : null });
}

/** Every tensor the state consists of, by checkpoint key. */
function stateTensors(s: TrainingState): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const name of s.optimizer.params.keys()) {
    out.set(`master.${name}`, s.optimizer.masters.get(name)!);
    out.set(`exp_avg.${name}`, s.optimizer.m.get(name)!);
    out.set(`exp_avg_sq.${name}`, s.optimizer.v.get(name)!);
    if (s.ema) out.set(`ema.${name}`, s.ema.shadow.get(name)!);
  }
  return out;
}

function digest(keys: string[], bytesOf: (k: string) => Uint8Array): string {
  const h = crypto.createHash('sha256');
  for (const k of [...keys].sort()) {
    h.update(k);
    h.update(bytesOf(k));
  }
  return h.digest('hex');
}

/**
 * Saves the state to `file` atomically. `extra` is any JSON the caller needs to resume (data position...).
 * @example await saveCheckpoint('run/state.safetensors', { optimizer, ema, rng, fingerprint: { unet: cfg } }, { philox: 12 })
 */
export async function saveCheckpoint(file: string, s: TrainingState, extra: Record<string, unknown> = {}): Promise<void> {
  if (typeof file !== 'string' || file === '') throw new Error(`saveCheckpoint: file must be a non-empty path, got ${JSON.stringify(file)}`);
  if (extra === null || typeof extra !== 'object' || Array.isArray(extra)) throw new Error(`${file}: checkpoint extra data must be an object`);
  let extraJson: Record<string, unknown>;
  try {
    extraJson = JSON.parse(JSON.stringify(extra));
  } catch (e) {
    throw new Error(`${file}: checkpoint extra data is not JSON: ${(e as Error).message}`);
  }
  // (before reading the state back from the device: the temporary file would otherwise be the one named)
  checkOutputFolder(file, 'save the checkpoint');
  const tensors = stateTensors(s);
  const data: Record<string, StTensorIn> = {};
  const bytes = new Map<string, Uint8Array>();
  for (const [k, t] of tensors) {
    const f = await t.floats();
    bytes.set(k, new Uint8Array(f.buffer, f.byteOffset, f.byteLength));
    data[k] = { dtype: 'F32', shape: [...t.shape], data: f };
  }
  const meta: Meta & { fingerprintKey: string } = {
    version: VERSION,
    step: s.optimizer.stepCount,
    rng: s.rng ? s.rng.getState() : null,
    ema: s.ema ? { decay: s.ema.decay, updates: s.ema.updates } : null,
    fingerprint: JSON.parse(fingerprintOf(s)),
    fingerprintKey: fingerprintOf(s),
    extra: extraJson,
    sha256: digest([...bytes.keys()], (k) => bytes.get(k)!),
  };
  saveSafetensors(file, data, { format: FORMAT, [FORMAT]: JSON.stringify(meta) });
}

export interface LoadedCheckpoint { step: number; extra: Record<string, unknown> }

export interface LoadCheckpointOptions {
  /** checks the caller's extra data before anything changes; what it throws becomes an Error naming the file */
  checkExtra?: (extra: Record<string, unknown>) => void;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * The metadata fields a resume relies on, by type and range (the SHA-256 covers only the tensor bytes): a step
 * that is not a safe integer, EMA update counts that are not counts, a missing RNG state or extra data that is
 * not an object had loaded and broken the run later (NaN EMA weights, a failing kernel, a resume that is no
 * longer bit-exact).
 */
function checkMeta(meta: Meta & { fingerprintKey: string }, s: TrainingState, bad: (msg: string) => never): void {
  if (typeof meta.fingerprintKey !== 'string') bad('corrupt checkpoint: field fingerprintKey is missing or not a string');
  if (typeof meta.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(meta.sha256)) bad(`corrupt checkpoint: field sha256 must be 64 hex digits, got ${show(meta.sha256)}`);
  if (!isCount(meta.step)) bad(`corrupt checkpoint: field step must be an integer from 0 to 2^53 - 1, got ${show(meta.step)}`);
  if (meta.ema !== null) {
    if (!isObject(meta.ema)) bad(`corrupt checkpoint: field ema must be an object or null, got ${show(meta.ema)}`);
    const { decay, updates } = meta.ema;
    if (typeof decay !== 'number' || !(decay >= 0 && decay <= 1)) bad(`corrupt checkpoint: field ema.decay must be a number in [0, 1], got ${show(decay)}`);
    if (!isCount(updates)) bad(`corrupt checkpoint: field ema.updates must be an integer >= 0, got ${show(updates)}`);
  }
  if (meta.rng !== null) {
    if (!isRngState(meta.rng)) bad(`corrupt checkpoint: field rng must be four u32 words, not all zero, or null, got ${show(meta.rng)}`);
  } else if (s.rng) bad('corrupt checkpoint: field rng is null but this run has an RNG state to restore (the resume would not draw what the unbroken run would)');
  if (!isObject(meta.extra)) bad(`corrupt checkpoint: field extra must be an object, got ${show(meta.extra)}`);
}

/**
 * Restores the state saved by saveCheckpoint into the same kind of run. Throws (changing nothing) when the
 * file is missing, corrupt, truncated, from another kind of run or for other tensors.
 */
export async function loadCheckpoint(file: string, s: TrainingState, o: LoadCheckpointOptions = {}): Promise<LoadedCheckpoint> {
  if (!fs.existsSync(file)) throw new Error(`${file}: no such checkpoint`);
  let st: SafeTensors;
  try {
    st = SafeTensors.open(file);
  } catch (e) {
    throw new Error(`${file}: corrupt checkpoint: ${(e as Error).message}`);
  }
  try {
    const bad = (msg: string): never => {
      throw new Error(`${file}: ${msg}`);
    };
    if (st.metadata.format !== FORMAT || !st.metadata[FORMAT]) bad(`not a hypersd training checkpoint (metadata format '${st.metadata.format ?? ''}')`);
    let meta: Meta & { fingerprintKey: string };
    try {
      meta = JSON.parse(st.metadata[FORMAT]);
    } catch {
      return bad('corrupt checkpoint: its state metadata is not valid JSON');
    }
    if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) return bad('corrupt checkpoint: its state metadata is not a JSON object');
    if (meta.version !== VERSION) bad(`checkpoint format version ${meta.version} is not supported (expected ${VERSION})`);
    checkMeta(meta, s, bad);
    const want = fingerprintOf(s);
    if (meta.fingerprintKey !== want)
      bad(`checkpoint does not match this run: it was saved by ${describeDiff(meta.fingerprintKey, want)}`);
    if (!!meta.ema !== !!s.ema) bad(`checkpoint ${meta.ema ? 'has' : 'has no'} EMA weights but this run ${s.ema ? 'uses' : 'does not use'} EMA`);
    const tensors = stateTensors(s);
    const keys = st.keys();
    const missing = [...tensors.keys()].filter((k) => !st.has(k));
    const unexpected = keys.filter((k) => !tensors.has(k));
    const misshapen = [...tensors].filter(([k, t]) => st.has(k) && (st.info(k).dtype !== 'F32' || st.info(k).shape.join(',') !== t.shape.join(',')))
      .map(([k, t]) => `${k} (file ${st.info(k).dtype}[${st.info(k).shape}], run [${t.shape}])`);
    if (missing.length || unexpected.length || misshapen.length) {
      const parts: string[] = [];
      const list = (xs: string[]) => (xs.length > 6 ? `${xs.slice(0, 6).join(', ')}, ... (${xs.length - 6} more)` : xs.join(', '));
      if (missing.length) parts.push(`missing ${missing.length} tensors: ${list(missing)}`);
      if (unexpected.length) parts.push(`${unexpected.length} tensors this run does not have: ${list(unexpected)}`);
      if (misshapen.length) parts.push(`wrong shape for ${misshapen.length}: ${list(misshapen)}`);
      bad(`checkpoint does not match this run's trainable tensors: ${parts.join('; ')}`);
    }
    const raw = new Map<string, Buffer>();
    for (const k of keys) raw.set(k, st.readRaw(k));
    if (digest(keys, (k) => raw.get(k)!) !== meta.sha256) bad('corrupt checkpoint: tensor data does not match its SHA-256 (damaged or truncated file)');
    if (o.checkExtra) {
      try {
        o.checkExtra(meta.extra);
      } catch (e) {
        bad(`corrupt checkpoint: ${(e as Error).message}`);
      }
    }
    // Everything checked: now change the running state.
    for (const [k, t] of tensors) {
      const b = raw.get(k)!;
      assignInPlace(t, new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4));
    }
    s.optimizer.syncModelWeights();
    s.optimizer.stepCount = meta.step;
    if (s.ema && meta.ema) s.ema.updates = meta.ema.updates;
    if (s.rng && meta.rng) s.rng.setState(meta.rng);
    return { step: meta.step, extra: meta.extra };
  } finally {
    st.close();
  }
}

function describeDiff(saved: string, now: string): string {
  const a = JSON.parse(saved), b = JSON.parse(now);
  const diffs: string[] = [];
  const walk = (x: unknown, y: unknown, p: string) => {
    if (diffs.length >= 4) return;
    if (x && y && typeof x === 'object' && typeof y === 'object' && !Array.isArray(x) && !Array.isArray(y)) {
      for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) walk((x as Record<string, unknown>)[k], (y as Record<string, unknown>)[k], p ? `${p}.${k}` : k);
    } else if (stableJson(x) !== stableJson(y)) diffs.push(`${p}: checkpoint ${short(x)} vs run ${short(y)}`);
  };
  walk(a, b, '');
  return `a different configuration (${diffs.join('; ')})`;
}

function short(v: unknown): string {
  const s = stableJson(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
