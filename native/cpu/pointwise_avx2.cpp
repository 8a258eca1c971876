// AVX2 + FMA row kernels for the memory-bound ops (compiled with -mavx2 -mfma; chosen at run time by the
// callers in norm.cpp and activation.cpp when the GEMM engine picked its AVX2 kernels, i.e. the CPU has them
// and HYPERSD_CPU_KERNELS is not "portable"). The portable versions of the same loops live beside their
// callers; both are checked by the same tests (test/ops/norm.test.ts and activation.test.ts run the portable
// kernels too, in a child process).
//
// silu uses exp_ps from avx2_math.h (relative error ~2e-7, as libm's expf within the tests' f32 tolerance).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>

// pointwise_avx512.cpp compiles this file again with AVX-512 enabled as namespace pw_avx512: there SiLU, GEGLU and
// the group-norm apply run 16 lanes at a time (the same operations per lane, so the same bits).
#ifndef HSD_PW_NS
#define HSD_PW_NS pw_avx2
#endif

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include "avx2_math.h"

namespace hsd {
namespace HSD_PW_NS {

static inline __m256 silu_ps(__m256 v) {
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 e = avx2::exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), v));
  return _mm256_div_ps(v, _mm256_add_ps(one, e));
}

#ifdef __AVX512F__
// silu_ps, erf_ps and geglu_ps on 16 lanes (avx512::exp_ps: avx2_math.h), the same operations lane by lane.
static inline __m512 erf_ps16(__m512 x) {
  const __m512i signbit = _mm512_set1_epi32((int)0x80000000u);
  const __m512i xi = _mm512_castps_si512(x);
  const __m512i sign = _mm512_and_si512(xi, signbit);
  const __m512 a = _mm512_castsi512_ps(_mm512_andnot_si512(signbit, xi));
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), a, _mm512_set1_ps(1.f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = avx512::exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
  const __m512 r = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.f));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), sign));
}
static inline __m512 geglu_ps16(__m512 h, __m512 x) {
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.f), r2 = _mm512_set1_ps(0.70710678118654752f);
  const __m512 gl = _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, erf_ps16(_mm512_mul_ps(x, r2))));
  return _mm512_mul_ps(h, gl);
}
static inline __m512 silu_ps16(__m512 v) {
  const __m512 e = avx512::exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), v));
  return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.f), e));
}
#endif

// erf(x) by Abramowitz-Stegun 7.1.26 (|error| <= 1.5e-7), odd-extended: 1 - poly(t) exp(-x^2), t = 1/(1 + p|x|).
static inline __m256 erf_ps(__m256 x) {
  const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.f));
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.f), x);
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, _mm256_set1_ps(1.f)));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 e = avx2::exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
  const __m256 r = _mm256_fnmadd_ps(p, e, _mm256_set1_ps(1.f));
  return _mm256_or_ps(r, sign);
}

// GEGLU of 8 values h and their 8 gates g: h * gelu(g), gelu(x) = 0.5 x (1 + erf(x / sqrt 2)).
static inline __m256 geglu_ps(__m256 h, __m256 x) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f), r2 = _mm256_set1_ps(0.70710678118654752f);
  const __m256 gl = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, erf_ps(_mm256_mul_ps(x, r2))));
  return _mm256_mul_ps(h, gl);
}

// GEGLU row: o[i] = h[i] * gelu(g[i]).
void geglu(const float* h, const float* g, float* o, int64_t n) {
  int64_t i = 0;
#ifdef __AVX512F__
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(o + i, geglu_ps16(_mm512_loadu_ps(h + i), _mm512_loadu_ps(g + i)));
#endif
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, geglu_ps(_mm256_loadu_ps(h + i), _mm256_loadu_ps(g + i)));
  for (; i < n; ++i) o[i] = h[i] * (0.5f * g[i] * (1.0f + std::erf(g[i] * 0.70710678118654752f)));
}

