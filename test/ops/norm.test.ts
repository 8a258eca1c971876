// group_norm (NHWC [N, S, C], fused SiLU) and layer_norm against float64 references.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { DEVICE, TOL, assertClose, randn, relErr, roundTo, t } from '../helpers/check';
import { groupNormRef, layerNormRef } from '../helpers/refs';

const { groupNorm, layerNorm } = hs.ops;
const silu = (x: number) => x / (1 + Math.exp(-x));

const offset = (a: Float64Array, d: number) => a.map((v) => v + d);

for (const dtype of ['f32', 'f16', 'bf16'] as const)
  for (const act of [false, true]) {
    test(`groupNorm ${dtype} N=2 S=35 C=40 groups 8 silu=${act}`, async () => {
      const N = 2, S = 35, C = 40, G = 8, eps = 1e-5;
      const xv = offset(randn(N * S * C, 1, 2), 0.5), gv = randn(C, 2), bv = randn(C, 3);
      const y = groupNorm(t(xv, [N, S, C], dtype), t(gv, [C], dtype), t(bv, [C], dtype), { groups: G, eps, silu: act });
      assert.equal(y.shape, [N, S, C]);
      assert.is(y.dtype, dtype);
      const ref = groupNormRef(roundTo(dtype, xv), roundTo(dtype, gv), roundTo(dtype, bv), N, S, C, G, eps, act);
      assertClose(await y.floats(), ref, TOL[dtype], 'y');
    });
  }

// f32 with SiLU: a 4-channel tail past the 8-channel vectors and rows not a multiple of 4 (the four-row passes'
// edges), and an 18 MB tensor (the row-by-row passes for tensors beyond the cache).
for (const [what, N, S, C, G, seed, sd, mean] of [
  ['N=2 S=11 C=20 groups 5 (channel tail, rows not a multiple of 4)', 2, 11, 20, 5, 61, 1.3, 0.9],
  ['[1, 66000, 68] groups 4 (18 MB: the row-by-row passes)', 1, 66000, 68, 4, 64, 0.8, -0.4],
] as [string, number, number, number, number, number, number, number][])
  test(`groupNorm f32 silu ${what}`, async () => {
    const eps = 1e-5;
    const xv = offset(randn(N * S * C, seed, sd), mean), gv = randn(C, seed + 1), bv = randn(C, seed + 2);
    const y = groupNorm(t(xv, [N, S, C]), t(gv, [C]), t(bv, [C]), { groups: G, eps, silu: true });
    const ref = groupNormRef(roundTo('f32', xv), roundTo('f32', gv), roundTo('f32', bv), N, S, C, G, eps, true);
    assertClose(await y.floats(), ref, TOL.f32, 'y');
  });

test('groupNorm f16 N=2 S=13 C=2576 groups 8 (channel windows of 2048, groups across 8-channel vectors)', async () => {
  const N = 2, S = 13, C = 2576, G = 8, eps = 1e-5;
  const xv = offset(randn(N * S * C, 51, 1.5), -0.7), gv = randn(C, 52), bv = randn(C, 53);
  const y = groupNorm(t(xv, [N, S, C], 'f16'), t(gv, [C], 'f16'), t(bv, [C], 'f16'), { groups: G, eps, silu: true });
  const ref = groupNormRef(roundTo('f16', xv), roundTo('f16', gv), roundTo('f16', bv), N, S, C, G, eps, true);
  assertClose(await y.floats(), ref, TOL.f16, 'y');
});

// The UNet's channel count over many rows (on CUDA: four rows in flight a thread plus a row tail in the
// statistics pass, two vectors a thread in the apply pass), and more channels than one 2048-channel statistics
// window (CUDA's expanded-coefficient apply path above 4096 channels).
for (const [dtype, N, S, C, G, seed] of [
  ['bf16', 2, 1001, 320, 32, 71],
  ['f32', 1, 3, 4104, 6, 74],
] as ['f32' | 'bf16', number, number, number, number, number][])
  test(`groupNorm ${dtype} silu N=${N} S=${S} C=${C} groups ${G}`, async () => {
    const eps = 1e-5;
    const xv = offset(randn(N * S * C, seed, 1.1), 0.3), gv = randn(C, seed + 1), bv = randn(C, seed + 2);
    const y = groupNorm(t(xv, [N, S, C], dtype), t(gv, [C], dtype), t(bv, [C], dtype), { groups: G, eps, silu: true });
    const ref = groupNormRef(roundTo(dtype, xv), roundTo(dtype, gv), roundTo(dtype, bv), N, S, C, G, eps, true);
    assertClose(await y.floats(), ref, TOL[dtype], 'y');
  });

