// Winograd F(2x2, 3x3), F(4x4, 3x3) and F(6x6, 3x3) transforms for conv2d (conv.cpp drives them; the transforms are in
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
  // 1: the input is the stored image nearest-upsampled 2x (H, W are the upsampled sizes; pixel (iy, ix) is the
  // stored image's (iy >> 1, ix >> 1)): conv2d's `upsample`, the upsampled tensor never formed
  int64_t up = 0;
};

constexpr int64_t kPad = 16;  // floats of padding after each kCB-float row of the input transform's buffers

// Floats of scratch one input_panel / output_tile call needs for tile size m (a = m + 2).
constexpr int64_t scratch_floats(int m) { return ((m + 2) * (m + 2) + (m + 2) * m + m * m) * (kCB + kPad); }

constexpr int64_t weight_scratch_floats(int m) { return (9 + 3 * (m + 2)) * gemm::NR * kCB + 16; }

// The transforms per tile size, indexed by m / 2 - 1 (m = 2, 4, 6): see winograd_transforms.h.
struct Fns {
  using Input = void (*)(const float*, const Geom&, int64_t, int, int64_t, int64_t, float*, int64_t, int64_t,
                         float*);
  using Output = void (*)(const float*, int64_t, const Geom&, int64_t, int64_t, const float*, float, float*, float*);
  using Weight = void (*)(const gemm::Kernels&, const void*, DType, int64_t, int64_t, int64_t, int64_t, int64_t,
                          float*, int64_t, float*);
  const char* name;
  Input input[3];
  Output output[3];
  Weight weight[3];
};

const Fns& portable_fns();
const Fns* avx2_fns();    // null when not built for x86-64 with AVX2
const Fns* avx512_fns();  // null when not built for x86-64 with AVX-512F
// The AVX2 copy when the GEMM engine runs its AVX2 kernels (so HYPERSD_CPU_KERNELS=portable covers both).
const Fns& fns();

}  // namespace wino
}  // namespace hsd
