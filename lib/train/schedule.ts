/**
 * Learning-rate schedules, as a function of the 1-based optimizer step s (the step about to be taken):
 *   constant  lr
 *   warmup    lr * min(1, s / warmup)                                   (diffusers constant_with_warmup)
 *   cosine    lr * s / warmup during warm-up, then minLr + (lr - minLr) * 0.5 (1 + cos(pi p)),
 *             p = (s - warmup) / (total - warmup) clamped to [0, 1]      (diffusers cosine, floor minLr)
 * Defaults from TRAINING.md: 500 warm-up steps. Unlike diffusers' LambdaLR, the first step already gets
 * lr / warmup instead of 0 (a zero-lr step would only advance Adam's moments).
 */
export type ScheduleKind = 'constant' | 'warmup' | 'cosine';
export const SCHEDULE_KINDS: readonly ScheduleKind[] = ['constant', 'warmup', 'cosine'];

export interface ScheduleOptions {
  kind?: ScheduleKind;
  /** peak learning rate */
  lr: number;
  /** warm-up steps (default 500; ignored by 'constant') */
  warmup?: number;
  /** total optimizer steps (required by 'cosine') */
  total?: number;
  /** the cosine floor (default 0) */
  minLr?: number;
}

export type LrSchedule = (step: number) => number;

/** @example const lrAt = lrSchedule({ kind: 'cosine', lr: 1e-4, warmup: 500, total: 10000 }); lrAt(1) */
export function lrSchedule(o: ScheduleOptions): LrSchedule {
  if (o === null || typeof o !== 'object') throw new Error('lrSchedule: options must be an object');
  const kind = o.kind ?? 'constant';
  if (!SCHEDULE_KINDS.includes(kind)) throw new Error(`lrSchedule: kind must be one of ${SCHEDULE_KINDS.join(', ')}, got '${kind}'`);
  const show = (v: unknown) => (typeof v === 'string' ? `'${v}'` : String(v));
  if (typeof o.lr !== 'number' || !(o.lr >= 0) || !Number.isFinite(o.lr)) throw new Error(`lrSchedule: lr must be a finite number >= 0, got ${show(o.lr)}`);
  const warmup = o.warmup ?? 500;
  if (!Number.isInteger(warmup) || warmup < 0) throw new Error(`lrSchedule: warmup must be an integer >= 0, got ${show(warmup)}`);
  const minLr = o.minLr ?? 0;
  if (typeof minLr !== 'number' || !(minLr >= 0 && minLr <= o.lr)) throw new Error(`lrSchedule: minLr must be a number in [0, lr], got ${show(minLr)}`);
  const check = (s: number) => {
    if (!Number.isInteger(s) || s < 1) throw new Error(`lrSchedule: step must be an integer >= 1, got ${s}`);
  };
  const ramp = (s: number) => (warmup > 0 && s < warmup ? s / warmup : 1);
  if (kind === 'constant') return (s) => (check(s), o.lr);
  if (kind === 'warmup') return (s) => (check(s), o.lr * ramp(s));
  const total = o.total;
  if (total === undefined || !Number.isInteger(total) || total < 1) throw new Error(`lrSchedule: 'cosine' needs total steps (an integer >= 1), got ${total}`);
  return (s) => {
    check(s);
    if (warmup > 0 && s < warmup) return o.lr * ramp(s);
    const p = total > warmup ? Math.min(1, Math.max(0, (s - warmup) / (total - warmup))) : 1;
    return minLr + (o.lr - minLr) * 0.5 * (1 + Math.cos(Math.PI * p));
  };
}
