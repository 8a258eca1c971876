// Euler and Euler ancestral (diffusers 0.27 EulerDiscreteScheduler with s_churn = 0, and
// EulerAncestralDiscreteScheduler; epsilon prediction, linear sigma interpolation) as fused-step coefficients.
//
// Timesteps are float32: trailing round(arange(N, 0, -N/n)) - 1; leading arange(n) * (N // n) reversed +
// steps_offset; linspace linspace(0, N-1, n) reversed (not rounded). Sigmas: the training sigmas
// sqrt((1 - a)/a) in float32, np.interp'ed at the timesteps in float64, cast to float32, plus a final 0.
// init_noise_sigma: max sigma for trailing/linspace, sqrt(max^2 + 1) for leading (diffusers' rule).
// Model input: x / sqrt(sigma^2 + 1)  ->  inputScale = 1 / sqrt(sigma^2 + 1).
// Euler:   x0 = x - sigma eps; prev = x + (x - x0)/sigma * (sigma' - sigma) = x + (sigma' - sigma) eps.
//          diffusers draws a noise tensor every step and, with s_churn = 0, never uses it (drawsUnused).
// Euler a: sigma_up = sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2), sigma_down = sqrt(sigma'^2 - sigma_up^2);
//          prev = x + (sigma_down - sigma) eps + sigma_up z, a noise tensor drawn every step.
import { FullSchedule, ResolvedConfig, alphasCumprodShared, checkSteps, checkTimestepRange, f32, npArange, npLinspace, roundHalfEven, sqrtF } from './common';

export function eulerTimesteps(c: ResolvedConfig, n: number): number[] {
  const N = c.num_train_timesteps;
  switch (c.timestep_spacing) {
    case 'linspace':
      return npLinspace(0, N - 1, n).map(f32).reverse();
    case 'leading': {
      const ratio = Math.floor(N / n);
      const ts: number[] = [];
      for (let i = n - 1; i >= 0; i--) ts.push(f32(i * ratio + c.steps_offset));
      return ts;
    }
    case 'trailing':
      return npArange(N, 0, -N / n).map((v) => f32(roundHalfEven(v) - 1));
  }
}

/** Training sigmas sqrt((1 - alphas_cumprod) / alphas_cumprod), float32 like diffusers' torch expression. */
export function trainingSigmas(c: ResolvedConfig): Float64Array {
  const ac = alphasCumprodShared(c);
  return ac.map((a) => sqrtF(f32(f32(1 - a) / a)));
}

/** np.interp(x, arange(len(fp)), fp) in float64 (numpy's formula: slope * (x - xp[j]) + fp[j]). */
function interpOnIndexGrid(x: number, fp: Float64Array): number {
  const last = fp.length - 1;
  if (!(x > 0)) return fp[0];
  if (x >= last) return fp[last];
  const j = Math.floor(x);
  if (j === x) return fp[j];
  const slope = fp[j + 1] - fp[j]; // divided by xp[j+1] - xp[j] = 1
  return slope * (x - j) + fp[j];
}

export function eulerSchedule(c: ResolvedConfig, n: number, ancestral: boolean): FullSchedule {
  const name = ancestral ? 'euler_a' : 'euler';
  checkSteps(name, n, c.num_train_timesteps);
  const timesteps = eulerTimesteps(c, n);
  // diffusers would clamp the sigma (np.interp) but still hand the UNet a timestep it was never trained on.
  checkTimestepRange(name, c, timesteps, n);
  const train = trainingSigmas(c);
  const sigmas = timesteps.map((t) => f32(interpOnIndexGrid(t, train)));
  sigmas.push(0);
  const maxSigma = Math.max(...sigmas);
  const initNoiseSigma = c.timestep_spacing === 'leading' ? sqrtF(f32(f32(maxSigma * maxSigma) + 1)) : maxSigma;
  return {
    name,
    timesteps,
    initNoiseSigma,
    sigmas,
    eta: 0,
    config: c,
    step(i) {
      const sigma = sigmas[i];
      const next = sigmas[i + 1];
      const inputScale = 1 / sqrtF(f32(f32(sigma * sigma) + 1));
      const x0 = { a: 1, b: -sigma };
      if (!ancestral) {
        return { t: timesteps[i], index: i, inputScale, a: 1, b: f32(next - sigma), c: 0, noise: true, drawsUnused: true, x0 };
      }
      const from2 = f32(sigma * sigma);
      const to2 = f32(next * next);
      const up = sqrtF(f32(f32(to2 * f32(from2 - to2)) / from2));
      const down = sqrtF(f32(to2 - f32(up * up)));
      return {
        t: timesteps[i], index: i, inputScale, a: 1, b: f32(down - sigma), c: up, noise: true,
        ...(up === 0 ? { drawsUnused: true } : {}), x0,
      };
    },
    addNoise(t) {
      const i = timesteps.indexOf(t);
      if (i < 0) throw new Error(`${name} add_noise: timestep ${t} is not in the schedule [${timesteps.join(', ')}]`);
      return { a: 1, b: sigmas[i] };
    },
  };
}
