// attention: o = softmax(scale * q k^T [+ causal mask]) v per head, flash-style (no Lq x Lk matrix in memory).
//
// Layout: q [B, Lq, H*D], k [B, Lk, H*D], v [B, Lk, H*Dv], o [B, Lq, H*Dv]: head h reads channels
// h*D .. h*D+D-1 of every row, so the UNet's [B, L, C] activations need no transposes. Optional second output
// lse [B, H, Lq] (f32): log-sum-exp of the scaled logits of each query row, for the backward pass.
// Causal masking is top-left aligned like torch's scaled_dot_product_attention(is_causal=True): query i sees
// keys 0..i (CLIP's text encoder, where Lq == Lk).
//
// Work is split into tasks of (batch, head, block of kBQ query rows), run on the thread pool. Each task walks
// the keys in blocks of kBK with the online softmax: a running row max m and sum l; when a block raises the
// max, the accumulator and l are rescaled by exp(m_old - m_new). The block of K is transposed into a
// [D][kBK] scratch once per (task, block) so the logits loop is "for d: s[0..kBK) += q[d] * kT[d][..]",
// which vectorises without reassociating a reduction; the P V update is "acc[0..Dv) += p_j v_j", also a
// plain vector loop. Scratch per task: kBQ*D + D*kBK + kBK + kBQ*Dv floats.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "hypersd/ops.h"

namespace hsd {
namespace {

constexpr int64_t kBQ = 16;  // query rows per task
constexpr int64_t kBK = 64;  // keys per block

void attention_kernel(const OpContext& c) {
  const Tensor &q = c.in.at(0), &k = c.in.at(1), &v = c.in.at(2), &o = c.out.at(0);
  const Tensor* lse = c.out.size() > 1 ? &c.out[1] : nullptr;
  int64_t H = c.attrs.i("heads");
  if (q.dim() != 3 || k.dim() != 3 || v.dim() != 3 || o.dim() != 3)
    throw Error("attention: q, k, v and o must be [B, L, H*D]");
  int64_t B = q.shape[0], Lq = q.shape[1], Lk = k.shape[1];
  if (H <= 0 || q.shape[2] % H != 0 || v.shape[2] % H != 0)
    throw Error("attention: heads " + std::to_string(H) + " must divide q's and v's channels");
  int64_t D = q.shape[2] / H, Dv = v.shape[2] / H;
  if (k.shape[0] != B || v.shape[0] != B || k.shape[2] != q.shape[2] || v.shape[1] != Lk || o.shape[0] != B ||
      o.shape[1] != Lq || o.shape[2] != H * Dv)
    throw Error("attention: shapes do not agree: q " + q.describe() + ", k " + k.describe() + ", v " +
                v.describe() + ", o " + o.describe());
  if (lse && (lse->dtype != DType::F32 || lse->numel() != B * H * Lq))
    throw Error("attention: lse must be f32 [B, H, Lq], got " + lse->describe());
  if (Lk == 0) throw Error("attention: no keys (Lk = 0)");
  float scale = (float)c.attrs.f("scale", 1.0 / std::sqrt((double)D));
  bool causal = c.attrs.i("causal", 0) != 0;
  const float *pq = q.data<float>(), *pk = k.data<float>(), *pv = v.data<float>();
  float* po = o.data<float>();
  float* pl = lse ? lse->data<float>() : nullptr;
  int64_t nqb = (Lq + kBQ - 1) / kBQ;

  c.pool->parallel_for(B * H * nqb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> qs(kBQ * D), kt(D * kBK), s(kBK), acc(kBQ * Dv), m(kBQ), l(kBQ);
    for (int64_t t = t0; t < t1; ++t) {
      int64_t b = t / (H * nqb), h = (t / nqb) % H, i0 = (t % nqb) * kBQ;
      int64_t rows = std::min(kBQ, Lq - i0);
      for (int64_t i = 0; i < rows; ++i) {
        const float* src = pq + ((b * Lq + i0 + i) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) qs[i * D + d] = src[d] * scale;
        m[i] = -INFINITY;
        l[i] = 0.0f;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      int64_t kend = causal ? std::min(Lk, i0 + rows) : Lk;  // keys past the last row's diagonal are all masked
      for (int64_t j0 = 0; j0 < kend; j0 += kBK) {
        int64_t nk = std::min(kBK, kend - j0);
        for (int64_t j = 0; j < nk; ++j) {
          const float* src = pk + ((b * Lk + j0 + j) * H + h) * D;
          for (int64_t d = 0; d < D; ++d) kt[d * kBK + j] = src[d];
        }
        for (int64_t i = 0; i < rows; ++i) {
          // Causal: row i0+i sees keys <= i0+i; a block entirely past it contributes nothing.
          int64_t nvis = causal ? std::min(nk, i0 + i + 1 - j0) : nk;
          if (nvis <= 0) continue;
          float* sp = s.data();
          for (int64_t j = 0; j < nvis; ++j) sp[j] = 0.0f;
          const float* qi = &qs[i * D];
          for (int64_t d = 0; d < D; ++d) {
            float qd = qi[d];
            const float* kd = &kt[d * kBK];
            for (int64_t j = 0; j < nvis; ++j) sp[j] += qd * kd[j];
          }
          float mb = m[i];
          for (int64_t j = 0; j < nvis; ++j) mb = std::max(mb, sp[j]);
          float corr = std::exp(m[i] - mb);  // exp(-inf) = 0 on the first block
          float sum = 0.0f;
          for (int64_t j = 0; j < nvis; ++j) {
            sp[j] = std::exp(sp[j] - mb);
            sum += sp[j];
          }
          l[i] = l[i] * corr + sum;
          m[i] = mb;
          float* ai = &acc[i * Dv];
          if (corr != 1.0f)
            for (int64_t d = 0; d < Dv; ++d) ai[d] *= corr;
          for (int64_t j = 0; j < nvis; ++j) {
            float p = sp[j];
            const float* vj = pv + ((b * Lk + j0 + j) * H + h) * Dv;
            for (int64_t d = 0; d < Dv; ++d) ai[d] += p * vj[d];
          }
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        float inv = 1.0f / l[i];
        float* dst = po + ((b * Lq + i0 + i) * H + h) * Dv;
        for (int64_t d = 0; d < Dv; ++d) dst[d] = acc[i * Dv + d] * inv;
        if (pl) pl[(b * H + h) * Lq + i0 + i] = m[i] + std::log(l[i]);
      }
    }
  });
}

}  // namespace

void register_attention_cpu(OpRegistry& r) { r.add_cpu("attention", attention_kernel); }
}  // namespace hsd
