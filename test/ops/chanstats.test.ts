// Channel statistics from the producing op (native/cpu/chanstats.cpp, native/cuda/chanstats.cu): conv2d's
// optional stats output (CPU: the Winograd algorithms sum them from each output tile as it is written; CUDA: the
// tensor-core kernel from each 128-row tile in its epilogue; the others read y back), the channel_stats op, and
// group_norm's stats input, against float64 statistics of the values the ops wrote, with poisoned outputs, on
// HYPERSD_TEST_DEVICE (on CUDA also in f16 / bf16). gemm.test.ts runs this file again with the AVX2 and the
// portable CPU kernel sets.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { runOp } from '../../lib/ops/runtime';
import { DEVICE, TOL, assertClose, randn, roundTo, t } from '../helpers/check';
import { channelStatsRef, groupNormRef } from '../helpers/refs';

const { conv2d, groupNorm, channelStats } = hs.ops;
const NAME = process.env.HYPERSD_CPU_KERNELS ? `[${process.env.HYPERSD_CPU_KERNELS}] ` : '';


/** Checks st [N, C, 3] (mean hi + lo, variance) against y's float64 statistics: the mean within 1e-5 of the
 * standard deviation, the variance within 1e-5 relative. */
function checkStats(st: Float32Array, y: ArrayLike<number>, N: number, S: number, C: number, what: string): void {
  const { mean, vr } = channelStatsRef(y, N, S, C);
  let worstM = 0, worstV = 0;
  for (let i = 0; i < N * C; i++) {
    const m = st[3 * i] + st[3 * i + 1], v = st[3 * i + 2];
    assert.ok(Number.isFinite(m) && Number.isFinite(v), `${what}: stats ${i} written (${m}, ${v})`);
    worstM = Math.max(worstM, Math.abs(m - mean[i]) / Math.sqrt(vr[i]));
    worstV = Math.max(worstV, Math.abs(v - vr[i]) / vr[i]);
  }
  assert.ok(worstM < 1e-5 && worstV < 1e-5, `${what}: mean off by ${worstM.toExponential(2)} std, variance by ${worstV.toExponential(2)}`);
}

const poisoned = (shape: number[]) => hs.full(shape, NaN, { device: DEVICE });
/** The message a promise rejects with ('' when it resolves). */
async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return '';
  } catch (e) {
    return (e as Error).message;
  }
}

interface Case { what: string; N: number; H: number; W: number; C: number; O: number; k: number; stride: number; pad: number;
  algo: hs.ops.ConvAlgo; variant?: 'small' | 'big'; bias?: boolean; beta?: boolean; outlier?: boolean; dtype?: 'f16' | 'bf16' }
const cases: Case[] = [
  { what: 'F(6x6) big variant, edge tiles, bias, batch 2', N: 2, H: 13, W: 11, C: 16, O: 72, k: 3, stride: 1, pad: 1, algo: 'winograd6', variant: 'big', bias: true },
  { what: 'F(6x6) small variant, 100 channels (64 + 16 + 16 + 4)', N: 1, H: 14, W: 9, C: 24, O: 100, k: 3, stride: 1, pad: 1, algo: 'winograd6', variant: 'small', bias: true },
  { what: 'F(4x4) beta = 1 into a residual', N: 2, H: 9, W: 7, C: 16, O: 32, k: 3, stride: 1, pad: 1, algo: 'winograd4', bias: true, beta: true },
  { what: 'F(4x4) small variant, 20 channels', N: 1, H: 8, W: 8, C: 16, O: 20, k: 3, stride: 1, pad: 1, algo: 'winograd4', variant: 'small' },
  { what: 'F(2x2) beta = 1', N: 1, H: 7, W: 10, C: 16, O: 24, k: 3, stride: 1, pad: 1, algo: 'winograd', beta: true },
  { what: 'F(6x6) with an outlier input pixel (tile pivots far from the rest of their tiles)', N: 1, H: 12, W: 12, C: 16, O: 48, k: 3, stride: 1, pad: 1, algo: 'winograd6', outlier: true },
  { what: 'implicit GEMM, stride 2', N: 2, H: 11, W: 9, C: 12, O: 40, k: 3, stride: 2, pad: 1, algo: 'gemm', bias: true },
  { what: '1x1 beta = 1', N: 1, H: 6, W: 5, C: 8, O: 36, k: 1, stride: 1, pad: 0, algo: 'auto', beta: true },
  { what: 'auto, 3 outputs (the direct kernel)', N: 1, H: 10, W: 10, C: 32, O: 3, k: 3, stride: 1, pad: 1, algo: 'auto', bias: true },
];
// CUDA, 16-bit: the tensor-core kernel's epilogue (every 128-row tile in one image: Ho Wo a multiple of 128), with
// partial column tiles (200 = 128 + 72 outputs), a residual, 1x1, batch 2; and the read-back path (8x8 pixels).
if (DEVICE !== 'cpu')
  cases.push(
    { what: 'f16 16x16, 200 outputs, bias, batch 2 (epilogue)', N: 2, H: 16, W: 16, C: 32, O: 200, k: 3, stride: 1, pad: 1, algo: 'auto', bias: true, dtype: 'f16' },
    { what: 'bf16 16x8, beta = 1 (epilogue)', N: 1, H: 16, W: 8, C: 16, O: 64, k: 3, stride: 1, pad: 1, algo: 'auto', beta: true, dtype: 'bf16' },
    { what: 'bf16 1x1 32x32, 320 outputs (epilogue)', N: 1, H: 32, W: 32, C: 40, O: 320, k: 1, stride: 1, pad: 0, algo: 'auto', bias: true, dtype: 'bf16' },
    { what: 'f16 stride 2 32x32 -> 16x16 with an outlier (epilogue)', N: 1, H: 32, W: 32, C: 16, O: 48, k: 3, stride: 2, pad: 1, algo: 'auto', outlier: true, dtype: 'f16' },
    { what: 'f16 8x8 (read back: 64 pixels an image)', N: 2, H: 8, W: 8, C: 24, O: 40, k: 3, stride: 1, pad: 1, algo: 'auto', bias: true, dtype: 'f16' },
  );

