// Activations: silu, gelu (erf), gelu_tanh, quick_gelu, geglu, softmax (last dim, with a scale), and their
// backwards (*_backward, at the end of the file).
//
// Layout: contiguous f32 (the engine widens f16/bf16). The pointwise ones are one flat parallel loop over a
// scalar function; geglu reads rows [..., 2N] and writes [..., N]; softmax works row by row (max, exp, sum
// in double, scale by the reciprocal). The portable scalar functions use libm (expf, erff, tanhf); with AVX2,
// silu and geglu run vectorised polynomials (pointwise_avx2.cpp), the gelu family the GEMM epilogue's.
#include <algorithm>
#include <cmath>
#include <string>

#include "hypersd/ops.h"
#include "hypersd/act_scalar.h"
#include "gemm_kernels.h"

namespace hsd {
namespace pw_avx2 {  // pointwise_avx2.cpp
void silu(const float* x, float* y, int64_t n);
void softmax_row(const float* x, float* y, int64_t n, float scale);
void geglu(const float* h, const float* g, float* o, int64_t n);
}  // namespace pw_avx2
namespace pw_avx512 {  // pointwise_avx512.cpp: SiLU and GEGLU 16 lanes at a time (the same bits; SiLU's last bit may differ, see vexp2_split)
void silu(const float* x, float* y, int64_t n);
void geglu(const float* h, const float* g, float* o, int64_t n);
}  // namespace pw_avx512
namespace {

inline float silu_f(float x) { return x / (1.0f + std::exp(-x)); }
// x enters the product as max(-FLT_MAX, x) (a NaN stays NaN): gelu(-inf) = -0, not -inf * 0, as the vector kernels.
// Phi(x) = erfc(-x / sqrt2) / 2 and 0.5 (1 + tanh u) = sigmoid(2u), as the vector kernels take them: 1 + erf(.)
// and 1 + tanh(.) cancel for x << 0 (session 27's fuzzing: 1.8% and 5.4% off at x = -4.8, where the outputs are
// ~1e-6). erfcf's argument z rounded to float carries 6e-8 of relative error, 2 z^2 times that in the result:
// 3.6e-6 at x = -7.4, 1.1e-5 at -12 (the AVX2 kernel takes z^2 exactly: 1.3e-6 and 4.2e-6). erfcf costs what
// 1 + erff did (9-10 ns a value here; the double erfc 11-14). The GEMM's portable epilogue (gemm_engine.cpp
// act_scalar) computes the same.
inline float gelu_f(float x) {
  const float xm = x < -3.40282347e38f ? -3.40282347e38f : x;
  return 0.5f * xm * std::erfc(-x * 0.70710678118654752f);
}
inline float gelu_tanh_f(float x) {
  const float u2 = 1.5957691216057308f * (x + 0.044715f * x * x * x);  // 2 sqrt(2/pi) (x + 0.044715 x^3)
  return x / (1.0f + std::exp(-u2));  // x << 0: x / inf = -0; x = -inf: NaN, as the vector kernels give
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

void silu_kernel(const OpContext& c) {
  if (!gemm::using_avx2()) return pointwise<silu_f>(c, "silu");
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  check_same_size("silu", x, y);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const auto silu_row = gemm::using_avx512() ? pw_avx512::silu : pw_avx2::silu;
  c.pool->parallel_for(y.numel(), 1 << 13, [&](int64_t s, int64_t e) { silu_row(px + s, py + s, e - s); });
}
// The gelu family with AVX2: the GEMM epilogue's vector activations (gemm_avx2.cpp act_ps: the same functions
// as matmul's `act`, ~10x the libm loop), applied in place to each chunk copied to y while it is in L1.
template <float (*F)(float), int ACT>
void gelu_family_kernel(const OpContext& c, const char* op) {
  if (!gemm::using_avx2()) return pointwise<F>(c, op);
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  check_same_size(op, x, y);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const gemm::Kernels& kr = gemm::kernels();
  c.pool->parallel_for(y.numel(), 1 << 13, [&](int64_t s, int64_t e) {
    if (py != px) std::copy(px + s, px + e, py + s);
    kr.act(py + s, e - s, ACT);
  });
}
void gelu_kernel(const OpContext& c) { gelu_family_kernel<gelu_f, gemm::kActGelu>(c, "gelu"); }
void gelu_tanh_kernel(const OpContext& c) { gelu_family_kernel<gelu_tanh_f, gemm::kActGeluTanh>(c, "gelu_tanh"); }
void quick_gelu_kernel(const OpContext& c) { gelu_family_kernel<quick_gelu_f, gemm::kActQuickGelu>(c, "quick_gelu"); }

// diffusers GEGLU: hidden, gate = proj(x).chunk(2, dim=-1); y = hidden * gelu(gate).
void geglu_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  int64_t n = y.dim() ? y.size(-1) : 0;
  if (x.dim() == 0 || x.size(-1) != 2 * n || x.numel() != 2 * y.numel())
    throw Error("geglu: input " + x.describe() + " must be [..., 2N] for output " + y.describe());
  int64_t rows = n ? y.numel() / n : 0;
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const bool avx2 = gemm::using_avx2();
  const auto geglu_row = gemm::using_avx512() ? pw_avx512::geglu : pw_avx2::geglu;
  c.pool->parallel_for(rows, std::max<int64_t>(1, (1 << 12) / std::max<int64_t>(n, 1)), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      const float* h = px + r * 2 * n;
      const float* g = h + n;
      float* o = py + r * n;
      if (avx2) geglu_row(h, g, o, n);
      else
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
  const bool avx2 = gemm::using_avx2();
  c.pool->parallel_for(rows, std::max<int64_t>(1, (1 << 12) / std::max<int64_t>(n, 1)), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      const float* xi = px + r * n;
      float* yi = py + r * n;
      if (avx2) {
        pw_avx2::softmax_row(xi, yi, n, scale);
        continue;
      }
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


// ---------- backward ----------
// The pointwise backwards take (x, dy) and write dx = dy * f'(x): recomputing f' from x is one pass over
// memory, the same as reading a saved output would be, and needs nothing kept from the forward.
// geglu_backward takes (x, dy) and writes dx [..., 2N]; softmax_backward takes the forward OUTPUT y and dy:
// dx = scale * y * (dy - sum(dy * y)) per row (y is all the derivative needs, x is not read).

template <float (*D)(float)>
void pointwise_backward(const OpContext& c, const char* op) {
  const Tensor &x = c.in.at(0), &dy = c.in.at(1), &dx = c.out.at(0);
  check_same_size(op, x, dy);
  check_same_size(op, x, dx);
  const float *px = x.data<float>(), *pd = dy.data<float>();
  float* po = dx.data<float>();
  c.pool->parallel_for(dx.numel(), 1 << 13, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) po[i] = pd[i] * D(px[i]);
  });
}

void silu_backward_kernel(const OpContext& c) { pointwise_backward<act::silu_d>(c, "silu_backward"); }
void gelu_backward_kernel(const OpContext& c) { pointwise_backward<act::gelu_d>(c, "gelu_backward"); }
void gelu_tanh_backward_kernel(const OpContext& c) { pointwise_backward<act::gelu_tanh_d>(c, "gelu_tanh_backward"); }
void quick_gelu_backward_kernel(const OpContext& c) { pointwise_backward<act::quick_gelu_d>(c, "quick_gelu_backward"); }

// y = h * gelu(g): dh = dy * gelu(g), dg = dy * h * gelu'(g).
void geglu_backward_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &dy = c.in.at(1), &dx = c.out.at(0);
  int64_t n = dy.dim() ? dy.size(-1) : 0;
  if (x.dim() == 0 || x.size(-1) != 2 * n || x.numel() != 2 * dy.numel() || dx.numel() != x.numel())
    throw Error("geglu_backward: x " + x.describe() + " and dx " + dx.describe() + " must be [..., 2N] for dy " +
                dy.describe());
  int64_t rows = n ? dy.numel() / n : 0;
  const float *px = x.data<float>(), *pd = dy.data<float>();
  float* po = dx.data<float>();
  c.pool->parallel_for(rows, std::max<int64_t>(1, (1 << 12) / std::max<int64_t>(n, 1)), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      const float *h = px + r * 2 * n, *g = h + n, *d = pd + r * n;
      float *dh = po + r * 2 * n, *dg = dh + n;
      for (int64_t i = 0; i < n; ++i) {
        dh[i] = d[i] * gelu_f(g[i]);
        dg[i] = d[i] * h[i] * act::gelu_d(g[i]);
      }
    }
  });
}

