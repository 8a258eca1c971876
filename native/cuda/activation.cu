// silu, gelu, gelu_tanh, quick_gelu, geglu, softmax and their backwards on CUDA (OPS.md). All in f32 registers with the
// accurate libm functions (expf, erff, tanhf; no fast-math), so f32 results track the CPU to a few ulp.
//
// The pointwise ones share flat.cuh's kernel (8-element vectors when aligned). geglu reads the two halves of
// each row (hidden, gate = chunk(2)) and writes hidden * gelu(gate), one output per thread, vectorised
// when N % 8 == 0. softmax uses one warp per row: a single online pass for (max, sum) per lane, merged
// across the warp with shuffles, then the normalised write; rows of any length, no shared memory.
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills: flat kernels (forward and backward) 16-43, geglu 20-42,
// geglu_backward 22-28, softmax 24-25, softmax_backward 30-32 registers.
#include <cmath>

#include "flat.cuh"

namespace hsd {
namespace cu {
namespace {

struct SiluF {
  __device__ float operator()(const float* v) const { return silu_f(v[0]); }
};
struct GeluF {
  __device__ float operator()(const float* v) const { return gelu_f(v[0]); }
};
struct GeluTanhF {
  __device__ float operator()(const float* v) const { return gelu_tanh_f(v[0]); }
};
struct QuickGeluF {
  __device__ float operator()(const float* v) const { return quick_gelu_f(v[0]); }
};

template <class F>
void unary(const char* op, const OpContext& ctx) {
  need_inputs(op, ctx, 1, 1);
  need_shape(op, "y", ctx.out[0], ctx.in[0].shape);
  launch_flat<1>(op, {ctx.in[0]}, ctx.out[0], F{}, stream_of(ctx));
}

void silu(const OpContext& ctx) { unary<SiluF>("silu", ctx); }
void gelu(const OpContext& ctx) { unary<GeluF>("gelu", ctx); }
void gelu_tanh(const OpContext& ctx) { unary<GeluTanhF>("gelu_tanh", ctx); }
void quick_gelu(const OpContext& ctx) { unary<QuickGeluF>("quick_gelu", ctx); }

// ---------------------------------------------------------------- geglu

template <class T, bool VEC>
__global__ void __launch_bounds__(256) geglu_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t N) {
  constexpr int V = VEC ? 8 : 1;
  const int64_t per_row = N / V, total = rows * per_row;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / per_row, j = (i - r * per_row) * V;
    const T* xr = x + r * 2 * N;
    float h[V], g[V];
    if constexpr (VEC) {
      Vec8<T>::load(xr + j, h);
      Vec8<T>::load(xr + N + j, g);
    } else {
      h[0] = to_f(xr[j]);
      g[0] = to_f(xr[N + j]);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) h[k] *= gelu_f(g[k]);
    if constexpr (VEC) Vec8<T>::store(y + r * N + j, h);
    else y[r * N + j] = from_f<T>(h[0]);
  }
}

void geglu(const OpContext& ctx) {
  const char* op = "geglu";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 1, 1);
  const Tensor& x0 = ctx.in[0];
  const Tensor& y = ctx.out[0];
  need_float(op, "x", x0);
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  if (x0.dim() < 1 || x0.size(-1) % 2 != 0) fail(op, "x's last dim must be even, got " + x0.describe());
  std::vector<int64_t> ys = x0.shape;
  ys.back() /= 2;
  need_shape(op, "y", y, ys);
  if (y.numel() == 0) return;
  const int64_t N = ys.back(), rows = y.numel() / N;
  const Tensor x = as_dtype(x0, y.dtype, s);
  const bool vec = N % 8 == 0 && aligned16(x.raw()) && aligned16(y.raw());
  dispatch_float(op, y.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (vec) geglu_kernel<T, true><<<grid_for(y.numel() / 8, 256), 256, 0, s>>>(x.data<T>(), y.data<T>(), rows, N);
    else geglu_kernel<T, false><<<grid_for(y.numel(), 256), 256, 0, s>>>(x.data<T>(), y.data<T>(), rows, N);
  });
}

}  // namespace

