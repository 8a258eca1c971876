// The activations' derivatives, one element at a time (the backward ops recompute f'(x) from x: activation.cpp's
// pointwise and GEGLU backwards, group norm's fused SiLU in norm.cpp). CUDA's twins: native/cuda/common.cuh.
#pragma once
#include <cmath>

namespace hsd {
namespace act {

// Each derivative gives its limits 1 (x -> +inf) and 0 (x -> -inf) at the infinities, where s (1 + x (1 - s))
// and friends are inf * 0. GELU's two are exactly 1.0f / 0.0f in float from |x| = 20 on and return them there,
// quick_gelu's from 100 on (1.702 x overflowed past 2e38, then times 0); that also keeps the tanh form's
// 1 + 3 c x^2 from overflowing (NaN from |x| ~ 5e19). The tanh form takes 0.5 (1 + t) = sigmoid(2u) and
// 1 - t^2 = 4 sigmoid(2u) sigmoid(-2u): 1 + t and 1 - t^2 cancel for x << 0 (30% off at x = -5, 0 from -5.9 on).
// NaN stays NaN.
inline float silu_d(float x) {
  if (std::fabs(x) > 3.40282347e38f) return x > 0 ? 1.0f : 0.0f;
  float s = 1.0f / (1.0f + std::exp(-x));
  return s * (1.0f + x * (1.0f - s));
}
inline float gelu_d(float x) {  // Phi(x) + x phi(x)
  if (!(std::fabs(x) < 20.0f)) return x > 0 ? 1.0f : x < 0 ? 0.0f : x;
  return 0.5f * std::erfc(-x * 0.70710678118654752f) + x * 0.39894228040143268f * std::exp(-0.5f * x * x);
}
inline float gelu_tanh_d(float x) {  // s + 2 x s (1 - s) u', s = sigmoid(2u), u = k (x + c x^3)
  if (!(std::fabs(x) < 20.0f)) return x > 0 ? 1.0f : x < 0 ? 0.0f : x;
  const float k = 0.79788456080286536f, c = 0.044715f;
  const float u2 = 2.0f * k * (x + c * x * x * x);
  const float s = 1.0f / (1.0f + std::exp(-u2)), sm = 1.0f / (1.0f + std::exp(u2));
  return s + 2.0f * x * s * sm * k * (1.0f + 3.0f * c * x * x);
}
inline float quick_gelu_d(float x) {
  if (!(std::fabs(x) < 100.0f)) return x > 0 ? 1.0f : x < 0 ? 0.0f : x;  // exact from 100 on (1.702 x overflowed)
  float s = 1.0f / (1.0f + std::exp(-1.702f * x));
  return s + 1.702f * x * s * (1.0f - s);
}

}  // namespace act
}  // namespace hsd
