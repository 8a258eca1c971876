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

// The flash kernels' accumulators use mma.sync's m16n8 layout per warp (wgmma's is the same per warp): for a
// 16-row m tile, s[n][e] holds row qrow + 8 (e >> 1) and column 8 n + 2 t + (e & 1) (t = lane % 4), so a row's
// values are spread over the 4 lanes of a quad.
//
// exp2_ftz (common.cuh): 2^x with results below 2^-126 flushed to zero. A probability that small against the row
// maximum's 1 is below every rounding of the sums, so the softmax loses nothing by it.

// The m16n8 accumulators of two adjacent n tiles (columns 16 kk .. 16 kk + 15) repacked as the m16k16 A fragment
// of those columns (the C layout of the pair is the A layout): how P and dS feed the next product.
template <class T>
__device__ __forceinline__ void acc_to_a(const float (&c0)[4], const float (&c1)[4], uint32_t (&a)[4]) {
  a[0] = pack2<T>(c0[0], c0[1]);
  a[1] = pack2<T>(c0[2], c0[3]);
  a[2] = pack2<T>(c1[0], c1[1]);
  a[3] = pack2<T>(c1[2], c1[3]);
}

// One key tile's online-softmax step for one m tile: s (the logits of keys key0..) scaled to the log2 domain
// and, when `masked`, masked (keys past Lk; causal: keys past the row), then replaced by the unnormalised
// probabilities; the running maxima and sums updated and the O accumulators rescaled. The unmasked copy of the
// first loop keeps tiles inside the bounds free of the mask's integer work.
template <int NT, int NO>
__device__ __forceinline__ void softmax_tile(float (&s)[NT][4], float (&o)[NO][4], float (&m_run)[2], float (&l_run)[2],
                                             float scale_log2, int Lk, bool causal, bool masked, int key0, int qrow,
                                             int t) {
  float mx[2] = {-INFINITY, -INFINITY};
  if (masked) {
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + n * 8 + 2 * t + (e & 1), qr = qrow + (e >> 1) * 8;
        float x = s[n][e] * scale_log2;
        if (key >= Lk || (causal && key > qr)) x = -INFINITY;
        s[n][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
  } else {
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float x = s[n][e] * scale_log2;
        s[n][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
  }
  float base[2], corr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    const float m_new = fmaxf(m_run[r], mx[r]);
    base[r] = m_new == -INFINITY ? 0.f : m_new;  // a fully masked row so far: every p is 0, no NaN
    corr[r] = exp2_ftz(m_run[r] - base[r]);
    m_run[r] = m_new;
  }
  float rs[2] = {0.f, 0.f};
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float pv = exp2_ftz(s[n][e] - base[e >> 1]);
      s[n][e] = pv;
      rs[e >> 1] += pv;
    }
#pragma unroll
  for (int r = 0; r < 2; ++r) l_run[r] = l_run[r] * corr[r] + rs[r];
#pragma unroll
  for (int n = 0; n < NO; ++n) {
    o[n][0] *= corr[0];
    o[n][1] *= corr[0];
    o[n][2] *= corr[1];
    o[n][3] *= corr[1];
  }
}

// The end of a flash kernel for one m tile: O divided by the row sums (summed over the quad) into og's rows
// (columns below D), and the natural log-sum-exp into p.lse when asked for.
template <class T, int NO>
__device__ __forceinline__ void store_tile(const AttnParams& p, T* og, const float (&o)[NO][4], const float (&m_run)[2],
                                           const float (&l_run)[2], int b, int h, int qrow, int t) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int qr = qrow + r * 8;
    if (qr >= p.Lq) continue;
    T* orow = og + (int64_t)qr * p.ldo;
#pragma unroll
    for (int n = 0; n < NO; ++n) {
      const int d = n * 8 + 2 * t;
      if (d < p.D) *reinterpret_cast<uint32_t*>(orow + d) = pack2<T>(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
    if (p.lse && t == 0)
      p.lse[((int64_t)b * p.H + h) * p.Lq + qr] = l > 0.f ? (m_run[r] + log2f(l)) * kLn2 : -INFINITY;
  }
}

// attention_sm90a.cu (an sm_90a cubin; declared only when the build has it): flash attention on wgmma for
// f16/bf16 head dims up to 64; false when it does not take the problem (the caller runs the mma.sync kernel).
bool launch_attention_wgmma(const AttnParams& p, bool bf16, cudaStream_t s);

}  // namespace cu
}  // namespace hsd
