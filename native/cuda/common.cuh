// Shared pieces of the CUDA kernels: dtype loads/stores, dtype dispatch, argument checks that throw
// hsd::Error from the host launchers, temporaries, and the tensor-core primitives (cp.async, ldmatrix,
// mma.sync m16n8k16) used by gemm, conv and attention.
//
// Conventions every family follows:
// - Kernels compute in f32 registers. Storage is float, __half or __nv_bfloat16 (template parameter T);
//   conversions round to nearest even, the same as hsd::float_to_half / float_to_bf16 on the CPU.
// - The heavy kernels (gemm, conv, attention, norms) run in the output's dtype; an input stored in another
//   float dtype, or a strided input, is first converted into a contiguous temporary (as_dtype below). Small
//   per-channel parameters (bias, gamma, beta) are read in whatever float dtype they have (load_any).
// - Temporaries come from the core's caching allocator. Every kernel of a process runs on the one CUDA
//   stream, so a temporary released when the launcher returns is reused only by later work on that stream.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "hypersd/act_scalar.h"
#include "hypersd/ops.h"

namespace hsd {

void register_gemm_cuda(OpRegistry& r);
void register_conv_cuda(OpRegistry& r);
void register_attention_cuda(OpRegistry& r);
void register_norm_cuda(OpRegistry& r);
void register_activation_cuda(OpRegistry& r);
void register_elementwise_cuda(OpRegistry& r);
void register_shape_cuda(OpRegistry& r);
void register_embedding_cuda(OpRegistry& r);
void register_random_cuda(OpRegistry& r);
void register_unary_cuda(OpRegistry& r);
void register_optim_cuda(OpRegistry& r);
void register_conv_backward_cuda(OpRegistry& r);

namespace cu {

using bf16 = __nv_bfloat16;

// ---------------------------------------------------------------- host side: checks and helpers

inline cudaStream_t stream_of(const OpContext& ctx) { return (cudaStream_t)ctx.cuda_stream; }

[[noreturn]] inline void fail(const char* op, const std::string& msg) { throw Error(std::string(op) + ": " + msg); }

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

inline bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

inline void need_inputs(const char* op, const OpContext& ctx, size_t n_in, size_t n_out) {
  if (ctx.in.size() < n_in || ctx.out.size() < n_out)
    fail(op, "expects " + std::to_string(n_in) + " input(s) and " + std::to_string(n_out) + " output(s), got " +
                 std::to_string(ctx.in.size()) + " and " + std::to_string(ctx.out.size()));
}

inline void need_float(const char* op, const char* name, const Tensor& t) {
  if (!is_float(t.dtype)) fail(op, std::string(name) + " must be f32, f16 or bf16, got " + t.describe());
}

inline void need_contiguous_out(const char* op, const Tensor& t) {
  if (!t.is_contiguous()) fail(op, "output must be contiguous, got " + t.describe());
}

inline void need_shape(const char* op, const char* name, const Tensor& t, const std::vector<int64_t>& want) {
  if (t.shape != want) fail(op, std::string(name) + " must have shape " + shape_str(want) + ", got " + t.describe());
}

// Launch grid for n items of `per_block` each, capped (kernels loop with a grid stride).
inline unsigned grid_for(int64_t n, int per_block, int64_t cap = 65535LL * 8) {
  int64_t b = (n + per_block - 1) / per_block;
  if (b < 1) b = 1;
  return (unsigned)(b < cap ? b : cap);
}

inline bool aligned16(const void* p) { return ((uintptr_t)p & 15u) == 0; }

// Division of n in [0, 2^32) by a run-time invariant d in [1, 2^31) with a multiply-high, an add and a shift
// (Granlund and Montgomery, "Division by invariant integers using multiplication", 1994): l = ceil(log2 d),
// m = floor(2^32 (2^l - d) / d) + 1, q = (mulhi(n, m) + n) >> l with the add in 64 bits; d = 1: m = 0, l = 0.
// Index decoding with it costs a few instructions a dim where a 64-bit division costs dozens. (Checked on the
// host against n / d for 64 million pairs: every n < 2^32 pattern near the ends, random ones, d up to 2^31 - 1.)
struct FastDiv {
  uint32_t d = 1, m = 0, s = 0;
};
inline FastDiv fastdiv_make(uint32_t d) {
  FastDiv f;
  f.d = d;
  if (d <= 1) return f;
  uint32_t l = 0;
  while ((1ull << l) < d) ++l;
  f.m = (uint32_t)(((1ull << 32) * ((1ull << l) - d)) / d + 1);
  f.s = l;
  return f;
}
__device__ __forceinline__ uint32_t fastdiv(uint32_t n, const FastDiv& f) {
  return (uint32_t)(((uint64_t)__umulhi(n, f.m) + n) >> f.s);
}

// Defined in shape.cu: a contiguous copy of t converted to dtype (t itself when it already is both).
Tensor as_dtype(const Tensor& t, DType dtype, cudaStream_t s);
inline Tensor contiguous(const Tensor& t, cudaStream_t s) { return as_dtype(t, t.dtype, s); }

// A kernel's output in the dtype it computes in: the output itself when it already has that dtype (and is
// contiguous), else a temporary that finish() converts into the real output; `reads_old` copies the old
// contents in first for kernels that accumulate (beta = 1). Backward kernels compute in f32 this way.
struct OutAs {
  Tensor real, buf;  // both empty for an output that is not wanted
  OutAs() = default;
  // A view starting off a 16-byte boundary goes through a temporary too: the kernels writing through OutAs may
  // store float2 / float4 (the tensor-core attention backward's dq / dk / dv).
  OutAs(const Tensor& out, DType compute, bool reads_old, cudaStream_t s);  // shape.cu
  void finish(cudaStream_t s) const;  // shape.cu
};

// Index checks that must raise (embedding ids, LoRA adapter indices): a kernel cannot throw, so it records
// the first bad position in a device word (report_bad_index, an atomicMin), and the launcher reads the word
// back with one stream sync (first_bad_index: -1 when all were good) and throws naming the value
// (read_index). Only the few ops whose contract includes such an error pay that sync.
Tensor bad_index_word(const char* op, cudaStream_t s);
int64_t first_bad_index(const char* op, const Tensor& word, cudaStream_t s);
int64_t read_index(const char* op, const Tensor& ids, int64_t pos, cudaStream_t s);
__device__ __forceinline__ void report_bad_index(unsigned long long* word, int64_t pos) {
  atomicMin(word, (unsigned long long)pos);
}

// Calls f(T{}) with T = float, __half or __nv_bfloat16 for the dtype.
template <class F>
void dispatch_float(const char* op, DType d, F&& f) {
  switch (d) {
    case DType::F32: f(float{}); return;
    case DType::F16: f(__half{}); return;
    case DType::BF16: f(bf16{}); return;
    default: fail(op, std::string("unsupported dtype ") + dtype_name(d) + " (expected f32, f16 or bf16)");
  }
}

// Raises a kernel's dynamic shared memory limit (once per kernel; launchers run on the one stream thread).
void allow_smem(const void* kernel, int bytes);

// The current device's multiprocessor count (asked once per device).
int sm_count();
// How many blocks of `threads` threads with `smem` bytes of dynamic shared memory fit on one multiprocessor
// (cudaOccupancyMaxActiveBlocksPerMultiprocessor, asked once per device, kernel and size; at least 1).
int blocks_per_sm(const void* kernel, int threads, size_t smem);

// kMaxCounters zeroed words for "last block finishes" reductions on stream s (one buffer per device and stream,
// zeroed once, stream-ordered): a kernel's blocks count themselves in with atomicAdd and the last one, which
// does the final reduction, puts its word back to 0 for the next kernel on the stream.
constexpr int64_t kMaxCounters = 65536;
unsigned* reduction_counters(cudaStream_t s);

// ---------------------------------------------------------------- device side: dtype conversions

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }

template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }

// Element i of a float tensor whose dtype is known only at run time (small parameters: bias, gamma, ...).
__device__ __forceinline__ float load_any(const void* p, int dtype, int64_t i) {
  if (dtype == (int)DType::F32) return ((const float*)p)[i];
  if (dtype == (int)DType::F16) return __half2float(((const __half*)p)[i]);
  return __bfloat162float(((const bf16*)p)[i]);
}

// Two f32 values packed into one 32-bit register of 16-bit floats (low half = a), as mma fragments want.
template <class T> __device__ __forceinline__ uint32_t pack2(float a, float b);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<bf16>(float a, float b) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Eight consecutive elements as floats (16-byte aligned load for 16-bit types, two for f32).
template <class T> struct Vec8;
template <> struct Vec8<float> {
  static __device__ __forceinline__ void load(const float* p, float* v) {
    float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  }
  static __device__ __forceinline__ void store(float* p, const float* v) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    *reinterpret_cast<float4*>(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
  }
};
template <class H> struct Vec8Half {
  static __device__ __forceinline__ void load(const H* p, float* v) {
    uint4 u = *reinterpret_cast<const uint4*>(p);
    const H* h = reinterpret_cast<const H*>(&u);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = to_f(h[i]);
  }
  static __device__ __forceinline__ void store(H* p, const float* v) {
    uint4 u;
    u.x = pack2<H>(v[0], v[1]);
    u.y = pack2<H>(v[2], v[3]);
    u.z = pack2<H>(v[4], v[5]);
    u.w = pack2<H>(v[6], v[7]);
    *reinterpret_cast<uint4*>(p) = u;
  }
};
template <> struct Vec8<__half> : Vec8Half<__half> {};
template <> struct Vec8<bf16> : Vec8Half<bf16> {};

