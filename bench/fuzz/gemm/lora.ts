// Randomized loraLinear / loraLinearBatched / linearGeglu fuzz against float64. Usage: npx tsx lora.ts SEED NCASES [SECONDS]
import * as hs from '../../../lib';
import { DT, T, actRef, compare, rng, roundTo, bf16math } from './common';

const seed = Number(process.argv[2] ?? 1), ncases = Number(process.argv[3] ?? 100), seconds = Number(process.argv[4] ?? 150);
const R = rng(seed);
if (process.env.THREADS) hs.setThreads(Number(process.env.THREADS));
const BIG = process.env.BIG === '1';
const ks = process.env.HYPERSD_CPU_KERNELS ?? 'default';
const engaged = bf16math() && (ks === 'default' || ks === 'avx512');
console.log(`lora/geglu fuzz BIG ${BIG} threads ${hs.threads()} seed ${seed} kernels ${ks} bf16math ${bf16math()} engaged ${engaged}`);

const Ms = [1, 2, 5, 6, 7, 8, 9, 13, 16, 17, 31, 64, 77, 96, 127, 128, 129, 144, 145, 200, 289, 300];
const Ks = [1, 3, 8, 17, 40, 64, 100, 320, 333, 640, 768, 1270, 1276, 1279, 1280, 1281, 1300, 2048, 2049, 2561];
const Ns = [1, 2, 6, 7, 15, 16, 17, 29, 32, 33, 48, 64, 65, 96, 130, 300, 320, 513, 640];
const G2 = [2, 8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 160, 320, 640, 1280];
const pickDimS = (l: number[]) => (R.next() < 0.7 ? R.pick(l) : R.int(1, l[l.length - 1]));
const fdt = (): DT => R.pick(['f32', 'f32', 'f16', 'bf16'] as DT[]);

const pickDim = (l: number[]) => (BIG && l === Ms ? R.int(400, 2200) : pickDimS(l));
function shrink(dims: { M: number; K: number; N: number }, lim: number) {
  while (dims.M * dims.N * dims.K > lim) {
    const r = R.next();
    if (r < 0.33 && dims.K > 1) dims.K = Math.ceil(dims.K / 2);
    else if (r < 0.66 && dims.N > 1) dims.N = Math.ceil(dims.N / 2);
    else if (dims.M > 1 && !BIG) dims.M = Math.ceil(dims.M / 2);
    else if (dims.K > 1) dims.K = Math.ceil(dims.K / 2);
    else dims.N = Math.ceil(dims.N / 2);
  }
}

/** x[M,K] w[N,K] -> x w^T (float64), and sum |x||w| */
function xwT(x: Float64Array, w: Float64Array, M: number, K: number, N: number, xo = 0) {
  const y = new Float64Array(M * N), mag = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = 0, sa = 0;
      for (let k = 0; k < K; k++) { const v = x[xo + i * K + k] * w[j * K + k]; s += v; sa += Math.abs(v); }
      y[i * N + j] = s; mag[i * N + j] = sa;
    }
  return { y, mag };
}

let fails = 0;
const counts: Record<string, number> = {};
const bump = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
const t0 = Date.now();
const report = (what: string, res: { ok: boolean; msg: string }) => {
  if (!res.ok) { fails++; console.log(`FAIL ${what}: ${res.msg}`); }
};

