// The CPU op table: one register function per op family (one file each, mirrored in native/cuda).
#include "hypersd/ops.h"

namespace hsd {
void register_gemm_cpu(OpRegistry& r);
void register_conv_cpu(OpRegistry& r);
void register_conv_backward_cpu(OpRegistry& r);
void register_attention_cpu(OpRegistry& r);
void register_norm_cpu(OpRegistry& r);
void register_activation_cpu(OpRegistry& r);
void register_elementwise_cpu(OpRegistry& r);
void register_shape_cpu(OpRegistry& r);
void register_embedding_cpu(OpRegistry& r);
void register_random_cpu(OpRegistry& r);
void register_optim_cpu(OpRegistry& r);
void register_unary_cpu(OpRegistry& r);

void register_cpu_kernels(OpRegistry& r) {
  register_gemm_cpu(r);
  register_conv_cpu(r);
  register_conv_backward_cpu(r);
  register_attention_cpu(r);
  register_norm_cpu(r);
  register_activation_cpu(r);
  register_elementwise_cpu(r);
  register_shape_cpu(r);
  register_embedding_cpu(r);
  register_random_cpu(r);
  register_optim_cpu(r);
  register_unary_cpu(r);
}
}  // namespace hsd
