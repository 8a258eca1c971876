// Winograd F(2x2, 3x3) and F(4x4, 3x3) transforms for conv2d (conv.cpp drives them; the transforms are in
// winograd_transforms.h, compiled for any CPU in winograd.cpp and with AVX2 in winograd_avx2.cpp).
#pragma once
#include <cstdint>

#include "gemm_kernels.h"

namespace hsd {
namespace wino {

constexpr int64_t kCB = 64;  // channels per transform block (the row buffers stay in L1)

struct Geom {
  int64_t N, H, W, C, Ho, Wo, pad;
  int64_t th, tw;  // tiles per image along H and W
};

// Floats of scratch one input_panel / output_tile call needs for tile size m (a = m + 2).
constexpr int64_t scratch_floats(int m) { return ((m + 2) * (m + 2) * (1 + gemm::MR) + (m + 2) * m + m * m) * kCB; }

constexpr int64_t weight_scratch_floats(int m) { return ((m + 2) * (m + 2) * gemm::NR + 3 * (m + 2)) * kCB; }

struct Fns {
  const char* name;
  void (*input2)(const gemm::Kernels&, const float*, const Geom&, int64_t, int, int64_t, int64_t, float*, int64_t,
                 float*);
  void (*input4)(const gemm::Kernels&, const float*, const Geom&, int64_t, int, int64_t, int64_t, float*, int64_t,
                 float*);
  void (*output2)(const float*, int64_t, const Geom&, int64_t, int64_t, const float*, float, float*, float*);
  void (*output4)(const float*, int64_t, const Geom&, int64_t, int64_t, const float*, float, float*, float*);
  void (*weight2)(const gemm::Kernels&, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*, int64_t,
                  float*);
  void (*weight4)(const gemm::Kernels&, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*, int64_t,
                  float*);
};

const Fns& portable_fns();
const Fns* avx2_fns();  // null when not built for x86-64 with AVX2
// The AVX2 copy when the GEMM engine runs its AVX2 kernels (so HYPERSD_CPU_KERNELS=portable covers both).
const Fns& fns();

}  // namespace wino
}  // namespace hsd
