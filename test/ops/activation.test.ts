// silu, gelu (erf), gelu_tanh, quick_gelu, geglu and softmax against float64 references.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { DEVICE, TOL, assertClose, randn, relErr, roundTo, t } from '../helpers/check';

const { silu, gelu, geluTanh, quickGelu, geglu, softmax } = hs.ops;

// erf in float64: the Taylor series for |z| < 3 (terms stay below ~1e4, so ~1e-12 absolute), and
// 1 - erfc(z) with erfc's continued fraction exp(-z^2)/sqrt(pi) / (z + (1/2)/(z + 1/(z + (3/2)/(z + ...)))) beyond.
function erf(z: number): number {
  const a = Math.abs(z);
  if (a < 3) {
    let sum = 0, term = z;
    for (let n = 0; n < 120; n++) {
      sum += term / (2 * n + 1);
      term = (-term * z * z) / (n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = a;
  for (let n = 80; n >= 1; n--) f = a + n / 2 / f;
  return Math.sign(z) * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / f);
}
const sig = (x: number) => 1 / (1 + Math.exp(-x));
const refs: Record<string, (x: number) => number> = {
  silu: (x) => x * sig(x),
  gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  geluTanh: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  quickGelu: (x) => x * sig(1.702 * x),
};
const fns: Record<string, (x: hs.Tensor) => hs.Tensor> = { silu, gelu, geluTanh, quickGelu };

const N = 1001;
const inputs = () => {
  const v = randn(N, 3, 2.5);
  v[0] = 0; v[1] = -9; v[2] = 9; v[3] = 5.5; v[4] = -5.5;
  return v;
};

for (const name of Object.keys(fns))
  for (const dtype of ['f32', 'f16', 'bf16'] as const)
    test(`${name} ${dtype} [7, 11, 13]`, async () => {
      const xv = inputs();
      const y = fns[name](t(xv, [7, 11, 13], dtype));
      assert.equal(y.shape, [7, 11, 13]);
      assert.is(y.dtype, dtype);
      const ref = Array.from(roundTo(dtype, xv), refs[name]);
      const out = await y.floats();
      assertClose(out, ref, TOL[dtype], name);
      // In f32 the four functions are distinguishable at this tolerance (a kernel mixing them up fails).
      if (dtype === 'f32')
        for (const other of Object.keys(refs))
          if (other !== name) assert.ok(relErr(out, Array.from(roundTo(dtype, xv), refs[other])) > TOL.f32, `${name} vs ${other}`);
    });

function gegluRef(x: Float64Array, rows: number, n: number) {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) for (let i = 0; i < n; i++) y[r * n + i] = x[r * 2 * n + i] * refs.gelu(x[r * 2 * n + n + i]);
  return y;
}

for (const dtype of ['f32', 'f16', 'bf16'] as const)
  test(`geglu ${dtype} [3, 5, 2*37]`, async () => {
    const xv = randn(3 * 5 * 74, 9, 1.5);
    const y = geglu(t(xv, [3, 5, 74], dtype));
    assert.equal(y.shape, [3, 5, 37]);
    const out = await y.floats();
    assertClose(out, gegluRef(roundTo(dtype, xv), 15, 37), TOL[dtype], 'geglu');
    // hidden * gelu(gate), not gate * gelu(hidden)
    const swapped = new Float64Array(15 * 37);
    const xr = roundTo(dtype, xv);
    for (let r = 0; r < 15; r++) for (let i = 0; i < 37; i++) swapped[r * 37 + i] = xr[r * 74 + 37 + i] * refs.gelu(xr[r * 74 + i]);
    assert.ok(relErr(out, swapped) > 0.1);
  });

function softmaxRef(x: Float64Array, n: number, scale: number) {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / n; r++) {
    let m = -Infinity, s = 0;
    for (let i = 0; i < n; i++) m = Math.max(m, scale * x[r * n + i]);
    for (let i = 0; i < n; i++) s += Math.exp(scale * x[r * n + i] - m);
    for (let i = 0; i < n; i++) y[r * n + i] = Math.exp(scale * x[r * n + i] - m) / s;
  }
  return y;
}

for (const dtype of ['f32', 'f16', 'bf16'] as const)
  test(`softmax ${dtype} [7, 77] scale 0.3 and default`, async () => {
    const xv = randn(7 * 77, 13, 6);
    const x = t(xv, [7, 77], dtype);
    const xr = roundTo(dtype, xv);
    const a = await softmax(x, 0.3).floats();
    assertClose(a, softmaxRef(xr, 77, 0.3), TOL[dtype], 'scale 0.3');
    const b = await softmax(x).floats();
    assertClose(b, softmaxRef(xr, 77, 1), TOL[dtype], 'scale 1');
    assert.ok(relErr(a, b) > 0.1, 'the scale matters');
  });

