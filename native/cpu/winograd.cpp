// The portable copy of the Winograd transforms (see winograd_transforms.h) and the run-time choice.
#define HSD_WINO_NS wino_portable
#include "winograd_transforms.h"

namespace hsd {
namespace wino {

const Fns& portable_fns() {
  static const Fns f = wino_portable::make_fns("portable");
  return f;
}

const Fns& fns() {
  const Fns* a = avx2_fns();
  return a && &gemm::kernels() == gemm::avx2_kernels() ? *a : portable_fns();
}

}  // namespace wino
}  // namespace hsd
