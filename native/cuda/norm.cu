// group_norm, layer_norm and their backwards on CUDA (OPS.md). Statistics in f32 (f64 where partials are
// combined), data in its own dtype; the backwards compute in f32 (their outputs are f32) and are described
// where they start, below the forwards.
//
// group_norm, x [N, S, C] channels-last (S = H*W), groups of C/G adjacent channels. Two launches:
//   1. stats: the rows of each sample are cut into chunks (~128 KB of x each, 1-2 blocks a multiprocessor); a
//      block walks its chunk with every thread on fixed channels (coalesced rows, 16-byte vectors and eight
//      rows in flight when C % 8 == 0), accumulating sums of (x - pivot) and (x - pivot)^2, where the pivot
//      is an element of the group in that sample (gn_pivot: the median of three). Shifted sums add exactly
//      like plain ones but do not cancel catastrophically when |mean| >> std. Per-thread sums are folded into
//      per-group sums in a fixed order and written per (sample, chunk, group). These partials are summed in
//      f64, in an order fixed by the thread layout, into st = (pivot, rstd, m = mean - pivot) per group
//      (gn_sum_partials): deterministic, no atomics on the data. The pivot (an element of the group, exact in
//      f32) is kept instead of the mean: x - pivot is exact when x is near it (Sterbenz), whereas a mean
//      rounded to f32 loses ulp(mean) / std of the result (3e-4 at mean 300, std 0.01: seen on an H200).
//   2. apply (gn_apply_reg_kernel, C % 8 == 0): every block first issues its first loads of x, then sums its
//      sample's partials itself (the same bits in every block), and every thread keeps the y = (x - pivot) a
//      + b coefficients (a = rstd gamma, b = beta - m a) of its 8 fixed channels in registers (the grid's
//      stride is a multiple of C), SiLU from the approximate special-function instructions for 16-bit
//      results (silu_half); on sm_90 a programmatic dependent launch (gn_launch_dependents / gn_dep_wait).
//      Otherwise (C % 8 != 0 or unaligned x / y) the statistics kernel's last block (an atomic count) sums the
//      partials and a small kernel expands the coefficients per channel for the scalar apply kernel (the
//      backward uses the same expansion).
// Measured on an H200 (bench/RESULTS.md, Nsight Compute durations, f16 with SiLU, caches warm): 14.0 us at the
// UNet's [2, 4096, 320] (a same-size SiLU: 4.7), 220 us at the SDXL VAE's [1, 1048576, 128] (SiLU: 141). Before
// session 21 (coefficients in shared memory, accurate SiLU, the sum in the statistics kernel's last block):
// 16.5 and 274 us. A separate finalize launch had cost 13-21 us; a one-launch cooperative variant (rows kept in
// shared memory across a grid barrier) took 42-85 us; both removed.
//
// layer_norm, x [R, C]: one warp per row: the mean, then the centred sum of squares (the second pass hits
// L1), then the normalised write; 16-byte vectors when C % 8 == 0. (A variant holding rows of up to 2048
// channels in registers measured slower on an H200, 13.6 against 12.3 us at [8192, 640]: at 48 registers it
// needs two waves of blocks where this kernel needs one; removed.)
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills, no stack: gn_stats 47-48, gn_stats_vec 90-102 (two blocks a
// multiprocessor; its grid follows the occupancy), gn_apply_reg 80 (three blocks a multiprocessor), gn_apply
// 26-46, gn_expand 30, layer_norm 30-32, backward kernels (gnb_*, lnb_*) 24-32.
#include <cmath>
#include <cstdlib>
#include <numeric>

#include "chanstats.cuh"
#include "common.cuh"

namespace hsd {
namespace cu {
namespace {

constexpr int GN_THREADS = 256;
}  // namespace
bool sm90_device();  // gemm_sm90a.cu: compute capability 9.0 (cached per device)
namespace {

// A bench knob read per call (bench/gpu_kernels.ts times the choices side by side): its value, or dflt when
// unset or not a positive number.
int gn_knob(const char* name, int dflt) {
  const char* e = std::getenv(name);
  const int v = e ? std::atoi(e) : 0;
  return v > 0 ? v : dflt;
}

// Folds one channel window's per-thread sums t1, t2 ([rp][cw] for channels c0..c0+cw) into the per-group sums
// gsum ([2][G]) in a fixed order (deterministic): first each channel's rp rows (a thread per channel, the
// column total left in row 0), then each group's channels. Every thread of the block must call it (it holds a
// barrier). Summing a group's rp x Cg values in one thread was a serial chain of shared-memory reads (120 at
// the UNet's 320 channels) on the path of every statistics block. Shared by both statistics kernels.
__device__ __forceinline__ void gn_fold_window(float* t1, float* t2, int rp, int cw, int c0, int Cg, int G,
                                               float* gsum, int tid, int nthreads = GN_THREADS) {
  if (rp > 1)
    for (int cc = tid; cc < cw; cc += nthreads) {
      float u1 = t1[cc], u2 = t2[cc];
      for (int rr = 1; rr < rp; ++rr) {
        u1 += t1[rr * cw + cc];
        u2 += t2[rr * cw + cc];
      }
      t1[cc] = u1;
      t2[cc] = u2;
    }
  __syncthreads();
  const int g_first = c0 / Cg, g_last = (c0 + cw - 1) / Cg;
  for (int g = g_first + tid; g <= g_last; g += nthreads) {
    const int ca = max(g * Cg, c0) - c0, cb = min(g * Cg + Cg, c0 + cw) - c0;
    float u1 = 0.f, u2 = 0.f;
    for (int cc = ca; cc < cb; ++cc) {
      u1 += t1[cc];
      u2 += t2[cc];
    }
    gsum[g] += u1;
    gsum[G + g] += u2;
  }
}

// Adds one 8-channel vector's shifted sums (x - pivot, its square) into a thread's a1 / a2.
__device__ __forceinline__ void gn_acc8(const float* u, const float* pv, float* a1, float* a2) {
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const float d = u[k] - pv[k];
    a1[k] += d;
    a2[k] = fmaf(d, d, a2[k]);
  }
}

// A thread's 8 channels of sums into the window's per-thread buffers t1 / t2 at index i (row r * cw + cv * 8).
__device__ __forceinline__ void gn_put8(float* t1, float* t2, int i, const float* a1, const float* a2) {
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    t1[i + k] = a1[k];
    t2[i + k] = a2[k];
  }
}

// The pivot of group g of one sample (xn: the sample's first element): the median of the group's first
// channel at the first, middle and last position, so one outlier among them (say a corner pixel far from the
// mean) does not become the shift whose distance from the mean cancels the variance away (with the group's
// first element, as until session 19, a first element 1000 std off cost rstd 1.4e-3 on the CPU, whose
// statistics are now exact for any data: per-block pivots and Chan's combination, native/cpu/norm.cpp).
template <class T>
__device__ __forceinline__ float gn_pivot(const T* xn, int64_t S, int C, int Cg, int g) {
  const int64_t c0 = (int64_t)g * Cg;
  const float a = to_f(xn[c0]), b = to_f(xn[(S / 2) * C + c0]), c = to_f(xn[(S - 1) * C + c0]);
  return fmaxf(fminf(a, b), fminf(fmaxf(a, b), c));
}

// The last of a sample's statistics blocks to finish (each block counts itself in on a per-sample word of
// reduction_counters; the last one puts the word back to 0 for the next kernel on the stream) sums the sample's
// partials part[n][k][2G] in f64 and writes st[n] = [3][G]: pivot, rstd, m = mean - pivot. The order of the
// sums depends only on the thread layout, not on which block came last: the same bits every run. When 2G % 4
// == 0 the block's threads read 16-byte column quads in Q stripes of chunks (a few loads each, all in flight),
// then one thread per group adds the Q stripes in order; the pivots are read first, to overlap. (This
// replaced a separate finalize launch, one block per sample walking the partials a warp per group: 13-21 us
// on an H200, more than the two passes over x together at the UNet's sizes.)
// Sums sample n's partials part[n][k][2G] (k < nchunks) in f64 and writes stn = [3][G]: pivot, rstd, m = mean -
// pivot (global or shared memory). Every thread of the block must call it (it holds a barrier). The order of the
// sums depends only on the thread layout: the same bits in every block that runs it. When 2G % 4 == 0 the
// block's threads read 16-byte column quads in Q stripes of chunks (up to eight loads each in flight), then one
// thread per group adds the Q stripes in order; the pivots are read first, to overlap.
template <class T>
__device__ __forceinline__ void gn_sum_partials(const float* part, int n, int nchunks, int G, int Cg, double cnt,
                                                float eps, const T* xn, int64_t S, int C, float* stn) {
  __shared__ double red[GN_THREADS * 4];
  const int tid = threadIdx.x;
  const int W = 2 * G;
  const float* pn = part + (int64_t)n * nchunks * W;
  auto finish = [&](int g, double s1, double s2, float pivot) {
    const double m = s1 / cnt, var = fmax(s2 / cnt - m * m, 0.0);
    stn[g] = pivot;
    stn[G + g] = (float)(1.0 / sqrt(var + (double)eps));
    stn[2 * G + g] = (float)m;
  };
  // One thread a group finishes, so G <= GN_THREADS (the test had been W / 4 <= GN_THREADS: from 258 to 512
  // groups, groups 256 and up were left without statistics; session 28, found by review).
  if (W % 4 == 0 && G <= GN_THREADS) {
    const int W4 = W / 4, Q = GN_THREADS / W4, j = tid % W4, q = tid / W4;
    const float pivot = tid < G ? gn_pivot(xn, S, C, Cg, tid) : 0.f;
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    if (q < Q) {
#pragma unroll 8
      for (int k = q; k < nchunks; k += Q) {
        const float4 v = __ldcg(reinterpret_cast<const float4*>(pn + (int64_t)k * W) + j);
        a0 += (double)v.x;
        a1 += (double)v.y;
        a2 += (double)v.z;
        a3 += (double)v.w;
      }
      red[q * W + 4 * j] = a0;
      red[q * W + 4 * j + 1] = a1;
      red[q * W + 4 * j + 2] = a2;
      red[q * W + 4 * j + 3] = a3;
    }
    __syncthreads();
    if (tid < G) {
      double s1 = 0.0, s2 = 0.0;
      for (int qq = 0; qq < Q; ++qq) {
        s1 += red[qq * W + tid];
        s2 += red[qq * W + G + tid];
      }
      finish(tid, s1, s2, pivot);
    }
  } else {
    __syncthreads();  // (the same number of barriers on both paths)
    for (int g = tid; g < G; g += GN_THREADS) {
      double s1 = 0.0, s2 = 0.0;
#pragma unroll 4
      for (int k = 0; k < nchunks; ++k) {
        s1 += (double)__ldcg(pn + (int64_t)k * W + g);
        s2 += (double)__ldcg(pn + (int64_t)k * W + G + g);
      }
      finish(g, s1, s2, gn_pivot(xn, S, C, Cg, g));
    }
  }
}

// The last of a sample's statistics blocks to finish (each block counts itself in on a per-sample word of
// reduction_counters; the last one puts the word back to 0 for the next kernel on the stream) sums the sample's
// partials into st[n] (gn_sum_partials). (This replaced a separate finalize launch, one block per sample walking
// the partials a warp per group: 13-21 us on an H200, more than the two passes over x together at the UNet's
// sizes.) The forward's vectorised path leaves the sum to its apply kernel instead (final = 0): see there.
template <class T>
__device__ __forceinline__ void gn_last_block(const float* part, int n, int nchunks, int G, int Cg, double cnt,
                                              float eps, const T* xn, int64_t S, int C, unsigned* counter, float* st) {
  __shared__ int last;
  const int tid = threadIdx.x;
  __threadfence();  // this block's partials, visible to the whole device before it counts itself in
  __syncthreads();
  if (tid == 0) last = atomicAdd(counter + n, 1u) == (unsigned)(nchunks - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();  // every other block's partials (read past L1 with __ldcg)
  gn_sum_partials(part, n, nchunks, G, Cg, cnt, eps, xn, S, C, st + (int64_t)n * 3 * G);
  if (tid == 0) counter[n] = 0;
}

// Programmatic dependent launch (sm_90): a statistics kernel lets the apply kernel that follows it on the stream
// start early (launch_dependents), and the apply kernel waits for the statistics' completion and memory before
// it reads them (dep_wait; x, which it loads first, is not written by the statistics). Without a programmatic
// launch (or below sm_90) both are no-ops.
__device__ __forceinline__ void gn_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void gn_dep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Statistics pass, scalar loads (any C, any alignment): one thread per channel of a window, rp rows side by side.
template <class T>
__global__ void __launch_bounds__(GN_THREADS) gn_stats_kernel(const T* __restrict__ x, int64_t S, int C, int G, int Cg,
                                                              int64_t rows_per_chunk, float* __restrict__ part,
                                                              unsigned* __restrict__ counter, float* __restrict__ st,
                                                              float eps) {
  extern __shared__ float gsum[];  // [2][G]
  __shared__ float t1[GN_THREADS], t2[GN_THREADS];
  const int tid = threadIdx.x, chunk = blockIdx.x, nchunks = gridDim.x, n = blockIdx.y;
  const T* xn = x + (int64_t)n * S * C;
  const int64_t s0 = chunk * rows_per_chunk, s1 = min(S, s0 + rows_per_chunk);
  for (int g = tid; g < 2 * G; g += GN_THREADS) gsum[g] = 0.f;

  for (int c0 = 0; c0 < C; c0 += GN_THREADS) {
    const int cw = min(GN_THREADS, C - c0), rp = GN_THREADS / cw;  // channels in this window, rows per pass
    const int c = c0 + tid % cw, r = tid / cw;
    float a1 = 0.f, a2 = 0.f;
    if (r < rp) {
      const float pivot = gn_pivot(xn, S, C, Cg, c / Cg);
      for (int64_t s = s0 + r; s < s1; s += rp) {
        const float d = to_f(xn[s * C + c]) - pivot;
        a1 += d;
        a2 = fmaf(d, d, a2);
      }
    }
    t1[tid] = a1;
    t2[tid] = a2;
    __syncthreads();
    gn_fold_window(t1, t2, rp, cw, c0, Cg, G, gsum, tid);
    __syncthreads();
  }
  float* out = part + ((int64_t)n * nchunks + chunk) * 2 * G;
  for (int g = tid; g < 2 * G; g += GN_THREADS) out[g] = gsum[g];
  gn_last_block(part, n, nchunks, G, Cg, (double)S * Cg, eps, xn, S, C, counter, st);
}

// The same statistics with 8 channels per thread (16-byte loads, four rows in flight), for C % 8 == 0 and a
// 16-byte aligned x: the scalar kernel above moves 2 bytes per load and was latency-bound (5-9% of the copy
// bandwidth on an H200). Channel windows of 2048; rp rows of a window side by side in one block.
template <class T, int U>
__global__ void __launch_bounds__(GN_THREADS) gn_stats_vec_kernel(const T* __restrict__ x, int64_t S, int C, int G,
                                                                  int Cg, int64_t rows_per_chunk, float* __restrict__ part,
                                                                  unsigned* __restrict__ counter, float* __restrict__ st,
                                                                  float eps, int final) {
  extern __shared__ float gsum[];  // [2][G]
  __shared__ float t1[GN_THREADS * 8], t2[GN_THREADS * 8];
  gn_launch_dependents();
  const int tid = threadIdx.x, chunk = blockIdx.x, nchunks = gridDim.x, n = blockIdx.y;
  const T* xn = x + (int64_t)n * S * C;
  const int64_t s0 = chunk * rows_per_chunk, s1 = min(S, s0 + rows_per_chunk);
  for (int g = tid; g < 2 * G; g += GN_THREADS) gsum[g] = 0.f;

  for (int c0 = 0, cw; c0 < C; c0 += cw) {
    // windows of up to 2048 channels; one of 129-255 vectors a row would leave up to half the threads idle
    // (1280 channels: 96 of 256), so such a remainder is cut at 1024 channels
    cw = min(GN_THREADS * 8, C - c0);
    if (cw > GN_THREADS * 4 && cw < GN_THREADS * 8) cw = GN_THREADS * 4;
    const int vpr = cw / 8, rp = GN_THREADS / vpr;
    const int cv = tid % vpr, r = tid / vpr, c = c0 + cv * 8;
    float a1[8], a2[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) a1[k] = a2[k] = 0.f;
    if (r < rp) {
      float pv[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) pv[k] = gn_pivot(xn, S, C, Cg, (c + k) / Cg);
      // U rows' loads in flight (64 or 128 bytes a thread), the last batch predicated: at the UNet's sizes a
      // chunk is ~16 rows, 2-3 a thread, which a one-row tail loop had fetched one memory latency after another.
      // (kept raw until used: 4 registers a vector for 16-bit types, not 8 floats)
      for (int64_t s = s0 + r; s < s1; s += U * rp) {
        uint4 raw[U][sizeof(T) / 2];
#pragma unroll
        for (int j = 0; j < U; ++j)
          if (s + j * rp < s1)
#pragma unroll
            for (int h = 0; h < (int)sizeof(T) / 2; ++h)
              raw[j][h] = reinterpret_cast<const uint4*>(xn + (s + j * rp) * C + c)[h];
#pragma unroll
        for (int j = 0; j < U; ++j)
          if (s + j * rp < s1) {
            float u[8];
            const T* e = reinterpret_cast<const T*>(raw[j]);
#pragma unroll
            for (int k = 0; k < 8; ++k) u[k] = to_f(e[k]);
            gn_acc8(u, pv, a1, a2);
          }
      }
      gn_put8(t1, t2, r * cw + cv * 8, a1, a2);
    }
    __syncthreads();
    gn_fold_window(t1, t2, rp, cw, c0, Cg, G, gsum, tid);
    __syncthreads();
  }
  float* out = part + ((int64_t)n * nchunks + chunk) * 2 * G;
  for (int g = tid; g < 2 * G; g += GN_THREADS) out[g] = gsum[g];
  if (final) gn_last_block(part, n, nchunks, G, Cg, (double)S * Cg, eps, xn, S, C, counter, st);
}

// Channel c's coefficients from its group's statistics st (pivot, rstd, m): y = (x - pivot) a + b with
// a = rstd gamma, b = beta - m rstd gamma; mr = m rstd.
struct GnCoef {
  float pivot, a, b, rstd, mr;
};
__device__ __forceinline__ GnCoef gn_channel_coef(const float* st, int G, int g, const void* gamma, int gdt,
                                                  const void* beta, int bdt, int c) {
  const float ga = gamma ? load_any(gamma, gdt, c) : 1.f, be = beta ? load_any(beta, bdt, c) : 0.f;
  const float r = st[G + g], mr = st[2 * G + g] * r;
  return GnCoef{st[g], r * ga, be - mr * ga, r, mr};
}

// coef[n][c] = (pivot, rstd * gamma, beta - m rstd gamma, rstd), (m rstd, 0, 0, 0) with m = mean - pivot, for
// the scalar apply kernel and the backward; grid (ceil(C / 256), N).
__global__ void __launch_bounds__(256) gn_expand_kernel(const float* __restrict__ st, int C, int G, int Cg,
                                                        const void* gamma, int gdt, const void* beta, int bdt,
                                                        float4* __restrict__ coef) {
  const int c = blockIdx.x * 256 + threadIdx.x, n = blockIdx.y;
  if (c >= C) return;
  const GnCoef f = gn_channel_coef(st + (int64_t)n * 3 * G, G, c / Cg, gamma, gdt, beta, bdt, c);
  coef[2 * ((int64_t)n * C + c)] = make_float4(f.pivot, f.a, f.b, f.rstd);
  coef[2 * ((int64_t)n * C + c) + 1] = make_float4(f.mr, 0.f, 0.f, 0.f);
}

// The scalar apply (C % 8 != 0 or unaligned x / y): one element a thread, coefficients from gn_expand_kernel.
template <class T>
__global__ void __launch_bounds__(256) gn_apply_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t total,
                                                       int64_t SC, int C, const float4* __restrict__ coef, int silu) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int n = (int)(e / SC), c = (int)(e % C);
    const float4 f = coef[2 * ((int64_t)n * C + c)];
    const float r = (to_f(x[e]) - f.x) * f.y + f.z;
    y[e] = from_f<T>(silu ? silu_f(r) : r);
  }
}

