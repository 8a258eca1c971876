/**
 * Unary math ops (native/cpu/unary.cpp, OPS.md): exp, log, sqrt, elementwise, output dtype x's.
 * Their gradients are in unary.grad.ts.
 */
import type { Tensor } from '../tensor';
import { checkFloat, out, runOp } from './runtime';

function unary(op: string, x: Tensor): Tensor {
  checkFloat(op, 'x', x);
  const y = out(x.shape, x);
  if (y.size > 0) runOp(op, [x], [y]);
  return y;
}

/** e^x. @example exp(affine(logvar, 0.5, 0)) // a standard deviation */
export const exp = (x: Tensor): Tensor => unary('exp', x);
/** ln x (NaN for x < 0). */
export const log = (x: Tensor): Tensor => unary('log', x);
/** sqrt x (NaN for x < 0). */
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
