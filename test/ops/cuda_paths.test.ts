// Cases for CUDA code paths that no other test compared with a reference (a branch-coverage review of the GEMM,
// convolution and attention launchers, session 28): the mma.sync kernel's transposed layouts and f32 bias on
// 16-bit outputs, LoRA ranks that are not multiples of 8 or exceed 64, the batched LoRA, lora_conv2d and full-tile
// convolutions in 16 bits, the forward attention's 96 / 128 / 160 head-dim buckets and D != Dv, the tensor-core
// backward under a causal mask with Lq != Lk, and the convolution backwards over several im2col / col2im chunks
// (CUDA only; HYPERSD_TEST_BIG=1 runs it on the CPU too). Every case against float64; on the CPU they pass too.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { grad } from '../../lib/autograd';
import { DEVICE, TOL, assertClose, randn, relErr, roundTo, t } from '../helpers/check';
import { attentionGradRef, attentionLseRef, merged, refConv, refMatmul } from '../helpers/refs';

const { matmul, loraLinear, loraLinearBatched, conv2d, loraConv2d, attention } = hs.ops;
const HALF = ['f16', 'bf16'] as const;

// 1. mma.sync layouts other than (row-major A, [N, K] B) in f16 / bf16: stage_cols + ldmatrix.trans, vec and scalar
//    staging, batched with a shared B under transA. On Hopper none of these is wgmma-eligible.
test('matmul f16/bf16 every transpose, aligned (vec) and odd (scalar), batched transA with shared B', async () => {
  for (const dt of HALF)
    for (const [P, M, K, N] of [[1, 72, 64, 80], [1, 37, 45, 29], [2, 40, 24, 48]])
      for (const tA of [false, true])
        for (const tB of [false, true]) {
          const a = roundTo(dt, randn(P * M * K, 1 + M)), b = roundTo(dt, randn(K * N, 2 + N, 0.2));
          const y = matmul(t(a, P > 1 ? (tA ? [P, K, M] : [P, M, K]) : (tA ? [K, M] : [M, K]), dt), t(b, tB ? [N, K] : [K, N], dt), { transA: tA, transB: tB });
          assert.is(y.dtype, dt);
          assertClose(await y.floats(), refMatmul(a, b, P, M, K, N, false, { transA: tA, transB: tB }), TOL[dt], `${dt} P${P} ${M}x${K}x${N} tA ${tA} tB ${tB}`);
        }
});

// 2. FastEpilogue with an f32 bias on a 16-bit output (the float2 bias load), full 128x128 tiles; odd N on wgmma.
test('matmul f16/bf16 output with an f32 bias (full tiles), and odd N', async () => {
  for (const dt of HALF) {
    const [M, K, N] = [256, 64, 128];
    const a = roundTo(dt, randn(M * K, 3)), b = roundTo(dt, randn(N * K, 4, 0.2)), bias = roundTo('f32', randn(N, 5));
    const y = matmul(t(a, [M, K], dt), t(b, [N, K], dt), { transB: true, bias: t(bias, [N]) });
    assertClose(await y.floats(), refMatmul(a, b, 1, M, K, N, false, { transB: true, bias }), TOL[dt], `${dt} f32 bias`);
    const [M2, K2, N2] = [70, 64, 29];
    const a2 = roundTo(dt, randn(M2 * K2, 6)), b2 = roundTo(dt, randn(N2 * K2, 7, 0.2));
    const y2 = matmul(t(a2, [M2, K2], dt), t(b2, [N2, K2], dt), { transB: true });
    assertClose(await y2.floats(), refMatmul(a2, b2, 1, M2, K2, N2, false, { transB: true }), TOL[dt], `${dt} odd N`);
  }
});

// 3. LoRA in f16/bf16: rank 4 (r % 8 != 0: the mma.sync kernel's second segment, scalar up staging), rank 72
//    (r8 > 64: the unfused TMA kernel's second segment; K = 256 also takes split-K = 2).
test('loraLinear f16/bf16 rank 4 and rank 72', async () => {
  const [L, K, N] = [150, 256, 136];
  for (const dt of HALF)
    for (const [r, s] of [[4, 0.9], [72, -0.5]] as const) {
      const x = roundTo(dt, randn(L * K, 11)), w = roundTo(dt, randn(N * K, 12, 0.05)), bias = roundTo(dt, randn(N, 13));
      const down = roundTo(dt, randn(r * K, 14, 0.1)), up = roundTo(dt, randn(N * r, 15, 0.5));
      const y = loraLinear(t(x, [L, K], dt), t(w, [N, K], dt), t(bias, [N], dt), t(down, [r, K], dt), t(up, [N, r], dt), s);
      const ref = refMatmul(x, merged(w, down, up, N, K, r, s), 1, L, K, N, false, { transB: true, bias });
      assertClose(await y.floats(), ref, TOL[dt], `${dt} r ${r}`);
      assert.ok(relErr(refMatmul(x, w, 1, L, K, N, false, { transB: true, bias }), ref) > 5 * TOL[dt], 'adapter share large enough');
    }
});

