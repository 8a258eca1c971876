// matmul on Hopper tensor cores with wgmma (sm_90a only): C = act(alpha A B^T + bias) + beta C for f16/bf16,
// A [M, K] row-major and B [N, K] row-major (a linear layer's weight: both operands K-major), with LoRA's
// second segment (t [M, r] and up [N, r] continue the k loop) when r % 8 == 0. gemm.cu's run_gemm() calls it
// on a compute capability 9.0 device when the operands qualify (rows 16-byte aligned, K % 8 == 0) unless
// HYPERSD_WGMMA=0; everything else takes the mma.sync kernel of gemm_core.cuh (Ampere, Ada, Hopper).
// Two kernels:
//
// wgmma_tma_kernel (unbatched products; the default): warp-specialized. Warp 8 is the producer: one lane
// issues two TMA bulk tensor copies per 64-wide k tile (tensor maps encoded on the host through the runtime's
// driver entry point; the hardware zero-fills past the matrix edges) into a ring of stages guarded by
// mbarriers (full: expect-tx + bytes; empty: one arrival per consumer warpgroup). Warpgroups 0 and 1 consume,
// each owning 64 rows of a 128 x 256 tile (4 stages) or a 128 x 128 tile (3 stages, two blocks per SM: for
// narrow N, short k loops with an activation, or too few tiles), keeping one wgmma group in flight. It also
// runs LoRA in one launch (launch_lora_fused: the first column of tiles computes t = scale x down^T in a
// prologue and publishes it per row block; see LoraFuse). Measured on an H200 (2026-11-27, bench/gpu-runs/
// 2026-11-27-h200-s13*): 626-672 TFLOP/s bf16 at 4096^3 (f16 584-609) against 440-443 for the cp.async
// kernel below in the same runs; SD1.5 FF out 8192 x 1280 x 320 240 -> 276-302, SDXL GEGLU in 2048 x 1280 x
// 10240 355 -> 477-482; lora_linear rank 64 at 8192 x 1280 x 1280: 0.99-1.05x the plain GEMM's time
// (1.22-1.29x with the two launches). ptxas (sm_90a, CUDA 13.0): 156 registers (128 x 256), 92 (128 x 128),
// 0 spills.
//
// wgmma_gemm_kernel (batched problems; HYPERSD_WGMMA_TMA=0 for all): 128 x 128 tiles, 2 warpgroups (256
// threads), warpgroup w owning rows 64w..64w+63 with one m64n128k16 wgmma per 16 k. Operands reach shared
// memory by cp.async (every thread loads) in a 3-stage ring of 64-wide k tiles stored in the 128-byte swizzle
// that the wgmma descriptors name (16-byte chunk c of row r at chunk c ^ (r & 7); 8-row groups 1024 bytes
// apart); fence.proxy.async makes the cp.async writes visible to the tensor cores before the barrier. Per k
// tile: barrier, issue the loads of the tile two ahead, 4 wgmma, commit, wait.
//
// Epilogue (both): the accumulators use mma.sync's m16n8 layout per warp: a whole tile with no activation
// (at most a bias and the fused residual) is stored pair by pair in a dozen instructions a pair, anything
// else through store_pair() (whose bias / activation / residual part is one out-of-line function). With all
// of it inlined in every pair the kernel was ~10900 PTX instructions and, at the UNet's K = 320, Nsight
// Compute found 59% of its stall cycles waiting for instruction fetch (8192 x 320 x 2560: 137 us, 98 TFLOP/s).
// ptxas for wgmma_gemm_kernel: 118 registers (128x128), 170 (128x256 variant), 0 spills.
// Both kernels pin their accumulators with wg_fence_regs before each wgmma.fence and after each wait (wgmma.cuh
// says why; session 29, after a review): the sm_90a cubin from CUDA 13.0 came out byte-identical with and
// without them, so the kernels measured above are the ones now built; the fences keep a later compiler honest.
// Built only into an sm_90a cubin (CMakeLists.txt: the *_sm90a.cu files); other targets never launch it.
#include <cuda.h>  // CUtensorMap and its enums (the encoder is reached through the runtime: no libcuda link)

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>

