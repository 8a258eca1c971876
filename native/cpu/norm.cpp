// Normalisation: group_norm on channels-last [N, S, C] (optional fused SiLU) and layer_norm over the last dim.
//
// group_norm: a group is C/G adjacent channels of every one of the S positions, so its elements are strided
// runs. Pass 1 splits each image's S positions into blocks that are summed in parallel (per-channel float sums
// of x - K and its square over the block's rows, K the block's first row, then per channel in double the
// block's mean and centred sum of squares, summed again around the mean where the pivot was an outlier), and
// the blocks' per-group (mean, M2) combine per (n, group) by Chan's formula. Pass 2 normalises row by row
// (four rows together with AVX2 when x fits the cache) with per-channel shift/scale/offset vectors, a loop
// over C that vectorises. The input is read twice; a single-read fused version would need the whole image in
// cache (or the statistics from the producing op).
// layer_norm: rows split over the threads, two passes (mean, then centred variance) with double accumulators;
// the AVX2 / AVX-512 kernels (pointwise_avx2.cpp ln_rows_lanes on 8 / 16 lanes) one pass of float sums shifted by a pivot,
// folded in double, in blocks of four rows Q = rows / 4 apart, software-pipelined (the sums of one block and the
// output of the block two before it in one sweep).
// With AVX-512 the group-norm statistics and apply run 16 lanes at a time as well (pw_avx512).
// The backwards (group_norm_backward, layer_norm_backward) are at the end of the file.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "hypersd/ops.h"
#include "hypersd/act_scalar.h"
#include "chanstats.h"
#include "gemm_kernels.h"

namespace hsd {
// The row kernels of pointwise_avx2.cpp, declared for both of its compiles: pw_avx2 (8 lanes) and pw_avx512
// (pointwise_avx512.cpp: the same kernels, 16 lanes at a time where it has them).
#define HSD_NORM_ROW_KERNELS                                                                                   \
  void gn_apply4(const float* x, float* y, int64_t C, const float* k, const float* a, const float* b, bool silu); \
  void gn_apply(const float* x, float* y, int64_t C, const float* k, const float* a, const float* b,            \
                bool silu_on, bool stream);                                                                     \
  void gn_apply_fold(const float* x, float* y, int64_t C, const float* a, const float* b, const float* at,      \
                     const float* bt, bool silu_on, bool stream);                                              \
  void gn_apply4_fold(const float* x, float* y, int64_t C, const float* a, const float* b, const float* at,     \
                      const float* bt, bool silu_on);                                                          \
  void stream_fence();                                                                                          \
  bool gn_apply_fold_flat(const float* x, float* y, int64_t rows, int64_t C, const float* a, const float* b,    \
                          const float* at, const float* bt, bool silu_on);                                     \
  void ln_rows(const float* x, float* y, int64_t rows, int64_t C, const float* gamma, const float* beta, double eps);
namespace pw_avx2 {
HSD_NORM_ROW_KERNELS
}  // namespace pw_avx2
namespace pw_avx512 {
HSD_NORM_ROW_KERNELS
}  // namespace pw_avx512
#undef HSD_NORM_ROW_KERNELS
namespace {

inline float silu_f(float x) { return x / (1.0f + std::exp(-x)); }
using act::silu_d;

void group_norm_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &gamma = c.in.at(1), &beta = c.in.at(2), &y = c.out.at(0);
  if (x.dim() != 3) throw Error("group_norm: x must be [N, S, C], got " + x.describe());
  int64_t N = x.shape[0], S = x.shape[1], C = x.shape[2];
  int64_t G = c.attrs.i("groups");
  double eps = c.attrs.f("eps", 1e-5);
  bool silu = c.attrs.i("silu", 0) != 0;
  if (G <= 0 || C % G != 0)
    throw Error("group_norm: groups " + std::to_string(G) + " must divide channels " + std::to_string(C));
  if (gamma.numel() != C || beta.numel() != C)
    throw Error("group_norm: gamma " + gamma.describe() + " and beta " + beta.describe() + " must have C=" +
                std::to_string(C) + " elements");
  if (y.shape != x.shape) throw Error("group_norm: output " + y.describe() + " differs from x " + x.describe());
  int64_t Cg = C / G;
  const float *px = x.data<float>(), *pg = gamma.data<float>(), *pb = beta.data<float>();
  float* py = y.data<float>();
  // Optional fourth input: x's per-channel statistics from the op that produced it (chanstats.h); then x is
  // read once.
  const float* pst = nullptr;
  if (c.in.size() > 3) {
    chanstats::check("group_norm", "stats (input 3)", c.in[3], N, C);
    pst = c.in[3].data<float>();
  }
  if (x.numel() == 0) return;

