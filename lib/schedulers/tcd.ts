// TCD (diffusers 0.27 TCDScheduler, epsilon prediction) and the LCM-style timestep grid it shares with LCM.
//
// Grid: with k = N // original_inference_steps, the distillation timesteps are k*j - 1 for j = 1..orig
// (19, 39, ..., 999 for 50); n steps pick indices floor(linspace(0, orig, n, endpoint=False)) of the reversed grid
// (n = 4: 999, 759, 499, 259). Custom descending timesteps may replace the grid.
// Step at t with next timestep t' (0 after the last step), s = floor(float32(1 - eta) * t'):
//   x0   = (x - sqrt(1 - a_t) eps) / sqrt(a_t)
//   x_s  = sqrt(a_s) x0 + sqrt(1 - a_s) eps                      (diffusers' pred_noised_sample)
//   prev = sqrt(a_t'/a_s) x_s + sqrt(1 - a_t'/a_s) z   if eta > 0 and not the last step (draws z), else x_s
// On the last step t' = 0 so a_s = alphas_cumprod[0]: the output is x0 re-noised to the t = 0 level, as diffusers does.
import {
  FullSchedule, ResolvedConfig, SamplerName, alphaAddNoise, alphasCumprodShared, checkSteps, epsToX0, f32, rejectClipSample,
  npLinspace, sqrtF,
} from './common';

/** The LCM/TCD inference timesteps: n picks from the original_inference_steps grid, or validated custom ones. */
export function consistencyTimesteps(name: SamplerName, c: ResolvedConfig, n?: number, custom?: number[]): number[] {
  const N = c.num_train_timesteps;
  const orig = c.original_inference_steps;
  if (custom !== undefined) {
    if (n !== undefined) throw new Error(`${name} sampler: pass either steps or timesteps, not both`);
    if (custom.length === 0) throw new Error(`${name} sampler: timesteps must not be empty`);
    custom.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= N) {
        throw new Error(`${name} sampler: timesteps must be integers in [0, ${N - 1}], got ${t}`);
      }
      if (i > 0 && t >= custom[i - 1]) throw new Error(`${name} sampler: timesteps must be in descending order`);
    });
    return custom.slice();
  }
  if (n === undefined) throw new Error(`${name} sampler: pass steps or timesteps`);
  checkSteps(name, n, orig);
  const k = Math.floor(N / orig);
  const grid: number[] = [];
  for (let j = orig; j >= 1; j--) grid.push(j * k - 1);
  return npLinspace(0, grid.length, n, false).map((v) => grid[Math.floor(v)]);
}

export function tcdSchedule(c: ResolvedConfig, eta: number, n?: number, custom?: number[]): FullSchedule {
  rejectClipSample('tcd', c);
  const timesteps = consistencyTimesteps('tcd', c, n, custom);
  const ac = alphasCumprodShared(c);
  const keep = f32(1 - eta);
  const last = timesteps.length - 1;
  return {
    name: 'tcd',
    timesteps,
    initNoiseSigma: 1,
    eta,
    config: c,
    step(i) {
      const t = timesteps[i];
      const tPrev = i < last ? timesteps[i + 1] : 0;
      const s = Math.floor(f32(keep * tPrev));
      const at = ac[t];
      const aPrev = ac[tPrev];
      const as = ac[s];
      const sqrtAt = sqrtF(at);
      const x0 = epsToX0(sqrtAt, sqrtF(f32(1 - at)));
      const sqrtAs = sqrtF(as);
      const sqrtBs = sqrtF(f32(1 - as));
      // x_s = sqrtAs * x0 + sqrtBs * eps
      const xsA = sqrtAs * x0.a;
      const xsB = sqrtAs * x0.b + sqrtBs;
      if (eta > 0 && i < last) {
        const ratio = f32(aPrev / as);
        const keepS = sqrtF(ratio);
        const noiseS = sqrtF(f32(1 - ratio));
        return {
          t, index: i, inputScale: 1, a: keepS * xsA, b: keepS * xsB, c: noiseS, noise: true,
          ...(noiseS === 0 ? { drawsUnused: true } : {}), x0,
        };
      }
      return { t, index: i, inputScale: 1, a: xsA, b: xsB, c: 0, noise: false, x0 };
    },
    addNoise: (t) => alphaAddNoise(ac, t),
  };
}
