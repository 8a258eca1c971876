// Backward of conv2d (OPS.md) on NHWC activations and OHWI weights: conv2d_backward_input and
// conv2d_backward_weight. (They sit beside conv.cpp rather than in it while the forward is being reworked;
// the bias gradient is a sum_to of dy and needs no kernel of its own.)
//
// Both are GEMMs on the op table's `matmul` kernel (called through run_op_now, so they get its blocked
// AVX2 engine) around a data-movement pass, with K = kh*kw*Cin and the OHWI weight read as [Cout, K]:
// conv2d_backward_weight: dw [Cout, K] = dy^T [Cout, P] x cols [P, K], cols = im2col(x) (row p = the
//   kh x kw x Cin window under output pixel p, zeros in the padding). The pixels are taken in chunks
//   (cols at most kColsMax floats) whose products accumulate into dw (beta = 1 after the first chunk).
// conv2d_backward_input: dcols [P, K] = dy [P, Cout] x w [Cout, K], then col2im: every input pixel gathers
//   the rows of dcols whose windows cover it. Gathering by input pixel (rather than scattering windows)
//   lets threads own the input rows they write: no atomics, deterministic sums. Output rows are taken in
//   chunks per image; a chunk adds into dx, so dx is zeroed first (or kept, with beta = 1).
// A 1x1 stride-1 unpadded convolution is a plain GEMM over the pixels for both, with no data movement.
// Both take attrs stride, pad (as the forward) and beta (0: overwrite, 1: add into the output, for
// accumulating a gradient); the output's shape gives H, W (backward_input) and kh, kw (backward_weight).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "hypersd/ops.h"

namespace hsd {
namespace {

constexpr int64_t kColsMax = int64_t(1) << 22;  // floats in one chunk of im2col columns (16 MiB)

struct Geom {
  int64_t N, H, W, C, Cout, kh, kw, stride, pad, Ho, Wo;
  int64_t K() const { return kh * kw * C; }
  int64_t P() const { return N * Ho * Wo; }
  bool plain() const { return kh == 1 && kw == 1 && stride == 1 && pad == 0; }
};

Geom geom(const char* op, const OpContext& c, const Tensor& x, const Tensor& w, const Tensor& y) {
  if (x.dim() != 4 || w.dim() != 4 || y.dim() != 4)
    throw Error(std::string(op) + ": x " + x.describe() + ", w " + w.describe() + " and dy " + y.describe() +
                " must be NHWC / OHWI / NHWC");
  Geom g{x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0], w.shape[1], w.shape[2],
         c.attrs.i("stride", 1), c.attrs.i("pad", 0), 0, 0};
  if (g.stride < 1 || g.pad < 0) throw Error(std::string(op) + ": stride must be >= 1 and pad >= 0");
  if (w.shape[3] != g.C) throw Error(std::string(op) + ": x " + x.describe() + " and w " + w.describe() + " differ in Cin");
  if (g.H + 2 * g.pad < g.kh || g.W + 2 * g.pad < g.kw)
    throw Error(std::string(op) + ": the kernel of w " + w.describe() + " is larger than the padded input " + x.describe());
  g.Ho = (g.H + 2 * g.pad - g.kh) / g.stride + 1;
  g.Wo = (g.W + 2 * g.pad - g.kw) / g.stride + 1;
  if (y.shape != std::vector<int64_t>{g.N, g.Ho, g.Wo, g.Cout})
    throw Error(std::string(op) + ": dy " + y.describe() + " must be [" + std::to_string(g.N) + "," +
                std::to_string(g.Ho) + "," + std::to_string(g.Wo) + "," + std::to_string(g.Cout) + "]");
  return g;
}

// C = op(A) op(B) (+ C when beta), through the op table's matmul kernel.
void gemm(const OpContext& c, const Tensor& A, const Tensor& B, const Tensor& C, bool transA, bool transB, bool beta) {
  static const OpDef* mm = OpRegistry::get().find("matmul");
  if (!mm) throw Error("conv2d backward: the matmul op is not registered");
  Attrs a;
  a.set("transA", transA ? 1.0 : 0.0);
  a.set("transB", transB ? 1.0 : 0.0);
  a.set("beta", beta ? 1.0 : 0.0);
  run_op_now(*mm, Device::CPU, {A, B}, {C}, a, c.pool, nullptr);
}

// Rows p = p0 .. p0+np-1 of im2col(x) into cols [np, K].
void im2col(const OpContext& c, const float* x, const Geom& g, int64_t p0, int64_t np, float* cols) {
  const int64_t K = g.K(), C = g.C;
  c.pool->parallel_for(np, std::max<int64_t>(1, 4096 / K), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      int64_t p = p0 + i, ox = p % g.Wo, oy = (p / g.Wo) % g.Ho, n = p / (g.Wo * g.Ho);
      float* row = cols + i * K;
      for (int64_t ky = 0; ky < g.kh; ++ky)
        for (int64_t kx = 0; kx < g.kw; ++kx) {
          int64_t iy = oy * g.stride - g.pad + ky, ix = ox * g.stride - g.pad + kx;
          float* dst = row + (ky * g.kw + kx) * C;
          if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) std::fill(dst, dst + C, 0.0f);
          else std::memcpy(dst, x + ((n * g.H + iy) * g.W + ix) * C, (size_t)C * sizeof(float));
        }
    }
  });
}

