// Half-precision conversions: IEEE float16 and bfloat16 <-> float32, scalar and whole arrays.
//
// Layout: a half value is its 16 raw bits (a number 0..65535, or a Uint16Array element), little-endian
// as safetensors stores it. Narrowing rounds to nearest, ties to even (what PyTorch's .half()/.bfloat16()
// do), overflows to +-Inf, keeps NaN a (quiet) NaN and produces float16 subnormals.
// Why: model files are mostly F16/BF16 while the CPU computes in f32; widening runs through a 64Ki-entry
// table (256 KiB, built on first use) because it is the hot path when loading gigabytes of weights.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float16 bits -> number (exact). */
export function halfBitsToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** number -> float16 bits, round to nearest even (via the float32 value, as a float32 -> float16 cast). */
export function floatToHalfBits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Result is a float16 subnormal (or zero): value = m * 2^(e-15-23) with the implicit bit set.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let hm = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (hm & 1))) hm++;
    return sign | hm; // a carry into bit 10 is exactly the smallest normal
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // a carry may run into the exponent: correct, up to Inf
  return h;
}

/** bfloat16 bits -> number (exact). */
export function bf16BitsToFloat(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

/** number -> bfloat16 bits, round to nearest even; NaN stays NaN. */
export function floatToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff)) return (b >>> 16) | 0x40;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

let f16Table: Float32Array | null = null;
function table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = halfBitsToFloat(i);
  }
  return f16Table;
}

/** Widen float16 bits to float32. `dst` (same length) is written when given. */
export function f16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLen(src.length, dst.length);
  const t = table();
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]];
  return dst;
}

/** Widen bfloat16 bits to float32 (a 16-bit shift). */
export function bf16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLen(src.length, dst.length);
  const d = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) d[i] = src[i] << 16;
  return dst;
}

/** Narrow to float16 bits, round to nearest even. */
export function f32ToF16(src: ArrayLike<number>, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLen(src.length, dst.length);
  for (let i = 0; i < src.length; i++) dst[i] = floatToHalfBits(src[i]);
  return dst;
}

/** Narrow to bfloat16 bits, round to nearest even. */
export function f32ToBf16(src: ArrayLike<number>, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLen(src.length, dst.length);
  for (let i = 0; i < src.length; i++) dst[i] = floatToBf16Bits(src[i]);
  return dst;
}

function checkLen(n: number, m: number): void {
  if (n !== m) throw new Error(`half conversion: destination has ${m} elements, source has ${n}`);
}
