// gemm family (matmul, linear, lora_linear, lora_linear_batched) against float64 references (helpers/refs.ts),
// on odd sizes, with poisoned outputs, on HYPERSD_TEST_DEVICE. The sizes also cross the CPU engine's
// block edges (K blocks of <= 1280, NC = 3072 columns, super-blocks of 2048 rows). The last tests run this
// file again in a child with HYPERSD_CPU_KERNELS=portable (the fallback for CPUs without AVX2), and on a CPU
// with AVX-512 the micro-kernel families again with HYPERSD_CPU_KERNELS=avx2 (the set for CPUs without it).
import { spawnSync } from 'child_process';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { DEVICE, TOL, assertClose, cpuFlags, randn, relErr, roundTo, t } from '../helpers/check';
import { actRef, merged, refMatmul, type Act } from '../helpers/refs';

const { matmul, linear, loraLinear, loraLinearBatched } = hs.ops;
const PORTABLE_CHILD = process.env.HYPERSD_CPU_KERNELS === 'portable';
const AVX2_CHILD = process.env.HYPERSD_CPU_KERNELS === 'avx2';

const NAME = PORTABLE_CHILD ? '[portable] ' : '';

test(`${NAME}matmul 37x45x29 f32, every transpose combination`, async () => {
  const M = 37, K = 45, N = 29;
  const a = roundTo('f32', randn(M * K, 1)), b = roundTo('f32', randn(K * N, 2));
  for (const transA of [false, true])
    for (const transB of [false, true]) {
      const y = matmul(t(a, transA ? [K, M] : [M, K]), t(b, transB ? [N, K] : [K, N]), { transA, transB });
      assert.equal(y.shape, [M, N]);
      assertClose(await y.floats(), refMatmul(a, b, 1, M, K, N, false, { transA, transB }), TOL.f32, `transA ${transA} transB ${transB}`);
    }
});

test(`${NAME}matmul batched: B with the batch, B broadcast (folded into M), transposed A`, async () => {
  const P = 3, M = 13, K = 21, N = 19;
  const a = roundTo('f32', randn(P * M * K, 3)), bb = roundTo('f32', randn(P * K * N, 4)), b = bb.subarray(0, K * N);
  for (const transA of [false, true]) {
    const aT = t(a, transA ? [P, K, M] : [P, M, K]);
    const y1 = matmul(aT, t(bb, [P, N, K]), { transA, transB: true });
    assertClose(await y1.floats(), refMatmul(a, bb, P, M, K, N, true, { transA, transB: true }), TOL.f32, `batched B transA ${transA}`);
    const y2 = matmul(aT, t(b, [K, N]), { transA });
    assert.equal(y2.shape, [P, M, N]);
    assertClose(await y2.floats(), refMatmul(a, b, P, M, K, N, false, { transA }), TOL.f32, `broadcast B transA ${transA}`);
  }
  // Many small items (one per thread) with two batch dimensions.
  const a4 = roundTo('f32', randn(2 * 5 * 7 * 9, 5)), b4 = roundTo('f32', randn(2 * 5 * 9 * 6, 6));
  const y4 = matmul(t(a4, [2, 5, 7, 9]), t(b4, [2, 5, 9, 6]));
  assertClose(await y4.floats(), refMatmul(a4, b4, 10, 7, 9, 6, true), TOL.f32, 'many small items');
});

test(`${NAME}matmul bias and every activation, alpha`, async () => {
  const M = 37, K = 45, N = 29;
  const a = roundTo('f32', randn(M * K, 7)), b = roundTo('f32', randn(N * K, 8, 0.3)), bias = roundTo('f32', randn(N, 9));
  for (const act of ['none', 'silu', 'gelu', 'gelu_tanh', 'quick_gelu'] as Act[]) {
    const y = matmul(t(a, [M, K]), t(b, [N, K]), { transB: true, bias: t(bias, [N]), act, alpha: 0.7 });
    assertClose(await y.floats(), refMatmul(a, b, 1, M, K, N, false, { transB: true, bias, act, alpha: 0.7 }), TOL.f32, `act ${act}`);
  }
});