  // Pass 1: per (n, S-block), per-channel float sums of x - K and its square over the block's rows, with K the
  // block's first row (its channels' pivots: no shifts to fill), then, per channel in double, the block's
  // channel mean and centred sum of squares M2 = S2 - S1^2 / rows, folded into per-group (mean, M2) by Chan's
  // combination. A pivot far from its channel's block mean (an outlier in the first row) would make S2 - S1^2 /
  // rows cancel: such a channel (S2 > 16 M2) is summed again, in double around its mean, from the block (in L2
  // by then): chanstats::moments, which the convolutions' statistics output takes too. With one pivot per group
  // (its first element, sessions 1-18), an outlier there cost the variance its digits: a first element 1000 std
  // from the mean gave rstd off by 1.4e-3 (a fuzzed case).
  // Blocks of a power of two rows, at most 256 and at most 128K values (each channel's float sums run over a
  // block's rows; the per-channel fold in double costs about as much as the block's vectorised sums at 128
  // rows of 320 channels): [4096, 320] in 16 blocks of 256 rows. The split depends on C only, so the result
  // does not depend on the thread count.
  int64_t rows_per_block = 1;
  while (rows_per_block * 2 <= std::min<int64_t>(256, (1 << 17) / std::max<int64_t>(C, 1))) rows_per_block *= 2;
  int64_t nblk = pst ? 1 : (S + rows_per_block - 1) / rows_per_block;
  std::vector<double> part((size_t)(N * nblk * G * 2), 0.0);  // per (n, block, group): mean, M2
  const bool avx2 = gemm::using_avx2();
  const bool avx512 = gemm::using_avx512();  // the apply pass 16 lanes at a time
  // The AVX2 passes take four rows at a time when x is small enough to stay in the last-level cache between
  // the passes (<= 16 MiB: SD1.5's UNet activations; +19% to +31% on [4096, 320] with SiLU), row by row when
  // it streams from memory (the VAE's [262144, 128] and [65536, 256]: the four interleaved rows ran the
  // normalise pass 1.5x slower and the statistics 1.1-1.2x; measured side by side in one process).
  const bool by4 = (double)N * S * C * sizeof(float) <= 16.0 * (1 << 20);
  if (pst) {
    // The given statistics as one block of all S rows: per group, the mean of its channels' means and M2 =
    // S (mean of the channel variances + the variance of the channel means), in double. Each group's sums run
    // over its channels in order (the same bits as one group at a time), the groups side by side: one group at
    // a time the dependent double additions took 2.3 us at 1280 channels (session 27).
    rows_per_block = S;
    std::vector<double> mch((size_t)C), sm((size_t)G), sv((size_t)G);
    for (int64_t n = 0; n < N; ++n) {
      const float* sc = pst + n * C * chanstats::kPart;
      for (int64_t ch = 0; ch < C; ++ch) mch[(size_t)ch] = (double)sc[ch * 3] + (double)sc[ch * 3 + 1];
      std::fill(sm.begin(), sm.end(), 0.0);
      std::fill(sv.begin(), sv.end(), 0.0);
      for (int64_t k = 0; k < Cg; ++k)
        for (int64_t g = 0; g < G; ++g) sm[(size_t)g] += mch[(size_t)(g * Cg + k)];
      for (int64_t g = 0; g < G; ++g) sm[(size_t)g] /= (double)Cg;  // the group means
      for (int64_t k = 0; k < Cg; ++k)
        for (int64_t g = 0; g < G; ++g) {
          const double d = mch[(size_t)(g * Cg + k)] - sm[(size_t)g];
          sv[(size_t)g] += (double)sc[(g * Cg + k) * 3 + 2] + d * d;
        }
      for (int64_t g = 0; g < G; ++g) {
        part[(size_t)(n * G + g) * 2] = sm[(size_t)g];
        part[(size_t)(n * G + g) * 2 + 1] = (double)S * sv[(size_t)g];
      }
    }
  } else c.pool->parallel_for(N * nblk, 1, [&](int64_t s, int64_t e) {
    std::vector<float> scratch((size_t)chanstats::scratch_floats(C));
    std::vector<double> mc((size_t)C), m2c((size_t)C);  // the block's channel means and centred sums of squares
    for (int64_t t = s; t < e; ++t) {
      int64_t n = t / nblk, blk = t % nblk;
      int64_t r0 = blk * rows_per_block, r1 = std::min(S, r0 + rows_per_block), rows = r1 - r0;
      chanstats::moments(px + (n * S + r0) * C, 1, rows, 0, C, mc.data(), m2c.data(), scratch.data(), by4);
      // Per group: Chan's combination of its channels (mean of the means; M2 = sum M2_c + rows sum (mean_c -
      // mean)^2).
      double* acc = &part[(size_t)t * G * 2];
      for (int64_t g = 0; g < G; ++g) {
        const double* mg = mc.data() + g * Cg;
        double sm = 0, sq = 0;
        for (int64_t k = 0; k < Cg; ++k) {
          sm += mg[k];
          sq += m2c[(size_t)(g * Cg + k)];
        }
        const double mean = sm / (double)Cg;
        double dev = 0;
        for (int64_t k = 0; k < Cg; ++k) dev += (mg[k] - mean) * (mg[k] - mean);
        acc[2 * g] = mean;
        acc[2 * g + 1] = sq + (double)rows * dev;
      }
    }
  });

