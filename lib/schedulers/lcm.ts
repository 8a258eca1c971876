// LCM (diffusers 0.27 LCMScheduler, epsilon prediction) as fused-step coefficients.
//
// Timesteps: the LCM grid (see tcd.ts consistencyTimesteps), or custom ones such as [800] (Hyper-SD's 1-step UNet)
// or [999, 759, 499, 259].
// Step at t with next timestep t' (t itself on the last step), boundary scalings with s = timestep_scaling * t
// and sigma_data = 0.5:  c_skip = 0.25 / (s^2 + 0.25),  c_out = s / sqrt(s^2 + 0.25), all float32 like diffusers.
//   x0       = (x - sqrt(1 - a_t) eps) / sqrt(a_t)
//   denoised = c_out x0 + c_skip x
//   prev     = sqrt(a_t') denoised + sqrt(1 - a_t') z   (draws z)  except on the last step, where prev = denoised
import {
  FullSchedule, ResolvedConfig, alphaAddNoise, alphasCumprodShared, epsToX0, f32, rejectClipSample, sqrtF,
} from './common';
import { consistencyTimesteps } from './tcd';

const SIGMA_DATA_SQ = 0.25;

export function lcmSchedule(c: ResolvedConfig, n?: number, custom?: number[]): FullSchedule {
  rejectClipSample('lcm', c);
  const timesteps = consistencyTimesteps('lcm', c, n, custom);
  const ac = alphasCumprodShared(c);
  const scaling = f32(c.timestep_scaling);
  const last = timesteps.length - 1;
  return {
    name: 'lcm',
    timesteps,
    initNoiseSigma: 1,
    eta: 0,
    config: c,
    step(i) {
      const t = timesteps[i];
      const at = ac[t];
      const scaled = f32(t * scaling);
      const denom = f32(f32(scaled * scaled) + SIGMA_DATA_SQ);
      const cSkip = f32(SIGMA_DATA_SQ / denom);
      const cOut = f32(scaled / sqrtF(denom));
      const x0 = epsToX0(sqrtF(at), sqrtF(f32(1 - at)));
      const denoised = { a: cOut * x0.a + cSkip, b: cOut * x0.b };
      if (i === last) {
        return { t, index: i, inputScale: 1, a: denoised.a, b: denoised.b, c: 0, noise: false, x0: denoised };
      }
      const aPrev = ac[timesteps[i + 1]];
      const keep = sqrtF(aPrev);
      const noiseS = sqrtF(f32(1 - aPrev));
      return {
        t, index: i, inputScale: 1, a: keep * denoised.a, b: keep * denoised.b, c: noiseS, noise: true,
        x0: denoised,
      };
    },
    addNoise: (t) => alphaAddNoise(ac, t),
  };
}
