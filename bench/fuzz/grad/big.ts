// larger shapes with analytic float64 gradients (hit SIMD / tiling / winograd paths)
import { hs, setSeed, ri, pick, rnd, prod, rand, randnArr, f32r, type In } from './h';
import { grad } from '../../../lib/autograd';
const o = hs.ops;
const ITER = Number(process.argv[2] ?? 10), SEED = Number(process.argv[3] ?? 1), ONLY = process.argv[4];
const fails: string[] = []; const counts: Record<string, number> = {};
const rel = (a: ArrayLike<number>, b: ArrayLike<number>) => { let n = 0, d = 0; for (let i = 0; i < b.length; i++) { if (!Number.isFinite(a[i])) return Infinity; n += (a[i] - b[i]) ** 2; d += b[i] ** 2; } return Math.sqrt(n / Math.max(d, 1e-4 * b.length)); };
async function check2(op: string, desc: string, ins: In[], fwd: (ts: hs.Tensor[]) => hs.Tensor, ref: (xs: Float64Array[], r: Float64Array) => { y: ArrayLike<number>; g: (ArrayLike<number> | null)[] }, tol = 1e-4) {
  counts[op] = (counts[op] ?? 0) + 1;
  const ts = ins.map((i) => hs.tensor(Float32Array.from(i.data as any), i.shape));
  const xs = ins.map((i) => f32r(i.data));
  const params = ts.filter((_, k) => ins[k].diff !== false);
  let y0len = 0; { const t = hs.ops; void t; }
  // first the forward to learn the output size
  const yt = fwd(ts); y0len = yt.size; yt.dispose();
  const r = f32r(randnArr(y0len));
  const dLoss = hs.tensor(Float32Array.from(r), [y0len]);
  const { loss, grads } = grad(() => fwd(ts).reshape([y0len]), params, { dLoss });
  const R = ref(xs, r); const msgs: string[] = [];
  const fe = rel(await loss.floats(), R.y); if (!(fe < 2e-5)) msgs.push(`fwd ${fe.toExponential(2)}`);
  for (let k = 0; k < ins.length; k++) {
    const g = grads.get(ts[k]);
    if (ins[k].diff === false) { if (g) msgs.push(`frozen ${k} got grad`); continue; }
    const e = rel(await g!.floats(), R.g[k]!); if (!(e < tol)) msgs.push(`grad in${k} rel ${e.toExponential(2)}`);
  }
  loss.dispose(); dLoss.dispose(); for (const g of grads.values()) g.dispose(); for (const t of ts) t.dispose();
  if (msgs.length) { const m = `${op} ${desc}: ${msgs.join('; ')}`; fails.push(m); console.log('FAIL', m); }
}
function conv(x: Float64Array, xs: number[], w: Float64Array, ws: number[], b: Float64Array | null, stride: number, pad: number, r: Float64Array) {
  const [N, H, W, C] = xs, [Co, kh, kw] = ws;
  const Ho = Math.floor((H + 2 * pad - kh) / stride) + 1, Wo = Math.floor((W + 2 * pad - kw) / stride) + 1;
  const y = new Float64Array(N * Ho * Wo * Co), dx = new Float64Array(x.length), dw = new Float64Array(w.length), db = new Float64Array(Co);
  for (let n = 0; n < N; n++) for (let i = 0; i < Ho; i++) for (let j = 0; j < Wo; j++) for (let co = 0; co < Co; co++) {
    const yi = ((n * Ho + i) * Wo + j) * Co + co; const g = r[yi]; let s = b ? b[co] : 0; db[co] += g;
    for (let p = 0; p < kh; p++) { const hi = i * stride - pad + p; if (hi < 0 || hi >= H) continue;
      for (let q = 0; q < kw; q++) { const wi = j * stride - pad + q; if (wi < 0 || wi >= W) continue;
        const xo = ((n * H + hi) * W + wi) * C, wo = ((co * kh + p) * kw + q) * C;
        for (let c = 0; c < C; c++) { s += x[xo + c] * w[wo + c]; dx[xo + c] += g * w[wo + c]; dw[wo + c] += g * x[xo + c]; } } }
    y[yi] = s;
  }
  return { y, g: [dx, dw, db] };
}
function attn(q: Float64Array, k: Float64Array, v: Float64Array, B: number, Lq: number, Lk: number, H: number, D: number, Dv: number, sc: number, causal: boolean, r: Float64Array) {
  const y = new Float64Array(B * Lq * H * Dv), dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  const p = new Float64Array(Lk), dp = new Float64Array(Lk);
  const Q = (b: number, i: number, h: number) => ((b * Lq + i) * H + h) * D, K = (b: number, j: number, h: number) => ((b * Lk + j) * H + h) * D, V = (b: number, j: number, h: number) => ((b * Lk + j) * H + h) * Dv, O = (b: number, i: number, h: number) => ((b * Lq + i) * H + h) * Dv;
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < Lq; i++) {
    const n = causal ? Math.min(Lk, i + 1) : Lk; let m = -Infinity;
    for (let j = 0; j < n; j++) { let s = 0; for (let d = 0; d < D; d++) s += q[Q(b, i, h) + d] * k[K(b, j, h) + d]; p[j] = s * sc; m = Math.max(m, p[j]); }
    let sum = 0; for (let j = 0; j < n; j++) sum += (p[j] = Math.exp(p[j] - m)); for (let j = 0; j < n; j++) p[j] /= sum;
    for (let d = 0; d < Dv; d++) { let acc = 0; for (let j = 0; j < n; j++) acc += p[j] * v[V(b, j, h) + d]; y[O(b, i, h) + d] = acc; }
    let dot = 0;
    for (let j = 0; j < n; j++) { let s = 0; for (let d = 0; d < Dv; d++) { const g = r[O(b, i, h) + d]; s += g * v[V(b, j, h) + d]; dv[V(b, j, h) + d] += p[j] * g; } dp[j] = s; dot += s * p[j]; }
    for (let j = 0; j < n; j++) { const ds = p[j] * (dp[j] - dot) * sc; for (let d = 0; d < D; d++) { dq[Q(b, i, h) + d] += ds * k[K(b, j, h) + d]; dk[K(b, j, h) + d] += ds * q[Q(b, i, h) + d]; } }
  }
  return { y, g: [dq, dk, dv] };
}

