// Randomized matmul / linear fuzz against float64. Usage: npx tsx gemm.ts SEED NCASES [SECONDS]
import * as hs from '../../../lib';
import { Act, DT, T, actRef, compare, rng, roundTo, bf16math } from './common';

const seed = Number(process.argv[2] ?? 1), ncases = Number(process.argv[3] ?? 100), seconds = Number(process.argv[4] ?? 150);
const R = rng(seed);
if (process.env.THREADS) hs.setThreads(Number(process.env.THREADS));
const BIG = process.env.BIG === '1';
const ks = process.env.HYPERSD_CPU_KERNELS ?? 'default';
const engaged = bf16math() && (ks === 'default' || ks === 'avx512');
console.log(`gemm fuzz BIG ${BIG} threads ${hs.threads()} seed ${seed} kernels ${ks} bf16math ${bf16math()} engaged ${engaged}`);

const Ms = [1, 2, 3, 5, 6, 7, 8, 9, 12, 15, 16, 17, 31, 33, 47, 48, 63, 64, 65, 77, 96, 127, 128, 129, 143, 144, 145, 150, 200, 257, 288, 289, 300];
const Ks = [1, 2, 3, 7, 8, 15, 16, 17, 31, 40, 64, 100, 255, 320, 333, 640, 768, 1279, 1280, 1281, 1400, 2047, 2048, 2049, 2560, 2561, 2600, 3841];
const Ns = [1, 2, 5, 6, 7, 11, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 95, 96, 97, 130, 255, 256, 300, 320, 513, 640, 1000, 3071, 3072, 3073, 3100];
const acts: Act[] = ['none', 'silu', 'gelu', 'gelu_tanh', 'quick_gelu'];

function pickDim(list: number[]) {
  return R.next() < 0.7 ? R.pick(list) : R.int(1, list[list.length - 1]);
}