test(`${NAME}matmul beta accumulates into out (act before the beta term), also across K blocks`, async () => {
  for (const [M, K, N, act] of [[37, 45, 29, 'none'], [37, 45, 29, 'gelu'], [23, 1400, 35, 'none'], [23, 1400, 35, 'silu']] as [number, number, number, Act][]) {
    const a = roundTo('f32', randn(M * K, 10)), b = roundTo('f32', randn(K * N, 11, 0.1)), old = roundTo('f32', randn(M * N, 12));
    const bias = roundTo('f32', randn(N, 13));
    const out = t(old, [M, N]);
    const y = matmul(t(a, [M, K]), t(b, [K, N]), { alpha: 0.5, beta: -1.5, act, bias: t(bias, [N]), out });
    assert.ok(y === out);
    assertClose(await y.floats(), refMatmul(a, b, 1, M, K, N, false, { alpha: 0.5, beta: -1.5, act, bias, old }), TOL.f32,
      `M ${M} K ${K} N ${N} act ${act}`);
  }
});

test(`${NAME}matmul across the engine's blocks: long K (small and large M), wide N, tall M`, async () => {
  for (const [M, K, N] of [[67, 1500, 70], [77, 1400, 300], [7, 5, 3100], [2100, 3, 5], [1, 1, 1], [6, 16, 16]]) {
    const a = roundTo('f32', randn(M * K, M + K)), b = roundTo('f32', randn(N * K, N, 0.1)), bias = roundTo('f32', randn(N, 3));
    const y = linear(t(a, [M, K]), t(b, [N, K]), t(bias, [N]), 'gelu');
    assertClose(await y.floats(), refMatmul(a, b, 1, M, K, N, false, { transB: true, bias, act: 'gelu' }), TOL.f32, `${M}x${K}x${N}`);
  }
});

// The CPU engine's weight-rows path (M <= 128 against an f32 weight [N, K]: the weight read in place, the
// activation packed): M off 16, N off 6 (the zero-padded last weight rows), several K blocks, alpha, bias, every
// activation, beta before and after the activation; and [K, N] weights (the ordinary path) beside it.
test(`${NAME}matmul small M against [N, K] f32 weights: tails, K blocks, alpha, bias, act, beta`, async () => {
  const cases: [number, number, number, Act, number][] = [
    [1, 1280, 320, 'silu', 0], [17, 1370, 47, 'gelu', 0], [64, 2600, 130, 'none', 0.75], [77, 768, 320, 'quick_gelu', 0],
    [128, 300, 6, 'gelu_tanh', -1.5], [100, 500, 7, 'gelu', -1.5], [5, 9, 13, 'none', 0], [9, 100, 50, 'none', 0], [33, 1281, 1, 'silu', 2]];
  for (const [M, K, N, act, beta] of cases) {
    const a = roundTo('f32', randn(M * K, M + 7 * K)), b = roundTo('f32', randn(N * K, N + 1, 0.1));
    const bias = roundTo('f32', randn(N, 31)), old = roundTo('f32', randn(M * N, 32));
    const out = beta !== 0 ? t(old, [M, N]) : undefined;
    const y = matmul(t(a, [M, K]), t(b, [N, K]), { transB: true, alpha: 0.625, bias: t(bias, [N]), act, beta, out });
    const ref = refMatmul(a, b, 1, M, K, N, false, { transB: true, alpha: 0.625, bias, act, beta, old: beta !== 0 ? old : undefined });
    assertClose(await y.floats(), ref, TOL.f32, `${M}x${K}x${N} act ${act} beta ${beta}`);
  }
});

test(`${NAME}matmul with f16 / bf16 weights, activations and outputs`, async () => {
  const M = 37, K = 45, N = 29;
  for (const dt of ['f16', 'bf16'] as const) {
    const a = roundTo('f32', randn(M * K, 14)), b = roundTo(dt, randn(N * K, 15)), bias = roundTo(dt, randn(N, 16));
    for (const transB of [false, true]) {
      // the weight is stored half: the reference sees the rounded values
      const bl = transB ? b : Float64Array.from({ length: K * N }, (_, i) => b[(i % N) * K + Math.floor(i / N)]);
      const y = matmul(t(a, [M, K]), t(bl, transB ? [N, K] : [K, N], dt), { transB, bias: t(bias, [N], dt), act: 'silu' });
      assert.is(y.dtype, 'f32');
      assertClose(await y.floats(), refMatmul(a, bl, 1, M, K, N, false, { transB, bias, act: 'silu' }), TOL.f32, `${dt} weight transB ${transB}`);
    }
    const ah = roundTo(dt, randn(M * K, 17));
    const yh = matmul(t(ah, [M, K], dt), t(b, [N, K], dt), { transB: true });
    assert.is(yh.dtype, dt);
    assertClose(await yh.floats(), refMatmul(ah, b, 1, M, K, N, false, { transB: true }), TOL[dt], `${dt} everything`);
    const old = roundTo(dt, randn(M * N, 18));
    const yb = matmul(t(ah, [M, K], dt), t(b, [N, K], dt), { transB: true, beta: 1, out: t(old, [M, N], dt) });
    assertClose(await yb.floats(), refMatmul(ah, b, 1, M, K, N, false, { transB: true, beta: 1, old }), TOL[dt], `${dt} beta`);
  }
});

