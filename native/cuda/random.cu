// rand on CUDA (OPS.md): Philox4x32-10 uniform [0, 1) or normal N(0, 1) numbers, bit-identical to the CPU
// kernel for the same seed and offset, because both take element i from philox.h (element / block4).
//
// Identity needs the same float operations in the same order on both sides: philox.h spells every fused
// multiply-add as fmaf, uses IEEE division and sqrtf, and contains no a*b+c that a compiler could contract
// differently (its only products that feed an addition are exact: scaling by powers of two). nvcc
// contracts by default and has no per-file pragma to stop it; the build should compile this file with
// -fmad=false (a COMPILE_OPTIONS property in CMakeLists.txt) to make that independent of philox.h's
// care, and -use_fast_math must never reach it (it would swap in approximate sqrt and division).
//
// Checked on the PTX (CUDA 13.0, sm_90): with the default -fmad=true nvcc emits the same 78 fma.rn.f32 as with
// -fmad=false (it contracts nothing), and the one mul->sub pair ptxas could still fuse is (t * 4) - k in
// sincos2pi_det, whose product is exact, so fusing it changes no bit.
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills: rand_kernel 26-31 registers.
#include "common.cuh"
#include "hypersd/philox.h"

namespace hsd {
namespace cu {
namespace {

// One thread per 4-element group: philox::block4 gives exactly element()'s values for 4g..4g+3, with one
// Philox block and one Box-Muller pair per two outputs.
template <class T>
__global__ void __launch_bounds__(256) rand_kernel(T* __restrict__ y, int64_t n, uint64_t seed, uint64_t offset,
                                                   int normal) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < groups; g += (int64_t)gridDim.x * blockDim.x) {
    float v[4];
    philox::block4(seed, offset, (uint64_t)g, normal, v);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (4 * g + k < n) y[4 * g + k] = from_f<T>(v[k]);
  }
}

void rand(const OpContext& ctx) {
  const char* op = "rand";
  need_inputs(op, ctx, 0, 1);
  const Tensor& y = ctx.out[0];
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  const int64_t n = y.numel();
  if (n == 0) return;
  const double seed_d = ctx.attrs.f("seed"), offset_d = ctx.attrs.f("offset", 0.0);
  if (seed_d < 0 || offset_d < 0) fail(op, "seed and offset must be non-negative");
  const uint64_t seed = (uint64_t)seed_d, offset = (uint64_t)offset_d;
  const int normal = ctx.attrs.i("normal", 0) != 0;
  cudaStream_t s = stream_of(ctx);
  dispatch_float(op, y.dtype, [&](auto tag) {
    using T = decltype(tag);
    rand_kernel<T><<<grid_for((n + 3) / 4, 256), 256, 0, s>>>(y.data<T>(), n, seed, offset, normal);
  });
}

}  // namespace
}  // namespace cu

void register_random_cuda(OpRegistry& r) { r.add_cuda("rand", cu::rand); }

}  // namespace hsd