// linear_geglu's tile sink: rows of 16 floats (8 values, then their 8 gates; row r at t + r*ldt) to rows of 8
// outputs (o + r*ldo), the same operations per element as geglu above. The rows (up to 6, a GEMM tile) are
// independent chains in one loop: one call per row left each row's division and exponential waiting on the
// last (linear_geglu at 4096 x 320 x 2560 ran 16% behind the plain product, 3% with GELU on every column).
void geglu_tile(const float* t, int64_t ldt, int64_t rows, float* o, int64_t ldo) {
  int64_t r = 0;
  for (; r + 3 <= rows; r += 3) {
    const float *t0 = t + r * ldt, *t1 = t0 + ldt, *t2 = t1 + ldt;
    const __m256 y0 = geglu_ps(_mm256_loadu_ps(t0), _mm256_loadu_ps(t0 + 8));
    const __m256 y1 = geglu_ps(_mm256_loadu_ps(t1), _mm256_loadu_ps(t1 + 8));
    const __m256 y2 = geglu_ps(_mm256_loadu_ps(t2), _mm256_loadu_ps(t2 + 8));
    _mm256_storeu_ps(o + r * ldo, y0);
    _mm256_storeu_ps(o + (r + 1) * ldo, y1);
    _mm256_storeu_ps(o + (r + 2) * ldo, y2);
  }
  for (; r < rows; ++r)
    _mm256_storeu_ps(o + r * ldo, geglu_ps(_mm256_loadu_ps(t + r * ldt), _mm256_loadu_ps(t + r * ldt + 8)));
}

// Binary elementwise row: y[i] = a[i * sa] op b[i * sb] with sa, sb each 0 or 1 (op 0 add, 1 sub, 2 mul, 3 div),
// one IEEE operation per element as in the portable loop, so both give the same bits.
template <int OP>
static inline __m256 bin_ps(__m256 x, __m256 y) {
  if (OP == 0) return _mm256_add_ps(x, y);
  if (OP == 1) return _mm256_sub_ps(x, y);
  if (OP == 2) return _mm256_mul_ps(x, y);
  return _mm256_div_ps(x, y);
}
template <int OP>
static inline float bin_s(float x, float y) {
  return OP == 0 ? x + y : OP == 1 ? x - y : OP == 2 ? x * y : x / y;
}
template <int OP>
static void binary_op(const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n) {
  int64_t i = 0;
  if (sa && sb) {
    for (; i + 16 <= n; i += 16) {
      _mm256_storeu_ps(y + i, bin_ps<OP>(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
      _mm256_storeu_ps(y + i + 8, bin_ps<OP>(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8)));
    }
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, bin_ps<OP>(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < n; ++i) y[i] = bin_s<OP>(a[i], b[i]);
  } else if (sa) {
    const __m256 vb = _mm256_set1_ps(b[0]);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, bin_ps<OP>(_mm256_loadu_ps(a + i), vb));
    for (; i < n; ++i) y[i] = bin_s<OP>(a[i], b[0]);
  } else if (sb) {
    const __m256 va = _mm256_set1_ps(a[0]);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, bin_ps<OP>(va, _mm256_loadu_ps(b + i)));
    for (; i < n; ++i) y[i] = bin_s<OP>(a[0], b[i]);
  } else {
    const float v = bin_s<OP>(a[0], b[0]);
    const __m256 vv = _mm256_set1_ps(v);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, vv);
    for (; i < n; ++i) y[i] = v;
  }
}
void binary(int op, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n) {
  switch (op) {
    case 0: return binary_op<0>(a, sa, b, sb, y, n);
    case 1: return binary_op<1>(a, sa, b, sb, y, n);
    case 2: return binary_op<2>(a, sa, b, sb, y, n);
    default: return binary_op<3>(a, sa, b, sb, y, n);
  }
}

// y = a x + b (a product then a sum, rounded each, as the portable loop) and y = min(max(x, lo), hi) (a NaN
// stays NaN, as std::min / std::max pass it through there).
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))  // GCC would fuse the product and the sum into an fma
#endif
void affine(const float* x, float a, float b, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_mul_ps(va, _mm256_loadu_ps(x + i)), vb));
  for (; i < n; ++i) y[i] = a * x[i] + b;
}
void clamp(const float* x, float lo, float hi, float* y, int64_t n) {
  const __m256 vl = _mm256_set1_ps(lo), vh = _mm256_set1_ps(hi);
  int64_t i = 0;
  // max_ps / min_ps return their second operand when either is NaN: x goes second.
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_min_ps(vh, _mm256_max_ps(vl, _mm256_loadu_ps(x + i))));
  for (; i < n; ++i) y[i] = std::min(std::max(x[i], lo), hi);
}