// The shapes the Hopper wgmma kernel takes (A [M, K] and B [N, K], K % 8 == 0) with ragged tile edges, a K
// tail below the 64-wide k tile, batches with a batched B, bias + activation and beta; any device runs it.
test(`${NAME}matmul f16 / bf16, K-major operands: ragged tiles, K tail, batched B, bias + gelu, beta`, async () => {
  for (const dt of ['f16', 'bf16'] as const) {
    const M = 200, K = 328, N = 136;
    const a = roundTo(dt, randn(M * K, 71)), b = roundTo(dt, randn(N * K, 72, 0.1)), bias = roundTo(dt, randn(N, 73));
    const y = matmul(t(a, [M, K], dt), t(b, [N, K], dt), { transB: true, bias: t(bias, [N], dt), act: 'gelu_tanh' });
    assert.is(y.dtype, dt);
    assertClose(await y.floats(), refMatmul(a, b, 1, M, K, N, false, { transB: true, bias, act: 'gelu_tanh' }), TOL[dt], `${dt} bias gelu`);
    const P = 3, M2 = 70, K2 = 72, N2 = 90;
    const a2 = roundTo(dt, randn(P * M2 * K2, 74)), b2 = roundTo(dt, randn(P * N2 * K2, 75, 0.2));
    const y2 = matmul(t(a2, [P, M2, K2], dt), t(b2, [P, N2, K2], dt), { transB: true, alpha: 0.5 });
    assertClose(await y2.floats(), refMatmul(a2, b2, P, M2, K2, N2, true, { transB: true, alpha: 0.5 }), TOL[dt], `${dt} batched B`);
    // several k tiles past the ring of stages (12, tail 8) and N tiles (the last partial at 128 and at 256 columns)
    const [M3, K3, N3] = [260, 712, 300];
    const a3 = roundTo(dt, randn(M3 * K3, 77)), b3 = roundTo(dt, randn(N3 * K3, 78, 0.1));
    const y3 = matmul(t(a3, [M3, K3], dt), t(b3, [N3, K3], dt), { transB: true, alpha: 0.75 });
    assertClose(await y3.floats(), refMatmul(a3, b3, 1, M3, K3, N3, false, { transB: true, alpha: 0.75 }), TOL[dt], `${dt} long k`);
    const c0 = roundTo(dt, randn(M * N, 76));
    const acc = t(c0, [M, N], dt);
    matmul(t(a, [M, K], dt), t(b, [N, K], dt), { transB: true, beta: 1, out: acc });
    const ref = refMatmul(a, b, 1, M, K, N, false, { transB: true }).map((v, i) => v + c0[i]);
    assertClose(await acc.floats(), ref, TOL[dt], `${dt} beta`);
  }
});

test(`${NAME}linear on rank 1 and rank 3 inputs`, async () => {
  const K = 45, N = 29;
  const w = roundTo('f32', randn(N * K, 19)), bias = roundTo('f32', randn(N, 20)), x = roundTo('f32', randn(2 * 3 * K, 21));
  const y3 = linear(t(x, [2, 3, K]), t(w, [N, K]), t(bias, [N]), 'gelu_tanh');
  assert.equal(y3.shape, [2, 3, N]);
  assertClose(await y3.floats(), refMatmul(x, w, 1, 6, K, N, false, { transB: true, bias, act: 'gelu_tanh' }), TOL.f32, 'rank 3');
  const y1 = linear(t(x.subarray(0, K), [K]), t(w, [N, K]));
  assert.equal(y1.shape, [N]);
  assertClose(await y1.floats(), refMatmul(x.subarray(0, K), w, 1, 1, K, N, false, { transB: true }), TOL.f32, 'rank 1');
});

