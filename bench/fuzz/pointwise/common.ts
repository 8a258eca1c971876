import * as hs from '../../../lib';
export { hs };
export { rng } from '../rng';
export { TOL, roundTo } from '../../../test/helpers/check';
hs.setPoison(true);
// relErr here, unlike test/helpers/check.ts's, lets NaN / inf outputs match NaN / inf references.
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