// The CPU's folded apply takes a chunk's rows of each image as one run, four vectors a step with each vector's
// channel coefficients (C a multiple of the lanes: 16 with AVX-512, 8 with AVX2; 40 channels take the slices on
// AVX-512), chunks straddling images (odd S), with and without SiLU, and given the statistics.
for (const [N, S, C, G] of [[3, 333, 80, 8], [2, 257, 40, 4], [1, 1031, 96, 32]])
  for (const silu of [false, true])
    test(`groupNorm f32 N=${N} S=${S} C=${C} groups ${G}${silu ? ' silu' : ''}: whole rows as one run, against float64`, async () => {
      const eps = 1e-5;
      const xv = offset(randn(N * S * C, 91 + C, 1.3), -0.2), gv = randn(C, 92), bv = randn(C, 93);
      const x = t(xv, [N, S, C]), g = t(gv, [C]), b = t(bv, [C]);
      const ref = groupNormRef(roundTo('f32', xv), roundTo('f32', gv), roundTo('f32', bv), N, S, C, G, eps, silu);
      assertClose(await groupNorm(x, g, b, { groups: G, eps, silu }).floats(), ref, TOL.f32, 'y');
      if (DEVICE === 'cpu') {
        const st = hs.ops.channelStats(x);
        assertClose(await groupNorm(x, g, b, { groups: G, eps, silu, stats: st }).floats(), ref, TOL.f32, 'y given stats');
      }
    });

// Channels of one repeated value (std 0, so a = gamma / sqrt(eps) is large) with small gamma and beta: the
// outputs are beta, and the CPU's folded apply (x a + (beta - K a)) would cancel ~1.1 into 3.5e-4 (the chanstats
// fuzzer, seed 26: 2.4e-5 off); the shifted form keeps them exact.
test('groupNorm f32 constant channels with small gamma and beta: the outputs are beta', async () => {
  const [N, S, C, G, eps] = [2, 40, 16, 16, 1e-5];
  const xv = new Float64Array(N * S * C), gv = new Float64Array(C), bv = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    gv[c] = 0.0247 * (1 + c / 32);
    bv[c] = -3.4666e-4 * (1 + c / 16);
    for (let n = 0; n < N; n++) for (let i = 0; i < S; i++) xv[(n * S + i) * C + c] = -0.14325351 + 0.003 * c + 0.01 * n;
  }
  const x = t(xv, [N, S, C]), g = t(gv, [C]), b = t(bv, [C]);
  const ref = groupNormRef(roundTo('f32', xv), roundTo('f32', gv), roundTo('f32', bv), N, S, C, G, eps, false);
  for (const silu of [false, true]) {
    const r = silu ? groupNormRef(roundTo('f32', xv), roundTo('f32', gv), roundTo('f32', bv), N, S, C, G, eps, true) : ref;
    assertClose(await groupNorm(x, g, b, { groups: G, eps, silu }).floats(), r, TOL.f32, `y${silu ? ' silu' : ''}`);
    if (DEVICE === 'cpu')
      assertClose(await groupNorm(x, g, b, { groups: G, eps, silu, stats: hs.ops.channelStats(x) }).floats(), r, TOL.f32, `y given stats${silu ? ' silu' : ''}`);
  }
});