  // Per channel of each image: the shift K = the group mean rounded to float, a = rstd * gamma and
  // b' = beta - (mean - K) a, so that y = (x - K) a + b' [, silu]: x - K is exact when |mean| >> std (x is
  // within a factor 2 of K), and the small remainder mean - K is folded into b' in double. One operation a
  // vector fewer than ((x - K) - dm) a + beta: the AVX-512 apply with SiLU 7.2 -> 6.45 cycles a vector (one
  // core, L1). The blocks' (mean, M2) combine per group in a fixed order (Chan et al.).
  // One pass over the channels computes the shifted form's coefficients, the folded form's (b0, at, bt) and the
  // checks that decide between them, without branches (the short-circuit check and the separate passes had made
  // this serial prologue 6 us of a call at 1280 channels, 3 us at 320: session 27).
  std::vector<float> k_c((size_t)(N * C)), b_c((size_t)(N * C)), scale_c((size_t)(N * C)), b0_c((size_t)(N * C));
  std::vector<float> at_c(silu ? (size_t)(N * C) : 0), bt_c(silu ? (size_t)(N * C) : 0);
  const double cnt = (double)S * (double)Cg;
  int shift_big = 0, nonfinite = 0;  // some channel's |K a| > 4 (|a| std + |b'|); some a or b' not finite
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      double sm = 0, sq = 0;
      for (int64_t b = 0; b < nblk; ++b) {
        const double nb = (double)(std::min(S, (b + 1) * rows_per_block) - b * rows_per_block) * (double)Cg;
        sm += nb * part[(size_t)((n * nblk + b) * G + g) * 2];
      }
      const double mean = sm / cnt;
      for (int64_t b = 0; b < nblk; ++b) {
        const double nb = (double)(std::min(S, (b + 1) * rows_per_block) - b * rows_per_block) * (double)Cg;
        const double dm = part[(size_t)((n * nblk + b) * G + g) * 2] - mean;
        sq += part[(size_t)((n * nblk + b) * G + g) * 2 + 1] + nb * dm * dm;
      }
      const double var = std::max(0.0, sq / cnt);
      const double rstd = 1.0 / std::sqrt(var + eps);
      const float K = (float)mean;
      const double dm = mean - (double)K;
      const double sd = std::sqrt(var);
      const size_t i0 = (size_t)(n * C + g * Cg);
      const float *gg = pg + g * Cg, *bb = pb + g * Cg;
      for (int64_t k = 0; k < Cg; ++k) {
        const size_t i = i0 + (size_t)k;
        const double a = rstd * gg[k], bp = (double)bb[k] - dm * a;
        const float af = (float)a, bf = (float)bp;
        k_c[i] = K;
        scale_c[i] = af;
        b_c[i] = bf;
        shift_big |= !(std::fabs((double)K * a) <= 4.0 * (std::fabs(a) * sd + std::fabs(bp)));
        nonfinite |= !(std::fabs(af) <= 3.40282347e38f) | !(std::fabs(bf) <= 3.40282347e38f);
        // b0 for the folded apply without SiLU and the scalar channel tail; at / bt for the vectors' SiLU
        const double b0 = (double)bf - (double)K * af;
        b0_c[i] = (float)b0;
        if (silu) {
          at_c[i] = (float)(-1.4426950408889634 * af);
          bt_c[i] = (float)(-1.4426950408889634 * b0);
        }
      }
    }
  }

  // Pass 2: y = (x - K) a + b' [, silu]; with AVX2 and by4, four rows of an image at a
  // time (chunks of rows in multiples of 4). An output of more than twice the last-level cache (the VAE
  // decoder's 67-268 MB activations) is written with streaming stores: its lines are not read from memory
  // before being overwritten (a third of the pass's traffic) and it does not flush what the cache holds; the
  // next op reads it from memory either way. SD1.5 VAE decode at 512x512: see bench/RESULTS.md (session 14).
  const bool stream = avx2 && (double)N * S * C * sizeof(float) > 2.0 * (double)last_level_cache_bytes();
  // The folded apply (pointwise_avx2.cpp gn_apply_fold: y = x a + b0; with SiLU t = -y log2(e) = x at + bt by
  // one FMA and SiLU from t alone) where every channel's shift is small against the scale of its outputs:
  // |K a| <= 4 (|a| std + |b'|), i.e. the group mean within 4 standard deviations of 0 where beta is small against
  // gamma. x a and b0 = b' - K a (or x at and bt) then cancel at most a few ulp of 4 (|a| std + |b'|), a few
  // times the shifted form's rounding of outputs of that size. (Until session 26 the bound was |K a| <= 4, which
  // took a channel of one repeated value (std 0, a = gamma / sqrt(eps)) whose outputs, beta, were small: the
  // chanstats fuzzer's constant output channel with |beta| = 3.5e-4 came out 2.4e-5 off.) Not where some a or b'
  // overflowed the float range (then the shifted form's NaN / inf pattern stands).
  static const bool fold_off = std::getenv("HYPERSD_GN_FOLD") != nullptr;
  const bool fold = avx2 && !fold_off && !shift_big && !nonfinite;
  // The folded apply takes a chunk's rows of each image as one run (pointwise_avx2.cpp gn_apply_fold_flat) where
  // C is a multiple of the lanes: +11-19% over four rows a step by channel slices at [4096, 320] with SiLU.
  // HYPERSD_GN_FLAT=0 keeps the slices (a bench knob).
  static const bool flat_off = [] {
    const char* e = std::getenv("HYPERSD_GN_FLAT");
    return e && std::string(e) == "0";
  }();
  c.pool->parallel_for(N * S, std::max<int64_t>(4, (1 << 13) / C / 4 * 4), [&](int64_t s, int64_t e) {
    if (fold && !stream && !flat_off) {
      const auto flat = avx512 ? pw_avx512::gn_apply_fold_flat : pw_avx2::gn_apply_fold_flat;
      int64_t r = s;
      for (; r < e;) {
        const int64_t n = r / S, re = std::min(e, (n + 1) * S);
        const float *at = silu ? at_c.data() + n * C : nullptr, *bt = silu ? bt_c.data() + n * C : nullptr;
        if (!flat(px + r * C, py + r * C, re - r, C, scale_c.data() + n * C, b0_c.data() + n * C, at, bt, silu)) break;
        r = re;
      }
      if (r == e) return;
    }
    for (int64_t r = s; r < e; ++r) {
      int64_t n = r / S;
      const float* xr = px + r * C;
      float* yr = py + r * C;
      const float *kk = &k_c[(size_t)(n * C)], *a = &scale_c[(size_t)(n * C)], *bb = &b_c[(size_t)(n * C)];
      if (fold) {
        const float* b0 = b0_c.data() + n * C;
        const float *at = silu ? at_c.data() + n * C : nullptr, *bt = silu ? bt_c.data() + n * C : nullptr;
        if (by4 && r + 4 <= e && (r + 3) / S == n) {
          (avx512 ? pw_avx512::gn_apply4_fold : pw_avx2::gn_apply4_fold)(xr, yr, C, a, b0, at, bt, silu);
          r += 3;
          continue;
        }
        (avx512 ? pw_avx512::gn_apply_fold : pw_avx2::gn_apply_fold)(xr, yr, C, a, b0, at, bt, silu, stream);
        continue;
      }
      if (avx2) {
        if (by4 && r + 4 <= e && (r + 3) / S == n) {  // four rows of one image
          (avx512 ? pw_avx512::gn_apply4 : pw_avx2::gn_apply4)(xr, yr, C, kk, a, bb, silu);
          r += 3;
          continue;
        }
        (avx512 ? pw_avx512::gn_apply : pw_avx2::gn_apply)(xr, yr, C, kk, a, bb, silu, stream);
        continue;
      }
      for (int64_t k = 0; k < C; ++k) yr[k] = (xr[k] - kk[k]) * a[k] + bb[k];
      if (silu)
        for (int64_t k = 0; k < C; ++k) yr[k] = silu_f(yr[k]);
    }
    if (stream) (avx512 ? pw_avx512::stream_fence : pw_avx2::stream_fence)();
  });
}

