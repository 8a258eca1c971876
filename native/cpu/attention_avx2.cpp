// AVX2 + FMA forward of the CPU `attention` op (native/cpu/attention.cpp holds the shape checks, the portable
// kernel and the dispatch); compiled with -mavx2 -mfma and called only when the GEMM engine's kernels() picks
// its AVX2 set (so HYPERSD_CPU_KERNELS=portable or a CPU without AVX2 never reaches it).
//
// Tasks over (batch, head, block of kBQ = 96 query rows). Each walks the keys in blocks of bk (128 / 64, or all of
// them up to 128: the 77 text tokens are one block) with the online softmax, keeping the flash structure (no
// Lq x Lk matrix). Per key block, each 6-row panel of the task runs its whole chain before the next panel, so
// the block's K^T tiles and V rows stay in L1 across the panels and the panel's 6 x bk scores never leave it:
//   S = scale log2(e) q K^T: K transposed once per head into 16-key tiles [Lk/16][D][16] (zero-padded), then
//       6x16 register tiles (12 ymm accumulators, 2 loads + 6 broadcasts per d step, the micro-kernel's shape) over D,
//       Q packed and scaled per task when it meets several key blocks, read in place when one;
//   softmax in base 2 (logits times scale log2(e), see kLog2e): vector max, 2^x (avx2_math.h), masked keys
//       (causal / block tail) set to exactly 0; running max m and sum l, the accumulator rescaled by
//       2^(m_old - m_new) when m moves;
//   O += P V: V from its per-head copy [Lk16][Dv rounded to 8] (made with K^T), 2 x 40 register
//       tiles for head dims 40 / 80 / 160, else 6 x 16 and 6 x 8, the accumulator loaded, updated, stored.
// One key block with head dims of 40s (SD1.5's 77-token cross-attention): P V is normalised and written straight
// to the output rows, tasks take the heads of a query block one after another, and the next panel's Q and
// output rows are prefetched (+18% and +13%, side by side in one process). Full key blocks without a mask
// (self-attention): the row maxima come from the logits' registers and the panel's exponentials run in one
// interleaved loop (+4% at d = 40); one key block without a mask, likewise with the block's tail lanes masked
// (+9% at 77 keys, d = 40). Later full blocks keep the rows' running maximum while their logits stay within
// 2^kLazy of it and take the numerators straight from the logits' registers (3-4.5% at d = 40 and 64,
// L = 1024 and 4096, the engine alone from C++ with the two ways alternated).
// One key block without a mask and head dims other than 40s (SDXL's 64 at 77 keys) take cross_attention_t,
// a transposed form on the GEMM micro-kernel (described above it).
// Scratch: K^T and V of all heads (B*H*(D + Dv8)*Lk16 floats, reused per-thread buffers), per thread 96*D + 6*bk
// + 96*Dv8.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gemm_kernels.h"
#include "hypersd/ops.h"

// attention_avx512.cpp compiles this file again with AVX-512 enabled, under another entry name; there the logits
// tiles (logits_acc_6x16, two key tiles at once in logits_acc_6x16x2), the softmax numerators and the P V tiles
// (pv_6x40, pv_6xZ) run 16 lanes wide, and everything else is this file's AVX2 code.
#ifndef HSD_ATTN_ENTRY
#define HSD_ATTN_ENTRY attention_forward_avx2
#endif

#include "attention_args.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include "avx2_math.h"

namespace hsd {
namespace {

#define HSD_INLINE inline __attribute__((always_inline))

using avx2::exp2_nonpos_ps;
// The softmax runs in base 2: the logits are scaled by scale * log2(e) (folded into the scale applied anyway),
// so each exponential is exp2_nonpos_ps (three FMA-pipe operations fewer than exp, the same 1e-7 relative
// error; measured +3% to +8% side by side), and the logsumexp written for the backward is m ln 2 + log l.
constexpr double kLog2e = 1.4426950408889634, kLn2 = 0.6931471805599453;
using avx2::hmax;
using avx2::hsum;
using avx2::transpose8;

constexpr int64_t kBQ = 96;  // query rows per task (a multiple of 6)
// gemm::thread_scratch slots for K^T and the packed V (conv2d's Winograd slots are not live here).
constexpr int kScratchSlot = 0, kVScratchSlot = 1;


// n floats from p into L1: every 64-byte line of them (both ends, as p need not be line-aligned).
HSD_INLINE void prefetch_floats(const float* p, int64_t n) {
  const char* c = (const char*)p;
  for (int64_t x = 0; x < n * 4; x += 64) _mm_prefetch(c + x, _MM_HINT_T0);
  _mm_prefetch(c + n * 4 - 1, _MM_HINT_T0);
}

// a[0..n) *= f, n a multiple of 8 (an accumulator row rescaled when its running maximum moves).
HSD_INLINE void scale_row(float* a, int64_t n, float f) {
  const __m256 vf = _mm256_set1_ps(f);
  for (int64_t d = 0; d < n; d += 8) _mm256_storeu_ps(a + d, _mm256_mul_ps(_mm256_loadu_ps(a + d), vf));
}

// Where the logits kernel finds Q(r, d) for its 6 query rows: a panel of 6 rows interleaved per d (the GEMM's
// A-panel form, one pointer at fixed offsets), or the 6 rows read in place.
struct PanelQ {
  const float* q;
  HSD_INLINE const float* at(int r, int64_t d) const { return q + d * 6 + r; }
};
struct RowsQ {
  const float* rows[6];  // by value: the kernel keeps the 6 pointers in registers
  HSD_INLINE const float* at(int r, int64_t d) const { return rows[r] + d; }
};

// The 6x16 tile of logits in registers: c[r][h] = sum_d Q(r, d) kt[d*16 + 8h .. 8h+8).
#ifdef __AVX512F__
// A zmm from two ymm halves, and the upper half of a zmm.
HSD_INLINE __m512 join16(__m256 lo, __m256 hi) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
}
HSD_INLINE __m256 hi8(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }

// AVX-512 (attention_avx512.cpp): a row's 16 keys in one zmm; even and odd d in separate accumulators (12 chains
// for the two 512-bit FMA pipes, as the GEMM micro-kernel), added at the end, then split into the two ymm
// halves the rest of the kernel works with.
template <class Q>
HSD_INLINE void logits_acc_6x16(const Q& q, int64_t D, const float* kt, __m256 (&c)[6][2]) {
  __m512 e[6], o[6];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) e[r] = o[r] = _mm512_setzero_ps();
  int64_t d = 0;
#pragma GCC unroll 2
  for (; d + 2 <= D; d += 2, kt += 32) {
    const __m512 b0 = _mm512_loadu_ps(kt), b1 = _mm512_loadu_ps(kt + 16);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      e[r] = _mm512_fmadd_ps(_mm512_set1_ps(*q.at(r, d)), b0, e[r]);
      o[r] = _mm512_fmadd_ps(_mm512_set1_ps(*q.at(r, d + 1)), b1, o[r]);
    }
  }
  if (d < D) {
    const __m512 b0 = _mm512_loadu_ps(kt);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) e[r] = _mm512_fmadd_ps(_mm512_set1_ps(*q.at(r, d)), b0, e[r]);
  }
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) {
    const __m512 s = _mm512_add_ps(e[r], o[r]);
    c[r][0] = _mm512_castps512_ps256(s);
    c[r][1] = hi8(s);
  }
}
// Two adjacent 16-key tiles (kt and kt + 16 D) at once, c0 and c1 exactly as two logits_acc_6x16 calls give
// them (the same even / odd d chains, 24 in all): per d step 2 K^T loads per 6 broadcasts where one tile has 1
// (the GEMM micro-kernel's 6x16 shape, capped near 82% of the FMA peak by its loads; micro2's 6x32 is not).
template <class Q>
HSD_INLINE void logits_acc_6x16x2(const Q& q, int64_t D, const float* kt, __m256 (&c0)[6][2], __m256 (&c1)[6][2]) {
  const float* k1 = kt + 16 * D;
  __m512 e0[6], o0[6], e1[6], o1[6];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) e0[r] = o0[r] = e1[r] = o1[r] = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + 2 <= D; d += 2) {
    const __m512 a0 = _mm512_loadu_ps(kt + d * 16), a1 = _mm512_loadu_ps(kt + d * 16 + 16);
    const __m512 b0 = _mm512_loadu_ps(k1 + d * 16), b1 = _mm512_loadu_ps(k1 + d * 16 + 16);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m512 qe = _mm512_set1_ps(*q.at(r, d)), qo = _mm512_set1_ps(*q.at(r, d + 1));
      e0[r] = _mm512_fmadd_ps(qe, a0, e0[r]);
      o0[r] = _mm512_fmadd_ps(qo, a1, o0[r]);
      e1[r] = _mm512_fmadd_ps(qe, b0, e1[r]);
      o1[r] = _mm512_fmadd_ps(qo, b1, o1[r]);
    }
  }
  if (d < D) {
    const __m512 a0 = _mm512_loadu_ps(kt + d * 16), b0 = _mm512_loadu_ps(k1 + d * 16);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m512 qe = _mm512_set1_ps(*q.at(r, d));
      e0[r] = _mm512_fmadd_ps(qe, a0, e0[r]);
      e1[r] = _mm512_fmadd_ps(qe, b0, e1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) {
    const __m512 s0 = _mm512_add_ps(e0[r], o0[r]), s1 = _mm512_add_ps(e1[r], o1[r]);
    c0[r][0] = _mm512_castps512_ps256(s0);
    c0[r][1] = hi8(s0);
    c1[r][0] = _mm512_castps512_ps256(s1);
    c1[r][1] = hi8(s1);
  }
}
#else
template <class Q>
HSD_INLINE void logits_acc_6x16(const Q& q, int64_t D, const float* kt, __m256 (&c)[6][2]) {
  for (int r = 0; r < 6; ++r) c[r][0] = c[r][1] = _mm256_setzero_ps();
  // Unrolled by 4: the loop's own increments and branch were a fifth of its instructions (measured +4-8%
  // at L=4096 d=40, processes alternated).
#pragma GCC unroll 4
  for (int64_t d = 0; d < D; ++d, kt += 16) {
    const __m256 b0 = _mm256_loadu_ps(kt), b1 = _mm256_loadu_ps(kt + 8);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m256 a = _mm256_broadcast_ss(q.at(r, d));
      c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
      c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
    }
  }
}
#endif

