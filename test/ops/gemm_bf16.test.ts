// HYPERSD_CPU_MATH=bf16: the linear layers (matmul with a weight B, linear_geglu) round their packed operands to
// bf16 and multiply with AVX512_BF16 instructions. Checked against a float64 product of the bf16-rounded inputs
// (so only the f32 accumulation differs: the f32 tolerance applies), over partial tiles, an odd K, several K
// blocks, bias, activation, beta and the fused GEGLU's tile sink. On a CPU without AVX512_BF16 (or with another
// kernel set) the setting changes nothing, which is checked too. CPU only.
import * as fs from 'fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { DEVICE, TOL, assertClose, randn, roundTo, t } from '../helpers/check';

const cpuHasBf16 = (() => {
  try {
    return / avx512_bf16 /.test(fs.readFileSync('/proc/cpuinfo', 'utf8') + ' ');
  } catch {
    return false;
  }
})();
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
  for (const [M, K, N, wdt] of [[100, 333, 70, 'f32'], [300, 2600, 96, 'bf16'], [257, 640, 160, 'bf16'], [90, 64, 33, 'f32']] as const) {
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

test.run();
