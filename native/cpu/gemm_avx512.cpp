// AVX-512 micro-kernels of the CPU GEMM engine (native/cpu/gemm_kernels.h); compiled with -mavx512f -mavx512dq -mavx512vl (plus the
// AVX2 set's flags) and picked at run time only when cpuid reports AVX-512F, DQ and VL and the OS saves the ZMM state.
// Everything else (packing, the micro-kernels' epilogue) is the AVX2 set's, except the activations applied to
// whole rows (act_avx512, the same bits on 16 lanes): the panels keep their MR = 6,
// NR = 16 layout, so every driver, packer and fused sink works unchanged.
//
// micro: the same 6x16 tile as the AVX2 kernel, one zmm per row. Six accumulators alone would leave the two
// 512-bit FMA pipes waiting on the 4-cycle FMA latency (6 chains where 8 are needed), so even and odd k steps
// go to separate accumulators (12 chains) that are added once at the end. Per k step: one 64-byte B load and
// six FMAs whose A operand is an embedded broadcast from the panel. The sums therefore differ from the AVX2
// kernel's in rounding (two chains per output instead of one), never in what they sum.
// On a 2-core Zen 5 (AMD EPYC, family 26) the 512-bit FMA loop measured 541 GFLOP/s against 272 for 256-bit:
// the AVX2 kernels used half the machine.
#include "gemm_kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <cpuid.h>
#include <immintrin.h>

#include "avx2_math.h"

namespace hsd {
namespace pw_avx512 {  // pointwise_avx512.cpp
void geglu_tile(const float* t, int64_t ldt, int64_t rows, float* o, int64_t ldo);
}  // namespace pw_avx512
namespace gemm {
// gemm_avx2.cpp: the AVX2 micro-kernels' epilogue on a 6x16 accumulator tile stored row by row (acc_mem).
void epilogue_6x16_avx2(const float* acc_mem, float* c, int64_t ldc, const Epilogue& e, const float* bias);

namespace {

#define HSD_INLINE inline __attribute__((always_inline))

// The MR rows of a C tile `cols` wide: every 64-byte line of each row (rows need not be line-aligned). To L2
// before the k loop (as the AVX2 kernel does), to L1 before the last steps.
template <_mm_hint HINT>
HSD_INLINE void prefetch_c(const float* c, int64_t ldc, int64_t cols) {
  for (int i = 0; i < MR; ++i) {
    for (int64_t x = 0; x < cols; x += 16) _mm_prefetch((const char*)(c + i * ldc + x), HINT);
    _mm_prefetch((const char*)(c + i * ldc + cols - 1), HINT);
  }
}

// The B panel's rows k + 8 .. k + 11 towards L1 (the k loops prefetch 8 steps ahead, 4 steps per call).
HSD_INLINE void prefetch_b4(const float* b, int64_t k) {
  for (int64_t q = 8; q < 12; ++q) _mm_prefetch((const char*)(b + (k + q) * NR), _MM_HINT_T0);
}

// The k loop over rows given by A(i, k) (a pointer to A's element (i, k)), two steps at a time into the even
// and odd accumulators, then the sums stored to acc_mem (row i at 16 i).
template <class AT, class PF>
HSD_INLINE void kloop(int64_t kc, AT A, const float* b, const float* c, int64_t ldc, PF prefetch, float* acc_mem) {
  __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0, e4 = e0, e5 = e0;
  __m512 o0 = e0, o1 = e0, o2 = e0, o3 = e0, o4 = e0, o5 = e0;
  int64_t k = 0;
  const int64_t kpf = kc > 32 ? kc - 32 : 0;  // C to L1 for the last <= 32 steps
  auto step2 = [&](int64_t kk) {
    const __m512 b0 = _mm512_load_ps(b + kk * NR), b1 = _mm512_load_ps(b + (kk + 1) * NR);
    e0 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(0, kk)), e0);
    o0 = _mm512_fmadd_ps(b1, _mm512_set1_ps(*A(0, kk + 1)), o0);
    e1 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(1, kk)), e1);
    o1 = _mm512_fmadd_ps(b1, _mm512_set1_ps(*A(1, kk + 1)), o1);
    e2 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(2, kk)), e2);
    o2 = _mm512_fmadd_ps(b1, _mm512_set1_ps(*A(2, kk + 1)), o2);
    e3 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(3, kk)), e3);
    o3 = _mm512_fmadd_ps(b1, _mm512_set1_ps(*A(3, kk + 1)), o3);
    e4 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(4, kk)), e4);
    o4 = _mm512_fmadd_ps(b1, _mm512_set1_ps(*A(4, kk + 1)), o4);
    e5 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(5, kk)), e5);
    o5 = _mm512_fmadd_ps(b1, _mm512_set1_ps(*A(5, kk + 1)), o5);
  };
  for (; k + 4 <= kpf; k += 4) {
    prefetch(k);
    step2(k);
    step2(k + 2);
  }
  prefetch_c<_MM_HINT_T0>(c, ldc, NR);
  for (; k + 2 <= kc; k += 2) step2(k);
  if (k < kc) {  // an odd last step, into the even accumulators
    const __m512 b0 = _mm512_load_ps(b + k * NR);
    e0 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(0, k)), e0);
    e1 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(1, k)), e1);
    e2 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(2, k)), e2);
    e3 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(3, k)), e3);
    e4 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(4, k)), e4);
    e5 = _mm512_fmadd_ps(b0, _mm512_set1_ps(*A(5, k)), e5);
  }
  _mm512_store_ps(acc_mem + 0 * NR, _mm512_add_ps(e0, o0));
  _mm512_store_ps(acc_mem + 1 * NR, _mm512_add_ps(e1, o1));
  _mm512_store_ps(acc_mem + 2 * NR, _mm512_add_ps(e2, o2));
  _mm512_store_ps(acc_mem + 3 * NR, _mm512_add_ps(e3, o3));
  _mm512_store_ps(acc_mem + 4 * NR, _mm512_add_ps(e4, o4));
  _mm512_store_ps(acc_mem + 5 * NR, _mm512_add_ps(e5, o5));
}

