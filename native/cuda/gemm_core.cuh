// The GEMM engine shared by gemm.cu (matmul, lora_linear, lora_linear_batched) and conv.cu (conv2d and
// lora_conv2d as implicit GEMM): C[z] = epilogue(A[z] B[z] (+ A2[z] B2[z])) for a batch of z.
//
// Tensor-core kernel (f16 / bf16 storage, f32 accumulators): a 128x128 output tile per block of 8 warps
// (2 x 4 warps, 64x32 each = 4 x 4 mma.sync.m16n8k16 per 16-wide k step), k tiles of 32 staged through
// shared memory by cp.async in a 3-stage ring (two tiles in flight while one is consumed), fragments read
// with ldmatrix (.trans where the stored operand is the transposed one). Shared rows are padded by 8
// elements (16 bytes) so the 8 row addresses of every ldmatrix phase hit distinct banks.
// The A operand is read from a row-major [M, K] matrix, a column-major one (transA), or gathered on the
// fly from an NHWC image for convolution (im2col never exists in memory). B is [N, K] (transB, the weight
// layout) or [K, N].
// An operand whose rows are not 16-byte aligned (odd K, a 3-channel image, a rank-4 LoRA) is staged with
// guarded scalar loads instead of cp.async: same kernel, same ring, a uniform branch.
//
// LoRA: a second k segment, A2 [M, K2] and B2 [N, K2], runs through the same ring after the first one and
// accumulates into the same registers, so y = x W^T + t up^T with t = scale * x down^T (computed before
// by this same kernel into a small [M, r] scratch) costs one pass over the output. That keeps the extra
// work at r/K + r/N of the plain GEMM: computing x down^T inside every output tile instead would redo it
// once per column tile (r/128 extra). lora_linear_batched picks the adapter per batch item from a device
// index (idx), so a batch can mix adapters without a host round trip.
//
// Epilogue (fused): v = act(alpha * acc + bias) + beta * C_old, stored in pairs.
//
// f32 tensors use a SIMT kernel with the same parameters (128x128 tile, k tiles of 8, 8x8 outputs per
// thread, register-staged double buffer): exact f32 products, no TF32.
#pragma once
#include "common.cuh"

