// Shape ops: copy (strided -> contiguous), cast between dtypes.
#include <cstring>

#include "hypersd/ops.h"

namespace hsd {
namespace {

// General strided gather into a contiguous output of the same shape and dtype.
void copy_kernel(const OpContext& c) {
  const Tensor& x = c.in.at(0);
  const Tensor& y = c.out.at(0);
  if (x.shape != y.shape || x.dtype != y.dtype) throw Error("copy: input and output differ in shape or dtype");
  size_t es = dtype_size(x.dtype);
  int64_t n = y.numel();
  if (x.is_contiguous()) {
    std::memcpy(y.raw(), x.raw(), (size_t)n * es);
    return;
  }
  int64_t nd = x.dim();
  int64_t inner = nd ? x.shape[nd - 1] : 1, inner_stride = nd ? x.strides[nd - 1] : 1;
  int64_t rows = inner ? n / inner : 0;
  const char* src = (const char*)x.storage->ptr;
  char* dst = (char*)y.raw();
  c.pool->parallel_for(rows, 64, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t rem = r, off = x.offset;
      for (int64_t d = nd - 2; d >= 0; --d) {
        off += (rem % x.shape[d]) * x.strides[d];
        rem /= x.shape[d];
      }
      char* out = dst + (size_t)(r * inner) * es;
      for (int64_t i = 0; i < inner; ++i)
        std::memcpy(out + i * es, src + (size_t)(off + i * inner_stride) * es, es);
    }
  });
}

void cast_kernel(const OpContext& c) {
  const Tensor& x = c.in.at(0);
  const Tensor& y = c.out.at(0);
  if (x.numel() != y.numel()) throw Error("cast: input and output differ in size");
  int64_t n = x.numel();
  DType s = x.dtype, d = y.dtype;
  c.pool->parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (d == DType::I64 && s == DType::I64) { y.data<int64_t>()[i] = x.data<int64_t>()[i]; continue; }
      double v;
      switch (s) {
        case DType::F32: v = x.data<float>()[i]; break;
        case DType::F16: v = half_to_float(x.data<uint16_t>()[i]); break;
        case DType::BF16: v = bf16_to_float(x.data<uint16_t>()[i]); break;
        case DType::I32: v = x.data<int32_t>()[i]; break;
        default: v = (double)x.data<int64_t>()[i]; break;
      }
      switch (d) {
        case DType::F32: y.data<float>()[i] = (float)v; break;
        case DType::F16: y.data<uint16_t>()[i] = float_to_half((float)v); break;
        case DType::BF16: y.data<uint16_t>()[i] = float_to_bf16((float)v); break;
        case DType::I32: y.data<int32_t>()[i] = (int32_t)v; break;
        default: y.data<int64_t>()[i] = (int64_t)v; break;
      }
    }
  });
}

}  // namespace

void register_shape_cpu(OpRegistry& r) {
  r.add_cpu("copy", copy_kernel, false);
  r.add_cpu("cast", cast_kernel, false);
}
}  // namespace hsd
