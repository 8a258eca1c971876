// The row kernels of pointwise_avx2.cpp compiled with AVX-512 (CMake / binding.gyp give *_avx512.cpp those
// flags) as namespace pw_avx512: SiLU and the group-norm apply 16 lanes at a time, the same bits; norm.cpp and
// activation.cpp call them when the GEMM engine runs its AVX-512 kernels.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define HSD_PW_NS pw_avx512
#include "pointwise_avx2.cpp"
