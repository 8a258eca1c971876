// attention: o = softmax(scale * q k^T [+ causal mask]) v per head, flash-style (no Lq x Lk matrix in memory).
//
// Layout: q [B, Lq, H*D], k [B, Lk, H*D], v [B, Lk, H*Dv], o [B, Lq, H*Dv]: head h reads channels
// h*D .. h*D+D-1 of every row, so the UNet's [B, L, C] activations need no transposes. Optional second output
// lse [B, H, Lq] (f32): log-sum-exp of the scaled logits of each query row, for the backward pass.
// Causal masking is top-left aligned like torch's scaled_dot_product_attention(is_causal=True): query i sees
// keys 0..i (CLIP's text encoder, where Lq == Lk).
//
// Forward, two implementations with the GEMM engine's dispatch (gemm::kernels(): AVX2 when the CPU has it,
// unless HYPERSD_CPU_KERNELS=portable):
//   AVX2 + FMA (attention_avx2.cpp): tasks of (batch, head, 96 query rows) x key blocks of 64, Q K^T and P V
//     as 6x16 register tiles (the GEMM micro-kernel's shape), vectorised exp / max / sum for the online
//     softmax. Bench (bench/ops.ts --only attn, 2 shared noisy cores, same run): L=4096 d=40 8 heads 1.6 ->
//     ~10-25 GFLOP/s (5% -> ~25-30% of the FMA peak), L=1024 d=64 10 heads 2.9 -> ~10-30 (5-9% -> ~35-47%),
//     L=4096 with 77 keys d=40 1.8 -> ~12-16 (5% -> ~30-40%).
//   Portable (below), the reference and the fallback:
// Work is split into tasks of (batch, head, block of kBQ query rows), run on the thread pool. Each task walks
// the keys in blocks of kBK with the online softmax: a running row max m and sum l; when a block raises the
// max, the accumulator and l are rescaled by exp(m_old - m_new). The block of K is transposed into a
// [D][kBK] scratch once per (task, block) so the logits loop is "for d: s[0..kBK) += q[d] * kT[d][..]",
// which vectorises without reassociating a reduction; the P V update is "acc[0..Dv) += p_j v_j", also a
// plain vector loop. Scratch per task: kBQ*D + D*kBK + kBK + kBQ*Dv floats.
// attention_backward (flash-style, from the saved or recomputed logsumexp) is at the end of the file.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attention_args.h"
#include "gemm_kernels.h"
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
  // Same dispatch as the GEMM engine: AVX-512 or AVX2 when the CPU has them, unless HYPERSD_CPU_KERNELS says
  // avx2 or portable.
  if (gemm::using_avx2()) {
    const AttnFwdArgs args{pq, pk, pv, po, pl, B, Lq, Lk, H, D, Dv, scale, causal};
    if (gemm::cpu_math_bf16() && attention_forward_bf16(args, c.pool)) return;
    if (gemm::using_avx512()) attention_forward_avx512(args, c.pool);
    else attention_forward_avx2(args, c.pool);
    return;
  }
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


// ---------- backward ----------
// attention_backward: inputs q, k, v, o, do [, lse] (layouts as the forward; lse f32 [B, H, Lq] as the
// forward's second output), attrs heads, scale, causal, need_dq and need_dkv (0/1, default 1); outputs dq
// (if need_dq), then dk, dv (if need_dkv), f32 with q's / k's / v's shapes. Cross-attention on a frozen
// text encoder's states needs no dk/dv: pass 1 below is then skipped.
// Per head, with S = scale q k^T, P = softmax(S) row-wise and D_i = do_i . o_i:
//   dv = P^T do,  dP = do v^T,  dS = P * (dP - D),  dq = scale dS k,  dk = scale dS^T q.
// P is recomputed tile by tile as exp(S - lse): no Lq x Lk matrix. When lse is not given it is computed
// first (one pass of q k^T with the online max/sum), so the forward need not have returned it.
// Two passes, so that every task owns the rows it writes (no atomics, deterministic sums):
//   pass 1, tasks over (b, h, block of kBK keys): walks all queries that see the block, accumulating dk and
//           dv for its keys;
//   pass 2, tasks over (b, h, block of kBQ queries): walks the key blocks, accumulating dq.
// Both recompute S and dP (6 products per tile instead of the 5 a single pass with atomics needs). The K and
// V blocks are transposed into [D][kBK] scratch so the logits and dP loops are vector loops over keys, as
// in the forward.

