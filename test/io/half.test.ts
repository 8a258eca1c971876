// half.ts: exhaustive float16 / bfloat16 round trips and round-to-nearest-even at every midpoint.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  bf16BitsToFloat, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, floatToBf16Bits, floatToHalfBits, halfBitsToFloat,
} from '../../lib/io/half';

const f = new Float32Array(1);
const u = new Uint32Array(f.buffer);
const bitsOf = (x: number) => { f[0] = x; return u[0]; };
const fromBits = (b: number) => { u[0] = b >>> 0; return f[0]; };

test('float16 known values', () => {
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [65504, 0x7bff],
    [65519, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-Infinity, 0xfc00], [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], [fromBits(bitsOf(2 ** -25) + 1), 0x0001], [3 * 2 ** -25, 0x0002], [2 ** -14, 0x0400],
    [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [0.1, 0x2e66], [1 / 3, 0x3555],
  ];
  for (const [x, h] of cases) assert.is(floatToHalfBits(x), h, `f16(${x})`);
  assert.ok(Number.isNaN(halfBitsToFloat(floatToHalfBits(NaN))));
  assert.is(floatToHalfBits(NaN) & 0x7c00, 0x7c00);
});

test('float16: every value round-trips; every midpoint rounds to even, neighbours round to nearest', () => {
  for (let h = 0; h < 0x10000; h++) {
    const x = halfBitsToFloat(h);
    if (Number.isNaN(x)) continue;
    assert.is(floatToHalfBits(x), h);
  }
  for (let h = 0; h < 0x7bff; h++) {
    const a = halfBitsToFloat(h), b = halfBitsToFloat(h + 1);
    const mid = (a + b) / 2; // exact in float32
    const even = (h & 1) === 0 ? h : h + 1;
    assert.is(floatToHalfBits(mid), even, `midpoint of ${h}`);
    assert.is(floatToHalfBits(fromBits(bitsOf(mid) - 1)), h);
    assert.is(floatToHalfBits(fromBits(bitsOf(mid) + 1)), h + 1);
    assert.is(floatToHalfBits(-mid), even | 0x8000);
  }
});

test('bfloat16: round trip, ties to even, NaN', () => {
  for (let h = 0; h < 0x10000; h++) {
    const x = bf16BitsToFloat(h);
    if (Number.isNaN(x)) continue;
    assert.is(floatToBf16Bits(x), h);
  }
  assert.is(floatToBf16Bits(fromBits(0x3f808000)), 0x3f80);
  assert.is(floatToBf16Bits(fromBits(0x3f818000)), 0x3f82);
  assert.is(floatToBf16Bits(fromBits(0x3f808001)), 0x3f81);
  assert.is(floatToBf16Bits(fromBits(0x7f7fffff)), 0x7f80); // rounds up to Inf
  assert.ok(Number.isNaN(bf16BitsToFloat(floatToBf16Bits(NaN))));
  assert.ok(Number.isNaN(bf16BitsToFloat(floatToBf16Bits(fromBits(0x7f800001)))), 'signalling NaN stays NaN');
});

test('array forms agree with the scalar forms', () => {
  const xs = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i * 1.7) * 10 ** ((i % 13) - 6));
  const h = f32ToF16(xs), b = f32ToBf16(xs);
  const hx = f16ToF32(h), bx = bf16ToF32(b);
  for (let i = 0; i < xs.length; i++) {
    assert.is(h[i], floatToHalfBits(xs[i]));
    assert.is(b[i], floatToBf16Bits(xs[i]));
    assert.is(hx[i], Math.fround(halfBitsToFloat(h[i])));
    assert.is(bx[i], bf16BitsToFloat(b[i]));
  }
  assert.throws(() => f16ToF32(new Uint16Array(3), new Float32Array(2)), /destination/);
});

test.run();