// A row's mean and centred sum of squares in double, two passes (layer_norm's portable forward and its backward).
inline void row_moments(const float* x, int64_t C, double* mean, double* m2) {
  double s1 = 0;
  for (int64_t k = 0; k < C; ++k) s1 += x[k];
  const double m = s1 / (double)C;
  double s2 = 0;
  for (int64_t k = 0; k < C; ++k) {
    const double d = x[k] - m;
    s2 += d * d;
  }
  *mean = m;
  *m2 = s2;
}

void layer_norm_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &gamma = c.in.at(1), &beta = c.in.at(2), &y = c.out.at(0);
  if (x.dim() < 1) throw Error("layer_norm: x must have at least one dim, got " + x.describe());
  int64_t C = x.size(-1);
  if (gamma.numel() != C || beta.numel() != C)
    throw Error("layer_norm: gamma " + gamma.describe() + " and beta " + beta.describe() + " must have C=" +
                std::to_string(C) + " elements");
  if (y.numel() != x.numel()) throw Error("layer_norm: output " + y.describe() + " differs from x " + x.describe());
  double eps = c.attrs.f("eps", 1e-5);
  int64_t rows = C ? x.numel() / C : 0;
  const float *px = x.data<float>(), *pg = gamma.data<float>(), *pb = beta.data<float>();
  float* py = y.data<float>();
  const bool avx2 = gemm::using_avx2();
  const auto ln_rows = gemm::using_avx512() ? pw_avx512::ln_rows : pw_avx2::ln_rows;
  c.pool->parallel_for(rows, std::max<int64_t>(1, (1 << 13) / std::max<int64_t>(C, 1)), [&](int64_t s, int64_t e) {
    if (avx2) {
      ln_rows(px + s * C, py + s * C, e - s, C, pg, pb, eps);
      return;
    }
    for (int64_t r = s; r < e; ++r) {
      const float* xr = px + r * C;
      float* yr = py + r * C;
      double mean, s2;
      row_moments(xr, C, &mean, &s2);
      // y = ((x - K) r - (mean - K) r) gamma + beta, K the row's first value: x - K is exact when |mean| >> std,
      // where the mean rounded to float would cost ulp(mean) / std (as the vector kernels).
      const float K = xr[0], rstd = (float)(1.0 / std::sqrt(s2 / (double)C + eps));
      const float nmr = (float)(-(mean - (double)K) * (double)rstd);
      for (int64_t k = 0; k < C; ++k) yr[k] = std::fma(xr[k] - K, rstd, nmr) * pg[k] + pb[k];
    }
  });
}


