// Hopper warpgroup MMA helpers shared by the *_sm90a.cu files (gemm_sm90a.cu, attention_sm90a.cu): the
// shared-memory matrix descriptor of the 128-byte-swizzled layout, the wgmma fences, the m64n64k16 product, and
// the cp.async staging of a ROWS x 64 16-bit tile into that layout. Device code only under HSD_WGMMA_DEVICE
// (an sm_90a compile).
#pragma once
#include <type_traits>

#include "common.cuh"

namespace hsd {
namespace cu {

// True when the current device is compute capability 9.0 (the sm_90a cubins run there); cached per device.
bool sm90_device();

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
// The "memory" clobbers of the three statements above order memory, not registers: the compiler may still move
// register work on wgmma operands (zeroing or rescaling accumulators, packing an A fragment, reading results)
// across the fence or the wait, which the PTX ISA forbids. An empty asm that claims to modify each register pins
// it in place (as CUTLASS's warpgroup_fence_operand does): put one before wg_fence() and after wg_wait0().
template <int N>
__device__ __forceinline__ void wg_fence_regs(float* r) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void wg_fence_regs(uint32_t* r) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void wgmma_m64n64k16_bf16(float* d, uint64_t da, uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(1));
}
__device__ __forceinline__ void wgmma_m64n64k16_f16(float* d, uint64_t da, uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(1));
}
template <class T>
__device__ __forceinline__ void wg_mma64(float* d, uint64_t da, uint64_t db) {
  if constexpr (std::is_same<T, bf16>::value) wgmma_m64n64k16_bf16(d, da, db);
  else wgmma_m64n64k16_f16(d, da, db);
}

// One ROWS x 64 tile of a K-major operand (rows r0.., k0..) into swizzled shared memory; rows past `rows`
// and k past K are zero-filled. ROWS * 8 16-byte chunks, ROWS * 8 / THREADS per thread.
template <int ROWS, int THREADS = 256>
__device__ __forceinline__ void wg_load_tile(uint32_t sbase, const uint16_t* g, int64_t ld, int r0, int rows, int k0, int K,
                                             int tid) {
  static_assert(ROWS * 8 % THREADS == 0, "the tile must split evenly over the threads");
#pragma unroll
  for (int i = 0; i < ROWS * 8 / THREADS; ++i) {
    const int c = tid + i * THREADS, r = c >> 3, ch = c & 7;
    const int gr = r0 + r, gk = k0 + ch * 8;
    const bool in = gr < rows && gk < K;
    const uint16_t* src = in ? g + (int64_t)gr * ld + gk : g;
    const uint32_t dst = sbase + r * 128 + ((ch ^ (r & 7)) << 4);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(in ? 16 : 0) : "memory");
  }
}

#endif

}  // namespace cu
}  // namespace hsd
