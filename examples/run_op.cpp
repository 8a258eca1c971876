// Embedding the hypersd core in a C++ program without Node: multiply two matrices on the CPU stream.
// Build: cmake -S . -B build-native && cmake --build build-native --target hypersd_example
#include <cstdio>
#include <vector>

#include "hypersd/ops.h"

int main() {
  using namespace hsd;
  Tensor a = empty({2, 3}, DType::F32, Device::CPU), b = empty({3, 2}, DType::F32, Device::CPU);
  Tensor c = empty({2, 2}, DType::F32, Device::CPU);
  float av[] = {1, 2, 3, 4, 5, 6}, bv[] = {1, 0, 0, 1, 1, 1};
  copy_from_host(a, av);
  copy_from_host(b, bv);
  enqueue("matmul", {a, b}, {c});
  std::vector<uint8_t> bytes = stream(Device::CPU).read(c);
  const float* r = (const float*)bytes.data();
  std::printf("[[%g, %g], [%g, %g]]\n", r[0], r[1], r[2], r[3]);  // [[4, 5], [10, 11]]
  return (r[0] == 4 && r[1] == 5 && r[2] == 10 && r[3] == 11) ? 0 : 1;
}
