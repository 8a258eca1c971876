// Shape ops: copy (strided -> contiguous), cast between dtypes, permute, slice, concat, upsample_nearest2x.
//
// Except cast, these only move bytes, so they work on every dtype without widening (registered with
// f32_only = false) and copy whole contiguous runs with memcpy where the layout has them. permute and
// copy share one strided gather: y (contiguous) walks its rows, x is addressed through arbitrary strides,
// with the element size (2, 4 or 8 bytes) a template parameter so the inner loop is a plain typed copy.
// upsample_nearest2x_backward (a 2x2 sum, f32) is the one backward kernel here; the other shape ops'
// gradients are shape ops themselves (lib/ops/shape.grad.ts).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "gemm_kernels.h"
#include "hypersd/ops.h"

namespace hsd {
namespace pw_avx2 {  // pointwise_avx2.cpp
void narrow_bf16(const float* x, uint16_t* y, int64_t n);
void narrow_f16(const float* x, uint16_t* y, int64_t n);
}  // namespace pw_avx2
}  // namespace hsd

namespace hsd {
namespace {

template <class T>
void gather_rows(const T* src, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, T* dst,
                 int64_t r0, int64_t r1) {
  int64_t nd = (int64_t)shape.size();
  int64_t inner = nd ? shape[nd - 1] : 1, is = nd ? strides[nd - 1] : 1;
  for (int64_t r = r0; r < r1; ++r) {
    int64_t rem = r, off = 0;
    for (int64_t d = nd - 2; d >= 0; --d) {
      off += (rem % shape[d]) * strides[d];
      rem /= shape[d];
    }
    T* out = dst + r * inner;
    const T* in = src + off;
    if (is == 1) std::memcpy(out, in, (size_t)inner * sizeof(T));
    else
      for (int64_t i = 0; i < inner; ++i) out[i] = in[i * is];
  }
}

// y (contiguous, `shape`) = the elements of x's storage at x.offset + sum(index * strides).
void strided_gather(const Tensor& x, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides,
                    const Tensor& y, ThreadPool* pool) {
  int64_t n = y.numel(), inner = shape.empty() ? 1 : shape.back();
  if (n == 0) return;
  int64_t rows = n / inner;
  size_t es = dtype_size(y.dtype);
  const char* src = (const char*)x.storage->ptr + (size_t)x.offset * es;
  pool->parallel_for(rows, std::max<int64_t>(1, 4096 / inner), [&](int64_t b, int64_t e) {
    switch (es) {
      case 2: gather_rows((const uint16_t*)src, shape, strides, (uint16_t*)y.raw(), b, e); break;
      case 4: gather_rows((const uint32_t*)src, shape, strides, (uint32_t*)y.raw(), b, e); break;
      default: gather_rows((const uint64_t*)src, shape, strides, (uint64_t*)y.raw(), b, e); break;
    }
  });
}

// General strided gather into a contiguous output of the same shape and dtype.
void copy_kernel(const OpContext& c) {
  const Tensor& x = c.in.at(0);
  const Tensor& y = c.out.at(0);
  if (x.shape != y.shape || x.dtype != y.dtype) throw Error("copy: input and output differ in shape or dtype");
  if (x.is_contiguous()) {
    std::memcpy(y.raw(), x.raw(), y.nbytes());
    return;
  }
  strided_gather(x, x.shape, x.strides, y, c.pool);
}

// y[b][c][r] = x[b][r][c] for contiguous x [B, R, C], element type T: tiles of 32 x 32 so both sides read and
// write whole cache lines (a row-by-row gather read R-strided columns, one line per element: 9-10 ns an
// element on the conv weights' [O, I, 3, 3] -> [O, 3, 3, I] repack at load time).
template <class T>
void batched_transpose(const T* x, T* y, int64_t B, int64_t R, int64_t C, ThreadPool* pool) {
  constexpr int64_t kT = 32;
  const int64_t rt = (R + kT - 1) / kT, ct = (C + kT - 1) / kT;
  pool->parallel_for(B * rt * ct, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / (rt * ct), r0 = (t / ct) % rt * kT, c0 = t % ct * kT;
      const int64_t r1 = std::min(R, r0 + kT), c1 = std::min(C, c0 + kT);
      const T* xb = x + b * R * C;
      T* yb = y + b * R * C;
      for (int64_t cc = c0; cc < c1; ++cc)
        for (int64_t r = r0; r < r1; ++r) yb[cc * R + r] = xb[r * C + cc];
    }
  });
}

