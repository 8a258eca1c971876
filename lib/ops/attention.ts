/**
 * Multi-head attention on the networks' [B, L, H*D] layout (see native/cpu/attention.cpp and OPS.md):
 * o = softmax(scale * q k^T [+ causal mask]) v per head, flash-style (no L x L matrix in memory).
 * Causal masking is top-left aligned (query i sees keys 0..i), like torch's SDPA with is_causal=True.
 */
import { attentionInternals } from './internals';
import { tidy, type Tensor } from '../tensor';
import { matmul } from './gemm';
import { softmax } from './activation';
import { asDtype, concat, slice } from './shape';
import { checkFloat, checkRank, checkSameDevice, out, runOp, shapeStr } from './runtime';

export interface AttentionOptions {
  /** Number of heads H; q/k channels are H*D, v channels H*Dv. */
  heads: number;
  /** Logit scale, default 1/sqrt(D). */
  scale?: number;
  /** Mask keys after the query's own position (CLIP text encoder). */
  causal?: boolean;
  /** Also return lse [B, H, Lq] (f32): the log-sum-exp of each query row's scaled logits (for backward). */
  returnLse?: boolean;
}

/**
 * @example
 * const o = attention(q, k, v, { heads: 8 });                        // q [2, 4096, 320], k/v [2, 77, 320]
 * const { out, lse } = attention(q, k, v, { heads: 8, returnLse: true });
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions & { returnLse: true }): { out: Tensor; lse: Tensor };
export function attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions & { returnLse?: false }): Tensor;
export function attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions): Tensor | { out: Tensor; lse: Tensor };
export function attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions): Tensor | { out: Tensor; lse: Tensor } {
  const op = 'attention';
  checkFloat(op, 'q', q);
  checkFloat(op, 'k', k);
  checkFloat(op, 'v', v);
  checkRank(op, 'q', q, 3);
  checkRank(op, 'k', k, 3);
  checkRank(op, 'v', v, 3);
  checkSameDevice(op, { q, k, v });
  const H = o?.heads;
  if (!Number.isInteger(H) || H < 1) throw new Error(`${op}: heads must be a positive integer, got ${H}`);
  const [B, Lq, C] = q.shape;
  const [Bk, Lk, Ck] = k.shape;
  const [Bv, Lv, Cv] = v.shape;
  if (Bk !== B || Bv !== B) throw new Error(`${op}: batch sizes differ: q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}, v ${shapeStr(v.shape)}`);
  if (Ck !== C) throw new Error(`${op}: k ${shapeStr(k.shape)} must have q's channels (q ${shapeStr(q.shape)})`);
  if (Lv !== Lk) throw new Error(`${op}: v ${shapeStr(v.shape)} must have k's length (k ${shapeStr(k.shape)})`);
  if (Lk < 1) throw new Error(`${op}: k ${shapeStr(k.shape)} has no keys`);
  if (C % H !== 0 || Cv % H !== 0)
    throw new Error(`${op}: heads ${H} must divide the channels of q ${shapeStr(q.shape)} and v ${shapeStr(v.shape)}`);
  const D = C / H;
  if (o.scale === undefined && D === 0)
    throw new Error(`${op}: q ${shapeStr(q.shape)} has head dim 0, so the default scale 1/sqrt(head dim) is infinite: pass a scale`);
  const scale = o.scale ?? 1 / Math.sqrt(D);
  if (!Number.isFinite(scale)) throw new Error(`${op}: scale must be a finite number, got ${o.scale}`);
  // One head wider than the GPU tensor-core kernel's 160 channels (the VAE's 512-channel head): composed from
  // f32 GEMMs and a softmax over query chunks (scores in f32, <= 256 MiB per chunk). On the GPU the SIMT kernel
  // manages ~2 TFLOP/s against ~30 for the f32 GEMM; on the CPU the flash kernel ~60 GFLOP/s at d = 512
  // against ~130 for the GEMM.
  if (H === 1 && C > 160 && !o.causal && !o.returnLse && q.shape[0] * q.shape[1] > 0) return attentionByGemm(q, k, v, scale);
  const y = out([B, Lq, Cv], q);
  const attrs = { heads: H, scale, causal: !!o.causal };
  if (!o.returnLse) {
    runOp(op, [q, k, v], [y], attrs);
    return y;
  }
  const lse = out([B, H, Lq], q, 'f32');
  runOp(op, [q, k, v], [y, lse], attrs);
  return { out: y, lse };
}

/** attention(...) with returnLse: the output and lse [B, H, Lq]. */
export function attentionWithLse(q: Tensor, k: Tensor, v: Tensor, o: Omit<AttentionOptions, 'returnLse'>): { out: Tensor; lse: Tensor } {
  return attention(q, k, v, { ...o, returnLse: true });
}

/** One head, no mask: softmax(q k^T scale) v per batch item and query chunk, in f32 GEMMs; the output in q's dtype. */
function attentionByGemm(q: Tensor, k: Tensor, v: Tensor, scale: number): Tensor {
  return tidy(() => {
    const f32 = (t: Tensor) => asDtype(t, 'f32');
    const [B, Lq, D] = q.shape, Lk = k.shape[1], Dv = v.shape[2];
    const chunk = Math.max(1, Math.min(Lq, Math.floor(attentionInternals.chunkBytes / (4 * Lk))));
    const outs: Tensor[] = [];
    for (let b = 0; b < B; b++) {
      const kb = f32(slice(k, 0, b, 1).reshape([Lk, D])), vb = f32(slice(v, 0, b, 1).reshape([Lk, Dv]));
      for (let s = 0; s < Lq; s += chunk) {
        const n = Math.min(chunk, Lq - s);
        const qc = f32(slice(slice(q, 0, b, 1), 1, s, n).reshape([n, D]));
        // Each chunk's scores and probabilities go as soon as they are used (the next chunk's take their
        // blocks): kept to the end of the tidy, the VAE's mid-block attention at 1024x1024 (16384 pixels, four
        // chunks) held 2 GB of them.
        const scores = matmul(qc, kb, { transB: true });
        const probs = softmax(scores, scale);
        scores.dispose();
        outs.push(matmul(probs, vb));
        probs.dispose();
      }
    }
    const o = (outs.length === 1 ? outs[0] : concat(outs, 0)).reshape([B, Lq, Dv]);
    return asDtype(o, q.dtype);
  });
}