namespace hsd {
namespace cu {

constexpr int GEMM_BM = 128, GEMM_BN = 128, GEMM_BK = 32, GEMM_STAGES = 3, GEMM_THREADS = 256, GEMM_PAD = 8;
enum AMode : int { A_ROWMAJOR = 0, A_COLMAJOR = 1, A_CONV = 2 };

struct ConvGeom {
  int H = 0, W = 0, Cin = 0, kh = 1, kw = 1, stride = 1, pad = 0, Ho = 0, Wo = 0;
};

struct GemmParams {
  int M = 0, N = 0;
  // segment 1: op(A) [M, K] op(B) [K, N]; lda/ldb are the row strides of the stored matrices.
  const void* A = nullptr;
  const void* B = nullptr;
  int K = 0;
  int64_t lda = 0, ldb = 0, sA = 0, sB = 0;  // sA/sB: batch strides (sB = 0: a weight shared by the batch)
  bool vecA = false, vecB = false;           // rows 16-byte aligned: cp.async staging
  // segment 2 (LoRA up-projection): A2 [M, K2] row-major, B2 [N, K2] row-major.
  const void* A2 = nullptr;
  const void* B2 = nullptr;
  int K2 = 0;
  int64_t lda2 = 0, ldb2 = 0, sA2 = 0, sB2 = 0;
  bool vecA2 = false, vecB2 = false;
  // Per-batch adapter: batch z uses B (idx_seg 1) or B2 (idx_seg 2) number idx[z], stride sB / sB2; an index
  // outside [0, n_idx) skips that segment (no adapter).
  const int* idx = nullptr;
  int idx_seg = 0, n_idx = 0;
  const float* scales = nullptr;  // per-batch multiplier of alpha, or null
  void* C = nullptr;
  int64_t ldc = 0, sC = 0;
  bool pairC = false;  // C rows allow paired (2-element) stores
  const void* bias = nullptr;
  int bias_dtype = 0;
  float alpha = 1.f, beta = 0.f;
  int act = 0;
  ConvGeom conv;
  // tc_gemm_kernel<..., STATS = true>: per 128-row tile (blockIdx.x) and column, the (K, o, M2) piece of the
  // stored output's column statistics at stats_part + (blockIdx.x * N + col) * 3 (chanstats.cuh).
  float* stats_part = nullptr;
};

// ---------------------------------------------------------------- epilogue (both kernels)

// The activation, the bias and the old C out of line: the epilogues store 32-64 pairs a thread in fully
// unrolled code, and with these inlined into every pair the wgmma kernel came to ~10900 PTX instructions,
// far past the instruction cache: Nsight Compute on an H200 found 59% of its stall cycles waiting for
// instruction fetch at K = 320 (the SD1.5 projections, where the epilogue is a large share of the work).
// Now a pair with none of them is a multiply, a pack and a store.
static __device__ __noinline__ float epi_extra(float x, const void* bias, int bias_dtype, int col, int act, float beta,
                                               float old) {
  if (bias) x += load_any(bias, bias_dtype, col);
  x = apply_act(act, x);
  if (beta != 0.f) x += beta * old;
  return x;
}

template <class T>
__device__ __forceinline__ void store_pair(const GemmParams& p, T* C, float alpha, int row, int col, float a0,
                                           float a1) {
  if (row >= p.M || col >= p.N) return;
  float v[2] = {a0, a1};
  const bool two = col + 1 < p.N;
  T* c = C + (int64_t)row * p.ldc + col;
  const bool extra = p.bias || p.act || p.beta != 0.f;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    if (e == 1 && !two) break;
    float x = alpha * v[e];
    if (extra) x = epi_extra(x, p.bias, p.bias_dtype, col + e, p.act, p.beta, p.beta != 0.f ? to_f(c[e]) : 0.f);
    v[e] = x;
  }
  if (two && p.pairC) {
    if constexpr (sizeof(T) == 4) {
      *reinterpret_cast<float2*>(c) = make_float2(v[0], v[1]);
    } else {
      *reinterpret_cast<uint32_t*>(c) = pack2<T>(v[0], v[1]);
    }
  } else {
    c[0] = from_f<T>(v[0]);
    if (two) c[1] = from_f<T>(v[1]);
  }
}

// The epilogue of a whole tile with no activation (at most a bias in T's dtype or f32, and the old C of a fused
// residual), f16 / bf16: straight paired stores, a dozen instructions a pair, none of store_pair's per-pair
// tests. Both tensor-core kernels take it when ok, else store_pair.
template <class T>
struct FastEpilogue {
  bool ok, hb, bf, hc;
  float alpha, beta;
  const void* bias;
  __device__ __forceinline__ FastEpilogue(const GemmParams& p, float alpha_, int m0, int bm, int n0, int bn) {
    constexpr int TD = std::is_same<T, bf16>::value ? (int)DType::BF16 : (int)DType::F16;
    const bool bias_ok =
        !p.bias || ((p.bias_dtype == TD || p.bias_dtype == (int)DType::F32) && ((uintptr_t)p.bias & 7) == 0);
    ok = sizeof(T) == 2 && !p.act && bias_ok && p.pairC && m0 + bm <= p.M && n0 + bn <= p.N;
    hb = p.bias != nullptr;
    bf = hb && p.bias_dtype == (int)DType::F32;
    hc = p.beta != 0.f;
    alpha = alpha_;
    beta = p.beta;
    bias = p.bias;
  }
  // Columns col, col + 1 of row pointers r0 (values a0, a1) and r8 (a2, a3).
  __device__ __forceinline__ void store(T* r0, T* r8, int col, float a0, float a1, float a2, float a3) const {
    if constexpr (sizeof(T) == 2) {
      float b0 = 0.f, b1 = 0.f;
      if (hb) {
        if (bf) {
          const float2 q = *reinterpret_cast<const float2*>((const float*)bias + col);
          b0 = q.x;
          b1 = q.y;
        } else {
          const T* bp = (const T*)bias + col;
          b0 = to_f(bp[0]);
          b1 = to_f(bp[1]);
        }
      }
      float x0 = alpha * a0 + b0, x1 = alpha * a1 + b1, y0 = alpha * a2 + b0, y1 = alpha * a3 + b1;
      if (hc) {
        x0 += beta * to_f(r0[col]);
        x1 += beta * to_f(r0[col + 1]);
        y0 += beta * to_f(r8[col]);
        y1 += beta * to_f(r8[col + 1]);
      }
      *reinterpret_cast<uint32_t*>(r0 + col) = pack2<T>(x0, x1);
      *reinterpret_cast<uint32_t*>(r8 + col) = pack2<T>(y0, y1);
    }
  }
};

// Which segments batch item z runs, and its operand bases.
struct SegSetup {
  int nk1, nk2;
  const void* A;
  const void* B;
  const void* A2;
  const void* B2;
  float alpha;
};

template <class T, int BK>
__device__ __forceinline__ SegSetup seg_setup(const GemmParams& p, int z) {
  SegSetup s;
  int a = 0;
  bool ok = true;
  if (p.idx) {
    a = p.idx[z];
    ok = a >= 0 && a < p.n_idx;
  }
  const bool ix1 = p.idx && p.idx_seg == 1, ix2 = p.idx && p.idx_seg == 2;
  s.A = (const T*)p.A + (int64_t)z * p.sA;
  s.B = (const T*)p.B + (ix1 ? (ok ? (int64_t)a : 0) : (int64_t)z) * p.sB;
  s.A2 = p.A2 ? (const T*)p.A2 + (int64_t)z * p.sA2 : nullptr;
  s.B2 = p.B2 ? (const T*)p.B2 + (ix2 ? (ok ? (int64_t)a : 0) : (int64_t)z) * p.sB2 : nullptr;
  s.nk1 = (ix1 && !ok) ? 0 : (p.K + BK - 1) / BK;
  s.nk2 = (p.K2 <= 0 || (ix2 && !ok)) ? 0 : (p.K2 + BK - 1) / BK;
  s.alpha = p.alpha * (p.scales ? p.scales[z] : 1.f);
  return s;
}

// ---------------------------------------------------------------- tensor-core kernel: shared-memory staging

// Eight 16-bit elements (n of them valid, the rest zero) into 16 aligned bytes of shared memory.
__device__ __forceinline__ void copy8_scalar(void* dst, const uint16_t* src, int n) {
  uint16_t v[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) v[e] = e < n ? src[e] : (uint16_t)0;
  uint4 u;
  u.x = v[0] | ((uint32_t)v[1] << 16);
  u.y = v[2] | ((uint32_t)v[3] << 16);
  u.z = v[4] | ((uint32_t)v[5] << 16);
  u.w = v[6] | ((uint32_t)v[7] << 16);
  *reinterpret_cast<uint4*>(dst) = u;
}

// A ROWS x BK tile of a row-major matrix (k contiguous): rows r0.., valid rows < R, valid k < Kx.
template <class T, int ROWS>
__device__ __forceinline__ void stage_rows(T* s, const T* g, int64_t ld, int r0, int R, int k0, int Kx, bool vec,
                                           int tid) {
  constexpr int CPR = GEMM_BK / 8;
  static_assert(ROWS * CPR % GEMM_THREADS == 0, "tile chunks must split evenly over the block");
#pragma unroll
  for (int it = 0; it < ROWS * CPR / GEMM_THREADS; ++it) {
    const int c = tid + it * GEMM_THREADS;
    const int r = c / CPR, kc = (c % CPR) * 8;
    const int gr = r0 + r, gk = k0 + kc;
    T* d = s + r * (GEMM_BK + GEMM_PAD) + kc;
    const int n = (gr < R && gk < Kx) ? min(8, Kx - gk) : 0;
    const T* src = g + (int64_t)gr * ld + gk;
    if (vec) cp_async16(d, n ? src : g, n * 2);
    else copy8_scalar(d, (const uint16_t*)src, n);
  }
}

// A BK x COLS tile of a matrix stored [K][cols] (cols contiguous): columns c0.. valid < Cx, k < Kx.
template <class T, int COLS>
__device__ __forceinline__ void stage_cols(T* s, const T* g, int64_t ld, int c0, int Cx, int k0, int Kx, bool vec,
                                           int tid) {
  constexpr int CPR = COLS / 8;
  static_assert(GEMM_BK * CPR % GEMM_THREADS == 0, "tile chunks must split evenly over the block");
#pragma unroll
  for (int it = 0; it < GEMM_BK * CPR / GEMM_THREADS; ++it) {
    const int c = tid + it * GEMM_THREADS;
    const int r = c / CPR, mc = (c % CPR) * 8;
    const int gk = k0 + r, gm = c0 + mc;
    T* d = s + r * (COLS + GEMM_PAD) + mc;
    const int n = (gk < Kx && gm < Cx) ? min(8, Cx - gm) : 0;
    const T* src = g + (int64_t)gk * ld + gm;
    if (vec) cp_async16(d, n ? src : g, n * 2);
    else copy8_scalar(d, (const uint16_t*)src, n);
  }
}

// Per-thread geometry of the two output pixels (GEMM rows) whose A chunks this thread stages for conv.
struct ConvRows {
  int64_t base[2];  // element offset of image n
  int hi0[2], wi0[2];
};

template <class T>
__device__ __forceinline__ ConvRows conv_rows(const GemmParams& p, int m0, int tid) {
  ConvRows cr;
  const ConvGeom& g = p.conv;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int m = m0 + (tid + i * GEMM_THREADS) / (GEMM_BK / 8);
    if (m < p.M) {
      const int hw = g.Ho * g.Wo, n = m / hw, rem = m - n * hw, ho = rem / g.Wo, wo = rem - ho * g.Wo;
      cr.base[i] = (int64_t)n * g.H * g.W * g.Cin;
      cr.hi0[i] = ho * g.stride - g.pad;
      cr.wi0[i] = wo * g.stride - g.pad;
    } else {
      cr.base[i] = 0;
      cr.hi0[i] = -(1 << 28);  // fails every bounds test below
      cr.wi0[i] = -(1 << 28);
    }
  }
  return cr;
}

