// PyTorch's CPU generator (torch.Generator() / torch.manual_seed), reproduced bit-exactly for float32
// torch.rand and torch.randn, so a user's seed gives the same initial latents and scheduler noise as a diffusers
// script that passes `generator=torch.Generator().manual_seed(seed)` (PyTorch 1.13 semantics, x86-64 with AVX2).
//
// What PyTorch does, and this file mirrors:
// - Engine: MT19937 seeded with the low 32 bits of the seed (Knuth's 1812433253 initialiser); one 32-bit draw per
//   float32 uniform, two (high word first) per float64 uniform.
// - rand (float32): (u32 & 0xFFFFFF) * 2^-24.
// - randn, tensors of >= 16 elements (the vectorised path): fill every element with a float32 uniform first, then
//   Box-Muller over blocks of 16: element j (0..7) and j+8 of a block are a pair, u1 = 1 - data[j] feeds the radius
//   and u2 = data[j+8] the angle; cos goes to j, sin to j+8. If the size is not a multiple of 16, the LAST 16
//   elements are refilled with 16 fresh uniforms and transformed again (overwriting already-finished values).
//   On AVX2 machines the transform is the Cephes-style log/sincos polynomials of PyTorch's avx_mathfun.h in float32,
//   and the compiler contracts some multiply-adds into FMAs; which ones was determined against the fixtures
//   (test/fixtures/rng) and matches them bit for bit. `normalKernel: 'scalar'` selects the non-AVX2 loop that
//   PyTorch uses elsewhere (e.g. ARM): libm float log/cos/sin, approximated here by correctly rounded results.
// - randn, tensors of < 16 elements: per element a float64 Box-Muller from two float64 uniforms
//   (u1 -> angle, u2 -> radius via log(1 - u2)); the sine of each pair is cached in the generator and returned by
//   the next scalar-path draw, across calls. Only the scalar path reads or writes that cache.
// - getState/setState use the 5056-byte layout of torch.Generator.get_state() (CPUGeneratorImplState).

import { fmaF } from '../schedulers/common';  // fmaf for float32 arguments (float64 arithmetic, ties by TwoSum)

const N = 624;
const M = 397;
const TWO_POW_24 = 16777216;
const TWO_POW_53 = 9007199254740992;
/** Bytes in torch's CPU generator state tensor (torch 1.13: CPUGeneratorImplState). */
export const TORCH_CPU_STATE_BYTES = 5056;

export type NormalKernel = 'avx2' | 'scalar';

export interface TorchCpuGeneratorOptions {
  /** Which of PyTorch's float32 normal kernels to mirror for tensors of >= 16 elements (default 'avx2'). */
  normalKernel?: NormalKernel;
}

/**
 * A torch.Generator() on the CPU.
 * @example
 *   const g = new TorchCpuGenerator(1234);
 *   const latents = g.randn(1 * 4 * 64 * 64); // == torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(1234))
 */
export class TorchCpuGenerator {
  private readonly mt = new Uint32Array(N);
  private left = 1;
  private next = 0;
  private seed = 0n;
  private nextDoubleNormal: number | null = null;
  private nextFloatNormal: number | null = null;
  private readonly normalKernel: NormalKernel;

  constructor(seed: number | bigint = 67280421310721n, opts: TorchCpuGeneratorOptions = {}) {
    this.normalKernel = opts.normalKernel ?? 'avx2';
    if (this.normalKernel !== 'avx2' && this.normalKernel !== 'scalar') {
      throw new Error(`TorchCpuGenerator: normalKernel must be 'avx2' or 'scalar', got ${String(opts.normalKernel)}`);
    }
    this.manualSeed(seed);
  }

  /** torch.Generator.manual_seed: negative seeds wrap to uint64 like Python ints do in torch. */
  manualSeed(seed: number | bigint): this {
    if (typeof seed === 'number' && !Number.isSafeInteger(seed)) {
      throw new Error(`TorchCpuGenerator: seed must be an integer, got ${seed}`);
    }
    this.seed = BigInt.asUintN(64, BigInt(seed));
    const s = this.mt;
    s[0] = Number(this.seed & 0xffffffffn);
    for (let j = 1; j < N; j++) {
      const p = s[j - 1] ^ (s[j - 1] >>> 30);
      s[j] = (Math.imul(1812433253, p) + j) >>> 0;
    }
    this.left = 1;
    this.next = 0;
    this.nextDoubleNormal = null;
    this.nextFloatNormal = null;
    return this;
  }

