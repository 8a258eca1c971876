// Vector math shared by the AVX2 kernels (include only from files compiled with -mavx2 -mfma), and its 16-lane
// twins (namespace avx512) for the files compiled with -mavx512f too.
#pragma once
#include <immintrin.h>

namespace hsd {

// erfc(z) = t exp(-z^2 + c(t)), t = 1 / (1 + z / 2), for z >= 0: c's coefficients from the highest power of t
// down (the Chebyshev fit of Numerical Recipes' erfcc, fractional error below 1.2e-7), for the GELU of the 8- and
// 16-lane activations (gemm_avx2.cpp gelu_erf, gemm_avx512.cpp gelu_erf16), which must give the same bits.
inline constexpr float kErfcFit[10] = {0.17087277f,  -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                                       -0.18628806f, 0.09678418f,  0.37409196f, 1.00002368f,  -1.26551223f};

namespace avx2 {

// exp for 8 floats whose inputs are already in [-87, 88]: range reduction by ln 2 (split in two constants) and
// a degree-5 polynomial for e^r on [-ln2/2, ln2/2] with constant term 1, fitted to the relative error
// (weighted least squares on Chebyshev nodes, reweighted towards minimax): max relative error 1.0e-7 with
// these f32 coefficients, where the degree-6 Taylor polynomial it replaced reached 1.2e-7 at the interval's
// ends with one more FMA in the chain (SiLU: 6% faster on one core, same accuracy against double).
inline __attribute__((always_inline)) __m256 exp_core_ps(__m256 x) {
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504089f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(8.307937e-3f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1897908e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.16667345f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.4999915f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.9999998f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// exp for 8 floats, inputs clamped to [-87, 88] so the result stays finite and normal.
inline __attribute__((always_inline)) __m256 exp_ps(__m256 x) {
  return exp_core_ps(_mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(88.f)));
}

// exp for x <= 0 (e.g. logits minus their row maximum): only the lower clamp is needed.
inline __attribute__((always_inline)) __m256 exp_nonpos_ps(__m256 x) {
  return exp_core_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)));
}

// 2^x for 8 floats with x in [-126, 127]: n = round(x), f = x - n exact in [-1/2, 1/2], and the polynomial above
// with its coefficients times ln2^k (2^f = e^(f ln 2): the same relative error, 1.0e-7), so the argument needs
// neither the multiply by log2(e) nor the two-constant reduction (three FMA-pipe operations fewer than exp_ps).
// For kernels that can fold log2(e) into a scale they apply anyway (the attention softmax).
inline __attribute__((always_inline)) __m256 exp2_core_ps(__m256 x) {
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 p = _mm256_set1_ps(1.3292923e-3f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6715074e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5506367e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.24022242f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.69314706f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// 2^x for x <= 0 (scaled logits minus their maximum; -inf gives 2^-126, callers mask it where it matters).
inline __attribute__((always_inline)) __m256 exp2_nonpos_ps(__m256 x) {
  return exp2_core_ps(_mm256_max_ps(x, _mm256_set1_ps(-126.f)));
}

}  // namespace avx2

#ifdef __AVX512F__
// The same functions on 16 lanes, for the files compiled a second time with AVX-512 (*_avx512.cpp): the same
// operations lane by lane as their 8-lane twins above, so the same bits, except that p 2^n is one vscalefps
// where the 8-lane code builds 2^n in the exponent field (a convert, an add, a shift, then a multiply or an
// integer add): for integral n both are the correctly rounded p 2^n, the same bits, three operations fewer.
namespace avx512 {
inline __attribute__((always_inline)) __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.f)), _mm512_set1_ps(88.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504089f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(8.307937e-3f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1897908e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.16667345f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.4999915f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.9999998f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);  // p 2^n (n in [-126, 127]): correctly rounded, as the 8-lane p * 2^n
}
inline __attribute__((always_inline)) __m512 exp2_core_ps(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(1.3292923e-3f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6715074e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5506367e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24022242f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.69314706f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);  // p 2^n, correctly rounded as the 8-lane multiply by the built 2^n
}
}  // namespace avx512
#endif

namespace avx2 {

// The largest / the sum of the 8 lanes.
inline __attribute__((always_inline)) float hmax(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
inline __attribute__((always_inline)) float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

// An 8 x 8 transpose in registers: lane j of o[i] is lane i of vj.
inline __attribute__((always_inline)) void transpose8(__m256 v0, __m256 v1, __m256 v2, __m256 v3, __m256 v4,
                                                     __m256 v5, __m256 v6, __m256 v7, __m256* o) {
  __m256 t0 = _mm256_unpacklo_ps(v0, v1), t1 = _mm256_unpackhi_ps(v0, v1);
  __m256 t2 = _mm256_unpacklo_ps(v2, v3), t3 = _mm256_unpackhi_ps(v2, v3);
  __m256 t4 = _mm256_unpacklo_ps(v4, v5), t5 = _mm256_unpackhi_ps(v4, v5);
  __m256 t6 = _mm256_unpacklo_ps(v6, v7), t7 = _mm256_unpackhi_ps(v6, v7);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  o[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  o[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  o[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  o[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  o[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  o[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  o[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  o[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

}  // namespace avx2
}  // namespace hsd
