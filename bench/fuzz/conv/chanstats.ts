// Randomized channel statistics (session 22): conv2d's stats output on every algorithm and Winograd variant,
// 1-3 threads, awkward data (means far from zero, outliers, constant channels, tiny values), and the
// channel_stats op, each against float64 statistics of the values the op wrote; then group_norm given them
// against the float64 group norm. Outputs inside NaN guards. Env: SEED, N (cases), BUDGET_S.
import { hs, rng, guarded, compare, TOL } from './common';
import { channelStatsRef, groupNormRef } from '../../../test/helpers/refs';

const SEED = Number(process.env.SEED ?? 1), COUNT = Number(process.env.N ?? 500), BUDGET = Number(process.env.BUDGET_S ?? 60);
const KS = process.env.HYPERSD_CPU_KERNELS ?? 'default';
const R = rng(SEED);
const { pick, int } = R;


/** The worst misses of st against y's float64 statistics: the mean in units of (std + 1e-7 |mean|), the
 * variance relative (absolute below 1e-30). */
function statsErr(st: Float32Array, y: ArrayLike<number>, N: number, S: number, C: number) {
  const { mean, vr } = channelStatsRef(y, N, S, C);
  let em = 0, ev = 0, bad = '';
  for (let i = 0; i < N * C; i++) {
    const m = st[3 * i] + st[3 * i + 1], v = st[3 * i + 2];
    if (!Number.isFinite(m) || !Number.isFinite(v)) { bad ||= `stats ${i} = (${m}, ${v})`; continue; }
    em = Math.max(em, Math.abs(m - mean[i]) / (Math.sqrt(vr[i]) + 1e-7 * Math.abs(mean[i]) + 1e-30));
    ev = Math.max(ev, vr[i] > 1e-30 ? Math.abs(v - vr[i]) / vr[i] : Math.abs(v));
  }
  return { em, ev, bad };
}

function values(n: number, kind: string): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = R.normal();
  if (kind === 'offset') for (let i = 0; i < n; i++) a[i] += 3e3;
  if (kind === 'outliers') for (let i = 0; i < n; i += int(7, 400)) a[i] = (R.next() < 0.5 ? -1 : 1) * 2e3;
  if (kind === 'tiny') for (let i = 0; i < n; i++) a[i] *= 1e-20;
  return a;
}