// ---------- backward ----------
// group_norm_backward: inputs x [N, S, C], gamma, beta, dy; attrs groups, eps, silu (as the forward) and
// need_dx / need_affine (0/1, default 1); outputs dx (if need_dx), then dgamma [C] and dbeta [C] (if
// need_affine), all f32. The statistics are recomputed from x (double, two passes per (n, group)) rather
// than saved: one extra read of x, and no extra forward output. With the fused SiLU the pre-activation
// z = xhat*gamma + beta is recomputed too and dy is taken through silu'(z) first. Then, per (n, group) over
// its M = S * C/G elements, with g = dz*gamma:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dgamma[c] = sum dz*xhat,  dbeta[c] = sum dz.
// Work is split by (n, group): each task owns its group's channels of image n, so the per-image dgamma/dbeta
// partials need no locking; they are summed over images at the end.
// layer_norm_backward: inputs x, gamma, dy; the same formulas per row (M = C); dgamma/dbeta are summed over
// rows in per-block double partials.

struct NormOuts {
  float *dx = nullptr, *dgamma = nullptr, *dbeta = nullptr;
};

NormOuts norm_outs(const char* op, const OpContext& c, const Tensor& x, int64_t C) {
  bool need_dx = c.attrs.i("need_dx", 1) != 0, need_aff = c.attrs.i("need_affine", 1) != 0;
  size_t want = (need_dx ? 1 : 0) + (need_aff ? 2 : 0);
  if (c.out.size() != want)
    throw Error(std::string(op) + ": expected " + std::to_string(want) + " outputs (need_dx " + std::to_string(need_dx) +
                ", need_affine " + std::to_string(need_aff) + "), got " + std::to_string(c.out.size()));
  NormOuts o;
  size_t k = 0;
  if (need_dx) {
    if (c.out[0].numel() != x.numel()) throw Error(std::string(op) + ": dx " + c.out[0].describe() + " differs from x " + x.describe());
    o.dx = c.out[k++].data<float>();
  }
  if (need_aff) {
    if (c.out[k].numel() != C || c.out[k + 1].numel() != C)
      throw Error(std::string(op) + ": dgamma and dbeta must have " + std::to_string(C) + " elements");
    o.dgamma = c.out[k].data<float>();
    o.dbeta = c.out[k + 1].data<float>();
  }
  return o;
}

