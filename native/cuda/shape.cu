// upsample_nearest2x (and its backward), concat, slice, permute, copy, cast on CUDA (OPS.md), and the
// conversions other families use for their inputs (as_dtype in common.cuh).
//
// One engine moves data: a strided copy over an iteration shape with element strides for the source and
// the destination and a dtype conversion (float <-> float by f32, int -> float, i32 <-> i64 exactly).
// The host merges dims that stay contiguous for both sides first, so copy/cast of contiguous data is flat
// (cudaMemcpyAsync when the dtype is unchanged) and slice/concat/permute decode only the dims that
// really jump. slice, permute and copy are a source view; concat is one copy per input into a
// destination view of y. A same-dtype copy whose innermost dim is contiguous on both sides moves 16-byte
// units when the row lengths, strides and pointers allow (concat / slice along channels; concat of two
// [2, 64, 64, 640] f16 ran at 14% of the copy bandwidth on an H200 element by element, 53% in 16-byte units).
// Strided copies of fewer than 2^32 items (every dim < 2^31) decode their indices with 32-bit FastDiv divisions
// (common.cuh) and keep four items a thread in flight (copy_fast_kernel); upsample_nearest2x likewise.
// upsample_nearest2x has its own kernel: each thread reads one 16-byte vector of an input pixel (8
// channels; one element when C % 8 != 0) and writes it to the four output pixels.
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills: copy_kernel 12-32 (flat) / 40-44 (strided), copy_fast_kernel
// 32-44, upsample2x 32-40, upsample2x_backward 32-38 registers.
#include <type_traits>

#include "common.cuh"

