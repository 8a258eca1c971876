/**
 * Hyper-SD presets: how the model card runs each released checkpoint (../shared/HYPERSD.md section 3).
 * A preset only fills defaults; every option given to generate() wins over it.
 */
import type { SamplerName } from '../schedulers';

export interface Preset {
  sampler: SamplerName;
  steps: number;
  guidance: number;
  eta?: number;
  timesteps?: number[];
  description: string;
}

const nstep = (n: number, model: string): Preset => ({
  sampler: 'ddim', steps: n, guidance: 0,
  description: `Hyper-${model}-${n}step${n > 1 ? 's' : ''}-lora: DDIM trailing, ${n} step(s), no CFG (fuse at scale 1.0)`,
});

export const PRESETS: Record<string, Preset> = {
  'hyper-sd15-1step': nstep(1, 'SD15'),
  'hyper-sd15-2step': nstep(2, 'SD15'),
  'hyper-sd15-4step': nstep(4, 'SD15'),
  'hyper-sd15-8step': nstep(8, 'SD15'),
  'hyper-sdxl-1step': nstep(1, 'SDXL'),
  'hyper-sdxl-2step': nstep(2, 'SDXL'),
  'hyper-sdxl-4step': nstep(4, 'SDXL'),
  'hyper-sdxl-8step': nstep(8, 'SDXL'),
  'hyper-sd15-unified': { sampler: 'tcd', steps: 1, guidance: 0, eta: 1.0, description: 'Hyper-SD15-1step-lora as the unified LoRA: TCD (eta 1.0), 1..8 steps, no CFG' },
  'hyper-sdxl-unified': { sampler: 'tcd', steps: 1, guidance: 0, eta: 1.0, description: 'Hyper-SDXL-1step-lora as the unified LoRA: TCD (eta 1.0), 1..8 steps, no CFG' },
  'hyper-sdxl-1step-unet': { sampler: 'lcm', steps: 1, guidance: 0, timesteps: [800], description: 'Hyper-SDXL-1step-Unet: LCM with timesteps [800], 1 step, no CFG' },
  'hyper-sd15-8step-cfg': { sampler: 'ddim', steps: 8, guidance: 5, description: 'Hyper-SD15-8steps-CFG-lora: DDIM trailing, 8 steps, CFG 5..8 with a negative prompt' },
  'hyper-sd15-12step-cfg': { sampler: 'ddim', steps: 12, guidance: 5, description: 'Hyper-SD15-12steps-CFG-lora: DDIM trailing, 12 steps, CFG 5..8' },
  'hyper-sdxl-8step-cfg': { sampler: 'ddim', steps: 8, guidance: 5, description: 'Hyper-SDXL-8steps-CFG-lora: DDIM trailing, 8 steps, CFG 5..8' },
  'hyper-sdxl-12step-cfg': { sampler: 'ddim', steps: 12, guidance: 5, description: 'Hyper-SDXL-12steps-CFG-lora: DDIM trailing, 12 steps, CFG 5..8' },
};

export function getPreset(name: string): Preset {
  const p = typeof name === 'string' && Object.hasOwn(PRESETS, name) ? PRESETS[name] : undefined;
  if (!p) throw new Error(`unknown preset '${name}' (known: ${Object.keys(PRESETS).join(', ')})`);
  return p;
}