// y = (x - pivot) a + b (optional SiLU) for C % 8 == 0 and 16-byte aligned x, y, with every thread on fixed
// channels: the grid's stride in elements (gridDim.x * 256 * 8) is a multiple of C (group_norm sizes it so), so
// the channel of a thread's vectors never changes and its 8 channels' coefficients live in registers. (Session 20's
// kernel kept them in shared memory, three 32-byte shared loads per 16-byte vector of x, and with silu_f's ~20
// instructions a value it was instruction-bound where x sits in L2: 29 us for a 33.5 MB tensor on an H200 where a
// copy takes ~16. Measured against it in session 21, it was removed with the other losing variants: eight loads
// in flight in this kernel, four in the statistics kernel, silu_f for 16-bit results.) Four 16-byte loads in
// flight a thread, the first batch issued before the coefficients are read; 16-bit results take silu_half.
template <class T>
__global__ void __launch_bounds__(256) gn_apply_reg_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t S, int C,
                                                           int G, int Cg, const float* __restrict__ st,
                                                           const float* __restrict__ part, int nchunks, float eps,
                                                           const void* gamma, int gdt, const void* beta, int bdt,
                                                           int silu) {
  extern __shared__ float sst[];  // [3][G] when the partials are summed here
  constexpr int W = sizeof(T) / 2, U = 4 / W;  // 16-byte words a vector of 8, vectors a batch
  const int n = blockIdx.y;
  const int64_t nvec = S * C / 8, stride = (int64_t)gridDim.x * blockDim.x;
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const bool active = i < nvec;
  if (!part && !active) return;
  const uint4* xr = reinterpret_cast<const uint4*>(x + (int64_t)n * S * C);
  T* yn = y + (int64_t)n * S * C;
  uint4 r[U][W];
  auto load = [&](int64_t i0) {
#pragma unroll
    for (int j = 0; j < U; ++j)
      if (i0 + j * stride < nvec)
#pragma unroll
        for (int h = 0; h < W; ++h) r[j][h] = xr[(i0 + j * stride) * W + h];
  };
  if (active) load(i);
  gn_dep_wait();  // the statistics kernel's results, from here on
  if (part) {  // the sample's statistics from the partials, the same sums (and bits) in every block
    gn_sum_partials(part, n, nchunks, G, Cg, (double)S * Cg, eps, x + (int64_t)n * S * C, S, C, sst);
    __syncthreads();
    if (!active) return;
  }
  const float* stn = part ? sst : st + (int64_t)n * 3 * G;
  const int c = (int)((i * 8) % C);
  float pv[8], av[8], bv[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const GnCoef f = gn_channel_coef(stn, G, (c + k) / Cg, gamma, gdt, beta, bdt, c + k);
    pv[k] = f.pivot;
    av[k] = f.a;
    bv[k] = f.b;
  }
  for (;;) {
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int64_t iv = i + j * stride;
      if (iv >= nvec) break;
      float v[8];
      const T* e = reinterpret_cast<const T*>(r[j]);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float q = (to_f(e[k]) - pv[k]) * av[k] + bv[k];
        if constexpr (sizeof(T) == 2) v[k] = silu ? silu_half(q) : q;
        else v[k] = silu ? silu_f(q) : q;
      }
      Vec8<T>::store(yn + iv * 8, v);
    }
    i += U * stride;
    if (i >= nvec) break;
    load(i);
  }
}

