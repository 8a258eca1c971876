// Randomized attention fuzz against float64. Usage: npx tsx attn.ts SEED NCASES [SECONDS]
import * as hs from '../../../lib';
import { DT, T, compare, rng, roundTo, bf16math } from './common';

const seed = Number(process.argv[2] ?? 1), ncases = Number(process.argv[3] ?? 100), seconds = Number(process.argv[4] ?? 150);
const R = rng(seed);
if (process.env.THREADS) hs.setThreads(Number(process.env.THREADS));
const ks = process.env.HYPERSD_CPU_KERNELS ?? 'default';
const engaged = bf16math() && (ks === 'default' || ks === 'avx512');
console.log(`attention fuzz seed ${seed} kernels ${ks} bf16math ${bf16math()} engaged ${engaged}`);

const Ls = [1, 2, 5, 6, 7, 9, 15, 16, 17, 33, 63, 64, 65, 77, 96, 97, 127, 128, 129, 150, 191, 192, 193, 255, 256, 257, 300];
const Ds = [1, 2, 3, 7, 8, 12, 16, 24, 33, 40, 48, 64, 70, 80, 96, 120, 128, 160];

function reference(q: Float64Array, k: Float64Array, v: Float64Array, B: number, Lq: number, Lk: number, H: number, D: number, Dv: number,
                   causal: boolean, scale: number) {
  const o = new Float64Array(B * Lq * H * Dv), lse = new Float64Array(B * H * Lq), mag = new Float64Array(B * Lq * H * Dv);
  // per-row conditioning of the logits: |scale| max_j sum_e |q k| (f32 logits carry ~eps times this absolute error)
  const cond = new Float64Array(B * Lq * H * Dv);
  const s = new Float64Array(Lk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Lq; i++) {
        let m = -Infinity, c = 0;
        const n = causal ? Math.min(Lk, i + 1) : Lk;
        for (let j = 0; j < n; j++) {
          let d = 0;
          for (let e = 0; e < D; e++) d += q[((b * Lq + i) * H + h) * D + e] * k[((b * Lk + j) * H + h) * D + e];
          s[j] = d * scale;
          m = Math.max(m, s[j]);
          let da = 0;
          for (let e = 0; e < D; e++) da += Math.abs(q[((b * Lq + i) * H + h) * D + e] * k[((b * Lk + j) * H + h) * D + e]);
          c = Math.max(c, Math.abs(scale) * da);
        }
        let sum = 0;
        for (let j = 0; j < n; j++) sum += Math.exp(s[j] - m);
        lse[(b * H + h) * Lq + i] = m + Math.log(sum);
        for (let e = 0; e < Dv; e++) {
          let acc = 0, am = 0;
          for (let j = 0; j < n; j++) { const p = Math.exp(s[j] - m); const vv = v[((b * Lk + j) * H + h) * Dv + e]; acc += p * vv; am += p * Math.abs(vv); }
          o[((b * Lq + i) * H + h) * Dv + e] = acc / sum;
          mag[((b * Lq + i) * H + h) * Dv + e] = am / sum;
          cond[((b * Lq + i) * H + h) * Dv + e] = Math.max(1, c / 50);
        }
      }
  return { o, lse, mag, cond };
}

/** bf16-math reference: the operands rounded as the CPU's bf16 mode rounds them (kernel: q*scale*log2e, K, V;
 * GEMM path (one head > 160 channels, no lse): q, K, then P and V). */
function nearRef(q: Float64Array, k: Float64Array, v: Float64Array, B: number, Lq: number, Lk: number, H: number, D: number, Dv: number,
                 scale: number, gemmPath: boolean) {
  const sl = Math.fround(scale * Math.LOG2E);
  const o = new Float64Array(B * Lq * H * Dv), s = new Float64Array(Lk), p = new Float64Array(Lk);
  const kr = roundTo('bf16', k), vr = roundTo('bf16', v);
  const qr = roundTo('bf16', gemmPath ? q : Float32Array.from(q, (x) => x * sl));
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Lq; i++) {
        let m = -Infinity;
        for (let j = 0; j < Lk; j++) {
          let d = 0;
          for (let e = 0; e < D; e++) d += qr[((b * Lq + i) * H + h) * D + e] * kr[((b * Lk + j) * H + h) * D + e];
          s[j] = gemmPath ? Math.fround(d) * scale * Math.LOG2E : d;
          m = Math.max(m, s[j]);
        }
        let sum = 0;
        for (let j = 0; j < Lk; j++) sum += 2 ** (s[j] - m);
        for (let j = 0; j < Lk; j++) p[j] = 2 ** (s[j] - m);
        const pr = gemmPath ? roundTo('bf16', p.map((x) => x / sum)).map((x) => x * sum) : p;
        for (let e = 0; e < Dv; e++) {
          let acc = 0;
          for (let j = 0; j < Lk; j++) acc += pr[j] * vr[((b * Lk + j) * H + h) * Dv + e];
          o[((b * Lq + i) * H + h) * Dv + e] = acc / sum;
        }
      }
  return o;
}

