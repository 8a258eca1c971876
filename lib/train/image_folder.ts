/**
 * An image-folder dataset: every `<name>.png` with a `<name>.txt` caption beside it (the kohya / diffusers
 * "imagefolder" convention). Images are resized so the shorter side is `size` (a triangle filter widened by the
 * shrink factor, i.e. area-averaging when shrinking, bilinear when enlarging, as PIL's antialiased resize) and
 * center-cropped to size x size, then given as NCHW floats in [-1, 1] (the VAE's input range).
 * Files are listed in sorted order so indices are stable; PNG only (lib/io/png).
 */
import * as fs from 'fs';
import * as path from 'path';
import { readPNG, type RawImage } from '../io/png';

export interface ImageCaption { file: string; caption: string }

export class ImageFolderDataset {
  readonly items: ImageCaption[];

  constructor(readonly dir: string, readonly size: number) {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`ImageFolderDataset: ${dir} is not a folder`);
    if (!Number.isInteger(size) || size < 1) throw new Error(`ImageFolderDataset: size must be a positive integer, got ${size}`);
    const pngs = fs.readdirSync(dir).filter((f) => f.toLowerCase().endsWith('.png')).sort();
    this.items = [];
    const uncaptioned: string[] = [];
    for (const f of pngs) {
      const txt = path.join(dir, f.replace(/\.png$/i, '.txt'));
      if (!fs.existsSync(txt)) {
        uncaptioned.push(f);
        continue;
      }
      this.items.push({ file: path.join(dir, f), caption: fs.readFileSync(txt, 'utf8').trim() });
    }
    if (uncaptioned.length) throw new Error(`ImageFolderDataset: ${uncaptioned.length} images in ${dir} have no .txt caption (e.g. ${uncaptioned.slice(0, 3).join(', ')})`);
    if (this.items.length === 0) throw new Error(`ImageFolderDataset: no .png + .txt pairs in ${dir}`);
  }

  get length(): number {
    return this.items.length;
  }

  /** The image, resized and center-cropped, as RGB bytes. */
  image(i: number): RawImage {
    const it = this.items[i];
    if (!it) throw new Error(`ImageFolderDataset: index ${i} is outside 0..${this.items.length - 1}`);
    return resizeCenterCrop(readPNG(it.file), this.size);
  }
  caption(i: number): string {
    return this.items[i].caption;
  }
}

/** Shorter side to `size`, then the centered size x size crop. */
export function resizeCenterCrop(img: RawImage, size: number): RawImage {
  const s = size / Math.min(img.width, img.height);
  const w = Math.max(size, Math.round(img.width * s)), h = Math.max(size, Math.round(img.height * s));
  const r = resize(img, w, h);
  const x0 = Math.floor((w - size) / 2), y0 = Math.floor((h - size) / 2);
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) out.set(r.data.subarray(((y + y0) * w + x0) * 3, ((y + y0) * w + x0 + size) * 3), y * size * 3);
  return { width: size, height: size, channels: 3, data: out };
}

/** Separable resize with a triangle filter whose support grows with the shrink factor. */
export function resize(img: RawImage, W: number, H: number): RawImage {
  const C = img.channels;
  const src = new Float32Array(img.width * img.height * 3);
  for (let i = 0; i < img.width * img.height; i++) for (let c = 0; c < 3; c++) src[i * 3 + c] = img.data[i * C + Math.min(c, C - 1)];
  const horiz = resample1d(src, img.width, img.height, W, true);
  const both = resample1d(horiz, W, img.height, H, false);
  const data = new Uint8Array(W * H * 3);
  for (let i = 0; i < data.length; i++) data[i] = Math.min(255, Math.max(0, Math.round(both[i])));
  return { width: W, height: H, channels: 3, data };
}

function resample1d(src: Float32Array, w: number, h: number, n: number, alongX: boolean): Float32Array {
  const len = alongX ? w : h;
  const out = new Float32Array(alongX ? n * h * 3 : w * n * 3);
  const scale = len / n, support = Math.max(1, scale);
  const weights: { i0: number; ws: number[] }[] = [];
  for (let j = 0; j < n; j++) {
    const center = (j + 0.5) * scale;
    const i0 = Math.max(0, Math.floor(center - support)), i1 = Math.min(len - 1, Math.ceil(center + support));
    const ws: number[] = [];
    let sum = 0;
    for (let i = i0; i <= i1; i++) {
      const wgt = Math.max(0, 1 - Math.abs(i + 0.5 - center) / support);
      ws.push(wgt);
      sum += wgt;
    }
    weights.push({ i0, ws: ws.map((x) => x / (sum || 1)) });
  }
  const lines = alongX ? h : w;
  for (let l = 0; l < lines; l++) {
    for (let j = 0; j < n; j++) {
      const { i0, ws } = weights[j];
      for (let c = 0; c < 3; c++) {
        let acc = 0;
        for (let k = 0; k < ws.length; k++) {
          const i = i0 + k;
          acc += ws[k] * src[(alongX ? l * w + i : i * w + l) * 3 + c];
        }
        out[(alongX ? l * n + j : j * w + l) * 3 + c] = acc;
      }
    }
  }
  return out;
}

/** RGB bytes of several images -> NCHW floats in [-1, 1]. */
export function imagesToNCHW(imgs: readonly RawImage[]): Float32Array {
  const { width: W, height: H } = imgs[0];
  const out = new Float32Array(imgs.length * 3 * H * W);
  imgs.forEach((img, b) => {
    if (img.width !== W || img.height !== H) throw new Error(`imagesToNCHW: image ${b} is ${img.width}x${img.height}, expected ${W}x${H}`);
    const C = img.channels;
    for (let i = 0; i < H * W; i++)
      for (let c = 0; c < 3; c++) out[((b * 3 + c) * H * W) + i] = (img.data[i * C + Math.min(c, C - 1)] / 255) * 2 - 1;
  });
  return out;
}
