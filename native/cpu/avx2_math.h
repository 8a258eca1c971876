// Vector math shared by the AVX2 kernels (include only from files compiled with -mavx2 -mfma).
#pragma once
#include <immintrin.h>

namespace hsd {
namespace avx2 {

// exp for 8 floats whose inputs are already in [-87, 88]: range reduction by ln 2 (split in two constants) and
// a degree-6 polynomial.
inline __attribute__((always_inline)) __m256 exp_core_ps(__m256 x) {
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504089f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
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
