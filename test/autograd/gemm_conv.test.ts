// Gradients of matmul (transposes, batch, weight broadcast, bias, fused activations, alpha, beta accumulation),
// lora_linear, conv2d (stride/pad, beta) and lora_conv2d against float64 central differences.
import { test } from 'uvu';
import * as hs from '../../lib';
import * as assert from 'uvu/assert';
import { conv2dBackwardInput, conv2dBackwardWeight } from '../../lib/autograd';
import { checkGrad, frozen, rnd, prod, silu, gelu, geluTanh, quickGelu } from './fd';
import { convGeom, refConv } from '../helpers/refs';

const { matmul, loraLinear, conv2d, loraConv2d, linear } = hs.ops;
const ACTS = { none: (x: number) => x, silu, gelu, gelu_tanh: geluTanh, quick_gelu: quickGelu } as const;

/** C = act(alpha op(A) op(B) + bias), A [..., M, K] (or [..., K, M]), B [..., K, N] (or [N, K]) or unbatched. */
function matmulRef(A: Float64Array, as: number[], B: Float64Array, bs: number[], o: { tA?: boolean; tB?: boolean; alpha?: number; bias?: Float64Array; act?: keyof typeof ACTS }) {
  const ra = as.length, rb = bs.length;
  const M = o.tA ? as[ra - 1] : as[ra - 2], K = o.tA ? as[ra - 2] : as[ra - 1];
  const N = o.tB ? bs[rb - 2] : bs[rb - 1];
  const batch = prod(as.slice(0, ra - 2)), bBatched = rb > 2;
  const f = ACTS[o.act ?? 'none'], alpha = o.alpha ?? 1;
  const C = new Float64Array(batch * M * N);
  for (let b = 0; b < batch; b++)
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const a = A[b * M * K + (o.tA ? k * M + m : m * K + k)];
          const bb = B[(bBatched ? b * K * N : 0) + (o.tB ? n * K + k : k * N + n)];
          s += a * bb;
        }
        C[(b * M + m) * N + n] = f(alpha * s + (o.bias ? o.bias[n] : 0));
      }
  return C;
}

for (const tA of [false, true])
  for (const tB of [false, true])
    for (const bBatched of [false, true]) {
      test(`matmul transA=${tA} transB=${tB} B ${bBatched ? 'batched' : 'a weight'}`, async () => {
        const [M, K, N] = [3, 5, 4];
        const as = [2, ...(tA ? [K, M] : [M, K])], bs = [...(bBatched ? [2] : []), ...(tB ? [N, K] : [K, N])];
        await checkGrad('matmul', [rnd(as, 1), rnd(bs, 2)], ([a, b]) => matmul(a, b, { transA: tA, transB: tB, alpha: 0.7 }),
          ([a, b]) => matmulRef(a, as, b, bs, { tA, tB, alpha: 0.7 }));
      });
    }

for (const act of ['none', 'silu', 'gelu', 'gelu_tanh', 'quick_gelu'] as const)
  test(`linear with bias and fused ${act}`, async () => {
    await checkGrad(`linear ${act}`, [rnd([2, 3, 6], 3), rnd([5, 6], 4), rnd([5], 5)], ([x, w, b]) => linear(x, w, b, act),
      ([x, w, b]) => matmulRef(x, [2, 3, 6], w, [5, 6], { tB: true, bias: b, act }));
  });

test('matmul beta = 1 accumulates into an output that itself needs a gradient', async () => {
  // y = x W1^T, then y += x W2^T in place: both weights and x get gradients.
  await checkGrad('matmul beta', [rnd([4, 3], 6), rnd([2, 3], 7), rnd([2, 3], 8)], ([x, w1, w2]) => {
    const y = linear(x, w1);
    return matmul(x, w2, { transB: true, beta: 1, out: y });
  }, ([x, w1, w2]) => {
    const a = matmulRef(x, [4, 3], w1, [2, 3], { tB: true }), b = matmulRef(x, [4, 3], w2, [2, 3], { tB: true });
    return a.map((v, i) => v + b[i]);
  });
});

test('matmul: a frozen weight gets no gradient, the activation does', async () => {
  await checkGrad('matmul frozen w', [rnd([3, 4], 9), frozen(rnd([2, 4], 10))], ([x, w]) => linear(x, w),
    ([x, w]) => matmulRef(x, [3, 4], w, [2, 4], { tB: true }));
});

function loraRef(x: Float64Array, xs: number[], w: Float64Array, b: Float64Array | null, down: Float64Array, up: Float64Array, r: number, s: number) {
  const K = xs[xs.length - 1], N = w.length / K;
  const y = matmulRef(x, xs, w, [N, K], { tB: true, bias: b ?? undefined });
  const t = matmulRef(x, xs, down, [r, K], { tB: true });
  const u = matmulRef(t, [...xs.slice(0, -1), r], up, [N, r], { tB: true });
  return y.map((v, i) => v + s * u[i]);
}

for (const bias of [true, false])
  test(`lora_linear${bias ? ' with bias' : ''}: dx, dW, dbias, d down, d up`, async () => {
    const ins = [rnd([2, 3, 6], 11), rnd([5, 6], 12), ...(bias ? [rnd([5], 13)] : []), rnd([2, 6], 14), rnd([5, 2], 15)];
    await checkGrad('lora_linear', ins, (ts) => loraLinear(ts[0], ts[1], bias ? ts[2] : null, ts[ts.length - 2], ts[ts.length - 1], 0.6),
      (xs) => loraRef(xs[0], [2, 3, 6], xs[1], bias ? xs[2] : null, xs[xs.length - 2], xs[xs.length - 1], 2, 0.6));
  });