  initialSeed(): bigint {
    return this.seed;
  }

  /** One MT19937 output. */
  random(): number {
    if (--this.left === 0) this.regenerate();
    let y = this.mt[this.next++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** torch.rand(n) in float32: uniform in [0, 1) with 24 random bits. */
  rand(n: number): Float32Array {
    checkSize(n);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat();
    return out;
  }

  /** torch.randn(n) in float32 (any shape with n elements: torch fills contiguous memory in order). */
  randn(n: number): Float32Array {
    checkSize(n);
    const out = new Float32Array(n);
    if (n >= 16) {
      this.normalFill(out);
    } else {
      for (let i = 0; i < n; i++) out[i] = this.normalDouble();
    }
    return out;
  }

  /** torch.Generator.get_state(): 5056 bytes, little-endian CPUGeneratorImplState. */
  getState(): Uint8Array {
    const bytes = new Uint8Array(TORCH_CPU_STATE_BYTES);
    const v = new DataView(bytes.buffer);
    v.setBigUint64(0, this.seed, true); // the_initial_seed
    v.setInt32(8, this.left, true);
    v.setInt32(12, 1, true); // seeded
    v.setBigUint64(16, BigInt(this.next), true);
    for (let i = 0; i < N; i++) v.setBigUint64(24 + 8 * i, BigInt(this.mt[i]), true);
    // normal_x (5016) and normal_rho (5032) are unused dummies; normal_y carries the cached double normal.
    if (this.nextDoubleNormal !== null) {
      v.setFloat64(5024, this.nextDoubleNormal, true);
      v.setInt32(5040, 1, true);
    }
    if (this.nextFloatNormal !== null) {
      v.setFloat32(5048, this.nextFloatNormal, true);
      v.setUint8(5052, 1);
    }
    return bytes;
  }

  /** torch.Generator.set_state() with bytes from getState() or from torch (5056 bytes). */
  setState(state: Uint8Array): void {
    if (!(state instanceof Uint8Array) || state.byteLength !== TORCH_CPU_STATE_BYTES) {
      throw new Error(`TorchCpuGenerator.setState: expected a Uint8Array of ${TORCH_CPU_STATE_BYTES} bytes`);
    }
    const v = new DataView(state.buffer, state.byteOffset, state.byteLength);
    const left = v.getInt32(8, true);
    const next = Number(v.getBigUint64(16, true));
    if (left < 1 || left > N || next < 0 || next > N) {
      throw new Error(`TorchCpuGenerator.setState: corrupt state (left=${left}, next=${next})`);
    }
    this.seed = v.getBigUint64(0, true);
    this.left = left;
    this.next = next;
    for (let i = 0; i < N; i++) this.mt[i] = Number(v.getBigUint64(24 + 8 * i, true) & 0xffffffffn);
    this.nextDoubleNormal = v.getInt32(5040, true) !== 0 ? v.getFloat64(5024, true) : null;
    this.nextFloatNormal = v.getUint8(5052) !== 0 ? v.getFloat32(5048, true) : null;
  }

  private regenerate(): void {
    const s = this.mt;
    for (let k = 0; k < N; k++) {
      const y = (s[k] & 0x80000000) | (s[(k + 1) % N] & 0x7fffffff);
      s[k] = s[(k + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.left = N;
    this.next = 0;
  }

  private uniformFloat(): number {
    return (this.random() & 0xffffff) / TWO_POW_24;
  }

  private uniformDouble(): number {
    const hi = this.random();
    const lo = this.random();
    return ((hi & 0x1fffff) * 4294967296 + lo) / TWO_POW_53;
  }

  /** at::normal_distribution<double> with the generator's cached second value; rounded to float32 by the caller's store. */
  private normalDouble(): number {
    if (this.nextDoubleNormal !== null) {
      const v = this.nextDoubleNormal;
      this.nextDoubleNormal = null;
      return v;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log(1 - u2));
    const theta = 2 * Math.PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  private normalFill(data: Float32Array): void {
    const n = data.length;
    const fill16 = this.normalKernel === 'avx2' ? boxMuller16Avx2 : boxMuller16Scalar;
    for (let i = 0; i < n; i++) data[i] = this.uniformFloat();
    for (let i = 0; i + 16 <= n; i += 16) fill16(data, i);
    if (n % 16 !== 0) {
      for (let i = n - 16; i < n; i++) data[i] = this.uniformFloat();
      fill16(data, n - 16);
    }
  }
}

function checkSize(n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`TorchCpuGenerator: element count must be a non-negative integer, got ${n}`);
}

const f32 = Math.fround;

// Cephes single-precision constants, as in avx_mathfun.h.
const SQRTHF = f32(0.707106781186547524);
const LOG_P = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
  -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1].map(f32);
const LOG_Q1 = f32(-2.12194440e-4);
const LOG_Q2 = f32(0.693359375);
const FOPI = f32(1.27323954473516);
const DP1 = f32(-0.78515625);
const DP2 = f32(-2.4187564849853515625e-4);
const DP3 = f32(-3.77489497744594108e-8);
const COS_P = [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2].map(f32);
const SIN_P = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1].map(f32);
const TWO_PI_F32 = f32(2 * Math.PI);

const bitsF = new Float32Array(1);
const bitsI = new Int32Array(bitsF.buffer);

/** log256_ps for one positive normal float32 (u1 is in (0, 1] here, never denormal). */
function logAvx2(x: number): number {
  bitsF[0] = x;
  const bits = bitsI[0];
  let e = (bits >> 23) - 0x7f + 1;
  bitsI[0] = (bits & ~0x7f800000) | 0x3f000000; // mantissa in [0.5, 1)
  let m = bitsF[0];
  if (m < SQRTHF) {
    e -= 1;
    m = f32(f32(m - 1) + m);
  } else {
    m = f32(m - 1);
  }
  const z = f32(m * m);
  let y = LOG_P[0];
  for (let k = 1; k < LOG_P.length; k++) y = fmaF(y, m, LOG_P[k]);
  y = f32(y * m);
  y = fmaF(y, z, f32(e * LOG_Q1));
  y = fmaF(z, -0.5, y);
  const r = f32(m + y);
  return fmaF(e, LOG_Q2, r);
}

const sincosOut = [0, 0];
/** sincos256_ps for one non-negative float32 angle; writes [sin, cos] into sincosOut. */
function sincosAvx2(x: number): void {
  let j = Math.trunc(f32(x * FOPI));
  j = (j + 1) & ~1;
  const y = j;
  const swapSin = (j & 4) !== 0;
  const negCos = (~(j - 2) & 4) !== 0;
  const sinPoly = (j & 2) === 0;
  let r = fmaF(y, DP1, x);
  r = fmaF(y, DP2, r);
  r = fmaF(y, DP3, r);
  const z = f32(r * r);
  let c = fmaF(COS_P[0], z, COS_P[1]);
  c = fmaF(c, z, COS_P[2]);
  c = f32(c * z);
  c = fmaF(c, z, -f32(z * 0.5));
  c = f32(c + 1);
  let s = fmaF(SIN_P[0], z, SIN_P[1]);
  s = fmaF(s, z, SIN_P[2]);
  s = f32(s * z);
  s = fmaF(s, r, r);
  const sn = sinPoly ? s : c;
  const cs = sinPoly ? c : s;
  sincosOut[0] = swapSin ? -sn : sn;
  sincosOut[1] = negCos ? -cs : cs;
}

function boxMuller16Avx2(d: Float32Array, off: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - d[off + j]);
    const radius = f32(Math.sqrt(f32(-2 * logAvx2(u1))));
    sincosAvx2(f32(TWO_PI_F32 * d[off + j + 8]));
    d[off + j] = radius * sincosOut[1];
    d[off + j + 8] = radius * sincosOut[0];
  }
}

function boxMuller16Scalar(d: Float32Array, off: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - d[off + j]);
    const radius = f32(Math.sqrt(f32(-2 * f32(Math.log(u1)))));
    const theta = f32(2 * Math.PI * d[off + j + 8]);
    d[off + j] = radius * f32(Math.cos(theta));
    d[off + j + 8] = radius * f32(Math.sin(theta));
  }
}
