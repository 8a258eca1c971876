// Per-channel statistics of an activation, computed by the op that produces it (conv2d's optional second
// output, the `channel_stats` op) so that group_norm need not read its input twice (OPS.md: `group_norm`'s
// optional `stats` input). On this CPU a tensor past the last-level cache is read at ~40-55 GB/s and
// written at ~60 (streaming stores): group norm's statistics pass cost about as much as its apply pass (SD1.5
// VAE, 512x512 x 128 channels: 4.5 ms of 10), while computing them where the producer writes the values (a
// Winograd output tile, in L1) costs a few operations per value.
//
// Format of the result, f32 [N, C, 3]: per image and channel, the mean over the spatial positions as a pair
// of floats (hi = the mean rounded to float, lo = the remainder: hi + lo carries the double mean) and the
// biased variance.
//
// Partials: a producer splits its output into pieces (a Winograd tile, a block of rows), each summarised by
// one thread as per-channel (K, o, M2) floats: K a pivot (the piece's first pixel), mean = K + o, M2 the
// centred sum of squares; `combine` then merges each image's pieces in index order in double (Chan et al.),
// so the result depends neither on the thread count nor on the scheduling.
#pragma once
#include <cstdint>
#include <vector>

#include "hypersd/ops.h"

namespace hsd {
namespace chanstats {

constexpr int64_t kPart = 3;  // floats per channel of a piece's partial: K, o, M2

// Floats of scratch a `moments` or `partial` call over C channels needs (8-byte aligned).
constexpr int64_t scratch_floats(int64_t C) { return 6 * C; }

// Per-channel mean and centred sum of squares M2 (double) of `runs` runs of `len` contiguous pixels of C
// channels, run r at p + r * run_stride floats: float sums of x - K and its square (K the first pixel; the
// vector kernels of group_norm's statistics, by4 as there), folded in double; a channel whose sums cancel more
// than 16-fold (an outlier pivot) is summed again in double around its mean, a NaN propagates. group_norm's own
// statistics pass takes its blocks' moments from here too.
void moments(const float* p, int64_t runs, int64_t len, int64_t run_stride, int64_t C, double* mean, double* m2,
             float* scratch, bool by4);

// The partial (K, o, M2 planar) of such a piece into part[C * 3].
void partial(const float* p, int64_t runs, int64_t len, int64_t run_stride, int64_t C, float* part, float* scratch);

// Merges the partials of N images: image n's pieces are [n * per_image, (n + 1) * per_image), piece i at
// part + i * C * 3 summarising count[i] pixels (a piece of 0 pixels is skipped). out: f32 [N, C, 3].
void combine(const float* part, const int64_t* count, int64_t N, int64_t per_image, int64_t C, float* out,
             ThreadPool* pool);

// The statistics of y [N, S, C] read back after the fact (producers without a fused path; `channel_stats`).
void of_rows(const float* y, int64_t N, int64_t S, int64_t C, float* out, ThreadPool* pool);

// Checks an f32 [N, C, 3] statistics tensor for `op`'s `what`.
void check(const char* op, const char* what, const Tensor& st, int64_t N, int64_t C);

}  // namespace chanstats
}  // namespace hsd
