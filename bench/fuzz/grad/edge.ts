import { hs, check, setSeed, ri, pick, rnd, prod, summary, rand, silu, gelu, randnArr, type In } from './h';
const o = hs.ops;
const mmT = (a: Float64Array, M: number, K: number, b: Float64Array, N: number) => { const y = new Float64Array(M * N); for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) { let s = 0; for (let k = 0; k < K; k++) s += a[m * K + k] * b[n * K + k]; y[m * N + n] = s; } return y; };
function attnRef(q: Float64Array, k: Float64Array, v: Float64Array, L: number, H: number, D: number) {
  const out = new Float64Array(L * H * D), sc = 1 / Math.sqrt(D);
  for (let h = 0; h < H; h++) for (let i = 0; i < L; i++) { const p: number[] = []; let m = -Infinity;
    for (let j = 0; j < L; j++) { let s = 0; for (let d = 0; d < D; d++) s += q[(i * H + h) * D + d] * k[(j * H + h) * D + d]; p.push(s * sc); m = Math.max(m, s * sc); }
    let sum = 0; for (let j = 0; j < L; j++) sum += (p[j] = Math.exp(p[j] - m));
    for (let d = 0; d < D; d++) { let a = 0; for (let j = 0; j < L; j++) a += p[j] * v[(j * H + h) * D + d]; out[(i * H + h) * D + d] = a / sum; } }
  return out;
}
function convRef(x: Float64Array, xs: number[], w: Float64Array, ws: number[], stride: number, pad: number) {
  const [N, H, W, C] = xs, [Co, kh, kw] = ws; const Ho = Math.floor((H + 2 * pad - kh) / stride) + 1, Wo = Math.floor((W + 2 * pad - kw) / stride) + 1;
  const y = new Float64Array(N * Ho * Wo * Co);
  for (let n = 0; n < N; n++) for (let i = 0; i < Ho; i++) for (let j = 0; j < Wo; j++) for (let co = 0; co < Co; co++) { let s = 0;
    for (let p = 0; p < kh; p++) { const hi = i * stride - pad + p; if (hi < 0 || hi >= H) continue; for (let q = 0; q < kw; q++) { const wi = j * stride - pad + q; if (wi < 0 || wi >= W) continue;
      for (let c = 0; c < C; c++) s += x[((n * H + hi) * W + wi) * C + c] * w[((co * kh + p) * kw + q) * C + c]; } }
    y[((n * Ho + i) * Wo + j) * Co + co] = s; }
  return y;
}
(async () => {
  setSeed(99);
  // self-attention with q = k = v the same tensor
  for (const [L, H, D] of [[5, 2, 3], [17, 1, 40], [9, 3, 8]]) await check('attn_qkv_same', `L${L} H${H} D${D}`, [rnd([1, L, H * D])], ([x]) => o.attention(x, x, x, { heads: H }), ([x]) => attnRef(x, x, x, L, H, D), 2e-4);
  // x @ x^T
  for (const [M, K] of [[3, 4], [17, 9]]) await check('matmul_same', `x x^T M${M} K${K}`, [rnd([M, K])], ([x]) => o.matmul(x, x, { transB: true }), ([x]) => mmT(x, M, K, x, M));
  // conv: same tensor as x and w (1x1, C == Co)
  await check('conv_same', 'x as weight', [rnd([1, 4, 4, 4])], ([x]) => o.conv2d(x, x, null, { pad: 1 }), ([x]) => convRef(x, [1, 4, 4, 4], x, [1, 4, 4, 4], 1, 1));
  // conv beta=1 accumulate into out that needs grad
  for (const [s, p] of [[1, 1], [2, 0], [2, 1]]) {
    const xs = [2, 7, 6, 5], ws = [4, 3, 3, 5];
    await check('conv_beta', `s${s} p${p}`, [rnd(xs), rnd(ws), rnd(ws)], ([x, w1, w2]) => { const y = o.conv2d(x, w1, null, { stride: s, pad: p }); return o.conv2d(x, w2, null, { stride: s, pad: p, beta: 1, out: y }); },
      ([x, w1, w2]) => { const a = convRef(x, xs, w1, ws, s, p), b = convRef(x, xs, w2, ws, s, p); return a.map((v, i) => v + b[i]); });
  }
  // conv input from slice / permute view
  {
    const xs = [1, 4, 6, 5];
    await check('conv_of_permute', 'NCHW->NHWC then conv', [rnd([1, 5, 4, 6]), rnd([3, 3, 3, 5])], ([x, w]) => o.conv2d(o.permute(x, [0, 2, 3, 1]), w, null, { pad: 1 }),
      ([x, w]) => { const xp = new Float64Array(x.length); for (let c = 0; c < 5; c++) for (let h = 0; h < 4; h++) for (let ww = 0; ww < 6; ww++) xp[(h * 6 + ww) * 5 + c] = x[(c * 4 + h) * 6 + ww]; return convRef(xp, xs, w, [3, 3, 3, 5], 1, 1); });
    await check('linear_of_slice', 'slice step 2 channels then linear', [rnd([3, 10]), rnd([4, 5])], ([x, w]) => o.linear(o.slice(x, 1, 0, 5, 2), w),
      ([x, w]) => { const xp = new Float64Array(15); for (let m = 0; m < 3; m++) for (let k = 0; k < 5; k++) xp[m * 5 + k] = x[m * 10 + 2 * k]; return mmT(xp, 3, 5, w, 4); });
    await check('matmul_of_permute', 'permute(x)[K,M] via transA', [rnd([2, 5, 3]), rnd([2, 5, 4])], ([a, b]) => o.matmul(o.permute(a, [0, 2, 1]), b),
      ([a, b]) => { const y = new Float64Array(2 * 3 * 4); for (let bb = 0; bb < 2; bb++) for (let m = 0; m < 3; m++) for (let n = 0; n < 4; n++) { let s = 0; for (let k = 0; k < 5; k++) s += a[(bb * 5 + k) * 3 + m] * b[(bb * 5 + k) * 4 + n]; y[(bb * 3 + m) * 4 + n] = s; } return y; });
  }
  // group norm reshaped from NHWC 4D, overwrite under autograd
  {
    const [N, S, C, G] = [2, 6, 8, 4];
    const gn = (x: Float64Array, g: Float64Array, b: Float64Array, act: boolean) => { const y = new Float64Array(x.length), cg = C / G;
      for (let n = 0; n < N; n++) for (let q = 0; q < G; q++) { let m = 0, v = 0; for (let s = 0; s < S; s++) for (let k = 0; k < cg; k++) m += x[(n * S + s) * C + q * cg + k]; m /= S * cg;
        for (let s = 0; s < S; s++) for (let k = 0; k < cg; k++) v += (x[(n * S + s) * C + q * cg + k] - m) ** 2; const rs = 1 / Math.sqrt(v / (S * cg) + 1e-5);
        for (let s = 0; s < S; s++) for (let k = 0; k < cg; k++) { const i = (n * S + s) * C + q * cg + k; const z = (x[i] - m) * rs * g[q * cg + k] + b[q * cg + k]; y[i] = act ? silu(z) : z; } } return y; };
    try {
      await check('gn_overwrite', 'overwrite on an intermediate (x*2)', [rnd([N, S, C]), rnd([C], 1, 1), rnd([C])], ([x, g, b]) => o.groupNorm(o.mul(x, 2), g, b, { groups: G, silu: true, overwrite: true }),
        ([x, g, b]) => gn(x.map((v) => 2 * v), g, b, true));
    } catch (e) { console.log('gn_overwrite threw', (e as Error).message); }
    await check('gn_4d_reshape', 'x [N,2,3,C] reshaped', [rnd([N, 2, 3, C]), rnd([C], 1, 1), rnd([C])], ([x, g, b]) => o.groupNorm(x.reshape([N, S, C]), g, b, { groups: G, silu: false }), ([x, g, b]) => gn(x, g, b, false));
  }
  // linearGeglu under autograd: must either throw or give correct grads
  for (const N of [8, 16]) {
    const K = 5, R = 3;
    try {
      await check('linear_geglu', `N2=${2 * N} (fused path if %16)`, [rnd([R, K]), rnd([2 * N, K], 0.5), rnd([2 * N])], ([x, w, b]) => o.linearGeglu(x, w, b),
        ([x, w, b]) => { const h = mmT(x, R, K, w, 2 * N); const y = new Float64Array(R * N); for (let r = 0; r < R; r++) for (let i = 0; i < N; i++) y[r * N + i] = (h[r * 2 * N + i] + b[i]) * gelu(h[r * 2 * N + N + i] + b[N + i]); return y; });
    } catch (e) { console.log('linear_geglu threw', (e as Error).message); }
  }
  // unary grads, clamp, affine, mean/sumTo
  await check('exp', '', [rnd([3, 7])], ([x]) => o.exp(x), ([x]) => x.map(Math.exp));
  await check('log', '', [{ shape: [9], data: Array.from(randnArr(9), (v) => Math.abs(v) + 0.3) }], ([x]) => o.log(x), ([x]) => x.map(Math.log));
  await check('sqrt', '', [{ shape: [9], data: Array.from(randnArr(9), (v) => Math.abs(v) + 0.3) }], ([x]) => o.sqrt(x), ([x]) => x.map(Math.sqrt));
  await check('sumTo', '[2,3,4]->[1,4]', [rnd([2, 3, 4])], ([x]) => o.sumTo(x, [1, 4], 2), ([x]) => { const y = new Float64Array(4); for (let i = 0; i < 24; i++) y[i % 4] += 2 * x[i]; return y; });
  await check('mean', '[2,3,4] axes[1] keep', [rnd([2, 3, 4])], ([x]) => o.mean(x, [1], true), ([x]) => { const y = new Float64Array(8); for (let n = 0; n < 2; n++) for (let i = 0; i < 3; i++) for (let k = 0; k < 4; k++) y[n * 4 + k] += x[(n * 3 + i) * 4 + k] / 3; return y; });
  // gradient flows through the second output (lse) of attention?
  try {
    const L = 4, H = 1, D = 3;
    await check('attn_lse_grad', 'loss on lse', [rnd([1, L, D]), rnd([1, L, D]), rnd([1, L, D])], ([q, k, v]) => o.attention(q, k, v, { heads: H, returnLse: true }).lse,
      ([q, k]) => { const y = new Float64Array(L); const sc = 1 / Math.sqrt(D); for (let i = 0; i < L; i++) { let m = -Infinity; const s: number[] = []; for (let j = 0; j < L; j++) { let t = 0; for (let d = 0; d < D; d++) t += q[i * D + d] * k[j * D + d]; s.push(t * sc); m = Math.max(m, t * sc); } y[i] = m + Math.log(s.reduce((a, b) => a + Math.exp(b - m), 0)); } return y; });
  } catch (e) { console.log('attn lse threw', (e as Error).message); }
  summary();
})();