#include "gemm_core.cuh"
#include "wgmma.cuh"

namespace hsd {
namespace cu {

constexpr int W_BM = 128, W_BK = 64, W_THREADS = 256;

#ifdef HSD_WGMMA_DEVICE
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
__device__ __forceinline__ void wgmma_m64n256k16_bf16(float* d, uint64_t da, uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(1));
}
__device__ __forceinline__ void wgmma_m64n256k16_f16(float* d, uint64_t da, uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(1));
}
template <class T, int BN>
__device__ __forceinline__ void wg_mma(float* d, uint64_t da, uint64_t db) {
  if constexpr (BN == 256) {
    if constexpr (std::is_same<T, bf16>::value) wgmma_m64n256k16_bf16(d, da, db);
    else wgmma_m64n256k16_f16(d, da, db);
  } else {
    if constexpr (std::is_same<T, bf16>::value) wgmma_m64n128k16_bf16(d, da, db);
    else wgmma_m64n128k16_f16(d, da, db);
  }
}

// mbarriers and the tensor-memory-access (TMA) bulk copy, for the warp-specialized kernel below.
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Waits until the phase of the given parity has completed. A lost arrival would hang the GPU: after ~2^26
// polls (seconds) the kernel traps instead, which the host reports as a CUDA error at the next sync.
__device__ __forceinline__ void mbar_wait(uint32_t bar, int parity) {
  for (uint32_t n = 0;; ++n) {
    uint32_t done;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.b32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (done) return;
    if (n > (1u << 26)) __trap();
  }
}
// LoRA fusion's per-row-block flags (written with release, polled with acquire, device scope).
__device__ __forceinline__ void flag_release(unsigned* f, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(f), "r"(v) : "memory");
}
__device__ __forceinline__ void flag_wait(const unsigned* f, unsigned v) {
  for (uint32_t n = 0;; ++n) {
    unsigned x;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(x) : "l"(f) : "memory");
    if (x == v) return;
    if (n > (1u << 26)) __trap();
    __nanosleep(64);
  }
}
// A box of the 2-D tensor map at (column c0, row c1) into shared memory, completing on `bar`.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
#endif

#ifdef HSD_WGMMA_DEVICE
// A warp's share of a 128 x BN tile (mma.sync's m16n8 layout: rows row and row + 8, columns 8j + 2 (lane % 4)
// (+ 1)) into C: a whole tile with no activation pair by pair (FastEpilogue), anything else through store_pair.
template <class T, int BN>
__device__ __forceinline__ void wg_store_tile(const GemmParams& p, T* C, int row, int m0, int n0, int lane, const float* d) {
  const FastEpilogue<T> fe(p, p.alpha, m0, W_BM, n0, BN);
  if (fe.ok) {
    T* r0 = C + (int64_t)row * p.ldc;
    T* r8 = r0 + 8 * (int64_t)p.ldc;
    const int c0 = n0 + (lane & 3) * 2;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) fe.store(r0, r8, c0 + j * 8, d[4 * j], d[4 * j + 1], d[4 * j + 2], d[4 * j + 3]);
    return;
  }
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const int col = n0 + j * 8 + (lane & 3) * 2;
    store_pair<T>(p, C, p.alpha, row, col, d[4 * j], d[4 * j + 1]);
    store_pair<T>(p, C, p.alpha, row + 8, col, d[4 * j + 2], d[4 * j + 3]);
  }
}
#endif

