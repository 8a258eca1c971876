// attention and attention_backward on CUDA (OPS.md). Forward: o = softmax(q k^T * scale [+ causal mask]) v
// per head, flash-style: no Lq x Lk matrix in memory. q [B, Lq, H*D], k [B, Lk, H*D], v [B, Lk, H*Dv]; head
// h is channels h*D...; optional lse f32 [B, H, Lq] (natural log-sum-exp of the scaled logits, for backward).
// The backward is described where it starts, below the forward.
// The causal mask is top-left aligned (key j is visible to query i when j <= i), as torch's is_causal.
//
// Tensor-core kernel (f16/bf16, D == Dv, D % 8 == 0, D <= 160): one block of 4 warps per 64 WM query rows of
// one (batch, head); each warp owns WM m tiles of 16 rows (WM = 2 for head dims up to 64 when the 128-row
// blocks still cover the SMs, else 1; see flash_attn_kernel). The Q tile is staged once (cp.async) and kept in registers as
// mma A fragments; K/V tiles of 64 keys (32 for D > 128, to bound registers) stream through a
// double-buffered cp.async ring. Per tile: S = Q K^T on mma.sync m16n8k16 (K read with ldmatrix as the
// col-major B operand), scale and mask in f32, online softmax (running row max in the log2 domain, exp2,
// rescale of the f32 O accumulators), then P is re-packed from the S accumulators straight into A
// fragments (the m16n8 C layout of two adjacent n-tiles is the m16k16 A layout) and O += P V with V read by
// ldmatrix.trans. Row sums stay per-thread partials until the end (the rescale factor is uniform over the
// 4 threads of a row), so the loop has one 2-step shuffle reduction (the max) per tile.
// The head dim is padded with zeros in shared memory to a bucket DP in {48, 64, 80, 128, 160}: SD1.5's
// 40/80/160 and SDXL's 64 run at 48/80/160/64; any multiple of 8 up to 160 works.
// Causal blocks stop at the diagonal tile; only a key tile that crosses Lk or the block's first query is masked
// (head dims up to 64; above, every tile takes the masked loop, whose second copy spilled on sm_80-89).
//
// SIMT kernel (f32, and any shape the tensor-core kernel does not take: D % 8 != 0, D != Dv, D or Dv up to
// 512 (the VAE's one 512-channel head), unaligned views): one warp per query row, 8 rows per block sharing
// 32-key (16 above a head dim of 256) K/V tiles converted to f32
// in shared memory; lane j scores key j, the warp does the online softmax with shuffles, and each lane owns
// Dv/32 output channels.
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills on all four archs (rechecked for sm_80/86/89/90 2026-11-27):
// flash_attn_kernel f16/bf16 by head-dim bucket 48: 128, 64: 160, 80: 210, 128: 244, 160: 246 registers (128
// threads; shared memory 35/45/55/85/63 KiB); two m tiles a warp: 48: 233, 64: 254; flash_attn_occ4_kernel
// (the default at d <= 64) 48: 128, 64: 127 (32-key tiles, 27 KiB). Measured on an H200 (2026-11-27,
// bench/gpu-runs/2026-11-27-h200-s13*): d = 64 self-attention (B 2, L 4096, 10 heads) 198-202 -> 205-210
// TFLOP/s with the 128-register cap, d = 40 168-172 with two m tiles (148-152 with one); attn_simt_kernel 40-47 registers and attn_simt_big_kernel 84-90
// (96-99 on sm_90), (TK (D+1) + TK Dv + 8 D) * 4 B dynamic shared memory (TK = 32, 16 for the big one);
// backward: attn_bwd_dkv 71, attn_bwd_dq 70, attn_delta 32 registers; attn_bwd_dkv_mma by head-dim bucket 48:
// 179-182, 64: 247-249, 80: 242, 160: 254; attn_bwd_dq_mma 144-146 / 179-180 / 244 / 234-241 on sm_80/86/89/90
// (128 threads, no spills).
#include <cmath>
#include <cstdlib>
#include <type_traits>

#include "attention.cuh"
#include "common.cuh"

namespace hsd {
namespace cu {
namespace {

// ---------------------------------------------------------------- tensor-core (flash) kernel

// KT: keys per K/V tile (0: 64, or 32 above a head dim of 128, to bound registers)
template <int DP, int WM, int KT = 0>
struct FaCfg {
  static constexpr int BQ = 64 * WM, THREADS = 128, BKV = KT ? KT : DP <= 128 ? 64 : 32, LD = DP + 8;
  static constexpr int SMEM = (BQ * LD + 4 * BKV * LD) * 2;  // Q + double-buffered K and V, 16-bit
};

// rows x DP tile of a [rows, ld] matrix: rows r0.. (valid < R), columns < D (D % 8 == 0), zero elsewhere; the
// block's 128 threads take its 16-byte chunks in turn (the guard vanishes when they split evenly).
template <class T, int ROWS, int DP>
__device__ __forceinline__ void stage_tile(T* s, const T* g, int64_t ld, int r0, int R, int D, int tid) {
  constexpr int CPR = DP / 8, N = ROWS * CPR, TH = 128;
#pragma unroll
  for (int it = 0; it < (N + TH - 1) / TH; ++it) {
    const int c = tid + it * TH;
    if (N % TH != 0 && c >= N) break;
    const int r = c / CPR, dc = (c % CPR) * 8;
    const bool in = r0 + r < R && dc < D;
    cp_async16(s + r * (DP + 8) + dc, in ? g + (int64_t)(r0 + r) * ld + dc : g, in ? 16 : 0);
  }
}

// WM: 16-row m tiles per warp (block of 4 warps = 64 WM query rows). With two, every K and V fragment read
// from shared memory by ldmatrix feeds two mma instead of one: at one m tile a warp the K/V fragment reads
// alone ask ~170 bytes per clock of an SM's 128 (an m16n8k16 mma every ~1.5 clocks, a 512-byte ldmatrix.x4
// per two mma), so the kernel was bound by shared-memory bandwidth (207 TFLOP/s at d = 64 on an H200).
template <class T, int DP, int WM, int KT = 0>
__device__ __forceinline__ void flash_attn_body(const AttnParams p) {
  using C = FaCfg<DP, WM, KT>;
  constexpr int BQ = C::BQ, BKV = C::BKV, LD = C::LD, KS = DP / 16, NT = BKV / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);
  T* Ks = Qs + BQ * LD;
  T* Vs = Ks + 2 * BKV * LD;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int q0 = blockIdx.x * BQ, b = blockIdx.y / p.H, h = blockIdx.y % p.H;
  const T* qg = (const T*)p.q + (int64_t)b * p.Lq * p.ldq + (int64_t)h * p.D;
  const T* kg = (const T*)p.k + (int64_t)b * p.Lk * p.ldk + (int64_t)h * p.D;
  const T* vg = (const T*)p.v + (int64_t)b * p.Lk * p.ldv + (int64_t)h * p.D;
  const int nkv = kv_tiles(p, q0, BQ, BKV);

