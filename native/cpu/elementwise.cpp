// Elementwise ops: fill, add/sub/mul/div with numpy broadcasting, affine, clamp, scheduler_step.
//
// Layout: all tensors contiguous row-major f32 (the engine widens f16/bf16 around these kernels).
// Broadcasting: a and b are right-aligned against y's shape; a size-1 (or missing) dim gets stride 0. The
// dims are then coalesced (adjacent dims whose strides chain in a, b and y merge into one), so equal shapes
// become one flat loop and "b is a trailing-dims vector" becomes [rows, n] with b's strides (0, 1); the
// innermost loop is specialised on the (a, b) inner strides being 0 or 1 so the compiler vectorises it.
// scheduler_step is computed without fma contraction ((a*x + b*eps) + c*noise, each product rounded) so it
// matches a JS float32 reference bit for bit.
// clamp_backward is the one backward kernel here: the other elementwise gradients are elementwise ops
// themselves (lib/ops/elementwise.grad.ts).
#include <algorithm>
#include <cmath>
#include <string>

#include "hypersd/ops.h"
#include "gemm_kernels.h"

namespace hsd {
namespace pw_avx2 {  // pointwise_avx2.cpp: the same loops with AVX2, same bits
void binary(int op, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n);
void affine(const float* x, float a, float b, float* y, int64_t n);
void clamp(const float* x, float lo, float hi, float* y, int64_t n);
}  // namespace pw_avx2
namespace {

constexpr int64_t kGrain = 1 << 14;

void fill_kernel(const OpContext& c) {
  const Tensor& y = c.out.at(0);
  float v = (float)c.attrs.f("value");
  float* p = y.data<float>();
  c.pool->parallel_for(y.numel(), 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = v;
  });
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

// Strides of `t` broadcast to `shape` (right-aligned); throws when t does not broadcast.
Dims broadcast_strides(const char* op, const char* name, const Tensor& t, const Dims& shape) {
  int64_t nd = (int64_t)shape.size(), td = t.dim();
  if (td > nd)
    throw Error(std::string(op) + ": " + name + " " + shape_str(t.shape) + " has more dims than the output " +
                shape_str(shape));
  Dims st((size_t)nd, 0);
  int64_t s = 1;
  for (int64_t i = td - 1; i >= 0; --i) {
    int64_t d = i + nd - td;
    if (t.shape[i] == shape[d]) st[d] = shape[d] == 1 ? 0 : s;
    else if (t.shape[i] != 1)
      throw Error(std::string(op) + ": " + name + " " + shape_str(t.shape) + " does not broadcast to " +
                  shape_str(shape));
    s *= t.shape[i];
  }
  return st;
}

// The loop nest of a broadcast binary op after merging dims whose strides chain.
struct Nest {
  Dims size, sa, sb;  // outer dims first; the last entry is the inner loop
};

Nest coalesce(const Dims& shape, const Dims& sa, const Dims& sb) {
  Nest n;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!n.size.empty()) {
      int64_t k = (int64_t)n.size.size() - 1;
      // Merging the previous dim into this one is valid when it steps exactly size[d] of this dim's strides.
      if (n.sa[k] == sa[d] * shape[d] && n.sb[k] == sb[d] * shape[d]) {
        n.size[k] *= shape[d];
        n.sa[k] = sa[d];
        n.sb[k] = sb[d];
        continue;
      }
    }
    n.size.push_back(shape[d]);
    n.sa.push_back(sa[d]);
    n.sb.push_back(sb[d]);
  }
  if (n.size.empty()) {
    n.size = {1};
    n.sa = {0};
    n.sb = {0};
  }
  return n;
}

// The binary ops by number (pw_avx2::binary's numbering): 0 add, 1 sub, 2 mul, 3 div.
template <int OP>
inline float bin(float x, float y) {
  return OP == 0 ? x + y : OP == 1 ? x - y : OP == 2 ? x * y : x / y;
}
constexpr const char* kBinName[4] = {"add", "sub", "mul", "div"};

// Inner loop over n elements with a/b strides each 0 or 1; specialised so each case vectorises (the AVX2 build
// runs pw_avx2::binary for the unit and zero strides).
template <int OP>
inline void inner(const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n, bool avx2) {
  if (avx2 && (sa == 0 || sa == 1) && (sb == 0 || sb == 1)) return pw_avx2::binary(OP, a, sa, b, sb, y, n);
  if (sa == 1 && sb == 1)
    for (int64_t i = 0; i < n; ++i) y[i] = bin<OP>(a[i], b[i]);
  else if (sa == 1 && sb == 0) {
    float bv = b[0];
    for (int64_t i = 0; i < n; ++i) y[i] = bin<OP>(a[i], bv);
  } else if (sa == 0 && sb == 1) {
    float av = a[0];
    for (int64_t i = 0; i < n; ++i) y[i] = bin<OP>(av, b[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = bin<OP>(a[i * sa], b[i * sb]);
  }
}

template <int OP>
void binary(const OpContext& c) {
  const char* op = kBinName[OP];
  const Tensor &a = c.in.at(0), &b = c.in.at(1), &y = c.out.at(0);
  const Dims& shape = y.shape;
  auto sa = broadcast_strides(op, "a", a, shape), sb = broadcast_strides(op, "b", b, shape);
  const float *pa = a.data<float>(), *pb = b.data<float>();
  float* py = y.data<float>();
  int64_t total = y.numel();
  if (total == 0) return;
  const bool avx2 = gemm::using_avx2();
  // Fast path: equal shapes, one flat loop.
  if (a.numel() == total && b.numel() == total) {
    c.pool->parallel_for(total, kGrain, [&](int64_t s, int64_t e) { inner<OP>(pa + s, 1, pb + s, 1, py + s, e - s, avx2); });
    return;
  }
  Nest n = coalesce(shape, sa, sb);
  int64_t nd = (int64_t)n.size.size(), len = n.size[nd - 1];
  int64_t rows = total / len, isa = n.sa[nd - 1], isb = n.sb[nd - 1];
  // Fast path: a is y-shaped and b repeats along rows (b a trailing-dims vector): [rows, len] x [len].
  if (nd == 2 && n.sa[0] == len && isa == 1 && n.sb[0] == 0 && isb == 1) {
    c.pool->parallel_for(rows, std::max<int64_t>(1, kGrain / len), [&](int64_t s, int64_t e) {
      for (int64_t r = s; r < e; ++r) inner<OP>(pa + r * len, 1, pb, 1, py + r * len, len, avx2);
    });
    return;
  }
  c.pool->parallel_for(rows, std::max<int64_t>(1, kGrain / len), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      int64_t rem = r, oa = 0, ob = 0;
      for (int64_t d = nd - 2; d >= 0; --d) {
        int64_t i = rem % n.size[d];
        rem /= n.size[d];
        oa += i * n.sa[d];
        ob += i * n.sb[d];
      }
      inner<OP>(pa + oa, isa, pb + ob, isb, py + r * len, len, avx2);
    }
  });
}

