// AVX2 + FMA forward of the CPU `attention` op (native/cpu/attention.cpp holds the shape checks, the portable
// kernel and the dispatch); compiled with -mavx2 -mfma and called only when the GEMM engine's kernels() picks
// its AVX2 set (so HYPERSD_CPU_KERNELS=portable or a CPU without AVX2 never reaches it).
//
// Tasks over (batch, head, block of kBQ = 96 query rows). Each walks the keys in blocks of kBK = 64 with the
// online softmax, keeping the flash structure (no Lq x Lk matrix):
//   S = (scale q) K^T: K transposed once per head into 16-key tiles [Lk/16][D][16] (zero-padded), then 6x16 register tiles
//       (12 ymm accumulators, 2 loads + 6 broadcasts per d step, the GEMM micro-kernel's shape) over D;
//   softmax: vector max, exp (degree-6 polynomial, as gemm_avx2.cpp's), masked keys (causal / block tail)
//       set to exactly 0; running max m and sum l, the accumulator rescaled by exp(m_old - m_new);
//   O += P V: V read in place (copied into vb [64][Dv rounded to 8] only when Dv % 8 != 0), 6 x 16 (or 6 x 8 at the tail)
//       tiles of the accumulator loaded, updated over the block's keys, stored.
// Scratch: K^T of all heads (B*H*D*Lk floats), per task 96*D + [64*Dv8] + 96*64 + 96*Dv8 floats.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "hypersd/ops.h"

namespace hsd {

struct AttnFwdArgs {
  const float *q, *k, *v;
  float* o;
  float* lse;  // may be null
  int64_t B, Lq, Lk, H, D, Dv;
  float scale;
  bool causal;
};
void attention_forward_avx2(const AttnFwdArgs& a, ThreadPool* pool);

}  // namespace hsd

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include "avx2_math.h"

