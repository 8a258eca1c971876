import { hs, check, setSeed, ri, pick, rnd, prod, summary, rand, type In } from './h';
const o = hs.ops;
const ITER = Number(process.argv[2] ?? 20), SEED = Number(process.argv[3] ?? 1);
function bc2(a: Float64Array, as: number[], b: Float64Array, bs: number[], f: (x: number, y: number) => number) {
  const n = Math.max(as.length, bs.length), A = [...Array(n - as.length).fill(1), ...as], B = [...Array(n - bs.length).fill(1), ...bs];
  const Y = A.map((d, i) => Math.max(d, B[i])), out = new Float64Array(prod(Y)), idx = new Array(n).fill(0);
  for (let i = 0; i < out.length; i++) { let rem = i; for (let d = n - 1; d >= 0; d--) { idx[d] = rem % Y[d]; rem = Math.floor(rem / Y[d]); }
    let ia = 0, ib = 0; for (let d = 0; d < n; d++) { ia = ia * A[d] + (A[d] === 1 ? 0 : idx[d]); ib = ib * B[d] + (B[d] === 1 ? 0 : idx[d]); } out[i] = f(a[ia], b[ib]); }
  return out;
}
const fr = (i: In): In => ({ ...i, diff: false });
const F = { add: (x: number, y: number) => x + y, sub: (x: number, y: number) => x - y, mul: (x: number, y: number) => x * y, div: (x: number, y: number) => x / y } as const;
function permRef(x: Float64Array, xs: number[], dims: number[]) {
  const ys = dims.map((d) => xs[d]), y = new Float64Array(x.length), st = xs.map((_, i) => prod(xs.slice(i + 1))), idx = new Array(xs.length);
  for (let i = 0; i < y.length; i++) { let rem = i; for (let d = ys.length - 1; d >= 0; d--) { idx[d] = rem % ys[d]; rem = Math.floor(rem / ys[d]); }
    let off = 0; for (let d = 0; d < ys.length; d++) off += idx[d] * st[dims[d]]; y[i] = x[off]; }
  return y;
}
async function main() {
  for (let it = 0; it < ITER; it++) {
    setSeed(SEED * 31337 + it);
    // binary broadcasting
    for (const name of Object.keys(F) as (keyof typeof F)[]) {
      const rank = ri(1, 4); const full = Array.from({ length: rank }, () => pick([1, 2, 3, 5, 8, 17]));
      const mk = () => { const r = ri(0, rank); return full.slice(rank - r).map((d) => (rand() < 0.35 ? 1 : d)); };
      let as = mk(), bs = mk(); if (as.length === 0 && bs.length === 0) as = [...full];
      if (rand() < 0.2) as = [...full];
      const a = rnd(as); let b = rnd(bs);
      if (name === 'div') b = { ...b, data: Array.from(b.data, (v) => (v >= 0 ? v + 1 : v - 1)) };
      const swap = rand() < 0.3;
      const ins: In[] = swap ? [b, a] : [a, b]; const shs = swap ? [bs, as] : [as, bs];
      if (name === 'div' && swap) { ins[1] = { ...ins[1], data: Array.from(ins[1].data, (v) => (v >= 0 ? v + 1 : v - 1)) }; }
      const fz = rand(); if (fz < 0.1) ins[0] = fr(ins[0]); else if (fz < 0.2) ins[1] = fr(ins[1]);
      const same = rand() < 0.1 && shs[0].join() === shs[1].join();
      if (same) await check(name, `x op x [${shs[0]}]`, [ins[0]], ([x]) => o[name](x, x), ([x]) => bc2(x, shs[0], x, shs[0], F[name]));
      else await check(name, `[${shs[0]}] op [${shs[1]}] fz${fz.toFixed(2)}`, ins, ([x, y]) => o[name](x, y), ([x, y]) => bc2(x, shs[0], y, shs[1], F[name]));
      const c = pick([2, -0.5]);
      await check(name + '_scalar', `[${as}] ${c}`, [a], ([x]) => o[name](x, c), ([x]) => x.map((v) => F[name](v, c)));
    }
    // input used twice: y = x*w + silu(x) * x  ; plus reuse through different ops
    {
      const sh = pick([[3], [2, 5], [4, 17]]) as number[];
      await check('reuse', `[${sh}]`, [rnd(sh), rnd(sh)], ([x, w]) => o.add(o.mul(x, w), o.mul(o.silu(x), x)),
        ([x, w]) => x.map((v, i) => v * w[i] + v * v / (1 + Math.exp(-v))));
      const K = pick([3, 8]), N = pick([2, 5]);
      await check('reuse_linear', `w used twice K${K} N${N}`, [rnd([4, K]), rnd([N, K])], ([x, w]) => o.add(o.linear(x, w), o.linear(o.mul(x, 2), w)),
        ([x, w]) => { const y = new Float64Array(4 * N); for (let m = 0; m < 4; m++) for (let n = 0; n < N; n++) { let s = 0; for (let k = 0; k < K; k++) s += 3 * x[m * K + k] * w[n * K + k]; y[m * N + n] = s; } return y; });
    }
    // upsample
    {
      const xs = [pick([1, 2]), ri(1, 5), ri(1, 5), pick([1, 3, 8, 17])];
      const [N, H, W, C] = xs;
      await check('upsample', `[${xs}]`, [rnd(xs)], ([x]) => o.upsampleNearest2x(x), ([x]) => {
        const y: number[] = []; for (let n = 0; n < N; n++) for (let h = 0; h < 2 * H; h++) for (let w = 0; w < 2 * W; w++) for (let c = 0; c < C; c++) y.push(x[((n * H + (h >> 1)) * W + (w >> 1)) * C + c]); return y; });
    }
    // concat
    {
      const rank = ri(1, 4), axis = ri(0, rank - 1), base = Array.from({ length: rank }, () => ri(1, 4)), n = ri(1, 4);
      const shs = Array.from({ length: n }, () => base.map((d, i) => (i === axis ? ri(1, 5) : d)));
      const ins = shs.map((s) => rnd(s)); if (n > 1 && rand() < 0.3) ins[0] = fr(ins[0]);
      await check('concat', `axis${axis} ${shs.map((s) => `[${s}]`).join('')}`, ins, (ts) => o.concat(ts, axis), (xs) => {
        const outer = prod(base.slice(0, axis)), inner = prod(base.slice(axis + 1)); const y: number[] = [];
        for (let p = 0; p < outer; p++) for (let k = 0; k < n; k++) { const L = shs[k][axis] * inner; for (let i = 0; i < L; i++) y.push(xs[k][p * L + i]); }
        return y; });
    }
    // slice
    {
      const rank = ri(1, 4), axis = ri(0, rank - 1), xs = Array.from({ length: rank }, () => ri(1, 7));
      const D = xs[axis], step = pick([1, 1, 2, 3]), start = ri(0, D - 1), len = ri(1, Math.floor((D - 1 - start) / step) + 1);
      await check('slice', `[${xs}] axis${axis} start${start} len${len} step${step}`, [rnd(xs)], ([x]) => o.slice(x, axis, start, len, step), ([x]) => {
        const outer = prod(xs.slice(0, axis)), inner = prod(xs.slice(axis + 1)); const y: number[] = [];
        for (let p = 0; p < outer; p++) for (let i = 0; i < len; i++) for (let q = 0; q < inner; q++) y.push(x[(p * D + start + step * i) * inner + q]); return y; });
    }
    // permute
    {
      const rank = ri(2, 5), xs = Array.from({ length: rank }, () => ri(1, 5)), dims = [...Array(rank).keys()].sort(() => rand() - 0.5);
      await check('permute', `[${xs}] dims${dims}`, [rnd(xs)], ([x]) => o.permute(x, dims), ([x]) => permRef(x, xs, dims));
      // permute then matmul (non-contiguous views into ops)
      if (rank >= 2) { const d2 = [...dims]; await check('permute_chain', `[${xs}] dims${d2} * 2 + x`, [rnd(xs)], ([x]) => o.add(o.mul(o.permute(x, d2), 2), o.permute(x, d2)), ([x]) => permRef(x, xs, d2).map((v) => 3 * v)); }
    }
    // embedding
    {
      const V = ri(1, 9), D = pick([1, 3, 8, 16, 37, 64]), ish = pick([[1], [5], [2, 4], [3, 7]]) as number[];
      const ids = Array.from({ length: prod(ish) }, () => ri(0, V - 1));
      await check('embedding', `V${V} D${D} ids[${ish}]`, [{ shape: ish, data: ids, int: true }, rnd([V, D])], ([i, t]) => o.embedding(i, t), ([i, t]) => {
        const y: number[] = []; for (const id of i) for (let d = 0; d < D; d++) y.push(t[id * D + d]); return y; });
    }
  }
  summary();
}
main();
