// A 3x3 convolution and the group norm + SiLU after it, through the engine from C++, with and without the
// convolution handing the norm its output's channel statistics (conv2d's stats output, group_norm's stats input):
// what the statistics cost the convolution against what they save the norm, at one activation size, measured as
// the median of 80 paired differences (each pair: 5 conv + norm calls without, then 5 with, back to back), the
// way lib/nn/layers.ts's canGiveStats threshold was chosen. bf16 weights as the networks store them.
// Built with the project (CMake target hypersd_gn_pairs, next to the addon's build folder):
//   build/hypersd_gn_pairs [threads] [H] [C]   (defaults 2, 64, 320: the SD1.5 UNet's first level)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "hypersd/ops.h"

using namespace hsd;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int64_t H = argc > 2 ? std::atoll(argv[2]) : 64, C = argc > 3 ? std::atoll(argv[3]) : 320;
  if (threads < 1 || H < 1 || C < 1 || C % 32 != 0) {
    std::fprintf(stderr, "usage: hypersd_gn_pairs [threads >= 1] [H >= 1] [C, a multiple of 32]\n");
    return 2;
  }
  stream(Device::CPU).set_threads(threads);
  auto filled = [](std::vector<int64_t> shape, uint32_t s, float scale) {
    Tensor t = empty(shape, DType::F32, Device::CPU);
    std::vector<float> h((size_t)t.numel());
    for (auto& v : h) {
      s = s * 1664525u + 1013904223u;
      v = scale * (float)((s >> 8) / 16777216.0 - 0.5);
    }
    copy_from_host(t, h.data());
    return t;
  };
  Tensor x = filled({1, H, H, C}, 1, 1.f), w32 = filled({C, 3, 3, C}, 2, 0.05f), b = filled({C}, 3, 1.f);
  Tensor g = filled({C}, 4, 1.f), bb = filled({C}, 5, 1.f);
  Tensor w = empty({C, 3, 3, C}, DType::BF16, Device::CPU);
  enqueue("cast", {w32}, {w}, Attrs{});
  Attrs conv;
  conv.set("stride", 1);
  conv.set("pad", 1);
  conv.set("has_bias", 1);
  Attrs gn;
  gn.set("groups", 32);
  gn.set("eps", 1e-5);
  gn.set("silu", 1);
  Stream& st = stream(Device::CPU);
  const int reps = 5, pairs = 80;
  auto out = [&] { return empty({1, H, H, C}, DType::F32, Device::CPU, /*stream_ordered=*/true); };
  auto rows = [&](const Tensor& y) { return view(y, {1, H * H, C}); };
  auto plain = [&] {
    for (int i = 0; i < reps; ++i) {
      Tensor y = out(), z = out();
      enqueue("conv2d", {x, w, b}, {y}, conv);
      enqueue("group_norm", {rows(y), g, bb}, {rows(z)}, gn);
    }
    st.sync();
  };
  auto with_stats = [&] {
    for (int i = 0; i < reps; ++i) {
      Tensor y = out(), z = out(), s3 = empty({1, C, 3}, DType::F32, Device::CPU, true);
      enqueue("conv2d", {x, w, b}, {y, s3}, conv);
      enqueue("group_norm", {rows(y), g, bb, s3}, {rows(z)}, gn);
    }
    st.sync();
  };
  plain();
  with_stats();
  std::vector<double> ta, tb, d;
  for (int p = 0; p < pairs; ++p) {
    const double t0 = now();
    plain();
    const double t1 = now();
    with_stats();
    const double t2 = now();
    ta.push_back((t1 - t0) / reps);
    tb.push_back((t2 - t1) / reps);
    d.push_back(((t2 - t1) - (t1 - t0)) / reps);
  }
  for (auto* v : {&ta, &tb, &d}) std::sort(v->begin(), v->end());
  const size_t m = pairs / 2, q1 = pairs / 4, q3 = 3 * pairs / 4;
  std::printf("threads %d, %lldx%lld x %lld f32 (%.1f MiB): conv + norm %.1f us, with the statistics %.1f us; "
              "paired difference median %+.1f us (quartiles %+.1f, %+.1f)\n",
              threads, (long long)H, (long long)H, (long long)C, 4.0 * H * H * C / (1 << 20), ta[m] * 1e6, tb[m] * 1e6,
              d[m] * 1e6, d[q1] * 1e6, d[q3] * 1e6);
  return 0;
}
