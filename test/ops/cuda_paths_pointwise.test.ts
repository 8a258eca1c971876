// Cases for CUDA code paths that no other test compared with a reference (a branch-coverage review of the
// native/cuda norm, elementwise, shape, embedding, unary and optim code, session 28): group norm's scalar path
// (C % 8 != 0) in f16 / bf16, 1280 channels, many rows a thread, more than 32768 images (sliced), its backward
// with several rows per chunk, layer norm's backward on rows longer than a warp and on many rows, a per-row a
// in broadcasting sub / div, sum_to over outer and inner dims, embedding with D = 8 (f32) and 16 (f16) and i32 /
// i64 ids, upsample_nearest2x's vector and element paths, exp / log / sqrt in every float dtype, adamw with
// f16 and f32 model copies, i64 concat / slice and softmax's backward past 32 columns. Every case against float64
// or exact values; they pass on the CPU too.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { grad } from '../../lib/autograd';
import { DEVICE, TOL, assertClose, randn, rejects, relErr, roundTo, t } from '../helpers/check';
import { adamwRef, groupNormRef, layerNormRef, type Hyper } from '../helpers/refs';
import { broadcast2, checkGrad, frozen, prod, rnd } from '../autograd/fd';

const { groupNorm, layerNorm, sub, div, sumTo, embedding, upsampleNearest2x, concat, slice, softmax } = hs.ops;
const offset = (a: Float64Array, d: number) => a.map((v) => v + d);
const HALF = ['f16', 'bf16'] as const;
const FLOATS = ['f32', 'f16', 'bf16'] as const;

/** group norm of x [N, S, C] in dtype (x, gamma, beta all dtype) against groupNormRef on the stored values. */
async function gnCase(dtype: 'f32' | 'f16' | 'bf16', N: number, S: number, C: number, G: number, silu: boolean, seed: number, what: string) {
  const eps = 1e-5;
  const xv = offset(randn(N * S * C, seed, 1.3), 0.4), gv = randn(C, seed + 1), bv = randn(C, seed + 2);
  const y = groupNorm(t(xv, [N, S, C], dtype), t(gv, [C], dtype), t(bv, [C], dtype), { groups: G, eps, silu });
  assert.equal(y.shape, [N, S, C]);
  assert.is(y.dtype, dtype);
  const ref = groupNormRef(roundTo(dtype, xv), roundTo(dtype, gv), roundTo(dtype, bv), N, S, C, G, eps, silu);
  assertClose(await y.floats(), ref, TOL[dtype], what);
  y.dispose();
}

// 1. The scalar statistics / apply kernels (C % 8 != 0: 36 channels, 6 a group) in 16 bits, without and with SiLU.
for (const dtype of HALF)
  test(`groupNorm ${dtype} [2, 35, 36] groups 6 (C % 8 != 0: the scalar path), silu off and on`, async () => {
    for (const silu of [false, true]) await gnCase(dtype, 2, 35, 36, 6, silu, 11, `${dtype} silu ${silu}`);
  });

// 2. The UNet's 1280 channels (several 256-channel windows) with SiLU, f16 and f32.
test('groupNorm f16 and f32 [2, 64, 1280] groups 32 silu', async () => {
  for (const dtype of ['f16', 'f32'] as const) await gnCase(dtype, 2, 64, 1280, 32, true, 21, dtype);
});

