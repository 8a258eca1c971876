// upsample_nearest2x, concat, slice, permute, cast, contiguous: exact data movement checked element by element.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { DEVICE, randn, roundTo, t } from '../helpers/check';
import { floatToBf16Bits, floatToHalfBits } from '../../lib/io/half';

const { upsampleNearest2x, concat, slice, permute, cast, contiguous } = hs.ops;
const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const strides = (s: readonly number[]) => {
  const r = new Array(s.length).fill(1);
  for (let i = s.length - 2; i >= 0; i--) r[i] = r[i + 1] * s[i + 1];
  return r;
};
/** Calls f(outIndex, coords) for every element of shape s, row-major. */
function each(s: readonly number[], f: (i: number, c: number[]) => void) {
  const c = new Array(s.length).fill(0);
  for (let i = 0; i < size(s); i++) {
    let r = i;
    for (let d = s.length - 1; d >= 0; d--) { c[d] = r % s[d]; r = Math.floor(r / s[d]); }
    f(i, c);
  }
}
const at = (x: ArrayLike<number>, s: readonly number[], c: number[]) => x[c.reduce((o, v, d) => o + v * strides(s)[d], 0)];

const DTYPES = ['f32', 'f16', 'bf16'] as const;

for (const dtype of DTYPES)
  test(`upsampleNearest2x ${dtype} [2, 3, 5, 7]`, async () => {
    const s = [2, 3, 5, 7], xv = randn(size(s), 1);
    const y = upsampleNearest2x(t(xv, s, dtype));
    assert.equal(y.shape, [2, 6, 10, 7]);
    const out = await y.floats(), xr = roundTo(dtype, xv);
    each(y.shape, (i, [n, h, w, c]) => assert.is(out[i], at(xr, s, [n, h >> 1, w >> 1, c])));
  });

for (const dtype of DTYPES)
  test(`concat ${dtype}: three inputs along each axis, negative axis`, async () => {
    const base = [3, 4, 5];
    for (const axis of [0, 1, 2, -1]) {
      const ax = axis < 0 ? axis + 3 : axis;
      const parts = [2, 1, 3].map((k, j) => {
        const s = base.slice();
        s[ax] = k;
        return { s, v: randn(size(s), 10 + j) };
      });
      const y = concat(parts.map((p) => t(p.v, p.s, dtype)), axis);
      const ys = base.slice();
      ys[ax] = 6;
      assert.equal(y.shape, ys);
      const out = await y.floats();
      each(ys, (i, c) => {
        let k = c[ax], j = 0;
        while (k >= parts[j].s[ax]) k -= parts[j++].s[ax];
        const cc = c.slice();
        cc[ax] = k;
        assert.is(out[i], at(roundTo(dtype, parts[j].v), parts[j].s, cc), `axis ${axis} element ${i}`);
      });
    }
  });

// Along the last axis with whole 16-byte rows (on CUDA: 16-byte units, as the UNet's skip concats and GEGLU's
// halves), then slices of it that start on and off a 16-byte boundary.
for (const dtype of DTYPES)
  test(`concat and slice ${dtype} along channels, 16-byte rows`, async () => {
    const shapes = [[2, 3, 16], [2, 3, 8], [2, 3, 24]], vals = shapes.map((s, j) => randn(size(s), 40 + j));
    const y = concat(shapes.map((s, j) => t(vals[j], s, dtype)), -1);
    assert.equal(y.shape, [2, 3, 48]);
    const out = await y.floats();
    each([2, 3, 48], (i, [a, b, c]) => {
      const j = c < 16 ? 0 : c < 24 ? 1 : 2, k = c - [0, 16, 24][j];
      assert.is(out[i], at(roundTo(dtype, vals[j]), shapes[j], [a, b, k]), `element ${i}`);
    });
    for (const [start, length] of [[8, 16], [4, 24], [0, 48], [40, 8]]) {
      const z = await slice(y, 2, start, length).floats();
      each([2, 3, length], (i, [a, b, c]) => assert.is(z[i], out[(a * 3 + b) * 48 + start + c], `slice ${start} element ${i}`));
    }
  });

test('concat: i32 tensors and a single input', async () => {
  const a = hs.tensor(Int32Array.from([1, 2, 3, 4]), [2, 2], { device: DEVICE }), b = hs.tensor(Int32Array.from([5, 6]), [2, 1], { device: DEVICE });
  assert.equal(await concat([a, b], 1).toArray(), [1, 2, 5, 3, 4, 6]);
  assert.equal(await concat([a], 0).toArray(), [1, 2, 3, 4]);
});

for (const dtype of DTYPES)
  test(`slice ${dtype}: start/length/step along each axis`, async () => {
    const s = [4, 9, 6], xv = randn(size(s), 2), xr = roundTo(dtype, xv);
    const x = t(xv, s, dtype);
    for (const [axis, start, length, step] of [[0, 1, 2, 1], [1, 2, 3, 3], [2, 5, 1, 1], [-1, 0, 3, 2], [1, 0, 9, 1]]) {
      const ax = axis < 0 ? axis + 3 : axis;
      const y = slice(x, axis, start, length, step);
      const ys = s.slice();
      ys[ax] = length;
      assert.equal(y.shape, ys);
      const out = await y.floats();
      each(ys, (i, c) => {
        const cc = c.slice();
        cc[ax] = start + step * c[ax];
        assert.is(out[i], at(xr, s, cc));
      });
    }
  });

