// CPU kernels of the conv family: conv2d and lora_conv2d (OPS.md) on NHWC activations and OHWI weights.
//
// Implicit GEMM on the engine of gemm_kernels.h: C[N*Ho*Wo, Cout] = A B with A(i, k) the im2col view of the
// image (row i = output pixel, k = (ky, kx, cin)) and B(k, o) = w[o, ky, kx, cin], i.e. the OHWI weight is
// already the [N, K] layout the engine's transposing packer reads. No im2col matrix is formed: ImageA packs
// the A panels straight from the image, one contiguous run of Cin channels per (pixel, ky, kx) — padding
// taps point at a zero row — so the packing costs the same as a plain GEMM's. A 1x1 stride-1 convolution is
// a plain GEMM over the pixels.
// Winograd (below) takes the stride-1 3x3 convolutions with >= 16 channels in and out once there are >= 16
// 4x4 output tiles (16x16 and up): F(4x4, 3x3), 4x fewer multiply-adds than the direct sum, and F(6x6, 3x3)
// (5.06x fewer) from 256 6x6 tiles (96x96 and up, see auto_algo). Up to 128 tiles the
// weights are transformed per 16-output x 128-input block into an L2-resident buffer (conv3x3_winograd_small);
// beyond, once per call into U (conv3x3_winograd). Measured on the 2-core EPYC (2026-11-26, bench/ops and
// ms per call): implicit GEMM / F(4x4): 64x64x320 70 / 33 ms, 32x32x640 63 / 34, 16x16x1280 62 / 43,
// 16x16 2560->1280 123 / 84, 256x256x512->256 1277 / 637; at 8x8x1280 the implicit GEMM stays ahead (20 / 23
// ms with F(2x2), 29 with F(4x4)), so 'auto' keeps it there.
// 'auto' with at most 8 output channels (the VAE's conv_out, 128 -> 3) takes the direct kernel of conv_small.h
// instead: 512x512 128 -> 3 25 ms against 137-155 ms by implicit GEMM, 64x64 512 -> 8 5.4 against 8.4 ms
// (HYPERSD_CONV_NO_SMALL=1 turns it off for such comparisons).
// The attribute `algo` (0 auto, 1 implicit GEMM, 2 F(2x2), 3 F(4x4), 4 F(6x6)) forces one for tests and
// benchmarks; HYPERSD_CONV_ALGO (gemm, winograd, winograd4, winograd6) overrides 'auto'.
// lora_conv2d: t = scale * conv(x, down) [pixels, r], then one GEMM over the extended K range,
// y = [im2col(x) | t] [w | up]^T + bias (the same trick as lora_linear), always as implicit GEMM.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "chanstats.h"
#include "conv_small.h"
#include "gemm_kernels.h"
#include "winograd.h"

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
  // 1: x is read as its nearest 2x upsampling (conv2d's `upsample`; H, W the upsampled sizes, the stored image
  // (H >> 1) x (W >> 1)): the gathers below map pixel (iy, ix) to (iy >> up, ix >> up)
  int64_t up = 0;
  int64_t pixels() const { return N * Ho * Wo; }
  int64_t K() const { return kh * kw * C; }
  bool plain() const { return kh == 1 && kw == 1 && stride == 1 && pad == 0 && up == 0; }
};

