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

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include "avx2_math.h"

namespace hsd {
namespace pw_avx2 {

static inline __m256 silu_ps(__m256 v) {
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 e = avx2::exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), v));
  return _mm256_div_ps(v, _mm256_add_ps(one, e));
}

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

// GEGLU row: o[i] = h[i] * gelu(g[i]), gelu(x) = 0.5 x (1 + erf(x / sqrt 2)).
void geglu(const float* h, const float* g, float* o, int64_t n) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f), r2 = _mm256_set1_ps(0.70710678118654752f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 gl = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, erf_ps(_mm256_mul_ps(x, r2))));
    _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(h + i), gl));
  }
  for (; i < n; ++i) o[i] = h[i] * (0.5f * g[i] * (1.0f + std::erf(g[i] * 0.70710678118654752f)));
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
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu_ps(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = x[i] / (1.f + std::exp(-x[i]));
}

// Group-norm statistics of `rows` rows of C channels: acc1[c] += x - k[c], acc2[c] += (x - k[c])^2.
void gn_sums(const float* x, int64_t rows, int64_t C, const float* k, float* acc1, float* acc2) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) {
      const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(xr + c), _mm256_loadu_ps(k + c));
      _mm256_storeu_ps(acc1 + c, _mm256_add_ps(_mm256_loadu_ps(acc1 + c), d));
      _mm256_storeu_ps(acc2 + c, _mm256_fmadd_ps(d, d, _mm256_loadu_ps(acc2 + c)));
    }
    for (; c < C; ++c) {
      const float d = xr[c] - k[c];
      acc1[c] += d;
      acc2[c] += d * d;
    }
  }
}

// y = ((x - k) - dm) * a + b [, silu] over one row of C channels.
void gn_apply(const float* x, float* y, int64_t C, const float* k, const float* dm, const float* a, const float* b,
              bool silu_on) {
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    __m256 v = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(k + c)), _mm256_loadu_ps(dm + c));
    v = _mm256_fmadd_ps(v, _mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c));
    _mm256_storeu_ps(y + c, silu_on ? silu_ps(v) : v);
  }
  for (; c < C; ++c) {
    const float v = ((x[c] - k[c]) - dm[c]) * a[c] + b[c];
    y[c] = silu_on ? v / (1.f + std::exp(-v)) : v;
  }
}

// Layer-norm of one row of C floats: y = (x - mean) * rstd * gamma + beta, mean and the centred variance from
// two passes over the row (in L1) with 8-lane float partial sums folded in double.
void ln_row(const float* x, float* y, int64_t C, const float* gamma, const float* beta, double eps) {
  // Four partial sums per pass, so the adds (and FMAs) of one pass overlap instead of waiting on each other.
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t c = 0;
  for (; c + 32 <= C; c += 32) {
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + c));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + c + 8));
    s2 = _mm256_add_ps(s2, _mm256_loadu_ps(x + c + 16));
    s3 = _mm256_add_ps(s3, _mm256_loadu_ps(x + c + 24));
  }
  for (; c + 8 <= C; c += 8) s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + c));
  alignas(32) float l[8];
  _mm256_store_ps(l, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  double sum = 0;
  for (int i = 0; i < 8; ++i) sum += l[i];
  for (; c < C; ++c) sum += x[c];
  const double mean = sum / (double)C;
  const __m256 vm = _mm256_set1_ps((float)mean);
  s0 = s1 = s2 = s3 = _mm256_setzero_ps();
  c = 0;
  for (; c + 32 <= C; c += 32) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + c), vm), d1 = _mm256_sub_ps(_mm256_loadu_ps(x + c + 8), vm);
    const __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(x + c + 16), vm), d3 = _mm256_sub_ps(_mm256_loadu_ps(x + c + 24), vm);
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
    s2 = _mm256_fmadd_ps(d2, d2, s2);
    s3 = _mm256_fmadd_ps(d3, d3, s3);
  }
  for (; c + 8 <= C; c += 8) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + c), vm);
    s0 = _mm256_fmadd_ps(d0, d0, s0);
  }
  _mm256_store_ps(l, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  double ss = 0;
  for (int i = 0; i < 8; ++i) ss += l[i];
  for (; c < C; ++c) {
    const double d = x[c] - (float)mean;
    ss += d * d;
  }
  // ss is centred on the f32-rounded mean m: subtract the (tiny) bias of that rounding, C (mean - m)^2.
  const double dmr = mean - (double)(float)mean;
  const float rstd = (float)(1.0 / std::sqrt(std::max(0.0, ss / (double)C - dmr * dmr) + eps));
  const __m256 vr = _mm256_set1_ps(rstd);
  c = 0;
  for (; c + 8 <= C; c += 8) {
    const __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + c), vm), vr);
    _mm256_storeu_ps(y + c, _mm256_fmadd_ps(d, _mm256_loadu_ps(gamma + c), _mm256_loadu_ps(beta + c)));
  }
  for (; c < C; ++c) y[c] = (x[c] - (float)mean) * rstd * gamma[c] + beta[c];
}

}  // namespace pw_avx2
}  // namespace hsd

#else  // not an x86-64 AVX2 build: never called (the GEMM engine reports no AVX2 kernels)
namespace hsd {
namespace pw_avx2 {
void silu(const float*, float*, int64_t) { std::abort(); }
void binary(int, const float*, int64_t, const float*, int64_t, float*, int64_t) { std::abort(); }
void affine(const float*, float, float, float*, int64_t) { std::abort(); }
void clamp(const float*, float, float, float*, int64_t) { std::abort(); }
void geglu(const float*, const float*, float*, int64_t) { std::abort(); }
void gn_sums(const float*, int64_t, int64_t, const float*, float*, float*) { std::abort(); }
void gn_apply(const float*, float*, int64_t, const float*, const float*, const float*, const float*, bool) { std::abort(); }
void ln_row(const float*, float*, int64_t, const float*, const float*, double) { std::abort(); }
}  // namespace pw_avx2
}  // namespace hsd
#endif