// s[r*ldp + 0..16) = sum_d Q(r, d) kt[d*16 + 0..16) for 6 rows (times scale when kScale: Q read in place is not
// pre-scaled, and 12 multiplies on the finished tile cost less than a scaled copy of Q).
// kMax: also rmax[r] = max(rmax[r], the tile's row r), from the registers (the full-block softmax needs no pass
// over the scores for its maxima then).
template <bool kScale, bool kMax>
HSD_INLINE void logits_store(const __m256 (&c)[6][2], float* s, int64_t ldp, __m256 vscale, __m256* rmax) {
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) {
    const __m256 v0 = kScale ? _mm256_mul_ps(c[r][0], vscale) : c[r][0];
    const __m256 v1 = kScale ? _mm256_mul_ps(c[r][1], vscale) : c[r][1];
    _mm256_storeu_ps(s + r * ldp, v0);
    _mm256_storeu_ps(s + r * ldp + 8, v1);
    if (kMax) rmax[r] = _mm256_max_ps(rmax[r], _mm256_max_ps(v0, v1));
  }
}
template <bool kScale, class Q, bool kMax = false>
HSD_INLINE void logits_6x16(const Q& q, int64_t D, const float* kt, float* s, int64_t ldp, __m256 vscale,
                            __m256* rmax = nullptr) {
  __m256 c[6][2];
  logits_acc_6x16(q, D, kt, c);
  logits_store<kScale, kMax>(c, s, ldp, vscale, rmax);
}
// The logits of n keys (a multiple of 16) from the 16-key tiles at kt (tile t at kt + 16 t D) into s, 32 at a
// time in the AVX-512 compile (the same bits as 16 at a time).
template <bool kScale, class Q, bool kMax = false>
HSD_INLINE void logits_6xN(const Q& q, int64_t D, const float* kt, int64_t n, float* s, int64_t ldp, __m256 vscale,
                           __m256* rmax = nullptr) {
  int64_t j = 0;
#ifdef __AVX512F__
  for (; j + 32 <= n; j += 32) {
    __m256 c0[6][2], c1[6][2];
    logits_acc_6x16x2(q, D, kt + j * D, c0, c1);
    logits_store<kScale, kMax>(c0, s + j, ldp, vscale, rmax);
    logits_store<kScale, kMax>(c1, s + j + 16, ldp, vscale, rmax);
  }
#endif
  for (; j < n; j += 16) logits_6x16<kScale, Q, kMax>(q, D, kt + j * D, s + j, ldp, vscale, rmax);
}

// Self-attention's later key blocks keep the running maximum m of their rows while no logit passes m + kLazy
// (log2 units): the numerators 2^(s - m), at most 2^kLazy, then come straight from the logits' registers
// (logits_exp_6xN), with no pass over stored scores for the maxima and the exponentials and no rescaling of
// the accumulator; a block whose logits pass that bound (the maximum jumped) is recomputed the usual way.
// Any fixed shift per row gives the same softmax (the sums l and the accumulator share it; the logsumexp is
// m ln 2 + log l).
constexpr float kLazy = 8.0f;

// The logits of a 6x16 tile (Q pre-scaled, packed) and at once their numerators p = 2^(max(s - m[r], -126)) into
// s[r*ldp + 0..16), vs[r] += them, and smax[r] = max(smax[r], s) lane by lane (to check the kLazy bound). In the
// AVX-512 compile the 16 exponentials of a row are one 16-lane call (the same bits).
HSD_INLINE void logits_exp_post(const __m256 (&c)[6][2], float* s, int64_t ldp, const __m256* m, __m256* vs,
                                __m256* smax) {
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) smax[r] = _mm256_max_ps(smax[r], _mm256_max_ps(c[r][0], c[r][1]));
#ifdef __AVX512F__
  const __m512 lo = _mm512_set1_ps(-126.f);
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) {
    const __m512 mr = join16(m[r], m[r]);
    const __m512 e = avx512::exp2_core_ps(_mm512_max_ps(_mm512_sub_ps(join16(c[r][0], c[r][1]), mr), lo));
    _mm512_storeu_ps(s + r * ldp, e);
    vs[r] = _mm256_add_ps(vs[r], _mm256_add_ps(_mm512_castps512_ps256(e), hi8(e)));
  }
#else
  const __m256 lo = _mm256_set1_ps(-126.f);
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) {
    const __m256 e0 = avx2::exp2_core_ps(_mm256_max_ps(_mm256_sub_ps(c[r][0], m[r]), lo));
    const __m256 e1 = avx2::exp2_core_ps(_mm256_max_ps(_mm256_sub_ps(c[r][1], m[r]), lo));
    _mm256_storeu_ps(s + r * ldp, e0);
    _mm256_storeu_ps(s + r * ldp + 8, e1);
    vs[r] = _mm256_add_ps(vs[r], _mm256_add_ps(e0, e1));
  }
