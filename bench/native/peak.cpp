// Machine ceilings for bench/ops.ts: FMA peak from a register-only loop and memory copy bandwidth.
// Built by the bench script with `g++ -O2 -mavx2 -mfma -pthread`; prints one JSON line.
//   fma: 12 independent 8-wide FMA chains per thread (Zen3/Haswell need >= 8 to hide the 4-cycle latency on
//        two pipes), nothing but registers, all threads at once; GFLOP/s counts 2 flops per lane.
//   copy: memcpy of a 256 MiB buffer (far beyond L3) by all threads on disjoint halves; GB/s counts the
//        bytes read plus the bytes written, the way bench/ops counts traffic for memory-bound ops.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The loop is written in asm so the compiler can neither merge the identical chains nor drop them.
static float fma_loop(long iters, float seed) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(seed + 0.01f * i);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  __asm__ volatile(
      "1:\n\t"
      "vfmadd213ps %[c], %[m], %[a0]\n\t vfmadd213ps %[c], %[m], %[a1]\n\t vfmadd213ps %[c], %[m], %[a2]\n\t"
      "vfmadd213ps %[c], %[m], %[a3]\n\t vfmadd213ps %[c], %[m], %[a4]\n\t vfmadd213ps %[c], %[m], %[a5]\n\t"
      "vfmadd213ps %[c], %[m], %[a6]\n\t vfmadd213ps %[c], %[m], %[a7]\n\t vfmadd213ps %[c], %[m], %[a8]\n\t"
      "vfmadd213ps %[c], %[m], %[a9]\n\t vfmadd213ps %[c], %[m], %[a10]\n\t vfmadd213ps %[c], %[m], %[a11]\n\t"
      "dec %[n]\n\t jnz 1b"
      : [a0] "+x"(acc[0]), [a1] "+x"(acc[1]), [a2] "+x"(acc[2]), [a3] "+x"(acc[3]), [a4] "+x"(acc[4]),
        [a5] "+x"(acc[5]), [a6] "+x"(acc[6]), [a7] "+x"(acc[7]), [a8] "+x"(acc[8]), [a9] "+x"(acc[9]),
        [a10] "+x"(acc[10]), [a11] "+x"(acc[11]), [n] "+r"(iters)
      : [m] "x"(m), [c] "x"(c));
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}

template <class F>
static double run_threads(int n, F f) {
  std::vector<std::thread> ts;
  double t0 = now();
  for (int i = 0; i < n; ++i) ts.emplace_back(f, i);
  for (auto& t : ts) t.join();
  return now() - t0;
}

int main(int argc, char** argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : (int)std::thread::hardware_concurrency();
  const long iters = 20'000'000;
  volatile float sink = 0;
  std::vector<double> fma, copy;
  for (int rep = 0; rep < 5; ++rep) {
    double t = run_threads(threads, [&](int i) { sink = sink + fma_loop(iters, 1.0f + i); });
    fma.push_back(threads * iters * 12.0 * 8 * 2 / t / 1e9);
  }
  const size_t bytes = 256u << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 2);
  for (int rep = 0; rep < 5; ++rep) {
    double t = run_threads(threads, [&](int i) {
      size_t part = bytes / threads;
      std::memcpy(dst.data() + i * part, src.data() + i * part, part);
    });
    copy.push_back(2.0 * bytes / t / 1e9);
  }
  std::sort(fma.begin(), fma.end());
  std::sort(copy.begin(), copy.end());
  std::printf("{\"threads\":%d,\"fma_gflops\":%.1f,\"fma_gflops_max\":%.1f,\"copy_gbs\":%.2f}\n", threads, fma[2],
              fma[4], copy[2]);
  return sink == 12345.f;
}
