/**
 * Gradients of group_norm (with its fused SiLU) and layer_norm (norm.ts): one backward kernel each
 * (native/cpu/norm.cpp) that recomputes the statistics from x and writes dx and/or (dgamma, dbeta),
 * whichever the tape needs.
 */
import type { Tensor } from '../tensor';
import { registerGradient, type GradContext } from '../autograd/registry';
import { f32Out, num } from '../autograd/util';
import { runOp } from './runtime';

function normBackward(ctx: GradContext, op: string, ins: Tensor[], attrs: Record<string, number>): (Tensor | null)[] {
  const needDx = ctx.needs(0), needAff = ctx.needs(1) || ctx.needs(2);
  const C = ctx.inShapes[1][0];
  const dx = needDx ? f32Out(ctx.inShapes[0], ins[0]) : null;
  const dg = needAff ? f32Out([C], ins[0]) : null, db = needAff ? f32Out([C], ins[0]) : null;
  runOp(op, ins, [dx, dg, db].filter((t) => t !== null), { ...attrs, need_dx: needDx ? 1 : 0, need_affine: needAff ? 1 : 0 });
  return [dx, dg, db];
}

// beta is read only through the fused SiLU; without it gamma stands in for the unread input.
registerGradient('group_norm', (ctx) => {
  const silu = num(ctx.attrs, 'silu', 0);
  return normBackward(ctx, 'group_norm_backward', [ctx.input(0), ctx.input(1), ctx.input(silu ? 2 : 1), ctx.dy[0]!], {
    groups: num(ctx.attrs, 'groups', 1), eps: num(ctx.attrs, 'eps', 1e-5), silu,
  });
}, { inputs: (_, attrs) => (attrs.silu ? 'all' : [0, 1]) });

registerGradient('layer_norm', (ctx) =>
  normBackward(ctx, 'layer_norm_backward', [ctx.input(0), ctx.input(1), ctx.dy[0]!], { eps: num(ctx.attrs, 'eps', 1e-5) }),
  { inputs: [0, 1] });