// y[i] = silu(x[i]) (in place when y == x).
void silu(const float* x, float* y, int64_t n) {
  int64_t i = 0;
#ifdef __AVX512F__
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, silu_ps16(_mm512_loadu_ps(x + i)));
#endif
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu_ps(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = x[i] / (1.f + std::exp(-x[i]));
}

// Group-norm statistics of R rows of C channels (row stride C): acc1[c] += x - k[c], acc2[c] += (x - k[c])^2,
// row after row, each 8-channel pair of sums held in registers across the R rows (one load and store of the
// sums per R rows).
template <int R>
inline __attribute__((always_inline)) void gn_sums_rows(const float* x, int64_t C, const float* k, float* acc1,
                                                       float* acc2) {
  const int64_t C8 = C / 8 * 8;
  for (int64_t c = 0; c < C8; c += 8) {
    const __m256 kc = _mm256_loadu_ps(k + c);
    __m256 s1 = _mm256_loadu_ps(acc1 + c), s2 = _mm256_loadu_ps(acc2 + c);
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
      const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + j * C + c), kc);
      s1 = _mm256_add_ps(s1, d);
      s2 = _mm256_fmadd_ps(d, d, s2);
    }
    _mm256_storeu_ps(acc1 + c, s1);
    _mm256_storeu_ps(acc2 + c, s2);
  }
  for (int64_t c = C8; c < C; ++c)
    for (int j = 0; j < R; ++j) {
      const float d = x[j * C + c] - k[c];
      acc1[c] += d;
      acc2[c] += d * d;
    }
}

// Group-norm statistics of `rows` rows, four at a time with by4 (the same additions in the same order as one
// row at a time, so the same bits): the stores of the sums had bound the one-row loop (two per 8 inputs, ~2
// cycles each here), 0.5-0.67x the time in L1/L2; the caller passes by4 = false for tensors streamed from
// memory, where the one-row loop was faster.
void gn_sums(const float* x, int64_t rows, int64_t C, const float* k, float* acc1, float* acc2, bool by4) {
  int64_t r = 0;
  for (; by4 && r + 4 <= rows; r += 4) gn_sums_rows<4>(x + r * C, C, k, acc1, acc2);
  for (; r < rows; ++r) gn_sums_rows<1>(x + r * C, C, k, acc1, acc2);
}

// y = ((x - k) - dm) * a + b [, silu] over R rows of one image (row stride C): the per-channel parameters loaded
// once for the R rows and their SiLU chains interleaved; each element gets the same operations whatever R.
template <int R>
inline __attribute__((always_inline)) void gn_apply_rows(const float* x, float* y, int64_t C, const float* k,
                                                        const float* dm, const float* a, const float* b,
                                                        bool silu_on) {
  int64_t c = 0;
#ifdef __AVX512F__
  for (; c + 16 <= C; c += 16) {
    const __m512 kc = _mm512_loadu_ps(k + c), mc = _mm512_loadu_ps(dm + c), ac = _mm512_loadu_ps(a + c),
                 bc = _mm512_loadu_ps(b + c);
    __m512 v[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j)
      v[j] = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j * C + c), kc), mc), ac, bc);
    if (silu_on) {
#pragma GCC unroll 4
      for (int j = 0; j < R; ++j) v[j] = silu_ps16(v[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) _mm512_storeu_ps(y + j * C + c, v[j]);
  }
#endif
  for (; c + 8 <= C; c += 8) {
    const __m256 kc = _mm256_loadu_ps(k + c), mc = _mm256_loadu_ps(dm + c), ac = _mm256_loadu_ps(a + c),
                 bc = _mm256_loadu_ps(b + c);
    __m256 v[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j)
      v[j] = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j * C + c), kc), mc), ac, bc);
    if (silu_on) {
#pragma GCC unroll 4
      for (int j = 0; j < R; ++j) v[j] = silu_ps(v[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) _mm256_storeu_ps(y + j * C + c, v[j]);
  }
  if (c < C)
    for (int j = 0; j < R; ++j)
      for (int64_t i = c; i < C; ++i) {
        const float v = ((x[j * C + i] - k[i]) - dm[i]) * a[i] + b[i];
        y[j * C + i] = silu_on ? v / (1.f + std::exp(-v)) : v;
      }
}

