/**
 * Training losses composed from differentiable ops (their gradients come from the autograd tape; nothing
 * here has a hand-written backward):
 *   mse(pred, target)            mean((pred - target)^2)
 *   weightedMse(pred, target, w) mean(w_b (pred - target)^2), one weight per batch item (w [B]): the
 *                                per-timestep weighting of min-SNR training
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

export function weightedMse(pred: Tensor, target: Tensor, w: Tensor): Tensor {
  const B = pred.shape[0];
  if (w.size !== B) throw new Error(`weightedMse: ${w.size} weights for a batch of ${B}`);
  const d = ops.sub(pred, target);
  return ops.mean(ops.mul(ops.mul(d, d), w.reshape([B, ...pred.shape.slice(1).map(() => 1)])));
}

/**
 * Min-SNR-gamma loss weights for epsilon prediction (Hang et al. 2023; diffusers' --snr_gamma, 5 recommended):
 * w = min(SNR, gamma) / SNR with SNR = a / (1 - a), so the many easy low-noise steps stop dominating the
 * gradient and the global, prompt-dependent structure decided at high noise is learned sooner.
 */
export function minSnrWeights(alphasCumprod: ArrayLike<number>, timesteps: readonly number[], gamma = 5): Float32Array {
  return Float32Array.from(timesteps, (t) => {
    const snr = alphasCumprod[t] / (1 - alphasCumprod[t]);
    return Math.min(snr, gamma) / snr;
  });
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
