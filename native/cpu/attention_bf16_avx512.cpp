// The CPU attention forward with bf16 products (opt-in: HYPERSD_CPU_MATH=bf16, like the linear layers), for
// CPUs with AVX512_BF16 (reached only when the GEMM engine installed its bf16 micro-kernels, which checks cpuid).
// Causal attention (CLIP's text encoder) keeps the f32 kernels.
//
// Same flash structure as attention_avx2.cpp: tasks of (batch, head, kBQ = 96 query rows), keys in blocks of
// kBK = 256 with the online softmax in base 2, no Lq x Lk matrix. Both products run on vdpbf16ps (32 multiply-
// adds an instruction, f32 accumulation, against 16 FMAs):
//   S = (scale log2(e) q) K^T: q scaled in f32, then rounded to bf16; K rounded once per call into tiles of 16
//       keys [Lk16/16][D/2][16] of d pairs. 6 x 32 register tiles (12 accumulators, 2 loads and 6 broadcasts a
//       d pair), then 6 x 16 for an odd last tile.
//   P = 2^(S - m) in f32 (exp2 as the f32 kernel), rounded to bf16 in key order (a row of P is then its own
//       pair operand); the row sums l add up the rounded values, so the weights P V / l sum to 1 exactly as used.
//   O += P V: V rounded once per call into key pairs [Lk16/2][Dv16]; 6 rows x up to 64 columns a pass
//       (24 accumulators, 4 loads and 6 broadcasts a key pair), O kept per task in f32.
// The rounding of q, K, P and V to bf16 (8 significant bits) moves outputs by ~1e-3 relative: the tests hold
// it to the bf16 tolerance against float64 of the unrounded inputs, and the f32 kernels stay the default.
// Scratch: the rounded K and V of all heads on the calling thread's scratch slots 0 and 1 (as the f32 kernel),
// per worker thread 96 x (D + 1) / 2 + 96 x Dv16 + 6 x (kBK + kBK / 2) words and 16 x (D + 1) / 2 for K's rows.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "attention_args.h"
#include "gemm_kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__)
// (GCC 12's 512-bit reductions pass an undefined vector to the extract builtin: a false -Wmaybe-uninitialized.)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512bw,avx512bf16")
#include <immintrin.h>

#include "avx2_math.h"

namespace hsd {
namespace {

constexpr int64_t kBQ = 96;   // query rows per task (16 panels of 6)
constexpr int64_t kBK = 256;  // keys per block (a multiple of 32): 128 ran 2-7% slower, 512 the same, 64 slower still;
                              // 192 query rows a task instead of 96 changed nothing (bench/ab.ts, session 16)
constexpr double kLog2e = 1.4426950408889634, kLn2 = 0.6931471805599453;

inline __attribute__((always_inline)) __m512 bcast(const uint32_t* p) {
  return _mm512_castsi512_ps(_mm512_set1_epi32((int)*p));
}
inline __attribute__((always_inline)) __m512 dp(__m512 acc, __m512 a, __m512 b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}
// 32 floats (two vectors, keys or d in order) -> 16 words pairs in the same order.
inline __attribute__((always_inline)) __m512i round_pairs(__m512 lo, __m512 hi) {
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}
// The sum of the 32 bf16 values of 16 pairs, as floats (a bf16 is the upper half of its float).
inline __attribute__((always_inline)) __m512 pair_sum(__m512i w) {
  return _mm512_add_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w, 16)),
                       _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32((int)0xffff0000u))));
}
// One row of D floats times scale, rounded into (D + 1) / 2 pair words in order (an odd D's last word holds a
// zero high half).
inline void round_row(const float* src, int64_t D, float scale, uint32_t* dst) {
  const __m512 vs = _mm512_set1_ps(scale);
  for (int64_t d = 0; d < D; d += 32) {
    const int64_t n = std::min<int64_t>(32, D - d);
    const __mmask16 m0 = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1u);
    const __mmask16 m1 = (__mmask16)(n >= 32 ? 0xffff : n > 16 ? (1u << (n - 16)) - 1u : 0u);
    const __m512 lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, src + d), vs);
    const __m512 hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, src + d + 16), vs);
    const __mmask16 wm = (__mmask16)((n + 1) / 2 >= 16 ? 0xffff : (1u << ((n + 1) / 2)) - 1u);
    _mm512_mask_storeu_epi32(dst + d / 2, wm, round_pairs(lo, hi));
  }
}

