// conv2d for few output channels (Cout <= 8: the VAE decoder's conv_out, 128 -> 3; its encoder's 512 -> 8) as a
// direct convolution on NHWC x and OHWI w. The GEMM engine computes 16 output columns per micro-tile, so at
// Cout = 3 thirteen of them are waste (13 GFLOP/s on the VAE's 512x512 conv_out). Here each output pixel's
// Cout dot products run over the taps' contiguous runs of Cin channels, in 8 lanes of partial sums per
// output, P neighbouring pixels of a row at a time sharing each weight load; out-of-image taps read a row of
// zeros. The lanes are summed as ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)), then the channels past the
// last multiple of 8, then the bias, then beta times the old output.
// rows_portable (below, plain loops) is the portable kernel; conv_small_avx2.cpp holds the AVX2 one.
#pragma once
#include <algorithm>
#include <cstdint>

namespace hsd {
namespace conv_small {

struct Args {
  const float *x, *w, *bias;  // bias may be null
  float beta;                 // y = conv + bias + beta * y_old
  float* y;                   // [N, Ho, Wo, cout]
  const float* zero;          // C zeros: the row that padding taps read
  int64_t N, H, W, C, kh, kw, stride, pad, Ho, Wo, cout;
};

// Output rows [r0, r1) (r = n * Ho + oy) of the AVX2 kernel (conv_small_avx2.cpp; Cout 1..8).
void rows_avx2(const Args& a, int64_t r0, int64_t r1);

// The row pointers of P pixels (ox0.., clamped to the row's last pixel) for tap (ky, kx) of output row r.
template <int P>
inline void tap_rows(const Args& a, int64_t n, int64_t oy, int64_t ox0, int np, int64_t ky, int64_t kx, const float** xs) {
  const int64_t iy = oy * a.stride - a.pad + ky;
  for (int p = 0; p < P; ++p) {
    const int64_t ix = (ox0 + std::min(p, np - 1)) * a.stride - a.pad + kx;
    xs[p] = (iy < 0 || iy >= a.H || ix < 0 || ix >= a.W) ? a.zero : a.x + ((n * a.H + iy) * a.W + ix) * a.C;
  }
}

// The epilogue of one output value from its 8 lane sums and the tail.
inline float finish(const float* l, float tail, const Args& a, int o, float old) {
  float s = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
  s += tail;
  if (a.bias) s += a.bias[o];
  return a.beta != 0.f ? s + a.beta * old : s;
}

inline void rows_portable(const Args& a, int64_t r0, int64_t r1) {
  constexpr int P = 2;
  const int64_t C = a.C, C8 = C & ~int64_t(7), TC = a.kh * a.kw * C, CO = a.cout;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.Ho, oy = r % a.Ho;
    for (int64_t ox0 = 0; ox0 < a.Wo; ox0 += P) {
      const int np = (int)std::min<int64_t>(P, a.Wo - ox0);
      float acc[P][8][8] = {}, tail[P][8] = {};
      for (int64_t ky = 0; ky < a.kh; ++ky)
        for (int64_t kx = 0; kx < a.kw; ++kx) {
          const float* xs[P];
          tap_rows<P>(a, n, oy, ox0, np, ky, kx, xs);
          const float* wt = a.w + (ky * a.kw + kx) * C;
          for (int64_t o = 0; o < CO; ++o)
            for (int p = 0; p < P; ++p) {
              const float *xp = xs[p], *wp = wt + o * TC;
              for (int64_t c = 0; c < C8; c += 8)
                for (int l = 0; l < 8; ++l) acc[p][o][l] += xp[c + l] * wp[c + l];
              for (int64_t c = C8; c < C; ++c) tail[p][o] += xp[c] * wp[c];
            }
        }
      for (int p = 0; p < np; ++p) {
        float* yp = a.y + (r * a.Wo + ox0 + p) * CO;
        for (int64_t o = 0; o < CO; ++o) yp[o] = finish(acc[p][o], tail[p][o], a, (int)o, yp[o]);
      }
    }
  }
}

}  // namespace conv_small
}  // namespace hsd