let fails = 0, done = 0;
const counts: Record<string, number> = {};
const t0 = Date.now();
(async () => {
  for (let c = 0; c < ncases && (Date.now() - t0) / 1000 < seconds; c++) {
    const transA = R.next() < 0.3, transB = R.next() < 0.6;
    const special = BIG && R.next() < 0.15;
    const nb = special ? 0 : R.pick([0, 0, 0, 1, 1, 2]);
    const batch = Array.from({ length: nb }, () => R.int(1, 3));
    const P = batch.reduce((a, b) => a * b, 1);
    const bBatched = nb > 0 && R.next() < 0.5;
    let M = BIG ? R.int(400, 2200) : pickDim(Ms), K = pickDim(Ks), N = pickDim(Ns);
    if (special) { M = R.int(200, 330); K = R.int(26000, 30000); N = R.int(1, 3); }
    // keep the float64 reference cheap
    while (P * M * N * K > (BIG ? 4e7 : 3e7)) {
      const r = R.next();
      if (r < 0.33 && K > 1) K = Math.ceil(K / 2);
      else if (r < 0.66 && N > 1) N = Math.ceil(N / 2);
      else if (M > 1 && !BIG) M = Math.ceil(M / 2);
      else if (K > 1) K = Math.ceil(K / 2);
      else N = Math.ceil(N / 2);
    }
    const adt: DT = R.next() < 0.75 ? 'f32' : R.pick(['f16', 'bf16'] as DT[]);
    const bdt: DT = R.next() < 0.5 ? 'f32' : R.pick(['f16', 'bf16'] as DT[]);
    const hasBias = R.next() < 0.5, bdtBias: DT = R.pick(['f32', 'f32', 'f16', 'bf16'] as DT[]);
    const act: Act = R.next() < 0.4 ? 'none' : R.pick(acts);
    const alpha = R.next() < 0.5 ? 1 : Math.fround(R.normal() * 2);
    const useOut = R.next() < 0.4;
    const beta = useOut && R.next() < 0.7 ? Math.fround(R.pick([1, -1, 0.5, R.normal() * 2])) : 0;
    const odt: DT = useOut ? (R.next() < 0.7 ? adt : R.pick(['f32', 'f16', 'bf16'] as DT[])) : adt;

    const aShape = [...batch, ...(transA ? [K, M] : [M, K])];
    const bShape = [...(bBatched ? batch : []), ...(transB ? [N, K] : [K, N])];
    const av = roundTo(adt, R.randn(P * M * K));
    const bv = roundTo(bdt, R.randn((bBatched ? P : 1) * K * N, 1 / Math.sqrt(Math.max(1, K) / 16)));
    const biasv = roundTo(bdtBias, R.randn(N));
    const oldv = roundTo(odt, R.randn(P * M * N));
    const what = `case ${c}: a${JSON.stringify(aShape)} ${adt} transA ${transA} b${JSON.stringify(bShape)} ${bdt} transB ${transB} M ${M} K ${K} N ${N} bias ${hasBias ? bdtBias : 'no'} act ${act} alpha ${alpha} beta ${beta} out ${useOut ? odt : 'no'}`;

    // reference: A as row-major [P][M][K], B^T as [Pb][N][K]
    const bf = engaged && !bBatched;
    const rA = new Float64Array(P * M * K), rB = new Float64Array((bBatched ? P : 1) * N * K);
    for (let p = 0; p < P; p++)
      for (let i = 0; i < M; i++)
        for (let k = 0; k < K; k++) rA[(p * M + i) * K + k] = transA ? av[p * M * K + k * M + i] : av[p * M * K + i * K + k];
    for (let p = 0; p < (bBatched ? P : 1); p++)
      for (let j = 0; j < N; j++)
        for (let k = 0; k < K; k++) rB[(p * N + j) * K + k] = transB ? bv[p * N * K + j * K + k] : bv[p * N * K + k * N + j];
    const A2 = bf ? roundTo('bf16', rA) : rA, B2 = bf ? roundTo('bf16', rB) : rB;
    const ref = new Float64Array(P * M * N), mag = new Float64Array(P * M * N);
    for (let p = 0; p < P; p++)
      for (let i = 0; i < M; i++) {
        const ao = (p * M + i) * K;
        for (let j = 0; j < N; j++) {
          const bo = ((bBatched ? p : 0) * N + j) * K;
          let s = 0, sa = 0;
          for (let k = 0; k < K; k++) { const x = A2[ao + k] * B2[bo + k]; s += x; sa += Math.abs(x); }
          const idx = (p * M + i) * N + j;
          const pre = alpha * s + (hasBias ? biasv[j] : 0);
          let v = actRef(pre, act);
          if (beta) v += beta * oldv[idx];
          ref[idx] = v;
          mag[idx] = 1.2 * (Math.abs(alpha) * sa + (hasBias ? Math.abs(biasv[j]) : 0)) + Math.abs(beta * oldv[idx]) + 1e-6;
        }
      }

    let got: Float32Array;
    try {
      const a = T(av, aShape, adt), b = T(bv, bShape, bdt);
      const out = useOut ? T(oldv, [...batch, M, N], odt) : undefined;
      const y = hs.ops.matmul(a, b, { transA, transB, alpha: process.env.TAMPER ? alpha * 1.0001 : alpha, beta, act, bias: hasBias ? T(biasv, [N], bdtBias) : undefined, out });
      if (JSON.stringify(y.shape) !== JSON.stringify([...batch, M, N])) throw new Error(`shape ${JSON.stringify(y.shape)}`);
      if (y.dtype !== odt) throw new Error(`dtype ${y.dtype} expected ${odt}`);
      got = await y.floats();
      y.dispose(); a.dispose(); b.dispose();
    } catch (e) {
      fails++;
      console.log(`FAIL (threw) ${what}: ${(e as Error).message}`);
      continue;
    }
    const half = odt !== 'f32';
    const res = compare(got, ref, half ? 1e-2 : 1e-5, mag, half ? 1e-2 : 1e-5);
    const key = `${transA ? 'tA' : ''}${transB ? 'tB' : ''}${nb ? (bBatched ? 'bat' : 'bcast') : ''}/${adt}${bdt}`;
    counts[key] = (counts[key] ?? 0) + 1;
    done++;
    if (!res.ok) {
      fails++;
      console.log(`FAIL ${what}: ${res.msg}`);
    }
  }
  console.log(`done ${done} cases, ${fails} failures, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(JSON.stringify(counts));
})();
