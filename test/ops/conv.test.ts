// conv family (conv2d, lora_conv2d, ohwiFromOihw) against a float64 direct convolution (helpers/refs.ts), on
// odd sizes, with poisoned outputs, on HYPERSD_TEST_DEVICE. gemm.test.ts runs this file again with the
// portable CPU kernels.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { DEVICE, TOL, assertClose, cpuFlags, randn, roundTo, t } from '../helpers/check';
import { merged, outHW, refConv, type Geom } from '../helpers/refs';

const { conv2d, loraConv2d, ohwiFromOihw } = hs.ops;
const NAME = process.env.HYPERSD_CPU_KERNELS === 'portable' ? '[portable] ' : '';

const G = (N: number, H: number, W: number, C: number, O: number, kh: number, kw: number, stride: number, pad: number): Geom =>
  ({ N, H, W, C, O, kh, kw, stride, pad });

test(`${NAME}conv2d 3x3 stride 1 and 2, 1x1, asymmetric kernel, no padding; odd H, W, C; implicit GEMM and Winograd`, async () => {
  const cases: Geom[] = [
    G(2, 9, 7, 5, 11, 3, 3, 1, 1), G(2, 9, 8, 5, 11, 3, 3, 2, 1), G(1, 5, 3, 13, 7, 1, 1, 1, 0),
    G(1, 7, 5, 13, 7, 1, 1, 2, 0), G(1, 8, 9, 6, 17, 3, 3, 1, 0), G(1, 6, 7, 3, 5, 2, 3, 1, 1),
    G(1, 6, 6, 150, 20, 3, 3, 1, 1), // K = 1350: two K blocks of 675 that split a tap's channels
    G(2, 11, 9, 24, 19, 3, 3, 1, 1), G(1, 10, 13, 17, 16, 3, 3, 1, 0), G(1, 7, 7, 16, 16, 3, 3, 1, 2),
    G(1, 33, 31, 16, 17, 3, 3, 1, 1), // 272 tiles: 'auto' takes Winograd
    G(1, 32, 32, 64, 64, 3, 3, 1, 1), // Winograd's 16 GEMMs large enough for threads (the small-M path)
  ];
  for (const g of cases) {
    const x = roundTo('f32', randn(g.N * g.H * g.W * g.C, g.C + g.H)), w = roundTo('f32', randn(g.O * g.kh * g.kw * g.C, g.O, 0.3));
    const bias = roundTo('f32', randn(g.O, 3));
    const ref = refConv(x, w, g, bias);
    const algos = g.kh === 3 && g.kw === 3 && g.stride === 1 ? ['auto', 'gemm', 'winograd', 'winograd4', 'winograd6'] as const : ['auto'] as const;
    for (const algo of algos) {
      const y = conv2d(t(x, [g.N, g.H, g.W, g.C]), t(w, [g.O, g.kh, g.kw, g.C]), t(bias, [g.O]), { stride: g.stride, pad: g.pad, algo });
      assert.equal(y.shape, [g.N, ...outHW(g), g.O]);
      assertClose(await y.floats(), ref, TOL.f32, `${algo} ${JSON.stringify(g)}`);
    }
  }
});

test(`${NAME}conv2d Winograd F(2x2), F(4x4) and F(6x6), both variants: 320 / 200 channels in, several chunks of tiles, batch 2`, async () => {
  // variant 'small' transforms the weights per block of 16 outputs x 128 inputs (Cout % 16 == 0 only),
  // 'big' forms all of U once; chunk sizes force the big variant across chunk boundaries.
  for (const [g, chunk] of [[G(1, 12, 10, 320, 24, 3, 3, 1, 1), ''], [G(1, 9, 11, 200, 32, 3, 3, 1, 1), ''],
    [G(2, 7, 9, 24, 16, 3, 3, 1, 1), ''], [G(2, 13, 11, 20, 33, 3, 3, 1, 1), '6'], [G(2, 9, 14, 17, 16, 3, 3, 1, 0), '12']] as [Geom, string][]) {
    const x = roundTo('f32', randn(g.N * g.H * g.W * g.C, g.C + 1, 2)), w = roundTo('f32', randn(g.O * 9 * g.C, g.O + 2, 0.1));
    const bias = roundTo('f32', randn(g.O, 5));
    const ref = refConv(x, w, g, bias);
    if (chunk) process.env.HYPERSD_WINO_CHUNK_TILES = chunk;
    try {
      for (const variant of ['small', 'big'])
        for (const algo of ['winograd', 'winograd4', 'winograd6'] as const) {
          process.env.HYPERSD_WINO_VARIANT = variant;
          const y = conv2d(t(x, [g.N, g.H, g.W, g.C]), t(w, [g.O, 3, 3, g.C]), t(bias, [g.O]), { pad: g.pad, algo });
          assertClose(await y.floats(), ref, TOL.f32, `${algo} ${variant} chunk ${chunk || 'auto'} ${JSON.stringify(g)}`);
        }
    } finally {
      delete process.env.HYPERSD_WINO_CHUNK_TILES;
      delete process.env.HYPERSD_WINO_VARIANT;
    }
  }
});

