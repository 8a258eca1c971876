// Flat elementwise kernels shared by activation.cu and elementwise.cu: y[i] = f(x0[i], ..., x{NIN-1}[i])
// over same-shaped contiguous tensors, computed in f32. Grid-stride loop; 16-byte vectors (8 elements)
// when every pointer is 16-byte aligned, scalar for the tail. The functor is a plain struct with
// `__device__ float operator()(const float* v) const` (no extended lambdas needed).
#pragma once
#include "common.cuh"

namespace hsd {
namespace cu {

template <class T, int NIN>
struct FlatIO {
  const T* in[NIN > 0 ? NIN : 1];
  T* out;
};

template <class T, int NIN, class F, bool VEC>
__global__ void __launch_bounds__(256) flat_kernel(FlatIO<T, NIN> io, int64_t n, F f) {
  constexpr int NA = NIN > 0 ? NIN : 1;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x, i0 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t done = 0;
  if constexpr (VEC) {
    const int64_t nv = n / 8;
    for (int64_t i = i0; i < nv; i += stride) {
      float v[NA][8], r[8];
#pragma unroll
      for (int k = 0; k < NIN; ++k) Vec8<T>::load(io.in[k] + i * 8, v[k]);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        float a[NA];
#pragma unroll
        for (int k = 0; k < NIN; ++k) a[k] = v[k][e];
        r[e] = f(a);
      }
      Vec8<T>::store(io.out + i * 8, r);
    }
    done = nv * 8;
  }
  for (int64_t i = done + i0; i < n; i += stride) {
    float a[NA];
#pragma unroll
    for (int k = 0; k < NIN; ++k) a[k] = to_f(io.in[k][i]);
    io.out[i] = from_f<T>(f(a));
  }
}

// Runs f over inputs (converted to y's dtype when they differ, made contiguous) into y.
template <int NIN, class F>
void launch_flat(const char* op, const std::vector<Tensor>& inputs, const Tensor& y, F f, cudaStream_t s) {
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  const int64_t n = y.numel();
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) {
    need_float(op, "an input", t);
    if (t.numel() != n) fail(op, "input " + t.describe() + " and output " + y.describe() + " differ in size");
    xs.push_back(as_dtype(t, y.dtype, s));
  }
  if (n == 0) return;
  bool vec = aligned16(y.raw());
  for (const Tensor& t : xs) vec = vec && aligned16(t.raw());
  dispatch_float(op, y.dtype, [&](auto tag) {
    using T = decltype(tag);
    FlatIO<T, NIN> io;
    for (int k = 0; k < NIN; ++k) io.in[k] = xs[k].template data<T>();
    io.out = y.data<T>();
    if (vec) flat_kernel<T, NIN, F, true><<<grid_for(n / 8 + 1, 256), 256, 0, s>>>(io, n, f);
    else flat_kernel<T, NIN, F, false><<<grid_for(n, 256), 256, 0, s>>>(io, n, f);
  });
}

}  // namespace cu
}  // namespace hsd
