import { hs, rng, relErr, roundTo, TOL } from './common';
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
function bref(a: Float64Array, as: number[], b: Float64Array, bs: number[], out: number[], f: (x: number, y: number) => number) {
  const n = size(out), y = new Float64Array(n), nd = out.length, coord = new Array(nd).fill(0);
  const idx = (s: number[]) => { let o = 0; for (let i = 0; i < s.length; i++) o = o * s[i] + (s[i] === 1 ? 0 : coord[nd - s.length + i]); return o; };
  for (let i = 0; i < n; i++) {
    let r = i; for (let d = nd - 1; d >= 0; d--) { coord[d] = r % out[d]; r = Math.floor(r / out[d]); }
    y[i] = f(a[idx(as)], b[idx(bs)]);
  }
  return y;
}
const ops: [string, (x: number, y: number) => number][] = [['add', (x, y) => x + y], ['sub', (x, y) => x - y], ['mul', (x, y) => x * y], ['div', (x, y) => x / y]];
const seed0 = Number(process.env.SEED ?? 1), iters = Number(process.env.ITERS ?? 500);
let fails = 0, count = 0, errs = 0;
(async () => {
  for (let it = 0; it < iters; it++) {
    const seed = seed0 * 100000 + it, r = rng(seed);
    const nd = r.int(0, 6);
    const out: number[] = []; for (let d = 0; d < nd; d++) out.push(r.pick([1, 1, 2, 3, r.int(1, 9), r.int(1, 40), r.int(8, 70)]));
    if (size(out) > 200000) continue;
    const mk = () => { const drop = r.int(0, nd); return out.slice(drop).map((d) => (r.next() < 0.35 ? 1 : d)); };
    let as = mk(), bs = mk();
    if (r.next() < 0.2) as = out.slice();
    // the expected output shape is the broadcast of as, bs
    const n2 = Math.max(as.length, bs.length), ys: number[] = [];
    for (let i = 0; i < n2; i++) { const x = as[as.length - n2 + i] ?? 1, y = bs[bs.length - n2 + i] ?? 1; ys.push(x === 1 ? y : x); }
    const da = r.pick(['f32', 'f32', 'f16', 'bf16']) as hs.DType, db = r.next() < 0.7 ? da : (r.pick(['f32', 'f16', 'bf16']) as hs.DType);
    const av = Float64Array.from({ length: size(as) }, () => r.normal() * 2), bv = Float64Array.from({ length: size(bs) }, () => { const v = r.normal(); return Math.sign(v) * (0.3 + Math.abs(v)); });
    const [name, f] = r.pick(ops);
    const a = hs.tensor(Float32Array.from(av), as, { dtype: da }), b = hs.tensor(Float32Array.from(bv), bs, { dtype: db });
    let y: hs.Tensor;
    try { y = (hs.ops as any)[name](a, b); } catch (e) { errs++; console.log(`FAIL seed ${seed} ${name} [${as}] [${bs}] threw ${(e as Error).message}`); fails++; continue; }
    const wantDtype = da === db ? da : 'f32';
    const o = await y.floats();
    const ref = bref(roundTo(da, av), as, roundTo(db, bv), bs, ys, f);
    count++;
    const tol = wantDtype === 'f32' ? 1e-6 : 1e-2;
    const e = relErr(o, ref);
    const shapeOk = JSON.stringify(y.shape) === JSON.stringify(ys) && y.dtype === wantDtype;
    if (!(e <= tol) || !shapeOk) { fails++; console.log(`FAIL seed ${seed} ${name} a[${as}] ${da} b[${bs}] ${db} -> [${y.shape}] ${y.dtype} (want [${ys}] ${wantDtype}) relErr ${e}`); }
    // scalar b variants
    if (r.next() < 0.3) {
      const s = r.pick([2.5, -3, 0.1, 1e-3, 7]);
      const ys2 = await (hs.ops as any)[name](a, s).floats();
      const ref2 = roundTo(da, av).map((v) => f(v, s));
      const e2 = relErr(ys2, ref2); count++;
      if (!(e2 <= (da === 'f32' ? 1e-6 : 1e-2))) { fails++; console.log(`FAIL seed ${seed} ${name}(a[${as}] ${da}, ${s}) relErr ${e2}`); }
    }
  }
  console.log(`elementwise: ${count} cases, ${fails} failures (kernels=${process.env.HYPERSD_CPU_KERNELS ?? 'default'})`);
})();