async function loraCase(c: number) {
  const d = { M: pickDim(Ms), K: pickDim(Ks), N: pickDim(Ns) };
  shrink(d, 2e7);
  const { M, K, N } = d;
  const r = R.next() < 0.1 ? R.int(1, 3) : R.pick([1, 2, 4, 5, 8, 16, 24, 33, 64, 70]);
  const xdt: DT = R.next() < 0.7 ? 'f32' : R.pick(['f16', 'bf16'] as DT[]);
  const wdt = fdt(), ddt = fdt(), udt = fdt(), bdt = fdt();
  const hasBias = R.next() < 0.6;
  const scale = Math.fround(R.pick([1, -0.6, 0.75, R.normal() * 2, 0]));
  // lead dims of x
  const lead: number[] = R.pick([[M], [M], [1, M], [M === 1 ? 1 : 2, Math.ceil(M / 2)], []]);
  const Mt = lead.reduce((a, b) => a * b, 1);
  const x = roundTo(xdt, R.randn(Mt * K)), w = roundTo(wdt, R.randn(N * K, 1 / Math.sqrt(K)));
  const dn = roundTo(ddt, R.randn(r * K, 1 / Math.sqrt(K))), up = roundTo(udt, R.randn(N * r)), bias = roundTo(bdt, R.randn(N));
  const base = xwT(x, w, Mt, K, N), tt = xwT(x, dn, Mt, K, r);
  const ref = new Float64Array(Mt * N), mag = new Float64Array(Mt * N);
  for (let i = 0; i < Mt; i++)
    for (let j = 0; j < N; j++) {
      let s = 0, sa = 0;
      for (let q = 0; q < r; q++) { s += tt.y[i * r + q] * up[j * r + q]; sa += tt.mag[i * r + q] * Math.abs(up[j * r + q]); }
      ref[i * N + j] = base.y[i * N + j] + (hasBias ? bias[j] : 0) + scale * s;
      mag[i * N + j] = base.mag[i * N + j] + (hasBias ? Math.abs(bias[j]) : 0) + Math.abs(scale) * sa + 1e-6;
    }
  const what = `lora case ${c}: x${JSON.stringify([...lead, K])} ${xdt} w[${N},${K}] ${wdt} down[${r},${K}] ${ddt} up[${N},${r}] ${udt} bias ${hasBias ? bdt : 'no'} scale ${scale}`;
  try {
    const y = hs.ops.loraLinear(T(x, [...lead, K], xdt), T(w, [N, K], wdt), hasBias ? T(bias, [N], bdt) : null, T(dn, [r, K], ddt), T(up, [N, r], udt), scale);
    if (JSON.stringify(y.shape) !== JSON.stringify([...lead, N])) throw new Error(`shape ${JSON.stringify(y.shape)}`);
    const got = await y.floats();
    const half = xdt !== 'f32';
    report(what, compare(got, ref, half ? 1e-2 : 1e-5, mag, half ? 1e-2 : 1e-5));
  } catch (e) { fails++; console.log(`FAIL (threw) ${what}: ${(e as Error).message}`); }
  bump(`lora/${xdt}`);
}

async function loraBatchedCase(c: number) {
  const d = { M: pickDim([1, 2, 5, 6, 7, 11, 16, 17, 64, 77, 100, 129]), K: pickDim(Ks), N: pickDim(Ns) };
  const B = R.int(1, 4);
  shrink(d, 1e7 / B);
  const L = d.M, K = d.K, N = d.N;
  const r = R.pick([1, 2, 3, 4, 5, 8, 16, 17, 32]);
  const nA = R.int(1, 3);
  const xdt: DT = R.next() < 0.7 ? 'f32' : R.pick(['f16', 'bf16'] as DT[]);
  const wdt = fdt(), ddt = fdt(), udt = fdt(), bdt = fdt(), sdt = fdt();
  const hasBias = R.next() < 0.6;
  const idx = Array.from({ length: B }, () => R.int(-1, nA - 1));
  const scales = roundTo(sdt, Array.from({ length: B }, () => R.pick([1, 0.5, -2, 0, R.normal()])));
  const x = roundTo(xdt, R.randn(B * L * K)), w = roundTo(wdt, R.randn(N * K, 1 / Math.sqrt(K)));
  const dn = roundTo(ddt, R.randn(nA * r * K, 1 / Math.sqrt(K))), up = roundTo(udt, R.randn(nA * N * r)), bias = roundTo(bdt, R.randn(N));
  const ref = new Float64Array(B * L * N), mag = new Float64Array(B * L * N);
  for (let b = 0; b < B; b++) {
    const base = xwT(x, w, L, K, N, b * L * K);
    const a = idx[b];
    const tt = a >= 0 ? xwT(x, dn.subarray(a * r * K, (a + 1) * r * K), L, K, r, b * L * K) : null;
    for (let i = 0; i < L; i++)
      for (let j = 0; j < N; j++) {
        let s = 0, sa = 0;
        if (tt) for (let q = 0; q < r; q++) { const u = up[a * N * r + j * r + q]; s += tt.y[i * r + q] * u; sa += tt.mag[i * r + q] * Math.abs(u); }
        const o = (b * L + i) * N + j;
        ref[o] = base.y[i * N + j] + (hasBias ? bias[j] : 0) + scales[b] * s;
        mag[o] = base.mag[i * N + j] + (hasBias ? Math.abs(bias[j]) : 0) + Math.abs(scales[b]) * sa + 1e-6;
      }
  }
  const what = `loraBatched case ${c}: x[${B},${L},${K}] ${xdt} w[${N},${K}] ${wdt} downs[${nA},${r},${K}] ${ddt} ups[${nA},${N},${r}] ${udt} bias ${hasBias ? bdt : 'no'} idx ${JSON.stringify(idx)} scales ${JSON.stringify(Array.from(scales))} ${sdt}`;
  try {
    const y = hs.ops.loraLinearBatched(T(x, [B, L, K], xdt), T(w, [N, K], wdt), hasBias ? T(bias, [N], bdt) : null, T(dn, [nA, r, K], ddt),
      T(up, [nA, N, r], udt), hs.tensor(Int32Array.from(idx), [B]), T(scales, [B], sdt));
    const got = await y.floats();
    const half = xdt !== 'f32';
    report(what, compare(got, ref, half ? 1e-2 : 1e-5, mag, half ? 1e-2 : 1e-5));
  } catch (e) { fails++; console.log(`FAIL (threw) ${what}: ${(e as Error).message}`); }
  bump(`loraBatched/${xdt}`);
}