namespace hsd {
namespace cu {
namespace {

constexpr int MAXR = 8;
struct Strided {
  int rank;
  int64_t shape[MAXR], ss[MAXR], ds[MAXR];
  FastDiv div[MAXR];  // shape[d] as a FastDiv, for copy_fast_kernel
};

template <class T> struct IsInt : std::integral_constant<bool, std::is_same<T, int32_t>::value || std::is_same<T, int64_t>::value> {};

template <class TD, class TS>
__device__ __forceinline__ TD convert(TS v) {
  if constexpr (std::is_same<TD, TS>::value) return v;
  else if constexpr (IsInt<TD>::value) return (TD)v;  // int -> int (float -> int is refused on the host)
  else if constexpr (IsInt<TS>::value) return from_f<TD>((float)v);
  else return from_f<TD>(to_f(v));
}

template <class TS, class TD, bool FLAT>
__global__ void __launch_bounds__(256) copy_kernel(const TS* __restrict__ src, TD* __restrict__ dst, int64_t n, Strided st) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    if constexpr (FLAT) {
      dst[i] = convert<TD>(src[i]);
    } else {
      int64_t rem = i, os = 0, od = 0;
      for (int d = st.rank - 1; d >= 0; --d) {
        const int64_t q = rem / st.shape[d], c = rem - q * st.shape[d];
        rem = q;
        os += c * st.ss[d];
        od += c * st.ds[d];
      }
      dst[od] = convert<TD>(src[os]);
    }
  }
}

// The strided copy of copy_kernel for n < 2^32 and every dim < 2^31 (what the networks move): the index decoded
// with 32-bit FastDiv divisions instead of 64-bit ones (a 64-bit division is a subroutine of dozens of
// instructions, one per dim and element), and U items a thread in flight (loads first). The innermost dim needs
// no division: what is left of the index is its coordinate.
template <class TS, class TD, int U>
__global__ void __launch_bounds__(256) copy_fast_kernel(const TS* __restrict__ src, TD* __restrict__ dst, uint32_t n,
                                                        Strided st) {
  const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
  for (uint64_t i0 = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i0 < n; i0 += U * stride) {
    TS v[U];
    int64_t od[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint64_t i = i0 + u * stride;
      if (i >= n) break;
      uint32_t rem = (uint32_t)i;
      int64_t os = 0, o = 0;
      for (int d = st.rank - 1; d > 0; --d) {
        const uint32_t q = fastdiv(rem, st.div[d]), c = rem - q * st.div[d].d;
        rem = q;
        os += (int64_t)c * st.ss[d];
        o += (int64_t)c * st.ds[d];
      }
      os += (int64_t)rem * st.ss[0];
      od[u] = o + (int64_t)rem * st.ds[0];
      v[u] = src[os];
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (i0 + u * stride >= n) break;
      dst[od[u]] = convert<TD>(v[u]);
    }
  }
}

// Fills st.div and says whether copy_fast_kernel takes n items of st.
bool fast_strided(Strided& st, int64_t n) {
  if (n <= 0 || n > (int64_t)UINT32_MAX) return false;
  for (int d = 0; d < st.rank; ++d) {
    if (st.shape[d] < 1 || st.shape[d] >= (int64_t)1 << 31) return false;
    st.div[d] = fastdiv_make((uint32_t)st.shape[d]);
  }
  return true;
}

// Calls f(T{}) for any dtype (ints included).
template <class F>
void dispatch_all(DType d, F&& f) {
  switch (d) {
    case DType::F32: f(float{}); return;
    case DType::F16: f(__half{}); return;
    case DType::BF16: f(bf16{}); return;
    case DType::I32: f(int32_t{}); return;
    case DType::I64: f(int64_t{}); return;
  }
}

// Same-size raw type for a bit-exact move.
template <size_t N> struct Bits;
template <> struct Bits<2> { using type = uint16_t; };
template <> struct Bits<4> { using type = uint32_t; };
template <> struct Bits<8> { using type = uint64_t; };

// dst[ds . idx] = convert(src[ss . idx]) for every idx in shape; pointers at element 0 of each view.
void copy_general(const char* op, const std::vector<int64_t>& shape, const void* src, DType sdt,
                  const std::vector<int64_t>& ss, void* dst, DType ddt, const std::vector<int64_t>& ds, cudaStream_t s) {
  if (is_float(ddt) == false && is_float(sdt))
    fail(op, std::string("cannot convert ") + dtype_name(sdt) + " to " + dtype_name(ddt));
  int64_t n = 1;
  for (int64_t v : shape) n *= v;
  if (n == 0) return;
  std::vector<int64_t> shp, vs, vd;  // merged, innermost first
  for (size_t k = shape.size(); k-- > 0;) {
    if (shape[k] == 1) continue;
    if (!shp.empty() && ss[k] == vs.back() * shp.back() && ds[k] == vd.back() * shp.back()) {
      shp.back() *= shape[k];
      continue;
    }
    shp.push_back(shape[k]);
    vs.push_back(ss[k]);
    vd.push_back(ds[k]);
  }
  const bool flat = shp.empty() || (shp.size() == 1 && vs[0] == 1 && vd[0] == 1);
  if (flat && sdt == ddt) {
    const cudaError_t e = cudaMemcpyAsync(dst, src, (size_t)n * dtype_size(sdt), cudaMemcpyDeviceToDevice, s);
    if (e != cudaSuccess) fail(op, std::string("cudaMemcpyAsync: ") + cudaGetErrorString(e));
    return;
  }
  if (shp.size() > (size_t)MAXR) fail(op, "copy too complex (more than 8 strided dims after merging)");
  Strided st{};
  st.rank = (int)shp.size();
  for (int d = 0; d < st.rank; ++d) {
    st.shape[d] = shp[st.rank - 1 - d];
    st.ss[d] = vs[st.rank - 1 - d];
    st.ds[d] = vd[st.rank - 1 - d];
  }
  if (sdt == ddt && vs[0] == 1 && vd[0] == 1 && dtype_size(sdt) < 16) {  // (not flat: that returned above)
    // Rows that stay contiguous on both sides (concat and slice along the last dim): moved in 16-byte units
    // when every row length, stride and both pointers allow, which divides the index decoding by 16 / size.
    const int64_t w = 16 / (int64_t)dtype_size(sdt);
    bool ok = shp[0] % w == 0 && aligned16(src) && aligned16(dst);
    for (size_t k = 1; k < shp.size(); ++k) ok = ok && vs[k] % w == 0 && vd[k] % w == 0;
    if (ok) {  // st in units of w elements (its innermost dim, rank - 1, has stride 1 on both sides)
      Strided sv = st;
      sv.shape[sv.rank - 1] /= w;
      for (int d = 0; d + 1 < sv.rank; ++d) {
        sv.ss[d] /= w;
        sv.ds[d] /= w;
      }
      if (fast_strided(sv, n / w))
        copy_fast_kernel<uint4, uint4, 4><<<grid_for((n / w + 3) / 4, 256), 256, 0, s>>>((const uint4*)src, (uint4*)dst,
                                                                                          (uint32_t)(n / w), sv);
      else
        copy_kernel<uint4, uint4, false><<<grid_for(n / w, 256), 256, 0, s>>>((const uint4*)src, (uint4*)dst, n / w, sv);
      return;
    }
  }
  const unsigned grid = grid_for(n, 256);
  const bool fast = !flat && fast_strided(st, n);
  if (sdt == ddt) {
    const size_t es = dtype_size(sdt);
    auto run = [&](auto tag) {
      using B = decltype(tag);
      if (flat) copy_kernel<B, B, true><<<grid, 256, 0, s>>>((const B*)src, (B*)dst, n, st);
      else if (fast) copy_fast_kernel<B, B, 4><<<grid_for((n + 3) / 4, 256), 256, 0, s>>>((const B*)src, (B*)dst, (uint32_t)n, st);
      else copy_kernel<B, B, false><<<grid, 256, 0, s>>>((const B*)src, (B*)dst, n, st);
    };
    if (es == 2) run(Bits<2>::type{});
    else if (es == 4) run(Bits<4>::type{});
    else run(Bits<8>::type{});
    return;
  }
  dispatch_all(sdt, [&](auto stag) {
    using TS = decltype(stag);
    dispatch_all(ddt, [&](auto dtag) {
      using TD = decltype(dtag);
      if constexpr (!std::is_same<TS, TD>::value && !(IsInt<TD>::value && !IsInt<TS>::value)) {
        if (flat) copy_kernel<TS, TD, true><<<grid, 256, 0, s>>>((const TS*)src, (TD*)dst, n, st);
        else if (fast) copy_fast_kernel<TS, TD, 4><<<grid_for((n + 3) / 4, 256), 256, 0, s>>>((const TS*)src, (TD*)dst, (uint32_t)n, st);
        else copy_kernel<TS, TD, false><<<grid, 256, 0, s>>>((const TS*)src, (TD*)dst, n, st);
      }
    });
  });
}

// src (any strides) -> dst (contiguous, same numel), iterating over src's shape.
void copy_into(const char* op, const Tensor& src, const Tensor& dst, cudaStream_t s) {
  if (src.numel() != dst.numel()) fail(op, "sizes differ: " + src.describe() + " -> " + dst.describe());
  copy_general(op, src.shape, src.raw(), src.dtype, src.strides, dst.raw(), dst.dtype, contiguous_strides(src.shape), s);
}

// ---------------------------------------------------------------- ops

void copy(const OpContext& ctx) {
  need_inputs("copy", ctx, 1, 1);
  need_contiguous_out("copy", ctx.out[0]);
  need_shape("copy", "y", ctx.out[0], ctx.in[0].shape);
  copy_into("copy", ctx.in[0], ctx.out[0], stream_of(ctx));
}

void cast(const OpContext& ctx) {
  need_inputs("cast", ctx, 1, 1);
  need_contiguous_out("cast", ctx.out[0]);
  need_shape("cast", "y", ctx.out[0], ctx.in[0].shape);
  copy_into("cast", ctx.in[0], ctx.out[0], stream_of(ctx));
}

int64_t norm_axis(const char* op, int64_t axis, int64_t rank) {
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) fail(op, "axis out of range for rank " + std::to_string(rank));
  return axis;
}

