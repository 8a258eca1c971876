// conv2d and lora_conv2d on CUDA (OPS.md): implicit GEMM over NHWC activations and OHWI weights.
//
// GEMM view: M = N*Ho*Wo output pixels, N = Cout, K = kh*kw*Cin, with A[m][k] gathered on the fly from the
// image (k = (ky, kx, ci), zero outside the padded border) and B = w viewed as [Cout, K] (row-major, the
// transB layout). The gather lives in the A-staging step of the shared GEMM engine (gemm_core.cuh): for
// Cin % 8 == 0 every 16-byte cp.async chunk holds 8 channels of one pixel and one filter tap, so the
// image is read with the same 3-stage cp.async ring as a plain GEMM and im2col never exists in memory.
// Other channel counts (the 3/4-channel inputs of conv_in) stage with guarded scalar loads. 1x1 and 3x3,
// stride 1 and 2, any padding, through one code path. f16/bf16 on tensor cores (also 16-bit x and w into an f32
// y: f32 stores), f32 on the SIMT kernel.
//
// lora_conv2d (LoCon): t = scale * conv(x, down) into a [M, r] scratch, then the main convolution runs
// a second k segment over t|up (up is 1x1: [Cout, r]) into the same accumulators, as lora_linear does.
// beta=1 accumulates into y (a residual added in the epilogue).
//
// Trade-offs: the per-chunk tap decode (two integer divisions per 16-byte chunk) is cheaper than
// a precomputed offset table for the networks' shapes; no Winograd (exactness and simplicity first).
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills: tc_gemm_kernel<conv> f16/bf16 128 registers, 61440 B dynamic
// shared memory; simt_gemm_kernel<conv> (f32) 163 registers (147-173 on sm_80..89), 16.5 KB shared.
#include <type_traits>

#include "chanstats.cuh"
#include "gemm_core.cuh"

