/**
 * GEMM-family ops (native/cpu/gemm.cpp, semantics in native/include/hypersd/OPS.md): batched matmul with
 * transposes, alpha/beta and a fused bias + activation epilogue; linear layers; LoRA linear layers that never
 * form the merged weight (one adapter, or one adapter per batch item for serving several LoRAs at once).
 * Weights may be stored f16/bf16: the CPU widens them while packing.
 */
import { Tensor } from '../tensor';
import { checkFloat, checkRank, checkSameDevice, out, runOp, sameShape, shapeStr } from './runtime';
import { geglu } from './activation';

export type Activation = 'none' | 'silu' | 'gelu' | 'gelu_tanh' | 'quick_gelu';
const ACT: Record<Activation, number> = { none: 0, silu: 1, gelu: 2, gelu_tanh: 3, quick_gelu: 4 };

export interface MatmulOptions {
  /** a is [..., K, M] (default false: [..., M, K]). */
  transA?: boolean;
  /** b is [..., N, K] (default false: [..., K, N]). A linear layer's weight [N, K] is transB. */
  transB?: boolean;
  alpha?: number;
  /** beta != 0 accumulates into `out`: out = act(alpha a b + bias) + beta out. */
  beta?: number;
  act?: Activation;
  /** [N], added before the activation. */
  bias?: Tensor | null;
  /** Write here (required when beta != 0). */
  out?: Tensor;
}

function actCode(op: string, act: Activation | undefined): number {
  const a = act ?? 'none';
  if (typeof a !== 'string' || !Object.hasOwn(ACT, a)) throw new Error(`${op}: act must be one of ${Object.keys(ACT).join(', ')}, got '${String(a)}'`);
  return ACT[a];
}

function checkNumber(op: string, name: string, v: number): void {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${op}: ${name} must be a finite number, got ${String(v)}`);
}

function checkBias(op: string, bias: Tensor | null | undefined, n: number): Tensor | undefined {
  if (bias === null || bias === undefined) return undefined;
  checkFloat(op, 'bias', bias);
  if (bias.rank !== 1 || bias.shape[0] !== n)
    throw new Error(`${op}: bias ${shapeStr(bias.shape)} must be [${n}]`);
  return bias;
}

/**
 * C = act(alpha op(a) op(b) + bias) + beta C, batched over the leading dimensions of a; b either has a's
 * batch dimensions or none (a weight shared by every batch item).
 * @example
 * const h = matmul(x, w, { transB: true, bias: b, act: 'gelu' }); // x [B, L, K], w [N, K] -> [B, L, N]
 */
export function matmul(a: Tensor, b: Tensor, o: MatmulOptions = {}): Tensor {
  const op = 'matmul';
  if (o === null || typeof o !== 'object') throw new Error(`${op}: options must be an object (or left out), got ${o}`);
  checkFloat(op, 'a', a);
  checkFloat(op, 'b', b);
  checkRank(op, 'a', a, [2, 16]);
  checkRank(op, 'b', b, [2, 16]);
  const ra = a.rank, rb = b.rank;
  const M = o.transA ? a.shape[ra - 1] : a.shape[ra - 2], K = o.transA ? a.shape[ra - 2] : a.shape[ra - 1];
  const KB = o.transB ? b.shape[rb - 1] : b.shape[rb - 2], N = o.transB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (K !== KB)
    throw new Error(`${op}: a ${shapeStr(a.shape)}${o.transA ? ' (transposed)' : ''} and b ${shapeStr(b.shape)}` +
      `${o.transB ? ' (transposed)' : ''} differ in the inner dimension (${K} vs ${KB})`);
  const batch = a.shape.slice(0, ra - 2);
  if (rb > 2 && !sameShape(b.shape.slice(0, rb - 2), batch))
    throw new Error(`${op}: b ${shapeStr(b.shape)} must have a's batch dimensions ${shapeStr(batch)} or none (a ${shapeStr(a.shape)})`);
  const bias = checkBias(op, o.bias, N);
  const act = actCode(op, o.act);
  const alpha = o.alpha ?? 1, beta = o.beta ?? 0;
  checkNumber(op, 'alpha', alpha);
  checkNumber(op, 'beta', beta);
  const shape = [...batch, M, N];
  if (beta !== 0 && !o.out) throw new Error(`${op}: beta ${beta} accumulates into an existing output: pass out`);
  if (o.out) {
    checkFloat(op, 'out', o.out);
    if (!sameShape(o.out.shape, shape))
      throw new Error(`${op}: out ${shapeStr(o.out.shape)} must be ${shapeStr(shape)} (a ${shapeStr(a.shape)}, b ${shapeStr(b.shape)})`);
  }
  checkSameDevice(op, { a, b, bias, out: o.out });
  const y = o.out ?? out(shape, a);
  runOp(op, bias ? [a, b, bias] : [a, b], [y], {
    transA: o.transA ? 1 : 0, transB: o.transB ? 1 : 0, alpha, beta, act, has_bias: bias ? 1 : 0,
  });
  return y;
}

