import { hs, rng, relErr, roundTo } from './common';
const f = Math.fround;
let fails = 0, count = 0;
const fail = (s: string) => { fails++; console.log('FAIL ' + s); };
(async () => {
  // --- number operands
  const xs = Float32Array.from([1e-3, 2, -5, 0, 3e-30, 1, 7, 8, 9]);
  for (const s of [1e-39, 3e-39, 1e-40, 1e39, -1e-39]) {
    // The number path divides by s itself (a subnormal s rounded to float first, as the tensor path does, is
    // further from x / s).
    const d = await hs.ops.div(hs.tensor(xs, [9]), s).floats(), want = Array.from(xs, (v) => f(v / s));
    const tdiv = await hs.ops.div(hs.tensor(xs, [9]), hs.full([1], s)).floats();
    count++;
    if (relErr(d, want) > 1e-6 || Number.isNaN(relErr(d, want))) fail(`div(x, ${s}) number: got ${Array.from(d.slice(0, 4))} want ${want.slice(0, 4)} (tensor divisor gives ${Array.from(tdiv.slice(0, 4))})`);
  }
  // --- schedulerStep fuzz: bit exact vs f32 left-to-right
  for (let it = 0; it < 300; it++) {
    const r = rng(900000 + it), n = r.pick([r.int(1, 50), r.int(1, 40000)]);
    const x = Float32Array.from({ length: n }, () => r.normal() * 3), e = Float32Array.from({ length: n }, () => r.normal()), z = Float32Array.from({ length: n }, () => r.normal());
    const [a, b, c] = [r.normal(), r.normal(), r.pick([0, r.normal()])];
    const noise = r.next() < 0.5;
    const shape = r.pick([[n], [1, n]]);
    const y = await hs.ops.schedulerStep(hs.tensor(x, shape), hs.tensor(e, shape), noise ? hs.tensor(z, shape) : null, a, b, c).floats();
    let diff = 0;
    for (let i = 0; i < n; i++) { const ref = noise ? f(f(f(f(a) * x[i]) + f(f(b) * e[i])) + f(f(c) * z[i])) : f(f(f(a) * x[i]) + f(f(b) * e[i])); if (!Object.is(y[i], ref) && !(y[i] === ref)) diff++; }
    count++;
    if (diff) fail(`schedulerStep seed ${900000 + it} n=${n} noise=${noise}: ${diff} elements differ`);
  }
  // dtype mixing in schedulerStep
  try {
    const y = hs.ops.schedulerStep(hs.tensor(Float32Array.from([1, 2, 3]), [3], { dtype: 'f16' }), hs.tensor(Float32Array.from([1, 1, 1]), [3]), null, 1, 1, 0);
    const v = await y.floats(); count++;
    if (y.dtype !== 'f16' || v[0] !== 2) fail(`schedulerStep f16 x + f32 eps: ${y.dtype} ${Array.from(v)}`);
  } catch (e) { console.log('note: schedulerStep mixed dtypes threw: ' + (e as Error).message); }
  // --- timestepEmbedding fuzz
  // (maxPeriod 0.5 and scale 1000 left out: an ulp of exp moves sin arguments of ~1e6 by 0.06, and the
  // f32-emulating reference, whose exp is not the kernel's, is then off by up to 1e-3.)
  const tref = (ts: ArrayLike<number>, dim: number, flip: boolean, shift: number, maxPeriod: number, scale: number) => {
    const half = Math.floor(dim / 2), y = new Float64Array(ts.length * dim);
    for (let b = 0; b < ts.length; b++) for (let j = 0; j < half; j++) {
      const e = f(f(f(-Math.log(maxPeriod)) * j) / f(half - shift)), arg = f(f(scale) * f(f(ts[b]) * f(Math.exp(e))));
      y[b * dim + j] = flip ? Math.cos(arg) : Math.sin(arg); y[b * dim + half + j] = flip ? Math.sin(arg) : Math.cos(arg);
    }
    return y;
  };
  for (let it = 0; it < 200; it++) {
    const r = rng(910000 + it), B = r.int(1, 6), dim = r.pick([1, 2, 3, r.int(1, 40), 320, 1280, r.int(2, 2000)]);
    const flip = r.next() < 0.5, shift = r.pick([0, 1, 0.5, -1]), maxPeriod = r.pick([10000, 1000, 2, 1]), scale = r.pick([1, 2, 0.5]);
    if (dim >= 2 && Math.floor(dim / 2) - shift === 0) continue;
    const ts = Float32Array.from({ length: B }, () => r.pick([0, 999, r.next() * 1000, 1, 0.25, -5]));
    const y = await hs.ops.timestepEmbedding(hs.tensor(ts, [B]), dim, { flipSinToCos: flip, freqShift: shift, maxPeriod, scale }).floats();
    const ref = tref(ts, dim, flip, shift, maxPeriod, scale);
    if (dim % 2) for (let b = 0; b < B; b++) ref[b * dim + dim - 1] = 0;
    const e = relErr(y, ref); count++;
    if (!(e <= 1e-5)) fail(`timestepEmbedding seed ${910000 + it} B=${B} dim=${dim} flip=${flip} shift=${shift} maxP=${maxPeriod} scale=${scale}: relErr ${e}`);
  }
  // --- embedding fuzz
  for (let it = 0; it < 200; it++) {
    const r = rng(920000 + it), V = r.int(1, 500), D = r.int(1, 300), dtype = r.pick(['f32', 'f16', 'bf16']) as hs.DType;
    const shape = r.pick([[r.int(0, 20)], [r.int(1, 5), r.int(1, 9)], []]);
    const nids = shape.reduce((a, b) => a * b, 1);
    const ids = Array.from({ length: nids }, () => r.int(0, V - 1));
    const table = Float64Array.from({ length: V * D }, () => r.normal());
    const idT = r.next() < 0.5 ? hs.tensor(Int32Array.from(ids), shape) : hs.tensor(BigInt64Array.from(ids.map(BigInt)), shape);
    const y = hs.ops.embedding(idT, hs.tensor(Float32Array.from(table), [V, D], { dtype }));
    const o = await y.floats(), tr = roundTo(dtype, table);
    count++;
    let bad = JSON.stringify(y.shape) !== JSON.stringify([...shape, D]);
    for (let i = 0; i < nids && !bad; i++) for (let k = 0; k < D; k++) if (o[i * D + k] !== tr[ids[i] * D + k]) { bad = true; break; }
    if (bad) fail(`embedding seed ${920000 + it} V=${V} D=${D} ids shape [${shape}] -> [${y.shape}]`);
  }
  // i64 ids beyond 2^31 and negative
  for (const bad of [2n ** 32n, -(2n ** 32n) + 1n, 2n ** 31n]) {
    let said = '';
    try { await hs.ops.embedding(hs.tensor(BigInt64Array.from([0n, bad]), [2]), hs.ones([4, 3])).data(); } catch (e) { said = (e as Error).message; }
    count++;
    if (!/out of range/.test(said)) fail(`embedding id ${bad}: no range error (${said})`); else console.log(`ok embedding id ${bad}: ${said}`);
  }
  // --- random
  for (const [seed, offset] of [[0, 0], [2 ** 53 - 1, 0], [1, 2 ** 53 - 1], [2 ** 32, 2 ** 32]]) {
    const u = await hs.ops.rand([1001], { seed, offset }).floats(), z = await hs.ops.randn([1001], { seed, offset }).floats();
    let ok = true; for (const v of u) if (!(v >= 0 && v < 1)) ok = false; for (const v of z) if (!Number.isFinite(v)) ok = false;
    count++;
    if (!ok) fail(`rand seed ${seed} offset ${offset}: values out of range`);
  }
  // randn odd sizes: prefix property across sizes 1..9
  const big = await hs.ops.randn([64], { seed: 3 }).floats();
  for (let n = 1; n < 10; n++) { const s = await hs.ops.randn([n], { seed: 3 }).floats(); count++; if (Array.from(s).some((v, i) => v !== big[i])) fail(`randn prefix n=${n}`); }
  const bh = await hs.ops.randn([5], { seed: 3, dtype: 'bf16' }).floats(); count++;
  if (Array.from(bh).some((v, i) => v !== roundTo('bf16', [big[i]])[0])) fail('randn bf16 odd size');
  console.log(`misc: ${count} checks, ${fails} failures (kernels=${process.env.HYPERSD_CPU_KERNELS ?? 'default'})`);
})();
