/**
 * AdamW over named trainable tensors, with global-norm gradient clipping and f32 master weights.
 *
 * - f32 trainables are updated in place (the tensor the network reads is the master). bf16/f16 trainables get
 *   an f32 master copy; the fused `adamw` op writes the updated master and the narrowed model weight in one
 *   pass (lib/ops/optim.ts). Either way the Tensor objects the network holds stay the same.
 * - Clipping: total = ||grads|| * gradScale over all trainables (sq_norm op, one sync); coefficient
 *   min(1, maxGradNorm / (total + 1e-6)) as torch.nn.utils.clip_grad_norm_; it is folded into the op's
 *   grad_scale, so clipping costs no extra pass. A non-finite norm skips the step (GradScaler semantics).
 * - A trainable without a gradient this step (no path to the loss) is left alone, as PyTorch leaves p.grad None.
 * Defaults (TRAINING.md): betas (0.9, 0.999), eps 1e-8, weight decay 1e-2, clip 1.0, lr 1e-4.
 * Bad input is an Error naming the option before anything changes: lr >= 0, eps > 0, weightDecay >= 0, a Map
 * with each tensor once; step() checks gradScale (finite, > 0), every gradient and decay() before it updates
 * anything, and gradients that match no trainable are an Error (not a step of nothing).
 */
import { Tensor, tensor, zeros, keep, type DType } from '../tensor';
import * as ops from '../ops';
import { adamwStep, sqNorm } from '../ops/optim';
import type { LrSchedule } from './schedule';
import { show, checkOptionKeys } from './show';

export interface AdamWOptions {
  /** a number or a schedule of the 1-based step (default 1e-4) */
  lr?: number | LrSchedule;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** global-norm clip (default 1.0; null: no clipping, the norm is still reported) */
  maxGradNorm?: number | null;
  /** which trainables get weight decay (default: all, as torch.optim.AdamW) */
  decay?: (name: string) => boolean;
}

export interface StepInfo {
  step: number;
  lr: number;
  /** the global gradient norm before clipping (after gradScale) */
  gradNorm: number;
  clipCoef: number;
  /** true when the gradients were not finite and nothing changed */
  skipped: boolean;
}

const ADAMW_OPTIONS = ['lr', 'betas', 'eps', 'weightDecay', 'maxGradNorm', 'decay'];

export class AdamW {
  readonly params: ReadonlyMap<string, Tensor>;
  /** f32 master per name (the param itself when it is f32) */
  readonly masters = new Map<string, Tensor>();
  readonly m = new Map<string, Tensor>();
  readonly v = new Map<string, Tensor>();
  /** optimizer steps taken (the next step is stepCount + 1) */
  stepCount = 0;
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  readonly maxGradNorm: number | null;
  private readonly lrAt: LrSchedule;
  private readonly decay: (name: string) => boolean;
  /** the trainable tensors (what a gradient may be keyed by) */
  private readonly trainables: ReadonlySet<Tensor>;

