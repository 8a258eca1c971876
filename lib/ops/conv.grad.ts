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
import { f32Out, loraSavedInputs, mm, num, runBackward, sumToShape } from '../autograd/util';
import { conv2d } from './conv';
import { cast, concat, permute, slice, upsampleNearest2x } from './shape';
import { runOp } from './runtime';

export interface ConvGeometry { stride?: number; pad?: number }

/**
 * Whether conv2dBackwardInput runs as a forward convolution (HYPERSD_CONV_BWD=fwd; `native`, the default, keeps
 * the conv2d_backward_input kernel): a stride-1 convolution's input gradient is the convolution of dy with
 * the weight transposed to [Cin, k, k, Cout] and flipped in both kernel axes, padded k - 1 - pad. On CUDA that
 * puts it on the forward's tensor-core kernels: dy is rounded to the weight's bf16 and the convolution of two
 * bf16 operands into the f32 dx runs there with f32 accumulation (conv.cu's compute dtype), where the backward
 * kernel's GEMMs run in f32 SIMT (19 TFLOP/s at 320 -> 320, 32x32 on an H200). f16 weights keep the backward
 * kernel on CUDA: dy rounded to f16 would lose gradients below 2^-14 (all below 2^-24) unless a loss scale had
 * lifted them. The CPU convolves the f32 dy as it is (it widens the weight while packing), whatever the weight.
 * The composition is tested on the CPU (test/autograd/conv_input_grad.test.ts) and every op in it on GPUs, but
 * it has not run on a GPU itself yet: hence not the default.
 */
function forwardConvForInputGrad(dy: Tensor, w: Tensor, stride: number, pad: number): boolean {
  const mode = process.env.HYPERSD_CONV_BWD ?? 'native';
  if (mode !== 'native' && mode !== 'fwd') throw new Error(`HYPERSD_CONV_BWD must be 'native' or 'fwd', got '${mode}'`);
  return mode === 'fwd' && stride === 1 && w.shape[1] === w.shape[2] && pad <= w.shape[1] - 1 &&
    !(w.dtype === 'f16' && dy.device !== 'cpu');
}

/** w [Cout, k, k, Cin] -> [Cin, k, k, Cout] with both kernel axes reversed (slices and a concat per axis: the
 * weight is small). */
function flippedTransposed(w: Tensor): Tensor {
  let t = w;
  for (const axis of [1, 2]) {
    const k = t.shape[axis];
    if (k === 1) continue;
    const parts: Tensor[] = [];
    for (let i = k - 1; i >= 0; i--) parts.push(slice(t, axis, i, 1));
    const f = concat(parts, axis);
    for (const q of parts) q.dispose();
    if (t !== w) t.dispose();
    t = f;
  }
  const r = permute(t, [3, 1, 2, 0]);
  if (t !== w) t.dispose();
  return r;
}

/** dx [N, H, W, Cin] of a convolution, from dy [N, Ho, Wo, Cout] and w (OHWI); `into` accumulates into dx. */
export function conv2dBackwardInput(dy: Tensor, w: Tensor, xShape: readonly number[], o: ConvGeometry = {}, into?: Tensor): Tensor {
  const attrs = { stride: o.stride ?? 1, pad: o.pad ?? 0 };
  if (forwardConvForInputGrad(dy, w, attrs.stride, attrs.pad)) {
    const wt = flippedTransposed(w);
    const d = dy.dtype === w.dtype || dy.device === 'cpu' ? dy : cast(dy, w.dtype);
    const dx = conv2d(d, wt, null, { pad: w.shape[1] - 1 - attrs.pad, out: into ?? f32Out(xShape, dy), beta: into ? 1 : 0 });
    if (d !== dy) d.dispose();
    wt.dispose();
    return dx;
  }
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
  // upsample: the convolution read x nearest-upsampled 2x; the chain rule through that upsampling is the 2x2
  // sums of the upsampled input's gradient, and the weight gradient reads the upsampled x
  const up = num(ctx.attrs, 'upsample', 0) !== 0;
  const [n, h, w, c] = ctx.inShapes[0];
  const xShape = up ? [n, 2 * h, 2 * w, c] : ctx.inShapes[0];
  let dx: Tensor | null = null;
  if (ctx.needs(0)) {
    dx = conv2dBackwardInput(G, ctx.input(1), xShape, geo);
    if (up) dx = runBackward('upsample_nearest2x_backward', [dx], [ctx.inShapes[0]], {})[0];
  }
  return [
    dx,
    ctx.needs(1) ? conv2dBackwardWeight(up ? upsampleNearest2x(ctx.input(0)) : ctx.input(0), G, ctx.inShapes[1], geo) : null,
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
}, { inputs: loraSavedInputs });
