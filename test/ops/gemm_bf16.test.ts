// HYPERSD_CPU_MATH=bf16: the linear layers (matmul with a weight B, linear_geglu) round their packed operands to
// bf16 and multiply with AVX512_BF16 instructions; so does non-causal attention (last test). Checked against a float64 product of the bf16-rounded inputs
// (so only the f32 accumulation differs: the f32 tolerance applies), over partial tiles, an odd K, several K
// blocks, bias, activation, beta and the fused GEGLU's tile sink. On a CPU without AVX512_BF16 (or with another
// kernel set) the setting changes nothing, which is checked too. CPU only.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { DEVICE, TOL, assertClose, cpuFlags, randn, relErr, roundTo, t } from '../helpers/check';

const cpuHasBf16 = cpuFlags().has('avx512_bf16');
const kernelsOk = !process.env.HYPERSD_CPU_KERNELS || process.env.HYPERSD_CPU_KERNELS === 'avx512';
const engaged = cpuHasBf16 && kernelsOk && DEVICE === 'cpu';

async function withMath<T>(mode: string | undefined, f: () => Promise<T>): Promise<T> {
  const old = process.env.HYPERSD_CPU_MATH;
  if (mode === undefined) delete process.env.HYPERSD_CPU_MATH;
  else process.env.HYPERSD_CPU_MATH = mode;
  try {
    const r = await f();
    await hs.sync(DEVICE);
    return r;
  } finally {
    if (old === undefined) delete process.env.HYPERSD_CPU_MATH;
    else process.env.HYPERSD_CPU_MATH = old;
  }
}

/** x [M, K] w [N, K]: x w^T + bias, act, + beta * old, in float64. */
function ref(x: Float64Array, w: Float64Array, M: number, K: number, N: number, o: { bias?: Float64Array; act?: 'silu'; beta?: number; old?: Float64Array } = {}) {
  const y = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[i * K + k] * w[j * K + k];
      s += o.bias ? o.bias[j] : 0;
      if (o.act === 'silu') s = s / (1 + Math.exp(-s));
      y[i * N + j] = s + (o.beta ? o.beta * o.old![i * N + j] : 0);
    }
  return y;
}

test(`bf16 linear layers (${engaged ? 'AVX512_BF16 engaged' : 'not engaged on this CPU / kernel set: must equal f32'})`, async () => {
  for (const [M, K, N, wdt] of [[100, 333, 70, 'f32'], [300, 2600, 96, 'bf16'], [257, 640, 160, 'bf16'], [90, 64, 33, 'f32'],
    [70, 333, 45, 'bf16'], [40, 2601, 37, 'bf16'], [300, 2601, 40, 'bf16'], [150, 31, 16, 'bf16']] as const) {
    const xv = randn(M * K, M + K, 1), wv = randn(N * K, N + 1, 0.05), bv = randn(N, 3, 0.5);
    const x = t(xv, [M, K]), w = t(wv, [N, K], wdt), b = t(bv, [N]);
    const got = await withMath('bf16', async () => hs.ops.linear(x, w, b, 'silu').floats());
    const f32 = await withMath(undefined, async () => hs.ops.linear(x, w, b, 'silu').floats());
    const what = `M ${M} K ${K} N ${N} w ${wdt}`;
    if (!engaged) {
      assert.equal(Array.from(got), Array.from(f32), `${what}: unchanged`);
      continue;
    }
    // Both operands rounded to bf16 (the weight already is when stored so).
    const want = ref(roundTo('bf16', roundTo('f32', xv)), roundTo('bf16', roundTo(wdt, wv)), M, K, N, { bias: roundTo('f32', bv), act: 'silu' });
    assertClose(got, want, TOL.f32, `${what}: bf16 inputs`);
    // ... and it is not the f32 product (the mode really ran): the f32 reference is ~1e-3 away.
    const f32ref = ref(roundTo('f32', xv), roundTo(wdt, wv), M, K, N, { bias: roundTo('f32', bv), act: 'silu' });
    let d = 0, n = 0;
    for (let i = 0; i < got.length; i++) { d += (got[i] - f32ref[i]) ** 2; n += f32ref[i] ** 2; }
    assert.ok(Math.sqrt(d / n) > 1e-4, `${what}: differs from the f32 product (${Math.sqrt(d / n)})`);
  }
});

test('bf16 linear layers: beta accumulation into out and the fused GEGLU tile sink', async () => {
  const [M, K, N] = [131, 1400, 48];
  const xv = randn(M * K, 11), wv = randn(N * K, 12, 0.05), ov = randn(M * N, 13);
  const x = t(xv, [M, K]), w = t(wv, [N, K], 'bf16');
  const out = t(ov, [M, N]);
  const got = await withMath('bf16', async () => hs.ops.matmul(x, w, { transB: true, beta: 1, out }).floats());
  const xr = engaged ? roundTo('bf16', roundTo('f32', xv)) : roundTo('f32', xv);
  assertClose(got, ref(xr, roundTo('bf16', wv), M, K, N, { beta: 1, old: roundTo('f32', ov) }), TOL.f32, 'beta 1');
  // linear_geglu: bit-identical to geglu(linear(...)) in the same mode (both bf16 products, the same sink formula).
  const w2 = t(randn(2 * N * K, 14, 0.05), [2 * N, K], 'bf16'), b2 = t(randn(2 * N, 15), [2 * N]);
  const [fused, composed] = await withMath('bf16', async () => [
    await hs.ops.linearGeglu(x, w2, b2).floats(),
    await hs.ops.geglu(hs.ops.linear(x, w2, b2)).floats(),
  ]);
  assert.equal(Array.from(fused), Array.from(composed), 'linear_geglu = geglu(linear) under bf16');
  if (engaged) {
    const f32 = await withMath(undefined, async () => hs.ops.linearGeglu(x, w2, b2).floats());
    assert.ok(Array.from(fused).some((v, i) => v !== f32[i]), 'linear_geglu takes the bf16 products');
  }
});