test(`${NAME}conv2d Winograd F(4x4) and F(6x6) at 1280 channels in within the f32 tolerance, both variants`, async () => {
  // 'big': the GEMMs read the transformed input's panels in place, K block by K block (1280 = 4 blocks).
  const g = G(1, 14, 13, 1280, 16, 3, 3, 1, 1);
  const x = roundTo('f32', randn(g.H * g.W * g.C, 41)), w = roundTo('f32', randn(g.O * 9 * g.C, 42, 1 / Math.sqrt(9 * g.C)));
  const ref = refConv(x, w, g);
  try {
    for (const variant of ['small', 'big'])
      for (const algo of ['winograd4', 'winograd6'] as const) {
        process.env.HYPERSD_WINO_VARIANT = variant;
        const y = conv2d(t(x, [1, g.H, g.W, g.C]), t(w, [g.O, 3, 3, g.C]), null, { pad: 1, algo });
        assertClose(await y.floats(), ref, TOL.f32, `${algo} ${variant} ${JSON.stringify(g)}`);
      }
  } finally {
    delete process.env.HYPERSD_WINO_VARIANT;
  }
});

test(`${NAME}conv2d 'auto': F(6x6) from 64 6x6 tiles needing <= 0.9x F(4x4)'s products, F(4x4) down to 8 (AVX-512) or 4 tiles of 4x4, the implicit GEMM below`, async () => {
  // Same algorithm, same bits: 'auto' must match the algorithm it should pick exactly and differ from another.
  if (DEVICE !== 'cpu') return; // the CUDA kernels have one algorithm
  type ConvAlgoName = 'gemm' | 'winograd' | 'winograd4' | 'winograd6';
  const flags = cpuFlags();
  const ks = process.env.HYPERSD_CPU_KERNELS;
  const avx512 = (!ks || ks === 'avx512') && ['avx512f', 'avx512dq', 'avx512vl'].every((f) => flags.has(f));
  const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
  const cases: [Geom, ConvAlgoName, ConvAlgoName][] = [
    [G(1, 48, 48, 16, 16, 3, 3, 1, 1), 'winograd6', 'winograd4'], // 64 tiles of 6x6, 0.79x the products
    [G(1, 40, 40, 16, 16, 3, 3, 1, 1), 'winograd4', 'winograd6'], // 49 tiles of 6x6
    [G(2, 32, 32, 16, 16, 3, 3, 1, 1), 'winograd4', 'winograd6'], // 72 tiles, but as many products
    [G(1, 16, 16, 16, 16, 3, 3, 1, 1), 'winograd4', 'winograd'],
    [G(1, 8, 8, 16, 16, 3, 3, 1, 1), avx512 ? 'gemm' : 'winograd4', avx512 ? 'winograd4' : 'gemm'], // 4 tiles of 4x4
  ];
  for (const [g, want, other] of cases) {
    const x = t(roundTo('f32', randn(g.N * g.H * g.W * g.C, 43)), [g.N, g.H, g.W, g.C]);
    const w = t(roundTo('f32', randn(g.O * 9 * g.C, 44, 0.1)), [g.O, 3, 3, g.C]);
    const y = await conv2d(x, w, null, { pad: 1 }).floats();
    assert.ok(same(y, await conv2d(x, w, null, { pad: 1, algo: want }).floats()), `auto = ${want} at ${g.N}x${g.H}x${g.W}`);
    assert.not.ok(same(y, await conv2d(x, w, null, { pad: 1, algo: other }).floats()), `auto != ${other} at ${g.N}x${g.H}x${g.W}`);
  }
});