for (const dtype of DTYPES)
  test(`permute ${dtype}: NCHW <-> NHWC and a 4-d shuffle`, async () => {
    const s = [2, 5, 3, 7], xv = randn(size(s), 3), xr = roundTo(dtype, xv);
    const x = t(xv, s, dtype);
    for (const dims of [[0, 2, 3, 1], [0, 3, 1, 2], [3, 1, 0, 2], [0, 1, 2, 3], [-1, 0, 1, 2]]) {
      const d = dims.map((v) => (v < 0 ? v + 4 : v));
      const y = permute(x, dims);
      assert.equal(y.shape, d.map((k) => s[k]));
      const out = await y.floats();
      each(y.shape, (i, c) => {
        const xc = new Array(4);
        d.forEach((k, j) => (xc[k] = c[j]));
        assert.is(out[i], at(xr, s, xc));
      });
    }
  });

for (const dtype of DTYPES)
  test(`permute ${dtype}: axes moved to the end over several 32 x 32 tiles (the batched-transpose path) and 2-d`, async () => {
    for (const [s, dims] of [[[2, 37, 5, 70], [0, 2, 3, 1]], [[2, 37, 5, 70], [0, 3, 1, 2]], [[45, 67], [1, 0]],
      [[3, 33, 2, 3], [0, 2, 3, 1]]] as [number[], number[]][]) {
      const xv = roundTo('f32', randn(size(s), 7)), xr = roundTo(dtype, xv);
      const y = permute(t(xv, s, dtype), dims);
      assert.equal(y.shape, dims.map((k) => s[k]));
      const out = await y.floats();
      each(y.shape, (i, c) => {
        const xc = new Array(s.length);
        dims.forEach((k, j) => (xc[k] = c[j]));
        if (!Object.is(out[i], at(xr, s, xc))) assert.unreachable(`[${s}] dims [${dims}] at [${c}]: ${out[i]} != ${at(xr, s, xc)}`);
      });
    }
  });

test('permute round trip and contiguous', async () => {
  const s = [3, 4, 5], xv = randn(60, 4);
  const x = t(xv, s);
  const back = await permute(permute(x, [2, 0, 1]), [1, 2, 0]).floats();
  assert.equal(Array.from(back), Array.from(roundTo('f32', xv)));
  const c = contiguous(x);
  assert.equal(c.shape, s);
  assert.equal(Array.from(await c.floats()), Array.from(roundTo('f32', xv)));
});

test('cast f32 -> f16 / bf16: the stored bits of NaNs (with payloads), infinities, overflow and ties, in vectors and tails', async () => {
  // The vector narrowing (AVX2 / F16C) must give float_to_half / float_to_bf16's bits, NaNs included.
  const u = new Uint32Array([0x7fc00000, 0xffc00001, 0x7f800001, 0x7fa00000, 0x7f800000, 0xff800000, 0x477ff000, 0x477fefff,
    0x3f808000, 0x3f818000, 0x3f807fff, 0x00000001, 0x80000000, 0x33000000, 0x33000001, 0x387fc000, 0x7f7fffff]);
  const n = 3 * u.length + 5;  // several vectors and a tail
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) bits[i] = u[i % u.length];
  const x = hs.tensor(new Float32Array(bits.buffer), [n], { device: DEVICE });  // the bytes as they are
  for (const [dt, ref] of [['f16', floatToHalfBits], ['bf16', floatToBf16Bits]] as const) {
    const got = new Uint16Array((await cast(x, dt).bytes()).slice().buffer);
    const f = new Float32Array(bits.buffer);
    for (let i = 0; i < n; i++) {
      // NaNs from their bits (a JS number may not keep a NaN's payload): float_to_half gives sign | 0x7e00,
      // float_to_bf16 the upper half with the quiet bit set.
      // (On CUDA any NaN: its conversions give their own canonical NaN.)
      const nan = (bits[i] & 0x7fffffff) > 0x7f800000;
      if (nan && DEVICE !== 'cpu') {
        const isNan = dt === 'f16' ? (got[i] & 0x7c00) === 0x7c00 && (got[i] & 0x3ff) !== 0 : (got[i] & 0x7f80) === 0x7f80 && (got[i] & 0x7f) !== 0;
        assert.ok(isNan, `NaN -> ${dt} 0x${got[i].toString(16)}`);
        continue;
      }
      const want = !nan ? ref(f[i]) : dt === 'f16' ? ((bits[i] >>> 16) & 0x8000) | 0x7e00 : (bits[i] >>> 16) | 0x40;
      if (got[i] !== want) assert.unreachable(`f32 bits 0x${bits[i].toString(16)} -> ${dt} 0x${got[i].toString(16)}, want 0x${want.toString(16)} [${i}]`);
    }
  }
});