// The A tile of an implicit-GEMM convolution: row m = output pixel, k = (ky, kx, ci) of an OHWI filter.
template <class T>
__device__ __forceinline__ void stage_conv(T* s, const T* x, const GemmParams& p, const ConvRows& cr, int k0,
                                           bool vec, int tid) {
  const ConvGeom& g = p.conv;
  const int kc = (tid % (GEMM_BK / 8)) * 8, gk = k0 + kc;
  if (vec) {  // Cin % 8 == 0: the 8 channels of a chunk share one filter tap
    const int tap = gk / g.Cin, ci = gk - tap * g.Cin, ky = tap / g.kw, kx = tap - ky * g.kw;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = (tid + i * GEMM_THREADS) / (GEMM_BK / 8);
      const int hi = cr.hi0[i] + ky, wi = cr.wi0[i] + kx;
      const bool in = gk < p.K && (unsigned)hi < (unsigned)g.H && (unsigned)wi < (unsigned)g.W;
      const T* src = x + cr.base[i] + ((int64_t)hi * g.W + wi) * g.Cin + ci;
      cp_async16(s + r * (GEMM_BK + GEMM_PAD) + kc, in ? src : x, in ? 16 : 0);
    }
  } else {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = (tid + i * GEMM_THREADS) / (GEMM_BK / 8);
      uint16_t v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int k = gk + e;
        v[e] = 0;
        if (k < p.K) {
          const int tap = k / g.Cin, ci = k - tap * g.Cin, ky = tap / g.kw, kx = tap - ky * g.kw;
          const int hi = cr.hi0[i] + ky, wi = cr.wi0[i] + kx;
          if ((unsigned)hi < (unsigned)g.H && (unsigned)wi < (unsigned)g.W)
            v[e] = ((const uint16_t*)x)[cr.base[i] + ((int64_t)hi * g.W + wi) * g.Cin + ci];
        }
      }
      uint4 u;
      u.x = v[0] | ((uint32_t)v[1] << 16);
      u.y = v[2] | ((uint32_t)v[3] << 16);
      u.z = v[4] | ((uint32_t)v[5] << 16);
      u.w = v[6] | ((uint32_t)v[7] << 16);
      *reinterpret_cast<uint4*>(s + r * (GEMM_BK + GEMM_PAD) + kc) = u;
    }
  }
}

