// attention: flash-style CPU/CUDA kernel against a plain float64 softmax(q k^T * scale) v per head.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { DEVICE, TOL, assertClose, randn, relErr, roundTo, t } from '../helpers/check';
import { attentionInternals } from '../../lib/ops/internals';
import { attentionLseRef } from '../helpers/refs';

const { attention } = hs.ops;

interface Case { B: number; Lq: number; Lk: number; H: number; D: number; Dv: number; causal?: boolean; scale?: number; amp?: number }

/** Float64 reference: o [B, Lq, H*Dv] and lse [B, H, Lq]. Causal is top-left aligned (key j <= query i). */
function reference(q: Float64Array, k: Float64Array, v: Float64Array, c: Case, scale: number) {
  return attentionLseRef(q, k, v, c.B, c.Lq, c.Lk, c.H, c.D, c.Dv, scale, !!c.causal);
}

async function run(c: Case, dtype: hs.DType, seed: number) {
  const { B, Lq, Lk, H, D, Dv } = c;
  const qv = randn(B * Lq * H * D, seed, c.amp ?? 1), kv = randn(B * Lk * H * D, seed + 1), vv = randn(B * Lk * H * Dv, seed + 2);
  const q = t(qv, [B, Lq, H * D], dtype), k = t(kv, [B, Lk, H * D], dtype), v = t(vv, [B, Lk, H * Dv], dtype);
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const res = attention(q, k, v, { heads: H, scale: c.scale, causal: c.causal, returnLse: true });
  const ref = reference(roundTo(dtype, qv), roundTo(dtype, kv), roundTo(dtype, vv), c, scale);
  const out = await res.out.floats(), lse = await res.lse.floats();
  assert.equal(res.out.shape, [B, Lq, H * Dv]);
  assert.equal(res.lse.shape, [B, H, Lq]);
  assert.is(res.lse.dtype, 'f32');
  assert.is(res.out.dtype, dtype);
  for (const x of [q, k, v, res.out, res.lse]) x.dispose();
  return { out, lse, ref, inputs: [roundTo(dtype, qv), roundTo(dtype, kv), roundTo(dtype, vv)] as const };
}

