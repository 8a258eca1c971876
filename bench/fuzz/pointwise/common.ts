import * as hs from '../../../lib';
export { hs };
hs.setPoison(true);
export function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => { const u1 = next() || 1e-12, u2 = next(); return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2); };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(a: T[]): T => a[Math.floor(next() * a.length)];
  return { next, normal, int, pick };
}
export function relErr(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) return Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    const o = out[i], r = ref[i];
    if (Number.isNaN(r) && Number.isNaN(o)) continue;
    if (Number.isNaN(o) !== Number.isNaN(r)) return NaN;
    if (!Number.isFinite(o) || !Number.isFinite(r)) { if (o !== r) return NaN; continue; }
    num += (o - r) * (o - r);
    den += r * r;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}
export function roundTo(dtype: string, x: ArrayLike<number>): Float64Array {
  const t = new Float64Array(x.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < x.length; i++) {
    f[0] = x[i];
    if (dtype === 'bf16') {
      const v = u[0];
      u[0] = ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) << 16;
      t[i] = f[0];
    } else if (dtype === 'f16') {
      const a = Math.abs(f[0]);
      if (!Number.isFinite(a)) { t[i] = f[0]; continue; }
      const e = a === 0 ? -24 : Math.max(Math.floor(Math.log2(a)), -14);
      const q = 2 ** (e - 10);
      const r = a / q;
      let k = Math.round(r);
      if (Math.abs(r - Math.trunc(r) - 0.5) < 1e-12 && Math.trunc(r) % 2 === 0) k = Math.trunc(r);
      t[i] = Math.sign(f[0]) * k * q;
      if (Math.abs(t[i]) > 65504) t[i] = Math.sign(f[0]) * Infinity;
    } else t[i] = f[0];
  }
  return t;
}
export const TOL: Record<string, number> = { f32: 1e-5, f16: 1e-2, bf16: 1e-2 };
