import { hs, rng, relErr, roundTo, TOL } from './common';
// rounded: the logits scale * x rounded to float first (as a kernel without FMA contraction forms them, and as
// PyTorch's x * scale does): on logits of ~1e4 that costs 2.4e-4 of a logit, so both forms are accepted.
function ref(x: ArrayLike<number>, n: number, scale: number, rounded = false) {
  const y = new Float64Array(x.length);
  const sx = (v: number) => (rounded ? Math.fround(Math.fround(scale) * v) : scale * v);
  for (let r = 0; r < x.length / n; r++) {
    let m = -Infinity, nan = false;
    for (let i = 0; i < n; i++) { const v = sx(x[r * n + i]); if (Number.isNaN(v)) nan = true; m = Math.max(m, v); }
    if (nan || m === -Infinity || m === Infinity) { for (let i = 0; i < n; i++) y[r * n + i] = NaN; continue; }
    let s = 0; for (let i = 0; i < n; i++) s += Math.exp(sx(x[r * n + i]) - m);
    for (let i = 0; i < n; i++) y[r * n + i] = Math.exp(sx(x[r * n + i]) - m) / s;
  }
  return y;
}
const seed0 = Number(process.env.SEED ?? 1), iters = Number(process.env.ITERS ?? 300);
let fails = 0, count = 0;
(async () => {
  for (let it = 0; it < iters; it++) {
    const seed = seed0 * 100000 + it, r = rng(seed);
    const n = r.pick([r.int(1, 20), r.int(1, 300), 8 * r.int(1, 40), r.int(1, 3000)]);
    const R = Math.max(1, Math.min(r.int(1, 40), Math.floor(100000 / n)));
    const scale = r.pick([1, 0.125, 3, -1, 0, 1e-3, 0.7]);
    const sd = r.pick([1, 5, 30, 100]);
    const dtype = r.pick(['f32', 'f32', 'f16', 'bf16']);
    const xs = new Float32Array(R * n);
    const kind = r.pick(['plain', 'mask', 'allmask', 'nan', 'big']);
    for (let i = 0; i < xs.length; i++) xs[i] = (kind === 'big' ? 1e4 : 0) + r.normal() * sd;
    if (kind === 'mask') for (let i = 0; i < xs.length; i++) if (r.next() < 0.3) xs[i] = -Infinity;
    if (kind === 'allmask') { const row = r.int(0, R - 1); for (let i = 0; i < n; i++) xs[row * n + i] = -Infinity; }
    if (kind === 'nan') { xs[r.int(0, xs.length - 1)] = NaN; }
    if (kind === 'big' && dtype !== 'f32') continue;
    const xr = roundTo(dtype, xs);
    const out = await hs.ops.softmax(hs.tensor(xs, [R, n], { dtype: dtype as any }), scale).floats();
    const rf = ref(xr, n, scale), rr = ref(xr, n, scale, true);
    count++;
    // per-row: NaN pattern must match; then norm-wise error
    let bad = '';
    for (let row = 0; row < R && !bad; row++) {
      const o = out.subarray(row * n, row * n + n), f = rf.subarray(row * n, row * n + n);
      const fn = Number.isNaN(f[0]);
      if (fn) { if (!Array.from(o).every(Number.isNaN)) bad = `row ${row}: want all NaN, got ${Array.from(o.slice(0, 6))}`; continue; }
      const e = Math.min(relErr(o, f), relErr(o, rr.subarray(row * n, row * n + n)));
      if (!(e <= TOL[dtype])) bad = `row ${row}: relErr ${e}`;
      for (let i = 0; i < n && !bad; i++) if (f[i] === 0 && o[i] !== 0 && xr[row * n + i] === -Infinity) bad = `masked logit ${i} gives ${o[i]}`;
    }
    if (bad) { fails++; console.log(`FAIL seed ${seed} [${R},${n}] scale=${scale} ${dtype} kind=${kind}: ${bad}`); }
  }
  console.log(`softmax: ${count} cases, ${fails} failures (kernels=${process.env.HYPERSD_CPU_KERNELS ?? 'default'})`);
})();
