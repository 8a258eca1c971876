/**
 * Gradients of the elementwise ops (elementwise.ts), composed from elementwise ops and sum_to: with numpy
 * broadcasting an input's gradient is summed back to its shape. clamp has a kernel (clamp_backward: dy
 * where min <= x <= max). scheduler_step is linear: a, b, c times dy.
 */
import { registerGradient } from '../autograd/registry';
import { num, runBackward, sumToShape } from '../autograd/util';
import { affine, div, mul } from './elementwise';

const scaled = (g: Parameters<typeof affine>[0], a: number) => (a === 1 ? g : affine(g, a, 0));

registerGradient('add', (ctx) => {
  const G = ctx.dy[0]!;
  return [ctx.needs(0) ? sumToShape(G, ctx.inShapes[0]) : null, ctx.needs(1) ? sumToShape(G, ctx.inShapes[1]) : null];
}, { inputs: 'none' });

registerGradient('sub', (ctx) => {
  const G = ctx.dy[0]!;
  return [ctx.needs(0) ? sumToShape(G, ctx.inShapes[0]) : null, ctx.needs(1) ? sumToShape(G, ctx.inShapes[1], -1) : null];
}, { inputs: 'none' });

registerGradient('mul', (ctx) => {
  const G = ctx.dy[0]!;
  return [
    ctx.needs(0) ? sumToShape(mul(G, ctx.input(1)), ctx.inShapes[0]) : null,
    ctx.needs(1) ? sumToShape(mul(G, ctx.input(0)), ctx.inShapes[1]) : null,
  ];
}, { inputs: (needs) => (needs[0] && needs[1] ? 'all' : needs[0] ? [1] : [0]) });

// y = a / b: da = dy / b, db = -(dy / b) * a / b.
registerGradient('div', (ctx) => {
  const t = div(ctx.dy[0]!, ctx.input(1));
  return [
    ctx.needs(0) ? sumToShape(t, ctx.inShapes[0]) : null,
    ctx.needs(1) ? sumToShape(div(mul(t, ctx.input(0)), ctx.input(1)), ctx.inShapes[1], -1) : null,
  ];
}, { inputs: (needs) => (needs[1] ? 'all' : [1]) });

registerGradient('affine', (ctx) => [scaled(ctx.dy[0]!, num(ctx.attrs, 'a', 1))], { inputs: 'none' });

registerGradient('clamp', (ctx) =>
  runBackward('clamp_backward', [ctx.input(0), ctx.dy[0]!], [ctx.inShapes[0]], {
    min: num(ctx.attrs, 'min', -Infinity), max: num(ctx.attrs, 'max', Infinity),
  }), { inputs: [0] });

registerGradient('scheduler_step', (ctx) => {
  const G = ctx.dy[0]!;
  return ['a', 'b', 'c'].slice(0, ctx.inShapes.length).map((k, i) => (ctx.needs(i) ? scaled(G, num(ctx.attrs, k, 0)) : null));
}, { inputs: 'none' });
