// AVX2 + FMA + F16C kernels of the CPU GEMM engine (native/cpu/gemm_kernels.h); compiled with
// -mavx2 -mfma -mf16c and picked at run time only when cpuid reports all three.
//
// micro: a 6x16 register tile, 12 ymm accumulators + 2 for the B row + 2 alternating A broadcasts, the k loop
//   in inline asm with fixed registers. Per k step it issues 12 FMAs against 2 B loads and 6 broadcasts, so
//   the two FMA pipes of Zen3/Haswell stay the limit (12 independent chains cover the 4-cycle FMA latency on
//   two pipes); alone on L1/L2-resident panels it runs at ~97% of the measured FMA peak. The epilogue (alpha,
//   partial-sum accumulation, bias, activation, beta) follows on the 12 vectors, so a fused linear+GELU
//   costs no extra pass over C.
// pack_*: 8x8 in-register transposes, so packing a [N, K] weight (the usual linear layout) or NHWC rows
//   runs at about one cache line per few cycles; f16 / bf16 weights are widened on the way (F16C / shift).
// Activations: exp from a degree-6 polynomial on a ln2 range reduction (< 2 ulp), GELU's normal CDF as erfc
//   for either sign (relative error ~1e-6 in the tail x << 0 too: see gelu_erf); tanh-GELU, SiLU and
//   quick-GELU as x * sigmoid(.), using 0.5 (1 + tanh u) = sigmoid(2u).
#include "gemm_kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <cpuid.h>
#include <immintrin.h>

#include "avx2_math.h"

namespace hsd {
namespace pw_avx2 {  // pointwise_avx2.cpp
void geglu_tile(const float* t, int64_t ldt, int64_t rows, float* o, int64_t ldo);
}  // namespace pw_avx2
namespace gemm {
namespace {

#define HSD_INLINE inline __attribute__((always_inline))

using avx2::exp_ps;
using avx2::transpose8;


// x * sigmoid(k x). exp_ps clamps its argument at 88, so below k x = -87 the quotient x / (1 + e^88) is
// replaced by x * 0 (-0, or NaN for x = -inf, as x * sigmoid(-inf) is): it had left x / 1.65e38, e.g. -2.06
// for quick_gelu(-3.4e38) and -0.06 at -1e37, where the result is ~0 (|x e^(k x)| < 1.4e-36 there).
HSD_INLINE __m256 x_sigmoid(__m256 x, __m256 kx) {
  __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), kx));
  const __m256 q = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.f), e));
  return _mm256_blendv_ps(q, _mm256_mul_ps(x, _mm256_setzero_ps()), _mm256_cmp_ps(kx, _mm256_set1_ps(-87.f), _CMP_LT_OQ));
}

// x * Phi(x), Phi the standard normal CDF = erfc(-x / sqrt2) / 2, with erfc(z) = t exp(-z^2 + c(t)), t = 1 / (1 +
// z / 2) and c the degree-9 polynomial kErfcFit (avx2_math.h), so the tail x << 0 keeps its relative accuracy.
// z^2 = x^2 / 2 is taken exactly as hi + lo (x x rounded and the FMA's remainder, halved): from z = |x| / sqrt2
// rounded first, its 6e-8 relative error reached the exponent as 1.2e-7 z^2, 4.4e-6 of the result at x = -7.4.
// Relative error against float64: <= 1.3e-6 for |x| <= 7.5, <= 4.3e-6 down to -13.2 (session 27;
// Abramowitz-Stegun 7.1.26 before, whose error bound 1.5e-7 is absolute, had 5e-5 at x = -3, 3.6e-3 at -6,
// 1.5e-2 at -9). Beyond x^2 / 2 = 87 (|result| < 1e-37) the tail is 0.
HSD_INLINE __m256 gelu_erf(__m256 x) {
  const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.f), x);
  const __m256 z = _mm256_min_ps(_mm256_mul_ps(ax, _mm256_set1_ps(0.70710678118f)), _mm256_set1_ps(10.f));
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.f)));
  __m256 c = _mm256_set1_ps(kErfcFit[0]);
  for (int k = 1; k < 10; ++k) c = _mm256_fmadd_ps(c, t, _mm256_set1_ps(kErfcFit[k]));
  const __m256 xc = _mm256_min_ps(ax, _mm256_set1_ps(14.f)), xx = _mm256_mul_ps(xc, xc);  // (NaN: 14)
  const __m256 hi = _mm256_mul_ps(_mm256_set1_ps(0.5f), xx);
  const __m256 lo = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_fmsub_ps(xc, xc, xx));
  const __m256 arg = _mm256_sub_ps(_mm256_sub_ps(c, lo), hi);
  __m256 half_erfc = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), t), exp_ps(arg));
  half_erfc = _mm256_andnot_ps(_mm256_cmp_ps(arg, _mm256_set1_ps(-87.f), _CMP_LT_OQ), half_erfc);
  const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 phi = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.f), half_erfc), half_erfc, neg);
  // x enters the product as max(-FLT_MAX, x) (a NaN stays NaN: maxps returns its second operand then), so
  // gelu(-inf) = -0 as the portable gelu_f gives, not -inf * 0 = NaN.
  return _mm256_mul_ps(_mm256_max_ps(_mm256_set1_ps(-3.40282347e38f), x), phi);
}

