// Embeddings and reductions: timestep_embedding (diffusers get_timestep_embedding), embedding (row gather by
// i32/i64 ids) and sum_to (reduce to a broadcast-compatible shape, times a scale; the gradient of
// broadcasting, and sum/mean).
//
// timestep_embedding follows torch's float32 arithmetic step by step (exponent = f32(-ln max_period) * j,
// divided by f32(half - shift); exp; times t; times scale; sin/cos), each step rounded to f32, so results
// match diffusers to an ulp or so even for t ~ 1000 where the sin argument is large.
// embedding copies rows as bytes, so an f16/bf16 table is gathered without widening the whole table
// (registered with f32_only = false); an id outside [0, V) is an error naming the id and V.
// sum_to: y's shape is right-aligned against x's; dims of x where y has 1 (or nothing) are summed. Dims are
// coalesced into runs of kept and reduced dims; the innermost run is either kept (rows of x are added into a
// row of y: a vector loop) or reduced (a contiguous sum). Work is (block of outer y rows) x (chunk of the
// reduced outer space) with double partial sums per chunk, so a reduction to a handful of outputs (a bias
// gradient, a mean) still spreads over all threads.
// embedding_backward (the scatter-add into the table's gradient) is at the end of the file.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "hypersd/ops.h"

namespace hsd {
namespace {

void timestep_embedding_kernel(const OpContext& c) {
  const Tensor &t = c.in.at(0), &y = c.out.at(0);
  if (t.dim() != 1 || y.dim() != 2 || y.shape[0] != t.shape[0])
    throw Error("timestep_embedding: t " + t.describe() + " must be [B] and y " + y.describe() + " [B, dim]");
  int64_t B = t.shape[0], dim = y.shape[1], half = dim / 2;
  bool flip = c.attrs.i("flip_sin_to_cos", 0) != 0;
  double shift = c.attrs.f("freq_shift", 0.0);
  double max_period = c.attrs.f("max_period", 10000.0);
  float scale = (float)c.attrs.f("scale", 1.0);
  if (half > 0 && (double)half - shift == 0.0) throw Error("timestep_embedding: half dim minus freq_shift is zero");
  // torch: exponent = -math.log(max_period) * arange(half, f32); exponent / (half - shift); exp.
  std::vector<float> freq((size_t)half);
  float neg_log = (float)(-std::log(max_period)), denom = (float)((double)half - shift);
  for (int64_t j = 0; j < half; ++j) {
    float e = neg_log * (float)j;
    e = e / denom;
    freq[(size_t)j] = std::exp(e);
  }
  const float* pt = t.data<float>();
  float* py = y.data<float>();
  c.pool->parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* row = py + b * dim;
      float* first = row;          // sin, or cos when flipped
      float* second = row + half;  // cos, or sin when flipped
      for (int64_t j = 0; j < half; ++j) {
        float a = pt[b] * freq[(size_t)j];
        a = scale * a;
        float sn = std::sin(a), cs = std::cos(a);
        first[j] = flip ? cs : sn;
        second[j] = flip ? sn : cs;
      }
      if (dim % 2) row[dim - 1] = 0.0f;
    }
  });
}

template <class I>
void gather_rows(const OpContext& c, const I* ids, int64_t n, int64_t V, size_t row_bytes) {
  const char* table = (const char*)c.in[1].raw();
  char* dst = (char*)c.out[0].raw();
  c.pool->parallel_for(n, std::max<int64_t>(1, (int64_t)(65536 / std::max<size_t>(row_bytes, 1))), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      int64_t id = (int64_t)ids[i];
      if (id < 0 || id >= V)
        throw Error("embedding: id " + std::to_string(id) + " (at position " + std::to_string(i) +
                    ") is out of range for a vocabulary of " + std::to_string(V));
      std::memcpy(dst + (size_t)i * row_bytes, table + (size_t)id * row_bytes, row_bytes);
    }
  });
}

