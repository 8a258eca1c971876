// CPU kernels of the gemm family: matmul, lora_linear, lora_linear_batched (semantics in OPS.md), all on
// the blocked GEMM engine of gemm_kernels.h.
//
// Registered with f32_only = false: weights (B, W, LoRA down/up) stay f16 / bf16 in memory and are widened
// while packing; a half activation (A, x) is widened into a temporary first, a half output is computed in
// an f32 temporary and narrowed (both are rare on the CPU, where activations are f32).
//   matmul: B without a batch (a weight) and A not transposed fold the batch into M: one GEMM, B packed once.
//     Many small batch items (attention-shaped) run one item per thread instead.
//   lora_linear: t = scale * x down^T [M, r] first, then ONE GEMM over the extended K range
//     y = [x | t] [W | up]^T + bias, so the adapter costs 2 M r (K + N) flops and no merged weight.
//   linear_geglu: diffusers' GEGLU projection fused (below); CPU only, the TS wrapper composes it elsewhere.
//   lora_linear_batched: y = x W^T + bias over all B*L rows (W packed once), then per batch item with an
//     adapter t = s x_b down^T and y_b += t up^T (a beta = 1 pass with K = r).
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "gemm_kernels.h"

namespace hsd {
namespace {

using gemm::Epilogue;

std::string shp(const Tensor& t) {
  std::string s = "[";
  for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? "," : "") + std::to_string(t.shape[i]);
  return s + "]";
}

bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

void need_float(const char* op, const char* name, const Tensor& t) {
  if (!is_float(t.dtype)) throw Error(std::string(op) + ": " + name + " must be a float tensor, got " + t.describe());
}

int act_attr(const char* op, const Attrs& at) {
  int64_t a = at.i("act", 0);
  if (a < 0 || a > 4)
    throw Error(std::string(op) + ": act must be 0 (none), 1 (silu), 2 (gelu), 3 (gelu_tanh) or 4 (quick_gelu), got " +
                std::to_string(a));
  return (int)a;
}

// bias [N] as f32 (or null when absent).
gemm::F32View bias_view(const char* op, const OpContext& c, size_t idx, int64_t N) {
  if (!c.attrs.i("has_bias", 0)) return {};
  if (c.in.size() <= idx) throw Error(std::string(op) + ": has_bias is set but the bias input is missing");
  const Tensor& b = c.in[idx];
  need_float(op, "bias", b);
  if (b.numel() != N) throw Error(std::string(op) + ": bias " + shp(b) + " must have " + std::to_string(N) + " elements");
  return gemm::as_f32(b, c.pool);
}

void matmul_kernel(const OpContext& c) {
  const Tensor &A = c.in.at(0), &B = c.in.at(1), &C = c.out.at(0);
  need_float("matmul", "A", A);
  need_float("matmul", "B", B);
  need_float("matmul", "C", C);
  if (A.dim() < 2 || B.dim() < 2)
    throw Error("matmul: A " + shp(A) + " and B " + shp(B) + " must both have rank >= 2");
  const bool ta = c.attrs.i("transA", 0) != 0, tb = c.attrs.i("transB", 0) != 0;
  const int64_t M = ta ? A.size(-1) : A.size(-2), K = ta ? A.size(-2) : A.size(-1);
  const int64_t KB = tb ? B.size(-1) : B.size(-2), N = tb ? B.size(-2) : B.size(-1);
  if (K != KB) throw Error("matmul: inner dimensions differ: A " + shp(A) + " and B " + shp(B));
  int64_t batch = 1;
  for (int64_t d = 0; d + 2 < A.dim(); ++d) batch *= A.shape[d];
  const bool b_batched = B.dim() > 2;
  if (b_batched && (B.dim() != A.dim() || !std::equal(A.shape.begin(), A.shape.end() - 2, B.shape.begin())))
    throw Error("matmul: B " + shp(B) + " must have A's batch dimensions (A " + shp(A) + ") or none");
  if (C.dim() != A.dim() || C.size(-2) != M || C.size(-1) != N ||
      !std::equal(A.shape.begin(), A.shape.end() - 2, C.shape.begin()))
    throw Error("matmul: C " + shp(C) + " does not match A " + shp(A) + " x B " + shp(B));
  Epilogue e;
  e.alpha = (float)c.attrs.f("alpha", 1.0);
  e.beta = (float)c.attrs.f("beta", 0.0);
  e.act = act_attr("matmul", c.attrs);
  e.bf16 = !b_batched && gemm::cpu_math_bf16();  // HYPERSD_CPU_MATH=bf16: the linear layers (B a weight)
  gemm::F32View bias = bias_view("matmul", c, 2, N);
  e.bias = bias.p;
  gemm::F32View a = gemm::as_f32(A, c.pool);
  gemm::F32Out out = gemm::out_f32(C, e.beta != 0.f, c.pool);
  const int64_t es = (int64_t)dtype_size(B.dtype);
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;

  auto item = [&](int64_t bi, int64_t rows, ThreadPool* pool) {
    const float* ab = a.p + bi * M * K;
    const void* bb = (const char*)B.raw() + (b_batched ? bi * K * N * es : 0);
    gemm::StridedA pa(ab, ta ? 1 : lda, ta ? lda : 1);
    gemm::StridedB pb(bb, B.dtype, tb ? 1 : ldb, tb ? ldb : 1);
    gemm::run(rows, N, K, pa, pb, out.p + bi * M * N, N, e, pool);
  };
  if (!b_batched && !ta) {
    item(0, batch * M, c.pool);
  } else if (c.pool && batch >= c.pool->size() && (double)M * N * K < 4e6) {
    std::atomic<int64_t> next{0};
    c.pool->parallel_for(c.pool->size(), 1, [&](int64_t, int64_t) {
      for (int64_t bi; (bi = next.fetch_add(1)) < batch;) item(bi, M, nullptr);
    });
  } else {
    for (int64_t bi = 0; bi < batch; ++bi) item(bi, M, c.pool);
  }
  out.finish(c.pool);
}

struct LoraShapes {
  int64_t M, K, N, r;
};

// Checks x [..., K], W [N, K], down [(nA,) r, K], up [(nA,) N, r], y [..., N].
LoraShapes lora_shapes(const char* op, const Tensor& x, const Tensor& W, const Tensor& down, const Tensor& up,
                       const Tensor& y, bool batched) {
  need_float(op, "x", x);
  need_float(op, "W", W);
  need_float(op, "down", down);
  need_float(op, "up", up);
  need_float(op, "y", y);
  if (x.dim() < 1 || W.dim() != 2) throw Error(std::string(op) + ": W " + shp(W) + " must be [N, K]");
  const int64_t K = x.size(-1), N = W.size(0);
  if (W.size(1) != K) throw Error(std::string(op) + ": x " + shp(x) + " and W " + shp(W) + " differ in K");
  const int64_t lead = batched ? 1 : 0;
  if (down.dim() != 2 + lead || up.dim() != 2 + lead)
    throw Error(std::string(op) + ": down " + shp(down) + " and up " + shp(up) + (batched ? " must have rank 3" : " must have rank 2"));
  const int64_t r = down.size(lead);
  if (down.size(lead + 1) != K) throw Error(std::string(op) + ": down " + shp(down) + " must be [" + (batched ? "nA, " : "") + "r, " + std::to_string(K) + "]");
  if (up.size(lead) != N || up.size(lead + 1) != r || (batched && up.size(0) != down.size(0)))
    throw Error(std::string(op) + ": up " + shp(up) + " does not match down " + shp(down) + " and W " + shp(W));
  if (y.dim() != x.dim() || y.size(-1) != N || !std::equal(x.shape.begin(), x.shape.end() - 1, y.shape.begin()))
    throw Error(std::string(op) + ": y " + shp(y) + " must be x " + shp(x) + " with the last dimension " + std::to_string(N));
  // M from x's leading dims, not numel / K: with K = 0 that had made M = 0, so y (M x N: bias + the empty
  // products) was never written.
  int64_t M = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) M *= x.shape[(size_t)d];
  return {M, K, N, r};
}