void softmax_backward_kernel(const OpContext& c) {
  const Tensor &y = c.in.at(0), &dy = c.in.at(1), &dx = c.out.at(0);
  check_same_size("softmax_backward", y, dy);
  check_same_size("softmax_backward", y, dx);
  float scale = (float)c.attrs.f("scale", 1.0);
  int64_t n = y.dim() ? y.size(-1) : 1;
  int64_t rows = n ? y.numel() / n : 0;
  const float *py = y.data<float>(), *pd = dy.data<float>();
  float* po = dx.data<float>();
  c.pool->parallel_for(rows, std::max<int64_t>(1, (1 << 12) / std::max<int64_t>(n, 1)), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      const float *yi = py + r * n, *di = pd + r * n;
      float* oi = po + r * n;
      double dot = 0;
      for (int64_t i = 0; i < n; ++i) dot += (double)yi[i] * di[i];
      float d = (float)dot;
      for (int64_t i = 0; i < n; ++i) oi[i] = scale * yi[i] * (di[i] - d);
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
  r.add_cpu("silu_backward", silu_backward_kernel);
  r.add_cpu("gelu_backward", gelu_backward_kernel);
  r.add_cpu("gelu_tanh_backward", gelu_tanh_backward_kernel);
  r.add_cpu("quick_gelu_backward", quick_gelu_backward_kernel);
  r.add_cpu("geglu_backward", geglu_backward_kernel);
  r.add_cpu("softmax_backward", softmax_backward_kernel);
}
}  // namespace hsd
