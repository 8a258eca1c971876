// matmul, lora_linear, lora_linear_batched on CUDA (OPS.md), over the GEMM engine in gemm_core.cuh.
//
// matmul: C = act(alpha op(A) op(B) + bias) + beta C_old, batched over A's leading dims with B shared
// (a weight) or batched alike. A shared B with a row-major A folds the batch into M, so a [B, L, K] x
// [K, N] product is one [B*L, K] GEMM with full tiles. f16/bf16 run on tensor cores (mma.sync, f32
// accumulators); f32 runs the SIMT kernel in exact f32.
//
// lora_linear: y = x W^T + bias + scale (x down^T) up^T in two launches and no merged weight:
//   1. t = scale * x down^T, a thin [rows, r] GEMM into a scratch (rows padded to 8 elements for cp.async),
//      split over K into 2 or 4 slices summed by a small kernel when it would fill too few SMs;
//   2. the main GEMM runs its k loop over x|W and then over t|up, accumulating both into one tile.
// On Hopper (rank <= 64, unbatched) both run in one launch of the TMA kernel: the first column of tiles
// computes t and publishes it per row block (launch_lora_fused in gemm_sm90a.cu).
// lora_linear_batched does the same with a device-side adapter index per batch item (-1: no adapter) and a
// per-item scale, so a batch mixes adapters. Its contract makes an index outside [-1, nA) an error, which a
// kernel can only report through the host: a tiny check kernel and one stream sync per call (a few
// microseconds of pipeline bubble per layer; an attribute saying "checked" would let a caller that validated
// the indices once skip it).
//
// Trade-offs: one 128x128x32 tile shape for every problem (simple; wastes part of a tile on N = 320 or
// on the rank-r scratch GEMM); direct paired stores in the epilogue rather than a shared-memory staged
// one; split-K only for LoRA's thin rank GEMM. On Hopper (compute capability 9.0) run_gemm() hands K-major
// f16/bf16 problems (linear layers, LoRA with r % 8 == 0) to the wgmma kernel in gemm_sm90a.cu (438 against
// 276 TFLOP/s at 4096^3 on an H200, 2026-11-27); mma.sync here is the portable sm_80+ path and the Hopper fallback.
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills in every kernel: tc_gemm_kernel f16/bf16, 4 layouts: 122-128
// registers, 61440 B dynamic shared memory (2 blocks of 8 warps per SM on sm_80/90); simt_gemm_kernel (f32):
// 128 registers, 16.5 KB static shared memory. All four archs (80/86/89/90) compile without spills.
#include <cstdlib>
#include <string>
#include <type_traits>

#include "gemm_core.cuh"

namespace hsd {
namespace cu {

#ifdef HSD_WGMMA
// gemm_sm90a.cu (an sm_90a cubin): wgmma on Hopper
bool wgmma_gemm_eligible(const GemmParams& p, int amode, bool b_nk);
void launch_wgmma_gemm(const GemmParams& p, DType dt, int batch, cudaStream_t s);
bool launch_lora_fused(const GemmParams& p, const void* down, int r, float scale, DType dt, cudaStream_t s);
#endif
void launch_geglu(const Tensor& x, const Tensor& y, cudaStream_t s);  // activation.cu

void run_gemm(const char* op, const GemmParams& p, DType dt, int amode, bool b_nk, int64_t batch, cudaStream_t s) {
  if (p.M == 0 || p.N == 0 || batch == 0) return;
  if (dt == DType::F32) {
    launch_simt_gemm<false>(p, amode, b_nk, (int)batch, s);
    return;
  }
#ifdef HSD_WGMMA
  if ((dt == DType::F16 || dt == DType::BF16) && wgmma_gemm_eligible(p, amode, b_nk)) {
    launch_wgmma_gemm(p, dt, (int)batch, s);
    return;
  }
#endif
  dispatch_float(op, dt, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same<T, float>::value) {
      if (amode == A_ROWMAJOR) {
        if (b_nk) launch_tc_gemm<T, A_ROWMAJOR, true>(p, (int)batch, s);
        else launch_tc_gemm<T, A_ROWMAJOR, false>(p, (int)batch, s);
      } else {
        if (b_nk) launch_tc_gemm<T, A_COLMAJOR, true>(p, (int)batch, s);
        else launch_tc_gemm<T, A_COLMAJOR, false>(p, (int)batch, s);
      }
    }
  });
}

