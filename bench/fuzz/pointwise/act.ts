import { hs, rng, relErr, roundTo, TOL } from './common';
import { erf } from '../../../test/autograd/fd';
// x * Phi(x) computed stably for very negative x
const Phi = (x: number) => (x < -3 ? 0.5 * (Math.exp(-x * x / 2) / Math.sqrt(Math.PI) / (() => { const a = -x / Math.SQRT2; let f = a; for (let n = 80; n >= 1; n--) f = a + n / 2 / f; return f; })()) : 0.5 * (1 + erf(x / Math.SQRT2)));
const sig = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
const mulLim = (x: number, s: number) => (s === 0 ? (x < 0 ? -0 : 0) : x * s);
const refs: Record<string, (x: number) => number> = {
  silu: (x) => mulLim(x, sig(x)),
  gelu: (x) => mulLim(x, Phi(x)),
  geluTanh: (x) => { const u = Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3); return mulLim(x, Number.isFinite(u) ? sig(2 * u) : u > 0 ? 1 : 0); },
  quickGelu: (x) => mulLim(x, sig(1.702 * x)),
};
const fns: Record<string, (x: hs.Tensor) => hs.Tensor> = { silu: hs.ops.silu, gelu: hs.ops.gelu, geluTanh: hs.ops.geluTanh, quickGelu: hs.ops.quickGelu };
const specials = [Infinity, -Infinity, NaN, -0, 0, 100, -100, 1e-40, -1e-40, 1e-45, 88.7, -88.7, -87.5, 89, -89, 3.4e38, -3.4e38, -1e30, 1e30, -1e10, 20, -20, 5.845, -5.845, 1e-20, -1e-20];
// accepted values at -inf (documented: -0 or NaN); any finite input must give a finite value matching the limit
function expect(name: string, x: number): (o: number) => boolean {
  if (Number.isNaN(x)) return (o) => Number.isNaN(o);
  if (x === Infinity) return (o) => o === Infinity;
  if (x === -Infinity) return (o) => o === 0 || Number.isNaN(o);
  const r = refs[name](x);
  return (o) => Number.isFinite(o) && Math.abs(o - r) <= 2e-6 * Math.abs(r) + 1e-6 * Math.min(1, Math.abs(x)) + 1e-37;
}
const seed0 = Number(process.env.SEED ?? 1), iters = Number(process.env.ITERS ?? 200);
let fails = 0, count = 0, reported = new Set<string>();
(async () => {
  for (let it = 0; it < iters; it++) {
    const seed = seed0 * 100000 + it, r = rng(seed);
    const n = r.pick([r.int(1, 40), r.int(1, 300), r.int(1, 20000), 64 * r.int(1, 10) + r.int(0, 63)]);
    const xs = new Float32Array(n);
    const scale = r.pick([1, 3, 10, 50]);
    for (let i = 0; i < n; i++) xs[i] = r.next() < 0.1 ? r.pick(specials) : r.normal() * scale;
    for (const name of Object.keys(fns)) {
      const out = await fns[name](hs.tensor(xs, [n])).floats();
      count++;
      for (let i = 0; i < n; i++) {
        if (!expect(name, xs[i])(out[i])) {
          fails++;
          const key = `${name}:${xs[i]}:${i % 16 < 8 ? 'lo' : 'hi'}:${n - i <= n % 8 ? 'tail' : 'vec'}`;
          if (!reported.has(key)) { reported.add(key); console.log(`FAIL seed ${seed} ${name}(${xs[i]}) at ${i} of ${n}: got ${out[i]}, want ${refs[name](xs[i])}`); }
        }
      }
    }
    // dtypes: norm-wise error on finite values
    for (const dtype of ['f16', 'bf16', 'f32'] as const) {
      const fin = Float64Array.from(xs, (v) => (Number.isFinite(v) && Math.abs(v) < 1e4 ? v : 1.5));
      const xr = roundTo(dtype, fin);
      for (const name of Object.keys(fns)) {
        const out = await fns[name](hs.tensor(Float32Array.from(fin), [n], { dtype })).floats();
        const e = relErr(out, Array.from(xr, refs[name]));
        count++;
        if (!(e <= TOL[dtype])) { fails++; console.log(`FAIL seed ${seed} ${name} ${dtype} n=${n}: relErr ${e}`); }
      }
    }
  }
  console.log(`activations: ${count} arrays, ${fails} element failures (kernels=${process.env.HYPERSD_CPU_KERNELS ?? 'default'})`);
})();
