/**
 * Shared test helpers for op tests: seeded random inputs, float64 references compared by relative error
 * ||out - ref|| / ||ref||, NaN never passing, and the device/dtype under test.
 * Op tests run on HYPERSD_TEST_DEVICE (default cpu; `npm run test:gpu` sets cuda) with outputs poisoned.
 */
import * as fs from 'fs';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { mulberry32 } from './mulberry32';

export const DEVICE = (process.env.HYPERSD_TEST_DEVICE ?? 'cpu') as hs.DeviceName;
hs.setPoison(true);

/** Tolerances from DESIGN.md. */
export const TOL: Record<'f32' | 'f16' | 'bf16', number> = { f32: 1e-5, f16: 1e-2, bf16: 1e-2 };

/** The CPU's feature flags as /proc/cpuinfo names them (avx2, avx512f, avx512_bf16, ...); empty off Linux. */
export function cpuFlags(): Set<string> {
  try {
    const m = /^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    return new Set(m ? m[1].trim().split(/\s+/) : []);
  } catch {
    return new Set();
  }
}

/** Deterministic N(0,1) (or U(lo,hi)) values as float64, from a seed. */
export function randn(n: number, seed = 1, scale = 1): Float64Array {
  const next = mulberry32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = next() || 1e-12, u2 = next();
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2) * scale;
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2) * scale;
  }
  return out;
}
export function uniform(n: number, seed = 1, lo = -1, hi = 1): Float64Array {
  const r = randn(n, seed);
  // map normals through the normal CDF approximation-free trick: use fractional part of a scaled value
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const f = Math.abs(r[i] * 7919.123) % 1;
    out[i] = lo + (hi - lo) * f;
  }
  return out;
}

/** The values a tensor of this dtype actually stores (so the float64 reference sees the same inputs): through f32
 * first, as a Float32Array input is, then to bf16 / f16 with round-half-to-even; an infinite value stays infinite
 * and an f16 past 65504 becomes infinite. */
export function roundTo(dtype: hs.DType | string, x: ArrayLike<number>): Float64Array {
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
      if (!Number.isFinite(a)) {
        t[i] = f[0];
        continue;
      }
      const e = a === 0 ? -24 : Math.max(Math.floor(Math.log2(a)), -14);
      const q = 2 ** (e - 10);
      // round half to even at the f16 quantum
      const r = a / q;
      let k = Math.round(r);
      if (Math.abs(r - Math.trunc(r) - 0.5) < 1e-12 && Math.trunc(r) % 2 === 0) k = Math.trunc(r);
      t[i] = Math.sign(f[0]) * k * q;
      if (Math.abs(t[i]) > 65504) t[i] = Math.sign(f[0]) * Infinity;
    } else t[i] = f[0];
  }
  return t;
}

export function relErr(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) return Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    const o = out[i], r = ref[i];
    if (Number.isNaN(o) || !Number.isFinite(o) !== !Number.isFinite(r)) return NaN;
    num += (o - r) * (o - r);
    den += r * r;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Fails on NaN, on a length mismatch and when the relative error exceeds tol. */
export function assertClose(out: ArrayLike<number>, ref: ArrayLike<number>, tol: number, what: string): void {
  assert.is(out.length, ref.length, `${what}: length`);
  const e = relErr(out, ref);
  if (!(e <= tol)) assert.unreachable(`${what}: relative error ${e} > ${tol}`);
}

export function t(data: ArrayLike<number>, shape: number[], dtype: hs.DType = 'f32'): hs.Tensor {
  return hs.tensor(Float32Array.from(data), shape, { dtype, device: DEVICE });
}

/** The message of the Error fn's promise rejects with, or '(no error)'. */
export async function messageOf(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (e) {
    return (e as Error).message;
  }
  return '(no error)';
}

/** s with the regular-expression metacharacters escaped, for new RegExp(`^${escapeRe(file)}: ...`). */
export const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** Awaits fn and asserts it rejects with an Error whose message matches re. */
export async function rejects(fn: () => Promise<unknown>, re: RegExp, what = ''): Promise<void> {
  const msg = await messageOf(fn);
  if (msg === '(no error)') assert.unreachable(`${what}: expected an Error matching ${re}`);
  assert.ok(re.test(msg), `${what}: error '${msg}' does not match ${re}`);
}