void lora_linear_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &W = c.in.at(1), &y = c.out.at(0);
  const bool hb = c.attrs.i("has_bias", 0) != 0;
  const Tensor &down = c.in.at(hb ? 3 : 2), &up = c.in.at(hb ? 4 : 3);
  LoraShapes s = lora_shapes("lora_linear", x, W, down, up, y, false);
  gemm::F32View bias = bias_view("lora_linear", c, 2, s.N);
  gemm::F32View xv = gemm::as_f32(x, c.pool);
  gemm::F32Out out = gemm::out_f32(y, false, c.pool);
  std::unique_ptr<float[]> t(new float[(size_t)std::max<int64_t>(s.M * s.r, 1)]);
  gemm::StridedA px(xv.p, s.K, 1), pt(t.get(), s.r, 1);
  gemm::StridedB pw(W.raw(), W.dtype, 1, s.K), pdown(down.raw(), down.dtype, 1, s.K), pup(up.raw(), up.dtype, 1, s.r);
  Epilogue et;
  et.alpha = (float)c.attrs.f("scale");
  gemm::run(s.M, s.r, s.K, px, pdown, t.get(), s.r, et, c.pool);
  Epilogue e;
  e.bias = bias.p;
  gemm::run(s.M, s.N, s.K + s.r, gemm::ConcatA(px, pt, s.K), gemm::ConcatB(pw, pup, s.K), out.p, s.N, e, c.pool);
  out.finish(c.pool);
}

