// Unary math: exp, log, sqrt — what training losses need beyond the network ops (the VAE's KL term and
// reparameterised sample use exp of a logvar; pseudo-Huber uses sqrt; log for likelihoods). Their gradients
// are compositions of elementwise ops (lib/ops/unary.grad.ts), so there is no backward kernel here.
//
// Layout: any shape, contiguous f32 (the engine widens f16/bf16); one flat parallel loop over libm.
// log of a negative number is NaN and sqrt of a negative number is NaN, as in PyTorch.
#include <cmath>
#include <string>

#include "hypersd/ops.h"

namespace hsd {
namespace {

template <float (*F)(float)>
void pointwise(const OpContext& c, const char* op) {
  const Tensor &x = c.in.at(0), &y = c.out.at(0);
  if (x.numel() != y.numel())
    throw Error(std::string(op) + ": input " + x.describe() + " and output " + y.describe() + " differ in size");
  const float* px = x.data<float>();
  float* py = y.data<float>();
  c.pool->parallel_for(y.numel(), 1 << 14, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) py[i] = F(px[i]);
  });
}

inline float exp_f(float x) { return std::exp(x); }
inline float log_f(float x) { return std::log(x); }
inline float sqrt_f(float x) { return std::sqrt(x); }

void exp_kernel(const OpContext& c) { pointwise<exp_f>(c, "exp"); }
void log_kernel(const OpContext& c) { pointwise<log_f>(c, "log"); }
void sqrt_kernel(const OpContext& c) { pointwise<sqrt_f>(c, "sqrt"); }

}  // namespace

void register_unary_cpu(OpRegistry& r) {
  r.add_cpu("exp", exp_kernel);
  r.add_cpu("log", log_kernel);
  r.add_cpu("sqrt", sqrt_kernel);
}
}  // namespace hsd