template <int AMODE, bool B_NK>
struct TcLayout {
  static constexpr int A_STAGE = AMODE == A_COLMAJOR ? GEMM_BK * (GEMM_BM + GEMM_PAD) : GEMM_BM * (GEMM_BK + GEMM_PAD);
  static constexpr int B_STAGE = B_NK ? GEMM_BN * (GEMM_BK + GEMM_PAD) : GEMM_BK * (GEMM_BN + GEMM_PAD);
  static constexpr int SMEM_BYTES = GEMM_STAGES * (A_STAGE + B_STAGE) * 2;
  // The LoRA segment is row-major on both sides, so it exists only for those shared layouts.
  static constexpr bool HAS_SEG2 = AMODE != A_COLMAJOR && B_NK;
};

// ---------------------------------------------------------------- tensor-core kernel

// STATS (conv2d's channel statistics, chanstats.cuh): after the tile is stored, each column's (K, o, M2) over the
// tile's 128 rows, from the values just stored (read back from L1 / L2: the rounded ones a group norm will
// read). Two passes: the column sums give K = the tile's column mean (rounded to float), then the sums of x - K
// and (x - K)^2 (no cancellation whatever the data: K is within rounding of the mean). In each pass a thread
// sums its 8 rows of its 8 columns, the 8 lanes sharing columns add theirs by shuffles, the two warps of a
// column range through shared memory (the ring's, free by then). The launcher takes this only when every
// tile's rows are valid and within one image (M and the image's pixels multiples of 128).
template <class T>
__device__ __forceinline__ void tc_stats_epilogue(const GemmParams& p, const T* C, int m0, int n0, int wm, int wn,
                                                  unsigned char* smem_raw) {
  constexpr int BM = GEMM_BM, BN = GEMM_BN;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  float* red = reinterpret_cast<float*>(smem_raw);  // [2 row halves][BN][2]
  __syncthreads();  // every store of the tile done and visible to the block; the ring no longer read
  float v[4][2][8];  // [column pair j][e][row i * 2 + h]
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int col = n0 + wn + j * 8 + 2 * t + e;
      float s1 = 0.f;
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          v[j][e][i * 2 + h] = col < p.N ? to_f(C[(int64_t)(m0 + wm + i * 16 + g + h * 8) * p.ldc + col]) : 0.f;
          s1 += v[j][e][i * 2 + h];
        }
