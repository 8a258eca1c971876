// The CPU attention forward compiled with AVX-512 (CMake / binding.gyp give *_avx512.cpp those flags): the same
// source as attention_avx2.cpp, whose logits tiles then run on 512-bit FMAs; attention.cpp calls it when the
// GEMM engine runs its AVX-512 kernels.
// (GCC 12's _mm512_castps512_ps256 passes an undefined vector to the extract builtin: a false -Wmaybe-uninitialized.)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define HSD_ATTN_ENTRY attention_forward_avx512
#include "attention_avx2.cpp"