// BN: 128 or 256 columns per block; ST stages; with 4 or more stages one k tile's wgmma group stays in flight
// while the next is issued (wait_group 1) and loads run PD = ST - 2 tiles ahead, else PD = ST - 1 and each
// tile's group is waited for (wait_group 0). Either way a stage is refilled only after the barrier that follows
// the completion of every wgmma that read it.
template <int BN, int ST>
struct WCfg {
  static constexpr int WAIT = ST >= 4 ? 1 : 0, PD = ST >= 4 ? ST - 2 : ST - 1;
  static constexpr int A_BYTES = W_BM * 128, B_BYTES = BN * 128, STAGE = A_BYTES + B_BYTES;
  static constexpr int SMEM = ST * STAGE + 1024;  // + slack: tiles start 1024-aligned
};

template <class T, int BN, int ST>
__global__ void __launch_bounds__(W_THREADS, 1) wgmma_gemm_kernel(const GemmParams p) {
#ifdef HSD_WGMMA_DEVICE
  using Cfg = WCfg<BN, ST>;
  constexpr int PD = Cfg::PD;
  extern __shared__ __align__(16) unsigned char wsm_raw[];
  const uint32_t s0 = ((uint32_t)__cvta_generic_to_shared(wsm_raw) + 1023u) & ~1023u;
  const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, warp = (tid >> 5) & 3;
  const int m0 = blockIdx.x * W_BM, n0 = blockIdx.y * BN, z = blockIdx.z;
  const uint16_t* A = (const uint16_t*)p.A + (int64_t)z * p.sA;
  const uint16_t* B = (const uint16_t*)p.B + (int64_t)z * p.sB;
  // segment 2 (LoRA: t [M, K2] and up [N, K2]) continues the same k loop into the same accumulators
  const uint16_t* A2 = p.A2 ? (const uint16_t*)p.A2 + (int64_t)z * p.sA2 : nullptr;
  const uint16_t* B2 = p.B2 ? (const uint16_t*)p.B2 + (int64_t)z * p.sB2 : nullptr;
  const int nk1 = (p.K + W_BK - 1) / W_BK, nk = nk1 + (A2 ? (p.K2 + W_BK - 1) / W_BK : 0);
  auto sA = [&](int st) { return s0 + st * Cfg::STAGE; };
  auto sB = [&](int st) { return s0 + st * Cfg::STAGE + Cfg::A_BYTES; };
  auto load = [&](int kt) {
    if (kt < nk1) {
      wg_load_tile<W_BM>(sA(kt % ST), A, p.lda, m0, p.M, kt * W_BK, p.K, tid);
      wg_load_tile<BN>(sB(kt % ST), B, p.ldb, n0, p.N, kt * W_BK, p.K, tid);
    } else {
      wg_load_tile<W_BM>(sA(kt % ST), A2, p.lda2, m0, p.M, (kt - nk1) * W_BK, p.K2, tid);
      wg_load_tile<BN>(sB(kt % ST), B2, p.ldb2, n0, p.N, (kt - nk1) * W_BK, p.K2, tid);
    }
  };

#pragma unroll
  for (int t = 0; t < PD; ++t) {
    if (t < nk) load(t);
    cp_async_commit();
  }
  float d[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) d[i] = 0.f;

  for (int kt = 0; kt < nk; ++kt) {
    cp_async_wait<PD - 1>();
    fence_proxy_async();
    __syncthreads();
    if (kt + PD < nk) load(kt + PD);
    cp_async_commit();
    const uint32_t a0 = sA(kt % ST) + wg * 64 * 128, b0 = sB(kt % ST);
    wg_fence_regs<BN / 2>(d);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < W_BK / 16; ++kk) wg_mma<T, BN>(d, wg_desc(a0 + kk * 32), wg_desc(b0 + kk * 32));
    wg_commit();
    if constexpr (Cfg::WAIT == 1) asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    else wg_wait0();
    wg_fence_regs<BN / 2>(d);
  }
  wg_wait0();
  wg_fence_regs<BN / 2>(d);
  cp_async_wait<0>();

  wg_store_tile<T, BN>(p, (T*)p.C + (int64_t)z * p.sC, m0 + wg * 64 + warp * 16 + (lane >> 2), m0, n0, lane, d);
#endif
}