HSD_INLINE __m256 act_ps(__m256 x, int act) {
  switch (act) {
    case kActSilu: return x_sigmoid(x, x);
    case kActGelu: return gelu_erf(x);
    case kActGeluTanh: {
      // 2 sqrt(2/pi) (x + 0.044715 x^3)
      __m256 x2 = _mm256_mul_ps(x, x);
      __m256 u = _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.5957691216f)),
                               _mm256_fmadd_ps(x2, _mm256_set1_ps(0.044715f), _mm256_set1_ps(1.f)));
      return x_sigmoid(x, u);
    }
    case kActQuickGelu: return x_sigmoid(x, _mm256_mul_ps(x, _mm256_set1_ps(1.702f)));
    default: return x;
  }
}

void act_avx2(float* x, int64_t n, int act) {
  if (act == kActNone) return;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, act_ps(_mm256_loadu_ps(x + i), act));
  if (i < n) {
    float tmp[8] = {0};
    for (int64_t j = i; j < n; ++j) tmp[j - i] = x[j];
    _mm256_storeu_ps(tmp, act_ps(_mm256_loadu_ps(tmp), act));
    for (int64_t j = i; j < n; ++j) x[j] = tmp[j - i];
  }
}

// Shared by the two micro-kernels' asm: the 12 accumulators (ymm0-11) zeroed, stored to acc_mem, and one row
// of the C tile prefetched into L1 (both ends of its 64 bytes, which may straddle two lines).
#define HSD_ZERO_ACC                                                                                           \
  "vxorps %%ymm0, %%ymm0, %%ymm0\n\t vxorps %%ymm1, %%ymm1, %%ymm1\n\t vxorps %%ymm2, %%ymm2, %%ymm2\n\t"       \
  "vxorps %%ymm3, %%ymm3, %%ymm3\n\t vxorps %%ymm4, %%ymm4, %%ymm4\n\t vxorps %%ymm5, %%ymm5, %%ymm5\n\t"       \
  "vxorps %%ymm6, %%ymm6, %%ymm6\n\t vxorps %%ymm7, %%ymm7, %%ymm7\n\t vxorps %%ymm8, %%ymm8, %%ymm8\n\t"       \
  "vxorps %%ymm9, %%ymm9, %%ymm9\n\t vxorps %%ymm10, %%ymm10, %%ymm10\n\t vxorps %%ymm11, %%ymm11, %%ymm11\n\t"
#define HSD_STORE_ACC                                                                                          \
  "vmovaps %%ymm0, 0(%[acc])\n\t vmovaps %%ymm1, 32(%[acc])\n\t vmovaps %%ymm2, 64(%[acc])\n\t"                 \
  "vmovaps %%ymm3, 96(%[acc])\n\t vmovaps %%ymm4, 128(%[acc])\n\t vmovaps %%ymm5, 160(%[acc])\n\t"              \
  "vmovaps %%ymm6, 192(%[acc])\n\t vmovaps %%ymm7, 224(%[acc])\n\t vmovaps %%ymm8, 256(%[acc])\n\t"             \
  "vmovaps %%ymm9, 288(%[acc])\n\t vmovaps %%ymm10, 320(%[acc])\n\t vmovaps %%ymm11, 352(%[acc])\n\t"
#define HSD_PF_C "prefetcht0 (%[t])\n\tprefetcht0 60(%[t])\n\tadd %[ldc], %[t]\n\t"

