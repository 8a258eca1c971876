// DDIM (diffusers 0.27 DDIMScheduler, epsilon prediction) as fused-step coefficients.
//
// Timesteps: trailing round(arange(N, 0, -N/n)) - 1; leading arange(n) * (N // n) reversed + steps_offset;
// linspace round(linspace(0, N-1, n)) reversed (numpy rounding, half to even).
// Step at t: prev_t = t - N // n (not the next list entry); alpha_prev = alphas_cumprod[prev_t], or
// final_alpha_cumprod (1 or alphas_cumprod[0]) when prev_t < 0.
//   x0   = (x - sqrt(1 - a_t) eps) / sqrt(a_t)
//   std  = eta * sqrt(variance),  variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
//   prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - std^2) eps + std z      (z drawn every step when eta > 0)
// so a = sqrt(a_prev)/sqrt(a_t), b = sqrt(1 - a_prev - std^2) - sqrt(a_prev) sqrt(1 - a_t)/sqrt(a_t), c = std,
// with every scalar evaluated in float32 as diffusers' 0-d tensors do.
import {
  FullSchedule, ResolvedConfig, alphaAddNoise, alphasCumprodShared, checkSteps, checkTimestepRange, epsToX0, f32, npArange, npLinspace, rejectClipSample,
  roundHalfEven, sqrtF,
} from './common';

export function ddimTimesteps(c: ResolvedConfig, n: number): number[] {
  const N = c.num_train_timesteps;
  switch (c.timestep_spacing) {
    case 'linspace':
      return npLinspace(0, N - 1, n).map(roundHalfEven).reverse();
    case 'leading': {
      const ratio = Math.floor(N / n);
      const ts: number[] = [];
      for (let i = n - 1; i >= 0; i--) ts.push(i * ratio + c.steps_offset);
      return ts;
    }
    case 'trailing':
      return npArange(N, 0, -N / n).map((v) => roundHalfEven(v) - 1);
  }
}

export function ddimSchedule(c: ResolvedConfig, n: number, eta: number): FullSchedule {
  checkSteps('ddim', n, c.num_train_timesteps);
  rejectClipSample('ddim', c);
  const ac = alphasCumprodShared(c);
  const finalAlpha = c.set_alpha_to_one ? 1 : ac[0];
  const timesteps = ddimTimesteps(c, n);
  checkTimestepRange('ddim', c, timesteps, n);
  const stride = Math.floor(c.num_train_timesteps / n);
  const etaF = f32(eta);
  return {
    name: 'ddim',
    timesteps,
    initNoiseSigma: 1,
    eta,
    config: c,
    step(i) {
      const t = timesteps[i];
      const prevT = t - stride;
      const at = ac[t];
      const aPrev = prevT >= 0 ? ac[prevT] : finalAlpha;
      const bt = f32(1 - at);
      const sqrtAt = sqrtF(at);
      const sqrtBt = sqrtF(bt);
      const variance = f32(f32(f32(1 - aPrev) / bt) * f32(1 - f32(at / aPrev)));
      const std = f32(etaF * sqrtF(variance));
      const dir = sqrtF(f32(f32(1 - aPrev) - f32(std * std)));
      const sqrtAPrev = sqrtF(aPrev);
      const x0 = epsToX0(sqrtAt, sqrtBt);
      const noise = eta > 0;
      return {
        t,
        index: i,
        inputScale: 1,
        a: sqrtAPrev * x0.a,
        b: dir + sqrtAPrev * x0.b,
        c: noise ? std : 0,
        noise,
        ...(noise && std === 0 ? { drawsUnused: true } : {}),
        x0,
      };
    },
    addNoise: (t) => alphaAddNoise(ac, t),
  };
}
