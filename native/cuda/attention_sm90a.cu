// Flash attention on Hopper's warpgroup MMA (sm_90a only; see attention.cu for the op and the other kernels):
// o = softmax(q k^T * scale [+ causal mask]) v per head for f16/bf16, head dims up to 64 (D == Dv, D % 8 == 0:
// the head padded with zeros to 64, one 128-byte swizzled row). attention.cu calls launch_attention_wgmma
// first; it takes shapes with 512 keys or more (HYPERSD_ATTN_WGMMA=1: all it can, 0: none). Written without a GPU
// at hand (session 13); first run on an H200 in session 20: the attention tests, compute-sanitizer memcheck
// and racecheck passed with it forced, at 289-297 TFLOP/s for d = 64 self-attention, 313.5-315.8 once the
// softmax's exponentials became ex2.approx.ftz (attention.cuh exp2_ftz; bench/RESULTS.md).
// Reviewed without a GPU in session 18: the descriptors, the accumulator -> A fragment repacking, the fences and
// the masking checked against the PTX ISA / CUTLASS layouts and a numpy emulation of one block (Lq 130 / Lk 77
// / D 40, causal 150 / D 64, causal Lq 64 < Lk 200 / D 16: max |o - ref| ~2e-4, lse to 1e-15); register fences
// (wg_fence_regs) added around each wgmma batch (the PTX's instruction histogram unchanged, 110 registers, no
// spills); sm90_device() is now asked for the current device at each launch (it had been decided once per
// process, so a process moving to a non-9.0 GPU would have launched this sm_90a-only kernel there).
//
// Block: 2 warpgroups (256 threads), 128 query rows of one (batch, head), warpgroup w owning rows 64w..64w+63.
// Q (128 x 64) is staged once, K and V tiles of 64 keys stream through a double-buffered cp.async ring, all
// in the 128-byte swizzle of gemm_sm90a.cu's tiles (wgmma.cuh). Per key tile:
//   S = Q K^T: four m64n64k16 wgmma, Q and K both K-major from shared memory (as the GEMM's A and B);
//   the online softmax on S's registers (the accumulator layout is mma.sync's m16n8 one per warp, so the row
//   max / sum and the masking are the mma.sync kernel's: two quad shuffles a row);
//   O += P V: four m64n64k16 wgmma with P from registers (the accumulators of two adjacent 8-key blocks are
//   one k16 A fragment, packed to 16 bits) and V from shared memory as an MN-major B (imm-trans-b = 1: the
//   V tile's 64-element rows are the N dimension, contiguous; 8-key-row groups 1024 bytes apart, the
//   descriptor's stride byte offset; N = 64 is one swizzle atom, so the leading byte offset is unused).
// Each batch of wgmma is waited for before its registers are read (no overlap of the softmax with the next
// tile's QK^T inside a warpgroup: FA3's ping-pong is the next step); two blocks per SM let one block's softmax
// run under the other's products.
#include <cstdlib>
#include <string>
#include <type_traits>

#include "attention.cuh"
#include "wgmma.cuh"