namespace {

int64_t prod(const std::vector<int64_t>& s, size_t b, size_t e) {
  int64_t n = 1;
  for (size_t i = b; i < e; ++i) n *= s[i];
  return n;
}

// y[i] = sum over z < k of x[z n + i], in f32, in a fixed order.
template <class T>
__global__ void __launch_bounds__(256) sum_slices_kernel(const T* __restrict__ x, int k, int64_t n, T* __restrict__ y) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float acc = 0.f;
    for (int z = 0; z < k; ++z) acc += to_f(x[z * n + i]);
    y[i] = from_f<T>(acc);
  }
}

__global__ void __launch_bounds__(256) adapter_check_kernel(const int* __restrict__ idx, int64_t n, int n_adapters,
                                                            unsigned long long* bad) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    if (idx[i] < -1 || idx[i] >= n_adapters) report_bad_index(bad, i);
}

void set_bias(GemmParams& p, const Tensor& bias) {
  p.bias = bias.raw();
  p.bias_dtype = (int)bias.dtype;
}

// Input 2 as the bias of n elements (`what` names n in the error), set into p; the tensor keeps it alive.
Tensor gemm_bias(const char* op, const OpContext& ctx, int64_t n, const std::string& what, GemmParams& p, cudaStream_t s) {
  need_float(op, "bias", ctx.in[2]);
  if (ctx.in[2].numel() != n) fail(op, "bias must have " + what + "=" + std::to_string(n) + " elements, got " + ctx.in[2].describe());
  Tensor bias = contiguous(ctx.in[2], s);
  set_bias(p, bias);
  return bias;
}

// The checks matmul and linear_geglu share: inputs (a, b[, bias]) and one contiguous float output; has_bias.
bool product_io(const char* op, const OpContext& ctx, const char* yname, const char* aname, const char* bname) {
  const bool has_bias = ctx.attrs.i("has_bias", ctx.in.size() > 2 ? 1 : 0) != 0;
  need_inputs(op, ctx, has_bias ? 3 : 2, 1);
  need_float(op, yname, ctx.out[0]);
  need_contiguous_out(op, ctx.out[0]);
  need_float(op, aname, ctx.in[0]);
  need_float(op, bname, ctx.in[1]);
  return has_bias;
}

void matmul(const OpContext& ctx) {
  const char* op = "matmul";
  cudaStream_t s = stream_of(ctx);
  const bool has_bias = product_io(op, ctx, "C", "A", "B");
  const Tensor& y = ctx.out[0];
  const DType dt = y.dtype;
  const bool tA = ctx.attrs.i("transA", 0) != 0, tB = ctx.attrs.i("transB", 0) != 0;
  const Tensor& a0 = ctx.in[0];
  const Tensor& b0 = ctx.in[1];
  if (a0.dim() < 2 || b0.dim() < 2) fail(op, "A and B need rank >= 2, got A " + a0.describe() + ", B " + b0.describe());
  const int64_t M = tA ? a0.size(-1) : a0.size(-2), K = tA ? a0.size(-2) : a0.size(-1);
  const int64_t KB = tB ? b0.size(-1) : b0.size(-2), N = tB ? b0.size(-2) : b0.size(-1);
  const std::string both = "A " + a0.describe() + (tA ? " (transA)" : "") + ", B " + b0.describe() + (tB ? " (transB)" : "");
  if (K != KB) fail(op, "inner dimensions differ: " + both);
  const int64_t batch = prod(a0.shape, 0, a0.shape.size() - 2), bb = prod(b0.shape, 0, b0.shape.size() - 2);
  if (bb != 1 && bb != batch) fail(op, "B's batch must equal A's or be absent: " + both);
  std::vector<int64_t> cs(a0.shape.begin(), a0.shape.end() - 2);
  cs.push_back(M);
  cs.push_back(N);
  need_shape(op, "C", y, cs);
  const int act = (int)ctx.attrs.i("act", 0);
  if (act < 0 || act > 4) fail(op, "act must be 0..4, got " + std::to_string(act));
  if (y.numel() == 0) return;

  const Tensor A = as_dtype(a0, dt, s), B = as_dtype(b0, dt, s);
  const size_t es = dtype_size(dt);
  const bool fold = bb == 1 && !tA;
  const int64_t Mx = fold ? M * batch : M, nb = fold ? 1 : batch;
  check_gemm_dims(op, Mx, N, K, nb);
  GemmParams p = gemm_params(Mx, N, K, A.raw(), tA ? M : K, M * K, B.raw(), tB ? K : N, bb == 1 ? 0 : K * N, y.raw(), N,
                             M * N, es);
  const Tensor bias = has_bias ? gemm_bias(op, ctx, N, "N", p, s) : Tensor();
  p.alpha = (float)ctx.attrs.f("alpha", 1.0);
  p.beta = (float)ctx.attrs.f("beta", 0.0);
  p.act = act;
  run_gemm(op, p, dt, tA ? A_COLMAJOR : A_ROWMAJOR, tB, nb, s);
}

