import * as hs from '../../../lib';
import { roundTo } from '../../../test/helpers/check';
export { roundTo };
export { rng } from '../rng';
hs.setPoison(true);

export type DT = 'f32' | 'f16' | 'bf16';
export { actRef, type Act } from '../../../test/helpers/refs';

export const T = (data: ArrayLike<number>, shape: number[], dtype: DT = 'f32') => hs.tensor(Float32Array.from(data), shape, { dtype });

/**
 * Compares out vs ref: Frobenius relative error <= tol AND max elementwise |o - r| <= etol * scaleRef[i] (a
 * per-element magnitude, e.g. sum |a||b| + |bias| + |beta old|), NaN/inf never allowed.
 */
export function compare(out: ArrayLike<number>, ref: ArrayLike<number>, tol: number, mag?: ArrayLike<number>, etol?: number) {
  if (out.length !== ref.length) return { ok: false, msg: `length ${out.length} vs ${ref.length}` };
  let num = 0, den = 0, worst = 0, wi = -1;
  for (let i = 0; i < ref.length; i++) {
    const o = out[i], r = ref[i];
    if (!Number.isFinite(o)) return { ok: false, msg: `non-finite out[${i}] = ${o} (ref ${r})` };
    num += (o - r) ** 2;
    den += r * r;
    if (mag && etol !== undefined) {
      // half outputs: f16's subnormal spacing (6e-8) is an absolute floor on the rounding
      const e = Math.abs(o - r) <= (etol >= 1e-3 ? 6.0e-8 : 0) ? 0 : Math.abs(o - r) / (mag[i] + 1e-30);
      if (e > worst) { worst = e; wi = i; }
    }
  }
  const rel = den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
  // a Frobenius ratio over a handful of values is a cancellation detector, not a kernel check: elementwise only then
  if (!(rel <= tol) && ref.length >= 64) return { ok: false, msg: `relErr ${rel.toExponential(3)} > ${tol}` + (wi >= 0 ? `; worst elem [${wi}] out ${out[wi]} ref ${ref[wi]}` : '') };
  if (mag && etol !== undefined && !(worst <= etol))
    return { ok: false, msg: `elementwise err ${worst.toExponential(3)} > ${etol} at [${wi}]: out ${out[wi]} ref ${ref[wi]} mag ${mag[wi]} (relErr ${rel.toExponential(3)})` };
  return { ok: true, msg: `rel ${rel.toExponential(2)} elem ${worst.toExponential(2)}` };
}

export function bf16math(): boolean {
  return process.env.HYPERSD_CPU_MATH === 'bf16';
}
