// conv2d_backward_input and conv2d_backward_weight on CUDA (OPS.md), NHWC activations and OHWI weights, as
// GEMMs on the shared engine (gemm.cu's run_gemm) around data movement, the way native/cpu/conv_backward.cpp
// does it. With K = kh*kw*Cin, P = N*Ho*Wo and the weight read as [Cout, K]:
//   backward_weight: dw [Cout, K] = dy^T [Cout, P] x cols [P, K], cols = im2col(x) built in pixel chunks
//     (at most 64 Mi floats each) whose products accumulate into dw (beta = 1 after the first chunk); dy^T is
//     dy read column-major, no transpose pass;
//   backward_input: dcols [P, K] = dy [P, Cout] x w [Cout, K], then col2im: every input pixel gathers the
//     dcols rows whose windows cover it (by input pixel, so each thread owns what it writes: no atomics,
//     deterministic). Chunks are whole images.
// A 1x1, stride-1, unpadded convolution is a plain GEMM both ways (no data movement).
// Outputs are f32 (OPS.md, backward ops), so the GEMMs run the f32 SIMT kernel; inputs in f16/bf16 are
// converted first. Trade-off: simple and exact; a tensor-core path (half inputs, f32 accumulation into an
// f32 output) and an on-the-fly im2col gather are the next steps for training speed.
// beta = 1 adds into the output (gradient accumulation). Attrs stride, pad; the output's shape gives H, W
// (backward_input) or kh, kw (backward_weight).
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills: im2col 40, col2im 40 registers (the GEMMs: gemm.cu).
#include <algorithm>

#include "gemm_core.cuh"

namespace hsd {
namespace cu {
namespace {

struct Geom {
  int64_t N, H, W, C, Cout, kh, kw, stride, pad, Ho, Wo;
  int64_t K() const { return kh * kw * C; }
  int64_t P() const { return N * Ho * Wo; }
  bool plain() const { return kh == 1 && kw == 1 && stride == 1 && pad == 0; }
};

// x [N, H, W, C], w [Cout, kh, kw, C], dy [N, Ho, Wo, Cout], checked against the forward's shape rule.
Geom geom(const char* op, const OpContext& ctx, const Tensor& x, const Tensor& w, const Tensor& dy) {
  if (x.dim() != 4 || w.dim() != 4 || dy.dim() != 4)
    fail(op, "x " + x.describe() + ", w " + w.describe() + " and dy " + dy.describe() + " must be NHWC / OHWI / NHWC");
  Geom g{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(1), w.size(2), ctx.attrs.i("stride", 1),
         ctx.attrs.i("pad", 0), 0, 0};
  if (g.stride < 1 || g.pad < 0) fail(op, "stride must be >= 1 and pad >= 0");
  if (w.size(3) != g.C || g.H + 2 * g.pad < g.kh || g.W + 2 * g.pad < g.kw)
    fail(op, "w " + w.describe() + " does not fit x " + x.describe());
  g.Ho = (g.H + 2 * g.pad - g.kh) / g.stride + 1;
  g.Wo = (g.W + 2 * g.pad - g.kw) / g.stride + 1;
  need_shape(op, "dy", dy, {g.N, g.Ho, g.Wo, g.Cout});
  if (g.N * g.H * g.W * g.C > (1LL << 40) || g.K() > (1LL << 30)) fail(op, "too large: x " + x.describe());
  return g;
}

// cols[p - p0][k] = x at output pixel p, tap/channel k (zero in the padding), for p in [p0, p0 + rows).
__global__ void __launch_bounds__(256) im2col_kernel(const float* __restrict__ x, float* __restrict__ cols, int64_t p0,
                                                     int64_t rows, Geom g) {
  const int64_t K = g.kh * g.kw * g.C, total = rows * K;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t pr = i / K, k = i - pr * K, p = p0 + pr;
    const int64_t tap = k / g.C, ci = k - tap * g.C, ky = tap / g.kw, kx = tap - ky * g.kw;
    const int64_t n = p / (g.Ho * g.Wo), rem = p - n * g.Ho * g.Wo, ho = rem / g.Wo, wo = rem - ho * g.Wo;
    const int64_t h = ho * g.stride - g.pad + ky, w = wo * g.stride - g.pad + kx;
    cols[i] = (h >= 0 && h < g.H && w >= 0 && w < g.W) ? x[((n * g.H + h) * g.W + w) * g.C + ci] : 0.f;
  }
}

// dx for images [n0, n0 + images): each element gathers the dcols entries (rows of those images' pixels) that
// its position feeds; beta = 1 adds to dx.
__global__ void __launch_bounds__(256) col2im_kernel(const float* __restrict__ dcols, float* __restrict__ dx, int64_t n0,
                                                     int64_t images, Geom g, int beta) {
  const int64_t K = g.kh * g.kw * g.C, total = images * g.H * g.W * g.C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ci = i % g.C, pix = i / g.C, w = pix % g.W, nh = pix / g.W, h = nh % g.H, nl = nh / g.H;
    float acc = 0.f;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const int64_t th = h + g.pad - ky;
      if (th < 0 || th % g.stride) continue;
      const int64_t ho = th / g.stride;
      if (ho >= g.Ho) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const int64_t tw = w + g.pad - kx;
        if (tw < 0 || tw % g.stride) continue;
        const int64_t wo = tw / g.stride;
        if (wo >= g.Wo) continue;
        acc += dcols[((nl * g.Ho + ho) * g.Wo + wo) * K + (ky * g.kw + kx) * g.C + ci];
      }
    }
    float* o = dx + n0 * g.H * g.W * g.C + i;
    *o = beta ? *o + acc : acc;
  }
}