#endif
}
// logits_exp_post over n keys (a multiple of 16) from the tiles at kt, 32 at a time in the AVX-512 compile (the
// same bits, the tiles' sums added to vs in key order).
HSD_INLINE void logits_exp_6xN(const PanelQ& q, int64_t D, const float* kt, int64_t n, float* s, int64_t ldp,
                               const __m256* m, __m256* vs, __m256* smax) {
  int64_t j = 0;
#ifdef __AVX512F__
  for (; j + 32 <= n; j += 32) {
    __m256 c0[6][2], c1[6][2];
    logits_acc_6x16x2(q, D, kt + j * D, c0, c1);
    logits_exp_post(c0, s + j, ldp, m, vs, smax);
    logits_exp_post(c1, s + j + 16, ldp, m, vs, smax);
  }
#endif
  for (; j < n; j += 16) {
    __m256 c[6][2];
    logits_acc_6x16(q, D, kt + j * D, c);
    logits_exp_post(c, s + j, ldp, m, vs, smax);
  }
}

// The softmax numerators of a 6-row panel's scores p[r*ld + 0..n) (n a multiple of 8) in place: 2^(s - m[r]), the
// rows interleaved so their exponentials overlap; vs[r] += each row's values, lane by lane in key order. In the
// AVX-512 compile 16 keys at a time (lanes 0-7 and 8-15 still added to vs[r] in key order: the same bits).
HSD_INLINE void exp_rows6(float* p, int64_t ld, int64_t n, const __m256* m, __m256* vs) {
  int64_t j0 = 0;
#ifdef __AVX512F__
  {
    const __m512 lo = _mm512_set1_ps(-126.f);
    for (; j0 + 16 <= n; j0 += 16) {
#pragma GCC unroll 6
      for (int r = 0; r < 6; ++r) {
        float* sp = p + r * ld + j0;
        const __m512 e = avx512::exp2_core_ps(_mm512_max_ps(_mm512_sub_ps(_mm512_loadu_ps(sp), join16(m[r], m[r])), lo));
        _mm512_storeu_ps(sp, e);
        vs[r] = _mm256_add_ps(_mm256_add_ps(vs[r], _mm512_castps512_ps256(e)), hi8(e));
      }
    }
  }
#endif
  for (int64_t j = j0; j < n; j += 8) {
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      float* sp = p + r * ld + j;
      const __m256 e = exp2_nonpos_ps(_mm256_sub_ps(_mm256_loadu_ps(sp), m[r]));
      _mm256_storeu_ps(sp, e);
      vs[r] = _mm256_add_ps(vs[r], e);
    }
  }
}

// Per-thread buffers of the forward's tasks, grown as needed and kept (a fresh allocation per chunk of tasks
// came back as page faults on every call).
struct TaskScratch {
  std::vector<float> p, acc, m, l, zero, qs;
  void fit(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.assign(n, 0.0f);
  }
};
thread_local TaskScratch tl_task;

// acc[r*ldc + 0..8W) += sum_{j<nk} p[r*ldp + j] vb[j*ldv + 0..8W) for 6 rows, W = 1 or 2.
template <int W>
HSD_INLINE void pv_6xW(const float* p, int64_t nk, const float* vb, int64_t ldv, float* acc, int64_t ldc,
                       int64_t ldp) {
  __m256 c[6][W];
  for (int r = 0; r < 6; ++r)
    for (int w = 0; w < W; ++w) c[r][w] = _mm256_loadu_ps(acc + r * ldc + 8 * w);
  for (int64_t j = 0; j < nk; ++j) {
    __m256 b[W];
    for (int w = 0; w < W; ++w) b[w] = _mm256_loadu_ps(vb + j * ldv + 8 * w);
    for (int r = 0; r < 6; ++r) {
      __m256 a = _mm256_broadcast_ss(p + r * ldp + j);
      for (int w = 0; w < W; ++w) c[r][w] = _mm256_fmadd_ps(a, b[w], c[r][w]);
    }
  }
  for (int r = 0; r < 6; ++r)
    for (int w = 0; w < W; ++w) _mm256_storeu_ps(acc + r * ldc + 8 * w, c[r][w]);
}

// acc[r*ldc + 0..40) += sum_{j<nk} p[r*ldp + j] vb[j*ldv + 0..40) for 2 rows: 10 accumulators and the 5 V
// vectors of a key held in registers (2 broadcasts + 5 loads per 10 FMAs; the 6 x 16 + 6 x 8 tiles needed 23
// loads per 30 FMAs and the 6 x 8 one had too few independent chains to fill both FMA pipes). In asm: with all
// 16 ymm registers live, GCC folded the V loads into the FMAs as memory operands, loading each V vector twice.
// kDirect (one key block, so the row sums are final): the sums start at zero and go straight to the output
// rows o0 and o1, times s0 and s1 (1 / the softmax denominators), with no accumulator to fill, load and
// normalise in a last pass.
template <bool kDirect>
HSD_INLINE void pv_2x40(const float* p, int64_t nk, const float* vb, int64_t ldv, float* acc, int64_t ldc,
                        int64_t ldp, float* o0 = nullptr, float* o1 = nullptr, float s0 = 0.f, float s1 = 0.f) {
  float* a1 = acc + ldc;
  __m256 c00, c01, c02, c03, c04, c10, c11, c12, c13, c14;
  if (kDirect) {
    c00 = c01 = c02 = c03 = c04 = c10 = c11 = c12 = c13 = c14 = _mm256_setzero_ps();
  } else {
    c00 = _mm256_loadu_ps(acc), c01 = _mm256_loadu_ps(acc + 8), c02 = _mm256_loadu_ps(acc + 16),
    c03 = _mm256_loadu_ps(acc + 24), c04 = _mm256_loadu_ps(acc + 32);
    c10 = _mm256_loadu_ps(a1), c11 = _mm256_loadu_ps(a1 + 8), c12 = _mm256_loadu_ps(a1 + 16),
    c13 = _mm256_loadu_ps(a1 + 24), c14 = _mm256_loadu_ps(a1 + 32);
  }
  if (nk > 0) {
    const int64_t ldvb = ldv * 4, ldpb = ldp * 4;
    __asm__ volatile(
        "1:\n\t"
        "vmovups (%[v]), %%ymm10\n\t"
        "vmovups 32(%[v]), %%ymm11\n\t"
        "vmovups 64(%[v]), %%ymm12\n\t"
        "vmovups 96(%[v]), %%ymm13\n\t"
        "vmovups 128(%[v]), %%ymm14\n\t"
        "vbroadcastss (%[p]), %%ymm15\n\t"
        "vfmadd231ps %%ymm10, %%ymm15, %[c00]\n\t"
        "vfmadd231ps %%ymm11, %%ymm15, %[c01]\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[c02]\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[c03]\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[c04]\n\t"
        "vbroadcastss (%[p],%[ldpb]), %%ymm15\n\t"
        "vfmadd231ps %%ymm10, %%ymm15, %[c10]\n\t"
        "vfmadd231ps %%ymm11, %%ymm15, %[c11]\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[c12]\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[c13]\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[c14]\n\t"
        "add $4, %[p]\n\t"
        "add %[ldvb], %[v]\n\t"
        "dec %[n]\n\t"
        "jnz 1b"
        : [c00] "+x"(c00), [c01] "+x"(c01), [c02] "+x"(c02), [c03] "+x"(c03), [c04] "+x"(c04), [c10] "+x"(c10),
          [c11] "+x"(c11), [c12] "+x"(c12), [c13] "+x"(c13), [c14] "+x"(c14), [p] "+r"(p), [v] "+r"(vb), [n] "+r"(nk)
        : [ldvb] "r"(ldvb), [ldpb] "r"(ldpb)
        : "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory");
  }
  if (kDirect) {
    const __m256 v0 = _mm256_set1_ps(s0), v1 = _mm256_set1_ps(s1);
    _mm256_storeu_ps(o0, _mm256_mul_ps(c00, v0));
    _mm256_storeu_ps(o0 + 8, _mm256_mul_ps(c01, v0));
    _mm256_storeu_ps(o0 + 16, _mm256_mul_ps(c02, v0));
    _mm256_storeu_ps(o0 + 24, _mm256_mul_ps(c03, v0));
    _mm256_storeu_ps(o0 + 32, _mm256_mul_ps(c04, v0));
    _mm256_storeu_ps(o1, _mm256_mul_ps(c10, v1));
    _mm256_storeu_ps(o1 + 8, _mm256_mul_ps(c11, v1));
    _mm256_storeu_ps(o1 + 16, _mm256_mul_ps(c12, v1));
    _mm256_storeu_ps(o1 + 24, _mm256_mul_ps(c13, v1));
    _mm256_storeu_ps(o1 + 32, _mm256_mul_ps(c14, v1));
    return;
  }
  _mm256_storeu_ps(acc, c00);
  _mm256_storeu_ps(acc + 8, c01);
  _mm256_storeu_ps(acc + 16, c02);
  _mm256_storeu_ps(acc + 24, c03);
  _mm256_storeu_ps(acc + 32, c04);
  _mm256_storeu_ps(a1, c10);
  _mm256_storeu_ps(a1 + 8, c11);
  _mm256_storeu_ps(a1 + 16, c12);
  _mm256_storeu_ps(a1 + 24, c13);
  _mm256_storeu_ps(a1 + 32, c14);
}