// One (n, group) of group_norm_backward: x, dy, dx point at the group's first channel of image n (row
// stride C); dg, db receive the group's Cg channel sums. With the SiLU, dz is kept in dz_buf (S*Cg floats)
// so silu' is evaluated once per element.
template <bool kSilu>
void group_norm_backward_group(const float* xb, const float* db, float* dxb, const float* gg, const float* bb, int64_t S,
                               int64_t C, int64_t Cg, double eps, std::vector<float>& dz_buf, double* dg, double* dbeta) {
  const double cnt = (double)S * (double)Cg;
  double s1 = 0, s2 = 0;
  for (int64_t r = 0; r < S; ++r)
    for (int64_t k = 0; k < Cg; ++k) s1 += xb[r * C + k];
  const double mean = s1 / cnt;
  for (int64_t r = 0; r < S; ++r)
    for (int64_t k = 0; k < Cg; ++k) {
      double d = xb[r * C + k] - mean;
      s2 += d * d;
    }
  // x - mean as (x - K) - (mean - K) with K the mean rounded to float, as the forward does: exact enough when
  // |mean| >> std (the group's first element, used until session 19, could be an outlier far from the mean).
  const float K = (float)mean, fdm = (float)(mean - K), fr = (float)(1.0 / std::sqrt(s2 / cnt + eps));
  if (kSilu) dz_buf.resize((size_t)(S * Cg));
  std::vector<float> dgf((size_t)Cg), dbf((size_t)Cg);
  for (int64_t k = 0; k < Cg; ++k) dg[k] = dbeta[k] = 0.0;
  double a1 = 0, a2 = 0;
  constexpr int64_t kRows = 64;  // float partials over this many rows, then double
  for (int64_t r0 = 0; r0 < S; r0 += kRows) {
    std::fill(dgf.begin(), dgf.end(), 0.0f);
    std::fill(dbf.begin(), dbf.end(), 0.0f);
    for (int64_t r = r0; r < std::min(S, r0 + kRows); ++r) {
      const float *xr = xb + r * C, *dr = db + r * C;
      float f1 = 0, f2 = 0;
      for (int64_t k = 0; k < Cg; ++k) {
        float xh = ((xr[k] - K) - fdm) * fr, d = dr[k];
        if (kSilu) {
          d *= silu_d(xh * gg[k] + bb[k]);
          dz_buf[(size_t)(r * Cg + k)] = d;
        }
        dgf[k] += d * xh;
        dbf[k] += d;
        f1 += d * gg[k];
        f2 += d * gg[k] * xh;
      }
      a1 += f1;
      a2 += f2;
    }
    for (int64_t k = 0; k < Cg; ++k) {
      dg[k] += dgf[k];
      dbeta[k] += dbf[k];
    }
  }
  if (!dxb) return;
  const float m1 = (float)(a1 / cnt), m2 = (float)(a2 / cnt);
  for (int64_t r = 0; r < S; ++r) {
    const float *xr = xb + r * C, *dr = db + r * C;
    float* o = dxb + r * C;
    for (int64_t k = 0; k < Cg; ++k) {
      float xh = ((xr[k] - K) - fdm) * fr, d = kSilu ? dz_buf[(size_t)(r * Cg + k)] : dr[k];
      o[k] = fr * (d * gg[k] - m1 - xh * m2);
    }
  }
}