// A(i, k) of the convolution as a GEMM, packed from the NHWC image.
struct ImageA final : gemm::APacker {
  const float* x;
  ConvGeom g;
  ImageA(const float* x, const ConvGeom& g) : x(x), g(g) {}
  // Rows [i0, i0+mc) x k [k0, k0+kc) into R-row panels (panel p at dst + p*R*kstride, (i, k) at [(k-k0)*R +
  // i%R]): per output pixel its input window, per run of one tap's channels the R row pointers (zeros where the
  // window leaves the image or past the last row) handed to `put` (a pack_a_rows / pack_b_rows kernel).
  template <int R, class Put>
  void pack_panels(float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0, int64_t kc, Put put) const {
    for (int64_t p = 0; p * R < mc; ++p) {
      float* d = dst + p * R * kstride;
      int64_t iy0[R], ix0[R];
      const float* img[R];
      for (int r = 0; r < R; ++r) {
        int64_t i = i0 + p * R + r;
        img[r] = nullptr;
        if (i >= i0 + mc) continue;
        int64_t ox = i % g.Wo, oy = (i / g.Wo) % g.Ho, n = i / (g.Wo * g.Ho);
        img[r] = x + n * (g.H >> g.up) * (g.W >> g.up) * g.C;
        iy0[r] = oy * g.stride - g.pad;
        ix0[r] = ox * g.stride - g.pad;
      }
      for (int64_t k = k0; k < k0 + kc;) {
        const int64_t tap = k / g.C, c0 = k % g.C, len = std::min(g.C - c0, k0 + kc - k);
        const int64_t ky = tap / g.kw, kx = tap % g.kw;
        const float* rows[R];
        for (int r = 0; r < R; ++r) {
          rows[r] = gemm::kZeros;
          if (!img[r]) continue;
          int64_t iy = iy0[r] + ky, ix = ix0[r] + kx;
          if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W)
            rows[r] = img[r] + ((iy >> g.up) * (g.W >> g.up) + (ix >> g.up)) * g.C + c0;
        }
        put(d + (k - k0) * R, rows, len);
        k += len;
      }
    }
  }
  void pack(const gemm::Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
            int64_t kc) const override {
    pack_panels<MR>(dst, kstride, i0, mc, k0, kc,
                    [&](float* d, const float* const* rows, int64_t len) { kr.pack_a_rows(d, rows, len); });
  }
  // The same im2col rows as 16-row panels (the GEMM's weight-rows path, small images).
  void pack_nr(const gemm::Kernels& kr, float* dst, int64_t kstride, int64_t i0, int64_t mc, int64_t k0,
               int64_t kc) const override {
    pack_panels<gemm::NR>(dst, kstride, i0, mc, k0, kc, [&](float* d, const float* const* rows, int64_t len) {
      const void* vr[gemm::NR];
      for (int r = 0; r < gemm::NR; ++r) vr[r] = rows[r];
      kr.pack_b_rows(d, vr, DType::F32, len);
    });
  }
  bool has_pack_nr() const override { return true; }
};

// The A side of a convolution: the image itself for a 1x1 stride-1 convolution, else the im2col view.
struct ConvA {
  gemm::StridedA plain;
  ImageA image;
  bool is_plain;
  ConvA(const float* x, const ConvGeom& g) : plain(x, g.C, 1), image(x, g), is_plain(g.plain()) {}
  const gemm::APacker& get() const { return is_plain ? (const gemm::APacker&)plain : image; }
};

// ---------- Winograd F(2x2, 3x3), F(4x4, 3x3) and F(6x6, 3x3) for stride-1 3x3 convolutions ----------
// y tile (m x m) = A^T [ (G g G^T) .* (B^T d B) ] A over (m+2) x (m+2) input patches d (transforms in
// winograd_transforms.h). Per element uv of the transformed tile that is a GEMM over channels:
// M_uv[tile, o] = sum_c V_uv[tile, c] U_uv[o, c]; (m+2)^2 GEMMs with 9 m^2 / (m+2)^2 times fewer multiply-adds
// in all than the direct convolution (2.25x for m = 2, 4x for m = 4, 5.06x for m = 6). Per chunk of tiles: the input transform
// writes V as rows the GEMM engine reads in place (RowsA: micro_rows / micro2_rows, no A panels), the
// GEMMs run against the weights transformed once per call into U, already in B-panel form (PackedB), and
// the output transform folds the components back into m x m outputs with the bias (and beta).
// Rounding: m = 2's coefficients are 0, +-1, +-1/2 (the rounding of a direct convolution); m = 4's reach 8,
// which costs about 4x the f32 rounding error (relative error ~2e-6 over 320 channels, inside the tests' 1e-5);
// m = 6's reach 32 (and 21/4, 1/90 in G): ~4.5e-6 at 128 to 1280 channels.

// One component's V, read in place by the GEMM engine: tile i's transformed channels at base + i*ld (rows
// up to a multiple of MR, those past the tiles zero). The engine packs an A only for bf16 inputs, which the
// Winograd products never take.
struct RowsA final : gemm::APacker {
  const float* base;
  int64_t ld;
  RowsA(const float* base, int64_t ld) : base(base), ld(ld) {}
  void pack(const gemm::Kernels&, float*, int64_t, int64_t, int64_t, int64_t, int64_t) const override {
    throw Error("conv2d: Winograd's transformed input is read in place, never packed (bf16 inputs are not supported there)");
  }
  const float* rows_in_place(int64_t* lda) const override {
    *lda = ld;
    return base;
  }
};

// The per-thread buffers of gemm::thread_scratch the Winograd paths use (kept across calls: no page faults):
// U (all transformed weights), V (input transforms), M (products) and the small variant's per-block U (taken by
// every thread of its loop). (Half-precision weights are widened by the weight transform itself.)
enum : int { kSlotU = 0, kSlotV = 1, kSlotM = 2, kSlotUBlock = 3, kSlotStats = 4 };

