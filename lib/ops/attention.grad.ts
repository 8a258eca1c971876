/**
 * Gradient of attention (attention.ts): the flash-style attention_backward kernel (native/cpu/attention.cpp)
 * recomputes the probabilities tile by tile from q, k and the log-sum-exp (the forward's lse output when it
 * was asked for, else recomputed in the kernel), so no Lq x Lk matrix exists in backward either. Cross-
 * attention on frozen text states (k, v needing no gradient) skips the dk/dv pass.
 */
import { registerGradient } from '../autograd/registry';
import { f32Out, num } from '../autograd/util';
import { runOp } from './runtime';

registerGradient('attention', (ctx) => {
  if (ctx.dy[1]) throw new Error('autograd: a gradient through attention\'s lse output is not supported');
  const q = ctx.input(0), k = ctx.input(1), v = ctx.input(2);
  const needDq = ctx.needs(0), needDkv = ctx.needs(1) || ctx.needs(2);
  const dq = needDq ? f32Out(q.shape, q) : null;
  const dk = needDkv ? f32Out(k.shape, q) : null, dv = needDkv ? f32Out(v.shape, q) : null;
  const ins = [q, k, v, ctx.output(0), ctx.dy[0]!];
  if (ctx.outShapes.length > 1) ins.push(ctx.output(1));
  runOp('attention_backward', ins, [dq, dk, dv].filter((t) => t !== null), {
    heads: num(ctx.attrs, 'heads', 1), scale: num(ctx.attrs, 'scale', 1), causal: num(ctx.attrs, 'causal', 0),
    need_dq: needDq ? 1 : 0, need_dkv: needDkv ? 1 : 0,
  });
  return [dq, dk, dv];
}, { inputs: 'all', outputs: 'all' });