// A packed: element (i, k) at a[k*MR + i]; A and B prefetched 8 steps ahead as the AVX2 kernel does. (An asm k
// loop with fixed registers, as the AVX2 kernel has, measured 226-231 GFLOP/s alone against 223-228 without its
// B prefetches and 214 with them, and whole GEMMs within noise of this one (engine harness, alternated): not
// kept.)
void micro_6x16_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const Epilogue& e,
                       const float* bias) {
  prefetch_c<_MM_HINT_T1>(c, ldc, NR);
  alignas(64) float acc_mem[MR * NR];
  kloop(
      kc, [a](int i, int64_t k) { return a + k * MR + i; }, b, c, ldc,
      [a, b](int64_t k) {
        _mm_prefetch((const char*)(a + (k + 8) * MR), _MM_HINT_T0);
        prefetch_b4(b, k);
      },
      acc_mem);
  epilogue_6x16_avx2(acc_mem, c, ldc, e, bias);
}

// Two B panels at once (the MR x 2NR tile of two adjacent full panels): per k step 2 B loads and 6 broadcasts
// for 12 FMAs where micro has 1 and 6 for 6; alone on one core 259-272 GFLOP/s against micro's 223-228 (the
// 16-wide FMA peak: 274). Even and odd k in separate accumulators exactly as micro's kloop (24 in all), so each
// output gets micro's bits (the fused GEGLU's tiles, which go through micro, match the plain product's).
// A(i, k) points at A's element (i, k) (a panel, or rows read in place); prefetch_a(k) fetches A 8 steps ahead.
template <class AT, class PA>
HSD_INLINE void micro2_body(int64_t kc, AT A, PA prefetch_a, const float* b0, const float* b1, float* c,
                            int64_t ldc, const Epilogue& e, const float* bias) {
  prefetch_c<_MM_HINT_T1>(c, ldc, 2 * NR);
  __m512 e0[6], e1[6], o0[6], o1[6];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) e0[r] = e1[r] = o0[r] = o1[r] = _mm512_setzero_ps();
  auto step2 = [&](int64_t k) {
    const __m512 x0 = _mm512_load_ps(b0 + k * NR), x1 = _mm512_load_ps(b1 + k * NR);
    const __m512 y0 = _mm512_load_ps(b0 + (k + 1) * NR), y1 = _mm512_load_ps(b1 + (k + 1) * NR);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m512 ae = _mm512_set1_ps(*A(r, k)), ao = _mm512_set1_ps(*A(r, k + 1));
      e0[r] = _mm512_fmadd_ps(x0, ae, e0[r]);
      e1[r] = _mm512_fmadd_ps(x1, ae, e1[r]);
      o0[r] = _mm512_fmadd_ps(y0, ao, o0[r]);
      o1[r] = _mm512_fmadd_ps(y1, ao, o1[r]);
    }
  };
  int64_t k = 0;
  const int64_t kpf = kc > 32 ? kc - 32 : 0;
  for (; k + 4 <= kpf; k += 4) {
    prefetch_a(k);
    prefetch_b4(b0, k);
    prefetch_b4(b1, k);
    step2(k);
    step2(k + 2);
  }
  prefetch_c<_MM_HINT_T0>(c, ldc, 2 * NR);
  for (; k + 2 <= kc; k += 2) step2(k);
  if (k < kc) {  // an odd last step, into the even accumulators (as kloop)
    const __m512 x0 = _mm512_load_ps(b0 + k * NR), x1 = _mm512_load_ps(b1 + k * NR);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m512 ae = _mm512_set1_ps(*A(r, k));
      e0[r] = _mm512_fmadd_ps(x0, ae, e0[r]);
      e1[r] = _mm512_fmadd_ps(x1, ae, e1[r]);
    }
  }
  alignas(64) float acc0[MR * NR], acc1[MR * NR];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) {
    _mm512_store_ps(acc0 + r * NR, _mm512_add_ps(e0[r], o0[r]));
    _mm512_store_ps(acc1 + r * NR, _mm512_add_ps(e1[r], o1[r]));
  }
  epilogue_6x16_avx2(acc0, c, ldc, e, bias);
  epilogue_6x16_avx2(acc1, c + NR, ldc, e, bias ? bias + NR : nullptr);
}