// Warp-specialized variant: tensor maps and the TMA engine stage the operands, so no thread spends issue slots
// on loads. 288 threads: warpgroups 0 and 1 consume (rows 64w..64w+63 of a 128 x BN tile, as above), warp 8 is
// the producer, one lane of which issues two bulk tensor copies per k tile (A box 64 x 128, B box 64 x BN, in
// the same 128-byte swizzle as wg_load_tile, zero-filled past the matrix edges by the hardware). A ring of ST
// stages with two mbarriers each: `full` (the producer's expect-tx arrival plus the copies' bytes) and `empty`
// (one arrival per consumer warpgroup once the wgmma group that read the stage has completed: each consumer
// keeps one group in flight, wait_group 1, and releases the previous tile's stage). The LoRA segment continues
// the k loop through two more maps. Batched problems and adapter indices stay on the kernels above.
constexpr int T_THREADS = 288;

template <int BN, int ST>
struct TCfg {
  static constexpr int A_BYTES = W_BM * 128, B_BYTES = BN * 128, STAGE = A_BYTES + B_BYTES;
  static constexpr int SMEM = ST * STAGE + 1024 + 2 * ST * 8;  // + 1024-byte alignment slack + the mbarriers
};

struct TmaMaps {
  CUtensorMap a, b, a2, b2, dn;  // dn: LoRA's down [r, K] (fused launches only)
};

// LoRA in one launch (launch_lora_fused): the blocks of the first column of tiles (blockIdx.y == 0) first run a
// prologue over segment 1 that computes their 128 rows of t = scale x down^T (A and down tiles through the same
// stages, down in the B slot; one m64n64 wgmma per 16 k per warpgroup), store t (rounded to T, as the two-launch
// path stores it), and publish it with a release flag per row block; every block's producer acquires its row
// block's flag before loading segment 2 (t up^T). A row block's flag-setter is dispatched before any block
// that waits for it (blocks start in linear order, blockIdx.x fastest) and the host takes this path only when
// one column of tiles fits on the GPU at once, so a waiting block never holds back the block it waits for.
struct LoraFuse {
  void* t = nullptr;         // [M, ldt] in T
  int64_t ldt = 0;
  int r8 = 0;                // columns of t to store (the rank rounded up to 8, at most 64)
  float scale = 1.f;
  unsigned* flags = nullptr;  // one per row block of tiles; nullptr: not fused
  unsigned epoch = 0;         // the value this launch publishes (a per-stream count: flags are never reset)
};

