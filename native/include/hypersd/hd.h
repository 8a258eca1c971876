// HSD_HD: a function compiled for both host and device under nvcc (plain inline elsewhere), for the scalar code
// the CPU and CUDA kernels share verbatim (philox.h, act_scalar.h).
#pragma once

#if defined(__CUDACC__)
#define HSD_HD __host__ __device__ __forceinline__
#else
#define HSD_HD inline
#endif