const cases: [string, Case][] = [
  ['self L=37 D=40 heads 3', { B: 2, Lq: 37, Lk: 37, H: 3, D: 40, Dv: 40 }],
  ['cross Lk=77 D=8 (two key blocks)', { B: 1, Lq: 37, Lk: 77, H: 3, D: 8, Dv: 8 }],
  ['cross Lk=45 D=40 Dv=24', { B: 2, Lq: 37, Lk: 45, H: 3, D: 40, Dv: 24 }],
  ['causal self L=77', { B: 1, Lq: 77, Lk: 77, H: 3, D: 8, Dv: 8, causal: true }],
  ['causal Lq=37 < Lk=45 (top-left)', { B: 1, Lq: 37, Lk: 45, H: 2, D: 8, Dv: 8, causal: true }],
  ['large logits (online max rescaling), Lk=150', { B: 1, Lq: 19, Lk: 150, H: 1, D: 40, Dv: 40, amp: 4 }],
  ['explicit scale, Lq=1', { B: 3, Lq: 1, Lk: 45, H: 3, D: 40, Dv: 40, scale: 0.37 }],
  ['one 512-channel head (the VAE mid-block), Lk=45', { B: 1, Lq: 21, Lk: 45, H: 1, D: 512, Dv: 512 }],
  ['head dims off the 8-float vectors D=12 Dv=20, Lk=70', { B: 2, Lq: 23, Lk: 70, H: 2, D: 12, Dv: 20 }],
  ['D=80 (two 40-wide P V tiles), Lk=70', { B: 1, Lq: 25, Lk: 70, H: 2, D: 80, Dv: 80 }],
  ['Dv=37 (copied V rows padded to 40), Lk=33', { B: 1, Lq: 14, Lk: 33, H: 2, D: 40, Dv: 37 }],
  ['causal self L=200 D=40 (several key and query blocks)', { B: 1, Lq: 200, Lk: 200, H: 2, D: 40, Dv: 40, causal: true }],
  // Many key blocks (128 keys each at d = 40), the last partial, with large logits (the running maximum moves
  // between blocks: the lazy maximum's recomputation), and causal over three blocks.
  ['Lk=600 D=40 (five key blocks, partial last), large logits', { B: 1, Lq: 50, Lk: 600, H: 2, D: 40, Dv: 40, amp: 4 }],
  ['causal self L=300 D=40 (three key blocks)', { B: 1, Lq: 300, Lk: 300, H: 1, D: 40, Dv: 40, causal: true }],
  ['D=80 Lk=150 (64-key blocks), Lq=101', { B: 1, Lq: 101, Lk: 150, H: 2, D: 80, Dv: 80, amp: 3 }],
  // One key block, head dims of 40s: P V written straight to the output, heads of a query block in turn.
  ['cross Lk=77 D=40, Lq=101 (two query blocks, rows off the 6-row panels)', { B: 2, Lq: 101, Lk: 77, H: 4, D: 40, Dv: 40 }],
  ['causal self L=77 D=40 (one key block)', { B: 1, Lq: 77, Lk: 77, H: 2, D: 40, Dv: 40, causal: true }],
  ['cross Lk=77 D=160 (four 40-wide P V tiles)', { B: 1, Lq: 13, Lk: 77, H: 2, D: 160, Dv: 160, amp: 2 }],
  // One key block: the six rows of a panel run the softmax interleaved, the block's tail lanes masked (77: five
  // of the last eight lanes; 64: no tail vector; 9: one full vector and one lane), large logits for the maxima.
  ['cross Lk=64 D=40 (one key block, no tail lanes), Lq=20', { B: 1, Lq: 20, Lk: 64, H: 2, D: 40, Dv: 40, amp: 4 }],
  ['cross Lk=9 D=80, Lq=7', { B: 2, Lq: 7, Lk: 9, H: 2, D: 80, Dv: 80, amp: 4 }],
  // One key block, no mask, other head dims: S^T = K Q^T and O^T = V^T P^T on the GEMM micro-kernel, 16 queries
  // per panel, 96 per task (Lq = 203: three query blocks, the last panel 11 rows), keys off the 6-key panels.
  ['cross Lk=77 D=64 (transposed form), Lq=203 B=2 H=4', { B: 2, Lq: 203, Lk: 77, H: 4, D: 64, Dv: 64, amp: 3 }],
  ['cross Lk=128 D=33 Dv=70 (transposed form, partial 8-dim stores)', { B: 1, Lq: 40, Lk: 128, H: 3, D: 33, Dv: 70 }],
  ['one 700-channel head, Lk=20 (transposed form, K panels longer than 512)', { B: 1, Lq: 9, Lk: 20, H: 1, D: 700, Dv: 700 }],
  // The row-wise kernel with V rows off the 8-float vectors (its per-head V copy pads them with zeros): several
  // key blocks, and causal.
  ['Lk=150 D=12 Dv=20 (128-key blocks, 6x16 + 6x8 P V tiles)', { B: 2, Lq: 29, Lk: 150, H: 3, D: 12, Dv: 20, amp: 3 }],
  ['causal self L=41 D=24 Dv=37', { B: 1, Lq: 41, Lk: 41, H: 2, D: 24, Dv: 37, causal: true }],
];

for (const [name, c] of cases) {
  // CUDA's attention kernels take head dims up to 512 (the SIMT kernel's widest variant, the VAE's one head);
  // wider ones (the CPU's transposed form takes them) are refused there with the limit named.
  if (DEVICE === 'cuda' && Math.max(c.D, c.Dv) > 512) {
    test(`attention f32: ${name}: refused on cuda, the head-dim limit named`, async () => {
      let msg = '';
      try {
        await run(c, 'f32', 11);
      } catch (e) {
        msg = (e as Error).message;
      }
      assert.match(msg, /head dims above 512 are not supported/);
    });
    continue;
  }
  test(`attention f32: ${name}`, async () => {
    const { out, lse, ref } = await run(c, 'f32', 11);
    assertClose(out, ref.o, TOL.f32, 'out');
    assertClose(lse, ref.lse, TOL.f32, 'lse');
  });
}

// Without lse, one head wider than 160 channels runs as f32 GEMMs + softmax (lib/ops/attention.ts); with lse
// (the cases above) it stays on the attention kernel.
for (const dtype of ['f32', 'bf16'] as const)
  test(`attention ${dtype}: one 512-channel head without lse, B=2 Lq=70 Lk=33`, async () => {
    const c: Case = { B: 2, Lq: 70, Lk: 33, H: 1, D: 512, Dv: 512 };
    const qv = randn(2 * 70 * 512, 61), kv = randn(2 * 33 * 512, 62), vv = randn(2 * 33 * 512, 63);
    const y = attention(t(qv, [2, 70, 512], dtype), t(kv, [2, 33, 512], dtype), t(vv, [2, 33, 512], dtype), { heads: 1 });
    assert.equal(y.shape, [2, 70, 512]);
    assert.is(y.dtype, dtype);
    const ref = reference(roundTo(dtype, qv), roundTo(dtype, kv), roundTo(dtype, vv), c, 1 / Math.sqrt(512));
    assertClose(await y.floats(), ref.o, TOL[dtype], 'out');
  });

