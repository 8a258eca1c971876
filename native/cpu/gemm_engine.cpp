// The CPU GEMM driver (see gemm_kernels.h): cache blocking, packing, threading, and the portable kernels
// that run where AVX2 is missing or HYPERSD_CPU_KERNELS=portable asks for them.
//
// Loop nest, for C[M,N] += A[M,K] B[K,N]:
//   jc over N in NC columns          B block KC x NC, packed once by all threads (shared, L3: <= 15 MiB)
//     pc over K in KC                K blocks of equal length <= 1280 (K = 1280 is one block, 2048 two)
//       tasks (MC block, N range)    handed to threads one at a time; a task packs its MC x KC block of A
//                                    (<= 720 KiB: L2 and L3), then runs jr over the NR panels (a B panel,
//                                    16 x KC floats <= 80 KiB, prefetched as the micro-kernel walks it) and
//                                    ir over the block's MR panels.
// The MC blocks are sized so their count is a multiple of the thread count (equal shares), and N is split
// into ranges when that gives too few tasks to balance. When M is too small for two blocks per thread
// (M = 77 text tokens, Winograd chunks), run_small_m packs A once for all of K and gives each task a range of
// N through every K block. K blocks after the first add into C (the epilogue's first/last flags), so the
// fused bias/activation runs once, on the last K block, still in registers. All the packing and compute
// steps of one product are phases of a single parallel region (PhaseRunner), so the pool wakes once.
// Figures (bench/RESULTS.md, 2 threads on the shared 2-core EPYC, other jobs running): 0.7-1.4x OpenBLAS
// sgemm across runs and shapes before session 9, 0.96-1.15x in its run (the K = 1280 shapes at the low end);
// the micro-kernel alone runs at ~97% of the FMA peak, whole products at 65-86%.
// Nesting: run() with a pool must not be called from inside that pool's parallel_for; a kernel that runs
// GEMMs inside its own parallel loop passes pool = null (each thread then uses its own packing buffers).
#include <algorithm>
#include <atomic>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gemm_kernels.h"

namespace hsd {
namespace gemm {

alignas(64) const float kZeros[kMaxKC] = {};

namespace {

// Block sizes for Zen3 (32 KiB L1d, 512 KiB L2 per core); see the loop nest above. K blocks of up to 1280
// (one block for the networks' K = 640 / 768 / 1280, two for 2048 / 2560) although a 16-column B panel of 1280
// steps (80 KiB) no longer fits L1 (the micro-kernel prefetches it) and an MC block of A no longer fits L2:
// each K block costs a pass over C, an epilogue and, per task, a packing of A. Against blocks of <= 384
// (engine alone, 2 threads, calls alternated, medians of 24 per-pair ratios, session 9): 256x1280x10240
// +8% / +13%, 256x5120x1280 +6%, 64x11520x1280 (an 8x8 convolution) +4% / +10%, 77x2048x1280 +4%,
// 4096x1280x320 +5%, 1024x2560x640 +4%, 4096x1280x5120 +3%, 1024x640x640 +1%; 1024x1280x1280 -4% to +4%
// over four runs. A product's sums run in longer f32 chains (implicit-GEMM 3x3 convolution at 512-1280
// channels: relative error 3.6e-7 -> 6.2e-7); Winograd's products keep blocks of <= 384 (Epilogue::max_kc).
constexpr int64_t kKC = 1280, kMC = 144, kNC = 3072;
static_assert(kKC <= kMaxKC, "the packers' zero rows (kZeros) must cover a K block");

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// A grow-only 64-byte aligned scratch buffer; one per thread and purpose, so nested single-threaded GEMMs
// inside another op's parallel loop get their own. Buffers of 2 MiB and more (the shared B block) ask for
// transparent huge pages: fewer TLB misses while the micro-kernel walks B panels (~3% on 1024x1280x2560).
struct Scratch {
  float* p = nullptr;
  size_t cap = 0;
  ~Scratch() { std::free(p); }
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      cap = 0;
      const size_t huge = size_t(1) << 21;
      size_t want = (size_t)round_up((int64_t)n + 16, 16), bytes = want * sizeof(float);
      if (bytes >= huge) {
        bytes = (bytes + huge - 1) / huge * huge;
        p = (float*)std::aligned_alloc(huge, bytes);
#ifdef MADV_HUGEPAGE
        if (p) madvise(p, bytes, MADV_HUGEPAGE);
#endif
      } else {
        p = (float*)std::aligned_alloc(64, bytes);
      }
      if (!p) throw Error("gemm: out of memory for a " + std::to_string(bytes) + "-byte packing buffer");
      cap = bytes / sizeof(float);
    }
    return p;
  }
};
thread_local Scratch tl_apack, tl_bpack;
thread_local Scratch tl_other[5];
thread_local Scratch tl_row;  // run_weight_rows' output row
thread_local Scratch tl_partial;  // partial sums of a GEMM whose tiles go to a TileSink
thread_local Scratch tl_apairs, tl_bpairs;  // Epilogue::bf16's pair panels (A per task, the shared B block)

// One parallel region runs a list of phases (pack B, compute, pack the next B, ...); each phase is a set of
// tasks handed out one at a time. A thread that finds no task left in a phase spins until the phase's tasks
// have finished, then moves on; a thread that arrives late starts wherever the work is. So the pool is woken
// once per GEMM: on a VM, waking an idle vCPU can take longer than a whole phase, and a worker that missed a
// per-phase parallel_for would leave the caller computing alone (measured: 4096x320x320 then ran at the
// one-thread rate every other call).
class PhaseRunner {
 public:
  PhaseRunner(ThreadPool* pool, int threads) : pool_(pool), threads_(pool ? threads : 1) {}
  void add(int64_t n, std::function<void(int64_t)> fn) {
    if (n > 0) phases_.emplace_back(n, std::move(fn));
  }
  void run() {
    if (threads_ <= 1) {
      for (auto& ph : phases_)
        for (int64_t t = 0; t < ph.n; ++t) ph.fn(t);
      return;
    }
    pool_->parallel_for(threads_, 1, [&](int64_t, int64_t) {
      for (auto& ph : phases_) {
        for (int64_t t; (t = ph.next.fetch_add(1)) < ph.n;) {
          try {
            ph.fn(t);
          } catch (...) {
            std::lock_guard<std::mutex> g(err_mu_);
            if (!err_) err_ = std::current_exception();
          }
          ph.done.fetch_add(1, std::memory_order_release);
        }
        for (int spins = 0; ph.done.load(std::memory_order_acquire) < ph.n; ++spins) {
          if (spins < 4096) cpu_relax();
          else std::this_thread::yield();
        }
      }
    });
    if (err_) std::rethrow_exception(err_);
  }

