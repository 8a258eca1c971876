// AVX2 + FMA row kernels for the memory-bound ops (compiled with -mavx2 -mfma; chosen at run time by the
// callers in norm.cpp and activation.cpp when the GEMM engine picked its AVX2 kernels, i.e. the CPU has them
// and HYPERSD_CPU_KERNELS is not "portable"). The portable versions of the same loops live beside their
// callers; both are checked by the same tests (test/ops/norm.test.ts and activation.test.ts run the portable
// kernels too, in a child process).
//
// silu computes 2^(-x log2 e) by a floor and a polynomial (silu_v: relative error ~1e-6 at |x| = 20, within
// the tests' f32 tolerance); geglu a rational erf on 8 lanes, a table of polynomials on 16 (geglu_v), no exponential. These chains are long (~60 cycles a
// vector) and measured bound by how much independent work the out-of-order window finds, not by any one pipe
// (zmm division: one per ~2.6 cycles here; a reciprocal-plus-Newton SiLU ran 25% slower), so the 16-lane loops
// take four vectors step by step together (silu_v, geglu_v).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>

// pointwise_avx512.cpp compiles this file again with AVX-512 enabled as namespace pw_avx512: there SiLU, GEGLU and
// the group-norm apply run 16 lanes at a time (the same operations per lane, so the same bits as the 8-lane
// compile, but for SiLU's exponent split: see vexp2_split; the last bit may differ for x in (0, 0.69) and
// below x = -88).
#ifndef HSD_PW_NS
#define HSD_PW_NS pw_avx2
#endif

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include "avx2_math.h"
#include "hypersd/tensor.h"