namespace hsd {
namespace cu {
namespace {

// ct: the compute dtype (x's and w's after conv_inputs), out: y's (ct's, or f32 over 16-bit operands).
void run_conv_gemm(const char* op, const GemmParams& p, DType ct, DType out, cudaStream_t s) {
  if (p.M == 0 || p.N == 0) return;
  if (ct == DType::F32) {
    launch_simt_gemm<true>(p, A_CONV, true, 1, s);
    return;
  }
  dispatch_float(op, ct, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same<T, float>::value) {
      if (out == DType::F32) launch_tc_gemm<T, A_CONV, true, false, float>(p, 1, s);
      else launch_tc_gemm<T, A_CONV, true>(p, 1, s);
    }
  });
}

struct ConvArgs {
  Tensor x, w, bias, down, up, y;
  ConvGeom g;
  int64_t N = 0, Cout = 0, r = 0;
  DType ct = DType::F32;  // the compute dtype: x and w (and down, up) in it
};

ConvArgs conv_inputs(const char* op, const OpContext& ctx, bool lora) {
  cudaStream_t s = stream_of(ctx);
  const bool has_bias = ctx.attrs.i("has_bias", (!lora && ctx.in.size() > 2) ? 1 : 0) != 0;
  need_inputs(op, ctx, (has_bias ? 3 : 2) + (lora ? 2 : 0), 1);
  const Tensor& x = ctx.in[0];
  const Tensor& w = ctx.in[1];
  const Tensor& y = ctx.out[0];
  need_float(op, "x", x);
  need_float(op, "w", w);
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  if (x.dim() != 4 || w.dim() != 4 || w.size(3) != x.size(3))
    fail(op, "x [N, H, W, Cin] and w [Cout, kh, kw, Cin] expected, got x " + x.describe() + ", w " + w.describe());
  ConvArgs a;
  ConvGeom& g = a.g;
  const int64_t stride = ctx.attrs.i("stride", 1), pad = ctx.attrs.i("pad", 0);
  if (stride < 1 || pad < 0) fail(op, "stride must be >= 1 and pad >= 0");
  if (ctx.attrs.i("upsample", 0) != 0)
    fail(op, "upsample (the input read as its nearest 2x upsampling) has no CUDA kernel: upsample first");
  a.N = x.size(0);
  a.Cout = w.size(0);
  const int64_t H = x.size(1), W = x.size(2), kh = w.size(1), kw = w.size(2);
  const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  if (H + 2 * pad < kh || W + 2 * pad < kw) fail(op, "kernel larger than the padded input: x " + x.describe() + ", w " + w.describe());
  need_shape(op, "y", y, {a.N, Ho, Wo, a.Cout});
  if (a.N * H * W * x.size(3) > (1LL << 40)) fail(op, "input too large");
  g.H = (int)H;
  g.W = (int)W;
  g.Cin = (int)x.size(3);
  g.kh = (int)kh;
  g.kw = (int)kw;
  g.stride = (int)stride;
  g.pad = (int)pad;
  g.Ho = (int)Ho;
  g.Wo = (int)Wo;
  // The compute dtype: y's, except that conv2d of 16-bit x and w of one dtype into an f32 y runs on the tensor
  // cores with f32 stores instead of widening both onto the f32 SIMT kernel (the products of 16-bit values are
  // exact in f32 either way; conv.grad.ts's input gradient as a forward convolution is such a call).
  DType dt = y.dtype;
  if (!lora && dt == DType::F32 && x.dtype == w.dtype && (x.dtype == DType::F16 || x.dtype == DType::BF16)) dt = x.dtype;
  a.ct = dt;
  a.x = as_dtype(x, dt, s);
  a.w = as_dtype(w, dt, s);
  a.y = y;
  if (has_bias) {
    need_float(op, "bias", ctx.in[2]);
    if (ctx.in[2].numel() != a.Cout) fail(op, "bias must have Cout=" + std::to_string(a.Cout) + " elements, got " + ctx.in[2].describe());
    a.bias = contiguous(ctx.in[2], s);
  }
  if (lora) {
    const Tensor& down = ctx.in[has_bias ? 3 : 2];
    const Tensor& up = ctx.in[has_bias ? 4 : 3];
    need_float(op, "down", down);
    need_float(op, "up", up);
    if (down.dim() != 4 || down.size(1) != kh || down.size(2) != kw || down.size(3) != g.Cin || up.dim() != 2 ||
        up.size(0) != a.Cout || up.size(1) != down.size(0))
      fail(op, "down [r, kh, kw, Cin] and up [Cout, r] expected, got down " + down.describe() + ", up " + up.describe() +
                   " for w " + w.describe());
    a.r = down.size(0);
    a.down = as_dtype(down, dt, s);
    a.up = as_dtype(up, dt, s);
  }
  return a;
}

// es: the size of an operand element (the compute dtype's), es_out: of an output element.
GemmParams conv_params(const ConvArgs& a, const Tensor& w, int64_t cout, void* out, int64_t ldc, size_t es, size_t es_out) {
  GemmParams p;
  p.conv = a.g;
  const int64_t M = a.N * a.g.Ho * a.g.Wo, K = (int64_t)a.g.kh * a.g.kw * a.g.Cin;
  check_gemm_dims("conv2d", M, cout, K, 1);
  p.M = (int)M;
  p.N = (int)cout;
  p.K = (int)K;
  p.A = a.x.raw();
  p.vecA = a.g.Cin % 8 == 0 && aligned16(p.A);
  p.B = w.raw();
  p.ldb = K;
  p.vecB = rows_aligned(p.B, K, 0, es);
  p.C = out;
  p.ldc = ldc;
  p.pairC = pairs_aligned(out, ldc, 0, es_out);
  return p;
}

// conv2d; with a second output, y's channel statistics (chanstats.cuh): from the tensor-core kernel's epilogue
// (one piece per 128-row tile) when every tile lies within one image (Ho Wo % 128 == 0: every SD activation
// from 16x16 up), else read back from y (f32, odd sizes). Never run on a GPU yet (session 22).
void conv2d(const OpContext& ctx) {
  const char* op = "conv2d";
  cudaStream_t s = stream_of(ctx);
  ConvArgs a = conv_inputs(op, ctx, false);
  const Tensor* stats = ctx.out.size() > 1 ? &ctx.out[1] : nullptr;
  if (stats) cs_check(op, "stats (output 1)", *stats, a.N, a.Cout);
  const int64_t HW = (int64_t)a.g.Ho * a.g.Wo;
  if (a.y.numel() == 0) {
    if (stats && stats->numel()) {
      const cudaError_t e = cudaMemsetAsync(stats->raw(), 0, stats->nbytes(), s);
      if (e != cudaSuccess) fail(op, std::string("clearing the stats: ") + cudaGetErrorString(e));
    }
    return;
  }
  const DType dt = a.y.dtype;
  GemmParams p = conv_params(a, a.w, a.Cout, a.y.raw(), a.Cout, dtype_size(a.ct), dtype_size(dt));
  if (a.bias.storage) {
    p.bias = a.bias.raw();
    p.bias_dtype = (int)a.bias.dtype;
  }
  p.beta = (float)ctx.attrs.f("beta", 0.0);
  if (stats && dt != DType::F32 && HW % GEMM_BM == 0) {
    const int64_t tiles = (int64_t)p.M / GEMM_BM;
    Tensor part = empty({tiles, a.Cout, 3}, DType::F32, Device::CUDA);
    p.stats_part = part.data<float>();
    dispatch_float(op, dt, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (!std::is_same<T, float>::value) launch_tc_gemm<T, A_CONV, true, true>(p, 1, s);
    });
    cs_combine(part.data<float>(), a.N, HW / GEMM_BM, GEMM_BM, HW, a.Cout, stats->data<float>(), s);
    return;
  }
  run_conv_gemm(op, p, a.ct, dt, s);
  if (stats) cs_of_rows(a.y, a.N, HW, a.Cout, stats->data<float>(), s);
}