void micro2_6x32_avx512(int64_t kc, const float* a, const float* b0, const float* b1, float* c, int64_t ldc,
                        const Epilogue& e, const float* bias) {
  micro2_body(
      kc, [a](int i, int64_t k) { return a + k * MR + i; },
      [a](int64_t k) { _mm_prefetch((const char*)(a + (k + 8) * MR), _MM_HINT_T0); }, b0, b1, c, ldc, e, bias);
}

// micro2 with A read in place from rows a + i*lda (Winograd's V, which the input transform writes as rows):
// the same operations in the same order, so the same bits as micro2 over the packed panel of those rows. Every
// 16 steps each row's line two ahead is fetched, and the same line of the next MR rows (the drivers sweep the
// tiles down A: those are the next call's rows).
void micro2_rows_6x32_avx512(int64_t kc, const float* a, int64_t lda, const float* b0, const float* b1, float* c,
                             int64_t ldc, const Epilogue& e, const float* bias) {
  micro2_body(
      kc, [a, lda](int i, int64_t k) { return a + i * lda + k; },
      [a, lda](int64_t k) {
        if ((k & 15) == 0)
          for (int i = 0; i < MR; ++i) {
            _mm_prefetch((const char*)(a + i * lda + k + 32), _MM_HINT_T0);
            _mm_prefetch((const char*)(a + (MR + i) * lda + k), _MM_HINT_T0);
          }
      },
      b0, b1, c, ldc, e, bias);
}

// A read in place from rows a + i*lda (the weight-rows path); each row prefetched 64 steps ahead.
void micro_rows_6x16_avx512(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                            const Epilogue& e, const float* bias) {
  prefetch_c<_MM_HINT_T1>(c, ldc, NR);
  alignas(64) float acc_mem[MR * NR];
  kloop(
      kc, [a, lda](int i, int64_t k) { return a + i * lda + k; }, b, c, ldc,
      [a, b, lda](int64_t k) {
        for (int i = 0; i < MR; ++i) _mm_prefetch((const char*)(a + i * lda + k + 64), _MM_HINT_T0);
        prefetch_b4(b, k);
      },
      acc_mem);
  epilogue_6x16_avx2(acc_mem, c, ldc, e, bias);
}