#pragma unroll
      for (int off = 4; off < 32; off <<= 1) s1 += __shfl_xor_sync(0xffffffffu, s1, off);
      if (g == 0) red[((warp >> 2) * BN + wn + j * 8 + 2 * t + e) * 2] = s1;
    }
  __syncthreads();
  float kc[4][2];
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int cl = wn + j * 8 + 2 * t + e;
      kc[j][e] = (red[cl * 2] + red[(BN + cl) * 2]) * (1.f / (float)BM);
    }
  __syncthreads();  // every thread has its K before the second pass's sums overwrite red
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float s1 = 0.f, s2 = 0.f;
#pragma unroll
      for (int r = 0; r < 8; ++r) {
        const float d = v[j][e][r] - kc[j][e];
        s1 += d;
        s2 = fmaf(d, d, s2);
      }
#pragma unroll
      for (int off = 4; off < 32; off <<= 1) {
        s1 += __shfl_xor_sync(0xffffffffu, s1, off);
        s2 += __shfl_xor_sync(0xffffffffu, s2, off);
      }
      const int cl = wn + j * 8 + 2 * t + e;
      if (g == 0) {
        red[((warp >> 2) * BN + cl) * 2] = s1;
        red[((warp >> 2) * BN + cl) * 2 + 1] = s2;
      }
      // and the column's pivot, for the piece written below
      if (g == 0 && warp < 4) red[(2 * BN) * 2 + cl] = kc[j][e];
    }
  __syncthreads();
  if (tid < BN && n0 + tid < p.N) {
    const float s1 = red[tid * 2] + red[(BN + tid) * 2], s2 = red[tid * 2 + 1] + red[(BN + tid) * 2 + 1];
    const float o = s1 * (1.f / (float)BM);
    float* q = p.stats_part + ((int64_t)blockIdx.x * p.N + n0 + tid) * 3;
    q[0] = red[(2 * BN) * 2 + tid];
    q[1] = o;
    q[2] = fmaxf(0.f, fmaf(-s1, o, s2));
  }
}

