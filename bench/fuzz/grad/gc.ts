import { hs, check, setSeed, ri, pick, rnd, prod, ACTS, summary, rand, type In } from './h';
const o = hs.ops;
const ITER = Number(process.argv[2] ?? 20), SEED = Number(process.argv[3] ?? 1);
function matmulRef(A: Float64Array, as: number[], B: Float64Array, bs: number[], op: { tA?: boolean; tB?: boolean; alpha?: number; bias?: Float64Array; act?: keyof typeof ACTS }) {
  const ra = as.length, rb = bs.length;
  const M = op.tA ? as[ra - 1] : as[ra - 2], K = op.tA ? as[ra - 2] : as[ra - 1];
  const N = op.tB ? bs[rb - 2] : bs[rb - 1];
  const batch = prod(as.slice(0, ra - 2)), bB = rb > 2;
  const f = ACTS[op.act ?? 'none'], alpha = op.alpha ?? 1;
  const C = new Float64Array(batch * M * N);
  for (let b = 0; b < batch; b++) for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += A[b * M * K + (op.tA ? k * M + m : m * K + k)] * B[(bB ? b * K * N : 0) + (op.tB ? n * K + k : k * N + n)];
    C[(b * M + m) * N + n] = f(alpha * s + (op.bias ? op.bias[n] : 0));
  }
  return C;
}
// conv NHWC x OHWI
function convRef(x: Float64Array, xs: number[], w: Float64Array, ws: number[], b: Float64Array | null, stride: number, pad: number) {
  const [N, H, W, C] = xs, [Co, kh, kw] = ws;
  const Ho = Math.floor((H + 2 * pad - kh) / stride) + 1, Wo = Math.floor((W + 2 * pad - kw) / stride) + 1;
  const y = new Float64Array(N * Ho * Wo * Co);
  for (let n = 0; n < N; n++) for (let i = 0; i < Ho; i++) for (let j = 0; j < Wo; j++) for (let co = 0; co < Co; co++) {
    let s = b ? b[co] : 0;
    for (let p = 0; p < kh; p++) { const hi = i * stride - pad + p; if (hi < 0 || hi >= H) continue;
      for (let q = 0; q < kw; q++) { const wi = j * stride - pad + q; if (wi < 0 || wi >= W) continue;
        const xo = ((n * H + hi) * W + wi) * C, wo = ((co * kh + p) * kw + q) * C;
        for (let c = 0; c < C; c++) s += x[xo + c] * w[wo + c]; } }
    y[((n * Ho + i) * Wo + j) * Co + co] = s;
  }
  return { y, shape: [N, Ho, Wo, Co] };
}
const fr = (i: In, f: boolean): In => (f ? { ...i, diff: false } : i);
async function main() {
  for (let it = 0; it < ITER; it++) {
    setSeed(SEED * 1000 + it);
    // matmul
    {
      const tA = rand() < 0.5, tB = rand() < 0.5, bB = rand() < 0.5;
      const M = pick([1, 2, 3, 7, 8, 13, 17]), K = pick([1, 3, 5, 8, 16, 33, 40]), N = pick([1, 2, 5, 8, 9, 16, 17, 24]);
      const batch = pick([[], [1], [2], [2, 3]]) as number[];
      const as = [...batch, ...(tA ? [K, M] : [M, K])], bs = [...(bB && batch.length ? batch : []), ...(tB ? [N, K] : [K, N])];
      const alpha = pick([1, 0.7, -1.3]);
      const act = pick(Object.keys(ACTS)) as keyof typeof ACTS, hasBias = rand() < 0.5;
      const aIn = batch.length === 0 && as.length < 2 ? null : 1;
      if (as.length >= 2 && bs.length >= 2) {
        const ins = [rnd(as), rnd(bs), ...(hasBias ? [rnd([N])] : [])];
        if (rand() < 0.15) ins[0] = fr(ins[0], true); else if (rand() < 0.15) ins[1] = fr(ins[1], true);
        await check('matmul', `a${as} b${bs} tA${+tA} tB${+tB} al${alpha} ${act} bias${+hasBias}`, ins,
          (t) => o.matmul(t[0], t[1], { transA: tA, transB: tB, alpha, act, bias: hasBias ? t[2] : null }),
          (x) => matmulRef(x[0], as, x[1], bs, { tA, tB, alpha, act, bias: hasBias ? x[2] : undefined }));
      }
      void aIn;
    }
    // linear (rank 1..3 x) + lora
    {
      const K = pick([1, 3, 8, 17, 40]), N = pick([1, 4, 8, 9, 16, 33]), lead = pick([[], [3], [2, 5], [1, 1]]) as number[];
      const xs = [...lead, K], act = pick(Object.keys(ACTS)) as keyof typeof ACTS, hasBias = rand() < 0.6;
      const mx = lead.length ? xs : [1, K];
      await check('linear', `x${xs} N${N} ${act} bias${+hasBias}`, [rnd(xs), rnd([N, K]), ...(hasBias ? [rnd([N])] : [])],
        (t) => o.linear(t[0], t[1], hasBias ? t[2] : null, act), (x) => matmulRef(x[0], mx, x[1], [N, K], { tB: true, act, bias: hasBias ? x[2] : undefined }));
      const r = pick([1, 2, 4, 8]), s = pick([0.5, 1, -2]);
      const frozenW = rand() < 0.5;
      const ins = [rnd(xs), fr(rnd([N, K]), frozenW), ...(hasBias ? [fr(rnd([N]), frozenW)] : []), rnd([r, K]), rnd([N, r])];
      const rank1 = lead.length === 0;
      if (!rank1) await check('lora_linear', `x${xs} N${N} r${r} s${s} bias${+hasBias} frozenW${+frozenW}`, ins,
        (t) => o.loraLinear(t[0], t[1], hasBias ? t[2] : null, t[t.length - 2], t[t.length - 1], s),
        (x) => { const y = matmulRef(x[0], xs, x[1], [N, K], { tB: true, bias: hasBias ? x[2] : undefined });
          const tt = matmulRef(x[0], xs, x[x.length - 2], [r, K], { tB: true }); const u = matmulRef(tt, [...lead, r], x[x.length - 1], [N, r], { tB: true });
          return y.map((v, i) => v + s * u[i]); });
    }
    // conv2d
    {
      const stride = pick([1, 1, 2]), pad = pick([0, 1, 1, 2]);
      const kh = pick([1, 3, 3, 2, 1]), kw = pick([1, 3, 3, 2, 5]);
      const H = ri(Math.max(1, kh - 2 * pad), 9), W = ri(Math.max(1, kw - 2 * pad), 9);
      const N = pick([1, 2]), C = pick([1, 3, 4, 8, 16, 17]), Co = pick([1, 2, 5, 8, 16, 19]);
      const hasBias = rand() < 0.5, algo = (kh === 3 && kw === 3 && stride === 1) ? pick(['auto', 'gemm', 'winograd', 'winograd4'] as const) : 'auto';
      const xs = [N, H, W, C], ws = [Co, kh, kw, C];
      const ins = [rnd(xs), rnd(ws), ...(hasBias ? [rnd([Co])] : [])];
      const fz = rand(); if (fz < 0.15) ins[0] = fr(ins[0], true); else if (fz < 0.3) ins[1] = fr(ins[1], true);
      const tol = algo.startsWith('winograd') ? 3e-4 : 1e-4;
      await check('conv2d', `x${xs} w${ws} s${stride} p${pad} bias${+hasBias} ${algo} fz${fz < 0.3 ? (fz < 0.15 ? 'x' : 'w') : '-'}`, ins,
        (t) => o.conv2d(t[0], t[1], hasBias ? t[2] : null, { stride, pad, algo }),
        (x) => convRef(x[0], xs, x[1], ws, hasBias ? x[2] : null, stride, pad).y, tol, algo.startsWith('winograd') ? 1e-4 : 1e-5);
      // lora conv
      if (it % 2 === 0) {
        const r = pick([1, 2, 4]), s = pick([0.5, -1.5]);
        const ins2 = [rnd(xs), rnd(ws), ...(hasBias ? [rnd([Co])] : []), rnd([r, kh, kw, C]), rnd([Co, r])];
        await check('lora_conv2d', `x${xs} w${ws} s${stride} p${pad} r${r} bias${+hasBias}`, ins2,
          (t) => o.loraConv2d(t[0], t[1], hasBias ? t[2] : null, t[t.length - 2], t[t.length - 1], s, { stride, pad }),
          (x) => { const y = convRef(x[0], xs, x[1], ws, hasBias ? x[2] : null, stride, pad); const d = convRef(x[0], xs, x[x.length - 2], [r, kh, kw, C], null, stride, pad);
            const u = matmulRef(d.y, [prod(d.shape.slice(0, 3)), r], x[x.length - 1], [Co, r], { tB: true }); return y.y.map((v, i) => v + s * u[i]); });
      }
    }
  }
  summary();
}
main();
