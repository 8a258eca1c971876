// Normalisation: group_norm on channels-last [N, S, C] (optional fused SiLU) and layer_norm over the last dim.
//
// group_norm: a group is C/G adjacent channels of every one of the S positions, so its elements are strided
// runs. Pass 1 splits each image's S positions into blocks that are summed in parallel (sum and sum of squares
// per group, of x - K with K the group's first element, so a large mean does not cancel the variance away;
// short float runs, then double); the blocks are reduced per (n, group). Pass 2 normalises row by row with per-channel mean/(rstd*gamma)/beta
// vectors, a loop over C that vectorises. The input is read twice; a single-read fused version would need
// the whole image in cache and is a later performance step.
// layer_norm: one row per task, two passes (mean, then centred variance) with double accumulators.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "hypersd/ops.h"

namespace hsd {
namespace {

inline float silu_f(float x) { return x / (1.0f + std::exp(-x)); }

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
  if (x.numel() == 0) return;

  // Pass 1: partial sums per (n, S-block, group).
  int64_t rows_per_block = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(C, 1));
  int64_t nblk = (S + rows_per_block - 1) / rows_per_block;
  std::vector<double> part((size_t)(N * nblk * G * 2), 0.0);
  c.pool->parallel_for(N * nblk, 1, [&](int64_t s, int64_t e) {
    for (int64_t t = s; t < e; ++t) {
      int64_t n = t / nblk, blk = t % nblk;
      int64_t r0 = blk * rows_per_block, r1 = std::min(S, r0 + rows_per_block);
      double* acc = &part[(size_t)t * G * 2];
      for (int64_t g = 0; g < G; ++g) {
        double s1 = 0, s2 = 0;
        float K = px[n * S * C + g * Cg];
        for (int64_t r = r0; r < r1; ++r) {
          const float* p = px + (n * S + r) * C + g * Cg;
          float f1 = 0, f2 = 0;  // Cg is at most a few hundred values: float partials, then double
          for (int64_t k = 0; k < Cg; ++k) {
            float d = p[k] - K;
            f1 += d;
            f2 += d * d;
          }
          s1 += f1;
          s2 += f2;
        }
        acc[2 * g] = s1;
        acc[2 * g + 1] = s2;
      }
    }
  });

  // Per channel of each image: the shift K, the mean's remainder dm = mean - K, and rstd * gamma. Subtracting
  // K (a value of the group, exact in f32) and then the small dm keeps (x - mean) accurate when |mean| >> std.
  std::vector<float> k_c((size_t)(N * C)), dm_c((size_t)(N * C)), scale_c((size_t)(N * C));
  double cnt = (double)S * (double)Cg;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      double s1 = 0, s2 = 0, K = px[n * S * C + g * Cg];
      for (int64_t b = 0; b < nblk; ++b) {
        s1 += part[(size_t)((n * nblk + b) * G + g) * 2];
        s2 += part[(size_t)((n * nblk + b) * G + g) * 2 + 1];
      }
      double dm = s1 / cnt, var = std::max(0.0, s2 / cnt - dm * dm);
      double rstd = 1.0 / std::sqrt(var + eps);
      for (int64_t k = 0; k < Cg; ++k) {
        int64_t ch = g * Cg + k;
        k_c[(size_t)(n * C + ch)] = (float)K;
        dm_c[(size_t)(n * C + ch)] = (float)dm;
        scale_c[(size_t)(n * C + ch)] = (float)(rstd * pg[ch]);
      }
    }
  }

  // Pass 2: y = ((x - K) - dm) * rstd * gamma + beta [, silu].
  c.pool->parallel_for(N * S, std::max<int64_t>(1, (1 << 13) / C), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      int64_t n = r / S;
      const float* xr = px + r * C;
      float* yr = py + r * C;
      const float *kk = &k_c[(size_t)(n * C)], *dm = &dm_c[(size_t)(n * C)], *a = &scale_c[(size_t)(n * C)];
      for (int64_t k = 0; k < C; ++k) yr[k] = ((xr[k] - kk[k]) - dm[k]) * a[k] + pb[k];
      if (silu)
        for (int64_t k = 0; k < C; ++k) yr[k] = silu_f(yr[k]);
    }
  });
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
  c.pool->parallel_for(rows, std::max<int64_t>(1, (1 << 13) / std::max<int64_t>(C, 1)), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      const float* xr = px + r * C;
      float* yr = py + r * C;
      double s1 = 0;
      for (int64_t k = 0; k < C; ++k) s1 += xr[k];
      double mean = s1 / (double)C, s2 = 0;
      for (int64_t k = 0; k < C; ++k) {
        double d = xr[k] - mean;
        s2 += d * d;
      }
      float m = (float)mean, rstd = (float)(1.0 / std::sqrt(s2 / (double)C + eps));
      for (int64_t k = 0; k < C; ++k) yr[k] = (xr[k] - m) * rstd * pg[k] + pb[k];
    }
  });
}

}  // namespace

void register_norm_cpu(OpRegistry& r) {
  r.add_cpu("group_norm", group_norm_kernel);
  r.add_cpu("layer_norm", layer_norm_kernel);
}
}  // namespace hsd
