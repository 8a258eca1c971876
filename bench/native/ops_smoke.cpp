// Queues one of each heavy CPU path on the stream and syncs once: conv2d with every algorithm (stride 2 too,
// both Winograd variants by size, f32 and bf16 weights), attention (77 and 600 keys), bf16-weight matmuls, group
// norm + SiLU. Built as hypersd_ops_smoke; bench/sanitize.sh runs it under ThreadSanitizer (Node does not start
// under TSan), where the stream worker and the pool threads run every one of these kernels.
// Exit status 1 if an op fails or an output holds a non-finite value.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <thread>
#include <vector>
#include "hypersd/ops.h"
using namespace hsd;
static Tensor filled(std::vector<int64_t> shape, int seed, DType dt = DType::F32) {
  Tensor t = empty(shape, DType::F32, Device::CPU);
  std::vector<float> h((size_t)t.numel());
  uint32_t s = (uint32_t)seed;
  for (auto& v : h) { s = s * 1664525u + 1013904223u; v = (float)((s >> 8) / 16777216.0 - 0.5); }
  copy_from_host(t, h.data());
  if (dt == DType::F32) return t;
  Tensor o = empty(shape, dt, Device::CPU);
  enqueue("cast", {t}, {o});
  return o;
}
int main() {
  stream(Device::CPU).set_threads(2);
  std::vector<Tensor> outs;
  for (int algo : {0, 1, 2, 3, 4})
    for (auto sh : std::vector<std::vector<int>>{{16, 32, 32}, {40, 64, 48}, {8, 320, 320}, {64, 64, 64}, {80, 16, 16}})
      for (DType wd : {DType::F32, DType::BF16}) {
        int H = sh[0], Ci = sh[1], Co = sh[2];
        Tensor x = filled({1, H, H, Ci}, 1), w = filled({Co, 3, 3, Ci}, 2, wd), b = filled({Co}, 3);
        for (int stride : {1, 2}) {
          if (stride == 2 && algo >= 2) continue;
          int Ho = (H + 2 - 3) / stride + 1;
          Tensor y = empty({1, Ho, Ho, Co}, DType::F32, Device::CPU);
          Attrs a; a.set("stride", stride); a.set("pad", 1); a.set("has_bias", 1); a.set("algo", algo);
          enqueue("conv2d", {x, w, b}, {y}, a);
          outs.push_back(y);
        }
      }
  for (auto d : std::vector<std::vector<int>>{{300, 300, 40, 2}, {256, 77, 64, 2}, {64, 600, 40, 1}}) {
    Tensor q = filled({1, d[0], d[2] * d[3]}, 4), k = filled({1, d[1], d[2] * d[3]}, 5), v = filled({1, d[1], d[2] * d[3]}, 6);
    Tensor o = empty({1, d[0], d[2] * d[3]}, DType::F32, Device::CPU);
    Attrs a; a.set("heads", d[3]); a.set("scale", 0.125);
    enqueue("attention", {q, k, v}, {o}, a);
    outs.push_back(o);
  }
  for (auto m : std::vector<std::vector<int>>{{77, 768, 320}, {600, 320, 1280}, {7, 64, 64}}) {
    Tensor A = filled({m[0], m[1]}, 7), B = filled({m[2], m[1]}, 8, DType::BF16), c = empty({m[0], m[2]}, DType::F32, Device::CPU);
    Attrs a; a.set("transB", 1);
    enqueue("matmul", {A, B}, {c}, a);
    outs.push_back(c);
  }
  {
    Tensor x = filled({2, 1024, 64}, 9), g = filled({64}, 10), b = filled({64}, 11), y = empty({2, 1024, 64}, DType::F32, Device::CPU);
    Attrs a; a.set("groups", 32); a.set("silu", 1);
    enqueue("group_norm", {x, g, b}, {y}, a);
    outs.push_back(y);
  }
  try {
    stream(Device::CPU).sync();
  } catch (const std::exception& e) {
    std::printf("an op failed: %s\n", e.what());
    return 1;
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    std::vector<uint8_t> bytes = stream(Device::CPU).read(outs[i]);
    const float* v = (const float*)bytes.data();
    for (size_t j = 0; j < bytes.size() / sizeof(float); ++j)
      if (!std::isfinite(v[j])) {
        std::printf("output %zu: element %zu is %g\n", i, j, v[j]);
        return 1;
      }
  }
  // Two threads enqueue and read back matmuls on the one CPU stream (as worker_threads Workers do) while this
  // thread swaps the pool's size: every product must still be right.
  std::atomic<int> bad{0};
  auto client = [&](int seed) {
    try {
      Tensor a = filled({96, 64}, seed), bt = filled({80, 64}, seed + 1);
      Attrs tb;
      tb.set("transB", 1);
      Tensor ref = empty({96, 80}, DType::F32, Device::CPU);
      enqueue("matmul", {a, bt}, {ref}, tb);
      const std::vector<uint8_t> want = stream(Device::CPU).read(ref);
      for (int i = 0; i < 40; ++i) {
        Tensor c = empty({96, 80}, DType::F32, Device::CPU);
        enqueue("matmul", {a, bt}, {c}, tb);
        if (stream(Device::CPU).read(c) != want) bad.fetch_add(1);
      }
    } catch (const std::exception& e) {
      std::printf("client %d: %s\n", seed, e.what());
      bad.fetch_add(1000);
    }
  };
  std::thread t1(client, 11), t2(client, 21);
  for (int i = 0; i < 20; ++i) stream(Device::CPU).set_threads(1 + i % 3);
  t1.join();
  t2.join();
  if (bad.load()) {
    std::printf("concurrent clients: %d wrong or failed products\n", bad.load());
    return 1;
  }
  std::printf("%zu ops ran, outputs finite; two client threads' matmuls right across 20 pool swaps\n", outs.size());
  // Give the allocator's cached blocks back, so that LeakSanitizer (bench/sanitize.sh) reports only real leaks.
  outs.clear();
  stream(Device::CPU).sync();
  empty_cache(Device::CPU);
  return 0;
}