function mmA(A: Float64Array, as: number[], Bm: Float64Array, bs: number[], tA: boolean, tB: boolean, alpha: number, bias: Float64Array | null, act: string, r: Float64Array) {
  const ra = as.length, rb = bs.length, M = tA ? as[ra - 1] : as[ra - 2], K = tA ? as[ra - 2] : as[ra - 1], N = tB ? bs[rb - 2] : bs[rb - 1];
  const batch = prod(as.slice(0, ra - 2)), bB = rb > 2;
  const y = new Float64Array(batch * M * N), dA = new Float64Array(A.length), dB = new Float64Array(Bm.length), db = new Float64Array(N);
  const sg = (x: number) => 1 / (1 + Math.exp(-x));
  const f = (x: number) => act === 'silu' ? x * sg(x) : act === 'quick_gelu' ? x * sg(1.702 * x) : x;
  const df = (x: number) => act === 'silu' ? sg(x) * (1 + x * (1 - sg(x))) : act === 'quick_gelu' ? sg(1.702 * x) * (1 + 1.702 * x * (1 - sg(1.702 * x))) : 1;
  for (let b = 0; b < batch; b++) for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let s = 0; const ai = (k: number) => b * M * K + (tA ? k * M + m : m * K + k), bi = (k: number) => (bB ? b * K * N : 0) + (tB ? n * K + k : k * N + n);
    for (let k = 0; k < K; k++) s += A[ai(k)] * Bm[bi(k)];
    const z = alpha * s + (bias ? bias[n] : 0); const yi = (b * M + m) * N + n; y[yi] = f(z);
    const g = r[yi] * df(z); db[n] += g;
    for (let k = 0; k < K; k++) { dA[ai(k)] += alpha * g * Bm[bi(k)]; dB[bi(k)] += alpha * g * A[ai(k)]; }
  }
  return { y, g: [dA, dB, db] };
}
function normA(x: Float64Array, gm: Float64Array, bt: Float64Array, N: number, S: number, C: number, G: number, eps: number, act: boolean, r: Float64Array) {
  const y = new Float64Array(x.length), dx = new Float64Array(x.length), dg = new Float64Array(C), db = new Float64Array(C), cg = C / G, cnt = S * cg;
  const sg = (v: number) => 1 / (1 + Math.exp(-v));
  for (let n = 0; n < N; n++) for (let q = 0; q < G; q++) {
    const idx: number[] = []; for (let s = 0; s < S; s++) for (let k = 0; k < cg; k++) idx.push((n * S + s) * C + q * cg + k);
    let m = 0; for (const i of idx) m += x[i]; m /= cnt; let v = 0; for (const i of idx) v += (x[i] - m) ** 2; v /= cnt; const rs = 1 / Math.sqrt(v + eps);
    let s1 = 0, s2 = 0; const dxh = new Float64Array(idx.length), xh = new Float64Array(idx.length);
    idx.forEach((i, t) => { const c = i % C; xh[t] = (x[i] - m) * rs; const z = xh[t] * gm[c] + bt[c]; y[i] = act ? z * sg(z) : z;
      const g = r[i] * (act ? sg(z) * (1 + z * (1 - sg(z))) : 1); dg[c] += g * xh[t]; db[c] += g; dxh[t] = g * gm[c]; s1 += dxh[t]; s2 += dxh[t] * xh[t]; });
    idx.forEach((i, t) => { dx[i] = rs * (dxh[t] - s1 / cnt - xh[t] * s2 / cnt); });
  }
  return { y, g: [dx, dg, db] };
}
const on = (n: string) => !ONLY || ONLY.split(',').includes(n);
(async () => {
  for (let it = 0; it < ITER; it++) {
    setSeed(SEED * 4242 + it);
    if (on('conv')) {
      const stride = pick([1, 1, 2]), k = pick([[3, 3], [3, 3], [1, 1], [1, 3], [3, 1], [5, 5], [2, 2]]), pad = pick([0, 1, 1, 2]);
      const H = ri(Math.max(1, k[0] - 2 * pad), 24), W = ri(Math.max(1, k[1] - 2 * pad), 24), N = pick([1, 2]);
      const C = pick([3, 4, 16, 17, 32, 40, 64]), Co = pick([4, 16, 19, 32, 48, 64]), hasB = rand() < 0.5;
      const algo = k[0] === 3 && k[1] === 3 && stride === 1 ? pick(['auto', 'gemm', 'winograd', 'winograd4', 'winograd6'] as const) : 'auto';
      const xs = [N, H, W, C], ws = [Co, k[0], k[1], C];
      const ins: In[] = [rnd(xs), rnd(ws, 0.2), ...(hasB ? [rnd([Co])] : [])];
      const fz = rand(); if (fz < 0.15) ins[0] = { ...ins[0], diff: false }; else if (fz < 0.3) ins[1] = { ...ins[1], diff: false };
      await check2('conv2d', `x${xs} w${ws} s${stride} p${pad} b${+hasB} ${algo} fz${fz.toFixed(2)}`, ins, (t) => o.conv2d(t[0], t[1], hasB ? t[2] : null, { stride, pad, algo }),
        (x, r) => conv(x[0], xs, x[1], ws, hasB ? x[2] : null, stride, pad, r), algo.startsWith('winograd') || algo === 'auto' ? 3e-4 : 1e-4);
    }


    if (on('chunk')) {
      const C = pick([512, 520, 300]), stride = pick([1, 2]), pad = pick([0, 1, 2]), kh = pick([3, 2, 5]), kw = pick([3, 1, 4]);
      const H = ri(20, 40), W = ri(20, 40), Co = pick([3, 8]), N = pick([1, 2]);
      const xs = [N, H, W, C], ws = [Co, kh, kw, C];
      await check2('conv_chunked', `x${xs} w${ws} s${stride} p${pad}`, [rnd(xs), rnd(ws, 0.1), rnd([Co])], (t) => o.conv2d(t[0], t[1], t[2], { stride, pad }),
        (x, r) => conv(x[0], xs, x[1], ws, x[2], stride, pad, r), 1e-4);
    }
    if (on('mm')) {
      const tA = rand() < 0.5, tB = rand() < 0.5, batch = pick([[], [2], [3]]) as number[], bB = rand() < 0.5 && batch.length > 0;
      const M = pick([1, 15, 64, 97, 130]), K = pick([1, 7, 64, 100, 320]), N = pick([1, 16, 33, 64, 130]);
      const as = [...(batch.length ? batch : []), ...(tA ? [K, M] : [M, K])], bs = [...(bB ? batch : []), ...(tB ? [N, K] : [K, N])];
      if (as.length < 2) continue;
      const act = pick(['none', 'silu', 'quick_gelu']), hasB = rand() < 0.5, alpha = pick([1, 0.5]);
      const ins: In[] = [rnd(as), rnd(bs, 0.2), ...(hasB ? [rnd([N])] : [])];
      const fz = rand(); if (fz < 0.15) ins[0] = { ...ins[0], diff: false }; else if (fz < 0.3) ins[1] = { ...ins[1], diff: false };
      await check2('matmul', `a${as} b${bs} tA${+tA} tB${+tB} ${act} b${+hasB} al${alpha} fz${fz.toFixed(2)}`, ins, (t) => o.matmul(t[0], t[1], { transA: tA, transB: tB, alpha, act: act as any, bias: hasB ? t[2] : null }),
        (x, r) => mmA(x[0], as, x[1], bs, tA, tB, alpha, hasB ? x[2] : null, act, r));
    }
    if (on('norm')) {
      const ln = rand() < 0.4, G = ln ? 1 : pick([1, 4, 8, 32]), cg = ln ? pick([7, 64, 320, 768]) : pick([1, 2, 10, 16, 17]), C = G * cg;
      const N = ln ? pick([1, 3, 77]) : pick([1, 2]), S = ln ? 1 : pick([1, 9, 64, 256]), act = !ln && rand() < 0.5, big = rand() < 0.2;
      if (N * S * C > 3e5 || S * cg < 2) continue;
      const xs = ln ? [N, C] : [N, S, C];
      const ins: In[] = [rnd(xs, big ? 0.05 : 1.5, big ? 40 : 0.3), rnd([C], 1, 0.5), rnd([C])];
      const fz = rand(); if (fz < 0.15) ins[0] = { ...ins[0], diff: false }; else if (fz < 0.3) { ins[1] = { ...ins[1], diff: false }; ins[2] = { ...ins[2], diff: false }; }
      await check2(ln ? 'layer_norm' : 'group_norm', `x${xs} G${G} silu${+act} big${+big} fz${fz.toFixed(2)}`, ins,
        (t) => ln ? o.layerNorm(t[0], t[1], t[2], 1e-5) : o.groupNorm(t[0], t[1], t[2], { groups: G, eps: 1e-5, silu: act }),
        (x, r) => normA(x[0], x[1], x[2], ln ? N : N, ln ? 1 : S, C, G, 1e-5, act, r), big ? 2e-3 : 1e-4);
    }
    if (on('attn')) {
      const B = pick([1, 2]), H = pick([1, 2, 5, 8]), D = pick([8, 16, 32, 40, 64, 80, 13, 160]), Dv = rand() < 0.8 ? D : pick([16, 40, 7]);
      const causal = rand() < 0.3, Lq = pick([1, 31, 64, 65, 130, 77]), Lk = causal && rand() < 0.6 ? Lq : pick([1, 77, 64, 129, 200]);
      const lse = rand() < 0.3, sc = pick([undefined, 0.05, 0.2]);
      const s = sc ?? 1 / Math.sqrt(D);
      if (B * Lq * Lk * H * (D + Dv) > 3e7) continue;
      const ins: In[] = [rnd([B, Lq, H * D]), rnd([B, Lk, H * D]), rnd([B, Lk, H * Dv])];
      const fz = rand(); if (fz < 0.2) { ins[1] = { ...ins[1], diff: false }; ins[2] = { ...ins[2], diff: false }; }
      await check2('attention', `B${B} H${H} D${D} Dv${Dv} Lq${Lq} Lk${Lk} causal${+causal} lse${+lse} sc${sc} fz${fz.toFixed(2)}`, ins,
        ([q, k, v]) => { const rr = o.attention(q, k, v, { heads: H, scale: sc, causal, returnLse: lse }); return rr instanceof hs.Tensor ? rr : rr.out; },
        ([q, k, v], r) => attn(q, k, v, B, Lq, Lk, H, D, Dv, s, causal, r), 3e-4);
    }
  }
  console.log('kernels', process.env.HYPERSD_CPU_KERNELS ?? 'default', 'counts', JSON.stringify(counts), 'failures', fails.length); for (const f of fails) console.log('  ', f);
})();
