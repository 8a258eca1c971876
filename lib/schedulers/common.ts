// Shared pieces of the samplers: the config (diffusers' scheduler_config names and SD1.5 defaults), the training
// noise schedule (betas, alphas_cumprod) reproduced bit for bit as diffusers 0.27 / PyTorch 1.13 compute them on
// the CPU in float32, numpy-exact helpers for the timestep grids, and the fused step every sampler reduces to.
//
// Why coefficients: the native engine has one fused scheduler-step op, y = a*x + b*eps + c*noise in float32.
// Each sampler therefore evaluates diffusers' float32 scalar arithmetic (alpha_prod_t, sqrt(beta_prod_t), sigmas,
// ...) exactly, then folds the tensor expression into a, b, c in float64; the kernel rounds them to float32.
// The result differs from diffusers only by the rounding of the few float32 tensor ops it replaces (~1e-7 relative).

export type SamplerName = 'ddim' | 'tcd' | 'lcm' | 'euler' | 'euler_a';
export const SAMPLER_NAMES: readonly SamplerName[] = ['ddim', 'tcd', 'lcm', 'euler', 'euler_a'];

export type TimestepSpacing = 'trailing' | 'leading' | 'linspace';

/** diffusers scheduler_config.json fields the samplers read (snake_case kept so configs load unchanged). */
export interface SchedulerConfig {
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: 'scaled_linear' | 'linear';
  set_alpha_to_one?: boolean;
  steps_offset?: number;
  timestep_spacing?: TimestepSpacing;
  prediction_type?: 'epsilon';
  /** TCD/LCM: length of the distillation grid the timesteps are picked from. */
  original_inference_steps?: number;
  /** LCM: boundary-condition time scaling. */
  timestep_scaling?: number;
  /** DDIM/TCD/LCM clamp x0 when true; not linear, so only false is supported. */
  clip_sample?: boolean;
}

/**
 * Defaults are the Stable Diffusion 1.5 / SDXL scheduler config with Hyper-SD's `trailing` spacing; note diffusers'
 * own class defaults differ (e.g. DDIMScheduler: clip_sample true, leading spacing, linear betas).
 */
export const DEFAULT_SCHEDULER_CONFIG: Readonly<Required<SchedulerConfig>> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  set_alpha_to_one: false,
  steps_offset: 1,
  timestep_spacing: 'trailing',
  prediction_type: 'epsilon',
  original_inference_steps: 50,
  timestep_scaling: 10,
  clip_sample: false,
});

export type ResolvedConfig = Readonly<Required<SchedulerConfig>>;

/** The most training timesteps a config may declare (SD uses 1000; the schedule is held in float64 arrays). */
export const MAX_TRAIN_TIMESTEPS = 1_000_000;

/** Levenshtein distance, for spotting misspelt config keys. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/**
 * A key the samplers do not read but that is within one edit of one they do (two for keys of 10+ characters:
 * timestep_spacin, step_offset, betas_start, Beta_End): almost certainly a typo. Other unknown keys are ignored as diffusers ignores them, so raw
 * scheduler_config.json contents (_class_name, trained_betas, clip_sample_range, sigma_min, ...) still pass.
 */
export function misspeltConfigKey(key: string): string | null {
  if (Object.prototype.hasOwnProperty.call(DEFAULT_SCHEDULER_CONFIG, key)) return null;
  const lower = key.toLowerCase();
  for (const known of Object.keys(DEFAULT_SCHEDULER_CONFIG)) {
    if (lower === known || editDistance(lower, known) <= (lower.length >= 10 ? 2 : 1)) return known;
  }
  return null;
}