test(`${NAME}loraLinear in f16 / bf16 throughout, K = 512 (the CUDA kernel splits the rank GEMM over K)`, async () => {
  const L = 75, K = 512, N = 40, r = 16, scale = -0.6;  // r % 8 == 0: the Hopper kernel takes the LoRA segment
  for (const dt of ['f16', 'bf16'] as const) {
    const x = roundTo(dt, randn(L * K, 41)), w = roundTo(dt, randn(N * K, 42, 0.05)), bias = roundTo(dt, randn(N, 43));
    const down = roundTo(dt, randn(r * K, 44, 0.05)), up = roundTo(dt, randn(N * r, 45));
    const y = loraLinear(t(x, [L, K], dt), t(w, [N, K], dt), t(bias, [N], dt), t(down, [r, K], dt), t(up, [N, r], dt), scale);
    assert.is(y.dtype, dt);
    const ref = refMatmul(x, merged(w, down, up, N, K, r, scale), 1, L, K, N, false, { transB: true, bias });
    assertClose(await y.floats(), ref, TOL[dt], `${dt}`);
    // the adapter's share is large enough that dropping it (or a K slice of it) fails the tolerance
    const base = refMatmul(x, w, 1, L, K, N, false, { transB: true, bias });
    assert.ok(relErr(base, ref) > 5 * TOL[dt], `adapter share ${relErr(base, ref)}`);
  }
});

// Several row and column blocks of tiles (on Hopper the one-launch form: the first column of tiles computes
// t and the others wait for it per row block), ranks 8, 24 (t's tile partly past the rank) and 64 (the most
// that form takes), a K tail, with and without bias.
test(`${NAME}loraLinear f16 / bf16 over several row and column blocks, ranks 8 / 24 / 64`, async () => {
  const L = 300, K = 200, N = 300;
  for (const dt of ['f16', 'bf16'] as const)
    for (const [r, scale, withBias] of [[8, 1.5, true], [24, -0.8, false], [64, 0.7, true]] as const) {
      const x = roundTo(dt, randn(L * K, 51 + r)), w = roundTo(dt, randn(N * K, 52, 0.05)), bias = roundTo(dt, randn(N, 53));
      const down = roundTo(dt, randn(r * K, 54, 0.1)), up = roundTo(dt, randn(N * r, 55, 0.5));
      const y = loraLinear(t(x, [L, K], dt), t(w, [N, K], dt), withBias ? t(bias, [N], dt) : null, t(down, [r, K], dt), t(up, [N, r], dt), scale);
      const ref = refMatmul(x, merged(w, down, up, N, K, r, scale), 1, L, K, N, false, { transB: true, bias: withBias ? bias : undefined });
      assertClose(await y.floats(), ref, TOL[dt], `${dt} rank ${r}`);
      const base = refMatmul(x, w, 1, L, K, N, false, { transB: true, bias: withBias ? bias : undefined });
      assert.ok(relErr(base, ref) > 5 * TOL[dt], `adapter share ${relErr(base, ref)} at rank ${r}`);
    }
});

test(`${NAME}loraLinear equals the merged weight (f32, and f16 / bf16 weights)`, async () => {
  const L = 37, K = 45, N = 29, r = 4, scale = 0.75;
  for (const dt of ['f32', 'f16', 'bf16'] as const) {
    const x = roundTo('f32', randn(2 * L * K, 22)), w = roundTo(dt, randn(N * K, 23)), bias = roundTo(dt, randn(N, 24));
    const down = roundTo(dt, randn(r * K, 25)), up = roundTo(dt, randn(N * r, 26));
    const y = loraLinear(t(x, [2, L, K]), t(w, [N, K], dt), t(bias, [N], dt), t(down, [r, K], dt), t(up, [N, r], dt), scale);
    assert.equal(y.shape, [2, L, N]);
    const ref = refMatmul(x, merged(w, down, up, N, K, r, scale), 1, 2 * L, K, N, false, { transB: true, bias });
    assertClose(await y.floats(), ref, TOL.f32, `weights ${dt}`);
  }
  // K + r crossing a K block boundary, no bias
  const K2 = 1276, r2 = 8, x2 = roundTo('f32', randn(9 * K2, 27)), w2 = roundTo('f32', randn(N * K2, 28, 0.1));
  const d2 = roundTo('f32', randn(r2 * K2, 29, 0.1)), u2 = roundTo('f32', randn(N * r2, 30));
  const y2 = loraLinear(t(x2, [9, K2]), t(w2, [N, K2]), null, t(d2, [r2, K2]), t(u2, [N, r2]), -1.25);
  assertClose(await y2.floats(), refMatmul(x2, merged(w2, d2, u2, N, K2, r2, -1.25), 1, 9, K2, N, false, { transB: true }), TOL.f32, 'K 1276 r 8');
});

