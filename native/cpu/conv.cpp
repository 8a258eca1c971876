// CPU kernels of the conv family: conv2d and lora_conv2d (OPS.md) on NHWC activations and OHWI weights.
//
// Implicit GEMM on the engine of gemm_kernels.h: C[N*Ho*Wo, Cout] = A B with A(i, k) the im2col view of the
// image (row i = output pixel, k = (ky, kx, cin)) and B(k, o) = w[o, ky, kx, cin], i.e. the OHWI weight is
// already the [N, K] layout the engine's transposing packer reads. No im2col matrix is formed: ImageA packs
// the A panels straight from the image, one contiguous run of Cin channels per (pixel, ky, kx) — padding
// taps point at a zero row — so the packing costs the same as a plain GEMM's. A 1x1 stride-1 convolution is
// a plain GEMM over the pixels.
// Winograd F(2x2, 3x3) (below) takes the stride-1 3x3 convolutions with enough tiles: 2.25x fewer
// multiply-adds, measured 1.0-1.5x the implicit GEMM's rate (in direct-convolution FLOPs) at 64x64x320,
// 32x32x640 and 256x256x512 on the 2-core EPYC, the implicit GEMM itself 0.85-1.05x our plain GEMM's rate;
// the attribute `algo` (0 auto, 1 implicit GEMM, 2 Winograd) forces either for tests and benchmarks.
// lora_conv2d: t = scale * conv(x, down) [pixels, r], then one GEMM over the extended K range,
// y = [im2col(x) | t] [w | up]^T + bias (the same trick as lora_linear), always as implicit GEMM.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "gemm_kernels.h"

namespace hsd {
namespace {

using gemm::MR;

std::string shp(const Tensor& t) {
  std::string s = "[";
  for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? "," : "") + std::to_string(t.shape[i]);
  return s + "]";
}

struct ConvGeom {
  int64_t N, H, W, C, kh, kw, stride, pad, Ho, Wo;
  int64_t pixels() const { return N * Ho * Wo; }
  int64_t K() const { return kh * kw * C; }
  bool plain() const { return kh == 1 && kw == 1 && stride == 1 && pad == 0; }
};

// A(i, k) of the convolution as a GEMM, packed from the NHWC image.
struct ImageA final : gemm::APacker {
  const float* x;
  ConvGeom g;
  ImageA(const float* x, const ConvGeom& g) : x(x), g(g) {}
  void pack(const gemm::Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
            int64_t kc) const override {
    for (int64_t p = 0; p * MR < mc; ++p) {
      float* d = dst + p * MR * kstride;
      int64_t iy0[MR], ix0[MR];
      const float* img[MR];
      for (int r = 0; r < MR; ++r) {
        int64_t i = i0 + p * MR + r;
        img[r] = nullptr;
        if (i >= i0 + mc) continue;
        int64_t ox = i % g.Wo, oy = (i / g.Wo) % g.Ho, n = i / (g.Wo * g.Ho);
        img[r] = x + n * g.H * g.W * g.C;
        iy0[r] = oy * g.stride - g.pad;
        ix0[r] = ox * g.stride - g.pad;
      }
      for (int64_t k = k0; k < k0 + kc;) {
        const int64_t tap = k / g.C, c0 = k % g.C, len = std::min(g.C - c0, k0 + kc - k);
        const int64_t ky = tap / g.kw, kx = tap % g.kw;
        const float* rows[MR];
        for (int r = 0; r < MR; ++r) {
          rows[r] = gemm::kZeros;
          if (!img[r]) continue;
          int64_t iy = iy0[r] + ky, ix = ix0[r] + kx;
          if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) rows[r] = img[r] + (iy * g.W + ix) * g.C + c0;
        }
        kr.pack_a_rows(d + (k - k0) * MR, rows, len);
        k += len;
      }
    }
  }
};

