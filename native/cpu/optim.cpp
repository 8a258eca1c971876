// Optimizer ops: the fused AdamW step and sq_norm (the sum of squares behind global-norm gradient clipping).
//
// adamw: inputs param (f32 master weights), grad (f32/f16/bf16), m, v (f32 moments); outputs param, m, v
// (normally the same tensors as the inputs: the update is in place) and optionally a fourth output, the
// model's copy of the weight (f32/f16/bf16, same element count), written from the updated master in the same
// pass so a bf16/f16 model never needs a separate cast op. Per element, PyTorch's AdamW (decoupled decay):
//   g = grad * grad_scale;  p *= 1 - lr * weight_decay
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   p -= (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// The scalar factors are formed once in double; the element loop is f32, one pass over four arrays, so the
// step is memory-bound (about 20 bytes per f32 parameter). grad_scale folds the clipping coefficient and the
// inverse loss scale into the same pass.
// sq_norm: x (any float dtype) -> y f32 [1] = sum x^2 (accumulate=1 adds to y, so one output can gather the
// squared norms of every gradient). Partial sums in double over fixed 16K-element chunks, combined in chunk
// order: the result does not depend on the thread count, so resumed training reproduces bit for bit.
// Both ops are registered with f32_only = false (they read f16/bf16 themselves; the engine would otherwise
// widen the in-place outputs into temporaries).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "hypersd/ops.h"

namespace hsd {
namespace {

inline float load(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::F16: return half_to_float(t.data<uint16_t>()[i]);
    case DType::BF16: return bf16_to_float(t.data<uint16_t>()[i]);
    default: return t.data<float>()[i];
  }
}

bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

void check(bool ok, const std::string& msg) {
  if (!ok) throw Error(msg);
}

void adamw_kernel(const OpContext& c) {
  check(c.in.size() == 4 && (c.out.size() == 3 || c.out.size() == 4),
        "adamw: needs inputs (param, grad, m, v) and outputs (param, m, v[, model weight])");
  const Tensor &p = c.in[0], &g = c.in[1], &m = c.in[2], &v = c.in[3];
  const Tensor &po = c.out[0], &mo = c.out[1], &vo = c.out[2];
  int64_t n = p.numel();
  for (const Tensor* t : {&p, &m, &v, &po, &mo, &vo})
    check(t->dtype == DType::F32 && t->numel() == n && t->is_contiguous(),
          "adamw: param, m, v and their outputs must be contiguous f32 with " + std::to_string(n) +
              " elements, got " + t->describe());
  check(is_float(g.dtype) && g.numel() == n && g.is_contiguous(),
        "adamw: grad " + g.describe() + " must be a contiguous float tensor with " + std::to_string(n) + " elements");
  const Tensor* w = c.out.size() == 4 ? &c.out[3] : nullptr;
  if (w)
    check(is_float(w->dtype) && w->numel() == n && w->is_contiguous(),
          "adamw: model weight " + w->describe() + " must be a contiguous float tensor with " + std::to_string(n) +
              " elements");
  double lr = c.attrs.f("lr"), b1 = c.attrs.f("beta1"), b2 = c.attrs.f("beta2"), eps = c.attrs.f("eps");
  double wd = c.attrs.f("weight_decay", 0.0), gs = c.attrs.f("grad_scale", 1.0);
  int64_t step = c.attrs.i("step");
  check(step >= 1, "adamw: step must be >= 1 (bias correction), got " + std::to_string(step));
  double bc1 = 1.0 - std::pow(b1, (double)step), bc2 = 1.0 - std::pow(b2, (double)step);
  const float decay = (float)(1.0 - lr * wd), step_size = (float)(lr / bc1), inv_bc2 = (float)(1.0 / std::sqrt(bc2));
  const float fb1 = (float)b1, fb2 = (float)b2, c1 = (float)(1.0 - b1), c2 = (float)(1.0 - b2);
  const float feps = (float)eps, fgs = (float)gs;
  const float *pp = p.data<float>(), *pm = m.data<float>(), *pv = v.data<float>();
  float *qp = po.data<float>(), *qm = mo.data<float>(), *qv = vo.data<float>();
  const float* gf = g.dtype == DType::F32 ? g.data<float>() : nullptr;
  c.pool->parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float gi = (gf ? gf[i] : load(g, i)) * fgs;
      float mi = fb1 * pm[i] + c1 * gi;
      float vi = fb2 * pv[i] + c2 * (gi * gi);
      float denom = std::sqrt(vi) * inv_bc2 + feps;
      float pi = pp[i] * decay - step_size * (mi / denom);
      qm[i] = mi;
      qv[i] = vi;
      qp[i] = pi;
    }
    if (!w) return;
    switch (w->dtype) {
      case DType::F16:
        for (int64_t i = b; i < e; ++i) w->data<uint16_t>()[i] = float_to_half(qp[i]);
        break;
      case DType::BF16:
        for (int64_t i = b; i < e; ++i) w->data<uint16_t>()[i] = float_to_bf16(qp[i]);
        break;
      default:
        for (int64_t i = b; i < e; ++i) w->data<float>()[i] = qp[i];
    }
  });
}

constexpr int64_t kChunk = 1 << 14;

void sq_norm_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  check(is_float(x.dtype) && x.is_contiguous(), "sq_norm: x must be a contiguous float tensor, got " + x.describe());
  check(y.dtype == DType::F32 && y.numel() == 1, "sq_norm: y must be f32 with one element, got " + y.describe());
  int64_t n = x.numel(), chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part((size_t)chunks, 0.0);
  c.pool->parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      int64_t i0 = k * kChunk, i1 = std::min(n, i0 + kChunk);
      double s = 0;
      if (x.dtype == DType::F32) {
        const float* px = x.data<float>();
        for (int64_t i = i0; i < i1; ++i) s += (double)px[i] * px[i];
      } else {
        for (int64_t i = i0; i < i1; ++i) {
          double v = load(x, i);
          s += v * v;
        }
      }
      part[(size_t)k] = s;
    }
  });
  double s = c.attrs.i("accumulate", 0) ? (double)y.data<float>()[0] : 0.0;
  for (double p : part) s += p;
  y.data<float>()[0] = (float)s;
}

}  // namespace

void register_optim_cpu(OpRegistry& r) {
  r.add_cpu("adamw", adamw_kernel, false);
  r.add_cpu("sq_norm", sq_norm_kernel, false);
}
}  // namespace hsd
