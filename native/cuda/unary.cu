// exp, log, sqrt on CUDA (OPS.md): elementwise, f32 registers with the accurate libm functions (no fast-math),
// so log/sqrt of a negative number is NaN as on the CPU. flat.cuh's kernel (8-element vectors when aligned).
//
// ptxas -v (sm_90, CUDA 13.0, -O3), 0 spills: flat kernels 13-38 registers.
#include <cmath>

#include "flat.cuh"

namespace hsd {
namespace cu {
namespace {

struct ExpF {
  __device__ float operator()(const float* v) const { return expf(v[0]); }
};
struct LogF {
  __device__ float operator()(const float* v) const { return logf(v[0]); }
};
struct SqrtF {
  __device__ float operator()(const float* v) const { return sqrtf(v[0]); }
};

template <class F>
void unary(const char* op, const OpContext& ctx) {
  need_inputs(op, ctx, 1, 1);
  need_shape(op, "y", ctx.out[0], ctx.in[0].shape);
  launch_flat<1>(op, {ctx.in[0]}, ctx.out[0], F{}, stream_of(ctx));
}

void exp_op(const OpContext& ctx) { unary<ExpF>("exp", ctx); }
void log_op(const OpContext& ctx) { unary<LogF>("log", ctx); }
void sqrt_op(const OpContext& ctx) { unary<SqrtF>("sqrt", ctx); }

}  // namespace
}  // namespace cu

void register_unary_cuda(OpRegistry& r) {
  r.add_cuda("exp", cu::exp_op);
  r.add_cuda("log", cu::log_op);
  r.add_cuda("sqrt", cu::sqrt_op);
}

}  // namespace hsd
