// Randomized conv2d / loraConv2d fuzz vs float64 reference. Env: SEED, N (cases), BUDGET_S.
import { Tensor } from '../../../lib/tensor';
import { native } from '../../../lib/native';
import { hs, rng, roundTo, guarded, compare, TOL, DT } from './common';
const SEED = Number(process.env.SEED ?? 1), COUNT = Number(process.env.N ?? 200), BUDGET = Number(process.env.BUDGET_S ?? 150);
const KS = process.env.HYPERSD_CPU_KERNELS ?? 'default';
const R = rng(SEED);
interface G { N: number; H: number; W: number; C: number; O: number; kh: number; kw: number; stride: number; pad: number }
const outHW = (g: G) => [Math.floor((g.H + 2 * g.pad - g.kh) / g.stride) + 1, Math.floor((g.W + 2 * g.pad - g.kw) / g.stride) + 1];
function refConv(x: Float64Array, w: Float64Array, g: G, bias?: Float64Array, beta = 0, old?: Float64Array) {
  const [Ho, Wo] = outHW(g);
  const y = new Float64Array(g.N * Ho * Wo * g.O);
  for (let n = 0; n < g.N; n++) for (let oy = 0; oy < Ho; oy++) for (let ox = 0; ox < Wo; ox++) for (let o = 0; o < g.O; o++) {
    let s = bias ? bias[o] : 0;
    for (let ky = 0; ky < g.kh; ky++) {
      const iy = oy * g.stride - g.pad + ky; if (iy < 0 || iy >= g.H) continue;
      for (let kx = 0; kx < g.kw; kx++) {
        const ix = ox * g.stride - g.pad + kx; if (ix < 0 || ix >= g.W) continue;
        const xb = ((n * g.H + iy) * g.W + ix) * g.C, wb = ((o * g.kh + ky) * g.kw + kx) * g.C;
        for (let c = 0; c < g.C; c++) s += x[xb + c] * w[wb + c];
      }
    }
    const i = ((n * Ho + oy) * Wo + ox) * g.O + o;
    y[i] = s + (beta ? beta * old![i] : 0);
  }
  return y;
}
const ALGOS = ['auto', 'gemm', 'winograd', 'winograd4', 'winograd6'] as const;
const counts: Record<string, number> = {};
let fails = 0, cases = 0, worst: Record<string, number> = {};
const t0 = Date.now();

const PROFILE = process.env.PROFILE ?? 'small';
function randGeomBig(): G {
  const kh = R.next() < 0.75 ? 3 : 1, kw = kh;
  const stride = kh === 3 && R.next() < 0.8 ? 1 : 2, pad = kh === 3 ? R.pick([0, 1, 1, 2]) : 0;
  const C = R.pick([R.int(100, 330), R.int(16, 64), R.int(330, 800), 320, 384, 385, 640]);
  const O = R.pick([16, 32, 48, 64, 96, 128, 160, 320, R.int(9, 200)]);
  const N = R.pick([1, 1, 2, 3]);
  const H = R.int(3, 48), W = R.int(3, 48);
  const g = { N, H, W, C, O, kh, kw, stride, pad };
  const [Ho, Wo] = outHW(g);
  if (N * Ho * Wo * O * kh * kw * C > 1.5e8) return randGeomBig();
  return g;
}
function randGeomHuge(): G {
  const kh = R.next() < 0.7 ? 3 : 1, kw = kh, stride = R.next() < 0.85 ? 1 : 2, pad = kh === 3 ? R.pick([0, 1, 1, 2]) : 0;
  const C = R.pick([512, 640, 960, 1280, 1300, R.int(400, 1300), R.int(16, 80)]), O = R.pick([512, 640, 700, R.int(300, 800), 16, 32]);
  const N = R.pick([1, 1, 2]), H = R.int(2, 14), W = R.int(2, 14);
  const g = { N, H, W, C, O, kh, kw, stride, pad };
  const [Ho, Wo] = outHW(g);
  if (Ho < 1 || Wo < 1 || N * Ho * Wo * O * kh * kw * C > 2e8) return randGeomHuge();
  return g;
}
function randGeom(): G {
  if (PROFILE === 'huge') return randGeomHuge();
  if (PROFILE === 'big') return randGeomBig();
  const kind = R.pick(['3x3', '3x3', '3x3', '1x1', 'asym', '5x5', '2x2']);
  let kh = 3, kw = 3;
  if (kind === '1x1') kh = kw = 1; else if (kind === 'asym') [kh, kw] = R.pick([[1, 3], [3, 1], [2, 3], [3, 2], [1, 5]]); else if (kind === '5x5') kh = kw = 5; else if (kind === '2x2') kh = kw = 2;
  const stride = R.next() < 0.7 ? 1 : R.next() < 0.85 ? 2 : 3, pad = R.pick([0, 1, 1, 2, 3]);
  const bigC = R.next() < 0.12;
  const C = bigC ? R.int(100, 330) : R.pick([R.int(1, 20), R.int(1, 70), 16, 32, 17, 15, 64]);
  const O = R.next() < 0.3 ? R.int(1, 8) : bigC && R.next() < 0.5 ? R.int(100, 200) : R.pick([R.int(1, 70), 16, 32, 48, 9, 17, 33]);
  let H = R.pick([1, 2, 3, R.int(1, 40), R.int(1, 40), R.int(4, 24), 13, 17, 25]), W = R.pick([1, 2, 5, R.int(1, 40), R.int(1, 40), R.int(4, 24), 11, 19, 31]);
  H = Math.max(H, kh - 2 * pad); W = Math.max(W, kw - 2 * pad);
  const N = R.pick([1, 1, 2, 3]);
  const g = { N, H, W, C, O, kh, kw, stride, pad };
  const [Ho, Wo] = outHW(g);
  // keep reference cost bounded
  const cost = N * Ho * Wo * O * kh * kw * C;
  if (cost > 1.2e7) return randGeom();
  return g;
}

