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
import type { Tensor } from '../tensor';
import { cast, permute } from '../ops/shape';

export type SaveDType = 'F32' | 'F16' | 'BF16';

/**
 * The store's parameters as a PyTorch-layout state dict (declared order). The repack (OHWI -> OIHW) and the
 * conversion to the file's dtype run as native ops (permute, cast: round to nearest even, as f32ToF16Bits /
 * f32ToBf16Bits), and the bytes are read as they are: per-element JS loops made writing SD1.5 take 51 s.
 */
export async function storeStateDict(store: ParamStore, dtype: SaveDType = 'F32'): Promise<Record<string, StTensorIn>> {
  const out: Record<string, StTensorIn> = {};
  const target = ({ F32: 'f32', F16: 'f16', BF16: 'bf16' } as const)[dtype];
  for (const [name, spec] of store.specs) {
    const tmp: Tensor[] = [];
    let t = store.get(name);
    if (spec.kind === 'conv' && spec.shape[2] * spec.shape[3] > 1) {
      t = permute(t, [0, 3, 1, 2]);
      tmp.push(t);
    }
    if (t.dtype !== target) {
      t = cast(t, target);
      tmp.push(t);
    }
    try {
      out[name] = { dtype, shape: [...spec.shape], data: await t.bytes() };
    } finally {
      for (const x of tmp) x.dispose();
    }
  }
  return out;
}

export function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch { /* never created */ }
    throw new Error(`${file}: writing failed: ${(e as Error).message}`);
  }
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
