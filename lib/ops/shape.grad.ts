/**
 * Gradients of the shape ops (shape.ts), composed from shape ops: concat -> slices of dy, slice -> dy put
 * back between zeros (interleaved with zeros for a step > 1), permute -> the inverse permutation,
 * cast / copy -> dy itself (gradients are f32 anyway). upsample_nearest2x has a kernel (the 2x2 sum).
 */
import { zeros, type Tensor } from '../tensor';
import { registerGradient } from '../autograd/registry';
import { num, runBackward } from '../autograd/util';
import { concat, permute, slice } from './shape';

registerGradient('concat', (ctx) => {
  const axis = num(ctx.attrs, 'axis', 0), G = ctx.dy[0]!;
  let start = 0;
  return ctx.inShapes.map((s, i) => {
    const len = s[axis];
    start += len;
    return ctx.needs(i) ? slice(G, axis, start - len, len) : null;
  });
}, { inputs: 'none' });

registerGradient('slice', (ctx) => {
  const axis = num(ctx.attrs, 'axis', 0), start = num(ctx.attrs, 'start', 0), step = num(ctx.attrs, 'step', 1);
  const G = ctx.dy[0]!, xShape = ctx.inShapes[0];
  const n = xShape[axis], L = G.shape[axis];
  const along = (len: number): number[] => G.shape.map((d, i) => (i === axis ? len : d));
  let body: Tensor = G, span = L;
  if (step > 1 && L > 0) {
    // [.., L, 1, ..] next to zeros [.., L, step - 1, ..] is dy spread over every step-th position.
    const wide = [...G.shape.slice(0, axis + 1), 1, ...G.shape.slice(axis + 1)];
    const gaps = zeros([...G.shape.slice(0, axis + 1), step - 1, ...G.shape.slice(axis + 1)], { device: G.device });
    body = concat([G.reshape(wide), gaps], axis + 1).reshape(along(L * step));
    span = Math.min(L * step, n - start);
    if (span < L * step) body = slice(body, axis, 0, span);
  }
  const parts: Tensor[] = [];
  if (start > 0) parts.push(zeros(along(start), { device: G.device }));
  if (span > 0) parts.push(body);
  if (n - start - span > 0) parts.push(zeros(along(n - start - span), { device: G.device }));
  return [parts.length === 1 ? parts[0] : concat(parts, axis)];
}, { inputs: 'none' });

registerGradient('permute', (ctx) => {
  const dims = ctx.attrs.dims as number[];
  const inv: number[] = [];
  dims.forEach((d, i) => (inv[d] = i));
  return [permute(ctx.dy[0]!, inv)];
}, { inputs: 'none' });

registerGradient('cast', (ctx) => [ctx.dy[0]], { inputs: 'none' });
registerGradient('copy', (ctx) => [ctx.dy[0]], { inputs: 'none' });

registerGradient('upsample_nearest2x', (ctx) =>
  runBackward('upsample_nearest2x_backward', [ctx.dy[0]!], [ctx.inShapes[0]], {}), { inputs: 'none' });
