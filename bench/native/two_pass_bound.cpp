// The least time any two-pass normalisation can take on this machine, with no arithmetic at all: each thread
// reads its part of x once (a read-only sweep, the statistics pass's traffic), then copies it to y (the apply
// pass's traffic), beside a memcpy of the same bytes. Also the same two passes over k slabs of the channels,
// the reads of slab j + 1 in the sweep that copies slab j (session 26's idea: a copy here is bound by its
// writes, so the statistics' reads might ride along with another slab's writes). Two threads by default, the
// SD1.5 UNet's [4096, 320] f32 (5.2 MB, resident in the L3); each figure a median of 9 samples of 100 calls
// after 25, microseconds a call, as bench/native/pointwise_bench.cpp times its rows.
//   build/hypersd_two_pass_bound [threads] [rows] [channels]
// A two-pass group norm moves what "read + copy" moves and adds its arithmetic (sums and squares, the affine
// and SiLU), so "read + copy" / memcpy bounds it as a fraction of the copy.
// Session 27 added the x86 string copy (rep movsb), which glibc's memcpy does not take at these sizes: alone it
// beats memcpy by ~20% here, and "read + rep movsb" passes 70%, but only a copy of bytes that already exist can
// use it; an apply pass computes its output, and the nearest it gets is "read + buffer": each 1 KB of output
// computed into an L1 buffer and sent on by rep movsb (what an apply pass could do, the arithmetic left out).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Rows [0, rows) x channels [c0, c0 + w) of a row-major [*, ld] float array: sum (read only), or y = x.
__attribute__((target("avx2"))) static float read_part(const float* x, int64_t rows, int64_t ld, int64_t c0,
                                                       int64_t w) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = x + r * ld + c0;
    int64_t c = 0;
    for (; c + 32 <= w; c += 32) {
      a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + c));
      a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + c + 8));
      a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + c + 16));
      a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + c + 24));
    }
    for (; c + 8 <= w; c += 8) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + c));
  }
  float o[8];
  _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}
// The x86 string copy: n bytes from s to d.
static void movsb(const void* s, void* d, size_t n) {
  asm volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}
// y = x over n floats through a 1 KB buffer in L1: the vector loads and stores an apply pass would make
// (into the buffer), then rep movsb from the buffer to y.
__attribute__((target("avx2"))) static void buffered_copy(const float* x, float* y, int64_t n) {
  alignas(64) float buf[256];
  for (int64_t c0 = 0; c0 < n; c0 += 256) {
    const int64_t m = std::min<int64_t>(256, n - c0);
    int64_t c = 0;
    for (; c + 8 <= m; c += 8) _mm256_store_ps(buf + c, _mm256_loadu_ps(x + c0 + c));
    for (; c < m; ++c) buf[c] = x[c0 + c];
    movsb(buf, y + c0, sizeof(float) * m);
  }
}
static void copy_part(const float* x, float* y, int64_t rows, int64_t ld, int64_t c0, int64_t w) {
  if (w == ld) {
    std::memcpy(y, x, sizeof(float) * rows * ld);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) std::memcpy(y + r * ld + c0, x + r * ld + c0, sizeof(float) * w);
}

struct Barrier {  // spinning, reusable
  std::atomic<int> count{0}, gen{0};
  int n;
  void wait() {
    const int g = gen.load();
    if (count.fetch_add(1) + 1 == n) {
      count.store(0);
      gen.fetch_add(1);
    } else
      while (gen.load() == g) {
      }
  }
};

std::atomic<float> g_sink{0};

// mode: 0 memcpy, 1 read, 2 read then copy, 3 / 4: the slab pipeline over 2 / 4 slabs (16 rows at a time),
// 5 rep movsb, 6 read then rep movsb, 7 read then the buffered copy
static double time_us(int mode, const float* x, float* y, int64_t S, int64_t C, int threads) {
  Barrier bar;
  bar.n = threads;
  std::vector<double> t(threads);
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i)
    ts.emplace_back([&, i] {
      const int64_t r0 = S * i / threads, rows = S * (i + 1) / threads - r0;
      const float* xs = x + r0 * C;
      float* ys = y + r0 * C;
      const int64_t k = mode == 3 ? 2 : 4, w = C / k;
      float sink = 0;
      double t0 = 0;
      for (int rep = 0; rep < 125; ++rep) {
        if (rep == 25) {
          bar.wait();
          t0 = now();
        }
        if (mode == 0) copy_part(xs, ys, rows, C, 0, C);
        if (mode == 1 || mode == 2) sink += read_part(xs, rows, C, 0, C);
        if (mode == 2) copy_part(xs, ys, rows, C, 0, C);
        if (mode == 5 || mode == 6) {
          if (mode == 6) sink += read_part(xs, rows, C, 0, C);
          movsb(xs, ys, sizeof(float) * rows * C);
        }
        if (mode == 7) {
          sink += read_part(xs, rows, C, 0, C);
          buffered_copy(xs, ys, rows * C);
        }
        if (mode == 3 || mode == 4)
          for (int64_t j = 0; j <= k; ++j) {
            for (int64_t r = 0; r < rows; r += 16) {
              const int64_t n = std::min<int64_t>(16, rows - r);
              if (j > 0) copy_part(xs + r * C, ys + r * C, n, C, (j - 1) * w, w);
              if (j < k) sink += read_part(xs + r * C, n, C, j * w, w);
            }
            bar.wait();  // the statistics of slab j complete before its apply
          }
      }
      t[i] = now() - t0;
      g_sink.store(sink);
    });
  for (auto& th : ts) th.join();
  return *std::max_element(t.begin(), t.end()) / 100 * 1e6;
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  if (!__builtin_cpu_supports("avx2")) {
    std::printf("this program needs AVX2\n");
    return 0;
  }
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int64_t S = argc > 2 ? std::atoll(argv[2]) : 4096, C = argc > 3 ? std::atoll(argv[3]) : 320;
  if (threads < 1 || S < 16 || C < 32 || C % 32) {
    std::fprintf(stderr, "usage: hypersd_two_pass_bound [threads >= 1] [rows >= 16] [channels, a multiple of 32]\n");
    return 2;
  }
  // 64-byte aligned, as the engine's blocks are (rep movsb to a destination off a line boundary ran 2.5x slower)
  const size_t bytes = ((size_t)(S * C) * sizeof(float) + 63) / 64 * 64;
  float* x = static_cast<float*>(std::aligned_alloc(64, bytes));
  float* y = static_cast<float*>(std::aligned_alloc(64, bytes));
  std::fill(x, x + S * C, 1.f);
  std::fill(y, y + S * C, 0.f);
  const char* names[] = {"memcpy",      "read",          "read + copy",
                         "2 slabs",     "4 slabs",       "rep movsb",
                         "read + rep movsb", "read + buffer"};
  const int modes = 8;
  std::vector<std::vector<double>> us(modes);
  for (int s = 0; s < 9; ++s)  // the modes alternated, sample by sample
    for (int m = 0; m < modes; ++m) us[m].push_back(time_us(m, x, y, S, C, threads));
  std::printf("threads %d; [%lld, %lld] f32 (%.1f MB); us a call, medians of 9 samples\n\n", threads, (long long)S,
              (long long)C, 4e-6 * (double)(S * C));
  std::printf("| sweep | us | memcpy / this |\n|---|---|---|\n");
  const double cp = median(us[0]);
  for (int m = 0; m < modes; ++m)
    std::printf("| %s | %.1f | %.0f%% |\n", names[m], median(us[m]), 100 * cp / median(us[m]));
  std::free(x);
  std::free(y);
  return 0;
}