// C's tile towards L2 before the k loop: it is read back when K blocks accumulate or beta != 0, and written in
// any case (the asm then brings it into L1 shortly before the epilogue, since the A and B streams would evict
// it from L1 meanwhile). Both ends of each row, in case the 64 bytes straddle two lines.
HSD_INLINE void prefetch_c_l2(const float* c, int64_t ldc) {
  for (int i = 0; i < MR; ++i) {
    _mm_prefetch((const char*)(c + i * ldc), _MM_HINT_T1);
    _mm_prefetch((const char*)(c + i * ldc + NR - 1), _MM_HINT_T1);
  }
}

HSD_INLINE void epilogue_6x16(const float* acc_mem, float* c, int64_t ldc, const Epilogue& e, const float* bias);

// The geglu op's own vector formula (pointwise_avx2.cpp) on a tile's rows of 8 values and their 8 gates, so
// the fused linear_geglu gives exactly what linear + geglu give; the rows run interleaved (+3% to +7.5% on
// linear_geglu against one call per row, bench/ab.ts side by side).
void geglu_rows_avx2(const float* t, int64_t ldt, int64_t rows, float* out, int64_t ldo) {
  pw_avx2::geglu_tile(t, ldt, rows, out, ldo);
}

void micro_6x16(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const Epilogue& e,
                const float* bias) {
  prefetch_c_l2(c, ldc);
  // The k loop is asm with fixed registers: compiled from intrinsics, GCC rotated the 12 accumulators through
  // spare registers (14 moves per 48 FMAs). ymm0-11 accumulate (row i in ymm 2i, 2i+1), ymm12-13 hold the B
  // row, ymm14/15 alternate as the A broadcast. Three loops: 4 steps per iteration with A and B prefetched
  // 8 steps ahead (A streams from L2; the B panel should sit in L1 but the A stream evicts some of it), then
  // C is prefetched into L1 for the last <= 32 steps, then single steps.
#define HSD_ROW(o, i, ar, c0, c1)                                        \
  "vbroadcastss " #o "*24+" #i "*4(%[a]), %%ymm" #ar "\n\t"              \
  "vfmadd231ps %%ymm12, %%ymm" #ar ", %%ymm" #c0 "\n\t"                  \
  "vfmadd231ps %%ymm13, %%ymm" #ar ", %%ymm" #c1 "\n\t"
#define HSD_STEP(o)                                                      \
  "vmovaps " #o "*64(%[b]), %%ymm12\n\t"                                 \
  "vmovaps " #o "*64+32(%[b]), %%ymm13\n\t"                              \
  HSD_ROW(o, 0, 14, 0, 1) HSD_ROW(o, 1, 15, 2, 3) HSD_ROW(o, 2, 14, 4, 5) \
  HSD_ROW(o, 3, 15, 6, 7) HSD_ROW(o, 4, 14, 8, 9) HSD_ROW(o, 5, 15, 10, 11)
  alignas(32) float acc_mem[12 * 8];
  int64_t n1 = kc > 32 ? (kc - 32) / 4 : 0, n2 = (kc - 4 * n1) / 4, n3 = kc - 4 * (n1 + n2), t;
  __asm__ volatile(
      HSD_ZERO_ACC
      "test %[n1], %[n1]\n\t jz 2f\n\t"
      "1:\n\t"
      "prefetcht0 192(%[a])\n\t prefetcht0 512(%[b])\n\t prefetcht0 576(%[b])\n\t"
      "prefetcht0 640(%[b])\n\t prefetcht0 704(%[b])\n\t"
      HSD_STEP(0) HSD_STEP(1) HSD_STEP(2) HSD_STEP(3)
      "add $96, %[a]\n\t add $256, %[b]\n\t dec %[n1]\n\t jnz 1b\n\t"
      "2:\n\t"
      "mov %[c], %[t]\n\t" HSD_PF_C HSD_PF_C HSD_PF_C HSD_PF_C HSD_PF_C HSD_PF_C
      "test %[n2], %[n2]\n\t jz 4f\n\t"
      "3:\n\t"
      HSD_STEP(0) HSD_STEP(1) HSD_STEP(2) HSD_STEP(3)
      "add $96, %[a]\n\t add $256, %[b]\n\t dec %[n2]\n\t jnz 3b\n\t"
      "4:\n\t"
      "test %[n3], %[n3]\n\t jz 6f\n\t"
      "5:\n\t"
      HSD_STEP(0)
      "add $24, %[a]\n\t add $64, %[b]\n\t dec %[n3]\n\t jnz 5b\n\t"
      "6:\n\t"
      HSD_STORE_ACC
      : [a] "+r"(a), [b] "+r"(b), [n1] "+r"(n1), [n2] "+r"(n2), [n3] "+r"(n3), [t] "=&r"(t)
      : [c] "r"(c), [ldc] "r"(ldc * (int64_t)sizeof(float)), [acc] "r"(acc_mem)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
        "xmm13", "xmm14", "xmm15", "memory", "cc");
#undef HSD_STEP
#undef HSD_ROW

  epilogue_6x16(acc_mem, c, ldc, e, bias);
}

