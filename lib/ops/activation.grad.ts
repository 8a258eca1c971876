/**
 * Gradients of the activations (activation.ts): each has a *_backward kernel (native/cpu/activation.cpp)
 * taking (x, dy) (softmax: its output y and dy), written in f32.
 */
import { registerGradient } from '../autograd/registry';
import { num, runBackward } from '../autograd/util';

for (const op of ['silu', 'gelu', 'gelu_tanh', 'quick_gelu', 'geglu'])
  registerGradient(op, (ctx) => runBackward(`${op}_backward`, [ctx.input(0), ctx.dy[0]!], [ctx.inShapes[0]], {}), { inputs: [0] });

registerGradient('softmax', (ctx) =>
  runBackward('softmax_backward', [ctx.output(0), ctx.dy[0]!], [ctx.inShapes[0]], { scale: num(ctx.attrs, 'scale', 1) }),
  { inputs: 'none', outputs: [0] });
