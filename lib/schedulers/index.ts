// Samplers for few-step Stable Diffusion (DDIM, TCD, LCM, Euler, Euler ancestral) reproducing diffusers 0.27's
// schedulers, each step reduced to the coefficients of the engine's fused op  prev = a*x + b*eps + c*noise.
//
// createSampler() builds a sampler from a name, step count (or LCM/TCD custom timesteps), eta, a diffusers-style
// config and an img2img strength (diffusers pipelines' get_timesteps: keep the last int(n*strength) steps).
// samplerConfigFromDiffusers() reads a scheduler_config.json the way `Cls.from_config(config, **overrides)` does.
//
// A txt2img loop (noise from TorchCpuGenerator reproduces diffusers' CPU-generator runs):
//   x = initNoiseSigma * randn
//   for p of sampler.plan(): eps = unet(p.inputScale * x, p.t); z = p.noise ? randn : null; x = a*x + b*eps + c*z
import {
  DEFAULT_SCHEDULER_CONFIG, FullSchedule, SAMPLER_NAMES, Sampler, SamplerName, SchedulerConfig, StepPlan,
  beginIndexForStrength, resolveConfig,
} from './common';
import { ddimSchedule } from './ddim';
import { eulerSchedule } from './euler';
import { lcmSchedule } from './lcm';
import { tcdSchedule } from './tcd';

export type { ResolvedConfig, Sampler, SamplerName, SchedulerConfig, StepPlan, TimestepSpacing } from './common';
export {
  DEFAULT_SCHEDULER_CONFIG, SAMPLER_NAMES, alphasCumprod, alphasCumprodF32, betas, schedulerStepRef,
} from './common';

export interface CreateSamplerOptions {
  /** Number of inference steps (diffusers' num_inference_steps). */
  steps?: number;
  /** LCM/TCD only: custom descending timesteps instead of steps, e.g. [800] or [999, 759, 499, 259]. */
  timesteps?: number[];
  /**
   * DDIM / TCD stochasticity (TCD's gamma), a number in [0, 1]. Defaults to 0, what diffusers pipelines pass when the caller gives no
   * eta (TCDScheduler.step alone would default to 0.3; Hyper-SD's model card uses 1.0 for TCD).
   */
  eta?: number;
  /**
   * The scheduler_config.json fields the samplers read (read a whole file with samplerConfigFromDiffusers). Numbers
   * must be finite and in range; other keys are ignored as diffusers ignores them, except near-misses of the keys
   * read (timestep_spacin), which are an Error.
   */
  config?: SchedulerConfig;
  /** img2img strength in (0, 1]; 1 keeps every step. */
  strength?: number;
}

/**
 * Build a sampler's schedule and per-step coefficients.
 * @example
 *   const s = createSampler('tcd', { steps: 4, eta: 1 });   // timesteps 999, 759, 499, 259
 *   const lcm = createSampler('lcm', { timesteps: [800] }); // Hyper-SD's 1-step UNet
 *   const img2img = createSampler('ddim', { steps: 8, strength: 0.5 }); // last 4 steps; see addNoiseCoefficients
 */