// The epilogue of both micro-kernels on the 12 accumulators (stored at acc_mem): see Epilogue.
HSD_INLINE void epilogue_6x16(const float* acc_mem, float* c, int64_t ldc, const Epilogue& e, const float* bias) {
  // The accumulators are read from acc_mem row by row (a local copy of all 12 compiled to a 384-byte rep movsq,
  // 2% of the kernel's samples at K = 320).
  const __m256 va = _mm256_set1_ps(e.alpha), vb = _mm256_set1_ps(e.beta);
  const bool beta_early = e.first && e.beta != 0.f && e.act == kActNone;
  const bool beta_late = e.first && e.last && e.beta != 0.f && e.act != kActNone;
  __m256 bias0 = _mm256_setzero_ps(), bias1 = bias0;
  if (e.last && bias) {
    bias0 = _mm256_loadu_ps(bias);
    bias1 = _mm256_loadu_ps(bias + 8);
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    __m256 v0 = _mm256_mul_ps(_mm256_load_ps(acc_mem + 16 * i), va);
    __m256 v1 = _mm256_mul_ps(_mm256_load_ps(acc_mem + 16 * i + 8), va);
    if (!e.first) {
      v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ci));
      v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ci + 8));
    } else if (beta_early) {
      v0 = _mm256_fmadd_ps(_mm256_loadu_ps(ci), vb, v0);
      v1 = _mm256_fmadd_ps(_mm256_loadu_ps(ci + 8), vb, v1);
    }
    if (e.last) {
      v0 = act_ps(_mm256_add_ps(v0, bias0), e.act);
      v1 = act_ps(_mm256_add_ps(v1, bias1), e.act);
      if (beta_late) {
        v0 = _mm256_fmadd_ps(_mm256_loadu_ps(ci), vb, v0);
        v1 = _mm256_fmadd_ps(_mm256_loadu_ps(ci + 8), vb, v1);
      }
    }
    _mm256_storeu_ps(ci, v0);
    _mm256_storeu_ps(ci + 8, v1);
  }
}

