/**
 * Activations (see native/cpu/activation.cpp and OPS.md): silu, gelu (erf), geluTanh, quickGelu, geglu and
 * softmax over the last dim. Output dtype is x's.
 */
import type { Tensor } from '../tensor';
import { checkFloat, checkRank, out, runOp, shapeStr } from './runtime';

function unary(op: string, name: string, x: Tensor): Tensor {
  checkFloat(name, 'x', x);
  const y = out(x.shape, x);
  runOp(op, [x], [y]);
  return y;
}

/** x * sigmoid(x). */
export const silu = (x: Tensor): Tensor => unary('silu', 'silu', x);
/** 0.5 x (1 + erf(x / sqrt 2)). */
export const gelu = (x: Tensor): Tensor => unary('gelu', 'gelu', x);
/** 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
export const geluTanh = (x: Tensor): Tensor => unary('gelu_tanh', 'geluTanh', x);
/** x * sigmoid(1.702 x) (CLIP). */
export const quickGelu = (x: Tensor): Tensor => unary('quick_gelu', 'quickGelu', x);

/** diffusers GEGLU: x [..., 2N] -> x[..., :N] * gelu(x[..., N:]). */
export function geglu(x: Tensor): Tensor {
  const op = 'geglu';
  checkFloat(op, 'x', x);
  checkRank(op, 'x', x, [1, 8]);
  const c = x.shape[x.rank - 1];
  if (c % 2 !== 0) throw new Error(`${op}: x ${shapeStr(x.shape)} must have an even last dim`);
  const y = out([...x.shape.slice(0, -1), c / 2], x);
  runOp(op, [x], [y]);
  return y;
}

/** softmax(scale * x) over the last dim. */
export function softmax(x: Tensor, scale = 1): Tensor {
  const op = 'softmax';
  checkFloat(op, 'x', x);
  checkRank(op, 'x', x, [1, 8]);
  if (!Number.isFinite(scale)) throw new Error(`${op}: scale must be a finite number, got ${scale}`);
  const y = out(x.shape, x);
  runOp(op, [x], [y], { scale });
  return y;
}
