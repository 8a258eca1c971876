// rand: Philox4x32-10 (native/include/hypersd/philox.h) against a JS Philox, known-answer vectors, and statistics.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { DEVICE, roundTo } from '../helpers/check';

const { randn, rand } = hs.ops;
const opts = (seed: number, offset = 0, dtype: hs.DType = 'f32') => ({ seed, offset, dtype, device: DEVICE });

/** Philox4x32-10 in JS (BigInt products): counter [4 x u32], key [2 x u32]. */
function philox(ctr: number[], key: number[]): number[] {
  let [x, y, z, w] = ctr.map((v) => v >>> 0);
  let [k0, k1] = key.map((v) => v >>> 0);
  const mul = (a: number, b: number) => {
    const p = BigInt(a) * BigInt(b);
    return [Number(p >> 32n) >>> 0, Number(p & 0xffffffffn) >>> 0];
  };
  for (let r = 0; r < 10; r++) {
    const [hi0, lo0] = mul(0xd2511f53, x), [hi1, lo1] = mul(0xcd9e8d57, z);
    [x, y, z, w] = [(hi1 ^ y ^ k0) >>> 0, lo1, (hi0 ^ w ^ k1) >>> 0, lo0];
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  return [x, y, z, w];
}
const split = (v: number) => [v % 2 ** 32, Math.floor(v / 2 ** 32)];
/** Element i as philox.h defines it: uniform exactly, normal as float64 Box-Muller of the same uniforms. */
function element(seed: number, offset: number, i: number, normal: boolean): number {
  const g = Math.floor(i / 4), lane = i % 4;
  const r = philox([...split(g), ...split(offset)], split(seed));
  if (!normal) return (r[lane] >>> 8) * 2 ** -24;
  const a = lane < 2 ? r[0] : r[2], b = lane < 2 ? r[1] : r[3];
  const u1 = ((a >>> 8) + 1) * 2 ** -24, u2 = (b >>> 8) * 2 ** -24;
  const rad = Math.sqrt(-2 * Math.log(u1));
  return lane & 1 ? rad * Math.sin(2 * Math.PI * u2) : rad * Math.cos(2 * Math.PI * u2);
}

test('the JS Philox reproduces the Random123 known-answer vectors', () => {
  assert.equal(philox([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
  assert.equal(philox([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
  assert.equal(philox([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]), [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]);
});

test('rand: uniforms equal philox.h bit for bit (seed above 2^32, offset above 2^32)', async () => {
  for (const [seed, offset] of [[0, 0], [42, 7], [2 ** 40 + 12345, 2 ** 33 + 5]]) {
    const y = await rand([3, 37], opts(seed, offset)).floats();
    for (let i = 0; i < y.length; i++) assert.is(y[i], element(seed, offset, i, false), `seed ${seed} offset ${offset} element ${i}`);
  }
});

test('randn: normals match Box-Muller of the same uniforms', async () => {
  const seed = 1234, y = await randn([1001], opts(seed, 3)).floats();
  let worst = 0;
  for (let i = 0; i < y.length; i++) worst = Math.max(worst, Math.abs(y[i] - element(seed, 3, i, true)));
  assert.ok(worst < 2e-6, `largest difference ${worst}`);
});

test('randn: same seed same numbers; another seed or offset gives others', async () => {
  const a = await randn([4, 257], opts(7)).floats(), b = await randn([4, 257], opts(7)).floats();
  assert.equal(Array.from(a), Array.from(b));
  const c = await randn([4, 257], opts(8)).floats(), d = await randn([4, 257], opts(7, 1)).floats();
  let same = 0;
  for (let i = 0; i < a.length; i++) same += +(a[i] === c[i]) + +(a[i] === d[i]);
  assert.is(same, 0);
  // A prefix of a bigger draw is the smaller draw (element i depends only on seed, offset and i).
  const big = await randn([3000], opts(7)).floats();
  assert.equal(Array.from(big.subarray(0, a.length)), Array.from(a));
});

test('randn / rand: 1e6 samples have the right moments and range', async () => {
  const n = 1_000_000;
  const z = await randn([1000, 1000], opts(99)).floats();
  let s1 = 0, s2 = 0, tail = 0;
  for (let i = 0; i < n; i++) {
    s1 += z[i];
    s2 += z[i] * z[i];
    if (Math.abs(z[i]) > 2) tail++;
  }
  const m = s1 / n, sd = Math.sqrt(s2 / n - m * m);
  assert.ok(Math.abs(m) < 5e-3, `mean ${m}`);
  assert.ok(Math.abs(sd - 1) < 5e-3, `std ${sd}`);
  assert.ok(Math.abs(tail / n - 0.0455) < 2e-3, `P(|z| > 2) = ${tail / n}`);
  const u = await rand([n], opts(99)).floats();
  let lo = 1, hi = 0, su = 0;
  for (let i = 0; i < n; i++) {
    lo = Math.min(lo, u[i]);
    hi = Math.max(hi, u[i]);
    su += u[i];
  }
  assert.ok(lo >= 0 && hi < 1, `range [${lo}, ${hi}]`);
  assert.ok(Math.abs(su / n - 0.5) < 2e-3, `mean ${su / n}`);
});

test('randn in f16 / bf16 is the f32 draw rounded', async () => {
  const f = await randn([2, 99], opts(5)).floats();
  for (const dtype of ['f16', 'bf16'] as const) {
    const y = randn([2, 99], opts(5, 0, dtype));
    assert.is(y.dtype, dtype);
    assert.equal(Array.from(await y.floats()), Array.from(roundTo(dtype, f)));
  }
});

test('random: argument errors', () => {
  assert.throws(() => randn([2], { seed: -1 }), /randn: seed must be a non-negative safe integer, got -1/);
  assert.throws(() => rand([2], { seed: 1.5 }), /rand: seed must be a non-negative safe integer/);
  assert.throws(() => randn([2], { seed: 1, offset: -2 }), /randn: offset must be a non-negative safe integer, got -2/);
  assert.throws(() => randn([2], { seed: 1, dtype: 'i32' }), /randn: dtype must be a float dtype, got i32/);
});

test.run();