  stage_tile<T, BQ, DP>(Qs, qg, p.ldq, q0, p.Lq, p.D, tid);
  if (nkv > 0) {
    stage_tile<T, BKV, DP>(Ks, kg, p.ldk, 0, p.Lk, p.D, tid);
    stage_tile<T, BKV, DP>(Vs, vg, p.ldv, 0, p.Lk, p.D, tid);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // warp w owns rows w*16*WM + 16i + (g, g+8) of the block, i < WM
  uint32_t qf[WM][KS][4];
#pragma unroll
  for (int i = 0; i < WM; ++i)
#pragma unroll
    for (int ks = 0; ks < KS; ++ks)
      ldmatrix_x4(qf[i][ks], Qs + ((warp * WM + i) * 16 + (lane & 15)) * LD + ks * 16 + (lane >> 4) * 8);

  float o[WM][DP / 8][4];
#pragma unroll
  for (int i = 0; i < WM; ++i)
#pragma unroll
    for (int n = 0; n < DP / 8; ++n) o[i][n][0] = o[i][n][1] = o[i][n][2] = o[i][n][3] = 0.f;
  float m_run[WM][2], l_run[WM][2];
#pragma unroll
  for (int i = 0; i < WM; ++i) m_run[i][0] = m_run[i][1] = -INFINITY, l_run[i][0] = l_run[i][1] = 0.f;
  const int qrow0 = q0 + warp * 16 * WM + g;

  for (int j = 0; j < nkv; ++j) {
    const int buf = j & 1;
    if (j + 1 < nkv) {
      stage_tile<T, BKV, DP>(Ks + (buf ^ 1) * BKV * LD, kg, p.ldk, (j + 1) * BKV, p.Lk, p.D, tid);
      stage_tile<T, BKV, DP>(Vs + (buf ^ 1) * BKV * LD, vg, p.ldv, (j + 1) * BKV, p.Lk, p.D, tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* ks = Ks + buf * BKV * LD;
    const T* vs = Vs + buf * BKV * LD;

    float s[WM][NT][4];
#pragma unroll
    for (int i = 0; i < WM; ++i)
#pragma unroll
      for (int n = 0; n < NT; ++n) s[i][n][0] = s[i][n][1] = s[i][n][2] = s[i][n][3] = 0.f;
#pragma unroll
    for (int kq = 0; kq < KS; ++kq)
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t r[4];
        ldmatrix_x4(r, ks + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + kq * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int i = 0; i < WM; ++i) {
          mma16816<T>(s[i][2 * np], qf[i][kq], r[0], r[1]);
          mma16816<T>(s[i][2 * np + 1], qf[i][kq], r[2], r[3]);
        }
      }

    // scale (log2 domain); the mask only on a tile that reaches past Lk or (causal) past the block's first query
    // (always above a head dim of 64: two copies of the loop cost the 80 and 128 buckets a spill on sm_80-89)
    const int k_end = (j + 1) * BKV;
    const bool masked = DP > 64 || k_end > p.Lk || (p.causal && k_end - 1 > q0);
#pragma unroll
    for (int i = 0; i < WM; ++i) softmax_tile(s[i], o[i], m_run[i], l_run[i], p.scale_log2, p.Lk, p.causal, masked, j * BKV,
                                              qrow0 + i * 16, t);

    // O += P V: the S accumulators of key tiles 2kk and 2kk+1 are the A fragment of keys 16kk..16kk+15
#pragma unroll
    for (int kk = 0; kk < BKV / 16; ++kk) {
      uint32_t pa[WM][4];
#pragma unroll
      for (int i = 0; i < WM; ++i) {
        acc_to_a<T>(s[i][2 * kk], s[i][2 * kk + 1], pa[i]);
      }
#pragma unroll
      for (int dp = 0; dp < DP / 16; ++dp) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, vs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int i = 0; i < WM; ++i) {
          mma16816<T>(o[i][2 * dp], pa[i], r[0], r[1]);
          mma16816<T>(o[i][2 * dp + 1], pa[i], r[2], r[3]);
        }
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();

  T* og = (T*)p.o + (int64_t)b * p.Lq * p.ldo + (int64_t)h * p.Dv;
#pragma unroll
  for (int i = 0; i < WM; ++i) store_tile<T>(p, og, o[i], m_run[i], l_run[i], b, h, qrow0 + i * 16, t);
}

template <class T, int DP, int WM>
__global__ void __launch_bounds__(128) flash_attn_kernel(const AttnParams p) {
  flash_attn_body<T, DP, WM>(p);
}
// Registers capped at 128 (four blocks per SM; see launch_attention).
template <class T, int DP>
__global__ void __launch_bounds__(128, 4) flash_attn_occ4_kernel(const AttnParams p) {
  flash_attn_body<T, DP, 1, (DP == 64 ? 32 : 0)>(p);
}

// ---------------------------------------------------------------- SIMT kernel

constexpr int SA_WARPS = 8, SA_MAXD = 256, SA_MAXD_BIG = 512;

// MAXD: the largest head dim (MAXD / 32 output values per lane); SA_TK keys per tile (16 for the big variant,
// so its shared memory stays under 99 KiB: lanes 16..31 then score nothing).
template <class T, int MAXD, int SA_TK>
__device__ __forceinline__ void attn_simt_body(const AttnParams& p) {
  extern __shared__ float sm[];
  const int D = p.D, Dv = p.Dv;
  float* Ks = sm;                    // [TK][D+1] (padded: lane j reads row j)
  float* Vs = Ks + SA_TK * (D + 1);  // [TK][Dv]
  float* Qs = Vs + SA_TK * Dv;       // [WARPS][D]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int q0 = blockIdx.x * SA_WARPS, qi = q0 + warp, b = blockIdx.y / p.H, h = blockIdx.y % p.H;
  const T* qg = (const T*)p.q + (int64_t)b * p.Lq * p.ldq + (int64_t)h * D;
  const T* kg = (const T*)p.k + (int64_t)b * p.Lk * p.ldk + (int64_t)h * D;
  const T* vg = (const T*)p.v + (int64_t)b * p.Lk * p.ldv + (int64_t)h * Dv;

  float* q = Qs + warp * D;
  for (int d = lane; d < D; d += 32) q[d] = qi < p.Lq ? to_f(qg[(int64_t)qi * p.ldq + d]) * p.scale_log2 : 0.f;

  float o[MAXD / 32];
#pragma unroll
  for (int i = 0; i < MAXD / 32; ++i) o[i] = 0.f;
  float m_run = -INFINITY, l_run = 0.f;
  const int nkv = kv_tiles(p, q0, SA_WARPS, SA_TK);
  for (int j = 0; j < nkv; ++j) {
    const int k0 = j * SA_TK;
    __syncthreads();  // the previous tile is consumed (and Qs written, on the first pass)
    for (int e = tid; e < SA_TK * D; e += 256) {
      const int r = e / D, d = e - r * D;
      Ks[r * (D + 1) + d] = k0 + r < p.Lk ? to_f(kg[(int64_t)(k0 + r) * p.ldk + d]) : 0.f;
    }
    for (int e = tid; e < SA_TK * Dv; e += 256) {
      const int r = e / Dv, d = e - r * Dv;
      Vs[e] = k0 + r < p.Lk ? to_f(vg[(int64_t)(k0 + r) * p.ldv + d]) : 0.f;
    }
    __syncthreads();
    const int key = k0 + lane;
    float sc = 0.f;
    if (lane < SA_TK) {
      const float* kr = Ks + lane * (D + 1);
      for (int d = 0; d < D; ++d) sc = fmaf(q[d], kr[d], sc);
    }
    if (lane >= SA_TK || key >= p.Lk || (p.causal && key > qi)) sc = -INFINITY;
    const float m_new = fmaxf(m_run, warp_max(sc));
    const float base = m_new == -INFINITY ? 0.f : m_new;
    const float corr = exp2f(m_run - base), pj = exp2f(sc - base);
    l_run = l_run * corr + warp_sum(pj);
    m_run = m_new;
#pragma unroll
    for (int i = 0; i < MAXD / 32; ++i) o[i] *= corr;
    for (int jj = 0; jj < SA_TK; ++jj) {
      const float pk = __shfl_sync(0xffffffffu, pj, jj);
      const float* vr = Vs + jj * Dv;
#pragma unroll
      for (int i = 0; i < MAXD / 32; ++i) {
        const int d = lane + 32 * i;
        if (d < Dv) o[i] = fmaf(pk, vr[d], o[i]);
      }
    }
  }
  if (qi >= p.Lq) return;
  const float inv = l_run > 0.f ? 1.f / l_run : 0.f;
  T* orow = (T*)p.o + ((int64_t)b * p.Lq + qi) * p.ldo + (int64_t)h * Dv;
#pragma unroll
  for (int i = 0; i < MAXD / 32; ++i) {
    const int d = lane + 32 * i;
    if (d < Dv) orow[d] = from_f<T>(o[i] * inv);
  }
  if (p.lse && lane == 0)
    p.lse[((int64_t)b * p.H + h) * p.Lq + qi] = l_run > 0.f ? (m_run + log2f(l_run)) * kLn2 : -INFINITY;
}

template <class T, int SA_TK>
__global__ void __launch_bounds__(256) attn_simt_kernel(const AttnParams p) {
  attn_simt_body<T, SA_MAXD, SA_TK>(p);
}
// The 512-wide variant declares one block per SM enough (its ~82 KiB of shared memory allows two at most):
// with the thread count alone ptxas held it to 64 registers on sm_80-89 and spilled 8-16 bytes of its 16
// output values per lane (now 84-90 registers there, 96-99 on sm_90, no spills).
template <class T, int SA_TK>
__global__ void __launch_bounds__(256, 1) attn_simt_big_kernel(const AttnParams p) {
  attn_simt_body<T, SA_MAXD_BIG, SA_TK>(p);
}

// ---------------------------------------------------------------- launchers

template <class T, int DP, int WM, int MINB = 1>
void launch_flash(const AttnParams& p, cudaStream_t s) {
  using C = FaCfg<DP, WM, (MINB > 1 && DP == 64 ? 32 : 0)>;
  const void* kernel;
  if constexpr (MINB > 1) kernel = (const void*)flash_attn_occ4_kernel<T, DP>;
  else kernel = (const void*)flash_attn_kernel<T, DP, WM>;
  allow_smem(kernel, C::SMEM);
  if (MINB > 1) {  // the largest shared-memory carveout, so that four blocks' tiles fit beside each other
    static bool once = [&] {
      cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
      cudaGetLastError();
      return true;
    }();
    (void)once;
  }
  dim3 grid((p.Lq + C::BQ - 1) / C::BQ, p.B * p.H);
  if constexpr (MINB > 1) flash_attn_occ4_kernel<T, DP><<<grid, C::THREADS, C::SMEM, s>>>(p);
  else flash_attn_kernel<T, DP, WM><<<grid, C::THREADS, C::SMEM, s>>>(p);
}

template <class T>
void launch_attention(const AttnParams& p, bool tensor_cores, cudaStream_t s) {
  if constexpr (!std::is_same<T, float>::value) {
#ifdef HSD_WGMMA
    // the Hopper wgmma kernel (attention_sm90a.cu) on sm_90 for D = Dv <= 64 and 512 keys or more
    if (tensor_cores && launch_attention_wgmma(p, std::is_same<T, bf16>::value, s)) return;
#endif
    if (tensor_cores) {
      // Two m tiles per warp (128-row blocks) for the 48 bucket (SD1.5's d = 40) when that still gives every SM
      // a block: on an H200 168 against 152 TFLOP/s (self, L = 4096) and 40 against 33 (77 keys); at d = 64 it
      // measured slower (173 against 201: 254 registers leave two blocks per SM instead of three), and at 80
      // it spilled. HYPERSD_ATTN_WM=1|2 forces one up to d = 64 (gpu-check runs the tests with both).
      static const int force = [] {
        const char* e = std::getenv("HYPERSD_ATTN_WM");
        return e ? std::atoi(e) : 0;
      }();
      const bool two = p.D <= 64 && (force ? force == 2 : p.D <= 48 && (int64_t)(p.Lq + 127) / 128 * p.B * p.H >= sm_count());
      // One m tile a warp at d <= 64: registers capped at 128 for four blocks (16 warps) per SM (at d = 64 with
      // 32-key tiles, which fit 128 registers without spills). Nsight Compute on the uncapped d = 64 kernel (160
      // registers, 64-key tiles): three blocks, issue slots 51% busy, 4.9 cycles per issued instruction, the
      // tensor pipe 32% busy (latency-bound). HYPERSD_ATTN_OCC=3 runs the uncapped kernels.
      static const bool occ4 = [] {
        const char* e = std::getenv("HYPERSD_ATTN_OCC");
        return !(e && std::atoi(e) == 3);
      }();
      if (p.D <= 48) two ? launch_flash<T, 48, 2>(p, s) : occ4 ? launch_flash<T, 48, 1, 4>(p, s) : launch_flash<T, 48, 1>(p, s);
      else if (p.D <= 64) two ? launch_flash<T, 64, 2>(p, s) : occ4 ? launch_flash<T, 64, 1, 4>(p, s) : launch_flash<T, 64, 1>(p, s);
      else if (p.D <= 80) launch_flash<T, 80, 1>(p, s);
      else if (p.D <= 128) launch_flash<T, 128, 1>(p, s);
      else launch_flash<T, 160, 1>(p, s);
      return;
    }
  }
  dim3 grid((p.Lq + SA_WARPS - 1) / SA_WARPS, p.B * p.H);
  if (p.D <= SA_MAXD && p.Dv <= SA_MAXD) {
    constexpr int TK = 32;
    const int smem = (TK * (p.D + 1) + TK * p.Dv + SA_WARPS * p.D) * 4;
    allow_smem((const void*)attn_simt_kernel<T, TK>, smem);
    attn_simt_kernel<T, TK><<<grid, 256, smem, s>>>(p);
  } else {  // the VAE's single 512-channel head
    constexpr int TK = 16;
    const int smem = (TK * (p.D + 1) + TK * p.Dv + SA_WARPS * p.D) * 4;
    allow_smem((const void*)attn_simt_big_kernel<T, TK>, smem);
    attn_simt_big_kernel<T, TK><<<grid, 256, smem, s>>>(p);
  }
}

void attention(const OpContext& ctx) {
  const char* op = "attention";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 3, 1);
  const Tensor& q0 = ctx.in[0];
  const Tensor& k0 = ctx.in[1];
  const Tensor& v0 = ctx.in[2];
  const Tensor& o = ctx.out[0];
  for (const Tensor* t : {&q0, &k0, &v0, &o}) need_float(op, "q, k, v and o", *t);
  need_contiguous_out(op, o);
  const int64_t H = ctx.attrs.i("heads");
  const std::string all = "q " + q0.describe() + ", k " + k0.describe() + ", v " + v0.describe();
  if (q0.dim() != 3 || k0.dim() != 3 || v0.dim() != 3) fail(op, "q, k, v must be [B, L, H*D]: " + all);
  if (H < 1 || q0.size(2) % H != 0 || v0.size(2) % H != 0) fail(op, "channels must split into heads=" + std::to_string(H) + ": " + all);
  const int64_t B = q0.size(0), Lq = q0.size(1), Lk = k0.size(1), D = q0.size(2) / H, Dv = v0.size(2) / H;
  if (k0.size(0) != B || v0.size(0) != B || v0.size(1) != Lk || k0.size(2) != q0.size(2))
    fail(op, "k must be [B, Lk, H*D] and v [B, Lk, H*Dv] for q [B, Lq, H*D]: " + all);
  need_shape(op, "o", o, {B, Lq, H * Dv});
  float* lse = nullptr;
  if (ctx.out.size() > 1) {
    const Tensor& l = ctx.out[1];
    if (l.dtype != DType::F32) fail(op, "lse must be f32, got " + l.describe());
    need_contiguous_out(op, l);
    need_shape(op, "lse", l, {B, H, Lq});
    lse = l.data<float>();
  }
  if (B == 0 || Lq == 0 || (o.numel() == 0 && !lse)) return;
  if (D == 0) fail(op, "head dim 0: " + all);
  if (Lk == 0) fail(op, "needs at least one key: " + all);
  if (D > SA_MAXD_BIG || Dv > SA_MAXD_BIG) fail(op, "head dims above 512 are not supported: " + all);
  if (B * H > 65535) fail(op, "B*heads must be <= 65535: " + all);
  if (Lq > (1LL << 31) - 64 || Lk > (1LL << 31) - 64) fail(op, "sequence too long: " + all);
  const DType dt = o.dtype;
  const Tensor q = as_dtype(q0, dt, s), k = as_dtype(k0, dt, s), v = as_dtype(v0, dt, s);

  AttnParams p;
  p.q = q.raw();
  p.k = k.raw();
  p.v = v.raw();
  p.o = o.raw();
  p.lse = lse;
  p.B = (int)B;
  p.H = (int)H;
  p.Lq = (int)Lq;
  p.Lk = (int)Lk;
  p.D = (int)D;
  p.Dv = (int)Dv;
  p.ldq = H * D;
  p.ldk = H * D;
  p.ldv = H * Dv;
  p.ldo = H * Dv;
  const double scale = ctx.attrs.f("scale", 1.0 / std::sqrt((double)D));
  p.scale_log2 = (float)(scale * 1.4426950408889634);
  p.causal = ctx.attrs.i("causal", 0) != 0;
  const bool tc = dt != DType::F32 && D == Dv && D % 8 == 0 && D <= 160 && aligned16(p.q) && aligned16(p.k) &&
                  aligned16(p.v) && aligned16(p.o);
  dispatch_float(op, dt, [&](auto tag) { launch_attention<decltype(tag)>(p, tc, s); });
}

// ---------------------------------------------------------------- backward
// attention_backward: inputs q, k, v, o, do [, lse]; outputs [dq] [dk, dv] (need_dq / need_dkv), f32, with
// q's / k's / v's shapes. Per head, S = scale q k^T, P = exp(S - lse) (recomputed, no Lq x Lk matrix),
// D_i = do_i . o_i:  dv = P^T do,  dS = P (do v^T - D),  dq = scale dS k,  dk = scale dS^T q.
// Like the CPU kernel, two passes so that every warp owns the rows it writes (no atomics, deterministic):
//   dkv: a warp per key (8 keys per block) walks the queries that see it, 32 at a time from shared memory;
//   dq:  a warp per query walks the key tiles.
// Lanes split the head dim (up to 256: 8 values per lane); each (query, key) pair costs two warp-sum
// reductions. When lse is not given the forward kernel recomputes it first. Everything in f32 (f16/bf16
// inputs are converted): simple and exact, and slow (~1 TFLOP/s); f16/bf16 inputs with head dims up to 64 take
// the tensor-core kernels below (attn_bwd_*_mma_kernel).

constexpr int AB_WARPS = 8, AB_TILE = 32, AB_V = SA_MAXD / 32;

struct AttnBwd {
  const float *q, *k, *v, *dout, *lse, *delta;  // delta: D_i [B, H, Lq]
  float *dq, *dk, *dv;
  int B, H, Lq, Lk, D, Dv;
  float scale;
  int causal;
};

// delta[b, h, i] = do_i . o_i (one warp per (b, i, h)).
__global__ void __launch_bounds__(256) attn_delta_kernel(const float* __restrict__ o, const float* __restrict__ dout,
                                                         float* __restrict__ delta, int B, int Lq, int H, int Dv) {
  const int lane = threadIdx.x & 31;
  const int64_t w = blockIdx.x * 8LL + (threadIdx.x >> 5);
  if (w >= (int64_t)B * Lq * H) return;
  const int h = (int)(w % H);
  const int64_t bi = w / H;
  const int b = (int)(bi / Lq), i = (int)(bi % Lq);
  const float* orow = o + w * Dv;
  const float* drow = dout + w * Dv;
  float acc = 0.f;
  for (int d = lane; d < Dv; d += 32) acc = fmaf(orow[d], drow[d], acc);
  acc = warp_sum(acc);
  if (lane == 0) delta[((int64_t)b * H + h) * Lq + i] = acc;
}

// Loads this lane's slice (d = lane + 32 t) of a row into registers.
__device__ __forceinline__ void load_slice(float* r, const float* row, int n, int lane) {
#pragma unroll
  for (int t = 0; t < AB_V; ++t) r[t] = lane + 32 * t < n ? row[lane + 32 * t] : 0.f;
}
__device__ __forceinline__ float dot_slice(const float* r, const float* row, int n, int lane) {
  float acc = 0.f;
#pragma unroll
  for (int t = 0; t < AB_V; ++t)
    if (lane + 32 * t < n) acc = fmaf(r[t], row[lane + 32 * t], acc);
  return warp_sum(acc);
}

__global__ void __launch_bounds__(256) attn_bwd_dkv_kernel(const AttnBwd a) {
  extern __shared__ float sm[];
  float* Qs = sm;                       // [TILE][D]
  float* Ds = Qs + AB_TILE * a.D;       // [TILE][Dv] (do rows)
  float* Ls = Ds + AB_TILE * a.Dv;      // [TILE] lse
  float* Es = Ls + AB_TILE;             // [TILE] delta
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, tid = threadIdx.x;
  const int b = blockIdx.y / a.H, h = blockIdx.y % a.H, j0 = blockIdx.x * AB_WARPS, j = j0 + warp;
  const int64_t ldq = (int64_t)a.H * a.D, ldv = (int64_t)a.H * a.Dv;
  float kr[AB_V], vr[AB_V], dk[AB_V], dv[AB_V];
  const bool key_ok = j < a.Lk;
  load_slice(kr, a.k + ((int64_t)b * a.Lk + (key_ok ? j : 0)) * ldq + (int64_t)h * a.D, a.D, lane);
  load_slice(vr, a.v + ((int64_t)b * a.Lk + (key_ok ? j : 0)) * ldv + (int64_t)h * a.Dv, a.Dv, lane);
#pragma unroll
  for (int t = 0; t < AB_V; ++t) dk[t] = dv[t] = 0.f;
  const int i_start = a.causal ? (j0 / AB_TILE) * AB_TILE : 0;
  for (int i0 = i_start; i0 < a.Lq; i0 += AB_TILE) {
    __syncthreads();
    for (int e = tid; e < AB_TILE * a.D; e += 256) {
      const int r = e / a.D, d = e - r * a.D;
      Qs[e] = i0 + r < a.Lq ? a.q[((int64_t)b * a.Lq + i0 + r) * ldq + (int64_t)h * a.D + d] : 0.f;
    }
    for (int e = tid; e < AB_TILE * a.Dv; e += 256) {
      const int r = e / a.Dv, d = e - r * a.Dv;
      Ds[e] = i0 + r < a.Lq ? a.dout[((int64_t)b * a.Lq + i0 + r) * ldv + (int64_t)h * a.Dv + d] : 0.f;
    }
    if (tid < AB_TILE) {
      const int64_t li = ((int64_t)b * a.H + h) * a.Lq + i0 + tid;
      Ls[tid] = i0 + tid < a.Lq ? a.lse[li] : 0.f;
      Es[tid] = i0 + tid < a.Lq ? a.delta[li] : 0.f;
    }
    __syncthreads();
    const int n = min(AB_TILE, a.Lq - i0);
    for (int r = 0; r < n; ++r) {
      const int i = i0 + r;
      if (a.causal && i < j) continue;  // uniform per warp
      const float* qi = Qs + r * a.D;
      const float* di = Ds + r * a.Dv;
      const float p = expf(dot_slice(kr, qi, a.D, lane) * a.scale - Ls[r]);
      const float ds = p * (dot_slice(vr, di, a.Dv, lane) - Es[r]);
#pragma unroll
      for (int t = 0; t < AB_V; ++t) {
        if (lane + 32 * t < a.Dv) dv[t] = fmaf(p, di[lane + 32 * t], dv[t]);
        if (lane + 32 * t < a.D) dk[t] = fmaf(a.scale * ds, qi[lane + 32 * t], dk[t]);
      }
    }
  }
  if (!key_ok) return;
  float* dkr = a.dk + ((int64_t)b * a.Lk + j) * ldq + (int64_t)h * a.D;
  float* dvr = a.dv + ((int64_t)b * a.Lk + j) * ldv + (int64_t)h * a.Dv;
#pragma unroll
  for (int t = 0; t < AB_V; ++t) {
    if (lane + 32 * t < a.D) dkr[lane + 32 * t] = dk[t];
    if (lane + 32 * t < a.Dv) dvr[lane + 32 * t] = dv[t];
  }
}

__global__ void __launch_bounds__(256) attn_bwd_dq_kernel(const AttnBwd a) {
  extern __shared__ float sm[];
  float* Ks = sm;                  // [TILE][D]
  float* Vs = Ks + AB_TILE * a.D;  // [TILE][Dv]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, tid = threadIdx.x;
  const int b = blockIdx.y / a.H, h = blockIdx.y % a.H, q0 = blockIdx.x * AB_WARPS, i = q0 + warp;
  const int64_t ldq = (int64_t)a.H * a.D, ldv = (int64_t)a.H * a.Dv;
  const bool row_ok = i < a.Lq;
  const int ic = row_ok ? i : 0;
  float qr[AB_V], dr[AB_V], dq[AB_V];
  load_slice(qr, a.q + ((int64_t)b * a.Lq + ic) * ldq + (int64_t)h * a.D, a.D, lane);
  load_slice(dr, a.dout + ((int64_t)b * a.Lq + ic) * ldv + (int64_t)h * a.Dv, a.Dv, lane);
  const int64_t li = ((int64_t)b * a.H + h) * a.Lq + ic;
  const float lse = a.lse[li], delta = a.delta[li];
#pragma unroll
  for (int t = 0; t < AB_V; ++t) dq[t] = 0.f;
  const int k_end = a.causal ? min(a.Lk, min(q0 + AB_WARPS, a.Lq)) : a.Lk;  // keys any row of the block sees
  for (int j0 = 0; j0 < k_end; j0 += AB_TILE) {
    __syncthreads();
    for (int e = tid; e < AB_TILE * a.D; e += 256) {
      const int r = e / a.D, d = e - r * a.D;
      Ks[e] = j0 + r < a.Lk ? a.k[((int64_t)b * a.Lk + j0 + r) * ldq + (int64_t)h * a.D + d] : 0.f;
    }
    for (int e = tid; e < AB_TILE * a.Dv; e += 256) {
      const int r = e / a.Dv, d = e - r * a.Dv;
      Vs[e] = j0 + r < a.Lk ? a.v[((int64_t)b * a.Lk + j0 + r) * ldv + (int64_t)h * a.Dv + d] : 0.f;
    }
    __syncthreads();
    const int n = min(AB_TILE, a.Lk - j0);
    for (int r = 0; r < n; ++r) {
      const int j = j0 + r;
      if (a.causal && j > i) break;  // uniform per warp
      const float* kj = Ks + r * a.D;
      const float p = expf(dot_slice(qr, kj, a.D, lane) * a.scale - lse);
      const float ds = p * (dot_slice(dr, Vs + r * a.Dv, a.Dv, lane) - delta);
#pragma unroll
      for (int t = 0; t < AB_V; ++t)
        if (lane + 32 * t < a.D) dq[t] = fmaf(a.scale * ds, kj[lane + 32 * t], dq[t]);
    }
  }
  if (!row_ok) return;
  float* dqr = a.dq + ((int64_t)b * a.Lq + i) * ldq + (int64_t)h * a.D;
#pragma unroll
  for (int t = 0; t < AB_V; ++t)
    if (lane + 32 * t < a.D) dqr[lane + 32 * t] = dq[t];
}

// ---------------------------------------------------------------- tensor-core backward (FA2-style)
// For f16 / bf16 q, k, v with D == Dv, D % 8 == 0, D <= 64 (padded to DP = 48 or 64; 80 and 160 with
// HYPERSD_ATTN_BWD=mma-all), 16-byte aligned rows. The same two passes as the SIMT kernels (every warp owns the rows it writes: no atomics,
// deterministic), on mma.sync m16n8k16 with f32 accumulators, P and dS rounded to the input dtype as mma
// operands (as FlashAttention-2 does):
//   dkv: a block of 4 warps owns 64 keys (16 a warp, K and V kept as A fragments) and walks the query tiles
//        of 64 that see them (Q, dO, lse and D double-buffered in shared memory): S^T = K Q^T, P^T =
//        exp(scale S^T - lse), dP^T = V dO^T, dS^T = P^T (dP^T - D); dV += P^T dO, dK += dS^T Q.
//   dq:  a block owns 64 queries (Q and dO kept as A fragments) and walks the key tiles of 64 (K, V
//        double-buffered): S = Q K^T, P, dP = dO V^T, dS; dQ += dS K.
// The fragment layouts and ldmatrix addressing are the forward kernel's (flash_attn_body): a B operand
// stored [n][k] (K in S = Q K^T) takes ldmatrix, one stored [k][n] (V in O += P V) ldmatrix.trans.
// Head dims 65-160 (buckets 80 and 160: FbCfg) are compiled and tested on the CPU twin's cases but have not run
// on a GPU yet: they take these kernels only with HYPERSD_ATTN_BWD=mma-all (gpu-check tests and times them).
// Measured on an H200 (session 21, bench/ops_gpu.ts --only train, f16, dq + dk + dv counted as 2.5x the forward's
// FLOPs): B 1, L 1024, 8 heads, d 64: 78.1 TFLOP/s (the SIMT kernels: 1.3); L 4096, 8 heads, d 40: 119.6 (0.9);
// L 4096, 10 heads, d 64: 153.5 (1.4). Against float64 gradients (test/autograd/attention_half.test.ts): relative
// errors ~3e-4 with f16 inputs and ~2.4e-3 with bf16 (the SIMT kernels, all in f32: 1e-5 to 8e-4); memcheck and
// racecheck clean. The default since then; HYPERSD_ATTN_BWD=simt keeps the SIMT kernels.

struct AttnBwdH {
  const void *q, *k, *v, *dout;  // [B, L, H*D] contiguous, the compute dtype
  const float *lse, *delta;      // [B, H, Lq]
  float *dq, *dk, *dv;           // [B, L, H*D] f32
  int B, H, Lq, Lk, D;
  int64_t ld;  // H*D
  float scale, scale_log2;
  int causal;
};

// Per head-dim bucket DP: BQ query rows a dkv block takes per step (64; 32 at DP = 80; 16 at DP = 160) and BKV
// keys a dq block takes per step (64; 32 at DP = 160), bounding the S / dP accumulators, and whether the dkv
// block keeps K and V (KVREG) and the dq block Q and dO (QREG) as register fragments: at DP = 160 they are read
// from shared memory at each use (dK and dV of 16 keys x 160 columns alone take 160 registers a thread, and
// with the fragments in registers ptxas spilled 16-40 bytes).
template <int DP>
struct FbCfg {
  static constexpr int LD = DP + 8, BK = 64, BQ = DP <= 64 ? 64 : DP <= 80 ? 32 : 16, BQD = 64, BKV = DP <= 80 ? 64 : 32;
  static constexpr bool KVREG = DP <= 80, QREG = DP <= 80;
  static constexpr int SMEM_DKV = (4 * BQ + 2 * BK) * LD * 2 + 4 * BQ * 4;  // Q, dO x 2; K, V; lse, D x 2
  static constexpr int SMEM_DQ = (2 * BQD + 4 * BKV) * LD * 2;              // Q, dO; K, V x 2
};

template <class T, int DP>
__global__ void __launch_bounds__(128) attn_bwd_dkv_mma_kernel(const AttnBwdH a) {
  using C = FbCfg<DP>;
  constexpr int BK = C::BK, BQ = C::BQ, LD = C::LD, KS = DP / 16, NT = BQ / 8, NO = DP / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);  // [2][BQ][LD]
  T* Os = Qs + 2 * BQ * LD;                // [2][BQ][LD] dO
  T* Ks = Os + 2 * BQ * LD;                // [BK][LD]
  T* Vs = Ks + BK * LD;                    // [BK][LD]
  float* Ls = reinterpret_cast<float*>(Vs + BK * LD);  // [2][BQ] lse * log2(e)
  float* Es = Ls + 2 * BQ;                             // [2][BQ] delta
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int k0 = blockIdx.x * BK, b = blockIdx.y / a.H, h = blockIdx.y % a.H;
  const int64_t base_q = (int64_t)b * a.Lq * a.ld + (int64_t)h * a.D, base_k = (int64_t)b * a.Lk * a.ld + (int64_t)h * a.D;
  const T* qg = (const T*)a.q + base_q;
  const T* dog = (const T*)a.dout + base_q;
  const float* lseg = a.lse + ((int64_t)b * a.H + h) * a.Lq;
  const float* dg = a.delta + ((int64_t)b * a.H + h) * a.Lq;
  // causal: queries before the block's first key see none of its keys
  const int i_start = a.causal ? (k0 / BQ) * BQ : 0;
  const int nq = a.Lq > i_start ? (a.Lq - i_start + BQ - 1) / BQ : 0;
  auto stage_q = [&](int buf, int i0) {
    stage_tile<T, BQ, DP>(Qs + buf * BQ * LD, qg, a.ld, i0, a.Lq, a.D, tid);
    stage_tile<T, BQ, DP>(Os + buf * BQ * LD, dog, a.ld, i0, a.Lq, a.D, tid);
    if (tid < BQ) {
      const bool in = i0 + tid < a.Lq;
      Ls[buf * BQ + tid] = in ? lseg[i0 + tid] * 1.44269504088896341f : 0.f;
      Es[buf * BQ + tid] = in ? dg[i0 + tid] : 0.f;
    }
  };
  stage_tile<T, BK, DP>(Ks, (const T*)a.k + base_k, a.ld, k0, a.Lk, a.D, tid);
  stage_tile<T, BK, DP>(Vs, (const T*)a.v + base_k, a.ld, k0, a.Lk, a.D, tid);
  if (nq > 0) stage_q(0, i_start);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  // K and V as A fragments of this warp's 16 keys: in registers (KVREG), else read at each use
  constexpr int KF = C::KVREG ? KS : 1;
  uint32_t kf[KF][4], vf[KF][4];
  const T* ka = Ks + (warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8;
  const T* va = Vs + (warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8;
  if constexpr (C::KVREG) {
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      ldmatrix_x4(kf[ks], ka + ks * 16);
      ldmatrix_x4(vf[ks], va + ks * 16);
    }
  }
  float dk[NO][4], dv[NO][4];
#pragma unroll
  for (int n = 0; n < NO; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  const int kr0 = k0 + warp * 16 + g;  // this thread's key rows kr0, kr0 + 8

  for (int it = 0; it < nq; ++it) {
    const int buf = it & 1, i0 = i_start + it * BQ;
    if (it + 1 < nq) stage_q(buf ^ 1, i0 + BQ);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* qt = Qs + buf * BQ * LD;
    const T* ot = Os + buf * BQ * LD;
    const float* lt = Ls + buf * BQ;
    const float* et = Es + buf * BQ;

    float st[NT][4], dpt[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.f;
#pragma unroll
    for (int kq = 0; kq < KS; ++kq) {
      const int kx = C::KVREG ? kq : 0;
      if constexpr (!C::KVREG) {
        ldmatrix_x4(kf[0], ka + kq * 16);
        ldmatrix_x4(vf[0], va + kq * 16);
      }
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        const int off = (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + kq * 16 + ((lane >> 3) & 1) * 8;
        uint32_t r[4], w[4];
        ldmatrix_x4(r, qt + off);
        mma16816<T>(st[2 * np], kf[kx], r[0], r[1]);
        mma16816<T>(st[2 * np + 1], kf[kx], r[2], r[3]);
        ldmatrix_x4(w, ot + off);
        mma16816<T>(dpt[2 * np], vf[kx], w[0], w[1]);
        mma16816<T>(dpt[2 * np + 1], vf[kx], w[2], w[3]);
      }
    }
    // st[n][e]: key kr0 + 8 (e >> 1), query i0 + 8 n + 2 t + (e & 1)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qc = n * 8 + 2 * t + (e & 1), qi = i0 + qc, key = kr0 + 8 * (e >> 1);
        float pv = exp2_ftz(st[n][e] * a.scale_log2 - lt[qc]);
        if (qi >= a.Lq || (a.causal && qi < key)) pv = 0.f;
        st[n][e] = pv;
        dpt[n][e] = pv * (dpt[n][e] - et[qc]);
      }
    // dV += P^T dO, dK += dS^T Q: the accumulators of query tiles 2kk, 2kk+1 are the A fragment of queries
    // 16kk..16kk+15; dO and Q stored [query][d] are the [k][n] B operand (ldmatrix.trans)
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) {
      uint32_t pa[4], da[4];
      acc_to_a<T>(st[2 * kk], st[2 * kk + 1], pa);
      acc_to_a<T>(dpt[2 * kk], dpt[2 * kk + 1], da);
#pragma unroll
      for (int dd = 0; dd < DP / 16; ++dd) {
        const int off = (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dd * 16 + (lane >> 4) * 8;
        uint32_t r[4], w[4];
        ldmatrix_x4_trans(r, ot + off);
        mma16816<T>(dv[2 * dd], pa, r[0], r[1]);
        mma16816<T>(dv[2 * dd + 1], pa, r[2], r[3]);
        ldmatrix_x4_trans(w, qt + off);
        mma16816<T>(dk[2 * dd], da, w[0], w[1]);
        mma16816<T>(dk[2 * dd + 1], da, w[2], w[3]);
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();
  float* dkg = a.dk + base_k;
  float* dvg = a.dv + base_k;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int kr = kr0 + 8 * r;
    if (kr >= a.Lk) continue;
#pragma unroll
    for (int n = 0; n < NO; ++n) {
      const int d = n * 8 + 2 * t;
      if (d >= a.D) continue;
      *reinterpret_cast<float2*>(dkg + (int64_t)kr * a.ld + d) = make_float2(dk[n][2 * r] * a.scale, dk[n][2 * r + 1] * a.scale);
      *reinterpret_cast<float2*>(dvg + (int64_t)kr * a.ld + d) = make_float2(dv[n][2 * r], dv[n][2 * r + 1]);
    }
  }
}

template <class T, int DP>
__global__ void __launch_bounds__(128) attn_bwd_dq_mma_kernel(const AttnBwdH a) {
  using C = FbCfg<DP>;
  constexpr int BQ = C::BQD, BKV = C::BKV, LD = C::LD, KS = DP / 16, NT = BKV / 8, NO = DP / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);  // [BQ][LD]
  T* Os = Qs + BQ * LD;                    // [BQ][LD] dO
  T* Ks = Os + BQ * LD;                    // [2][BKV][LD]
  T* Vs = Ks + 2 * BKV * LD;               // [2][BKV][LD]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int q0 = blockIdx.x * BQ, b = blockIdx.y / a.H, h = blockIdx.y % a.H;
  const int64_t base_q = (int64_t)b * a.Lq * a.ld + (int64_t)h * a.D, base_k = (int64_t)b * a.Lk * a.ld + (int64_t)h * a.D;
  const T* kg = (const T*)a.k + base_k;
  const T* vg = (const T*)a.v + base_k;
  int nkv = (a.Lk + BKV - 1) / BKV;
  if (a.causal) nkv = min(nkv, (min(q0 + BQ, a.Lq) - 1) / BKV + 1);  // keys past the block's last query: none
  stage_tile<T, BQ, DP>(Qs, (const T*)a.q + base_q, a.ld, q0, a.Lq, a.D, tid);
  stage_tile<T, BQ, DP>(Os, (const T*)a.dout + base_q, a.ld, q0, a.Lq, a.D, tid);
  if (nkv > 0) {
    stage_tile<T, BKV, DP>(Ks, kg, a.ld, 0, a.Lk, a.D, tid);
    stage_tile<T, BKV, DP>(Vs, vg, a.ld, 0, a.Lk, a.D, tid);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  // Q and dO as A fragments of this warp's 16 queries: in registers (QREG), else read at each use
  constexpr int QF = C::QREG ? KS : 1;
  uint32_t qf[QF][4], of[QF][4];
  const T* qa = Qs + (warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8;
  const T* oa = Os + (warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8;
  if constexpr (C::QREG) {
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      ldmatrix_x4(qf[ks], qa + ks * 16);
      ldmatrix_x4(of[ks], oa + ks * 16);
    }
  }
  const int qr0 = q0 + warp * 16 + g;  // this thread's query rows qr0, qr0 + 8
  float l2[2], dl[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int qr = qr0 + 8 * r;
    const int64_t li = ((int64_t)b * a.H + h) * a.Lq + qr;
    l2[r] = qr < a.Lq ? a.lse[li] * 1.44269504088896341f : 0.f;
    dl[r] = qr < a.Lq ? a.delta[li] : 0.f;
  }
  float dq[NO][4];
#pragma unroll
  for (int n = 0; n < NO; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;

  for (int j = 0; j < nkv; ++j) {
    const int buf = j & 1;
    if (j + 1 < nkv) {
      stage_tile<T, BKV, DP>(Ks + (buf ^ 1) * BKV * LD, kg, a.ld, (j + 1) * BKV, a.Lk, a.D, tid);
      stage_tile<T, BKV, DP>(Vs + (buf ^ 1) * BKV * LD, vg, a.ld, (j + 1) * BKV, a.Lk, a.D, tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* kt = Ks + buf * BKV * LD;
    const T* vt = Vs + buf * BKV * LD;
    float s[NT][4], dp[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
    for (int kq = 0; kq < KS; ++kq) {
      const int qx = C::QREG ? kq : 0;
      if constexpr (!C::QREG) {
        ldmatrix_x4(qf[0], qa + kq * 16);
        ldmatrix_x4(of[0], oa + kq * 16);
      }
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        const int off = (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + kq * 16 + ((lane >> 3) & 1) * 8;
        uint32_t r[4], w[4];
        ldmatrix_x4(r, kt + off);
        mma16816<T>(s[2 * np], qf[qx], r[0], r[1]);
        mma16816<T>(s[2 * np + 1], qf[qx], r[2], r[3]);
        ldmatrix_x4(w, vt + off);
        mma16816<T>(dp[2 * np], of[qx], w[0], w[1]);
        mma16816<T>(dp[2 * np + 1], of[qx], w[2], w[3]);
      }
    }
    // s[n][e]: query qr0 + 8 (e >> 1), key j BKV + 8 n + 2 t + (e & 1); s becomes dS
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = j * BKV + n * 8 + 2 * t + (e & 1), qr = qr0 + 8 * (e >> 1);
        float pv = exp2_ftz(s[n][e] * a.scale_log2 - l2[e >> 1]);
        if (key >= a.Lk || (a.causal && key > qr)) pv = 0.f;
        s[n][e] = pv * (dp[n][e] - dl[e >> 1]);
      }
    // dQ += dS K: K stored [key][d] is the [k][n] B operand (ldmatrix.trans)
#pragma unroll
    for (int kk = 0; kk < BKV / 16; ++kk) {
      uint32_t da[4];
      acc_to_a<T>(s[2 * kk], s[2 * kk + 1], da);
#pragma unroll
      for (int dd = 0; dd < DP / 16; ++dd) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, kt + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dd * 16 + (lane >> 4) * 8);
        mma16816<T>(dq[2 * dd], da, r[0], r[1]);
        mma16816<T>(dq[2 * dd + 1], da, r[2], r[3]);
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();
  float* dqg = a.dq + base_q;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int qr = qr0 + 8 * r;
    if (qr >= a.Lq) continue;
#pragma unroll
    for (int n = 0; n < NO; ++n) {
      const int d = n * 8 + 2 * t;
      if (d < a.D) *reinterpret_cast<float2*>(dqg + (int64_t)qr * a.ld + d) = make_float2(dq[n][2 * r] * a.scale, dq[n][2 * r + 1] * a.scale);
    }
  }
}

template <class T, int DP>
void launch_bwd_mma(const AttnBwdH& a, bool need_dq, bool need_dkv, cudaStream_t s) {
  using C = FbCfg<DP>;
  const dim3 grid_k((unsigned)((a.Lk + C::BK - 1) / C::BK), (unsigned)(a.B * a.H));
  const dim3 grid_q((unsigned)((a.Lq + C::BQD - 1) / C::BQD), (unsigned)(a.B * a.H));
  if (need_dkv) {
    allow_smem((const void*)attn_bwd_dkv_mma_kernel<T, DP>, C::SMEM_DKV);
    attn_bwd_dkv_mma_kernel<T, DP><<<grid_k, 128, C::SMEM_DKV, s>>>(a);
  }
  if (need_dq) {
    allow_smem((const void*)attn_bwd_dq_mma_kernel<T, DP>, C::SMEM_DQ);
    attn_bwd_dq_mma_kernel<T, DP><<<grid_q, 128, C::SMEM_DQ, s>>>(a);
  }
}

template <class T>
void launch_bwd_mma_any(const AttnBwdH& a, bool need_dq, bool need_dkv, cudaStream_t s) {
  if (a.D <= 48) launch_bwd_mma<T, 48>(a, need_dq, need_dkv, s);
  else if (a.D <= 64) launch_bwd_mma<T, 64>(a, need_dq, need_dkv, s);
  else if (a.D <= 80) launch_bwd_mma<T, 80>(a, need_dq, need_dkv, s);
  else launch_bwd_mma<T, 160>(a, need_dq, need_dkv, s);
}

void attention_backward(const OpContext& ctx) {
  const char* op = "attention_backward";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 5, 0);
  const bool need_dq = ctx.attrs.i("need_dq", 1) != 0, need_dkv = ctx.attrs.i("need_dkv", 1) != 0;
  if (ctx.out.size() != (need_dq ? 1u : 0u) + (need_dkv ? 2u : 0u))
    fail(op, "expected outputs [dq][dk, dv] as need_dq / need_dkv say, got " + std::to_string(ctx.out.size()));
  const Tensor &q0 = ctx.in[0], &k0 = ctx.in[1], &v0 = ctx.in[2], &o0 = ctx.in[3], &do0 = ctx.in[4];
  for (const Tensor* t : {&q0, &k0, &v0, &o0, &do0}) need_float(op, "q, k, v, o and do", *t);
  const int64_t H = ctx.attrs.i("heads");
  const std::string all = "q " + q0.describe() + ", k " + k0.describe() + ", v " + v0.describe();
  if (q0.dim() != 3 || k0.dim() != 3 || v0.dim() != 3) fail(op, "q, k, v must be [B, L, H*D]: " + all);
  if (H < 1 || q0.size(2) % H != 0 || v0.size(2) % H != 0) fail(op, "channels must split into heads=" + std::to_string(H) + ": " + all);
  const int64_t B = q0.size(0), Lq = q0.size(1), Lk = k0.size(1), D = q0.size(2) / H, Dv = v0.size(2) / H;
  if (k0.size(0) != B || v0.size(0) != B || v0.size(1) != Lk || k0.size(2) != q0.size(2))
    fail(op, "k must be [B, Lk, H*D] and v [B, Lk, H*Dv] for q [B, Lq, H*D]: " + all);
  need_shape(op, "o", o0, {B, Lq, H * Dv});
  need_shape(op, "do", do0, {B, Lq, H * Dv});
  if (D > SA_MAXD || Dv > SA_MAXD) fail(op, "head dims above 256 are not supported: " + all);
  if (B * H > 65535) fail(op, "B*heads must be <= 65535: " + all);
  if (Lq > (1LL << 31) - 64 || Lk > (1LL << 31) - 64 || (B * Lq * H + 7) / 8 > 0x7fffffffLL) fail(op, "too long: " + all);
  size_t k = 0;
  OutAs dq, dk, dv;
  if (need_dq) {
    need_float(op, "dq", ctx.out[k]);
    need_shape(op, "dq", ctx.out[k], q0.shape);
    dq = OutAs(ctx.out[k++], DType::F32, false, s);
  }
  if (need_dkv) {
    need_float(op, "dk", ctx.out[k]);
    need_shape(op, "dk", ctx.out[k], k0.shape);
    dk = OutAs(ctx.out[k++], DType::F32, false, s);
    need_float(op, "dv", ctx.out[k]);
    need_shape(op, "dv", ctx.out[k], v0.shape);
    dv = OutAs(ctx.out[k++], DType::F32, false, s);
  }
  if (B == 0 || H == 0) return;
  if (Lq == 0 || Lk == 0) {  // no pairs: zero gradients
    for (const OutAs* t : {&dq, &dk, &dv})
      if (t->buf.storage && t->buf.numel()) {
        cudaMemsetAsync(t->buf.raw(), 0, t->buf.nbytes(), s);
        t->finish(s);
      }
    return;
  }
  const double scale = ctx.attrs.f("scale", 1.0 / std::sqrt((double)D));
  const int causal = ctx.attrs.i("causal", 0) != 0;
  // The tensor-core kernels (HYPERSD_ATTN_BWD=simt keeps the SIMT ones): f16 / bf16 q, k and v of one dtype,
  // D == Dv <= 64; do (f32
  // from autograd) is rounded to that dtype, and D_i = do_i . o_i is formed from the rounded do, so that the
  // rows of dS still sum to zero against the probabilities.
  const char* bwd_env = std::getenv("HYPERSD_ATTN_BWD");
  const DType hd = q0.dtype;
  Tensor qh, kh, vh, doh;
  const std::string bwd = bwd_env ? bwd_env : "";
  if (!bwd.empty() && bwd != "simt" && bwd != "mma" && bwd != "mma-all")
    fail(op, "HYPERSD_ATTN_BWD must be simt, mma or mma-all, got '" + bwd + "'");
  const int64_t max_d = bwd == "mma-all" ? 160 : 64;  // head dims 65-160: HYPERSD_ATTN_BWD=mma-all (not yet run on a GPU)
  bool mma = bwd != "simt" && (hd == DType::F16 || hd == DType::BF16) && k0.dtype == hd && v0.dtype == hd && D == Dv &&
             D % 8 == 0 && D <= max_d;
  if (mma) {
    qh = as_dtype(q0, hd, s);
    kh = as_dtype(k0, hd, s);
    vh = as_dtype(v0, hd, s);
    doh = as_dtype(do0, hd, s);
    mma = aligned16(qh.raw()) && aligned16(kh.raw()) && aligned16(vh.raw()) && aligned16(doh.raw());
  }
  const Tensor o = as_dtype(o0, DType::F32, s), dout = as_dtype(mma ? doh : do0, DType::F32, s);
  Tensor q, kk, v;  // f32 copies: the SIMT kernels', and the forward's when lse must be recomputed
  const bool given_lse = ctx.in.size() > 5 && ctx.in[5].storage;
  if (!mma || !given_lse) {
    q = as_dtype(q0, DType::F32, s);
    kk = as_dtype(k0, DType::F32, s);
    v = as_dtype(v0, DType::F32, s);
  }
  Tensor lse;
  if (given_lse) {
    need_shape(op, "lse", ctx.in[5], {B, H, Lq});
    lse = as_dtype(ctx.in[5], DType::F32, s);
  } else {  // recompute with the forward kernel
    lse = empty({B, H, Lq}, DType::F32, Device::CUDA);
    Tensor o_tmp = empty({B, Lq, H * Dv}, DType::F32, Device::CUDA);
    AttnParams p{q.raw(), kk.raw(), v.raw(), o_tmp.raw(), lse.data<float>(), (int)B, (int)H, (int)Lq, (int)Lk, (int)D,
                 (int)Dv, H * D, H * D, H * Dv, H * Dv, (float)(scale * 1.4426950408889634), causal};
    launch_attention<float>(p, false, s);
  }
  Tensor delta = empty({B, H, Lq}, DType::F32, Device::CUDA);
  attn_delta_kernel<<<(unsigned)((B * Lq * H + 7) / 8), 256, 0, s>>>(o.data<float>(), dout.data<float>(), delta.data<float>(),
                                                            (int)B, (int)Lq, (int)H, (int)Dv);
  if (mma) {
    const AttnBwdH ah{qh.raw(), kh.raw(), vh.raw(), doh.raw(), lse.data<float>(), delta.data<float>(),
                      need_dq ? dq.buf.data<float>() : nullptr, need_dkv ? dk.buf.data<float>() : nullptr,
                      need_dkv ? dv.buf.data<float>() : nullptr, (int)B, (int)H, (int)Lq, (int)Lk, (int)D, H * D,
                      (float)scale, (float)(scale * 1.4426950408889634), causal};
    if (hd == DType::F16) launch_bwd_mma_any<__half>(ah, need_dq, need_dkv, s);
    else launch_bwd_mma_any<bf16>(ah, need_dq, need_dkv, s);
    dq.finish(s);
    dk.finish(s);
    dv.finish(s);
    return;
  }
  AttnBwd a{q.data<float>(), kk.data<float>(), v.data<float>(), dout.data<float>(), lse.data<float>(), delta.data<float>(),
            need_dq ? dq.buf.data<float>() : nullptr, need_dkv ? dk.buf.data<float>() : nullptr,
            need_dkv ? dv.buf.data<float>() : nullptr, (int)B, (int)H, (int)Lq, (int)Lk, (int)D, (int)Dv, (float)scale,
            causal};
  const int smem = (int)(AB_TILE * (D + Dv) * 4 + 2 * AB_TILE * 4);
  if (need_dkv) {
    allow_smem((const void*)attn_bwd_dkv_kernel, smem);
    attn_bwd_dkv_kernel<<<dim3((unsigned)((Lk + AB_WARPS - 1) / AB_WARPS), (unsigned)(B * H)), 256, smem, s>>>(a);
  }
  if (need_dq) {
    allow_smem((const void*)attn_bwd_dq_kernel, smem);
    attn_bwd_dq_kernel<<<dim3((unsigned)((Lq + AB_WARPS - 1) / AB_WARPS), (unsigned)(B * H)), 256, smem, s>>>(a);
  }
  dq.finish(s);
  dk.finish(s);
  dv.finish(s);
}

}  // namespace
}  // namespace cu

void register_attention_cuda(OpRegistry& r) {
  r.add_cuda("attention", cu::attention);
  r.add_cuda("attention_backward", cu::attention_backward);
}

}  // namespace hsd
