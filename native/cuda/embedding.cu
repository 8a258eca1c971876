// timestep_embedding, embedding, embedding_backward, sum_to on CUDA (OPS.md).
//
// timestep_embedding follows diffusers' get_timestep_embedding step by step in f32 (exponent, /(half -
// shift), exp, t * freq, * scale), with exp and sin/cos evaluated in f64 and rounded once, i.e. correctly
// rounded f32 results: timesteps reach 999, where one ulp of the argument is 6e-5, so the f32 ulp-level
// differences of expf/sinf between libraries would otherwise show in a 1e-5 comparison.
//
// embedding gathers table rows (16-byte vectors when D allows). An id outside [0, V) cannot raise from a
// kernel: the kernel records the first bad position (common.cuh's index check) and writes a zero row, and
// the launcher reads it back (one stream sync per call; embeddings run a few times per prompt) and throws
// an hsd::Error naming the id, as the CPU kernel does.
//
// sum_to reduces x to y's shape (dims where y is 1 or absent), times scale. One thread per (output,
// chunk of the reduced range) walks its chunk with an odometer over the reduced dims (no division per
// element) and sums in f64; when the output is small the reduced range is cut into chunks whose f64
// partials a second kernel adds in a fixed order: deterministic, and exact enough for a mean over
// millions of elements.
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills: timestep 28-30 registers (+40 B stack: f64 sin/cos argument
// reduction), embedding 22-26, embedding_backward 28-30, sum_partial 46 (+64 B stack: the odometer),
// sum_final 32.
#include <cmath>

#include "common.cuh"

namespace hsd {
namespace cu {
namespace {

// ---------------------------------------------------------------- timestep_embedding

template <class T>
__global__ void __launch_bounds__(256) timestep_kernel(const float* __restrict__ t, T* __restrict__ y, int B, int dim,
                                                       int flip, float denom, float neg_log_period, float scale) {
  const int half = dim / 2;
  const int64_t n = (int64_t)B * dim;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int b = (int)(i / dim), j = (int)(i - (int64_t)b * dim);
    float v = 0.f;
    if (j < 2 * half) {
      const int k = j < half ? j : j - half;
      const bool first = j < half;
      const float expo = __fdiv_rn(__fmul_rn(neg_log_period, (float)k), denom);
      const float freq = (float)exp((double)expo);
      const float arg = __fmul_rn(scale, __fmul_rn(t[b], freq));
      const bool use_sin = first != (flip != 0);
      v = (float)(use_sin ? sin((double)arg) : cos((double)arg));
    }
    y[i] = from_f<T>(v);
  }
}

void timestep_embedding(const OpContext& ctx) {
  const char* op = "timestep_embedding";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 1, 1);
  const Tensor& y = ctx.out[0];
  need_float(op, "t", ctx.in[0]);
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  const int64_t B = ctx.in[0].numel();
  if (y.dim() != 2 || y.size(0) != B) fail(op, "y must be [B=" + std::to_string(B) + ", dim], got " + y.describe());
  const int64_t dim = y.size(1);
  if (y.numel() == 0) return;
  if (dim > (1 << 30) || B > (1 << 30)) fail(op, "too large: " + y.describe());
  const double shift = ctx.attrs.f("freq_shift", 0.0);
  const int flip = ctx.attrs.i("flip_sin_to_cos", 0) != 0;
  const double max_period = ctx.attrs.f("max_period", 10000.0), scale = ctx.attrs.f("scale", 1.0);
  if (dim / 2 > 0 && (double)(dim / 2) - shift == 0.0) fail(op, "freq_shift equals half the dim");
  const float denom = (float)((double)(dim / 2) - shift);
  const Tensor t = as_dtype(ctx.in[0], DType::F32, s);
  const float nlp = (float)(-std::log(max_period));
  dispatch_float(op, y.dtype, [&](auto tag) {
    using T = decltype(tag);
    timestep_kernel<T><<<grid_for(y.numel(), 256), 256, 0, s>>>(t.data<float>(), y.data<T>(), (int)B, (int)dim, flip,
                                                                denom, nlp, (float)scale);
  });
}

// ---------------------------------------------------------------- embedding

// Throws the CPU kernel's message when a kernel reported a bad id.
void check_ids(const char* op, const Tensor& word, const Tensor& ids, int64_t V, cudaStream_t s) {
  const int64_t pos = first_bad_index(op, word, s);
  if (pos < 0) return;
  fail(op, "id " + std::to_string(read_index(op, ids, pos, s)) + " (at position " + std::to_string(pos) +
               ") is out of range for a vocabulary of " + std::to_string(V));
}

template <class I, class T, bool VEC>
__global__ void __launch_bounds__(256) embedding_kernel(const I* __restrict__ ids, const T* __restrict__ table,
                                                        T* __restrict__ y, int64_t n_ids, int64_t V, int64_t D,
                                                        unsigned long long* bad) {
  constexpr int W = VEC ? 8 : 1;
  const int64_t per = D / W, n = n_ids * per;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / per, c = (i - r * per) * W;
    const int64_t id = (int64_t)ids[r];
    T* dst = y + r * D + c;
    if (id < 0 || id >= V) {
      report_bad_index(bad, r);
      for (int k = 0; k < W; ++k) dst[k] = T{};
      continue;
    }
    const T* src = table + id * D + c;
    if constexpr (VEC) *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    else dst[0] = src[0];
  }
}

void embedding(const OpContext& ctx) {
  const char* op = "embedding";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 2, 1);
  const Tensor& ids0 = ctx.in[0];
  const Tensor& table0 = ctx.in[1];
  const Tensor& y = ctx.out[0];
  if (ids0.dtype != DType::I32 && ids0.dtype != DType::I64) fail(op, "ids must be i32 or i64, got " + ids0.describe());
  need_float(op, "table", table0);
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  if (table0.dim() != 2) fail(op, "table must be [V, D], got " + table0.describe());
  const int64_t V = table0.size(0), D = table0.size(1);
  std::vector<int64_t> ys = ids0.shape;
  ys.push_back(D);
  need_shape(op, "y", y, ys);
  if (y.numel() == 0) return;
  const Tensor ids = contiguous(ids0, s), table = as_dtype(table0, y.dtype, s);
  const Tensor flag = bad_index_word(op, s);
  const size_t es = dtype_size(y.dtype);
  const bool vec = (D * es) % 16 == 0 && aligned16(table.raw()) && aligned16(y.raw());
  const int64_t n_ids = ids.numel();
  auto* bad = (unsigned long long*)flag.raw();
  auto launch = [&](auto itag, auto ttag) {
    using I = decltype(itag);
    using T = decltype(ttag);
    if (vec) {
      const int64_t Du = D * (int64_t)es / 2;  // 16-bit units, 8 per vector
      embedding_kernel<I, uint16_t, true><<<grid_for(n_ids * Du / 8, 256), 256, 0, s>>>(
          ids.data<I>(), (const uint16_t*)table.raw(), (uint16_t*)y.raw(), n_ids, V, Du, bad);
    } else {
      embedding_kernel<I, T, false><<<grid_for(n_ids * D, 256), 256, 0, s>>>(ids.data<I>(), table.data<T>(),
                                                                              y.data<T>(), n_ids, V, D, bad);
    }
  };
  dispatch_float(op, y.dtype, [&](auto ttag) {
    if (ids.dtype == DType::I32) launch(int32_t{}, ttag);
    else launch(int64_t{}, ttag);
  });
  check_ids(op, flag, ids, V, s);
}