export function resolveConfig(config: SchedulerConfig = {}): ResolvedConfig {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new Error(`scheduler config must be an object, got ${config === null ? 'null' : Array.isArray(config) ? 'an array' : typeof config}`);
  }
  const c: Required<SchedulerConfig> = { ...DEFAULT_SCHEDULER_CONFIG };
  for (const [k, v] of Object.entries(config)) {
    if (Object.prototype.hasOwnProperty.call(c, k)) {
      if (v !== undefined) (c as Record<string, unknown>)[k] = v;
      continue;
    }
    const near = misspeltConfigKey(k);
    if (near !== null) {
      throw new Error(`scheduler config: unknown key ${JSON.stringify(k)}; did you mean ${near}? ` +
        `(the samplers read ${Object.keys(DEFAULT_SCHEDULER_CONFIG).join(', ')})`);
    }
  }
  const bad = (key: string, allowed: string) =>
    new Error(`scheduler config: ${key} must be ${allowed}, got ${JSON.stringify((c as Record<string, unknown>)[key])}`);
  for (const key of ['num_train_timesteps', 'beta_start', 'beta_end', 'steps_offset', 'original_inference_steps', 'timestep_scaling'] as const) {
    const v = c[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`scheduler config: ${key} must be a finite number, got ${typeof v === 'number' ? v : JSON.stringify(v)}`);
  }
  if (!Number.isInteger(c.num_train_timesteps) || c.num_train_timesteps < 2 || c.num_train_timesteps > MAX_TRAIN_TIMESTEPS) {
    throw bad('num_train_timesteps', `an integer in [2, ${MAX_TRAIN_TIMESTEPS}]`);
  }
  if (!(c.beta_start > 0) || !(c.beta_end > c.beta_start) || !(c.beta_end < 1)) {
    throw new Error(`scheduler config: need 0 < beta_start < beta_end < 1, got beta_start ${c.beta_start}, beta_end ${c.beta_end}`);
  }
  if (c.beta_schedule !== 'scaled_linear' && c.beta_schedule !== 'linear') throw bad('beta_schedule', "'scaled_linear' or 'linear'");
  if (!['trailing', 'leading', 'linspace'].includes(c.timestep_spacing)) throw bad('timestep_spacing', "'trailing', 'leading' or 'linspace'");
  if (c.prediction_type !== 'epsilon') throw bad('prediction_type', "'epsilon'");
  if (!Number.isInteger(c.steps_offset) || c.steps_offset < 0) throw bad('steps_offset', 'a non-negative integer');
  if (!Number.isInteger(c.original_inference_steps) || c.original_inference_steps < 1 ||
      c.original_inference_steps > c.num_train_timesteps) {
    throw bad('original_inference_steps', `an integer in [1, num_train_timesteps=${c.num_train_timesteps}]`);
  }
  // LCM's c_out = s / sqrt(s^2 + 0.25) with s = timestep_scaling * t in float32: s^2 must not overflow float32.
  if (!(c.timestep_scaling > 0) || !Number.isFinite(f32(f32(c.timestep_scaling * (c.num_train_timesteps - 1)) ** 2))) {
    throw bad('timestep_scaling', 'a positive number small enough that (timestep_scaling * num_train_timesteps)^2 is a finite float32');
  }
  if (typeof c.set_alpha_to_one !== 'boolean') throw bad('set_alpha_to_one', 'a boolean');
  if (typeof c.clip_sample !== 'boolean') throw bad('clip_sample', 'a boolean');
  return Object.freeze(c);
}

/** One sampler step as the fused op's scalars: prev = a*x + b*eps + c*noise, model input = inputScale*x. */
export interface StepPlan {
  /** Timestep value given to the model, exactly as diffusers yields it (integers; Euler's are float32 values). */
  t: number;
  /** Index of this step in the full (strength 1) schedule, i.e. diffusers' scheduler.step_index. */
  index: number;
  inputScale: number;
  a: number;
  b: number;
  c: number;
  /** The step draws a noise tensor shaped like x (in diffusers' order, one randn per step). */
  noise: boolean;
  /** The drawn noise does not reach the output (c === 0): draw it to keep the RNG stream, skip it in the kernel. */
  drawsUnused?: boolean;
  /**
   * The step's clean-image estimate as a*x + b*eps: pred_original_sample (DDIM, TCD, Euler, Euler a) or the
   * boundary-conditioned `denoised` (LCM). For previews and callbacks.
   */
  x0: { a: number; b: number };
}

