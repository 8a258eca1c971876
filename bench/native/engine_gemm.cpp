// The CPU GEMM engine (native/cpu/gemm_kernels.h) timed from C++, without Node: what a product costs in the
// engine itself, beside bench/ops' figures through the addon (JS call, stream queue, pool wake-up included).
// Built with the project (CMake target hypersd_engine_gemm, next to the addon in the build folder):
//   build/hypersd_engine_gemm M K N [reps] [threads]
// C[M, N] = A[M, K] W[N, K]^T + bias, W an f32 weight as a linear layer holds it; prints the median and best
// GFLOP/s over reps timed calls after 2 untimed ones. HYPERSD_GEMM_ROWS_M and HYPERSD_CPU_KERNELS apply as in
// the addon.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../native/cpu/gemm_kernels.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s M K N [reps] [threads]\n", argv[0]);
    return 2;
  }
  const int64_t M = std::atoll(argv[1]), K = std::atoll(argv[2]), N = std::atoll(argv[3]);
  const int reps = argc > 4 ? std::atoi(argv[4]) : 20, threads = argc > 5 ? std::atoi(argv[5]) : 2;
  if (M <= 0 || K <= 0 || N <= 0 || reps <= 0 || threads <= 0) {
    std::fprintf(stderr, "M, K, N, reps and threads must be positive\n");
    return 2;
  }
  std::vector<float> a((size_t)(M * K)), w((size_t)(N * K)), c((size_t)(M * N)), bias((size_t)N);
  for (size_t i = 0; i < a.size(); ++i) a[i] = (float)(i % 13) * 0.01f;
  for (size_t i = 0; i < w.size(); ++i) w[i] = (float)(i % 7) * 0.01f;
  hsd::ThreadPool pool(threads);
  hsd::gemm::StridedA A(a.data(), K, 1);
  hsd::gemm::StridedB B(w.data(), hsd::DType::F32, 1, K);
  hsd::gemm::Epilogue e;
  e.bias = bias.data();
  std::vector<double> t;
  for (int r = 0; r < reps + 2; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    hsd::gemm::run(M, N, K, A, B, c.data(), N, e, &pool);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r >= 2) t.push_back(s);
  }
  std::sort(t.begin(), t.end());
  const double flops = 2.0 * (double)M * (double)N * (double)K;
  std::printf("%lldx%lldx%lld threads %d (%s kernels): %.1f GFLOP/s median, %.1f best, over %d calls\n", (long long)M,
              (long long)K, (long long)N, threads, hsd::gemm::kernels().name, flops / t[t.size() / 2] / 1e9,
              flops / t[0] / 1e9, reps);
  return 0;
}
