// Gradients of the elementwise ops (broadcasting reduced back to each input's shape), clamp, the scheduler
// step, the shape ops (concat, slice with steps, permute, cast, copy, upsample), embedding (repeated ids),
// sum_to / mean (written through a reshape view) and timestep_embedding, against float64 central differences.
import { test } from 'uvu';
import * as hs from '../../lib';
import '../../lib/autograd';
import { checkGrad, broadcast2, rnd, type In } from './fd';

const o = hs.ops;

const binaries = {
  add: [o.add, (x: number, y: number) => x + y],
  sub: [o.sub, (x: number, y: number) => x - y],
  mul: [o.mul, (x: number, y: number) => x * y],
  div: [o.div, (x: number, y: number) => x / y],
} as const;
const shapePairs: [number[], number[]][] = [[[3, 4], [3, 4]], [[2, 3, 4], [4]], [[2, 1, 4], [3, 1]], [[1, 5], [2, 3, 1]]];
for (const [name, [op, f]] of Object.entries(binaries))
  for (const [as, bs] of shapePairs)
    test(`${name} [${as}] with [${bs}]`, async () => {
      const a = rnd(as, 1), b = rnd(bs, 2);
      // keep the divisor away from 0
      const bb: In = name === 'div' ? { ...b, data: Array.from(b.data, (v) => (v >= 0 ? v + 1 : v - 1)) } : b;
      await checkGrad(name, [a, bb], ([x, y]) => op(x, y), ([x, y]) => broadcast2(x, as, y, bs, f));
    });

test('affine, clamp and a number operand', async () => {
  await checkGrad('affine', [rnd([7], 3)], ([x]) => o.affine(x, -1.5, 2), ([x]) => x.map((v) => -1.5 * v + 2));
  await checkGrad('mul by a number', [rnd([7], 4)], ([x]) => o.mul(x, 3), ([x]) => x.map((v) => 3 * v));
  // values clear of the bounds, so the derivative is 0 or 1 without a kink in the finite differences
  const x: In = { shape: [8], data: [-2, -1.2, -0.4, 0.1, 0.3, 0.9, 1.4, 3] };
  await checkGrad('clamp', [x], ([t]) => o.clamp(t, -1, 1), ([v]) => v.map((u) => Math.min(Math.max(u, -1), 1)));
});

test('scheduler_step: a x + b eps + c noise', async () => {
  await checkGrad('scheduler_step', [rnd([2, 5], 5), rnd([2, 5], 6), rnd([2, 5], 7)], ([x, e, n]) => o.schedulerStep(x, e, n, 0.9, -0.3, 0.2),
    ([x, e, n]) => x.map((v, i) => 0.9 * v - 0.3 * e[i] + 0.2 * n[i]));
});

test('concat along a middle axis', async () => {
  await checkGrad('concat', [rnd([2, 3, 2], 8), rnd([2, 1, 2], 9), rnd([2, 2, 2], 10)], (ts) => o.concat(ts, 1), ([a, b, c]) => {
    const y: number[] = [];
    for (let n = 0; n < 2; n++) for (const [t, L] of [[a, 3], [b, 1], [c, 2]] as const) for (let i = 0; i < L * 2; i++) y.push(t[n * L * 2 + i]);
    return y;
  });
});

for (const [start, len, step] of [[1, 3, 1], [0, 5, 1], [2, 2, 2], [1, 3, 3], [0, 3, 2]] as const)
  test(`slice start ${start} length ${len} step ${step}`, async () => {
    const xs = [2, 9, 3];
    await checkGrad('slice', [rnd(xs, 11)], ([x]) => o.slice(x, 1, start, len, step), ([x]) => {
      const y: number[] = [];
      for (let n = 0; n < 2; n++) for (let i = 0; i < len; i++) for (let c = 0; c < 3; c++) y.push(x[(n * 9 + start + step * i) * 3 + c]);
      return y;
    });
  });

test('permute (NCHW -> NHWC)', async () => {
  const [N, C, H, W] = [2, 3, 2, 4];
  await checkGrad('permute', [rnd([N, C, H, W], 12)], ([x]) => o.permute(x, [0, 2, 3, 1]), ([x]) => {
    const y: number[] = [];
    for (let n = 0; n < N; n++) for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) for (let c = 0; c < C; c++) y.push(x[((n * C + c) * H + h) * W + w]);
    return y;
  });
});

test('cast to f16 and back, contiguous copy', async () => {
  await checkGrad('cast', [rnd([6], 13)], ([x]) => o.cast(o.cast(x, 'f16'), 'f32'), ([x]) => x, { fwdTol: 1e-3 });
  await checkGrad('copy', [rnd([6], 14)], ([x]) => o.contiguous(x), ([x]) => x);
});