// 3. The backward's reduction with several rows per chunk (CUDA cuts S into ~4 chunks a multiprocessor: 528 on
//    132 SMs, so S = 2400 gives 5 rows a chunk and S = 600 gives 2). x frozen: gamma and beta only (finite
//    differences over 128 parameters); x not frozen: dx too (S = 600, above the 528 chunks, so each chunk still
//    has two rows).
test('groupNorm backward, several rows per chunk: x frozen [1, 2400, 64] groups 8 silu; x [1, 600, 8] groups 2', async () => {
  const eps = 1e-5;
  {
    const [N, S, C, G] = [1, 2400, 64, 8];
    await checkGrad('group_norm frozen x [1, 2400, 64]', [frozen(rnd([N, S, C], 31)), rnd([C], 32), rnd([C], 33)],
      ([x, g, b]) => groupNorm(x, g, b, { groups: G, eps, silu: true }), ([x, g, b]) => groupNormRef(x, g, b, N, S, C, G, eps, true));
  }
  {
    const [N, S, C, G] = [1, 600, 8, 2];
    await checkGrad('group_norm [1, 600, 8]', [rnd([N, S, C], 34), rnd([C], 35), rnd([C], 36)],
      ([x, g, b]) => groupNorm(x, g, b, { groups: G, eps }), ([x, g, b]) => groupNormRef(x, g, b, N, S, C, G, eps, false));
  }
});

// 4. layer norm backward: rows of 70 (longer than a warp: each lane takes several columns) with dx; 3000 rows of 64
//    with x frozen (dgamma / dbeta summed over many rows).
test('layerNorm backward: [20, 70] with dx; [3000, 64] x frozen (dgamma, dbeta)', async () => {
  await checkGrad('layer_norm [20, 70]', [rnd([20, 70], 41), rnd([70], 42), rnd([70], 43)],
    ([x, g, b]) => layerNorm(x, g, b, 1e-5), ([x, g, b]) => layerNormRef(x, g, b, 70, 1e-5));
  await checkGrad('layer_norm frozen x [3000, 64]', [frozen(rnd([3000, 64], 44)), rnd([64], 45), rnd([64], 46)],
    ([x, g, b]) => layerNorm(x, g, b, 1e-5), ([x, g, b]) => layerNormRef(x, g, b, 64, 1e-5));
});

// 5. Broadcasting with one value per row for a (the [R, C] kernel with a the column): sub and div (not commutative,
//    so a swapped operand fails), f32 and f16.
test('sub / div with a per-row a: [5, 1] with [5, 16], [7, 1] with [1, 24], f32 and f16', async () => {
  for (const dtype of ['f32', 'f16'] as const)
    for (const [as, bs, ys] of [[[5, 1], [5, 16], [5, 16]], [[7, 1], [1, 24], [7, 24]]] as number[][][])
      for (const [name, fn, f] of [['sub', sub, (x: number, y: number) => x - y], ['div', div, (x: number, y: number) => x / y]] as const) {
        const av = randn(prod(as), 51, 2), bv = randn(prod(bs), 52).map((v) => Math.sign(v) * (0.5 + Math.abs(v)));
        const y = fn(t(av, as, dtype), t(bv, bs, dtype));
        assert.equal(y.shape, ys);
        assert.is(y.dtype, dtype);
        const ref = broadcast2(roundTo(dtype, av), as, roundTo(dtype, bv), bs, f);
        assertClose(await y.floats(), ref, TOL[dtype], `${dtype} ${name} [${as}] with [${bs}]`);
      }
});

// 6. sum_to reducing an outer and an inner dim at once, keeping the middle one.
test('sumTo [40, 3, 50] -> [3, 1]', async () => {
  const xs = [40, 3, 50], xv = randn(prod(xs), 61), xr = roundTo('f32', xv);
  const ref = new Float64Array(3);
  for (let i = 0; i < 40; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 50; k++) ref[j] += xr[(i * 3 + j) * 50 + k];
  const y = sumTo(t(xv, xs), [3, 1]);
  assert.equal(y.shape, [3, 1]);
  assertClose(await y.floats(), ref, TOL.f32, 'y');
  const y2 = sumTo(t(xv, xs), [3, 1], -0.25);
  assertClose(await y2.floats(), ref.map((v) => -0.25 * v), TOL.f32, 'y scaled');
});

