// Elementwise ops: fill.
#include "hypersd/ops.h"

namespace hsd {
namespace {
void fill_kernel(const OpContext& c) {
  const Tensor& y = c.out.at(0);
  float v = (float)c.attrs.f("value");
  float* p = y.data<float>();
  c.pool->parallel_for(y.numel(), 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = v;
  });
}
}  // namespace

void register_elementwise_cpu(OpRegistry& r) { r.add_cpu("fill", fill_kernel); }
}  // namespace hsd