let fails = 0, done = 0;
const counts: Record<string, number> = {};
const t0 = Date.now();
(async () => {
  for (let c = 0; c < ncases && (Date.now() - t0) / 1000 < seconds; c++) {
    const B = R.int(1, 3), H = R.pick([1, 1, 2, 3, 4, 5, 8, 10]);
    let Lq = R.next() < 0.75 ? R.pick(Ls) : R.int(1, 300), Lk = R.next() < 0.3 ? Lq : R.next() < 0.75 ? R.pick(Ls) : R.int(1, 300);
    let D = R.next() < 0.8 ? R.pick(Ds) : R.int(1, 170);
    let Dv = R.next() < 0.7 ? D : R.next() < 0.8 ? R.pick(Ds) : R.int(1, 170);
    if (H === 1 && R.next() < 0.15) { D = R.pick([200, 256, 320, 512, 700]); Dv = R.next() < 0.7 ? D : R.pick([64, 200, 512]); }
    while (B * H * Lq * Lk * (D + Dv) > 3e7) {
      if (Lq > 1 && R.next() < 0.5) Lq = Math.ceil(Lq / 2);
      else if (Lk > 1) Lk = Math.ceil(Lk / 2);
      else if (D > 1) D = Math.ceil(D / 2);
      else Dv = Math.ceil(Dv / 2);
    }
    const causal = R.next() < 0.3;
    const dt: DT = R.next() < 0.6 ? 'f32' : R.pick(['f16', 'bf16'] as DT[]);
    const amp = R.pick([1, 1, 1, 2, 4, 0.1]);
    const scaleOpt: number | undefined = R.next() < 0.75 ? undefined : Math.fround(R.pick([0.37, 1, 0.05, -0.3, 0, 2.5]));
    const withLse = R.next() < 0.5;
    const qv = roundTo(dt, R.randn(B * Lq * H * D, amp)), kv = roundTo(dt, R.randn(B * Lk * H * D)), vv = roundTo(dt, R.randn(B * Lk * H * Dv));
    const scale = scaleOpt ?? 1 / Math.sqrt(D);
    const ref = reference(qv, kv, vv, B, Lq, Lk, H, D, Dv, causal, Math.fround(scale));
    const what = `case ${c}: B ${B} Lq ${Lq} Lk ${Lk} H ${H} D ${D} Dv ${Dv} causal ${causal} ${dt} amp ${amp} scale ${scaleOpt} lse ${withLse}`;
    try {
      const q = T(qv, [B, Lq, H * D], dt), k = T(kv, [B, Lk, H * D], dt), v = T(vv, [B, Lk, H * Dv], dt);
      let out: Float32Array, lse: Float32Array | null = null;
      if (withLse) {
        const r = hs.ops.attention(q, k, v, { heads: H, scale: scaleOpt, causal, returnLse: true });
        if (JSON.stringify(r.out.shape) !== JSON.stringify([B, Lq, H * Dv]) || r.out.dtype !== dt) throw new Error(`out ${r.out.dtype}${JSON.stringify(r.out.shape)}`);
        out = await r.out.floats(); lse = await r.lse.floats();
      } else {
        const y = hs.ops.attention(q, k, v, { heads: H, scale: scaleOpt, causal });
        if (JSON.stringify(y.shape) !== JSON.stringify([B, Lq, H * Dv]) || y.dtype !== dt) throw new Error(`out ${y.dtype}${JSON.stringify(y.shape)}`);
        out = await y.floats();
      }
      // bf16 math (non-causal) rounds q*scale, K, V and P to bf16: bf16 tolerance against the exact attention.
      const bfm = engaged && !causal;
      const half = dt !== 'f32' || bfm;
      // elementwise: |o - r| <= etol * (sum p|v| / sum p + rms(v))
      const mag = ref.mag.map((x, i) => (x + 0.05) * ref.cond[i]);
      const gemmPath = H === 1 && H * D > 160 && !causal && !withLse;
      const rref = bfm ? nearRef(qv, kv, vv, B, Lq, Lk, H, D, Dv, Math.fround(scale), gemmPath) : ref.o;
      const res = compare(out, rref, half ? 1e-2 : 1e-5, mag, half ? 3e-2 : 2e-5);
      if (!res.ok) { fails++; console.log(`FAIL ${what}: out ${res.msg}`); }
      if (lse) {
        // The logits' f32 dot products over D values round by ~sqrt(D) ulps of |scale q.k|: the lse's element
        // tolerance grows with sqrt(D / 64) (a single 700-wide key at scale 2.5 is 1.2e-5 off, as any f32 dot is).
        const lmag = ref.lse.map((x) => (Math.abs(x) + 1) * Math.max(1, Math.sqrt(D / 64)));
        const r2 = bfm ? { ok: true, msg: '' } : compare(lse, ref.lse, half ? 1e-2 : 1e-5, lmag, half ? 1e-2 : 1e-5);
        if (!r2.ok) { fails++; console.log(`FAIL ${what}: lse ${r2.msg}`); }
      }
    } catch (e) {
      fails++;
      console.log(`FAIL (threw) ${what}: ${(e as Error).message}`);
    }
    const path = H === 1 && H * D > 160 && !causal && !withLse ? 'gemm' : !causal && Lk <= 128 && scale > 0 && Dv % 40 !== 0 ? 'transposed' : Lk <= 128 ? 'oneblock' : 'multiblock';
    const key = `${path}/${causal ? 'causal' : 'full'}/${dt}`;
    counts[key] = (counts[key] ?? 0) + 1;
    done++;
  }
  console.log(`done ${done} cases, ${fails} failures, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(JSON.stringify(counts));
})();