// The A side of a convolution: the image itself for a 1x1 stride-1 convolution, else the im2col view.
struct ConvA {
  gemm::StridedA plain;
  ImageA image;
  bool is_plain;
  ConvA(const float* x, const ConvGeom& g) : plain(x, g.C, 1), image(x, g), is_plain(g.plain()) {}
  const gemm::APacker& get() const { return is_plain ? (const gemm::APacker&)plain : image; }
};

// ---------- Winograd F(2x2, 3x3) for stride-1 3x3 convolutions ----------
// y tile (2x2) = A^T [ (G g G^T) .* (B^T d B) ] A over 4x4 input patches d (transforms in Lavin & Gray's
// "Fast Algorithms for Convolutional Neural Networks"). Per element (u, v) of the 4x4 transformed tile that
// is a GEMM over channels: M_uv[tile, o] = sum_c V_uv[tile, c] U_uv[o, c]; 16 GEMMs of 2.25x fewer
// multiply-adds in all than the direct convolution. WinoA packs V_uv straight from the image (each V_uv
// element is a +-sum of 4 input values), the weights are transformed once per call into U [16, Cout, Cin],
// and the 16 GEMM results of a chunk of tiles (<= 32 MiB) are folded back into 2x2 outputs with the bias.
// The transform coefficients are 0, +-1 and +-1/2, so the rounding stays that of a direct convolution.

// B^T row u as two (input index, sign) terms.
constexpr int kBt[4][2][2] = {{{0, 1}, {2, -1}}, {{1, 1}, {2, 1}}, {{1, -1}, {2, 1}}, {{1, 1}, {3, -1}}};

struct WinoTiles {
  int64_t th, tw;  // tiles per image along H and W
  int64_t count(const ConvGeom& g) const { return g.N * th * tw; }
};

struct WinoA final : gemm::APacker {
  const float* x;
  const ConvGeom& g;
  WinoTiles tl;
  int u, v;
  int64_t tile0;
  WinoA(const float* x, const ConvGeom& g, WinoTiles tl, int u, int v, int64_t tile0)
      : x(x), g(g), tl(tl), u(u), v(v), tile0(tile0) {}
  void pack(const gemm::Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
            int64_t kc) const override {
    float tmp[MR][gemm::kMaxKC];
    const float* rows[MR];
    for (int64_t p = 0; p * MR < mc; ++p) {
      for (int r = 0; r < MR; ++r) {
        int64_t i = i0 + p * MR + r;
        rows[r] = gemm::kZeros;
        if (i >= i0 + mc) continue;
        int64_t t = tile0 + i, tx = t % tl.tw, ty = (t / tl.tw) % tl.th, n = t / (tl.tw * tl.th);
        int64_t y0 = 2 * ty - g.pad, x0 = 2 * tx - g.pad;
        float* o = tmp[r];
        for (int64_t k = 0; k < kc; ++k) o[k] = 0.f;
        for (auto& ra : kBt[u])
          for (auto& cb : kBt[v]) {
            int64_t iy = y0 + ra[0], ix = x0 + cb[0];
            if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) continue;
            const float* s = x + ((n * g.H + iy) * g.W + ix) * g.C + k0;
            if (ra[1] * cb[1] > 0)
              for (int64_t k = 0; k < kc; ++k) o[k] += s[k];
            else
              for (int64_t k = 0; k < kc; ++k) o[k] -= s[k];
          }
        rows[r] = o;
      }
      kr.pack_a_rows(dst + p * MR * kstride, rows, kc);
    }
  }
};

// U[uv][o][c] = (G g[o, :, :, c] G^T)[u][v], G = [[1,0,0],[1/2,1/2,1/2],[1/2,-1/2,1/2],[0,0,1]], written
// straight into the engine's panel form ([16][ceil(Cout/NR)][Cin][NR], see gemm::PackedB), so the 16 GEMMs
// read the weights without packing them.
using AlignedFloats = std::unique_ptr<float, void (*)(void*)>;

