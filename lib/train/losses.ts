/**
 * Training losses composed from differentiable ops (their gradients come from the autograd tape; nothing
 * here has a hand-written backward):
 *   mse(pred, target)            mean((pred - target)^2)
 *   pseudoHuber(pred, target, c) mean(sqrt((pred - target)^2 + c^2) - c)      (TRAINING.md: c = 0.001)
 *   gaussianKl(mean, logvar)     mean(0.5 (mean^2 + exp(logvar) - 1 - logvar)), the KL of the VAE posterior
 *                                N(mean, exp(logvar)) to N(0, 1) per latent element (diffusers' kl() / numel)
 * Means are over every element (reduction 'mean', as the reference training scripts use).
 */
import type { Tensor } from '../tensor';
import * as ops from '../ops';
import { exp, sqrt } from '../ops/unary';

export function mse(pred: Tensor, target: Tensor): Tensor {
  const d = ops.sub(pred, target);
  return ops.mean(ops.mul(d, d));
}

export function pseudoHuber(pred: Tensor, target: Tensor, c = 0.001): Tensor {
  if (!(c > 0)) throw new Error(`pseudoHuber: c must be > 0, got ${c}`);
  const d = ops.sub(pred, target);
  return ops.affine(ops.mean(sqrt(ops.affine(ops.mul(d, d), 1, c * c))), 1, -c);
}

export function gaussianKl(mean: Tensor, logvar: Tensor): Tensor {
  const m2 = ops.mul(mean, mean);
  const t = ops.sub(ops.add(m2, exp(logvar)), ops.affine(logvar, 1, 1));
  return ops.affine(ops.mean(t), 0.5, 0);
}

/** The reparameterised sample mean + exp(logvar / 2) * noise (differentiable in mean and logvar). */
export function gaussianSample(mean: Tensor, logvar: Tensor, noise: Tensor): Tensor {
  return ops.add(mean, ops.mul(exp(ops.affine(logvar, 0.5, 0)), noise));
}
