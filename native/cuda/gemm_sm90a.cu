// matmul on Hopper tensor cores with wgmma (sm_90a only): C = act(alpha A B^T + bias) + beta C for f16/bf16,
// A [M, K] row-major and B [N, K] row-major (a linear layer's weight: both operands K-major), batched by
// blockIdx.z with strides, no LoRA segment. gemm.cu's run_gemm() calls it on a compute capability 9.0 device
// when the operands qualify (rows 16-byte aligned, K % 8 == 0) unless HYPERSD_WGMMA=0; everything else takes
// the mma.sync kernel of gemm_core.cuh, which also runs on Ampere and Ada.
//
// Block: 128x128 output tile, 2 warpgroups (256 threads), warpgroup w owning rows 64w..64w+63 with one
// m64n128k16 wgmma per 16 k. Operands reach shared memory by cp.async (every thread loads) in a 3-stage ring
// of 64-wide k tiles stored in the 128-byte swizzle that the wgmma descriptors name (16-byte chunk c of row r
// at chunk c ^ (r & 7); 8-row groups 1024 bytes apart); fence.proxy.async makes the cp.async writes visible to
// the tensor cores before the barrier. Per k tile: barrier, issue the loads of the tile two ahead, 4 wgmma,
// commit, wait. The accumulators use mma.sync's m16n8 layout per warp, so the epilogue is store_pair().
// Built only into an sm_90a cubin (CMakeLists.txt: the *_sm90a.cu files); other targets never launch it.
#include <cstdlib>
#include <type_traits>

#include "gemm_core.cuh"

namespace hsd {
namespace cu {

constexpr int W_BM = 128, W_BN = 128, W_BK = 64, W_ST = 3, W_THREADS = 256;
constexpr int W_TILE_BYTES = W_BM * W_BK * 2;                // A or B tile of one stage: 16 KiB
constexpr int W_SMEM = W_ST * 2 * W_TILE_BYTES + 1024;       // + alignment slack (tiles start 1024-aligned)

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define HSD_WGMMA_DEVICE 1
#endif

#ifdef HSD_WGMMA_DEVICE
// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr) {
  uint64_t d = 0;
  d |= (uint64_t)((saddr & 0x3FFFF) >> 4);
  d |= (uint64_t)1 << 16;            // leading byte offset (unused with a K-major swizzled layout)
  d |= (uint64_t)(1024 >> 4) << 32;  // stride byte offset
  d |= (uint64_t)1 << 62;            // 128B swizzle
  return d;
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void wgmma_m64n128k16_bf16(float* d, uint64_t da, uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(1));
}
__device__ __forceinline__ void wgmma_m64n128k16_f16(float* d, uint64_t da, uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(1));
}

template <class T>
__device__ __forceinline__ void wg_mma(float* d, uint64_t da, uint64_t db) {
  if constexpr (std::is_same<T, bf16>::value) wgmma_m64n128k16_bf16(d, da, db);
  else wgmma_m64n128k16_f16(d, da, db);
}

// One 128 x 64 tile of a K-major operand (rows r0.., k0..) into swizzled shared memory; rows past `rows`
// and k past K are zero-filled. 1024 16-byte chunks, 4 per thread.
__device__ __forceinline__ void wg_load_tile(uint32_t sbase, const uint16_t* g, int64_t ld, int r0, int rows, int k0, int K,
                                             int tid) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int c = tid + i * W_THREADS, r = c >> 3, ch = c & 7;
    const int gr = r0 + r, gk = k0 + ch * 8;
    const bool in = gr < rows && gk < K;
    const uint16_t* src = in ? g + (int64_t)gr * ld + gk : g;
    const uint32_t dst = sbase + r * 128 + ((ch ^ (r & 7)) << 4);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(in ? 16 : 0) : "memory");
  }
}
#endif