test('groupNorm: a NaN makes its own group of its own image NaN and nothing else (both forms, with and without the statistics given)', async () => {
  // The NaN's group takes the shifted form's path (its coefficients are not finite); the other groups of the same
  // call must still be right, whichever form the kernel picks for them.
  const [N, S, C, G, eps] = [2, 70, 48, 6, 1e-5], cg = C / G;
  const xv = randn(N * S * C, 31, 1.5), gv = randn(C, 32), bv = randn(C, 33);
  const bad = (1 * S + 17) * C + 2 * cg + 3;  // image 1, group 2
  xv[bad] = NaN;
  const clean = Float64Array.from(xv, (v) => (Number.isNaN(v) ? 0 : v));
  for (const silu of [false, true]) {
    const ref = groupNormRef(roundTo('f32', clean), roundTo('f32', gv), roundTo('f32', bv), N, S, C, G, eps, silu);
    const x = t(xv, [N, S, C]), g = t(gv, [C]), b = t(bv, [C]);
    const runs: [string, hs.Tensor][] = [['', groupNorm(x, g, b, { groups: G, eps, silu })]];
    if (DEVICE === 'cpu') runs.push([' given stats', groupNorm(x, g, b, { groups: G, eps, silu, stats: hs.ops.channelStats(x) })]);
    for (const [what, y] of runs) {
      const out = await y.floats();
      const okOut: number[] = [], okRef: number[] = [];
      for (let n = 0; n < N; n++)
        for (let s = 0; s < S; s++)
          for (let c = 0; c < C; c++) {
            const i = (n * S + s) * C + c;
            if (n === 1 && Math.floor(c / cg) === 2) assert.ok(Number.isNaN(out[i]), `${what} silu ${silu}: ${out[i]} at ${i}, in the NaN's group`);
            else okOut.push(out[i]), okRef.push(ref[i]);
          }
      assertClose(Float32Array.from(okOut), Float64Array.from(okRef), TOL.f32, `other groups${what} silu ${silu}`);
    }
  }
});

// Many groups: on CUDA the partials are summed in stripes up to 256 groups (160), and in one thread a group beyond
// (320 and 512 with 8-channel vectors, 258 over the scalar kernels: until session 28 groups 256 and up kept no
// statistics there), 4096 (CUDA's most: the statistics kernel's shared memory past the default 48 KB); 3 groups
// (stripes that leave threads over); each result twice: the same bits (the partials are summed in a fixed order
// whichever block finishes last).
for (const [N, S, C, G] of [[3, 700, 320, 160], [2, 300, 640, 320], [1, 200, 512, 512], [2, 100, 516, 258], [1, 4, 8192, 4096], [2, 900, 48, 3]])
  test(`groupNorm f32 N=${N} S=${S} C=${C} groups ${G}: against float64, deterministic`, async () => {
    const eps = 1e-5;
    const xv = offset(randn(N * S * C, 81, 0.8), 0.2), gv = randn(C, 82), bv = randn(C, 83);
    const x = t(xv, [N, S, C]), g = t(gv, [C]), b = t(bv, [C]);
    const y1 = await groupNorm(x, g, b, { groups: G, eps }).floats();
    const y2 = await groupNorm(x, g, b, { groups: G, eps }).floats();
    assertClose(y1, groupNormRef(roundTo('f32', xv), roundTo('f32', gv), roundTo('f32', bv), N, S, C, G, eps, false), TOL.f32, 'y');
    assert.equal(Array.from(y2), Array.from(y1), 'two calls, same bits');
  });

test('groupNorm overwrite: the same values as a new output; on the CPU written over x\'s storage', async () => {
  const [N, S, C, G] = [2, 300, 96, 8];
  const xv = randn(N * S * C, 41, 2), gv = randn(C, 42), bv = randn(C, 43);
  for (const silu of [false, true]) {
    const want = await groupNorm(t(xv, [N, S, C]), t(gv, [C]), t(bv, [C]), { groups: G, eps: 1e-6, silu }).floats();
    const x = t(xv, [N, S, C]);
    const y = groupNorm(x, t(gv, [C]), t(bv, [C]), { groups: G, eps: 1e-6, silu, overwrite: true });
    assert.equal(Array.from(await y.floats()), Array.from(want), `silu ${silu}`);
    if (DEVICE === 'cpu') assert.ok(y === x, 'the CPU writes over x');
    else assert.ok(y !== x, 'a new output on the GPU');
  }
});