test('cast between float dtypes and from integers', async () => {
  const xv = randn(101, 5, 3);
  const x = t(xv, [101]);
  for (const dt of DTYPES) {
    const y = cast(x, dt);
    assert.is(y.dtype, dt);
    assert.equal(Array.from(await y.floats()), Array.from(roundTo(dt, xv)), `f32 -> ${dt}`);
    assert.equal(Array.from(await cast(y, 'f32').floats()), Array.from(roundTo(dt, xv)), `${dt} -> f32`);
  }
  assert.equal(Array.from(await cast(cast(x, 'f16'), 'bf16').floats()), Array.from(roundTo('bf16', roundTo('f16', xv))));
  // Past the kernel's 4096-value blocks and the pool's chunks, with values that hit the rounding: f16
  // subnormals, ties, the largest f16, -0 (no f16 overflow: the reference roundTo does not model it).
  const special = [0, -0, 65504, -65504, 6.1e-5, 5.96e-8, 2.98e-8, 1e-7, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8];
  const big = Float32Array.from({ length: 40000 }, (_, i) => (i % 3 === 0 ? special[i % special.length] : Math.sin(i) * 10 ** ((i % 9) - 4)));
  const xb = t(big, [big.length]);
  for (const dt of ['f16', 'bf16'] as const) {
    const y = cast(xb, dt);
    const want = roundTo(dt, big), got = await y.floats();
    for (let i = 0; i < big.length; i++) if (!Object.is(got[i], want[i])) assert.unreachable(`f32 -> ${dt} [${i}]: ${big[i]} -> ${got[i]}, want ${want[i]}`);
    const back = await cast(cast(y, dt === 'f16' ? 'bf16' : 'f16'), 'f32').floats();
    const want2 = roundTo(dt === 'f16' ? 'bf16' : 'f16', want);
    for (let i = 0; i < big.length; i++) {
      if (dt === 'bf16' && Math.abs(want[i]) > 65504) {  // past the f16 range: infinity (roundTo does not model it)
        assert.is(back[i], want[i] > 0 ? Infinity : -Infinity);
        continue;
      }
      if (!Object.is(back[i], want2[i])) assert.unreachable(`${dt} -> other half [${i}]: ${back[i]}, want ${want2[i]}`);
    }
  }
  const ids = hs.tensor(BigInt64Array.from([0n, -5n, 123456789n]), [3], { device: DEVICE });
  assert.equal(await cast(ids, 'i32').toArray(), [0, -5, 123456789]);
  assert.equal(Array.from(await cast(ids, 'f32').floats()), [0, -5, Math.fround(123456789)]);
  const i32 = hs.tensor(Int32Array.from([7, -8]), [2], { device: DEVICE });
  assert.equal(await cast(i32, 'i64').toArray(), [7, -8]);
  // i64 -> i32 wraps (two's complement, as PyTorch): it had gone through a double and an out-of-range double
  // -> int conversion (undefined; -2^31 here). i64 -> f32 rounds once (through a double: 2^54 + 2^30 + 1 -> 2^54).
  const wide = hs.tensor(BigInt64Array.from([5000000000n, -3000000000n, 2n ** 32n + 1n, 2n ** 54n + 2n ** 30n + 1n]), [4], { device: DEVICE });
  assert.equal(await cast(wide, 'i32').toArray(), [705032704, 1294967296, 1, 1073741825]);
  assert.equal(Array.from(await cast(wide, 'f32').floats()), [Math.fround(5e9), Math.fround(-3e9), 2 ** 32, 2 ** 54 + 2 ** 31]);
});

test('shape ops: argument errors name the op, the argument and the shapes', () => {
  const x = t(randn(60), [3, 4, 5]);
  assert.throws(() => upsampleNearest2x(x), /upsampleNearest2x: x must have rank 4, got shape \[3,4,5\]/);
  assert.throws(() => concat([x, t(randn(24), [3, 4, 2])], 0), /concat: tensor 1 \[3,4,2\] does not match tensor 0 \[3,4,5\] outside axis 0/);
  assert.throws(() => concat([x, t(randn(60), [3, 4, 5], 'f16')], 0), /concat: tensor 1 is f16 but tensor 0 is f32/);
  assert.throws(() => concat([], 0), /concat: needs a non-empty array/);
  assert.throws(() => concat([x], 3), /concat: axis 3 is out of range for shape \[3,4,5\]/);
  assert.throws(() => slice(x, 1, 2, 2, 2), /slice: start 2, length 2, step 2 reach outside axis 1 of x \[3,4,5\]/);
  assert.throws(() => slice(x, 1, 0, 1, 0), /slice: step must be an integer >= 1/);
  assert.throws(() => permute(x, [0, 0, 1]), /permute: dims \[0,0,1\] is not a permutation of the 3 dims of x \[3,4,5\]/);
  assert.throws(() => cast(x, 'i32'), /cast: cannot cast f32 to i32/);
  assert.throws(() => cast(x, 'f64' as hs.DType), /cast: unknown dtype 'f64'/);
});

test.run();
