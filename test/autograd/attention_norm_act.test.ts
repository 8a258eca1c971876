// Gradients of attention (self, cross, causal, several key/query tiles, lse saved or recomputed), group_norm
// (with fused SiLU), layer_norm and the activations against float64 central differences.
import { test } from 'uvu';
import * as hs from '../../lib';
import '../../lib/autograd';
import { checkGrad, frozen, rnd, sigmoid, silu, gelu, geluTanh, quickGelu, type In } from './fd';
import * as assert from 'uvu/assert';
import { DEVICE, randn, t } from '../helpers/check';
import { runOp } from '../../lib/ops/runtime';
import { attentionRef, groupNormRef, layerNormRef } from '../helpers/refs';

const { attention, groupNorm, layerNorm, geglu, softmax } = hs.ops;

const cases = [
  { name: 'self, 2 heads', B: 2, Lq: 5, Lk: 5, H: 2, D: 3, Dv: 3, causal: false, lse: false },
  { name: 'cross, Dv != D, lse saved', B: 1, Lq: 4, Lk: 7, H: 2, D: 4, Dv: 2, causal: false, lse: true },
  { name: 'causal', B: 1, Lq: 6, Lk: 6, H: 1, D: 3, Dv: 3, causal: true, lse: false },
  { name: 'several query and key tiles (Lq 19, Lk 70)', B: 1, Lq: 19, Lk: 70, H: 1, D: 2, Dv: 2, causal: false, lse: false },
  { name: 'causal over tiles (L 70)', B: 1, Lq: 70, Lk: 70, H: 1, D: 2, Dv: 1, causal: true, lse: true },
];
for (const c of cases)
  test(`attention ${c.name}`, async () => {
    const scale = 0.7;
    await checkGrad(`attention ${c.name}`, [rnd([c.B, c.Lq, c.H * c.D], 1), rnd([c.B, c.Lk, c.H * c.D], 2), rnd([c.B, c.Lk, c.H * c.Dv], 3)],
      ([q, k, v]) => {
        const r = attention(q, k, v, { heads: c.H, scale, causal: c.causal, returnLse: c.lse });
        return r instanceof hs.Tensor ? r : r.out;
      },
      ([q, k, v]) => attentionRef(q, k, v, c.B, c.Lq, c.Lk, c.H, c.D, c.Dv, scale, c.causal));
  });

test('attention: cross-attention on frozen k, v (text states) gives dq only', async () => {
  await checkGrad('attention frozen kv', [rnd([1, 3, 4], 4), frozen(rnd([1, 5, 4], 5)), frozen(rnd([1, 5, 4], 6))],
    ([q, k, v]) => attention(q, k, v, { heads: 2 }), ([q, k, v]) => attentionRef(q, k, v, 1, 3, 5, 2, 2, 2, 1 / Math.sqrt(2), false));
});

// (and 320 groups: past the 256 one CUDA block's threads sum in stripes)
for (const [act, N, S, C, G] of [[false, 2, 7, 6, 3], [true, 2, 7, 6, 3], [true, 1, 3, 640, 320]] as [boolean, number, number, number, number][])
  test(`group_norm${act ? ' + fused silu' : ''}: dx, dgamma, dbeta, ${G} groups`, async () => {
    await checkGrad('group_norm', [rnd([N, S, C], 7), rnd([C], 8), rnd([C], 9)],
      ([x, g, b]) => groupNorm(x, g, b, { groups: G, eps: 1e-5, silu: act }), ([x, g, b]) => groupNormRef(x, g, b, N, S, C, G, 1e-5, act));
  });

test('group_norm: frozen affine gives dx only; frozen x gives the affine only', async () => {
  const [N, S, C, G] = [1, 5, 4, 2];
  const ref = ([x, g, b]: Float64Array[]) => groupNormRef(x, g, b, N, S, C, G, 1e-6, true);
  const fwd = ([x, g, b]: hs.Tensor[]) => groupNorm(x, g, b, { groups: G, eps: 1e-6, silu: true });
  await checkGrad('group_norm frozen affine', [rnd([N, S, C], 10), frozen(rnd([C], 11)), frozen(rnd([C], 12))], fwd, ref);
  await checkGrad('group_norm frozen x', [frozen(rnd([N, S, C], 13)), rnd([C], 14), rnd([C], 15)], fwd, ref);
});

test('group_norm and layer_norm backward with |mean| >> std (no cancellation)', async () => {
  const [N, S, C, G] = [1, 6, 4, 2];
  const x = { shape: [N, S, C], data: Array.from(rnd([N * S * C], 40, 0.05).data, (v) => v + 60) };
  await checkGrad('group_norm large mean', [x, rnd([C], 41), rnd([C], 42)], ([t, g, b]) => groupNorm(t, g, b, { groups: G, silu: true }),
    ([t, g, b]) => groupNormRef(t, g, b, N, S, C, G, 1e-5, true), { tol: 1e-3, fwdTol: 1e-3 });
  await checkGrad('layer_norm large mean', [x, rnd([C], 43), rnd([C], 44)], ([t, g, b]) => layerNorm(t, g, b),
    ([t, g, b]) => layerNormRef(t, g, b, C, 1e-5), { tol: 1e-3, fwdTol: 1e-3 });
});

test('layer_norm: dx, dgamma, dbeta over many rows', async () => {
  await checkGrad('layer_norm', [rnd([3, 11, 7], 16), rnd([7], 17), rnd([7], 18)],
    ([x, g, b]) => layerNorm(x, g, b, 1e-5), ([x, g, b]) => layerNormRef(x, g, b, 7, 1e-5));
});