test('groupNorm: an outlier as a group\'s first element or a block\'s first row does not cost the variance its digits', async () => {
  // Shifted sums around a pivot far from the mean cancel: with the group's first element as the pivot, x[0] =
  // 1000 (std 1) had given rstd off by 1.4e-3. On the CPU the blocks' first rows are the pivots (rows 0, 256,
  // ... here), re-summed around their mean when off; CUDA takes the median of three samples per group.
  const N = 1, S = 4096, C = 32, eps = 1e-5;
  for (const G of [1, 4])
    for (const [at, v] of [[0, 1000], [256 * C + 9, -400]]) {
      const xv = randn(N * S * C, 91 + G, 1);
      xv[at] = v;
      const gv = randn(C, 93), bv = randn(C, 94);
      const y = await groupNorm(t(xv, [N, S, C]), t(gv, [C]), t(bv, [C]), { groups: G, eps, silu: true }).floats();
      assertClose(y, groupNormRef(roundTo('f32', xv), roundTo('f32', gv), roundTo('f32', bv), N, S, C, G, eps, true), TOL.f32,
        `groups ${G}, x[${at}] = ${v}`);
    }
});

test('groupNorm and layerNorm: constant input gives exactly beta', async () => {
  const C = 48, S = 37, gv = randn(C, 95), bv = randn(C, 96), beta = roundTo('f32', bv);
  for (const v of [-4.963835, 0.1, 1234.5]) {
    const x = t(new Float64Array(S * C).fill(v), [1, S, C]);
    const g = t(gv, [C]), b = t(bv, [C]);
    const gn = await groupNorm(x, g, b, { groups: 6, eps: 1e-6 }).floats();
    const ln = await layerNorm(x, g, b, 1e-6).floats();
    for (let i = 0; i < S * C; i++) {
      assert.is(gn[i], beta[i % C], `groupNorm of ${v} at ${i}`);
      assert.is(ln[i], beta[i % C], `layerNorm of ${v} at ${i}`);
    }
  }
  // Rows of 576 and 2048 (the AVX2 kernel's plain float sums had left the mean 3 ulps off: |y - beta| 1.4e-3).
  for (const C2 of [576, 2048]) {
    const x = t(new Float64Array(3 * C2).fill(-1.7123538), [3, C2]);
    const y = await layerNorm(x, t(new Float64Array(C2).fill(1), [C2]), t(new Float64Array(C2), [C2]), 1e-6).floats();
    assert.ok(y.every((z) => z === 0), `layerNorm of a constant row of ${C2}: max |y| ${Math.max(...Array.from(y, Math.abs))}`);
  }
});

test('groupNorm: large mean (no cancellation), S=1500 over many blocks', async () => {
  const N = 1, S = 1500, C = 24, G = 3, eps = 1e-6;
  // Around 300 with std 0.01, each group shifted by 0.05 more than the last.
  const xv = randn(N * S * C, 7, 0.01).map((v, i) => v + 300 + 0.05 * Math.floor((i % C) / (C / G)));
  const gv = randn(C, 8), bv = randn(C, 9);
  const y = await groupNorm(t(xv, [N, S, C]), t(gv, [C]), t(bv, [C]), { groups: G, eps }).floats();
  const ref = groupNormRef(roundTo('f32', xv), roundTo('f32', gv), roundTo('f32', bv), N, S, C, G, eps, false);
  assertClose(y, ref, TOL.f32, 'y');
  // The reference discriminates: normalising over the wrong groups is far off.
  const wrong = groupNormRef(roundTo('f32', xv), roundTo('f32', gv), roundTo('f32', bv), N, S, C, 1, eps, false);
  assert.ok(relErr(y, wrong) > 1e-2);
});