// U[uv][o][c] = (G g[o, :, :, c] G^T)[u][v], written straight into the engine's panel form
// ([a*a][ceil(Cout/NR)][Cin][NR], see gemm::PackedB), so the GEMMs read the weights without packing them.
template <int m>
float* wino_weights(const Tensor& w, int64_t cout, int64_t cin, ThreadPool* pool) {
  constexpr int a = m + 2;
  const int64_t NR = gemm::NR, npan = (cout + NR - 1) / NR, per_uv = npan * cin * NR;
  float* U = gemm::thread_scratch(kSlotU, (size_t)(a * a * per_uv));
  const gemm::Kernels& kr = gemm::kernels();
  auto weight = wino::fns().weight[m / 2 - 1];
  const int64_t ncb = (cin + wino::kCB - 1) / wino::kCB;
  pool->parallel_for(npan * ncb, 1, [&](int64_t b, int64_t e) {
    std::unique_ptr<float[]> scratch(new float[(size_t)wino::weight_scratch_floats(m)]);
    for (int64_t i = b; i < e; ++i) {
      const int64_t p = i / ncb, c0 = (i % ncb) * wino::kCB;
      weight(kr, w.raw(), w.dtype, cout, cin, p * NR, c0, std::min(wino::kCB, cin - c0), U + (p * cin + c0) * NR, per_uv,
             scratch.get());
    }
  });
  return U;
}

// Tiles per chunk: the chunk's V and M buffers together take about 64 MiB, 4 MiB when U (the transformed weights)
// takes <= 12 MiB (HYPERSD_WINO_CHUNK_MB overrides it), a whole number of A panels per thread; HYPERSD_WINO_CHUNK_TILES sets
// the tile count itself (tests use it to cross chunk boundaries on small images). Every chunk's 36 or 64
// products read all of U ((m+2)^2 Cin Cout floats: 67 MB at 512 channels, F(6x6)), so larger chunks read the
// weights from memory fewer times, at the cost of V and M leaving the L3: side by side (bench/ab.ts with
// CONV_SHAPES) 64 MiB against 16 MiB: 128x128 512->512 +9% / +13% (48 MiB), 256x256 512->512 +14%, 256x256
// 256->256 +5% to +8%, 512x512 256->256 +9%, 64x64 320->320 +6%, 128x128 320->320 +6%; 160 MiB against 64
// MiB: 512 channels +2% / +7%, 256 channels -1%. At 128 channels 4 MiB (113 tiles instead of 455, the VAE's
// 512x512 layers) measured +6% to +17% against 16 MiB in four runs, +7% / +11% again in session 9. Session 17
// (V read as rows; median of 3 sweeps of 4/8/16/32/64 MiB, bf16 weights): small chunks win while U stays in
// the L3 beside them: 512x512 256->128 (U 8.4 MB) 90 ms at 4 MiB against 112 at 64 (it had taken 64: the rule
// was Cin + Cout <= 256), 128->128 51 against 64; from U = 17 MB on (256 channels) the sizes are within a few
// percent of each other, and at 512 / 640 channels 64 MiB stays best (256x256 512->512 171 ms against 190 at 16,
// 330 at 4). The buffers are kept per thread across calls (gemm::thread_scratch): up to 64 MiB held once a large
// convolution ran.
int64_t wino_chunk(int m, int64_t tiles, int64_t cin, int64_t cout, int threads) {
  const int64_t step = (int64_t)MR * std::max(1, threads);
  const char* et = std::getenv("HYPERSD_WINO_CHUNK_TILES");
  const char* em = std::getenv("HYPERSD_WINO_CHUNK_MB");
  const int64_t vt = et ? std::atoll(et) : 0, vm = em ? std::atoll(em) : 0;
  const int64_t per_tile = (int64_t)(m + 2) * (m + 2) * (cin + cout) * 4;
  const int64_t u_bytes = (int64_t)(m + 2) * (m + 2) * cin * cout * 4;
  const int64_t mb = vm > 0 ? vm : u_bytes <= (int64_t(12) << 20) ? 4 : 64;
  int64_t want = vt > 0 ? (vt + MR - 1) / MR * MR : std::max<int64_t>(step, (mb << 20) / per_tile / step * step);
  return std::min(want, (tiles + MR - 1) / MR * MR);
}