// geglu over x [rows, 2N] -> y [rows, N], both contiguous in T's dtype (linear_geglu's second launch, gemm.cu).
void launch_geglu(const Tensor& x, const Tensor& y, cudaStream_t s) {
  const int64_t N = y.size(-1), rows = N ? y.numel() / N : 0;
  if (rows == 0) return;
  const bool vec = N % 8 == 0 && aligned16(x.raw()) && aligned16(y.raw());
  dispatch_float("linear_geglu", y.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (vec) geglu_kernel<T, true><<<grid_for(y.numel() / 8, 256), 256, 0, s>>>(x.data<T>(), y.data<T>(), rows, N);
    else geglu_kernel<T, false><<<grid_for(y.numel(), 256), 256, 0, s>>>(x.data<T>(), y.data<T>(), rows, N);
  });
}

namespace {

// ---------------------------------------------------------------- softmax

// (m, s) is a partial softmax denominator: s = sum exp(v - m). Merging two keeps the larger max.
__device__ __forceinline__ void merge_ms(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  const float mm = fmaxf(m, m2);
  s = s * expf(m - mm) + s2 * expf(m2 - mm);
  m = mm;
}

template <class T>
__global__ void __launch_bounds__(256) softmax_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t R, int64_t C,
                                                      float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * 8LL + (threadIdx.x >> 5);
  if (row >= R) return;
  const T* xr = x + row * C;
  T* yr = y + row * C;
  float m = -INFINITY, s = 0.f;
  for (int64_t c = lane; c < C; c += 32) {
    const float v = to_f(xr[c]) * scale;
    if (v == -INFINITY) continue;
    if (m == -INFINITY || v > m) {
      s = (m == -INFINITY ? 0.f : s * expf(m - v)) + 1.f;
      m = v;
    } else {
      s += expf(v - m);  // NaN falls through here and propagates
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    merge_ms(m, s, m2, s2);
  }
  const float inv = 1.f / s;
  for (int64_t c = lane; c < C; c += 32) yr[c] = from_f<T>(expf(to_f(xr[c]) * scale - m) * inv);
}

void softmax(const OpContext& ctx) {
  const char* op = "softmax";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 1, 1);
  const Tensor& x0 = ctx.in[0];
  const Tensor& y = ctx.out[0];
  need_float(op, "x", x0);
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  if (x0.dim() < 1) fail(op, "x must have rank >= 1, got " + x0.describe());
  need_shape(op, "y", y, x0.shape);
  if (y.numel() == 0) return;
  const int64_t C = x0.size(-1), R = y.numel() / C;
  if ((R + 7) / 8 > 0x7fffffffLL) fail(op, "too many rows");
  const float scale = (float)ctx.attrs.f("scale", 1.0);
  const Tensor x = as_dtype(x0, y.dtype, s);
  dispatch_float(op, y.dtype, [&](auto tag) {
    using T = decltype(tag);
    softmax_kernel<T><<<(unsigned)((R + 7) / 8), 256, 0, s>>>(x.data<T>(), y.data<T>(), R, C, scale);
  });
}

// ---------------------------------------------------------------- backward
// The pointwise backwards take (x, dy) and write dx = dy * f'(x). geglu_backward takes (x, dy) and writes dx
// [..., 2N] (d hidden = dy gelu(gate), d gate = dy hidden gelu'(gate)); softmax_backward takes the forward
// output y and dy: dx = scale * y * (dy - sum(dy * y)) per row. Outputs are normally f32 (OPS.md); inputs
// in another dtype are converted to the output's first.

template <float (*D)(float)>
struct BackF {
  __device__ float operator()(const float* v) const { return v[1] * D(v[0]); }
};

template <float (*D)(float)>
void pointwise_backward(const char* op, const OpContext& ctx) {
  need_inputs(op, ctx, 2, 1);
  need_shape(op, "dy", ctx.in[1], ctx.in[0].shape);
  need_shape(op, "dx", ctx.out[0], ctx.in[0].shape);
  launch_flat<2>(op, {ctx.in[0], ctx.in[1]}, ctx.out[0], BackF<D>{}, stream_of(ctx));
}

void silu_backward(const OpContext& ctx) { pointwise_backward<silu_d>("silu_backward", ctx); }
void gelu_backward(const OpContext& ctx) { pointwise_backward<gelu_d>("gelu_backward", ctx); }
void gelu_tanh_backward(const OpContext& ctx) { pointwise_backward<gelu_tanh_d>("gelu_tanh_backward", ctx); }
void quick_gelu_backward(const OpContext& ctx) { pointwise_backward<quick_gelu_d>("quick_gelu_backward", ctx); }