namespace hsd {
namespace HSD_PW_NS {

// The operations GEGLU needs, on 8 lanes and (in the AVX-512 compile) on 16, so one template serves both.
static inline __m256 vset(__m256, float c) { return _mm256_set1_ps(c); }
static inline __m256 vmul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
static inline __m256 vfma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
static inline __m256 vfnma(__m256 a, __m256 b, __m256 c) { return _mm256_fnmadd_ps(a, b, c); }
static inline __m256 vdiv(__m256 a, __m256 b) { return _mm256_div_ps(a, b); }
static inline __m256 vmin(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
static inline __m256 vmax(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
static inline __m256 vabs(__m256 a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
static inline __m256 vadd(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
static inline __m256 vfloor(__m256 a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
static inline __m256 vsub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
// SiLU's 2^t split as 2^f 2^n, f = t - n in [0, 1): t kept where p 2^n can be built in the exponent field
// (vscale2n below), n = floor(t) in [-126, 127]; x = +inf gives t = -126 (silu = inf), NaN stays NaN through
// the numerator.
static inline void vexp2_split(__m256 t, __m256& f, __m256& n) {
  t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-126.f)), _mm256_set1_ps(127.f));
  n = vfloor(t);
  f = _mm256_sub_ps(t, n);
}
static inline __m256 vscale2n(__m256 p, __m256 n) {  // p * 2^n, n integral in [-126, 127]: 2^n added to the exponent field
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23)));
}
// SiLU's quotient y of x where the clamp at n = 127 bounded 2^t (x < -88.03): x * 0 instead (-0, or NaN for
// x = -inf, as the 16-lane vscalefps overflow gives), not x / 2^127 (-2.0 at x = -3.4e38, -0.06 at -1e37).
static inline __m256 vsilu_low(__m256 y, __m256 x) {
  return _mm256_blendv_ps(y, _mm256_mul_ps(x, _mm256_setzero_ps()), _mm256_cmp_ps(x, _mm256_set1_ps(-88.0f), _CMP_LT_OQ));
}
#ifdef __AVX512F__
static inline __m512 vset(__m512, float c) { return _mm512_set1_ps(c); }
static inline __m512 vmul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
static inline __m512 vfma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
static inline __m512 vfnma(__m512 a, __m512 b, __m512 c) { return _mm512_fnmadd_ps(a, b, c); }
static inline __m512 vdiv(__m512 a, __m512 b) { return _mm512_div_ps(a, b); }
static inline __m512 vmin(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
static inline __m512 vmax(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
static inline __m512 vabs(__m512 a) { return _mm512_abs_ps(a); }
static inline __m512 vadd(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
static inline __m512 vfloor(__m512 a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
static inline __m512 vsub(__m512 a, __m512 b) { return _mm512_sub_ps(a, b); }
// 16 lanes: f = t - floor(t) is one vreduceps (AVX512DQ; t = +-inf gives f = 0; the same value as the 8 lanes'
// floor and subtraction but for t in (-1, 0), i.e. x in (0, 0.69), where vreduceps rounds the difference toward
// zero, up to 1 ulp of f below: 2^f 4e-8 lower, under the polynomial's 9e-8), and vscalefps takes t itself (it
// scales by 2^floor(t), overflowing to inf and underflowing to 0 as the exact result would): no bound on t,
// one operation where the bound, the floor and the subtraction were three. x = +inf: t = -inf, p 2^t = 0,
// silu = inf; x = -inf: NaN, as -inf * sigmoid(-inf) is. One Zen 5 core, a 16 KB row in L1, four vectors
// together: 7.1-7.4 -> 6.5-7.0 cycles a vector (the same process).
static inline void vexp2_split(__m512 t, __m512& f, __m512& n) {
  f = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  n = t;
}
static inline __m512 vscale2n(__m512 p, __m512 n) {  // one vscalefps: p 2^floor(n), a normal product
  return _mm512_scalef_ps(p, n);
}
static inline __m512 vsilu_low(__m512 y, __m512) { return y; }  // vscalefps overflows to inf: y is -0 already
#endif

#ifdef __AVX512F__
// GEGLU in the AVX-512 compile (16 and 8 lanes, the same operations per lane, so the same bits): erf(z) / 2,
// z = x / sqrt 2, from a table of 16 degree-5 polynomials, one per interval of width 1/3.75 in |z| (centred
// on k / 3.75, k = 0..15), the interval's six coefficients picked by vpermps from six 16-entry tables: u = |z|
// 3.75 = |x| 2.6516504 rounded to k by adding 1.5 2^23 (k in the low mantissa bits, the permutes' index),
// r = u - k in [-1/2, 1/2] by one FMA from |x| (not from the rounded u), then Horner in r, and the sign of x
// put back with one ternary-logic op. |x| is clamped at 5.845 (u = 15.499, erf(4.133) / 2 rounds to 1/2 and
// the polynomial gives exactly 1/2 there, so gelu(-inf) = -0 and gelu(+inf) = +inf as before). No division,
// no exponential: 21 operations a vector, 6 of them permutes, against the rational form's 20 with a division
// (below), whose FMAs and multiplies (15 a vector) had bound it. Coefficients fitted for this file (Lawson-
// weighted least squares on 60 Chebyshev nodes per interval, then rounded to float; interval 0 odd): absolute
// error of erf(z) / 2 at most 3.6e-8 evaluated in float (the rational form: 1.8e-8). One Zen 5 core, L1, four
// vectors together: 12.5-13.3 -> 7.3-7.5 cycles an output vector (the same process, alternated).
// The fused linear_geglu's tile sink (geglu_tile below) takes the same per-lane formula on 8 lanes, so
// linear_geglu stays bit-identical to geglu(linear(...)) with either kernel set.
alignas(64) static const float kGeluErfTable[6][16] = {
    {0.f, 0.146959126f, 0.27464962f, 0.371050477f, 0.434285998f, 0.470326781f, 0.4881742f, 0.495853037f, 0.498723507f, 0.499655753f, 0.499918789f, 0.499983251f, 0.49999699f, 0.499999523f, 0.49999994f, 0.5f},
    {0.150450557f, 0.140123382f, 0.113203838f, 0.0793314427f, 0.0482239984f, 0.025428148f, 0.0116305407f, 0.004614437f, 0.001588076f, 0.000474086526f, 0.000122765923f, 2.75760503e-05f, 5.37304686e-06f, 9.08121137e-07f, 1.33138002e-07f, 1.69315193e-08f},
    {0.f, -0.00996406469f, -0.0160997957f, -0.0169239119f, -0.0137171159f, -0.00904125907f, -0.004962462f, -0.00229699258f, -0.000903427019f, -0.000303395966f, -8.72872042e-05f, -2.15646032e-05f, -4.58288105e-06f, -8.3890825e-07f, -1.32407436e-07f, -1.80335853e-08f},
    {-0.00356616545f, -0.00284900819f, -0.0011568499f, 0.000526458956f, 0.00145802787f, 0.00154033827f, 0.00113585114f, 0.00065289042f, 0.000305000605f, 0.000118218821f, 3.84743325e-05f, 1.05933514e-05f, 2.48025367e-06f, 4.95611914e-07f, 8.47501056e-08f, 1.24274546e-08f},
    {0.f, 0.000334651617f, 0.00046064012f, 0.000343633234f, 0.000118510405f, -5.80294582e-05f, -0.000123641483f, -0.000107748237f, -6.54669566e-05f, -3.08452909e-05f, -1.17493237e-05f, -3.69589429e-06f, -9.72177645e-07f, -2.15580286e-07f, -4.05264586e-08f, -6.48474341e-09f},
    {7.55187139e-05f, 5.08274316e-05f, -1.522606e-06f, -4.02206751e-05f, -4.4211276e-05f, -2.43909308e-05f, -3.09479742e-06f, 7.46532669e-06f, 8.31911802e-06f, 5.32676586e-06f, 2.49816435e-06f, 9.21628555e-07f, 2.76209107e-07f, 6.84494452e-08f, 1.41819978e-08f, 2.47494381e-09f},
};
static inline __m512 vperm16(__m512 idx, const float* t) {
  return _mm512_permutexvar_ps(_mm512_castps_si512(idx), _mm512_load_ps(t));
}
static inline __m256 vperm16(__m256 idx, const float* t) {  // 16 entries from two ymm (AVX512VL)
  return _mm256_permutex2var_ps(_mm256_load_ps(t), _mm256_castps_si256(idx), _mm256_load_ps(t + 8));
}
static inline __m512 vfmsub(__m512 a, __m512 b, __m512 c) { return _mm512_fmsub_ps(a, b, c); }
static inline __m256 vfmsub(__m256 a, __m256 b, __m256 c) { return _mm256_fmsub_ps(a, b, c); }
static inline __m512 vor_sign(__m512 p, __m512 x) {  // p | (x & sign bit)
  return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(p), _mm512_castps_si512(x),
                                                       _mm512_set1_epi32(INT32_MIN), 0xf8));
}
static inline __m256 vor_sign(__m256 p, __m256 x) {
  return _mm256_castsi256_ps(_mm256_ternarylogic_epi32(_mm256_castps_si256(p), _mm256_castps_si256(x),
                                                       _mm256_set1_epi32(INT32_MIN), 0xf8));
}
template <int R, class V>
static inline __attribute__((always_inline)) void geglu_v(const V* h, const V* x, V* y) {
  const V z0 = vset(V(), 0.f), magic = vset(z0, 12582912.f), c = vset(z0, 2.65165043f);
  V a[R], m[R], r[R], p[R];
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) {
    a[j] = vmin(vabs(x[j]), vset(z0, 5.845f));  // NaN: min gives 5.845; the NaN comes back through h * x
    m[j] = vfma(a[j], c, magic);
  }
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) r[j] = vfmsub(a[j], c, vsub(m[j], magic));
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) p[j] = vfma(vperm16(m[j], kGeluErfTable[5]), r[j], vperm16(m[j], kGeluErfTable[4]));
#pragma GCC unroll 4
  for (int d = 3; d >= 0; --d)
    for (int j = 0; j < R; ++j) p[j] = vfma(p[j], r[j], vperm16(m[j], kGeluErfTable[d]));
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) {
    const V xm = vmax(vset(z0, -3.40282347e38f), x[j]);
    y[j] = vmul(h[j], vmul(xm, vadd(vor_sign(p[j], x[j]), vset(z0, 0.5f))));
  }
}
#else
// GEGLU in the AVX2 compile, R vectors of values h and their gates x: y = h * gelu(x), gelu(x) = x (1/2 + erf(z) / 2), z = x / sqrt 2,
// with erf(z) = z P(z^2) / Q(z^2) on |z| <= 4 (z clamped there: erf(4) rounds to 1 in f32), P and Q of degree 5,
// fitted for this file (Lawson-weighted linearised least squares, absolute error of erf 2e-8 in double, 3.5e-8
// with the coefficients rounded to float; P halved so that z P / Q is erf(z) / 2). 20 operations a vector with
// one division, no exponential, against 27 for the Abramowitz-Stegun erfc form it replaced (erfc = t P(t)
// exp(-z^2), t = 1 / (1 + p z): a division and an exponential): two threads on [4096, 640] -> [4096, 320],
// 137-139 -> 116-117 us a call (memcpy of 5.2 MB 49 us side by side). 1/2 + erf/2 cancels for x < -4
// (gelu(-6) = -6e-9 comes out within ~3e-7 absolute, not to its relative precision): the tests and the networks
// measure errors against the tensor's norm, where it is 2e-8. x enters the product as max(-FLT_MAX, x), and
// gelu is formed before h multiplies it (h (x' g), not (h x') g, which overflows for |h| > 1), so gelu(-inf)
// is -0 (not -inf * 0) while a NaN gate stays NaN (max returns its second operand on NaN); +inf gives +inf.
// The R vectors go step by step together (R = 4 on 16 lanes) to keep the division's latency covered.
template <int R, class V>
static inline __attribute__((always_inline)) void geglu_v(const V* h, const V* x, V* y) {
  const V z0 = vset(V(), 0.f);
  V z[R], w[R], p[R], q[R];
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j)
    z[j] = vmin(vmax(vmul(x[j], vset(z0, 0.70710678118654752f)), vset(z0, -4.f)), vset(z0, 4.f));
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) w[j] = vmul(z[j], z[j]);
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) {
    p[j] = vfma(vset(z0, 9.8736109e-07f), w[j], vset(z0, 1.4400683e-04f));
    q[j] = vfma(vset(z0, 3.7478258e-05f), w[j], vset(z0, 1.2161973e-03f));
  }
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) {
    p[j] = vfma(p[j], w[j], vset(z0, 2.0015512e-03f));
    q[j] = vfma(q[j], w[j], vset(z0, 1.5443375e-02f));
  }
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) {
    p[j] = vfma(p[j], w[j], vset(z0, 2.6732914e-02f));
    q[j] = vfma(q[j], w[j], vset(z0, 0.11647184f));
  }
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) {
    p[j] = vfma(p[j], w[j], vset(z0, 9.8119237e-02f));
    q[j] = vfma(q[j], w[j], vset(z0, 0.50724298f));
  }
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) {
    p[j] = vfma(p[j], w[j], vset(z0, 0.56418949f));
    q[j] = vfma(q[j], w[j], vset(z0, 1.f));
  }
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) {
    const V xm = vmax(vset(z0, -3.40282347e38f), x[j]);
    y[j] = vmul(h[j], vmul(xm, vadd(vdiv(vmul(z[j], p[j]), q[j]), vset(z0, 0.5f))));
  }
}
#endif

