// Gradients of attention with f16 / bf16 q, k, v (the training dtype on GPUs), the loss's gradient in f32 as
// autograd passes it, against float64 analytic gradients of the half-rounded inputs (refs.ts attentionGradRef).
// The shapes cover the CUDA tensor-core backward's edges (the default on CUDA for head dims up to 64;
// bench/gpu-check.sh runs this file on it, again with HYPERSD_ATTN_BWD=simt, and with HYPERSD_ATTN_BWD=mma-all,
// which takes head dims 80-160 on tensor cores too, not yet run on a GPU): head dims 40 and 64 (padded to 48 /
// 64 in shared memory), 80, 128 (padded to 160) and 160, query and key counts that are not multiples of its
// tiles, causal masks over several tiles, cross-attention with frozen keys and values, several heads and
// batches. On the CPU (and the SIMT kernels) the backward computes in f32 from the half inputs; the tensor-core
// kernels round P, dS and dO to the input dtype as mma operands, within the dtype's tolerance.
import { test } from 'uvu';
import * as hs from '../../lib';
import { grad } from '../../lib/autograd';
import * as assert from 'uvu/assert';
import { assertClose, DEVICE, randn, roundTo, t, TOL } from '../helpers/check';
import { attentionGradRef } from '../helpers/refs';
import { native } from '../../lib/native';
import { runOp } from '../../lib/ops/runtime';

const cases = [
  { name: 'self L 70, d 40, 2 heads', B: 1, Lq: 70, Lk: 70, H: 2, D: 40, causal: false, lse: false, frozenKv: false },
  { name: 'self L 130, d 64, batch 2, lse saved', B: 2, Lq: 130, Lk: 130, H: 1, D: 64, causal: false, lse: true, frozenKv: false },
  { name: 'causal L 150, d 64', B: 1, Lq: 150, Lk: 150, H: 2, D: 64, causal: true, lse: false, frozenKv: false },
  { name: 'cross Lq 100, Lk 77, d 40', B: 1, Lq: 100, Lk: 77, H: 2, D: 40, causal: false, lse: false, frozenKv: false },
  { name: 'cross on frozen k, v: dq only', B: 1, Lq: 65, Lk: 33, H: 1, D: 64, causal: false, lse: false, frozenKv: true },
  { name: 'd 80 over query and key tiles', B: 1, Lq: 70, Lk: 90, H: 1, D: 80, causal: false, lse: false, frozenKv: false },
  { name: 'd 160, causal', B: 1, Lq: 50, Lk: 50, H: 2, D: 160, causal: true, lse: true, frozenKv: false },
  { name: 'd 128 (padded to 160 on CUDA)', B: 1, Lq: 40, Lk: 33, H: 1, D: 128, causal: false, lse: false, frozenKv: false },
  { name: 'd 80, causal over three key blocks, batch 2', B: 2, Lq: 150, Lk: 150, H: 2, D: 80, causal: true, lse: false, frozenKv: false },
  { name: 'd 96 (padded to 160 on CUDA), causal cross Lq 100, Lk 170', B: 1, Lq: 100, Lk: 170, H: 1, D: 96, causal: true, lse: false, frozenKv: false },
];