export function createSampler(name: SamplerName, opts: CreateSamplerOptions = {}): Sampler {
  if (!SAMPLER_NAMES.includes(name)) {
    throw new Error(`createSampler: unknown sampler ${JSON.stringify(name)}; expected one of ${SAMPLER_NAMES.join(', ')}`);
  }
  const config = resolveConfig(opts.config);
  const eta = opts.eta ?? 0;
  const { steps, timesteps } = opts;
  if (timesteps !== undefined && name !== 'lcm' && name !== 'tcd') {
    throw new Error(`${name} sampler: custom timesteps are only supported by 'lcm' and 'tcd'`);
  }
  if (timesteps !== undefined && !Array.isArray(timesteps)) {
    throw new Error(`${name} sampler: timesteps must be an array of integers, got ${typeof timesteps}`);
  }
  if (steps === undefined && timesteps === undefined) throw new Error(`${name} sampler: pass steps`);
  if (opts.eta !== undefined && (name === 'lcm' || name === 'euler' || name === 'euler_a')) {
    throw new Error(`${name} sampler: eta is only used by 'ddim' and 'tcd'`);
  }
  // DDIM's eta scales the step's noise std up to the DDPM posterior's (eta 1); above 1 the direction term
  // sqrt(1 - a_prev - std^2) goes imaginary. TCD's gamma mixes the next timestep with 0. Both live in [0, 1].
  if (typeof eta !== 'number' || !Number.isFinite(eta) || eta < 0 || eta > 1) {
    const what = name === 'tcd' ? 'eta (TCD\'s gamma)' : 'eta';
    throw new Error(`${name} sampler: ${what} must be a finite number in [0, 1], got ${typeof eta === 'number' ? eta : JSON.stringify(eta)}`);
  }
  let full: FullSchedule;
  switch (name) {
    case 'ddim': full = ddimSchedule(config, steps as number, eta); break;
    case 'tcd': full = tcdSchedule(config, eta, steps, timesteps); break;
    case 'lcm': full = lcmSchedule(config, steps, timesteps); break;
    case 'euler': full = eulerSchedule(config, steps as number, false); break;
    case 'euler_a': full = eulerSchedule(config, steps as number, true); break;
  }
  const begin = beginIndexForStrength(full.timesteps.length, opts.strength ?? 1);
  const kept = full.timesteps.slice(begin);
  // Safety net: the checks above should make every coefficient finite; a NaN reaching the engine would only
  // surface after the model has run, without naming the option at fault.
  if (!Number.isFinite(full.initNoiseSigma)) {
    throw new Error(`${name} sampler: init_noise_sigma is ${full.initNoiseSigma}; check the scheduler config (beta_start, beta_end, num_train_timesteps)`);
  }
  for (let i = begin; i < full.timesteps.length; i++) {
    const p = full.step(i);
    if (![p.a, p.b, p.c, p.inputScale, p.x0.a, p.x0.b].every(Number.isFinite)) {
      throw new Error(`${name} sampler: step ${i} (timestep ${p.t}) has non-finite coefficients (a ${p.a}, b ${p.b}, c ${p.c}); ` +
        'check eta and the scheduler config (beta_start, beta_end, num_train_timesteps, timestep_scaling)');
    }
  }
  return {
    name,
    timesteps: kept,
    initNoiseSigma: full.initNoiseSigma,
    ...(full.sigmas ? { sigmas: full.sigmas.slice(begin) } : {}),
    beginIndex: begin,
    numInferenceSteps: full.timesteps.length,
    eta: full.eta,
    config,
    plan: (): StepPlan[] => kept.map((_, i) => full.step(begin + i)),
    addNoiseCoefficients: (t: number) => full.addNoise(t),
  };
}

const CLASS_TO_SAMPLER: Readonly<Record<string, SamplerName>> = {
  DDIMScheduler: 'ddim',
  TCDScheduler: 'tcd',
  LCMScheduler: 'lcm',
  EulerDiscreteScheduler: 'euler',
  EulerAncestralDiscreteScheduler: 'euler_a',
};

/** diffusers 0.27 __init__ defaults of each class, which from_config uses for keys a config file lacks. */
const CLASS_DEFAULTS: Readonly<Record<SamplerName, SchedulerConfig>> = {
  ddim: {
    num_train_timesteps: 1000, beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear', clip_sample: true,
    set_alpha_to_one: true, steps_offset: 0, prediction_type: 'epsilon', timestep_spacing: 'leading',
  },
  tcd: {
    num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear',
    original_inference_steps: 50, clip_sample: false, set_alpha_to_one: true, steps_offset: 0,
    prediction_type: 'epsilon', timestep_spacing: 'leading', timestep_scaling: 10,
  },
  lcm: {
    num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear',
    original_inference_steps: 50, clip_sample: false, set_alpha_to_one: true, steps_offset: 0,
    prediction_type: 'epsilon', timestep_spacing: 'leading', timestep_scaling: 10,
  },
  euler: {
    num_train_timesteps: 1000, beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear',
    prediction_type: 'epsilon', timestep_spacing: 'linspace', steps_offset: 0,
  },
  euler_a: {
    num_train_timesteps: 1000, beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear',
    prediction_type: 'epsilon', timestep_spacing: 'linspace', steps_offset: 0,
  },
};