// SiLU of R vectors, step by step together: y = x / (1 + 2^t), t = -x log2(e), 2^t = 2^f 2^floor(t) with
// f = t - floor(t) in [0, 1) (exact but for one rounding when t is in (-1, 0); vexp2_split, per width) and 2^f by
// a degree-5 minimax polynomial (relative error 9e-8 with these float coefficients). The rounding of t itself
// costs 4e-8 |t| relative, so SiLU's relative error is ~1e-6 at |x| = 20 (tests' f32 tolerance: 1e-5 of the
// norm) and below 3e-7 for |x| < 5. Against the Cody-Waite exp(-x) it replaced (a rounding, two FMAs, a clamp
// on both sides): 10.3-10.4 -> 12.5-13.2 Gelem/s on one Zen 5 core at 2.6 MB, 16 lanes. Both compiles take the
// same operations lane by lane but for vexp2_split; R = 4 on 16 lanes keeps four chains in flight.
// exp2_poly: that split and polynomial of R vectors t (n: the exponents for vscale2n), with the coefficients c
// (highest degree first): SiLU's, or silu_t's (below) scaled by -log2(e).
alignas(64) static const float kExp2Poly[6] = {1.8775762e-3f, 8.9893416e-3f, 5.5826318e-2f, 0.24015361f, 0.69315308f, 0.99999994f};
alignas(64) static const float kExp2PolyC[6] = {-0.0027087699f, -0.012968878f, -0.08054035f, -0.34646842f, -1.0000085f, -1.4426949f};
template <int R, class V>
static inline __attribute__((always_inline)) void exp2_poly(const V* tt, const float* c, V* n, V* p) {
  const V z0 = vset(V(), 0.f);
  V f[R];
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) vexp2_split(tt[j], f[j], n[j]);
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) p[j] = vfma(vset(z0, c[0]), f[j], vset(z0, c[1]));
#pragma GCC unroll 4
  for (int k = 2; k < 6; ++k)
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) p[j] = vfma(p[j], f[j], vset(z0, c[k]));
}
template <int R, class V>
static inline __attribute__((always_inline)) void silu_v(const V* v, V* y) {
  const V z0 = vset(V(), 0.f);
  V t[R], n[R], p[R];
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) t[j] = vmul(v[j], vset(z0, -1.44269504089f));
  exp2_poly<R>(t, kExp2Poly, n, p);
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) y[j] = vsilu_low(vdiv(v[j], vadd(vset(z0, 1.f), vscale2n(p[j], n[j]))), v[j]);
}
// silu_t: SiLU from t = -v log2(e) alone (the folded group-norm apply forms t from x by one FMA and never v):
// v = -t ln 2, so y = v / (1 + 2^t) = t / (c 2^t + c), c = -log2(e), with c folded into the polynomial's
// coefficients (c 2^f; each rounded to float: ~6e-8 relative, beside the polynomial's 9e-8) and c 2^t + c one
// addition: one operation a vector fewer than forming v, t and v / (1 + 2^t) (silu_v), and one fewer FMA. One
// Zen 5 core, the folded apply with SiLU on [4096, 320]: L1 1.28 -> 1.15 ns a vector, from L3 1.38-1.53 ->
// 1.22-1.29 (memcpy 0.99-1.02 in the same runs). Where the 8-lane split bounded 2^t (t > 126.95, i.e. v < -88):
// t * -0 (-0, or NaN for t = inf, as for silu_v).
static inline __m256 vsilu_low_t(__m256 y, __m256 t) {
  return _mm256_blendv_ps(y, _mm256_mul_ps(t, _mm256_set1_ps(-0.f)), _mm256_cmp_ps(t, _mm256_set1_ps(126.95f), _CMP_GT_OQ));
}
#ifdef __AVX512F__
static inline __m512 vsilu_low_t(__m512 y, __m512) { return y; }  // vscalefps: 2^t = inf, y = t / -inf = -0
#endif
template <int R, class V>
static inline __attribute__((always_inline)) void silu_t(const V* tt, V* y) {
  const V z0 = vset(V(), 0.f);
  V n[R], p[R];
  exp2_poly<R>(tt, kExp2PolyC, n, p);
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j)
    y[j] = vsilu_low_t(vdiv(tt[j], vadd(vscale2n(p[j], n[j]), vset(z0, -1.442695f))), tt[j]);
}
static inline __m256 silu_ps(__m256 v) {
  __m256 y;
  silu_v<1>(&v, &y);
  return y;
}

static inline __m256 geglu_ps(__m256 h, __m256 x) {
  __m256 y;
  geglu_v<1>(&h, &x, &y);
  return y;
}

// GEGLU row: o[i] = h[i] * gelu(g[i]).
void geglu(const float* h, const float* g, float* o, int64_t n) {
  int64_t i = 0;
#ifdef __AVX512F__
  for (; i + 64 <= n; i += 64) {
    __m512 hv[4], xv[4], yv[4];
    // 5 KB ahead in both input streams and 2.5 KB in the output: past the row's end (a prefetch does not fault)
    // into the next rows, which follow in memory (the op's rows are [h, g] pairs of n each; the caller walks them
    // in order). [4096, 640] -> [4096, 320] on two threads: 58-60% -> 67-72% of the memcpy rate (pointwise bench,
    // alternated; input distances of 1.25, 2.5, 5 and 10 KB gave 68-69, 68-72, 69-70 and 65-68%).
    for (int j = 0; j < 4; ++j) {
      _mm_prefetch((const char*)(h + i + 1280 + 16 * j), _MM_HINT_T0);
      _mm_prefetch((const char*)(g + i + 1280 + 16 * j), _MM_HINT_T0);
      __builtin_prefetch(o + i + 640 + 16 * j, 1, 3);
    }
    for (int j = 0; j < 4; ++j) {
      hv[j] = _mm512_loadu_ps(h + i + 16 * j);
      xv[j] = _mm512_loadu_ps(g + i + 16 * j);
    }
    geglu_v<4>(hv, xv, yv);
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(o + i + 16 * j, yv[j]);
  }
  for (; i + 16 <= n; i += 16) {
    const __m512 hv = _mm512_loadu_ps(h + i), xv = _mm512_loadu_ps(g + i);
    __m512 yv;
    geglu_v<1>(&hv, &xv, &yv);
    _mm512_storeu_ps(o + i, yv);
  }
#else
  for (; i + 16 <= n; i += 16) {
    __m256 hv[2] = {_mm256_loadu_ps(h + i), _mm256_loadu_ps(h + i + 8)}, xv[2] = {_mm256_loadu_ps(g + i), _mm256_loadu_ps(g + i + 8)}, yv[2];
    geglu_v<2>(hv, xv, yv);
    _mm256_storeu_ps(o + i, yv[0]);
    _mm256_storeu_ps(o + i + 8, yv[1]);
  }
#endif
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, geglu_ps(_mm256_loadu_ps(h + i), _mm256_loadu_ps(g + i)));
  for (; i < n; ++i) {  // gelu(-inf) = -0 as in the vectors (x as max(-FLT_MAX, x) in the product)
    const float gm = g[i] < -3.40282347e38f ? -3.40282347e38f : g[i];
    o[i] = h[i] * (0.5f * gm * std::erfc(-g[i] * 0.70710678118654752f));
  }
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
// f32 -> bf16 and f32 -> f16, round to nearest even, the same bits as float_to_bf16 / float_to_half
// (tensor.h; NaNs too: bf16 keeps the upper payload with the quiet bit set, f16 gives sign | 0x7e00): cast's
// narrowing step, 8 values at a time (F16C's vcvtps2ph for f16). Loading SD1.5's f16 weights as bf16 spent
// 14% of its samples in the scalar loop.
void narrow_bf16(const float* x, uint16_t* y, int64_t n) {
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), abs = _mm256_set1_epi32(0x7fffffff),
                inf = _mm256_set1_epi32(0x7f800000), q = _mm256_set1_epi32(0x40);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i r[2];
    for (int h = 0; h < 2; ++h) {
      const __m256i u = _mm256_loadu_si256((const __m256i*)(x + i + 8 * h));
      const __m256i rn = _mm256_srli_epi32(
          _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one))), 16);
      const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
      r[h] = _mm256_blendv_epi8(rn, _mm256_or_si256(_mm256_srli_epi32(u, 16), q), nan);
    }
    // packus works within 128-bit lanes: [a0-3 b0-3 | a4-7 b4-7] -> reorder the 64-bit quarters.
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xd8);
    _mm256_storeu_si256((__m256i*)(y + i), p);
  }
  for (; i < n; ++i) y[i] = float_to_bf16(x[i]);
}
void narrow_f16(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {  // NaNs: sign | 0x7e00 as float_to_half gives (F16C keeps payload bits)
      alignas(16) uint16_t t[8];
      _mm_store_si128((__m128i*)t, h);
      for (int j = 0; j < 8; ++j) t[j] = float_to_half(x[i + j]);
      h = _mm_load_si128((const __m128i*)t);
    }
    _mm_storeu_si128((__m128i*)(y + i), h);
  }
  for (; i < n; ++i) y[i] = float_to_half(x[i]);
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
  for (; i + 64 <= n; i += 64) {
    __m512 v[4], o[4];
    if (i + 64 + 1024 <= n) {  // 4 KiB ahead (the tensor streams from L3): 5.2 MB, two threads, ~5% (noisy)
      for (int j = 0; j < 4; ++j) {
        _mm_prefetch((const char*)(x + i + 1024 + 16 * j), _MM_HINT_T0);
        __builtin_prefetch(y + i + 1024 + 16 * j, 1, 3);
      }
    }
    for (int j = 0; j < 4; ++j) v[j] = _mm512_loadu_ps(x + i + 16 * j);
    silu_v<4>(v, o);
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(y + i + 16 * j, o[j]);
  }
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    __m512 o;
    silu_v<1>(&v, &o);
    _mm512_storeu_ps(y + i, o);
  }