test(`${NAME}conv2d beta = 1 accumulates into out`, async () => {
  // Cout 16: the Winograd variant that transforms weights per block (no bias, beta = 1 in its output transform)
  for (const g of [G(1, 7, 5, 6, 9, 3, 3, 1, 1), G(2, 4, 5, 8, 9, 1, 1, 1, 0), G(1, 7, 5, 20, 18, 3, 3, 1, 1), G(2, 9, 6, 20, 16, 3, 3, 1, 1)]) {
    const x = roundTo('f32', randn(g.N * g.H * g.W * g.C, 4)), w = roundTo('f32', randn(g.O * g.kh * g.kw * g.C, 5));
    const [Ho, Wo] = outHW(g);
    const old = roundTo('f32', randn(g.N * Ho * Wo * g.O, 6));
    for (const algo of g.kh === 3 ? ['gemm', 'winograd', 'winograd4', 'winograd6'] as const : ['auto'] as const) {
      const out = t(old, [g.N, Ho, Wo, g.O]);
      const y = conv2d(t(x, [g.N, g.H, g.W, g.C]), t(w, [g.O, g.kh, g.kw, g.C]), null, { pad: g.pad, out, beta: 1, algo });
      assert.ok(y === out);
      assertClose(await y.floats(), refConv(x, w, g, undefined, 1, old), TOL.f32, `beta ${algo} ${JSON.stringify(g)}`);
    }
  }
});

test(`${NAME}conv2d with 1 to 8 outputs ('auto': the direct kernel): lanes and tails of Cin, stride 2, padding, beta, bf16 weights`, async () => {
  // W = 7 and 11 leave partial groups of the pixels a step shares; C = 128 (lanes only), 13 (a tail), 3 (tail only).
  const cases: [Geom, number, 'f32' | 'bf16'][] = [
    [G(2, 9, 7, 128, 3, 3, 3, 1, 1), 0, 'f32'], [G(1, 8, 11, 13, 1, 3, 3, 1, 1), 0, 'f32'],
    [G(1, 9, 11, 40, 8, 3, 3, 2, 1), 0, 'f32'], [G(2, 6, 7, 3, 5, 3, 3, 1, 0), 0, 'f32'],
    [G(1, 7, 11, 24, 2, 1, 1, 1, 0), 0.5, 'f32'], [G(1, 9, 7, 20, 4, 3, 3, 1, 1), 1, 'f32'],
    [G(1, 7, 9, 16, 6, 2, 3, 1, 2), 0, 'f32'], [G(1, 6, 7, 136, 7, 3, 3, 1, 1), 0, 'bf16'],
  ];
  for (const [g, beta, wdt] of cases) {
    const x = roundTo('f32', randn(g.N * g.H * g.W * g.C, g.C + g.O, 2)), w = roundTo(wdt, randn(g.O * g.kh * g.kw * g.C, g.O, 0.2));
    const bias = roundTo(wdt, randn(g.O, 11));
    const [Ho, Wo] = outHW(g);
    const old = roundTo('f32', randn(g.N * Ho * Wo * g.O, 12));
    const out = beta ? t(old, [g.N, Ho, Wo, g.O]) : undefined;
    const y = conv2d(t(x, [g.N, g.H, g.W, g.C]), t(w, [g.O, g.kh, g.kw, g.C], wdt), t(bias, [g.O], wdt),
      { stride: g.stride, pad: g.pad, out, beta });
    assert.equal(y.shape, [g.N, Ho, Wo, g.O]);
    assertClose(await y.floats(), refConv(x, w, g, bias, beta, old), TOL.f32, `${wdt} beta ${beta} ${JSON.stringify(g)}`);
  }
});

test(`${NAME}conv2d with f16 / bf16 weights, activations and outputs`, async () => {
  for (const [g, dt] of [[G(1, 7, 6, 9, 10, 3, 3, 1, 1), 'f16'], [G(1, 7, 6, 9, 10, 3, 3, 1, 1), 'bf16'],
    [G(1, 7, 6, 18, 20, 3, 3, 1, 1), 'f16'], [G(1, 7, 6, 18, 20, 3, 3, 1, 1), 'bf16'],
    [G(1, 7, 6, 18, 16, 3, 3, 1, 1), 'f16'], [G(1, 7, 6, 18, 16, 3, 3, 1, 1), 'bf16']] as [Geom, 'f16' | 'bf16'][]) {
    const x = roundTo('f32', randn(g.H * g.W * g.C, 7)), w = roundTo(dt, randn(g.O * 9 * g.C, 8)), bias = roundTo(dt, randn(g.O, 9));
    for (const algo of ['gemm', 'winograd', 'winograd4', 'winograd6'] as const) {
      const y = conv2d(t(x, [1, g.H, g.W, g.C]), t(w, [g.O, 3, 3, g.C], dt), t(bias, [g.O], dt), { pad: 1, algo });
      assert.is(y.dtype, 'f32');
      assertClose(await y.floats(), refConv(x, w, g, bias), TOL.f32, `${dt} weight ${algo}`);
    }
    const xh = roundTo(dt, x), stride = g.C < 16 ? 2 : 1; // implicit GEMM, then Winograd
    const yh = conv2d(t(xh, [1, g.H, g.W, g.C], dt), t(w, [g.O, 3, 3, g.C], dt), null,
      { pad: 1, stride, algo: stride === 1 ? 'winograd' : 'auto' });
    assert.is(yh.dtype, dt);
    assertClose(await yh.floats(), refConv(xh, w, { ...g, stride }), TOL[dt], `${dt} everything, stride ${stride}`);
  }
});