void permute_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  auto dims = c.attrs.ints("dims");
  int64_t nd = x.dim();
  if ((int64_t)dims.size() != nd || y.dim() != nd || x.dtype != y.dtype)
    throw Error("permute: dims, input " + x.describe() + " and output " + y.describe() + " disagree");
  std::vector<int64_t> strides(nd), seen(nd, 0);
  auto xs = contiguous_strides(x.shape);
  for (int64_t i = 0; i < nd; ++i) {
    int64_t d = dims[i] < 0 ? dims[i] + nd : dims[i];
    if (d < 0 || d >= nd || seen[d]++) throw Error("permute: dims is not a permutation of 0.." + std::to_string(nd - 1));
    if (y.shape[i] != x.shape[d]) throw Error("permute: output " + y.describe() + " does not match the permuted input");
    strides[i] = xs[d];
  }
  // dims = [0, .., a-1, b, .., nd-1, a, .., b-1] (a block of axes moved to the end: NCHW -> NHWC, OIHW -> OHWI)
  // with x contiguous is a batch of 2-D transposes [R, C] -> [C, R].
  if (x.is_contiguous() && nd >= 2) {
    int64_t a = 0;
    while (a < nd && dims[a] == a) ++a;
    if (a < nd) {
      const int64_t b = dims[a];  // the first axis moved forward: dims[a..] rotates [a, nd) left by b - a
      bool rot = b > a;
      for (int64_t i = a; i < nd && rot; ++i) rot = dims[i] == a + (i - a + b - a) % (nd - a);
      if (rot) {
        int64_t Bn = 1, R = 1, C = 1;
        for (int64_t i = 0; i < a; ++i) Bn *= x.shape[i];
        for (int64_t i = a; i < b; ++i) R *= x.shape[i];
        for (int64_t i = b; i < nd; ++i) C *= x.shape[i];
        const size_t es = dtype_size(x.dtype);
        if (Bn * R * C > 0 && R > 1 && C > 1 && (es == 2 || es == 4 || es == 8)) {
          if (es == 2) batched_transpose((const uint16_t*)x.raw(), (uint16_t*)y.raw(), Bn, R, C, c.pool);
          else if (es == 4) batched_transpose((const uint32_t*)x.raw(), (uint32_t*)y.raw(), Bn, R, C, c.pool);
          else batched_transpose((const uint64_t*)x.raw(), (uint64_t*)y.raw(), Bn, R, C, c.pool);
          return;
        }
      }
    }
  }
  strided_gather(x, y.shape, strides, y, c.pool);
}

// outer x axis x inner decomposition of a contiguous shape.
void split_at(const std::vector<int64_t>& shape, int64_t axis, int64_t& outer, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= shape[d];
  for (size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
}

int64_t norm_axis(const char* op, int64_t axis, int64_t nd) {
  int64_t a = axis < 0 ? axis + nd : axis;
  if (a < 0 || a >= nd) throw Error(std::string(op) + ": axis " + std::to_string(axis) + " out of range for rank " + std::to_string(nd));
  return a;
}

void slice_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  int64_t nd = x.dim(), axis = norm_axis("slice", c.attrs.i("axis"), nd);
  int64_t start = c.attrs.i("start"), step = c.attrs.i("step", 1), len = y.dim() == nd ? y.shape[axis] : -1;
  for (int64_t d = 0; d < nd && len >= 0; ++d)
    if (d != axis && y.shape[d] != x.shape[d]) len = -1;
  if (len < 0 || x.dtype != y.dtype)
    throw Error("slice: output " + y.describe() + " does not match input " + x.describe() + " outside axis " + std::to_string(axis));
  if (len > 0 && (start < 0 || start >= x.shape[axis] || start + step * (len - 1) < 0 ||
                  start + step * (len - 1) >= x.shape[axis]))
    throw Error("slice: start " + std::to_string(start) + ", step " + std::to_string(step) + ", length " +
                std::to_string(len) + " reach outside axis " + std::to_string(axis) + " of " + x.describe());
  int64_t outer, inner;
  split_at(x.shape, axis, outer, inner);
  size_t es = dtype_size(x.dtype), run = (size_t)inner * es;
  const char* src = (const char*)x.raw();
  char* dst = (char*)y.raw();
  int64_t xa = x.shape[axis];
  c.pool->parallel_for(outer * len, std::max<int64_t>(1, 8192 / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      int64_t o = t / len, i = t % len;
      std::memcpy(dst + (size_t)t * run, src + (size_t)(o * xa + start + step * i) * run, run);
    }
  });
}