test(`${NAME}loraLinearBatched: each batch item its own adapter, -1 none`, async () => {
  const B = 3, L = 11, K = 45, N = 29, r = 5, nA = 2;
  const x = roundTo('f32', randn(B * L * K, 31)), w = roundTo('f32', randn(N * K, 32)), bias = roundTo('f32', randn(N, 33));
  const downs = roundTo('f32', randn(nA * r * K, 34)), ups = roundTo('f32', randn(nA * N * r, 35));
  const idx = [1, -1, 0], scales = [0.5, 3, -2];
  const y = loraLinearBatched(t(x, [B, L, K]), t(w, [N, K]), t(bias, [N]), t(downs, [nA, r, K]), t(ups, [nA, N, r]),
    hs.tensor(Int32Array.from(idx), [B], { device: DEVICE }), t(scales, [B]));
  const got = await y.floats();
  for (let b = 0; b < B; b++) {
    const wb = idx[b] < 0 ? w : merged(w, downs.subarray(idx[b] * r * K, (idx[b] + 1) * r * K),
      ups.subarray(idx[b] * N * r, (idx[b] + 1) * N * r), N, K, r, scales[b]);
    const ref = refMatmul(x.subarray(b * L * K, (b + 1) * L * K), wb, 1, L, K, N, false, { transB: true, bias });
    assertClose(got.subarray(b * L * N, (b + 1) * L * N), ref, TOL.f32, `item ${b}`);
  }
  try {
    // at the sync point; at the call itself under HYPERSD_SYNC=1 (bench/gpu-check.sh)
    await loraLinearBatched(t(x, [B, L, K]), t(w, [N, K]), null, t(downs, [nA, r, K]), t(ups, [nA, N, r]),
      hs.tensor(Int32Array.from([0, 2, 0]), [B], { device: DEVICE }), t(scales, [B])).data();
    assert.unreachable('an adapter index out of range must fail');
  } catch (e) {
    assert.match((e as Error).message, /idx\[1\] = 2/);
  }
});

test(`${NAME}loraLinear / loraLinearBatched with K = 0 give the bias (M had come out 0 and y went unwritten)`, async () => {
  const bias = t([1, 2, 3, 4], [4]), up = t(new Float64Array(8).fill(0.5), [4, 2]);
  const y = loraLinear(t([], [2, 0]), t([], [4, 0]), bias, t([], [2, 0]), up, 1);
  assert.equal(Array.from(await y.floats()), [1, 2, 3, 4, 1, 2, 3, 4]);
  const yb = loraLinearBatched(t([], [2, 1, 0]), t([], [4, 0]), bias, t([], [1, 2, 0]), t(new Float64Array(8).fill(0.5), [1, 4, 2]),
    hs.tensor(Int32Array.from([0, -1]), [2], { device: DEVICE }), t([1, 1], [2]));
  assert.equal(Array.from(await yb.floats()), [1, 2, 3, 4, 1, 2, 3, 4]);
  assert.throws(() => hs.ops.matmul(t([1], [1, 1]), t([1], [1, 1]), null as never), /matmul: options must be an object/);
});