// 4. loraLinearBatched in f16/bf16 (idx / scales on the tensor-core kernel, vec staging).
test('loraLinearBatched f16/bf16', async () => {
  const [B, L, K, N, r, nA] = [3, 70, 64, 72, 8, 2];
  for (const dt of HALF) {
    const x = roundTo(dt, randn(B * L * K, 21)), w = roundTo(dt, randn(N * K, 22, 0.1)), bias = roundTo(dt, randn(N, 23));
    const downs = roundTo(dt, randn(nA * r * K, 24, 0.2)), ups = roundTo(dt, randn(nA * N * r, 25, 0.5));
    const idx = [1, -1, 0], sc = [0.5, 3, -2];
    const y = loraLinearBatched(t(x, [B, L, K], dt), t(w, [N, K], dt), t(bias, [N], dt), t(downs, [nA, r, K], dt),
      t(ups, [nA, N, r], dt), hs.tensor(Int32Array.from(idx), [B], { device: DEVICE }), t(sc, [B]));
    const got = await y.floats();
    for (let b = 0; b < B; b++) {
      const wb = idx[b] < 0 ? w : merged(w, downs.subarray(idx[b] * r * K, (idx[b] + 1) * r * K), ups.subarray(idx[b] * N * r, (idx[b] + 1) * N * r), N, K, r, sc[b]);
      assertClose(got.subarray(b * L * N, (b + 1) * L * N), refMatmul(x.subarray(b * L * K, (b + 1) * L * K), wb, 1, L, K, N, false, { transB: true, bias }), TOL[dt], `${dt} item ${b}`);
    }
  }
});

// 5. conv2d with 16-bit x, w and y, Cin % 8 == 0 (cp.async gather), M and Cout >= 128 (FastEpilogue on the
//    mma.sync kernel) with a same-dtype and an f32 bias; lora_conv2d in f16/bf16 (the mma.sync second segment
//    behind the conv gather), ranks 4 and 8, stride 1 and 2.
test('conv2d f16/bf16 in and out, full tiles, half and f32 bias; loraConv2d f16/bf16', async () => {
  for (const dt of HALF) {
    const [N, H, W, C, O] = [1, 16, 16, 16, 136];
    const x = roundTo(dt, randn(N * H * W * C, 31)), w = roundTo(dt, randn(O * 9 * C, 32, 0.2));
    for (const bdt of [dt, 'f32'] as const) {
      const bias = roundTo(bdt, randn(O, 33));
      const y = conv2d(t(x, [N, H, W, C], dt), t(w, [O, 3, 3, C], dt), t(bias, [O], bdt), { pad: 1 });
      assert.is(y.dtype, dt);
      assertClose(await y.floats(), refConv(x, w, { N, H, W, C, O, kh: 3, kw: 3, stride: 1, pad: 1 }, bias), TOL[dt], `${dt} conv bias ${bdt}`);
    }
    for (const [r, stride] of [[4, 1], [8, 2]] as const) {
      const [n, h, wd, c, o] = [1, 9, 7, 16, 24], K = 9 * c, s = 0.6;
      const xv = roundTo(dt, randn(n * h * wd * c, 41)), wv = roundTo(dt, randn(o * K, 42, 0.3)), bv = roundTo(dt, randn(o, 43));
      const dv = roundTo(dt, randn(r * K, 44, 0.3)), uv = roundTo(dt, randn(o * r, 45));
      const y = loraConv2d(t(xv, [n, h, wd, c], dt), t(wv, [o, 3, 3, c], dt), t(bv, [o], dt), t(dv, [r, 3, 3, c], dt), t(uv, [o, r], dt), s, { stride, pad: 1 });
      assert.is(y.dtype, dt);
      assertClose(await y.floats(), refConv(xv, merged(wv, dv, uv, o, K, r, s), { N: n, H: h, W: wd, C: c, O: o, kh: 3, kw: 3, stride, pad: 1 }, bv), TOL[dt], `${dt} lora conv r ${r} stride ${stride}`);
    }
  }
});

