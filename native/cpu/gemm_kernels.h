// The CPU GEMM engine shared by matmul, the LoRA ops and conv2d (native/cpu/gemm.cpp is the driver,
// native/cpu/gemm_avx2.cpp the AVX2+FMA kernels, native/cpu/gemm_avx512.cpp the AVX-512 micro-kernels that
// replace the AVX2 ones where the CPU has AVX-512F, the portable kernels live in gemm.cpp).
//
// C[M,N] = epilogue(A[M,K] B[K,N]) in the GotoBLAS/BLIS shape: B is packed in KC x NC blocks as NR-wide
// column panels (k-major, NR floats per k), A in MC x KC blocks as MR-tall row panels (MR floats per k), and
// a register-tiled MR x NR micro-kernel runs over them. Operands are described by packers, so the same
// driver serves a strided matrix (any transpose, f32 / f16 / bf16 widened while packing), an implicit
// im2col view of an NHWC image (conv2d), and a concatenation along K (LoRA: [x | s*t] [W | up]^T).
#pragma once
#include <cstdint>
#include <memory>

#include "hypersd/ops.h"

namespace hsd {
namespace gemm {

constexpr int MR = 6, NR = 16;
constexpr int64_t kMaxKC = 1280;  // no K block is longer (packers' zero rows cover it)
enum Act : int { kActNone = 0, kActSilu = 1, kActGelu = 2, kActGeluTanh = 3, kActQuickGelu = 4 };

// What the micro-kernel does with its accumulator tile T (one K block of the product):
//   v = alpha*T;  v += C when !first (C holds the partial sum of earlier K blocks),
//                 or v += beta*C when first and beta != 0 and act == none;
//   when last:    v += bias[j]; v = act(v); v += beta*C_old when first and beta != 0 and act != none.
// The driver never splits K when act != none and beta != 0 (it goes through a temporary instead).
struct TileSink;
struct Epilogue {
  float alpha = 1.f, beta = 0.f;
  const float* bias = nullptr;  // [N], f32
  int act = kActNone;
  bool first = true, last = true;
  // When set, finished tiles go to the sink instead of C (see TileSink); beta must be 0.
  const TileSink* sink = nullptr;
  // K blocks no longer than this (0: the engine's own, up to kMaxKC). Each K block's products are summed in one
  // f32 chain per output, so shorter blocks round less: Winograd's products, whose transformed operands span
  // magnitudes from 1/90 to 32, cap them (F(6x6) at 1280 channels: relative error 6.5e-6 with blocks of 320,
  // 1.25e-5 with one block of 1280).
  int64_t max_kc = 0;
  // bf16 inputs (opt-in, HYPERSD_CPU_MATH=bf16; used by matmul / linear / linear_geglu, never by convolutions):
  // where the kernel set has AVX512_BF16 micro-kernels, the packed A and B blocks are rounded to bf16 (nearest
  // even) and multiplied with vdpbf16ps into f32 accumulators; the epilogue is unchanged. Ignored elsewhere.
  bool bf16 = false;
};

// A consumer of finished C tiles (a fused op after the GEMM, e.g. GEGLU): run() hands it each MR x NR tile
// once, after the last K block, with alpha, bias and act applied, just written and still in L1 (row stride
// ldt: a buffer of its own, or run()'s partial-sum buffer when K takes several blocks; rows i0.., columns j0..,
// j0 a multiple of NR, mr x nr of it valid). C is then only the K blocks' partial sums: pass c = null and
// run() keeps them in a buffer of its own when K takes several blocks. Called from several threads at once,
// on disjoint tiles.
struct TileSink {
  virtual ~TileSink() = default;
  virtual void write(const float* tile, int64_t ldt, int64_t i0, int64_t j0, int64_t mr, int64_t nr) const = 0;
};

// One instruction set's kernels. Panels: A panel element (i, k) at a[k*MR + i]; B panel (k, j) at b[k*NR + j].
struct Kernels {
  const char* name;
  // C (ldc) <- epilogue over a full MR x NR tile; bias points at the tile's NR bias values (or is null).
  void (*micro)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const Epilogue& e,
                const float* bias);
  // micro with A read in place from MR rows a + i*lda (k contiguous), no A panel: the weight-rows path, where
  // A is a weight [N, K] (its rows streamed once) and B the packed activation (see run()).
  void (*micro_rows)(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                     const Epilogue& e, const float* bias);
  // A panel from MR row pointers, each contiguous over len floats: dst[k*MR + i] = rows[i][k]. Writes exactly
  // len*MR floats (panels packed by different threads may be adjacent).
  void (*pack_a_rows)(float* dst, const float* const* rows, int64_t len);
  // B panel from NR row pointers of dtype dt, each contiguous over len (a [N, K] weight): dst[k*NR + j] = rows[j][k].
  void (*pack_b_rows)(float* dst, const void* const* rows, DType dt, int64_t len);
  // B panel from a [K, N] matrix: dst[k*NR + j] = src[k*ld + j] for j < nvalid, 0 beyond.
  void (*pack_b_cols)(float* dst, const void* src, DType dt, int64_t ld, int64_t nvalid, int64_t len);
  // In place y = act(x) over n floats.
  void (*act)(float* x, int64_t n, int act);
  // dst[i] = src[i] of dtype dt (f32 / f16 / bf16) widened to f32, n values.
  void (*widen)(float* dst, const void* src, DType dt, int64_t n);
  // GEGLU of tile rows holding 8 values then their 8 gates: out[r*ldo + c] = t[r*ldt + c] * gelu(t[r*ldt + 8 + c]),
  // c < 8, r < rows (gelu with erf).
  void (*geglu_rows)(const float* t, int64_t ldt, int64_t rows, float* out, int64_t ldo);
  // Optional (null when the set has none): micro over two B panels b0, b1 at once, the full MR x 2NR tile of C
  // at c (columns NR.. from b1; bias covers 2NR values), with exactly the bits of two micro calls.
  void (*micro2)(int64_t kc, const float* a, const float* b0, const float* b1, float* c, int64_t ldc,
                 const Epilogue& e, const float* bias) = nullptr;
  // Optional (AVX512_BF16), all four or none: Epilogue::bf16's products. Pair panels hold kp = ceil(kc / 2) k
  // pairs: A (i, q) at a[q*MR + i], B (q, j) at b[q*NR + j], each a uint32 bf16(x[2q]) | bf16(x[2q+1]) << 16
  // (an odd kc's last pair has a zero high half). micro_bf16 / micro2_bf16 are micro / micro2 over them.
  void (*micro_bf16)(int64_t kp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc, const Epilogue& e,
                     const float* bias) = nullptr;
  void (*micro2_bf16)(int64_t kp, const uint32_t* a, const uint32_t* b0, const uint32_t* b1, float* c,
                      int64_t ldc, const Epilogue& e, const float* bias) = nullptr;
  // One f32 panel (A: MR wide, B: NR wide; kc values of k, element (i, k) at src[k*W + i]) to its pair panel.
  void (*pairs_a)(uint32_t* dst, const float* src, int64_t kc) = nullptr;
  void (*pairs_b)(uint32_t* dst, const float* src, int64_t kc) = nullptr;
  // A B pair panel straight from NR rows of bf16 values (see BPacker::pack_pairs; rows[j] may be kZeros).
  void (*pairs_rows)(uint32_t* dst, const void* const* rows, int64_t kc) = nullptr;
  // Optional (null when the set has none): micro2 with A read in place from MR rows a + i*lda, as micro_rows;
  // the bits of micro2 over the panel of those rows.
  void (*micro2_rows)(int64_t kc, const float* a, int64_t lda, const float* b0, const float* b1, float* c,
                      int64_t ldc, const Epilogue& e, const float* bias) = nullptr;
};
// Whether HYPERSD_CPU_MATH=bf16 asks for bf16 inputs to the linear layers and attention (read at each call).
bool cpu_math_bf16();

const Kernels& portable_kernels();
const Kernels* avx2_kernels();  // null when the CPU lacks AVX2+FMA+F16C or the build is not x86-64
// The AVX2 set with AVX-512 micro-kernels (gemm_avx512.cpp); null without AVX-512F (or AVX2).
const Kernels* avx512_kernels();
// The kernels in use: AVX-512 micro-kernels when the CPU has them, else AVX2, else portable;
// HYPERSD_CPU_KERNELS=avx2 or =portable picks a lower set (read at each call).
const Kernels& kernels();
// Whether kernels() is the AVX2 set or the AVX-512 one built on it: the dispatch rule of every other op's AVX2
// code (norms, activations, elementwise, attention), so HYPERSD_CPU_KERNELS=portable switches them all.
inline bool using_avx2() {
  const Kernels* k = &kernels();
  return k == avx2_kernels() || k == avx512_kernels();
}
// Whether kernels() is the AVX-512 set: the files compiled a second time with AVX-512 (attention, row kernels,
// Winograd transforms) are called only then, so an AVX2-only CPU never runs their code.
inline bool using_avx512() { return &kernels() == avx512_kernels(); }

// Zeros to point padding rows at (kMaxKC floats, so also as many half values).
extern const float kZeros[];

// Packs rows [i0, i0+mc) x k [k0, k0+kc) of A into MR-row panels: panel p starts at dst + p*MR*kstride, and
// element (i, k) of it sits at [(k - k0)*MR + i]. kstride >= kc lets a packer fill one part of a K block.
struct APacker {
  virtual ~APacker() = default;
  virtual void pack(const Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
                    int64_t kc) const = 0;
  // The same rows as NR-row panels in B-panel form (panel p at dst + p*NR*kstride, (i, k) at [(k - k0)*NR +
  // (i - i0) % NR], rows past i0 + mc zero), for the weight-rows path; only called when has_pack_nr().
  virtual void pack_nr(const Kernels&, float*, int64_t, int64_t, int64_t, int64_t, int64_t) const {
    throw Error("gemm: this A operand has no 16-row panel form");
  }
  virtual bool has_pack_nr() const { return false; }
  // An A to be read in place from its rows (row i at base + i*lda, k contiguous, rows up to a multiple of MR
  // readable; Winograd's V), or null: the engine then runs micro_rows / micro2_rows on it instead of packing
  // panels (it still calls pack() for bf16 inputs, whose A goes into pair panels).
  virtual const float* rows_in_place(int64_t* lda) const { return nullptr; }
};
// Same for B: columns [j0, j0+nc) x k [k0, k0+kc) into NR-column panels at dst + p*NR*kstride.
struct BPacker {
  virtual ~BPacker() = default;
  virtual void pack(const Kernels& kr, float* dst, int64_t kstride, int64_t j0, int64_t nc, int64_t k0,
                    int64_t kc) const = 0;
  // B already in panel form for all of K, [ceil(N/NR)][K][NR] zero-padded (panel p, row k at
  // base + (p*K + k)*NR), 32-byte aligned, or null: the driver then reads it in place instead of packing.
  virtual const float* prepacked() const { return nullptr; }
  // An f32 weight whose columns of B are contiguous rows (B(k, j) = base[j*ld + k]), or null.
  virtual const float* weight_rows(int64_t* ld) const { return nullptr; }
  // Epilogue::bf16 with a B stored in bf16: its pair panels straight from memory (panel p at dst + p*NR*kpstride,
  // word (q, j) at [q*NR + j] = B(k0 + 2q, j) | B(k0 + 2q + 1, j) << 16, zeros past kc and nc), the bits the
  // f32 panel and its rounding would give (the values are bf16 already). False, writing nothing: not this B.
  virtual bool pack_pairs(const Kernels&, uint32_t*, int64_t, int64_t, int64_t, int64_t, int64_t) const { return false; }
};
// A B operand that is already packed (see BPacker::prepacked), e.g. Winograd-transformed weights.
struct PackedB final : BPacker {
  const float* base;
  explicit PackedB(const float* base) : base(base) {}
  void pack(const Kernels&, float*, int64_t, int64_t, int64_t, int64_t, int64_t) const override {}
  const float* prepacked() const override { return base; }
};

// A(i, k) = a[i*rs + k*cs], f32.
struct StridedA final : APacker {
  const float* a;
  int64_t rs, cs;
  StridedA(const float* a, int64_t rs, int64_t cs) : a(a), rs(rs), cs(cs) {}
  void pack(const Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
            int64_t kc) const override;
  void pack_nr(const Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
               int64_t kc) const override;
  bool has_pack_nr() const override { return cs == 1; }
};
// B(k, j) = b[k*rs + j*cs] of dtype dt (f32, f16, bf16).
struct StridedB final : BPacker {
  const void* b;
  DType dt;
  int64_t rs, cs;
  StridedB(const void* b, DType dt, int64_t rs, int64_t cs) : b(b), dt(dt), rs(rs), cs(cs) {}
  void pack(const Kernels& kr, float* dst, int64_t kstride, int64_t j0, int64_t nc, int64_t k0,
            int64_t kc) const override;
  const float* weight_rows(int64_t* ld) const override {
    if (dt != DType::F32 || rs != 1) return nullptr;
    *ld = cs;
    return (const float*)b;
  }
  bool pack_pairs(const Kernels& kr, uint32_t* dst, int64_t kpstride, int64_t j0, int64_t nc, int64_t k0,
                  int64_t kc) const override;
  // With rs == 1: the NR rows of B's columns jb .. jb + nr - 1 from k0 (kZeros past nr).
  void panel_rows(int64_t jb, int64_t nr, int64_t k0, const void** rows) const;
};
// [first | second] along K: k < k1 comes from first, k >= k1 from second (at k - k1).
struct ConcatA final : APacker {
  const APacker &first, &second;
  int64_t k1;
  ConcatA(const APacker& f, const APacker& s, int64_t k1) : first(f), second(s), k1(k1) {}
  void pack(const Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
            int64_t kc) const override;
};
struct ConcatB final : BPacker {
  const BPacker &first, &second;
  int64_t k1;
  ConcatB(const BPacker& f, const BPacker& s, int64_t k1) : first(f), second(s), k1(k1) {}
  void pack(const Kernels& kr, float* dst, int64_t kstride, int64_t j0, int64_t nc, int64_t k0,
            int64_t kc) const override;
};

// C[M, N] (row stride ldc, f32) = epilogue(A B). Threads over the pool when given (null: this thread only).
void run(int64_t M, int64_t N, int64_t K, const APacker& a, const BPacker& b, float* c, int64_t ldc,
         const Epilogue& e, ThreadPool* pool);

// Grow-only 64-byte aligned buffers of this thread (slot 0-4), kept for the thread's life and backed by
// transparent huge pages from 2 MiB on, for kernels that need large temporaries on every call (conv2d's
// Winograd path: fresh pages would cost a page fault and a clear per 4 KiB each time). Not the GEMM's own.
float* thread_scratch(int slot, size_t n);

// Scalar activation, the reference the vector kernels approximate.
float act_scalar(float x, int act);

// Tensor helpers for the ops built on the engine: a float tensor's data as f32 (the data itself, or a
// widened copy kept alive by the returned holder).
struct F32View {
  const float* p = nullptr;
  std::shared_ptr<float> hold;
};
// scratch_slot >= 0 widens into thread_scratch(scratch_slot) instead of a fresh allocation (large weights
// widened on every call: fresh pages cost a fault and a clear per 4 KiB); valid until that slot is reused.
F32View as_f32(const Tensor& t, ThreadPool* pool, int scratch_slot = -1);
// An output buffer: the tensor's own memory when it is f32, else an f32 temporary (holding the old values
// when keep_old) that finish() narrows into it.
struct F32Out {
  const Tensor* t = nullptr;
  float* p = nullptr;
  std::shared_ptr<float> hold;
  void finish(ThreadPool* pool) const;
};
F32Out out_f32(const Tensor& t, bool keep_old, ThreadPool* pool);
// A float tensor's element i as f32 (small tensors: scales, bias).
float load_f32(const Tensor& t, int64_t i);

}  // namespace gemm
}  // namespace hsd
