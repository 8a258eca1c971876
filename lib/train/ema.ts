/**
 * Exponential moving average of trainable weights: shadow = decay * shadow + (1 - decay) * param after each
 * optimizer step, one fused op per tensor (the scheduler_step kernel is exactly a*x + b*y). Optional warm-up
 * as in diffusers' EMAModel: decay_t = min(decay, (1 + t) / (10 + t)), so early averages are not dominated by
 * the random init. Default decay 0.95 (TRAINING.md: the full-model consistency-distillation target);
 * use 0.999-0.9999 for an inference EMA of a long run.
 */
import { Tensor, keep } from '../tensor';
import * as ops from '../ops';

export class EMA {
  readonly shadow = new Map<string, Tensor>();
  updates = 0;

  constructor(readonly params: ReadonlyMap<string, Tensor>, readonly decay = 0.95, readonly warmup = false) {
    if (!(decay >= 0 && decay <= 1)) throw new Error(`EMA: decay must be in [0, 1], got ${decay}`);
    for (const [name, p] of params) this.shadow.set(name, keep(ops.cast(p, 'f32')));
  }

  /** The decay the next update uses. */
  currentDecay(): number {
    return this.warmup ? Math.min(this.decay, (1 + this.updates) / (10 + this.updates)) : this.decay;
  }

  update(): void {
    const d = this.currentDecay();
    for (const [name, p] of this.params) {
      const s = this.shadow.get(name)!;
      ops.runOp('scheduler_step', [s, p], [s], { a: d, b: 1 - d, c: 0 });
    }
    this.updates++;
  }

  /**
   * Runs fn with the averaged weights swapped into the trainables (values copied in, then restored), e.g. to
   * sample or export from the EMA.
   */
  async withAveraged<T>(fn: () => Promise<T> | T): Promise<T> {
    const saved = new Map<string, Tensor>();
    for (const [name, p] of this.params) {
      saved.set(name, keep(ops.contiguous(p)));
      ops.runOp('cast', [this.shadow.get(name)!], [p]);
    }
    try {
      return await fn();
    } finally {
      for (const [name, p] of this.params) {
        const c = saved.get(name)!;
        ops.runOp('copy', [c], [p]);
        c.dispose();
      }
    }
  }

  dispose(): void {
    for (const t of this.shadow.values()) t.dispose();
  }
}