// micro_6x16 with A read in place from 6 rows a + i*lda (the weight-rows path: A is an f32 weight [N, K],
// B the activation packed into 16-row panels). The rows are addressed as a0, a0 + lda, a0 + 2 lda, a3 =
// a0 + 3 lda, a0 + 4 lda, a3 + 2 lda, and each is prefetched 64 steps ahead (a weight streams from memory once).
void micro_rows_6x16(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                     const Epilogue& e, const float* bias) {
  prefetch_c_l2(c, ldc);
#define HSD_RROW(o, addr, ar, c0, c1)                                    \
  "vbroadcastss " #o "*4" addr ", %%ymm" #ar "\n\t"                      \
  "vfmadd231ps %%ymm12, %%ymm" #ar ", %%ymm" #c0 "\n\t"                  \
  "vfmadd231ps %%ymm13, %%ymm" #ar ", %%ymm" #c1 "\n\t"
#define HSD_RSTEP(o)                                                     \
  "vmovaps " #o "*64(%[b]), %%ymm12\n\t"                                 \
  "vmovaps " #o "*64+32(%[b]), %%ymm13\n\t"                              \
  HSD_RROW(o, "(%[a0])", 14, 0, 1) HSD_RROW(o, "(%[a0],%[lda],1)", 15, 2, 3)        \
  HSD_RROW(o, "(%[a0],%[lda],2)", 14, 4, 5) HSD_RROW(o, "(%[a3])", 15, 6, 7)        \
  HSD_RROW(o, "(%[a0],%[lda],4)", 14, 8, 9) HSD_RROW(o, "(%[a3],%[lda],2)", 15, 10, 11)
  alignas(32) float acc_mem[12 * 8];
  int64_t n1 = kc > 32 ? (kc - 32) / 4 : 0, n2 = (kc - 4 * n1) / 4, n3 = kc - 4 * (n1 + n2), t;
  const float* a3 = a + 3 * lda;
  __asm__ volatile(
      HSD_ZERO_ACC
      "test %[n1], %[n1]\n\t jz 2f\n\t"
      "1:\n\t"
      "prefetcht0 256(%[a0])\n\t prefetcht0 256(%[a0],%[lda],1)\n\t prefetcht0 256(%[a0],%[lda],2)\n\t"
      "prefetcht0 256(%[a3])\n\t prefetcht0 256(%[a0],%[lda],4)\n\t prefetcht0 256(%[a3],%[lda],2)\n\t"
      "prefetcht0 512(%[b])\n\t prefetcht0 576(%[b])\n\t prefetcht0 640(%[b])\n\t prefetcht0 704(%[b])\n\t"
      HSD_RSTEP(0) HSD_RSTEP(1) HSD_RSTEP(2) HSD_RSTEP(3)
      "add $16, %[a0]\n\t add $16, %[a3]\n\t add $256, %[b]\n\t dec %[n1]\n\t jnz 1b\n\t"
      "2:\n\t"
      "mov %[c], %[t]\n\t" HSD_PF_C HSD_PF_C HSD_PF_C HSD_PF_C HSD_PF_C HSD_PF_C
      "test %[n2], %[n2]\n\t jz 4f\n\t"
      "3:\n\t"
      HSD_RSTEP(0) HSD_RSTEP(1) HSD_RSTEP(2) HSD_RSTEP(3)
      "add $16, %[a0]\n\t add $16, %[a3]\n\t add $256, %[b]\n\t dec %[n2]\n\t jnz 3b\n\t"
      "4:\n\t"
      "test %[n3], %[n3]\n\t jz 6f\n\t"
      "5:\n\t"
      HSD_RSTEP(0)
      "add $4, %[a0]\n\t add $4, %[a3]\n\t add $64, %[b]\n\t dec %[n3]\n\t jnz 5b\n\t"
      "6:\n\t"
      HSD_STORE_ACC
      : [a0] "+r"(a), [a3] "+r"(a3), [b] "+r"(b), [n1] "+r"(n1), [n2] "+r"(n2), [n3] "+r"(n3), [t] "=&r"(t)
      : [c] "r"(c), [ldc] "r"(ldc * (int64_t)sizeof(float)), [lda] "r"(lda * (int64_t)sizeof(float)),
        [acc] "r"(acc_mem)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
        "xmm13", "xmm14", "xmm15", "memory", "cc");
#undef HSD_RSTEP
#undef HSD_RROW
#undef HSD_PF_C
#undef HSD_STORE_ACC
#undef HSD_ZERO_ACC
  epilogue_6x16(acc_mem, c, ldc, e, bias);
}

void pack_a_rows_avx2(float* dst, const float* const* rows, int64_t len) {
  const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4], *r5 = rows[5];
  int64_t k = 0;
  for (; k + 8 <= len; k += 8) {
    __m256 v5 = _mm256_loadu_ps(r5 + k), o[8];
    transpose8(_mm256_loadu_ps(r0 + k), _mm256_loadu_ps(r1 + k), _mm256_loadu_ps(r2 + k), _mm256_loadu_ps(r3 + k),
               _mm256_loadu_ps(r4 + k), v5, v5, v5, o);
    float* d = dst + k * MR;
    // Each 8-wide store spills 2 lanes into the next k's slot, which the next store overwrites; the last
    // one stores exactly 6.
    for (int j = 0; j < 7; ++j) _mm256_storeu_ps(d + j * MR, o[j]);
    _mm_storeu_ps(d + 7 * MR, _mm256_castps256_ps128(o[7]));
    _mm_storel_pi((__m64*)(d + 7 * MR + 4), _mm256_extractf128_ps(o[7], 1));
  }
  for (; k < len; ++k)
    for (int i = 0; i < MR; ++i) dst[k * MR + i] = rows[i][k];
}

