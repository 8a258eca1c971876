import * as hs from '../../../lib';
import { roundTo } from '../../../test/helpers/check';
export { roundTo };
hs.setPoison(true);

export type DT = 'f32' | 'f16' | 'bf16';
export type Act = 'none' | 'silu' | 'gelu' | 'gelu_tanh' | 'quick_gelu';

/** mulberry32 */
export function rng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(a: readonly T[]): T => a[Math.floor(next() * a.length)];
  const normal = () => {
    const u1 = next() || 1e-12, u2 = next();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  };
  const arr = (n: number, scale = 1) => {
    const o = new Float64Array(n);
    for (let i = 0; i < n; i++) o[i] = normal() * scale;
    return o;
  };
  return { next, int, pick, normal, arr };
}

export function erf(x: number): number {
  const z = Math.abs(x);
  let r: number;
  if (z < 3) {
    let term = z, sum = z;
    for (let n = 1; n < 200; n++) {
      term *= (-z * z) / n;
      const d = term / (2 * n + 1);
      sum += d;
      if (Math.abs(d) < 1e-17 * Math.abs(sum)) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    let f = z, c = z, d = 0;
    for (let n = 1; n < 300; n++) {
      const an = n / 2;
      d = z + an * d;
      d = 1 / d;
      c = z + an / c;
      const delta = c * d;
      f *= delta;
      if (Math.abs(delta - 1) < 1e-16) break;
    }
    r = 1 - Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
  }
  return x < 0 ? -r : r;
}
export function actRef(x: number, act: Act): number {
  switch (act) {
    case 'silu': return x / (1 + Math.exp(-x));
    case 'gelu': return 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'gelu_tanh': return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
    case 'quick_gelu': return x / (1 + Math.exp(-1.702 * x));
    default: return x;
  }
}

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