template <class T>
__global__ void __launch_bounds__(W_THREADS) wgmma_gemm_kernel(const GemmParams p) {
#ifdef HSD_WGMMA_DEVICE
  extern __shared__ __align__(16) unsigned char wsm_raw[];
  const uint32_t s0 = ((uint32_t)__cvta_generic_to_shared(wsm_raw) + 1023u) & ~1023u;
  const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, warp = (tid >> 5) & 3;
  const int m0 = blockIdx.x * W_BM, n0 = blockIdx.y * W_BN, z = blockIdx.z;
  const uint16_t* A = (const uint16_t*)p.A + (int64_t)z * p.sA;
  const uint16_t* B = (const uint16_t*)p.B + (int64_t)z * p.sB;
  const int nk = (p.K + W_BK - 1) / W_BK;
  auto sA = [&](int st) { return s0 + st * 2 * W_TILE_BYTES; };
  auto sB = [&](int st) { return s0 + st * 2 * W_TILE_BYTES + W_TILE_BYTES; };

#pragma unroll
  for (int st = 0; st < W_ST - 1; ++st) {
    if (st < nk) {
      wg_load_tile(sA(st), A, p.lda, m0, p.M, st * W_BK, p.K, tid);
      wg_load_tile(sB(st), B, p.ldb, n0, p.N, st * W_BK, p.K, tid);
    }
    cp_async_commit();
  }
  float d[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) d[i] = 0.f;

  for (int kt = 0; kt < nk; ++kt) {
    cp_async_wait<W_ST - 2>();
    fence_proxy_async();
    __syncthreads();  // tile kt is in shared memory for everyone; every wgmma of tile kt-1 has completed
    const int nt = kt + W_ST - 1;
    if (nt < nk) {
      wg_load_tile(sA(nt % W_ST), A, p.lda, m0, p.M, nt * W_BK, p.K, tid);
      wg_load_tile(sB(nt % W_ST), B, p.ldb, n0, p.N, nt * W_BK, p.K, tid);
    }
    cp_async_commit();
    const int st = kt % W_ST;
    const uint32_t a0 = sA(st) + wg * 64 * 128, b0 = sB(st);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < W_BK / 16; ++kk) wg_mma<T>(d, wg_desc(a0 + kk * 32), wg_desc(b0 + kk * 32));
    wg_commit();
    wg_wait0();
  }
  cp_async_wait<0>();

  T* C = (T*)p.C + (int64_t)z * p.sC;
  const int row = m0 + wg * 64 + warp * 16 + (lane >> 2);
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int col = n0 + j * 8 + (lane & 3) * 2;
    store_pair<T>(p, C, p.alpha, row, col, d[4 * j], d[4 * j + 1]);
    store_pair<T>(p, C, p.alpha, row + 8, col, d[4 * j + 2], d[4 * j + 3]);
  }
#endif
}

bool wgmma_gemm_eligible(const GemmParams& p, int amode, bool b_nk) {
  static const int ok = [] {
    const char* e = std::getenv("HYPERSD_WGMMA");
    if (e && std::string(e) == "0") return 0;
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    return major == 9 && minor == 0 ? 1 : 0;
  }();
  return ok && amode == A_ROWMAJOR && b_nk && !p.A2 && !p.idx && !p.scales && p.vecA && p.vecB && p.K % 8 == 0 &&
         p.lda % 8 == 0 && p.ldb % 8 == 0 && p.sA % 8 == 0 && p.sB % 8 == 0;
}

void launch_wgmma_gemm(const GemmParams& p, DType dt, int batch, cudaStream_t s) {
  dim3 grid((p.M + W_BM - 1) / W_BM, (p.N + W_BN - 1) / W_BN, batch);
  if (dt == DType::BF16) {
    allow_smem((const void*)wgmma_gemm_kernel<bf16>, W_SMEM);
    wgmma_gemm_kernel<bf16><<<grid, W_THREADS, W_SMEM, s>>>(p);
  } else {
    allow_smem((const void*)wgmma_gemm_kernel<__half>, W_SMEM);
    wgmma_gemm_kernel<__half><<<grid, W_THREADS, W_SMEM, s>>>(p);
  }
}

}  // namespace cu
}  // namespace hsd