// Shapes and parameters shared by group_norm and group_norm_backward.
struct GnArgs {
  Tensor x, gamma, beta;  // x contiguous in the compute dtype; gamma / beta may be empty
  int64_t N = 0, S = 0, C = 0, G = 0, nchunks = 1, rpc = 0;
  float eps = 1e-5f;
};

GnArgs gn_args(const char* op, const OpContext& ctx, DType dt, size_t beta_at) {
  cudaStream_t s = stream_of(ctx);
  const Tensor& x0 = ctx.in[0];
  need_float(op, "x", x0);
  if (x0.dim() < 2) fail(op, "x must be [N, S, C], got " + x0.describe());
  GnArgs a;
  a.N = x0.size(0);
  a.C = x0.size(-1);
  a.G = ctx.attrs.i("groups");
  if (a.G < 1 || a.C % a.G != 0) fail(op, "groups=" + std::to_string(a.G) + " must divide C=" + std::to_string(a.C));
  if (a.C > (1 << 30)) fail(op, "too many channels");
  a.S = (a.N && a.C) ? x0.numel() / (a.N * a.C) : 0;
  for (size_t i : {size_t(1), beta_at}) {
    if (ctx.in.size() <= i) continue;
    need_float(op, i == 1 ? "gamma" : "beta", ctx.in[i]);
    if (ctx.in[i].numel() != a.C)
      fail(op, std::string(i == 1 ? "gamma" : "beta") + " must have C=" + std::to_string(a.C) + " elements, got " + ctx.in[i].describe());
    (i == 1 ? a.gamma : a.beta) = contiguous(ctx.in[i], s);
  }
  a.eps = (float)ctx.attrs.f("eps", 1e-5);
  a.x = as_dtype(x0, dt, s);
  // The backward's row chunks (gnb_reduce_kernel): about four blocks per multiprocessor in all. (The forward's
  // statistics pass sizes its own grid: gn_stats.)
  const int64_t target = 4 * (int64_t)sm_count();
  a.nchunks = std::max<int64_t>(1, std::min<int64_t>(a.S, (target + std::max<int64_t>(a.N, 1) - 1) / std::max<int64_t>(a.N, 1)));
  if (3 * a.G * 4 > 48 * 1024)
    fail(op, "groups=" + std::to_string(a.G) + ": at most 4096 groups on CUDA (x " + x0.describe() + ")");
  if (a.nchunks > 65535 || a.N > 65535 || a.N > kMaxCounters) fail(op, "shape out of range: " + x0.describe());
  a.rpc = a.S ? (a.S + a.nchunks - 1) / a.nchunks : 0;
  return a;
}