// channel_stats: x [N, S, C] (any float dtype) -> f32 [N, C, 3] (chanstats.cuh).
void channel_stats(const OpContext& ctx) {
  const char* op = "channel_stats";
  need_inputs(op, ctx, 1, 1);
  const Tensor& x0 = ctx.in[0];
  need_float(op, "x", x0);
  if (x0.dim() != 3) fail(op, "x must be [N, S, C], got " + x0.describe());
  cs_check(op, "output", ctx.out[0], x0.size(0), x0.size(2));
  const Tensor x = contiguous(x0, stream_of(ctx));
  cs_of_rows(x, x.size(0), x.size(1), x.size(2), ctx.out[0].data<float>(), stream_of(ctx));
}

void lora_conv2d(const OpContext& ctx) {
  const char* op = "lora_conv2d";
  if (ctx.out.size() > 1) fail(op, "takes one output (y), got " + std::to_string(ctx.out.size()));
  cudaStream_t s = stream_of(ctx);
  ConvArgs a = conv_inputs(op, ctx, true);
  if (a.y.numel() == 0) return;
  const DType dt = a.y.dtype;
  const size_t es = dtype_size(dt);
  const int64_t M = a.N * a.g.Ho * a.g.Wo, r8 = (a.r + 7) / 8 * 8;
  Tensor t = empty({M, r8}, dt, Device::CUDA);
  GemmParams d = conv_params(a, a.down, a.r, t.raw(), r8, es, es);  // t = scale * conv(x, down)
  d.alpha = (float)ctx.attrs.f("scale", 1.0);
  run_conv_gemm(op, d, dt, dt, s);

  GemmParams p = conv_params(a, a.w, a.Cout, a.y.raw(), a.Cout, es, es);
  p.A2 = t.raw();
  p.lda2 = r8;
  p.K2 = (int)a.r;
  p.vecA2 = rows_aligned(p.A2, r8, 0, es);
  p.B2 = a.up.raw();
  p.ldb2 = a.r;
  p.vecB2 = rows_aligned(p.B2, a.r, 0, es);
  if (a.bias.storage) {
    p.bias = a.bias.raw();
    p.bias_dtype = (int)a.bias.dtype;
  }
  p.beta = (float)ctx.attrs.f("beta", 0.0);
  run_conv_gemm(op, p, dt, dt, s);
}

}  // namespace
}  // namespace cu

void register_conv_cuda(OpRegistry& r) {
  r.add_cuda("conv2d", cu::conv2d);
  r.add_cuda("lora_conv2d", cu::lora_conv2d);
  r.add_cuda("channel_stats", cu::channel_stats);
}

}  // namespace hsd