AlignedFloats wino_weights(const Tensor& w, int64_t cout, int64_t cin, ThreadPool* pool) {
  const int64_t NR = gemm::NR, per_uv = (cout + NR - 1) / NR * cin * NR;
  // 64-byte aligned: the micro-kernel reads B panels with aligned loads.
  AlignedFloats U((float*)std::aligned_alloc(64, (size_t)(16 * per_uv) * sizeof(float)), std::free);
  if (!U) throw Error("conv2d: out of memory for the Winograd weights");
  std::memset(U.get(), 0, (size_t)(16 * per_uv) * sizeof(float));
  gemm::F32View wf = gemm::as_f32(w, pool);
  const float G[4][3] = {{1, 0, 0}, {.5f, .5f, .5f}, {.5f, -.5f, .5f}, {0, 0, 1}};
  pool->parallel_for(cout, 1, [&](int64_t b, int64_t e) {
    std::unique_ptr<float[]> t(new float[(size_t)(12 * cin)]), u(new float[(size_t)cin]);
    for (int64_t o = b; o < e; ++o) {
      const float* g = wf.p + o * 9 * cin;  // [3][3][cin]
      for (int r = 0; r < 4; ++r)            // t[r][q] = sum_a G[r][a] g[a][q]
        for (int q = 0; q < 3; ++q) {
          float* tr = t.get() + (r * 3 + q) * cin;
          const float *g0 = g + q * cin, *g1 = g + (3 + q) * cin, *g2 = g + (6 + q) * cin;
          for (int64_t c = 0; c < cin; ++c) tr[c] = G[r][0] * g0[c] + G[r][1] * g1[c] + G[r][2] * g2[c];
        }
      for (int r = 0; r < 4; ++r)
        for (int v = 0; v < 4; ++v) {
          const float *t0 = t.get() + (r * 3) * cin, *t1 = t0 + cin, *t2 = t1 + cin;
          for (int64_t c = 0; c < cin; ++c) u[c] = t0[c] * G[v][0] + t1[c] * G[v][1] + t2[c] * G[v][2];
          float* dst = U.get() + (r * 4 + v) * per_uv + (o / NR) * cin * NR + o % NR;
          for (int64_t c = 0; c < cin; ++c) dst[c * NR] = u[c];
        }
    }
  });
  return U;
}

void conv3x3_winograd(const ConvGeom& g, const float* x, const Tensor& w, int64_t cout, const float* bias, float beta,
                      float* y, ThreadPool* pool) {
  const WinoTiles tl{(g.Ho + 1) / 2, (g.Wo + 1) / 2};
  const int64_t tiles = tl.count(g);
  AlignedFloats U = wino_weights(w, cout, g.C, pool);
  const int64_t per_uv = (cout + gemm::NR - 1) / gemm::NR * g.C * gemm::NR;
  const int64_t chunk = std::min(tiles, std::max<int64_t>(64, (int64_t(8) << 20) / (16 * cout)));
  std::unique_ptr<float[]> Mb(new float[(size_t)(16 * chunk * cout)]);
  for (int64_t t0 = 0; t0 < tiles; t0 += chunk) {
    const int64_t tc = std::min(chunk, tiles - t0);
    for (int uv = 0; uv < 16; ++uv)
      gemm::run(tc, cout, g.C, WinoA(x, g, tl, uv / 4, uv % 4, t0),
                gemm::PackedB(U.get() + uv * per_uv), Mb.get() + uv * tc * cout, cout,
                gemm::Epilogue(), pool);
    // y = A^T M A per tile, A^T = [[1,1,1,0],[0,1,-1,-1]].
    pool->parallel_for(tc, 4, [&](int64_t b, int64_t e) {
      std::unique_ptr<float[]> row(new float[(size_t)(8 * cout)]);
      for (int64_t i = b; i < e; ++i) {
        const int64_t t = t0 + i, tx = t % tl.tw, ty = (t / tl.tw) % tl.th, n = t / (tl.tw * tl.th);
        const float* m = Mb.get() + i * cout;
        const int64_t cs = tc * cout;  // stride between the 16 components
        float* r0 = row.get();         // [2][4][cout]: A^T applied over u
        for (int v = 0; v < 4; ++v) {
          const float *m0 = m + (0 * 4 + v) * cs, *m1 = m + (1 * 4 + v) * cs, *m2 = m + (2 * 4 + v) * cs,
                      *m3 = m + (3 * 4 + v) * cs;
          float *a0 = r0 + v * cout, *a1 = r0 + (4 + v) * cout;
          for (int64_t o = 0; o < cout; ++o) {
            a0[o] = m0[o] + m1[o] + m2[o];
            a1[o] = m1[o] - m2[o] - m3[o];
          }
        }
        for (int dy = 0; dy < 2; ++dy)
          for (int dx = 0; dx < 2; ++dx) {
            const int64_t oy = 2 * ty + dy, ox = 2 * tx + dx;
            if (oy >= g.Ho || ox >= g.Wo) continue;
            const float* s = r0 + dy * 4 * cout;
            float* out = y + ((n * g.Ho + oy) * g.Wo + ox) * cout;
            for (int64_t o = 0; o < cout; ++o) {
              float val = dx == 0 ? s[o] + s[cout + o] + s[2 * cout + o] : s[cout + o] - s[2 * cout + o] - s[3 * cout + o];
              if (bias) val += bias[o];
              out[o] = beta != 0.f ? val + beta * out[o] : val;
            }
          }
      }
    });
  }
}