test('upsample_nearest2x: the 2x2 sum', async () => {
  const [N, H, W, C] = [2, 3, 2, 3];
  await checkGrad('upsample', [rnd([N, H, W, C], 15)], ([x]) => o.upsampleNearest2x(x), ([x]) => {
    const y: number[] = [];
    for (let n = 0; n < N; n++) for (let h = 0; h < 2 * H; h++) for (let w = 0; w < 2 * W; w++) for (let c = 0; c < C; c++) y.push(x[((n * H + (h >> 1)) * W + (w >> 1)) * C + c]);
    return y;
  });
});

test('embedding: repeated ids add up in the table gradient', async () => {
  const ids: In = { shape: [2, 4], data: [3, 1, 3, 0, 5, 3, 1, 1], int: true };
  await checkGrad('embedding', [ids, rnd([6, 37], 16)], ([i, t]) => o.embedding(i, t), ([i, t]) => {
    const y: number[] = [];
    for (const id of i) for (let d = 0; d < 37; d++) y.push(t[id * 37 + d]);
    return y;
  });
});

test('sumTo and mean (mean writes through a reshape view)', async () => {
  await checkGrad('sumTo', [rnd([2, 3, 4], 17)], ([x]) => o.sumTo(x, [3, 1], 0.5), ([x]) => {
    const y = new Float64Array(3);
    for (let n = 0; n < 2; n++) for (let i = 0; i < 3; i++) for (let k = 0; k < 4; k++) y[i] += 0.5 * x[(n * 3 + i) * 4 + k];
    return y;
  });
  await checkGrad('mean', [rnd([2, 3, 4], 18)], ([x]) => o.mean(x, [0, 2]), ([x]) => {
    const y = new Float64Array(3);
    for (let n = 0; n < 2; n++) for (let i = 0; i < 3; i++) for (let k = 0; k < 4; k++) y[i] += x[(n * 3 + i) * 4 + k] / 8;
    return y;
  });
  await checkGrad('mean all', [rnd([5, 2], 19)], ([x]) => o.mean(x), ([x]) => [x.reduce((a, b) => a + b, 0) / 10]);
});

test('reshape views carry gradients (and a reshaped parameter)', async () => {
  await checkGrad('reshape', [rnd([2, 6], 20), rnd([12], 21)], ([x, w]) => o.mul(x.reshape([3, 4]), w.reshape([3, 4])).reshape([12]),
    ([x, w]) => x.map((v, i) => v * w[i]));
});

for (const flip of [false, true])
  test(`timestep_embedding: d/dt${flip ? ' (flip_sin_to_cos)' : ''}, odd dim`, async () => {
    const t: In = { shape: [3], data: [0.5, 1.7, 3.2] };
    const dim = 9, shift = 1, scale = 0.8, half = 4;
    await checkGrad('timestep_embedding', [t], ([x]) => o.timestepEmbedding(x, dim, { flipSinToCos: flip, freqShift: shift, scale }), ([x]) => {
      const y: number[] = [];
      for (const tv of x) {
        const sin: number[] = [], cos: number[] = [];
        for (let j = 0; j < half; j++) {
          const a = scale * tv * Math.exp(-Math.log(10000) * j / (half - shift));
          sin.push(Math.sin(a));
          cos.push(Math.cos(a));
        }
        y.push(...(flip ? [...cos, ...sin] : [...sin, ...cos]), 0);
      }
      return y;
    }, { tol: 1e-4, fwdTol: 1e-5 });
  });

test('a chain: broadcast bias, concat skip, upsample, slice crop', async () => {
  const xs = [1, 3, 3, 2];
  await checkGrad('chain', [rnd(xs, 22), rnd([2], 23), rnd([1, 5, 5, 2], 24)], ([x, b, skip]) => {
    const u = o.upsampleNearest2x(o.add(x, b.reshape([1, 1, 1, 2])));
    const c = o.slice(o.slice(u, 1, 0, 5), 2, 0, 5);
    return o.concat([c, skip], 3);
  }, ([x, b, skip]) => {
    const y: number[] = [];
    for (let h = 0; h < 5; h++) for (let w = 0; w < 5; w++) {
      for (let c = 0; c < 2; c++) y.push(x[((h >> 1) * 3 + (w >> 1)) * 2 + c] + b[c]);
      for (let c = 0; c < 2; c++) y.push(skip[(h * 5 + w) * 2 + c]);
    }
    return y;
  });
});

test.run();