 private:
  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  struct Phase {
    Phase(int64_t n, std::function<void(int64_t)> fn) : n(n), fn(std::move(fn)) {}
    int64_t n;
    std::function<void(int64_t)> fn;
    std::atomic<int64_t> next{0}, done{0};
  };
  ThreadPool* pool_;
  int threads_;
  std::deque<Phase> phases_;  // a deque: the atomics do not move
  std::mutex err_mu_;
  std::exception_ptr err_;
};

float load_any(const void* p, int64_t i, DType dt) {
  if (dt == DType::F32) return ((const float*)p)[i];
  uint16_t h = ((const uint16_t*)p)[i];
  return dt == DType::F16 ? half_to_float(h) : bf16_to_float(h);
}

// ---------- portable kernels ----------
void micro_portable(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const Epilogue& e,
                    const float* bias) {
  float acc[MR][NR] = {};
  // Two 8-wide halves: 48 accumulators is about what 16 SSE registers hold.
  for (int h = 0; h < NR; h += 8)
    for (int64_t k = 0; k < kc; ++k) {
      const float* bk = b + k * NR + h;
      for (int i = 0; i < MR; ++i) {
        float av = a[k * MR + i];
        for (int j = 0; j < 8; ++j) acc[i][h + j] += av * bk[j];
      }
    }
  const bool beta_early = e.first && e.beta != 0.f && e.act == kActNone;
  const bool beta_late = e.first && e.last && e.beta != 0.f && e.act != kActNone;
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      float& ci = c[i * ldc + j];
      float v = e.alpha * acc[i][j];
      if (!e.first) v += ci;
      else if (beta_early) v += e.beta * ci;
      if (e.last) {
        v = act_scalar(v + (bias ? bias[j] : 0.f), e.act);
        if (beta_late) v += e.beta * ci;
      }
      ci = v;
    }
}

void micro_rows_portable(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                         const Epilogue& e, const float* bias) {
  // The A panel the in-place rows stand for, then the panel kernel (the portable set is for correctness).
  std::vector<float> ap((size_t)(kc * MR));
  for (int64_t k = 0; k < kc; ++k)
    for (int i = 0; i < MR; ++i) ap[k * MR + i] = a[i * lda + k];
  micro_portable(kc, ap.data(), b, c, ldc, e, bias);
}

void pack_a_rows_portable(float* dst, const float* const* rows, int64_t len) {
  for (int64_t k = 0; k < len; ++k)
    for (int i = 0; i < MR; ++i) dst[k * MR + i] = rows[i][k];
}

void pack_b_rows_portable(float* dst, const void* const* rows, DType dt, int64_t len) {
  for (int64_t k = 0; k < len; ++k)
    for (int j = 0; j < NR; ++j) dst[k * NR + j] = load_any(rows[j], k, dt);
}

void pack_b_cols_portable(float* dst, const void* src, DType dt, int64_t ld, int64_t nvalid, int64_t len) {
  for (int64_t k = 0; k < len; ++k)
    for (int64_t j = 0; j < NR; ++j) dst[k * NR + j] = j < nvalid ? load_any(src, k * ld + j, dt) : 0.f;
}

void widen_portable(float* dst, const void* src, DType dt, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = load_any(src, i, dt);
}

// The portable geglu op's formula (activation.cpp), so linear_geglu equals linear + geglu exactly.
void geglu_rows_portable(const float* t, int64_t ldt, int64_t rows, float* out, int64_t ldo) {
  for (int64_t r = 0; r < rows; ++r)
    for (int c = 0; c < 8; ++c) {
      const float g = t[r * ldt + 8 + c], gm = g < -3.40282347e38f ? -3.40282347e38f : g;
      out[r * ldo + c] = t[r * ldt + c] * (0.5f * gm * std::erfc(-g * 0.70710678118654752f));
    }
}

void act_portable(float* x, int64_t n, int act) {
  if (act == kActNone) return;
  for (int64_t i = 0; i < n; ++i) x[i] = act_scalar(x[i], act);
}

