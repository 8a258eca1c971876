import { hs, rng, relErr, roundTo, TOL } from './common';
import { erf } from '../../../test/autograd/fd';
const gelu = (x: number) => (x === Infinity ? Infinity : x === -Infinity ? -0 : x < -40 ? -0 : 0.5 * x * (1 + erf(x / Math.SQRT2)));
const specials = [Infinity, -Infinity, NaN, -0, 0, 100, -100, 1e-40, -1e-40, 3.4e38, -3.4e38, 5.845, -5.845, 6, -6, 1e-20];
const seed0 = Number(process.env.SEED ?? 1), iters = Number(process.env.ITERS ?? 300);
let fails = 0, count = 0; const seen = new Set<string>();
(async () => {
  for (let it = 0; it < iters; it++) {
    const seed = seed0 * 100000 + it, r = rng(seed);
    const N = r.pick([r.int(1, 40), r.int(1, 300), 8 * r.int(1, 80), 16 * r.int(1, 40) + r.int(0, 15)]);
    const R = Math.max(1, Math.min(r.int(1, 50), Math.floor(100000 / N)));
    const dtype = r.pick(['f32', 'f32', 'f16', 'bf16']);
    const sp = dtype === 'f32' && r.next() < 0.5;
    const xs = new Float32Array(R * 2 * N);
    for (let i = 0; i < xs.length; i++) xs[i] = r.normal() * r.pick([1, 3]);
    if (sp) for (let row = 0; row < R; row++) for (let i = 0; i < N; i++) if (r.next() < 0.15) xs[row * 2 * N + N + i] = r.pick(specials);
    const shape = r.pick([[R, 2 * N], [1, R, 2 * N]]);
    const xr = roundTo(dtype, xs);
    const out = await hs.ops.geglu(hs.tensor(xs, shape, { dtype: dtype as any })).floats();
    const ref = new Float64Array(R * N);
    for (let row = 0; row < R; row++) for (let i = 0; i < N; i++) ref[row * N + i] = xr[row * 2 * N + i] * gelu(xr[row * 2 * N + N + i]);
    count++;
    if (sp) {
      for (let k = 0; k < ref.length; k++) {
        const o = out[k], f = Math.fround(ref[k]), g = xr[Math.floor(k / N) * 2 * N + N + k % N], h = xr[Math.floor(k / N) * 2 * N + k % N];
        const ok = Number.isNaN(f) ? Number.isNaN(o) : !Number.isFinite(f) ? o === f : Math.abs(o - f) <= 4e-7 * Math.max(1, Math.abs(g)) * Math.max(1, Math.abs(h));
        if (!ok) { fails++; const key = `${g}:${(k % N) % 16 < 8}`; if (!seen.has(key)) { seen.add(key); console.log(`FAIL seed ${seed} N=${N} h=${h} gate=${g} at col ${k % N}: got ${o} want ${f}`); } }
      }
    } else {
      const e = relErr(out, ref);
      if (!(e <= TOL[dtype])) { fails++; console.log(`FAIL seed ${seed} [${shape}] ${dtype}: relErr ${e}`); }
    }
  }
  console.log(`geglu: ${count} cases, ${fails} failures (kernels=${process.env.HYPERSD_CPU_KERNELS ?? 'default'})`);
})();
