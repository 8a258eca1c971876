#include "hypersd/ops.h"
namespace hsd {
void register_random_cpu(OpRegistry&) {}
}  // namespace hsd