// ---------------------------------------------------------------- embedding_backward
// ids [...], dy [..., D] -> dtable [V, D] (f32): the scatter-add of dy's rows into the rows their ids name,
// zero elsewhere. Repeated ids would race if ids were split across threads, so threads split the D columns
// instead and each walks every id in order: no atomics, deterministic sums. Bad ids are reported as in the
// forward (the valid rows are still added).

template <class I>
__global__ void __launch_bounds__(256) embedding_backward_kernel(const I* __restrict__ ids, const float* __restrict__ dy,
                                                                 float* __restrict__ dt, int64_t n_ids, int64_t V,
                                                                 int64_t D, unsigned long long* bad) {
  for (int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; d < D; d += (int64_t)gridDim.x * blockDim.x)
    for (int64_t r = 0; r < n_ids; ++r) {
      const int64_t id = (int64_t)ids[r];
      if (id < 0 || id >= V) {
        if (d == 0) report_bad_index(bad, r);
        continue;
      }
      dt[id * D + d] += dy[r * D + d];
    }
}

void embedding_backward(const OpContext& ctx) {
  const char* op = "embedding_backward";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 2, 1);
  const Tensor& ids0 = ctx.in[0];
  const Tensor& dtab = ctx.out[0];
  if (ids0.dtype != DType::I32 && ids0.dtype != DType::I64) fail(op, "ids must be i32 or i64, got " + ids0.describe());
  need_float(op, "dy", ctx.in[1]);
  need_float(op, "dtable", dtab);
  if (dtab.dim() != 2) fail(op, "dtable must be [V, D], got " + dtab.describe());
  const int64_t V = dtab.size(0), D = dtab.size(1);
  std::vector<int64_t> ds = ids0.shape;
  ds.push_back(D);
  need_shape(op, "dy", ctx.in[1], ds);
  OutAs out(dtab, DType::F32, false, s);
  if (dtab.numel() == 0) return;
  cudaError_t e = cudaMemsetAsync(out.buf.raw(), 0, out.buf.nbytes(), s);
  if (e != cudaSuccess) fail(op, std::string("cudaMemsetAsync: ") + cudaGetErrorString(e));
  const int64_t n_ids = ids0.numel();
  if (n_ids > 0) {
    const Tensor ids = contiguous(ids0, s), dy = as_dtype(ctx.in[1], DType::F32, s);
    const Tensor flag = bad_index_word(op, s);
    auto* bad = (unsigned long long*)flag.raw();
    if (ids.dtype == DType::I32)
      embedding_backward_kernel<int32_t><<<grid_for(D, 128), 128, 0, s>>>(ids.data<int32_t>(), dy.data<float>(),
                                                                          out.buf.data<float>(), n_ids, V, D, bad);
    else
      embedding_backward_kernel<int64_t><<<grid_for(D, 128), 128, 0, s>>>(ids.data<int64_t>(), dy.data<float>(),
                                                                          out.buf.data<float>(), n_ids, V, D, bad);
    check_ids(op, flag, ids, V, s);
  }
  out.finish(s);
}