// st [N, 3, G]: per group pivot, rstd, m = mean - pivot (one launch: the statistics blocks, the last of each
// sample summing its partials).
struct GnStats {
  Tensor st;    // [N, 3, G] (final): pivot, rstd, m = mean - pivot per group
  Tensor part;  // [N, nchunks, 2G]: the statistics blocks' partial sums
  int64_t nchunks = 0;
};

template <class T>
GnStats gn_stats(const GnArgs& a, cudaStream_t s, bool final = true) {
  const T* xp = a.x.data<T>();
  const size_t sm = 2 * a.G * sizeof(float);
  const bool vec = a.C % 8 == 0 && aligned16(xp);
  final = final || !vec;  // (the scalar statistics kernel always sums its partials itself)
  Tensor st = final ? empty({a.N, 3, a.G}, DType::F32, Device::CUDA) : Tensor();
  float* stp = final ? st.data<float>() : nullptr;
  unsigned* cnt = reduction_counters(s);
  const void* kern = vec ? (const void*)gn_stats_vec_kernel<T, sizeof(T) == 4 ? 4 : 8> : (const void*)gn_stats_kernel<T>;
  // 8 bytes a group beside ~25 KB of static shared memory: past the default 48 KB from ~3000 groups (up to 4096)
  if (sm > 16 * 1024) allow_smem(kern, (int)sm);
  // About 128 KB of x a block, between one and two blocks a multiprocessor (within one wave): each chunk's
  // partials cost the last block's reduction. Nsight Compute durations on an H200 (session 20, f16, medians of
  // 3) at 1 / 2 / 4 blocks a multiprocessor: UNet [2, 4096, 320] 10.6 / 11.8 / 14.3 us, [2, 1024, 1280] 11.4 /
  // 11.3 / 13.9, VAE [1, 16384, 512] 16.8 / 16.7 / 21.5, [1, 65536, 256] 23.0 / 20.2 / 24.0. (HYPERSD_GN_BPS=k:
  // k blocks a multiprocessor instead, read each call: bench/gpu_kernels.ts times the choice.)
  const int bps = gn_knob("HYPERSD_GN_BPS", 0);
  const int64_t occ = blocks_per_sm(kern, GN_THREADS, sm), sms = sm_count();
  const int64_t by_bytes = (a.N * a.S * a.C * (int64_t)sizeof(T) + (128 << 10) - 1) / (128 << 10);
  const int64_t N = std::max<int64_t>(a.N, 1),
                target = bps ? bps * sms
                                                   : std::min<int64_t>(occ * sms, std::max<int64_t>(sms, std::min<int64_t>(2 * sms, by_bytes)));
  const int64_t nchunks = std::max<int64_t>(1, std::min<int64_t>({a.S, (target + N - 1) / N, 65535}));
  const int64_t rpc = a.S ? (a.S + nchunks - 1) / nchunks : 0;
  Tensor part = empty({a.N, nchunks, 2 * a.G}, DType::F32, Device::CUDA);
  const dim3 grid((unsigned)nchunks, (unsigned)a.N);
  // eight 16-byte loads in flight a thread (four for f32's two-word vectors): faster than four at every size on
  // an H200 (session 21, Nsight Compute, f16: 10.6 -> 10.4 us at [2, 4096, 320], 11.4 -> 10.3 at [2, 1024, 1280],
  // 19.9 -> 19.1 at [1, 65536, 256], 80.3 -> 72.2 at [1, 1048576, 128])
  constexpr int U = sizeof(T) == 4 ? 4 : 8;
  if (vec)
    gn_stats_vec_kernel<T, U><<<grid, GN_THREADS, sm, s>>>(xp, a.S, (int)a.C, (int)a.G, (int)(a.C / a.G), rpc,
                                                           part.data<float>(), cnt, stp, a.eps, final);
  else
    gn_stats_kernel<T><<<grid, GN_THREADS, sm, s>>>(xp, a.S, (int)a.C, (int)a.G, (int)(a.C / a.G), rpc,
                                                    part.data<float>(), cnt, stp, a.eps);
  return GnStats{st, part, nchunks};
}

