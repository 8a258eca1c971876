// The Winograd transforms of conv2d's stride-1 3x3 path (driver in conv.cpp), written once and compiled
// twice: by winograd.cpp for any CPU and by winograd_avx2.cpp with -mavx2 -mfma. Include with HSD_WINO_NS
// defined to the namespace the copy lives in. Each 1-D transform is a loop over channels with every input
// and output row held in a restrict pointer, so the compiler vectorises it over the channels (8 floats per
// step with AVX2).
//
// F(m x m, 3 x 3) over (m+2) x (m+2) input patches d (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2016): y = A^T [ (G g G^T) .* (B^T d B) ] A.
//   m = 2: B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  A^T = [1 1 1 0; 0 1 -1 -1],
//          G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//   m = 6 (points 0, +-1, +-2, +-1/2, infinity; bt_m6 / at_m6 / g_m6 below factor them):
//          B^T = [1 0 -21/4 0 21/4 0 -1 0; 0 1 1 -17/4 -17/4 1 1 0; 0 -1 1 17/4 -17/4 -1 1 0;
//                 0 1/2 1/4 -5/2 -5/4 2 1 0; 0 -1/2 1/4 5/2 -5/4 -2 1 0; 0 2 4 -5/2 -5 1/2 1 0;
//                 0 -2 4 5/2 -5 -1/2 1 0; 0 -1 0 21/4 0 -21/4 0 1],
//          A^T = [1 1 1 1 1 1 1 0; 0 1 -1 2 -2 1/2 -1/2 0; 0 1 1 4 4 1/4 1/4 0; 0 1 -1 8 -8 1/8 -1/8 0;
//                 0 1 1 16 16 1/16 1/16 0; 0 1 -1 32 -32 1/32 -1/32 1],
//          G = [1 0 0; -2/9 -2/9 -2/9; -2/9 2/9 -2/9; 1/90 1/45 2/45; 1/90 -1/45 2/45; 32/45 16/45 8/45;
//               32/45 -16/45 8/45; 0 0 1]
//   m = 4 (interpolation points 0, +-1, +-2, infinity):
//          B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1],
//          A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1],
//          G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
// (the weight transform, G g G^T, is weight_panel below, in f32, once per call or per weight block.)
#pragma once
#include <algorithm>
#include <cstdint>

#include "gemm_kernels.h"
#include "winograd.h"

#ifndef HSD_WINO_NS
#error "define HSD_WINO_NS before including winograd_transforms.h"
#endif

