/**
 * Gradient checks against central finite differences of a float64 JS forward reference.
 * The loss is L = sum(r * out) with r random (passed to grad() as dLoss), so every output element counts;
 * the reference is differentiated numerically in float64 (h = 1e-5: truncation ~1e-10), never the f32
 * forward (whose rounding would swamp the differences). The reference forward is also checked against the
 * op's forward, so a wrong reference cannot pass.
 */
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { grad } from '../../lib/autograd';
import { DEVICE, assertClose, randn, roundTo } from '../helpers/check';

export interface In {
  shape: number[];
  data: ArrayLike<number>;
  /** Differentiate with respect to this input (default true; integer inputs never). */
  diff?: boolean;
  dtype?: hs.DType;
  int?: boolean;
}

export const rnd = (shape: number[], seed: number, scale = 1): In => ({ shape, data: randn(shape.reduce((a, b) => a * b, 1), seed, scale) });
export const frozen = (i: In): In => ({ ...i, diff: false });

export interface CheckOptions {
  /** relative tolerance on each gradient (default 1e-4) */
  tol?: number;
  /** relative tolerance of the forward against the reference (default 1e-5) */
  fwdTol?: number;
  seed?: number;
}

/** Builds the tensors, runs grad(), compares the forward and every requested gradient. Returns the grads. */
export async function checkGrad(
  what: string, ins: In[], forward: (ts: hs.Tensor[]) => hs.Tensor, ref: (xs: Float64Array[]) => ArrayLike<number>,
  o: CheckOptions = {},
): Promise<void> {
  const ts = ins.map((i) => (i.int
    ? hs.tensor(Int32Array.from(i.data, Number), i.shape, { device: DEVICE })
    : hs.tensor(Float32Array.from(i.data), i.shape, { dtype: i.dtype ?? 'f32', device: DEVICE })));
  const xs = ins.map((i) => (i.int ? Float64Array.from(i.data) : roundTo(i.dtype ?? 'f32', i.data)));
  const y0 = Float64Array.from(ref(xs));
  const r = randn(y0.length, o.seed ?? 99);
  const dLoss = hs.tensor(Float32Array.from(r), [y0.length], { device: DEVICE });
  const params = ts.filter((_, k) => ins[k].diff !== false && !ins[k].int);
  const { loss, grads } = grad(() => forward(ts), params, { dLoss });
  try {
    assertClose(await loss.floats(), y0, o.fwdTol ?? 1e-5, `${what}: forward vs reference`);
    const L = (x: Float64Array[]) => {
      const y = ref(x);
      let s = 0;
      for (let i = 0; i < y.length; i++) s += r[i] * y[i];
      return s;
    };
    for (let k = 0; k < ins.length; k++) {
      if (ins[k].diff === false || ins[k].int) continue;
      const g = grads.get(ts[k]);
      assert.ok(g, `${what}: no gradient for input ${k}`);
      assert.is(g!.dtype, 'f32', `${what}: gradient ${k} dtype`);
      assert.equal(g!.shape, ins[k].shape, `${what}: gradient ${k} shape`);
      const fd = new Float64Array(xs[k].length);
      const h = 1e-5;
      for (let j = 0; j < fd.length; j++) {
        const v = xs[k][j];
        xs[k][j] = v + h;
        const lp = L(xs);
        xs[k][j] = v - h;
        const lm = L(xs);
        xs[k][j] = v;
        fd[j] = (lp - lm) / (2 * h);
      }
      assertClose(await g!.floats(), fd, o.tol ?? 1e-4, `${what}: gradient of input ${k}`);
    }
  } finally {
    loss.dispose();
    dLoss.dispose();
    for (const g of grads.values()) g.dispose();
    for (const t of ts) t.dispose();
  }
}

// ---- float64 references ----
export const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** numpy broadcast of a and b (shapes) applied elementwise with f. */
export function broadcast2(a: Float64Array, as: number[], b: Float64Array, bs: number[], f: (x: number, y: number) => number): Float64Array {
  const n = Math.max(as.length, bs.length);
  const A = [...Array(n - as.length).fill(1), ...as], B = [...Array(n - bs.length).fill(1), ...bs];
  const Y = A.map((d, i) => Math.max(d, B[i]));
  const out = new Float64Array(prod(Y));
  const idx = new Array(n).fill(0);
  for (let i = 0; i < out.length; i++) {
    let rem = i;
    for (let d = n - 1; d >= 0; d--) {
      idx[d] = rem % Y[d];
      rem = Math.floor(rem / Y[d]);
    }
    let ia = 0, ib = 0;
    for (let d = 0; d < n; d++) {
      ia = ia * A[d] + (A[d] === 1 ? 0 : idx[d]);
      ib = ib * B[d] + (B[d] === 1 ? 0 : idx[d]);
    }
    out[i] = f(a[ia], b[ib]);
  }
  return out;
}

export const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
export const silu = (x: number) => x * sigmoid(x);
/** erf to ~1e-15 (series for small |x|, continued fraction otherwise). */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let term = x, sum = x;
    for (let n = 1; n < 80; n++) {
      term *= -x * x / n;
      sum += term / (2 * n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction (Lentz)
  let f = ax, C = ax, D = 0;
  for (let n = 1; n < 200; n++) {
    const an = n / 2;
    D = ax + an * D;
    D = 1 / D;
    C = ax + an / C;
    f *= C * D;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}
export const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
export const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
export const quickGelu = (x: number) => x * sigmoid(1.702 * x);
