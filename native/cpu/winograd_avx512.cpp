// The AVX-512 copy of the Winograd transforms (winograd_transforms.h), compiled with -mavx512f and a preferred
// vector width of 512 bits, so GCC vectorises the transforms' channel loops 16 floats wide; wino::fns() picks it
// when the GEMM engine runs its AVX-512 micro-kernels (the CPU has them).
#include "winograd.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#define HSD_WINO_NS wino_avx512
#include "winograd_transforms.h"

namespace hsd {
namespace wino {
const Fns* avx512_fns() {
  static const Fns f = wino_avx512::make_fns("avx512");
  return &f;
}
}  // namespace wino
}  // namespace hsd

#else

namespace hsd {
namespace wino {
const Fns* avx512_fns() { return nullptr; }
}  // namespace wino
}  // namespace hsd

#endif