test('groupNorm + SiLU on a 134 MB activation (past twice the last-level cache: streaming stores) against float64', async () => {
  // [2, 131072, 128]: the VAE decoder's size class. On the CPU its output is written with streaming stores when
  // it is more than twice the last-level cache (32 MiB on the development and CI machines); every value is
  // checked against float64 statistics, and both images (their own statistics) are covered.
  const N = 2, S = 131072, C = 128, G = 32, cg = C / G, eps = 1e-5;
  const xs = new Float32Array(N * S * C);
  let st = 12345;
  for (let i = 0; i < xs.length; i++) {
    st = (Math.imul(st, 1664525) + 1013904223) >>> 0;
    xs[i] = ((st >>> 8) / 16777216 - 0.5) * 3 + ((i % C) % 7) * 0.1 + Math.floor(i / (S * C)) * 0.5;
  }
  const gv = randn(C, 91), bv = randn(C, 92);
  const gf = roundTo('f32', gv), bf = roundTo('f32', bv);
  const x = hs.tensor(xs, [N, S, C], { device: DEVICE });
  const y = await groupNorm(x, t(gv, [C]), t(bv, [C]), { groups: G, eps, silu: true }).floats();
  x.dispose();
  let err = 0, norm = 0;
  for (let n = 0; n < N; n++)
    for (let q = 0; q < G; q++) {
      let s1 = 0, s2 = 0;
      for (let s = 0; s < S; s++) for (let k = 0; k < cg; k++) s1 += xs[(n * S + s) * C + q * cg + k];
      const mean = s1 / (S * cg);
      for (let s = 0; s < S; s++) for (let k = 0; k < cg; k++) s2 += (xs[(n * S + s) * C + q * cg + k] - mean) ** 2;
      const rstd = 1 / Math.sqrt(s2 / (S * cg) + eps);
      for (let s = 0; s < S; s++)
        for (let k = 0; k < cg; k++) {
          const i = (n * S + s) * C + q * cg + k, c = q * cg + k;
          const r = silu((xs[i] - mean) * rstd * gf[c] + bf[c]);
          err += (y[i] - r) ** 2;
          norm += r * r;
        }
    }
  const e = Math.sqrt(err / norm);
  assert.ok(e <= TOL.f32, `relative error ${e}`);
});

// Element by element, not by the norm of the error: the CPU's folded apply (group means within a few std of 0)
// takes SiLU from t = -(x a + b0) log2(e) alone (one FMA from x, a polynomial with log2(e) folded into its
// coefficients, one division): each value within 4e-7 of the size of its terms (|x a| + |b| + |mean a|, a = rstd
// gamma; measured 1.6-2.1e-7, the form before it 1.8-2.2e-7). A coefficient off by 1e-5 gives 8.8e-7 and passes
// the norm-wise checks above.
if (DEVICE === 'cpu')
  test('groupNorm + SiLU: every value within 4e-7 of the size of its terms (with and without the statistics given)', async () => {
    const S = 1024, C = 64, G = 8, cg = C / G, eps = 1e-5;
    const xs = new Float32Array(S * C), gv = new Float32Array(C), bv = new Float32Array(C);
    let st = 7;
    const rnd = () => ((st = (Math.imul(st, 1664525) + 1013904223) >>> 0) >>> 8) / 16777216 - 0.5;
    for (let i = 0; i < xs.length; i++) xs[i] = rnd() * 6 + 0.3;
    for (let c = 0; c < C; c++) (gv[c] = rnd() * 6), (bv[c] = rnd() * 4);
    for (const given of [false, true]) {
      const x = hs.tensor(xs, [1, S, C]);
      const opts = { groups: G, eps, silu: true, ...(given ? { stats: hs.ops.channelStats(x) } : {}) };
      const y = await groupNorm(x, hs.tensor(gv, [C]), hs.tensor(bv, [C]), opts).floats();
      let worst = 0, at = '';
      for (let q = 0; q < G; q++) {
        let s1 = 0, s2 = 0;
        for (let s = 0; s < S; s++) for (let k = 0; k < cg; k++) s1 += xs[s * C + q * cg + k];
        const mean = s1 / (S * cg);
        for (let s = 0; s < S; s++) for (let k = 0; k < cg; k++) s2 += (xs[s * C + q * cg + k] - mean) ** 2;
        const rstd = 1 / Math.sqrt(s2 / (S * cg) + eps);
        for (let s = 0; s < S; s++)
          for (let k = 0; k < cg; k++) {
            const i = s * C + q * cg + k, a = rstd * gv[q * cg + k], b = bv[q * cg + k];
            const e = Math.abs(y[i] - silu((xs[i] - mean) * a + b)) / (Math.abs(xs[i] * a) + Math.abs(b) + Math.abs(mean * a));
            if (e > worst) (worst = e), (at = `value ${i}: ${y[i]}, float64 ${silu((xs[i] - mean) * a + b)}`);
          }
      }
      assert.ok(worst <= 4e-7, `statistics given ${given}: ${worst} at ${at}`);
    }
  });

