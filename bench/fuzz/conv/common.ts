import * as hs from '../../../lib';
import { Tensor } from '../../../lib/tensor';
import { native } from '../../../lib/native';
hs.setPoison(true);
export { hs };
export type DT = 'f32' | 'f16' | 'bf16';
export const TOL: Record<DT, number> = { f32: 1e-5, f16: 1e-2, bf16: 1e-2 };

export function rng(seed: number) {
  let s = seed >>> 0;
  const next = () => { s = (s + 0x6d2b79f5) >>> 0; let t = s; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
  const r = {
    u: next,
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(a: readonly T[]): T => a[Math.floor(next() * a.length)],
    normal: () => { const u1 = next() || 1e-12, u2 = next(); return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2); },
    randn: (n: number, scale = 1) => { const o = new Float64Array(n); for (let i = 0; i < n; i++) o[i] = r.normal() * scale; return o; },
  };
  return r;
}

const f = new Float32Array(1), u = new Uint32Array(f.buffer);
export function roundTo(dt: DT, x: ArrayLike<number>): Float64Array {
  const o = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    f[0] = x[i];
    if (dt === 'bf16') { const v = u[0]; u[0] = ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) << 16; o[i] = f[0]; }
    else if (dt === 'f16') { o[i] = hs.tensor ? f16round(x[i]) : 0; }
    else o[i] = f[0];
  }
  return o;
}
function f16round(x: number): number {
  const a = Math.abs(x);
  if (a === 0) return 0;
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  const q = 2 ** (e - 10);
  const r = a / q;
  let k = Math.round(r);
  if (Math.abs(r - Math.trunc(r) - 0.5) < 1e-12 && Math.trunc(r) % 2 === 0) k = Math.trunc(r);
  return Math.sign(x) * k * q;
}

/** A tensor of `shape` at offset G inside NaN-filled (or `guard`-filled) storage: detects reads / writes outside. */
export function guarded(vals: ArrayLike<number>, shape: number[], dt: DT, G = 37, guard = NaN) {
  const n = shape.reduce((a, b) => a * b, 1);
  const all = new Float32Array(n + 2 * G).fill(guard);
  for (let i = 0; i < n; i++) all[G + i] = vals[i];
  const base = hs.tensor(all, [n + 2 * G], { dtype: dt, device: 'cpu' });
  const allR = roundTo(dt, all);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const v = new Tensor(native().view(base.handle(), shape, strides, G), shape, dt, 'cpu', false);
  return { t: v, base, G, n,
    async guardOk(): Promise<string | null> {
      const b = await base.floats();
      for (let i = 0; i < G; i++) if (!Object.is(b[i], allR[i])) return `guard before [${i - G}] = ${b[i]}`;
      for (let i = G + n; i < n + 2 * G; i++) if (!Object.is(b[i], allR[i])) return `guard after [+${i - G - n}] = ${b[i]}`;
      return null;
    } };
}

export function compare(out: ArrayLike<number>, ref: ArrayLike<number>) {
  let num = 0, den = 0, maxe = 0, maxi = -1, bad = -1;
  for (let i = 0; i < ref.length; i++) {
    const o = out[i], r = ref[i];
    if (!Number.isFinite(o)) { if (bad < 0) bad = i; continue; }
    num += (o - r) ** 2; den += r * r;
    if (Math.abs(o - r) > maxe) { maxe = Math.abs(o - r); maxi = i; }
  }
  const rms = Math.sqrt(den / Math.max(1, ref.length));
  return { rel: bad >= 0 ? NaN : den === 0 ? Math.sqrt(num) : Math.sqrt(num / den), firstNonFinite: bad, maxRel: rms ? maxe / rms : maxe, maxi,
    lengthOk: out.length === ref.length };
}