template <class T, int BN, int ST>
__global__ void __launch_bounds__(T_THREADS, 1)
    wgmma_tma_kernel(const GemmParams p, const __grid_constant__ CUtensorMap ta, const __grid_constant__ CUtensorMap tb,
                     const __grid_constant__ CUtensorMap ta2, const __grid_constant__ CUtensorMap tb2,
                     const __grid_constant__ CUtensorMap tdn, const LoraFuse lf) {
#ifdef HSD_WGMMA_DEVICE
  using Cfg = TCfg<BN, ST>;
  extern __shared__ __align__(16) unsigned char wsm_raw[];
  const uint32_t s0 = ((uint32_t)__cvta_generic_to_shared(wsm_raw) + 1023u) & ~1023u;
  const uint32_t bars = s0 + ST * Cfg::STAGE;
  auto full = [&](int st) { return bars + 8 * st; };
  auto empty = [&](int st) { return bars + 8 * (ST + st); };
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int m0 = blockIdx.x * W_BM, n0 = blockIdx.y * BN;
  const int nk1 = (p.K + W_BK - 1) / W_BK, nk = nk1 + (p.A2 ? (p.K2 + W_BK - 1) / W_BK : 0);
  const bool fused = lf.flags != nullptr, makes_t = fused && blockIdx.y == 0;
  const int np = makes_t ? nk1 : 0;  // prologue tiles (t), then the nk main tiles, through one ring
  constexpr int DN_BYTES = 64 * 128;
  if (tid == 0) {
    for (int st = 0; st < ST; ++st) {
      mbar_init(full(st), 1);
      mbar_init(empty(st), 2);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (warp == 8) {  // producer
    if (lane == 0) {
      for (int u = 0; u < np + nk; ++u) {
        const int st = u % ST, ph = (u / ST) & 1, kt = u - np;
        mbar_wait(empty(st), ph ^ 1);  // a fresh barrier counts its (odd) previous phase as complete
        const uint32_t sa = s0 + st * Cfg::STAGE, sb = sa + Cfg::A_BYTES;
        if (u < np) {  // prologue: an A tile and a down tile
          mbar_expect_tx(full(st), Cfg::A_BYTES + DN_BYTES);
          tma_load_2d(sa, &ta, u * W_BK, m0, full(st));
          tma_load_2d(sb, &tdn, u * W_BK, 0, full(st));
          continue;
        }
        if (fused && kt == nk1) {  // t of this row block must be in memory before segment 2 reads it
          flag_wait(lf.flags + blockIdx.x, lf.epoch);
          asm volatile("fence.proxy.async.global;\n" ::: "memory");
        }
        mbar_expect_tx(full(st), Cfg::STAGE);
        if (kt < nk1) {
          tma_load_2d(sa, &ta, kt * W_BK, m0, full(st));
          tma_load_2d(sb, &tb, kt * W_BK, n0, full(st));
        } else {
          tma_load_2d(sa, &ta2, (kt - nk1) * W_BK, m0, full(st));
          tma_load_2d(sb, &tb2, (kt - nk1) * W_BK, n0, full(st));
        }
      }
    }
    return;
  }

  const int wg = warp >> 2, wl = warp & 3;
  // Each consumer keeps one wgmma group in flight and, at tile u > 0, releases tile u - 1's stage.
  auto release_prev = [&](int u) {
    if (u > 0 && (tid & 127) == 0) mbar_arrive(empty((u - 1) % ST));
  };
  if (makes_t) {
    float tacc[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) tacc[i] = 0.f;
    for (int u = 0; u < np; ++u) {
      const int st = u % ST;
      mbar_wait(full(st), (u / ST) & 1);
      const uint32_t a0 = s0 + st * Cfg::STAGE + wg * 64 * 128, b0 = s0 + st * Cfg::STAGE + Cfg::A_BYTES;
      wg_fence_regs<32>(tacc);
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < W_BK / 16; ++kk) wg_mma64<T>(tacc, wg_desc(a0 + kk * 32), wg_desc(b0 + kk * 32));
      wg_commit();
      asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
      wg_fence_regs<32>(tacc);
      release_prev(u);
    }
    wg_wait0();
    wg_fence_regs<32>(tacc);
    // t rows of this warp: m0 + 64 wg + 16 wl + lane/4 (+ 8), columns 8j + 2 (lane % 4) (+ 1)
    T* tg = (T*)lf.t;
    const int tr = m0 + wg * 64 + wl * 16 + (lane >> 2);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int col = j * 8 + (lane & 3) * 2;
      if (col >= lf.r8) continue;
      if (tr < p.M)
        *reinterpret_cast<uint32_t*>(tg + (int64_t)tr * lf.ldt + col) = pack2<T>(tacc[4 * j] * lf.scale, tacc[4 * j + 1] * lf.scale);
      if (tr + 8 < p.M)
        *reinterpret_cast<uint32_t*>(tg + (int64_t)(tr + 8) * lf.ldt + col) =
            pack2<T>(tacc[4 * j + 2] * lf.scale, tacc[4 * j + 3] * lf.scale);
    }
    asm volatile("fence.proxy.async.global;\n" ::: "memory");
    __threadfence();
    asm volatile("bar.sync 1, 256;\n" ::: "memory");  // the two consumer warpgroups only
    if (tid == 0) flag_release(lf.flags + blockIdx.x, lf.epoch);
  }
  float d[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) d[i] = 0.f;
  for (int kt = 0; kt < nk; ++kt) {
    const int u = np + kt, st = u % ST;
    mbar_wait(full(st), (u / ST) & 1);
    const uint32_t a0 = s0 + st * Cfg::STAGE + wg * 64 * 128, b0 = s0 + st * Cfg::STAGE + Cfg::A_BYTES;
    wg_fence_regs<BN / 2>(d);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < W_BK / 16; ++kk) wg_mma<T, BN>(d, wg_desc(a0 + kk * 32), wg_desc(b0 + kk * 32));
    wg_commit();
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    wg_fence_regs<BN / 2>(d);
    release_prev(u);
  }
  wg_wait0();
  wg_fence_regs<BN / 2>(d);

  wg_store_tile<T, BN>(p, (T*)p.C, m0 + wg * 64 + wl * 16 + (lane >> 2), m0, n0, lane, d);