HSD_INLINE __m256 load8(const void* p, DType dt) {
  if (dt == DType::F32) return _mm256_loadu_ps((const float*)p);
  __m128i h = _mm_loadu_si128((const __m128i*)p);
  if (dt == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

HSD_INLINE float load1(const void* p, int64_t i, DType dt) {
  if (dt == DType::F32) return ((const float*)p)[i];
  uint16_t h = ((const uint16_t*)p)[i];
  return dt == DType::F16 ? _cvtsh_ss(h) : bf16_to_float(h);
}

void widen_avx2(float* dst, const void* src, DType dt, int64_t n) {
  const int64_t es = dt == DType::F32 ? 4 : 2;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8((const char*)src + i * es, dt));
  for (; i < n; ++i) dst[i] = load1(src, i, dt);
}

template <DType DT>
void pack_b_rows_t(float* dst, const void* const* rows, int64_t len) {
  constexpr int64_t es = DT == DType::F32 ? 4 : 2;
  auto at = [&](int j, int64_t k) { return (const char*)rows[j] + k * es; };
  int64_t k = 0;
  for (; k + 8 <= len; k += 8) {
    __m256 lo[8], hi[8];
    transpose8(load8(at(0, k), DT), load8(at(1, k), DT), load8(at(2, k), DT), load8(at(3, k), DT),
               load8(at(4, k), DT), load8(at(5, k), DT), load8(at(6, k), DT), load8(at(7, k), DT), lo);
    transpose8(load8(at(8, k), DT), load8(at(9, k), DT), load8(at(10, k), DT), load8(at(11, k), DT),
               load8(at(12, k), DT), load8(at(13, k), DT), load8(at(14, k), DT), load8(at(15, k), DT), hi);
    float* d = dst + k * NR;
    for (int j = 0; j < 8; ++j) {
      _mm256_store_ps(d + j * NR, lo[j]);
      _mm256_store_ps(d + j * NR + 8, hi[j]);
    }
  }
  for (; k < len; ++k)
    for (int j = 0; j < NR; ++j) dst[k * NR + j] = load1(rows[j], k, DT);
}

void pack_b_rows_avx2(float* dst, const void* const* rows, DType dt, int64_t len) {
  if (dt == DType::F32) pack_b_rows_t<DType::F32>(dst, rows, len);
  else if (dt == DType::F16) pack_b_rows_t<DType::F16>(dst, rows, len);
  else pack_b_rows_t<DType::BF16>(dst, rows, len);
}

void pack_b_cols_avx2(float* dst, const void* src, DType dt, int64_t ld, int64_t nvalid, int64_t len) {
  const int64_t es = dt == DType::F32 ? 4 : 2;
  for (int64_t k = 0; k < len; ++k) {
    const char* s = (const char*)src + k * ld * es;
    float* d = dst + k * NR;
    if (nvalid == NR) {
      _mm256_store_ps(d, load8(s, dt));
      _mm256_store_ps(d + 8, load8(s + 8 * es, dt));
    } else {
      for (int64_t j = 0; j < NR; ++j) d[j] = j < nvalid ? load1(s, j, dt) : 0.f;
    }
  }
}

bool cpu_has_avx2_fma_f16c() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  if (!(fma && osxsave && avx && f16c)) return false;
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 6) != 6) return false;  // the OS saves XMM and YMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return b & (1u << 5);
}

}  // namespace

// The epilogue for the AVX-512 micro-kernels (gemm_avx512.cpp), which share everything but the k loop.
void epilogue_6x16_avx2(const float* acc_mem, float* c, int64_t ldc, const Epilogue& e, const float* bias) {
  epilogue_6x16(acc_mem, c, ldc, e, bias);
}

const Kernels* avx2_kernels() {
  static const Kernels k{"avx2", micro_6x16, micro_rows_6x16, pack_a_rows_avx2, pack_b_rows_avx2, pack_b_cols_avx2, act_avx2,
                         widen_avx2, geglu_rows_avx2};
  static const bool ok = cpu_has_avx2_fma_f16c();
  return ok ? &k : nullptr;
}

namespace {
bool cpu_has_avx512f_dq_vl() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;  // OSXSAVE
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 0xe6) != 0xe6) return false;  // the OS saves XMM, YMM, opmask and both halves of the ZMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  // AVX512F, DQ (vreduceps in pointwise_avx2.cpp's SiLU) and VL (its GEGLU table on 8 lanes)
  return (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 31));
}
}  // namespace

bool avx512_install(Kernels& k);  // gemm_avx512.cpp

// The AVX2 set with the AVX-512 micro-kernels (gemm_avx512.cpp). The CPU check runs here, in a file compiled
// without AVX-512, before any code of that file does.
const Kernels* avx512_kernels() {
  static const Kernels* k = []() -> const Kernels* {
    const Kernels* base = avx2_kernels();
    if (!base || !cpu_has_avx512f_dq_vl()) return nullptr;
    static Kernels s = *base;
    return avx512_install(s) ? &s : nullptr;
  }();
  return k;
}

}  // namespace gemm
}  // namespace hsd

#else

namespace hsd {
namespace gemm {
const Kernels* avx2_kernels() { return nullptr; }
const Kernels* avx512_kernels() { return nullptr; }
}  // namespace gemm
}  // namespace hsd

#endif