// One row, and four rows together: group-norm + SiLU on [4096, 320] +19% to +31% against one row at a time
// (bench/ab.ts side by side, three runs; a SiLU loop unrolled the same way over one row gained nothing).
void gn_apply(const float* x, float* y, int64_t C, const float* k, const float* dm, const float* a, const float* b,
              bool silu_on) {
  gn_apply_rows<1>(x, y, C, k, dm, a, b, silu_on);
}
void gn_apply4(const float* x, float* y, int64_t C, const float* k, const float* dm, const float* a, const float* b,
               bool silu_on) {
  gn_apply_rows<4>(x, y, C, k, dm, a, b, silu_on);
}

// Layer-norm of `rows` rows of C floats each (row r at x + r*C, y + r*C): y = (x - mean) * rstd * gamma + beta,
// the mean and the centred variance from two passes over each row (in L1) with 8-lane float partial sums
// (two per row) folded in double. One row alone is a chain of dependent steps (a pass's adds, the fold, the
// square root and division) that left most of the core idle: ~255 cycles for a 320-float row in L1. Rows are
// therefore taken four at a time with their chains interleaved; every row goes through exactly the same
// operations whether it is one of four or one of the last rows done singly, so the result does not depend on
// how the rows were split among threads.
namespace {

inline __attribute__((always_inline)) double fold_d(__m256 v) {
  const __m256d a = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  const __m128d b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
}

template <int R>
inline __attribute__((always_inline)) void ln_block(const float* x, float* y, int64_t C, const float* gamma,
                                                   const float* beta, double eps) {
  const int64_t C8 = C / 8 * 8;
  __m256 s0[R], s1[R];
  for (int r = 0; r < R; ++r) s0[r] = s1[r] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= C8; c += 16)
    for (int r = 0; r < R; ++r) {
      s0[r] = _mm256_add_ps(s0[r], _mm256_loadu_ps(x + r * C + c));
      s1[r] = _mm256_add_ps(s1[r], _mm256_loadu_ps(x + r * C + c + 8));
    }
  if (c < C8)
    for (int r = 0; r < R; ++r) s0[r] = _mm256_add_ps(s0[r], _mm256_loadu_ps(x + r * C + c));
  double mean[R];
  __m256 vm[R];
  for (int r = 0; r < R; ++r) {
    double sum = fold_d(_mm256_add_ps(s0[r], s1[r]));
    for (int64_t k = C8; k < C; ++k) sum += x[r * C + k];
    mean[r] = sum / (double)C;
    vm[r] = _mm256_set1_ps((float)mean[r]);
    s0[r] = s1[r] = _mm256_setzero_ps();
  }
  for (c = 0; c + 16 <= C8; c += 16)
    for (int r = 0; r < R; ++r) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + r * C + c), vm[r]);
      const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + r * C + c + 8), vm[r]);
      s0[r] = _mm256_fmadd_ps(d0, d0, s0[r]);
      s1[r] = _mm256_fmadd_ps(d1, d1, s1[r]);
    }
  if (c < C8)
    for (int r = 0; r < R; ++r) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + r * C + c), vm[r]);
      s0[r] = _mm256_fmadd_ps(d0, d0, s0[r]);
    }
  float rstd[R];
  for (int r = 0; r < R; ++r) {
    double ss = fold_d(_mm256_add_ps(s0[r], s1[r]));
    for (int64_t k = C8; k < C; ++k) {
      const double d = x[r * C + k] - (float)mean[r];
      ss += d * d;
    }
    // ss is centred on the f32-rounded mean m: subtract the (tiny) bias of that rounding, C (mean - m)^2.
    const double dmr = mean[r] - (double)(float)mean[r];
    rstd[r] = (float)(1.0 / std::sqrt(std::max(0.0, ss / (double)C - dmr * dmr) + eps));
  }
  // The output pass over the R rows together, gamma and beta loaded once per 8 columns for all of them: +13%
  // on [4096, 320] against one row at a time (bench/ab.ts side by side; prefetching the next four rows' input
  // and output lines as well changed nothing measurable).
  __m256 vr[R];
  for (int r = 0; r < R; ++r) vr[r] = _mm256_set1_ps(rstd[r]);
  for (c = 0; c < C8; c += 8) {
    const __m256 g = _mm256_loadu_ps(gamma + c), b = _mm256_loadu_ps(beta + c);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + r * C + c), vm[r]), vr[r]);
      _mm256_storeu_ps(y + r * C + c, _mm256_fmadd_ps(d, g, b));
    }
  }
  for (int r = 0; r < R; ++r) {
    const float m = (float)mean[r];
    for (int64_t k = C8; k < C; ++k) y[r * C + k] = (x[r * C + k] - m) * rstd[r] * gamma[k] + beta[k];
  }
}

}  // namespace