struct Bufs {
  std::vector<uint32_t> qp, pp, krows;
  std::vector<float> o, s, m, l;
};
thread_local Bufs tl_bufs;

// Logits of one 6-row panel (Qp rows at qp, Dp pairs each) against key tiles t0 .. t0 + nt of Kp (Dp x 16 words
// a tile) into s (row stride kBK, column 16 * (t - t0)).
void logits_panel(const uint32_t* qp, int64_t Dp, const uint32_t* kp, int64_t nt, float* s) {
  int64_t t = 0;
  for (; t + 2 <= nt; t += 2) {
    const uint32_t* k0 = kp + t * Dp * 16;
    const uint32_t* k1 = k0 + Dp * 16;
    __m512 x[6], y[6];
    for (int r = 0; r < 6; ++r) x[r] = y[r] = _mm512_setzero_ps();
    for (int64_t p = 0; p < Dp; ++p) {
      const __m512 b0 = _mm512_loadu_ps((const float*)(k0 + p * 16)), b1 = _mm512_loadu_ps((const float*)(k1 + p * 16));
#pragma GCC unroll 6
      for (int r = 0; r < 6; ++r) {
        const __m512 a = bcast(qp + r * Dp + p);
        x[r] = dp(x[r], a, b0);
        y[r] = dp(y[r], a, b1);
      }
    }
    for (int r = 0; r < 6; ++r) {
      _mm512_storeu_ps(s + r * kBK + t * 16, x[r]);
      _mm512_storeu_ps(s + r * kBK + t * 16 + 16, y[r]);
    }
  }
  if (t < nt) {
    const uint32_t* k0 = kp + t * Dp * 16;
    __m512 x[6];
    for (int r = 0; r < 6; ++r) x[r] = _mm512_setzero_ps();
    for (int64_t p = 0; p < Dp; ++p) {
      const __m512 b0 = _mm512_loadu_ps((const float*)(k0 + p * 16));
#pragma GCC unroll 6
      for (int r = 0; r < 6; ++r) x[r] = dp(x[r], bcast(qp + r * Dp + p), b0);
    }
    for (int r = 0; r < 6; ++r) _mm512_storeu_ps(s + r * kBK + t * 16, x[r]);
  }
}

