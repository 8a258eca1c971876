// The input gradient of conv2d both ways: the conv2d_backward_input kernel (the default) and, with
// HYPERSD_CONV_BWD=fwd, a forward convolution of dy with the transposed, flipped weight (lib/ops/conv.grad.ts),
// against a float64 reference, in f32, f16 and bf16 weights (on CUDA dy is rounded to bf16 for bf16 weights),
// with and without accumulation into an existing gradient (LoCon's second term), over kernel sizes 1, 3 and 5
// with every padding the rewrite takes. A bad value of the switch is an Error naming it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { conv2dBackwardInput } from '../../lib/ops/conv.grad';
import { native } from '../../lib/native';
import { runOp } from '../../lib/ops/runtime';
import { assertClose, DEVICE, randn, roundTo, t, TOL } from '../helpers/check';

function dxRef(dy: Float64Array, w: Float64Array, N: number, H: number, W: number, Cin: number, Cout: number, k: number, pad: number) {
  const Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1;
  const dx = new Float64Array(N * H * W * Cin);
  for (let n = 0; n < N; n++)
    for (let h = 0; h < H; h++)
      for (let x = 0; x < W; x++)
        for (let ci = 0; ci < Cin; ci++) {
          let acc = 0;
          for (let ky = 0; ky < k; ky++) {
            const ho = h + pad - ky;
            if (ho < 0 || ho >= Ho) continue;
            for (let kx = 0; kx < k; kx++) {
              const wo = x + pad - kx;
              if (wo < 0 || wo >= Wo) continue;
              for (let co = 0; co < Cout; co++)
                acc += dy[((n * Ho + ho) * Wo + wo) * Cout + co] * w[((co * k + ky) * k + kx) * Cin + ci];
            }
          }
          dx[((n * H + h) * W + x) * Cin + ci] = acc;
        }
  return dx;
}

function withMode<T>(mode: string, fn: () => T): T {
  const old = process.env.HYPERSD_CONV_BWD;
  process.env.HYPERSD_CONV_BWD = mode;
  try {
    return fn();
  } finally {
    if (old === undefined) delete process.env.HYPERSD_CONV_BWD;
    else process.env.HYPERSD_CONV_BWD = old;
  }
}

const cases: [number, number, number, number, number, number, number][] = [
  // N, H, W, Cin, Cout, k, pad
  [2, 6, 7, 5, 7, 3, 1],
  [1, 6, 5, 8, 16, 3, 0],
  [2, 4, 4, 3, 9, 1, 0],
  [1, 7, 6, 6, 4, 5, 2],
  [1, 5, 5, 16, 8, 5, 1],
];

for (const dtype of ['f32', 'f16', 'bf16'] as const)
  for (const [N, H, W, Cin, Cout, k, pad] of cases)
    test(`conv2d input gradient ${dtype}, k ${k} pad ${pad}, ${Cin} -> ${Cout}, native and as a forward convolution`, async () => {
      const Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1;
      const wv = randn(Cout * k * k * Cin, 31, 0.5), dyv = randn(N * Ho * Wo * Cout, 32), prev = randn(N * H * W * Cin, 33);
      const w = t(wv, [Cout, k, k, Cin], dtype), dy = t(dyv, [N, Ho, Wo, Cout]);
      const wr = roundTo(dtype, wv);
      // on CUDA the rewrite rounds dy to the weight's bf16 first (f16 weights keep the backward kernel there); the
      // CPU convolves the f32 dy
      const rounds = DEVICE !== 'cpu' && dtype === 'bf16';
      const refNative = dxRef(Float64Array.from(dyv), wr, N, H, W, Cin, Cout, k, pad);
      const ref = rounds ? dxRef(roundTo(dtype, dyv), wr, N, H, W, Cin, Cout, k, pad) : refNative;
      const xShape = [N, H, W, Cin];
      for (const mode of ['native', 'fwd']) {
        const want = mode === 'fwd' ? ref : refNative;
        const dx = withMode(mode, () => conv2dBackwardInput(dy, w, xShape, { pad }));
        assert.equal(dx.dtype, 'f32');
        assert.equal(dx.shape, xShape);
        assertClose(await dx.floats(), want, TOL[dtype], `${mode} dx`);
        // accumulation into an existing gradient
        const into = t(prev, xShape);
        withMode(mode, () => conv2dBackwardInput(dy, w, xShape, { pad }, into));
        assertClose(await into.floats(), want.map((v, i) => v + prev[i]), TOL[dtype], `${mode} dx accumulated`);
        for (const x of [dx, into]) x.dispose();
      }
      for (const x of [w, dy]) x.dispose();
    });

test('conv2d input gradient: stride 2 and asymmetric padding need stay on the backward kernel under HYPERSD_CONV_BWD=fwd', async () => {
  const [N, H, W, Cin, Cout, k, pad] = [1, 7, 7, 3, 4, 3, 1];
  const Ho = Math.floor((H + 2 * pad - k) / 2) + 1;
  const w = t(randn(Cout * k * k * Cin, 41), [Cout, k, k, Cin]), dy = t(randn(N * Ho * Ho * Cout, 42), [N, Ho, Ho, Cout]);
  const a = await withMode('native', () => conv2dBackwardInput(dy, w, [N, H, W, Cin], { pad, stride: 2 })).floats();
  const b = await withMode('fwd', () => conv2dBackwardInput(dy, w, [N, H, W, Cin], { pad, stride: 2 })).floats();
  assert.equal(Array.from(b), Array.from(a));
});

// Accumulating (beta = 1) into an f32 view 4 bytes off a 16-byte boundary: CUDA's OutAs computes such an output in
// an aligned temporary holding the old values (it had kept the view itself when already f32 and contiguous).
test('conv2d input gradient accumulated into a view off a 16-byte boundary: the bits of a fresh output, nothing else written', async () => {
  const [N, H, W, Cin, Cout, k, pad] = [1, 6, 5, 8, 16, 3, 1], E = N * H * W * Cin, xShape = [N, H, W, Cin];
  const w = t(randn(Cout * k * k * Cin, 71, 0.5), [Cout, k, k, Cin]), dy = t(randn(N * H * W * Cout, 72), [N, H, W, Cout]);
  const prev = randn(E, 73);
  const fresh = t(prev, xShape);
  runOp('conv2d_backward_input', [dy, w], [fresh], { stride: 1, pad, beta: 1 });
  const bigv = new Float32Array(E + 2).fill(NaN);
  bigv.set(Float32Array.from(prev), 1);
  const big = t(bigv, [E + 2]);
  const view = new hs.Tensor(native().view(big.handle(), xShape, [H * W * Cin, W * Cin, Cin, 1], 1), xShape, 'f32', DEVICE);
  runOp('conv2d_backward_input', [dy, w], [view], { stride: 1, pad, beta: 1 });
  const a = await fresh.floats(), all = await big.floats();
  assert.ok(a.every(Number.isFinite));
  assert.ok(Buffer.from(await view.bytes()).equals(Buffer.from(await fresh.bytes())), 'through the view');
  assert.ok(Number.isNaN(all[0]) && Number.isNaN(all[E + 1]), 'nothing written outside the view');
});

test('HYPERSD_CONV_BWD: an unknown value is an Error naming the variable', () => {
  const w = t(randn(9, 51), [1, 3, 3, 1]), dy = t(randn(16, 52), [1, 4, 4, 1]);
  assert.throws(() => withMode('fast', () => conv2dBackwardInput(dy, w, [1, 4, 4, 1], { pad: 1 })), /HYPERSD_CONV_BWD must be 'native' or 'fwd', got 'fast'/);
});

test.run();