namespace hsd {
namespace cu {

constexpr int FW_BQ = 128, FW_BKV = 64, FW_THREADS = 256;
constexpr int FW_Q_BYTES = FW_BQ * 128, FW_KV_BYTES = FW_BKV * 128;
constexpr int FW_SMEM = FW_Q_BYTES + 4 * FW_KV_BYTES + 1024;  // Q, K and V double-buffered, 1024-byte alignment

#ifdef HSD_WGMMA_DEVICE
// O += P V with P (the A operand, m64 x k16) in four registers a thread and V an MN-major B from shared memory.
__device__ __forceinline__ void wgmma_rs_m64n64k16_f16_tb(float* d, const uint32_t* a, uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
__device__ __forceinline__ void wgmma_rs_m64n64k16_bf16_tb(float* d, const uint32_t* a, uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
template <class T>
__device__ __forceinline__ void wg_mma_pv(float* d, const uint32_t* a, uint64_t db) {
  if constexpr (std::is_same<T, bf16>::value) wgmma_rs_m64n64k16_bf16_tb(d, a, db);
  else wgmma_rs_m64n64k16_f16_tb(d, a, db);
}
#endif

template <class T>
__global__ void __launch_bounds__(FW_THREADS, 2) flash_wgmma_kernel(const AttnParams p) {
#ifdef HSD_WGMMA_DEVICE
  extern __shared__ __align__(16) unsigned char fsm_raw[];
  const uint32_t s0 = ((uint32_t)__cvta_generic_to_shared(fsm_raw) + 1023u) & ~1023u;
  const uint32_t sQ = s0, sK = s0 + FW_Q_BYTES, sV = sK + 2 * FW_KV_BYTES;
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int q0 = blockIdx.x * FW_BQ, b = blockIdx.y / p.H, h = blockIdx.y % p.H;
  const uint16_t* qg = (const uint16_t*)p.q + (int64_t)b * p.Lq * p.ldq + (int64_t)h * p.D;
  const uint16_t* kg = (const uint16_t*)p.k + (int64_t)b * p.Lk * p.ldk + (int64_t)h * p.D;
  const uint16_t* vg = (const uint16_t*)p.v + (int64_t)b * p.Lk * p.ldv + (int64_t)h * p.D;
  const int nkv = kv_tiles(p, q0, FW_BQ, FW_BKV);

  wg_load_tile<FW_BQ, FW_THREADS>(sQ, qg, p.ldq, q0, p.Lq, 0, p.D, tid);
  if (nkv > 0) {
    wg_load_tile<FW_BKV, FW_THREADS>(sK, kg, p.ldk, 0, p.Lk, 0, p.D, tid);
    wg_load_tile<FW_BKV, FW_THREADS>(sV, vg, p.ldv, 0, p.Lk, 0, p.D, tid);
  }
  cp_async_commit();

  float o[8][4];  // the m16n8 layout per warp (attention.cuh): o[n][e] row + 8 (e >> 1), column 8 n + 2 t + (e & 1)
#pragma unroll
  for (int n = 0; n < 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
  const int qrow0 = q0 + wg * 64 + warp * 16 + g;
  const uint32_t qa = sQ + wg * 64 * 128;

  for (int j = 0; j < nkv; ++j) {
    const int buf = j & 1;
    if (j + 1 < nkv) {
      wg_load_tile<FW_BKV, FW_THREADS>(sK + (buf ^ 1) * FW_KV_BYTES, kg, p.ldk, (j + 1) * FW_BKV, p.Lk, 0, p.D, tid);
      wg_load_tile<FW_BKV, FW_THREADS>(sV + (buf ^ 1) * FW_KV_BYTES, vg, p.ldv, (j + 1) * FW_BKV, p.Lk, 0, p.D, tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async();  // the cp.async writes visible to the tensor cores (async proxy)
    __syncthreads();
    const uint32_t kb = sK + buf * FW_KV_BYTES, vb = sV + buf * FW_KV_BYTES;

    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    wg_fence_regs<32>(&s[0][0]);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wg_mma64<T>(&s[0][0], wg_desc(qa + kk * 32), wg_desc(kb + kk * 32));
    wg_commit();
    wg_wait0();
    wg_fence_regs<32>(&s[0][0]);

    const int k_end = (j + 1) * FW_BKV;
    const bool masked = k_end > p.Lk || (p.causal && k_end - 1 > q0);
    softmax_tile(s, o, m_run, l_run, p.scale_log2, p.Lk, p.causal, masked, j * FW_BKV, qrow0, t);

    // P: the accumulators of 8-key blocks 2kk and 2kk + 1 are the A fragment of keys 16kk..16kk+15
    uint32_t pa[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      acc_to_a<T>(s[2 * kk], s[2 * kk + 1], pa[kk]);
    }
    wg_fence_regs<32>(&o[0][0]);
    wg_fence_regs<16>(&pa[0][0]);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wg_mma_pv<T>(&o[0][0], pa[kk], wg_desc(vb + kk * 16 * 128));
    wg_commit();
    wg_wait0();
    wg_fence_regs<32>(&o[0][0]);
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();

  store_tile<T>(p, (T*)p.o + (int64_t)b * p.Lq * p.ldo + (int64_t)h * p.Dv, o, m_run, l_run, b, h, qrow0, t);
#endif
}

bool launch_attention_wgmma(const AttnParams& p, bool is_bf16, cudaStream_t s) {
  // HYPERSD_ATTN_WGMMA: 1 for every shape it takes, 0 never, unset: from 512 keys (session 20 on an H200, f16,
  // B 2, Lq 4096: d = 64 self 289-297 against the mma.sync kernel's 212 TFLOP/s, d = 40 self 185 against 173;
  // with 77 keys slower, 36 against 48 at d = 40 and 78 against 81 at d = 64: one 64-key tile, mostly masked)
  static const int mode = [] {
    const char* e = std::getenv("HYPERSD_ATTN_WGMMA");
    return e && std::string(e) == "1" ? 1 : e && std::string(e) == "0" ? 0 : -1;
  }();
  if (mode == 0 || (mode < 0 && p.Lk < 512)) return false;
  // the caller checked f16/bf16, 16-byte aligned bases and D % 8 == 0 (so every row is 16-byte aligned)
  if (p.D != p.Dv || p.D > 64 || p.D % 8 != 0 || !sm90_device()) return false;  // the current device, each call
  const dim3 grid((p.Lq + FW_BQ - 1) / FW_BQ, p.B * p.H);
  if (is_bf16) {
    allow_smem((const void*)flash_wgmma_kernel<bf16>, FW_SMEM);
    flash_wgmma_kernel<bf16><<<grid, FW_THREADS, FW_SMEM, s>>>(p);
  } else {
    allow_smem((const void*)flash_wgmma_kernel<__half>, FW_SMEM);
    flash_wgmma_kernel<__half><<<grid, FW_THREADS, FW_SMEM, s>>>(p);
  }
  return true;
}

}  // namespace cu
}  // namespace hsd