// st [N, 3, G] (pivot, rstd, m = mean - pivot per group) from channel statistics cs [N, C, 3] (chanstats.cuh: mean
// hi + lo, variance), one thread per (group, sample), in double: the group mean is the mean of its channels'
// means, its variance the mean of their variances plus the variance of their means; the pivot is the mean
// rounded to f32 and m the remainder (exact in the apply's (x - pivot) a + b, b folding m in).
__global__ void __launch_bounds__(128) gn_st_from_cs_kernel(const float* __restrict__ cs, int C, int G, int Cg,
                                                           float eps, float* __restrict__ st) {
  const int g = blockIdx.x * 128 + threadIdx.x, n = blockIdx.y;
  if (g >= G) return;
  const float* q = cs + ((int64_t)n * C + (int64_t)g * Cg) * 3;
  double sm = 0, sv = 0;
  for (int k = 0; k < Cg; ++k) sm += (double)q[3 * k] + (double)q[3 * k + 1];
  const double mean = sm / Cg;
  for (int k = 0; k < Cg; ++k) {
    const double d = ((double)q[3 * k] + (double)q[3 * k + 1]) - mean;
    sv += (double)q[3 * k + 2] + d * d;
  }
  const float pivot = (float)mean;
  float* o = st + (int64_t)n * 3 * G;
  o[g] = pivot;
  o[G + g] = (float)(1.0 / sqrt(fmax(0.0, sv / Cg) + (double)eps));
  o[2 * G + g] = (float)(mean - (double)pivot);
}

Tensor gn_st_from_cs(const GnArgs& a, const Tensor& cs, cudaStream_t s) {
  Tensor st = empty({a.N, 3, a.G}, DType::F32, Device::CUDA);
  gn_st_from_cs_kernel<<<dim3((unsigned)((a.G + 127) / 128), (unsigned)a.N), 128, 0, s>>>(
      cs.data<float>(), (int)a.C, (int)a.G, (int)(a.C / a.G), a.eps, st.data<float>());
  return st;
}

// coef [N, C] x 2 float4 (gn_expand_kernel) from the statistics st (gn_stats's, or gn_st_from_cs's).
Tensor gn_coef_from(const GnArgs& a, const Tensor& st, cudaStream_t s) {
  Tensor coef = empty({a.N, a.C, 8}, DType::F32, Device::CUDA);
  gn_expand_kernel<<<dim3((unsigned)((a.C + 255) / 256), (unsigned)a.N), 256, 0, s>>>(
      st.data<float>(), (int)a.C, (int)a.G, (int)(a.C / a.G), a.gamma.storage ? a.gamma.raw() : nullptr,
      (int)a.gamma.dtype, a.beta.storage ? a.beta.raw() : nullptr, (int)a.beta.dtype, (float4*)coef.raw());
  return coef;
}
template <class T>
Tensor gn_coef(const GnArgs& a, cudaStream_t s) {
  return gn_coef_from(a, gn_stats<T>(a, s).st, s);
}

void group_norm(const OpContext& ctx) {
  const char* op = "group_norm";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 1, 1);
  const Tensor& y = ctx.out[0];
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  need_shape(op, "y", y, ctx.in[0].shape);
  if (y.numel() == 0) return;
  // More images than a grid's y dimension (65535) and the reduction counters take: the images are independent, so
  // the op runs over slices of at most 32768 of them, each on views of x, y and the given statistics.
  constexpr int64_t kSlice = 32768;
  if (ctx.in[0].dim() >= 2 && ctx.in[0].size(0) > kSlice) {
    const Tensor& x = ctx.in[0];
    const int64_t N = x.size(0);
    if (ctx.in.size() > 3) cs_check(op, "stats (input 3)", ctx.in[3], N, x.size(-1));
    auto images = [](const Tensor& t, int64_t n0, int64_t n) {
      std::vector<int64_t> shape = t.shape;
      shape[0] = n;
      return view(t, shape, t.strides, t.offset + n0 * t.strides[0]);
    };
    for (int64_t n0 = 0; n0 < N; n0 += kSlice) {
      const int64_t n = std::min(kSlice, N - n0);
      std::vector<Tensor> in = ctx.in, out = ctx.out;
      in[0] = images(x, n0, n);
      out[0] = images(y, n0, n);
      if (in.size() > 3) in[3] = images(ctx.in[3], n0, n);
      group_norm(OpContext{in, out, ctx.attrs, ctx.pool, ctx.cuda_stream});
    }
    return;
  }
  const GnArgs a = gn_args(op, ctx, y.dtype, 2);
  const int silu = ctx.attrs.i("silu", 0) != 0;
  const int64_t total = a.x.numel();
  const bool vec = a.C % 8 == 0 && aligned16(a.x.raw()) && aligned16(y.raw());
  // A fourth input: x's channel statistics from the op that produced it (chanstats.cuh): no statistics pass, x is
  // read once (by the apply kernel). Never run on a GPU yet (session 22).
  Tensor given;
  if (ctx.in.size() > 3) {
    cs_check(op, "stats (input 3)", ctx.in[3], a.N, a.C);
    given = gn_st_from_cs(a, ctx.in[3], s);
  }
  dispatch_float(op, y.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (vec) {
      // gn_apply_reg_kernel: one wave of blocks (HYPERSD_GN_APPLY_BPS=k: k a multiprocessor), as many per sample,
      // rounded to a multiple of m = C / gcd(C, 2048) so that the grid's stride is a multiple of C.
      // Given the producer's statistics it reads their final form (gn_st_from_cs) in a plain launch. Otherwise the
      // statistics' partial sums are added up by every apply block (HYPERSD_GN_REDUCE_IN_STATS=1: by the
      // statistics kernel's last block, as the other paths do), and on sm_90 the apply kernel is a programmatic
      // dependent launch (its first loads of x and its blocks' start overlap the statistics kernel's end; back to
      // back on an H200, session 21: 0.023-0.024 against 0.025-0.028 ms at [1, 16384, 512], 0.041-0.042 against
      // 0.045 at [1, 65536, 256]); HYPERSD_GN_PDL=0 makes it a plain launch.
      const bool own = !given.storage;
      const bool in_apply = own && gn_knob("HYPERSD_GN_REDUCE_IN_STATS", 0) == 0 && 3 * a.G * sizeof(float) + 8192 <= 48 * 1024;
      const GnStats st = own ? gn_stats<T>(a, s, !in_apply) : GnStats{};
      const size_t smem = in_apply ? 3 * a.G * sizeof(float) : 0;
      const void* kern = (const void*)gn_apply_reg_kernel<T>;
      const int64_t per = a.S * a.C / 8, m = a.C / std::gcd<int64_t>(a.C, 2048);
      const int64_t blocks = (int64_t)gn_knob("HYPERSD_GN_APPLY_BPS", blocks_per_sm(kern, 256, smem)) * sm_count();
      const int64_t want = std::min<int64_t>((per + 255) / 256, (blocks + a.N - 1) / a.N);
      const int64_t gx = std::max<int64_t>(m, want / m * m);
      if (gx > INT32_MAX) fail(op, "shape out of range: " + a.x.describe());
      const char* pe = std::getenv("HYPERSD_GN_PDL");
      const bool pdl = own && !(pe && pe[0] == '0') && sm90_device();
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3((unsigned)gx, (unsigned)a.N);
      cfg.blockDim = dim3(256);
      cfg.dynamicSmemBytes = smem;
      cfg.stream = s;
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr[0].val.programmaticStreamSerializationAllowed = 1;
      cfg.attrs = attr;
      cfg.numAttrs = pdl ? 1 : 0;
      const float* final_st = !own ? given.data<float>() : in_apply ? nullptr : st.st.data<float>();
      const cudaError_t e = cudaLaunchKernelEx(
          &cfg, gn_apply_reg_kernel<T>, a.x.data<T>(), y.data<T>(), a.S, (int)a.C, (int)a.G, (int)(a.C / a.G),
          final_st, in_apply ? (const float*)st.part.data<float>() : (const float*)nullptr, (int)st.nchunks, a.eps,
          a.gamma.storage ? (const void*)a.gamma.raw() : nullptr, (int)a.gamma.dtype,
          a.beta.storage ? (const void*)a.beta.raw() : nullptr, (int)a.beta.dtype, silu);
      if (e != cudaSuccess) fail(op, std::string("launching the apply kernel: ") + cudaGetErrorString(e));
      return;
    }
    const Tensor coef = given.storage ? gn_coef_from(a, given, s) : gn_coef<T>(a, s);
    gn_apply_kernel<T><<<grid_for(total, 256), 256, 0, s>>>(a.x.data<T>(), y.data<T>(), total, a.S * a.C, (int)a.C,
                                                            (const float4*)coef.raw(), silu);
  });
}

