// Machine ceilings for bench/ops.ts: the FMA peak of a register-only loop and memcpy bandwidth.
// Built by the bench script with `g++ -O2 -mavx2 -mfma -pthread`. It serves requests on stdin, one per line,
// and answers each with one number, so the bench can measure a ceiling right beside each of its own runs
// (the machine is shared; ceilings measured minutes apart differ by tens of percent):
//   fma <ms>   GFLOP/s of <threads> threads running 12 independent FMA chains each (Zen3/Haswell need >= 8
//              to hide the 4-cycle latency on two pipes) for about <ms> milliseconds; 2 flops per lane. The
//              chains are 16-wide (zmm) when the CPU has AVX-512F, the widest FMAs it has (a Zen 5 runs them at
//              twice the 8-wide rate, and the GEMM engine's AVX-512 micro-kernels use them), else 8-wide.
//   fma8 <ms>  the 8-wide (AVX2) loop whatever the CPU has.
//   copy       GB/s of memcpy over a 256 MiB buffer (far beyond L3) split among the threads, counting the
//              bytes read plus the bytes written, as bench/ops counts traffic for memory-bound ops.
//   copy <n>   the same over an n-byte buffer (cache-resident when small), repeated to >= 512 MiB in all after
//              a quarter of that untimed (the cores at full speed, as bench/ops times the ops after a warm-up
//              batch): the ceiling for an op whose tensors of that size stay in cache between calls.
// Usage: peak <threads>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The loop is written in asm so the compiler can neither merge the identical chains nor drop them: 12
// independent FMA chains (the registers' width comes from the operands: ymm below, zmm in fma_loop512).
#define FMA12_LOOP                                                                                          \
  "1:\n\t"                                                                                                   \
  "vfmadd213ps %[c], %[m], %[a0]\n\t vfmadd213ps %[c], %[m], %[a1]\n\t vfmadd213ps %[c], %[m], %[a2]\n\t"     \
  "vfmadd213ps %[c], %[m], %[a3]\n\t vfmadd213ps %[c], %[m], %[a4]\n\t vfmadd213ps %[c], %[m], %[a5]\n\t"     \
  "vfmadd213ps %[c], %[m], %[a6]\n\t vfmadd213ps %[c], %[m], %[a7]\n\t vfmadd213ps %[c], %[m], %[a8]\n\t"     \
  "vfmadd213ps %[c], %[m], %[a9]\n\t vfmadd213ps %[c], %[m], %[a10]\n\t vfmadd213ps %[c], %[m], %[a11]\n\t"   \
  "dec %[n]\n\t jnz 1b"
static float fma_loop(long iters, float seed) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(seed + 0.01f * i);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  __asm__ volatile(
      FMA12_LOOP
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

// The same with 16-wide FMAs (only called when the CPU has AVX-512F).
__attribute__((target("avx512f"))) static float fma_loop512(long iters, float seed) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(seed + 0.01f * i);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  __asm__ volatile(
      FMA12_LOOP
      : [a0] "+v"(acc[0]), [a1] "+v"(acc[1]), [a2] "+v"(acc[2]), [a3] "+v"(acc[3]), [a4] "+v"(acc[4]),
        [a5] "+v"(acc[5]), [a6] "+v"(acc[6]), [a7] "+v"(acc[7]), [a8] "+v"(acc[8]), [a9] "+v"(acc[9]),
        [a10] "+v"(acc[10]), [a11] "+v"(acc[11]), [n] "+r"(iters)
      : [m] "v"(m), [c] "v"(c));
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
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
  const int threads = argc > 1 ? std::atoi(argv[1]) : (int)std::thread::hardware_concurrency();
  volatile float sink = 0;
  const size_t bytes = 256u << 20;
  std::vector<char> src, dst;
  std::map<size_t, std::pair<std::vector<char>, std::vector<char>>> small;
  char line[256];
  while (std::fgets(line, sizeof line, stdin)) {
    double ms = 0;
    size_t n = 0;
    if (std::sscanf(line, "copy %zu", &n) == 1 && n >= 4096) {
      auto& b = small[n];
      if (b.first.empty()) b.first.assign(n, 1), b.second.assign(n, 2);
      const size_t reps = std::max<size_t>(1, (size_t(512) << 20) / n);
      // Timed warm, as bench/ops times the ops (a warm-up batch first): each thread copies for reps / 4 first,
      // then all start the timed reps together; the time runs from that start to the last thread's end.
      std::atomic<int> ready{0};
      std::atomic<double> t_start{0};
      std::vector<double> t_end(threads);
      run_threads(threads, [&](int i) {
        const size_t part = n / threads;
        char *d = b.second.data() + i * part, *s = b.first.data() + i * part;
        for (size_t r = 0; r < reps / 4; ++r) std::memcpy(d, s, part);
        if (ready.fetch_add(1) + 1 == threads) t_start.store(now());
        while (ready.load() < threads) {
        }
        for (size_t r = 0; r < reps; ++r) std::memcpy(d, s, part);
        t_end[i] = now();
      });
      const double t = *std::max_element(t_end.begin(), t_end.end()) - t_start.load();
      std::printf("%.2f\n", 2.0 * (double)(n / threads * threads) * reps / t / 1e9);
    } else if (std::sscanf(line, "fma8 %lf", &ms) == 1 || std::sscanf(line, "fma %lf", &ms) == 1) {
      const long iters = (long)(ms * 1e-3 * 3e9 / 6);  // about 6 cycles per iteration at ~3 GHz
      const bool wide = std::strncmp(line, "fma8", 4) != 0 && __builtin_cpu_supports("avx512f");
      double t = run_threads(threads, [&](int i) {
        sink = sink + (wide ? fma_loop512(iters, 1.0f + i) : fma_loop(iters, 1.0f + i));
      });
      std::printf("%.2f\n", threads * iters * 12.0 * (wide ? 16 : 8) * 2 / t / 1e9);
    } else if (std::string(line).rfind("copy", 0) == 0) {
      if (src.empty()) src.assign(bytes, 1), dst.assign(bytes, 2);
      double t = run_threads(threads, [&](int i) {
        size_t part = bytes / threads;
        std::memcpy(dst.data() + i * part, src.data() + i * part, part);
      });
      std::printf("%.2f\n", 2.0 * bytes / t / 1e9);
    } else {
      std::printf("?\n");
    }
    std::fflush(stdout);
  }
  return sink == 12345.f;
}
