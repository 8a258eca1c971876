// A memory-bound kernel against memcpy, without Node: the AVX2 SiLU row kernel (native/cpu/pointwise_avx2.cpp)
// over the SD1.5 64x64 activation (4096 x 320 floats, 5.2 MB: L3-resident) split among threads, beside glibc's
// memcpy of the same bytes, the layer-norm row kernel over the same tensor as [4096, 320] and the AVX2 add of two
// such tensors into a third, best of 30 each (RESULTS.md quotes it for the memory-bound goal; each sample starts
// its threads, as the memcpy's do).
// Built with the project (CMake target hypersd_pointwise_bench):   build/hypersd_pointwise_bench [threads]
// Needs a CPU with AVX2 + FMA (the kernel is called directly, without the engine's dispatch).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace hsd {
namespace pw_avx2 {
void silu(const float* x, float* y, int64_t n);
void binary(int op, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n);
void ln_rows(const float* x, float* y, int64_t rows, int64_t C, const float* gamma, const float* beta, double eps);
}  // namespace pw_avx2
}  // namespace hsd

template <class F>
static double best_of(int threads, int64_t n, F f) {
  double best = 1e30;
  for (int r = 0; r < 30; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] {
        const int64_t b = n * t / threads, e = n * (t + 1) / threads;
        f(b, e);
      });
    for (auto& t : ts) t.join();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  if (threads <= 0) return 2;
  const int64_t n = 4096 * 320;
  std::vector<float> x((size_t)n), y((size_t)n), z((size_t)n);
  for (int64_t i = 0; i < n; ++i) x[(size_t)i] = (float)(i % 100) * 0.01f - 0.5f;
  const double bytes = 8.0 * (double)n;  // read x + write y
  const double s = best_of(threads, n, [&](int64_t b, int64_t e) { hsd::pw_avx2::silu(x.data() + b, y.data() + b, e - b); });
  std::vector<float> g(320, 1.1f), bb(320, 0.1f);
  const double l = best_of(threads, 4096, [&](int64_t b, int64_t e) {
    hsd::pw_avx2::ln_rows(x.data() + b * 320, y.data() + b * 320, e - b, 320, g.data(), bb.data(), 1e-5);
  });
  std::printf("layer_norm %.3f ms (%.1f GB/s)\n", l * 1e3, bytes / l / 1e9);
  std::vector<float> w((size_t)n, 0.25f);
  const double ad = best_of(threads, n, [&](int64_t b, int64_t e) {
    hsd::pw_avx2::binary(0, x.data() + b, 1, w.data() + b, 1, y.data() + b, e - b);
  });
  std::printf("add (3 tensors) %.3f ms (%.1f GB/s of 12 bytes per element)\n", ad * 1e3, 1.5 * bytes / ad / 1e9);
  const double c = best_of(threads, n, [&](int64_t b, int64_t e) {
    std::memcpy(z.data() + b, x.data() + b, (size_t)(e - b) * sizeof(float));
  });
  std::printf("threads %d, 5.2 MB: silu %.3f ms (%.1f GB/s), memcpy %.3f ms (%.1f GB/s): silu at %.2fx of memcpy\n",
              threads, s * 1e3, bytes / s / 1e9, c * 1e3, bytes / c / 1e9, c / s);
  return 0;
}
