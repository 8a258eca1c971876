/**
 * The training step every recipe shares: gradients of a loss over named trainables (autograd's grad),
 * gradient accumulation, AdamW with clipping and an LR schedule, an optional EMA, seeded randomness, and
 * checkpoints that resume bit for bit.
 *
 * Randomness: `rng` (xoshiro128**, JS side) for timesteps, data order and choices; `randn(shape)` for tensor
 * noise (Philox with this run's seed and a counter that advances by one per draw). Both states go into
 * checkpoints, so a resumed run draws exactly what the unbroken run would.
 * Accumulation: micro-batch gradients are summed and the optimizer scales by 1 / accumulation (one pass,
 * folded into the fused AdamW's grad_scale), equivalent to averaging the micro-batch losses.
 * f16 training: seed grad() with autograd's DynamicLossScaler and unscale before the step (not needed for
 * f32 / bf16, which is what this class runs).
 * Defaults (TRAINING.md, LoRA recipe): lr 1e-4, AdamW betas (0.9, 0.999), eps 1e-8, weight decay 1e-2, clip 1,
 * 500 warm-up steps with the 'warmup' schedule, accumulation 1, no EMA.
 */
import { Tensor, tidy, keep } from '../tensor';
import * as ops from '../ops';
import { grad, markTrainable } from '../autograd';
import { AdamW, type StepInfo } from './optimizer';
import { EMA } from './ema';
import { Rng } from './rng';
import { lrSchedule, type ScheduleKind } from './schedule';
import { loadCheckpoint, saveCheckpoint } from './checkpoint';
import { show, checkOptionKeys } from './show';

export interface TrainerOptions {
  trainables: ReadonlyMap<string, Tensor>;
  lr?: number;
  schedule?: ScheduleKind;
  warmup?: number;
  /** total steps (the cosine schedule needs it) */
  totalSteps?: number;
  minLr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  maxGradNorm?: number | null;
  decay?: (name: string) => boolean;
  gradAccum?: number;
  /** EMA of the trainables (decay; warm-up as diffusers' EMAModel) */
  ema?: { decay: number; warmup?: boolean } | null;
  seed?: number;
  /** describes the run for checkpoints (model config, LoRA rank...) */
  fingerprint?: Record<string, unknown>;
}

export interface StepLog extends StepInfo {
  /** mean loss over the micro-batches */
  loss: number;
}

const TRAINER_OPTIONS = ['trainables', 'lr', 'schedule', 'warmup', 'totalSteps', 'minLr', 'betas', 'eps', 'weightDecay', 'maxGradNorm',
  'decay', 'gradAccum', 'ema', 'seed', 'fingerprint'];


export class Trainer {
  readonly optimizer: AdamW;
  readonly ema: EMA | null;
  readonly rng: Rng;
  readonly seed: number;
  readonly gradAccum: number;
  private readonly params: Tensor[];
  private readonly fingerprint: Record<string, unknown>;
  /** Philox draws so far */
  noiseOffset = 0;