// linearGeglu: on the CPU one fused kernel (B panels interleaving value and gate rows, a tile sink writing the
// GEGLU); K in one block and in several (partial sums kept by the engine), M off the 6-row tiles, rank 3, f16 /
// bf16 weights, no bias; N % 16 != 0 composes linear + geglu (same result).
function gegluRefOf(a: Float64Array, b: Float64Array, M: number, K: number, N2: number, bias?: Float64Array): Float64Array {
  const h = refMatmul(a, b, 1, M, K, N2, false, { transB: true, bias });
  const n = N2 / 2, y = new Float64Array(M * n);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < n; j++) y[i * n + j] = h[i * N2 + j] * actRef(h[i * N2 + n + j], 'gelu');
  return y;
}
test(`${NAME}linearGeglu equals geglu(linear(...)) against float64: one and several K blocks, tails, half weights`, async () => {
  const cases: [number[], number, number, 'f32' | 'f16' | 'bf16', boolean][] = [
    [[37], 40, 64, 'f32', true], [[2, 50], 1400, 96, 'f32', true], [[301], 320, 160, 'f32', false],
    [[13], 1500, 32, 'bf16', true], [[20], 70, 48, 'f16', true], [[9], 30, 24, 'f32', true] /* N = 24: composed */];
  for (const [lead, K, N2, dt, hasBias] of cases) {
    const M = lead.reduce((p, q) => p * q, 1);
    const a = roundTo('f32', randn(M * K, K + N2)), b = roundTo(dt, randn(N2 * K, N2, 0.1)), bias = roundTo('f32', randn(N2, 5));
    const y = hs.ops.linearGeglu(t(a, [...lead, K]), t(b, [N2, K], dt), hasBias ? t(bias, [N2]) : null);
    assert.equal(y.shape, [...lead, N2 / 2]);
    assertClose(await y.floats(), gegluRefOf(a, b, M, K, N2, hasBias ? bias : undefined), TOL.f32, `${lead} K ${K} N2 ${N2} ${dt}`);
  }
  // Half-precision activations (CUDA runs the op in x's dtype; the CPU composes the two ops).
  for (const dt of ['f16', 'bf16'] as const) {
    const M = 70, K = 320, N2 = 96;
    const a = roundTo(dt, randn(M * K, 71)), b = roundTo(dt, randn(N2 * K, 72, 0.1)), bias = roundTo(dt, randn(N2, 73));
    const y = hs.ops.linearGeglu(t(a, [M, K], dt), t(b, [N2, K], dt), t(bias, [N2], dt));
    assert.equal(y.dtype, dt);
    assertClose(await y.floats(), gegluRefOf(a, b, M, K, N2, bias), TOL[dt], `x ${dt}`);
  }
  assert.throws(() => hs.ops.linearGeglu(t(new Float64Array(6), [2, 3]), t(new Float64Array(15), [5, 3])), /linear_geglu: w \[5,3\] must have an even number of rows/);
  // Bit-identical to the composed ops (training composes them; checkpointed recomputation must match).
  for (const [M, K, N2] of [[50, 1300, 32], [300, 96, 48]]) {
    const a = roundTo('f32', randn(M * K, 61)), b = roundTo('f32', randn(N2 * K, 62, 0.1)), bias = roundTo('f32', randn(N2, 63));
    const x = t(a, [M, K]), w = t(b, [N2, K]), bb = t(bias, [N2]);
    assert.equal(Array.from(await hs.ops.linearGeglu(x, w, bb).floats()), Array.from(await hs.ops.geglu(linear(x, w, bb)).floats()), `${M}x${K}x${N2}`);
  }
});