#else
  for (; i + 32 <= n; i += 32) {
    __m256 v[4], o[4];
    for (int j = 0; j < 4; ++j) v[j] = _mm256_loadu_ps(x + i + 8 * j);
    silu_v<4>(v, o);
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(y + i + 8 * j, o[j]);
  }
#endif
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu_ps(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = x[i] / (1.f + std::exp(-x[i]));
}

// Group-norm statistics of R rows of C channels (row stride C): acc1[c] += x - k[c], acc2[c] += (x - k[c])^2,
// row after row, each 8-channel (16 in the AVX-512 compile for R > 1: each channel's sums are the same additions,
// so the same bits) pair of sums held in registers across the R rows (one load and store of the sums per R rows).
// 16 lanes: [4096, 320] one core 22.8 -> 28.4 Gelem/s from L3, 29.5 -> 35-39 from L2.
template <int R>
inline __attribute__((always_inline)) void gn_sums_rows(const float* x, int64_t C, const float* k, float* acc1,
                                                       float* acc2) {
  const int64_t C8 = C / 8 * 8;
  int64_t c = 0;
#ifdef __AVX512F__
  // One row at a time (tensors streamed from memory) in 8-lane halves: each row's sums are stored and loaded
  // again by the next row, and a 16-lane load that follows a 16-lane store of the same sums ran the pass at
  // 6.6 ms over the SD1.5 VAE's [262144, 128] (two threads) against 2.9-3.0 in 8 lanes and 2.7 for a bare
  // read of x (session 25): same additions, same bits.
  for (; R > 1 && c + 16 <= C8; c += 16) {
    const __m512 kc = _mm512_loadu_ps(k + c);
    __m512 s1 = _mm512_loadu_ps(acc1 + c), s2 = _mm512_loadu_ps(acc2 + c);
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
      const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + j * C + c), kc);
      s1 = _mm512_add_ps(s1, d);
      s2 = _mm512_fmadd_ps(d, d, s2);
    }
    _mm512_storeu_ps(acc1 + c, s1);
    _mm512_storeu_ps(acc2 + c, s2);
  }
#endif
  for (; c < C8; c += 8) {
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
// Sixteen rows a step first (the sums loaded and stored once per 16 rows; the same additions in the same order):
// [4096, 320] on two threads, the kernel alone, 35-37 -> 31 us.
void gn_sums(const float* x, int64_t rows, int64_t C, const float* k, float* acc1, float* acc2, bool by4) {
  int64_t r = 0;
  for (; by4 && r + 16 <= rows; r += 16) gn_sums_rows<16>(x + r * C, C, k, acc1, acc2);
  for (; by4 && r + 4 <= rows; r += 4) gn_sums_rows<4>(x + r * C, C, k, acc1, acc2);
  for (; r < rows; ++r) gn_sums_rows<1>(x + r * C, C, k, acc1, acc2);
}

// y = (x - k) * a + b [, silu] over R rows of one image (row stride C; b is beta with the mean's remainder folded
// in, see norm.cpp): the per-channel parameters loaded once for the R rows and their SiLU chains interleaved;
// each element gets the same operations whatever R.
// NT: streaming (non-temporal) stores, for outputs far larger than the last-level cache (the caller checks
// that y's rows are 64-byte aligned and calls stream_fence() before its work is reported done).
template <int R, bool NT = false>
inline __attribute__((always_inline)) void gn_apply_rows(const float* x, float* y, int64_t C, const float* k,
                                                        const float* a, const float* b, bool silu_on) {
  int64_t c = 0;
#ifdef __AVX512F__
  for (; c + 16 <= C; c += 16) {
    const __m512 kc = _mm512_loadu_ps(k + c), ac = _mm512_loadu_ps(a + c), bc = _mm512_loadu_ps(b + c);
    __m512 v[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) v[j] = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j * C + c), kc), ac, bc);
    if (silu_on) silu_v<R>(v, v);
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
      if (NT) _mm512_stream_ps(y + j * C + c, v[j]);
      else _mm512_storeu_ps(y + j * C + c, v[j]);
    }
  }
#endif
  for (; c + 8 <= C; c += 8) {
    const __m256 kc = _mm256_loadu_ps(k + c), ac = _mm256_loadu_ps(a + c), bc = _mm256_loadu_ps(b + c);
    __m256 v[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) v[j] = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j * C + c), kc), ac, bc);
    if (silu_on) {
#pragma GCC unroll 4
      for (int j = 0; j < R; ++j) v[j] = silu_ps(v[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
      if (NT) _mm256_stream_ps(y + j * C + c, v[j]);
      else _mm256_storeu_ps(y + j * C + c, v[j]);
    }
  }
  if (c < C)
    for (int j = 0; j < R; ++j)
      for (int64_t i = c; i < C; ++i) {
        const float v = (x[j * C + i] - k[i]) * a[i] + b[i];
        y[j * C + i] = silu_on ? v / (1.f + std::exp(-v)) : v;
      }
}