// 7. embedding rows of 8 f32 and 16 f16 (one 16-byte vector, two), i32 and i64 ids: exact rows; then an id past the
//    vocabulary among valid ones fails the op with an Error naming it.
for (const [dtype, D] of [['f32', 8], ['f16', 16]] as const)
  for (const idType of ['i32', 'i64'] as const)
    test(`embedding ${dtype} D = ${D}, ${idType} ids; an out-of-range id is an Error naming it`, async () => {
      const V = 13, table = randn(V * D, 71 + D), tr = roundTo(dtype, table);
      const ids = [12, 0, 5, 5, 7, 1, 11, 2, 9, 3, 12, 4];
      const mk = (v: number[]) => hs.tensor(idType === 'i32' ? Int32Array.from(v) : BigInt64Array.from(v.map(BigInt)), [v.length / 3, 3], { device: DEVICE });
      const tab = t(table, [V, D], dtype);
      const y = embedding(mk(ids), tab);
      assert.equal(y.shape, [4, 3, D]);
      assert.is(y.dtype, dtype);
      assert.equal(Array.from(await y.floats()), ids.flatMap((id) => Array.from(tr.subarray(id * D, id * D + D))));
      // at the sync point; at the call itself under HYPERSD_SYNC=1
      await rejects(() => embedding(mk([3, 0, 1, 2, 13, 4]), tab).data(), /id 13\b.*vocabulary of 13/, 'an id past the vocabulary');
      assert.equal(Array.from(await embedding(mk([4, 4, 0]), tab).floats()), [4, 4, 0].flatMap((id) => Array.from(tr.subarray(id * D, id * D + D))),
        'the stream keeps working');
    });

// 8. upsample_nearest2x: f32 with C = 4 (not 8 channels: one element a thread) and f16 / bf16 with C = 8 (one
//    16-byte vector a pixel), exact.
for (const [dtype, C] of [['f32', 4], ['f16', 8], ['bf16', 8]] as const)
  test(`upsampleNearest2x ${dtype} [2, 3, 5, ${C}] exact`, async () => {
    const [N, H, W] = [2, 3, 5], xv = randn(N * H * W * C, 81), xr = roundTo(dtype, xv);
    const y = upsampleNearest2x(t(xv, [N, H, W, C], dtype));
    assert.equal(y.shape, [N, 2 * H, 2 * W, C]);
    const out = await y.floats(), ref = new Float64Array(out.length);
    for (let n = 0; n < N; n++) for (let h = 0; h < 2 * H; h++) for (let w = 0; w < 2 * W; w++) for (let c = 0; c < C; c++)
      ref[((n * 2 * H + h) * 2 * W + w) * C + c] = xr[((n * H + (h >> 1)) * W + (w >> 1)) * C + c];
    assert.equal(Array.from(out), Array.from(ref));
  });

// 9. exp, log, sqrt in every float dtype on [7, 11, 13] with negative inputs (log / sqrt NaN there), x = 0
//    (log -inf, sqrt 0); finite values by relative error, NaN and infinities by position; then the gradient of log.
for (const dtype of FLOATS)
  test(`exp / log / sqrt ${dtype} [7, 11, 13]: negatives give NaN, log(0) = -inf; log's gradient is 1 / x`, async () => {
    const shape = [7, 11, 13], n = prod(shape);
    const xv = randn(n, 91, 1.5);
    xv[0] = 0;
    xv[500] = 0;
    const xr = roundTo(dtype, xv), x = t(xv, shape, dtype);
    for (const [name, op, f] of [['exp', hs.ops.exp, Math.exp], ['log', hs.ops.log, Math.log], ['sqrt', hs.ops.sqrt, Math.sqrt]] as const) {
      const y = op(x);
      assert.equal(y.shape, shape);
      assert.is(y.dtype, dtype);
      const out = await y.floats(), ref = xr.map(f);
      const okOut: number[] = [], okRef: number[] = [];
      let nans = 0;
      for (let i = 0; i < n; i++) {
        if (Number.isNaN(ref[i])) {
          nans++;
          if (!Number.isNaN(out[i])) assert.unreachable(`${name}(${xr[i]}) = ${out[i]}, want NaN [${i}]`);
        } else if (!Number.isFinite(ref[i])) {
          if (out[i] !== ref[i]) assert.unreachable(`${name}(${xr[i]}) = ${out[i]}, want ${ref[i]} [${i}]`);
        } else okOut.push(out[i]), okRef.push(ref[i]);
      }
      if (name !== 'exp') assert.ok(nans > 300, `${name}: ${nans} negative inputs`);
      if (name === 'log') assert.is(out[0], -Infinity);
      if (name === 'sqrt') assert.ok(Object.is(out[500], 0), 'sqrt(0) = 0');
      assertClose(Float64Array.from(okOut), Float64Array.from(okRef), TOL[dtype], `${dtype} ${name}`);
      y.dispose();
    }
    // d/dx sum(r log x) = r / x (f32 gradients), on positive inputs
    const pv = xv.map((v) => 0.2 + Math.abs(v)), pr = roundTo(dtype, pv), r = randn(n, 92);
    const p = t(pv, shape, dtype), dLoss = t(r, shape);
    const { loss, grads } = grad(() => hs.ops.log(p), [p], { dLoss });
    const g = grads.get(p)!;
    assert.equal(g.shape, shape);
    assertClose(await loss.floats(), pr.map(Math.log), TOL[dtype], `${dtype} log forward under grad`);
    assertClose(await g.floats(), pr.map((v, i) => roundTo('f32', [r[i]])[0] / v), TOL.f32, `${dtype} d log (f32 gradient of the stored x)`);
    for (const q of [loss, g, p, dLoss, x]) q.dispose();
  });