// The online softmax of a 6-row panel's logits (s, row stride kBK, nt tiles of 16 keys, the last one's valid
// lanes in last_mask): the running maxima m and sums l of the rows updated, the numerators 2^(s - m) rounded
// into pp (key order, kBK / 2 words a row), and O's rows (o, stride ldo, Dv16 columns) scaled by 2^(m_old -
// m_new) where a maximum moved. The six rows go through each step together (independent chains: reductions,
// exponentials, sums), as one row at a time left the core waiting on each row's chain (77 keys: 0.81x f32).
inline __attribute__((always_inline)) void softmax_panel(const float* s, int64_t nt, __mmask16 last_mask, bool first,
                                                         float* m, float* l, uint32_t* pp, float* o, int64_t Dv16) {
  __m512 vmax[6];
  for (int r = 0; r < 6; ++r) vmax[r] = _mm512_set1_ps(-INFINITY);
  for (int64_t t = 0; t < nt; ++t) {
    const __mmask16 k = t + 1 == nt ? last_mask : (__mmask16)0xffff;
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) vmax[r] = _mm512_mask_max_ps(vmax[r], k, vmax[r], _mm512_loadu_ps(s + r * kBK + t * 16));
  }
  // The running maximum moves only when the block holds a larger logit; then the sum and O are scaled by
  // 2^(m_old - m_new) (all six rows' factors in one vector exp2; the first block's O and l are zero).
  alignas(64) float mo[16] = {0}, alpha[16];
  __m512 vm[6];
  bool moved = false;
  for (int r = 0; r < 6; ++r) {
    const float bmax = _mm512_reduce_max_ps(vmax[r]);
    if (bmax > m[r]) {
      mo[r] = first ? 0.f : m[r] - bmax;
      m[r] = bmax;
      moved = true;
    }
    vm[r] = _mm512_set1_ps(m[r]);
  }
  const __m512 lo = _mm512_set1_ps(-126.f);
  _mm512_store_ps(alpha, avx512::exp2_core_ps(_mm512_max_ps(_mm512_load_ps(mo), lo)));
  __m512 vsum[6];
  for (int r = 0; r < 6; ++r) vsum[r] = _mm512_setzero_ps();
  int64_t t = 0;
  for (; t + 2 <= nt; t += 2) {
    const __mmask16 k1 = t + 2 == nt ? last_mask : (__mmask16)0xffff;
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m512 e0 = avx512::exp2_core_ps(_mm512_max_ps(_mm512_sub_ps(_mm512_loadu_ps(s + r * kBK + t * 16), vm[r]), lo));
      const __m512 e1 = avx512::exp2_core_ps(_mm512_max_ps(_mm512_sub_ps(_mm512_loadu_ps(s + r * kBK + t * 16 + 16), vm[r]), lo));
      const __m512i w = round_pairs(e0, _mm512_maskz_mov_ps(k1, e1));
      _mm512_storeu_si512(pp + r * (kBK / 2) + t * 8, w);
      vsum[r] = _mm512_add_ps(vsum[r], pair_sum(w));
    }
  }
  if (t < nt) {  // an odd last tile: 8 pairs, the upper 8 zero
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m512 e0 = avx512::exp2_core_ps(_mm512_max_ps(_mm512_sub_ps(_mm512_loadu_ps(s + r * kBK + t * 16), vm[r]), lo));
      const __m512i w = round_pairs(_mm512_maskz_mov_ps(last_mask, e0), _mm512_setzero_ps());
      _mm512_mask_storeu_epi32(pp + r * (kBK / 2) + t * 8, (__mmask16)0x00ff, w);
      vsum[r] = _mm512_add_ps(vsum[r], pair_sum(w));
    }
  }
  for (int r = 0; r < 6; ++r) l[r] = (first ? 0.f : l[r] * alpha[r]) + _mm512_reduce_add_ps(vsum[r]);
  if (first || !moved) return;
  for (int r = 0; r < 6; ++r) {
    if (alpha[r] == 1.f) continue;
    const __m512 va = _mm512_set1_ps(alpha[r]);
    for (int64_t c = 0; c < Dv16; c += 16) _mm512_storeu_ps(o + r * Dv16 + c, _mm512_mul_ps(_mm512_loadu_ps(o + r * Dv16 + c), va));
  }
}

// O rows (stride ldo) columns c0 .. c0 + 16 NV += P V over np key pairs: P rows at pp (stride kBK / 2 words),
// V pairs at vp (stride ldv words, column c0 first).
template <int NV>
void pv_panel(const uint32_t* pp, int64_t np, const uint32_t* vp, int64_t ldv, float* o, int64_t ldo) {
  __m512 acc[6][NV];
  for (int r = 0; r < 6; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_loadu_ps(o + r * ldo + 16 * v);
  for (int64_t q = 0; q < np; ++q) {
    __m512 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps((const float*)(vp + q * ldv + 16 * v));
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m512 a = bcast(pp + r * (kBK / 2) + q);
      for (int v = 0; v < NV; ++v) acc[r][v] = dp(acc[r][v], a, b[v]);
    }
  }
  for (int r = 0; r < 6; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(o + r * ldo + 16 * v, acc[r][v]);
}

}  // namespace

