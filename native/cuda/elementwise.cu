// add, sub, mul, div (numpy broadcasting), affine, clamp, clamp_backward, scheduler_step, fill on CUDA (OPS.md).
//
// Binary ops: the host aligns a and b to y's shape (right-aligned, size-1 dims repeat with stride 0) and
// merges adjacent dims that stay contiguous for both operands, so the usual cases collapse: same shape ->
// one flat dim (flat.cuh's vectorised kernel), bias over channels -> [rows, C] with b's row stride 0, a
// per-sample scale -> [N, rest] with stride 0 inside. Two merged dims of whole 8-element rows run
// binary_rows_kernel (16-byte vectors, one value a row for an operand of inner stride 0); what is left runs
// one kernel that decodes the merged index (a division per remaining dim). Inputs of another float dtype are
// converted to y's first.
// scheduler_step is the one fused sampler update: y = a x + b eps (+ c noise), one read of each input.
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills: flat kernels 12-40, binary_bcast 40, binary_rows 21-38, fill 24
// registers.
#include <cmath>
#include <limits>

#include "flat.cuh"

namespace hsd {
namespace cu {
namespace {

enum BinOp : int { OP_ADD = 0, OP_SUB = 1, OP_MUL = 2, OP_DIV = 3 };

template <int OP>
__device__ __forceinline__ float binop(float a, float b) {
  if (OP == OP_ADD) return a + b;
  if (OP == OP_SUB) return a - b;
  if (OP == OP_MUL) return a * b;
  return a / b;
}

template <int OP>
struct BinF {
  __device__ float operator()(const float* v) const { return binop<OP>(v[0], v[1]); }
};

constexpr int MAXR = 8;
struct Bcast {
  int rank;
  int64_t shape[MAXR], sa[MAXR], sb[MAXR];
};

template <class T, int OP>
__global__ void __launch_bounds__(256) binary_bcast_kernel(const T* a, const T* b, T* y, int64_t n, Bcast bc) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = i, oa = 0, ob = 0;
    for (int d = bc.rank - 1; d >= 0; --d) {
      const int64_t sz = bc.shape[d], q = rem / sz, c = rem - q * sz;
      rem = q;
      oa += c * bc.sa[d];
      ob += c * bc.sb[d];
    }
    y[i] = from_f<T>(binop<OP>(to_f(a[oa]), to_f(b[ob])));
  }
}

// Two merged dims [R, C] with C % 8 == 0, 8 outputs a thread (16-byte stores): an operand with inner stride 1
// (VEC) is read as 16-byte vectors at r * s0 + c, one with inner stride 0 is one value per row broadcast to the
// eight. Covers a bias over channels (b: s0 = 0) and a per-row scale (b: inner stride 0); the general kernel
// above decodes two 64-bit divisions per element ([52428, 1280] + [1280] f16 ran at 15% of the copy bandwidth
// on an H200).
template <class T, int OP, bool AV, bool BV>
__global__ void __launch_bounds__(256) binary_rows_kernel(const T* a, const T* b, T* y, int64_t R, int64_t C8,
                                                          int64_t sa0, int64_t sb0) {
  const int64_t n8 = R * C8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / C8, c = (i - r * C8) * 8;
    float va[8], vb[8];
    if constexpr (AV) Vec8<T>::load(a + r * sa0 + c, va);
    else {
      const float v = to_f(a[r * sa0]);
#pragma unroll
      for (int k = 0; k < 8; ++k) va[k] = v;
    }
    if constexpr (BV) Vec8<T>::load(b + r * sb0 + c, vb);
    else {
      const float v = to_f(b[r * sb0]);
#pragma unroll
      for (int k = 0; k < 8; ++k) vb[k] = v;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) va[k] = binop<OP>(va[k], vb[k]);
    Vec8<T>::store(y + i * 8, va);
  }
}

// Strides of t broadcast to shape ys (right-aligned; 0 on repeated dims). Throws on a mismatch.
std::vector<int64_t> bcast_strides(const char* op, const Tensor& t, const std::vector<int64_t>& ys, const Tensor& other) {
  const size_t R = ys.size();
  if (t.shape.size() > R) fail(op, "input " + t.describe() + " has more dims than the output " + shape_str(ys));
  std::vector<int64_t> st(R, 0);
  const std::vector<int64_t> cs = contiguous_strides(t.shape);
  const size_t off = R - t.shape.size();
  for (size_t i = 0; i < t.shape.size(); ++i) {
    const int64_t s = t.shape[i], y = ys[off + i];
    if (s == y) st[off + i] = s == 1 ? 0 : cs[i];
    else if (s == 1) st[off + i] = 0;
    else fail(op, "cannot broadcast " + t.describe() + " and " + other.describe() + " to " + shape_str(ys));
  }
  return st;
}