void permute(const OpContext& ctx) {
  const char* op = "permute";
  need_inputs(op, ctx, 1, 1);
  const Tensor& x = ctx.in[0];
  const Tensor& y = ctx.out[0];
  need_contiguous_out(op, y);
  const std::vector<int64_t> dims = ctx.attrs.ints("dims");
  const int64_t R = x.dim();
  if ((int64_t)dims.size() != R) fail(op, "dims must list " + std::to_string(R) + " axes for " + x.describe());
  std::vector<int64_t> shape(R), ss(R);
  std::vector<bool> seen(R, false);
  for (int64_t i = 0; i < R; ++i) {
    const int64_t d = norm_axis(op, dims[i], R);
    if (seen[d]) fail(op, "dims repeats axis " + std::to_string(d));
    seen[d] = true;
    shape[i] = x.shape[d];
    ss[i] = x.strides[d];
  }
  need_shape(op, "y", y, shape);
  copy_general(op, shape, x.raw(), x.dtype, ss, y.raw(), y.dtype, contiguous_strides(shape), stream_of(ctx));
}

void slice(const OpContext& ctx) {
  const char* op = "slice";
  need_inputs(op, ctx, 1, 1);
  const Tensor& x = ctx.in[0];
  const Tensor& y = ctx.out[0];
  need_contiguous_out(op, y);
  const int64_t axis = norm_axis(op, ctx.attrs.i("axis"), x.dim());
  const int64_t start = ctx.attrs.i("start", 0), step = ctx.attrs.i("step", 1);
  if (y.dim() != x.dim()) fail(op, "y " + y.describe() + " must have x's rank, x " + x.describe());
  for (int64_t i = 0; i < x.dim(); ++i)
    if (i != axis && y.shape[i] != x.shape[i]) fail(op, "y " + y.describe() + " differs from x " + x.describe() + " off the axis");
  const int64_t len = y.shape[axis];
  if (step < 1 || start < 0 || (len > 0 && start + step * (len - 1) >= x.shape[axis]))
    fail(op, "start=" + std::to_string(start) + " step=" + std::to_string(step) + " len=" + std::to_string(len) +
                 " runs outside axis " + std::to_string(axis) + " of " + x.describe());
  std::vector<int64_t> ss = x.strides;
  ss[axis] *= step;
  const void* base = (const char*)x.raw() + start * x.strides[axis] * (int64_t)dtype_size(x.dtype);
  copy_general(op, y.shape, base, x.dtype, ss, y.raw(), y.dtype, contiguous_strides(y.shape), stream_of(ctx));
}