async function gegluCase(c: number) {
  const d = { M: pickDim(Ms), K: pickDim(Ks), N: R.next() < 0.8 ? R.pick(G2) : 2 * R.int(1, 200) };
  shrink(d, 2e7);
  let { M, K, N: N2 } = d;
  if (N2 % 2) N2 += 1;
  const xdt: DT = R.next() < 0.75 ? 'f32' : R.pick(['f16', 'bf16'] as DT[]);
  const wdt = fdt(), bdt = fdt();
  const hasBias = R.next() < 0.6;
  const lead: number[] = R.pick([[M], [M], [1, M], [M === 1 ? 1 : 2, Math.ceil(M / 2)], []]);
  const Mt = lead.reduce((a, b) => a * b, 1);
  const x = roundTo(xdt, R.randn(Mt * K)), w = roundTo(wdt, R.randn(N2 * K, 1.5 / Math.sqrt(K))), bias = roundTo(bdt, R.randn(N2));
  const fused = xdt === 'f32' && N2 % 16 === 0;
  const bf = engaged && true; // linear (composed) and the fused op both take bf16 products under the mode
  const xr = bf ? roundTo('bf16', x) : x, wr = bf ? roundTo('bf16', w) : w;
  const h = xwT(xr, wr, Mt, K, N2);
  const n = N2 / 2, ref = new Float64Array(Mt * n), mag = new Float64Array(Mt * n);
  for (let i = 0; i < Mt; i++)
    for (let j = 0; j < n; j++) {
      const hv = h.y[i * N2 + j] + (hasBias ? bias[j] : 0), hg = h.y[i * N2 + n + j] + (hasBias ? bias[n + j] : 0);
      ref[i * n + j] = hv * actRef(hg, 'gelu');
      const mv = h.mag[i * N2 + j] + (hasBias ? Math.abs(bias[j]) : 0), mg = h.mag[i * N2 + n + j] + (hasBias ? Math.abs(bias[n + j]) : 0);
      mag[i * n + j] = mv * Math.abs(actRef(hg, 'gelu')) + Math.abs(hv) * 1.2 * mg + 1e-6;
    }
  const what = `geglu case ${c}: x${JSON.stringify([...lead, K])} ${xdt} w[${N2},${K}] ${wdt} bias ${hasBias ? bdt : 'no'} fused ${fused}`;
  try {
    const xt = T(x, [...lead, K], xdt), wt = T(w, [N2, K], wdt), bt = hasBias ? T(bias, [N2], bdt) : null;
    const y = hs.ops.linearGeglu(xt, wt, bt);
    if (JSON.stringify(y.shape) !== JSON.stringify([...lead, n])) throw new Error(`shape ${JSON.stringify(y.shape)}`);
    const got = await y.floats();
    const half = xdt !== 'f32';
    report(what, compare(got, ref, half ? 1e-2 : 1e-5, mag, half ? 1e-2 : 1e-5));
    if (fused) {
      const comp = await hs.ops.geglu(hs.ops.linear(xt, wt, bt)).floats();
      let diff = -1;
      for (let i = 0; i < got.length; i++) if (!Object.is(got[i], comp[i])) { diff = i; break; }
      if (diff >= 0) { fails++; console.log(`FAIL ${what}: fused != composed bitwise at [${diff}]: ${got[diff]} vs ${comp[diff]}`); }
    }
  } catch (e) { fails++; console.log(`FAIL (threw) ${what}: ${(e as Error).message}`); }
  bump(`geglu/${fused ? 'fused' : 'composed'}/${xdt}`);
}

(async () => {
  const only = process.env.ONLY;
  let c = 0;
  for (; c < ncases && (Date.now() - t0) / 1000 < seconds; c++) {
    const k = only ?? R.pick(['lora', 'batched', 'geglu']);
    if (k === 'lora') await loraCase(c);
    else if (k === 'batched') await loraBatchedCase(c);
    else await gegluCase(c);
  }
  console.log(`done ${c} cases, ${fails} failures, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(JSON.stringify(counts));
})();
