/**
 * Shape ops (see native/cpu/shape.cpp and OPS.md): nearest 2x upsampling on NHWC, concat, strided slice,
 * permute, cast and contiguous copies. Except cast they move bytes and keep the dtype.
 */
import { Tensor, type DType } from '../tensor';
import { checkDType, isFloat } from '../tensor/dtype';
import { checkRank, out, runOp, shapeStr } from './runtime';

function checkTensor(op: string, name: string, t: Tensor): void {
  if (!(t instanceof Tensor)) throw new Error(`${op}: ${name} must be a Tensor`);
}

function normAxis(op: string, axis: number, rank: number, shape: readonly number[]): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank)
    throw new Error(`${op}: axis ${axis} is out of range for shape ${shapeStr(shape)}`);
  return axis < 0 ? axis + rank : axis;
}

/** [N, H, W, C] -> [N, 2H, 2W, C], each pixel repeated 2x2. */
export function upsampleNearest2x(x: Tensor): Tensor {
  const op = 'upsampleNearest2x';
  checkTensor(op, 'x', x);
  checkRank(op, 'x', x, 4);
  const [n, h, w, c] = x.shape;
  const y = out([n, 2 * h, 2 * w, c], x);
  runOp('upsample_nearest2x', [x], [y]);
  return y;
}

/** Joins tensors along axis; all other dims, the dtype and the device must agree. */
export function concat(ts: readonly Tensor[], axis: number): Tensor {
  const op = 'concat';
  if (!Array.isArray(ts) || ts.length === 0) throw new Error(`${op}: needs a non-empty array of tensors`);
  ts.forEach((t, i) => checkTensor(op, `tensor ${i}`, t));
  const first = ts[0];
  const ax = normAxis(op, axis, first.rank, first.shape);
  let total = 0;
  ts.forEach((t, i) => {
    if (t.dtype !== first.dtype) throw new Error(`${op}: tensor ${i} is ${t.dtype} but tensor 0 is ${first.dtype}`);
    if (t.device !== first.device) throw new Error(`${op}: tensor ${i} is on ${t.device} but tensor 0 is on ${first.device}`);
    if (t.rank !== first.rank || t.shape.some((d: number, k: number) => k !== ax && d !== first.shape[k]))
      throw new Error(`${op}: tensor ${i} ${shapeStr(t.shape)} does not match tensor 0 ${shapeStr(first.shape)} outside axis ${ax}`);
    total += t.shape[ax];
  });
  const shape = first.shape.slice();
  shape[ax] = total;
  const y = out(shape, first);
  runOp(op, ts, [y], { axis: ax });
  return y;
}

/** x[..., start : start + step*length : step, ...] along axis (step >= 1). */
export function slice(x: Tensor, axis: number, start: number, length: number, step = 1): Tensor {
  const op = 'slice';
  checkTensor(op, 'x', x);
  const ax = normAxis(op, axis, x.rank, x.shape);
  const n = x.shape[ax];
  if (!Number.isInteger(step) || step < 1) throw new Error(`${op}: step must be an integer >= 1, got ${step}`);
  if (!Number.isInteger(length) || length < 0) throw new Error(`${op}: length must be an integer >= 0, got ${length}`);
  if (!Number.isInteger(start) || start < 0 || (length > 0 && start + step * (length - 1) >= n))
    throw new Error(`${op}: start ${start}, length ${length}, step ${step} reach outside axis ${ax} of x ${shapeStr(x.shape)}`);
  const shape = x.shape.slice();
  shape[ax] = length;
  const y = out(shape, x);
  if (y.size > 0) runOp(op, [x], [y], { axis: ax, start, step });
  return y;
}

/** y.shape[i] = x.shape[dims[i]] (a transposed copy). @example permute(nchw, [0, 2, 3, 1]) // -> NHWC */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  const op = 'permute';
  checkTensor(op, 'x', x);
  const r = x.rank;
  const d = Array.isArray(dims) ? dims.map((v) => (Number.isInteger(v) && v < 0 ? v + r : v)) : [];
  const ok = d.length === r && d.every((v) => Number.isInteger(v) && v >= 0 && v < r) && new Set(d).size === r;
  if (!ok) throw new Error(`${op}: dims [${dims}] is not a permutation of the ${r} dims of x ${shapeStr(x.shape)}`);
  const y = out(d.map((k) => x.shape[k]), x);
  if (y.size > 0) runOp(op, [x], [y], { dims: d });
  return y;
}

/** x itself when it already has dtype, else cast(x, dtype) (no copy for the common no-op case). */
export function asDtype(x: Tensor, dtype: DType): Tensor {
  return x.dtype === dtype ? x : cast(x, dtype);
}

/** A copy converted to dtype: between float dtypes, from i32/i64 to floats, and i32 <-> i64. */
export function cast(x: Tensor, dtype: DType): Tensor {
  const op = 'cast';
  checkTensor(op, 'x', x);
  checkDType(dtype, op);
  if (isFloat(x.dtype) && !isFloat(dtype)) throw new Error(`${op}: cannot cast ${x.dtype} to ${dtype} (float to integer)`);
  const y = out(x.shape, x, dtype);
  if (y.size > 0) runOp(op, [x], [y]);
  return y;
}

/** A new contiguous copy of x (views made with strides become plain row-major tensors). */
export function contiguous(x: Tensor): Tensor {
  checkTensor('contiguous', 'x', x);
  const y = out(x.shape, x);
  if (y.size > 0) runOp('copy', [x], [y]);
  return y;
}

