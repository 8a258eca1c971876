// The memory-bound ops through the engine from C++, without Node, beside memcpy of the same bytes: what the
// kernels and the engine (the CPU stream, the thread pool, stream-ordered output blocks, as the binding allocates
// them) give a program that links the core, without the JavaScript call per op that bench/ops.ts also times.
// Same tensors and counting as bench/ops.ts's memory-bound rows: the SD1.5 64x64 activation [1, 4096, 320]
// (5.2 MB, L3-resident), each sample 25 untimed calls then 100 timed ones back to back, a new output per call;
// the ceiling a memcpy of one such tensor split among the threads, timed warm (a quarter of its copies untimed
// first), right before each sample. Medians of 9 samples. Bytes counted: the op's compulsory reads + writes
// (channel_stats: its read of x alone, against the memcpy's read + write).
// Built with the project (CMake target hypersd_pointwise_bench, next to the addon's build folder):
//   build/hypersd_pointwise_bench [threads] [op] [rows] [channels]   (threads: the engine's pool and the memcpy;
//     default 2; op: run only the rows whose names contain it, "" for all; rows x channels: the activation
//     [1, rows, channels], default the SD1.5 UNet's 4096 x 320; channels a multiple of 32, the groups' count)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "hypersd/ops.h"

using namespace hsd;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// GB/s of `threads` threads copying their parts of an n-byte buffer 100 times after 25 untimed copies.
static double copy_rate(int threads, std::vector<char>& src, std::vector<char>& dst) {
  const size_t n = src.size(), part = n / threads;
  std::atomic<int> ready{0};
  std::atomic<double> t0{0};
  std::vector<double> t1(threads);
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i)
    ts.emplace_back([&, i] {
      char *d = dst.data() + i * part, *s = src.data() + i * part;
      for (int r = 0; r < 25; ++r) std::memcpy(d, s, part);
      if (ready.fetch_add(1) + 1 == threads) t0.store(now());
      while (ready.load() < threads) {
      }
      for (int r = 0; r < 100; ++r) std::memcpy(d, s, part);
      t1[i] = now();
    });
  for (auto& t : ts) t.join();
  return 2.0 * (double)(part * threads) * 100 / (*std::max_element(t1.begin(), t1.end()) - t0.load()) / 1e9;
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  if (threads <= 0) return 2;
  const char* only = argc > 2 && argv[2][0] ? argv[2] : nullptr;  // run only the ops whose names contain this
  const int64_t S = argc > 3 ? std::atoll(argv[3]) : 4096, C = argc > 4 ? std::atoll(argv[4]) : 320;
  if (S < 1 || C < 32 || C % 32) {
    std::fprintf(stderr, "usage: hypersd_pointwise_bench [threads] [op] [rows >= 1] [channels, a multiple of 32]\n");
    return 2;
  }
  stream(Device::CPU).set_threads(threads);
  const double E = 4.0 * S * C;
  auto filled = [](std::vector<int64_t> shape, int seed) {
    Tensor t = empty(shape, DType::F32, Device::CPU);
    std::vector<float> h((size_t)t.numel());
    uint32_t s = (uint32_t)seed;
    for (auto& v : h) {
      s = s * 1664525u + 1013904223u;
      v = (float)((s >> 8) / 16777216.0 - 0.5);
    }
    copy_from_host(t, h.data());
    return t;
  };
  Tensor x = filled({1, S, C}, 8), y = filled({1, S, C}, 12), x2 = filled({1, S, 2 * C}, 11);
  Tensor g = filled({C}, 9), b = filled({C}, 10);
  Attrs gn, gn0, ln;
  gn.set("groups", 32);
  gn.set("eps", 1e-5);
  gn.set("silu", 1);
  gn0.set("groups", 32);
  gn0.set("eps", 1e-5);
  ln.set("eps", 1e-5);
  auto out = [&](int64_t c) { return empty({1, S, c}, DType::F32, Device::CPU, /*stream_ordered=*/true); };
  struct Case {
    const char* name;
    double bytes;
    std::function<void()> call;
  };
  // x's channel statistics, as the convolution that wrote x hands them over (conv2d's stats output)
  Tensor xst = empty({1, C, 3}, DType::F32, Device::CPU);
  enqueue("channel_stats", {x}, {xst}, Attrs{});
  stream(Device::CPU).sync();
  Tensor xst2 = empty({1, C, 3}, DType::F32, Device::CPU);
  const std::vector<Case> cases = {
      {"group_norm+silu", 2 * E, [&] { enqueue("group_norm", {x, g, b}, {out(C)}, gn); }},
      {"group_norm+silu, producer's stats", 2 * E, [&] { enqueue("group_norm", {x, g, b, xst}, {out(C)}, gn); }},
      {"group_norm", 2 * E, [&] { enqueue("group_norm", {x, g, b}, {out(C)}, gn0); }},
      {"group_norm, producer's stats", 2 * E, [&] { enqueue("group_norm", {x, g, b, xst}, {out(C)}, gn0); }},
      {"channel_stats (reads x)", E, [&] { enqueue("channel_stats", {x}, {xst2}, Attrs{}); }},
      {"layer_norm", 2 * E, [&] { enqueue("layer_norm", {x, g, b}, {out(C)}, ln); }},
      {"silu", 2 * E, [&] { enqueue("silu", {x}, {out(C)}); }},
      {"add", 3 * E, [&] { enqueue("add", {x, y}, {out(C)}); }},
      {"geglu", 3 * E, [&] { enqueue("geglu", {x2}, {out(C)}); }},
  };
  std::vector<char> src((size_t)E, 1), dst((size_t)E, 2);
  Stream& st = stream(Device::CPU);
  std::printf("threads %d; [1, %lld, %lld] f32 (%.1f MB); ops through the engine from C++, 100 calls after 25\n\n",
              threads, (long long)S, (long long)C, E / 1e6);
  std::printf("| op | GB/s | memcpy GB/s | op / memcpy |\n|---|---|---|---|\n");
  for (const Case& c : cases) {
    if (only && !std::strstr(c.name, only)) continue;
    std::vector<double> rate, ceil, pct;
    for (int p = 0; p < 9; ++p) {
      const double cp = copy_rate(threads, src, dst);
      for (int i = 0; i < 25; ++i) c.call();
      st.sync();
      const double t0 = now();
      for (int i = 0; i < 100; ++i) c.call();
      st.sync();
      const double r = c.bytes * 100 / (now() - t0) / 1e9;
      rate.push_back(r);
      ceil.push_back(cp);
      pct.push_back(r / cp);
    }
    std::printf("| %s | %.1f | %.1f | %.0f%% |\n", c.name, median(rate), median(ceil), 100 * median(pct));
  }
  return 0;
}