test('groupNorm: eps matters and the default is 1e-5', async () => {
  const N = 1, S = 5, C = 4, G = 2;
  const xv = randn(N * S * C, 4, 1e-3), gv = new Float64Array(C).fill(1), bv = new Float64Array(C);
  const x = t(xv, [N, S, C]), g = t(gv, [C]), b = t(bv, [C]);
  const y = await groupNorm(x, g, b, { groups: G }).floats();
  assertClose(y, groupNormRef(roundTo('f32', xv), gv, bv, N, S, C, G, 1e-5, false), TOL.f32, 'default eps');
  assert.ok(relErr(y, groupNormRef(roundTo('f32', xv), gv, bv, N, S, C, G, 1e-3, false)) > 1e-2);
});

test('layerNorm: eps matters and the default is 1e-5 (rows of 45 and of 320: the 16-lane blocks of four rows)', async () => {
  // Rows with a variance near eps: dropping eps, or using another, moves the result by far more than f32's tolerance.
  for (const [R, C] of [[3, 45], [9, 320]]) {
    const xv = randn(R * C, 14, 3e-3), gv = new Float64Array(C).fill(1), bv = new Float64Array(C);
    const x = t(xv, [R, C]), g = t(gv, [C]), b = t(bv, [C]);
    const y = await layerNorm(x, g, b).floats();
    assertClose(y, layerNormRef(roundTo('f32', xv), gv, bv, C, 1e-5), TOL.f32, `default eps, [${R}, ${C}]`);
    assert.ok(relErr(y, layerNormRef(roundTo('f32', xv), gv, bv, C, 0)) > 1e-2, 'eps applied');
    assertClose(await layerNorm(x, g, b, 1e-3).floats(), layerNormRef(roundTo('f32', xv), gv, bv, C, 1e-3), TOL.f32, 'eps 1e-3');
  }
});

for (const dtype of ['f32', 'f16', 'bf16'] as const)
  test(`layerNorm ${dtype} [3, 7, 45]`, async () => {
    const C = 45, xv = offset(randn(3 * 7 * C, 11, 3), 2), gv = randn(C, 12), bv = randn(C, 13);
    const y = layerNorm(t(xv, [3, 7, C], dtype), t(gv, [C], dtype), t(bv, [C], dtype), 1e-5);
    assert.equal(y.shape, [3, 7, C]);
    assertClose(await y.floats(), layerNormRef(roundTo(dtype, xv), roundTo(dtype, gv), roundTo(dtype, bv), C, 1e-5), TOL[dtype], 'y');
  });

// Rows of whole 8-channel vectors: on CUDA up to 2048 channels stay in registers (1288: lanes with 6 and with
// 5 vectors; 2048: 8 each), 2056 takes the kernel that reads the row three times.
for (const [dtype, C] of [['bf16', 1288], ['f32', 2048], ['f16', 2056]] as ['f32' | 'f16' | 'bf16', number][])
  test(`layerNorm ${dtype} [9, ${C}]`, async () => {
    const R = 9, xv = offset(randn(R * C, C, 1.7), -1.2), gv = randn(C, C + 1), bv = randn(C, C + 2);
    const y = layerNorm(t(xv, [R, C], dtype), t(gv, [C], dtype), t(bv, [C], dtype), 1e-5);
    assertClose(await y.floats(), layerNormRef(roundTo(dtype, xv), roundTo(dtype, gv), roundTo(dtype, bv), C, 1e-5), TOL[dtype], 'y');
  });

test('layerNorm: f16 weights on an f32 x, rows of 768 with a large mean', async () => {
  const C = 768, xv = offset(randn(5 * C, 21), 100), gv = randn(C, 22), bv = randn(C, 23);
  const y = layerNorm(t(xv, [5, C]), t(gv, [C], 'f16'), t(bv, [C], 'f16'));
  assert.is(y.dtype, 'f32');
  assertClose(await y.floats(), layerNormRef(roundTo('f32', xv), roundTo('f16', gv), roundTo('f16', bv), C, 1e-5), 2e-5, 'y');
});

test('layerNorm: rows with a mean 1e3 times their std and outliers among their first values', async () => {
  // The AVX-512 kernel sums x - k in one pass, k the mean of the row's first 16 values: the variance must not
  // cancel away when k is off by outliers (30 to 180 std) or the mean dwarfs the spread (k = 0 would lose it all).
  const R = 6, C = 320, xv = offset(randn(R * C, 41, 0.1), 100), gv = randn(C, 42), bv = randn(C, 43);
  for (let r = 0; r < R; r++) for (let c = 0; c < 1 + r; c++) xv[r * C + c * 2] += (c % 2 ? -3 : 3) * (r + 1);
  const y = layerNorm(t(xv, [R, C]), t(gv, [C]), t(bv, [C]), 1e-5);
  assertClose(await y.floats(), layerNormRef(roundTo('f32', xv), gv, bv, C, 1e-5), TOL.f32, 'y');
});

