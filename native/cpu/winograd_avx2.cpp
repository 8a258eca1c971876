// The AVX2 + FMA copy of the Winograd transforms (winograd_transforms.h), compiled with -mavx2 -mfma;
// wino::fns() picks it when the GEMM engine runs its AVX2 kernels (the CPU has them).
#include "winograd.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#define HSD_WINO_NS wino_avx2
#include "winograd_transforms.h"

namespace hsd {
namespace wino {
const Fns* avx2_fns() {
  static const Fns f = wino_avx2::make_fns("avx2");
  return &f;
}
}  // namespace wino
}  // namespace hsd

#else

namespace hsd {
namespace wino {
const Fns* avx2_fns() { return nullptr; }
}  // namespace wino
}  // namespace hsd

#endif
