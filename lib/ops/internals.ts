/**
 * Internal knobs of the ops, not part of the public API (lib/ops/index.ts does not re-export this file); tests
 * import it to reach code paths that real sizes only reach with gigabytes of data.
 */

/** The f32 scores one query chunk of the one-head GEMM attention may take (lib/ops/attention.ts). */
export const attentionInternals = { chunkBytes: 256 * 2 ** 20 };
