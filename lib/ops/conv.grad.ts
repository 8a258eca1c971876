/**
 * Gradients of the conv family (conv.ts) on NHWC / OHWI, with the backward kernels of
 * native/cpu/conv_backward.cpp:
 *   conv2d       dx = conv2d_backward_input(dy, w), dw = conv2d_backward_weight(x, dy), dbias = sum dy
 *                (beta != 0, accumulating into y, is handled by the tape).
 *   lora_conv2d  y = conv(x, w) + b + s conv(x, down) up^T (LoCon), without forming the merged weight:
 *                dt = s dy up, dx = convT(dy, w) + convT(dt, down), d down = conv_bw_weight(x, dt),
 *                d up = s dy^T conv(x, down), dw and dbias as conv2d.
 * Only the gradients the tape asks for are computed, and only the inputs those need are saved.
 */
import type { Tensor } from '../tensor';
import { registerGradient } from '../autograd/registry';
import { f32Out, mm, num, runBackward, sumToShape } from '../autograd/util';
import { conv2d } from './conv';
import { runOp } from './runtime';

export interface ConvGeometry { stride?: number; pad?: number }

/** dx [N, H, W, Cin] of a convolution, from dy [N, Ho, Wo, Cout] and w (OHWI); `into` accumulates into dx. */
export function conv2dBackwardInput(dy: Tensor, w: Tensor, xShape: readonly number[], o: ConvGeometry = {}, into?: Tensor): Tensor {
  const attrs = { stride: o.stride ?? 1, pad: o.pad ?? 0 };
  if (into) {
    runOp('conv2d_backward_input', [dy, w], [into], { ...attrs, beta: 1 });
    return into;
  }
  return runBackward('conv2d_backward_input', [dy, w], [xShape], attrs)[0];
}

/** dw [Cout, kh, kw, Cin] of a convolution, from x [N, H, W, Cin] and dy [N, Ho, Wo, Cout]. */
export function conv2dBackwardWeight(x: Tensor, dy: Tensor, wShape: readonly number[], o: ConvGeometry = {}): Tensor {
  return runBackward('conv2d_backward_weight', [x, dy], [wShape], { stride: o.stride ?? 1, pad: o.pad ?? 0 })[0];
}

registerGradient('conv2d', (ctx) => {
  const geo = { stride: num(ctx.attrs, 'stride', 1), pad: num(ctx.attrs, 'pad', 0) };
  const G = ctx.dy[0]!;
  return [
    ctx.needs(0) ? conv2dBackwardInput(G, ctx.input(1), ctx.inShapes[0], geo) : null,
    ctx.needs(1) ? conv2dBackwardWeight(ctx.input(0), G, ctx.inShapes[1], geo) : null,
    num(ctx.attrs, 'has_bias', 0) && ctx.needs(2) ? sumToShape(G, [G.shape[3]]) : null,
  ];
}, { inputs: (needs) => (needs[0] && needs[1] ? 'all' : needs[1] ? [0] : [1]) });

registerGradient('lora_conv2d', (ctx) => {
  const geo = { stride: num(ctx.attrs, 'stride', 1), pad: num(ctx.attrs, 'pad', 0) };
  const hasBias = num(ctx.attrs, 'has_bias', 0) !== 0, s = num(ctx.attrs, 'scale', 1);
  const iDown = hasBias ? 3 : 2, iUp = iDown + 1;
  const G = ctx.dy[0]!;
  const cout = G.shape[3];
  const res: (Tensor | null)[] = ctx.inShapes.map(() => null);
  const dt = ctx.needs(0) || ctx.needs(iDown) ? mm(G, ctx.input(iUp), { alpha: s }) : null; // [N, Ho, Wo, r]
  if (ctx.needs(0)) {
    const dx = conv2dBackwardInput(G, ctx.input(1), ctx.inShapes[0], geo);
    res[0] = conv2dBackwardInput(dt!, ctx.input(iDown), ctx.inShapes[0], geo, dx);
  }
  if (ctx.needs(1)) res[1] = conv2dBackwardWeight(ctx.input(0), G, ctx.inShapes[1], geo);
  if (hasBias && ctx.needs(2)) res[2] = sumToShape(G, [cout]);
  if (ctx.needs(iDown)) res[iDown] = conv2dBackwardWeight(ctx.input(0), dt!, ctx.inShapes[iDown], geo);
  if (ctx.needs(iUp)) {
    const down = ctx.input(iDown);
    const t = conv2d(ctx.input(0), down, null, { ...geo, out: f32Out([...G.shape.slice(0, 3), down.shape[0]], G) });
    res[iUp] = mm(G.reshape([-1, cout]), t.reshape([-1, down.shape[0]]), { transA: true, alpha: s });
  }
  return res;
}, {
  inputs: (needs) => {
    const n = needs.length, iDown = n - 2, iUp = n - 1;
    const keep = new Set<number>();
    if (needs[0]) [1, iDown, iUp].forEach((i) => keep.add(i));
    if (needs[1] || needs[iDown] || needs[iUp]) keep.add(0);
    if (needs[iDown]) keep.add(iUp);
    if (needs[iUp]) keep.add(iDown);
    return [...keep];
  },
});