// TC: the output's type, T's (f16 / bf16) or float: 16-bit operands into an f32 result (conv.cu's compute dtype).
template <class T, int AMODE, bool B_NK, bool STATS = false, class TC = T>
__global__ void __launch_bounds__(GEMM_THREADS) tc_gemm_kernel(const GemmParams p) {
  static_assert(std::is_same<TC, T>::value || std::is_same<TC, float>::value, "output: the operands' type or float");
  static_assert(!STATS || std::is_same<TC, T>::value, "the statistics epilogue reads a 16-bit output");
  using L = TcLayout<AMODE, B_NK>;
  constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, ST = GEMM_STAGES, PAD = GEMM_PAD;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* As = reinterpret_cast<T*>(smem_raw);
  T* Bs = As + ST * L::A_STAGE;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN, z = blockIdx.z;
  const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;

  const SegSetup sg = seg_setup<T, BK>(p, z);
  const int nk1 = sg.nk1, nk = nk1 + (L::HAS_SEG2 ? sg.nk2 : 0);
  const T* A = (const T*)sg.A;
  const T* B = (const T*)sg.B;
  ConvRows cr;
  if constexpr (AMODE == A_CONV) cr = conv_rows<T>(p, m0, tid);

  auto stage = [&](int kt, int st) {
    T* as = As + st * L::A_STAGE;
    T* bs = Bs + st * L::B_STAGE;
    if constexpr (L::HAS_SEG2) {
      if (kt >= nk1) {
        const int k0 = (kt - nk1) * BK;
        stage_rows<T, BM>(as, (const T*)sg.A2, p.lda2, m0, p.M, k0, p.K2, p.vecA2, tid);
        stage_rows<T, BN>(bs, (const T*)sg.B2, p.ldb2, n0, p.N, k0, p.K2, p.vecB2, tid);
        return;
      }
    }
    const int k0 = kt * BK;
    if constexpr (AMODE == A_ROWMAJOR) stage_rows<T, BM>(as, A, p.lda, m0, p.M, k0, p.K, p.vecA, tid);
    else if constexpr (AMODE == A_COLMAJOR) stage_cols<T, BM>(as, A, p.lda, m0, p.M, k0, p.K, p.vecA, tid);
    else stage_conv<T>(as, A, p, cr, k0, p.vecA, tid);
    if constexpr (B_NK) stage_rows<T, BN>(bs, B, p.ldb, n0, p.N, k0, p.K, p.vecB, tid);
    else stage_cols<T, BN>(bs, B, p.ldb, n0, p.N, k0, p.K, p.vecB, tid);
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < nk) stage(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < nk; ++kt) {
    cp_async_wait<ST - 2>();
    __syncthreads();  // tile kt landed for every thread; the ring slot refilled below is no longer read
    if (kt + ST - 1 < nk) stage(kt + ST - 1, (kt + ST - 1) % ST);
    cp_async_commit();

    const T* as = As + (kt % ST) * L::A_STAGE;
    const T* bs = Bs + (kt % ST) * L::B_STAGE;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t af[4][4], bfr[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if constexpr (AMODE == A_COLMAJOR)
          ldmatrix_x4_trans(af[i], as + (kk + (lane >> 4) * 8 + (lane & 7)) * (BM + PAD) + wm + i * 16 +
                                       ((lane >> 3) & 1) * 8);
        else
          ldmatrix_x4(af[i], as + (wm + i * 16 + (lane & 15)) * (BK + PAD) + kk + (lane >> 4) * 8);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        uint32_t r[4];
        if constexpr (B_NK)
          ldmatrix_x4(r, bs + (wn + j * 16 + (lane >> 4) * 8 + (lane & 7)) * (BK + PAD) + kk + ((lane >> 3) & 1) * 8);
        else
          ldmatrix_x4_trans(r, bs + (kk + ((lane >> 3) & 1) * 8 + (lane & 7)) * (BN + PAD) + wn + j * 16 +
                                   (lane >> 4) * 8);
        bfr[2 * j][0] = r[0];
        bfr[2 * j][1] = r[1];
        bfr[2 * j + 1][0] = r[2];
        bfr[2 * j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma16816<T>(acc[i][j], af[i], bfr[j][0], bfr[j][1]);
    }
  }
  cp_async_wait<0>();

  TC* C = (TC*)p.C + (int64_t)z * p.sC;
  const int g = lane >> 2, t = lane & 3;
  const FastEpilogue<TC> fe(p, sg.alpha, m0, BM, n0, BN);
  if (fe.ok) {  // (never for a float TC)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      TC* r0 = C + (int64_t)(m0 + wm + i * 16 + g) * p.ldc;
      TC* r8 = r0 + 8 * (int64_t)p.ldc;
#pragma unroll
      for (int j = 0; j < 4; ++j) fe.store(r0, r8, n0 + wn + j * 8 + 2 * t, acc[i][j][0], acc[i][j][1], acc[i][j][2], acc[i][j][3]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int row = m0 + wm + i * 16 + g, col = n0 + wn + j * 8 + 2 * t;
        store_pair<TC>(p, C, sg.alpha, row, col, acc[i][j][0], acc[i][j][1]);
        store_pair<TC>(p, C, sg.alpha, row + 8, col, acc[i][j][2], acc[i][j][3]);
      }
  }
  if constexpr (STATS) tc_stats_epilogue<T>(p, (T*)C, m0, n0, wm, wn, smem_raw);
}

// ---------------------------------------------------------------- SIMT kernel (f32)

constexpr int SG_BM = 128, SG_BN = 128, SG_BK = 8;

template <bool CONV>
__global__ void __launch_bounds__(256) simt_gemm_kernel(const GemmParams p, int amode, bool b_nk) {
  __shared__ __align__(16) float As[2][SG_BK][SG_BM + 4];
  __shared__ __align__(16) float Bs[2][SG_BK][SG_BN + 4];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int m0 = blockIdx.x * SG_BM, n0 = blockIdx.y * SG_BN, z = blockIdx.z;
  const SegSetup sg = seg_setup<float, SG_BK>(p, z);
  const int nk1 = sg.nk1, nk = nk1 + sg.nk2;
  const float* A = (const float*)sg.A;
  const float* B = (const float*)sg.B;
  const float* A2 = (const float*)sg.A2;
  const float* B2 = (const float*)sg.B2;

  // Staging map: k-contiguous operands put thread (r = tid/8 + 32 i, k = tid%8), the others (m = tid%128 ...).
  const int kr = tid & 7, rr = tid >> 3;
  int64_t cbase[4];
  int chi[4], cwi[4];
  if constexpr (CONV) {
    const ConvGeom& g = p.conv;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int m = m0 + rr + 32 * i;
      if (m < p.M) {
        const int hw = g.Ho * g.Wo, n = m / hw, rem = m - n * hw, ho = rem / g.Wo, wo = rem - ho * g.Wo;
        cbase[i] = (int64_t)n * g.H * g.W * g.Cin;
        chi[i] = ho * g.stride - g.pad;
        cwi[i] = wo * g.stride - g.pad;
      } else {
        cbase[i] = 0;
        chi[i] = cwi[i] = -(1 << 28);
      }
    }
  }

  float ra[4], rb[4];
  auto fetch = [&](int kt) {
    if (kt < nk1) {
      const int k0 = kt * SG_BK;
      if (CONV) {
        const ConvGeom& g = p.conv;
        const int k = k0 + kr;
        int tap = 0, ci = 0, ky = 0, kx = 0;
        if (k < p.K) {
          tap = k / g.Cin;
          ci = k - tap * g.Cin;
          ky = tap / g.kw;
          kx = tap - ky * g.kw;
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int hi = chi[i] + ky, wi = cwi[i] + kx;
          const bool in = k < p.K && (unsigned)hi < (unsigned)g.H && (unsigned)wi < (unsigned)g.W;
          ra[i] = in ? A[cbase[i] + ((int64_t)hi * g.W + wi) * g.Cin + ci] : 0.f;
        }
      } else if (amode == A_COLMAJOR) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int e = tid + i * 256, m = m0 + (e & 127), k = k0 + (e >> 7);
          ra[i] = (m < p.M && k < p.K) ? A[(int64_t)k * p.lda + m] : 0.f;
        }
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int m = m0 + rr + 32 * i, k = k0 + kr;
          ra[i] = (m < p.M && k < p.K) ? A[(int64_t)m * p.lda + k] : 0.f;
        }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (b_nk) {
          const int n = n0 + rr + 32 * i, k = k0 + kr;
          rb[i] = (n < p.N && k < p.K) ? B[(int64_t)n * p.ldb + k] : 0.f;
        } else {
          const int e = tid + i * 256, n = n0 + (e & 127), k = k0 + (e >> 7);
          rb[i] = (n < p.N && k < p.K) ? B[(int64_t)k * p.ldb + n] : 0.f;
        }
      }
    } else {
      const int k = (kt - nk1) * SG_BK + kr;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = m0 + rr + 32 * i, n = n0 + rr + 32 * i;
        ra[i] = (m < p.M && k < p.K2) ? A2[(int64_t)m * p.lda2 + k] : 0.f;
        rb[i] = (n < p.N && k < p.K2) ? B2[(int64_t)n * p.ldb2 + k] : 0.f;
      }
    }
  };
  auto stash = [&](int kt, int buf) {
    const bool a_mk = kt >= nk1 || CONV || amode != A_COLMAJOR, b_k = kt >= nk1 || b_nk;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * 256;
      if (a_mk) As[buf][kr][rr + 32 * i] = ra[i];
      else As[buf][e >> 7][e & 127] = ra[i];
      if (b_k) Bs[buf][kr][rr + 32 * i] = rb[i];
      else Bs[buf][e >> 7][e & 127] = rb[i];
    }
  };

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

  if (nk > 0) {
    fetch(0);
    stash(0, 0);
  }
  __syncthreads();
  for (int kt = 0; kt < nk; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < nk) fetch(kt + 1);
