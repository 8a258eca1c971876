// Per-channel statistics on CUDA: see chanstats.cuh. Never run on a GPU yet (written in session 22 without
// one): bench/gpu-check.sh's ops stage runs test/ops/chanstats.test.ts on CUDA against float64 statistics.
//
// ptxas -v (sm_90, CUDA 13.0, -O3): see the kernels' comments; 0 spills (CI's strict build).
#include "chanstats.cuh"

#include <algorithm>
#include <cstdint>
#include <string>

namespace hsd {
namespace cu {
namespace {

constexpr int CS_THREADS = 256;

// One block per (row chunk, image), threads on channels: per channel K = the chunk's column mean (a first pass),
// then the sums of x - K and (x - K)^2 over the chunk's rows (the second pass reads from L1 / L2; no
// cancellation whatever the data), folded to (K, o, M2) into part[(n * nch + chunk) * C + c][3].
template <class T>
__global__ void __launch_bounds__(CS_THREADS) cs_rows_kernel(const T* __restrict__ x, int64_t S, int C, int64_t rpc,
                                                             int nch, int64_t N, float* __restrict__ part) {
  const int chunk = blockIdx.x;
  const int64_t r0 = (int64_t)chunk * rpc, r1 = min(S, r0 + rpc);
  if (r0 >= r1) return;
  const float inv = 1.f / (float)(r1 - r0);
  // images on grid.y, strided by it past its 65535 limit
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    const T* xn = x + (n * S + r0) * C;
    for (int c = threadIdx.x; c < C; c += CS_THREADS) {
      float m = 0.f;
      for (int64_t r = 0; r < r1 - r0; ++r) m += to_f(xn[r * C + c]);
      const float k = m * inv;
      float s1 = 0.f, s2 = 0.f;
      for (int64_t r = 0; r < r1 - r0; ++r) {
        const float d = to_f(xn[r * C + c]) - k;
        s1 += d;
        s2 = fmaf(d, d, s2);
      }
      const float o = s1 * inv;
      float* q = part + ((n * nch + chunk) * C + c) * 3;
      q[0] = k;
      q[1] = o;
      q[2] = fmaxf(0.f, fmaf(-s1, o, s2));
    }
  }
}

// One thread per (image, channel): Chan's merge of the image's pieces in index order, in double.
__global__ void __launch_bounds__(128) cs_combine_kernel(const float* __restrict__ part, int64_t per_image, int64_t rpc,
                                                         int64_t S, int C, int64_t N, float* __restrict__ out) {
  const int c = blockIdx.x * 128 + threadIdx.x;
  if (c >= C) return;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {  // images on grid.y, strided past its 65535 limit
    double na = 0, mean = 0, m2 = 0;
    for (int64_t k = 0; k < per_image; ++k) {
      const double nb = (double)min(rpc, S - k * rpc);
      if (nb <= 0) break;
      const float* q = part + ((n * per_image + k) * C + c) * 3;
      const double mb = (double)q[0] + (double)q[1], nt = na + nb, d = mb - mean;
      mean += d * (nb / nt);
      m2 += (double)q[2] + d * d * (na * nb / nt);
      na = nt;
    }
    const float hi = (float)mean;
    float* o = out + (n * C + c) * 3;
    o[0] = hi;
    o[1] = (float)(mean - (double)hi);
    o[2] = na > 0 ? (float)fmax(0.0, m2 / na) : 0.f;
  }
}

}  // namespace

void cs_combine(const float* part, int64_t N, int64_t per_image, int64_t rpc, int64_t S, int64_t C, float* out,
                cudaStream_t s) {
  if (N == 0 || C == 0) return;
  if (C > (1 << 30)) fail("channel_stats", "too many channels: " + std::to_string(C));
  cs_combine_kernel<<<dim3((unsigned)((C + 127) / 128), (unsigned)std::min<int64_t>(N, 65535)), 128, 0, s>>>(
      part, per_image, rpc, S, (int)C, N, out);
}

void cs_of_rows(const Tensor& x, int64_t N, int64_t S, int64_t C, float* out, cudaStream_t s) {
  if (N == 0 || C == 0) return;
  if (C > (1 << 30)) fail("channel_stats", "shape out of range: " + x.describe());
  // Row chunks of 128 rows (a block each): enough blocks to fill the GPU from a few thousand rows up, and the
  // pieces' partials (12 bytes a channel per 128 rows) under 10% of x's bytes even in f16.
  const int64_t rpc = 128, nch = std::max<int64_t>(1, (S + rpc - 1) / rpc);
  if (nch > INT32_MAX) fail("channel_stats", "too many rows: " + x.describe());  // chunks on grid.x
  Tensor part = empty({N * nch, C, 3}, DType::F32, Device::CUDA);
  dispatch_float("channel_stats", x.dtype, [&](auto tag) {
    using T = decltype(tag);
    cs_rows_kernel<T><<<dim3((unsigned)nch, (unsigned)std::min<int64_t>(N, 65535)), CS_THREADS, 0, s>>>(
        x.data<T>(), S, (int)C, rpc, (int)nch, N, part.data<float>());
  });
  cs_combine(part.data<float>(), N, nch, rpc, S, C, out, s);
}

void cs_check(const char* op, const char* what, const Tensor& st, int64_t N, int64_t C) {
  if (st.dtype != DType::F32 || st.dim() != 3 || st.size(0) != N || st.size(1) != C || st.size(2) != 3 ||
      !st.is_contiguous() || st.device() != Device::CUDA)
    fail(op, std::string(what) + " " + st.describe() + " must be a contiguous f32 [" + std::to_string(N) + ", " +
                 std::to_string(C) + ", 3] CUDA tensor (per image and channel: mean hi, mean lo, variance)");
}

}  // namespace cu
}  // namespace hsd