// ---- bf16 inputs (Epilogue::bf16; compiled with -mavx512bf16, installed only when cpuid reports AVX512_BF16) ----
// vdpbf16ps: acc[j] += a_lo * b_lo[j] + a_hi * b_hi[j] over a k pair, 32 multiply-adds an instruction against
// 16 for an f32 FMA (one Zen 5 core: 495 against 270 GFLOP/s, 16 independent chains).
__attribute__((target("avx512bf16"))) void micro_bf16_6x16(int64_t kp, const uint32_t* a, const uint32_t* b,
                                                            float* c, int64_t ldc, const Epilogue& e,
                                                            const float* bias) {
  prefetch_c<_MM_HINT_T1>(c, ldc, NR);
  __m512 acc[6];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t q = 0; q < kp; ++q) {
    const __m512bh bv = (__m512bh)_mm512_load_si512(b + q * NR);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_set1_epi32((int)a[q * MR + r]), bv);
  }
  alignas(64) float acc_mem[MR * NR];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) _mm512_store_ps(acc_mem + r * NR, acc[r]);
  epilogue_6x16_avx2(acc_mem, c, ldc, e, bias);
}
__attribute__((target("avx512bf16"))) void micro2_bf16_6x32(int64_t kp, const uint32_t* a, const uint32_t* b0,
                                                             const uint32_t* b1, float* c, int64_t ldc,
                                                             const Epilogue& e, const float* bias) {
  prefetch_c<_MM_HINT_T1>(c, ldc, 2 * NR);
  __m512 x[6], y[6];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) x[r] = y[r] = _mm512_setzero_ps();
  for (int64_t q = 0; q < kp; ++q) {
    if ((q & 3) == 0) {
      _mm_prefetch((const char*)(b0 + (q + 16) * NR), _MM_HINT_T0);
      _mm_prefetch((const char*)(b1 + (q + 16) * NR), _MM_HINT_T0);
    }
    const __m512bh v0 = (__m512bh)_mm512_load_si512(b0 + q * NR), v1 = (__m512bh)_mm512_load_si512(b1 + q * NR);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[q * MR + r]);
      x[r] = _mm512_dpbf16_ps(x[r], av, v0);
      y[r] = _mm512_dpbf16_ps(y[r], av, v1);
    }
  }
  alignas(64) float acc0[MR * NR], acc1[MR * NR];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) {
    _mm512_store_ps(acc0 + r * NR, x[r]);
    _mm512_store_ps(acc1 + r * NR, y[r]);
  }
  epilogue_6x16_avx2(acc0, c, ldc, e, bias);
  epilogue_6x16_avx2(acc1, c + NR, ldc, e, bias ? bias + NR : nullptr);
}
// A panel (6 wide) to pairs: the k pair's 12 floats rounded (vcvtneps2bf16), their words interleaved (vpermw).
__attribute__((target("avx512bw,avx512vl,avx512bf16"))) void pairs_a_bf16(uint32_t* dst, const float* src,
                                                                            int64_t kc) {
  const __m256i idx = _mm256_setr_epi16(0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11, 12, 13, 14, 15);
  const int64_t kp = (kc + 1) / 2;
  for (int64_t q = 0; q < kp; ++q) {
    const int n = 2 * q + 1 < kc ? 2 * MR : MR;  // an odd kc's last pair: its high half zero
    const __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), src + q * 2 * MR);
    const __m256i w = _mm256_permutexvar_epi16(idx, (__m256i)_mm512_cvtneps_pbh(v));
    _mm256_mask_storeu_epi32(dst + q * MR, (__mmask8)0x3f, w);
  }
}
// B panel (16 wide) to pairs: rows 2q and 2q + 1 rounded together (vcvtne2ps2bf16), interleaved word by word.
__attribute__((target("avx512bw,avx512vl,avx512bf16"))) void pairs_b_bf16(uint32_t* dst, const float* src,
                                                                            int64_t kc) {
  alignas(64) static const uint16_t kIdx[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(kIdx);
  const int64_t kp = (kc + 1) / 2;
  for (int64_t q = 0; q < kp; ++q) {
    const __m512 lo = _mm512_loadu_ps(src + 2 * q * NR);  // (a prepacked B is only 32-byte aligned)
    const __m512 hi = 2 * q + 1 < kc ? _mm512_loadu_ps(src + (2 * q + 1) * NR) : _mm512_setzero_ps();
    _mm512_store_si512(dst + q * NR, _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(hi, lo)));
  }
}
// r[j] (16 lanes of 32 bits each) <- column j of the 16 x 16 matrix whose row i was r[i]: unpacks of 32 and 64
// bits within 128-bit lanes, then two lane shuffles. After the unpacks r[4a + b] holds, in its 128-bit lane l,
// element 4l + b of rows 4a .. 4a + 3; the shuffles gather the four lanes of each element.
inline __attribute__((always_inline)) void transpose16x16(__m512i (&r)[16]) {
  __m512i t[16];
  for (int j = 0; j < 16; j += 2) {
    t[j] = _mm512_unpacklo_epi32(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_epi32(r[j], r[j + 1]);
  }
  for (int j = 0; j < 16; j += 4) {
    r[j] = _mm512_unpacklo_epi64(t[j], t[j + 2]);
    r[j + 1] = _mm512_unpackhi_epi64(t[j], t[j + 2]);
    r[j + 2] = _mm512_unpacklo_epi64(t[j + 1], t[j + 3]);
    r[j + 3] = _mm512_unpackhi_epi64(t[j + 1], t[j + 3]);
  }
  for (int j = 0; j < 16; ++j) t[j] = r[j];
  for (int b = 0; b < 4; ++b) {
    const __m512i x0 = _mm512_shuffle_i32x4(t[b], t[4 + b], 0x44), x1 = _mm512_shuffle_i32x4(t[b], t[4 + b], 0xee);
    const __m512i y0 = _mm512_shuffle_i32x4(t[8 + b], t[12 + b], 0x44), y1 = _mm512_shuffle_i32x4(t[8 + b], t[12 + b], 0xee);
    r[b] = _mm512_shuffle_i32x4(x0, y0, 0x88);       // lane 0 of each: element b
    r[4 + b] = _mm512_shuffle_i32x4(x0, y0, 0xdd);   // lane 1: element 4 + b
    r[8 + b] = _mm512_shuffle_i32x4(x1, y1, 0x88);   // lane 2
    r[12 + b] = _mm512_shuffle_i32x4(x1, y1, 0xdd);  // lane 3
  }
}

// B pair panel from 16 rows of bf16 values: word (q, j) = rows[j][2q] | rows[j][2q + 1] << 16, a 16 x 16 transpose
// of 32-bit words per 32 values of k, the odd last value alone. Against widening the rows into an f32 panel and
// rounding it back (pack_b_rows + pairs_b): see bench/RESULTS.md, session 16.
__attribute__((target("avx512bw,avx512vl"))) void pairs_rows_bf16(uint32_t* dst, const void* const* rows, int64_t kc) {
  const int64_t kp2 = kc / 2;
  int64_t q = 0;
  for (; q + 16 <= kp2; q += 16) {
    __m512i r[16];
    for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_si512((const char*)rows[j] + 4 * q);  // rows 2-byte aligned
    transpose16x16(r);
    for (int j = 0; j < 16; ++j) _mm512_storeu_si512(dst + (q + j) * NR, r[j]);
  }
  for (; q < kp2; ++q)
    for (int j = 0; j < 16; ++j) {
      const uint16_t* rj = (const uint16_t*)rows[j];
      dst[q * NR + j] = (uint32_t)rj[2 * q] | ((uint32_t)rj[2 * q + 1] << 16);
    }
  if (kc & 1)
    for (int j = 0; j < 16; ++j) dst[kp2 * NR + j] = ((const uint16_t*)rows[j])[kc - 1];
}

// The activations of the gelu family (the gelu / gelu_tanh / quick_gelu ops and the GEMM's transposed-output
// epilogue, through Kernels::act) on 16 lanes: gemm_avx2.cpp's x_sigmoid and gelu_erf operation for operation
// (avx512::exp_ps gives avx2::exp_ps's bits), so the same bits as the AVX2 set at twice the lanes. Session 27:
// gelu_erf's relative-accuracy erfc (ten more operations a vector) had made the gelu op 1.75x slower on 8 lanes.
HSD_INLINE __m512 x_sigmoid16(__m512 x, __m512 kx) {
  const __m512 e = avx512::exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), kx));
  const __m512 q = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.f), e));
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(kx, _mm512_set1_ps(-87.f), _CMP_LT_OQ), q,
                              _mm512_mul_ps(x, _mm512_setzero_ps()));
}
HSD_INLINE __m512 gelu_erf16(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 z = _mm512_min_ps(_mm512_mul_ps(ax, _mm512_set1_ps(0.70710678118f)), _mm512_set1_ps(10.f));
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.f)));
  __m512 c = _mm512_set1_ps(kErfcFit[0]);
  for (int k = 1; k < 10; ++k) c = _mm512_fmadd_ps(c, t, _mm512_set1_ps(kErfcFit[k]));
  const __m512 xc = _mm512_min_ps(ax, _mm512_set1_ps(14.f)), xx = _mm512_mul_ps(xc, xc);
  const __m512 hi = _mm512_mul_ps(_mm512_set1_ps(0.5f), xx);
  const __m512 lo = _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_fmsub_ps(xc, xc, xx));
  const __m512 arg = _mm512_sub_ps(_mm512_sub_ps(c, lo), hi);
  __m512 half_erfc = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), t), avx512::exp_ps(arg));
  half_erfc = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(arg, _mm512_set1_ps(-87.f), _CMP_NLT_UQ), half_erfc);
  const __m512 phi = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ),
                                          _mm512_sub_ps(_mm512_set1_ps(1.f), half_erfc), half_erfc);
  return _mm512_mul_ps(_mm512_max_ps(_mm512_set1_ps(-3.40282347e38f), x), phi);
}
HSD_INLINE __m512 act16(__m512 x, int act) {
  switch (act) {
    case kActSilu: return x_sigmoid16(x, x);
    case kActGelu: return gelu_erf16(x);
    case kActGeluTanh: {
      const __m512 x2 = _mm512_mul_ps(x, x);
      const __m512 u = _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.5957691216f)),
                                     _mm512_fmadd_ps(x2, _mm512_set1_ps(0.044715f), _mm512_set1_ps(1.f)));
      return x_sigmoid16(x, u);
    }
    case kActQuickGelu: return x_sigmoid16(x, _mm512_mul_ps(x, _mm512_set1_ps(1.702f)));
    default: return x;
  }
}
void act_avx512(float* x, int64_t n, int act) {
  if (act == kActNone) return;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, act16(_mm512_loadu_ps(x + i), act));
  if (i < n) {  // the tail in masked lanes (the others read as 0 and not stored)
    const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(x + i, m, act16(_mm512_maskz_loadu_ps(m, x + i), act));
  }
}

