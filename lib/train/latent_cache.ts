/**
 * A latent cache: the VAE encoder runs once over a dataset and its latent distributions (mean and logvar,
 * NCHW) are stored in one safetensors file with the captions, so the diffusion stage never runs the encoder.
 * A training batch samples z = (mean + exp(logvar / 2) * n) * scaling_factor with the trainer's seeded Rng
 * (diffusers' latent_dist.sample() * scaling_factor), or takes the mean when sample = false.
 * File: tensors `mean`, `logvar` F32 [N, C, h, w]; metadata `captions` (JSON list), `scaling_factor`, `source`.
 */
import { SafeTensors, saveSafetensors } from '../io/safetensors';
import type { RawImage } from '../io/png';
import { tensor, tidy } from '../tensor';
import type { AutoencoderKL } from '../models/vae';
import { imagesToNCHW } from './image_folder';
import type { Rng } from './rng';

export interface ImageSource {
  readonly length: number;
  image(i: number): RawImage;
  caption(i: number): string;
}

export interface BuildCacheOptions {
  batch?: number;
  /** the factor latents are multiplied by (default the VAE config's scaling_factor) */
  scalingFactor?: number;
  /** recorded in the file (what the images were) */
  source?: string;
  onProgress?: (done: number, total: number) => void;
}

/** Encodes every image of `src` with the VAE into an in-memory cache (nothing written). */
export async function encodeDataset(vae: AutoencoderKL, src: ImageSource, o: BuildCacheOptions = {}): Promise<LatentCache> {
  const N = src.length, B = o.batch ?? 32;
  if (N < 1) throw new Error('encodeDataset: the dataset is empty');
  let mean: Float32Array | null = null, logvar: Float32Array | null = null;
  let per = 0, shape: number[] = [];
  const captions: string[] = [];
  for (let s = 0; s < N; s += B) {
    const idx = Array.from({ length: Math.min(B, N - s) }, (_, k) => s + k);
    const imgs = idx.map((i) => src.image(i));
    idx.forEach((i) => captions.push(src.caption(i)));
    const H = imgs[0].height, W = imgs[0].width;
    const enc = tidy(() => vae.encode(tensor(imagesToNCHW(imgs), [idx.length, 3, H, W])));
    const m = await enc.mean.floats(), lv = await enc.logvar.floats();
    if (!mean) {
      shape = enc.mean.shape.slice(1);
      per = m.length / idx.length;
      mean = new Float32Array(N * per);
      logvar = new Float32Array(N * per);
    }
    mean.set(m, s * per);
    logvar!.set(lv, s * per);
    enc.mean.dispose();
    enc.logvar.dispose();
    o.onProgress?.(s + idx.length, N);
  }
  return new LatentCache(mean!, logvar!, [N, ...shape], captions, o.scalingFactor ?? vae.scalingFactor);
}

/** Encodes every image of `src` with the VAE and writes the cache file (atomically). */
export async function buildLatentCache(vae: AutoencoderKL, src: ImageSource, file: string, o: BuildCacheOptions = {}): Promise<LatentCache> {
  const c = await encodeDataset(vae, src, o);
  c.save(file, o.source ?? '');
  return c;
}

export class LatentCache {
  constructor(readonly mean: Float32Array, readonly logvar: Float32Array, readonly shape: number[],
    readonly captions: string[], readonly scalingFactor: number) {}

  static open(file: string): LatentCache {
    const st = SafeTensors.open(file);
    try {
      for (const k of ['mean', 'logvar']) if (!st.has(k)) throw new Error(`${file}: not a latent cache (no '${k}' tensor)`);
      const shape = st.info('mean').shape;
      if (st.info('logvar').shape.join(',') !== shape.join(',')) throw new Error(`${file}: mean and logvar shapes differ`);
      let captions: unknown;
      try {
        captions = JSON.parse(st.metadata.captions ?? 'null');
      } catch {
        captions = null;
      }
      if (!Array.isArray(captions) || captions.length !== shape[0]) throw new Error(`${file}: the captions metadata does not list ${shape[0]} captions`);
      const sf = Number(st.metadata.scaling_factor);
      if (!Number.isFinite(sf) || sf <= 0) throw new Error(`${file}: bad scaling_factor '${st.metadata.scaling_factor}'`);
      return new LatentCache(st.readF32('mean'), st.readF32('logvar'), shape, captions as string[], sf);
    } finally {
      st.close();
    }
  }

  get length(): number {
    return this.shape[0];
  }

  save(file: string, source = ''): void {
    saveSafetensors(file, {
      mean: { dtype: 'F32', shape: this.shape, data: this.mean },
      logvar: { dtype: 'F32', shape: this.shape, data: this.logvar },
    }, { captions: JSON.stringify(this.captions), scaling_factor: String(this.scalingFactor), source });
  }

  /** Scaled latents of the given items, [idx.length, C, h, w] flat: sampled with rng, or the means. */
  batch(idx: readonly number[], rng: Rng | null): Float32Array {
    const per = this.mean.length / this.length;
    const out = new Float32Array(idx.length * per);
    idx.forEach((i, b) => {
      if (!(i >= 0 && i < this.length)) throw new Error(`LatentCache: index ${i} is outside 0..${this.length - 1}`);
      for (let k = 0; k < per; k++) {
        const mu = this.mean[i * per + k];
        const z = rng ? mu + Math.exp(0.5 * this.logvar[i * per + k]) * rng.normal() : mu;
        out[b * per + k] = z * this.scalingFactor;
      }
    });
    return out;
  }

  /** 1 / std of the cached means (diffusers' recipe for a new VAE's scaling_factor). */
  suggestedScalingFactor(): number {
    let s = 0, s2 = 0;
    for (const v of this.mean) {
      s += v;
      s2 += v * v;
    }
    const n = this.mean.length, varc = s2 / n - (s / n) ** 2;
    return 1 / Math.sqrt(Math.max(varc, 1e-12));
  }
}
