/**
 * Dynamic loss scaling for f16 training (as torch.cuda.amp.GradScaler): the loss gradient is seeded with
 * `scale` so small f16 activation gradients do not flush to zero; the parameter gradients are divided by it
 * again before the optimizer step. A step whose gradients hold an inf or NaN is skipped and the scale backs
 * off; after `growthInterval` good steps in a row it grows. bf16 has f32's range and needs none of this.
 *
 * The inf/NaN check sums every gradient (sum_to, double accumulation): a sum is finite exactly when no
 * element is inf/NaN (short of the sum itself overflowing f32, which is as good a reason to skip the step).
 * All gradients are reduced on the device and read back together: one sync per step.
 */
import { Tensor, full } from '../tensor';
import { runOp } from '../ops/runtime';
import { concat } from '../ops/shape';
import { sumTo } from '../ops/embedding';
import { checkOptionKeys } from '../train/show';

/** Whether any of the tensors holds an inf or NaN (one sync). */
export async function hasInfOrNaN(ts: Iterable<Tensor>): Promise<boolean> {
  const sums: Tensor[] = [];
  try {
    for (const t of ts) {
      if (t.size === 0) continue;
      const flat = t.reshape([t.size]);
      sums.push(sumTo(flat, [1]));
      flat.dispose();
    }
    if (sums.length === 0) return false;
    const all = sums.length === 1 ? sums[0] : concat(sums, 0);
    try {
      const v = await all.floats();
      return v.some((x) => !Number.isFinite(x));
    } finally {
      if (all !== sums[0]) all.dispose();
    }
  } finally {
    for (const s of sums) s.dispose();
  }
}

export interface LossScalerOptions {
  /** Starting scale (default 2^16). */
  initScale?: number;
  /** Multiplier after growthInterval good steps (default 2; finite, > 1). The scale never grows to inf. */
  growthFactor?: number;
  /** Multiplier after a step with inf/NaN gradients (default 0.5; in (0, 1)). */
  backoffFactor?: number;
  growthInterval?: number;
  /** The scale never drops below this (default 1; at most initScale). */
  minScale?: number;
}

/**
 * @example
 * const scaler = new DynamicLossScaler();
 * const { grads } = grad(fn, params, { dLoss: scaler.seedFor([1]) });
 * if (await scaler.unscale(grads)) optimizer.step(grads);   // false: skipped, scale reduced
 */
export class DynamicLossScaler {
  scale: number;
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;
  readonly minScale: number;
  private goodSteps = 0;

  constructor(o: LossScalerOptions = {}) {
    checkOptionKeys('DynamicLossScaler', o, ['initScale', 'growthFactor', 'backoffFactor', 'growthInterval', 'minScale']);
    const num = (name: string, v: unknown, ok: (x: number) => boolean, want: string): number => {
      if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v))
        throw new Error(`DynamicLossScaler: ${name} must be ${want}, got ${typeof v === 'string' ? `'${v}'` : String(v)}`);
      return v;
    };
    // (as torch's GradScaler: growth_factor > 1, backoff_factor < 1; an infinite growth factor made the
    // scale inf, and a minScale above the scale made a back-off raise it)
    const scale = num('initScale', o.initScale ?? 2 ** 16, (x) => x > 0, 'a finite number > 0');
    this.growthFactor = num('growthFactor', o.growthFactor ?? 2, (x) => x > 1, 'a finite number > 1');
    this.backoffFactor = num('backoffFactor', o.backoffFactor ?? 0.5, (x) => x > 0 && x < 1, 'a number in (0, 1)');
    this.growthInterval = num('growthInterval', o.growthInterval ?? 2000, (x) => Number.isSafeInteger(x) && x >= 1, 'an integer >= 1');
    this.minScale = num('minScale', o.minScale ?? 1, (x) => x > 0, 'a finite number > 0');
    if (this.minScale > scale) throw new Error(`DynamicLossScaler: minScale (${this.minScale}) must be <= initScale (${scale})`);
    this.scale = scale;
  }

  /** The dLoss to seed grad() with: `scale` everywhere, in the loss's shape. */
  seedFor(lossShape: readonly number[], device?: Tensor['device']): Tensor {
    return full(lossShape, this.scale, { device });
  }

  /**
   * Divides the gradients by the scale (in place) and updates the scale. Returns true when the gradients
   * are finite and the optimizer step should be taken, false when the step must be skipped.
   */
  async unscale(grads: Map<Tensor, Tensor> | Iterable<Tensor>): Promise<boolean> {
    const list = grads instanceof Map ? [...grads.values()] : [...grads];
    const used = this.scale;
    const bad = await hasInfOrNaN(list);
    this.update(bad);
    if (bad) return false;
    const inv = 1 / used;
    for (const g of list) if (g.size > 0) runOp('affine', [g], [g], { a: inv, b: 0 });
    return true;
  }

  /** Records a step's outcome: back off on inf/NaN, grow after growthInterval good steps. */
  update(foundInfOrNaN: boolean): void {
    if (foundInfOrNaN) {
      this.scale = Math.max(this.minScale, this.scale * this.backoffFactor);
      this.goodSteps = 0;
    } else if (++this.goodSteps >= this.growthInterval) {
      // (never to inf: an infinite seed would make every later step overflow, and inf * backoff stays inf)
      const grown = this.scale * this.growthFactor;
      if (Number.isFinite(grown)) this.scale = grown;
      this.goodSteps = 0;
    }
  }
}