void group_norm_backward_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &gamma = c.in.at(1), &beta = c.in.at(2), &dy = c.in.at(3);
  if (x.dim() != 3) throw Error("group_norm_backward: x must be [N, S, C], got " + x.describe());
  int64_t N = x.shape[0], S = x.shape[1], C = x.shape[2], G = c.attrs.i("groups");
  if (G <= 0 || C % G != 0)
    throw Error("group_norm_backward: groups " + std::to_string(G) + " must divide channels " + std::to_string(C));
  if (gamma.numel() != C || beta.numel() != C || dy.numel() != x.numel())
    throw Error("group_norm_backward: gamma, beta [C] and dy (x's shape) do not fit x " + x.describe());
  double eps = c.attrs.f("eps", 1e-5);
  bool silu = c.attrs.i("silu", 0) != 0;
  NormOuts o = norm_outs("group_norm_backward", c, x, C);
  int64_t Cg = C / G;
  const float *px = x.data<float>(), *pg = gamma.data<float>(), *pb = beta.data<float>(), *pd = dy.data<float>();
  std::vector<double> dgp((size_t)(N * C), 0.0), dbp((size_t)(N * C), 0.0);
  if (S > 0)
    c.pool->parallel_for(N * G, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> dz_buf;
      for (int64_t t = t0; t < t1; ++t) {
        int64_t n = t / G, g = t % G, off = n * S * C + g * Cg;
        auto run = silu ? group_norm_backward_group<true> : group_norm_backward_group<false>;
        run(px + off, pd + off, o.dx ? o.dx + off : nullptr, pg + g * Cg, pb + g * Cg, S, C, Cg, eps, dz_buf,
            &dgp[(size_t)(n * C + g * Cg)], &dbp[(size_t)(n * C + g * Cg)]);
      }
    });
  if (o.dgamma)
    for (int64_t ch = 0; ch < C; ++ch) {
      double sg = 0, sb = 0;
      for (int64_t n = 0; n < N; ++n) {
        sg += dgp[(size_t)(n * C + ch)];
        sb += dbp[(size_t)(n * C + ch)];
      }
      o.dgamma[ch] = (float)sg;
      o.dbeta[ch] = (float)sb;
    }
}