template <class T>
__global__ void __launch_bounds__(256) geglu_backward_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                                             T* __restrict__ dx, int64_t rows, int64_t N) {
  const int64_t total = rows * N;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / N, j = i - r * N;
    const float h = to_f(x[r * 2 * N + j]), g = to_f(x[r * 2 * N + N + j]), d = to_f(dy[i]);
    dx[r * 2 * N + j] = from_f<T>(d * gelu_f(g));
    dx[r * 2 * N + N + j] = from_f<T>(d * h * gelu_d(g));
  }
}

void geglu_backward(const OpContext& ctx) {
  const char* op = "geglu_backward";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 2, 1);
  const Tensor& dx = ctx.out[0];
  need_float(op, "x", ctx.in[0]);
  need_float(op, "dy", ctx.in[1]);
  need_float(op, "dx", dx);
  need_contiguous_out(op, dx);
  const Tensor& x0 = ctx.in[0];
  if (x0.dim() < 1 || x0.size(-1) % 2 != 0) fail(op, "x's last dim must be even, got " + x0.describe());
  std::vector<int64_t> ds = x0.shape;
  ds.back() /= 2;
  need_shape(op, "dy", ctx.in[1], ds);
  need_shape(op, "dx", dx, x0.shape);
  if (dx.numel() == 0) return;
  const int64_t N = ds.back(), rows = ctx.in[1].numel() / N;
  const Tensor x = as_dtype(x0, dx.dtype, s), dy = as_dtype(ctx.in[1], dx.dtype, s);
  dispatch_float(op, dx.dtype, [&](auto tag) {
    using T = decltype(tag);
    geglu_backward_kernel<T><<<grid_for(rows * N, 256), 256, 0, s>>>(x.data<T>(), dy.data<T>(), dx.data<T>(), rows, N);
  });
}

template <class T>
__global__ void __launch_bounds__(256) softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ dy,
                                                               T* __restrict__ dx, int64_t R, int64_t C, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * 8LL + (threadIdx.x >> 5);
  if (row >= R) return;
  const T* yr = y + row * C;
  const T* dr = dy + row * C;
  float dot = 0.f;
  for (int64_t c = lane; c < C; c += 32) dot = fmaf(to_f(yr[c]), to_f(dr[c]), dot);
  dot = warp_sum(dot);
  for (int64_t c = lane; c < C; c += 32) dx[row * C + c] = from_f<T>(scale * to_f(yr[c]) * (to_f(dr[c]) - dot));
}

void softmax_backward(const OpContext& ctx) {
  const char* op = "softmax_backward";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 2, 1);
  const Tensor& dx = ctx.out[0];
  need_float(op, "y", ctx.in[0]);
  need_float(op, "dy", ctx.in[1]);
  need_float(op, "dx", dx);
  need_contiguous_out(op, dx);
  if (ctx.in[0].dim() < 1) fail(op, "y must have rank >= 1, got " + ctx.in[0].describe());
  need_shape(op, "dy", ctx.in[1], ctx.in[0].shape);
  need_shape(op, "dx", dx, ctx.in[0].shape);
  if (dx.numel() == 0) return;
  const int64_t C = dx.size(-1), R = dx.numel() / C;
  if ((R + 7) / 8 > 0x7fffffffLL) fail(op, "too many rows");
  const Tensor y = as_dtype(ctx.in[0], dx.dtype, s), dy = as_dtype(ctx.in[1], dx.dtype, s);
  const float scale = (float)ctx.attrs.f("scale", 1.0);
  dispatch_float(op, dx.dtype, [&](auto tag) {
    using T = decltype(tag);
    softmax_backward_kernel<T><<<(unsigned)((R + 7) / 8), 256, 0, s>>>(y.data<T>(), dy.data<T>(), dx.data<T>(), R, C, scale);
  });
}

}  // namespace
}  // namespace cu

void register_activation_cuda(OpRegistry& r) {
  r.add_cuda("silu", cu::silu);
  r.add_cuda("gelu", cu::gelu);
  r.add_cuda("gelu_tanh", cu::gelu_tanh);
  r.add_cuda("quick_gelu", cu::quick_gelu);
  r.add_cuda("geglu", cu::geglu);
  r.add_cuda("softmax", cu::softmax);
  r.add_cuda("silu_backward", cu::silu_backward);
  r.add_cuda("gelu_backward", cu::gelu_backward);
  r.add_cuda("gelu_tanh_backward", cu::gelu_tanh_backward);
  r.add_cuda("quick_gelu_backward", cu::quick_gelu_backward);
  r.add_cuda("geglu_backward", cu::geglu_backward);
  r.add_cuda("softmax_backward", cu::softmax_backward);
}

}  // namespace hsd