// The same path over several query chunks (each chunk's scores are freed as soon as its probabilities are
// made; real sizes reach a second chunk only past 16k keys by 4k queries): a budget of 5 rows of scores.
test('attention f32: one 512-channel head without lse, queries in chunks of 5 rows (B=2 Lq=23 Lk=33)', async () => {
  const c: Case = { B: 2, Lq: 23, Lk: 33, H: 1, D: 512, Dv: 512 };
  const qv = randn(2 * 23 * 512, 71), kv = randn(2 * 33 * 512, 72), vv = randn(2 * 33 * 512, 73);
  const saved = attentionInternals.chunkBytes;
  attentionInternals.chunkBytes = 5 * 4 * 33;
  try {
    const y = attention(t(qv, [2, 23, 512], 'f32'), t(kv, [2, 33, 512], 'f32'), t(vv, [2, 33, 512], 'f32'), { heads: 1 });
    const ref = reference(qv, kv, vv, c, 1 / Math.sqrt(512));
    assertClose(await y.floats(), ref.o, TOL.f32, 'out');
  } finally {
    attentionInternals.chunkBytes = saved;
  }
});

for (const dtype of ['f16', 'bf16'] as const) {
  test(`attention ${dtype}: one 512-channel head, Lk=37`, async () => {
    const { out, ref } = await run({ B: 2, Lq: 19, Lk: 37, H: 1, D: 512, Dv: 512 }, dtype, 6);
    assertClose(out, ref.o, TOL[dtype], 'out');
  });
  test(`attention ${dtype}: cross Lk=77 D=40`, async () => {
    const c: Case = { B: 2, Lq: 37, Lk: 77, H: 3, D: 40, Dv: 40 };
    const { out, ref } = await run(c, dtype, 5);
    assertClose(out, ref.o, TOL[dtype], 'out');
    assert.ok(relErr(out, ref.o) > 0, 'half storage rounds the output');
  });
}

// Half-precision cases over several query and key blocks of CUDA's tensor-core kernel (its 64- and 128-row
// query blocks: gpu-check runs this file with HYPERSD_ATTN_WM=1 and =2): causal diagonals inside a block,
// a last key tile past Lk (masked) after unmasked ones, the 48/64/80 head-dim buckets, lse.
const halfCases: [string, Case][] = [
  ['causal self L=300 D=64', { B: 1, Lq: 300, Lk: 300, H: 2, D: 64, Dv: 64, causal: true }],
  ['Lq=200 Lk=150 D=64', { B: 2, Lq: 200, Lk: 150, H: 2, D: 64, Dv: 64, amp: 3 }],
  ['self L=260 D=40', { B: 1, Lq: 260, Lk: 260, H: 2, D: 40, Dv: 40 }],
  ['causal Lq=140 < Lk=200 D=40', { B: 1, Lq: 140, Lk: 200, H: 1, D: 40, Dv: 40, causal: true }],
  ['Lq=130 Lk=100 D=80', { B: 1, Lq: 130, Lk: 100, H: 2, D: 80, Dv: 80 }],
  ['Lq=200 Lk=77 D=64 (text keys: partial key tiles only)', { B: 2, Lq: 200, Lk: 77, H: 2, D: 64, Dv: 64 }],
  // 512 keys or more: the Hopper wgmma kernel's shapes by default (attention_sm90a.cu)
  ['causal self L=576 D=64 (wgmma on Hopper)', { B: 1, Lq: 576, Lk: 576, H: 2, D: 64, Dv: 64, causal: true }],
  ['Lq=150 Lk=620 D=40 (wgmma on Hopper: padded head, partial last key tile)', { B: 2, Lq: 150, Lk: 620, H: 2, D: 40, Dv: 40, amp: 3 }],
];
for (const dtype of ['f16', 'bf16'] as const)
  for (const [name, c] of halfCases)
    test(`attention ${dtype}: ${name}`, async () => {
      const { out, lse, ref } = await run(c, dtype, 21);
      assertClose(out, ref.o, TOL[dtype], 'out');
      assertClose(lse, ref.lse, TOL[dtype], 'lse');
    });