#endif
}

// cuTensorMapEncodeTiled through the runtime's driver entry point (null when the driver lacks it).
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                                 const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiled encode_tiled() {
  static const EncodeTiled fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return (EncodeTiled) nullptr;
    }
    return (EncodeTiled)f;
  }();
  return fn;
}

// A [rows, cols] row-major matrix with row stride ld (elements), boxes of 64 columns x box_rows rows.
bool tma_map(CUtensorMap* m, EncodeTiled enc, DType dt, const void* base, int64_t rows, int64_t cols, int64_t ld, int box_rows) {
  const cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows}, strides[1] = {(cuuint64_t)ld * 2};
  const cuuint32_t box[2] = {64, (cuuint32_t)box_rows}, es[2] = {1, 1};
  return enc(m, dt == DType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, const_cast<void*>(base),
             dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <class T, int BN, int ST>
void launch_tma(const GemmParams& p, const TmaMaps& m, const LoraFuse& lf, cudaStream_t s) {
  constexpr int smem = TCfg<BN, ST>::SMEM;
  allow_smem((const void*)wgmma_tma_kernel<T, BN, ST>, smem);
  dim3 grid((p.M + W_BM - 1) / W_BM, (p.N + BN - 1) / BN, 1);
  wgmma_tma_kernel<T, BN, ST><<<grid, T_THREADS, smem, s>>>(p, m.a, m.b, m.a2, m.b2, m.dn, lf);
}

template <class T>
void launch_tma_any(const GemmParams& p, const TmaMaps& m, const LoraFuse& lf, bool wide, cudaStream_t s) {
  if (wide) launch_tma<T, 256, 4>(p, m, lf, s);
  else launch_tma<T, 128, 3>(p, m, lf, s);
}

// The TMA kernel's tile choice and switch (HYPERSD_WGMMA_TMA: 0 off, 128 / 256 forced, else automatic).
int tma_mode() {
  static const int mode = [] {
    const char* e = std::getenv("HYPERSD_WGMMA_TMA");
    return e ? std::atoi(e) : 1;
  }();
  return mode;
}
bool tma_wide(const GemmParams& p) {
  const int mode = tma_mode();
  // a slow epilogue (an activation) on a short k loop wants two blocks per SM (128 x 128): 53 against 87
  // TFLOP/s for 8192 x 320 x 1280 + bias + gelu on 128 x 256 tiles (H200, 2026-11-27)
  return mode == 256 || (mode != 128 && (p.N % 256 == 0 || p.N >= 2048) && (p.act == 0 || p.K >= 1024) &&
                         (int64_t)((p.M + W_BM - 1) / W_BM) * ((p.N + 255) / 256) >= sm_count());
}

// The TMA kernel for one (unbatched) product when the maps encode; false: the caller runs the cp.async kernel.
// 128 x 256 tiles (4 stages, 193 KiB, one block per SM) when N is a multiple of 256 or large, the epilogue is
// fast or the k loop long, and the tiles still give every SM one, else 128 x 128 (3 stages, 97 KiB: two blocks
// per SM, one's epilogue under the other's k loop). HYPERSD_WGMMA_TMA=0 turns it off (side-by-side
// comparisons), =128 or =256 forces a tile (tests).
// The maps of both segments (segment 2 repeats segment 1's when there is none; dn repeats a), for BN-column tiles.
bool tma_maps(TmaMaps* m, EncodeTiled enc, const GemmParams& p, DType dt, int bn) {
  if (!tma_map(&m->a, enc, dt, p.A, p.M, p.K, p.lda, W_BM) || !tma_map(&m->b, enc, dt, p.B, p.N, p.K, p.ldb, bn)) return false;
  if (p.A2) {
    if (!tma_map(&m->a2, enc, dt, p.A2, p.M, p.K2, p.lda2, W_BM) || !tma_map(&m->b2, enc, dt, p.B2, p.N, p.K2, p.ldb2, bn))
      return false;
  } else {
    m->a2 = m->a;
    m->b2 = m->b;
  }
  m->dn = m->a;
  return true;
}

bool launch_tma_gemm(const GemmParams& p, DType dt, int batch, cudaStream_t s) {
  if (tma_mode() == 0 || batch != 1) return false;
  const EncodeTiled enc = encode_tiled();
  if (!enc) return false;
  const bool wide = tma_wide(p);
  TmaMaps m;
  if (!tma_maps(&m, enc, p, dt, wide ? 256 : 128)) return false;
  const LoraFuse none;
  if (dt == DType::BF16) launch_tma_any<bf16>(p, m, none, wide, s);
  else launch_tma_any<__half>(p, m, none, wide, s);
  return true;
}

// Per-stream flags for the fused LoRA launches (never freed: they live as long as the context), grown when a
// launch needs more row blocks (the old buffer is kept: a kernel in flight may still read it), and the stream's
// epoch count.
struct LoraFlags {
  unsigned* buf = nullptr;
  int64_t n = 0;
  unsigned epoch = 0;
};
LoraFlags* lora_flags(cudaStream_t s, int64_t need) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, LoraFlags> all;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  std::lock_guard<std::mutex> g(mu);
  LoraFlags& f = all[{dev, s}];
  if (f.n < need) {
    const int64_t n = std::max<int64_t>(need, 1024);
    void* p = nullptr;
    if (cudaMalloc(&p, n * sizeof(unsigned)) != cudaSuccess || cudaMemsetAsync(p, 0, n * sizeof(unsigned), s) != cudaSuccess) {
      cudaGetLastError();
      if (p) cudaFree(p);
      return nullptr;
    }
    f.buf = (unsigned*)p;
    f.n = n;
    f.epoch = 0;  // a fresh (zeroed) buffer
  }
  if (++f.epoch == 0) {  // wrapped: zero the flags so that no stale value equals a new epoch
    if (cudaMemsetAsync(f.buf, 0, f.n * sizeof(unsigned), s) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    f.epoch = 1;
  }
  return &f;
}

// y = x W^T + bias + t up^T with t = scale x down^T computed inside the same launch (LoraFuse above). p is the
// main product with segment 2 set (A2 = t, the scratch it is written to); down [r, K]. False (nothing launched):
// the caller takes the two-launch path. HYPERSD_LORA_FUSE=0 turns it off.
bool launch_lora_fused(const GemmParams& p, const void* down, int r, float scale, DType dt, cudaStream_t s) {
  static const bool on = [] {
    const char* e = std::getenv("HYPERSD_LORA_FUSE");
    return !(e && std::string(e) == "0");
  }();
  const int r8 = (r + 7) / 8 * 8;
  const int64_t row_blocks = (p.M + W_BM - 1) / W_BM;
  if (!on || tma_mode() == 0 || !p.A2 || r < 1 || r8 > 64 || (int64_t)p.lda2 < r8 || row_blocks > sm_count()) return false;
  const EncodeTiled enc = encode_tiled();
  if (!enc) return false;
  const bool wide = tma_wide(p);
  TmaMaps m;
  if (!tma_maps(&m, enc, p, dt, wide ? 256 : 128) || !tma_map(&m.dn, enc, dt, down, r, p.K, p.K, 64)) return false;
  LoraFlags* f = lora_flags(s, row_blocks);
  if (!f) return false;
  LoraFuse lf;
  lf.t = const_cast<void*>(p.A2);
  lf.ldt = p.lda2;
  lf.r8 = r8;
  lf.scale = scale;
  lf.flags = f->buf;
  lf.epoch = f->epoch;
  if (dt == DType::BF16) launch_tma_any<bf16>(p, m, lf, wide, s);
  else launch_tma_any<__half>(p, m, lf, wide, s);
  return true;
}

// Asked per call for the current device (answers cached per device ordinal): a process that runs on a 9.0
// GPU and later on another one must not launch the sm_90a-only kernels there (they have no image for it).
bool sm90_device() {
  static std::atomic<signed char> known[64] = {};  // 0 not asked yet, 1 compute capability 9.0, -1 another
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  if (dev < 0 || dev >= 64) return false;
  signed char v = known[dev].load(std::memory_order_relaxed);
  if (v == 0) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    v = major == 9 && minor == 0 ? 1 : -1;
    known[dev].store(v, std::memory_order_relaxed);
  }
  return v > 0;
}