function nchwView(x: Float64Array, g: G, dt: DT) {
  const { N, H, W, C } = g; const a = new Float32Array(N * C * H * W);
  for (let n = 0; n < N; n++) for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) for (let c = 0; c < C; c++) a[((n * C + c) * H + h) * W + w] = x[((n * H + h) * W + w) * C + c];
  const base = hs.tensor(a, [a.length], { dtype: dt });
  const t = new Tensor(native().view(base.handle(), [N, H, W, C], [C * H * W, W, 1, H * W], 0), [N, H, W, C], dt, 'cpu');
  return { t, async guardOk() { return null; } };
}
async function main() {
  for (let ci = 0; ci < COUNT && (Date.now() - t0) / 1000 < BUDGET; ci++) {
    const g = randGeom();
    const [Ho, Wo] = outHW(g);
    const wdt: DT = R.pick(['f32', 'f32', 'f16', 'bf16']);
    const xdt: DT = R.next() < 0.8 ? 'f32' : R.pick(['f16', 'bf16']);
    const bdt: DT = R.pick(['f32', wdt]);
    const hasBias = R.next() < 0.6;
    const beta = R.next() < 0.3 ? R.pick([1, 1, 0.5, -1]) : 0;
    const threads = R.pick([1, 2, 2, 3, 5]); hs.setThreads(threads);
    const x = roundTo(xdt, R.randn(g.N * g.H * g.W * g.C));
    const w = roundTo(wdt, R.randn(g.O * g.kh * g.kw * g.C, 1 / Math.sqrt(g.kh * g.kw * g.C)));
    const bias = hasBias ? roundTo(bdt, R.randn(g.O)) : undefined;
    const xstrided = R.next() < 0.15, odt: DT = R.next() < 0.15 ? R.pick(['f32', 'f16', 'bf16']) : xdt;
    const old = roundTo(odt, R.randn(g.N * Ho * Wo * g.O));
    const ref = refConv(x, w, g, bias, beta, old);
    if (process.env.MUTATE) ref[ref.length - 1] += 0.05;
    const wino = g.kh === 3 && g.kw === 3 && g.stride === 1;
    const algos = wino ? ALGOS : (['auto', 'gemm'] as const);
    const xs = xstrided ? nchwView(x, g, xdt) : guarded(x, [g.N, g.H, g.W, g.C], xdt), ws = guarded(w, [g.O, g.kh, g.kw, g.C], wdt), bs = bias ? guarded(bias, [g.O], bdt) : null;
    for (const algo of algos) {
      const envs: (Record<string, string>)[] = [{}];
      if (algo.startsWith('winograd') && g.O % 16 === 0) envs.push({ HYPERSD_WINO_VARIANT: 'small' }, { HYPERSD_WINO_VARIANT: 'big' });
      if (algo.startsWith('winograd') && R.next() < 0.3) envs.push({ HYPERSD_WINO_VARIANT: 'big', HYPERSD_WINO_CHUNK_TILES: String(R.pick([1, 6, 12, 13])) });
      if (algo === 'auto' && g.O <= 8) envs.push({ HYPERSD_CONV_NO_SMALL: '1' });
      for (const env of envs) {
        Object.assign(process.env, env);
        const os = guarded(beta ? old : new Float64Array(old.length).fill(NaN), [g.N, Ho, Wo, g.O], odt, 29, -31337);
        const key = `${KS}/${algo}${env.HYPERSD_WINO_VARIANT ? '/' + env.HYPERSD_WINO_VARIANT : ''}${env.HYPERSD_WINO_CHUNK_TILES ? '/chunk' : ''}${env.HYPERSD_CONV_NO_SMALL ? '/nosmall' : ''}${algo === 'auto' && g.O <= 8 && !env.HYPERSD_CONV_NO_SMALL ? '/direct' : ''}`;
        const desc = JSON.stringify({ seed: SEED, case: ci, threads, ...g, wdt, xdt, odt, xstrided, bdt: bias ? bdt : null, beta, algo, env });
        let msg: string | null = null;
        try {
          const y = hs.ops.conv2d(xs.t, ws.t, bs?.t ?? null, { stride: g.stride, pad: g.pad, algo, out: os.t, beta });
          const out = await y.floats();
          const c = compare(out, ref);
          const tol = Math.max(TOL[xdt], TOL[odt]);
          const mtol = xdt === 'f32' && odt === 'f32' ? 2e-4 : 0.1;
          if (!c.lengthOk) msg = 'length';
          else if (!(c.rel <= tol)) msg = `rel ${c.rel} > ${tol} (firstNonFinite ${c.firstNonFinite} out ${out[c.firstNonFinite]} ref ${ref[c.firstNonFinite]}) maxi ${c.maxi} out ${out[c.maxi]} ref ${ref[c.maxi]}`;
          else if (c.maxRel > mtol) msg = `elementwise maxErr/rms ${c.maxRel} at ${c.maxi}: out ${out[c.maxi]} ref ${ref[c.maxi]}`;
          const ge = await os.guardOk(); if (ge) msg = (msg ?? '') + ' OUT-GUARD ' + ge;
          for (const [nm, gg] of [['x', xs], ['w', ws], ['b', bs]] as const) { const e = gg && (await gg.guardOk()); if (e) msg = (msg ?? '') + ` ${nm}-GUARD ${e}`; }
          { const wk = key + (xdt === 'f32' && odt === 'f32' ? '/f32act' : '/halfact'); worst[wk] = Math.max(worst[wk] ?? 0, c.rel / tol); }
        } catch (e) { msg = 'THREW ' + (e as Error).message; }
        for (const k of Object.keys(env)) delete process.env[k];
        counts[key] = (counts[key] ?? 0) + 1; cases++;
        if (msg) { fails++; console.log('FAIL', desc, msg); }
      }
    }
    // invalid combos must throw a clear error
    if (!wino && R.next() < 0.3) {
      const algo = R.pick(['winograd', 'winograd4', 'winograd6'] as const);
      try { hs.ops.conv2d(xs.t, ws.t, null, { stride: g.stride, pad: g.pad, algo }); console.log('FAIL no throw', JSON.stringify({ ...g, algo })); fails++; }
      catch (e) { if (!/needs a 3x3 kernel and stride 1/.test((e as Error).message)) { console.log('FAIL bad msg', (e as Error).message); fails++; } counts['invalid-throws'] = (counts['invalid-throws'] ?? 0) + 1; }
    }
    // lora vs merged
    if (R.next() < 0.35) {
      const r = R.int(1, 8), scale = R.pick([0.6, 1, -0.3, 2]), K = g.kh * g.kw * g.C;
      const ldt: DT = R.pick(['f32', wdt]);
      const down = roundTo(ldt, R.randn(r * K, 0.3)), up = roundTo(ldt, R.randn(g.O * r, 0.3));
      const m = Float64Array.from(w);
      for (let o = 0; o < g.O; o++) for (let k = 0; k < K; k++) { let s = 0; for (let j = 0; j < r; j++) s += up[o * r + j] * down[j * K + k]; m[o * K + k] += scale * s; }
      const lref = refConv(x, m, g, bias);
      const ds = guarded(down, [r, g.kh, g.kw, g.C], ldt), us = guarded(up, [g.O, r], ldt);
      let msg: string | null = null;
      try {
        const y = hs.ops.loraConv2d(xs.t, ws.t, bs?.t ?? null, ds.t, us.t, scale, { stride: g.stride, pad: g.pad });
        const out = await y.floats(); const c = compare(out, lref);
        if (!(c.rel <= TOL[xdt])) msg = `rel ${c.rel} maxi ${c.maxi} out ${out[c.maxi]} ref ${lref[c.maxi]} nonfinite@${c.firstNonFinite}`;
        else if (c.maxRel > (xdt === 'f32' ? 2e-4 : 0.1)) msg = `elementwise ${c.maxRel}`;
        for (const [nm, gg] of [['down', ds], ['up', us]] as const) { const e = await gg.guardOk(); if (e) msg = (msg ?? '') + ` ${nm}-GUARD ${e}`; }
        worst[`${KS}/lora`] = Math.max(worst[`${KS}/lora`] ?? 0, c.rel / TOL[xdt]);
      } catch (e) { msg = 'THREW ' + (e as Error).message; }
      counts[`${KS}/lora`] = (counts[`${KS}/lora`] ?? 0) + 1; cases++;
      if (msg) { fails++; console.log('FAIL lora', JSON.stringify({ seed: SEED, case: ci, ...g, wdt, xdt, ldt, r, scale, hasBias }), msg); }
    }
  }
  console.log(JSON.stringify({ seed: SEED, ks: KS, cases, fails, secs: (Date.now() - t0) / 1000, counts, worst }));
}
main();
