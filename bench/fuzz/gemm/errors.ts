// Invalid / edge inputs: each must throw a clear Error naming the argument (or give a correct result for legal edges).
import * as hs from '../../../lib';
import { T, compare, rng, roundTo } from './common';

const { matmul, linear, linearGeglu, loraLinear, loraLinearBatched, attention } = hs.ops;
const R = rng(7);
const z = (shape: number[], dt: 'f32' | 'f16' | 'bf16' = 'f32') => T(R.randn(shape.reduce((a, b) => a * b, 1)), shape, dt);
const i32 = (shape: number[], vals?: number[]) => hs.tensor(Int32Array.from(vals ?? new Array(shape.reduce((a, b) => a * b, 1)).fill(0)), shape);

// Accepted on purpose: a NaN among the per-item LoRA scales (data, not an argument: it makes that item's
// output NaN), attention's q / k / v and matmul's operands and out in different float dtypes (promoted).
async function expectOk(name: string, f: () => unknown) {
  try {
    const r: any = f();
    if (r && typeof r.data === 'function') await r.data();
    console.log(`ok        ${name}: accepted`);
  } catch (e) {
    console.log(`ok        ${name}: ${(e as Error).message.slice(0, 200)}`);
  }
}

async function expectErr(name: string, f: () => unknown, want?: RegExp) {
  try {
    const r: any = f();
    if (r && typeof r.data === 'function') await r.data();
    else if (r && r.out) await r.out.data();
    console.log(`NO ERROR  ${name}`);
  } catch (e) {
    const m = (e as Error).message;
    const ok = e instanceof Error && (!want || want.test(m));
    console.log(`${ok ? 'ok      ' : 'BADMSG  '}  ${name}: ${(e as Error)?.constructor?.name}: ${m.slice(0, 200)}`);
  }
}