bool attention_forward_bf16(const AttnFwdArgs& g, ThreadPool* pool) {
  if (g.causal || !gemm::using_avx512() || !gemm::kernels().micro_bf16) return false;
  const int64_t B = g.B, Lq = g.Lq, Lk = g.Lk, H = g.H, D = g.D, Dv = g.Dv;
  if (Lq == 0 || B * H == 0) return true;
  const int64_t Dp = (D + 1) / 2, Dv16 = (Dv + 15) / 16 * 16, Lk16 = (Lk + 15) / 16 * 16, nkt = Lk16 / 16;
  const int64_t kwords = Lk16 * Dp, vwords = Lk16 / 2 * Dv16;
  uint32_t* kall = (uint32_t*)gemm::thread_scratch(0, (size_t)(B * H * kwords));
  uint32_t* vall = (uint32_t*)gemm::thread_scratch(1, (size_t)(B * H * vwords));

  // K and V of every head rounded to bf16, a tile of 16 keys a task: K as [tile][d pair][16 keys], V as
  // [key pair][Dv16] (zeros past Lk and past D / Dv).
  pool->parallel_for(B * H * nkt, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t task = s0; task < s1; ++task) {
      const int64_t bh = task / nkt, t = task % nkt, b = bh / H, h = bh % H;
      uint32_t* kt = kall + bh * kwords + t * Dp * 16;
      // The tile's 16 keys rounded row by row, then transposed word by word (a scalar rounding of each pair
      // took 5.6% of L=4096 d=64's samples).
      std::vector<uint32_t>& rows = tl_bufs.krows;
      rows.resize((size_t)(16 * Dp));
      for (int j = 0; j < 16; ++j) {
        const int64_t key = t * 16 + j;
        if (key < Lk) round_row(g.k + ((b * Lk + key) * H + h) * D, D, 1.f, rows.data() + j * Dp);
        else std::memset(rows.data() + j * Dp, 0, (size_t)Dp * sizeof(uint32_t));
      }
      for (int64_t p = 0; p < Dp; ++p)
        for (int j = 0; j < 16; ++j) kt[p * 16 + j] = rows[(size_t)(j * Dp + p)];
      const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                             22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
      for (int q = 0; q < 8; ++q) {
        const int64_t k0 = t * 16 + 2 * q;
        uint32_t* vq = vall + bh * vwords + (k0 / 2) * Dv16;
        const float* va = k0 < Lk ? g.v + ((b * Lk + k0) * H + h) * Dv : nullptr;
        const float* vb = k0 + 1 < Lk ? g.v + ((b * Lk + k0 + 1) * H + h) * Dv : nullptr;
        for (int64_t c = 0; c < Dv16; c += 16) {
          const __mmask16 m = (__mmask16)(Dv - c >= 16 ? 0xffff : (1u << (Dv - c)) - 1u);
          const __m512 a = va ? _mm512_maskz_loadu_ps(m, va + c) : _mm512_setzero_ps();
          const __m512 bv = vb ? _mm512_maskz_loadu_ps(m, vb + c) : _mm512_setzero_ps();
          _mm512_storeu_si512(vq + c, _mm512_permutexvar_epi16(inter, round_pairs(a, bv)));
        }
      }
    }
  });

  const int64_t nqb = (Lq + kBQ - 1) / kBQ;
  const float sl = (float)((double)g.scale * kLog2e);
  pool->parallel_for(B * H * nqb, 1, [&](int64_t s0, int64_t s1) {
    Bufs& bf = tl_bufs;
    bf.qp.resize((size_t)(kBQ * Dp));
    bf.pp.resize((size_t)(6 * kBK / 2));
    bf.o.resize((size_t)(kBQ * Dv16));
    bf.s.resize((size_t)(6 * kBK));
    bf.m.resize(kBQ);
    bf.l.resize(kBQ);
    uint32_t *qp = bf.qp.data(), *pp = bf.pp.data();
    float *o = bf.o.data(), *s = bf.s.data(), *mrow = bf.m.data(), *lrow = bf.l.data();
    for (int64_t task = s0; task < s1; ++task) {
      const int64_t bh = task / nqb, b = bh / H, h = bh % H, i0 = (task % nqb) * kBQ;
      const int64_t rows = std::min(kBQ, Lq - i0), npan = (rows + 5) / 6;
      const uint32_t* kp = kall + bh * kwords;
      const uint32_t* vp = vall + bh * vwords;
      // Q rows scaled by scale log2(e), rounded into d pairs (rows past Lq zero).
      for (int64_t i = 0; i < npan * 6; ++i) {
        uint32_t* dst = qp + i * Dp;
        if (i >= rows) {
          std::memset(dst, 0, (size_t)Dp * sizeof(uint32_t));
          continue;
        }
        round_row(g.q + ((b * Lq + i0 + i) * H + h) * D, D, sl, dst);
      }
      std::fill(o, o + npan * 6 * Dv16, 0.f);
      std::fill(mrow, mrow + npan * 6, -INFINITY);
      std::fill(lrow, lrow + npan * 6, 0.f);
      for (int64_t kb = 0; kb < Lk16; kb += kBK) {
        const int64_t blen = std::min(kBK, Lk16 - kb), nt = blen / 16;
        // Lanes of the block's last tile that are keys (the tiles before are whole).
        const int64_t last_valid = std::min<int64_t>(16, Lk - (kb + blen - 16));
        const __mmask16 last_mask = (__mmask16)(last_valid >= 16 ? 0xffff : (1u << last_valid) - 1u);
        for (int64_t pn = 0; pn < npan; ++pn) {
          logits_panel(qp + pn * 6 * Dp, Dp, kp + (kb / 16) * Dp * 16, nt, s);
          softmax_panel(s, nt, last_mask, kb == 0, mrow + pn * 6, lrow + pn * 6, pp, o + pn * 6 * Dv16, Dv16);
          const int64_t np = blen / 2;
          const uint32_t* vb = vp + (kb / 2) * Dv16;
          float* op = o + pn * 6 * Dv16;
          int64_t c = 0;
          for (; c + 64 <= Dv16; c += 64) pv_panel<4>(pp, np, vb + c, Dv16, op + c, Dv16);
          switch ((Dv16 - c) / 16) {
            case 3: pv_panel<3>(pp, np, vb + c, Dv16, op + c, Dv16); break;
            case 2: pv_panel<2>(pp, np, vb + c, Dv16, op + c, Dv16); break;
            case 1: pv_panel<1>(pp, np, vb + c, Dv16, op + c, Dv16); break;
            default: break;
          }
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        const float inv = 1.f / lrow[i];
        float* dst = g.o + ((b * Lq + i0 + i) * H + h) * Dv;
        const __m512 vi = _mm512_set1_ps(inv);
        for (int64_t c = 0; c < Dv; c += 16) {
          const __mmask16 m = (__mmask16)(Dv - c >= 16 ? 0xffff : (1u << (Dv - c)) - 1u);
          _mm512_mask_storeu_ps(dst + c, m, _mm512_mul_ps(_mm512_loadu_ps(o + i * Dv16 + c), vi));
        }
        if (g.lse) g.lse[(b * H + h) * Lq + i0 + i] = (float)((double)mrow[i] * kLn2 + std::log((double)lrow[i]));
      }
    }
  });
  return true;
}

}  // namespace hsd
#pragma GCC pop_options

#else  // no AVX-512 compile: never engaged
namespace hsd {
bool attention_forward_bf16(const AttnFwdArgs&, ThreadPool*) { return false; }
}  // namespace hsd
#endif