// ---------------------------------------------------------------- group norm backward
// Inputs x [N, S, C], gamma, beta, dy; outputs [dx] [dgamma, dbeta] (need_dx / need_affine), computed in f32.
// With xh = (x - mean) rstd and dz = dy (times silu'(xh gamma + beta) with the fused SiLU), per (n, group) of
// M = S C/G elements: dx = rstd (dz gamma - mean(dz gamma) - xh mean(dz gamma xh)); dgamma[c] = sum dz xh,
// dbeta[c] = sum dz. Both group means come from per-channel sums of dz and dz xh (weighted by gamma), so one
// reduction pass serves dx and the affine gradients:
//   1. the forward's statistics (coef);
//   2. per (sample, row chunk, channel) partial sums of dz and dz xh, laid out as the forward's stats pass;
//   3. per channel: chunks (and samples, for dgamma / dbeta) summed in f64, in a fixed order;
//   4. per (sample, group): the two means;  5. dx, elementwise.

__device__ __forceinline__ float gn_dz(float x, float dy, const float4* cfp, float gamma, float beta, int silu, float& xh) {
  const float4 cf = cfp[0];
  xh = (x - cf.x) * cf.w - cfp[1].x;
  return silu ? dy * silu_d(xh * gamma + beta) : dy;
}

__global__ void __launch_bounds__(GN_THREADS) gnb_reduce_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                                                int64_t S, int C, int64_t rows_per_chunk,
                                                                const float4* __restrict__ coef, const void* gamma,
                                                                int gdt, const void* beta, int bdt, int silu,
                                                                float2* __restrict__ part) {
  __shared__ float t1[GN_THREADS], t2[GN_THREADS];
  const int tid = threadIdx.x, chunk = blockIdx.x, nchunks = gridDim.x, n = blockIdx.y;
  const int64_t base = (int64_t)n * S * C, s0 = chunk * rows_per_chunk, s1 = min(S, s0 + rows_per_chunk);
  float2* out = part + ((int64_t)n * nchunks + chunk) * C;
  for (int c0 = 0; c0 < C; c0 += GN_THREADS) {
    const int cw = min(GN_THREADS, C - c0), rp = GN_THREADS / cw;
    const int c = c0 + tid % cw, r = tid / cw;
    float a1 = 0.f, a2 = 0.f;
    if (r < rp) {
      const float4* cf = coef + 2 * ((int64_t)n * C + c);
      const float ga = gamma ? load_any(gamma, gdt, c) : 1.f, be = beta ? load_any(beta, bdt, c) : 0.f;
      for (int64_t s = s0 + r; s < s1; s += rp) {
        float xh;
        const float dz = gn_dz(x[base + s * C + c], dy[base + s * C + c], cf, ga, be, silu, xh);
        a1 += dz;
        a2 = fmaf(dz, xh, a2);
      }
    }
    t1[tid] = a1;
    t2[tid] = a2;
    __syncthreads();
    if (tid < cw) {
      float u1 = 0.f, u2 = 0.f;
      for (int rr = 0; rr < rp; ++rr) {
        u1 += t1[rr * cw + tid];
        u2 += t2[rr * cw + tid];
      }
      out[c0 + tid] = make_float2(u1, u2);
    }
    __syncthreads();
  }
}

// chan[n][c] = (sum dz, sum dz xh) over all rows of sample n; dgamma / dbeta = their sums over samples.
__global__ void __launch_bounds__(256) gnb_channel_kernel(const float2* __restrict__ part, int N, int nchunks, int C,
                                                          double2* __restrict__ chan, float* dgamma, float* dbeta) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
    double g = 0.0, b = 0.0;
    for (int n = 0; n < N; ++n) {
      double sdz = 0.0, sdzxh = 0.0;
      for (int k = 0; k < nchunks; ++k) {
        const float2 v = part[((int64_t)n * nchunks + k) * C + c];
        sdz += v.x;
        sdzxh += v.y;
      }
      chan[(int64_t)n * C + c] = make_double2(sdz, sdzxh);
      b += sdz;
      g += sdzxh;
    }
    if (dgamma) {
      dgamma[c] = (float)g;
      dbeta[c] = (float)b;
    }
  }
}

// means[n][g] = (mean of dz gamma, mean of dz gamma xh) over the group.
__global__ void __launch_bounds__(256) gnb_means_kernel(const double2* __restrict__ chan, int N, int C, int G,
                                                        const void* gamma, int gdt, double inv_cnt, float2* __restrict__ means) {
  const int Cg = C / G;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < N * G; i += gridDim.x * blockDim.x) {
    const int n = i / G, g = i - n * G;
    double a1 = 0.0, a2 = 0.0;
    const double2* cn = chan + (int64_t)n * C;
#pragma unroll 1
    for (int c = g * Cg; c < g * Cg + Cg; ++c) {
      const float ga = gamma ? load_any(gamma, gdt, c) : 1.f;
      a1 = fma((double)ga, cn[c].x, a1);
      a2 = fma((double)ga, cn[c].y, a2);
    }
    means[i] = make_float2((float)(a1 * inv_cnt), (float)(a2 * inv_cnt));
  }
}

__global__ void __launch_bounds__(256) gnb_dx_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                                     float* __restrict__ dx, int64_t total, int64_t SC, int C, int Cg,
                                                     int G, const float4* __restrict__ coef, const void* gamma, int gdt,
                                                     const void* beta, int bdt, int silu, const float2* __restrict__ means) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int n = (int)(i / SC), c = (int)(i % C);
    const float4* cf = coef + 2 * ((int64_t)n * C + c);
    const float ga = gamma ? load_any(gamma, gdt, c) : 1.f, be = beta ? load_any(beta, bdt, c) : 0.f;
    float xh;
    const float dz = gn_dz(x[i], dy[i], cf, ga, be, silu, xh);
    const float2 m = means[(int64_t)n * G + c / Cg];
    dx[i] = cf->w * (dz * ga - m.x - xh * m.y);
  }
}

// The outputs of a norm backward: [dx] [dgamma, dbeta] as need_dx / need_affine say.
struct NormGrads {
  const Tensor* dx = nullptr;
  const Tensor* dgamma = nullptr;
  const Tensor* dbeta = nullptr;
};