void conv2d_backward_weight_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &dy = c.in.at(1), &dw = c.out.at(0);
  Geom g = geom("conv2d_backward_weight", c, x, dw, dy);
  const bool acc = c.attrs.f("beta", 0.0) != 0.0;
  const int64_t K = g.K(), P = g.P();
  Tensor dw2 = view(dw, {g.Cout, K});
  if (P == 0) {
    if (!acc) std::fill(dw.data<float>(), dw.data<float>() + dw.numel(), 0.0f);
    return;
  }
  if (g.plain()) {
    gemm(c, view(dy, {P, g.Cout}), view(x, {P, g.C}), dw2, true, false, acc);
    return;
  }
  const int64_t pc = std::max<int64_t>(1, std::min<int64_t>(P, kColsMax / K));
  Tensor cols = empty({pc, K}, DType::F32, Device::CPU);
  for (int64_t p0 = 0; p0 < P; p0 += pc) {
    int64_t np = std::min(pc, P - p0);
    im2col(c, x.data<float>(), g, p0, np, cols.data<float>());
    gemm(c, view(dy, {np, g.Cout}, {g.Cout, 1}, dy.offset + p0 * g.Cout), view(cols, {np, K}, {K, 1}), dw2, true, false,
         acc || p0 > 0);
  }
}

void conv2d_backward_input_kernel(const OpContext& c) {
  const Tensor &dy = c.in.at(0), &w = c.in.at(1), &dx = c.out.at(0);
  Geom g = geom("conv2d_backward_input", c, dx, w, dy);
  const bool acc = c.attrs.f("beta", 0.0) != 0.0;
  const int64_t K = g.K(), C = g.C;
  float* pdx = dx.data<float>();
  if (g.plain() && g.P() > 0) {
    gemm(c, view(dy, {g.P(), g.Cout}), view(w, {g.Cout, C}), view(dx, {g.P(), C}), false, false, acc);
    return;
  }
  if (!acc)
    c.pool->parallel_for(dx.numel(), 1 << 15, [&](int64_t b, int64_t e) { std::fill(pdx + b, pdx + e, 0.0f); });
  if (g.P() == 0) return;
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(g.Ho, kColsMax / (g.Wo * K)));
  Tensor dcols = empty({rows * g.Wo, K}, DType::F32, Device::CPU);
  const float* pc = dcols.data<float>();
  Tensor w2 = view(w, {g.Cout, K});
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oy0 = 0; oy0 < g.Ho; oy0 += rows) {
      const int64_t oy1 = std::min(g.Ho, oy0 + rows), m = (oy1 - oy0) * g.Wo;
      gemm(c, view(dy, {m, g.Cout}, {g.Cout, 1}, dy.offset + (n * g.Ho + oy0) * g.Wo * g.Cout), w2,
           view(dcols, {m, K}, {K, 1}), false, false, false);
      // Input rows these output rows' windows cover.
      const int64_t iy0 = std::max<int64_t>(0, oy0 * g.stride - g.pad);
      const int64_t iy1 = std::min<int64_t>(g.H, (oy1 - 1) * g.stride - g.pad + g.kh);
      c.pool->parallel_for(iy1 - iy0, 1, [&](int64_t b, int64_t e) {
        for (int64_t iy = iy0 + b; iy < iy0 + e; ++iy)
          for (int64_t ix = 0; ix < g.W; ++ix) {
            float* out = pdx + ((n * g.H + iy) * g.W + ix) * C;
            for (int64_t ky = 0; ky < g.kh; ++ky) {
              int64_t ty = iy + g.pad - ky;
              if (ty < 0 || ty % g.stride) continue;
              int64_t oy = ty / g.stride;
              if (oy < oy0 || oy >= oy1) continue;
              for (int64_t kx = 0; kx < g.kw; ++kx) {
                int64_t tx = ix + g.pad - kx;
                if (tx < 0 || tx % g.stride) continue;
                int64_t ox = tx / g.stride;
                if (ox >= g.Wo) continue;
                const float* src = pc + ((oy - oy0) * g.Wo + ox) * K + (ky * g.kw + kx) * C;
                for (int64_t k = 0; k < C; ++k) out[k] += src[k];
              }
            }
          }
      });
    }
}

}  // namespace

void register_conv_backward_cpu(OpRegistry& r) {
  r.add_cpu("conv2d_backward_input", conv2d_backward_input_kernel);
  r.add_cpu("conv2d_backward_weight", conv2d_backward_weight_kernel);
}
}  // namespace hsd