function checkLinearInput(op: string, x: Tensor, w: Tensor): { K: number; N: number } {
  checkFloat(op, 'x', x);
  checkFloat(op, 'w', w);
  checkRank(op, 'x', x, [1, 16]);
  checkRank(op, 'w', w, 2);
  const K = x.shape[x.rank - 1], N = w.shape[0];
  if (w.shape[1] !== K) throw new Error(`${op}: x ${shapeStr(x.shape)} and w ${shapeStr(w.shape)} differ in K (${K} vs ${w.shape[1]})`);
  return { K, N };
}

/**
 * y = act(x w^T + bias), x [..., K], w [N, K] (PyTorch's Linear layout) -> y [..., N].
 * @example
 * const q = linear(h, toQ.weight); // [B, L, C] -> [B, L, inner]
 */
export function linear(x: Tensor, w: Tensor, bias?: Tensor | null, act?: Activation): Tensor {
  const { N } = checkLinearInput('linear', x, w);
  if (x.rank === 1) return matmul(x.reshape([1, x.shape[0]]), w, { transB: true, bias, act }).reshape([N]);
  return matmul(x, w, { transB: true, bias, act });
}

/**
 * diffusers' GEGLU projection: geglu(linear(x, w, bias)) = (x wv^T + bv) * gelu(x wg^T + bg) with w = [wv; wg]
 * [2N, K] -> [..., N]. On the CPU (f32 x, N % 8 == 0) one fused kernel: the [..., 2N] product is never
 * written out and read back; on CUDA the op runs the GEMM and the geglu kernel (the bits of the two ops);
 * otherwise the two ops. The fused op has no gradient: under autograd compose
 * `geglu(linear(...))` (nn's Linear.forwardGeglu does).
 */
export function linearGeglu(x: Tensor, w: Tensor, bias?: Tensor | null): Tensor {
  const op = 'linear_geglu';
  const { N } = checkLinearInput(op, x, w);
  const b = checkBias(op, bias, N);
  checkSameDevice(op, { x, w, bias: b });
  if (N % 2 !== 0) throw new Error(`${op}: w ${shapeStr(w.shape)} must have an even number of rows (2 x inner)`);
  if (x.size === 0 || (x.device === 'cpu' && (x.dtype !== 'f32' || N % 16 !== 0))) return geglu(linear(x, w, b));
  const y = out([...x.shape.slice(0, -1), N / 2], x);
  runOp(op, b ? [x, w, b] : [x, w], [y], { has_bias: b ? 1 : 0 });
  return y;
}