#ifdef __AVX512F__
// AVX-512 (attention_avx512.cpp): the six rows of a panel at once over 40 value dims, each row's first 32 in two
// zmm accumulators, and the last 8 of two rows in one zmm (rows 2q and 2q+1 in its low and high halves: V's last
// 8 broadcast to both halves, the two rows' P blended into one multiplier). 15 chains; per key 3 V loads, 6
// broadcasts, 3 blends, 15 FMAs where a ymm accumulator per row took 18 (a ymm FMA holds a 512-bit pipe as long
// as a zmm one). Each lane still sums its keys in the same order as pv_2x40: the same bits.
// kDirect: from zero, the sums times s[r] written to o[r] (see pv_2x40); else acc rows r*ldc updated.
template <bool kDirect>
HSD_INLINE void pv_6x40(const float* p, int64_t nk, const float* vb, int64_t ldv, float* acc, int64_t ldc,
                        int64_t ldp, float* const* o = nullptr, const float* s = nullptr) {
  __m512 a[6], b[6], c[3];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) {
    if (kDirect) {
      a[r] = b[r] = _mm512_setzero_ps();
    } else {
      a[r] = _mm512_loadu_ps(acc + r * ldc);
      b[r] = _mm512_loadu_ps(acc + r * ldc + 16);
    }
  }
#pragma GCC unroll 3
  for (int q = 0; q < 3; ++q)
    c[q] = kDirect ? _mm512_setzero_ps()
                   : join16(_mm256_loadu_ps(acc + 2 * q * ldc + 32), _mm256_loadu_ps(acc + (2 * q + 1) * ldc + 32));
  for (int64_t j = 0; j < nk; ++j) {
    const float* v = vb + j * ldv;
    const __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16);
    const __m512 v2 = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd((const double*)(v + 32))));
    __m512 pr[6];
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      pr[r] = _mm512_set1_ps(p[r * ldp + j]);
      a[r] = _mm512_fmadd_ps(pr[r], v0, a[r]);
      b[r] = _mm512_fmadd_ps(pr[r], v1, b[r]);
    }
#pragma GCC unroll 3
    for (int q = 0; q < 3; ++q) c[q] = _mm512_fmadd_ps(_mm512_mask_blend_ps(0xFF00, pr[2 * q], pr[2 * q + 1]), v2, c[q]);
  }
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) {
    if (kDirect) {
      const __m512 vs = _mm512_set1_ps(s[r]);
      _mm512_storeu_ps(o[r], _mm512_mul_ps(a[r], vs));
      _mm512_storeu_ps(o[r] + 16, _mm512_mul_ps(b[r], vs));
    } else {
      _mm512_storeu_ps(acc + r * ldc, a[r]);
      _mm512_storeu_ps(acc + r * ldc + 16, b[r]);
    }
  }
#pragma GCC unroll 3
  for (int q = 0; q < 3; ++q) {
    if (kDirect) {
      const __m512 t = _mm512_mul_ps(c[q], join16(_mm256_set1_ps(s[2 * q]), _mm256_set1_ps(s[2 * q + 1])));
      _mm256_storeu_ps(o[2 * q] + 32, _mm512_castps512_ps256(t));
      _mm256_storeu_ps(o[2 * q + 1] + 32, hi8(t));
    } else {
      _mm256_storeu_ps(acc + 2 * q * ldc + 32, _mm512_castps512_ps256(c[q]));
      _mm256_storeu_ps(acc + (2 * q + 1) * ldc + 32, hi8(c[q]));
    }
  }
}

// acc[r*ldc + 0..16W) += sum_{j<nk} p[r*ldp + j] vb[j*ldv + 0..16W) for 6 rows, W zmm a row (the head dims that
// are not 40s: 64 = 4 x 16 for SDXL): 6 W chains, each lane in pv_6xW's key order (the same bits).
template <int W>
HSD_INLINE void pv_6xZ(const float* p, int64_t nk, const float* vb, int64_t ldv, float* acc, int64_t ldc,
                       int64_t ldp) {
  __m512 c[6][W];
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) c[r][w] = _mm512_loadu_ps(acc + r * ldc + 16 * w);
  for (int64_t j = 0; j < nk; ++j) {
    __m512 b[W];
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) b[w] = _mm512_loadu_ps(vb + j * ldv + 16 * w);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m512 a = _mm512_set1_ps(p[r * ldp + j]);
#pragma GCC unroll 4
      for (int w = 0; w < W; ++w) c[r][w] = _mm512_fmadd_ps(a, b[w], c[r][w]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) _mm512_storeu_ps(acc + r * ldc + 16 * w, c[r][w]);
}
#endif

// Cross-attention with one block of keys (no mask, <= 128 keys: the 77 text tokens), in transposed form:
// S^T = K Q^T and O^T = V^T P^T, both as 6x16 register tiles with keys (then value dims) as the 6 rows and 16
// query rows as the 16 columns: S^T by logits_6x16 inline (D steps; with the engine's micro-kernel called per
// tile the whole form ran 7-14% behind the row-wise kernel at d = 40, inline 3%), O^T by the GEMM micro-kernel
// (Lk steps). Per (batch, head), once: K packed into 6-key A panels [Lk/6][D][6] and V^T into 6-dim A panels
// [Dv/6][Lk][6] (a plain copy of 6 floats per key). Per 16 query rows: Q^T packed
// ([D][16], the B panel), S^T tile by tile (kc = D), the softmax down the columns (the 16 queries side by
// side in two vectors: maxima, exponentials and sums are elementwise, no horizontal reductions and no lane
// masks; keys past Lk are never read), O^T = V^T P^T (kc = Lk, the exponentials being P^T's rows in place),
// then 8 x 8 transposes write O normalised by the sums; the next 16 query rows and this panel's output rows
// are prefetched (+1-5%). Against the row-wise kernel below (which runs the softmax one row at a time with
// its reductions and masked tail) it wins at d = 64 (SDXL), not at the 40s that kernel has its 2 x 40 P V
// tiles for (attention_forward_avx2 dispatches).
struct CrossScratch {
  std::vector<float> buf;
  float* get(size_t n) {  // 64-byte aligned
    if (buf.size() < n + 16) buf.assign(n + 16, 0.0f);
    return (float*)(((uintptr_t)buf.data() + 63) & ~(uintptr_t)63);
  }
};
thread_local CrossScratch tl_cross;