test('lora_linear with a frozen base: only the adapter and x', async () => {
  await checkGrad('lora_linear frozen', [rnd([4, 6], 16), frozen(rnd([5, 6], 17)), frozen(rnd([5], 18)), rnd([3, 6], 19), rnd([5, 3], 20)],
    ([x, w, b, d, u]) => loraLinear(x, w, b, d, u, 1.5), ([x, w, b, d, u]) => loraRef(x, [4, 6], w, b, d, u, 3, 1.5));
});

for (const [k, stride, pad, H, W] of [[3, 1, 1, 5, 4], [3, 2, 1, 6, 5], [1, 1, 0, 3, 3], [2, 2, 0, 5, 5], [3, 2, 0, 7, 6]] as const)
  test(`conv2d ${k}x${k} stride ${stride} pad ${pad} on ${H}x${W}`, async () => {
    const xs = [2, H, W, 3], ws = [4, k, k, 3];
    await checkGrad('conv2d', [rnd(xs, 21), rnd(ws, 22), rnd([4], 23)], ([x, w, b]) => conv2d(x, w, b, { stride, pad }),
      ([x, w, b]) => refConv(x, w, convGeom(xs, ws, stride, pad), b));
  });

test('conv2d beta = 1 (a residual added in place) passes dy to the accumulated output', async () => {
  const xs = [1, 4, 4, 2], ws = [2, 3, 3, 2];
  await checkGrad('conv2d beta', [rnd(xs, 24), rnd(ws, 25), rnd([1, 4, 4, 2], 26)], ([x, w, r]) => {
    const acc = hs.ops.affine(r, 2, 0);
    return conv2d(x, w, null, { pad: 1, beta: 1, out: acc });
  }, ([x, w, r]) => refConv(x, w, convGeom(xs, ws, 1, 1)).map((v, i) => v + 2 * r[i]));
});

test('conv2d with more output channels than one weight-gradient block (Cout = 19)', async () => {
  const xs = [1, 3, 3, 2], ws = [19, 3, 3, 2];
  await checkGrad('conv2d cout 19', [rnd(xs, 27), rnd(ws, 28)], ([x, w]) => conv2d(x, w, null, { pad: 1 }),
    ([x, w]) => refConv(x, w, convGeom(xs, ws, 1, 1)));
});

test('conv2d backward at sizes that take several im2col / col2im chunks: the adjoint identities hold', async () => {
  // <conv(x, w), dy> = <x, conv2d_backward_input(dy, w)> = <w, conv2d_backward_weight(x, dy)>
  const xs = [2, 96, 96, 64], ws = [64, 3, 3, 64];
  const x = hs.ops.randn(xs, { seed: 1 }), w = hs.ops.randn(ws, { seed: 2 }), dy = hs.ops.randn([2, 96, 96, 64], { seed: 3 });
  const dot = async (a: hs.Tensor, b: hs.Tensor) => {
    const [u, v] = [await a.floats(), await b.floats()];
    let s = 0;
    for (let i = 0; i < u.length; i++) s += u[i] * v[i];
    return s;
  };
  // The forward as a direct sum (implicit GEMM): 'auto' takes Winograd F(6x6) at 96x96, whose rounding (~4.5e-6
  // an element) put this identity of the backward kernels 1.5e-5 off with the portable kernels.
  const y = conv2d(x, w, null, { pad: 1, algo: 'gemm' });
  const dx = conv2dBackwardInput(dy, w, xs, { pad: 1 }), dw = conv2dBackwardWeight(x, dy, ws, { pad: 1 });
  const ref = await dot(y, dy);
  for (const [what, v] of [['dx', await dot(x, dx)], ['dw', await dot(w, dw)]] as const)
    assert.ok(Math.abs(v - ref) <= 1e-5 * Math.abs(ref) + 1e-2, `${what}: ${v} vs ${ref}`);
  [x, w, dy, y, dx, dw].forEach((t) => t.dispose());
});

for (const bias of [true, false])
  test(`lora_conv2d 3x3 stride 2${bias ? ' with bias' : ''}: dx, dw, dbias, d down, d up`, async () => {
    const xs = [2, 5, 5, 3], ws = [4, 3, 3, 3], r = 2, s = 0.8;
    const ins = [rnd(xs, 29), rnd(ws, 30), ...(bias ? [rnd([4], 31)] : []), rnd([r, 3, 3, 3], 32), rnd([4, r], 33)];
    await checkGrad('lora_conv2d', ins, (ts) => loraConv2d(ts[0], ts[1], bias ? ts[2] : null, ts[ts.length - 2], ts[ts.length - 1], s, { stride: 2, pad: 1 }),
      (v) => {
        const y = refConv(v[0], v[1], convGeom(xs, ws, 2, 1), bias ? v[2] : undefined);
        const t = refConv(v[0], v[v.length - 2], convGeom(xs, [r, 3, 3, 3], 2, 1));
        const u = matmulRef(t, [t.length / r, r], v[v.length - 1], [4, r], { tB: true });
        return y.map((x, i) => x + s * u[i]);
      });
  });

test.run();