// 16-bit x and w of one dtype into an f32 output: CUDA runs these on the tensor cores with f32 accumulation and f32
// stores (conv.cu's compute dtype; HYPERSD_CONV_BWD=fwd's input gradient is such a call), the CPU widens them. The
// products of 16-bit values are exact in f32, so the f32 tolerance holds; an output rounded to 16 bits would not.
test(`${NAME}conv2d of f16 / bf16 x and w into an f32 output: bias, beta, stride 2, 1x1, channel tails, partial tiles`, async () => {
  for (const dt of ['f16', 'bf16'] as const)
    for (const [g, beta] of [[G(1, 9, 7, 16, 24, 3, 3, 1, 1), 0], [G(2, 8, 8, 24, 136, 3, 3, 1, 1), 1], [G(1, 9, 11, 8, 20, 3, 3, 2, 1), 0],
      [G(2, 7, 6, 40, 33, 1, 1, 1, 0), 1], [G(1, 6, 5, 5, 9, 3, 3, 1, 1), 0]] as [Geom, number][]) {
      const x = roundTo(dt, randn(g.N * g.H * g.W * g.C, 61)), w = roundTo(dt, randn(g.O * g.kh * g.kw * g.C, 62, 0.3));
      const bias = roundTo(dt, randn(g.O, 63));
      const [Ho, Wo] = outHW(g);
      const old = roundTo('f32', randn(g.N * Ho * Wo * g.O, 64));
      const out = beta ? t(old, [g.N, Ho, Wo, g.O]) : hs.full([g.N, Ho, Wo, g.O], NaN, { device: DEVICE });
      const y = conv2d(t(x, [g.N, g.H, g.W, g.C], dt), t(w, [g.O, g.kh, g.kw, g.C], dt), t(bias, [g.O], dt),
        { stride: g.stride, pad: g.pad, out, beta });
      assert.ok(y === out);
      assertClose(await y.floats(), refConv(x, w, g, bias, beta, old), TOL.f32, `${dt} -> f32, beta ${beta} ${JSON.stringify(g)}`);
      out.dispose();
    }
});

/** OHWI w + scale * up down, flattened over (kh, kw, Cin). */
test(`${NAME}loraConv2d equals the merged weight (3x3 stride 1 and 2, 1x1; f32 and bf16 weights)`, async () => {
  for (const [g, dt] of [[G(2, 7, 5, 6, 9, 3, 3, 1, 1), 'f32'], [G(1, 9, 7, 5, 8, 3, 3, 2, 1), 'f32'],
    [G(1, 5, 6, 12, 7, 1, 1, 1, 0), 'f32'], [G(1, 7, 5, 6, 9, 3, 3, 1, 1), 'bf16']] as [Geom, 'f32' | 'bf16'][]) {
    const r = 3, K = g.kh * g.kw * g.C, scale = 0.6;
    const x = roundTo('f32', randn(g.N * g.H * g.W * g.C, 10)), w = roundTo(dt, randn(g.O * K, 11, 0.3));
    const bias = roundTo(dt, randn(g.O, 12)), down = roundTo(dt, randn(r * K, 13, 0.3)), up = roundTo(dt, randn(g.O * r, 14));
    const y = loraConv2d(t(x, [g.N, g.H, g.W, g.C]), t(w, [g.O, g.kh, g.kw, g.C], dt), t(bias, [g.O], dt),
      t(down, [r, g.kh, g.kw, g.C], dt), t(up, [g.O, r], dt), scale, { stride: g.stride, pad: g.pad });
    assertClose(await y.floats(), refConv(x, merged(w, down, up, g.O, K, r, scale), g, bias), TOL.f32, `lora ${dt} ${JSON.stringify(g)}`);
  }
});

