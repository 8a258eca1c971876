import { hs, check, setSeed, ri, pick, rnd, prod, summary, rand, silu, gelu, geluTanh, quickGelu, randnArr, type In } from './h';
import { attentionRef, groupNormRef, layerNormRef } from '../../../test/helpers/refs';
const o = hs.ops;
const ITER = Number(process.argv[2] ?? 20), SEED = Number(process.argv[3] ?? 1);
const ONLY = process.argv[4];
const fr = (i: In): In => ({ ...i, diff: false });
const on = (n: string) => !ONLY || ONLY.split(',').includes(n);
async function main() {
  for (let it = 0; it < ITER; it++) {
    setSeed(SEED * 7777 + it);
    if (on('attention')) {
      const B = pick([1, 2]), H = pick([1, 2, 3]), D = pick([1, 3, 8, 16, 40, 7, 64]), Dv = rand() < 0.7 ? D : pick([1, 5, 40, 8]);
      const causal = rand() < 0.3, Lq = pick([1, 2, 5, 17, 33]), Lk = causal && rand() < 0.6 ? Lq : pick([1, 3, 7, 16, 77, 65]);
      const scale = rand() < 0.5 ? undefined : pick([0.3, 1.1]), lse = rand() < 0.3;
      const sc = scale ?? 1 / Math.sqrt(D);
      const ins = [rnd([B, Lq, H * D]), rnd([B, Lk, H * D]), rnd([B, Lk, H * Dv])];
      const fz = rand(); if (fz < 0.2) { ins[1] = fr(ins[1]); ins[2] = fr(ins[2]); } else if (fz < 0.3) ins[0] = fr(ins[0]);
      await check('attention', `B${B} H${H} D${D} Dv${Dv} Lq${Lq} Lk${Lk} causal${+causal} scale${scale} lse${+lse} fz${fz.toFixed(2)}`, ins,
        ([q, k, v]) => { const r = o.attention(q, k, v, { heads: H, scale, causal, returnLse: lse }); return r instanceof hs.Tensor ? r : r.out; },
        ([q, k, v]) => attentionRef(q, k, v, B, Lq, Lk, H, D, Dv, sc, causal), 2e-4, 2e-5);
    }
    if (on('attgemm') && it % 3 === 0) {
      // single head > 160 channels -> composed path
      const C = pick([161, 168, 200]), Lq = pick([1, 3, 9]), Lk = pick([1, 4, 11]);
      await check('attention_gemm', `C${C} Lq${Lq} Lk${Lk}`, [rnd([1, Lq, C], 0.2), rnd([1, Lk, C], 0.2), rnd([1, Lk, C])],
        ([q, k, v]) => o.attention(q, k, v, { heads: 1 }), ([q, k, v]) => attentionRef(q, k, v, 1, Lq, Lk, 1, C, C, 1 / Math.sqrt(C), false), 2e-4, 2e-5);
    }
    if (on('gn')) {
      const G = pick([1, 2, 3, 4, 8]), cg = pick([1, 2, 3, 5, 8, 16]), C = G * cg, N = pick([1, 2]), S = pick([1, 2, 7, 16, 25]);
      const act = rand() < 0.5, big = rand() < 0.2, eps = pick([1e-5, 1e-6]);
      const rank4 = false;
      const xs = rank4 ? [N, 4, 4, C] : [N, S, C];
      const ins = [rnd(xs, big ? 0.05 : 1, big ? pick([60, -30]) : pick([0, 0.5])), rnd([C], 1, 0.5), rnd([C])];
      const fz = rand(); if (fz < 0.15) { ins[1] = fr(ins[1]); ins[2] = fr(ins[2]); } else if (fz < 0.3) ins[0] = fr(ins[0]);
      if (cg * S > 1) await check('group_norm', `x${xs} G${G} silu${+act} big${+big} eps${eps} fz${fz.toFixed(2)}`, ins,
        ([x, g, b]) => o.groupNorm(x, g, b, { groups: G, eps, silu: act }), ([x, g, b]) => groupNormRef(x, g, b, N, S, C, G, eps, act), big ? 1e-3 : 1e-4, big ? 1e-3 : 1e-5);
    }
    if (on('ln')) {
      const C = pick([1, 2, 3, 7, 8, 16, 17, 40, 64, 320]), lead = pick([[1], [5], [2, 3], [1, 9]]) as number[], big = rand() < 0.2;
      const ins = [rnd([...lead, C], big ? 0.05 : 1, big ? 50 : 0), rnd([C], 1, 1), rnd([C])];
      const fz = rand(); if (fz < 0.15) { ins[1] = fr(ins[1]); ins[2] = fr(ins[2]); } else if (fz < 0.3) ins[0] = fr(ins[0]);
      if (C > 1) await check('layer_norm', `x${[...lead, C]} big${+big} fz${fz.toFixed(2)}`, ins, ([x, g, b]) => o.layerNorm(x, g, b, 1e-5),
        ([x, g, b]) => layerNormRef(x, g, b, C, 1e-5), big ? 1e-3 : 1e-4, big ? 1e-3 : 1e-5);
    }
    if (on('act')) {
      const acts = { silu: [o.silu, silu], gelu: [o.gelu, gelu], gelu_tanh: [o.geluTanh, geluTanh], quick_gelu: [o.quickGelu, quickGelu] } as const;
      for (const [name, [f, rf]] of Object.entries(acts)) {
        const sh = pick([[1], [7], [3, 17], [2, 5, 33], [64], [1, 129]]) as number[];
        await check(name, `x${sh}`, [rnd(sh, pick([1, 3, 6]))], ([x]) => f(x), ([x]) => x.map(rf), 1e-4, 1e-5);
      }
      const n = pick([1, 3, 8, 16, 17, 40]), lead = pick([[1], [4], [2, 3]]) as number[];
      await check('geglu', `x${[...lead, 2 * n]}`, [rnd([...lead, 2 * n], 2)], ([x]) => o.geglu(x), ([x]) => {
        const R = prod(lead), y = new Float64Array(R * n); for (let r = 0; r < R; r++) for (let i = 0; i < n; i++) y[r * n + i] = x[r * 2 * n + i] * gelu(x[r * 2 * n + n + i]); return y; });
      const L = pick([1, 2, 9, 16, 17, 77, 100]), R = pick([1, 3, 6]), sc = pick([1, 1.3, 0.125, -0.7, 5]);
      await check('softmax', `x${[R, L]} scale${sc}`, [rnd([R, L], 2)], ([x]) => o.softmax(x, sc), ([x]) => {
        const y = new Float64Array(x.length);
        for (let r = 0; r < R; r++) { let m = -Infinity, s = 0; for (let i = 0; i < L; i++) m = Math.max(m, sc * x[r * L + i]);
          for (let i = 0; i < L; i++) s += (y[r * L + i] = Math.exp(sc * x[r * L + i] - m)); for (let i = 0; i < L; i++) y[r * L + i] /= s; }
        return y; });
    }
  }
  summary();
}
main();