#pragma unroll
    for (int k = 0; k < SG_BK; ++k) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[buf][k][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[buf][k][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][k][64 + tx * 4]);
      const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (kt + 1 < nk) stash(kt + 1, buf ^ 1);
    __syncthreads();
  }

  float* C = (float*)p.C + (int64_t)z * p.sC;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int row = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      const int col = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
      store_pair<float>(p, C, sg.alpha, row, col, acc[i][j], acc[i][j + 1]);
    }
  }
}

// ---------------------------------------------------------------- launchers

template <class T, int AMODE, bool B_NK, bool STATS = false, class TC = T>
void launch_tc_gemm(const GemmParams& p, int batch, cudaStream_t s) {
  auto kernel = tc_gemm_kernel<T, AMODE, B_NK, STATS, TC>;
  // the statistics pieces are indexed by blockIdx.x alone (tc_stats_epilogue)
  if (STATS && batch != 1) fail("tc_gemm", "the statistics epilogue takes one batch item, got " + std::to_string(batch));
  constexpr int smem = TcLayout<AMODE, B_NK>::SMEM_BYTES;
  allow_smem((const void*)kernel, smem);
  dim3 grid((p.M + GEMM_BM - 1) / GEMM_BM, (p.N + GEMM_BN - 1) / GEMM_BN, batch);
  kernel<<<grid, GEMM_THREADS, smem, s>>>(p);
}