constexpr int64_t kChunkFloats = int64_t(1) << 26;  // 256 MiB of f32 scratch per chunk

GemmParams f32_params(int64_t M, int64_t N, int64_t K, const void* A, int64_t lda, const void* B, int64_t ldb, void* C,
                      int64_t ldc, float beta) {
  check_gemm_dims("conv2d backward", M, N, K, 1);
  GemmParams p = gemm_params(M, N, K, A, lda, 0, B, ldb, 0, C, ldc, 0, 4);  // (the f32 SIMT kernel: no vec flags used)
  p.beta = beta;
  return p;
}

void conv2d_backward_weight(const OpContext& ctx) {
  const char* op = "conv2d_backward_weight";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 2, 1);
  const Tensor& dw0 = ctx.out[0];
  for (const Tensor* t : {&ctx.in[0], &ctx.in[1], &dw0}) need_float(op, "x, dy and dw", *t);
  const Geom g = geom(op, ctx, ctx.in[0], dw0, ctx.in[1]);
  const float beta = (float)ctx.attrs.f("beta", 0.0);
  const OutAs dw(dw0, DType::F32, beta != 0.f, s);
  if (dw0.numel() == 0) return;
  const int64_t K = g.K(), P = g.P();
  if (P == 0) {  // no pixels: the gradient is zero (or unchanged)
    if (beta == 0.f) cudaMemsetAsync(dw.buf.raw(), 0, dw.buf.nbytes(), s);
    dw.finish(s);
    return;
  }
  const Tensor x = as_dtype(ctx.in[0], DType::F32, s), dy = as_dtype(ctx.in[1], DType::F32, s);
  if (g.plain()) {  // dw [Cout, C] = dy^T [Cout, P] x x [P, C]
    run_gemm(op, f32_params(g.Cout, K, P, dy.raw(), g.Cout, x.raw(), K, dw.buf.raw(), K, beta), DType::F32, A_COLMAJOR,
             false, 1, s);
    dw.finish(s);
    return;
  }
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(P, kChunkFloats / K));
  Tensor cols = empty({rows, K}, DType::F32, Device::CUDA);
  for (int64_t p0 = 0; p0 < P; p0 += rows) {
    const int64_t r = std::min(rows, P - p0);
    im2col_kernel<<<grid_for(r * K, 256), 256, 0, s>>>(x.data<float>(), cols.data<float>(), p0, r, g);
    run_gemm(op, f32_params(g.Cout, K, r, dy.data<float>() + p0 * g.Cout, g.Cout, cols.raw(), K, dw.buf.raw(), K,
                            p0 == 0 ? beta : 1.f),
             DType::F32, A_COLMAJOR, false, 1, s);
  }
  dw.finish(s);
}

void conv2d_backward_input(const OpContext& ctx) {
  const char* op = "conv2d_backward_input";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 2, 1);
  const Tensor& dx0 = ctx.out[0];
  for (const Tensor* t : {&ctx.in[0], &ctx.in[1], &dx0}) need_float(op, "dy, w and dx", *t);
  const Geom g = geom(op, ctx, dx0, ctx.in[1], ctx.in[0]);
  const float beta = (float)ctx.attrs.f("beta", 0.0);
  const OutAs dx(dx0, DType::F32, beta != 0.f, s);
  if (dx0.numel() == 0) return;
  const int64_t K = g.K();
  if (g.P() == 0 || g.Cout == 0) {
    if (beta == 0.f) cudaMemsetAsync(dx.buf.raw(), 0, dx.buf.nbytes(), s);
    dx.finish(s);
    return;
  }
  const Tensor dy = as_dtype(ctx.in[0], DType::F32, s), w = as_dtype(ctx.in[1], DType::F32, s);
  if (g.plain()) {  // dx [P, C] = dy [P, Cout] x w [Cout, C]
    run_gemm(op, f32_params(g.P(), K, g.Cout, dy.raw(), g.Cout, w.raw(), K, dx.buf.raw(), K, beta), DType::F32,
             A_ROWMAJOR, false, 1, s);
    dx.finish(s);
    return;
  }
  const int64_t per_image = g.Ho * g.Wo;
  const int64_t images = std::max<int64_t>(1, std::min<int64_t>(g.N, kChunkFloats / std::max<int64_t>(1, per_image * K)));
  Tensor dcols = empty({images * per_image, K}, DType::F32, Device::CUDA);
  for (int64_t n0 = 0; n0 < g.N; n0 += images) {
    const int64_t ni = std::min(images, g.N - n0);
    run_gemm(op, f32_params(ni * per_image, K, g.Cout, dy.data<float>() + n0 * per_image * g.Cout, g.Cout, w.raw(), K,
                            dcols.raw(), K, 0.f),
             DType::F32, A_ROWMAJOR, false, 1, s);
    col2im_kernel<<<grid_for(ni * g.H * g.W * g.C, 256), 256, 0, s>>>(dcols.data<float>(), dx.buf.data<float>(), n0, ni,
                                                                      g, beta != 0.f);
  }
  dx.finish(s);
}

}  // namespace
}  // namespace cu

void register_conv_backward_cuda(OpRegistry& r) {
  r.add_cuda("conv2d_backward_input", cu::conv2d_backward_input);
  r.add_cuda("conv2d_backward_weight", cu::conv2d_backward_weight);
}

}  // namespace hsd
