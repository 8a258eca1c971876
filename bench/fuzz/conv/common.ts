import * as hs from '../../../lib';
import { Tensor } from '../../../lib/tensor';
import { native } from '../../../lib/native';
import { TOL, roundTo } from '../../../test/helpers/check';
hs.setPoison(true);
export { hs };
export type DT = 'f32' | 'f16' | 'bf16';
export { TOL };
export { rng } from '../rng';
export { roundTo };

/** A tensor of `shape` at offset G inside NaN-filled (or `guard`-filled) storage: detects reads / writes outside. */
export function guarded(vals: ArrayLike<number>, shape: number[], dt: DT, G = 37, guard = NaN) {
  const n = shape.reduce((a, b) => a * b, 1);
  const all = new Float32Array(n + 2 * G).fill(guard);
  for (let i = 0; i < n; i++) all[G + i] = vals[i];
  const base = hs.tensor(all, [n + 2 * G], { dtype: dt, device: 'cpu' });
  const allR = roundTo(dt, all);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const v = new Tensor(native().view(base.handle(), shape, strides, G), shape, dt, 'cpu');
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
