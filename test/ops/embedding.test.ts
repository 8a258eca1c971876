// timestep_embedding (torch float32 numerics), embedding (row gather, id range errors), sum_to and mean.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { DEVICE, TOL, assertClose, randn, relErr, roundTo, t } from '../helpers/check';

const { timestepEmbedding, embedding, sumTo, mean } = hs.ops;
const f = Math.fround;
const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/**
 * diffusers get_timestep_embedding as torch evaluates it in float32: every step rounded to f32 (the exponent,
 * the division, exp, t * freq, scale *), then sin/cos of that f32 argument in float64.
 */
function timestepRef(ts: ArrayLike<number>, dim: number, flip: boolean, shift: number, maxPeriod = 10000, scale = 1) {
  const half = Math.floor(dim / 2), y = new Float64Array(ts.length * dim);
  for (let b = 0; b < ts.length; b++)
    for (let j = 0; j < half; j++) {
      const e = f(f(f(-Math.log(maxPeriod)) * j) / f(half - shift));
      const arg = f(f(scale) * f(f(ts[b]) * f(Math.exp(e))));
      const [s, c] = [Math.sin(arg), Math.cos(arg)];
      y[b * dim + j] = flip ? c : s;
      y[b * dim + half + j] = flip ? s : c;
    }
  return y;
}

const TS = [0, 1, 999, 500.5, 0.25, 261];

for (const [dim, flip, shift, maxPeriod, scale] of [
  [320, true, 0, 10000, 1], [1280, true, 0, 10000, 1], [33, false, 1, 10000, 1], [8, true, 1, 1000, 2],
] as [number, boolean, number, number, number][])
  test(`timestepEmbedding dim ${dim} flip ${flip} shift ${shift} maxPeriod ${maxPeriod} scale ${scale}`, async () => {
    const y = timestepEmbedding(t(TS, [TS.length]), dim, { flipSinToCos: flip, freqShift: shift, maxPeriod, scale });
    assert.equal(y.shape, [TS.length, dim]);
    const out = await y.floats();
    const ref = timestepRef(TS, dim, flip, shift, maxPeriod, scale);
    assertClose(out, ref, TOL.f32, 'y');
    if (dim % 2) for (let b = 0; b < TS.length; b++) assert.is(out[b * dim + dim - 1], 0, 'odd dim pads with 0');
    // The layout is discriminated: the flipped order is far away.
    assert.ok(relErr(out, timestepRef(TS, dim, !flip, shift, maxPeriod, scale)) > 0.1);
  });

test('timestepEmbedding: options may be left out; maxPeriod must be finite and > 0', async () => {
  const out = await timestepEmbedding(t(TS, [TS.length]), 8).floats();
  assertClose(out, timestepRef(TS, 8, false, 0), TOL.f32, 'defaults (no flip, shift 0, maxPeriod 10000)');
  for (const maxPeriod of [Infinity, 0, -5, NaN])
    assert.throws(() => timestepEmbedding(t(TS, [TS.length]), 8, { maxPeriod }), /timestepEmbedding: maxPeriod must be a finite number > 0/);
});

test('timestepEmbedding: the float32 emulation matters at t ~ 1000 (a float64 reference is off by more)', async () => {
  const ts = [999, 987, 961];
  const out = await timestepEmbedding(t(ts, [3]), 320, { flipSinToCos: true, freqShift: 0 }).floats();
  const exact = new Float64Array(3 * 320);
  for (let b = 0; b < 3; b++)
    for (let j = 0; j < 160; j++) {
      const a = ts[b] * Math.exp((-Math.log(10000) * j) / 160);
      exact[b * 320 + j] = Math.cos(a);
      exact[b * 320 + 160 + j] = Math.sin(a);
    }
  const e32 = relErr(out, timestepRef(ts, 320, true, 0)), e64 = relErr(out, exact);
  assert.ok(e32 < 1e-6, `f32-emulating reference ${e32}`);
  assert.ok(e64 > 1e-6 && e64 > 20 * e32, `float64 reference ${e64} vs ${e32}`);
});

for (const dtype of ['f32', 'f16', 'bf16'] as const)
  for (const idType of ['i32', 'i64'] as const)
    test(`embedding ${dtype} table, ${idType} ids [2, 5]`, async () => {
      const V = 11, D = 6, table = randn(V * D, 3);
      const ids = [0, 10, 3, 3, 7, 1, 9, 2, 10, 5];
      const idT = hs.tensor(idType === 'i32' ? Int32Array.from(ids) : BigInt64Array.from(ids.map(BigInt)), [2, 5], { device: DEVICE });
      const y = embedding(idT, t(table, [V, D], dtype));
      assert.equal(y.shape, [2, 5, D]);
      assert.is(y.dtype, dtype);
      const tr = roundTo(dtype, table);
      assert.equal(Array.from(await y.floats()), ids.flatMap((id) => Array.from(tr.subarray(id * D, id * D + D))));
    });

