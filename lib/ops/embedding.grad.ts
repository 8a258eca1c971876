/**
 * Gradients of embedding.ts: embedding -> embedding_backward (scatter-add of dy's rows into the table's
 * gradient, native/cpu/embedding.cpp); sum_to -> dy broadcast back to x's shape, times scale;
 * timestep_embedding -> d/dt of [sin(a), cos(a)] with a = scale * freq * t, read off the forward output:
 * dt = scale * sum_j freq_j (dy_sin_j cos_j - dy_cos_j sin_j).
 */
import { full, tensor } from '../tensor';
import { registerGradient } from '../autograd/registry';
import { num, runBackward } from '../autograd/util';
import { mul, sub } from './elementwise';
import { sumTo } from './embedding';
import { slice } from './shape';

registerGradient('embedding', (ctx) =>
  [null, runBackward('embedding_backward', [ctx.input(0), ctx.dy[0]!], [ctx.inShapes[1]], {})[0]], { inputs: [0] });

registerGradient('sum_to', (ctx) => {
  const G = ctx.dy[0]!, scale = num(ctx.attrs, 'scale', 1);
  return [mul(full(ctx.inShapes[0], scale, { device: G.device }), G)];
}, { inputs: 'none' });

/** The kernel's frequencies, rounded at the same f32 steps. */
function frequencies(half: number, shift: number, maxPeriod: number): Float32Array {
  const f = new Float32Array(half);
  const negLog = Math.fround(-Math.log(maxPeriod)), denom = Math.fround(half - shift);
  for (let j = 0; j < half; j++) f[j] = Math.fround(Math.exp(Math.fround(Math.fround(negLog * j) / denom)));
  return f;
}

registerGradient('timestep_embedding', (ctx) => {
  const y = ctx.output(0), G = ctx.dy[0]!;
  const [B, dim] = y.shape, half = Math.floor(dim / 2);
  if (half === 0) return [full([B], 0, { device: G.device })];
  const flip = num(ctx.attrs, 'flip_sin_to_cos', 0) !== 0;
  const [iSin, iCos] = flip ? [half, 0] : [0, half];
  const part = (t: typeof y, at: number) => slice(t, 1, at, half);
  const prod = sub(mul(part(G, iSin), part(y, iCos)), mul(part(G, iCos), part(y, iSin)));
  const freq = tensor(frequencies(half, num(ctx.attrs, 'freq_shift', 0), num(ctx.attrs, 'max_period', 10000)), [half], { device: G.device });
  return [sumTo(mul(prod, freq), [B, 1], num(ctx.attrs, 'scale', 1))];
}, { inputs: 'none', outputs: [0] });