void concat(const OpContext& ctx) {
  const char* op = "concat";
  need_inputs(op, ctx, 1, 1);
  const Tensor& y = ctx.out[0];
  need_contiguous_out(op, y);
  const int64_t axis = norm_axis(op, ctx.attrs.i("axis", 0), y.dim());
  const std::vector<int64_t> ys = contiguous_strides(y.shape);
  int64_t off = 0;
  for (const Tensor& x : ctx.in) {
    if (x.dim() != y.dim()) fail(op, "input " + x.describe() + " and output " + y.describe() + " differ in rank");
    for (int64_t i = 0; i < y.dim(); ++i)
      if (i != axis && x.shape[i] != y.shape[i]) fail(op, "input " + x.describe() + " does not fit output " + y.describe());
    off += x.shape[axis];
  }
  if (off != y.shape[axis]) fail(op, "inputs add up to " + std::to_string(off) + " along axis " + std::to_string(axis) + ", output " + y.describe());
  off = 0;
  for (const Tensor& x : ctx.in) {
    void* d = (char*)y.raw() + off * ys[axis] * (int64_t)dtype_size(y.dtype);
    copy_general(op, x.shape, x.raw(), x.dtype, x.strides, d, y.dtype, ys, stream_of(ctx));
    off += x.shape[axis];
  }
}

// ---------------------------------------------------------------- upsample