{
  for (const c of cases)
    test(`${NAME}conv2d stats: ${c.what}`, async () => {
      const prev = process.env.HYPERSD_WINO_VARIANT;
      if (c.variant) process.env.HYPERSD_WINO_VARIANT = c.variant;
      try {
        const xv = randn(c.N * c.H * c.W * c.C, 7, 1);
        if (c.outlier) for (let ch = 0; ch < c.C; ch++) xv[ch] = 1e3;  // pixel (0, 0) of image 0
        const dt = c.dtype ?? 'f32';
        const x = t(xv, [c.N, c.H, c.W, c.C], dt), w = t(randn(c.O * c.k * c.k * c.C, 8, 0.3), [c.O, c.k, c.k, c.C], dt);
        const b = c.bias ? t(randn(c.O, 9, 2), [c.O], dt) : null;
        const Ho = Math.floor((c.H + 2 * c.pad - c.k) / c.stride) + 1, Wo = Math.floor((c.W + 2 * c.pad - c.k) / c.stride) + 1;
        const resid = randn(c.N * Ho * Wo * c.O, 10, 0.5).map((v) => v + 3);
        const o = { stride: c.stride, pad: c.pad, algo: c.algo };
        const st = poisoned([c.N, c.O, 3]);
        const y = conv2d(x, w, b, { ...o, stats: st, ...(c.beta ? { beta: 1, out: t(resid, [c.N, Ho, Wo, c.O], dt) } : {}) });
        const plain = conv2d(x, w, b, { ...o, ...(c.beta ? { beta: 1, out: t(resid, [c.N, Ho, Wo, c.O], dt) } : {}) });
        const yv = await y.floats();
        assert.ok(Buffer.from(await y.bytes()).equals(Buffer.from(await plain.bytes())), 'y is the same with and without stats');
        checkStats((await st.data()) as Float32Array, yv, c.N, Ho * Wo, c.O, c.what);
        // and group_norm given them matches the float64 group norm of y
        const G = c.O % 4 === 0 ? c.O / 4 : 1;
        const gv = randn(c.O, 11), bv = randn(c.O, 12);
        const yf = y.reshape([c.N, Ho * Wo, c.O]);
        const gn = groupNorm(yf, t(gv, [c.O], dt), t(bv, [c.O], dt), { groups: G, eps: 1e-5, silu: true, stats: st });
        assertClose(await gn.floats(), groupNormRef(Float64Array.from(yv), roundTo(dt, gv), roundTo(dt, bv), c.N, Ho * Wo, c.O, G, 1e-5, true), TOL[dt], 'group norm with stats');
      } finally {
        if (prev === undefined) delete process.env.HYPERSD_WINO_VARIANT;
        else process.env.HYPERSD_WINO_VARIANT = prev;
      }
    });

  // channel_stats over rows: blocks of 256 rows (the 18 MB case takes the row-by-row sums), an outlier first row,
  // a mean 1e4 standard deviations from zero (the hi + lo pair keeps its digits), one row, a channel tail, and
  // 70,000 images.
  for (const [what, N, S, C, mean, sd, outlier] of [
    ['[2, 700, 40], outlier first row', 2, 700, 40, 0.5, 1, true],
    ['[1, 300, 20], mean 1e4 std', 1, 300, 20, 1e4, 1, false],
    ['[3, 1, 9] one row', 3, 1, 9, 0, 1, false],
    ['[1, 66000, 68] (18 MB)', 1, 66000, 68, -0.4, 0.8, false],
    // more images than a CUDA grid's y dimension holds (65535: the statistics kernels stride over them, group norm
    // runs over slices of them)
    ['[70000, 8, 2] (70,000 images)', 70000, 8, 2, 0, 1, false],
    ...(DEVICE === 'cpu' ? [] : [['[2, 300, 72] f16', 2, 300, 72, 0.3, 2, true]]),
  ] as [string, number, number, number, number, number, boolean][])
    test(`${NAME}channelStats ${what}`, async () => {
      const dt = what.endsWith('f16') ? 'f16' : 'f32';
      const xv = roundTo(dt, randn(N * S * C, 21, sd).map((v) => v + mean));
      if (outlier) for (let ch = 0; ch < C; ch += 3) xv[ch] = 5e3;
      const st = poisoned([N, C, 3]);
      runOp('channel_stats', [t(xv, [N, S, C], dt)], [st]);
      if (S === 1) {  // the variance of one value is 0: relative checks do not apply
        const sv = (await st.data()) as Float32Array;
        for (let i = 0; i < N * C; i++) {
          assert.is(sv[3 * i] + sv[3 * i + 1], xv[i]);
          assert.is(sv[3 * i + 2], 0);
        }
        return;
      }
      checkStats((await st.data()) as Float32Array, xv, N, S, C, what);
      const st2 = channelStats(t(xv, [N, S, C], dt));
      assert.ok(Buffer.from(await st2.bytes()).equals(Buffer.from(await st.bytes())), 'channelStats() is the op');
      // group norm with the statistics against the float64 group norm
      const G = C % 4 === 0 ? 4 : 1, gv = randn(C, 22), bv = randn(C, 23);
      const y = groupNorm(t(xv, [N, S, C], dt), t(gv, [C], dt), t(bv, [C], dt), { groups: G, eps: 1e-6, stats: st });
      assertClose(await y.floats(), groupNormRef(xv, roundTo(dt, gv), roundTo(dt, bv), N, S, C, G, 1e-6, false), TOL[dt], 'group norm');
    });
}