void cross_attention_t(const AttnFwdArgs& g, ThreadPool* pool) {
  const int64_t B = g.B, Lq = g.Lq, Lk = g.Lk, H = g.H, D = g.D, Dv = g.Dv;
  const int64_t nkp = (Lk + 5) / 6, ndp = (Dv + 5) / 6;
  const int64_t kp_floats = nkp * 6 * D, per_bh = kp_floats + ndp * Lk * 6;
  const gemm::Kernels& kr = gemm::kernels();  // AVX2 or the AVX-512 micro-kernels (only reached when using_avx2())
  float* pk = gemm::thread_scratch(kScratchSlot, (size_t)(B * H * per_bh));
  pool->parallel_for(B * H, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t bh = s0; bh < s1; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      float* kp = pk + bh * per_bh;
      float* vp = kp + kp_floats;
      for (int64_t p = 0; p < nkp; ++p) {
        const float* rows[6];
        for (int i = 0; i < 6; ++i) {
          const int64_t j = p * 6 + i;
          rows[i] = j < Lk ? g.k + ((b * Lk + j) * H + h) * D : gemm::kZeros;
        }
        kr.pack_a_rows(kp + p * 6 * D, rows, D);
      }
      for (int64_t dp = 0; dp < ndp; ++dp)
        for (int64_t j = 0; j < Lk; ++j) {
          const float* src = g.v + ((b * Lk + j) * H + h) * Dv + dp * 6;
          float* dst = vp + (dp * Lk + j) * 6;
          for (int64_t i = 0; i < 6; ++i) dst[i] = dp * 6 + i < Dv ? src[i] : 0.0f;
        }
    }
  });
  constexpr int64_t QB = 96;  // query rows per task (6 panels of 16)
  const int64_t nqb = (Lq + QB - 1) / QB;
  const int64_t Dv8 = (Dv + 7) / 8 * 8, orows = std::max(ndp * 6, Dv8);
  const float scale = (float)(g.scale * kLog2e);  // base-2 logits
  const float lse_unit = (float)kLn2;
  // Tasks take the heads of a query block one after another, so its output rows are written whole while in L2.
  pool->parallel_for(B * H * nqb, 1, [&](int64_t t0, int64_t t1) {
    float* qt = tl_cross.get((size_t)((D + nkp * 6 + orows) * 16 + 32));
    float* st = qt + D * 16;             // S^T, then P^T: [nkp*6][16]
    float* ob = st + nkp * 6 * 16;       // O^T: [orows][16] (rows past ndp*6 never written nor stored)
    alignas(32) float inv[16], mx[16], sum[16];
    const gemm::Epilogue ep;             // a plain product
    const __m256 vscale = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / (H * nqb), h = t % H, q0 = ((t / H) % nqb) * QB;
      const int64_t rows = std::min(QB, Lq - q0);
      const float* kp = pk + (b * H + h) * per_bh;
      const float* vp = kp + kp_floats;
      for (int64_t r0 = 0; r0 < rows; r0 += 16) {
        const int64_t nq = std::min<int64_t>(16, rows - r0);
        const void* qrows[16];
        for (int i = 0; i < 16; ++i)
          qrows[i] = i < nq ? (const void*)(g.q + ((b * Lq + q0 + r0 + i) * H + h) * D) : (const void*)gemm::kZeros;
        kr.pack_b_rows(qt, qrows, DType::F32, D);
        // The next 16 query rows (this head's D floats of each) and this panel's output rows: lines from L3 or
        // memory, in rows 4 * H * D bytes apart that no hardware prefetcher follows.
        for (int64_t i = 0; i < 16; ++i) {
          if (r0 + 16 + i < rows) prefetch_floats(g.q + ((b * Lq + q0 + r0 + 16 + i) * H + h) * D, D);
          if (i < nq) prefetch_floats(g.o + ((b * Lq + q0 + r0 + i) * H + h) * Dv, Dv);
        }
        for (int64_t p = 0; p < nkp; ++p)
          logits_6x16<false, PanelQ>(PanelQ{kp + p * 6 * D}, D, qt, st + p * 6 * 16, 16, vscale);
        // Softmax down the columns over the Lk real keys: m = max_j s, e = exp(scale (s - m)) in place, l = sum e.
        __m256 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
        int64_t j = 0;
        for (; j + 2 <= Lk; j += 2) {
          m0 = _mm256_max_ps(m0, _mm256_load_ps(st + j * 16));
          m1 = _mm256_max_ps(m1, _mm256_load_ps(st + j * 16 + 8));
          m2 = _mm256_max_ps(m2, _mm256_load_ps(st + j * 16 + 16));
          m3 = _mm256_max_ps(m3, _mm256_load_ps(st + j * 16 + 24));
        }
        if (j < Lk) {
          m0 = _mm256_max_ps(m0, _mm256_load_ps(st + j * 16));
          m1 = _mm256_max_ps(m1, _mm256_load_ps(st + j * 16 + 8));
        }
        m0 = _mm256_mul_ps(_mm256_max_ps(m0, m2), vscale);
        m1 = _mm256_mul_ps(_mm256_max_ps(m1, m3), vscale);
        __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0;
        for (j = 0; j + 2 <= Lk; j += 2) {
          float* sj = st + j * 16;
          const __m256 e0 = exp2_nonpos_ps(_mm256_fmsub_ps(_mm256_load_ps(sj), vscale, m0));
          const __m256 e1 = exp2_nonpos_ps(_mm256_fmsub_ps(_mm256_load_ps(sj + 8), vscale, m1));
          const __m256 e2 = exp2_nonpos_ps(_mm256_fmsub_ps(_mm256_load_ps(sj + 16), vscale, m0));
          const __m256 e3 = exp2_nonpos_ps(_mm256_fmsub_ps(_mm256_load_ps(sj + 24), vscale, m1));
          _mm256_store_ps(sj, e0);
          _mm256_store_ps(sj + 8, e1);
          _mm256_store_ps(sj + 16, e2);
          _mm256_store_ps(sj + 24, e3);
          l0 = _mm256_add_ps(l0, e0);
          l1 = _mm256_add_ps(l1, e1);
          l2 = _mm256_add_ps(l2, e2);
          l3 = _mm256_add_ps(l3, e3);
        }
        if (j < Lk) {
          float* sj = st + j * 16;
          const __m256 e0 = exp2_nonpos_ps(_mm256_fmsub_ps(_mm256_load_ps(sj), vscale, m0));
          const __m256 e1 = exp2_nonpos_ps(_mm256_fmsub_ps(_mm256_load_ps(sj + 8), vscale, m1));
          _mm256_store_ps(sj, e0);
          _mm256_store_ps(sj + 8, e1);
          l0 = _mm256_add_ps(l0, e0);
          l1 = _mm256_add_ps(l1, e1);
        }
        l0 = _mm256_add_ps(l0, l2);
        l1 = _mm256_add_ps(l1, l3);
        _mm256_store_ps(inv, _mm256_div_ps(_mm256_set1_ps(1.0f), l0));
        _mm256_store_ps(inv + 8, _mm256_div_ps(_mm256_set1_ps(1.0f), l1));
        if (g.lse) {
          _mm256_store_ps(mx, m0);
          _mm256_store_ps(mx + 8, m1);
          _mm256_store_ps(sum, l0);
          _mm256_store_ps(sum + 8, l1);
          for (int64_t q = 0; q < nq; ++q) g.lse[(b * H + h) * Lq + q0 + r0 + q] = mx[q] * lse_unit + std::log(sum[q]);
        }
        for (int64_t dp = 0; dp < ndp; ++dp) kr.micro(Lk, vp + dp * Lk * 6, st, ob + dp * 6 * 16, 16, ep, nullptr);
        // O rows = (O^T columns) / l, 8 value dims x 8 queries per transpose.
        for (int64_t d0 = 0; d0 < Dv; d0 += 8) {
          const int64_t nd = std::min<int64_t>(8, Dv - d0);
          for (int64_t qh = 0; qh < nq; qh += 8) {
            const float* o8 = ob + d0 * 16 + qh;
            __m256 o[8];
            transpose8(_mm256_load_ps(o8), _mm256_load_ps(o8 + 16), _mm256_load_ps(o8 + 32), _mm256_load_ps(o8 + 48),
                       _mm256_load_ps(o8 + 64), _mm256_load_ps(o8 + 80), _mm256_load_ps(o8 + 96),
                       _mm256_load_ps(o8 + 112), o);
            for (int64_t r = 0; r < 8 && qh + r < nq; ++r) {
              float* out = g.o + ((b * Lq + q0 + r0 + qh + r) * H + h) * Dv + d0;
              const __m256 v = _mm256_mul_ps(o[r], _mm256_set1_ps(inv[qh + r]));
              if (nd == 8) {
                _mm256_storeu_ps(out, v);
              } else {
                alignas(32) float tmp[8];
                _mm256_store_ps(tmp, v);
                for (int64_t d = 0; d < nd; ++d) out[d] = tmp[d];
              }
            }
          }
        }
      }
    }
  });
}

}  // namespace