// softmax of one row of n: y = exp(scale x - m) / sum, m the row's maximum of scale x; the sum in 8 float
// lanes folded into a double (the portable loop sums in double), then y times the rounded reciprocal.
// Arguments below -87 (exp_nonpos_ps's clamp) give exactly 0, as expf does for the -inf of masked logits.
void softmax_row(const float* x, float* y, int64_t n, float scale) {
  const __m256 vs = _mm256_set1_ps(scale);
  __m256 vm = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_mul_ps(vs, _mm256_loadu_ps(x + i)));
  float m = avx2::hmax(vm);
  for (int64_t k = i; k < n; ++k) m = std::max(m, scale * x[k]);
  const __m256 vmax = _mm256_set1_ps(m), lo = _mm256_set1_ps(-87.f);
  __m256 acc = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_sub_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(x + i)), vmax);
    const __m256 e = _mm256_and_ps(avx2::exp_nonpos_ps(a), _mm256_cmp_ps(a, lo, _CMP_GE_OQ));
    _mm256_storeu_ps(y + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  double sum = fold_d(acc);
  for (int64_t k = i; k < n; ++k) {
    const float e = std::exp(scale * x[k] - m);
    y[k] = e;
    sum += e;
  }
  const float inv = (float)(1.0 / sum);
  const __m256 vinv = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), vinv));
  for (int64_t k = i; k < n; ++k) y[k] *= inv;
}

void ln_rows(const float* x, float* y, int64_t rows, int64_t C, const float* gamma, const float* beta, double eps) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) ln_block<4>(x + r * C, y + r * C, C, gamma, beta, eps);
  switch (rows - r) {
    case 3: ln_block<3>(x + r * C, y + r * C, C, gamma, beta, eps); break;
    case 2: ln_block<2>(x + r * C, y + r * C, C, gamma, beta, eps); break;
    case 1: ln_block<1>(x + r * C, y + r * C, C, gamma, beta, eps); break;
    default: break;
  }
}

}  // namespace HSD_PW_NS
}  // namespace hsd

#else  // not an x86-64 AVX2 build: never called (the GEMM engine reports no AVX2 kernels)
namespace hsd {
namespace HSD_PW_NS {
void silu(const float*, float*, int64_t) { std::abort(); }
void softmax_row(const float*, float*, int64_t, float) { std::abort(); }
void binary(int, const float*, int64_t, const float*, int64_t, float*, int64_t) { std::abort(); }
void affine(const float*, float, float, float*, int64_t) { std::abort(); }
void clamp(const float*, float, float, float*, int64_t) { std::abort(); }
void geglu(const float*, const float*, float*, int64_t) { std::abort(); }
void geglu_tile(const float*, int64_t, int64_t, float*, int64_t) { std::abort(); }
void gn_sums(const float*, int64_t, int64_t, const float*, float*, float*, bool) { std::abort(); }
void gn_apply(const float*, float*, int64_t, const float*, const float*, const float*, const float*, bool) { std::abort(); }
void gn_apply4(const float*, float*, int64_t, const float*, const float*, const float*, const float*, bool) { std::abort(); }
void ln_rows(const float*, float*, int64_t, int64_t, const float*, const float*, double) { std::abort(); }
}  // namespace HSD_PW_NS
}  // namespace hsd
#endif
