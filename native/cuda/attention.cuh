// The parameters the attention kernels share (attention.cu, and the Hopper kernel in attention_sm90a.cu).
#pragma once
#include <cstdint>

#include "common.cuh"

namespace hsd {
namespace cu {

struct AttnParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;
  int B, H, Lq, Lk, D, Dv;
  int64_t ldq, ldk, ldv, ldo;  // row strides: H*D, H*D, H*Dv, H*Dv
  float scale_log2;            // scale * log2(e)
  int causal;
};

constexpr float kLn2 = 0.69314718055994531f;

// Number of key tiles a block of queries [q0, q0 + rows) needs (causal: up to its last query's diagonal).
__device__ __forceinline__ int kv_tiles(const AttnParams& p, int q0, int rows, int tile) {
  int n = (p.Lk + tile - 1) / tile;
  if (p.causal) {
    const int last = min(q0 + rows, p.Lq) - 1;
    n = min(n, last / tile + 1);
  }
  return n;
}

// attention_sm90a.cu (an sm_90a cubin; declared only when the build has it): flash attention on wgmma for
// f16/bf16 head dims up to 64; false when it does not take the problem (the caller runs the mma.sync kernel).
bool launch_attention_wgmma(const AttnParams& p, bool bf16, cudaStream_t s);

}  // namespace cu
}  // namespace hsd