test(`${NAME}channel statistics: bad tensors are Errors naming them`, async () => {
  const x = hs.ops.randn([1, 4, 8], { seed: 1, device: DEVICE }), g = hs.ops.randn([8], { seed: 2, device: DEVICE });
  const w = hs.ops.randn([8, 3, 3, 8], { seed: 3, device: DEVICE });
  const x4 = x.reshape([1, 2, 2, 8]);
  const dev = { device: DEVICE };
  assert.throws(() => groupNorm(x, g, g, { groups: 2, stats: hs.empty([1, 8, 2], dev) }), /groupNorm: stats \[1,8,2\] f32 must be f32 \[1,8,3\]/);
  assert.throws(() => groupNorm(x, g, g, { groups: 2, stats: hs.empty([1, 8, 3], { ...dev, dtype: 'bf16' }) }), /groupNorm: stats \[1,8,3\] bf16 must be f32/);
  assert.throws(() => conv2d(x4, w, null, { pad: 1, stats: hs.empty([2, 8, 3], dev) }), /conv2d: stats \[2,8,3\] f32 must be f32 \[1,8,3\]/);
  if (DEVICE !== 'cpu') {
    assert.throws(() => groupNorm(x, g, g, { groups: 2, stats: hs.empty([1, 8, 3]) }), /groupNorm: stats is on cpu but x is on cuda/);
    return;
  }
  const xb = hs.ops.cast(x4, 'bf16'), wb = hs.ops.cast(w, 'bf16');
  assert.throws(() => conv2d(xb, wb, null, { pad: 1, stats: hs.empty([1, 8, 3]) }), /conv2d: stats \(channel statistics\) need f32 activations on the CPU, got bf16/);
  assert.throws(() => channelStats(hs.ops.cast(x, 'bf16')), /channelStats: x must be f32 on the CPU, got bf16/);
});

if (DEVICE === 'cpu')
  test(`${NAME}channel statistics: the kernels' own checks surface as Errors at the next sync`, async () => {
    const x = hs.ops.randn([1, 2, 2, 8], { seed: 1 }), w = hs.ops.randn([8, 3, 3, 8], { seed: 3 });
    runOp('conv2d', [hs.ops.cast(x, 'bf16'), w], [hs.empty([1, 2, 2, 8], { dtype: 'bf16' }), hs.empty([1, 8, 3])], { pad: 1 });
    assert.match(await rejection(hs.sync('cpu')), /conv2d: the stats output needs an f32 y/);
    runOp('group_norm', [x.reshape([1, 4, 8]), hs.ops.randn([8], { seed: 6 }), hs.ops.randn([8], { seed: 7 }), hs.empty([1, 7, 3])], [hs.empty([1, 4, 8])], { groups: 2 });
    assert.match(await rejection(hs.sync('cpu')), /group_norm: stats \(input 3\) .* must be a contiguous f32 \[1, 8, 3\] tensor/);
    const down = hs.ops.randn([2, 3, 3, 8], { seed: 4 }), up = hs.ops.randn([8, 2], { seed: 5 });
    runOp('lora_conv2d', [x, w, down, up], [hs.empty([1, 2, 2, 8]), hs.empty([1, 8, 3])], { pad: 1, scale: 1 });
    assert.match(await rejection(hs.sync('cpu')), /lora_conv2d: takes one output \(y\), got 2/);
    await hs.sync('cpu');  // the stream keeps working
  });

test.run();
