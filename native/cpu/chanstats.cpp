// Per-channel statistics from the producing op: see chanstats.h. The sums are group_norm's statistics kernels
// (pointwise_avx2.cpp, 8 or 16 lanes, or the portable loop), so a piece costs what group_norm's own statistics
// pass costs per value, but on values the producer has just written (in L1 / L2), not read back from memory.
#include "chanstats.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <type_traits>

#include "gemm_kernels.h"

namespace hsd {
#define HSD_CHANSTATS_KERNELS                                                                                  \
  void gn_sums(const float* x, int64_t rows, int64_t C, const float* k, float* acc1, float* acc2, bool by4);     \
  bool cs_partial(const float* p, int64_t runs, int64_t len, int64_t rs, int64_t C, float* part);                \
  bool cs_moments_f(const float* K, const float* a1, const float* a2, int64_t n, int64_t C, double* mean,         \
                    double* m2);                                                                               \
  bool cs_rows(const float* p, int64_t rows, int64_t C, int64_t sub, bool by4, float* f, double* d, float* part); \
  void cs_merge(const float* K, const float* O, const float* M2, double f, double g, double* mean, double* m2, \
                int64_t n);
namespace pw_avx2 {
HSD_CHANSTATS_KERNELS
}  // namespace pw_avx2
namespace pw_avx512 {
HSD_CHANSTATS_KERNELS
}  // namespace pw_avx512
#undef HSD_CHANSTATS_KERNELS

namespace chanstats {
namespace {

// acc1[c] += x - k[c], acc2[c] += (x - k[c])^2 over `rows` pixels (row stride C).
void sums(const float* x, int64_t rows, int64_t C, const float* k, float* a1, float* a2, bool by4) {
  if (gemm::using_avx2()) {
    (gemm::using_avx512() ? pw_avx512::gn_sums : pw_avx2::gn_sums)(x, rows, C, k, a1, a2, by4);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const float d = xr[c] - k[c];
      a1[c] += d;
      a2[c] += d * d;
    }
  }
}

}  // namespace

namespace {
// The moments from the sums a1 / a2 of x - p[c] (float or double) over the runs: see `moments`.
template <class T>
void fold(const float* p, int64_t runs, int64_t len, int64_t run_stride, int64_t C, const T* a1, const T* a2,
          double* mean, double* m2) {
  const int64_t n = runs * len;
  const double inv = 1.0 / (double)n;
  // Float sums with the vector kernels: every channel's moments in one vectorised pass (cs_moments_f;
  // group_norm's statistics fold 320 channels a 256-row block: its statistics pass at [4096, 320] 36-45 -> 35-37
  // us, timed in the kernel, alternated four times), the scan below only where the kernel saw a cancellation.
  bool vec = false;
  if constexpr (std::is_same<T, float>::value) {
    if (gemm::using_avx2()) {
      if (!(gemm::using_avx512() ? pw_avx512::cs_moments_f : pw_avx2::cs_moments_f)(p, a1, a2, n, C, mean, m2)) return;
      vec = true;
    }
  }
  if (!vec)
    for (int64_t c = 0; c < C; ++c) {
      const double s1 = a1[c], off = s1 * inv;
      mean[c] = (double)p[c] + off;
      m2[c] = (double)a2[c] - s1 * off;
    }
  for (int64_t c = 0; c < C; ++c) {
    const double s2 = a2[c];
    if (!(s2 <= 16.0 * m2[c]) && s2 == s2) {
      // Summed again around the channel's mean: the pivot lay > sqrt(15) std from it, so S2 - S1^2 / n would
      // cancel more than 16-fold (an outlier; 1e-4 of the 256-row block channels of normal data; at sqrt(3)
      // std, 8% of them had been re-summed, +40% on group norm's statistics pass).
      double d1 = 0, d2 = 0;
      for (int64_t r = 0; r < runs; ++r)
        for (int64_t i = 0; i < len; ++i) {
          const double d = (double)p[r * run_stride + i * C + c] - mean[c];
          d1 += d;
          d2 += d * d;
        }
      mean[c] += d1 * inv;
      m2[c] = d2 - d1 * d1 * inv;
    }
  }
}
}  // namespace

void moments(const float* p, int64_t runs, int64_t len, int64_t run_stride, int64_t C, double* mean, double* m2,
             float* scratch, bool by4) {
  float *a1 = scratch, *a2 = scratch + C;
  std::fill(a1, a1 + 2 * C, 0.f);
  for (int64_t r = 0; r < runs; ++r) sums(p + r * run_stride, len, C, p, a1, a2, by4);  // pivots: the first pixel
  fold(p, runs, len, run_stride, C, a1, a2, mean, m2);
}

namespace {
void partial_of(const float* p, int64_t C, const double* mean, const double* m2, float* part);
// (K, o, M2) of a piece from its moments in double (the portable kernels' pieces, cancelled pieces).
void partial_from_moments(const float* p, int64_t runs, int64_t len, int64_t run_stride, int64_t C, float* part,
                          float* scratch, bool by4) {
  double* mean = reinterpret_cast<double*>(scratch + 2 * C);
  double* m2 = mean + C;
  moments(p, runs, len, run_stride, C, mean, m2, scratch, by4);
  partial_of(p, C, mean, m2, part);
}
void partial_of(const float* p, int64_t C, const double* mean, const double* m2, float* part) {
  for (int64_t c = 0; c < C; ++c) {
    part[c] = p[c];
    part[C + c] = (float)(mean[c] - (double)p[c]);
    part[2 * C + c] = (float)std::max(0.0, m2[c]);
  }
}
}  // namespace

void partial(const float* p, int64_t runs, int64_t len, int64_t run_stride, int64_t C, float* part, float* scratch) {
  // The vector kernel keeps each channel slice's sums in registers over the whole piece (a Winograd tile: 36
  // pixels); without it, or where some channel's sums cancelled, the piece's moments are taken in double.
  if (gemm::using_avx2() &&
      !(gemm::using_avx512() ? pw_avx512::cs_partial : pw_avx2::cs_partial)(p, runs, len, run_stride, C, part))
    return;
  partial_from_moments(p, runs, len, run_stride, C, part, scratch, true);
}

void combine(const float* part, const int64_t* count, int64_t N, int64_t per_image, int64_t C, float* out,
             ThreadPool* pool) {
  constexpr int64_t CB = 64;  // channels per task
  const int64_t cblocks = (C + CB - 1) / CB;
  const bool avx2 = gemm::using_avx2(), avx512 = gemm::using_avx512();
  pool->parallel_for(N * cblocks, 1, [&](int64_t s, int64_t e) {
    double mean[CB], m2[CB];
    for (int64_t t = s; t < e; ++t) {
      const int64_t n = t / cblocks, c0 = (t % cblocks) * CB, cb = std::min(CB, C - c0);
      double na = 0;
      std::fill(mean, mean + cb, 0.0);
      std::fill(m2, m2 + cb, 0.0);
      for (int64_t i = n * per_image; i < (n + 1) * per_image; ++i) {
        const double nb = (double)count[i];
        if (nb == 0) continue;
        const float* pc = part + i * C * kPart;
        const float *K = pc + c0, *O = pc + C + c0, *M2 = pc + 2 * C + c0;
        const double nt = na + nb, f = nb / nt, g = na * nb / nt;
        // Chan et al.'s merge of (na, mean, m2) with the piece's (nb, K + O, M2); the first piece (na = 0:
        // f = 1, g = 0) sets them.
        if (avx2) {
          (avx512 ? pw_avx512::cs_merge : pw_avx2::cs_merge)(K, O, M2, f, g, mean, m2, cb);
        } else {
          for (int64_t c = 0; c < cb; ++c) {
            const double d = ((double)K[c] + (double)O[c]) - mean[c];
            mean[c] += d * f;
            m2[c] += (double)M2[c] + d * d * g;
          }
        }
        na = nt;
      }
      float* o = out + (n * C + c0) * kPart;
      for (int64_t c = 0; c < cb; ++c) {
        const float hi = (float)mean[c];
        o[c * kPart] = hi;
        o[c * kPart + 1] = (float)(mean[c] - (double)hi);
        o[c * kPart + 2] = na > 0 ? (float)std::max(0.0, m2[c] / na) : 0.f;
      }
    }
  });
}

void of_rows(const float* y, int64_t N, int64_t S, int64_t C, float* out, ThreadPool* pool) {
  if (N == 0 || C == 0) return;
  // Blocks of a power of two rows, at most 256 and at most 128K values, as group_norm's statistics pass takes
  // them, each block's float sums over runs of at most 64 rows added up in double (with outliers among the
  // values, float sums over 256 rows lost up to 2.3e-5 of the variance to the rounding of the small terms
  // against the large sum, bench/fuzz/conv/chanstats.ts; 64 keeps it within ~6e-6). Until session 26 each
  // 64-row run was a piece of its own, folded (scalar, in double) and merged: at [4096, 320] on two threads the
  // op took 57-60 us, now 38-44 (a bare read of x: 25.5; bench/RESULTS.md, session 26).
  int64_t rpb = 1;
  while (rpb * 2 <= std::min<int64_t>(256, (1 << 17) / std::max<int64_t>(C, 1))) rpb *= 2;
  const int64_t sub = std::min<int64_t>(rpb, 64);
  const int64_t per_image = std::max<int64_t>(1, (S + rpb - 1) / rpb);
  std::unique_ptr<float[]> part(new float[(size_t)(N * per_image * C * kPart)]);  // each piece writes its own
  std::vector<int64_t> count((size_t)(N * per_image), 0);
  const bool by4 = (double)N * S * C * sizeof(float) <= 16.0 * (1 << 20);  // as group_norm's statistics pass
  const bool avx2 = gemm::using_avx2(), avx512 = gemm::using_avx512();
  pool->parallel_for(N * per_image, 1, [&](int64_t s, int64_t e) {
    std::vector<float> f((size_t)(2 * C));
    std::vector<double> d((size_t)(4 * C));  // the sums, then the moments
    for (int64_t t = s; t < e; ++t) {
      const int64_t n = t / per_image, r0 = (t % per_image) * rpb, rows = std::min(S, r0 + rpb) - r0;
      if (rows <= 0) continue;
      const float* p = y + (n * S + r0) * C;  // pivots: the block's first row
      float* pt = &part[(size_t)(t * C * kPart)];
      count[(size_t)t] = rows;
      if (avx2) {
        if (!(avx512 ? pw_avx512::cs_rows : pw_avx2::cs_rows)(p, rows, C, sub, by4, f.data(), d.data(), pt)) continue;
      } else {
        std::fill(d.begin(), d.begin() + 2 * C, 0.0);
        for (int64_t r = 0; r < rows; r += sub) {
          std::fill(f.begin(), f.end(), 0.f);
          sums(p + r * C, std::min(sub, rows - r), C, p, f.data(), f.data() + C, by4);
          for (int64_t c = 0; c < 2 * C; ++c) d[(size_t)c] += (double)f[(size_t)c];
        }
      }
      double *mean = d.data() + 2 * C, *m2 = mean + C;
      fold(p, 1, rows, 0, C, d.data(), d.data() + C, mean, m2);
      partial_of(p, C, mean, m2, pt);
    }
  });
  combine(part.get(), count.data(), N, per_image, C, out, pool);
}

void check(const char* op, const char* what, const Tensor& st, int64_t N, int64_t C) {
  if (st.dtype != DType::F32 || st.dim() != 3 || st.size(0) != N || st.size(1) != C || st.size(2) != kPart ||
      !st.is_contiguous())
    throw Error(std::string(op) + ": " + what + " " + st.describe() + " must be a contiguous f32 [" +
                std::to_string(N) + ", " + std::to_string(C) + ", 3] tensor (per image and channel: mean hi, mean lo, variance)");
}

}  // namespace chanstats
}  // namespace hsd