test('ohwiFromOihw reorders a PyTorch weight', () => {
  const O = 2, I = 3, kh = 2, kw = 3;
  const oihw = Float32Array.from({ length: O * I * kh * kw }, (_, i) => i);
  const r = ohwiFromOihw(oihw, [O, I, kh, kw]);
  for (let o = 0; o < O; o++)
    for (let i = 0; i < I; i++)
      for (let y = 0; y < kh; y++)
        for (let x = 0; x < kw; x++) assert.is(r[((o * kh + y) * kw + x) * I + i], oihw[((o * I + i) * kh + y) * kw + x]);
  assert.throws(() => ohwiFromOihw(oihw, [2, 3, 3, 3]), /ohwiFromOihw: 36 values do not fill shape \[2,3,3,3\]/);
});

test('conv2d with no output channels gives an empty output with every algorithm (auto had aborted the process)', async () => {
  const x = t(randn(5 * 5 * 16, 3), [1, 5, 5, 16]), w = t(new Float32Array(0), [0, 3, 3, 16]);
  for (const algo of ['auto', 'gemm', 'winograd4'] as const) {
    const y = conv2d(x, w, null, { pad: 1, algo });
    assert.equal(y.shape, [1, 5, 5, 0]);
    assert.is((await y.floats()).length, 0);
  }
});

test('shape errors throw before anything is enqueued, naming op, argument and shapes', () => {
  const x = t(new Float32Array(2 * 5 * 5 * 4), [2, 5, 5, 4]);
  assert.throws(() => conv2d(x, t(new Float32Array(0), [4, 0, 3, 4])), /conv2d: w \[4,0,3,4\] \(OHWI\) has an empty 0x3 kernel/);
  assert.throws(() => conv2d(x, t(new Float32Array(8 * 9 * 3), [8, 3, 3, 3])), /conv2d: x \[2,5,5,4\] \(NHWC\) and w \[8,3,3,3\] \(OHWI\) differ in Cin/);
  assert.throws(() => conv2d(x, t(new Float32Array(8 * 36), [8, 3, 3, 4]), t(new Float32Array(7), [7])), /conv2d: bias \[7\] must be \[8\]/);
  assert.throws(() => conv2d(x, t(new Float32Array(8 * 36), [8, 3, 3, 4]), null, { stride: 0 }), /conv2d: stride must be an integer >= 1/);
  assert.throws(() => conv2d(x, t(new Float32Array(8 * 36), [8, 3, 3, 4]), null, { pad: 1, beta: 1 }), /conv2d: beta 1 .*pass out/);
  assert.throws(() => conv2d(x, t(new Float32Array(8 * 36), [8, 3, 3, 4]), null, { pad: 1, out: t(new Float32Array(8), [1, 1, 1, 8]) }),
    /conv2d: out \[1,1,1,8\] must be \[2,5,5,8\]/);
  assert.throws(() => conv2d(x, t(new Float32Array(8 * 7 * 7 * 4), [8, 7, 7, 4])), /conv2d: the 7x7 kernel of w \[8,7,7,4\] is larger than x/);
  assert.throws(() => conv2d(x, t(new Float32Array(8 * 36), [8, 3, 3, 4]), null, { stride: 2, algo: 'winograd' }),
    /conv2d: algo 'winograd' needs a 3x3 kernel and stride 1/);
  assert.throws(() => conv2d(x, t(new Float32Array(8 * 4), [8, 1, 1, 4]), null, { algo: 'winograd4' }),
    /conv2d: algo 'winograd4' needs a 3x3 kernel and stride 1, got w \[8,1,1,4\]/);
  const w = t(new Float32Array(8 * 36), [8, 3, 3, 4]);
  assert.throws(() => loraConv2d(x, w, null, t(new Float32Array(2 * 4), [2, 1, 1, 4]), t(new Float32Array(16), [8, 2]), 1),
    /lora_conv2d: down \[2,1,1,4\] must be \[r, 3, 3, 4\]/);
  assert.throws(() => loraConv2d(x, w, null, t(new Float32Array(2 * 36), [2, 3, 3, 4]), t(new Float32Array(16), [2, 8]), 1),
    /lora_conv2d: up \[2,8\] must be \[8, 2\]/);
});

test.run();