// ---------------------------------------------------------------- sum_to

constexpr int MAXR = 8;
struct RedGeom {
  int kr, rr;                               // kept / reduced dims (outermost first)
  int64_t kshape[MAXR], kstride[MAXR];      // kept dims: y index -> x offset
  int64_t rshape[MAXR], rstride[MAXR];      // reduced dims
  int64_t Y, Rn, chunk;
};

template <class T>
__global__ void __launch_bounds__(256) sum_partial_kernel(const T* __restrict__ x, RedGeom g, int64_t nch,
                                                          double* __restrict__ part, T* __restrict__ y, float scale) {
  const int64_t total = g.Y * nch;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t o = i % g.Y, c = i / g.Y;
    int64_t rem = o, koff = 0;
    for (int d = g.kr - 1; d >= 0; --d) {
      const int64_t q = rem / g.kshape[d];
      koff += (rem - q * g.kshape[d]) * g.kstride[d];
      rem = q;
    }
    const int64_t r0 = c * g.chunk, r1 = min(g.Rn, r0 + g.chunk);
    int64_t idx[MAXR], roff = 0;
    rem = r0;
    for (int d = g.rr - 1; d >= 0; --d) {
      const int64_t q = rem / g.rshape[d];
      idx[d] = rem - q * g.rshape[d];
      roff += idx[d] * g.rstride[d];
      rem = q;
    }
    double acc = 0.0;
    for (int64_t r = r0; r < r1; ++r) {
      acc += (double)to_f(x[koff + roff]);
      for (int d = g.rr - 1; d >= 0; --d) {  // odometer step
        roff += g.rstride[d];
        if (++idx[d] < g.rshape[d]) break;
        roff -= g.rshape[d] * g.rstride[d];
        idx[d] = 0;
      }
    }
    if (nch == 1) y[o] = from_f<T>((float)(acc * scale));
    else part[c * g.Y + o] = acc;
  }
}