test('silu and geglu: +inf and NaN in the vector lanes and the tail; large |x| exact', async () => {
  // The vector kernels bound their exponents (SiLU's 2^(-x log2 e) at x = +inf would take floor(-inf)) and clamp
  // GELU's erf argument: +inf must stay +inf and a NaN must stay NaN. 70 values: 64 in vectors, 6 in the tail.
  const v = [Infinity, NaN, 0, 100, -100, 30, 7];
  const n = 70, xs = new Float32Array(n);
  for (let i = 0; i < n; i++) xs[i] = v[i % v.length];
  const ref = (x: number, f: (x: number) => number) => (Number.isNaN(x) ? NaN : x === Infinity ? Infinity : f(x));
  const check = (out: Float32Array, f: (x: number) => number, what: string) => {
    for (let i = 0; i < n; i++) {
      const r = ref(xs[i], f);
      if (Number.isNaN(r)) assert.ok(Number.isNaN(out[i]), `${what}(${xs[i]}) at ${i}: ${out[i]}`);
      else assert.ok(out[i] === r || Math.abs(out[i] - r) <= 1e-6 * Math.max(1, Math.abs(r)), `${what}(${xs[i]}) at ${i}: ${out[i]}, want ${r}`);
    }
  };
  check(await silu(t(xs, [n])).floats(), refs.silu, 'silu');
  const hg = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) { hg[i] = 2; hg[n + i] = xs[i]; }
  check(await geglu(t(hg, [1, 2 * n])).floats(), (x) => 2 * refs.gelu(x), 'geglu');
});

test('geglu: every gate within 4e-7 max(1, |x|) of float64 across a dense sweep, interval edges and the clamp; -inf gives 0', async () => {
  // The AVX-512 kernels evaluate erf from 16 polynomials picked per interval of |x| (edges at (k + 1/2) / 2.6516504,
  // clamped at 5.845), the AVX2 ones a rational function; a wrong interval or coefficient is off by far more.
  const gates: number[] = [];
  for (let i = -3500; i <= 3500; i++) gates.push(i / 500);
  for (let k = 0; k < 16; k++)
    for (const s of [-1, 1]) {
      const e = s * (k + 0.5) / 2.6516504;
      gates.push(e, e * (1 + 3e-7), e * (1 - 3e-7));
    }
  gates.push(5.845, -5.845, 5.8451, -5.8451, 6, -6, 40, -40, 1e-30, -1e-30, 0);
  const n = gates.length, hg = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) { hg[i] = 1.5; hg[n + i] = gates[i]; }
  const out = await geglu(t(hg, [1, 2 * n])).floats();
  for (let i = 0; i < n; i++) {
    const x = hg[n + i], r = 1.5 * refs.gelu(x);
    assert.ok(Math.abs(out[i] - r) <= 4e-7 * Math.max(1, Math.abs(x)), `geglu gate ${x} at ${i}: ${out[i]}, want ${r}`);
  }
  // 21 values: 16 in a vector, 5 in the tail.
  const g = [-Infinity, -1e30, -40, -Infinity, -6.5, -1e30, -Infinity];
  const hv = new Float32Array(42).fill(3);
  for (let i = 0; i < 21; i++) hv[21 + i] = g[i % g.length];
  const inf = await geglu(t(hv, [1, 42])).floats();
  for (let i = 0; i < 21; i++) assert.ok(Math.abs(inf[i]) <= (g[i % 7] === -6.5 ? 1e-6 : 0), `gelu(${g[i % 7]}) at ${i}: ${inf[i]}`);
});

test('softmax: large logits stay finite; one-element rows are 1', async () => {
  const y = await softmax(t([1000, 999, -1000, 50], [2, 2])).floats();
  assertClose(y, [1 / (1 + Math.exp(-1)), Math.exp(-1) / (1 + Math.exp(-1)), Math.exp(-1050), 1], TOL.f32, 'y');
  assert.equal(Array.from(await softmax(t([3, -2, 7], [3, 1])).floats()), [1, 1, 1]);
});

test('softmax: masked (-inf) logits give exactly 0, in the vector lanes and the tail; rows of 1000', async () => {
  const n = 19, xv = randn(2 * n, 21, 3);
  for (const i of [0, 5, 9, 17, n + 3, n + 18]) xv[i] = -Infinity;
  const y = await softmax(t(xv, [2, n]), 0.7).floats();
  for (const i of [0, 5, 9, 17, n + 3, n + 18]) assert.is(y[i], 0, `masked logit ${i}`);
  assertClose(y, softmaxRef(Float64Array.from(xv), n, 0.7), TOL.f32, 'masked rows');
  const long = randn(3 * 1000, 22, 8); // spans of 30+ below the maximum: exponentials down to ~1e-13
  assertClose(await softmax(t(long, [3, 1000]), 0.9).floats(), softmaxRef(roundTo('f32', long), 1000, 0.9), TOL.f32, 'rows of 1000');
});

