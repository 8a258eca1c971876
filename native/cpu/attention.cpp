#include "hypersd/ops.h"
namespace hsd {
void register_attention_cpu(OpRegistry&) {}
}  // namespace hsd
