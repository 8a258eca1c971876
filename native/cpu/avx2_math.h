// Vector math shared by the AVX2 kernels (include only from files compiled with -mavx2 -mfma).
#pragma once
#include <immintrin.h>

namespace hsd {
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

}  // namespace avx2
}  // namespace hsd