test('embedding: an out-of-range id fails at the sync point, naming the id and the vocabulary size', async () => {
  const table = t(randn(4 * 3), [4, 3]);
  for (const [ids, bad] of [[[0, 4, 1], 4], [[-1, 0], -1]] as [number[], number][]) {
    try {
      // at the sync point; at the call itself under HYPERSD_SYNC=1 (bench/gpu-check.sh)
      await embedding(hs.tensor(Int32Array.from(ids), [ids.length], { device: DEVICE }), table).data();
      assert.unreachable('expected an error');
    } catch (e) {
      assert.match((e as Error).message, new RegExp(`id ${bad}\\b.*vocabulary of 4`));
    }
  }
  const ok = embedding(hs.tensor(Int32Array.from([3]), [1], { device: DEVICE }), table);
  assert.is((await ok.floats()).length, 3, 'the stream keeps working');
  assert.throws(() => embedding(t([1, 2], [2]), table), /embedding: ids must be i32 or i64, got f32/);
  assert.throws(() => embedding(hs.tensor(Int32Array.from([1]), [1], { device: DEVICE }), t([1, 2, 3], [3])), /embedding: table must have rank 2, got shape \[3\]/);
});

/** Float64 reference of sum_to: y[j] = scale * sum of x over the elements that broadcast onto j. */
function sumToRef(x: Float64Array, xs: number[], ys: number[], scale: number) {
  const y = new Float64Array(size(ys)), nd = xs.length, off = nd - ys.length;
  const c = new Array(nd).fill(0);
  for (let i = 0; i < x.length; i++) {
    let r = i;
    for (let d = nd - 1; d >= 0; d--) { c[d] = r % xs[d]; r = Math.floor(r / xs[d]); }
    let j = 0;
    for (let d = 0; d < ys.length; d++) j = j * ys[d] + (ys[d] === 1 ? 0 : c[d + off]);
    y[j] += x[i];
  }
  return y.map((v) => v * scale);
}

const reductions: [number[], number[]][] = [
  [[4, 9, 33], [33]], // bias gradient: kept inner dim
  [[4, 9, 33], [4, 9, 1]], // row sums: reduced inner dim
  [[4, 9, 33], [1]],
  [[4, 9, 33], []],
  [[4, 9, 33], [4, 1, 33]], // kept, reduced, kept
  [[3, 1, 5, 7], [3, 1, 1, 7]],
  [[5, 6], [5, 6]], // no reduction: a scaled copy
  [[2, 3, 4, 5], [3, 1, 5]],
  [[3000, 7], [7]], // a long reduction over many rows
];

for (const [xs, ys] of reductions)
  test(`sumTo [${xs}] -> [${ys}]`, async () => {
    const xv = randn(size(xs), 17);
    const y = sumTo(t(xv, xs), ys, 0.5);
    assert.equal(y.shape, ys);
    assertClose(await y.floats(), sumToRef(roundTo('f32', xv), xs, ys, 0.5), TOL.f32, 'y');
  });

test('sumTo in f16 / bf16 storage, and mean', async () => {
  for (const dtype of ['f16', 'bf16'] as const) {
    const xs = [6, 5, 8], xv = randn(240, 19);
    const y = await sumTo(t(xv, xs, dtype), [5, 1]).floats();
    assertClose(y, sumToRef(roundTo(dtype, xv), xs, [5, 1], 1), TOL[dtype], dtype);
  }
  const xs = [6, 5, 8], xv = randn(240, 20), xr = roundTo('f32', xv);
  const x = t(xv, xs);
  const all = mean(x);
  assert.equal(all.shape, []);
  assertClose(await all.floats(), [xr.reduce((a, b) => a + b, 0) / 240], TOL.f32, 'mean all');
  const m = mean(x, [0, -1]);
  assert.equal(m.shape, [5]);
  assertClose(await m.floats(), sumToRef(xr, xs, [1, 5, 1], 1 / 48), TOL.f32, 'mean over 0 and 2');
  assert.equal(mean(x, [1], true).shape, [6, 1, 8]);
});

test('sumTo / mean: argument errors', () => {
  const x = t(randn(24), [2, 3, 4]);
  assert.throws(() => sumTo(x, [3, 2]), /sumTo: cannot reduce x \[2,3,4\] to \[3,2\]/);
  assert.throws(() => sumTo(x, [1, 2, 3, 4]), /sumTo: cannot reduce x \[2,3,4\] to \[1,2,3,4\]/);
  assert.throws(() => mean(x, [3]), /mean: axis 3 is out of range for x \[2,3,4\]/);
  assert.throws(() => timestepEmbedding(t([1, 2], [1, 2]), 8, { flipSinToCos: true, freqShift: 0 }), /timestepEmbedding: t must have rank 1, got shape \[1,2\]/);
  assert.throws(() => timestepEmbedding(t([1], [1]), 8, { flipSinToCos: true, freqShift: 4 }), /dim\/2 - freqShift must not be 0/);
});

test.run();
