// Float64 references shared by the op tests, the gradient tests and the fuzzers (bench/fuzz): group norm,
// layer norm, plain attention and the GEMM epilogue's activations, each written once.
import { erf, geluTanh, quickGelu } from '../autograd/fd';

/** group_norm over x [N, S, C] channels-last, G groups, optional fused SiLU; two passes (mean, centred squares). */
export function groupNormRef(x: Float64Array, g: Float64Array, b: Float64Array, N: number, S: number, C: number, G: number, eps: number, act: boolean) {
  const y = new Float64Array(x.length), cg = C / G;
  for (let n = 0; n < N; n++)
    for (let q = 0; q < G; q++) {
      let s1 = 0;
      for (let s = 0; s < S; s++) for (let k = 0; k < cg; k++) s1 += x[(n * S + s) * C + q * cg + k];
      const mean = s1 / (S * cg);
      let s2 = 0;
      for (let s = 0; s < S; s++) for (let k = 0; k < cg; k++) s2 += (x[(n * S + s) * C + q * cg + k] - mean) ** 2;
      const rstd = 1 / Math.sqrt(s2 / (S * cg) + eps);
      for (let s = 0; s < S; s++)
        for (let k = 0; k < cg; k++) {
          const i = (n * S + s) * C + q * cg + k, c = q * cg + k;
          const v = (x[i] - mean) * rstd * g[c] + b[c];
          y[i] = act ? v / (1 + Math.exp(-v)) : v;
        }
    }
  return y;
}

/** Per (n, c) mean and biased variance of y [N, S, C] over the S positions (channel_stats, conv2d's stats). */
export function channelStatsRef(y: ArrayLike<number>, N: number, S: number, C: number): { mean: Float64Array; vr: Float64Array } {
  const mean = new Float64Array(N * C), vr = new Float64Array(N * C);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++) {
      let m = 0;
      for (let s = 0; s < S; s++) m += y[(n * S + s) * C + c];
      m /= S;
      let v = 0;
      for (let s = 0; s < S; s++) v += (y[(n * S + s) * C + c] - m) ** 2;
      mean[n * C + c] = m;
      vr[n * C + c] = v / S;
    }
  return { mean, vr };
}

/** layer_norm over the last dim C of x. */
export function layerNormRef(x: Float64Array, g: Float64Array, b: Float64Array, C: number, eps: number) {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / C; r++) {
    let s1 = 0;
    for (let k = 0; k < C; k++) s1 += x[r * C + k];
    const mean = s1 / C;
    let s2 = 0;
    for (let k = 0; k < C; k++) s2 += (x[r * C + k] - mean) ** 2;
    const rstd = 1 / Math.sqrt(s2 / C + eps);
    for (let k = 0; k < C; k++) y[r * C + k] = (x[r * C + k] - mean) * rstd * g[k] + b[k];
  }
  return y;
}

/** softmax(scale q k^T [causal: keys up to the query]) v per head; q [B, Lq, H*D], k [B, Lk, H*D], v [B, Lk, H*Dv]:
 * the output o [B, Lq, H*Dv] and the logsumexp of the scaled logits lse [B, H, Lq]. */
export function attentionLseRef(q: Float64Array, k: Float64Array, v: Float64Array, B: number, Lq: number, Lk: number, H: number, D: number, Dv: number, scale: number, causal: boolean) {
  const o = new Float64Array(B * Lq * H * Dv), lse = new Float64Array(B * H * Lq);
  const p = new Float64Array(Lk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Lq; i++) {
        const n = causal ? Math.min(Lk, i + 1) : Lk;
        let m = -Infinity;
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let d = 0; d < D; d++) s += q[((b * Lq + i) * H + h) * D + d] * k[((b * Lk + j) * H + h) * D + d];
          p[j] = s * scale;
          m = Math.max(m, p[j]);
        }
        let sum = 0;
        for (let j = 0; j < n; j++) sum += (p[j] = Math.exp(p[j] - m));
        lse[(b * H + h) * Lq + i] = m + Math.log(sum);
        for (let d = 0; d < Dv; d++) {
          let acc = 0;
          for (let j = 0; j < n; j++) acc += p[j] * v[((b * Lk + j) * H + h) * Dv + d];
          o[((b * Lq + i) * H + h) * Dv + d] = acc / sum;
        }
      }
  return { o, lse };
}

/** attentionLseRef's output alone. */
export function attentionRef(q: Float64Array, k: Float64Array, v: Float64Array, B: number, Lq: number, Lk: number, H: number, D: number, Dv: number, scale: number, causal: boolean) {
  return attentionLseRef(q, k, v, B, Lq, Lk, H, D, Dv, scale, causal).o;
}

/** Float64 gradients of sum(dO * attention(q, k, v)) (layouts as attentionRef): with P = softmax(scale q k^T)
 * per row, dv = P^T dO, dP = dO v^T, dS = P (dP - rowsum(P dP)), dq = scale dS k, dk = scale dS^T q. */
export function attentionGradRef(q: Float64Array, k: Float64Array, v: Float64Array, dO: Float64Array, B: number, Lq: number,
  Lk: number, H: number, D: number, Dv: number, scale: number, causal: boolean) {
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  const p = new Float64Array(Lk), dp = new Float64Array(Lk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Lq; i++) {
        const n = causal ? Math.min(Lk, i + 1) : Lk;
        const qi = ((b * Lq + i) * H + h) * D, oi = ((b * Lq + i) * H + h) * Dv;
        let m = -Infinity;
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let d = 0; d < D; d++) s += q[qi + d] * k[((b * Lk + j) * H + h) * D + d];
          p[j] = s * scale;
          m = Math.max(m, p[j]);
        }
        let sum = 0;
        for (let j = 0; j < n; j++) sum += (p[j] = Math.exp(p[j] - m));
        let rowdot = 0;
        for (let j = 0; j < n; j++) {
          p[j] /= sum;
          const vj = ((b * Lk + j) * H + h) * Dv;
          let acc = 0;
          for (let d = 0; d < Dv; d++) {
            acc += dO[oi + d] * v[vj + d];
            dv[vj + d] += p[j] * dO[oi + d];
          }
          dp[j] = acc;
          rowdot += p[j] * acc;
        }
        for (let j = 0; j < n; j++) {
          const ds = p[j] * (dp[j] - rowdot) * scale, kj = ((b * Lk + j) * H + h) * D;
          for (let d = 0; d < D; d++) {
            dq[qi + d] += ds * k[kj + d];
            dk[kj + d] += ds * q[qi + d];
          }
        }
      }
  return { dq, dk, dv };
}

/** The GEMM epilogue's activations (matmul's `act`). */
export type Act = 'none' | 'silu' | 'gelu' | 'gelu_tanh' | 'quick_gelu';
export function actRef(x: number, act: Act): number {
  switch (act) {
    case 'silu': return x / (1 + Math.exp(-x));
    case 'gelu': return 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'gelu_tanh': return geluTanh(x);
    case 'quick_gelu': return quickGelu(x);
    default: return x;
  }
}

export interface Hyper { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number; gradScale: number }

/** PyTorch's AdamW step in float64. */
export function adamwRef(p: Float64Array, g: ArrayLike<number>, m: Float64Array, v: Float64Array, h: Hyper): void {
  const bc1 = 1 - h.beta1 ** h.step, bc2 = 1 - h.beta2 ** h.step;
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * h.gradScale;
    p[i] *= 1 - h.lr * h.weightDecay;
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * gi;
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * gi * gi;
    p[i] -= (h.lr / bc1) * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + h.eps);
  }
}