  constructor(params: ReadonlyMap<string, Tensor>, o: AdamWOptions = {}) {
    // Everything is checked before anything is allocated (a bad option is one Error naming it).
    if (!(params instanceof Map)) throw new Error('AdamW: params must be a Map of name -> trainable Tensor');
    if (params.size === 0) throw new Error('AdamW: no trainable tensors');
    checkOptionKeys('AdamW', o, ADAMW_OPTIONS);
    const lr = o.lr ?? 1e-4;
    if (typeof lr === 'number') {
      if (!(Number.isFinite(lr) && lr >= 0)) throw new Error(`AdamW: lr must be a finite number >= 0, got ${lr}`);
    } else if (typeof lr !== 'function') throw new Error(`AdamW: lr must be a number or a schedule function of the step, got ${show(lr)}`);
    const betas = o.betas ?? [0.9, 0.999];
    if (!Array.isArray(betas) || betas.length !== 2 || !betas.every((b) => typeof b === 'number' && b >= 0 && b < 1))
      throw new Error(`AdamW: betas must be two numbers in [0, 1), got ${show(betas)}`);
    const eps = o.eps ?? 1e-8;
    // (eps 0 turns a zero gradient into 0 / 0 = NaN; a negative eps can divide by zero too)
    if (!(typeof eps === 'number' && Number.isFinite(eps) && eps > 0)) throw new Error(`AdamW: eps must be a finite number > 0, got ${show(eps)}`);
    const weightDecay = o.weightDecay ?? 1e-2;
    if (!(typeof weightDecay === 'number' && Number.isFinite(weightDecay) && weightDecay >= 0))
      throw new Error(`AdamW: weightDecay must be a finite number >= 0, got ${show(weightDecay)}`);
    const maxGradNorm = o.maxGradNorm === undefined ? 1.0 : o.maxGradNorm;
    if (maxGradNorm !== null && !(typeof maxGradNorm === 'number' && maxGradNorm > 0))
      throw new Error(`AdamW: maxGradNorm must be a number > 0 or null, got ${show(maxGradNorm)}`);
    if (o.decay !== undefined && typeof o.decay !== 'function') throw new Error(`AdamW: decay must be a function (name) => boolean, got ${show(o.decay)}`);
    const byTensor = new Map<Tensor, string>();
    for (const [name, p] of params) {
      if (typeof name !== 'string' || name === '') throw new Error(`AdamW: trainable names must be non-empty strings, got ${show(name)}`);
      if (!(p instanceof Tensor)) throw new Error(`AdamW: trainable ${name} is not a Tensor`);
      if (p.disposed) throw new Error(`AdamW: trainable ${name} was disposed`);
      if (p.dtype !== 'f32' && p.dtype !== 'bf16' && p.dtype !== 'f16') throw new Error(`AdamW: trainable ${name} must be a float tensor, got ${p.dtype}`);
      const other = byTensor.get(p);
      // (it would be updated twice per step, with two sets of moments)
      if (other !== undefined) throw new Error(`AdamW: trainables ${other} and ${name} are the same tensor`);
      byTensor.set(p, name);
    }
    this.params = params;
    this.trainables = new Set(byTensor.keys());
    this.lrAt = typeof lr === 'number' ? () => lr : lr;
    this.betas = [betas[0], betas[1]];
    this.eps = eps;
    this.weightDecay = weightDecay;
    this.maxGradNorm = maxGradNorm;
    this.decay = o.decay ?? (() => true);
    for (const [name, p] of params) {
      this.masters.set(name, p.dtype === 'f32' ? p : keep(ops.cast(p, 'f32')));
      this.m.set(name, keep(zeros(p.shape, { device: p.device })));
      this.v.set(name, keep(zeros(p.shape, { device: p.device })));
    }
  }

  /** The learning rate of the next step. */
  get lr(): number {
    return this.lrAt(this.stepCount + 1);
  }

