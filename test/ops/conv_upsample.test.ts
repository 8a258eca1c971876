// conv2d's `upsample` (the input read as its nearest 2x upsampling, never formed; CPU): the same bytes as
// upsampleNearest2x then conv2d on every algorithm (the gathers read the same values), with bias, a residual
// (beta), stride 2, 1x1, batch 2 and the statistics output; its gradients against those of the two ops composed;
// CUDA refuses it with an Error. gemm.test.ts runs this file again with the AVX2 and portable kernel sets.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { grad } from '../../lib/autograd';
import { DEVICE, randn, relErr, t } from '../helpers/check';

const { conv2d, upsampleNearest2x } = hs.ops;
const NAME = process.env.HYPERSD_CPU_KERNELS ? `[${process.env.HYPERSD_CPU_KERNELS}] ` : '';

interface Case { N: number; H: number; W: number; C: number; O: number; k: number; stride: number; pad: number; algo: hs.ops.ConvAlgo; variant?: string; bias?: boolean; beta?: boolean; stats?: boolean }
const cases: Case[] = [
  { N: 1, H: 8, W: 7, C: 16, O: 24, k: 3, stride: 1, pad: 1, algo: 'winograd6', bias: true, stats: true },
  { N: 2, H: 5, W: 6, C: 16, O: 32, k: 3, stride: 1, pad: 1, algo: 'winograd4', variant: 'small', beta: true },
  { N: 1, H: 9, W: 9, C: 16, O: 16, k: 3, stride: 1, pad: 1, algo: 'winograd4', variant: 'big', bias: true },
  { N: 1, H: 6, W: 4, C: 16, O: 20, k: 3, stride: 1, pad: 1, algo: 'winograd', stats: true },
  { N: 2, H: 7, W: 5, C: 12, O: 18, k: 3, stride: 1, pad: 1, algo: 'gemm', bias: true, beta: true },
  { N: 1, H: 7, W: 7, C: 8, O: 12, k: 3, stride: 2, pad: 1, algo: 'auto', bias: true },
  { N: 1, H: 5, W: 3, C: 8, O: 10, k: 1, stride: 1, pad: 0, algo: 'auto', stats: true },
  { N: 1, H: 6, W: 6, C: 16, O: 3, k: 3, stride: 1, pad: 1, algo: 'auto', bias: true },  // <= 8 outputs: not the direct kernel
];

if (DEVICE === 'cpu') {
  for (const c of cases)
    test(`${NAME}conv2d upsample: ${c.algo}${c.variant ? '/' + c.variant : ''} N${c.N} ${c.H}x${c.W}x${c.C}->${c.O} k${c.k} s${c.stride}${c.bias ? ' bias' : ''}${c.beta ? ' beta' : ''}${c.stats ? ' stats' : ''}`, async () => {
      const prev = process.env.HYPERSD_WINO_VARIANT;
      if (c.variant) process.env.HYPERSD_WINO_VARIANT = c.variant;
      try {
        const x = t(randn(c.N * c.H * c.W * c.C, 1), [c.N, c.H, c.W, c.C]), w = t(randn(c.O * c.k * c.k * c.C, 2, 0.3), [c.O, c.k, c.k, c.C]);
        const b = c.bias ? t(randn(c.O, 3), [c.O]) : null;
        const Ho = Math.floor((2 * c.H + 2 * c.pad - c.k) / c.stride) + 1, Wo = Math.floor((2 * c.W + 2 * c.pad - c.k) / c.stride) + 1;
        const resid = randn(c.N * Ho * Wo * c.O, 4);
        const o = { stride: c.stride, pad: c.pad, algo: c.algo };
        const extra = () => (c.beta ? { beta: 1, out: t(resid, [c.N, Ho, Wo, c.O]) } : {});
        const s1 = c.stats ? hs.full([c.N, c.O, 3], NaN) : undefined, s2 = c.stats ? hs.full([c.N, c.O, 3], NaN) : undefined;
        const fused = conv2d(x, w, b, { ...o, ...extra(), upsample: true, stats: s1 });
        // (with <= 8 outputs 'auto' runs the direct kernel on a formed input, the implicit GEMM on an upsampled one:
        // the composed side takes the implicit GEMM too, for the same sums)
        const composed = conv2d(upsampleNearest2x(x), w, b, { ...o, ...(c.O <= 8 && c.algo === 'auto' ? { algo: 'gemm' as const } : {}), ...extra(), stats: s2 });
        assert.equal(fused.shape, [c.N, Ho, Wo, c.O]);
        assert.ok(Buffer.from(await fused.bytes()).equals(Buffer.from(await composed.bytes())), 'the same bytes as upsampling first');
        if (s1 && s2) assert.ok(Buffer.from(await s1.bytes()).equals(Buffer.from(await s2.bytes())), 'the same statistics');
      } finally {
        if (prev === undefined) delete process.env.HYPERSD_WINO_VARIANT;
        else process.env.HYPERSD_WINO_VARIANT = prev;
      }
    });

  test(`${NAME}conv2d upsample: gradients (x, w, bias) match upsampleNearest2x then conv2d`, async () => {
    const x = t(randn(2 * 5 * 6 * 8, 5), [2, 5, 6, 8]), w = t(randn(12 * 9 * 8, 6, 0.3), [12, 3, 3, 8]), b = t(randn(12, 7), [12]);
    const dy = t(randn(2 * 10 * 12 * 12, 8), [2, 10, 12, 12]);
    const run = (fused: boolean) => grad(() => {
      const y = fused ? conv2d(x, w, b, { pad: 1, upsample: true }) : conv2d(upsampleNearest2x(x), w, b, { pad: 1 });
      return hs.ops.mul(y, dy);
    }, [x, w, b], { dLoss: hs.ones([2, 10, 12, 12]) });
    const a = run(true), r = run(false);
    for (const [name, p] of [['x', x], ['w', w], ['bias', b]] as const) {
      const e = relErr(await a.grads.get(p)!.floats(), await r.grads.get(p)!.floats());
      assert.ok(e < 1e-6, `d${name}: relative difference ${e}`);
    }
  });
}

test(`${NAME}conv2d upsample: CUDA refuses it (the TS wrapper and the kernel)`, () => {
  if (DEVICE === 'cpu') {
    const x = hs.ops.randn([1, 2, 2, 4], { seed: 1 }), w = hs.ops.randn([4, 3, 3, 4], { seed: 2 });
    // the output is sized from the upsampled input
    assert.throws(() => conv2d(x, w, null, { pad: 1, upsample: true, out: hs.empty([1, 2, 2, 4]) }), /conv2d: out \[1,2,2,4\] must be \[1,4,4,4\]/);
    return;
  }
  const x = hs.ops.randn([1, 2, 2, 4], { seed: 1, device: DEVICE }), w = hs.ops.randn([4, 3, 3, 4], { seed: 2, device: DEVICE });
  assert.throws(() => conv2d(x, w, null, { pad: 1, upsample: true }), /conv2d: upsample .* is supported on the CPU only/);
});

test.run();
