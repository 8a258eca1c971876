// Per-channel statistics on CUDA (OPS.md `channel_stats`, conv2d's stats output, group_norm's stats input; the
// CPU side and the format are native/cpu/chanstats.h): f32 [N, C, 3] per image and channel, the mean as hi + lo
// floats and the biased variance.
//
// Pieces: a producer summarises blocks of rows as per-channel (K, o, M2) float triples, K a pivot (the block's
// first row), mean = K + o, M2 the centred sum of squares; cs_combine merges each image's pieces in index order
// in double (Chan et al.): deterministic. The convolution's tensor-core kernel writes one piece per 128-row
// output tile from its epilogue (gemm_core.cuh, tc_gemm_kernel<..., STATS>), reading back the values it has
// just stored (the rounded ones group_norm will read); cs_of_rows is the read-back pass for everything else.
#pragma once
#include "common.cuh"

namespace hsd {
namespace cu {

// Merges the pieces of N images: image n's are [n * per_image, (n + 1) * per_image), piece i at
// part + i * C * 3 ([C][3]: K, o, M2), piece k of an image covering min(rpc, S - k rpc) rows. out: f32 [N, C, 3].
void cs_combine(const float* part, int64_t N, int64_t per_image, int64_t rpc, int64_t S, int64_t C, float* out,
                cudaStream_t s);

// The statistics of x [N, S, C] (contiguous, f32 / f16 / bf16) read back after the fact, into out f32 [N, C, 3].
void cs_of_rows(const Tensor& x, int64_t N, int64_t S, int64_t C, float* out, cudaStream_t s);

// Checks an f32 [N, C, 3] contiguous CUDA statistics tensor for `op`'s `what`.
void cs_check(const char* op, const char* what, const Tensor& st, int64_t N, int64_t C);

}  // namespace cu
}  // namespace hsd
