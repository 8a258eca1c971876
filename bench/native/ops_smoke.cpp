// Queues one of each heavy CPU path on the stream and syncs once: conv2d with every algorithm (stride 2 too,
// both Winograd variants by size, f32 and bf16 weights), attention (77 and 600 keys), bf16-weight matmuls, group
// norm + SiLU. Built as hypersd_ops_smoke; bench/sanitize.sh runs it under ThreadSanitizer (Node does not start
// under TSan), where the stream worker and the pool threads run every one of these kernels.
// Exit status 1 if an op fails or an output holds a non-finite value.
#include <cmath>
#include <cstdio>
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
  std::printf("%zu ops ran, outputs finite\n", outs.size());
  return 0;
}