template <int m>
wino::Geom wino_geom(const ConvGeom& cg) {
  return wino::Geom{cg.N, cg.H, cg.W, cg.C, cg.Ho, cg.Wo, cg.pad, (cg.Ho + m - 1) / m, (cg.Wo + m - 1) / m, cg.up};
}

// V's layout: component uv's rows at V + uv * vstride, tile i's Cin values at + i * Cin (tiles padded to a
// multiple of MR with zero rows). vstride for tc tiles: one line more than the rows when they would make
// components a multiple of 4 KiB apart (the input transform writes 8 or 6 components per column, the GEMMs
// read 6 rows of one).
inline int64_t wino_vstride(int64_t tc, int64_t cin) {
  const int64_t v = (tc + MR - 1) / MR * MR * cin;
  return v % 1024 == 0 ? v + 16 : v;
}

// Input transform of tiles [t0, t0 + tc) into V (see wino_vstride), in parallel over panels of MR tiles.
template <int m>
void wino_input(const wino::Geom& g, const float* x, int64_t t0, int64_t tc, float* V, int64_t vstride,
                ThreadPool* pool) {
  auto input = wino::fns().input[m / 2 - 1];
  const int64_t cin = g.C;
  pool->parallel_for((tc + MR - 1) / MR, 1, [&](int64_t b, int64_t e) {
    std::unique_ptr<float[]> scratch(new float[(size_t)wino::scratch_floats(m)]);
    for (int64_t p = b; p < e; ++p)
      for (int64_t c0 = 0; c0 < cin; c0 += wino::kCB)
        input(x, g, t0 + p * MR, (int)std::min<int64_t>(MR, tc - p * MR), c0, std::min(wino::kCB, cin - c0),
              V + p * MR * cin + c0, vstride, cin, scratch.get());
  });
}

// Output transform of tiles [t0, t0 + tc): tile t0 + i's products at Mb + i * cout, component stride mstride.
// part (optional): each tile's channel-statistics partial (chanstats.h) at part + tile * cout * 3, summed from
// the tile's outputs just written (in L1), so that a group norm after the convolution need not read y again.
template <int m>
void wino_output(const wino::Geom& g, const float* Mb, int64_t mstride, int64_t t0, int64_t tc, int64_t cout,
                 const float* bias, float beta, float* y, ThreadPool* pool, float* part) {
  auto output = wino::fns().output[m / 2 - 1];
  pool->parallel_for(tc, 4, [&](int64_t b, int64_t e) {
    std::unique_ptr<float[]> scratch(new float[(size_t)(wino::scratch_floats(m) + chanstats::scratch_floats(cout))]);
    for (int64_t i = b; i < e; ++i) {
      output(Mb + i * cout, mstride, g, t0 + i, cout, bias, beta, y, scratch.get());
      if (!part) continue;
      const int64_t t = t0 + i, tx = t % g.tw, ty = (t / g.tw) % g.th, n = t / (g.tw * g.th);
      const int64_t oy = m * ty, ox = m * tx;
      chanstats::partial(y + ((n * g.Ho + oy) * g.Wo + ox) * cout, std::min<int64_t>(m, g.Ho - oy),
                         std::min<int64_t>(m, g.Wo - ox), g.Wo * cout, cout, part + t * cout * chanstats::kPart,
                         scratch.get() + wino::scratch_floats(m));
    }
  });
}

// The per-image statistics (chanstats.h) of a Winograd convolution's output from its tiles' partials.
template <int m>
void wino_stats(const wino::Geom& g, int64_t cout, const float* part, float* stats, ThreadPool* pool) {
  const int64_t per_image = g.th * g.tw;
  std::vector<int64_t> count((size_t)(g.N * per_image));
  for (int64_t t = 0; t < g.N * per_image; ++t) {
    const int64_t tx = t % g.tw, ty = (t / g.tw) % g.th;
    count[(size_t)t] = std::min<int64_t>(m, g.Ho - m * ty) * std::min<int64_t>(m, g.Wo - m * tx);
  }
  chanstats::combine(part, count.data(), g.N, per_image, cout, stats, pool);
}

constexpr int64_t kWinoKC = 384;  // the longest K block of conv3x3_winograd's products

