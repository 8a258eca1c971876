import * as hs from '../../../lib';
export { hs };
export { rng } from '../rng';
export { TOL } from '../../../test/helpers/check';
hs.setPoison(true);
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
// roundTo and relErr here, unlike test/helpers/check.ts's, model special values: an infinite or overflowing f16
// stays / becomes infinite, f16 rounds through f32 as a Float32Array input does, and NaN / inf outputs match
// NaN / inf references.
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
