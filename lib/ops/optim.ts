/**
 * Optimizer ops (native/cpu/optim.cpp, OPS.md): the fused in-place AdamW step and sq_norm, the sum of
 * squares that global-norm gradient clipping reads. Neither records on an autograd tape: they act on
 * gradients and optimizer state, never on the path to a loss.
 */
import { Tensor, empty } from '../tensor';
import { isFloat } from '../tensor/dtype';
import { checkSameDevice, runOp, shapeStr } from './runtime';

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step number, for bias correction */
  step: number;
  /** the gradient is multiplied by this first (clipping coefficient / accumulation count / 1 / loss scale) */
  gradScale?: number;
}

function checkF32(op: string, name: string, t: Tensor, n: number): void {
  if (!(t instanceof Tensor)) throw new Error(`${op}: ${name} must be a Tensor`);
  if (t.dtype !== 'f32') throw new Error(`${op}: ${name} must be f32, got ${t.dtype}`);
  if (t.size !== n) throw new Error(`${op}: ${name} ${shapeStr(t.shape)} must have ${n} elements like param`);
}

/**
 * One AdamW step in place: master (f32), m and v are updated; `model` (optional, any float dtype, same size)
 * receives the updated weight in its own dtype (the bf16/f16 copy the network computes with).
 * @example adamwStep(w, g, m, v, { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2, step: 1 })
 */
export function adamwStep(master: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWHyper, model?: Tensor): void {
  const op = 'adamw';
  const n = master.size;
  checkF32(op, 'param', master, n);
  checkF32(op, 'm', m, n);
  checkF32(op, 'v', v, n);
  if (!(grad instanceof Tensor) || !isFloat(grad.dtype)) throw new Error(`${op}: grad must be a float Tensor`);
  if (grad.size !== n) throw new Error(`${op}: grad ${shapeStr(grad.shape)} must have ${n} elements like param ${shapeStr(master.shape)}`);
  if (model && (!isFloat(model.dtype) || model.size !== n))
    throw new Error(`${op}: model weight ${model.dtype}${shapeStr(model.shape)} must be a float tensor with ${n} elements`);
  checkSameDevice(op, { param: master, grad, m, v, model });
  for (const [k, val] of Object.entries({ lr: h.lr, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weightDecay: h.weightDecay, gradScale: h.gradScale ?? 1 }))
    if (!Number.isFinite(val)) throw new Error(`${op}: ${k} must be a finite number, got ${val}`);
  if (!(h.beta1 >= 0 && h.beta1 < 1) || !(h.beta2 >= 0 && h.beta2 < 1)) throw new Error(`${op}: betas must be in [0, 1), got (${h.beta1}, ${h.beta2})`);
  if (!Number.isInteger(h.step) || h.step < 1) throw new Error(`${op}: step must be an integer >= 1, got ${h.step}`);
  const outs = model ? [master, m, v, model] : [master, m, v];
  runOp(op, [master, grad, m, v], outs, {
    lr: h.lr, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weight_decay: h.weightDecay, step: h.step, grad_scale: h.gradScale ?? 1,
  });
}

/**
 * sum(x^2) as an f32 [1] tensor; with `into`, adds to it instead (gathering a global norm over many tensors).
 * The sum is independent of the thread count (fixed chunks, double partials).
 */
export function sqNorm(x: Tensor, into?: Tensor): Tensor {
  const op = 'sqNorm';
  if (!(x instanceof Tensor) || !isFloat(x.dtype)) throw new Error(`${op}: x must be a float Tensor`);
  if (into && (into.dtype !== 'f32' || into.size !== 1)) throw new Error(`${op}: into must be an f32 tensor with one element`);
  if (into) checkSameDevice(op, { x, into });
  const y = into ?? empty([1], { device: x.device });
  if (x.size === 0) {
    if (!into) runOp('fill', [], [y], { value: 0 });
    return y;
  }
  runOp('sq_norm', [x], [y], { accumulate: into ? 1 : 0 });
  return y;
}
