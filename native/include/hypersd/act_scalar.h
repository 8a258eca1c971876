// The activations' derivatives, one element at a time (the backward ops recompute f'(x) from x: the pointwise and
// GEGLU backwards, group norm's fused SiLU), shared verbatim by the CPU kernels (activation.cpp, norm.cpp) and the
// CUDA ones (common.cuh brings them into hsd::cu), as philox.h is.
#pragma once
#include <cmath>

#include "hypersd/hd.h"

namespace hsd {
namespace act {

// Each derivative gives its limits 1 (x -> +inf) and 0 (x -> -inf) at the infinities, where s (1 + x (1 - s))
// and friends are inf * 0. GELU's two are exactly 1.0f / 0.0f in float from |x| = 20 on and return them there,
// quick_gelu's from 100 on (1.702 x overflowed past 2e38, then times 0); that also keeps the tanh form's
// 1 + 3 c x^2 from overflowing (NaN from |x| ~ 5e19). The tanh form takes 0.5 (1 + t) = sigmoid(2u) and
// 1 - t^2 = 4 sigmoid(2u) sigmoid(-2u): 1 + t and 1 - t^2 cancel for x << 0 (30% off at x = -5, 0 from -5.9 on).
// NaN stays NaN.
HSD_HD float silu_d(float x) {
  if (fabsf(x) > 3.40282347e38f) return x > 0 ? 1.0f : 0.0f;
  float s = 1.0f / (1.0f + expf(-x));
  return s * (1.0f + x * (1.0f - s));
}
HSD_HD float gelu_d(float x) {  // Phi(x) + x phi(x)
  if (!(fabsf(x) < 20.0f)) return x > 0 ? 1.0f : x < 0 ? 0.0f : x;
  return 0.5f * erfcf(-x * 0.70710678118654752f) + x * 0.39894228040143268f * expf(-0.5f * x * x);
}
HSD_HD float gelu_tanh_d(float x) {  // s + 2 x s (1 - s) u', s = sigmoid(2u), u = k (x + c x^3)
  if (!(fabsf(x) < 20.0f)) return x > 0 ? 1.0f : x < 0 ? 0.0f : x;
  const float k = 0.79788456080286536f, c = 0.044715f;
  const float u2 = 2.0f * k * (x + c * x * x * x);
  const float s = 1.0f / (1.0f + expf(-u2)), sm = 1.0f / (1.0f + expf(u2));
  return s + 2.0f * x * s * sm * k * (1.0f + 3.0f * c * x * x);
}
HSD_HD float quick_gelu_d(float x) {
  if (!(fabsf(x) < 100.0f)) return x > 0 ? 1.0f : x < 0 ? 0.0f : x;  // exact from 100 on (1.702 x overflowed)
  float s = 1.0f / (1.0f + expf(-1.702f * x));
  return s + 1.702f * x * s * (1.0f - s);
}

}  // namespace act
}  // namespace hsd
