// The row kernels of pointwise_avx2.cpp compiled with AVX-512 (CMake / binding.gyp give *_avx512.cpp those
// flags) as namespace pw_avx512: SiLU, GEGLU and the group-norm statistics and apply 16 lanes at a time with the
// same bits as the 8-lane compile (SiLU but below x = -88, where the exponent bounds differ); layer norm 16 lanes with its own (16-partial) sums, so not the same bits as
// the AVX2 one. norm.cpp and activation.cpp call them when the GEMM engine runs its AVX-512 kernels.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define HSD_PW_NS pw_avx512
#include "pointwise_avx2.cpp"