// One row, and four rows together: group-norm + SiLU on [4096, 320] +19% to +31% against one row at a time
// (bench/ab.ts side by side, three runs; a SiLU loop unrolled the same way over one row gained nothing).
// stream: streaming stores (for a y far beyond the last-level cache: its lines are not read from memory before
// being written, and do not evict what the cache holds). 128 channels x 512x512 with SiLU (134 MB, two
// threads, the kernel alone): 7.8-9.1 -> 6.1-6.4 ms, the time of glibc's memcpy of the same bytes (6.2-6.6).
// The stores of a row are 64-byte aligned when y is and C % 16 == 0; otherwise the ordinary stores are used.
void gn_apply(const float* x, float* y, int64_t C, const float* k, const float* a, const float* b, bool silu_on,
              bool stream) {
  if (stream && C % 16 == 0 && ((uintptr_t)y & 63) == 0) gn_apply_rows<1, true>(x, y, C, k, a, b, silu_on);
  else gn_apply_rows<1>(x, y, C, k, a, b, silu_on);
}
// The folded apply, for groups whose mean is within a few standard deviations of 0 (norm.cpp decides): y = x a +
// b0 by one FMA; with SiLU, t = -y log2(e) by one FMA from x instead (at = -a log2 e, bt = -b0 log2 e) and
// silu_t from t alone. (With |mean| >> std, x a and b0 would cancel: the shifted form above keeps x - K exact.)
// Loads, stores and a lane test on 8 and (AVX-512) 16 lanes, for the templates below.
static inline __m256 vload(const float* p, __m256) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
static inline bool vany_gt(__m256 a, __m256 b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)) != 0; }
#ifdef __AVX512F__
static inline __m512 vload(const float* p, __m512) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
static inline bool vany_gt(__m512 a, __m512 b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ) != 0; }
#endif
template <class V>
static inline void vstream(float* p, V v);
template <>
inline void vstream(float* p, __m256 v) { _mm256_stream_ps(p, v); }
#ifdef __AVX512F__
template <>
inline void vstream(float* p, __m512 v) { _mm512_stream_ps(p, v); }
#endif
// One slice of channels [c, c + lanes of V) over R rows of the folded apply.
template <int R, bool NT, class V>
static inline __attribute__((always_inline)) void gn_fold_slice(const float* x, float* y, int64_t C, int64_t c,
                                                                const float* a, const float* b, const float* at,
                                                                const float* bt, bool silu_on) {
  const V z = vset(V(), 0.f);
  V v[R];
  if (silu_on) {
    const V atc = vload(at + c, z), btc = vload(bt + c, z);
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) v[j] = vfma(vload(x + j * C + c, z), atc, btc);
    silu_t<R>(v, v);
  } else {
    const V ac = vload(a + c, z), bc = vload(b + c, z);
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) v[j] = vfma(vload(x + j * C + c, z), ac, bc);
  }
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) {
    if (NT) vstream(y + j * C + c, v[j]);
    else vstore(y + j * C + c, v[j]);
  }
}
template <int R, bool NT = false>
inline __attribute__((always_inline)) void gn_apply_fold_rows(const float* x, float* y, int64_t C, const float* a,
                                                             const float* b, const float* at, const float* bt,
                                                             bool silu_on) {
  int64_t c = 0;
#ifdef __AVX512F__
  for (; c + 16 <= C; c += 16) gn_fold_slice<R, NT, __m512>(x, y, C, c, a, b, at, bt, silu_on);
#endif
  for (; c + 8 <= C; c += 8) gn_fold_slice<R, NT, __m256>(x, y, C, c, a, b, at, bt, silu_on);
  if (c < C)
    for (int j = 0; j < R; ++j)
      for (int64_t i = c; i < C; ++i) {
        const float v = std::fma(x[j * C + i], a[i], b[i]);
        y[j * C + i] = silu_on ? v / (1.f + std::exp(-v)) : v;
      }
}
void gn_apply_fold(const float* x, float* y, int64_t C, const float* a, const float* b, const float* at,
                   const float* bt, bool silu_on, bool stream) {
  if (stream && C % 16 == 0 && ((uintptr_t)y & 63) == 0) gn_apply_fold_rows<1, true>(x, y, C, a, b, at, bt, silu_on);
  else gn_apply_fold_rows<1>(x, y, C, a, b, at, bt, silu_on);
}
void gn_apply4_fold(const float* x, float* y, int64_t C, const float* a, const float* b, const float* at,
                    const float* bt, bool silu_on) {
  gn_apply_fold_rows<4>(x, y, C, a, b, at, bt, silu_on);
}
// The folded apply over `rows` whole rows of one image as one run of rows * C values, C a multiple of V's lanes:
// four vectors a step, each with its channels' coefficients (loaded per vector, from L1), the same operations
// per element as gn_fold_slice on the same lanes, so the same bits. silu()'s loop, in effect: [4096, 320] with
// SiLU, given the statistics, two threads, alternated three times in one hour, 150-165 -> 167-171 GB/s against
// four rows a step by 16-channel slices (gn_apply4_fold; silu()'s software prefetch added to either: no gain).
template <class V, bool S>
static inline void gn_fold_flat(const float* x, float* y, int64_t rows, int64_t C, const float* a, const float* b) {
  constexpr int L = sizeof(V) / sizeof(float);
  const V z = vset(V(), 0.f);
  const int64_t n = rows * C;
  int64_t i = 0, c = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    V v[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      v[j] = vfma(vload(x + i + j * L, z), vload(a + c, z), vload(b + c, z));
      c += L;
      if (c == C) c = 0;
    }
    if (S) silu_t<4>(v, v);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) vstore(y + i + j * L, v[j]);
  }
  for (; i < n; i += L) {
    V v = vfma(vload(x + i, z), vload(a + c, z), vload(b + c, z));
    c += L;
    if (c == C) c = 0;
    if (S) silu_t<1>(&v, &v);
    vstore(y + i, v);
  }
}
// gn_fold_flat where C allows it (a multiple of 16 in the AVX-512 compile, of 8 in the AVX2 one; elsewhere the
// slices' mix of widths would differ in SiLU's last bit): false, nothing written, where it does not.
bool gn_apply_fold_flat(const float* x, float* y, int64_t rows, int64_t C, const float* a, const float* b,
                        const float* at, const float* bt, bool silu_on) {
#ifdef __AVX512F__
  using V = __m512;
#else
  using V = __m256;
#endif
  if (C % (int64_t)(sizeof(V) / sizeof(float)) != 0) return false;
  if (silu_on) gn_fold_flat<V, true>(x, y, rows, C, at, bt);
  else gn_fold_flat<V, false>(x, y, rows, C, a, b);
  return true;
}
// Orders this thread's streaming stores before what it does next (the pool's report that its chunk is done).
void stream_fence() { _mm_sfence(); }
void gn_apply4(const float* x, float* y, int64_t C, const float* k, const float* a, const float* b, bool silu_on) {
  gn_apply_rows<4>(x, y, C, k, a, b, silu_on);
}

// ---- channel statistics of a piece of a producer's output (chanstats.cpp) ----

// U slices of L channels from channel c: per channel K = the first pixel, s1 / s2 the sums of d = x - K and d^2
// over the runs x len pixels (the sums in registers, U chains interleaved), then O = s1 / n, M2 = s2 - s1 O;
// true when a channel's sums cancelled more than 16-fold (s2 > 16 M2: the caller sums the piece again).
template <int U, class V>
static inline __attribute__((always_inline)) bool cs_slices(const float* p, int64_t runs, int64_t len, int64_t rs,
                                                            int64_t C, int64_t c, V inv, float* part) {
  constexpr int L = sizeof(V) / sizeof(float);
  const V z = vset(V(), 0.f);
  V k[U], s1[U], s2[U];
#pragma GCC unroll 4
  for (int j = 0; j < U; ++j) k[j] = vload(p + c + j * L, z), s1[j] = z, s2[j] = z;
  for (int64_t r = 0; r < runs; ++r)
    for (int64_t i = 0; i < len; ++i) {
      const float* q = p + r * rs + i * C + c;
#pragma GCC unroll 4
      for (int j = 0; j < U; ++j) {
        const V d = vsub(vload(q + j * L, z), k[j]);
        s1[j] = vadd(s1[j], d);
        s2[j] = vfma(d, d, s2[j]);
      }
    }
  bool flag = false;
#pragma GCC unroll 4
  for (int j = 0; j < U; ++j) {
    const V o = vmul(s1[j], inv), m2 = vfnma(s1[j], o, s2[j]);
    vstore(part + c + j * L, k[j]);
    vstore(part + C + c + j * L, o);
    vstore(part + 2 * C + c + j * L, m2);
    flag |= vany_gt(s2[j], vmul(m2, vset(z, 16.f)));
  }
  return flag;
}

