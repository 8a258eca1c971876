/**
 * Small helpers shared by the gradient definitions (lib/ops/*.grad.ts): f32 outputs for backward ops
 * (gradients are f32 whatever the forward dtype), reduce-to-shape for broadcasting, attribute reads.
 */
import { empty, type Tensor } from '../tensor';
import { matmul } from '../ops/gemm';
import { sumTo } from '../ops/embedding';
import { runOp, sameShape, type Attrs } from '../ops/runtime';

/** An uninitialised f32 tensor on like's device. */
export function f32Out(shape: readonly number[], like: Tensor): Tensor {
  return empty(shape, { dtype: 'f32', device: like.device });
}

/** Runs a backward op whose outputs are f32 tensors of the given shapes; returns the outputs. */
export function runBackward(op: string, inputs: readonly Tensor[], outShapes: readonly (readonly number[])[], attrs: Attrs): Tensor[] {
  const outs = outShapes.map((s) => f32Out(s, inputs[0]));
  runOp(op, inputs, outs, attrs);
  return outs;
}

/** g summed down to shape (the gradient of numpy broadcasting); g itself when the shapes agree. */
export function sumToShape(g: Tensor, shape: readonly number[], scale = 1): Tensor {
  if (sameShape(g.shape, shape) && scale === 1) return g;
  return sumTo(g, shape, scale);
}

/** matmul with an f32 output (the forward's wrapper gives a's dtype). */
export function mm(a: Tensor, b: Tensor, o: { transA?: boolean; transB?: boolean; alpha?: number } = {}): Tensor {
  const M = o.transA ? a.shape[a.rank - 1] : a.shape[a.rank - 2];
  const N = o.transB ? b.shape[b.rank - 2] : b.shape[b.rank - 1];
  return matmul(a, b, { ...o, out: f32Out([...a.shape.slice(0, a.rank - 2), M, N], a) });
}

/** A numeric attribute (booleans count as 0/1). */
export function num(attrs: Readonly<Attrs>, key: string, def: number): number {
  const v = attrs[key];
  if (v === undefined) return def;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'number') return v;
  throw new Error(`autograd: attribute ${key} is a list`);
}

/**
 * The inputs a LoRA op's gradient keeps (lora_linear and lora_conv2d: x, W, [bias,] down, up, down and up last),
 * given which gradients the tape needs: dx reads W, down and up; dW, d down and d up read x; d down reads up
 * (dt = s dy up) and d up reads down (x down^T).
 */
export function loraSavedInputs(needs: readonly boolean[]): number[] {
  const n = needs.length, iDown = n - 2, iUp = n - 1;
  const keep = new Set<number>();
  if (needs[0]) [1, iDown, iUp].forEach((i) => keep.add(i));
  if (needs[1] || needs[iDown] || needs[iUp]) keep.add(0);
  if (needs[iDown]) keep.add(iUp);
  if (needs[iUp]) keep.add(iDown);
  return [...keep];
}