// The micro-kernel calls of a product: f32 panels (kc values of k) or, with Epilogue::bf16, pair panels (kp).
struct F32Micro {
  const Kernels& kr;
  int64_t kc;
  void one(const void* a, const void* b, float* c, int64_t ldc, const Epilogue& e, const float* bias) const {
    kr.micro(kc, (const float*)a, (const float*)b, c, ldc, e, bias);
  }
  void two(const void* a, const void* b0, const void* b1, float* c, int64_t ldc, const Epilogue& e,
           const float* bias) const {
    kr.micro2(kc, (const float*)a, (const float*)b0, (const float*)b1, c, ldc, e, bias);
  }
  bool pairs() const { return kr.micro2 != nullptr; }
};
// A read in place from rows (APacker::rows_in_place): the tiles' A pointers are row pointers with stride lda.
struct RowsMicro {
  const Kernels& kr;
  int64_t kc, lda;
  void one(const void* a, const void* b, float* c, int64_t ldc, const Epilogue& e, const float* bias) const {
    kr.micro_rows(kc, (const float*)a, lda, (const float*)b, c, ldc, e, bias);
  }
  void two(const void* a, const void* b0, const void* b1, float* c, int64_t ldc, const Epilogue& e,
           const float* bias) const {
    kr.micro2_rows(kc, (const float*)a, lda, (const float*)b0, (const float*)b1, c, ldc, e, bias);
  }
  bool pairs() const { return kr.micro2_rows != nullptr; }
};
struct Bf16Micro {
  const Kernels& kr;
  int64_t kp;
  void one(const void* a, const void* b, float* c, int64_t ldc, const Epilogue& e, const float* bias) const {
    kr.micro_bf16(kp, (const uint32_t*)a, (const uint32_t*)b, c, ldc, e, bias);
  }
  void two(const void* a, const void* b0, const void* b1, float* c, int64_t ldc, const Epilogue& e,
           const float* bias) const {
    kr.micro2_bf16(kp, (const uint32_t*)a, (const uint32_t*)b0, (const uint32_t*)b1, c, ldc, e, bias);
  }
  bool pairs() const { return kr.micro2_bf16 != nullptr; }
};

// One MR x NR tile computed in an L1 buffer (row stride NR) from C's first mr x nr values when the epilogue
// reads them (partial sums of earlier K blocks, or beta), with the bias zero-padded to NR.
template <class Mk>
void tile_in_buffer(const Mk& mk, const void* ap, const void* bp, const float* c, int64_t ldc, int64_t mr,
                    int64_t nr, const Epilogue& e, const float* bias, float* tile) {
  alignas(64) float bias_tile[NR] = {};
  if (!e.first || e.beta != 0.f)
    for (int64_t i = 0; i < mr; ++i)
      for (int64_t j = 0; j < nr; ++j) tile[i * NR + j] = c[i * ldc + j];
  if (bias)
    for (int64_t j = 0; j < nr; ++j) bias_tile[j] = bias[j];
  mk.one(ap, bp, tile, NR, e, bias ? bias_tile : nullptr);
}

// Tile (i, j) of C (c may be null when e.sink takes every tile and K is one block): the micro-kernel in place
// for a full tile; a tile at the matrix edge on a zero-padded copy whose valid part is written back; a tile of
// the last K block for a TileSink: a full one finished in place in the partial sums (the micro-kernel
// prefetches them; a scalar copy into a buffer first waited on their cache misses: linear_geglu at K = 1280
// ran 12-25% behind the plain product, now 1-8%), else in a buffer, then handed to the sink. Inlined: the
// full-tile branch is the hot loop.
template <class Mk>
inline __attribute__((always_inline)) void run_tile(const Mk& mk, const void* ap, const void* bp, float* c,
                                                    int64_t ldc, int64_t i, int64_t j, int64_t mr, int64_t nr,
                                                    const Epilogue& e, const float* bias) {
  float* cij = c ? c + i * ldc + j : nullptr;
  if (e.sink && e.last) {
    if (cij && mr == MR && nr == NR) {
      mk.one(ap, bp, cij, ldc, e, bias);
      e.sink->write(cij, ldc, i, j, mr, nr);
      return;
    }
    alignas(64) float tile[MR * NR] = {};
    tile_in_buffer(mk, ap, bp, cij, ldc, mr, nr, e, bias, tile);
    e.sink->write(tile, NR, i, j, mr, nr);
  } else if (mr == MR && nr == NR) {
    mk.one(ap, bp, cij, ldc, e, bias);
  } else {
    alignas(64) float tile[MR * NR] = {};
    tile_in_buffer(mk, ap, bp, cij, ldc, mr, nr, e, bias, tile);
    for (int64_t r = 0; r < mr; ++r)
      for (int64_t q = 0; q < nr; ++q) cij[r * ldc + q] = tile[r * NR + q];
  }
}

// Tiles (i, j) and (i, j + NR) of two full adjacent B panels: one micro2 call for a full MR-row tile (the
// same bits as two micro calls), else the two tiles one by one. bias covers both panels' columns (or is null).
// For a TileSink the pair is finished in place in the partial sums (or, when K is one block and c is null, in
// an L1 buffer) and handed over as its two tiles: linear_geglu had run on the one-panel kernel only, 17-20%
// behind the plain product in f32 and 40% with bf16 inputs (1024x1280x10240: 370 / 450 against 445 / 750
// GFLOP/s).
template <class Mk>
inline __attribute__((always_inline)) void run_tile_pair(const Mk& mk, const void* ap, const void* bp0,
                                                         const void* bp1, float* c, int64_t ldc, int64_t i,
                                                         int64_t j, int64_t mr, const Epilogue& e,
                                                         const float* bias) {
  if (mr == MR) {
    if (e.sink && e.last) {
      alignas(64) float tile[MR * 2 * NR];
      float* t = c ? c + i * ldc + j : tile;
      const int64_t ldt = c ? ldc : 2 * NR;
      mk.two(ap, bp0, bp1, t, ldt, e, bias);
      e.sink->write(t, ldt, i, j, MR, NR);
      e.sink->write(t + NR, ldt, i, j + NR, MR, NR);
      return;
    }
    mk.two(ap, bp0, bp1, c + i * ldc + j, ldc, e, bias);
    return;
  }
  run_tile(mk, ap, bp0, c, ldc, i, j, mr, NR, e, bias);
  run_tile(mk, ap, bp1, c, ldc, i, j + NR, mr, NR, e, bias ? bias + NR : nullptr);
}

