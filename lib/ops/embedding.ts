/**
 * Embeddings and reductions (see native/cpu/embedding.cpp and OPS.md): the diffusers sinusoidal timestep
 * embedding, row gathers by integer ids, and sumTo / mean (reduce to a broadcast-compatible shape).
 */
import { Tensor } from '../tensor';
import { checkFloat, checkRank, checkSameDevice, out, runOp, shapeStr } from './runtime';

export interface TimestepEmbeddingOptions {
  /** [cos, sin] instead of [sin, cos] (diffusers flip_sin_to_cos; default false). */
  flipSinToCos?: boolean;
  /** diffusers downscale_freq_shift (config freq_shift; default 0). */
  freqShift?: number;
  maxPeriod?: number;
  scale?: number;
}

/**
 * diffusers get_timestep_embedding: t [B] -> [B, dim], float32 arithmetic as torch does it.
 * @example timestepEmbedding(t, 320, { flipSinToCos: true, freqShift: 0 })
 */
export function timestepEmbedding(t: Tensor, dim: number, o: TimestepEmbeddingOptions = {}): Tensor {
  const op = 'timestepEmbedding';
  checkFloat(op, 't', t);
  checkRank(op, 't', t, 1);
  if (!Number.isInteger(dim) || dim < 1) throw new Error(`${op}: dim must be a positive integer, got ${dim}`);
  const maxPeriod = o?.maxPeriod ?? 10000, scale = o?.scale ?? 1, freqShift = o?.freqShift ?? 0;
  if (!(maxPeriod > 0) || !Number.isFinite(maxPeriod)) throw new Error(`${op}: maxPeriod must be a finite number > 0, got ${maxPeriod}`);
  if (!Number.isFinite(freqShift) || !Number.isFinite(scale)) throw new Error(`${op}: freqShift and scale must be finite numbers`);
  if (dim >= 2 && Math.floor(dim / 2) - freqShift === 0) throw new Error(`${op}: dim/2 - freqShift must not be 0 (dim ${dim}, freqShift ${freqShift})`);
  const y = out([t.shape[0], dim], t);
  if (y.size > 0) runOp('timestep_embedding', [t], [y], { flip_sin_to_cos: !!o.flipSinToCos, freq_shift: freqShift, max_period: maxPeriod, scale });
  return y;
}

/**
 * Rows of table [V, D] picked by ids (i32 or i64, any shape) -> [...ids.shape, D] in the table's dtype.
 * An id outside [0, V) fails the op (reported at the next sync) with the id and V.
 */
export function embedding(ids: Tensor, table: Tensor): Tensor {
  const op = 'embedding';
  if (!(ids instanceof Tensor)) throw new Error(`${op}: ids must be a Tensor`);
  if (ids.dtype !== 'i32' && ids.dtype !== 'i64') throw new Error(`${op}: ids must be i32 or i64, got ${ids.dtype}`);
  checkFloat(op, 'table', table);
  checkRank(op, 'table', table, 2);
  checkSameDevice(op, { ids, table });
  const y = out([...ids.shape, table.shape[1]], table);
  if (y.size > 0) runOp(op, [ids, table], [y]);
  return y;
}

/** Checks that shape is a broadcast-compatible reduction target of x (right-aligned; each dim 1 or equal). */
function checkTarget(op: string, x: Tensor, shape: readonly number[]): void {
  const ok = Array.isArray(shape) && shape.length <= x.rank &&
    shape.every((d, i) => Number.isInteger(d) && (d === 1 || d === x.shape[x.rank - shape.length + i]));
  if (!ok) throw new Error(`${op}: cannot reduce x ${shapeStr(x.shape)} to ${shapeStr(shape ?? [])}`);
}

/**
 * Sums x over the dims where shape has 1 (or that shape lacks on the left), times scale: the reduction
 * that undoes broadcasting. @example sumTo(grad, [1, 1, 320]) // bias gradient
 */
export function sumTo(x: Tensor, shape: readonly number[], scale = 1): Tensor {
  const op = 'sumTo';
  checkFloat(op, 'x', x);
  checkTarget(op, x, shape);
  if (!Number.isFinite(scale)) throw new Error(`${op}: scale must be a finite number, got ${scale}`);
  const y = out(shape, x);
  if (y.size > 0) runOp('sum_to', [x], [y], { scale });
  return y;
}

/** Mean over axes (all when omitted); keepDims keeps them as size 1. */
export function mean(x: Tensor, axes?: readonly number[], keepDims = false): Tensor {
  const op = 'mean';
  checkFloat(op, 'x', x);
  const r = x.rank;
  const ax = [...new Set((axes ?? x.shape.map((_, i) => i)).map((a) => {
    if (!Number.isInteger(a) || a < -r || a >= r) throw new Error(`${op}: axis ${a} is out of range for x ${shapeStr(x.shape)}`);
    return a < 0 ? a + r : a;
  }))];
  const kept = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const n = ax.reduce((p, a) => p * x.shape[a], 1);
  if (n === 0) throw new Error(`${op}: mean over an empty axis of x ${shapeStr(x.shape)}`);
  // Without keepDims the kernel writes through a keepDims-shaped view of the squeezed result.
  const y = out(keepDims ? kept : x.shape.filter((_, i) => !ax.includes(i)), x);
  const target = keepDims ? y : y.reshape(kept);
  if (y.size > 0) runOp('sum_to', [x], [target], { scale: 1 / n });
  if (target !== y) target.dispose();
  return y;
}
