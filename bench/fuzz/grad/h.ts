import * as hs from '../../../lib';
import { grad } from '../../../lib/autograd';
import { mulberry32 } from '../../../test/helpers/mulberry32';
export { hs };
export interface In { shape: number[]; data: ArrayLike<number>; diff?: boolean; int?: boolean }
let next = mulberry32(12345);
export function setSeed(s: number) { next = mulberry32(s); }
export function rand(): number { return next(); }
export const ri = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
export const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)];
export function randnArr(n: number, scale = 1, off = 0): Float64Array { const o = new Float64Array(n); for (let i = 0; i < n; i++) { const u1 = rand() || 1e-12, u2 = rand(); o[i] = off + scale * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2); } return o; }
export const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
export const rnd = (shape: number[], scale = 1, off = 0): In => ({ shape, data: randnArr(prod(shape), scale, off) });
export const f32r = (x: ArrayLike<number>) => Float64Array.from(Float32Array.from(x as any));
export let failures: string[] = [];
export let counts: Record<string, number> = {};
export let FLOOR = 1e-2;
function rel(a: ArrayLike<number>, b: ArrayLike<number>, floor = FLOOR) { let n = 0, d = 0; for (let i = 0; i < b.length; i++) { if (!Number.isFinite(a[i])) return Infinity; n += (a[i] - b[i]) ** 2; d += b[i] ** 2; } d = Math.max(d, floor * floor * b.length); return d === 0 ? Math.sqrt(n) : Math.sqrt(n / d); }
export async function check(op: string, desc: string, ins: In[], fwd: (ts: hs.Tensor[]) => hs.Tensor, ref: (xs: Float64Array[]) => ArrayLike<number>, tol = 1e-4, fwdTol = 1e-5, extra?: (ts: hs.Tensor[]) => hs.Tensor[]) {
  counts[op] = (counts[op] ?? 0) + 1;
  const ts = ins.map((i) => i.int ? hs.tensor(Int32Array.from(i.data as any, Number), i.shape) : hs.tensor(Float32Array.from(i.data as any), i.shape));
  const xs = ins.map((i) => i.int ? Float64Array.from(i.data as any) : f32r(i.data));
  const y0 = Float64Array.from(ref(xs));
  const r = randnArr(y0.length);
  const dLoss = hs.tensor(Float32Array.from(r), [y0.length]);
  const params = ts.filter((_, k) => ins[k].diff !== false && !ins[k].int);
  const msgs: string[] = [];
  let res;
  try { res = grad(() => fwd(ts).reshape([y0.length]), params, { dLoss }); } catch (e) { failures.push(`${op} ${desc}: THROW ${(e as Error).message}`); console.log('THROW', op, desc, (e as Error).message); return; }
  const { loss, grads } = res;
  const fe = rel(await loss.floats(), y0, 1e-3);
  if (!(fe <= fwdTol)) msgs.push(`fwd rel ${fe.toExponential(2)}`);
  const L = (x: Float64Array[]) => { const y = ref(x); let s = 0; for (let i = 0; i < y.length; i++) s += r[i] * y[i]; return s; };
  for (let k = 0; k < ins.length; k++) {
    if (ins[k].diff === false || ins[k].int) continue;
    const g = grads.get(ts[k]);
    if (!g) { msgs.push(`no grad ${k}`); continue; }
    if (g.shape.join() !== ins[k].shape.join()) { msgs.push(`grad ${k} shape ${g.shape} vs ${ins[k].shape}`); continue; }
    const fd = new Float64Array(xs[k].length);
    for (let j = 0; j < fd.length; j++) { const v = xs[k][j]; const h = 1e-6 * Math.max(1, Math.abs(v)); xs[k][j] = v + h; const lp = L(xs); xs[k][j] = v - h; const lm = L(xs); xs[k][j] = v; fd[j] = (lp - lm) / (2 * h); }
    const gf = await g.floats(); const e = rel(gf, fd); const e0 = rel(gf, fd, 0);
    if (!(e <= tol)) msgs.push(`grad in${k} rel ${e.toExponential(2)} (raw ${e0.toExponential(2)})`);
  }
  loss.dispose(); dLoss.dispose(); for (const g of grads.values()) g.dispose(); for (const t of ts) t.dispose();
  if (msgs.length) { const m = `${op} ${desc}: ${msgs.join('; ')}`; failures.push(m); console.log('FAIL', m); }
}
export function summary() { console.log('kernels', process.env.HYPERSD_CPU_KERNELS ?? 'default', 'counts', JSON.stringify(counts), 'failures', failures.length); for (const f of failures) console.log('  ', f); }
// refs: test/autograd/fd.ts's
import { erf, gelu, geluTanh, quickGelu, sigmoid, silu } from '../../../test/autograd/fd';
export { erf, gelu, geluTanh, quickGelu, sigmoid, silu };
export const ACTS = { none: (x: number) => x, silu, gelu, gelu_tanh: geluTanh, quick_gelu: quickGelu } as const;
