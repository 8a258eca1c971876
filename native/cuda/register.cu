// The CUDA half of the op table: every family registers its kernels here (replaces the empty
// register_cuda_kernels of native/core/device_cuda.cpp when the build has HSD_CUDA_KERNELS).
#include "common.cuh"

namespace hsd {

void register_cuda_kernels(OpRegistry& r) {
  register_gemm_cuda(r);
  register_conv_cuda(r);
  register_attention_cuda(r);
  register_norm_cuda(r);
  register_activation_cuda(r);
  register_elementwise_cuda(r);
  register_shape_cuda(r);
  register_embedding_cuda(r);
  register_random_cuda(r);
  register_unary_cuda(r);
  register_optim_cuda(r);
  register_conv_backward_cuda(r);
}

}  // namespace hsd