test('shape errors throw before anything is enqueued, naming op, argument and shapes', () => {
  const a = t(new Float32Array(6), [2, 3]), b = t(new Float32Array(8), [4, 2]);
  assert.throws(() => matmul(a, b), /matmul: a \[2,3\] and b \[4,2\] differ in the inner dimension/);
  assert.throws(() => matmul(a, t(new Float32Array(12), [2, 3, 2])), /matmul: b \[2,3,2\] must have a's batch/);
  assert.throws(() => matmul(a, t(new Float32Array(12), [3, 4]), { bias: t(new Float32Array(3), [3]) }), /matmul: bias \[3\] must be \[4\]/);
  assert.throws(() => matmul(a, t(new Float32Array(12), [3, 4]), { beta: 1 }), /matmul: beta 1 .*pass out/);
  assert.throws(() => matmul(a, t(new Float32Array(12), [3, 4]), { act: 'relu' as Act }), /matmul: act must be one of/);
  assert.throws(() => linear(a, t(new Float32Array(8), [2, 4])), /linear: x \[2,3\] and w \[2,4\] differ in K/);
  const w = t(new Float32Array(12), [4, 3]);
  assert.throws(() => loraLinear(a, w, null, t(new Float32Array(4), [2, 2]), t(new Float32Array(8), [4, 2]), 1),
    /lora_linear: down \[2,2\] must be \[r, 3\]/);
  assert.throws(() => loraLinear(a, w, null, t(new Float32Array(6), [2, 3]), t(new Float32Array(8), [2, 4]), 1),
    /lora_linear: up \[2,4\] must be \[4, 2\]/);
  assert.throws(() => loraLinearBatched(t(new Float32Array(6), [1, 2, 3]), w, null, t(new Float32Array(6), [1, 2, 3]),
    t(new Float32Array(8), [1, 4, 2]), t([0], [1]), t([1], [1])), /lora_linear_batched: idx f32\[1\] must be i32 \[1\]/);
});

// The portable kernels: this file (and conv, norm, activation, elementwise) again, in a child process that forces them. The child also prints one
// product, which must differ bitwise from this process's AVX2 result (FMA rounds once, mul+add twice) while
// matching the reference, so the switch is known to take effect.
function hasAvx512(): boolean {
  return cpuFlags().has('avx512f') && hasAvx2();
}
function hasAvx2(): boolean {
  const flags = cpuFlags();
  return ['avx2', 'fma', 'f16c'].every((f) => flags.has(f));
}
const probe = () => {
  const M = 37, K = 45, N = 29;
  return matmul(t(roundTo('f32', randn(M * K, 40)), [M, K]), t(roundTo('f32', randn(N * K, 41)), [N, K]), { transB: true });
};
if (PORTABLE_CHILD || AVX2_CHILD) {
  test(`[${process.env.HYPERSD_CPU_KERNELS}] probe`, async () => {
    const bytes = await probe().bytes();
    process.stdout.write(`\nPROBE ${Buffer.from(bytes).toString('base64')}\n`);
  });
} else if (DEVICE === 'cpu') {
  // Runs the test files matching `files` in a child with HYPERSD_CPU_KERNELS=set (they must pass), and returns its
  // probe's bytes beside this process's.
  const childProbe = async (set: string, files: string, timeout: number) => {
    const root = path.resolve(__dirname, '../..');
    const r = spawnSync(process.execPath, [path.join(root, 'node_modules/uvu/bin.js'), '-r', 'tsx', 'test/ops', files], {
      cwd: root, env: { ...process.env, HYPERSD_CPU_KERNELS: set }, encoding: 'utf8', timeout,
    });
    const outText = `${r.stdout}\n${r.stderr}`;
    if (r.status !== 0) assert.unreachable(`${set} child failed (${r.status}):\n${outText.slice(-4000)}`);
    const m = /PROBE (\S+)/.exec(r.stdout);
    assert.ok(m, 'the child printed its probe');
    const mine = Buffer.from(await probe().bytes());
    const theirs = Buffer.from(m![1], 'base64');
    assert.is(theirs.length, mine.length);
    return { mine, theirs };
  };
  // The AVX2 kernels where the AVX-512 ones are the default: every family built on the GEMM micro-kernel (GEMM,
  // LoRA, linear_geglu, convolution incl. Winograd, attention) and the row kernels with 16-lane versions (norms,
  // SiLU, GEGLU) in a child.
  if (hasAvx512())
    test('the AVX2 kernels pass the micro-kernel families too on an AVX-512 CPU (child process)', async () => {
      const { mine, theirs } = await childProbe('avx2', '(gemm|conv|conv_upsample|attention|norm|chanstats|activation)\\.test\\.ts$', 180_000);
      // Two accumulator chains a row (even and odd k) against one: the same sums, rounded differently.
      assert.not.ok(theirs.equals(mine), 'the AVX2 result differs bitwise from the AVX-512 one');
    });
  test('the portable fallback kernels pass this file too (child process)', async () => {
    const { mine, theirs } = await childProbe('portable', '(gemm|conv|conv_upsample|norm|chanstats|activation|elementwise)\\.test\\.ts$', 120_000);
    if (hasAvx2()) assert.not.ok(theirs.equals(mine), 'portable result differs bitwise from the AVX2 one');
  });
}

test.run();