template <class T, bool VEC, bool FAST>
__global__ void __launch_bounds__(256) upsample2x_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t pixels,
                                                         int H, int W, int C, FastDiv fcv, FastDiv fw, FastDiv fh) {
  constexpr int V = VEC ? 8 : 1;
  const int cv = C / V;
  const int64_t n_items = pixels * cv;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_items; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t p, nh, n;
    int c, w, h;
    if constexpr (FAST) {  // n_items < 2^32: 32-bit FastDiv divisions (fcv, fw, fh: cv, W, H)
      const uint32_t pu = fastdiv((uint32_t)i, fcv), nhu = fastdiv(pu, fw), nu = fastdiv(nhu, fh);
      c = (int)((uint32_t)i - pu * (uint32_t)cv) * V;
      w = (int)(pu - nhu * (uint32_t)W);
      h = (int)(nhu - nu * (uint32_t)H);
      p = pu;
      n = nu;
    } else {
      p = i / cv;
      c = (int)(i - p * cv) * V;
      nh = p / W;
      w = (int)(p - nh * W);
      n = nh / H;
      h = (int)(nh - n * H);
    }
    const int64_t o = ((n * 2 * H + 2 * h) * 2 * W + 2 * w) * C + c, row = 2LL * W * C;
    if constexpr (VEC) {
      const uint4 v = *reinterpret_cast<const uint4*>(x + p * C + c);
      *reinterpret_cast<uint4*>(y + o) = v;
      *reinterpret_cast<uint4*>(y + o + C) = v;
      *reinterpret_cast<uint4*>(y + o + row) = v;
      *reinterpret_cast<uint4*>(y + o + row + C) = v;
    } else {
      const T v = x[p * C + c];
      y[o] = v;
      y[o + C] = v;
      y[o + row] = v;
      y[o + row + C] = v;
    }
  }
}

void upsample_nearest2x(const OpContext& ctx) {
  const char* op = "upsample_nearest2x";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 1, 1);
  const Tensor& x0 = ctx.in[0];
  const Tensor& y = ctx.out[0];
  need_contiguous_out(op, y);
  if (x0.dim() != 4) fail(op, "x must be [N, H, W, C], got " + x0.describe());
  need_shape(op, "y", y, {x0.size(0), 2 * x0.size(1), 2 * x0.size(2), x0.size(3)});
  if (y.numel() == 0) return;
  // (C * es / 2, the 16-bit units of a pixel, is an int below)
  if (x0.size(1) > (1 << 30) || x0.size(2) > (1 << 30) || x0.size(3) > (1 << 28)) fail(op, "x too large: " + x0.describe());
  const Tensor x = as_dtype(x0, y.dtype, s);
  const int H = (int)x.size(1), W = (int)x.size(2), C = (int)x.size(3);
  const int64_t pixels = x.size(0) * H * W;
  const size_t es = dtype_size(y.dtype);
  const bool vec = (C * es) % 16 == 0 && aligned16(x.raw()) && aligned16(y.raw());
  if (vec) {  // moved as 16-bit units, 8 per 16-byte vector
    const int cu16 = (int)(C * es / 2);
    const int64_t items = pixels * cu16 / 8;
    const FastDiv fcv = fastdiv_make((uint32_t)(cu16 / 8)), fw = fastdiv_make((uint32_t)W), fh = fastdiv_make((uint32_t)H);
    if (items <= (int64_t)UINT32_MAX)
      upsample2x_kernel<uint16_t, true, true><<<grid_for(items, 256), 256, 0, s>>>(
          (const uint16_t*)x.raw(), (uint16_t*)y.raw(), pixels, H, W, cu16, fcv, fw, fh);
    else
      upsample2x_kernel<uint16_t, true, false><<<grid_for(items, 256), 256, 0, s>>>(
          (const uint16_t*)x.raw(), (uint16_t*)y.raw(), pixels, H, W, cu16, fcv, fw, fh);
    return;
  }
  auto run = [&](auto tag) {
    using B = decltype(tag);
    const FastDiv fcv = fastdiv_make((uint32_t)C), fw = fastdiv_make((uint32_t)W), fh = fastdiv_make((uint32_t)H);
    if (pixels * C <= (int64_t)UINT32_MAX)
      upsample2x_kernel<B, false, true><<<grid_for(pixels * C, 256), 256, 0, s>>>((const B*)x.raw(), (B*)y.raw(), pixels, H,
                                                                                   W, C, fcv, fw, fh);
    else
      upsample2x_kernel<B, false, false><<<grid_for(pixels * C, 256), 256, 0, s>>>((const B*)x.raw(), (B*)y.raw(), pixels, H,
                                                                                    W, C, fcv, fw, fh);
  };
  if (es == 2) run(uint16_t{});
  else if (es == 4) run(uint32_t{});
  else run(uint64_t{});
}