// The partial (K, O, M2 planar in part[3 C]) of runs x len pixels of C channels, run r at p + r * rs floats.
bool cs_partial(const float* p, int64_t runs, int64_t len, int64_t rs, int64_t C, float* part) {
  const float inv = 1.f / (float)(runs * len);
  int64_t c = 0;
  bool flag = false;
#ifdef __AVX512F__
  const __m512 inv16 = _mm512_set1_ps(inv);
  for (; c + 64 <= C; c += 64) flag |= cs_slices<4>(p, runs, len, rs, C, c, inv16, part);
  for (; c + 16 <= C; c += 16) flag |= cs_slices<1>(p, runs, len, rs, C, c, inv16, part);
#endif
  const __m256 inv8 = _mm256_set1_ps(inv);
  for (; c + 32 <= C; c += 32) flag |= cs_slices<4>(p, runs, len, rs, C, c, inv8, part);
  for (; c + 8 <= C; c += 8) flag |= cs_slices<1>(p, runs, len, rs, C, c, inv8, part);
  for (; c < C; ++c) {
    const float k = p[c];
    float s1 = 0.f, s2 = 0.f;
    for (int64_t r = 0; r < runs; ++r)
      for (int64_t i = 0; i < len; ++i) {
        const float d = p[r * rs + i * C + c] - k;
        s1 += d;
        s2 = std::fma(d, d, s2);
      }
    const float o = s1 * inv, m2 = std::fma(-s1, o, s2);
    part[c] = k;
    part[C + c] = o;
    part[2 * C + c] = m2;
    flag |= s2 > 16.f * m2;
  }
  return flag;
}

// chanstats::fold's arithmetic without branches, so that the compiler vectorises it: per channel mean = K + s1 / n
// and m2 = s2 - s1^2 / n in double from the sums a1 / a2 of x - K (float: group_norm's blocks; double:
// channel_stats' blocks of float runs, cs_rows); true where some channel's sums cancelled more than 16-fold (s2 > 16 m2;
// NaN sums not counted), which the caller then sums again.
template <class T>
static inline bool cs_moments(const float* __restrict K, const T* __restrict a1, const T* __restrict a2, int64_t n,
                              int64_t C, double* __restrict mean, double* __restrict m2) {
  const double inv = 1.0 / (double)n;
  for (int64_t c = 0; c < C; ++c) {
    const double s1 = a1[c], off = s1 * inv;
    mean[c] = (double)K[c] + off;
    m2[c] = (double)a2[c] - s1 * off;
  }
  int flag = 0;
  for (int64_t c = 0; c < C; ++c) {
    const double s2 = a2[c];
    flag |= !(s2 <= 16.0 * m2[c]) & (s2 == s2);
  }
  return flag != 0;
}
bool cs_moments_f(const float* K, const float* a1, const float* a2, int64_t n, int64_t C, double* mean, double* m2) {
  return cs_moments(K, a1, a2, n, C, mean, m2);
}

// chanstats::of_rows' block of `rows` rows of C channels (row stride C) against the pivots K = its first row:
// float sums of x - K over runs of `sub` rows (gn_sums; by4 as there), each run's added into double sums d[0, 2 C)
// (the float rounding stays within a run's terms), their moments into d[2 C, 4 C) (cs_moments), and the partial
// (K, O, M2 planar in part[3 C]). f: 2 C floats of scratch. true where some channel's sums cancelled: the caller
// then folds d itself, summing those channels again. (The runs' loop and the partial here rather than in
// of_rows, compiled without AVX: 12% of the op's time there, measured in session 26's review.)
bool cs_rows(const float* p, int64_t rows, int64_t C, int64_t sub, bool by4, float* f, double* d, float* part) {
  std::fill(d, d + 2 * C, 0.0);
  for (int64_t r = 0; r < rows; r += sub) {
    std::fill(f, f + 2 * C, 0.f);
    gn_sums(p + r * C, std::min(sub, rows - r), C, p, f, f + C, by4);
    for (int64_t c = 0; c < 2 * C; ++c) d[c] += (double)f[c];
  }
  double *mean = d + 2 * C, *m2 = d + 3 * C;
  if (cs_moments(p, d, d + C, rows, C, mean, m2)) return true;
  for (int64_t c = 0; c < C; ++c) {
    part[c] = p[c];
    part[C + c] = (float)(mean[c] - (double)p[c]);
    part[2 * C + c] = (float)(m2[c] > 0.0 ? m2[c] : 0.0);
  }
  return false;
}

// Chan et al.'s merge of a piece (mean K + O, centred sum of squares M2) into running double (mean, m2) of n
// channels, f = nb / (na + nb), g = na nb / (na + nb) (chanstats::combine).
void cs_merge(const float* K, const float* O, const float* M2, double f, double g, double* mean, double* m2,
              int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const double d = ((double)K[c] + (double)O[c]) - mean[c];
    mean[c] += d * f;
    m2[c] += (double)M2[c] + d * d * g;
  }
}