// The two launches of a LoRA linear layer; batched when idx is given (x: [B, L, K]).
struct LoraArgs {
  Tensor x, W, bias, down, up, y, idx, scales;
  int64_t B = 1, L = 0, K = 0, N = 0, r = 0, nA = 1;
  float scale = 1.f;
};

void run_lora(const char* op, const LoraArgs& a, DType dt, cudaStream_t s) {
  const bool batched = a.idx.storage != nullptr;
  const size_t es = dtype_size(dt);
  const int64_t r8 = (a.r + 7) / 8 * 8;
  check_gemm_dims(op, a.L, a.N, a.K, a.B);
  Tensor t = empty({a.B, a.L, r8}, dt, Device::CUDA);

  GemmParams d;  // t = scale * x down^T
  d.M = (int)a.L;
  d.N = (int)a.r;
  d.K = (int)a.K;
  d.A = a.x.raw();
  d.lda = a.K;
  d.sA = a.L * a.K;
  d.vecA = rows_aligned(d.A, d.lda, d.sA, es);
  d.B = a.down.raw();
  d.ldb = a.K;
  d.sB = batched ? a.r * a.K : 0;
  d.vecB = rows_aligned(d.B, d.ldb, a.r * a.K, es);
  d.C = t.raw();
  d.ldc = r8;
  d.sC = a.L * r8;
  d.pairC = true;
  d.alpha = batched ? 1.f : a.scale;
  if (batched) {
    d.idx = a.idx.data<int>();
    d.idx_seg = 1;
    d.n_idx = (int)a.nA;
    d.scales = a.scales.data<float>();
  }
  GemmParams p;  // y = x W^T + bias + t up^T
  p.M = (int)a.L;
  p.N = (int)a.N;
  p.K = (int)a.K;
  p.A = a.x.raw();
  p.lda = a.K;
  p.sA = a.L * a.K;
  p.vecA = d.vecA;
  p.B = a.W.raw();
  p.ldb = a.K;
  p.sB = 0;
  p.vecB = rows_aligned(p.B, p.ldb, 0, es);
  p.A2 = t.raw();
  p.lda2 = r8;
  p.sA2 = a.L * r8;
  p.K2 = (int)a.r;
  p.vecA2 = rows_aligned(p.A2, r8, p.sA2, es);
  p.B2 = a.up.raw();
  p.ldb2 = a.r;
  p.sB2 = batched ? a.N * a.r : 0;
  p.vecB2 = rows_aligned(p.B2, a.r, a.N * a.r, es);
  if (batched) {
    p.idx = d.idx;
    p.idx_seg = 2;
    p.n_idx = (int)a.nA;
  }
  p.C = a.y.raw();
  p.ldc = a.N;
  p.sC = a.L * a.N;
  p.pairC = pairs_aligned(p.C, p.ldc, p.sC, es);
  if (a.bias.storage) set_bias(p, a.bias);

#ifdef HSD_WGMMA
  // Hopper: one launch (t computed by the first column of tiles, gemm_sm90a.cu) when it applies
  if (!batched && a.B == 1 && dt != DType::F32 && d.vecB && wgmma_gemm_eligible(p, A_ROWMAJOR, true) &&
      launch_lora_fused(p, a.down.raw(), (int)a.r, a.scale, dt, s))
    return;
#endif

  // Split-K: the thin GEMM has ceil(L/128) blocks, fewer than half an H100's SMs at L = 8192 (64 blocks, a
  // third of the LoRA layer's time in the first H200 run). Without an adapter index, its K range is cut into
  // `split` slices run as a batch (A and B advance by K/split columns per batch item) into partial
  // tiles of the output dtype, then summed: three more roundings of t, which is stored in that dtype anyway.
  // HYPERSD_LORA_SPLIT=0 turns the split off (a side-by-side comparison in gpu-check: on Hopper the unsplit
  // rank GEMM runs on the TMA kernel, which takes only unbatched problems).
  static const bool split_on = [] {
    const char* e = std::getenv("HYPERSD_LORA_SPLIT");
    return !(e && std::string(e) == "0");
  }();
  int split = 1;
  if (split_on && !batched && dt != DType::F32) {
    const int64_t blocks = (a.L + GEMM_BM - 1) / GEMM_BM * ((a.r + GEMM_BN - 1) / GEMM_BN);
    for (int sp : {4, 2})
      if (blocks < 132 && a.K % (8 * sp) == 0 && a.K / sp >= 128) {  // 132: an H100's SMs
        split = sp;
        break;
      }
  }
  if (split > 1) {
    Tensor part = empty({split, a.L, r8}, dt, Device::CUDA);
    GemmParams q = d;
    q.K = (int)(a.K / split);
    q.sA = a.K / split;  // batch item z reads columns [z K/split, (z+1) K/split) of x and of down
    q.sB = a.K / split;
    q.vecA = rows_aligned(q.A, q.lda, q.sA, es);
    q.vecB = rows_aligned(q.B, q.ldb, q.sB, es);
    q.C = part.raw();
    q.sC = a.L * r8;
    run_gemm(op, q, dt, A_ROWMAJOR, true, split, s);
    dispatch_float(op, dt, [&](auto tag) {
      using T = decltype(tag);
      const int64_t n = a.L * r8;
      sum_slices_kernel<T><<<grid_for(n, 256), 256, 0, s>>>(part.data<T>(), split, n, t.data<T>());
    });
  } else {
    run_gemm(op, d, dt, A_ROWMAJOR, true, a.B, s);
  }

  run_gemm(op, p, dt, A_ROWMAJOR, true, a.B, s);
}

