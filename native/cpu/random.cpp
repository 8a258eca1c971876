// rand: fills y (f32; the engine narrows into f16/bf16 outputs) with Philox4x32-10 numbers, element i taking
// hsd::philox::element(seed, offset, i, normal): N(0, 1) when `normal`, else U[0, 1). Every element is a pure
// function of (seed, offset, i), so the threads split the range freely and the CUDA kernel gives the same
// bits. This file is compiled with -ffp-contract=off (CMakeLists.txt) so that the compiler fuses nothing
// beyond the explicit fmaf calls in philox.h. Work is split by 4-element groups so each Philox block and each
// Box-Muller pair is computed once (philox::block4 gives exactly element()'s values).
#include <string>

#include "hypersd/ops.h"
#include "hypersd/philox.h"

namespace hsd {
namespace {

void rand_kernel(const OpContext& c) {
  const Tensor& y = c.out.at(0);
  if (y.dtype != DType::F32) throw Error("rand: output must be f32 here, got " + y.describe());
  double seed_d = c.attrs.f("seed"), offset_d = c.attrs.f("offset", 0.0);
  if (seed_d < 0 || offset_d < 0) throw Error("rand: seed and offset must be non-negative");
  uint64_t seed = (uint64_t)seed_d, offset = (uint64_t)offset_d;
  int normal = c.attrs.i("normal", 1) != 0;
  float* p = y.data<float>();
  int64_t n = y.numel(), groups = (n + 3) / 4;
  c.pool->parallel_for(groups, 1 << 10, [&](int64_t b, int64_t e) {
    float v[4];
    for (int64_t g = b; g < e; ++g) {
      philox::block4(seed, offset, (uint64_t)g, normal, v);
      int64_t i0 = g * 4;
      for (int k = 0; k < 4 && i0 + k < n; ++k) p[i0 + k] = v[k];
    }
  });
}

}  // namespace

void register_random_cpu(OpRegistry& r) { r.add_cpu("rand", rand_kernel); }
}  // namespace hsd