bool wgmma_gemm_eligible(const GemmParams& p, int amode, bool b_nk) {
  static const bool env_ok = [] {
    const char* e = std::getenv("HYPERSD_WGMMA");
    return !(e && std::string(e) == "0");
  }();
  const bool ok = env_ok && sm90_device();
  const bool seg2 = !p.A2 || (p.B2 && p.vecA2 && p.vecB2 && p.K2 % 8 == 0 && p.lda2 % 8 == 0 && p.ldb2 % 8 == 0 &&
                              p.sA2 % 8 == 0 && p.sB2 % 8 == 0);
  return ok && amode == A_ROWMAJOR && b_nk && seg2 && !p.idx && !p.scales && p.vecA && p.vecB && p.K % 8 == 0 &&
         p.lda % 8 == 0 && p.ldb % 8 == 0 && p.sA % 8 == 0 && p.sB % 8 == 0;
}

template <class T, int BN, int ST>
void launch_wg(const GemmParams& p, int batch, cudaStream_t s) {
  constexpr int smem = WCfg<BN, ST>::SMEM;
  allow_smem((const void*)wgmma_gemm_kernel<T, BN, ST>, smem);
  dim3 grid((p.M + W_BM - 1) / W_BM, (p.N + BN - 1) / BN, batch);
  wgmma_gemm_kernel<T, BN, ST><<<grid, W_THREADS, smem, s>>>(p);
}

// 128 x 128 tiles, 3 stages (two blocks per SM). HYPERSD_WGMMA_TILE=256 runs the 128 x 256 variant (4 stages, one
// wgmma group in flight, one block per SM), which measured slower on an H200 (217 against 360 TFLOP/s at 4096^3
// bf16, bench/gpu-runs/2026-11-26-h200-run6.log): kept for the next experiments (warp specialization, TMA).
void launch_wgmma_gemm(const GemmParams& p, DType dt, int batch, cudaStream_t s) {
  if (launch_tma_gemm(p, dt, batch, s)) return;
  static const bool wide = [] {
    const char* e = std::getenv("HYPERSD_WGMMA_TILE");
    return e && std::atoi(e) == 256;
  }();
  if (dt == DType::BF16) {
    if (wide) launch_wg<bf16, 256, 4>(p, batch, s);
    else launch_wg<bf16, 128, 3>(p, batch, s);
  } else {
    if (wide) launch_wg<__half, 256, 4>(p, batch, s);
    else launch_wg<__half, 128, 3>(p, batch, s);
  }
}

}  // namespace cu
}  // namespace hsd
