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
 */
import { Tensor, tensor, zeros, keep, type DType } from '../tensor';
import * as ops from '../ops';
import { adamwStep, sqNorm } from '../ops/optim';
import type { LrSchedule } from './schedule';

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

  constructor(params: ReadonlyMap<string, Tensor>, o: AdamWOptions = {}) {
    if (params.size === 0) throw new Error('AdamW: no trainable tensors');
    this.params = params;
    const lr = o.lr ?? 1e-4;
    this.lrAt = typeof lr === 'number' ? () => lr : lr;
    this.betas = o.betas ?? [0.9, 0.999];
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? 1e-2;
    this.maxGradNorm = o.maxGradNorm === undefined ? 1.0 : o.maxGradNorm;
    this.decay = o.decay ?? (() => true);
    if (this.maxGradNorm !== null && !(this.maxGradNorm > 0)) throw new Error(`AdamW: maxGradNorm must be > 0 or null, got ${this.maxGradNorm}`);
    for (const [name, p] of params) {
      if (!(p instanceof Tensor)) throw new Error(`AdamW: trainable ${name} is not a Tensor`);
      if (p.dtype !== 'f32' && p.dtype !== 'bf16' && p.dtype !== 'f16') throw new Error(`AdamW: trainable ${name} must be a float tensor, got ${p.dtype}`);
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
   * gradScale multiplies every gradient first (1 / accumulation count, 1 / loss scale).
   */
  async step(grads: ReadonlyMap<Tensor, Tensor>, o: { gradScale?: number } = {}): Promise<StepInfo> {
    const gradScale = o.gradScale ?? 1;
    const present: [string, Tensor, Tensor][] = [];
    for (const [name, p] of this.params) {
      const g = grads.get(p);
      if (!g) continue;
      if (g.size !== p.size) throw new Error(`AdamW: gradient of ${name} has shape [${g.shape}] but the tensor is [${p.shape}]`);
      present.push([name, p, g]);
    }
    const gradNorm = await globalNorm(present.map((x) => x[2]), gradScale);
    const lr = this.lr;
    const step = this.stepCount + 1;
    if (!Number.isFinite(gradNorm)) return { step: this.stepCount, lr, gradNorm, clipCoef: 0, skipped: true };
    const clipCoef = this.maxGradNorm === null ? 1 : Math.min(1, this.maxGradNorm / (gradNorm + 1e-6));
    for (const [name, p, g] of present) {
      const master = this.masters.get(name)!;
      adamwStep(master, g, this.m.get(name)!, this.v.get(name)!, {
        lr, beta1: this.betas[0], beta2: this.betas[1], eps: this.eps,
        weightDecay: this.decay(name) ? this.weightDecay : 0, step, gradScale: gradScale * clipCoef,
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