for (const dtype of ['f16', 'bf16'] as const)
  for (const c of cases)
    test(`attention ${dtype} gradients: ${c.name}`, async () => {
      const { B, Lq, Lk, H, D, causal } = c, scale = 1 / Math.sqrt(D);
      const qv = randn(B * Lq * H * D, 11, 0.8), kv = randn(B * Lk * H * D, 12, 0.8), vv = randn(B * Lk * H * D, 13);
      const rv = randn(B * Lq * H * D, 14);
      const q = t(qv, [B, Lq, H * D], dtype), k = t(kv, [B, Lk, H * D], dtype), v = t(vv, [B, Lk, H * D], dtype);
      const dLoss = t(rv, [B, Lq, H * D]);
      const params = c.frozenKv ? [q] : [q, k, v];
      const { grads } = grad(() => {
        const r = hs.ops.attention(q, k, v, { heads: H, scale, causal, returnLse: c.lse });
        return r instanceof hs.Tensor ? r : r.out;
      }, params, { dLoss });
      const ref = attentionGradRef(roundTo(dtype, qv), roundTo(dtype, kv), roundTo(dtype, vv), roundTo('f32', rv), B, Lq, Lk,
        H, D, D, scale, causal);
      const want: [string, hs.Tensor, Float64Array][] = [['dq', q, ref.dq]];
      if (!c.frozenKv) want.push(['dk', k, ref.dk], ['dv', v, ref.dv]);
      for (const [name, x, r] of want) {
        const g = grads.get(x);
        if (!g) throw new Error(`no gradient for ${name}`);
        assertClose(await g.floats(), r, TOL[dtype], `${dtype} ${c.name}: ${name}`);
      }
      if (c.frozenKv) {
        const none = grads.get(k);
        if (none) throw new Error('frozen k received a gradient');
      }
      for (const x of [q, k, v, dLoss]) x.dispose();
    });

test('HYPERSD_ATTN_BWD: an unknown value is an Error naming the variable (CUDA; the CPU backward does not read it)', async () => {
  if (DEVICE !== 'cuda') return;
  const old = process.env.HYPERSD_ATTN_BWD;
  process.env.HYPERSD_ATTN_BWD = 'fast';
  try {
    const q = t(randn(2 * 64, 21), [1, 2, 64], 'bf16'), dLoss = t(randn(2 * 64, 22), [1, 2, 64]);
    let err: unknown = null;
    try {
      const { grads } = grad(() => hs.ops.attention(q, q, q, { heads: 1 }) as hs.Tensor, [q], { dLoss });
      await grads.get(q)!.floats();
    } catch (e) {
      err = e;
    }
    assert.match(String(err), /HYPERSD_ATTN_BWD must be simt, mma or mma-all, got 'fast'/);
    await hs.sync('cuda').catch(() => undefined);
  } finally {
    if (old === undefined) delete process.env.HYPERSD_ATTN_BWD;
    else process.env.HYPERSD_ATTN_BWD = old;
  }
});

// dq / dk / dv written into f32 views that start 4 bytes past a 16-byte boundary (the CUDA tensor-core backward
// stores float2: such an output goes through an aligned temporary, common.cuh OutAs) come out as into fresh
// tensors, bit for bit, and nothing is written outside them.
test('attention_backward into views off a 16-byte boundary: the same bits as into fresh outputs', async () => {
  const [L, D] = [70, 64], E = L * D, shape = [1, L, D];
  const q = t(randn(E, 31, 0.8), shape, 'f16'), k = t(randn(E, 32, 0.8), shape, 'f16'), v = t(randn(E, 33), shape, 'f16');
  const o = hs.ops.attention(q, k, v, { heads: 1 }) as hs.Tensor, dO = t(randn(E, 34), shape);
  const attrs = { heads: 1, scale: 1 / Math.sqrt(D), causal: 0, need_dq: 1, need_dkv: 1 };
  const fresh = [0, 1, 2].map(() => hs.full(shape, NaN, { device: DEVICE }));
  runOp('attention_backward', [q, k, v, o, dO], fresh, attrs);
  const big = hs.full([3 * E + 4], NaN, { device: DEVICE });
  const views = [1, E + 2, 2 * E + 3].map((off) => new hs.Tensor(native().view(big.handle(), shape, [E, D, 1], off), shape, 'f32', DEVICE));
  runOp('attention_backward', [q, k, v, o, dO], views, attrs);
  for (let i = 0; i < 3; i++) {
    const a = await fresh[i].floats();
    assert.ok(a.every(Number.isFinite), `fresh output ${i} written`);
    assert.ok(Buffer.from(await views[i].bytes()).equals(Buffer.from(await fresh[i].bytes())), `output ${i} through a view`);
  }
  const all = await big.floats();
  for (const gap of [0, E + 1, 2 * E + 2, 3 * E + 3]) assert.ok(Number.isNaN(all[gap]), `element ${gap} between the views untouched`);
  for (const x of [q, k, v, o, dO, big, ...fresh]) x.dispose();
});

test.run();