void lora_linear_batched_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &W = c.in.at(1), &y = c.out.at(0);
  const bool hb = c.attrs.i("has_bias", 0) != 0;
  const size_t o = hb ? 1 : 0;
  const Tensor &downs = c.in.at(2 + o), &ups = c.in.at(3 + o), &idx = c.in.at(4 + o), &scales = c.in.at(5 + o);
  LoraShapes s = lora_shapes("lora_linear_batched", x, W, downs, ups, y, true);
  if (x.dim() != 3) throw Error("lora_linear_batched: x " + shp(x) + " must be [B, L, K]");
  const int64_t B = x.size(0), L = x.size(1), nA = downs.size(0);
  if (idx.numel() != B || (idx.dtype != DType::I32 && idx.dtype != DType::I64))
    throw Error("lora_linear_batched: idx " + idx.describe() + " must be i32 [" + std::to_string(B) + "]");
  if (scales.numel() != B) throw Error("lora_linear_batched: scales " + shp(scales) + " must have " + std::to_string(B) + " elements");
  need_float("lora_linear_batched", "scales", scales);
  for (int64_t b = 0; b < B; ++b) {
    int64_t a = (int64_t)gemm::load_f32(idx, b);
    if (a < -1 || a >= nA)
      throw Error("lora_linear_batched: idx[" + std::to_string(b) + "] = " + std::to_string(a) + " is outside [-1, " +
                  std::to_string(nA) + ")");
  }
  gemm::F32View bias = bias_view("lora_linear_batched", c, 2, s.N);
  gemm::F32View xv = gemm::as_f32(x, c.pool);
  gemm::F32Out out = gemm::out_f32(y, false, c.pool);
  Epilogue e;
  e.bias = bias.p;
  gemm::run(s.M, s.N, s.K, gemm::StridedA(xv.p, s.K, 1), gemm::StridedB(W.raw(), W.dtype, 1, s.K), out.p, s.N, e,
            c.pool);
  std::unique_ptr<float[]> t(new float[(size_t)std::max<int64_t>(L * s.r, 1)]);
  const int64_t esd = (int64_t)dtype_size(downs.dtype), esu = (int64_t)dtype_size(ups.dtype);
  for (int64_t b = 0; b < B; ++b) {
    int64_t a = (int64_t)gemm::load_f32(idx, b);
    if (a < 0) continue;
    Epilogue et;
    et.alpha = gemm::load_f32(scales, b);
    gemm::run(L, s.r, s.K, gemm::StridedA(xv.p + b * L * s.K, s.K, 1),
              gemm::StridedB((const char*)downs.raw() + a * s.r * s.K * esd, downs.dtype, 1, s.K), t.get(), s.r, et,
              c.pool);
    Epilogue ea;
    ea.beta = 1.f;
    gemm::run(L, s.N, s.r, gemm::StridedA(t.get(), s.r, 1),
              gemm::StridedB((const char*)ups.raw() + a * s.N * s.r * esu, ups.dtype, 1, s.r), out.p + b * L * s.N, s.N,
              ea, c.pool);
  }
  out.finish(c.pool);
}

