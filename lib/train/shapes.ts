/**
 * A procedural text-to-image dataset for training a teacher from scratch: 64x64 RGB images of one to three
 * coloured shapes (circle, square, triangle) on a plain background of another colour, with captions such as
 * "a red circle above a blue square on a white background".
 *
 * Sample i of seed s is a pure function of (s, i) (its own Rng([s, i])), so a dataset is reproducible, can be
 * read in any order, and needs no files. Shapes are rendered with 4x4 supersampling (anti-aliased edges), do
 * not overlap, and keep a margin from the border. Captions:
 *   1 shape : "a {colour} {shape} on a {bg} background"
 *   2 shapes: "a {A} above|below|to the left of|to the right of a {B} on a {bg} background" (the relation
 *             follows the larger of the vertical / horizontal offsets between the centres)
 *   3 shapes: "a {A}, a {B} and a {C} on a {bg} background" (left to right)
 * ("an" before a vowel: "an orange square", "on an orange background").
 * Mix: 50% one shape, 35% two, 15% three (sizes shrink with the count).
 */
import type { RawImage } from '../io/png';
import { Rng } from './rng';

export const COLOURS: Readonly<Record<string, readonly [number, number, number]>> = {
  red: [220, 40, 40],
  green: [40, 170, 60],
  blue: [40, 70, 220],
  yellow: [240, 210, 40],
  orange: [245, 140, 30],
  purple: [140, 60, 190],
  white: [245, 245, 245],
  black: [25, 25, 25],
};
export const COLOUR_NAMES = Object.keys(COLOURS);
export const SHAPE_NAMES = ['circle', 'square', 'triangle'] as const;
export type ShapeName = (typeof SHAPE_NAMES)[number];

export interface ShapeSpec { shape: ShapeName; colour: string; cx: number; cy: number; r: number }
export interface SceneSpec { size: number; background: string; shapes: ShapeSpec[] }
export interface ShapeSample { image: RawImage; caption: string; scene: SceneSpec }

const RADIUS: Record<number, [number, number]> = { 1: [11, 20], 2: [8, 14], 3: [7, 11] };

/** Sample `index` of the dataset with this seed (64x64 unless size says otherwise). */
export function shapeSample(seed: number, index: number, size = 64): ShapeSample {
  const scene = randomScene(new Rng([seed, index]), size);
  return { image: renderScene(scene), caption: caption(scene), scene };
}

export function randomScene(rng: Rng, size = 64, count?: number): SceneSpec {
  const u = rng.float();
  const n = count ?? (u < 0.5 ? 1 : u < 0.85 ? 2 : 3);
  const colours = rng.shuffle([...COLOUR_NAMES]);
  const background = colours[n];
  const scale = size / 64;
  for (;;) {
    const shapes: ShapeSpec[] = [];
    for (let k = 0; k < n; k++) {
      const [lo, hi] = RADIUS[n];
      const r = Math.round(rng.uniform(lo, hi + 1) * scale * 10) / 10;
      let placed = false;
      for (let attempt = 0; attempt < 50 && !placed; attempt++) {
        const m = r + 2 * scale;
        const cx = rng.uniform(m, size - m), cy = rng.uniform(m, size - m);
        if (shapes.every((s) => Math.max(Math.abs(s.cx - cx), Math.abs(s.cy - cy)) > s.r + r + 2 * scale)) {
          shapes.push({ shape: rng.pick(SHAPE_NAMES), colour: colours[k], cx, cy, r });
          placed = true;
        }
      }
      if (!placed) break;
    }
    if (shapes.length === n) return { size, background, shapes };
  }
}

function inside(s: ShapeSpec, x: number, y: number): boolean {
  const dx = x - s.cx, dy = y - s.cy;
  if (s.shape === 'circle') return dx * dx + dy * dy <= s.r * s.r;
  if (s.shape === 'square') return Math.abs(dx) <= s.r * 0.85 && Math.abs(dy) <= s.r * 0.85;
  // upward triangle with apex (0, -r) and base y = +r spanning [-r, r]
  if (dy < -s.r || dy > s.r) return false;
  const half = ((dy + s.r) / (2 * s.r)) * s.r;
  return Math.abs(dx) <= half;
}