// dy [N, 2H, 2W, C] -> dx [N, H, W, C]: each input pixel sums the 2x2 output pixels it was copied to, in the
// CPU kernel's order ((top-left + top-right) + (bottom-left + bottom-right)).
template <class T>
__global__ void __launch_bounds__(256) upsample2x_backward_kernel(const T* __restrict__ dy, T* __restrict__ dx,
                                                                  int64_t total, int H, int W, int C) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = i / C;
    const int c = (int)(i - p * C);
    const int64_t nh = p / W;
    const int w = (int)(p - nh * W);
    const int64_t n = nh / H;
    const int h = (int)(nh - n * H);
    const int64_t o = ((n * 2 * H + 2 * h) * 2 * W + 2 * w) * C + c, row = 2LL * W * C;
    dx[i] = from_f<T>((to_f(dy[o]) + to_f(dy[o + C])) + (to_f(dy[o + row]) + to_f(dy[o + row + C])));
  }
}

void upsample_nearest2x_backward(const OpContext& ctx) {
  const char* op = "upsample_nearest2x_backward";
  cudaStream_t s = stream_of(ctx);
  need_inputs(op, ctx, 1, 1);
  const Tensor& dx = ctx.out[0];
  need_float(op, "dy", ctx.in[0]);
  need_float(op, "dx", dx);
  need_contiguous_out(op, dx);
  if (dx.dim() != 4) fail(op, "dx must be [N, H, W, C], got " + dx.describe());
  need_shape(op, "dy", ctx.in[0], {dx.size(0), 2 * dx.size(1), 2 * dx.size(2), dx.size(3)});
  if (dx.numel() == 0) return;
  if (dx.size(1) > (1 << 30) || dx.size(2) > (1 << 30) || dx.size(3) > (1 << 30)) fail(op, "too large: " + dx.describe());
  const Tensor dy = as_dtype(ctx.in[0], dx.dtype, s);
  dispatch_float(op, dx.dtype, [&](auto tag) {
    using T = decltype(tag);
    upsample2x_backward_kernel<T><<<grid_for(dx.numel(), 256), 256, 0, s>>>(dy.data<T>(), dx.data<T>(), dx.numel(),
                                                                            (int)dx.size(1), (int)dx.size(2), (int)dx.size(3));
  });
}

}  // namespace

Tensor as_dtype(const Tensor& t, DType dtype, cudaStream_t s) {
  if (t.dtype == dtype && t.is_contiguous()) return t;
  Tensor out = empty(t.shape, dtype, Device::CUDA);
  copy_into("convert", t, out, s);
  return out;
}

OutAs::OutAs(const Tensor& out, DType compute, bool reads_old, cudaStream_t s) : real(out), buf(out) {
  if (out.dtype != compute || !out.is_contiguous() || (out.storage && (reinterpret_cast<uintptr_t>(out.raw()) & 15) != 0)) {
    buf = empty(out.shape, compute, Device::CUDA);
    if (reads_old) copy_into("convert", out, buf, s);
  }
}

void OutAs::finish(cudaStream_t s) const {
  if (buf.storage && buf.storage != real.storage) copy_general("convert", buf.shape, buf.raw(), buf.dtype, buf.strides, real.raw(), real.dtype, real.strides, s);
}

}  // namespace cu

void register_shape_cuda(OpRegistry& r) {
  r.add_cuda("upsample_nearest2x", cu::upsample_nearest2x);
  r.add_cuda("upsample_nearest2x_backward", cu::upsample_nearest2x_backward);
  r.add_cuda("concat", cu::concat);
  r.add_cuda("slice", cu::slice);
  r.add_cuda("permute", cu::permute);
  r.add_cuda("copy", cu::copy);
  r.add_cuda("cast", cu::cast);
}

}  // namespace hsd
