// OpenBLAS sgemm yardstick for bench/ops.ts (never linked into the library). Built by the bench script with
// `g++ -O2 blas.cpp -lopenblas` when cblas.h is present; threads from OPENBLAS_NUM_THREADS. It serves requests
// on stdin, "M K N [n [w]]" per line, and answers each with the GFLOP/s of n back-to-back C = A B^T calls (row-major,
// B given as [N, K] like a linear layer's weight; n = 1 by default), after w untimed calls (1 by default; bench/ops
// passes the warm-up it gives hypersd), so the bench can alternate OpenBLAS and hypersd run by run.
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <vector>

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main() {
  long M, K, N, n, w, cur[3] = {0, 0, 0};
  std::vector<float> a, b, c;
  char line[256];
  while (std::fgets(line, sizeof line, stdin)) {
    n = 1, w = 1;
    if (std::sscanf(line, "%ld %ld %ld %ld %ld", &M, &K, &N, &n, &w) < 3) break;
    auto call = [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, a.data(), K, b.data(), K, 0.f, c.data(), N);
    };
    if (M != cur[0] || K != cur[1] || N != cur[2]) {
      a.assign(M * K, 0.f), b.assign(N * K, 0.f), c.assign(M * N, 0.f);
      for (size_t i = 0; i < a.size(); ++i) a[i] = (float)((i * 7919) % 1000) / 1000.f - 0.5f;
      for (size_t i = 0; i < b.size(); ++i) b[i] = (float)((i * 104729) % 1000) / 1000.f - 0.5f;
      cur[0] = M, cur[1] = K, cur[2] = N;
    }
    for (long i = 0; i < w; ++i) call();  // untimed: threads and caches warm, as the bench's own side gets
    double t0 = now();
    for (long i = 0; i < n; ++i) call();
    std::printf("%.2f\n", 2.0 * M * N * K * n / (now() - t0) / 1e9);
    std::fflush(stdout);
  }
  return 0;
}
