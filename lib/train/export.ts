/**
 * Writing trained networks back to files other tools read: a ParamStore as a safetensors state dict in
 * PyTorch layout (conv weights OHWI -> OIHW, diffusers key names), and a whole diffusers pipeline folder
 * (model_index.json; unet/, vae/, text_encoder/ with config.json + weights; tokenizer/; scheduler/) that
 * lib/pipelines/sd.ts loadPipeline and diffusers' from_pretrained load. Every file is written atomically
 * (temporary name, then rename).
 */
import * as fs from 'fs';
import * as path from 'path';
import type { ParamStore } from '../nn/params';
import { saveSafetensors, type StTensorIn } from '../io/safetensors';
import { f32ToF16Bits, f32ToBf16Bits } from '../tensor/dtype';
import { ohwiToOihw } from './lora';

export type SaveDType = 'F32' | 'F16' | 'BF16';

/** The store's parameters as a PyTorch-layout state dict (declared order). */
export async function storeStateDict(store: ParamStore, dtype: SaveDType = 'F32'): Promise<Record<string, StTensorIn>> {
  const out: Record<string, StTensorIn> = {};
  for (const [name, spec] of store.specs) {
    const t = store.get(name);
    let v = await t.floats();
    if (spec.kind === 'conv') {
      const [o, i, kh, kw] = spec.shape;
      v = ohwiToOihw(v, o, kh, kw, i);
    }
    let data: ArrayBufferView = v;
    if (dtype !== 'F32') {
      const conv = dtype === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
      const u = new Uint16Array(v.length);
      for (let k = 0; k < v.length; k++) u[k] = conv(v[k]);
      data = u;
    }
    out[name] = { dtype, shape: [...spec.shape], data };
  }
  return out;
}

export function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

export interface PipelineParts {
  unet: { store: ParamStore; config: Record<string, unknown> };
  vae: { store: ParamStore; config: Record<string, unknown> };
  textEncoder: { store: ParamStore; config: Record<string, unknown> };
  /** writes tokenizer/ into the given folder */
  writeTokenizer: (dir: string) => void;
  scheduler: Record<string, unknown>;
  dtype?: SaveDType;
}

/** Writes one component folder: config.json and the weights file (diffusers names, PyTorch layout). */
export async function writeComponent(dir: string, file: string, part: { store: ParamStore; config: Record<string, unknown> }, dtype: SaveDType = 'F32'): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  writeJsonAtomic(path.join(dir, 'config.json'), part.config);
  saveSafetensors(path.join(dir, file), await storeStateDict(part.store, dtype), { format: 'pt' });
}

/** Writes a diffusers StableDiffusionPipeline folder. */
export async function writeDiffusersPipeline(dir: string, p: PipelineParts): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const weights = 'diffusion_pytorch_model.safetensors';
  await writeComponent(path.join(dir, 'unet'), weights, p.unet, p.dtype);
  await writeComponent(path.join(dir, 'vae'), weights, p.vae, p.dtype);
  await writeComponent(path.join(dir, 'text_encoder'), 'model.safetensors', p.textEncoder, p.dtype);
  p.writeTokenizer(path.join(dir, 'tokenizer'));
  fs.mkdirSync(path.join(dir, 'scheduler'), { recursive: true });
  writeJsonAtomic(path.join(dir, 'scheduler', 'scheduler_config.json'), p.scheduler);
  writeJsonAtomic(path.join(dir, 'model_index.json'), {
    _class_name: 'StableDiffusionPipeline', _diffusers_version: '0.27.2',
    feature_extractor: [null, null], image_encoder: [null, null], requires_safety_checker: false, safety_checker: [null, null],
    scheduler: ['diffusers', String(p.scheduler._class_name ?? 'DDIMScheduler')], text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'], unet: ['diffusers', 'UNet2DConditionModel'], vae: ['diffusers', 'AutoencoderKL'],
  });
}