export interface Sampler {
  readonly name: SamplerName;
  /** Timesteps that run (after strength), in order. */
  readonly timesteps: number[];
  /** Multiplier for the initial N(0, 1) latents in txt2img (float32 value). */
  readonly initNoiseSigma: number;
  /** Euler/Euler a: sigma of each kept timestep plus the final 0 (float32 values). */
  readonly sigmas?: number[];
  /** Index of timesteps[0] in the full schedule (diffusers' begin_index; 0 at strength 1). */
  readonly beginIndex: number;
  /** Steps of the full schedule (diffusers' num_inference_steps). */
  readonly numInferenceSteps: number;
  readonly eta: number;
  readonly config: ResolvedConfig;
  plan(): StepPlan[];
  /** add_noise as x_t = a*x0 + b*noise: sqrt(alphas_cumprod[t]), sqrt(1 - alphas_cumprod[t]); Euler: 1, sigma. */
  addNoiseCoefficients(t: number): { a: number; b: number };
}

export const f32 = Math.fround;
/** float32 sqrt of a float32 value (double sqrt then rounding is exact for float32 arguments). */
export const sqrtF = (x: number): number => f32(Math.sqrt(x));

/**
 * fmaf for float32 arguments. PyTorch's float32 linspace kernel is compiled with FMA contraction, which the
 * fixture's betas show; a*b is exact in float64 and a tie after the float64 sum is broken by the TwoSum error.
 */
export function fmaF(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bp = s - p;
  const err = (p - (s - bp)) + (c - bp);
  const r = f32(s);
  if (err === 0 || r === s) return r;
  const other = 2 * s - r;
  if (f32(other) !== other) return r;
  return (err > 0) === (other > r) ? other : r;
}

/**
 * torch.linspace(start, end, steps, dtype=float32) on an AVX2 CPU: step = (end - start) / (steps - 1) in float32;
 * chunks of 16 are two 8-lane vectors whose base is start + step*i (first half) or end - step*(steps-1-i) (second
 * half), lanes base + k*step; the tail under 16 takes the per-element formula. All products fused into FMAs.
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float64Array {
  const s0 = f32(start);
  const e0 = f32(end);
  const step = f32(f32(e0 - s0) / (steps - 1));
  const half = Math.floor(steps / 2);
  const at = (i: number) => (i < half ? fmaF(step, i, s0) : fmaF(-step, steps - i - 1, e0));
  const out = new Float64Array(steps);
  let i = 0;
  for (; i <= steps - 16; i += 16) {
    for (const v of [i, i + 8]) {
      const base = at(v);
      for (let k = 0; k < 8; k++) out[v + k] = fmaF(k, step, base);
    }
  }
  for (; i < steps; i++) out[i] = at(i);
  return out;
}

const betasCache = new Map<string, Float64Array>();
const alphasCache = new Map<string, Float64Array>();
const scheduleKey = (c: ResolvedConfig) => `${c.beta_schedule}:${c.beta_start}:${c.beta_end}:${c.num_train_timesteps}`;

/** Training betas as float32 values: scaled_linear = linspace(sqrt(start), sqrt(end))^2, linear = linspace(start, end). */
export function betas(config?: SchedulerConfig): Float64Array {
  const c = resolveConfig(config);
  const key = scheduleKey(c);
  let b = betasCache.get(key);
  if (!b) {
    if (c.beta_schedule === 'scaled_linear') {
      b = torchLinspaceF32(Math.sqrt(c.beta_start), Math.sqrt(c.beta_end), c.num_train_timesteps);
      for (let i = 0; i < b.length; i++) b[i] = f32(b[i] * b[i]);
    } else {
      b = torchLinspaceF32(c.beta_start, c.beta_end, c.num_train_timesteps);
    }
    betasCache.set(key, b);
  }
  return b.slice();
}

/**
 * alphas_cumprod as float32 values (held in a Float64Array; Float32Array.from() of it is lossless):
 * torch.cumprod(1 - betas) in float32 on the CPU, which accumulates the product in float64 and rounds each output.
 */