template <int m>
void conv3x3_winograd(const ConvGeom& cg, const float* x, const Tensor& w, int64_t cout, const float* bias, float beta,
                      float* y, ThreadPool* pool, float* stats) {
  constexpr int a = m + 2, nuv = a * a;
  const wino::Geom g = wino_geom<m>(cg);
  const int64_t tiles = g.N * g.th * g.tw, cin = g.C;
  float* U = wino_weights<m>(w, cout, cin, pool);
  const int64_t per_uv_w = (cout + gemm::NR - 1) / gemm::NR * cin * gemm::NR;
  const int64_t chunk = wino_chunk(m, tiles, cin, cout, pool->size());
  const int64_t vstride = wino_vstride(chunk, cin);  // floats per component in V (chunk is a multiple of MR)
  float* V = gemm::thread_scratch(kSlotV, (size_t)(nuv * vstride));
  float* Mb = gemm::thread_scratch(kSlotM, (size_t)(nuv * chunk * cout));
  float* part = stats ? gemm::thread_scratch(kSlotStats, (size_t)(tiles * cout * chanstats::kPart)) : nullptr;
  for (int64_t t0 = 0; t0 < tiles; t0 += chunk) {
    const int64_t tc = std::min(chunk, tiles - t0);
    wino_input<m>(g, x, t0, tc, V, vstride, pool);
    // One GEMM per component, each on one thread (a pool wake per GEMM would cost more than a small GEMM);
    // K blocks of <= 384 channels (Epilogue::max_kc: the engine's longer blocks round too much here).
    gemm::Epilogue ep;
    ep.max_kc = kWinoKC;
    pool->parallel_for(nuv, 1, [&](int64_t b, int64_t e) {
      for (int64_t uv = b; uv < e; ++uv)
        gemm::run(tc, cout, cin, RowsA(V + uv * vstride, cin), gemm::PackedB(U + uv * per_uv_w),
                  Mb + uv * tc * cout, cout, ep, nullptr);
    });
    wino_output<m>(g, Mb, tc * cout, t0, tc, cout, bias, beta, y, pool, part);
  }
  if (stats) wino_stats<m>(g, cout, part, stats, pool);
}

// Winograd for small images (16x16, 8x8 at 1280 channels): there the U above, (m+2)^2 Cin Cout floats written
// and read back on every call, costs more than the multiply-adds it saves. This variant never forms U: per
// block of NR output channels and kWB input channels it transforms that piece of the weights into a per-thread
// buffer (<= 36 x 128 x 16 floats, L2-resident) and runs the (m+2)^2 micro-kernel columns over all tiles at
// once, accumulating the products over the channel blocks in M. The input transform is done once for all
// tiles (V, the A panels). Needs Cout % NR == 0 (every SD convolution; else the implicit GEMM runs).
constexpr int64_t kWB = 128;  // input channels per transformed-weight block

// Every 64-byte line of the OHWI weight's rows for outputs [o0, o0 + n) and input channels [c0, c0 + kc) (all
// nine taps) towards L2.
inline void prefetch_weight_rows(const Tensor& w, int64_t cout, int64_t cin, int64_t o0, int64_t n, int64_t c0,
                                 int64_t kc) {
  const int64_t es = (int64_t)dtype_size(w.dtype);
  const char* base = (const char*)w.raw();
  for (int64_t o = o0; o < std::min(cout, o0 + n); ++o)
    for (int64_t k = 0; k < 9; ++k) {
      const char* p = base + ((o * 9 + k) * cin + c0) * es;
      for (int64_t off = 0; off < kc * es; off += 64) __builtin_prefetch(p + off, 0, 2);
      __builtin_prefetch(p + kc * es - 1, 0, 2);
    }
}