// Whether panels jp and jp + 1 (of a range ending at jp1; column j of N) go through run_tile_pair: the kernel
// set has the pair kernel for these operands (micro2, AVX-512: 2 B loads per 6 broadcasts) and both panels are
// full.
template <class Mk>
inline bool pair_panels(const Mk& mk, int64_t jp, int64_t jp1, int64_t j, int64_t N) {
  return mk.pairs() && jp + 1 < jp1 && j + 2 * NR <= N;
}

}  // namespace

float* thread_scratch(int slot, size_t n) { return tl_other[slot].get(n); }


float act_scalar(float x, int act) {
  switch (act) {
    case kActSilu: return x / (1.f + std::exp(-x));
    case kActGelu: return 0.5f * (x < -3.40282347e38f ? -3.40282347e38f : x) * std::erfc(-x * 0.70710678118654752f);
    case kActGeluTanh: return x / (1.f + std::exp(-1.5957691216f * (x + 0.044715f * x * x * x)));
    case kActQuickGelu: return x / (1.f + std::exp(-1.702f * x));
    default: return x;
  }
}

const Kernels& portable_kernels() {
  static const Kernels k{"portable", micro_portable, micro_rows_portable, pack_a_rows_portable, pack_b_rows_portable,
                         pack_b_cols_portable, act_portable, widen_portable, geglu_rows_portable};
  return k;
}

const Kernels& kernels() {
  const char* env = std::getenv("HYPERSD_CPU_KERNELS");
  const std::string set = env ? env : "";
  if (set == "portable") return portable_kernels();
  const Kernels* k = set == "avx2" ? nullptr : avx512_kernels();
  if (!k) k = avx2_kernels();
  return k ? *k : portable_kernels();
}

bool cpu_math_bf16() {
  const char* m = std::getenv("HYPERSD_CPU_MATH");
  return m && std::string(m) == "bf16";
}

// ---------- packers ----------
void StridedA::pack(const Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
                    int64_t kc) const {
  for (int64_t p = 0; p * MR < mc; ++p) {
    float* d = dst + p * MR * kstride;
    int64_t ib = i0 + p * MR, mr = std::min<int64_t>(MR, i0 + mc - ib);
    if (cs == 1) {
      const float* rows[MR];
      for (int i = 0; i < MR; ++i) rows[i] = i < mr ? a + (ib + i) * rs + k0 : kZeros;
      kr.pack_a_rows(d, rows, kc);
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int i = 0; i < MR; ++i) d[k * MR + i] = i < mr ? a[(ib + i) * rs + (k0 + k) * cs] : 0.f;
    }
  }
}

void StridedA::pack_nr(const Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
                       int64_t kc) const {
  for (int64_t p = 0; p * NR < mc; ++p) {
    const void* rows[NR];
    for (int j = 0; j < NR; ++j) {
      const int64_t i = i0 + p * NR + j;
      rows[j] = i < i0 + mc ? (const void*)(a + i * rs + k0) : (const void*)kZeros;
    }
    kr.pack_b_rows(dst + p * NR * kstride, rows, DType::F32, kc);
  }
}

void StridedB::pack(const Kernels& kr, float* dst, int64_t kstride, int64_t j0, int64_t nc, int64_t k0,
                    int64_t kc) const {
  const int64_t es = (int64_t)dtype_size(dt);
  const char* base = (const char*)b;
  for (int64_t p = 0; p * NR < nc; ++p) {
    float* d = dst + p * NR * kstride;
    int64_t jb = j0 + p * NR, nr = std::min<int64_t>(NR, j0 + nc - jb);
    if (rs == 1 && cs != 1) {
      const void* rows[NR];
      panel_rows(jb, nr, k0, rows);
      kr.pack_b_rows(d, rows, dt, kc);
    } else if (cs == 1) {
      kr.pack_b_cols(d, base + (k0 * rs + jb) * es, dt, rs, nr, kc);
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int j = 0; j < NR; ++j) d[k * NR + j] = j < nr ? load_any(b, (k0 + k) * rs + (jb + j) * cs, dt) : 0.f;
    }
  }
}

bool StridedB::pack_pairs(const Kernels& kr, uint32_t* dst, int64_t kpstride, int64_t j0, int64_t nc, int64_t k0,
                          int64_t kc) const {
  if (dt != DType::BF16 || rs != 1 || cs == 1 || !kr.pairs_rows) return false;
  for (int64_t p = 0; p * NR < nc; ++p) {
    const int64_t jb = j0 + p * NR;
    const void* rows[NR];
    panel_rows(jb, std::min<int64_t>(NR, j0 + nc - jb), k0, rows);
    kr.pairs_rows(dst + p * NR * kpstride, rows, kc);
  }
  return true;
}

void StridedB::panel_rows(int64_t jb, int64_t nr, int64_t k0, const void** rows) const {
  const int64_t es = (int64_t)dtype_size(dt);
  for (int j = 0; j < NR; ++j)
    rows[j] = j < nr ? (const char*)b + ((jb + j) * cs + k0) * es : (const void*)kZeros;
}

void ConcatA::pack(const Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
                   int64_t kc) const {
  int64_t k_end = k0 + kc;
  if (k0 < k1) first.pack(kr, dst, kstride, i0, mc, k0, std::min(k_end, k1) - k0);
  if (k_end > k1) {
    int64_t s = std::max(k0, k1);
    second.pack(kr, dst + (s - k0) * MR, kstride, i0, mc, s - k1, k_end - s);
  }
}

void ConcatB::pack(const Kernels& kr, float* dst, int64_t kstride, int64_t j0, int64_t nc, int64_t k0,
                   int64_t kc) const {
  int64_t k_end = k0 + kc;
  if (k0 < k1) first.pack(kr, dst, kstride, j0, nc, k0, std::min(k_end, k1) - k0);
  if (k_end > k1) {
    int64_t s = std::max(k0, k1);
    second.pack(kr, dst + (s - k0) * NR, kstride, j0, nc, s - k1, k_end - s);
  }
}

