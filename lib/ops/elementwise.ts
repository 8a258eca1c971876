/**
 * Elementwise ops (see native/cpu/elementwise.cpp and OPS.md): add/sub/mul/div with numpy broadcasting
 * (b may be a number: then one affine op), affine, clamp, the fused sampler step, fillLike.
 * Mixed float dtypes promote to f32 (as torch promotes f16 + bf16); equal dtypes keep theirs.
 */
import { full, type DType, type Tensor } from '../tensor';
import { checkFloat, checkSameDevice, out, runOp, sameShape, shapeStr } from './runtime';

/** The numpy broadcast of two shapes, or an error naming the op and both shapes. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const s: number[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1, y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`${op}: shapes a ${shapeStr(a)} and b ${shapeStr(b)} do not broadcast`);
    s[i] = x === 1 ? y : x;
  }
  return s;
}

function promote(a: DType, b: DType): DType {
  return a === b ? a : 'f32';
}

function checkNumber(op: string, name: string, v: number): void {
  if (typeof v !== 'number' || Number.isNaN(v)) throw new Error(`${op}: ${name} must be a number, got ${v}`);
}

function binary(op: 'add' | 'sub' | 'mul' | 'div', a: Tensor, b: Tensor | number): Tensor {
  checkFloat(op, 'a', a);
  if (typeof b === 'number') {
    checkNumber(op, 'b', b);
    if (op === 'add') return affine(a, 1, b);
    if (op === 'sub') return affine(a, 1, -b);
    if (op === 'mul') return affine(a, b, 0);
    // a / b as a * (1 / b), the factor in f32: for |b| below 2^-126 (1 / b past FLT_MAX: 1e-3 / 1e-39 gave
    // inf, 0 / 1e-39 NaN) or above 2^126 (1 / b subnormal, its bits lost) through a power of two, exactly:
    // a * 2^64 * (1 / (b 2^64)), or a * (1 / (b 2^-64)) * 2^-64.
    const ab = Math.abs(b);
    if (ab !== 0 && ab < 2 ** -126) return affine(affine(a, 2 ** 64, 0), 1 / (b * 2 ** 64), 0);
    if (ab > 2 ** 126 && Number.isFinite(b)) return affine(affine(a, 1 / (b * 2 ** -64), 0), 2 ** -64, 0);
    return affine(a, 1 / b, 0);
  }
  checkFloat(op, 'b', b);
  checkSameDevice(op, { a, b });
  const shape = sameShape(a.shape, b.shape) ? a.shape : broadcastShapes(op, a.shape, b.shape);
  const y = out(shape, a, promote(a.dtype, b.dtype));
  runOp(op, [a, b], [y]);
  return y;
}

/** a + b with numpy broadcasting. @example add(h, temb.reshape([n, 1, 1, c])) */
export const add = (a: Tensor, b: Tensor | number): Tensor => binary('add', a, b);
/** a - b with numpy broadcasting. */
export const sub = (a: Tensor, b: Tensor | number): Tensor => binary('sub', a, b);
/** a * b with numpy broadcasting. */
export const mul = (a: Tensor, b: Tensor | number): Tensor => binary('mul', a, b);
/** a / b with numpy broadcasting (a number b multiplies by 1/b). */
export const div = (a: Tensor, b: Tensor | number): Tensor => binary('div', a, b);

/** y = a * x + b. */
export function affine(x: Tensor, a: number, b: number): Tensor {
  checkFloat('affine', 'x', x);
  checkNumber('affine', 'a', a);
  checkNumber('affine', 'b', b);
  const y = out(x.shape, x);
  runOp('affine', [x], [y], { a, b });
  return y;
}

/** min(max(x, min), max). */
export function clamp(x: Tensor, min: number, max: number): Tensor {
  checkFloat('clamp', 'x', x);
  checkNumber('clamp', 'min', min);
  checkNumber('clamp', 'max', max);
  if (min > max) throw new Error(`clamp: min ${min} is greater than max ${max}`);
  const y = out(x.shape, x);
  runOp('clamp', [x], [y], { min, max });
  return y;
}

/**
 * The fused sampler update y = a*x + b*eps (+ c*noise), computed in float32 left to right without FMA
 * (lib/schedulers/common.ts schedulerStepRef is its JS twin). Output dtype is x's.
 */
export function schedulerStep(x: Tensor, eps: Tensor, noise: Tensor | null, a: number, b: number, c: number): Tensor {
  const op = 'schedulerStep';
  checkFloat(op, 'x', x);
  checkFloat(op, 'eps', eps);
  if (noise !== null) checkFloat(op, 'noise', noise);
  checkSameDevice(op, { x, eps, noise: noise ?? undefined });
  if (!sameShape(x.shape, eps.shape)) throw new Error(`${op}: eps ${shapeStr(eps.shape)} must have x's shape ${shapeStr(x.shape)}`);
  if (noise && !sameShape(x.shape, noise.shape))
    throw new Error(`${op}: noise ${shapeStr(noise.shape)} must have x's shape ${shapeStr(x.shape)}`);
  checkNumber(op, 'a', a);
  checkNumber(op, 'b', b);
  checkNumber(op, 'c', c);
  const y = out(x.shape, x);
  runOp('scheduler_step', noise ? [x, eps, noise] : [x, eps], [y], { a, b, c });
  return y;
}

/** A tensor shaped like x (same dtype and device) filled with v. */
export function fillLike(x: Tensor, v: number): Tensor {
  checkFloat('fillLike', 'x', x);
  checkNumber('fillLike', 'v', v);
  return full(x.shape, v, { dtype: x.dtype, device: x.device });
}