/** Draws a scene (4x4 supersampled where a shape's bounding box reaches). */
export function renderScene(sc: SceneSpec): RawImage {
  const N = sc.size, S = 4;
  const data = new Uint8Array(N * N * 3);
  const bg = COLOURS[sc.background];
  for (let y = 0; y < N; y++) {
    for (let x = 0; x < N; x++) {
      const o = (y * N + x) * 3;
      const near = sc.shapes.filter((s) => x + 1 >= s.cx - s.r && x <= s.cx + s.r && y + 1 >= s.cy - s.r && y <= s.cy + s.r);
      if (near.length === 0) {
        data.set(bg, o);
        continue;
      }
      let r = 0, g = 0, b = 0;
      for (let sy = 0; sy < S; sy++) {
        for (let sx = 0; sx < S; sx++) {
          const px = x + (sx + 0.5) / S, py = y + (sy + 0.5) / S;
          let c = bg;
          for (const s of near) if (inside(s, px, py)) c = COLOURS[s.colour];
          r += c[0]; g += c[1]; b += c[2];
        }
      }
      data[o] = Math.round(r / (S * S));
      data[o + 1] = Math.round(g / (S * S));
      data[o + 2] = Math.round(b / (S * S));
    }
  }
  return { width: N, height: N, channels: 3, data };
}

export function caption(sc: SceneSpec): string {
  const name = (s: ShapeSpec) => `${article(s.colour)} ${s.colour} ${s.shape}`;
  const tail = ` on ${article(sc.background)} ${sc.background} background`;
  const sh = sc.shapes;
  if (sh.length === 1) return name(sh[0]) + tail;
  if (sh.length === 2) {
    const [a, b] = sh;
    const dx = b.cx - a.cx, dy = b.cy - a.cy;
    const rel = Math.abs(dy) >= Math.abs(dx) ? (dy > 0 ? 'above' : 'below') : dx > 0 ? 'to the left of' : 'to the right of';
    return `${name(a)} ${rel} ${name(b)}${tail}`;
  }
  const byX = [...sh].sort((p, q) => p.cx - q.cx);
  return `${byX.slice(0, -1).map(name).join(', ')} and ${name(byX[byX.length - 1])}${tail}`;
}

const article = (word: string) => (/^[aeiou]/.test(word) ? 'an' : 'a');

/** Every word a caption can contain (for the tokenizer vocabulary). */
export function captionWords(): string[] {
  return [...new Set(['a', 'an', 'on', 'background', 'above', 'below', 'to', 'the', 'left', 'right', 'of', 'and', ',', ...COLOUR_NAMES, ...SHAPE_NAMES])];
}

/** The palette entry nearest to an RGB value. */
export function nearestColour(r: number, g: number, b: number): string {
  let best = '', bd = Infinity;
  for (const [n, c] of Object.entries(COLOURS)) {
    const d = (r - c[0]) ** 2 + (g - c[1]) ** 2 + (b - c[2]) ** 2;
    if (d < bd) { bd = d; best = n; }
  }
  return best;
}

export interface ColourReading {
  /** the palette colour of most border pixels */
  background: string;
  /** the palette colour of most pixels that are not background-coloured (null: under 1% of the image) */
  shape: string | null;
  /** fraction of the image that is not background-coloured */
  shapeFraction: number;
}

/**
 * Reads an image the way the prompt-adherence check does: every pixel is classified to the nearest palette
 * colour; the background is the majority class of the 3-pixel border; the shape region is every pixel of
 * another class, and its dominant class is the shape's colour.
 */
export function readColours(img: RawImage): ColourReading {
  const { width: W, height: H, channels: C, data } = img;
  const cls: string[] = new Array(W * H);
  for (let i = 0; i < W * H; i++) cls[i] = nearestColour(data[i * C], data[i * C + 1], data[i * C + 2]);
  const count = (idx: number[]) => {
    const m = new Map<string, number>();
    for (const i of idx) m.set(cls[i], (m.get(cls[i]) ?? 0) + 1);
    return [...m].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  };
  const border: number[] = [];
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) if (x < 3 || y < 3 || x >= W - 3 || y >= H - 3) border.push(y * W + x);
  const background = count(border)[0][0];
  const region: number[] = [];
  for (let i = 0; i < W * H; i++) if (cls[i] !== background) region.push(i);
  const shapeFraction = region.length / (W * H);
  const shape = shapeFraction >= 0.01 ? count(region)[0][0] : null;
  return { background, shape, shapeFraction };
}