  constructor(o: TrainerOptions) {
    // Everything is checked before anything is allocated or marked trainable.
    checkOptionKeys('Trainer', o, TRAINER_OPTIONS);
    if (!(o.trainables instanceof Map)) throw new Error('Trainer: trainables must be a Map of name -> Tensor');
    this.seed = o.seed ?? 0;
    if (!Number.isSafeInteger(this.seed) || this.seed < 0) throw new Error(`Trainer: seed must be an integer >= 0, got ${show(this.seed)}`);
    this.gradAccum = o.gradAccum ?? 1;
    if (!Number.isInteger(this.gradAccum) || this.gradAccum < 1) throw new Error(`Trainer: gradAccum must be an integer >= 1, got ${show(this.gradAccum)}`);
    if (o.ema !== undefined && o.ema !== null) {
      if (typeof o.ema !== 'object') throw new Error(`Trainer: ema must be { decay, warmup? } or null, got ${show(o.ema)}`);
      const d = o.ema.decay;
      if (!(typeof d === 'number' && d >= 0 && d <= 1)) throw new Error(`Trainer: ema.decay must be a number in [0, 1], got ${show(d)}`);
      if (o.ema.warmup !== undefined && typeof o.ema.warmup !== 'boolean') throw new Error(`Trainer: ema.warmup must be a boolean, got ${show(o.ema.warmup)}`);
    }
    if (o.fingerprint !== undefined && (o.fingerprint === null || typeof o.fingerprint !== 'object' || Array.isArray(o.fingerprint)))
      throw new Error(`Trainer: fingerprint must be an object, got ${show(o.fingerprint)}`);
    const sched = lrSchedule({ kind: o.schedule ?? 'warmup', lr: o.lr ?? 1e-4, warmup: o.warmup ?? 500, total: o.totalSteps, minLr: o.minLr });
    this.optimizer = new AdamW(o.trainables, {
      lr: sched, betas: o.betas, eps: o.eps, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm, decay: o.decay,
    });
    this.params = [...o.trainables.values()];
    for (const p of this.params) markTrainable(p);
    this.ema = o.ema ? new EMA(o.trainables, o.ema.decay, o.ema.warmup ?? false) : null;
    this.rng = new Rng([this.seed, 0x7472]);
    this.fingerprint = { ...(o.fingerprint ?? {}), gradAccum: this.gradAccum };
  }

  get step(): number {
    return this.optimizer.stepCount;
  }

  /** N(0, 1) noise from this run's Philox stream. */
  randn(shape: readonly number[], device?: Tensor['device']): Tensor {
    return ops.randn(shape, { seed: this.seed, offset: this.noiseOffset++, device });
  }

  /**
   * One optimizer step: lossFn(micro) builds the loss of micro-batch `micro` (0 .. gradAccum-1) from the
   * trainables; its tensors are freed afterwards.
   */
  async trainStep(lossFn: (micro: number) => Tensor): Promise<StepLog> {
    const acc = new Map<Tensor, Tensor>();
    let lossSum = 0;
    try {
      for (let k = 0; k < this.gradAccum; k++) {
        const r = tidy(() => grad(() => lossFn(k), this.params));
        const lv = (await r.loss.toArray())[0];
        r.loss.dispose();
        lossSum += lv;
        for (const [p, g] of r.grads) {
          const prev = acc.get(p);
          if (!prev) acc.set(p, keep(g));
          else {
            ops.runOp('add', [prev, g], [prev]);
            g.dispose();
          }
        }
      }
      const info = await this.optimizer.step(acc, { gradScale: 1 / this.gradAccum });
      if (!info.skipped) this.ema?.update();
      return { ...info, loss: lossSum / this.gradAccum };
    } finally {
      for (const g of acc.values()) g.dispose();
    }
  }

  /** Saves everything needed to resume (atomic). `extra` is the caller's resume data (JSON). */
  save(file: string, extra: Record<string, unknown> = {}): Promise<void> {
    if (extra === null || typeof extra !== 'object' || Array.isArray(extra)) return Promise.reject(new Error(`${file}: Trainer.save: extra must be an object`));
    return saveCheckpoint(file, this.checkpointState(), { ...extra, noiseOffset: this.noiseOffset });
  }

  /**
   * Restores a checkpoint of the same run; returns the caller's extra data. Changes nothing on error: the
   * Philox offset (extra.noiseOffset, which Trainer.save always writes) is checked with everything else first.
   */
  async load(file: string): Promise<Record<string, unknown>> {
    const r = await loadCheckpoint(file, this.checkpointState(), {
      checkExtra: (x) => {
        const n = x.noiseOffset;
        if (!(typeof n === 'number' && Number.isSafeInteger(n) && n >= 0))
          throw new Error(`field extra.noiseOffset (the Philox draws so far) must be an integer >= 0, got ${n === undefined ? 'none' : JSON.stringify(n)}`);
      },
    });
    const { noiseOffset, ...extra } = r.extra as { noiseOffset: number };
    this.noiseOffset = noiseOffset;
    return extra;
  }

  dispose(): void {
    this.optimizer.dispose();
    this.ema?.dispose();
  }

  private checkpointState() {
    return { optimizer: this.optimizer, ema: this.ema, rng: this.rng, fingerprint: this.fingerprint };
  }
}