template <int m>
void conv3x3_winograd_small(const ConvGeom& cg, const float* x, const Tensor& w, int64_t cout, const float* bias,
                            float beta, float* y, ThreadPool* pool, float* stats) {
  constexpr int a = m + 2, nuv = a * a;
  const int64_t NR = gemm::NR;
  const wino::Geom g = wino_geom<m>(cg);
  const int64_t tiles = g.N * g.th * g.tw, cin = g.C, tpan = (tiles + MR - 1) / MR, tpad = tpan * MR;
  const gemm::Kernels& kr = gemm::kernels();
  auto weight = wino::fns().weight[m / 2 - 1];
  const int64_t vstride = wino_vstride(tiles, cin), mstride = tpad * cout;
  float* V = gemm::thread_scratch(kSlotV, (size_t)(nuv * vstride));
  float* Mb = gemm::thread_scratch(kSlotM, (size_t)(nuv * mstride));
  wino_input<m>(g, x, 0, tiles, V, vstride, pool);
  // Output panels in pairs where micro2 exists, so a thread's range never splits one (ranges of 5 panels, 640
  // outputs on two threads, had run a fifth of the products on the one-panel kernel: 14.6% of the samples).
  const int64_t npan = cout / NR, step = kr.micro2_rows ? 2 : 1;
  pool->parallel_for((npan + step - 1) / step, 1, [&](int64_t b2, int64_t e2) {
    const int64_t b = b2 * step, e = std::min(npan, e2 * step);
    std::unique_ptr<float[]> scratch(new float[(size_t)wino::weight_scratch_floats(m)]);
    // [uv][kc][NR], the engine's B-panel form, for two output panels (micro2_rows takes them in pairs where the
    // kernel set has it); every thread of the loop has its own
    float* U = gemm::thread_scratch(kSlotUBlock, (size_t)(2 * nuv * kWB * NR));
    for (int64_t c0 = 0; c0 < cin; c0 += kWB) {
      const int64_t kc = std::min(kWB, cin - c0);
      gemm::Epilogue ep;
      ep.first = c0 == 0;
      ep.last = c0 + kc == cin;
      for (int64_t op = b; op < e; ++op) {
        const bool pair = kr.micro2_rows && op + 1 < e;
        float* U2 = U + nuv * kc * NR;
        for (int64_t q = 0; q < (pair ? 2 : 1); ++q)
          for (int64_t cc = 0; cc < kc; cc += wino::kCB)
            weight(kr, w.raw(), w.dtype, cout, cin, (op + q) * NR, c0 + cc, std::min(wino::kCB, kc - cc), (q ? U2 : U) + cc * NR,
                   kc * NR, scratch.get());
        // The weight rows the next step transforms (the next panels here, else this range's first panels at
        // the next channel block), towards L2 while this step's products run: each call reads 2 x 16 x 9
        // pieces of kc channels of rows 9 Cin apart, which the hardware prefetchers do not follow (16x16
        // 1280->1280 10.3-10.9 -> 9.5-9.8 ms, 2560->1280 19.1-19.8 -> 17.1-17.6, 12x12 8.2-8.6 -> 7.5-7.6).
        {
          int64_t nop = op + step, nc0 = c0;
          if (nop >= e) nop = b, nc0 = c0 + kWB;
          if (nc0 < cin) prefetch_weight_rows(w, cout, cin, nop * NR, step * NR, nc0, std::min(kWB, cin - nc0));
        }
        for (int uv = 0; uv < nuv; ++uv) {
          const float* bp = U + uv * kc * NR;
          for (int64_t tp = 0; tp < tpan; ++tp) {
            const float* ap = V + uv * vstride + tp * MR * cin + c0;
            float* mp = Mb + uv * mstride + tp * MR * cout + op * NR;
            if (pair) kr.micro2_rows(kc, ap, cin, bp, U2 + uv * kc * NR, mp, cout, ep, nullptr);
            else kr.micro_rows(kc, ap, cin, bp, mp, cout, ep, nullptr);
          }
        }
        if (pair) ++op;
      }
    }
  });
  float* part = stats ? gemm::thread_scratch(kSlotStats, (size_t)(tiles * cout * chanstats::kPart)) : nullptr;
  wino_output<m>(g, Mb, mstride, 0, tiles, cout, bias, beta, y, pool, part);
  if (stats) wino_stats<m>(g, cout, part, stats, pool);
}

// Which Winograd variant: the per-block weight transform (conv3x3_winograd_small) for few tiles whose V (the
// transformed input, re-read for every pair of output panels) stays within half the last-level cache, U formed
// once per call otherwise. 64x64 F(6x6) (121 tiles) with V past 16 MiB (more than ~520 input channels) had
// taken the small variant: four alternations, the big one 640->320 13.8 -> 11.7 ms, 960->320 20.4 -> 17.1,
// 640->640 24.5 -> 21.5, 1280->640 45.7 -> 41.8 (session 17). HYPERSD_WINO_VARIANT=small|big forces one
// (tests, benchmarks; read per call).
bool wino_small(const ConvGeom& g, int64_t cout, int m) {
  if (cout % gemm::NR != 0) return false;
  const char* v = std::getenv("HYPERSD_WINO_VARIANT");
  if (v && std::string(v) == "small") return true;
  if (v && std::string(v) == "big") return false;
  const int64_t tiles = g.N * ((g.Ho + m - 1) / m) * ((g.Wo + m - 1) / m);
  const double v_bytes = (double)(m + 2) * (m + 2) * ((tiles + MR - 1) / MR * MR) * g.C * sizeof(float);
  return tiles <= 128 && v_bytes <= 0.5 * (double)last_level_cache_bytes();
}