// 10. adamw writing the model's copy in f16 and in f32 (besides the bf16 that optim.test.ts covers), 3 steps,
//     outputs out of place (poisoned), against a float64 AdamW; an odd size for the vector tail.
for (const mdt of ['f16', 'f32'] as const)
  test(`adamw with an ${mdt} model copy: 3 steps against float64`, async () => {
    const n = 4099;
    const p0 = roundTo('f32', randn(n, 101));
    const pRef = Float64Array.from(p0), mRef = new Float64Array(n), vRef = new Float64Array(n);
    let p = t(p0, [n]), m = t(mRef, [n]), v = t(vRef, [n]);
    for (let step = 1; step <= 3; step++) {
      const h: Hyper = { lr: 2e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05, step, gradScale: step === 2 ? 0.5 : 1 };
      const g = roundTo('f32', randn(n, 110 + step, 0.3)), gT = t(g, [n]);
      const po = hs.empty([n], { device: DEVICE }), mo = hs.empty([n], { device: DEVICE }), vo = hs.empty([n], { device: DEVICE });
      const model = hs.empty([n], { dtype: mdt, device: DEVICE });
      hs.runOp('adamw', [p, gT, m, v], [po, mo, vo, model],
        { lr: h.lr, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weight_decay: h.weightDecay, step, grad_scale: h.gradScale });
      adamwRef(pRef, g, mRef, vRef, h);
      for (const q of [p, m, v, gT]) q.dispose();
      [p, m, v] = [po, mo, vo];
      assertClose(await model.floats(), roundTo(mdt, pRef), TOL[mdt], `model weight (${mdt}) step ${step}`);
      assertClose(await p.floats(), pRef, TOL.f32, `param step ${step}`);
      model.dispose();
    }
    assertClose(await m.floats(), mRef, TOL.f32, 'm');
    assertClose(await v.floats(), vRef, TOL.f32, 'v');
    for (const q of [p, m, v]) q.dispose();
  });

// 11. Many rows a thread in the statistics pass: f16 [1, 16384, 256] groups 32 with SiLU.
// (x on a grid of 1/128, exact in f16, so the 4M-value reference needs no rounding pass: roundTo's is ~0.4 s.)
test('groupNorm f16 [1, 16384, 256] groups 32 silu (many rows a thread)', async () => {
  const [N, S, C, G, eps] = [1, 16384, 256, 32, 1e-5];
  const xv = randn(N * S * C, 111, 1.3).map((v) => Math.round((v + 0.4) * 128) / 128), gv = roundTo('f16', randn(C, 112)), bv = roundTo('f16', randn(C, 113));
  assert.equal(Array.from(roundTo('f16', xv.subarray(0, 4096))), Array.from(xv.subarray(0, 4096)), 'the grid is exact in f16');
  const y = groupNorm(t(xv, [N, S, C], 'f16'), t(gv, [C], 'f16'), t(bv, [C], 'f16'), { groups: G, eps, silu: true });
  assert.is(y.dtype, 'f16');
  assertClose(await y.floats(), groupNormRef(xv, gv, bv, N, S, C, G, eps, true), TOL.f16, 'f16 [1, 16384, 256]');
  y.dispose();
});