function checkLora(op: string, x: Tensor, w: Tensor, down: Tensor, up: Tensor, batched: boolean): { K: number; N: number; r: number } {
  const { K, N } = checkLinearInput(op, x, w);
  checkFloat(op, 'down', down);
  checkFloat(op, 'up', up);
  const lead = batched ? 1 : 0;
  checkRank(op, 'down', down, 2 + lead);
  checkRank(op, 'up', up, 2 + lead);
  const r = down.shape[lead];
  if (down.shape[lead + 1] !== K)
    throw new Error(`${op}: down ${shapeStr(down.shape)} must be [${batched ? 'nA, ' : ''}r, ${K}] (x ${shapeStr(x.shape)})`);
  if (up.shape[lead] !== N || up.shape[lead + 1] !== r || (batched && up.shape[0] !== down.shape[0]))
    throw new Error(`${op}: up ${shapeStr(up.shape)} must be [${batched ? `${down.shape[0]}, ` : ''}${N}, ${r}] (down ${shapeStr(down.shape)}, w ${shapeStr(w.shape)})`);
  return { K, N, r };
}

/**
 * y = x w^T + bias + scale (x down^T) up^T without forming the merged weight, so an adapter can be switched or
 * re-weighted per call. `scale` already includes alpha / rank.
 * @example
 * const y = loraLinear(x, w, b, lora.down, lora.up, 0.8 * lora.alpha / lora.rank);
 */
export function loraLinear(x: Tensor, w: Tensor, bias: Tensor | null, down: Tensor, up: Tensor, scale: number): Tensor {
  const op = 'lora_linear';
  const { N } = checkLora(op, x, w, down, up, false);
  const b = checkBias(op, bias, N);
  checkNumber(op, 'scale', scale);
  checkSameDevice(op, { x, w, bias: b, down, up });
  const y = out([...x.shape.slice(0, -1), N], x);
  runOp(op, b ? [x, w, b, down, up] : [x, w, down, up], [y], { scale, has_bias: b ? 1 : 0 });
  return y;
}

/**
 * Per batch item b: y[b] = x[b] w^T + bias + scales[b] (x[b] downs[idx[b]]^T) ups[idx[b]]^T; idx[b] = -1 uses
 * no adapter. x [B, L, K], downs [nA, r, K], ups [nA, N, r], idx i32 [B], scales f32 [B].
 * @example
 * const y = loraLinearBatched(x, w, b, downs, ups, tensor(Int32Array.from([0, -1])), tensor([1, 0]));
 */
export function loraLinearBatched(x: Tensor, w: Tensor, bias: Tensor | null, downs: Tensor, ups: Tensor, idx: Tensor,
                                  scales: Tensor): Tensor {
  const op = 'lora_linear_batched';
  checkRank(op, 'x', x, 3);
  const { N } = checkLora(op, x, w, downs, ups, true);
  const b = checkBias(op, bias, N);
  const B = x.shape[0];
  if (!(idx instanceof Tensor)) throw new Error(`${op}: idx must be an i32 Tensor [${B}], got ${Array.isArray(idx) ? 'an array' : typeof idx}`);
  if (!(scales instanceof Tensor)) throw new Error(`${op}: scales must be a Tensor [${B}], got ${Array.isArray(scales) ? 'an array' : typeof scales}`);
  if (idx.dtype !== 'i32' || idx.rank !== 1 || idx.shape[0] !== B)
    throw new Error(`${op}: idx ${idx.dtype}${shapeStr(idx.shape)} must be i32 [${B}] (x ${shapeStr(x.shape)})`);
  checkFloat(op, 'scales', scales);
  if (scales.rank !== 1 || scales.shape[0] !== B)
    throw new Error(`${op}: scales ${shapeStr(scales.shape)} must be [${B}] (x ${shapeStr(x.shape)})`);
  checkSameDevice(op, { x, w, bias: b, downs, ups, idx, scales });
  const y = out([x.shape[0], x.shape[1], N], x);
  runOp(op, b ? [x, w, b, downs, ups, idx, scales] : [x, w, downs, ups, idx, scales], [y], { has_bias: b ? 1 : 0 });
  return y;
}
