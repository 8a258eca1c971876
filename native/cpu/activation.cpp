// Activations: silu, gelu (erf), gelu_tanh, quick_gelu, geglu, softmax (last dim, with a scale).
//
// Layout: contiguous f32 (the engine widens f16/bf16). The pointwise ones are one flat parallel loop over a
// scalar function; geglu reads rows [..., 2N] and writes [..., N]; softmax works row by row (max, exp, sum
// in double, scale by the reciprocal). The scalar functions use libm (expf, erff, tanhf) for accuracy; a
// vectorised polynomial version is a later performance step.
#include <algorithm>
#include <cmath>
#include <string>

#include "hypersd/ops.h"

namespace hsd {
namespace {

inline float silu_f(float x) { return x / (1.0f + std::exp(-x)); }
inline float gelu_f(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }
inline float gelu_tanh_f(float x) {
  const float k = 0.79788456080286536f;  // sqrt(2/pi)
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}
inline float quick_gelu_f(float x) { return x / (1.0f + std::exp(-1.702f * x)); }

void check_same_size(const char* op, const Tensor& x, const Tensor& y) {
  if (x.numel() != y.numel())
    throw Error(std::string(op) + ": input " + x.describe() + " and output " + y.describe() + " differ in size");
}

template <float (*F)(float)>
void pointwise(const OpContext& c, const char* op) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  check_same_size(op, x, y);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  c.pool->parallel_for(y.numel(), 1 << 13, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) py[i] = F(px[i]);
  });
}

void silu_kernel(const OpContext& c) { pointwise<silu_f>(c, "silu"); }
void gelu_kernel(const OpContext& c) { pointwise<gelu_f>(c, "gelu"); }
void gelu_tanh_kernel(const OpContext& c) { pointwise<gelu_tanh_f>(c, "gelu_tanh"); }
void quick_gelu_kernel(const OpContext& c) { pointwise<quick_gelu_f>(c, "quick_gelu"); }

// diffusers GEGLU: hidden, gate = proj(x).chunk(2, dim=-1); y = hidden * gelu(gate).
void geglu_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  int64_t n = y.dim() ? y.size(-1) : 0;
  if (x.dim() == 0 || x.size(-1) != 2 * n || x.numel() != 2 * y.numel())
    throw Error("geglu: input " + x.describe() + " must be [..., 2N] for output " + y.describe());
  int64_t rows = n ? y.numel() / n : 0;
  const float* px = x.data<float>();
  float* py = y.data<float>();
  c.pool->parallel_for(rows, std::max<int64_t>(1, (1 << 12) / std::max<int64_t>(n, 1)), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      const float* h = px + r * 2 * n;
      const float* g = h + n;
      float* o = py + r * n;
      for (int64_t i = 0; i < n; ++i) o[i] = h[i] * gelu_f(g[i]);
    }
  });
}

void softmax_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  check_same_size("softmax", x, y);
  float scale = (float)c.attrs.f("scale", 1.0);
  int64_t n = x.dim() ? x.size(-1) : 1;
  int64_t rows = n ? x.numel() / n : 0;
  const float* px = x.data<float>();
  float* py = y.data<float>();
  c.pool->parallel_for(rows, std::max<int64_t>(1, (1 << 12) / std::max<int64_t>(n, 1)), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      const float* xi = px + r * n;
      float* yi = py + r * n;
      float m = -INFINITY;
      for (int64_t i = 0; i < n; ++i) m = std::max(m, scale * xi[i]);
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        float v = std::exp(scale * xi[i] - m);
        yi[i] = v;
        sum += v;
      }
      float inv = (float)(1.0 / sum);
      for (int64_t i = 0; i < n; ++i) yi[i] *= inv;
    }
  });
}

}  // namespace

void register_activation_cpu(OpRegistry& r) {
  r.add_cpu("silu", silu_kernel);
  r.add_cpu("gelu", gelu_kernel);
  r.add_cpu("gelu_tanh", gelu_tanh_kernel);
  r.add_cpu("quick_gelu", quick_gelu_kernel);
  r.add_cpu("geglu", geglu_kernel);
  r.add_cpu("softmax", softmax_kernel);
}
}  // namespace hsd