namespace hsd {
namespace HSD_WINO_NS {

#define HSD_R __restrict
// Every 1-D transform's rows are distinct buffers (reads may repeat the zero row): GCC would otherwise
// vectorise each loop behind a run-time overlap check of all its row pointers, paid on every call (64 to 256
// channels), despite the restrict qualifiers on the local copies. Without the check the F(6x6) input
// transform ran 1.2x-1.65x faster (one thread, 512x512 x 128 to 128x128 x 512, session 11).
#if defined(__GNUC__) && !defined(__clang__)
#define HSD_IVDEP _Pragma("GCC ivdep")
#elif defined(__clang__)
#define HSD_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#else
#define HSD_IVDEP
#endif

// ---- 1-D transforms over n channels: out[j][c] = sum_a T[j][a] in[a][c] ----
inline void bt_m2(const float* const* in, float* const* out, int64_t n) {
  const float *HSD_R d0 = in[0], *HSD_R d1 = in[1], *HSD_R d2 = in[2], *HSD_R d3 = in[3];
  float *HSD_R o0 = out[0], *HSD_R o1 = out[1], *HSD_R o2 = out[2], *HSD_R o3 = out[3];
  HSD_IVDEP
  for (int64_t c = 0; c < n; ++c) {
    const float a0 = d0[c], a1 = d1[c], a2 = d2[c], a3 = d3[c];
    o0[c] = a0 - a2;
    o1[c] = a1 + a2;
    o2[c] = a2 - a1;
    o3[c] = a1 - a3;
  }
}

inline void bt_m4(const float* const* in, float* const* out, int64_t n) {
  const float *HSD_R d0 = in[0], *HSD_R d1 = in[1], *HSD_R d2 = in[2], *HSD_R d3 = in[3], *HSD_R d4 = in[4],
              *HSD_R d5 = in[5];
  float *HSD_R o0 = out[0], *HSD_R o1 = out[1], *HSD_R o2 = out[2], *HSD_R o3 = out[3], *HSD_R o4 = out[4],
        *HSD_R o5 = out[5];
  HSD_IVDEP
  for (int64_t c = 0; c < n; ++c) {
    const float a0 = d0[c], a1 = d1[c], a2 = d2[c], a3 = d3[c], a4 = d4[c], a5 = d5[c];
    const float p = a4 - 4.f * a2, q = a3 - 4.f * a1;  // rows 1, 2: p +- q
    const float r = a4 - a2, s = 2.f * (a3 - a1);      // rows 3, 4: r +- s
    o0[c] = 4.f * a0 - 5.f * a2 + a4;
    o1[c] = p + q;
    o2[c] = p - q;
    o3[c] = r + s;
    o4[c] = r - s;
    o5[c] = 4.f * a1 - 5.f * a3 + a5;
  }
}

inline void at_m2(const float* const* in, float* const* out, int64_t n) {
  const float *HSD_R d0 = in[0], *HSD_R d1 = in[1], *HSD_R d2 = in[2], *HSD_R d3 = in[3];
  float *HSD_R o0 = out[0], *HSD_R o1 = out[1];
  HSD_IVDEP
  for (int64_t c = 0; c < n; ++c) {
    const float a0 = d0[c], a1 = d1[c], a2 = d2[c], a3 = d3[c];
    o0[c] = a0 + a1 + a2;
    o1[c] = a1 - a2 - a3;
  }
}

inline void at_m4(const float* const* in, float* const* out, int64_t n) {
  const float *HSD_R d0 = in[0], *HSD_R d1 = in[1], *HSD_R d2 = in[2], *HSD_R d3 = in[3], *HSD_R d4 = in[4],
              *HSD_R d5 = in[5];
  float *HSD_R o0 = out[0], *HSD_R o1 = out[1], *HSD_R o2 = out[2], *HSD_R o3 = out[3];
  HSD_IVDEP
  for (int64_t c = 0; c < n; ++c) {
    const float a0 = d0[c], a1 = d1[c], a2 = d2[c], a3 = d3[c], a4 = d4[c], a5 = d5[c];
    const float s12 = a1 + a2, d12 = a1 - a2, s34 = a3 + a4, d34 = a3 - a4;
    o0[c] = a0 + s12 + s34;
    o1[c] = d12 + 2.f * d34;
    o2[c] = s12 + 4.f * s34;
    o3[c] = d12 + 8.f * d34 + a5;
  }
}

// m = 6 (points 0, +-1, +-2, +-1/2, infinity; the matrices of the header), factored into sums and
// differences of pairs as above.
inline void bt_m6(const float* const* in, float* const* out, int64_t n) {
  const float *HSD_R d0 = in[0], *HSD_R d1 = in[1], *HSD_R d2 = in[2], *HSD_R d3 = in[3], *HSD_R d4 = in[4],
              *HSD_R d5 = in[5], *HSD_R d6 = in[6], *HSD_R d7 = in[7];
  float *HSD_R o0 = out[0], *HSD_R o1 = out[1], *HSD_R o2 = out[2], *HSD_R o3 = out[3], *HSD_R o4 = out[4],
        *HSD_R o5 = out[5], *HSD_R o6 = out[6], *HSD_R o7 = out[7];
  HSD_IVDEP
  for (int64_t c = 0; c < n; ++c) {
    const float a0 = d0[c], a1 = d1[c], a2 = d2[c], a3 = d3[c], a4 = d4[c], a5 = d5[c], a6 = d6[c], a7 = d7[c];
    o0[c] = (a0 - a6) + 5.25f * (a4 - a2);
    o7[c] = (a7 - a1) + 5.25f * (a3 - a5);
    const float p1 = a2 + a6 - 4.25f * a4, q1 = a1 + a5 - 4.25f * a3;  // rows 1, 2: p1 +- q1
    o1[c] = p1 + q1;
    o2[c] = p1 - q1;
    const float p3 = a6 + 0.25f * a2 - 1.25f * a4, q3 = 0.5f * a1 - 2.5f * a3 + 2.f * a5;  // rows 3, 4
    o3[c] = p3 + q3;
    o4[c] = p3 - q3;
    const float p5 = a6 + 4.f * a2 - 5.f * a4, q5 = 2.f * a1 - 2.5f * a3 + 0.5f * a5;  // rows 5, 6
    o5[c] = p5 + q5;
    o6[c] = p5 - q5;
  }
}

inline void at_m6(const float* const* in, float* const* out, int64_t n) {
  const float *HSD_R d0 = in[0], *HSD_R d1 = in[1], *HSD_R d2 = in[2], *HSD_R d3 = in[3], *HSD_R d4 = in[4],
              *HSD_R d5 = in[5], *HSD_R d6 = in[6], *HSD_R d7 = in[7];
  float *HSD_R o0 = out[0], *HSD_R o1 = out[1], *HSD_R o2 = out[2], *HSD_R o3 = out[3], *HSD_R o4 = out[4],
        *HSD_R o5 = out[5];
  HSD_IVDEP
  for (int64_t c = 0; c < n; ++c) {
    const float a0 = d0[c], a1 = d1[c], a2 = d2[c], a3 = d3[c], a4 = d4[c], a5 = d5[c], a6 = d6[c], a7 = d7[c];
    const float s12 = a1 + a2, d12 = a1 - a2, s34 = a3 + a4, d34 = a3 - a4, s56 = a5 + a6, d56 = a5 - a6;
    o0[c] = a0 + s12 + s34 + s56;
    o1[c] = d12 + 2.f * d34 + 0.5f * d56;
    o2[c] = s12 + 4.f * s34 + 0.25f * s56;
    o3[c] = d12 + 8.f * d34 + 0.125f * d56;
    o4[c] = s12 + 16.f * s34 + 0.0625f * s56;
    o5[c] = d12 + 32.f * d34 + 0.03125f * d56 + a7;
  }
}

template <int m>
struct Tr;
template <>
struct Tr<2> {
  static void bt(const float* const* in, float* const* out, int64_t n) { bt_m2(in, out, n); }
  static void at(const float* const* in, float* const* out, int64_t n) { at_m2(in, out, n); }
};
template <>
struct Tr<4> {
  static void bt(const float* const* in, float* const* out, int64_t n) { bt_m4(in, out, n); }
  static void at(const float* const* in, float* const* out, int64_t n) { at_m4(in, out, n); }
};
template <>
struct Tr<6> {
  static void bt(const float* const* in, float* const* out, int64_t n) { bt_m6(in, out, n); }
  static void at(const float* const* in, float* const* out, int64_t n) { at_m6(in, out, n); }
};

// Where a tile's (m+2) x (m+2) input patch lies: its image and its top-left pixel (which may be outside).
struct Patch {
  const float* img;
  int64_t y0, x0;
};
template <int m>
inline Patch patch_of(const float* x, const wino::Geom& g, int64_t tile) {
  const int64_t tx = tile % g.tw, ty = (tile / g.tw) % g.th, n = tile / (g.tw * g.th);
  return Patch{x + n * (g.H >> g.up) * (g.W >> g.up) * g.C, m * ty - g.pad, m * tx - g.pad};
}
// Pixel (i, j) of the patch from channel c0 on, or null where the patch leaves the image (with g.up, the pixel
// of the stored image it repeats).
inline const float* patch_pixel(const Patch& p, const wino::Geom& g, int i, int j, int64_t c0) {
  const int64_t iy = p.y0 + i, ix = p.x0 + j;
  return iy >= 0 && iy < g.H && ix >= 0 && ix < g.W ? p.img + ((iy >> g.up) * (g.W >> g.up) + (ix >> g.up)) * g.C + c0
                                                    : nullptr;
}

// Input transform of one A panel: tiles [t0, t0 + nt) (nt <= MR; rows past nt are zero) over channels
// [c0, c0 + cb), cb <= wino::kCB. Component uv's MR rows (the GEMMs read them in place: micro_rows / micro2_rows)
// get the piece: tile r's transformed values of channels c0.. at dst + uv * uv_stride + r * ldv. The column
// pass writes them there directly (until session 17 it wrote an L1 buffer that pack_a_rows then transposed into
// the engine's A-panel form: 16% of a 512x512 128-channel F(6x6) convolution's time). scratch holds
// wino::scratch_floats(m) floats.
template <int m>
void input_panel(const float* x, const wino::Geom& g, int64_t t0, int nt, int64_t c0, int64_t cb, float* dst,
                 int64_t uv_stride, int64_t ldv, float* scratch) {
  constexpr int a = m + 2, MR = gemm::MR;
  constexpr int64_t CB = wino::kCB;
  // Rows of TS = CB + kPad floats: with rows of exactly CB (256 bytes) the column pass's loads from t and its
  // stores fell on addresses equal modulo 4 KiB (+3% to +6% on the VAE's 512x512 and 256x256 layers, bench/ab.ts
  // side by side).
  constexpr int64_t TS = CB + wino::kPad;
  float* t = scratch;  // [a][a][TS]: row transforms of the patch
  for (int r = 0; r < nt; ++r) {
    const int64_t tile = t0 + r;
    // The patch the next transform reads, into cache while this one runs (at the VAE's sizes the image comes
    // from memory): the next tile's, or for the panel's last tile the caller's next call (this panel's next
    // channel block, else the next panel's first tile). +1.5% to +4% at 512x512, 128 channels.
    {
      int64_t nx = tile + 1, nc0 = c0, ncb = cb;
      if (r + 1 == nt) {
        nx = t0;
        nc0 = c0 + cb;
        if (nc0 >= g.C) nx = t0 + MR, nc0 = 0;
        ncb = std::min(CB, g.C - nc0);
      }
      if (nx < g.N * g.th * g.tw) {
        const Patch np = patch_of<m>(x, g, nx);
        for (int i = 0; i < a; ++i)
          for (int b = 0; b < a; ++b)
            if (const float* q = patch_pixel(np, g, i, b, nc0))
              for (int64_t o = 0; o < ncb * 4; o += 64) __builtin_prefetch((const char*)q + o);
      }
    }
    const Patch patch = patch_of<m>(x, g, tile);
    for (int i = 0; i < a; ++i) {  // row i of the patch: t[i][j] = sum_b B^T[j][b] d[i][b]
      const float* in[a];
      float* out[a];
      for (int b = 0; b < a; ++b) {
        const float* px = patch_pixel(patch, g, i, b, c0);
        in[b] = px ? px : gemm::kZeros;
        out[b] = t + (i * a + b) * TS;
      }
      Tr<m>::bt(in, out, cb);
    }
    for (int j = 0; j < a; ++j) {  // column j: v[i][j] = sum_k B^T[i][k] t[k][j], component uv = i * a + j
      const float* in[a];
      float* out[a];
      for (int k = 0; k < a; ++k) in[k] = t + (k * a + j) * TS;
      for (int i = 0; i < a; ++i) out[i] = dst + (i * a + j) * uv_stride + r * ldv;
      Tr<m>::bt(in, out, cb);
    }
  }
  for (int uv = 0; uv < a * a; ++uv)
    for (int r = nt; r < MR; ++r) std::fill(dst + uv * uv_stride + r * ldv, dst + uv * uv_stride + r * ldv + cb, 0.f);
}

// Output transform of one tile: M holds the a*a GEMM results of the tile (component uv at M + uv * uv_stride,
// cout floats each); writes its m x m outputs (those inside the image) as y = A^T M A + bias (+ beta * y).
template <int m>
void output_tile(const float* M, int64_t uv_stride, const wino::Geom& g, int64_t tile, int64_t cout,
                 const float* bias, float beta, float* y, float* scratch) {
  constexpr int a = m + 2;
  constexpr int64_t CB = wino::kCB;
  const int64_t tx = tile % g.tw, ty = (tile / g.tw) % g.th, n = tile / (g.tw * g.th);
  float* rr = scratch;             // [a][m][CB]: A^T over the columns
  float* s = scratch + a * m * CB;  // [m][m][CB]
  for (int64_t o0 = 0; o0 < cout; o0 += CB) {
    const int64_t ob = std::min(CB, cout - o0);
    for (int i = 0; i < a; ++i) {
      const float* in[a];
      float* out[m];
      for (int j = 0; j < a; ++j) in[j] = M + (i * a + j) * uv_stride + o0;
      for (int q = 0; q < m; ++q) out[q] = rr + (i * m + q) * CB;
      Tr<m>::at(in, out, ob);
    }
    for (int q = 0; q < m; ++q) {
      const float* in[a];
      float* out[m];
      for (int i = 0; i < a; ++i) in[i] = rr + (i * m + q) * CB;
      for (int p = 0; p < m; ++p) out[p] = s + (p * m + q) * CB;
      Tr<m>::at(in, out, ob);
    }
    for (int p = 0; p < m; ++p) {
      const int64_t oy = m * ty + p;
      if (oy >= g.Ho) break;
      for (int q = 0; q < m; ++q) {
        const int64_t ox = m * tx + q;
        if (ox >= g.Wo) break;
        const float* HSD_R sv = s + (p * m + q) * CB;
        float* HSD_R out = y + ((n * g.Ho + oy) * g.Wo + ox) * cout + o0;
        const float* HSD_R bb = bias ? bias + o0 : nullptr;
        if (beta != 0.f) {
          if (bb)
            for (int64_t o = 0; o < ob; ++o) out[o] = sv[o] + bb[o] + beta * out[o];
          else
            for (int64_t o = 0; o < ob; ++o) out[o] = sv[o] + beta * out[o];
        } else if (bb) {
          for (int64_t o = 0; o < ob; ++o) out[o] = sv[o] + bb[o];
        } else {
          for (int64_t o = 0; o < ob; ++o) out[o] = sv[o];
        }
      }
    }
  }
}

// ---- weight transform: U = G g G^T ----
// out[r][c] = sum_k G[r][k] in[k][c] over n channels.
inline void g_m2(const float* i0, const float* i1, const float* i2, float* const* out, int64_t n) {
  const float *HSD_R g0 = i0, *HSD_R g1 = i1, *HSD_R g2 = i2;
  float *HSD_R o0 = out[0], *HSD_R o1 = out[1], *HSD_R o2 = out[2], *HSD_R o3 = out[3];
  HSD_IVDEP
  for (int64_t c = 0; c < n; ++c) {
    const float a0 = g0[c], a1 = g1[c], a2 = g2[c];
    o0[c] = a0;
    o1[c] = .5f * (a0 + a1 + a2);
    o2[c] = .5f * (a0 - a1 + a2);
    o3[c] = a2;
  }
}
inline void g_m4(const float* i0, const float* i1, const float* i2, float* const* out, int64_t n) {
  const float *HSD_R g0 = i0, *HSD_R g1 = i1, *HSD_R g2 = i2;
  float *HSD_R o0 = out[0], *HSD_R o1 = out[1], *HSD_R o2 = out[2], *HSD_R o3 = out[3], *HSD_R o4 = out[4],
        *HSD_R o5 = out[5];
  HSD_IVDEP
  for (int64_t c = 0; c < n; ++c) {
    const float a0 = g0[c], a1 = g1[c], a2 = g2[c];
    const float s = a0 + a2, p = a0 * (1.f / 24) + a2 * (1.f / 6), q = a1 * (1.f / 12);
    o0[c] = .25f * a0;
    o1[c] = (s + a1) * (-1.f / 6);
    o2[c] = (s - a1) * (-1.f / 6);
    o3[c] = p + q;
    o4[c] = p - q;
    o5[c] = a2;
  }
}
inline void g_m6(const float* i0, const float* i1, const float* i2, float* const* out, int64_t n) {
  const float *HSD_R g0 = i0, *HSD_R g1 = i1, *HSD_R g2 = i2;
  float *HSD_R o0 = out[0], *HSD_R o1 = out[1], *HSD_R o2 = out[2], *HSD_R o3 = out[3], *HSD_R o4 = out[4],
        *HSD_R o5 = out[5], *HSD_R o6 = out[6], *HSD_R o7 = out[7];
  HSD_IVDEP
  for (int64_t c = 0; c < n; ++c) {
    const float a0 = g0[c], a1 = g1[c], a2 = g2[c];
    const float s = a0 + a2, p3 = a0 * (1.f / 90) + a2 * (2.f / 45), q3 = a1 * (1.f / 45);
    const float p5 = a0 * (32.f / 45) + a2 * (8.f / 45), q5 = a1 * (16.f / 45);
    o0[c] = a0;
    o1[c] = (s + a1) * (-2.f / 9);
    o2[c] = (s - a1) * (-2.f / 9);
    o3[c] = p3 + q3;
    o4[c] = p3 - q3;
    o5[c] = p5 + q5;
    o6[c] = p5 - q5;
    o7[c] = a2;
  }
}
template <int m>
inline void g_rows(const float* i0, const float* i1, const float* i2, float* const* out, int64_t n) {
  if (m == 2) g_m2(i0, i1, i2, out, n);
  else if (m == 4) g_m4(i0, i1, i2, out, n);
  else g_m6(i0, i1, i2, out, n);
}

// One B panel of the transformed weights: output channels [o0, o0 + NR) (those >= cout are zero) over input
// channels [c0, c0 + cb), cb <= kCB, from the OHWI weight w [cout][3][3][cin] of dtype dt (f32, f16 or bf16).
// Component uv's piece goes to dst + uv * uv_stride in the engine's B-panel form (element (c, j) at
// [(c - c0) * NR + j]). The nine taps of the NR output channels are first packed as B panels ([9][cb][NR],
// widened on the way), so both 1-D passes run over cb * NR values at once and the second writes the panels
// directly: the same operations on each element as transforming each output channel's rows and transposing
// the (m+2)^2 results afterwards (what this did until session 16), so the same bits, with 9 values packed per
// weight instead of (m+2)^2 and no f32 copy of a half-precision weight (32x32 640->640, F(4x4) with U formed
// per block: the weight transform, its packing and the widening had taken 35% of the call). scratch holds
// wino::weight_scratch_floats(m) floats.
template <int m>
void weight_panel(const gemm::Kernels& kr, const void* w, DType dt, int64_t cout, int64_t cin, int64_t o0,
                  int64_t c0, int64_t cb, float* dst, int64_t uv_stride, float* scratch) {
  constexpr int a = m + 2, NR = gemm::NR;
  constexpr int64_t CB = wino::kCB;
  const int64_t es = (int64_t)dtype_size(dt), n = cb * NR;
  // [9][CB][NR]: tap ky*3 + kx of the NR output channels (64-byte aligned: the packers store aligned)
  float* P = (float*)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
  float* t = P + 9 * CB * NR;  // [3][a][CB][NR]: t[kx][r] = sum_ky G[r][ky] g[ky][kx]
  for (int k = 0; k < 9; ++k) {
    const void* rows[NR];
    for (int j = 0; j < NR; ++j)
      rows[j] = o0 + j < cout ? (const void*)((const char*)w + (((o0 + j) * 9 + k) * cin + c0) * es) : (const void*)gemm::kZeros;
    kr.pack_b_rows(P + k * CB * NR, rows, dt, cb);
  }
  for (int kx = 0; kx < 3; ++kx) {
    float* out[a];
    for (int r = 0; r < a; ++r) out[r] = t + (kx * a + r) * CB * NR;
    g_rows<m>(P + kx * CB * NR, P + (3 + kx) * CB * NR, P + (6 + kx) * CB * NR, out, n);
  }
  for (int r = 0; r < a; ++r) {  // U[r][v] = sum_kx t[kx][r] G[v][kx], component uv = r * a + v
    float* out[a];
    for (int v = 0; v < a; ++v) out[v] = dst + (r * a + v) * uv_stride;
    g_rows<m>(t + r * CB * NR, t + (a + r) * CB * NR, t + (2 * a + r) * CB * NR, out, n);
  }
}

inline wino::Fns make_fns(const char* name) {
  return wino::Fns{name, {input_panel<2>, input_panel<4>, input_panel<6>}, {output_tile<2>, output_tile<4>, output_tile<6>},
                   {weight_panel<2>, weight_panel<4>, weight_panel<6>}};
}

#undef HSD_R
#undef HSD_IVDEP

}  // namespace HSD_WINO_NS
}  // namespace hsd