(async () => {
  const a = z([4, 3]), b = z([3, 5]);
  await expectErr('matmul a rank 1', () => matmul(z([3]), b), /matmul: a/);
  await expectErr('matmul a i32', () => matmul(i32([4, 3]), b), /matmul: a/);
  await expectErr('matmul b i32', () => matmul(a, i32([3, 5])), /matmul: b/);
  await expectErr('matmul a not a tensor', () => matmul(new Float32Array(12) as any, b), /matmul: a/);
  await expectErr('matmul a null', () => matmul(null as any, b), /matmul: a/);
  await expectErr('matmul K mismatch', () => matmul(a, z([4, 5])), /inner/);
  await expectErr('matmul K mismatch transA', () => matmul(a, b, { transA: true }), /inner/);
  await expectErr('matmul alpha NaN', () => matmul(a, b, { alpha: NaN }), /alpha/);
  await expectErr('matmul alpha Infinity', () => matmul(a, b, { alpha: Infinity }), /alpha/);
  await expectErr('matmul alpha string', () => matmul(a, b, { alpha: '2' as any }), /alpha/);
  await expectErr('matmul beta NaN', () => matmul(a, b, { beta: NaN, out: z([4, 5]) }), /beta/);
  await expectErr('matmul beta without out', () => matmul(a, b, { beta: 0.5 }), /beta/);
  await expectErr('matmul bias wrong', () => matmul(a, b, { bias: z([4]) }), /bias/);
  await expectErr('matmul bias rank 2', () => matmul(a, b, { bias: z([1, 5]) }), /bias/);
  await expectErr('matmul bias i32', () => matmul(a, b, { bias: i32([5]) }), /bias/);
  await expectErr('matmul out wrong shape', () => matmul(a, b, { out: z([5, 4]) }), /out/);
  await expectErr('matmul out i32', () => matmul(a, b, { out: i32([4, 5]) }), /out/);
  await expectErr('matmul act bad', () => matmul(a, b, { act: 'relu' as any }), /act/);
  await expectErr('matmul act toString', () => matmul(a, b, { act: 'toString' as any }), /act/);
  await expectErr('matmul act constructor', () => matmul(a, b, { act: 'constructor' as any }), /act/);
  await expectErr('matmul b batch mismatch', () => matmul(z([2, 4, 3]), z([3, 3, 5])), /batch/);
  await expectErr('matmul b batched but a not', () => matmul(a, z([2, 3, 5])), /batch/);
  await expectErr('matmul b rank > a rank', () => matmul(z([2, 4, 3]), z([1, 2, 3, 5])), /batch/);
  await expectErr('matmul options null', () => matmul(a, b, null as any));
  const d = z([4, 3]); d.dispose();
  await expectErr('matmul disposed a', () => matmul(d, b), /dispos/);
  await expectErr('linear x/w K mismatch', () => linear(z([2, 4]), z([5, 3])), /linear/);
  await expectErr('linear w rank 3', () => linear(z([2, 3]), z([1, 5, 3])), /linear: w/);
  await expectErr('linear x rank 0', () => linear(hs.tensor([1], []), z([5, 1])), /linear: x/);
  await expectErr('linearGeglu odd rows', () => linearGeglu(z([2, 3]), z([5, 3])), /even/);
  await expectErr('linearGeglu bias wrong', () => linearGeglu(z([2, 3]), z([16, 3]), z([8])), /bias/);
  await expectErr('lora scale NaN', () => loraLinear(z([2, 3]), z([4, 3]), null, z([2, 3]), z([4, 2]), NaN), /scale/);
  await expectErr('lora scale undefined', () => loraLinear(z([2, 3]), z([4, 3]), null, z([2, 3]), z([4, 2]), undefined as any), /scale/);
  await expectErr('lora down wrong K', () => loraLinear(z([2, 3]), z([4, 3]), null, z([2, 4]), z([4, 2]), 1), /down/);
  await expectErr('lora up wrong r', () => loraLinear(z([2, 3]), z([4, 3]), null, z([2, 3]), z([4, 3]), 1), /up/);
  await expectErr('lora down rank 3', () => loraLinear(z([2, 3]), z([4, 3]), null, z([1, 2, 3]), z([4, 2]), 1), /down/);
  await expectErr('lora down i32', () => loraLinear(z([2, 3]), z([4, 3]), null, i32([2, 3]), z([4, 2]), 1), /down/);
  await expectErr('loraB idx -2', () => loraLinearBatched(z([2, 2, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), i32([2], [0, -2]), z([2])), /idx\[1\] = -2/);
  await expectErr('loraB idx out of range', () => loraLinearBatched(z([2, 2, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), i32([2], [1, 0]), z([2])), /idx\[0\] = 1/);
  await expectErr('loraB idx f32', () => loraLinearBatched(z([2, 2, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), z([2]), z([2])), /idx/);
  await expectErr('loraB idx i64', () => loraLinearBatched(z([2, 2, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), hs.tensor(BigInt64Array.from([0n, 0n]), [2]), z([2])), /idx/);
  await expectErr('loraB idx wrong length', () => loraLinearBatched(z([2, 2, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), i32([3]), z([2])), /idx/);
  await expectErr('loraB scales wrong length', () => loraLinearBatched(z([2, 2, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), i32([2]), z([3])), /scales/);
  await expectErr('loraB scales i32', () => loraLinearBatched(z([2, 2, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), i32([2]), i32([2])), /scales/);
  await expectErr('loraB nA mismatch', () => loraLinearBatched(z([2, 2, 3]), z([4, 3]), null, z([2, 2, 3]), z([1, 4, 2]), i32([2]), z([2])), /up/);
  await expectErr('loraB x rank 2', () => loraLinearBatched(z([2, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), i32([2]), z([2])), /x/);
  await expectOk('loraB scales NaN value', () => loraLinearBatched(z([2, 2, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), i32([2]), T([NaN, 1], [2])));

  const q = z([2, 5, 12]), k = z([2, 7, 12]), v = z([2, 7, 6]);
  await expectErr('attn heads 0', () => attention(q, k, v, { heads: 0 }), /heads/);
  await expectErr('attn heads 1.5', () => attention(q, k, v, { heads: 1.5 }), /heads/);
  await expectErr('attn heads -1', () => attention(q, k, v, { heads: -1 }), /heads/);
  await expectErr('attn heads NaN', () => attention(q, k, v, { heads: NaN }), /heads/);
  await expectErr('attn heads string', () => attention(q, k, v, { heads: '2' as any }), /heads/);
  await expectErr('attn no options', () => (attention as any)(q, k, v), /heads/);
  await expectErr('attn heads not dividing', () => attention(q, k, v, { heads: 5 }), /heads 5/);
  await expectErr('attn heads divide q not v', () => attention(q, k, v, { heads: 4 }), /heads 4/);
  await expectErr('attn scale NaN', () => attention(q, k, v, { heads: 2, scale: NaN }), /scale/);
  await expectErr('attn scale Infinity', () => attention(q, k, v, { heads: 2, scale: Infinity }), /scale/);
  await expectErr('attn scale string', () => attention(q, k, v, { heads: 2, scale: '0.5' as any }), /scale/);
  await expectErr('attn q rank 2', () => attention(q.reshape([10, 12]), k, v, { heads: 2 }), /q must have rank 3/);
  await expectErr('attn k channels', () => attention(q, z([2, 7, 8]), v, { heads: 2 }), /k /);
  await expectErr('attn v length', () => attention(q, k, z([2, 6, 6]), { heads: 2 }), /v /);
  await expectErr('attn batch', () => attention(q, z([1, 7, 12]), v, { heads: 2 }), /batch/);
  await expectErr('attn q i32', () => attention(i32([2, 5, 12]), k, v, { heads: 2 }), /q/);
  await expectErr('attn Lk 0', () => attention(q, z([2, 0, 12]), z([2, 0, 6]), { heads: 2 }), /no keys/);
  await expectOk('attn mixed dtypes q f16', () => attention(z([2, 5, 12], 'f16'), k, v, { heads: 2 }));
  await expectOk('attn mixed dtypes v bf16', () => attention(q, k, z([2, 7, 6], 'bf16'), { heads: 2 }));
  await expectOk('matmul mixed a bf16 out f16 beta', () => matmul(z([4, 3], 'bf16'), b, { out: z([4, 5], 'f16'), beta: 1 }));

  // ---- legal edges: check values ----
  const show = async (name: string, f: () => hs.Tensor, ref: ArrayLike<number>) => {
    try {
      const y = f();
      const got = await y.floats();
      const r = compare(got, ref, 1e-5);
      console.log(`${r.ok ? 'ok      ' : 'WRONG   '}  ${name}: shape ${JSON.stringify(y.shape)} ${r.msg} got ${JSON.stringify(Array.from(got).slice(0, 6))} ref ${JSON.stringify(Array.from(ref).slice(0, 6))}`);
    } catch (e) { console.log(`THREW     ${name}: ${(e as Error).message}`); }
  };
  // K = 0: act(bias) + beta * out
  const bias = roundTo('f32', [0.5, -1, 2]);
  await show('matmul K=0 bias silu', () => matmul(T([], [2, 0]), T([], [0, 3]), { bias: T(bias, [3]), act: 'silu' }), [0, 1].flatMap(() => Array.from(bias, (x) => x / (1 + Math.exp(-x)))));
  const old = roundTo('f32', [1, 2, 3, 4, 5, 6]);
  await show('matmul K=0 beta 2 no bias', () => matmul(T([], [2, 0]), T([], [0, 3]), { beta: 2, out: T(old, [2, 3]) }), old.map((x) => 2 * x));
  await show('matmul K=0 beta 2 no bias, out f16', () => matmul(T([], [2, 0]), T([], [0, 3]), { beta: 2, out: T(old, [2, 3], 'f16') }), old.map((x) => 2 * x));
  await show('matmul K=0 transA transB batched', () => matmul(T([], [2, 0, 2]), T([], [2, 3, 0]), { transA: true, transB: true }), new Array(12).fill(0));
  await show('linear K=0 w f16', () => linear(T([], [2, 0]), T([], [3, 0], 'f16'), T(bias, [3])), [...bias, ...bias]);
  await show('matmul M=0', () => matmul(T([], [0, 3]), b), []);
  await show('matmul N=0', () => matmul(a, T([], [3, 0])), []);
  await show('matmul batch 0', () => matmul(T([], [0, 4, 3]), b), []);
  await show('linearGeglu M=0', () => linearGeglu(T([], [0, 3]), z([32, 3])), []);
  await show('linearGeglu K=0', () => linearGeglu(T([], [2, 0]), T([], [32, 0]), T(R.randn(32).fill(1), [32])), new Array(32).fill(0.5 * (1 + 0.6826894921370859)));
  // lora with r = 0
  const xx = roundTo('f32', R.randn(6)), ww = roundTo('f32', R.randn(12));
  const lin = (x: Float64Array, w: Float64Array) => [0, 1].flatMap((i) => [0, 1, 2, 3].map((j) => x[i * 3] * w[j * 3] + x[i * 3 + 1] * w[j * 3 + 1] + x[i * 3 + 2] * w[j * 3 + 2]));
  await show('lora r=0', () => loraLinear(T(xx, [2, 3]), T(ww, [4, 3]), null, T([], [0, 3]), T([], [4, 0]), 1), lin(xx, ww));
  await show('loraB r=0', () => loraLinearBatched(T(xx, [1, 2, 3]), T(ww, [4, 3]), null, T([], [1, 0, 3]), T([], [1, 4, 0]), i32([1], [0]), T([1], [1])), lin(xx, ww));
  await show('loraB nA=0 idx -1', () => loraLinearBatched(T(xx, [1, 2, 3]), T(ww, [4, 3]), null, T([], [0, 2, 3]), T([], [0, 4, 2]), i32([1], [-1]), T([1], [1])), lin(xx, ww));
  await show('lora K=0', () => loraLinear(T([], [2, 0]), T([], [4, 0]), T([1, 2, 3, 4], [4]), T([], [2, 0]), z([4, 2]), 1), [1, 2, 3, 4, 1, 2, 3, 4]);
  await show('lora M=0', () => loraLinear(T([], [0, 3]), z([4, 3]), null, z([2, 3]), z([4, 2]), 1), []);
  await show('loraB B=0', () => loraLinearBatched(T([], [0, 2, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), i32([0]), T([], [0])), []);
  await show('loraB L=0', () => loraLinearBatched(T([], [2, 0, 3]), z([4, 3]), null, z([1, 2, 3]), z([1, 4, 2]), i32([2]), T([1, 1], [2])), []);
  // attention edges
  await show('attn Lq=0', () => attention(T([], [1, 0, 8]), z([1, 3, 8]), z([1, 3, 8]), { heads: 2 }), []);
  await show('attn B=0', () => attention(T([], [0, 3, 8]), T([], [0, 3, 8]), T([], [0, 3, 8]), { heads: 2 }), []);
  const vv = roundTo('f32', R.randn(3 * 4));
  const meanV = [0, 1, 2, 3].map((e) => (vv[e] + vv[4 + e] + vv[8 + e]) / 3);
  await show('attn D=0 (q,k no channels), explicit scale', () => attention(T([], [1, 2, 0]), T([], [1, 3, 0]), T(vv, [1, 3, 4]), { heads: 1, scale: 1 }), [...meanV, ...meanV]);
  await show('attn D=0 default scale', () => attention(T([], [1, 2, 0]), T([], [1, 3, 0]), T(vv, [1, 3, 4]), { heads: 1 }), [...meanV, ...meanV]);
  await show('attn Dv=0', () => attention(z([1, 2, 4]), z([1, 3, 4]), T([], [1, 3, 0]), { heads: 2 }), []);
  // aliasing: out is also an input
  {
    const M = 20, K = 20;
    const av = roundTo('f32', R.randn(M * K)), bv = roundTo('f32', R.randn(K * K));
    const ref = new Float64Array(M * K);
    for (let i = 0; i < M; i++) for (let j = 0; j < K; j++) { let s = 0; for (let kk = 0; kk < K; kk++) s += av[i * K + kk] * bv[kk * K + j]; ref[i * K + j] = s; }
    const at = T(av, [M, K]);
    await show('matmul out aliasing a (20x20)', () => matmul(at, T(bv, [K, K]), { out: at }), ref);
    const ref2 = ref.map((x, i) => x + av[i]);
    const at2 = T(av, [M, K]);
    await show('matmul out aliasing a, beta 1 (20x20)', () => matmul(at2, T(bv, [K, K]), { out: at2, beta: 1 }), ref2);
  }
})();