NormGrads norm_grads(const char* op, const OpContext& ctx, const Tensor& x, int64_t C) {
  const bool need_dx = ctx.attrs.i("need_dx", 1) != 0, need_aff = ctx.attrs.i("need_affine", 1) != 0;
  const size_t want = (need_dx ? 1 : 0) + (need_aff ? 2 : 0);
  if (ctx.out.size() != want)
    fail(op, "expected " + std::to_string(want) + " outputs (need_dx " + std::to_string(need_dx) + ", need_affine " +
                 std::to_string(need_aff) + "), got " + std::to_string(ctx.out.size()));
  NormGrads o;
  size_t k = 0;
  if (need_dx) {
    o.dx = &ctx.out[k++];
    need_float(op, "dx", *o.dx);
    need_shape(op, "dx", *o.dx, x.shape);
  }
  if (need_aff) {
    o.dgamma = &ctx.out[k];
    o.dbeta = &ctx.out[k + 1];
    for (const Tensor* t : {o.dgamma, o.dbeta}) {
      need_float(op, "dgamma / dbeta", *t);
      if (t->numel() != C) fail(op, "dgamma and dbeta must have " + std::to_string(C) + " elements, got " + t->describe());
    }
  }
  return o;
}

void group_norm_backward(const OpContext& ctx) {
  const char* op = "group_norm_backward";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 4, 0);
  const NormGrads o = norm_grads(op, ctx, ctx.in[0], ctx.in[0].size(-1));
  need_float(op, "dy", ctx.in[3]);
  need_shape(op, "dy", ctx.in[3], ctx.in[0].shape);
  const GnArgs a = gn_args(op, ctx, DType::F32, 2);
  const int silu = ctx.attrs.i("silu", 0) != 0;
  if (!o.dx && !o.dgamma) return;
  OutAs dx, dg, db;
  if (o.dx) dx = OutAs(*o.dx, DType::F32, false, s);
  if (o.dgamma) {
    dg = OutAs(*o.dgamma, DType::F32, false, s);
    db = OutAs(*o.dbeta, DType::F32, false, s);
  }
  if (a.x.numel() == 0) {  // no elements: zero affine gradients
    for (const OutAs* t : {&dg, &db})
      if (t->buf.storage) {
        cudaMemsetAsync(t->buf.raw(), 0, t->buf.nbytes(), s);
        t->finish(s);
      }
    return;
  }
  const Tensor dy = as_dtype(ctx.in[3], DType::F32, s);
  const Tensor coef = gn_coef<float>(a, s);
  const int C = (int)a.C, G = (int)a.G, N = (int)a.N;
  const void* gp = a.gamma.storage ? a.gamma.raw() : nullptr;
  const void* bp = a.beta.storage ? a.beta.raw() : nullptr;
  Tensor part = empty({a.N, a.nchunks, a.C, 2}, DType::F32, Device::CUDA);
  Tensor chan = empty({a.N, a.C, 2}, DType::I64, Device::CUDA);  // double2 slots
  Tensor means = empty({a.N, a.G, 2}, DType::F32, Device::CUDA);
  gnb_reduce_kernel<<<dim3((unsigned)a.nchunks, (unsigned)N), GN_THREADS, 0, s>>>(
      a.x.data<float>(), dy.data<float>(), a.S, C, a.rpc, (const float4*)coef.raw(), gp, (int)a.gamma.dtype, bp,
      (int)a.beta.dtype, silu, (float2*)part.raw());
  gnb_channel_kernel<<<grid_for(C, 256), 256, 0, s>>>((const float2*)part.raw(), N, (int)a.nchunks, C, (double2*)chan.raw(),
                                                      o.dgamma ? dg.buf.data<float>() : nullptr,
                                                      o.dgamma ? db.buf.data<float>() : nullptr);
  if (o.dx) {
    gnb_means_kernel<<<grid_for((int64_t)N * G, 256), 256, 0, s>>>((const double2*)chan.raw(), N, C, G, gp,
                                                                   (int)a.gamma.dtype, 1.0 / ((double)a.S * (C / G)),
                                                                   (float2*)means.raw());
    gnb_dx_kernel<<<grid_for(a.x.numel(), 256), 256, 0, s>>>(a.x.data<float>(), dy.data<float>(), dx.buf.data<float>(),
                                                             a.x.numel(), a.S * a.C, C, C / G, G, (const float4*)coef.raw(),
                                                             gp, (int)a.gamma.dtype, bp, (int)a.beta.dtype, silu,
                                                             (const float2*)means.raw());
  }
  dx.finish(s);
  dg.finish(s);
  db.finish(s);
}

// ---------------------------------------------------------------- layer norm

template <class T, bool VEC>
__global__ void __launch_bounds__(256) layer_norm_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t R, int C,
                                                         const void* gamma, int gdt, const void* beta, int bdt,
                                                         float eps) {
  constexpr int V = VEC ? 8 : 1;
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * 8LL + (threadIdx.x >> 5);
  if (row >= R) return;
  const T* xr = x + row * C;
  T* yr = y + row * C;
  float v[V];
  auto load = [&](int c) {
    if constexpr (VEC) Vec8<T>::load(xr + c, v);
    else v[0] = to_f(xr[c]);
  };
  // Sums of x - K, K the row's first value: a constant row gives exactly beta (plain float sums left its mean
  // a few ulps off, times rstd = 1 / sqrt(eps)), and the variance does not cancel when |mean| >> std. (The
  // output pass still centres on the mean rounded to float, m = K + dm: centring on K and dm separately, as
  // the CPU kernels do, needs a 33rd register here and ptxas spilled rather than take it.)
  const float K = to_f(xr[0]);
  float sum = 0.f;
  for (int c = lane * V; c < C; c += 32 * V) {
    load(c);
#pragma unroll
    for (int k = 0; k < V; ++k) sum += v[k] - K;
  }
  const float mean = K + warp_sum(sum) / C;
  float sq = 0.f;
  for (int c = lane * V; c < C; c += 32 * V) {
    load(c);
#pragma unroll
    for (int k = 0; k < V; ++k) sq = fmaf(v[k] - mean, v[k] - mean, sq);
  }
  const float rstd = rsqrtf(warp_sum(sq) / C + eps);
  for (int c = lane * V; c < C; c += 32 * V) {
    load(c);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float ga = gamma ? load_any(gamma, gdt, c + k) : 1.f, be = beta ? load_any(beta, bdt, c + k) : 0.f;
      v[k] = (v[k] - mean) * rstd * ga + be;
    }
    if constexpr (VEC) Vec8<T>::store(yr + c, v);
    else yr[c] = from_f<T>(v[0]);
  }
}

void layer_norm(const OpContext& ctx) {
  const char* op = "layer_norm";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 1, 1);
  const Tensor& x0 = ctx.in[0];
  const Tensor& y = ctx.out[0];
  need_float(op, "x", x0);
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  if (x0.dim() < 1) fail(op, "x must have rank >= 1, got " + x0.describe());
  need_shape(op, "y", y, x0.shape);
  const int64_t C = x0.size(-1);
  if (y.numel() == 0) return;
  if (C > (1 << 30)) fail(op, "last dim too large");
  const int64_t R = x0.numel() / C;
  Tensor gc, bc;
  if (ctx.in.size() > 1) {
    need_float(op, "gamma", ctx.in[1]);
    if (ctx.in[1].numel() != C) fail(op, "gamma must have C=" + std::to_string(C) + " elements, got " + ctx.in[1].describe());
    gc = contiguous(ctx.in[1], s);
  }
  if (ctx.in.size() > 2) {
    need_float(op, "beta", ctx.in[2]);
    if (ctx.in[2].numel() != C) fail(op, "beta must have C=" + std::to_string(C) + " elements, got " + ctx.in[2].describe());
    bc = contiguous(ctx.in[2], s);
  }
  const float eps = (float)ctx.attrs.f("eps", 1e-5);
  const DType dt = y.dtype;
  const Tensor x = as_dtype(x0, dt, s);
  const bool vec = C % 8 == 0 && aligned16(x.raw()) && aligned16(y.raw());
  const unsigned blocks = (unsigned)((R + 7) / 8);
  if ((R + 7) / 8 > 0x7fffffffLL) fail(op, "too many rows");
  dispatch_float(op, dt, [&](auto tag) {
    using T = decltype(tag);
    const void* g = gc.storage ? gc.raw() : nullptr;
    const void* b = bc.storage ? bc.raw() : nullptr;
    if (vec)
      layer_norm_kernel<T, true><<<blocks, 256, 0, s>>>(x.data<T>(), y.data<T>(), R, (int)C, g, (int)gc.dtype, b,
                                                        (int)bc.dtype, eps);
    else
      layer_norm_kernel<T, false><<<blocks, 256, 0, s>>>(x.data<T>(), y.data<T>(), R, (int)C, g, (int)gc.dtype, b,
                                                         (int)bc.dtype, eps);
  });
}