export function alphasCumprod(config?: SchedulerConfig): Float64Array {
  return alphasCumprodShared(resolveConfig(config)).slice();
}

export function alphasCumprodF32(config?: SchedulerConfig): Float32Array {
  return Float32Array.from(alphasCumprodShared(resolveConfig(config)));
}

/** Cached, not to be mutated. */
export function alphasCumprodShared(c: ResolvedConfig): Float64Array {
  const key = scheduleKey(c);
  let a = alphasCache.get(key);
  if (!a) {
    const b = betas(c);
    a = new Float64Array(b.length);
    let prod = 1;
    for (let i = 0; i < b.length; i++) {
      prod *= f32(1 - b[i]);
      a[i] = f32(prod);
    }
    // Every sampler divides by alphas_cumprod (x0 = (x - sqrt(1 - a) eps) / sqrt(a); Euler's sigma = sqrt((1 - a) / a)
    // in float32): a schedule whose noise drowns the signal entirely gives infinite/NaN coefficients.
    const last = a[a.length - 1];
    if (!(last > 0) || !Number.isFinite(f32(f32(1 - last) / last))) {
      throw new Error(`scheduler config: beta_start ${c.beta_start}, beta_end ${c.beta_end} (${c.beta_schedule}, ` +
        `${c.num_train_timesteps} num_train_timesteps) drive alphas_cumprod to ${last} at timestep ${a.length - 1}, ` +
        'which no sampler can divide by: use smaller betas or fewer num_train_timesteps');
    }
    alphasCache.set(key, a);
  }
  return a;
}

/** numpy.round / np.rint: half to even. */
export function roundHalfEven(x: number): number {
  const fl = Math.floor(x);
  const d = x - fl;
  if (d < 0.5) return fl;
  if (d > 0.5) return fl + 1;
  return fl % 2 === 0 ? fl : fl + 1;
}

/** numpy.arange(start, stop, step) for floats: length ceil((stop-start)/step); element i >= 2 is start + i*(x1 - start). */
export function npArange(start: number, stop: number, step: number): number[] {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const out: number[] = [];
  if (len === 0) return out;
  out.push(start);
  if (len === 1) return out;
  const second = start + step;
  out.push(second);
  const delta = second - start;
  for (let i = 2; i < len; i++) out.push(start + i * delta);
  return out;
}

/** numpy.linspace(start, stop, num, endpoint) in float64: start + i*step, last = stop when endpoint. */
export function npLinspace(start: number, stop: number, num: number, endpoint = true): number[] {
  const div = endpoint ? num - 1 : num;
  const step = (stop - start) / div;
  const out: number[] = [];
  for (let i = 0; i < num; i++) out.push(div > 0 ? i * step + start : start);
  if (endpoint && num > 1) out[num - 1] = stop;
  return out;
}

/**
 * clip_sample clamps x0, which no linear step can express. A config file without clip_sample used through
 * DDIMScheduler.from_config gets DDIM's default (true) in diffusers, hence the hint.
 */
export function rejectClipSample(name: SamplerName, c: ResolvedConfig): void {
  if (c.clip_sample) {
    throw new Error(`${name} sampler: clip_sample true is not supported (clamping x0 is not linear); ` +
      'diffusers fills it in from DDIMScheduler\'s defaults when a config file lacks it: pass clip_sample: false');
  }
}

export function checkSteps(name: SamplerName, steps: number, max: number): void {
  if (!Number.isInteger(steps) || steps < 1 || steps > max) {
    throw new Error(`${name} sampler: steps must be an integer in [1, ${max}], got ${steps}`);
  }
}

/**
 * Every timestep must index the training schedule, [0, num_train_timesteps - 1]; 'leading' spacing adds
 * steps_offset, which can push the first one past the end.
 */