// On the CPU x - mean is formed as (x - K) - (mean - K), K a value of the row, so a mean far above the std
// costs nothing; CUDA's layer norm centres on the mean rounded to float (as PyTorch's does), off by
// ulp(mean) / std: 3e-3 here, so this case is the CPU's.
if (DEVICE === 'cpu')
  test('layerNorm: a mean 1e5 times the std (the mean rounded to float is off by up to 3e-3 std)', async () => {
    const R = 5, C = 77, xv = offset(randn(R * C, 97, 0.01), 1000), gv = randn(C, 98), bv = randn(C, 99);
    const y = layerNorm(t(xv, [R, C]), t(gv, [C]), t(bv, [C]), 0);
    assertClose(await y.floats(), layerNormRef(roundTo('f32', xv), gv, bv, C, 0), TOL.f32, 'y');
  });

test('layerNorm: a row gives the same bits alone as among others (rows are normalised four at a time)', async () => {
  // Rows of 332 channels (20 full vectors for the paired loop, one more vector, a scalar tail of 4) with different
  // offsets. The kernels take blocks of four rows (the AVX-512 one four rows Q = rows / 4 apart, the sums of one
  // block and the output of the block two before it in one sweep) and finish with the last rows % 4: 5 rows is
  // one block and a row alone, 8 two blocks, 15 three and three rows, 70 seventeen and two (and on two threads
  // two chunks). Each row must come out exactly as when it is normalised on its own, and close to the float64
  // reference (a block written with another block's statistics is far from it: the offsets differ by 10 std).
  const C = 332, gv = randn(C, 32), bv = randn(C, 33), g = t(gv, [C]), b = t(bv, [C]);
  for (const R of [5, 8, 15, 70]) {
    const xv = randn(R * C, 31 + R, 2);
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) xv[r * C + c] += 10 * r;
    const all = await layerNorm(t(xv, [R, C]), g, b).floats();
    assertClose(all, layerNormRef(roundTo('f32', xv), gv, bv, C, 1e-5), TOL.f32, `y, ${R} rows`);
    for (const r of new Set([0, 1, 3, 4, 7, 11, 12, R - 2, R - 1].filter((r) => r < R))) {
      const one = await layerNorm(t(xv.slice(r * C, (r + 1) * C), [1, C]), g, b).floats();
      const mine = all.slice(r * C, (r + 1) * C);
      let diff = 0;
      for (let c = 0; c < C; c++) if (one[c] !== mine[c]) diff++;
      assert.is(diff, 0, `${R} rows, row ${r}: ${diff} of ${C} values differ between the row alone and among the others`);
    }
  }
});

test('norms: argument errors name the op, the argument and the shapes', () => {
  const x = t(randn(2 * 5 * 12), [2, 5, 12]), g = t(randn(12), [12]), b = t(randn(12), [12]);
  assert.throws(() => groupNorm(x, g, b, { groups: 5 }), /groupNorm: groups must be a positive integer dividing the 12 channels of x \[2,5,12\], got 5/);
  assert.throws(() => groupNorm(x, t(randn(10), [10]), b, { groups: 4 }), /groupNorm: gamma \[10\] must be \[12\] for x \[2,5,12\]/);
  assert.throws(() => groupNorm(x.reshape([10, 12]), g, b, { groups: 4 }), /groupNorm: x must have rank 3, got shape \[10,12\]/);
  assert.throws(() => layerNorm(x, g, t(randn(11), [11])), /layerNorm: beta \[11\] must be \[12\] for x \[2,5,12\]/);
  assert.throws(() => layerNorm(x, g, b, -1), /layerNorm: eps must be/);
  assert.throws(() => groupNorm(hs.tensor(new Int32Array(12), [1, 1, 12], { device: DEVICE }), g, b, { groups: 4 }), /groupNorm: x must be a float tensor, got i32/);
});

test.run();