struct AttnGeom {
  int64_t B, Lq, Lk, H, D, Dv;
  float scale;
  bool causal;
  // Keys visible to query i: [0, kend(i)).
  int64_t kend(int64_t i) const { return causal ? std::min(Lk, i + 1) : Lk; }
};

// Logits of one query row (pre-scaled q) against nk keys transposed in kt [D][kBK].
inline void row_logits(const float* qi, const float* kt, int64_t D, int64_t nk, float* s) {
  for (int64_t j = 0; j < nk; ++j) s[j] = 0.0f;
  for (int64_t d = 0; d < D; ++d) {
    float qd = qi[d];
    const float* kd = kt + d * kBK;
    for (int64_t j = 0; j < nk; ++j) s[j] += qd * kd[j];
  }
}

// Transposes rows j0..j0+nk of head h of a [B, L, H*D] tensor into dst [D][kBK].
inline void load_t(const float* base, int64_t b, int64_t h, int64_t L, int64_t H, int64_t D, int64_t j0, int64_t nk,
                   float* dst) {
  for (int64_t j = 0; j < nk; ++j) {
    const float* src = base + ((b * L + j0 + j) * H + h) * D;
    for (int64_t d = 0; d < D; ++d) dst[d * kBK + j] = src[d];
  }
}