test('silu, gelu_tanh, quick_gelu at large negative x give ~0 (not x / e^88), -inf gives NaN; gelu(-inf) = -0', async () => {
  // The exponentials clamp their argument (e^88, 2^127): below that the quotient x / (1 + e^88) had left
  // quick_gelu(-3.4e38) = -2.06 and silu(-1e37) = -0.06 on 8 lanes. 29 values: 16 + 8 lanes and a tail of 5.
  const v = [-1e37, -3.4e38, -Infinity, -200, -95];
  const xv = Array.from({ length: 29 }, (_, i) => v[i % v.length]);
  for (const [name, f] of [['silu', silu], ['geluTanh', geluTanh], ['quickGelu', quickGelu], ['gelu', gelu]] as const) {
    const y = await f(t(xv, [29])).floats();
    for (let i = 0; i < 29; i++) {
      if (xv[i] === -Infinity && name !== 'gelu') assert.ok(Number.isNaN(y[i]), `${name}(-inf) at ${i}: ${y[i]} (x * sigmoid(-inf) is NaN)`);
      else assert.ok(Math.abs(y[i]) <= 1e-30, `${name}(${xv[i]}) at ${i}: ${y[i]}, expected ~0`);
    }
  }
});

test('gelu and gelu_tanh keep their relative accuracy in the far negative tail (f32), in the vector lanes and the tail', async () => {
  // x Phi(x) with Phi = erfc(-x / sqrt2) / 2: 1 + erf(.) cancels there (the portable kernel had 1.8% at x = -4.8,
  // the AVX2 one's erfc 5e-5 at -3, 3.6e-3 at -6 and 1.5e-2 at -9: an absolute error bound; session 27). The
  // references in float64 without the cancellation: erfc's continued fraction, and x sigmoid(2u) for tanh-GELU.
  const erfcCf = (z: number) => { let f = z; for (let n = 200; n >= 1; n--) f = z + n / 2 / f; return Math.exp(-z * z) / Math.sqrt(Math.PI) / f; };
  const geluTail = (x: number) => 0.5 * x * erfcCf(-x / Math.SQRT2);
  const tanhTail = (x: number) => x / (1 + Math.exp(-2 * Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  // gelu down to -12 (outputs ~1e-32); tanh-GELU to -6 only: its u = 0.8 (x + 0.045 x^3), rounded to float, moves
  // e^(2u) by 2e-7 |2u| of itself, 1e-5 at -6 in any float evaluation (PyTorch's too)
  for (const [name, f, ref, lo] of [['gelu', gelu, geluTail, -12], ['geluTanh', geluTanh, tanhTail, -6]] as const) {
    const n = 203;  // 12 vectors of 16 and a tail of 11
    const xv = Array.from({ length: n }, (_, i) => Math.fround(lo + ((-3 - lo) * i) / (n - 1)));
    const y = await f(t(xv, [n])).floats();
    for (let i = 0; i < n; i++) {
      const r = ref(xv[i]);
      assert.ok(Math.abs(y[i] - r) <= 2e-5 * Math.abs(r), `${name}(${xv[i]}) at ${i}: ${y[i]}, float64 ${r} (${(Math.abs(y[i] - r) / Math.abs(r)).toExponential(2)} off)`);
    }
  }
});

test('softmax: a NaN logit (or scale 0 times -inf) makes the whole row NaN, in the vector lanes and the tail', async () => {
  const n = 21;
  for (const at of [2, 19]) {
    const xv = Array.from(randn(n, 31, 2));
    xv[at] = NaN;
    const y = await softmax(t(xv, [1, n])).floats();
    assert.ok(y.every((z) => Number.isNaN(z)), `NaN at ${at}: ${Array.from(y).slice(0, 4)}`);
  }
  const xv = Array.from(randn(n, 32, 2));
  xv[3] = -Infinity;
  assert.ok((await softmax(t(xv, [1, n]), 0).floats()).every((z) => Number.isNaN(z)), 'scale 0 with a -inf logit');
});

test('activations: argument errors', () => {
  assert.throws(() => geglu(t(randn(15), [3, 5])), /geglu: x \[3,5\] must have an even last dim/);
  assert.throws(() => silu(hs.tensor(new Int32Array(3), [3], { device: DEVICE })), /silu: x must be a float tensor, got i32/);
  assert.throws(() => softmax(t([1, 2], [2]), NaN), /softmax: scale must be a finite number/);
});

test.run();
