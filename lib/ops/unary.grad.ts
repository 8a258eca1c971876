/**
 * Gradients of the unary math ops, composed from elementwise ops:
 *   exp:  dx = dy * y        (saves the output)
 *   sqrt: dx = 0.5 dy / y    (saves the output; infinite at y = 0, as PyTorch)
 *   log:  dx = dy / x        (saves the input)
 */
import { registerGradient } from '../autograd/registry';
import { affine, div, mul } from './elementwise';

registerGradient('exp', (ctx) => [ctx.dy[0] && ctx.needs(0) ? mul(ctx.dy[0], ctx.output(0)) : null], { inputs: 'none', outputs: [0] });
registerGradient('sqrt', (ctx) => [ctx.dy[0] && ctx.needs(0) ? div(affine(ctx.dy[0], 0.5, 0), ctx.output(0)) : null], { inputs: 'none', outputs: [0] });
registerGradient('log', (ctx) => [ctx.dy[0] && ctx.needs(0) ? div(ctx.dy[0], ctx.input(0)) : null], { inputs: [0] });