void attention_backward_kernel(const OpContext& c) {
  const Tensor &q = c.in.at(0), &k = c.in.at(1), &v = c.in.at(2), &o = c.in.at(3), &dout = c.in.at(4);
  const Tensor* lse_in = c.in.size() > 5 ? &c.in[5] : nullptr;
  const bool need_dq = c.attrs.i("need_dq", 1) != 0, need_dkv = c.attrs.i("need_dkv", 1) != 0;
  if (c.out.size() != (need_dq ? 1u : 0u) + (need_dkv ? 2u : 0u))
    throw Error("attention_backward: expected outputs [dq][dk, dv] as need_dq / need_dkv say, got " +
                std::to_string(c.out.size()));
  const Tensor &dq = need_dq ? c.out[0] : q, &dk = need_dkv ? c.out[need_dq ? 1 : 0] : k,
               &dv = need_dkv ? c.out[need_dq ? 2 : 1] : v;
  int64_t H = c.attrs.i("heads");
  if (q.dim() != 3 || k.dim() != 3 || v.dim() != 3) throw Error("attention_backward: q, k, v must be [B, L, H*D]");
  AttnGeom g{q.shape[0], q.shape[1], k.shape[1], H, 0, 0, 0.0f, c.attrs.i("causal", 0) != 0};
  if (H <= 0 || q.shape[2] % H != 0 || v.shape[2] % H != 0)
    throw Error("attention_backward: heads " + std::to_string(H) + " must divide q's and v's channels");
  g.D = q.shape[2] / H;
  g.Dv = v.shape[2] / H;
  if (k.shape[0] != g.B || v.shape[0] != g.B || k.shape[2] != q.shape[2] || v.shape[1] != g.Lk ||
      o.shape != std::vector<int64_t>{g.B, g.Lq, H * g.Dv} || dout.shape != o.shape || dq.shape != q.shape ||
      dk.shape != k.shape || dv.shape != v.shape)
    throw Error("attention_backward: shapes do not agree: q " + q.describe() + ", k " + k.describe() + ", v " +
                v.describe() + ", o " + o.describe() + ", do " + dout.describe());
  if (lse_in && (lse_in->dtype != DType::F32 || lse_in->numel() != g.B * H * g.Lq))
    throw Error("attention_backward: lse must be f32 [B, H, Lq], got " + lse_in->describe());
  if (g.Lk == 0) throw Error("attention_backward: no keys (Lk = 0)");
  g.scale = (float)c.attrs.f("scale", 1.0 / std::sqrt((double)g.D));
  const int64_t B = g.B, Lq = g.Lq, Lk = g.Lk, D = g.D, Dv = g.Dv;
  const float *pq = q.data<float>(), *pk = k.data<float>(), *pv = v.data<float>(), *po = o.data<float>();
  const float* pdo = dout.data<float>();
  float *pdq = need_dq ? dq.data<float>() : nullptr, *pdk = need_dkv ? dk.data<float>() : nullptr,
        *pdv = need_dkv ? dv.data<float>() : nullptr;
  const float scale = g.scale;

  // Per (b, h, i): lse (given or recomputed) and Di = do_i . o_i.
  std::vector<float> lse((size_t)(B * H * Lq)), Di((size_t)(B * H * Lq));
  int64_t nqb = (Lq + kBQ - 1) / kBQ, nkb = (Lk + kBK - 1) / kBK;
  c.pool->parallel_for(B * H * nqb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> qs(D), kt(D * kBK), s(kBK);
    for (int64_t t = t0; t < t1; ++t) {
      int64_t b = t / (H * nqb), h = (t / nqb) % H, i0 = (t % nqb) * kBQ, i1 = std::min(Lq, i0 + kBQ);
      for (int64_t i = i0; i < i1; ++i) {
        size_t r = (size_t)((b * H + h) * Lq + i);
        const float *oi = po + ((b * Lq + i) * H + h) * Dv, *di = pdo + ((b * Lq + i) * H + h) * Dv;
        double acc = 0;
        for (int64_t d = 0; d < Dv; ++d) acc += (double)oi[d] * di[d];
        Di[r] = (float)acc;
        if (lse_in) lse[r] = lse_in->data<float>()[r];
      }
      if (lse_in) continue;
      for (int64_t i = i0; i < i1; ++i) {
        const float* src = pq + ((b * Lq + i) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) qs[d] = src[d] * scale;
        float m = -INFINITY;
        double l = 0;
        for (int64_t j0 = 0; j0 < g.kend(i); j0 += kBK) {
          int64_t nk = std::min(kBK, g.kend(i) - j0);
          load_t(pk, b, h, Lk, H, D, j0, nk, kt.data());
          row_logits(qs.data(), kt.data(), D, nk, s.data());
          float mb = m;
          for (int64_t j = 0; j < nk; ++j) mb = std::max(mb, s[j]);
          double sum = 0;
          for (int64_t j = 0; j < nk; ++j) sum += std::exp(s[j] - mb);
          l = l * std::exp((double)m - mb) + sum;
          m = mb;
        }
        lse[(size_t)((b * H + h) * Lq + i)] = m + (float)std::log(l);
      }
    }
  });

  // Pass 1: dk, dv per key block.
  if (need_dkv) c.pool->parallel_for(B * H * nkb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> qs(D), kt(D * kBK), vt(Dv * kBK), s(kBK), dp(kBK), dka(kBK * D), dva(kBK * Dv);
    for (int64_t t = t0; t < t1; ++t) {
      int64_t b = t / (H * nkb), h = (t / nkb) % H, j0 = (t % nkb) * kBK, nk = std::min(kBK, Lk - j0);
      load_t(pk, b, h, Lk, H, D, j0, nk, kt.data());
      load_t(pv, b, h, Lk, H, Dv, j0, nk, vt.data());
      std::fill(dka.begin(), dka.end(), 0.0f);
      std::fill(dva.begin(), dva.end(), 0.0f);
      for (int64_t i = g.causal ? j0 : 0; i < Lq; ++i) {
        int64_t nvis = std::min(nk, g.kend(i) - j0);
        if (nvis <= 0) continue;
        size_t r = (size_t)((b * H + h) * Lq + i);
        const float *qi = pq + ((b * Lq + i) * H + h) * D, *doi = pdo + ((b * Lq + i) * H + h) * Dv;
        for (int64_t d = 0; d < D; ++d) qs[d] = qi[d] * scale;
        row_logits(qs.data(), kt.data(), D, nvis, s.data());
        float li = lse[r], di = Di[r];
        for (int64_t j = 0; j < nvis; ++j) s[j] = std::exp(s[j] - li);  // P
        // dP_j = do_i . v_j
        for (int64_t j = 0; j < nvis; ++j) dp[j] = 0.0f;
        for (int64_t d = 0; d < Dv; ++d) {
          float od = doi[d];
          const float* vd = &vt[d * kBK];
          for (int64_t j = 0; j < nvis; ++j) dp[j] += od * vd[j];
        }
        for (int64_t j = 0; j < nvis; ++j) {
          float p = s[j], ds = p * (dp[j] - di) * scale;
          float* dvj = &dva[j * Dv];
          for (int64_t d = 0; d < Dv; ++d) dvj[d] += p * doi[d];
          float* dkj = &dka[j * D];
          for (int64_t d = 0; d < D; ++d) dkj[d] += ds * qi[d];
        }
      }
      for (int64_t j = 0; j < nk; ++j) {
        float* dkr = pdk + ((b * Lk + j0 + j) * H + h) * D;
        float* dvr = pdv + ((b * Lk + j0 + j) * H + h) * Dv;
        for (int64_t d = 0; d < D; ++d) dkr[d] = dka[j * D + d];
        for (int64_t d = 0; d < Dv; ++d) dvr[d] = dva[j * Dv + d];
      }
    }
  });

  // Pass 2: dq per query block.
  if (need_dq) c.pool->parallel_for(B * H * nqb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> qs(kBQ * D), kt(D * kBK), vt(Dv * kBK), s(kBK), dp(kBK), dqa(kBQ * D);
    for (int64_t t = t0; t < t1; ++t) {
      int64_t b = t / (H * nqb), h = (t / nqb) % H, i0 = (t % nqb) * kBQ, rows = std::min(kBQ, Lq - i0);
      for (int64_t i = 0; i < rows; ++i) {
        const float* src = pq + ((b * Lq + i0 + i) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) qs[i * D + d] = src[d] * scale;
      }
      std::fill(dqa.begin(), dqa.end(), 0.0f);
      int64_t kend = g.kend(i0 + rows - 1);
      for (int64_t j0 = 0; j0 < kend; j0 += kBK) {
        int64_t nk = std::min(kBK, kend - j0);
        load_t(pk, b, h, Lk, H, D, j0, nk, kt.data());
        load_t(pv, b, h, Lk, H, Dv, j0, nk, vt.data());
        for (int64_t i = 0; i < rows; ++i) {
          int64_t nvis = std::min(nk, g.kend(i0 + i) - j0);
          if (nvis <= 0) continue;
          size_t r = (size_t)((b * H + h) * Lq + i0 + i);
          const float* doi = pdo + ((b * Lq + i0 + i) * H + h) * Dv;
          row_logits(&qs[i * D], kt.data(), D, nvis, s.data());
          float li = lse[r], di = Di[r];
          for (int64_t j = 0; j < nvis; ++j) dp[j] = 0.0f;
          for (int64_t d = 0; d < Dv; ++d) {
            float od = doi[d];
            const float* vd = &vt[d * kBK];
            for (int64_t j = 0; j < nvis; ++j) dp[j] += od * vd[j];
          }
          // dq_i += scale * sum_j dS_ij k_j, with k read from the transposed block: a vector loop over keys.
          float* dqi = &dqa[i * D];
          for (int64_t j = 0; j < nvis; ++j) s[j] = std::exp(s[j] - li) * (dp[j] - di) * scale;
          for (int64_t d = 0; d < D; ++d) {
            const float* kd = &kt[d * kBK];
            float acc = 0.0f;
            for (int64_t j = 0; j < nvis; ++j) acc += s[j] * kd[j];
            dqi[d] += acc;
          }
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        float* dst = pdq + ((b * Lq + i0 + i) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) dst[d] = dqa[i * D + d];
      }
    }
  });
}

}  // namespace

void register_attention_cpu(OpRegistry& r) {
  r.add_cpu("attention", attention_kernel);
  r.add_cpu("attention_backward", attention_backward_kernel);
}
}  // namespace hsd
