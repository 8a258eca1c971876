import { hs, rng, relErr, roundTo, TOL } from './common';
import { layerNormRef } from '../../../test/helpers/refs';
const seed0 = Number(process.env.SEED ?? 1), iters = Number(process.env.ITERS ?? 300);
let fails = 0, count = 0;
(async () => {
  for (let it = 0; it < iters; it++) {
    const seed = seed0 * 100000 + it, r = rng(seed);
    const C = r.pick([r.int(1, 40), r.int(1, 1100), 16 * r.int(1, 64), 8 * r.int(1, 100), 320, 768, 2048]);
    const R = Math.max(1, Math.min(r.int(1, 300), Math.floor(300000 / C)));
    const lead = r.pick([[R], [1, R], [R, 1], R % 2 ? [R] : [2, R / 2]]);
    const eps = r.pick([1e-5, 1e-6, 1e-3, 0]);
    const dtype = r.pick(['f32', 'f32', 'f32', 'f16', 'bf16']);
    const kind = r.pick(['normal', 'bigmean', 'tiny', 'const', 'outliers', 'rowoffsets']);
    if (kind === 'const' && eps === 0) continue;
    if (dtype !== 'f32' && (kind === 'bigmean' || kind === 'tiny')) continue;
    const n = R * C, xv = new Float64Array(n);
    const mean = kind === 'bigmean' ? r.pick([1e3, -1e3, 300, 1e4]) : r.normal() * 3;
    const sd = kind === 'tiny' ? r.pick([1e-3, 1e-4]) : kind === 'bigmean' ? r.pick([1, 0.1, 0.01]) : r.next() * 3 + 0.01;
    for (let i = 0; i < n; i++) xv[i] = kind === 'const' ? mean : mean + sd * r.normal();
    if (kind === 'rowoffsets') for (let i = 0; i < n; i++) xv[i] += 50 * Math.floor(i / C);
    if (kind === 'outliers') for (let row = 0; row < R; row++) { const k = r.int(1, Math.min(C, 4)); for (let j = 0; j < k; j++) xv[row * C + r.int(0, Math.min(C, 16) - 1)] = mean + r.pick([30, -100, 300, 1000]) * sd; }
    const gv = Float64Array.from({ length: C }, () => r.normal()), bv = Float64Array.from({ length: C }, () => r.normal());
    const xr = roundTo(dtype, xv), gr = roundTo(dtype, gv), br = roundTo(dtype, bv);
    const shape = [...lead, C];
    let out: Float32Array;
    try {
      const y = hs.ops.layerNorm(hs.tensor(Float32Array.from(xv), shape, { dtype: dtype as any }), hs.tensor(Float32Array.from(gv), [C], { dtype: dtype as any }), hs.tensor(Float32Array.from(bv), [C], { dtype: dtype as any }), eps);
      out = await y.floats(); y.dispose();
    } catch (e) { console.log(`FAIL seed ${seed}: threw ${(e as Error).message}`); fails++; continue; }
    const ref = layerNormRef(xr, gr, br, C, eps);
    const e = relErr(out, ref); count++;
    let bad = !(e <= TOL[dtype]);
    for (let i = 0; i < out.length && !bad; i++) if (!Number.isFinite(out[i]) && Number.isFinite(ref[i])) bad = true;
    if (bad) {
      fails++;
      let wi = 0, wd = 0;
      for (let i = 0; i < out.length; i++) { const d = Math.abs(out[i] - ref[i]); if (!(d <= wd)) { wd = d; wi = i; } }
      console.log(`FAIL seed ${seed}: shape=[${shape}] eps=${eps} ${dtype} kind=${kind} mean=${mean} sd=${sd} relErr=${e} worst i=${wi} out=${out[wi]} ref=${ref[wi]}`);
    }
  }
  console.log(`layerNorm: ${count} cases, ${fails} failures (kernels=${process.env.HYPERSD_CPU_KERNELS ?? 'default'})`);
})();