// Reads x, W, [bias], down, up and checks their shapes; batched: down/up carry a leading adapter dim.
LoraArgs lora_inputs(const char* op, const OpContext& ctx, bool batched) {
  cudaStream_t s = stream_of(ctx);
  const bool has_bias = ctx.attrs.i("has_bias", 0) != 0;
  const size_t nin = (has_bias ? 5 : 4) + (batched ? 2 : 0);
  need_inputs(op, ctx, nin, 1);
  const Tensor& x = ctx.in[0];
  const Tensor& W = ctx.in[1];
  const Tensor& down = ctx.in[has_bias ? 3 : 2];
  const Tensor& up = ctx.in[has_bias ? 4 : 3];
  const Tensor& y = ctx.out[0];
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  for (const Tensor* t : {&x, &W, &down, &up}) need_float(op, "an input", *t);
  if (x.dim() < 1 || W.dim() != 2) fail(op, "x [..., K] and W [N, K] expected, got x " + x.describe() + ", W " + W.describe());
  LoraArgs a;
  a.K = x.size(-1);
  a.N = W.size(0);
  const std::string all = "x " + x.describe() + ", W " + W.describe() + ", down " + down.describe() + ", up " + up.describe();
  if (W.size(1) != a.K) fail(op, "W must be [N, K] with K = x's last dim: " + all);
  if (batched) {
    if (x.dim() != 3 || down.dim() != 3 || up.dim() != 3)
      fail(op, "x [B, L, K], down [nA, r, K], up [nA, N, r] expected: " + all);
    a.nA = down.size(0);
    a.r = down.size(1);
    if (down.size(2) != a.K || up.size(0) != a.nA || up.size(1) != a.N || up.size(2) != a.r)
      fail(op, "down [nA, r, K] and up [nA, N, r] do not match: " + all);
    a.B = x.size(0);
    a.L = x.size(1);
  } else {
    if (down.dim() != 2 || up.dim() != 2 || down.size(1) != a.K || up.size(0) != a.N || up.size(1) != down.size(0))
      fail(op, "down [r, K] and up [N, r] do not match: " + all);
    a.r = down.size(0);
    a.B = 1;
    a.L = prod(x.shape, 0, x.shape.size() - 1);
  }
  std::vector<int64_t> ys(x.shape.begin(), x.shape.end() - 1);
  ys.push_back(a.N);
  need_shape(op, "y", y, ys);
  const DType dt = y.dtype;
  a.x = as_dtype(x, dt, s);
  a.W = as_dtype(W, dt, s);
  a.down = as_dtype(down, dt, s);
  a.up = as_dtype(up, dt, s);
  a.y = y;
  if (has_bias) {
    need_float(op, "bias", ctx.in[2]);
    if (ctx.in[2].numel() != a.N) fail(op, "bias must have N=" + std::to_string(a.N) + " elements, got " + ctx.in[2].describe());
    a.bias = contiguous(ctx.in[2], s);
  }
  if (batched) {
    const Tensor& idx = ctx.in[nin - 2];
    const Tensor& sc = ctx.in[nin - 1];
    if ((idx.dtype != DType::I32 && idx.dtype != DType::I64) || idx.numel() != a.B)
      fail(op, "idx must be i32 [B=" + std::to_string(a.B) + "], got " + idx.describe());
    if (!is_float(sc.dtype) || sc.numel() != a.B)
      fail(op, "scales must be f32 [B=" + std::to_string(a.B) + "], got " + sc.describe());
    a.idx = as_dtype(idx, DType::I32, s);
    a.scales = as_dtype(sc, DType::F32, s);
    if (a.B > 0) {  // the CPU kernel's contract: an index outside [-1, nA) fails the op (costs one stream sync)
      const Tensor word = bad_index_word(op, s);
      adapter_check_kernel<<<grid_for(a.B, 256), 256, 0, s>>>(a.idx.data<int>(), a.B, (int)a.nA,
                                                             (unsigned long long*)word.raw());
      const int64_t b = first_bad_index(op, word, s);
      if (b >= 0)
        fail(op, "idx[" + std::to_string(b) + "] = " + std::to_string(read_index(op, a.idx, b, s)) + " is outside [-1, " +
                     std::to_string(a.nA) + ")");
    }
  } else {
    a.scale = (float)ctx.attrs.f("scale", 1.0);
  }
  return a;
}