namespace hsd {
namespace {

#define HSD_INLINE inline __attribute__((always_inline))

using avx2::exp_nonpos_ps;
using avx2::exp_ps;

constexpr int64_t kBQ = 96;  // query rows per task (a multiple of 6)
constexpr int64_t kBK = 64;  // keys per block (a multiple of 16)


HSD_INLINE float hmax(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
HSD_INLINE float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

// s[r*kBK + 0..16) = sum_d q[d*6 + r] kt[d*ldk + 0..16) for 6 rows; q is a panel of 6 rows interleaved per d (the
// GEMM's A-panel form), so the 6 broadcasts of a step come from one pointer at fixed offsets.
HSD_INLINE void logits_6x16(const float* q, int64_t D, const float* kt, int64_t ldk, float* s) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t d = 0; d < D; ++d, q += 6, kt += ldk) {
    __m256 b0 = _mm256_loadu_ps(kt), b1 = _mm256_loadu_ps(kt + 8), a;
    a = _mm256_broadcast_ss(q);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(q + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(q + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(q + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(q + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(q + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
  }
  _mm256_storeu_ps(s, c00);
  _mm256_storeu_ps(s + 8, c01);
  _mm256_storeu_ps(s + kBK, c10);
  _mm256_storeu_ps(s + kBK + 8, c11);
  _mm256_storeu_ps(s + 2 * kBK, c20);
  _mm256_storeu_ps(s + 2 * kBK + 8, c21);
  _mm256_storeu_ps(s + 3 * kBK, c30);
  _mm256_storeu_ps(s + 3 * kBK + 8, c31);
  _mm256_storeu_ps(s + 4 * kBK, c40);
  _mm256_storeu_ps(s + 4 * kBK + 8, c41);
  _mm256_storeu_ps(s + 5 * kBK, c50);
  _mm256_storeu_ps(s + 5 * kBK + 8, c51);
}

// acc[r*ldc + 0..8W) += sum_{j<nk} p[r*kBK + j] vb[j*ldv + 0..8W) for 6 rows, W = 1 or 2.
template <int W>
HSD_INLINE void pv_6xW(const float* p, int64_t nk, const float* vb, int64_t ldv, float* acc, int64_t ldc) {
  __m256 c[6][W];
  for (int r = 0; r < 6; ++r)
    for (int w = 0; w < W; ++w) c[r][w] = _mm256_loadu_ps(acc + r * ldc + 8 * w);
  for (int64_t j = 0; j < nk; ++j) {
    __m256 b[W];
    for (int w = 0; w < W; ++w) b[w] = _mm256_loadu_ps(vb + j * ldv + 8 * w);
    for (int r = 0; r < 6; ++r) {
      __m256 a = _mm256_broadcast_ss(p + r * kBK + j);
      for (int w = 0; w < W; ++w) c[r][w] = _mm256_fmadd_ps(a, b[w], c[r][w]);
    }
  }
  for (int r = 0; r < 6; ++r)
    for (int w = 0; w < W; ++w) _mm256_storeu_ps(acc + r * ldc + 8 * w, c[r][w]);
}

// acc[r*ldc + 0..40) += sum_{j<nk} p[r*kBK + j] vb[j*ldv + 0..40) for 2 rows: 10 accumulators and the 5 V
// vectors of a key held in registers (2 broadcasts + 5 loads per 10 FMAs; the 6 x 16 + 6 x 8 tiles needed 23
// loads per 30 FMAs and the 6 x 8 one had too few independent chains to fill both FMA pipes). In asm: with all
// 16 ymm registers live, GCC folded the V loads into the FMAs as memory operands, loading each V vector twice.
HSD_INLINE void pv_2x40(const float* p, int64_t nk, const float* vb, int64_t ldv, float* acc, int64_t ldc) {
  static_assert(kBK == 64, "the asm below steps to the second row of p by 256 bytes");
  float* a1 = acc + ldc;
  __m256 c00 = _mm256_loadu_ps(acc), c01 = _mm256_loadu_ps(acc + 8), c02 = _mm256_loadu_ps(acc + 16),
         c03 = _mm256_loadu_ps(acc + 24), c04 = _mm256_loadu_ps(acc + 32);
  __m256 c10 = _mm256_loadu_ps(a1), c11 = _mm256_loadu_ps(a1 + 8), c12 = _mm256_loadu_ps(a1 + 16),
         c13 = _mm256_loadu_ps(a1 + 24), c14 = _mm256_loadu_ps(a1 + 32);
  if (nk > 0) {
    const int64_t ldvb = ldv * 4;
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
        "vbroadcastss 256(%[p]), %%ymm15\n\t"
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
        : [ldvb] "r"(ldvb)
        : "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory");
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

}  // namespace

void attention_forward_avx2(const AttnFwdArgs& g, ThreadPool* pool) {
  const int64_t B = g.B, Lq = g.Lq, Lk = g.Lk, H = g.H, D = g.D, Dv = g.Dv;
  const int64_t Dv8 = (Dv + 7) / 8 * 8;
  const int64_t nqb = (Lq + kBQ - 1) / kBQ;
  const float scale = g.scale;
  const bool causal = g.causal;
  // K transposed once per (batch, head) into kts [B*H][Lk16 / 16][D][16] (keys zero-padded to 16), shared by every
  // query block of that head (transposing it per block cost ~20% of the time at D = 40). Tiles of 16 keys are
  // contiguous: with [D][Lk16] rows 16 KiB apart (Lk = 4096), the D rows a logits tile reads fell into one L1
  // set and evicted each other (the loads were ~1/4 of the time; 61 -> see RESULTS). V is read in place when its
  // rows are whole 8-float vectors (Dv % 8 == 0), else copied per block with zero padding.
  const int64_t Lk16 = (Lk + 15) / 16 * 16;
  std::vector<float> kts((size_t)(B * H * D * Lk16));
  pool->parallel_for(B * H * D, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t t = s0; t < s1; ++t) {
      const int64_t bh = t / D, d = t % D, b = bh / H, h = bh % H;
      float* dst = &kts[(size_t)(bh * D * Lk16 + d * 16)];  // tile jt of 16 keys at + jt * D * 16
      const float* src = g.k + (b * Lk * H + h) * D + d;
      for (int64_t j = 0; j < Lk; ++j) dst[(j / 16) * D * 16 + j % 16] = src[j * H * D];
      for (int64_t j = Lk; j < Lk16; ++j) dst[(j / 16) * D * 16 + j % 16] = 0.0f;
    }
  });
  const bool v_direct = Dv % 8 == 0;
  pool->parallel_for(B * H * nqb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> qs(kBQ * D), vb(v_direct ? 0 : kBK * Dv8, 0.0f), p(kBQ * kBK), acc(kBQ * Dv8), m(kBQ), l(kBQ);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / (H * nqb), h = (t / nqb) % H, i0 = (t % nqb) * kBQ;
      const int64_t rows = std::min(kBQ, Lq - i0), rows6 = (rows + 5) / 6 * 6;
      for (int64_t i = 0; i < rows6; ++i) {  // scale q into 6-row panels: row i, d at [(i/6)*6*D + d*6 + i%6]
        float* dst = &qs[(i / 6) * 6 * D + i % 6];
        if (i < rows) {
          const float* src = g.q + ((b * Lq + i0 + i) * H + h) * D;
          for (int64_t d = 0; d < D; ++d) dst[d * 6] = src[d] * scale;
        } else {
          for (int64_t d = 0; d < D; ++d) dst[d * 6] = 0.0f;  // padding rows: finite logits, never written out
        }
        m[i] = -INFINITY;
        l[i] = 0.0f;
      }
      std::fill(acc.begin(), acc.begin() + rows6 * Dv8, 0.0f);
      const float* kth = &kts[(size_t)((b * H + h) * D * Lk16)];
      const int64_t kend = causal ? std::min(Lk, i0 + rows) : Lk;  // keys past the last row's diagonal: masked
      for (int64_t j0 = 0; j0 < kend; j0 += kBK) {
        const int64_t nk = std::min(kBK, kend - j0), nk16 = (nk + 15) / 16 * 16, nk8 = (nk + 7) / 8 * 8;
        const float* vblk;
        int64_t ldv;
        if (v_direct) {
          vblk = g.v + ((b * Lk + j0) * H + h) * Dv;
          ldv = H * Dv;
        } else {
          for (int64_t j = 0; j < nk; ++j)
            std::memcpy(&vb[j * Dv8], g.v + ((b * Lk + j0 + j) * H + h) * Dv, (size_t)Dv * sizeof(float));
          vblk = vb.data();
          ldv = Dv8;
        }
        // S for all (padded) rows and 16-key tiles (keys past Lk are zero columns of kts; past kend, masked).
        for (int64_t r0 = 0; r0 < rows6; r0 += 6)
          for (int64_t jt = 0; jt < nk16; jt += 16) logits_6x16(&qs[r0 * D], D, kth + (j0 + jt) * D, 16, &p[r0 * kBK + jt]);
        // Online softmax per real row.
        for (int64_t i = 0; i < rows; ++i) {
          float* sp = &p[i * kBK];
          const int64_t nvis = causal ? std::min(nk, i0 + i + 1 - j0) : nk;
          if (nvis <= 0) {
            std::fill(sp, sp + nk, 0.0f);
            continue;
          }
          for (int64_t j = nvis; j < nk8; ++j) sp[j] = -INFINITY;
          __m256 vm = _mm256_set1_ps(-INFINITY);
          for (int64_t j = 0; j < nk8; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(sp + j));
          const float mold = m[i], mb = std::max(mold, hmax(vm));
          const float corr = std::exp(mold - mb);  // exp(-inf) = 0 on the first block
          const __m256 vmb = _mm256_set1_ps(mb), ninf = _mm256_set1_ps(-INFINITY);
          __m256 vs = _mm256_setzero_ps();
          if (nvis == nk8) {  // no masked key in the row: exp(s - max) of values <= 0, no mask
            for (int64_t j = 0; j < nk8; j += 8) {
              const __m256 e = exp_nonpos_ps(_mm256_sub_ps(_mm256_loadu_ps(sp + j), vmb));
              _mm256_storeu_ps(sp + j, e);
              vs = _mm256_add_ps(vs, e);
            }
          } else {
            for (int64_t j = 0; j < nk8; j += 8) {
              __m256 s = _mm256_loadu_ps(sp + j);
              __m256 e = _mm256_and_ps(exp_ps(_mm256_sub_ps(s, vmb)), _mm256_cmp_ps(s, ninf, _CMP_NEQ_OQ));
              _mm256_storeu_ps(sp + j, e);
              vs = _mm256_add_ps(vs, e);
            }
          }
          l[i] = l[i] * corr + hsum(vs);
          m[i] = mb;
          if (corr != 1.0f) {
            float* ai = &acc[i * Dv8];
            const __m256 vc = _mm256_set1_ps(corr);
            for (int64_t d = 0; d < Dv8; d += 8) _mm256_storeu_ps(ai + d, _mm256_mul_ps(_mm256_loadu_ps(ai + d), vc));
          }
        }
        // O += P V.
        for (int64_t r0 = 0; r0 < rows6; r0 += 6) {
          int64_t c0 = 0;
          if (Dv8 % 40 == 0) {  // head dims 40, 80, 160 (SD1.5, SDXL)
            for (; c0 < Dv8; c0 += 40)
              for (int64_t r = r0; r < r0 + 6; r += 2) pv_2x40(&p[r * kBK], nk, vblk + c0, ldv, &acc[r * Dv8 + c0], Dv8);
            continue;
          }
          for (; c0 + 16 <= Dv8; c0 += 16) pv_6xW<2>(&p[r0 * kBK], nk, vblk + c0, ldv, &acc[r0 * Dv8 + c0], Dv8);
          if (c0 < Dv8) pv_6xW<1>(&p[r0 * kBK], nk, vblk + c0, ldv, &acc[r0 * Dv8 + c0], Dv8);
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        const float inv = 1.0f / l[i];
        float* dst = g.o + ((b * Lq + i0 + i) * H + h) * Dv;
        for (int64_t d = 0; d < Dv; ++d) dst[d] = acc[i * Dv8 + d] * inv;
        if (g.lse) g.lse[(b * H + h) * Lq + i0 + i] = m[i] + std::log(l[i]);
      }
    }
  });
}

}  // namespace hsd

#else

namespace hsd {
// Never called: attention.cpp dispatches here only when the GEMM engine's AVX2 kernels are in use.
void attention_forward_avx2(const AttnFwdArgs&, ThreadPool*) {}
}  // namespace hsd

#endif