namespace {

inline __attribute__((always_inline)) double fold_d(__m256 v) {
  const __m256d a = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  const __m128d b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
}

// Layer norm on 8 (AVX2 compile) or 16 lanes (AVX-512 compile): per row, the pivot k = the mean of its first 8 / 16
// values (its first C if fewer), sums of d = x - k and of d^2 (one float accumulator each, a vector a step; the
// row's last C % 16 columns as one masked vector on 16 lanes, zeros in the sums; the last C % 8 by scalar steps
// after the vectors on 8), folded in double: mean = k + S1 / C and var = S2 / C - (S1 / C)^2, where (S1 / C)^2 is
// var / 16 typically (the subtraction loses next to nothing and a large |mean| against std cancels in x - k,
// exact for x near k, not in the variance); the output pass forms (x - mean) / std as (x - k) r + n in one FMA
// (r = 1 / std, n = -(mean - k) / std), then gamma and beta by a second. Every row takes these operations in this
// order whatever rows it is taken with (ln_rows_lanes), so the result does not depend on how the rows were split
// among threads (but the two widths' bits differ).
// Session 23 (blocks of rows Q apart, the sums of one block and the output of the block two before it in one
// sweep, the statistics of four rows folded and divided as one vector; the 16-lane kernel had taken blocks of
// adjacent rows, the statistics of the next block before the output of this one as two loops, and four scalar
// folds, divisions and square roots a row; the 8-lane one two passes for the statistics and the same scalar
// steps): one Zen 5 core, 64-byte aligned, ns a 16-float vector (memcpy of the same bytes in the same run):
// [4096, 320] 1.39-1.49 -> 1.28-1.31 (0.97), [1024, 640] 1.59 -> 1.50 (1.05-1.12), [256, 1280] 1.85 -> 1.64
// (1.08-1.11), [77, 768] 1.50-1.53 -> 0.95 (0.47); through the engine on two threads ([4096, 320],
// hypersd_pointwise_bench) 163-165 -> 175-177 GB/s, 67-70% -> 74-76% of memcpy side by side (the 8-lane kernel,
// HYPERSD_CPU_KERNELS=avx2: 112-113 -> 127-128 GB/s).

// A vector's float partials folded to four doubles (b_i = p_i + p_i+4 on 8 lanes; (p_i + p_i+8) + (p_i+4 +
// p_i+12) on 16).
inline __attribute__((always_inline)) __m256d ln_fold_d4(__m256 v) {
  return _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}
#ifdef __AVX512F__
inline __attribute__((always_inline)) __m256d ln_fold_d4(__m512 v) {
  const __m512d a = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                                  _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
  return _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
}
#endif
// The partials of up to four rows summed in double, the rows' sums in one vector: per row ((b0 + b1) + (b2 + b3)),
// whatever R (absent rows are zeros in their own lanes). One tree for the four rows: 25 operations where four
// separate folds took 36, and a shorter chain.
template <int R, class V>
inline __attribute__((always_inline)) __m256d ln_fold4(const V* v) {
  __m256d b[4];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) b[r] = r < R ? ln_fold_d4(v[r]) : _mm256_setzero_pd();
  const __m256d h01 = _mm256_hadd_pd(b[0], b[1]), h23 = _mm256_hadd_pd(b[2], b[3]);
  return _mm256_add_pd(_mm256_permute2f128_pd(h01, h23, 0x20), _mm256_permute2f128_pd(h01, h23, 0x31));
}
// The R rows' parameters from their sums S1, S2 (row r in lane r), into p[0..3] (the pivots, given), p[4..7] (r) and
// p[8..11] (n): the divisions and the square root of up to four rows in one operation each (16 scalar divisions
// and square roots a block of four rows had queued on the divider). r = 1 / std rounded to float; n = -(mean - k)
// r from the rounded r, rounded.
template <int R>
inline __attribute__((always_inline)) void ln_params(__m256d S1, __m256d S2, int64_t C, double eps, float* p) {
  const __m256d vc = _mm256_set1_pd((double)C);
  const __m256d dm = _mm256_div_pd(S1, vc), ss = _mm256_div_pd(S2, vc);
  const __m256d var = _mm256_add_pd(_mm256_max_pd(_mm256_sub_pd(ss, _mm256_mul_pd(dm, dm)), _mm256_setzero_pd()),
                                    _mm256_set1_pd(eps));
  const __m128 rf = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_set1_pd(1.0), _mm256_sqrt_pd(var)));
  const __m128 nf = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_sub_pd(_mm256_setzero_pd(), dm), _mm256_cvtps_pd(rf)));
  alignas(16) float RF[4], NF[4];
  _mm_store_ps(RF, rf);
  _mm_store_ps(NF, nf);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    p[4 + r] = RF[r];
    p[8 + r] = NF[r];
  }
}

// The output pass's parameters of R rows from p (pivots, r, n), broadcast.
template <int R, class V>
inline __attribute__((always_inline)) void ln_broadcast(const float* p, V* vm, V* vr, V* vn) {
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) vm[r] = vset(V(), p[r]), vr[r] = vset(V(), p[4 + r]), vn[r] = vset(V(), p[8 + r]);
}

#ifndef __AVX512F__
// The 8-lane steps (see above): the scalar tail's sums in st / qt.
struct Ln8 {
  struct Acc {
    __m256 k[4], s[4], q[4];
    alignas(16) float st[4] = {}, qt[4] = {};
  };
  template <int R>
  static inline __attribute__((always_inline)) void begin(const float* x, int64_t C, int64_t rs, Acc& a) {
    const int64_t h = std::min<int64_t>(C, 8);
    const float inv_head = h == 8 ? 0.125f : 1.f / (float)h;
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      float sum = 0.f;
      for (int64_t i = 0; i < h; ++i) sum += x[r * rs + i];
      a.k[r] = _mm256_set1_ps(sum * inv_head);
      a.s[r] = a.q[r] = _mm256_setzero_ps();
      a.st[r] = a.qt[r] = 0.f;
    }
  }
  // One sweep over the columns: the sums of rows xs (ST) and the output of rows xo (OUT) with the parameters p,
  // step by step together, then the scalar tail.
  template <int R, bool ST, bool OUT>
  static inline __attribute__((always_inline)) void sweep(const float* xs, const float* xo, float* yo, int64_t C,
                                                          int64_t rs, Acc& a, const float* p, const float* gamma,
                                                          const float* beta) {
    const int64_t C8 = C / 8 * 8;
    __m256 vm[R], vr[R], vn[R];
    if (OUT) ln_broadcast<R>(p, vm, vr, vn);
    for (int64_t c = 0; c < C8; c += 8) {
      if (ST)
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(xs + r * rs + c), a.k[r]);
          a.s[r] = _mm256_add_ps(a.s[r], d);
          a.q[r] = _mm256_fmadd_ps(d, d, a.q[r]);
        }
      if (OUT) {
        const __m256 g = _mm256_loadu_ps(gamma + c), b = _mm256_loadu_ps(beta + c);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const __m256 d = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(xo + r * rs + c), vm[r]), vr[r], vn[r]);
          _mm256_storeu_ps(yo + r * rs + c, _mm256_fmadd_ps(d, g, b));
        }
      }
    }
    for (int64_t c = C8; c < C; ++c) {
      if (ST)
        for (int r = 0; r < R; ++r) {
          const float d = xs[r * rs + c] - _mm256_cvtss_f32(a.k[r]);
          a.st[r] += d;
          a.qt[r] = std::fma(d, d, a.qt[r]);
        }
      if (OUT)
        for (int r = 0; r < R; ++r)
          yo[r * rs + c] = std::fma(std::fma(xo[r * rs + c] - p[r], p[4 + r], p[8 + r]), gamma[c], beta[c]);
    }
  }
  // The rows' parameters: each sum the vector partials' tree plus the scalar tail's sum.
  template <int R>
  static inline __attribute__((always_inline)) void finish(const Acc& a, int64_t C, double eps, float* p) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) p[r] = _mm256_cvtss_f32(a.k[r]);
    ln_params<R>(_mm256_add_pd(ln_fold4<R>(a.s), _mm256_cvtps_pd(_mm_load_ps(a.st))),
                 _mm256_add_pd(ln_fold4<R>(a.q), _mm256_cvtps_pd(_mm_load_ps(a.qt))), C, eps, p);
  }
};
using LnLanes = Ln8;
#else
// The 16-lane steps (see above): the row's last C % 16 columns as one masked vector.
struct Ln16 {
  struct Acc {
    __m512 k[4], s[4], q[4];
  };
  template <int R>
  static inline __attribute__((always_inline)) void begin(const float* x, int64_t C, int64_t rs, Acc& a) {
    const __mmask16 head = C >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << C) - 1u);
    const float inv_head = C >= 16 ? 0.0625f : 1.f / (float)C;
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      a.k[r] = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_maskz_loadu_ps(head, x + r * rs)) * inv_head);
      a.s[r] = a.q[r] = _mm512_setzero_ps();
    }
  }
  // One step of the sums at column c (M: the masked last step).
  template <int R, bool M>
  static inline __attribute__((always_inline)) void sum(const float* x, int64_t rs, int64_t c, __mmask16 m, Acc& a) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 d = M ? _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + r * rs + c), a.k[r])
                         : _mm512_sub_ps(_mm512_loadu_ps(x + r * rs + c), a.k[r]);
      a.s[r] = _mm512_add_ps(a.s[r], d);
      a.q[r] = _mm512_fmadd_ps(d, d, a.q[r]);
    }
  }
  // One step of the output pass at column c.
  template <int R, bool M>
  static inline __attribute__((always_inline)) void out(const float* x, float* y, int64_t rs, int64_t c,
                                                        __mmask16 m, const __m512* vm, const __m512* vr,
                                                        const __m512* vn, const float* gamma, const float* beta) {
    const __m512 g = M ? _mm512_maskz_loadu_ps(m, gamma + c) : _mm512_loadu_ps(gamma + c);
    const __m512 b = M ? _mm512_maskz_loadu_ps(m, beta + c) : _mm512_loadu_ps(beta + c);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 xv = M ? _mm512_maskz_loadu_ps(m, x + r * rs + c) : _mm512_loadu_ps(x + r * rs + c);
      const __m512 d = _mm512_fmadd_ps(_mm512_sub_ps(xv, vm[r]), vr[r], vn[r]);
      if (M) _mm512_mask_storeu_ps(y + r * rs + c, m, _mm512_fmadd_ps(d, g, b));
      else _mm512_storeu_ps(y + r * rs + c, _mm512_fmadd_ps(d, g, b));
    }
  }
  // One sweep over the columns: the sums of rows xs (ST) and the output of rows xo (OUT) with the parameters p,
  // step by step together.
  template <int R, bool ST, bool OUT>
  static inline __attribute__((always_inline)) void sweep(const float* xs, const float* xo, float* yo, int64_t C,
                                                          int64_t rs, Acc& a, const float* p, const float* gamma,
                                                          const float* beta) {
    const int64_t C16 = C / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (C - C16)) - 1u);
    __m512 vm[R], vr[R], vn[R];
    if (OUT) ln_broadcast<R>(p, vm, vr, vn);
    int64_t c = 0;
    for (; c < C16; c += 16) {
      if (ST) sum<R, false>(xs, rs, c, 0, a);
      if (OUT) out<R, false>(xo, yo, rs, c, 0, vm, vr, vn, gamma, beta);
    }
    if (tail) {
      if (ST) sum<R, true>(xs, rs, c, tail, a);
      if (OUT) out<R, true>(xo, yo, rs, c, tail, vm, vr, vn, gamma, beta);
    }
  }
  template <int R>
  static inline __attribute__((always_inline)) void finish(const Acc& a, int64_t C, double eps, float* p) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) p[r] = _mm512_cvtss_f32(a.k[r]);
    ln_params<R>(ln_fold4<R>(a.s), ln_fold4<R>(a.q), C, eps, p);
  }
};
using LnLanes = Ln16;
#endif

