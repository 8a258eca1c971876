// The arguments of the CPU attention forwards (attention.cpp dispatches to the AVX2 / AVX-512 kernels of
// attention_avx2.cpp and, with bf16 math, to attention_bf16_avx512.cpp). Layouts as the op: q [B, Lq, H*D],
// k [B, Lk, H*D], v [B, Lk, H*Dv], o [B, Lq, H*Dv], lse [B, H, Lq] (natural log) or null.
#pragma once
#include <cstdint>

#include "hypersd/ops.h"

namespace hsd {

struct AttnFwdArgs {
  const float *q, *k, *v;
  float* o;
  float* lse;  // may be null
  int64_t B, Lq, Lk, H, D, Dv;
  float scale;
  bool causal;
};
void attention_forward_avx2(const AttnFwdArgs& a, ThreadPool* pool);
void attention_forward_avx512(const AttnFwdArgs& a, ThreadPool* pool);  // the same source, AVX-512 logits
// bf16 products (HYPERSD_CPU_MATH=bf16, AVX512_BF16): false, doing nothing, where it does not apply.
bool attention_forward_bf16(const AttnFwdArgs& a, ThreadPool* pool);

}  // namespace hsd