// Attention under bf16 math: q (scaled by scale log2(e)), K, V and the softmax numerators rounded to bf16, both
// products on vdpbf16ps. Reference: float64 with q s log2(e), K and V rounded as the kernel rounds them, the
// softmax in base 2; only P's rounding (up to 2^-9 relative a weight) and f32 sums differ: 0.9-1.1e-3 here, so
// a dropped or doubled key (~1/sqrt(Lk) of the output: 0.06 at 300 keys) or a wrong column fails the 2e-3 bound.
// The lse within 5e-4 (measured <= 1.1e-4); against the unrounded float64 attention the bf16 tolerance holds
// (measured 2-4.5e-3). Shapes: key blocks of 128 (several, and an odd last tile), 77 keys (a
// partial tile), one key, odd D, Dv off 16 and Dv in chunks (80, 160), rows off the 6-row panels, B = 2.
function attnRef(q: Float64Array, k: Float64Array, v: Float64Array, B: number, Lq: number, Lk: number, H: number, D: number, Dv: number, scale: number, rounded: boolean) {
  const sl = Math.fround(scale * Math.LOG2E);
  const r = (x: number) => (rounded ? roundTo('bf16', [x])[0] : x);
  const o = new Float64Array(B * Lq * H * Dv), lse = new Float64Array(B * H * Lq), s = new Float64Array(Lk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Lq; i++) {
        let m = -Infinity;
        for (let j = 0; j < Lk; j++) {
          let d = 0;
          for (let e = 0; e < D; e++) {
            const qe = q[((b * Lq + i) * H + h) * D + e];
            d += (rounded ? r(Math.fround(qe * sl)) : qe * scale * Math.LOG2E) * r(k[((b * Lk + j) * H + h) * D + e]);
          }
          s[j] = d;  // base-2 logits
          m = Math.max(m, d);
        }
        let sum = 0;
        for (let j = 0; j < Lk; j++) sum += 2 ** (s[j] - m);
        lse[(b * H + h) * Lq + i] = (m + Math.log2(sum)) * Math.LN2;
        for (let e = 0; e < Dv; e++) {
          let acc = 0;
          for (let j = 0; j < Lk; j++) acc += 2 ** (s[j] - m) * r(v[((b * Lk + j) * H + h) * Dv + e]);
          o[((b * Lq + i) * H + h) * Dv + e] = acc / sum;
        }
      }
  return { o, lse };
}

test(`bf16 attention (${engaged ? 'AVX512_BF16 engaged' : 'not engaged: must equal f32'})`, async () => {
  const cases: [number, number, number, number, number, number][] = [
    // B, Lq, Lk, H, D, Dv
    [2, 37, 37, 3, 40, 40], [1, 100, 300, 2, 64, 64], [1, 13, 77, 3, 40, 24], [1, 9, 1, 2, 8, 8],
    [1, 20, 50, 2, 7, 9], [1, 30, 64, 2, 80, 80], [1, 14, 33, 1, 160, 160], [1, 97, 160, 2, 16, 48],
  ];
  for (const [B, Lq, Lk, H, D, Dv] of cases) {
    const what = `B ${B} Lq ${Lq} Lk ${Lk} H ${H} D ${D} Dv ${Dv}`;
    const qv = roundTo('f32', randn(B * Lq * H * D, Lq + D, 1.5)), kv = roundTo('f32', randn(B * Lk * H * D, Lk + 1));
    const vv = roundTo('f32', randn(B * Lk * H * Dv, Dv + 2));
    const q = t(qv, [B, Lq, H * D]), k = t(kv, [B, Lk, H * D]), v = t(vv, [B, Lk, H * Dv]);
    const run = () => hs.ops.attention(q, k, v, { heads: H, returnLse: true });
    const [out, lse] = await withMath('bf16', async () => { const r = run(); return [await r.out.floats(), await r.lse.floats()]; });
    const [o32, l32] = await withMath(undefined, async () => { const r = run(); return [await r.out.floats(), await r.lse.floats()]; });
    if (!engaged) {
      assert.equal(Array.from(out), Array.from(o32), `${what}: unchanged`);
      assert.equal(Array.from(lse), Array.from(l32), `${what}: lse unchanged`);
      continue;
    }
    const scale = 1 / Math.sqrt(D);
    const near = attnRef(qv, kv, vv, B, Lq, Lk, H, D, Dv, scale, true), exact = attnRef(qv, kv, vv, B, Lq, Lk, H, D, Dv, scale, false);
    assertClose(out, near.o, 2e-3, `${what}: against the bf16-rounded inputs`);
    assertClose(lse, near.lse, 5e-4, `${what}: lse against the bf16-rounded inputs`);
    assertClose(out, exact.o, TOL.bf16, `${what}: against the exact attention`);
    if (Lk > 1) assert.ok(relErr(out, o32) > 1e-5, `${what}: differs from the f32 kernel (${relErr(out, o32)})`);
  }
  // Causal attention keeps the f32 kernel.
  const [L, H, D] = [40, 2, 16];
  const q = t(randn(L * H * D, 5), [1, L, H * D]), k = t(randn(L * H * D, 6), [1, L, H * D]), v = t(randn(L * H * D, 7), [1, L, H * D]);
  const a = await withMath('bf16', async () => hs.ops.attention(q, k, v, { heads: H, causal: true }).floats());
  const b = await withMath(undefined, async () => hs.ops.attention(q, k, v, { heads: H, causal: true }).floats());
  assert.equal(Array.from(a), Array.from(b), 'causal: the f32 kernel');
});

test.run();