export function checkTimestepRange(name: SamplerName, c: ResolvedConfig, timesteps: readonly number[], steps: number): void {
  const N = c.num_train_timesteps;
  const out = timesteps.find((t) => !(t >= 0 && t <= N - 1));
  if (out === undefined) return;
  if (c.timestep_spacing === 'leading') {
    throw new Error(`${name} sampler: timestep ${out} (leading spacing, steps_offset ${c.steps_offset}) is outside ` +
      `[0, num_train_timesteps - 1 = ${N - 1}]: lower steps_offset or use another timestep_spacing`);
  }
  // 'trailing' is round(arange(N, 0, -N/n)) - 1; for some n (457, 975 of 1000) float rounding gives arange an extra
  // element and a timestep of -1 (diffusers then indexes alphas_cumprod[-1], the last entry).
  throw new Error(`${name} sampler: ${c.timestep_spacing} spacing with steps ${steps} gives ${timesteps.length} timesteps, one of them ${out}, ` +
    `outside [0, num_train_timesteps - 1 = ${N - 1}] (numpy arange rounding, as in diffusers): use another step count or timestep_spacing`);
}

/**
 * diffusers' img2img get_timesteps: keep the last min(int(n * strength), n) steps. Returns the index of the first
 * kept step (diffusers' begin_index).
 */
export function beginIndexForStrength(n: number, strength: number): number {
  if (!(strength > 0 && strength <= 1)) throw new Error(`strength must be in (0, 1], got ${strength}`);
  const init = Math.min(Math.floor(n * strength), n);
  if (init < 1) {
    throw new Error(`strength ${strength} keeps no step of ${n}: use a strength of at least ${1 / n} or more steps`);
  }
  return n - init;
}

/**
 * The fused step as a float32 kernel computes it, left to right without FMA:
 * out = fl(fl(fl(a*x) + fl(b*eps)) + fl(c*noise)), with a, b, c rounded to float32 first. noise may be null
 * only when c is 0 (the term is then dropped).
 */
export function schedulerStepRef(
  x: Float32Array, eps: Float32Array, noise: Float32Array | null,
  p: Pick<StepPlan, 'a' | 'b' | 'c'>, out: Float32Array,
): Float32Array {
  const n = x.length;
  if (eps.length !== n || out.length !== n || (noise !== null && noise.length !== n)) {
    throw new Error('schedulerStepRef: x, eps, noise and out must have the same length');
  }
  const a = f32(p.a);
  const b = f32(p.b);
  const c = f32(p.c);
  if (noise === null && c !== 0) throw new Error(`schedulerStepRef: c = ${p.c} needs a noise tensor`);
  if (noise === null || c === 0) {
    for (let i = 0; i < n; i++) out[i] = f32(a * x[i]) + f32(b * eps[i]);
  } else {
    for (let i = 0; i < n; i++) out[i] = f32(f32(a * x[i]) + f32(b * eps[i])) + f32(c * noise[i]);
  }
  return out;
}

/** A sampler's full (strength 1) schedule; createSampler applies strength on top. */
export interface FullSchedule {
  name: SamplerName;
  timesteps: number[];
  initNoiseSigma: number;
  sigmas?: number[];
  eta: number;
  config: ResolvedConfig;
  /** Plan of step i of the full schedule. */
  step(i: number): StepPlan;
  addNoise(t: number): { a: number; b: number };
}

/** DDPM-family add_noise: sqrt(alphas_cumprod[t]) and sqrt(1 - alphas_cumprod[t]) in float32. */
export function alphaAddNoise(ac: Float64Array, t: number): { a: number; b: number } {
  if (!Number.isInteger(t) || t < 0 || t >= ac.length) {
    throw new Error(`add_noise: timestep must be an integer in [0, ${ac.length - 1}], got ${t}`);
  }
  return { a: sqrtF(ac[t]), b: sqrtF(f32(1 - ac[t])) };
}

/** Predicted x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t) as coefficients, from float32 sqrt(a_t), sqrt(1 - a_t). */
export function epsToX0(sqrtAt: number, sqrtBt: number): { a: number; b: number } {
  return { a: 1 / sqrtAt, b: -sqrtBt / sqrtAt };
}