void embedding_kernel(const OpContext& c) {
  const Tensor &ids = c.in.at(0), &table = c.in.at(1), &y = c.out.at(0);
  if (table.dim() != 2) throw Error("embedding: table must be [V, D], got " + table.describe());
  int64_t V = table.shape[0], D = table.shape[1], n = ids.numel();
  if (y.numel() != n * D || y.dtype != table.dtype)
    throw Error("embedding: output " + y.describe() + " must be [..., " + std::to_string(D) + "] of the table's dtype");
  size_t row = (size_t)D * dtype_size(table.dtype);
  if (ids.dtype == DType::I32) gather_rows(c, ids.data<int32_t>(), n, V, row);
  else if (ids.dtype == DType::I64) gather_rows(c, ids.data<int64_t>(), n, V, row);
  else throw Error("embedding: ids must be i32 or i64, got " + ids.describe());
}

// One coalesced dim of sum_to: its size, x stride, y stride (0 when reduced).
struct Dim {
  int64_t size, xs, ys;
  bool kept() const { return ys != 0; }
};

void sum_to_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  int64_t nd = x.dim(), yd = y.dim();
  bool ok = yd <= nd;
  for (int64_t i = 0; ok && i < yd; ++i) {
    int64_t xsz = x.shape[i + nd - yd];
    ok = y.shape[i] == xsz || y.shape[i] == 1;
  }
  if (!ok) throw Error("sum_to: output " + y.describe() + " is not a broadcast-compatible reduction of " + x.describe());
  double scale = c.attrs.f("scale", 1.0);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  int64_t ny = y.numel();
  if (ny == 0) return;
  // Coalesced dims, outermost first, size-1 dims dropped.
  auto xst = contiguous_strides(x.shape);
  std::vector<int64_t> yst(nd, 0);
  for (int64_t i = nd - 1, s = 1; i >= 0; --i) {
    int64_t j = i - (nd - yd);
    if (j >= 0 && y.shape[j] != 1 && x.shape[i] != 1) {
      yst[i] = s;
      s *= x.shape[i];
    }
  }
  std::vector<Dim> dims;
  for (int64_t i = 0; i < nd; ++i) {
    if (x.shape[i] == 1) continue;
    Dim d{x.shape[i], xst[i], yst[i]};
    if (!dims.empty() && dims.back().kept() == d.kept() && dims.back().xs == d.xs * d.size &&
        dims.back().ys == d.ys * d.size) {
      dims.back().size *= d.size;
      dims.back().xs = d.xs;
      dims.back().ys = d.ys;
    } else {
      dims.push_back(d);
    }
  }
  if (x.numel() == 0 || dims.empty()) {  // an empty sum, or x holds one element
    float v = x.numel() == 0 ? 0.0f : (float)(px[0] * scale);
    for (int64_t i = 0; i < ny; ++i) py[i] = v;
    return;
  }
  Dim last = dims.back();
  dims.pop_back();
  std::vector<Dim> ko, ro;  // kept outer, reduced outer
  for (auto& d : dims) (d.kept() ? ko : ro).push_back(d);
  int64_t Yo = 1, Ro = 1;
  for (auto& d : ko) Yo *= d.size;
  for (auto& d : ro) Ro *= d.size;
  int64_t ylen = last.kept() ? last.size : 1;  // y elements per outer y row
  int64_t threads = c.pool->size();
  // Chunks of the reduced outer space: enough tasks for all threads, partials bounded to ~8M doubles.
  int64_t nrc = std::min<int64_t>(Ro, std::max<int64_t>(1, (4 * threads + Yo - 1) / Yo));
  nrc = std::max<int64_t>(1, std::min<int64_t>(nrc, (int64_t)(8 << 20) / ny));
  std::vector<double> part((size_t)(nrc * ny), 0.0);
  auto offset = [](const std::vector<Dim>& ds, int64_t idx) {
    int64_t off = 0;
    for (int64_t k = (int64_t)ds.size() - 1; k >= 0; --k) {
      off += (idx % ds[k].size) * ds[k].xs;
      idx /= ds[k].size;
    }
    return off;
  };
  c.pool->parallel_for(Yo * nrc, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t yo = t / nrc, rc = t % nrc;
      int64_t r0 = Ro * rc / nrc, r1 = Ro * (rc + 1) / nrc;
      double* acc = &part[(size_t)(rc * ny + yo * ylen)];
      const float* xb = px + offset(ko, yo);
      for (int64_t r = r0; r < r1; ++r) {
        const float* run = xb + offset(ro, r);
        if (last.kept()) {
          for (int64_t i = 0; i < last.size; ++i) acc[i] += run[i];
        } else {
          double s = 0;
          for (int64_t i = 0; i < last.size; ++i) s += run[i];
          acc[0] += s;
        }
      }
    }
  });
  c.pool->parallel_for(ny, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      double s = 0;
      for (int64_t rc = 0; rc < nrc; ++rc) s += part[(size_t)(rc * ny + i)];
      py[i] = (float)(s * scale);
    }
  });
}