const CONFIG_KEYS = Object.keys(DEFAULT_SCHEDULER_CONFIG) as (keyof SchedulerConfig)[];

export interface DiffusersSchedulerMapping {
  /** The sampler that runs: `target` if given, else the config's own class (null if not one of ours). */
  name: SamplerName | null;
  /** `_class_name` of the config file. */
  className: string;
  /** Explicit keys of the file, then the running class's defaults for missing ones, then overrides. */
  config: SchedulerConfig;
}

/**
 * Read a diffusers scheduler_config.json as `TargetClass.from_config(json, **overrides)` would: keys present in
 * the file carry over, missing ones take the target class's own defaults (so DDIM from an Euler config gets
 * clip_sample true and set_alpha_to_one true, as in diffusers). Options that make a step non-linear or that
 * these samplers do not implement are rejected with the option's name. Other keys of the file that the samplers
 * do not read are ignored, as diffusers ignores them; a misspelt key in `overrides` (or in createSampler's config),
 * one edit or so from a key the samplers read, is an Error.
 */
export function samplerConfigFromDiffusers(
  json: Record<string, unknown>, target?: SamplerName, overrides: SchedulerConfig = {},
): DiffusersSchedulerMapping {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new Error(`samplerConfigFromDiffusers: the scheduler config must be a JSON object, got ${json === null ? 'null' : Array.isArray(json) ? 'an array' : typeof json}`);
  }
  const className = typeof json._class_name === 'string' ? json._class_name : '';
  if (target !== undefined && !SAMPLER_NAMES.includes(target)) {
    throw new Error(`samplerConfigFromDiffusers: unknown sampler ${JSON.stringify(target)}; expected one of ${SAMPLER_NAMES.join(', ')}`);
  }
  const name = target ?? CLASS_TO_SAMPLER[className] ?? null;
  const config: SchedulerConfig = {};
  const fromFile = new Set<string>();
  for (const key of CONFIG_KEYS) {
    if (json[key] !== undefined && json[key] !== null) {
      (config as Record<string, unknown>)[key] = json[key];
      fromFile.add(key);
    }
  }
  if (name !== null) {
    for (const [key, value] of Object.entries(CLASS_DEFAULTS[name])) {
      if (!fromFile.has(key)) (config as Record<string, unknown>)[key] = value;
    }
  }
  Object.assign(config, overrides);

  const unsupported = (key: string, why: string) =>
    new Error(`scheduler config: ${key}=${JSON.stringify(json[key])} is not supported (${why})`);
  if (json.trained_betas !== undefined && json.trained_betas !== null) throw unsupported('trained_betas', 'only beta_schedule');
  if (json.rescale_betas_zero_snr === true) throw unsupported('rescale_betas_zero_snr', 'zero-SNR betas are not implemented');
  // EDM-formulated schedulers (Playground v2.5, ...) parametrise noise by sigma_data / sigma_min / sigma_max, not by
  // the betas these samplers read: their models would be sampled as something else (found by probing)
  if (/^EDM/.test(className)) throw unsupported('_class_name', 'EDM-formulated models are not supported');
  if (name === 'ddim' || name === 'tcd' || name === 'lcm') {
    if (json.thresholding === true) throw unsupported('thresholding', 'dynamic thresholding is not linear');
  }
  if (name === 'euler' || name === 'euler_a') {
    for (const key of ['use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas']) {
      if (json[key] === true) throw unsupported(key, 'only the training sigmas are implemented');
    }
    if (json.interpolation_type !== undefined && json.interpolation_type !== 'linear') {
      throw unsupported('interpolation_type', "only 'linear'");
    }
  }
  resolveConfig(config); // validates values with messages naming the option
  return { name, className, config };
}