// 12. More than 32768 images (CUDA runs the norm over slices of them), no statistics given.
test('groupNorm f32 [70000, 8, 8] groups 2 (more than 32768 images)', async () => {
  await gnCase('f32', 70000, 8, 8, 2, false, 121, 'f32 [70000, 8, 8]');
});

// 13. i64 (8-byte) data movement: concat along the last axis and strided slices, values past 2^32 and negative.
test('concat and slice of i64 tensors: exact values', async () => {
  const big = 2 ** 40;
  const av = [big + 1, -3, 7, -(big + 5)], bv = [2 ** 33, -1, 0, big * 3 + 9];
  const a = hs.tensor(BigInt64Array.from(av.map(BigInt)), [2, 2], { device: DEVICE });
  const b = hs.tensor(BigInt64Array.from(bv.map(BigInt)), [2, 2], { device: DEVICE });
  const y = concat([a, b], 1);
  assert.equal(y.shape, [2, 4]);
  assert.is(y.dtype, 'i64');
  const want = [av[0], av[1], bv[0], bv[1], av[2], av[3], bv[2], bv[3]];
  assert.equal(Array.from(await y.data() as BigInt64Array), want.map(BigInt));
  const s = slice(y, 1, 1, 2, 2);  // columns 1 and 3
  assert.equal(s.shape, [2, 2]);
  assert.is(s.dtype, 'i64');
  assert.equal(Array.from(await s.data() as BigInt64Array), [av[1], bv[1], av[3], bv[3]].map(BigInt));
  const r = slice(y, 0, 1, 1);  // the second row
  assert.equal(Array.from(await r.data() as BigInt64Array), want.slice(4).map(BigInt));
});

// 14. softmax's backward on rows of more than 32 columns (a warp's lanes take several), by finite differences.
test('softmax backward [3, 77] with a scale', async () => {
  const [R, C, sc] = [3, 77, 0.8];
  await checkGrad('softmax [3, 77]', [rnd([R, C], 141, 1.5)], ([x]) => softmax(x, sc), ([x]) => {
    const y = new Float64Array(x.length);
    for (let r = 0; r < R; r++) {
      let m = -Infinity, s = 0;
      for (let i = 0; i < C; i++) m = Math.max(m, sc * x[r * C + i]);
      for (let i = 0; i < C; i++) s += (y[r * C + i] = Math.exp(sc * x[r * C + i] - m));
      for (let i = 0; i < C; i++) y[r * C + i] /= s;
    }
    return y;
  });
});

// The references discriminate: group norm over the wrong groups, and a swapped sub, are far off.
test('the references discriminate', async () => {
  const [N, S, C] = [2, 35, 36], xv = randn(N * S * C, 151), gv = randn(C, 152), bv = randn(C, 153);
  const y = await groupNorm(t(xv, [N, S, C]), t(gv, [C]), t(bv, [C]), { groups: 6 }).floats();
  assert.ok(relErr(y, groupNormRef(roundTo('f32', xv), roundTo('f32', gv), roundTo('f32', bv), N, S, C, 3, 1e-5, false)) > 1e-2);
  const av = randn(5, 154), bw = randn(80, 155);
  const d = await sub(t(av, [5, 1]), t(bw, [5, 16])).floats();
  assert.ok(relErr(d, broadcast2(roundTo('f32', bw), [5, 16], roundTo('f32', av), [5, 1], (p, q) => p - q)) > 1);
});

test.run();