// R rows (row stride C) by themselves: their sums, their parameters, their output.
template <class L, int R>
inline __attribute__((always_inline)) void ln_block(const float* x, float* y, int64_t C, const float* gamma,
                                                   const float* beta, double eps) {
  typename L::Acc a;
  float p[12];
  L::template begin<R>(x, C, C, a);
  L::template sweep<R, true, false>(x, nullptr, nullptr, C, C, a, nullptr, gamma, beta);
  L::template finish<R>(a, C, eps, p);
  L::template sweep<R, false, true>(nullptr, x, y, C, C, a, p, gamma, beta);
}
// `rows` rows in blocks of four rows Q = rows / 4 apart (block i: rows i, Q + i, 2Q + i, 3Q + i: four long
// sequential streams, which the hardware prefetchers follow; four adjacent rows are four streams of one row
// each, restarted every block), software-pipelined: one sweep over the columns sums block i and writes block
// i - 2's output, whose parameters were finished a whole sweep earlier (so their chain of folds, divisions and
// square root never holds up the sweep). The last rows % 4 rows one block after.
template <class L>
void ln_rows_lanes(const float* x, float* y, int64_t rows, int64_t C, const float* gamma, const float* beta,
                   double eps) {
  const int64_t Q = rows / 4, rs = Q * C;
  if (Q > 0) {
    typename L::Acc a;
    float p[3][12];  // per block i % 3: the pivots, r and n of its four rows
    for (int64_t i = 0; i < Q + 2; ++i) {
      const float* xs = x + i * C;
      const int64_t o = i - 2;
      const float* po = p[(o + 3) % 3];
      const bool sums = i < Q, out = o >= 0;  // (o < Q always)
      if (sums) L::template begin<4>(xs, C, rs, a);
      if (sums && out) L::template sweep<4, true, true>(xs, x + o * C, y + o * C, C, rs, a, po, gamma, beta);
      else if (sums) L::template sweep<4, true, false>(xs, nullptr, nullptr, C, rs, a, nullptr, gamma, beta);
      else if (out) L::template sweep<4, false, true>(nullptr, x + o * C, y + o * C, C, rs, a, po, gamma, beta);
      if (sums) L::template finish<4>(a, C, eps, p[i % 3]);
    }
  }
  const int64_t r = 4 * Q;
  switch (rows - r) {
    case 3: ln_block<L, 3>(x + r * C, y + r * C, C, gamma, beta, eps); break;
    case 2: ln_block<L, 2>(x + r * C, y + r * C, C, gamma, beta, eps); break;
    case 1: ln_block<L, 1>(x + r * C, y + r * C, C, gamma, beta, eps); break;
    default: break;
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
    // A NaN (a NaN logit, or 0 * inf with scale 0) stays NaN through the clamp (maxps returns its second
    // operand for a NaN) and the mask (not-less-than is true for unordered), so the sum and the whole row turn
    // NaN, as in the portable kernel and PyTorch; the NaN had been clamped and masked to an entry of 0.
    const __m256 a = _mm256_sub_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(x + i)), vmax);
    const __m256 e = _mm256_and_ps(avx2::exp_core_ps(_mm256_max_ps(lo, a)), _mm256_cmp_ps(a, lo, _CMP_NLT_UQ));
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
  ln_rows_lanes<LnLanes>(x, y, rows, C, gamma, beta, eps);
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
void narrow_bf16(const float*, uint16_t*, int64_t) { std::abort(); }
void narrow_f16(const float*, uint16_t*, int64_t) { std::abort(); }
void geglu(const float*, const float*, float*, int64_t) { std::abort(); }
void geglu_tile(const float*, int64_t, int64_t, float*, int64_t) { std::abort(); }
void gn_sums(const float*, int64_t, int64_t, const float*, float*, float*, bool) { std::abort(); }
bool cs_partial(const float*, int64_t, int64_t, int64_t, int64_t, float*) { std::abort(); }
bool gn_apply_fold_flat(const float*, float*, int64_t, int64_t, const float*, const float*, const float*, const float*, bool) { std::abort(); }
bool cs_moments_f(const float*, const float*, const float*, int64_t, int64_t, double*, double*) { std::abort(); }
bool cs_rows(const float*, int64_t, int64_t, int64_t, bool, float*, double*, float*) { std::abort(); }
void cs_merge(const float*, const float*, const float*, double, double, double*, double*, int64_t) { std::abort(); }
void gn_apply(const float*, float*, int64_t, const float*, const float*, const float*, bool, bool) { std::abort(); }
void stream_fence() { std::abort(); }
void gn_apply4(const float*, float*, int64_t, const float*, const float*, const float*, bool) { std::abort(); }
void gn_apply_fold(const float*, float*, int64_t, const float*, const float*, const float*, const float*, bool, bool) { std::abort(); }
void gn_apply4_fold(const float*, float*, int64_t, const float*, const float*, const float*, const float*, bool) { std::abort(); }
void ln_rows(const float*, float*, int64_t, int64_t, const float*, const float*, double) { std::abort(); }
}  // namespace HSD_PW_NS
}  // namespace hsd
#endif
