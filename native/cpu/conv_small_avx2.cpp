// AVX2 + FMA kernel of conv_small.h (compiled with -mavx2 -mfma; called only when the GEMM engine picked its
// AVX2 kernels). Per template <CO, P>: P * CO accumulators, CO weight vectors and one input vector in the 16
// ymm registers, P = (12 - CO) / CO pixels (at least 1), so each (tap, 8 channels) step costs CO + P loads for
// CO * P FMAs. At Cout = 3, P = 4 (16 registers) spilled: 39 ms on 512x512 128 -> 3 against 23-29 ms with
// P = 3 and 32-35 with P = 2.
#include <cstdlib>

#include "conv_small.h"

#include <string>

#include "hypersd/ops.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace hsd {
namespace conv_small {
namespace {

template <int CO, int P>
void rows_t(const Args& a, int64_t r0, int64_t r1) {
  const int64_t C = a.C, C8 = C & ~int64_t(7), TC = a.kh * a.kw * C;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.Ho, oy = r % a.Ho;
    for (int64_t ox0 = 0; ox0 < a.Wo; ox0 += P) {
      const int np = (int)std::min<int64_t>(P, a.Wo - ox0);
      __m256 acc[P][CO];
      float tail[P][CO] = {};
      for (int p = 0; p < P; ++p)
        for (int o = 0; o < CO; ++o) acc[p][o] = _mm256_setzero_ps();
      for (int64_t ky = 0; ky < a.kh; ++ky)
        for (int64_t kx = 0; kx < a.kw; ++kx) {
          const float* xs[P];
          tap_rows<P>(a, n, oy, ox0, np, ky, kx, xs);
          const float* wt = a.w + (ky * a.kw + kx) * C;
          for (int64_t c = 0; c < C8; c += 8) {
            __m256 wv[CO];
            for (int o = 0; o < CO; ++o) wv[o] = _mm256_loadu_ps(wt + o * TC + c);
            for (int p = 0; p < P; ++p) {
              const __m256 xv = _mm256_loadu_ps(xs[p] + c);
              for (int o = 0; o < CO; ++o) acc[p][o] = _mm256_fmadd_ps(xv, wv[o], acc[p][o]);
            }
          }
          for (int64_t c = C8; c < C; ++c)
            for (int o = 0; o < CO; ++o)
              for (int p = 0; p < P; ++p) tail[p][o] += xs[p][c] * wt[o * TC + c];
        }
      for (int p = 0; p < np; ++p) {
        float* yp = a.y + (r * a.Wo + ox0 + p) * CO;
        for (int o = 0; o < CO; ++o) {
          float l[8];
          _mm256_storeu_ps(l, acc[p][o]);
          yp[o] = finish(l, tail[p][o], a, o, yp[o]);
        }
      }
    }
  }
}

template <int CO>
void rows_co(const Args& a, int64_t r0, int64_t r1) {
  rows_t<CO, ((12 - CO) / CO > 0 ? (12 - CO) / CO : 1)>(a, r0, r1);
}

}  // namespace

void rows_avx2(const Args& a, int64_t r0, int64_t r1) {
  switch (a.cout) {
    case 1: return rows_co<1>(a, r0, r1);
    case 2: return rows_co<2>(a, r0, r1);
    case 3: return rows_co<3>(a, r0, r1);
    case 4: return rows_co<4>(a, r0, r1);
    case 5: return rows_co<5>(a, r0, r1);
    case 6: return rows_co<6>(a, r0, r1);
    case 7: return rows_co<7>(a, r0, r1);
    case 8: return rows_co<8>(a, r0, r1);
    default: throw Error("conv2d: the direct kernel takes 1 to 8 output channels, got " + std::to_string(a.cout));
  }
}

}  // namespace conv_small
}  // namespace hsd

#else  // not an x86-64 AVX2 build: never called (the GEMM engine reports no AVX2 kernels)
namespace hsd {
namespace conv_small {
void rows_avx2(const Args&, int64_t, int64_t) { std::abort(); }
}  // namespace conv_small
}  // namespace hsd
#endif
