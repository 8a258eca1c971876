/**
 * Gradients of the GEMM family (gemm.ts), composed from matmul itself:
 *   matmul   C = act(alpha op(A) op(B) + bias) [+ beta C_old, handled by the tape]:
 *            with dz = act'(z) dy (z recomputed by one more GEMM when act is fused),
 *            d op(A) = alpha dz op(B)^T, d op(B) = alpha op(A)^T dz, dbias = sum dz.
 *            A weight B without batch dims gets the batch folded into the GEMM's rows (one GEMM, no sum).
 *   lora_linear  y = x W^T + b + s (x down^T) up^T, without forming W + s up down:
 *            dt = s dy up, dx = dy W + dt down, dW = dy^T x, d down = dt^T x, d up = s dy^T (x down^T).
 * Only the gradients the tape asks for are computed (no dW for a frozen W), and only the inputs those
 * need are saved. lora_linear_batched (serving) has no gradient.
 */
import { registerGradient } from '../autograd/registry';
import { f32Out, loraSavedInputs, mm, num, sumToShape } from '../autograd/util';
import { matmul } from './gemm';
import { permute } from './shape';
import { runOp } from './runtime';

const ACT_BACKWARD = ['', 'silu_backward', 'gelu_backward', 'gelu_tanh_backward', 'quick_gelu_backward'];

function swapLastTwo(rank: number): number[] {
  const d = [...Array(rank).keys()];
  [d[rank - 2], d[rank - 1]] = [d[rank - 1], d[rank - 2]];
  return d;
}

registerGradient('matmul', (ctx) => {
  const tA = num(ctx.attrs, 'transA', 0) !== 0, tB = num(ctx.attrs, 'transB', 0) !== 0;
  const alpha = num(ctx.attrs, 'alpha', 1), act = num(ctx.attrs, 'act', 0), hasBias = num(ctx.attrs, 'has_bias', 0) !== 0;
  const aShape = ctx.inShapes[0], bShape = ctx.inShapes[1];
  let G = ctx.dy[0]!;
  if (act) {
    const A = ctx.input(0), B = ctx.input(1);
    const z = f32Out(G.shape, G);
    matmul(A, B, { transA: tA, transB: tB, alpha, bias: hasBias ? ctx.input(2) : null, out: z });
    const dz = f32Out(G.shape, G);
    runOp(ACT_BACKWARD[act], [z, G], [dz]);
    G = dz;
  }
  const N = G.shape[G.rank - 1];
  let dA = null, dB = null;
  if (ctx.needs(0)) {
    const g = mm(G, ctx.input(1), { transB: !tB, alpha });
    dA = tA ? permute(g, swapLastTwo(g.rank)) : g;
  }
  if (ctx.needs(1)) {
    const A = ctx.input(0);
    if (bShape.length === 2 && aShape.length > 2 && !tA) {
      const K = aShape[aShape.length - 1];
      const A2 = A.reshape([-1, K]), G2 = G.reshape([-1, N]);
      dB = tB ? mm(G2, A2, { transA: true, alpha }) : mm(A2, G2, { transA: true, alpha });
    } else {
      const full = tB ? mm(G, A, { transA: true, transB: tA, alpha }) : mm(A, G, { transA: !tA, alpha });
      dB = sumToShape(full, bShape);
    }
  }
  const db = hasBias && ctx.needs(2) ? sumToShape(G, [N]) : null;
  return [dA, dB, db];
}, {
  // dA reads B, dB reads A; a fused activation recomputes z from all of them.
  inputs: (needs, attrs) => (attrs.act || (needs[0] && needs[1]) ? 'all' : needs[1] ? [0] : [1]),
});

registerGradient('lora_linear', (ctx) => {
  const hasBias = num(ctx.attrs, 'has_bias', 0) !== 0, s = num(ctx.attrs, 'scale', 1);
  const iDown = hasBias ? 3 : 2, iUp = iDown + 1;
  const [K, N] = [ctx.inShapes[1][1], ctx.inShapes[1][0]];
  const G2 = ctx.dy[0]!.reshape([-1, N]);
  const res: (ReturnType<typeof mm> | null)[] = ctx.inShapes.map(() => null);
  const x2 = () => ctx.input(0).reshape([-1, K]);
  const dt = ctx.needs(0) || ctx.needs(iDown) ? mm(G2, ctx.input(iUp), { alpha: s }) : null; // [M, r]
  if (ctx.needs(0)) {
    const dx = mm(G2, ctx.input(1));
    matmul(dt!, ctx.input(iDown), { beta: 1, out: dx });
    res[0] = dx;
  }
  if (ctx.needs(1)) res[1] = mm(G2, x2(), { transA: true });
  if (hasBias && ctx.needs(2)) res[2] = sumToShape(G2, [N]);
  if (ctx.needs(iDown)) res[iDown] = mm(dt!, x2(), { transA: true });
  if (ctx.needs(iUp)) res[iUp] = mm(G2, mm(x2(), ctx.input(iDown), { transB: true }), { transA: true, alpha: s });
  return res;
}, { inputs: loraSavedInputs });