// Self-attention over several full key blocks keeps each row's maximum while later blocks stay within 2^8 of it
// (their numerators straight from the logits) and recomputes a block whose logits jump past that: keys 128 and
// on scaled by 100 make the block holding them jump by hundreds (2^(s - m) of the kept m would overflow); with
// the keys unscaled every later block stays near the first. (Blocks of 128 keys at d = 40, 64 for d = 80.)
test('attention f32: later key blocks within and past the kept maximum (Lk=384 D=40, keys scaled from 128 on)', async () => {
  const Lq = 50, Lk = 384, H = 2, D = 40;
  const c: Case = { B: 1, Lq, Lk, H, D, Dv: D };
  const qv = roundTo('f32', randn(Lq * H * D, 81)), vv = roundTo('f32', randn(Lk * H * D, 83));
  const plain = roundTo('f32', randn(Lk * H * D, 82)), scaled = plain.map((x, i) => (i >= 128 * H * D ? x * 100 : x));
  for (const [what, kv] of [['keys from 128 on x100', scaled], ['keys unscaled', plain]] as const) {
    const res = attention(t(qv, [1, Lq, H * D]), t(kv, [1, Lk, H * D]), t(vv, [1, Lk, H * D]), { heads: H, returnLse: true });
    const ref = reference(qv, kv, vv, c, 1 / Math.sqrt(D));
    assertClose(await res.out.floats(), ref.o, TOL.f32, `out (${what})`);
    assertClose(await res.lse.floats(), ref.lse, TOL.f32, `lse (${what})`);
  }
});

test('attention: the reference discriminates (causal vs full, wrong scale)', async () => {
  const c: Case = { B: 1, Lq: 37, Lk: 37, H: 3, D: 8, Dv: 8, causal: true };
  const { out, ref, inputs } = await run(c, 'f32', 3);
  assert.ok(relErr(out, ref.o) < 1e-5);
  const full = reference(...inputs, { ...c, causal: false }, 1 / Math.sqrt(8));
  assert.ok(relErr(out, full.o) > 1e-2, 'causal output differs from unmasked');
  const scaled = reference(...inputs, c, 0.5);
  assert.ok(relErr(out, scaled.o) > 1e-3, 'the scale matters');
});

test('attention: default scale is 1/sqrt(D) and a single head view matches', async () => {
  const B = 1, L = 9, D = 40;
  const qv = randn(B * L * D, 21), kv = randn(B * L * D, 22), vv = randn(B * L * D, 23);
  const q = t(qv, [B, L, D]), k = t(kv, [B, L, D]), v = t(vv, [B, L, D]);
  const a = await attention(q, k, v, { heads: 1 }).floats();
  const ref = reference(roundTo('f32', qv), roundTo('f32', kv), roundTo('f32', vv), { B, Lq: L, Lk: L, H: 1, D, Dv: D }, 1 / Math.sqrt(D));
  assertClose(a, ref.o, TOL.f32, 'out');
  const wrong = reference(roundTo('f32', qv), roundTo('f32', kv), roundTo('f32', vv), { B, Lq: L, Lk: L, H: 1, D, Dv: D }, 1);
  assert.ok(relErr(a, wrong.o) > 1e-3);
});

test('attention: argument errors name the op and the shapes', () => {
  const q = t(randn(2 * 5 * 12), [2, 5, 12]), k = t(randn(2 * 7 * 12), [2, 7, 12]), v = t(randn(2 * 7 * 6), [2, 7, 6]);
  assert.throws(() => attention(q, k, v, { heads: 5 }), /attention: heads 5 must divide.*\[2,5,12\].*\[2,7,6\]/);
  assert.throws(() => attention(q, t(randn(2 * 7 * 8), [2, 7, 8]), v, { heads: 2 }), /attention: k \[2,7,8\] must have q's channels \(q \[2,5,12\]\)/);
  assert.throws(() => attention(q, k, t(randn(2 * 6 * 6), [2, 6, 6]), { heads: 2 }), /attention: v \[2,6,6\] must have k's length/);
  assert.throws(() => attention(q.reshape([10, 12]), k, v, { heads: 2 }), /attention: q must have rank 3, got shape \[10,12\]/);
  assert.throws(() => attention(q, k, v, { heads: 0 }), /heads must be a positive integer/);
  assert.throws(() => attention(q, t(randn(7 * 12), [1, 7, 12]), v, { heads: 2 }), /batch sizes differ/);
  assert.throws(() => attention(t([], [2, 5, 0]), t([], [2, 7, 0]), v, { heads: 2 }),
    /attention: q \[2,5,0\] has head dim 0, so the default scale 1\/sqrt\(head dim\) is infinite: pass a scale/);
});

test.run();