// Winograd F(m x m, 3 x 3) with the variant wino_small picks.
template <int m>
void conv3x3_winograd_any(const ConvGeom& g, const float* x, const Tensor& w, int64_t cout, const float* bias,
                          float beta, float* y, ThreadPool* pool, float* stats) {
  if (wino_small(g, cout, m)) conv3x3_winograd_small<m>(g, x, w, cout, bias, beta, y, pool, stats);
  else conv3x3_winograd<m>(g, x, w, cout, bias, beta, y, pool, stats);
}

// The Winograd driver of algo 2, 3 or 4 (m = 2, 4, 6).
auto wino_driver(int64_t algo) -> decltype(&conv3x3_winograd_any<2>) {
  return algo == 2 ? &conv3x3_winograd_any<2> : algo == 3 ? &conv3x3_winograd_any<4> : &conv3x3_winograd_any<6>;
}

// 'auto' for a stride-1 3x3 convolution with >= 16 channels in and out: HYPERSD_CONV_ALGO (gemm, winograd,
// winograd4, winograd6) overrides it for benchmarks.
int64_t auto_algo(const ConvGeom& g) {
  const int64_t forced = [] {  // read per call (bench/ab.ts alternates it within one process)
    const char* e = std::getenv("HYPERSD_CONV_ALGO");
    std::string v = e ? e : "";
    return v == "gemm" ? 1 : v == "winograd" ? 2 : v == "winograd4" ? 3 : v == "winograd6" ? 4 : 0;
  }();
  if (forced) return forced;
  // Measured after session 16 made the weight transform cheap (bf16 weights, median of 3, `SH=... /tmp/algo.ts`
  // in bench/RESULTS.md, session 16; the tables before it chose F(6x6) only from 256 tiles and F(2x2) on 16-31):
  // F(6x6) where it needs at most 0.9x F(4x4)'s products (tiles6 * 64 against tiles4 * 36: partial tiles
  // count) on at least 64 tiles: 48x48 512 1.16x, 64x64 1.02-1.06x (1.11-1.13x with AVX2), 80x80 1.13x, 96x96
  // 1.21x over F(4x4); at 32x32 (equal products) and 40x40 (0.87x, 49 tiles) F(4x4) is as fast or faster. Its
  // rounding error is about twice F(4x4)'s: relative L2 error against a float64 sum 4.1-4.5e-6 at 128 to 1280
  // channels in, F(4x4) 2.0-2.4e-6, implicit GEMM 3.5e-7; the tests hold all to 1e-5.
  // F(4x4) from 8 tiles of 4x4 (12x12 1.38x and 2x 8x8 1.22x over the implicit GEMM, 16x16 1.2x over F(2x2)),
  // and on the AVX2 set from 4 (8x8: 1.38x); the implicit GEMM below (AVX-512, 8x8 at batch 1: 1.07x over F(2x2)).
  const int64_t tiles6 = g.N * ((g.Ho + 5) / 6) * ((g.Wo + 5) / 6);
  const int64_t tiles4 = g.N * ((g.Ho + 3) / 4) * ((g.Wo + 3) / 4);
  if (tiles6 >= 64 && tiles6 * 64 * 10 <= tiles4 * 36 * 9) return 4;
  return tiles4 >= (gemm::using_avx512() ? 8 : 4) ? 3 : 1;
}

