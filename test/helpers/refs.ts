// Float64 references shared by the op tests, the gradient tests and the fuzzers (bench/fuzz): group norm,
// layer norm, plain attention, the GEMM epilogue's activations, matmul, the LoRA merged weight and the direct
// convolution, each written once.
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

/** refMatmul's options: transposes, scales, the epilogue's activation and bias, and the old C that beta scales. */
export interface MatmulRefOpts {
  transA?: boolean; transB?: boolean; alpha?: number; beta?: number; act?: Act; bias?: Float64Array; old?: Float64Array;
}
/** C = act(alpha op(A) op(B) + bias) + beta old, batched (B shared when bBatched is false). */
export function refMatmul(a: Float64Array, b: Float64Array, batch: number, M: number, K: number, N: number, bBatched: boolean,
                          o: MatmulRefOpts = {}): Float64Array {
  const c = new Float64Array(batch * M * N);
  const alpha = o.alpha ?? 1, beta = o.beta ?? 0;
  for (let p = 0; p < batch; p++) {
    const ao = p * M * K, bo = bBatched ? p * K * N : 0;
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const av = o.transA ? a[ao + k * M + i] : a[ao + i * K + k];
          const bv = o.transB ? b[bo + j * K + k] : b[bo + k * N + j];
          s += av * bv;
        }
        const idx = p * M * N + i * N + j;
        let v = actRef(alpha * s + (o.bias ? o.bias[j] : 0), o.act ?? 'none');
        if (beta) v += beta * o.old![idx];
        c[idx] = v;
      }
  }
  return c;
}

/** W + scale * up down (W [N, K], down [r, K], up [N, r]; a conv weight [O, kh, kw, C] as [O, kh*kw*C]), the merged
 * weight the LoRA ops must match without forming it. */
export function merged(w: Float64Array, down: Float64Array, up: Float64Array, N: number, K: number, r: number, scale: number): Float64Array {
  const m = Float64Array.from(w);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let j = 0; j < r; j++) s += up[n * r + j] * down[j * K + k];
      m[n * K + k] += scale * s;
    }
  return m;
}

/** A convolution's geometry: x [N, H, W, C], w [O, kh, kw, C]. */
export interface Geom { N: number; H: number; W: number; C: number; O: number; kh: number; kw: number; stride: number; pad: number }
export const outHW = (g: Geom) => [Math.floor((g.H + 2 * g.pad - g.kh) / g.stride) + 1, Math.floor((g.W + 2 * g.pad - g.kw) / g.stride) + 1];
/** The Geom of x of shape xs [N, H, W, C] and w of shape ws [O, kh, kw, C]. */
export const convGeom = (xs: readonly number[], ws: readonly number[], stride: number, pad: number): Geom =>
  ({ N: xs[0], H: xs[1], W: xs[2], C: xs[3], O: ws[0], kh: ws[1], kw: ws[2], stride, pad });

/** NHWC x OHWI cross-correlation with zero padding:
 * y[n, oy, ox, o] = bias[o] + sum x[n, oy*s - p + ky, ox*s - p + kx, c] w[o, ky, kx, c] (+ beta old). */
export function refConv(x: Float64Array, w: Float64Array, g: Geom, bias?: Float64Array, beta = 0, old?: Float64Array): Float64Array {
  const [Ho, Wo] = outHW(g);
  const y = new Float64Array(g.N * Ho * Wo * g.O);
  for (let n = 0; n < g.N; n++)
    for (let oy = 0; oy < Ho; oy++)
      for (let ox = 0; ox < Wo; ox++)
        for (let o = 0; o < g.O; o++) {
          let s = bias ? bias[o] : 0;
          for (let ky = 0; ky < g.kh; ky++) {
            const iy = oy * g.stride - g.pad + ky;
            if (iy < 0 || iy >= g.H) continue;
            for (let kx = 0; kx < g.kw; kx++) {
              const ix = ox * g.stride - g.pad + kx;
              if (ix < 0 || ix >= g.W) continue;
              for (let c = 0; c < g.C; c++) s += x[((n * g.H + iy) * g.W + ix) * g.C + c] * w[((o * g.kh + ky) * g.kw + kx) * g.C + c];
            }
          }
          const i = ((n * Ho + oy) * Wo + ox) * g.O + o;
          y[i] = s + (beta ? beta * old![i] : 0);
        }
  return y;
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