// embedding_backward: ids [...] (i32/i64), dy [..., D] -> dtable [V, D] (V from the output), the scatter-add
// of dy's rows into the rows their ids name; rows no id names are zero. Repeated ids would race if the ids
// were split across threads, so the threads split the D columns instead: each walks every id and adds its
// own column range, in id order (deterministic).
template <class I>
void scatter_rows(const OpContext& c, const I* ids, int64_t n, int64_t V, int64_t D) {
  const float* pd = c.in[1].data<float>();
  float* po = c.out[0].data<float>();
  for (int64_t i = 0; i < n; ++i)
    if ((int64_t)ids[i] < 0 || (int64_t)ids[i] >= V)
      throw Error("embedding_backward: id " + std::to_string((int64_t)ids[i]) + " (at position " + std::to_string(i) +
                  ") is out of range for a vocabulary of " + std::to_string(V));
  int64_t cols = std::max<int64_t>(16, (D + 4 * c.pool->size() - 1) / (4 * c.pool->size()));
  int64_t nblk = (D + cols - 1) / cols;
  c.pool->parallel_for(nblk, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      int64_t d0 = blk * cols, d1 = std::min(D, d0 + cols);
      for (int64_t v = 0; v < V; ++v) std::fill(po + v * D + d0, po + v * D + d1, 0.0f);
      for (int64_t i = 0; i < n; ++i) {
        float* row = po + (int64_t)ids[i] * D;
        const float* src = pd + i * D;
        for (int64_t d = d0; d < d1; ++d) row[d] += src[d];
      }
    }
  });
}

void embedding_backward_kernel(const OpContext& c) {
  const Tensor &ids = c.in.at(0), &dy = c.in.at(1), &dt = c.out.at(0);
  if (dt.dim() != 2) throw Error("embedding_backward: dtable must be [V, D], got " + dt.describe());
  int64_t V = dt.shape[0], D = dt.shape[1], n = ids.numel();
  if (dy.numel() != n * D)
    throw Error("embedding_backward: dy " + dy.describe() + " must be [..., " + std::to_string(D) + "] for ids " + ids.describe());
  if (ids.dtype == DType::I32) scatter_rows(c, ids.data<int32_t>(), n, V, D);
  else if (ids.dtype == DType::I64) scatter_rows(c, ids.data<int64_t>(), n, V, D);
  else throw Error("embedding_backward: ids must be i32 or i64, got " + ids.describe());
}

}  // namespace

void register_embedding_cpu(OpRegistry& r) {
  r.add_cpu("timestep_embedding", timestep_embedding_kernel);
  r.add_cpu("embedding", embedding_kernel, false);
  r.add_cpu("sum_to", sum_to_kernel);
  r.add_cpu("embedding_backward", embedding_backward_kernel);
}
}  // namespace hsd
