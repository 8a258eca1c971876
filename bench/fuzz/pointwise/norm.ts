import { hs, rng, relErr, roundTo, TOL } from './common';
import { groupNormRef } from '../../../test/helpers/refs';
const seed0 = Number(process.env.SEED ?? 1), iters = Number(process.env.ITERS ?? 300);
const divisors = (c: number) => { const d: number[] = []; for (let i = 1; i <= c; i++) if (c % i === 0) d.push(i); return d; };
let fails = 0, count = 0;
(async () => {
  for (let it = 0; it < iters; it++) {
    const seed = seed0 * 100000 + it, r = rng(seed);
    const N = r.int(1, 3);
    const C = r.pick([r.int(1, 40), r.int(1, 700), 16 * r.int(1, 40), 8 * r.int(1, 80), 320, 128, 4104 % 700 + 1]);
    const maxS = Math.max(1, Math.floor(400000 / (N * C)));
    const S = Math.min(r.int(1, 5000), maxS);
    const G = r.pick(divisors(C));
    const eps = r.pick([1e-5, 1e-6, 1e-3, 0.1, 0]);
    const act = r.next() < 0.5, overwrite = r.next() < 0.3;
    const dtype = r.pick(['f32', 'f32', 'f32', 'f16', 'bf16']);
    const kind = r.pick(['normal', 'bigmean', 'tiny', 'const', 'mixed', 'outlierFirst']);
    const n = N * S * C;
    const xv = new Float64Array(n);
    const mean = kind === 'bigmean' ? r.pick([1e3, -1e3, 300, 5e4]) : r.normal() * 3;
    const sd = kind === 'tiny' ? r.pick([1e-3, 1e-4]) : kind === 'bigmean' ? r.pick([1, 0.1, 1e-2]) : r.next() * 3 + 0.01;
    for (let i = 0; i < n; i++) xv[i] = kind === 'const' ? mean : mean + sd * r.normal();
    if (kind === 'mixed') for (let i = 0; i < n; i++) xv[i] += ((i % C) % 5) * 10;
    if (kind === 'outlierFirst') { // first element of each (n, group) is 100 sd away
      const cg = C / G;
      for (let nn = 0; nn < N; nn++) for (let q = 0; q < G; q++) xv[nn * S * C + q * cg] = mean + r.pick([30, 100, -300]) * sd;
    }
    if (dtype !== 'f32' && kind === 'bigmean') continue; // half precision can't hold these meaningfully
    if (kind === 'const' && eps === 0) continue;
    const gv = Float64Array.from({ length: C }, () => r.normal()), bv = Float64Array.from({ length: C }, () => r.normal());
    const xr = roundTo(dtype, xv), gr = roundTo(dtype, gv), br = roundTo(dtype, bv);
    const x = hs.tensor(Float32Array.from(xv), [N, S, C], { dtype: dtype as any });
    const gt = hs.tensor(Float32Array.from(gv), [C], { dtype: dtype as any }), bt = hs.tensor(Float32Array.from(bv), [C], { dtype: dtype as any });
    let out: Float32Array;
    try {
      const y = hs.ops.groupNorm(x, gt, bt, { groups: G, eps, silu: act, overwrite });
      out = await y.floats();
      if (overwrite && y !== x) throw new Error('overwrite did not return x');
      y.dispose();
    } catch (e) { console.log(`FAIL seed ${seed}: threw ${(e as Error).message}`); fails++; continue; }
    const ref = groupNormRef(xr, gr, br, N, S, C, G, eps, act);
    // f32 reference tolerance: the input's f32 rounding of the reference is exact, so TOL; half: output rounded too
    const e = relErr(out, ref);
    count++;
    const tol = TOL[dtype] * (kind === 'tiny' && eps > 0 ? 1 : 1);
    let bad = !(e <= tol);
    // every element must be finite
    for (let i = 0; i < out.length && !bad; i++) if (!Number.isFinite(out[i]) && Number.isFinite(ref[i])) bad = true;
    if (bad) {
      fails++;
      let wi = 0, wd = 0;
      for (let i = 0; i < out.length; i++) { const d = Math.abs(out[i] - ref[i]); if (!(d <= wd)) { wd = d; wi = i; } }
      console.log(`FAIL seed ${seed}: N=${N} S=${S} C=${C} G=${G} eps=${eps} silu=${act} ow=${overwrite} ${dtype} kind=${kind} mean=${mean} sd=${sd} relErr=${e} worst i=${wi} out=${out[wi]} ref=${ref[wi]}`);
    }
  }
  console.log(`groupNorm: ${count} cases, ${fails} failures (kernels=${process.env.HYPERSD_CPU_KERNELS ?? 'default'})`);
})();