template <int OP>
void binary(const char* op, const OpContext& ctx) {
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 2, 1);
  const Tensor& y = ctx.out[0];
  need_float(op, "a", ctx.in[0]);
  need_float(op, "b", ctx.in[1]);
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  const std::vector<int64_t>& ys = y.shape;
  std::vector<int64_t> sa = bcast_strides(op, ctx.in[0], ys, ctx.in[1]), sb = bcast_strides(op, ctx.in[1], ys, ctx.in[0]);
  const int64_t n = y.numel();
  if (n == 0) return;
  // Merge dims (outer into inner) where both operands continue contiguously; drop size-1 dims.
  std::vector<int64_t> shp, va, vb;  // innermost first while building
  for (size_t k = ys.size(); k-- > 0;) {
    if (ys[k] == 1) continue;
    if (!shp.empty() && sa[k] == va.back() * shp.back() && sb[k] == vb.back() * shp.back()) {
      shp.back() *= ys[k];
      continue;
    }
    shp.push_back(ys[k]);
    va.push_back(sa[k]);
    vb.push_back(sb[k]);
  }
  if (shp.empty()) {  // all dims are 1
    shp.push_back(1);
    va.push_back(1);
    vb.push_back(1);
  }
  const Tensor a = as_dtype(ctx.in[0], y.dtype, s), b = as_dtype(ctx.in[1], y.dtype, s);
  if (shp.size() == 1 && va[0] == 1 && vb[0] == 1) {
    launch_flat<2>(op, {a, b}, y, BinF<OP>{}, s);
    return;
  }
  // [R, C] (innermost first here: shp[0] = C), each operand's inner stride 0 (one value a row) or 1 (16-byte
  // vectors: row stride and pointer aligned to 8 elements)
  auto rows_ok = [](int64_t inner, int64_t outer, const Tensor& t) {
    return inner == 0 || (inner == 1 && outer % 8 == 0 && aligned16(t.raw()));
  };
  if (shp.size() == 2 && shp[0] % 8 == 0 && (va[0] || vb[0]) && rows_ok(va[0], va[1], a) && rows_ok(vb[0], vb[1], b) &&
      aligned16(y.raw())) {
    const int64_t R = shp[1], C8 = shp[0] / 8;
    dispatch_float(op, y.dtype, [&](auto tag) {
      using T = decltype(tag);
      const unsigned g = grid_for(R * C8, 256);
      if (va[0] && vb[0])
        binary_rows_kernel<T, OP, true, true><<<g, 256, 0, s>>>(a.data<T>(), b.data<T>(), y.data<T>(), R, C8, va[1], vb[1]);
      else if (va[0])
        binary_rows_kernel<T, OP, true, false><<<g, 256, 0, s>>>(a.data<T>(), b.data<T>(), y.data<T>(), R, C8, va[1], vb[1]);
      else
        binary_rows_kernel<T, OP, false, true><<<g, 256, 0, s>>>(a.data<T>(), b.data<T>(), y.data<T>(), R, C8, va[1], vb[1]);
    });
    return;
  }
  if (shp.size() > (size_t)MAXR) fail(op, "broadcast too complex (more than 8 dims after merging) for " + y.describe());
  Bcast bc;
  bc.rank = (int)shp.size();
  for (int d = 0; d < bc.rank; ++d) {  // back to outermost first
    bc.shape[d] = shp[bc.rank - 1 - d];
    bc.sa[d] = va[bc.rank - 1 - d];
    bc.sb[d] = vb[bc.rank - 1 - d];
  }
  dispatch_float(op, y.dtype, [&](auto tag) {
    using T = decltype(tag);
    binary_bcast_kernel<T, OP><<<grid_for(n, 256), 256, 0, s>>>(a.data<T>(), b.data<T>(), y.data<T>(), n, bc);
  });
}

void add(const OpContext& ctx) { binary<OP_ADD>("add", ctx); }
void sub(const OpContext& ctx) { binary<OP_SUB>("sub", ctx); }
void mul(const OpContext& ctx) { binary<OP_MUL>("mul", ctx); }
void div(const OpContext& ctx) { binary<OP_DIV>("div", ctx); }

// ---------------------------------------------------------------- affine, clamp, scheduler_step

struct AffineF {
  float a, b;
  __device__ float operator()(const float* v) const { return a * v[0] + b; }
};
struct ClampF {
  float lo, hi;
  __device__ float operator()(const float* v) const { return v[0] < lo ? lo : (v[0] > hi ? hi : v[0]); }
};
struct Step2F {
  float a, b;
  // __fmul_rn/__fadd_rn: never contracted into an fma, so the result is the CPU's left-to-right float32 bit for bit
  __device__ float operator()(const float* v) const { return __fadd_rn(__fmul_rn(a, v[0]), __fmul_rn(b, v[1])); }
};
struct Step3F {
  float a, b, c;
  __device__ float operator()(const float* v) const {
    return __fadd_rn(__fadd_rn(__fmul_rn(a, v[0]), __fmul_rn(b, v[1])), __fmul_rn(c, v[2]));
  }
};