  /**
   * One step from gradients keyed by the trainable tensors (what autograd's grad() returns).
   * gradScale multiplies every gradient first (1 / accumulation count, 1 / loss scale; a finite number > 0).
   */
  async step(grads: ReadonlyMap<Tensor, Tensor>, o: { gradScale?: number } = {}): Promise<StepInfo> {
    // Everything is checked before the first tensor changes: an Error leaves the state as it was.
    if (!(grads instanceof Map)) throw new Error('AdamW.step: grads must be a Map of trainable Tensor -> gradient');
    const gradScale = o?.gradScale ?? 1;
    // (a non-finite gradScale is a caller's bug, not an overflow: overflowed gradients themselves skip the step;
    // a negative one would climb the loss)
    if (!(typeof gradScale === 'number' && Number.isFinite(gradScale) && gradScale > 0))
      throw new Error(`AdamW.step: gradScale must be a finite number > 0, got ${show(gradScale)}`);
    for (const k of grads.keys())
      if (!this.trainables.has(k)) throw new Error(`AdamW.step: a gradient is keyed by ${k instanceof Tensor ? `a tensor [${k.shape}]` : show(k)} that is not one of the trainables`);
    const present: [string, Tensor, Tensor, boolean][] = [];
    for (const [name, p] of this.params) {
      const g = grads.get(p);
      if (g === undefined) continue;
      if (!(g instanceof Tensor)) throw new Error(`AdamW.step: the gradient of ${name} is not a Tensor`);
      if (g.disposed) throw new Error(`AdamW.step: the gradient of ${name} was disposed`);
      if (g.dtype !== 'f32' && g.dtype !== 'bf16' && g.dtype !== 'f16') throw new Error(`AdamW.step: the gradient of ${name} must be a float tensor, got ${g.dtype}`);
      if (g.size !== p.size) throw new Error(`AdamW: gradient of ${name} has shape [${g.shape}] but the tensor is [${p.shape}]`);
      if (g.device !== p.device) throw new Error(`AdamW.step: the gradient of ${name} is on ${g.device} but the tensor is on ${p.device}`);
      const d = this.decay(name);
      if (typeof d !== 'boolean') throw new Error(`AdamW: decay('${name}') must return a boolean, got ${show(d)}`);
      present.push([name, p, g, d]);
    }
    if (present.length === 0) throw new Error('AdamW.step: no gradient for any trainable (nothing to step)');
    const lr = this.lr;
    if (!(typeof lr === 'number' && Number.isFinite(lr) && lr >= 0)) throw new Error(`AdamW: the lr schedule gave ${show(lr)} for step ${this.stepCount + 1} (must be a finite number >= 0)`);
    const gradNorm = await globalNorm(present.map((x) => x[2]), gradScale);
    const step = this.stepCount + 1;
    if (!Number.isFinite(gradNorm)) return { step: this.stepCount, lr, gradNorm, clipCoef: 0, skipped: true };
    const clipCoef = this.maxGradNorm === null ? 1 : Math.min(1, this.maxGradNorm / (gradNorm + 1e-6));
    for (const [name, p, g, d] of present) {
      const master = this.masters.get(name)!;
      adamwStep(master, g, this.m.get(name)!, this.v.get(name)!, {
        lr, beta1: this.betas[0], beta2: this.betas[1], eps: this.eps,
        weightDecay: d ? this.weightDecay : 0, step, gradScale: gradScale * clipCoef,
      }, master === p ? undefined : p);
    }
    this.stepCount = step;
    return { step, lr, gradNorm, clipCoef, skipped: false };
  }

  /** Copies the masters back into bf16/f16 trainables (after a checkpoint restored the masters). */
  syncModelWeights(): void {
    for (const [name, p] of this.params) {
      const master = this.masters.get(name)!;
      if (master !== p) ops.runOp('cast', [master], [p]);
    }
  }

  /** Hyper-parameters that a checkpoint must match to be resumed. */
  describe(): Record<string, unknown> {
    return { kind: 'adamw', betas: this.betas, eps: this.eps, weightDecay: this.weightDecay, maxGradNorm: this.maxGradNorm };
  }

  dispose(): void {
    for (const [name, t] of this.masters) if (t !== this.params.get(name)) t.dispose();
    for (const t of this.m.values()) t.dispose();
    for (const t of this.v.values()) t.dispose();
  }
}

/** ||concat(grads)|| * scale, summed in f64 partials on the device, one sync. */
export async function globalNorm(grads: readonly Tensor[], scale = 1): Promise<number> {
  if (grads.length === 0) return 0;
  const acc = zeros([1], { device: grads[0].device });
  try {
    for (const g of grads) sqNorm(g, acc);
    const [s] = await acc.toArray();
    return Math.sqrt(s) * Math.abs(scale);
  } finally {
    acc.dispose();
  }
}

/** Overwrites `dst` in place with `values` (same element count), keeping the Tensor object. */
export function assignInPlace(dst: Tensor, values: Float32Array): void {
  if (values.length !== dst.size) throw new Error(`assignInPlace: ${values.length} values for a tensor of ${dst.size}`);
  const src = tensor(values, dst.shape, { dtype: 'f32' as DType, device: dst.device });
  ops.runOp(dst.dtype === 'f32' ? 'copy' : 'cast', [src], [dst]);
  src.dispose();
}