async function main(): Promise<void> {
  const t0 = Date.now();
  let cases = 0, fails = 0;
  const fail = (what: string) => {
    fails++;
    if (fails <= 20) console.log(`FAIL ${what}`);
  };
  for (let it = 0; it < COUNT && (Date.now() - t0) / 1e3 < BUDGET; it++) {
    hs.setThreads(int(1, 3));
    const k = pick([1, 3, 3, 3]), stride = k === 3 ? pick([1, 1, 1, 2]) : 1, pad = k === 3 ? pick([0, 1, 1]) : 0;
    const N = int(1, 3), H = int(Math.max(1, k - 2 * pad), 30), W = int(Math.max(1, k - 2 * pad), 30);
    const C = pick([1, 3, 8, 16, 17, 32, 48, 64]), O = pick([1, 3, 8, 9, 16, 20, 31, 64, 72, 100, 130, 200]);
    const wino = k === 3 && stride === 1;
    const algo = wino ? pick(['auto', 'gemm', 'winograd', 'winograd4', 'winograd6'] as const) : pick(['auto', 'gemm'] as const);
    const variant = pick(['', 'small', 'big']);
    if (variant) process.env.HYPERSD_WINO_VARIANT = variant;
    else delete process.env.HYPERSD_WINO_VARIANT;
    const kind = pick(['normal', 'normal', 'offset', 'outliers', 'tiny']);
    const Ho = Math.floor((H + 2 * pad - k) / stride) + 1, Wo = Math.floor((W + 2 * pad - k) / stride) + 1, S = Ho * Wo;
    const xv = values(N * H * W * C, kind), wv = values(O * k * k * C, 'normal').map((v) => v * 0.2);
    // a few output channels constant (zero weights, their bias only): zero variance
    for (let o = 0; o < O; o += int(5, 40)) for (let j = 0; j < k * k * C; j++) wv[o * k * k * C + j] = 0;
    const hasBias = R.next() < 0.6, beta = R.next() < 0.3;
    const x = hs.tensor(xv, [N, H, W, C]), w = hs.tensor(wv, [O, k, k, C]);
    const b = hasBias ? hs.tensor(values(O, 'normal'), [O]) : null;
    const st = guarded(new Float64Array(N * O * 3).fill(NaN), [N, O, 3], 'f32');
    const outG = beta ? guarded(values(N * S * O, kind), [N, Ho, Wo, O], 'f32') : null;
    const what = `${KS} N${N} ${H}x${W}x${C}->${O} k${k} s${stride} p${pad} ${algo}${variant ? `/${variant}` : ''} ${kind}${hasBias ? ' bias' : ''}${beta ? ' beta' : ''} threads ${hs.threads()}`;
    cases++;
    try {
      const y = hs.ops.conv2d(x, w, b, { stride, pad, algo, stats: st.t, ...(outG ? { beta: 1, out: outG.t } : {}) });
      const yv = await y.floats();
      const sv = await st.t.floats();
      const g1 = await st.guardOk();
      if (g1) fail(`${what}: stats ${g1}`);
      if (outG) { const g2 = await outG.guardOk(); if (g2) fail(`${what}: y ${g2}`); }
      const e = statsErr(sv, yv, N, S, O);
      // tiny values: the products underflow toward subnormals, where float sums lose relative digits
      const tolV = kind === 'tiny' ? 1e-3 : 2e-5;
      if (e.bad || e.em > 2e-5 || e.ev > tolV) fail(`${what}: ${e.bad || `mean ${e.em.toExponential(2)} std, variance ${e.ev.toExponential(2)}`}`);
      // group norm given them, against float64
      if (kind !== 'tiny') {
        const G = pick([1, ...[2, 4, 8].filter((g) => O % g === 0)]), silu = R.next() < 0.5;
        const gv = values(O, 'normal'), bv = values(O, 'normal');
        const yn = hs.ops.groupNorm(y.reshape([N, S, O]), hs.tensor(gv, [O]), hs.tensor(bv, [O]), { groups: G, eps: 1e-5, silu, stats: st.t });
        const ref = groupNormRef(Float64Array.from(yv), Float64Array.from(gv, (v) => Math.fround(v)), Float64Array.from(bv, (v) => Math.fround(v)), N, S, O, G, 1e-5, silu);
        const c = compare(await yn.floats(), ref);
        if (!(c.rel <= TOL.f32)) fail(`${what}: group norm (groups ${G}${silu ? ', silu' : ''}) given the stats: relative error ${c.rel}`);
      }
    } catch (err) {
      fail(`${what}: threw ${(err as Error).message}`);
    }
  }
  // channel_stats on random [N, S, C]
  for (let it = 0; it < 200 && (Date.now() - t0) / 1e3 < BUDGET * 1.3; it++) {
    hs.setThreads(int(1, 3));
    const N = int(1, 3), S = pick([1, 2, 7, 255, 256, 257, 1000, 5000]), C = pick([1, 5, 16, 33, 320, 1281]);
    const kind = pick(['normal', 'offset', 'outliers']);
    const xv = values(N * S * C, kind);
    const st = guarded(new Float64Array(N * C * 3).fill(NaN), [N, C, 3], 'f32');
    const what = `${KS} channel_stats [${N}, ${S}, ${C}] ${kind} threads ${hs.threads()}`;
    cases++;
    try {
      hs.runOp('channel_stats', [hs.tensor(xv, [N, S, C])], [st.t]);
      const sv = await st.t.floats();
      const g1 = await st.guardOk();
      if (g1) fail(`${what}: ${g1}`);
      const e = statsErr(sv, Float64Array.from(xv, (v) => Math.fround(v)), N, S, C);
      if (e.bad || e.em > 2e-5 || e.ev > 2e-5) fail(`${what}: ${e.bad || `mean ${e.em.toExponential(2)} std, variance ${e.ev.toExponential(2)}`}`);
    } catch (err) {
      fail(`${what}: threw ${(err as Error).message}`);
    }
  }
  console.log(JSON.stringify({ seed: SEED, kernels: KS, cases, fails }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