ConvGeom conv_geom(const char* op, const OpContext& c, const Tensor& x, const Tensor& w, const Tensor& y) {
  for (auto* t : {&x, &w, &y})
    if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16)
      throw Error(std::string(op) + ": every tensor must be float, got " + t->describe());
  if (x.dim() != 4 || w.dim() != 4)
    throw Error(std::string(op) + ": x " + shp(x) + " must be [N, H, W, Cin] and w " + shp(w) + " [Cout, kh, kw, Cin]");
  ConvGeom g{x.size(0), x.size(1), x.size(2), x.size(3), w.size(1), w.size(2), c.attrs.i("stride", 1),
             c.attrs.i("pad", 0), 0, 0};
  if (w.size(3) != g.C) throw Error(std::string(op) + ": x " + shp(x) + " and w " + shp(w) + " differ in Cin");
  if (g.stride < 1 || g.pad < 0)
    throw Error(std::string(op) + ": stride must be >= 1 and pad >= 0, got stride " + std::to_string(g.stride) +
                ", pad " + std::to_string(g.pad));
  if (g.H + 2 * g.pad < g.kh || g.W + 2 * g.pad < g.kw)
    throw Error(std::string(op) + ": the kernel of w " + shp(w) + " is larger than the padded input x " + shp(x));
  g.Ho = (g.H + 2 * g.pad - g.kh) / g.stride + 1;
  g.Wo = (g.W + 2 * g.pad - g.kw) / g.stride + 1;
  if (y.dim() != 4 || y.size(0) != g.N || y.size(1) != g.Ho || y.size(2) != g.Wo || y.size(3) != w.size(0))
    throw Error(std::string(op) + ": y " + shp(y) + " must be [" + std::to_string(g.N) + "," + std::to_string(g.Ho) +
                "," + std::to_string(g.Wo) + "," + std::to_string(w.size(0)) + "]");
  return g;
}

gemm::F32View conv_bias(const char* op, const OpContext& c, int64_t cout) {
  if (!c.attrs.i("has_bias", 0)) return {};
  if (c.in.size() < 3) throw Error(std::string(op) + ": has_bias is set but the bias input is missing");
  const Tensor& b = c.in[2];
  if (b.numel() != cout) throw Error(std::string(op) + ": bias " + shp(b) + " must have " + std::to_string(cout) + " elements");
  return gemm::as_f32(b, c.pool);
}