// The forward (see the top of the file). Before the per-panel chain, a key block ran the logits of all 96 rows,
// then their softmax, then P V, streaming a 24 KiB score block, Q and the accumulator through L1 three times.
void HSD_ATTN_ENTRY(const AttnFwdArgs& g, ThreadPool* pool) {
  const int64_t B = g.B, Lq = g.Lq, Lk = g.Lk, H = g.H, D = g.D, Dv = g.Dv;
  const int64_t Dv8 = (Dv + 7) / 8 * 8;
  const int64_t nqb = (Lq + kBQ - 1) / kBQ;
  const bool causal = g.causal;
  const int64_t Lk16 = (Lk + 15) / 16 * 16, ntile = Lk16 / 16;
  // One block of keys, no mask, head dims other than 40s: the transposed form (measured side by side at 77
  // keys: d = 64 -1% to +44%, +28% or more at L = 4096; d = 40 -3% to -14% and d = 80, 160 within +-5%, which
  // keep the row-wise kernel).
  if (!causal && Lk <= 128 && g.scale > 0.0f && D <= gemm::kMaxKC && Dv % 40 != 0) return cross_attention_t(g, pool);
  // Keys per block: all of them when few (77 text tokens: one block, one softmax pass), else 128 for head dims
  // up to 64 and 64 above (the block's K^T and V, 2 bk D floats, serve all 16 panels of a task). With the
  // lazy maximum of the later blocks, 128 against 64 (the kernel alone, alternated in one process): d = 40
  // +0.6% to +1.7%, d = 64 +1.5% to +5%, d = 80 -12% (before it, 32 and 128 were 3-8% slower at d = 40 and 80).
  const int64_t bk = Lk16 <= 128 ? Lk16 : (D <= 64 && Dv8 <= 64 ? 128 : 64);
  // K transposed once per (batch, head) into kts [B*H][Lk16 / 16][D][16] (keys zero-padded to 16), and V
  // copied into vps [B*H][Lk16][Dv8] (rows zero-padded to Dv8, keys to Lk16): tasks over 16-key tiles, each
  // reading 16 rows of D and Dv contiguous floats. P V then walks one contiguous stream, where in place it read
  // each key's Dv floats H * Dv apart (+4% to +7% side by side at d = 40 and 80, self- and cross-attention;
  // d = 64 within noise; prefetching the next block's V rows in place gave +3% at d = 40, -2% at d = 80).
  float* kts = gemm::thread_scratch(kScratchSlot, (size_t)(B * H * D * Lk16));
  float* vps = gemm::thread_scratch(kVScratchSlot, (size_t)(B * H * Lk16 * Dv8));
  pool->parallel_for(B * H * ntile, 8, [&](int64_t s0, int64_t s1) {
    for (int64_t t = s0; t < s1; ++t) {
      const int64_t bh = t / ntile, jt = t % ntile, b = bh / H, h = bh % H;
      float* dst = kts + (bh * ntile + jt) * D * 16;
      for (int64_t jj = 0; jj < 16; ++jj) {
        const int64_t j = jt * 16 + jj;
        float* vd = vps + (bh * Lk16 + j) * Dv8;
        if (j < Lk) {
          const float* src = g.k + ((b * Lk + j) * H + h) * D;
          for (int64_t d = 0; d < D; ++d) dst[d * 16 + jj] = src[d];
          std::memcpy(vd, g.v + ((b * Lk + j) * H + h) * Dv, (size_t)Dv * sizeof(float));
          std::fill(vd + Dv, vd + Dv8, 0.0f);
        } else {
          for (int64_t d = 0; d < D; ++d) dst[d * 16 + jj] = 0.0f;
          std::fill(vd, vd + Dv8, 0.0f);
        }
      }
    }
  });
  const float scale = (float)(g.scale * kLog2e);  // base-2 logits
  const float lse_unit = (float)kLn2;
  const __m256 vscale = _mm256_set1_ps(scale);
  // Q is packed (scaled, into 6-row panels) when its rows meet several key blocks; with one block (77 text
  // tokens) it is read in place, each row once (packing it cost as much as a third of the logits there). Read
  // in place across many blocks, the 96 rows 1280 bytes apart crowd L1's sets: 7% slower at L = 4096.
  const bool q_packed = Lk16 > bk;
  // One key block and head dims of 40s (the 77-token cross-attention): P V goes straight to the output rows,
  // normalised (pv_2x40<true>), and the heads of a query block are consecutive tasks, so its output rows
  // (all heads of them, 1280 bytes each at SD1.5's 320 channels) are written out whole while in L2, where
  // head-major order came back to each row 8 times for 160 bytes. With many key blocks the order stays
  // head-major: one head's K^T and V (655 KB at 4096 keys, d = 40) stay in L2 across its query blocks.
  const bool single = !q_packed && Dv8 % 40 == 0 && Dv == Dv8;
  const gemm::Kernels& kr = gemm::kernels();  // AVX2 or the AVX-512 micro-kernels (only reached when using_avx2())
  pool->parallel_for(B * H * nqb, 1, [&](int64_t t0, int64_t t1) {
    TaskScratch& ts = tl_task;
    ts.fit(ts.p, 6 * bk);
    ts.fit(ts.acc, kBQ * Dv8);
    ts.fit(ts.m, kBQ);
    ts.fit(ts.l, kBQ);
    ts.fit(ts.zero, D);
    if (q_packed) ts.fit(ts.qs, kBQ * D);
    float *p = ts.p.data(), *acc = ts.acc.data(), *m = ts.m.data(), *l = ts.l.data();
    float* qs = ts.qs.data();
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / (H * nqb);
      const int64_t h = single ? t % H : (t / nqb) % H, i0 = (single ? (t / H) % nqb : t % nqb) * kBQ;
      const int64_t rows = std::min(kBQ, Lq - i0), rows6 = (rows + 5) / 6 * 6;
      auto qrow = [&](int64_t i) { return i < rows ? g.q + ((b * Lq + i0 + i) * H + h) * D : ts.zero.data(); };
      if (q_packed) {  // Q scaled into 6-row panels: row i, d at [(i/6)*6*D + d*6 + i%6]
        for (int64_t r0 = 0; r0 < rows6; r0 += 6) {
          const float* rp[6] = {qrow(r0), qrow(r0 + 1), qrow(r0 + 2), qrow(r0 + 3), qrow(r0 + 4), qrow(r0 + 5)};
          kr.pack_a_rows(&qs[r0 * D], rp, D);
        }
        int64_t i = 0;
        for (; i + 8 <= rows6 * D; i += 8) _mm256_storeu_ps(&qs[i], _mm256_mul_ps(_mm256_loadu_ps(&qs[i]), vscale));
        for (; i < rows6 * D; ++i) qs[i] *= scale;
      }
      std::fill(m, m + rows6, -INFINITY);
      std::fill(l, l + rows6, 0.0f);
      if (!single) std::fill(acc, acc + rows6 * Dv8, 0.0f);
      // Output row i of this task (padding rows past `rows`: the accumulator, as scratch nobody reads).
      auto orow = [&](int64_t i) { return i < rows ? g.o + ((b * Lq + i0 + i) * H + h) * Dv : &acc[i * Dv8]; };
      const float* kth = kts + (b * H + h) * D * Lk16;
      const int64_t kend = causal ? std::min(Lk, i0 + rows) : Lk;  // keys past the last row's diagonal: masked
      for (int64_t j0 = 0; j0 < kend; j0 += bk) {
        const int64_t nk = std::min(bk, kend - j0);
        const float* vblk = vps + ((b * H + h) * Lk16 + j0) * Dv8;
        const int64_t ldv = Dv8;
        for (int64_t r0 = 0; r0 < rows6; r0 += 6) {
          if (single) {
            // The next panel's Q rows (read in place) and output rows (written whole by pv_2x40<true>): their
            // lines come from L3 or memory, and 6 rows 1280 bytes apart are no stream the prefetcher follows.
            // Side by side: +13% at 4096 x 77 keys, d = 40 (two panels ahead: 2% less than one).
            for (int64_t i = r0 + 6; i < std::min(r0 + 12, rows); ++i) {
              prefetch_floats(qrow(i), D);
              prefetch_floats(orow(i), Dv);
            }
          }
          // Keys this panel sees (causal: up to its last row's diagonal).
          const int64_t nkp = causal ? std::min(nk, i0 + r0 + 6 - j0) : nk;
          if (nkp <= 0) continue;
          const int64_t nkp16 = (nkp + 15) / 16 * 16, nkp8 = (nkp + 7) / 8 * 8;
          // S for the panel's 6 rows, Q read in place (padding rows: a zero row, finite logits, never written
          // out); keys past Lk are zero columns of kts, keys past nkp are masked below.
          // A whole block of keys, all visible (self-attention away from the last block): the row maxima come
          // from the logits' registers and the exponentials run over the panel's 6 x bk scores without a
          // per-row pass in between (the rows' chains overlap), as the general loop below would compute them.
          // Side by side: +4% at L = 4096, d = 40; d = 80 unchanged.
          const bool full = q_packed && !causal && nkp == bk && bk % 8 == 0;
          bool done = false;
          if (full && j0 > 0) {  // a later block: the numerators straight from the logits (kLazy above)
            const PanelQ qp{&qs[r0 * D]};
            __m256 mv[6], vs[6], smax[6], bound = _mm256_setzero_ps();
            for (int r = 0; r < 6; ++r) {
              mv[r] = _mm256_set1_ps(m[r0 + r]);
              vs[r] = _mm256_setzero_ps();
              smax[r] = _mm256_set1_ps(-INFINITY);
            }
            logits_exp_6xN(qp, D, kth + j0 * D, bk, &p[0], bk, mv, vs, smax);
            // Any logit past m + kLazy (or a NaN): this block again the usual way. m is finite here (the row's
            // first block set it from finite logits) unless the inputs hold infinities or NaNs.
            const __m256 lazy = _mm256_set1_ps(kLazy);
            for (int r = 0; r < 6; ++r)
              bound = _mm256_or_ps(bound, _mm256_cmp_ps(smax[r], _mm256_add_ps(mv[r], lazy), _CMP_NLE_UQ));
            if (_mm256_movemask_ps(bound) == 0) {
              for (int r = 0; r < 6; ++r) l[r0 + r] += hsum(vs[r]);
              done = true;
            }
          }
          if (done) {
            // the later block's numerators are in p and its sums in l
          } else if (full) {
            const PanelQ qp{&qs[r0 * D]};
            __m256 rmax[6];
            for (int r = 0; r < 6; ++r) rmax[r] = _mm256_set1_ps(-INFINITY);
            logits_6xN<false, PanelQ, true>(qp, D, kth + j0 * D, bk, &p[0], bk, vscale, rmax);
            float corr[6];
            __m256 vs[6];
            for (int r = 0; r < 6; ++r) {
              const int64_t i = r0 + r;
              const float mold = m[i], mb = std::max(mold, hmax(rmax[r]));
              corr[r] = (mb == mold || mold == -INFINITY) ? 1.0f : std::exp2(mold - mb);
              m[i] = mb;
              rmax[r] = _mm256_set1_ps(mb);
              vs[r] = _mm256_setzero_ps();
            }
            exp_rows6(p, bk, bk, rmax, vs);
            for (int r = 0; r < 6; ++r) {
              const int64_t i = r0 + r;
              l[i] = l[i] * corr[r] + hsum(vs[r]);
              if (corr[r] != 1.0f) scale_row(&acc[i * Dv8], Dv8, corr[r]);
            }
          } else if (q_packed) {
            const PanelQ qp{&qs[r0 * D]};
            logits_6xN<false>(qp, D, kth + j0 * D, nkp16, &p[0], bk, vscale);
          } else {
            const RowsQ qp{{qrow(r0), qrow(r0 + 1), qrow(r0 + 2), qrow(r0 + 3), qrow(r0 + 4), qrow(r0 + 5)}};
            logits_6xN<true>(qp, D, kth + j0 * D, nkp16, &p[0], bk, vscale);
          }
          // One key block, all visible (cross-attention: the 77 text tokens): the panel's six rows run the
          // softmax interleaved, as the full path does, with the block's tail lanes masked (keys past Lk: -inf
          // for the maximum, exactly 0 after the exponential); the same operations per row in the same order
          // as the per-row loop below (bit-identical results), whose serial reductions left the core idle:
          // +9% at 4096 x 77 keys, d = 40 (bench/ab.ts side by side). Padding rows (past `rows`) are zero rows
          // with finite logits, computed and never written out.
          const bool one = !q_packed && !causal;
          if (one) {
            const int64_t nfull = nkp / 8 * 8;
            const __m256 ninf = _mm256_set1_ps(-INFINITY);
            const __m256 tail = _mm256_cmp_ps(_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7),
                                              _mm256_set1_ps((float)(nkp - nfull)), _CMP_LT_OQ);
            __m256 vm[6], vs[6];
            for (int r = 0; r < 6; ++r) vm[r] = ninf;
            for (int64_t j = 0; j < nfull; j += 8) {
#pragma GCC unroll 6
              for (int r = 0; r < 6; ++r) vm[r] = _mm256_max_ps(vm[r], _mm256_loadu_ps(&p[r * bk + j]));
            }
            if (nfull < nkp)
              for (int r = 0; r < 6; ++r)
                vm[r] = _mm256_max_ps(vm[r], _mm256_blendv_ps(ninf, _mm256_loadu_ps(&p[r * bk + nfull]), tail));
            for (int r = 0; r < 6; ++r) {
              const float mb = hmax(vm[r]);
              m[r0 + r] = mb;
              vm[r] = _mm256_set1_ps(mb);
              vs[r] = _mm256_setzero_ps();
            }
            exp_rows6(p, bk, nfull, vm, vs);
            if (nfull < nkp)
              for (int r = 0; r < 6; ++r) {
                float* sp = &p[r * bk + nfull];
                const __m256 e = _mm256_and_ps(exp2_nonpos_ps(_mm256_sub_ps(_mm256_loadu_ps(sp), vm[r])), tail);
                _mm256_storeu_ps(sp, e);
                vs[r] = _mm256_add_ps(vs[r], e);
              }
            for (int r = 0; r < 6; ++r) l[r0 + r] = hsum(vs[r]);
          }
          // Online softmax per real row.
          for (int64_t i = r0; i < (full || one ? r0 : std::min(r0 + 6, rows)); ++i) {
            float* sp = &p[(i - r0) * bk];
            const int64_t nvis = causal ? std::min(nkp, i0 + i + 1 - j0) : nkp;
            if (nvis <= 0) {
              std::fill(sp, sp + nkp, 0.0f);
              continue;
            }
            for (int64_t j = nvis; j < nkp8; ++j) sp[j] = -INFINITY;
            __m256 vm = _mm256_set1_ps(-INFINITY);
            for (int64_t j = 0; j < nkp8; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(sp + j));
            const float mold = m[i], mb = std::max(mold, hmax(vm));
            // No call while the row's maximum stands (most blocks), nor on the row's first block (m = -inf: l and
            // the accumulator are still 0, so any factor leaves them so; with 77 keys every row has one block and
            // this was a libm call and an accumulator pass per row).
            const float corr = (mb == mold || mold == -INFINITY) ? 1.0f : std::exp2(mold - mb);
            const __m256 vmb = _mm256_set1_ps(mb), ninf = _mm256_set1_ps(-INFINITY);
            __m256 vs = _mm256_setzero_ps();
            // exp(s - max) of values <= 0 over the whole vectors of visible keys; the vectors holding masked
            // keys (-inf) give exactly 0 there.
            const int64_t nfull = nvis / 8 * 8;
            for (int64_t j = 0; j < nfull; j += 8) {
              const __m256 e = exp2_nonpos_ps(_mm256_sub_ps(_mm256_loadu_ps(sp + j), vmb));
              _mm256_storeu_ps(sp + j, e);
              vs = _mm256_add_ps(vs, e);
            }
            for (int64_t j = nfull; j < nkp8; j += 8) {
              __m256 s = _mm256_loadu_ps(sp + j);
              __m256 e = _mm256_and_ps(exp2_nonpos_ps(_mm256_sub_ps(s, vmb)), _mm256_cmp_ps(s, ninf, _CMP_NEQ_OQ));
              _mm256_storeu_ps(sp + j, e);
              vs = _mm256_add_ps(vs, e);
            }
            l[i] = l[i] * corr + hsum(vs);
            m[i] = mb;
            if (corr != 1.0f) scale_row(&acc[i * Dv8], Dv8, corr);
          }
          // O += P V for the panel.
          if (single) {  // O = P V / l, straight to the output
#ifdef __AVX512F__
            float sc[6], *orows[6];
            for (int r = 0; r < 6; ++r) {
              sc[r] = r0 + r < rows ? 1.0f / l[r0 + r] : 0.0f;
              orows[r] = orow(r0 + r);
            }
            for (int64_t c0 = 0; c0 < Dv8; c0 += 40) {
              float* oc[6];
              for (int r = 0; r < 6; ++r) oc[r] = orows[r] + c0;
              pv_6x40<true>(p, nkp, vblk + c0, ldv, nullptr, 0, bk, oc, sc);
            }
#else
            for (int64_t r = 0; r < 6; r += 2) {
              const int64_t i = r0 + r;
              const float s0 = i < rows ? 1.0f / l[i] : 0.0f, s1 = i + 1 < rows ? 1.0f / l[i + 1] : 0.0f;
              float *o0 = orow(i), *o1 = orow(i + 1);
              for (int64_t c0 = 0; c0 < Dv8; c0 += 40)
                pv_2x40<true>(&p[r * bk], nkp, vblk + c0, ldv, nullptr, 0, bk, o0 + c0, o1 + c0, s0, s1);
            }
#endif
          } else if (Dv8 % 40 == 0) {  // head dims 40, 80, 160 (SD1.5, SDXL)
#ifdef __AVX512F__
            for (int64_t c0 = 0; c0 < Dv8; c0 += 40) pv_6x40<false>(p, nkp, vblk + c0, ldv, &acc[r0 * Dv8 + c0], Dv8, bk);
#else
            for (int64_t c0 = 0; c0 < Dv8; c0 += 40)
              for (int64_t r = 0; r < 6; r += 2)
                pv_2x40<false>(&p[r * bk], nkp, vblk + c0, ldv, &acc[(r0 + r) * Dv8 + c0], Dv8, bk);
#endif
          } else {
            int64_t c0 = 0;
#ifdef __AVX512F__
            for (; c0 + 64 <= Dv8; c0 += 64) pv_6xZ<4>(p, nkp, vblk + c0, ldv, &acc[r0 * Dv8 + c0], Dv8, bk);
            for (; c0 + 32 <= Dv8; c0 += 32) pv_6xZ<2>(p, nkp, vblk + c0, ldv, &acc[r0 * Dv8 + c0], Dv8, bk);
#endif
            for (; c0 + 16 <= Dv8; c0 += 16) pv_6xW<2>(p, nkp, vblk + c0, ldv, &acc[r0 * Dv8 + c0], Dv8, bk);
            if (c0 < Dv8) pv_6xW<1>(p, nkp, vblk + c0, ldv, &acc[r0 * Dv8 + c0], Dv8, bk);
          }
        }
      }
      if (single) {
        if (g.lse)
          for (int64_t i = 0; i < rows; ++i) g.lse[(b * H + h) * Lq + i0 + i] = m[i] * lse_unit + std::log(l[i]);
        continue;
      }
      for (int64_t i = 0; i < rows; ++i) {
        const float inv = 1.0f / l[i];
        const __m256 vinv = _mm256_set1_ps(inv);
        float* dst = g.o + ((b * Lq + i0 + i) * H + h) * Dv;
        const float* ai = &acc[i * Dv8];
        int64_t d = 0;
        for (; d + 8 <= Dv; d += 8) _mm256_storeu_ps(dst + d, _mm256_mul_ps(_mm256_loadu_ps(ai + d), vinv));
        for (; d < Dv; ++d) dst[d] = ai[d] * inv;
        if (g.lse) g.lse[(b * H + h) * Lq + i0 + i] = m[i] * lse_unit + std::log(l[i]);
      }
    }
  });
}

}  // namespace hsd

#else

namespace hsd {
// Never called: attention.cpp dispatches here only when the GEMM engine's AVX2 kernels are in use.
void HSD_ATTN_ENTRY(const AttnFwdArgs&, ThreadPool*) {}
}  // namespace hsd

#endif
