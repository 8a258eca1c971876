// OpenBLAS sgemm yardstick for bench/ops.ts (never linked into the library). Built by the bench script with
// `g++ -O2 blas.cpp -lopenblas` when cblas.h is present; reads "M K N reps" lines on stdin (C = A B, row-major,
// B given as [N, K] and transposed, like a linear layer's weight) and prints one JSON line per shape with
// the median GFLOP/s.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main() {
  long M, K, N, reps;
  while (std::scanf("%ld %ld %ld %ld", &M, &K, &N, &reps) == 4) {
    std::vector<float> a(M * K), b(N * K), c(M * N);
    for (size_t i = 0; i < a.size(); ++i) a[i] = (float)((i * 7919) % 1000) / 1000.f - 0.5f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = (float)((i * 104729) % 1000) / 1000.f - 0.5f;
    std::vector<double> g;
    for (long r = 0; r < reps + 1; ++r) {
      double t0 = now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, a.data(), K, b.data(), K, 0.f, c.data(), N);
      double t = now() - t0;
      if (r) g.push_back(2.0 * M * N * K / t / 1e9);  // the first call warms up
    }
    std::sort(g.begin(), g.end());
    std::printf("{\"M\":%ld,\"K\":%ld,\"N\":%ld,\"gflops\":%.1f}\n", M, K, N, g[g.size() / 2]);
    std::fflush(stdout);
  }
  return 0;
}