ConvGeom conv_geom(const char* op, const OpContext& c, const Tensor& x, const Tensor& w, const Tensor& y) {
  for (auto* t : {&x, &w, &y})
    if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16)
      throw Error(std::string(op) + ": every tensor must be float, got " + t->describe());
  if (x.dim() != 4 || w.dim() != 4)
    throw Error(std::string(op) + ": x " + shp(x) + " must be [N, H, W, Cin] and w " + shp(w) + " [Cout, kh, kw, Cin]");
  // upsample = 1: the input is x nearest-upsampled 2x (the gathers read x at half the coordinates)
  const int64_t up = c.attrs.i("upsample", 0);
  if (up != 0 && up != 1) throw Error(std::string(op) + ": upsample must be 0 or 1, got " + std::to_string(up));
  ConvGeom g{x.size(0), x.size(1) << up, x.size(2) << up, x.size(3), w.size(1), w.size(2), c.attrs.i("stride", 1),
             c.attrs.i("pad", 0), 0, 0, up};
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
  // Optional second output: y's per-channel statistics (chanstats.h), for a group norm that follows.
  float* stats = nullptr;
  if (c.out.size() > 1) {
    chanstats::check("conv2d", "stats (output 1)", c.out[1], g.N, cout);
    if (y.dtype != DType::F32) throw Error("conv2d: the stats output needs an f32 y, got " + y.describe());
    stats = c.out[1].data<float>();
  }
  gemm::F32View bias = conv_bias("conv2d", c, cout);
  gemm::Epilogue e;
  e.beta = (float)c.attrs.f("beta", 0.0);
  e.bias = bias.p;
  gemm::F32View xv = gemm::as_f32(x, c.pool);
  gemm::F32Out out = gemm::out_f32(y, e.beta != 0.f, c.pool);
  // algo: 0 picks, 1 implicit GEMM, 2 Winograd F(2x2, 3x3), 3 F(4x4, 3x3), 4 F(6x6, 3x3).
  const int64_t algo = c.attrs.i("algo", 0);
  const bool wino_ok = g.kh == 3 && g.kw == 3 && g.stride == 1;
  if (algo < 0 || algo > 4)
    throw Error("conv2d: algo must be 0 (auto), 1 (gemm), 2 (winograd), 3 (winograd4) or 4 (winograd6), got " +
                std::to_string(algo));
  if (algo >= 2 && !wino_ok) throw Error("conv2d: algo " + std::to_string(algo) + " (Winograd) needs a 3x3 stride-1 convolution, got w " + shp(w));
  int64_t pick = algo;
  if (algo == 0) pick = wino_ok && g.C >= 16 && cout >= 16 ? auto_algo(g) : 1;
  if (y.numel() == 0) {  // no output channels (or pixels): nothing to write (the direct kernel has no 0-wide case)
    if (stats) std::fill(stats, stats + g.N * cout * chanstats::kPart, 0.f);
    return;
  }
  if (algo == 0 && cout <= 8 && g.up == 0 && std::getenv("HYPERSD_CONV_NO_SMALL") == nullptr) {
    // Few output channels: the direct kernel of conv_small.h.
    gemm::F32View wv = gemm::as_f32(w, c.pool);
    std::vector<float> zero((size_t)g.C, 0.f);
    conv_small::Args a{xv.p, wv.p, bias.p, e.beta, out.p, zero.data(), g.N, g.H, g.W, g.C, g.kh, g.kw, g.stride,
                       g.pad, g.Ho, g.Wo, cout};
    const bool avx2 = gemm::using_avx2();
    const int64_t per_row = std::max<int64_t>(1, g.Wo * g.K() * cout);
    c.pool->parallel_for(g.N * g.Ho, std::max<int64_t>(1, (1 << 16) / per_row), [&](int64_t r0, int64_t r1) {
      if (avx2) conv_small::rows_avx2(a, r0, r1);
      else conv_small::rows_portable(a, r0, r1);
    });
  } else if (pick >= 2) {
    wino_driver(pick)(g, xv.p, w, cout, bias.p, e.beta, out.p, c.pool, stats);
    stats = nullptr;  // summed from the output tiles
  } else {
    ConvA a(xv.p, g);
    gemm::run(g.pixels(), cout, g.K(), a.get(), gemm::StridedB(w.raw(), w.dtype, 1, g.K()), out.p, cout, e, c.pool);
  }
  out.finish(c.pool);
  // The other algorithms: read back (no fused path yet; the same cost as group_norm's own statistics pass).
  if (stats) chanstats::of_rows(out.p, g.N, g.Ho * g.Wo, cout, stats, c.pool);
}

// channel_stats: x [N, S, C] f32 -> [N, C, 3] (chanstats.h), the statistics any producer can hand to group_norm.
void channel_stats_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &st = c.out.at(0);
  if (x.dtype != DType::F32 || x.dim() != 3 || !x.is_contiguous())
    throw Error("channel_stats: x must be a contiguous f32 [N, S, C] tensor, got " + x.describe());
  chanstats::check("channel_stats", "output", st, x.size(0), x.size(2));
  chanstats::of_rows(x.data<float>(), x.size(0), x.size(1), x.size(2), st.data<float>(), c.pool);
}

void lora_conv2d_kernel(const OpContext& c) {
  const Tensor &x = c.in.at(0), &w = c.in.at(1), &y = c.out.at(0);
  const bool hb = c.attrs.i("has_bias", 0) != 0;
  const Tensor &down = c.in.at(hb ? 3 : 2), &up = c.in.at(hb ? 4 : 3);
  if (c.out.size() > 1) throw Error("lora_conv2d: takes one output (y), got " + std::to_string(c.out.size()));
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
  r.add_cpu("channel_stats", channel_stats_kernel, false);
}
}  // namespace hsd