void add_kernel(const OpContext& c) { binary<0>(c); }
void sub_kernel(const OpContext& c) { binary<1>(c); }
void mul_kernel(const OpContext& c) { binary<2>(c); }
void div_kernel(const OpContext& c) { binary<3>(c); }

void check_same_size(const char* op, const Tensor& x, const Tensor& y) {
  if (x.numel() != y.numel())
    throw Error(std::string(op) + ": input " + shape_str(x.shape) + " and output " + shape_str(y.shape) +
                " differ in size");
}

void affine_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  check_same_size("affine", x, y);
  float a = (float)c.attrs.f("a"), b = (float)c.attrs.f("b");
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const bool avx2 = gemm::using_avx2();
  c.pool->parallel_for(y.numel(), kGrain, [&](int64_t s, int64_t e) {
    if (avx2) return pw_avx2::affine(px + s, a, b, py + s, e - s);
    for (int64_t i = s; i < e; ++i) py[i] = a * px[i] + b;
  });
}

void clamp_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  check_same_size("clamp", x, y);
  float lo = (float)c.attrs.f("min", -INFINITY), hi = (float)c.attrs.f("max", INFINITY);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const bool avx2 = gemm::using_avx2();
  c.pool->parallel_for(y.numel(), kGrain, [&](int64_t s, int64_t e) {
    if (avx2) return pw_avx2::clamp(px + s, lo, hi, py + s, e - s);
    for (int64_t i = s; i < e; ++i) py[i] = std::min(std::max(px[i], lo), hi);
  });
}

// clamp_backward: x, dy -> dx = dy where min <= x <= max, else 0 (the boundary passes the gradient, as
// torch.clamp does).
void clamp_backward_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &dy = c.in.at(1), &dx = c.out.at(0);
  check_same_size("clamp_backward", x, dy);
  check_same_size("clamp_backward", x, dx);
  float lo = (float)c.attrs.f("min", -INFINITY), hi = (float)c.attrs.f("max", INFINITY);
  const float *px = x.data<float>(), *pd = dy.data<float>();
  float* po = dx.data<float>();
  c.pool->parallel_for(dx.numel(), kGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) po[i] = px[i] >= lo && px[i] <= hi ? pd[i] : 0.0f;
  });
}

}  // namespace

// Sampler updates must round each product and sum separately (no fused multiply-add), like the JS reference.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
namespace {
void scheduler_step_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &eps = c.in.at(1), &y = c.out.at(0);
  bool has_noise = c.in.size() > 2;
  check_same_size("scheduler_step", x, y);
  check_same_size("scheduler_step", eps, y);
  if (has_noise) check_same_size("scheduler_step", c.in[2], y);
  float a = (float)c.attrs.f("a"), b = (float)c.attrs.f("b"), cc = (float)c.attrs.f("c", 0.0);
  const float *px = x.data<float>(), *pe = eps.data<float>(), *pn = has_noise ? c.in[2].data<float>() : nullptr;
  float* py = y.data<float>();
  c.pool->parallel_for(y.numel(), kGrain, [&, a, b, cc](int64_t s, int64_t e) {
    if (pn) {
      for (int64_t i = s; i < e; ++i) {
        float ax = a * px[i], be = b * pe[i], cn = cc * pn[i];
        py[i] = (ax + be) + cn;
      }
    } else {
      for (int64_t i = s; i < e; ++i) {
        float ax = a * px[i], be = b * pe[i];
        py[i] = ax + be;
      }
    }
  });
}
}  // namespace
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

void register_elementwise_cpu(OpRegistry& r) {
  r.add_cpu("fill", fill_kernel);
  r.add_cpu("add", add_kernel);
  r.add_cpu("sub", sub_kernel);
  r.add_cpu("mul", mul_kernel);
  r.add_cpu("div", div_kernel);
  r.add_cpu("affine", affine_kernel);
  r.add_cpu("clamp", clamp_kernel);
  r.add_cpu("clamp_backward", clamp_backward_kernel);
  r.add_cpu("scheduler_step", scheduler_step_kernel);
}
}  // namespace hsd