// ---------------------------------------------------------------- device side: reductions

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// ---------------------------------------------------------------- device side: activations (OPS.md `act`)

enum Act : int { ACT_NONE = 0, ACT_SILU = 1, ACT_GELU = 2, ACT_GELU_TANH = 3, ACT_QUICK_GELU = 4 };

__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }
// 2^x with results below 2^-126 flushed to zero (ex2.approx.ftz.f32: MUFU.EX2 alone; exp2f is the non-flushing
// ex2.approx.f32, whose machine code also handles subnormal results), and 1 / x likewise (rcp.approx.ftz.f32).
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float rcp_ftz(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// SiLU for results stored in f16 / bf16: x sigmoid(x) from the two approximate special-function instructions
// (relative error ~4e-7, against 2^-11 and 2^-8 for the stores' rounding), five instructions where silu_f's
// accurate expf and IEEE division take about twenty; f32 results keep silu_f (they track the CPU to a few ulp).
// Limits as silu_f: +inf -> inf, -inf -> NaN (-inf * 0), NaN -> NaN; below x = -88 the result flushes to -0
// (silu_f gives |y| < 4e-37 there).
__device__ __forceinline__ float silu_half(float x) { return x * rcp_ftz(1.0f + exp2_ftz(x * -1.44269504088896341f)); }
// x enters the product as max(-FLT_MAX, x) (a NaN stays NaN): gelu(-inf) = -0, not -inf * 0, as on the CPU.
// Phi(x) = erfc(-x / sqrt2) / 2 and 0.5 (1 + tanh u) = sigmoid(2u), as the CPU kernels take them since session 27:
// 1 + erf(.) and 1 + tanh(.) cancel for x << 0 (the CPU's portable forms were 1.8% and 5.4% off at x = -4.8).
__device__ __forceinline__ float gelu_f(float x) {
  return 0.5f * (x < -3.40282347e38f ? -3.40282347e38f : x) * erfcf(x * -0.70710678118654752f);
}
__device__ __forceinline__ float gelu_tanh_f(float x) {
  return x / (1.0f + expf(-1.5957691216057308f * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float quick_gelu_f(float x) { return x / (1.0f + expf(-1.702f * x)); }

// Derivatives (the backward ops): hypersd/act_scalar.h, the CPU kernels' own.
using act::silu_d;
using act::gelu_d;
using act::gelu_tanh_d;
using act::quick_gelu_d;

__device__ __forceinline__ float apply_act(int act, float x) {
  switch (act) {
    case ACT_SILU: return silu_f(x);
    case ACT_GELU: return gelu_f(x);
    case ACT_GELU_TANH: return gelu_tanh_f(x);
    case ACT_QUICK_GELU: return quick_gelu_f(x);
    default: return x;
  }
}

// ---------------------------------------------------------------- device side: tensor-core primitives (sm_80+)

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16-byte global->shared copy; bytes < 16 reads only that many and zero-fills the rest (0: all zeros).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, register i receives matrix i
// (transposed with .trans: lane 4g+t gets rows 2t, 2t+1 of column g).
__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d += a (16x16, row) * b (16x8, col), f32 accumulators. Fragment layout (lane = 4 g + t):
// a: {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}; b: {(k=2t..2t+1, n=g), (k=2t+8.., n=g)};
// d: {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.
template <class T> __device__ __forceinline__ void mma16816(float* d, const uint32_t* a, uint32_t b0, uint32_t b1);
template <> __device__ __forceinline__ void mma16816<__half>(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma16816<bf16>(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace cu
}  // namespace hsd