void lora_linear(const OpContext& ctx) {
  LoraArgs a = lora_inputs("lora_linear", ctx, false);
  if (a.y.numel() == 0) return;
  run_lora("lora_linear", a, a.y.dtype, stream_of(ctx));
}

void lora_linear_batched(const OpContext& ctx) {
  LoraArgs a = lora_inputs("lora_linear_batched", ctx, true);
  if (a.y.numel() == 0) return;
  run_lora("lora_linear_batched", a, a.y.dtype, stream_of(ctx));
}

// linear_geglu: y = geglu(x W^T + bias), W = [W_value; W_gate] [2 inner, K]. Two launches, the same kernels as
// matmul + geglu (so the same bits): the GEMM into a [M, 2 inner] scratch in y's dtype, then the geglu kernel.
// (The CPU fuses the two through interleaved B panels; here the UNet is launch-bound, not bound by this traffic.)
void linear_geglu(const OpContext& ctx) {
  const char* op = "linear_geglu";
  cudaStream_t s = stream_of(ctx);
  const bool has_bias = product_io(op, ctx, "y", "x", "w");
  const Tensor& y = ctx.out[0];
  const Tensor& x0 = ctx.in[0];
  const Tensor& w0 = ctx.in[1];
  if (x0.dim() < 1 || w0.dim() != 2 || w0.size(1) != x0.size(-1) || w0.size(0) % 2 != 0)
    fail(op, "x " + x0.describe() + " and w " + w0.describe() + " must be [..., K] and [2 inner, K]");
  const int64_t K = x0.size(-1), N2 = w0.size(0), inner = N2 / 2, M = K ? x0.numel() / K : 0;
  std::vector<int64_t> ys(x0.shape.begin(), x0.shape.end() - 1);
  ys.push_back(inner);
  need_shape(op, "y", y, ys);
  if (y.numel() == 0) return;
  if (K == 0) fail(op, "K = 0");
  const DType dt = y.dtype;
  const Tensor A = as_dtype(x0, dt, s), B = as_dtype(w0, dt, s);
  const Tensor t = empty({M, N2}, dt, Device::CUDA);
  const size_t es = dtype_size(dt);
  check_gemm_dims(op, M, N2, K, 1);
  GemmParams p = gemm_params(M, N2, K, A.raw(), K, M * K, B.raw(), K, 0, t.raw(), N2, M * N2, es);
  const Tensor bias = has_bias ? gemm_bias(op, ctx, N2, "2 inner", p, s) : Tensor();
  run_gemm(op, p, dt, A_ROWMAJOR, true, 1, s);
  launch_geglu(t, y, s);
}

}  // namespace
}  // namespace cu

void register_gemm_cuda(OpRegistry& r) {
  r.add_cuda("linear_geglu", cu::linear_geglu);
  r.add_cuda("matmul", cu::matmul);
  r.add_cuda("lora_linear", cu::lora_linear);
  r.add_cuda("lora_linear_batched", cu::lora_linear_batched);
}

}  // namespace hsd