// ---------------------------------------------------------------- layer norm backward
// Inputs x [..., C], gamma, dy; outputs [dx] [dgamma, dbeta] in f32. Per row (warp per row, as the forward):
// dx = rstd (dy gamma - mean(dy gamma) - xh mean(dy gamma xh)), and the row's (mean, rstd) is kept for the
// affine pass, which sums dy xh and dy down the rows per column in row chunks (f64 partials, fixed order).

__global__ void __launch_bounds__(256) lnb_rows_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                                       float* __restrict__ dx, float2* __restrict__ stats, int64_t R,
                                                       int C, const void* gamma, int gdt, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * 8LL + (threadIdx.x >> 5);
  if (row >= R) return;
  const float* xr = x + row * C;
  const float* dr = dy + row * C;
  float sum = 0.f;
  for (int c = lane; c < C; c += 32) sum += xr[c];
  const float mean = warp_sum(sum) / C;
  float sq = 0.f;
  for (int c = lane; c < C; c += 32) sq = fmaf(xr[c] - mean, xr[c] - mean, sq);
  const float rstd = rsqrtf(warp_sum(sq) / C + eps);
  if (stats && lane == 0) stats[row] = make_float2(mean, rstd);
  if (!dx) return;
  float a1 = 0.f, a2 = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float g = dr[c] * (gamma ? load_any(gamma, gdt, c) : 1.f), xh = (xr[c] - mean) * rstd;
    a1 += g;
    a2 = fmaf(g, xh, a2);
  }
  const float m1 = warp_sum(a1) / C, m2 = warp_sum(a2) / C;
  for (int c = lane; c < C; c += 32) {
    const float g = dr[c] * (gamma ? load_any(gamma, gdt, c) : 1.f), xh = (xr[c] - mean) * rstd;
    dx[row * C + c] = rstd * (g - m1 - xh * m2);
  }
}

__global__ void __launch_bounds__(256) lnb_affine_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                                         const float2* __restrict__ stats, int64_t R, int C,
                                                         int64_t rows_per_chunk, double2* __restrict__ part) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, chunk = blockIdx.y;
  if (c >= C) return;
  const int64_t r0 = chunk * rows_per_chunk, r1 = min(R, r0 + rows_per_chunk);
  double g = 0.0, b = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const float2 st = stats[r];
    const float d = dy[r * C + c];
    g += (double)(d * ((x[r * C + c] - st.x) * st.y));
    b += d;
  }
  part[(int64_t)chunk * C + c] = make_double2(g, b);
}

__global__ void __launch_bounds__(256) lnb_affine_final_kernel(const double2* __restrict__ part, int nchunks, int C,
                                                               float* dgamma, float* dbeta) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double g = 0.0, b = 0.0;
  for (int k = 0; k < nchunks; ++k) {
    const double2 v = part[(int64_t)k * C + c];
    g += v.x;
    b += v.y;
  }
  dgamma[c] = (float)g;
  dbeta[c] = (float)b;
}

void layer_norm_backward(const OpContext& ctx) {
  const char* op = "layer_norm_backward";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 3, 0);
  const Tensor& x0 = ctx.in[0];
  need_float(op, "x", x0);
  need_float(op, "gamma", ctx.in[1]);
  need_float(op, "dy", ctx.in[2]);
  if (x0.dim() < 1) fail(op, "x must have rank >= 1, got " + x0.describe());
  const int64_t C = x0.size(-1);
  if (C > (1 << 30)) fail(op, "last dim too large");
  if (ctx.in[1].numel() != C) fail(op, "gamma must have C=" + std::to_string(C) + " elements, got " + ctx.in[1].describe());
  need_shape(op, "dy", ctx.in[2], x0.shape);
  const NormGrads o = norm_grads(op, ctx, x0, C);
  OutAs dx, dg, db;
  if (o.dx) dx = OutAs(*o.dx, DType::F32, false, s);
  if (o.dgamma) {
    dg = OutAs(*o.dgamma, DType::F32, false, s);
    db = OutAs(*o.dbeta, DType::F32, false, s);
  }
  const int64_t R = C ? x0.numel() / C : 0;
  if (R == 0 || C == 0) {
    for (const OutAs* t : {&dg, &db})
      if (t->buf.storage && t->buf.numel()) {
        cudaMemsetAsync(t->buf.raw(), 0, t->buf.nbytes(), s);
        t->finish(s);
      }
    return;
  }
  if ((R + 7) / 8 > 0x7fffffffLL) fail(op, "too many rows");
  const Tensor x = as_dtype(x0, DType::F32, s), dy = as_dtype(ctx.in[2], DType::F32, s), gamma = contiguous(ctx.in[1], s);
  const float eps = (float)ctx.attrs.f("eps", 1e-5);
  Tensor stats;
  if (o.dgamma) stats = empty({R, 2}, DType::F32, Device::CUDA);
  lnb_rows_kernel<<<(unsigned)((R + 7) / 8), 256, 0, s>>>(x.data<float>(), dy.data<float>(),
                                                          o.dx ? dx.buf.data<float>() : nullptr,
                                                          o.dgamma ? (float2*)stats.raw() : nullptr, R, (int)C,
                                                          gamma.raw(), (int)gamma.dtype, eps);
  if (o.dgamma) {
    const int64_t nchunks = std::max<int64_t>(1, std::min<int64_t>(std::min<int64_t>(R, 1024), 65536 / std::max<int64_t>(C, 1) + 1));
    const int64_t rpc = (R + nchunks - 1) / nchunks;
    Tensor part = empty({nchunks, C, 2}, DType::I64, Device::CUDA);  // double2 slots
    lnb_affine_kernel<<<dim3((unsigned)((C + 255) / 256), (unsigned)nchunks), 256, 0, s>>>(
        x.data<float>(), dy.data<float>(), (const float2*)stats.raw(), R, (int)C, rpc, (double2*)part.raw());
    lnb_affine_final_kernel<<<(unsigned)((C + 255) / 256), 256, 0, s>>>((const double2*)part.raw(), (int)nchunks, (int)C,
                                                                       dg.buf.data<float>(), db.buf.data<float>());
  }
  dx.finish(s);
  dg.finish(s);
  db.finish(s);
}

}  // namespace
}  // namespace cu

void register_norm_cuda(OpRegistry& r) {
  r.add_cuda("group_norm", cu::group_norm);
  r.add_cuda("layer_norm", cu::layer_norm);
  r.add_cuda("group_norm_backward", cu::group_norm_backward);
  r.add_cuda("layer_norm_backward", cu::layer_norm_backward);
}

}  // namespace hsd