// ---------- the driver ----------
namespace {

// The weight-rows path (run_weight_rows) serves 8 <= M <= this (HYPERSD_GEMM_ROWS_M overrides it; 0 disables
// it). Measured side by side (bench/ab.ts): 8x8 convolutions at 1280 channels +23%, M = 64 linear +10-12%,
// M = 77 -1% to +2%; M = 256 mixed (-13% to +4%), M = 1 -23% (16 rows computed for one).
int64_t weight_rows_max_m() {
  const char* env = std::getenv("HYPERSD_GEMM_ROWS_M");
  return env ? std::atoll(env) : 128;
}

// Small M (too few MC blocks for two per thread: M = 77 text tokens, attention-sized products, Winograd
// chunks): A is packed once for all of K (shared, <= 32 MiB), then each task takes a range of N, packs its
// own B panels K block by K block and runs every M panel against them. Two phases in all, instead of two per
// K block, and a task's C block stays in cache across the K blocks.
void run_small_m(const Kernels& kr, int64_t M, int64_t N, int64_t K, int64_t kc, const APacker& a,
                 const BPacker& b, float* c, int64_t ldc, const Epilogue& e, ThreadPool* pool, int threads) {
  const int64_t mpan = ceil_div(M, MR), npan = ceil_div(N, NR), nkb = ceil_div(K, kc);
  // A panel p holds all of K: (i, k) at ap + p*MR*K + k*MR, so K block pc starts at + pc*MR.
  float* ap = tl_apack.get((size_t)(mpan * MR * K));
  const int64_t group = 4;  // A panels per packing task
  const int64_t agroups = ceil_div(mpan, group);
  PhaseRunner phases(pool, threads);
  phases.add(agroups * nkb, [&](int64_t t) {
    const int64_t p0 = (t % agroups) * group, pc = (t / agroups) * kc, i0 = p0 * MR;
    a.pack(kr, ap + p0 * MR * K + pc * MR, K, i0, std::min(group * MR, M - i0), pc, std::min(kc, K - pc));
  });
  // bf16 inputs (Epilogue::bf16): A's panels rounded into pair panels once (panel p, K block b at
  // apb + p*MR*KP + b*kpb*MR), each B panel (or pair) right after it is packed.
  const bool bf = e.bf16 && kr.micro_bf16;
  const int64_t kpb = (kc + 1) / 2, KP = nkb * kpb;
  uint32_t* apb = bf ? (uint32_t*)tl_apairs.get((size_t)(mpan * MR * KP)) : nullptr;
  if (bf)
    phases.add(mpan * nkb, [&](int64_t t) {
      const int64_t p = t % mpan, blk = t / mpan, pc = blk * kc;
      kr.pairs_a(apb + p * MR * KP + blk * kpb * MR, ap + p * MR * K + pc * MR, std::min(kc, K - pc));
    });
  // About 4 ranges per thread (dynamic balance), each <= 16 panels so its B block stays within L2.
  const int64_t nranges = std::min(npan, std::max<int64_t>(4 * threads, ceil_div(npan, 16)));
  const int64_t rpan = ceil_div(npan, nranges);
  const float* pre = b.prepacked();
  phases.add(ceil_div(npan, rpan), [&](int64_t t) {
    const int64_t jp0 = t * rpan, jp1 = std::min(npan, jp0 + rpan);
    float* bp = pre ? nullptr : tl_bpack.get((size_t)(2 * NR * kc));
    for (int64_t pc = 0; pc < K; pc += kc) {
      const int64_t kcur = std::min(kc, K - pc);
      Epilogue ep = e;
      ep.first = pc == 0;
      ep.last = pc + kcur == K;
      for (int64_t jp = jp0; jp < jp1; ++jp) {
        const int64_t j = jp * NR, nr = std::min<int64_t>(NR, N - j);
        const bool pair = bf ? pair_panels(Bf16Micro{kr, 0}, jp, jp1, j, N) : pair_panels(F32Micro{kr, 0}, jp, jp1, j, N);
        // One B panel (or pair) packed at a time, just before its use, so the caches hold A's K block (M x kc)
        // and one panel (16 x kc); a whole range's B block beside A overflowed the L2 (measured with K blocks of
        // <= 384: 3-18% faster on M = 256 products, the same elsewhere).
        // With bf16 inputs a bf16 weight goes straight into its pair panels (no f32 panel, no rounding).
        const int64_t kpcur = (kcur + 1) / 2;
        uint32_t* bpb = bf ? (uint32_t*)tl_bpairs.get((size_t)(2 * NR * kpb)) : nullptr;
        const bool direct = bf && !pre && b.pack_pairs(kr, bpb, kpcur, j, pair ? 2 * NR : nr, pc, kcur);
        if (!pre && !direct) b.pack(kr, bp, kcur, j, pair ? 2 * NR : nr, pc, kcur);
        const float* bpan = pre ? pre + (jp * K + pc) * NR : bp;
        const float* bpan2 = pair ? (pre ? pre + ((jp + 1) * K + pc) * NR : bp + NR * kcur) : nullptr;
        const float* bj = ep.last && e.bias ? e.bias + j : nullptr;
        // The column of tiles under this panel (or pair): A panel ip at a0 + ip*astep.
        auto tiles = [&](const auto& mk, auto a0, int64_t astep, const void* b0, const void* b1) {
          for (int64_t ip = 0; ip < mpan; ++ip) {
            const int64_t i = ip * MR, mr = std::min<int64_t>(MR, M - i);
            if (pair) run_tile_pair(mk, a0 + ip * astep, b0, b1, c, ldc, i, j, mr, ep, bj);
            else run_tile(mk, a0 + ip * astep, b0, c, ldc, i, j, mr, nr, ep, bj);
          }
        };
        if (bf) {
          if (!direct) {
            kr.pairs_b(bpb, bpan, kcur);
            if (pair) kr.pairs_b(bpb + NR * kpcur, bpan2, kcur);
          }
          tiles(Bf16Micro{kr, kpcur}, apb + (pc / kc) * kpb * MR, MR * KP, bpb, bpb + NR * kpcur);
        } else {
          tiles(F32Micro{kr, kcur}, ap + pc * MR, MR * K, bpan, bpan2);
        }
        if (pair) ++jp;
      }
    }
  });
  phases.run();
}

// Small M against an f32 weight [N, K] (8x8 convolutions: M = 64; text tokens: M = 77; a timestep embedding:
// M = 1): the roles swap. Packing B costs N*K transposed floats per call, each then used by only M rows (at
// M = 64 the packing took a third of the time); here the weight is A, read in place by micro_rows six rows at
// a time, and the activation is packed instead (M*K floats) into 16-row panels. The product is C^T [N][M16],
// K block by K block (a block of the packed activation stays in L2 while the weight rows stream past), then
// one pass writes C = act(C^T^T + bias) (+ beta C).
void run_weight_rows(const Kernels& kr, int64_t M, int64_t N, int64_t K, int64_t kc, const APacker& a,
                     const float* w, int64_t ldw, float* c, int64_t ldc, const Epilogue& e, ThreadPool* pool,
                     int threads) {
  const int64_t mpan = ceil_div(M, NR), M16 = mpan * NR, ngroups = ceil_div(N, MR), N6 = ngroups * MR;
  const int64_t nkb = ceil_div(K, kc), tail = N % MR;
  // Activation panels for all of K: panel p, (i, k) at ap + p*NR*K + k*NR + i % NR.
  float* ap = tl_apack.get((size_t)(M16 * K));
  // C^T [N6][M16], then (for N % 6 != 0) the last rows of the weight, zero-padded to 6 [6][K].
  float* ct = tl_bpack.get((size_t)(N6 * M16 + (tail ? MR * K : 0)));
  float* wtail = ct + N6 * M16;
  PhaseRunner phases(pool, threads);
  phases.add(mpan * nkb + (tail ? 1 : 0), [&](int64_t t) {
    if (t == mpan * nkb) {
      for (int64_t i = 0; i < MR; ++i) {
        const int64_t n = N - tail + i;
        if (n < N) std::memcpy(wtail + i * K, w + n * ldw, (size_t)K * sizeof(float));
        else std::memset(wtail + i * K, 0, (size_t)K * sizeof(float));
      }
      return;
    }
    const int64_t p = t % mpan, pc = (t / mpan) * kc;
    a.pack_nr(kr, ap + p * NR * K + pc * NR, K, p * NR, std::min<int64_t>(NR, M - p * NR), pc, std::min(kc, K - pc));
  });
  // Ranges of 6-row weight groups, about 8 per thread; each runs every K block over its range.
  const int64_t nranges = std::min(ngroups, 8 * (int64_t)threads), rg = ceil_div(ngroups, nranges);
  Epilogue acc_e;  // C^T accumulates alpha A B over the K blocks; bias, activation and beta come last
  acc_e.alpha = e.alpha;
  phases.add(ceil_div(ngroups, rg), [&, acc_e](int64_t t) {
    const int64_t g0 = t * rg, g1 = std::min(ngroups, g0 + rg);
    for (int64_t pc = 0; pc < K; pc += kc) {
      const int64_t kcur = std::min(kc, K - pc);
      Epilogue ep = acc_e;
      ep.first = pc == 0;
      ep.last = pc + kcur == K;
      for (int64_t g = g0; g < g1; ++g) {
        const bool edge = tail && g == ngroups - 1;
        const float* wa = edge ? wtail + pc : w + g * MR * ldw + pc;
        const int64_t lda = edge ? K : ldw;
        for (int64_t p = 0; p < mpan; ++p)
          kr.micro_rows(kcur, wa, lda, ap + p * NR * K + pc * NR, ct + g * MR * M16 + p * NR, M16, ep, nullptr);
      }
    }
  });
  // C[i, :] from column i of C^T: bias, activation, beta.
  const int64_t rows_per = std::max<int64_t>(1, ceil_div(M, 4 * (int64_t)threads));
  phases.add(ceil_div(M, rows_per), [&](int64_t t) {
    const int64_t i0 = t * rows_per, i1 = std::min(M, i0 + rows_per);
    const bool beta_early = e.beta != 0.f && e.act == kActNone, beta_late = e.beta != 0.f && e.act != kActNone;
    float* row = tl_row.get((size_t)N);
    for (int64_t i = i0; i < i1; ++i) {
      float* ci = c + i * ldc;
      for (int64_t j = 0; j < N; ++j) {
        float v = ct[j * M16 + i];
        if (beta_early) v += e.beta * ci[j];
        row[j] = v + (e.bias ? e.bias[j] : 0.f);
      }
      kr.act(row, N, e.act);
      if (beta_late)
        for (int64_t j = 0; j < N; ++j) ci[j] = row[j] + e.beta * ci[j];
      else
        std::memcpy(ci, row, (size_t)N * sizeof(float));
    }
  });
  phases.run();
}

}  // namespace