template <class T>
__global__ void __launch_bounds__(256) sum_final_kernel(const double* __restrict__ part, int64_t nch, int64_t Y,
                                                        T* __restrict__ y, float scale) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < Y; o += (int64_t)gridDim.x * blockDim.x) {
    double acc = 0.0;
    for (int64_t c = 0; c < nch; ++c) acc += part[c * Y + o];
    y[o] = from_f<T>((float)(acc * scale));
  }
}

void sum_to(const OpContext& ctx) {
  const char* op = "sum_to";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 1, 1);
  const Tensor& x0 = ctx.in[0];
  const Tensor& y = ctx.out[0];
  need_float(op, "x", x0);
  need_float(op, "y", y);
  need_contiguous_out(op, y);
  const size_t R = x0.shape.size();
  if (y.shape.size() > R) fail(op, "y " + y.describe() + " has more dims than x " + x0.describe());
  std::vector<int64_t> yshape(R, 1);
  for (size_t i = 0; i < y.shape.size(); ++i) yshape[R - y.shape.size() + i] = y.shape[i];
  for (size_t i = 0; i < R; ++i)
    if (yshape[i] != x0.shape[i] && yshape[i] != 1) fail(op, "cannot reduce x " + x0.describe() + " to " + y.describe());
  if (y.numel() == 0) return;
  const float scale = (float)ctx.attrs.f("scale", 1.0);
  const Tensor x = as_dtype(x0, y.dtype, s);
  const std::vector<int64_t> xs = contiguous_strides(x.shape);
  RedGeom g{};
  // Split dims into kept and reduced, merging neighbours of the same kind that are contiguous in x.
  std::vector<int64_t> ks, kst, rs, rst;  // innermost first while building
  int last = -1;                          // 0 kept, 1 reduced
  for (size_t k = R; k-- > 0;) {
    if (x.shape[k] == 1) continue;
    const int kind = yshape[k] == 1 ? 1 : 0;
    auto& sh = kind ? rs : ks;
    auto& st = kind ? rst : kst;
    if (kind == last && !sh.empty() && xs[k] == st.back() * sh.back()) sh.back() *= x.shape[k];
    else {
      sh.push_back(x.shape[k]);
      st.push_back(xs[k]);
    }
    last = kind;
  }
  if (ks.size() > (size_t)MAXR || rs.size() > (size_t)MAXR) fail(op, "too many dims after merging: " + x0.describe());
  g.kr = (int)ks.size();
  g.rr = (int)rs.size();
  for (int d = 0; d < g.kr; ++d) {
    g.kshape[d] = ks[g.kr - 1 - d];
    g.kstride[d] = kst[g.kr - 1 - d];
  }
  for (int d = 0; d < g.rr; ++d) {
    g.rshape[d] = rs[g.rr - 1 - d];
    g.rstride[d] = rst[g.rr - 1 - d];
  }
  g.Y = y.numel();
  g.Rn = x.numel() / g.Y;
  int64_t nch = std::max<int64_t>(1, std::min<int64_t>((131072 + g.Y - 1) / g.Y, (g.Rn + 255) / 256));
  g.chunk = (g.Rn + nch - 1) / nch;
  nch = g.Rn ? (g.Rn + g.chunk - 1) / g.chunk : 1;
  if (g.Rn == 0) g.chunk = 0;
  Tensor part;
  if (nch > 1) part = empty({nch, g.Y}, DType::I64, Device::CUDA);  // 8-byte slots for the f64 partials
  dispatch_float(op, y.dtype, [&](auto tag) {
    using T = decltype(tag);
    double* pp = nch > 1 ? (double*)part.raw() : nullptr;
    sum_partial_kernel<T><<<grid_for(g.Y * nch, 256), 256, 0, s>>>(x.data<T>(), g, nch, pp, y.data<T>(), scale);
    if (nch > 1) sum_final_kernel<T><<<grid_for(g.Y, 256), 256, 0, s>>>(pp, nch, g.Y, y.data<T>(), scale);
  });
}

}  // namespace
}  // namespace cu

void register_embedding_cuda(OpRegistry& r) {
  r.add_cuda("timestep_embedding", cu::timestep_embedding);
  r.add_cuda("embedding", cu::embedding);
  r.add_cuda("embedding_backward", cu::embedding_backward);
  r.add_cuda("sum_to", cu::sum_to);
}

}  // namespace hsd