const pointwise = { silu: [hs.ops.silu, silu], gelu: [hs.ops.gelu, gelu], gelu_tanh: [hs.ops.geluTanh, geluTanh], quick_gelu: [hs.ops.quickGelu, quickGelu] } as const;
for (const [name, [op, f]] of Object.entries(pointwise))
  test(`${name}`, async () => {
    await checkGrad(name, [rnd([3, 17], 19, 2)], ([x]) => op(x), ([x]) => x.map(f));
  });

test('geglu', async () => {
  await checkGrad('geglu', [rnd([2, 3, 10], 20, 1.5)], ([x]) => geglu(x), ([x]) => {
    const n = 5, y = new Float64Array(x.length / 2);
    for (let r = 0; r < 6; r++) for (let i = 0; i < n; i++) y[r * n + i] = x[r * 2 * n + i] * gelu(x[r * 2 * n + n + i]);
    return y;
  });
});

test('softmax with a scale', async () => {
  await checkGrad('softmax', [rnd([4, 9], 21)], ([x]) => softmax(x, 1.3), ([x]) => {
    const y = new Float64Array(x.length);
    for (let r = 0; r < 4; r++) {
      let m = -Infinity, s = 0;
      for (let i = 0; i < 9; i++) m = Math.max(m, 1.3 * x[r * 9 + i]);
      for (let i = 0; i < 9; i++) s += (y[r * 9 + i] = Math.exp(1.3 * x[r * 9 + i] - m));
      for (let i = 0; i < 9; i++) y[r * 9 + i] /= s;
    }
    return y;
  });
});

for (const dtype of ['f16', 'bf16'] as const)
  test(`${dtype} inputs get f32 gradients (silu, layer_norm)`, async () => {
    const x: In = { ...rnd([4, 8], 22), dtype };
    const g: In = { ...rnd([8], 23), dtype }, b: In = { shape: [8], data: randn(8, 24), dtype };
    // Forward in half precision is compared loosely; the gradients are computed in f32 from the stored values.
    await checkGrad(`silu ${dtype}`, [x], ([t]) => hs.ops.silu(t), ([v]) => v.map(silu), { fwdTol: 1e-2, tol: 1e-2 });
    await checkGrad(`layer_norm ${dtype}`, [x, g, b], ([t, gg, bb]) => layerNorm(t, gg, bb), ([v, gg, bb]) => layerNormRef(v, gg, bb, 8, 1e-5),
      { fwdTol: 1e-2, tol: 2e-2 });
  });


// The activations' backward ops (dx = dy f'(x)) against float64 derivatives where the plain forms fail: the tanh
// form's 0.5 (1 + t) + 0.5 x (1 - t^2) u' cancelled for x << 0 (30% off at -5, 0 from -5.9 on, found by review,
// session 28), and every derivative was inf * 0 = NaN at +-inf (and the tanh form from |x| ~ 5e19 on).
test('activation backwards: the far tails within 2e-5 of float64, the limits 1 / 0 at huge and infinite x, NaN kept', async () => {
  const k = Math.sqrt(2 / Math.PI), c = 0.044715;
  const erfcCf = (z: number) => { let f = z; for (let n = 200; n >= 1; n--) f = z + n / 2 / f; return Math.exp(-z * z) / Math.sqrt(Math.PI) / f; };
  const phi = (x: number) => Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
  const refs: [string, (x: number) => number, number][] = [
    ['silu_backward', (x) => sigmoid(x) * (1 + x * sigmoid(-x)), -30],
    ['quick_gelu_backward', (x) => sigmoid(1.702 * x) * (1 + 1.702 * x * sigmoid(-1.702 * x)), -20],
    ['gelu_backward', (x) => 0.5 * erfcCf(-x / Math.SQRT2) + x * phi(x), -12],
    // u rounded to float moves e^(2u) by ~2e-7 |2u| of itself: the sweep stops at -5.5 (|2u| ~ 20)
    ['gelu_tanh_backward', (x) => { const u = k * (x + c * x ** 3); return sigmoid(2 * u) * (1 + 2 * x * sigmoid(-2 * u) * k * (1 + 3 * c * x * x)); }, -5.5],
  ];
  const special = [Infinity, -Infinity, 3e38, -3e38, 1e20, -1e20, 25, -25, NaN];
  const limit = (x: number) => (Number.isNaN(x) ? NaN : x > 0 ? 1 : 0);
  for (const [op, ref, lo] of refs) {
    const n = 120;
    const sweep = Array.from({ length: n }, (_, i) => Math.fround(lo + ((-3 - lo) * i) / (n - 1)));
    const xv = [...sweep, ...special];
    const x = t(xv, [xv.length]), dy = hs.full([xv.length], 1, { device: DEVICE }), dx = hs.full([xv.length], 7, { device: DEVICE });
    runOp(op, [x, dy], [dx], {});
    const got = await dx.floats();
    for (let i = 0; i < n; i++) {
      const r = ref(xv[i]);
      assert.ok(Math.abs(got[i] - r) <= 2e-5 * Math.abs(r) + 1e-38, `${op} at x = ${xv[i]}: ${got[i]}, float64 ${r}`);
    }
    for (let i = n; i < xv.length; i++) {
      const want = Math.abs(xv[i]) === 25 && (op === 'silu_backward' || op === 'quick_gelu_backward') ? ref(xv[i]) : limit(xv[i]);
      if (Number.isNaN(want)) assert.ok(Number.isNaN(got[i]), `${op}(NaN): ${got[i]}`);
      else assert.ok(Math.abs(got[i] - want) <= 1e-6 * Math.abs(want) + 1e-30, `${op} at x = ${xv[i]}: ${got[i]}, want ${want}`);
    }
    for (const q of [x, dy, dx]) q.dispose();
  }
});

test.run();