void run(int64_t M, int64_t N, int64_t K, const APacker& a, const BPacker& b, float* c, int64_t ldc,
         const Epilogue& e, ThreadPool* pool) {
  if (M <= 0 || N <= 0) return;
  const Kernels& kr = kernels();
  const int64_t kcmax = e.max_kc > 0 ? std::min(e.max_kc, kKC) : kKC;  // the longest K block
  if (e.sink) {
    if (K == 0 || e.beta != 0.f) throw Error("gemm: a tile sink needs K > 0 and beta = 0");
    // The partial sums of all but the last K block (none when K is one block).
    if (K > kcmax) {
      c = tl_partial.get((size_t)(M * N));
      ldc = N;
    } else {
      c = nullptr;
    }
  }
  if (K == 0) {  // an empty product: act(bias) + beta * C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        float& ci = c[i * ldc + j];
        float v = act_scalar(e.bias ? e.bias[j] : 0.f, e.act);
        ci = e.beta != 0.f ? v + e.beta * ci : v;
      }
    return;
  }
  if (e.act != kActNone && e.beta != 0.f && K > kcmax) {
    // The activation comes before the beta term, so the K blocks cannot accumulate in C: go through a
    // temporary (a rare combination; the networks use beta only with act none).
    std::unique_ptr<float[]> t(new float[(size_t)(M * N)]);
    Epilogue e2 = e;
    e2.beta = 0.f;
    run(M, N, K, a, b, t.get(), N, e2, pool);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) c[i * ldc + j] = t[i * N + j] + e.beta * c[i * ldc + j];
    return;
  }
  int threads = pool ? pool->size() : 1;
  if ((double)M * N * K < 1e6) threads = 1;

  const int64_t nkb = ceil_div(K, kcmax), kc = ceil_div(K, nkb);
  const int64_t nnb = ceil_div(N, kNC), nc = round_up(ceil_div(N, nnb), NR);
  // MC blocks of <= kMC rows, their count a multiple of the thread count so every thread gets the same share.
  const int64_t mpan_all = ceil_div(M, MR);
  int64_t mblocks = round_up(ceil_div(M, kMC), threads);
  const int64_t mc_pan = ceil_div(mpan_all, mblocks);
  mblocks = ceil_div(mpan_all, mc_pan);
  // Enough MC blocks to keep every thread busy: each task packs its own block into its L2 (the classic
  // order). Too few (small M): pack all of A once, shared, and split the N range too. An A given as rows to
  // read in place (Winograd's V) is read so by every task: no packing at all (not with bf16 inputs, whose A is
  // packed into pairs). (Until session 17 V came as prepacked A panels, read in place the same way: +3% to +8%
  // on the VAE's 512x512 128-channel convolutions, whose 64 small GEMMs a chunk had each copied them first.)
  int64_t lda_rows = 0;
  const float* arows = e.bf16 && kr.micro_bf16 ? nullptr : a.rows_in_place(&lda_rows);
  const bool own_a = arows || mblocks >= 2 * threads || threads == 1;
  {
    int64_t ldw = 0;
    const float* w = b.weight_rows(&ldw);
    if (w && !e.sink && !(e.bf16 && kr.micro_bf16) && M >= 8 && M <= weight_rows_max_m() && a.has_pack_nr() && (int64_t)M * K <= (int64_t(8) << 20))
      return run_weight_rows(kr, M, N, K, kc, a, w, ldw, c, ldc, e, pool, threads);
  }
  if (!own_a && M * K <= (int64_t(8) << 20)) return run_small_m(kr, M, N, K, kc, a, b, c, ldc, e, pool, threads);
  float* bp = b.prepacked() ? nullptr : tl_bpack.get((size_t)(round_up(std::min(nc, N), NR) * kc));
  float* ap = own_a ? nullptr : tl_apack.get((size_t)(mpan_all * MR * kc));
  // bf16 inputs: each packed (or prepacked) B block is rounded into pair panels in the packing phase, each task's
  // A panels into its own pair panels, and the bf16 micro-kernels run over them.
  const bool bf = e.bf16 && kr.micro_bf16;
  uint32_t* bpb = bf ? (uint32_t*)tl_bpairs.get((size_t)(round_up(std::min(nc, N), NR) * ((kc + 1) / 2))) : nullptr;

  PhaseRunner phases(pool, threads);
  const float* pre = b.prepacked();
  for (int64_t jc = 0; jc < N; jc += nc) {
    const int64_t ncur = std::min(nc, N - jc), npan = ceil_div(ncur, NR);
    for (int64_t pc = 0; pc < K; pc += kc) {
      const int64_t kcur = std::min(kc, K - pc);
      Epilogue ep = e;
      ep.first = pc == 0;
      ep.last = pc + kcur == K;
      const float* bias = ep.last ? e.bias : nullptr;
      // B panel jp of this block: packed here, or read in place from a prepacked operand.
      const float* bblock = pre ? pre + (jc / NR * K + pc) * NR : bp;
      const int64_t bstride = pre ? NR * K : NR * kcur;
      // Packing phase: B panels in groups of 4 (unless prepacked), then, when A is shared, A panels in groups of 4.
      const int64_t group = 4, btasks = pre && !bf ? 0 : ceil_div(npan, group), atasks = own_a ? 0 : ceil_div(mpan_all, group);
      const int64_t kpcur = (kcur + 1) / 2;
      phases.add(btasks + atasks, [=, &a, &b, &kr](int64_t t) {
        if (t < btasks) {
          int64_t p0 = t * group, j0 = jc + p0 * NR;
          if (bf && !pre && b.pack_pairs(kr, bpb + p0 * NR * kpcur, kpcur, j0, std::min(group * NR, jc + ncur - j0), pc, kcur))
            return;
          if (!pre) b.pack(kr, bp + p0 * NR * kcur, kcur, j0, std::min(group * NR, jc + ncur - j0), pc, kcur);
          if (bf)
            for (int64_t p = p0; p < std::min(npan, p0 + group); ++p) kr.pairs_b(bpb + p * NR * kpcur, bblock + p * bstride, kcur);
        } else {
          int64_t p0 = (t - btasks) * group, i0 = p0 * MR;
          a.pack(kr, ap + p0 * MR * kcur, kcur, i0, std::min(group * MR, M - i0), pc, kcur);
        }
      });
      // Compute phase: about 8 tasks per thread, so a thread slowed by another process sharing its core hands
      // work to the others; with A packed per task an N range stays >= 256 columns (re-packing A costs < 0.2%).
      const int64_t want = ceil_div(8 * threads, mblocks);
      const int64_t nranges = std::max<int64_t>(1, std::min(own_a ? npan / 16 : npan, want));
      const int64_t nr_pan = ceil_div(npan, nranges);
      phases.add(mblocks * nranges, [=, &a, &kr](int64_t t) {
        const int64_t ip0 = (t / nranges) * mc_pan, ip1 = std::min(mpan_all, ip0 + mc_pan);
        const int64_t jp0 = (t % nranges) * nr_pan, jp1 = std::min(npan, jp0 + nr_pan);
        // A's panels: in the shared or this task's buffer (or A's rows read in place: arows, below).
        const float* ablock = ap ? ap + ip0 * MR * kcur : nullptr;
        const int64_t astride = MR * kcur;
        if (own_a && !arows) {
          float* own = tl_apack.get((size_t)(mc_pan * MR * kcur));
          a.pack(kr, own, kcur, ip0 * MR, std::min((ip1 - ip0) * MR, M - ip0 * MR), pc, kcur);
          ablock = own;
        }
        // The task's tiles: A panel ip at a0 + (ip - ip0)*astep, B panel jp at b0 + jp*bstep.
        auto sweep = [&](const auto& mk, auto a0, int64_t astep, auto b0, int64_t bstep) {
          for (int64_t jp = jp0; jp < jp1; ++jp) {
            const int64_t j = jc + jp * NR, nr = std::min<int64_t>(NR, N - j);
            const auto bpan = b0 + jp * bstep;
            const float* bj = bias ? bias + j : nullptr;
            if (pair_panels(mk, jp, jp1, j, N)) {
              for (int64_t ip = ip0; ip < ip1; ++ip) {
                const int64_t i = ip * MR;
                run_tile_pair(mk, a0 + (ip - ip0) * astep, bpan, bpan + bstep, c, ldc, i, j,
                              std::min<int64_t>(MR, M - i), ep, bj);
              }
              ++jp;
              continue;
            }
            for (int64_t ip = ip0; ip < ip1; ++ip) {
              const int64_t i = ip * MR, mr = std::min<int64_t>(MR, M - i);
              run_tile(mk, a0 + (ip - ip0) * astep, bpan, c, ldc, i, j, mr, nr, ep, bj);
            }
          }
        };
        if (arows) {
          sweep(RowsMicro{kr, kcur, lda_rows}, arows + ip0 * MR * lda_rows + pc, MR * lda_rows, bblock, bstride);
        } else if (bf) {
          uint32_t* apb = (uint32_t*)tl_apairs.get((size_t)(mc_pan * MR * kpcur));
          for (int64_t ip = ip0; ip < ip1; ++ip) kr.pairs_a(apb + (ip - ip0) * MR * kpcur, ablock + (ip - ip0) * astride, kcur);
          sweep(Bf16Micro{kr, kpcur}, (const uint32_t*)apb, MR * kpcur, (const uint32_t*)bpb, NR * kpcur);
        } else {
          sweep(F32Micro{kr, kcur}, ablock, astride, bblock, bstride);
        }
      });
    }
  }
  phases.run();
}