void concat_kernel(const OpContext& c) {
  const Tensor& y = c.out.at(0);
  int64_t nd = y.dim(), axis = norm_axis("concat", c.attrs.i("axis"), nd);
  int64_t total = 0;
  for (size_t k = 0; k < c.in.size(); ++k) {
    const Tensor& x = c.in[k];
    bool ok = x.dim() == nd && x.dtype == y.dtype;
    for (int64_t d = 0; ok && d < nd; ++d) ok = d == axis || x.shape[d] == y.shape[d];
    if (!ok) throw Error("concat: input " + std::to_string(k) + " " + x.describe() + " does not fit output " + y.describe());
    total += x.shape[axis];
  }
  if (total != y.shape[axis])
    throw Error("concat: inputs add up to " + std::to_string(total) + " along axis " + std::to_string(axis) +
                " but the output " + y.describe() + " has " + std::to_string(y.shape[axis]));
  int64_t outer, inner;
  split_at(y.shape, axis, outer, inner);
  size_t es = dtype_size(y.dtype);
  int64_t nin = (int64_t)c.in.size();
  std::vector<int64_t> start(nin + 1, 0);  // offset of input k inside one output row, in elements
  for (int64_t k = 0; k < nin; ++k) start[k + 1] = start[k] + c.in[k].shape[axis] * inner;
  int64_t row = start[nin];
  char* dst = (char*)y.raw();
  c.pool->parallel_for(outer * nin, std::max<int64_t>(1, 8192 / std::max<int64_t>(row / std::max<int64_t>(nin, 1), 1)),
                       [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      int64_t o = t / nin, k = t % nin;
      size_t n = (size_t)(start[k + 1] - start[k]) * es;
      std::memcpy(dst + (size_t)(o * row + start[k]) * es, (const char*)c.in[k].raw() + (size_t)o * n, n);
    }
  });
}

void upsample_nearest2x_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  if (x.dim() != 4 || y.dim() != 4 || y.shape[0] != x.shape[0] || y.shape[1] != 2 * x.shape[1] ||
      y.shape[2] != 2 * x.shape[2] || y.shape[3] != x.shape[3] || x.dtype != y.dtype)
    throw Error("upsample_nearest2x: x " + x.describe() + " must be [N, H, W, C] and y " + y.describe() + " [N, 2H, 2W, C]");
  int64_t N = x.shape[0], H = x.shape[1], W = x.shape[2];
  size_t run = (size_t)x.shape[3] * dtype_size(x.dtype);
  const char* src = (const char*)x.raw();
  char* dst = (char*)y.raw();
  c.pool->parallel_for(N * 2 * H, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {  // output row r = (n, oh)
      int64_t n = r / (2 * H), h = (r % (2 * H)) / 2;
      const char* in = src + (size_t)(n * H + h) * W * run;
      char* out = dst + (size_t)r * 2 * W * run;
      for (int64_t w = 0; w < W; ++w) {
        std::memcpy(out + (2 * w) * run, in + w * run, run);
        std::memcpy(out + (2 * w + 1) * run, in + w * run, run);
      }
    }
  });
}