void affine(const OpContext& ctx) {
  need_inputs("affine", ctx, 1, 1);
  need_shape("affine", "y", ctx.out[0], ctx.in[0].shape);
  AffineF f{(float)ctx.attrs.f("a", 1.0), (float)ctx.attrs.f("b", 0.0)};
  launch_flat<1>("affine", {ctx.in[0]}, ctx.out[0], f, stream_of(ctx));
}

void clamp(const OpContext& ctx) {
  need_inputs("clamp", ctx, 1, 1);
  need_shape("clamp", "y", ctx.out[0], ctx.in[0].shape);
  const double inf = std::numeric_limits<double>::infinity();
  ClampF f{(float)ctx.attrs.f("min", -inf), (float)ctx.attrs.f("max", inf)};
  launch_flat<1>("clamp", {ctx.in[0]}, ctx.out[0], f, stream_of(ctx));
}

void scheduler_step(const OpContext& ctx) {
  const char* op = "scheduler_step";
  need_inputs(op, ctx, 2, 1);
  const Tensor& y = ctx.out[0];
  for (size_t i = 0; i < ctx.in.size() && i < 3; ++i) need_shape(op, i == 0 ? "x" : i == 1 ? "eps" : "noise", ctx.in[i], y.shape);
  const float a = (float)ctx.attrs.f("a", 1.0), b = (float)ctx.attrs.f("b", 0.0), c = (float)ctx.attrs.f("c", 0.0);
  if (ctx.in.size() > 2) launch_flat<3>(op, {ctx.in[0], ctx.in[1], ctx.in[2]}, y, Step3F{a, b, c}, stream_of(ctx));
  else launch_flat<2>(op, {ctx.in[0], ctx.in[1]}, y, Step2F{a, b}, stream_of(ctx));
}

// clamp_backward: x, dy -> dx = dy where min <= x <= max, else 0 (the boundary passes the gradient).
struct ClampBackF {
  float lo, hi;
  __device__ float operator()(const float* v) const { return v[0] >= lo && v[0] <= hi ? v[1] : 0.f; }
};

void clamp_backward(const OpContext& ctx) {
  const char* op = "clamp_backward";
  need_inputs(op, ctx, 2, 1);
  need_shape(op, "dy", ctx.in[1], ctx.in[0].shape);
  need_shape(op, "dx", ctx.out[0], ctx.in[0].shape);
  const double inf = std::numeric_limits<double>::infinity();
  ClampBackF f{(float)ctx.attrs.f("min", -inf), (float)ctx.attrs.f("max", inf)};
  launch_flat<2>(op, {ctx.in[0], ctx.in[1]}, ctx.out[0], f, stream_of(ctx));
}

// ---------------------------------------------------------------- fill

template <class T>
__global__ void __launch_bounds__(256) fill_kernel(T* y, int64_t n, T v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] = v;
}

template <class T>
void launch_fill(const Tensor& y, T v, cudaStream_t s) {
  const int64_t n = y.numel();
  if (n) fill_kernel<T><<<grid_for(n, 256), 256, 0, s>>>(y.data<T>(), n, v);
}

void fill(const OpContext& ctx) {
  const char* op = "fill";
  need_inputs(op, ctx, 0, 1);
  const Tensor& y = ctx.out[0];
  need_contiguous_out(op, y);
  const double v = ctx.attrs.f("value", 0.0);
  cudaStream_t s = stream_of(ctx);
  const float f = (float)v;
  switch (y.dtype) {
    case DType::F32: launch_fill<float>(y, f, s); break;
    case DType::F16: launch_fill<uint16_t>(y, float_to_half(f), s); break;
    case DType::BF16: launch_fill<uint16_t>(y, float_to_bf16(f), s); break;
    case DType::I32: launch_fill<int32_t>(y, (int32_t)v, s); break;
    case DType::I64: launch_fill<int64_t>(y, (int64_t)v, s); break;
  }
}

}  // namespace
}  // namespace cu

void register_elementwise_cuda(OpRegistry& r) {
  r.add_cuda("add", cu::add);
  r.add_cuda("sub", cu::sub);
  r.add_cuda("mul", cu::mul);
  r.add_cuda("div", cu::div);
  r.add_cuda("affine", cu::affine);
  r.add_cuda("clamp", cu::clamp);
  r.add_cuda("clamp_backward", cu::clamp_backward);
  r.add_cuda("scheduler_step", cu::scheduler_step);
  r.add_cuda("fill", cu::fill);
}

}  // namespace hsd