void layer_norm_backward_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &gamma = c.in.at(1), &dy = c.in.at(2);
  if (x.dim() < 1) throw Error("layer_norm_backward: x must have at least one dim, got " + x.describe());
  int64_t C = x.size(-1);
  if (gamma.numel() != C || dy.numel() != x.numel())
    throw Error("layer_norm_backward: gamma [C] and dy (x's shape) do not fit x " + x.describe());
  double eps = c.attrs.f("eps", 1e-5);
  NormOuts o = norm_outs("layer_norm_backward", c, x, C);
  int64_t rows = C ? x.numel() / C : 0;
  const float *px = x.data<float>(), *pg = gamma.data<float>(), *pd = dy.data<float>();
  int64_t nblk = std::max<int64_t>(1, std::min<int64_t>(rows, 4 * (int64_t)c.pool->size()));
  std::vector<double> part(o.dgamma ? (size_t)(nblk * 2 * C) : 0, 0.0);
  c.pool->parallel_for(nblk, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      int64_t r0 = rows * b / nblk, r1 = rows * (b + 1) / nblk;
      double* pgam = o.dgamma ? &part[(size_t)(b * 2 * C)] : nullptr;
      for (int64_t r = r0; r < r1; ++r) {
        const float *xr = px + r * C, *dr = pd + r * C;
        double mean, s2;
        row_moments(xr, C, &mean, &s2);
        const float K = xr[0], dm = (float)(mean - K), rstd = (float)(1.0 / std::sqrt(s2 / (double)C + eps));
        double a1 = 0, a2 = 0;
        for (int64_t k = 0; k < C; ++k) {
          float xh = ((xr[k] - K) - dm) * rstd, gk = dr[k] * pg[k];
          a1 += gk;
          a2 += gk * xh;
          if (pgam) {
            pgam[k] += dr[k] * xh;
            pgam[C + k] += dr[k];
          }
        }
        if (!o.dx) continue;
        float m1 = (float)(a1 / (double)C), m2 = (float)(a2 / (double)C);
        float* dxr = o.dx + r * C;
        for (int64_t k = 0; k < C; ++k) {
          float xh = ((xr[k] - K) - dm) * rstd;
          dxr[k] = rstd * (dr[k] * pg[k] - m1 - xh * m2);
        }
      }
    }
  });
  if (o.dgamma)
    for (int64_t k = 0; k < C; ++k) {
      double sg = 0, sb = 0;
      for (int64_t b = 0; b < nblk; ++b) {
        sg += part[(size_t)(b * 2 * C + k)];
        sb += part[(size_t)(b * 2 * C + C + k)];
      }
      o.dgamma[k] = (float)sg;
      o.dbeta[k] = (float)sb;
    }
}

}  // namespace

void register_norm_cpu(OpRegistry& r) {
  r.add_cpu("group_norm", group_norm_kernel);
  r.add_cpu("layer_norm", layer_norm_kernel);
  r.add_cpu("group_norm_backward", group_norm_backward_kernel);
  r.add_cpu("layer_norm_backward", layer_norm_backward_kernel);
}
}  // namespace hsd