template <bool CONV>
void launch_simt_gemm(const GemmParams& p, int amode, bool b_nk, int batch, cudaStream_t s) {
  dim3 grid((p.M + SG_BM - 1) / SG_BM, (p.N + SG_BN - 1) / SG_BN, batch);
  simt_gemm_kernel<CONV><<<grid, 256, 0, s>>>(p, amode, b_nk);
}

// Runs one GEMM (or batch) in dtype dt: the tensor-core kernel for f16/bf16, the SIMT one for f32 (gemm.cu).
void run_gemm(const char* op, const GemmParams& p, DType dt, int amode, bool b_nk, int64_t batch, cudaStream_t s);

// Host-side checks shared by the launchers: sizes fit the kernels' int indexing and grid limits.
inline void check_gemm_dims(const char* op, int64_t M, int64_t N, int64_t K, int64_t batch) {
  // (the kernels round K up to whole k tiles in int: K + 63 must not overflow)
  const int64_t lim = (1LL << 31) - 1024;
  if (M > lim || N > lim || K > lim) fail(op, "a GEMM dimension exceeds 2^31 - 1024 (M=" + std::to_string(M) +
                                                  ", N=" + std::to_string(N) + ", K=" + std::to_string(K) + ")");
  if ((N + GEMM_BN - 1) / GEMM_BN > 65535) fail(op, "N=" + std::to_string(N) + " is too large for one launch");
  if (batch > 65535) fail(op, "batch " + std::to_string(batch) + " exceeds 65535");
}

// Paired stores need every (row, even column) element address aligned to two elements.
inline bool pairs_aligned(const void* c, int64_t ldc, int64_t batch_stride, size_t esize) {
  return ((uintptr_t)c % (2 * esize)) == 0 && ldc % 2 == 0 && batch_stride % 2 == 0;
}

// 16-byte cp.async is possible for a row-major operand when every row start is 16-byte aligned.
inline bool rows_aligned(const void* base, int64_t ld, int64_t batch_stride, size_t esize) {
  return aligned16(base) && (ld * (int64_t)esize) % 16 == 0 && (batch_stride * (int64_t)esize) % 16 == 0;
}

// A GemmParams' operands (strides in elements; the vector / paired-store flags from the pointers).
inline GemmParams gemm_params(int64_t M, int64_t N, int64_t K, const void* A, int64_t lda, int64_t sA, const void* B,
                              int64_t ldb, int64_t sB, void* C, int64_t ldc, int64_t sC, size_t es) {
  GemmParams p;
  p.M = (int)M;
  p.N = (int)N;
  p.K = (int)K;
  p.A = A;
  p.lda = lda;
  p.sA = sA;
  p.B = B;
  p.ldb = ldb;
  p.sB = sB;
  p.vecA = rows_aligned(p.A, p.lda, p.sA, es);
  p.vecB = rows_aligned(p.B, p.ldb, p.sB, es);
  p.C = C;
  p.ldc = ldc;
  p.sC = sC;
  p.pairC = pairs_aligned(p.C, p.ldc, p.sC, es);
  return p;
}

}  // namespace cu
}  // namespace hsd
