// The portable copy of the Winograd transforms (see winograd_transforms.h) and the run-time choice.
#define HSD_WINO_NS wino_portable
#include "winograd_transforms.h"

namespace hsd {
namespace wino {

const Fns& portable_fns() {
  static const Fns f = wino_portable::make_fns("portable");
  return f;
}

// The copy compiled for the GEMM engine's kernel set: AVX-512 with its AVX-512 micro-kernels, AVX2 with its AVX2
// ones, else portable.
const Fns& fns() {
  if (gemm::using_avx512()) {  // (avx512_fns runs AVX-512 code: only on a CPU that has it)
    const Fns* b = avx512_fns();
    if (b) return *b;
  }
  const Fns* a = avx2_fns();
  return a && gemm::using_avx2() ? *a : portable_fns();
}

}  // namespace wino
}  // namespace hsd