bool cpu_has_avx512_bf16() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 30))) return false;  // AVX512BW
  return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));              // AVX512_BF16
}
}  // namespace

// Puts the AVX-512 micro-kernels into k (a copy of the AVX2 set); true when this build has them. Called by
// avx512_kernels() (gemm_avx2.cpp) only after cpuid said the CPU runs them: nothing in this file, which the
// compiler may fill with AVX-512 instructions anywhere, runs before that check.
bool avx512_install(Kernels& k) {
  k.name = "avx512";
  k.micro = micro_6x16_avx512;
  k.micro_rows = micro_rows_6x16_avx512;
  k.micro2 = micro2_6x32_avx512;
  k.micro2_rows = micro2_rows_6x32_avx512;
  k.act = act_avx512;
  // linear_geglu's tile sink: the AVX-512 compile's GEGLU (its table form), as the geglu op of this set runs.
  k.geglu_rows = pw_avx512::geglu_tile;
  if (cpu_has_avx512_bf16()) {
    k.micro_bf16 = micro_bf16_6x16;
    k.micro2_bf16 = micro2_bf16_6x32;
    k.pairs_a = pairs_a_bf16;
    k.pairs_b = pairs_b_bf16;
    k.pairs_rows = pairs_rows_bf16;
  }
  return true;
}

}  // namespace gemm
}  // namespace hsd

#else

namespace hsd {
namespace gemm {
bool avx512_install(Kernels&) { return false; }
}  // namespace gemm
}  // namespace hsd

#endif