void conv2d_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &w = c.in.at(1), &y = c.out.at(0);
  ConvGeom g = conv_geom("conv2d", c, x, w, y);
  const int64_t cout = w.size(0);
  gemm::F32View bias = conv_bias("conv2d", c, cout);
  gemm::Epilogue e;
  e.beta = (float)c.attrs.f("beta", 0.0);
  e.bias = bias.p;
  gemm::F32View xv = gemm::as_f32(x, c.pool);
  gemm::F32Out out = gemm::out_f32(y, e.beta != 0.f, c.pool);
  // algo: 0 picks, 1 implicit GEMM, 2 Winograd. Winograd wins for stride-1 3x3 with >= 16 channels in and
  // out once there are enough 2x2 tiles to pay for transforming the weights on every call (measured: up to
  // 1.5x the implicit GEMM at 64x64, about 0.5x at 16x16 with 1280 channels).
  const int64_t algo = c.attrs.i("algo", 0);
  const bool wino_ok = g.kh == 3 && g.kw == 3 && g.stride == 1;
  if (algo == 2 && !wino_ok) throw Error("conv2d: algo 2 (Winograd) needs a 3x3 stride-1 convolution, got w " + shp(w));
  const int64_t tiles = g.N * ((g.Ho + 1) / 2) * ((g.Wo + 1) / 2);
  if (algo == 2 || (algo == 0 && wino_ok && g.C >= 16 && cout >= 16 && tiles >= 256)) {
    conv3x3_winograd(g, xv.p, w, cout, bias.p, e.beta, out.p, c.pool);
  } else {
    ConvA a(xv.p, g);
    gemm::run(g.pixels(), cout, g.K(), a.get(), gemm::StridedB(w.raw(), w.dtype, 1, g.K()), out.p, cout, e, c.pool);
  }
  out.finish(c.pool);
}

void lora_conv2d_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &w = c.in.at(1), &y = c.out.at(0);
  const bool hb = c.attrs.i("has_bias", 0) != 0;
  const Tensor &down = c.in.at(hb ? 3 : 2), &up = c.in.at(hb ? 4 : 3);
  ConvGeom g = conv_geom("lora_conv2d", c, x, w, y);
  const int64_t cout = w.size(0), r = down.size(0);
  if (down.dim() != 4 || down.size(1) != g.kh || down.size(2) != g.kw || down.size(3) != g.C)
    throw Error("lora_conv2d: down " + shp(down) + " must be [r, kh, kw, Cin] with w's kernel (w " + shp(w) + ")");
  if (up.numel() != cout * r || up.size(0) != cout)
    throw Error("lora_conv2d: up " + shp(up) + " must be [" + std::to_string(cout) + ", " + std::to_string(r) + "]");
  gemm::F32View bias = conv_bias("lora_conv2d", c, cout);
  gemm::F32View xv = gemm::as_f32(x, c.pool);
  gemm::F32Out out = gemm::out_f32(y, false, c.pool);
  const int64_t M = g.pixels(), K = g.K();
  std::unique_ptr<float[]> t(new float[(size_t)std::max<int64_t>(M * r, 1)]);
  ConvA a(xv.p, g);
  gemm::Epilogue et;
  et.alpha = (float)c.attrs.f("scale");
  gemm::run(M, r, K, a.get(), gemm::StridedB(down.raw(), down.dtype, 1, K), t.get(), r, et, c.pool);
  gemm::StridedA pt(t.get(), r, 1);
  gemm::StridedB pw(w.raw(), w.dtype, 1, K), pup(up.raw(), up.dtype, 1, r);
  gemm::Epilogue e;
  e.bias = bias.p;
  gemm::run(M, cout, K + r, gemm::ConcatA(a.get(), pt, K), gemm::ConcatB(pw, pup, K), out.p, cout, e, c.pool);
  out.finish(c.pool);
}

}  // namespace

void register_conv_cpu(OpRegistry& r) {
  r.add_cpu("conv2d", conv2d_kernel, false);
  r.add_cpu("lora_conv2d", lora_conv2d_kernel, false);
}
}  // namespace hsd