// ---------- tensor helpers ----------
F32View as_f32(const Tensor& t, ThreadPool* pool, int scratch_slot) {
  F32View v;
  if (t.dtype == DType::F32) {
    v.p = t.data<float>();
    return v;
  }
  int64_t n = t.numel();
  float* d;
  if (scratch_slot >= 0) {
    d = thread_scratch(scratch_slot, (size_t)std::max<int64_t>(n, 1));
  } else {
    v.hold.reset((float*)std::malloc(sizeof(float) * std::max<int64_t>(n, 1)), std::free);
    if (!v.hold) throw Error("out of memory widening " + t.describe() + " to f32");
    d = v.hold.get();
  }
  const char* s = (const char*)t.raw();
  DType dt = t.dtype;
  const Kernels& kr = kernels();
  auto body = [&](int64_t b, int64_t e) { kr.widen(d + b, s + b * 2, dt, e - b); };  // half: 2-byte elements
  if (pool) pool->parallel_for(n, 1 << 15, body);
  else body(0, n);
  v.p = d;
  return v;
}

F32Out out_f32(const Tensor& t, bool keep_old, ThreadPool* pool) {
  F32Out o;
  o.t = &t;
  if (t.dtype == DType::F32) {
    o.p = t.data<float>();
    return o;
  }
  if (keep_old) {
    F32View v = as_f32(t, pool);
    o.hold = v.hold;
  } else {
    o.hold.reset((float*)std::malloc(sizeof(float) * std::max<int64_t>(t.numel(), 1)), std::free);
    if (!o.hold) throw Error("out of memory for an f32 temporary of " + t.describe());
  }
  o.p = o.hold.get();
  return o;
}

void F32Out::finish(ThreadPool* pool) const {
  if (!hold) return;
  int64_t n = t->numel();
  uint16_t* d = t->data<uint16_t>();
  const float* s = p;
  bool f16 = t->dtype == DType::F16;
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) d[i] = f16 ? float_to_half(s[i]) : float_to_bf16(s[i]);
  };
  if (pool) pool->parallel_for(n, 1 << 15, body);
  else body(0, n);
}

float load_f32(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::F32: case DType::F16: case DType::BF16: return load_any(t.raw(), i, t.dtype);
    case DType::I32: return (float)t.data<int32_t>()[i];
    default: return (float)t.data<int64_t>()[i];
  }
}

}  // namespace gemm
}  // namespace hsd