void cast_kernel(const OpContext& c) {
  const Tensor& x = c.in.at(0);
  const Tensor& y = c.out.at(0);
  if (x.numel() != y.numel()) throw Error("cast: input and output differ in size");
  int64_t n = x.numel();
  DType s = x.dtype, d = y.dtype;
  auto is_float = [](DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; };
  if (is_float(s) && is_float(d)) {
    // Between float dtypes: widen to f32 with the GEMM engine's kernel (F16C / shifts with AVX2; exact), then
    // narrow with float_to_half / float_to_bf16 (round to nearest even) in a loop with no dtype switch: the same
    // values as the per-element path below, which went through a double and two switches (14-15 ns an element
    // on the weights of a model being loaded).
    const gemm::Kernels& kr = gemm::kernels();
    const bool avx2 = gemm::using_avx2();  // the narrowing 8 at a time (pointwise_avx2.cpp), the same bits
    const size_t ss = dtype_size(s);
    c.pool->parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
      constexpr int64_t kBlock = 4096;
      float buf[kBlock];
      for (int64_t i0 = b; i0 < e; i0 += kBlock) {
        const int64_t m = std::min(kBlock, e - i0);
        const void* src = (const char*)x.raw() + (size_t)i0 * ss;
        if (d == DType::F32) {
          kr.widen(y.data<float>() + i0, src, s, m);
          continue;
        }
        kr.widen(buf, src, s, m);
        uint16_t* out = y.data<uint16_t>() + i0;
        if (avx2) (d == DType::F16 ? pw_avx2::narrow_f16 : pw_avx2::narrow_bf16)(buf, out, m);
        else if (d == DType::F16)
          for (int64_t i = 0; i < m; ++i) out[i] = float_to_half(buf[i]);
        else
          for (int64_t i = 0; i < m; ++i) out[i] = float_to_bf16(buf[i]);
      }
    });
    return;
  }
  // Integers convert as integers (i64 -> i32 wraps, two's complement, as in PyTorch; i64 -> f32 rounds once: it
  // had gone through a double, 2^54 + 2^30 + 1 -> 2^54 instead of 2^54 + 2^31, and an out-of-range i64 -> i32
  // through a double to int conversion, undefined behaviour); floats to integers truncate toward zero,
  // saturating at the integer's range, NaN -> 0.
  const bool int_src = s == DType::I32 || s == DType::I64;
  // lo = -2^(bits-1) is exact in a double; values >= 2^(bits-1) (= -lo) saturate to the maximum.
  auto f2i = [](double v, double lo, int64_t imax) -> int64_t {
    if (!(v == v)) return 0;
    if (v <= lo) return (int64_t)lo;
    if (v >= -lo) return imax;
    return (int64_t)v;
  };
  c.pool->parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (int_src) {
        const int64_t v = s == DType::I32 ? (int64_t)x.data<int32_t>()[i] : x.data<int64_t>()[i];
        switch (d) {
          case DType::F32: y.data<float>()[i] = (float)v; break;
          case DType::F16: y.data<uint16_t>()[i] = float_to_half((float)v); break;
          case DType::BF16: y.data<uint16_t>()[i] = float_to_bf16((float)v); break;
          case DType::I32: y.data<int32_t>()[i] = (int32_t)(uint32_t)(uint64_t)v; break;
          default: y.data<int64_t>()[i] = v; break;
        }
        continue;
      }
      float v;
      switch (s) {
        case DType::F32: v = x.data<float>()[i]; break;
        case DType::F16: v = half_to_float(x.data<uint16_t>()[i]); break;
        default: v = bf16_to_float(x.data<uint16_t>()[i]); break;
      }
      switch (d) {
        case DType::F32: y.data<float>()[i] = v; break;
        case DType::F16: y.data<uint16_t>()[i] = float_to_half(v); break;
        case DType::BF16: y.data<uint16_t>()[i] = float_to_bf16(v); break;
        case DType::I32: y.data<int32_t>()[i] = (int32_t)f2i(v, -2147483648.0, INT32_MAX); break;
        default: y.data<int64_t>()[i] = f2i(v, -9223372036854775808.0, INT64_MAX); break;
      }
    }
  });
}


// upsample_nearest2x_backward: dy [N, 2H, 2W, C] -> dx [N, H, W, C], each input pixel the sum of the 2x2
// output pixels it was copied to. f32 (the engine widens half gradients); tasks are input rows.
void upsample_nearest2x_backward_kernel(const OpContext& c) {
  const Tensor &dy = c.in.at(0), &dx = c.out.at(0);
  if (dx.dim() != 4 || dy.dim() != 4 || dy.shape[0] != dx.shape[0] || dy.shape[1] != 2 * dx.shape[1] ||
      dy.shape[2] != 2 * dx.shape[2] || dy.shape[3] != dx.shape[3])
    throw Error("upsample_nearest2x_backward: dy " + dy.describe() + " must be [N, 2H, 2W, C] for dx " + dx.describe());
  int64_t N = dx.shape[0], H = dx.shape[1], W = dx.shape[2], C = dx.shape[3];
  const float* pd = dy.data<float>();
  float* po = dx.data<float>();
  c.pool->parallel_for(N * H, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {  // r = (n, h)
      const float* top = pd + (size_t)(2 * r) * 2 * W * C;
      const float* bot = top + 2 * W * C;
      float* out = po + (size_t)r * W * C;
      for (int64_t w = 0; w < W; ++w)
        for (int64_t k = 0; k < C; ++k)
          out[w * C + k] = (top[2 * w * C + k] + top[(2 * w + 1) * C + k]) + (bot[2 * w * C + k] + bot[(2 * w + 1) * C + k]);
    }
  });
}

}  // namespace

void register_debug_cpu(OpRegistry& r);  // debug.cpp: test-support ops

void register_shape_cpu(OpRegistry& r) {
  r.add_cpu("copy", copy_kernel, false);
  r.add_cpu("cast", cast_kernel, false);
  r.add_cpu("permute", permute_kernel, false);
  r.add_cpu("slice", slice_kernel, false);
  r.add_cpu("concat", concat_kernel, false);
  r.add_cpu("upsample_nearest2x", upsample_nearest2x_kernel, false);
  r.add_cpu("upsample_nearest2x_backward", upsample_nearest2x_backward_kernel);
  register_debug_cpu(r);
}
}  // namespace hsd