// linear_geglu: one GEMM over W = [W_value; W_gate] [2 inner, K] whose B panels interleave 8 value rows with
// their 8 gate rows, so each 16-column tile holds both halves of 8 outputs; a TileSink turns each finished tile
// into its 8 GEGLU outputs while it is in L1. The [M, 2 inner] product never reaches memory (with K in one block;
// else only its partial sums do), and no separate GEGLU pass reads it back.
struct GegluB final : gemm::BPacker {
  const char* w;
  DType dt;
  int64_t K, inner, es;
  GegluB(const void* w, DType dt, int64_t K, int64_t inner)
      : w((const char*)w), dt(dt), K(K), inner(inner), es((int64_t)dtype_size(dt)) {}
  // The 16 weight rows of the B panel at column j (a multiple of NR): value rows 8q .. 8q+7, then their gates.
  void panel_rows(int64_t j, int64_t k0, const void** rows) const {
    const int64_t q = j / gemm::NR;  // output columns 8q .. 8q+7
    for (int r = 0; r < 8; ++r) {
      rows[r] = w + ((8 * q + r) * K + k0) * es;
      rows[8 + r] = w + ((inner + 8 * q + r) * K + k0) * es;
    }
  }
  void pack(const gemm::Kernels& kr, float* dst, int64_t kstride, int64_t j0, int64_t nc, int64_t k0,
            int64_t kc) const override {
    for (int64_t p = 0; p * gemm::NR < nc; ++p) {
      const void* rows[gemm::NR];
      panel_rows(j0 + p * gemm::NR, k0, rows);
      kr.pack_b_rows(dst + p * gemm::NR * kstride, rows, dt, kc);
    }
  }
  bool pack_pairs(const gemm::Kernels& kr, uint32_t* dst, int64_t kpstride, int64_t j0, int64_t nc, int64_t k0,
                  int64_t kc) const override {
    if (dt != DType::BF16 || !kr.pairs_rows) return false;
    for (int64_t p = 0; p * gemm::NR < nc; ++p) {
      const void* rows[gemm::NR];
      panel_rows(j0 + p * gemm::NR, k0, rows);
      kr.pairs_rows(dst + p * gemm::NR * kpstride, rows, kc);
    }
    return true;
  }
};
struct GegluSink final : gemm::TileSink {
  const gemm::Kernels& kr;
  float* out;
  int64_t ldo;
  GegluSink(const gemm::Kernels& kr, float* out, int64_t ldo) : kr(kr), out(out), ldo(ldo) {}
  void write(const float* tile, int64_t ldt, int64_t i0, int64_t j0, int64_t mr, int64_t) const override {
    kr.geglu_rows(tile, ldt, mr, out + i0 * ldo + j0 / 2, ldo);
  }
};

void linear_geglu_kernel(const OpContext& c) {
  const char* op = "linear_geglu";
  const Tensor &x = c.in.at(0), &W = c.in.at(1), &y = c.out.at(0);
  need_float(op, "x", x);
  need_float(op, "w", W);
  if (x.dim() < 1 || W.dim() != 2 || W.size(1) != x.size(-1))
    throw Error(std::string(op) + ": x " + shp(x) + " and w " + shp(W) + " must be [..., K] and [2 inner, K]");
  const int64_t K = x.size(-1), N2 = W.size(0), inner = N2 / 2, M = K ? x.numel() / K : 0;
  if (N2 % 16 != 0) throw Error(std::string(op) + ": w " + shp(W) + " must have a multiple of 16 rows (2 x inner, inner % 8 == 0)");
  if (y.dtype != DType::F32 || y.numel() != M * inner || y.size(-1) != inner)
    throw Error(std::string(op) + ": y " + y.describe() + " must be f32 [..., " + std::to_string(inner) + "]");
  if (K == 0) throw Error(std::string(op) + ": K = 0");
  gemm::F32View bias = bias_view(op, c, 2, N2);
  std::vector<float> bi;  // the bias in the interleaved column order of the GEMM
  if (bias.p) {
    bi.resize((size_t)N2);
    for (int64_t q = 0; q < inner / 8; ++q)
      for (int r = 0; r < 8; ++r) {
        bi[(size_t)(16 * q + r)] = bias.p[8 * q + r];
        bi[(size_t)(16 * q + 8 + r)] = bias.p[inner + 8 * q + r];
      }
  }
  gemm::F32View xv = gemm::as_f32(x, c.pool);
  const gemm::Kernels& kr = gemm::kernels();
  GegluSink sink(kr, y.data<float>(), inner);
  Epilogue e;
  e.bias = bias.p ? bi.data() : nullptr;
  e.sink = &sink;
  e.bf16 = gemm::cpu_math_bf16();
  gemm::run(M, N2, K, gemm::StridedA(xv.p, K, 1), GegluB(W.raw(), W.dtype, K, inner), nullptr, N2, e, c.pool);
}

}  // namespace

void register_gemm_cpu(OpRegistry& r) {
  r.add_cpu("linear_geglu", linear_geglu_kernel, false);
  r.add_cpu("matmul", matmul_kernel, false);
  r.add_cpu("lora_linear", lora_linear_kernel, false);
  r.add_cpu("lora_linear_batched", lora_linear_batched_kernel, false);
}
}  // namespace hsd