// 6. Forward attention in f16/bf16 on the 128 and 160 head-dim buckets (reached today only through the gradient
//    test, never compared), and the SIMT kernel's <= 256 variant in 16 bits (D != Dv).
test('attention f16/bf16 head dims 96 / 128 / 160 (causal, Lk = 77) and D != Dv', async () => {
  const cases = [[1, 70, 77, 2, 160, 160, false], [1, 100, 150, 1, 96, 96, true], [2, 65, 130, 1, 128, 128, false], [1, 37, 45, 2, 40, 24, false]] as const;
  for (const dt of HALF)
    for (const [B, Lq, Lk, H, D, Dv, causal] of cases) {
      const qv = roundTo(dt, randn(B * Lq * H * D, 51)), kv = roundTo(dt, randn(B * Lk * H * D, 52)), vv = roundTo(dt, randn(B * Lk * H * Dv, 53));
      const r = attention(t(qv, [B, Lq, H * D], dt), t(kv, [B, Lk, H * D], dt), t(vv, [B, Lk, H * Dv], dt), { heads: H, causal, returnLse: true });
      const ref = attentionLseRef(qv, kv, vv, B, Lq, Lk, H, D, Dv, 1 / Math.sqrt(D), causal);
      assertClose(await r.out.floats(), ref.o, TOL[dt], `${dt} D ${D} out`);
      assertClose(await r.lse.floats(), ref.lse, TOL[dt], `${dt} D ${D} lse`);
    }
});

// 7. The tensor-core backward (buckets 48 / 64, the default) under a causal mask with Lq != Lk both ways.
test('attention f16/bf16 gradients, causal Lq != Lk at d 40 / 64', async () => {
  for (const dt of HALF)
    for (const [Lq, Lk, D] of [[100, 170, 64], [170, 100, 40]]) {
      const [B, H] = [1, 1], scale = 1 / Math.sqrt(D);
      const qv = randn(Lq * D, 61, 0.8), kv = randn(Lk * D, 62, 0.8), vv = randn(Lk * D, 63), rv = randn(Lq * D, 64);
      const q = t(qv, [B, Lq, D], dt), k = t(kv, [B, Lk, D], dt), v = t(vv, [B, Lk, D], dt);
      const { grads } = grad(() => attention(q, k, v, { heads: H, scale, causal: true }) as hs.Tensor, [q, k, v], { dLoss: t(rv, [B, Lq, D]) });
      const ref = attentionGradRef(roundTo(dt, qv), roundTo(dt, kv), roundTo(dt, vv), roundTo('f32', rv), B, Lq, Lk, H, D, D, scale, true);
      for (const [name, x, want] of [['dq', q, ref.dq], ['dk', k, ref.dk], ['dv', v, ref.dv]] as const)
        assertClose(await grads.get(x)!.floats(), want, TOL[dt], `${dt} Lq ${Lq} Lk ${Lk} ${name}`);
    }
});

// 8. conv2d_backward_weight / _input over several im2col / col2im chunks ON CUDA (kChunkFloats = 2^26 there: the
//    existing adjoint test in gemm_conv.test.ts builds its tensors on the CPU and is one chunk at CUDA's size).
//    x [2, 128, 128, 256], 3x3 pad 1, 8 outputs: dw takes P K = 75.5M > 2^26 (two pixel chunks, the second starting
//    mid-image, beta = 1 after the first); dx takes one image per chunk (37.7M floats an image).
test('conv backward over several chunks on the test device (adjoint identities)', async () => {
  if (DEVICE === 'cpu' && !process.env.HYPERSD_TEST_BIG) return;
  const xs = [2, 128, 128, 256], ws = [8, 3, 3, 256], dev = { device: DEVICE };
  const x = hs.ops.randn(xs, { seed: 1, ...dev }), w = hs.ops.randn(ws, { seed: 2, ...dev }), dy = hs.ops.randn([2, 128, 128, 8], { seed: 3, ...dev });
  const { conv2dBackwardInput, conv2dBackwardWeight } = await import('../../lib/autograd');
  const dot = async (a: hs.Tensor, b: hs.Tensor) => { const [u, v] = [await a.floats(), await b.floats()]; let s = 0; for (let i = 0; i < u.length; i++) s += u[i] * v[i]; return s; };
  const y = conv2d(x, w, null, { pad: 1, algo: 'gemm' });
  const ref = await dot(y, dy);
  const dx = conv2dBackwardInput(dy, w, xs, { pad: 1 }), dw = conv2dBackwardWeight(x, dy, ws, { pad: 1 });
  for (const [what, v] of [['dx', await dot(x, dx)], ['dw', await dot(w, dw)]] as const)
    assert.ok(Math.abs(v - ref) <= 1e-5 * Math.abs(ref) + 1e-1, `${what}: ${v} vs ${ref}`);
});

test.run();
