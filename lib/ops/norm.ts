/**
 * Normalisation ops (see native/cpu/norm.cpp and OPS.md): group-norm on channels-last [N, S, C] with an
 * optional fused SiLU, and layer-norm over the last dim. Output dtype is x's.
 */
import type { Tensor } from '../tensor';
import { checkFloat, checkRank, checkSameDevice, out, runOp, shapeStr } from './runtime';

function checkAffine(op: string, x: Tensor, gamma: Tensor, beta: Tensor, C: number): void {
  checkFloat(op, 'gamma', gamma);
  checkFloat(op, 'beta', beta);
  checkSameDevice(op, { x, gamma, beta });
  for (const [name, t] of [['gamma', gamma], ['beta', beta]] as const)
    if (t.rank !== 1 || t.shape[0] !== C)
      throw new Error(`${op}: ${name} ${shapeStr(t.shape)} must be [${C}] for x ${shapeStr(x.shape)}`);
}

function checkEps(op: string, eps: number): void {
  if (!(typeof eps === 'number' && eps >= 0 && Number.isFinite(eps))) throw new Error(`${op}: eps must be a finite number >= 0, got ${eps}`);
}

/**
 * GroupNorm over [N, S, C] (S = H*W): statistics per (n, group) over S x C/groups.
 * With `overwrite` the caller gives x up: on the CPU the result is written over x's storage (x must not be read
 * afterwards, nor be recorded by a tape); elsewhere a new tensor as without it.
 * @example const y = groupNorm(x.reshape([n, h * w, c]), gamma, beta, { groups: 32, eps: 1e-6, silu: true });
 */
export function groupNorm(
  x: Tensor, gamma: Tensor, beta: Tensor,
  o: { groups: number; eps?: number; silu?: boolean; overwrite?: boolean; stats?: Tensor | null },
): Tensor {
  const op = 'groupNorm';
  checkFloat(op, 'x', x);
  checkRank(op, 'x', x, 3);
  const C = x.shape[2];
  checkAffine(op, x, gamma, beta, C);
  const stats = o.stats ?? null;
  if (stats) checkStats(op, 'stats', stats, x, x.shape[0], C);
  const groups = o?.groups;
  if (!Number.isInteger(groups) || groups < 1 || C % groups !== 0)
    throw new Error(`${op}: groups must be a positive integer dividing the ${C} channels of x ${shapeStr(x.shape)}, got ${groups}`);
  const eps = o.eps ?? 1e-5;
  checkEps(op, eps);
  // overwrite: x is the caller's to give up; on the CPU y takes its storage (both passes read a row before the
  // apply writes it). The CUDA apply kernel declares its operands non-aliasing, so there y is a new tensor.
  const y = o.overwrite && x.device === 'cpu' ? x : out(x.shape, x);
  runOp('group_norm', stats ? [x, gamma, beta, stats] : [x, gamma, beta], [y], { groups, eps, silu: !!o.silu });
  return y;
}

/**
 * Checks a channel-statistics tensor (see `channelStats`): f32 [n, c, 3] on `like`'s device; on the CPU `like`
 * (the activation they describe) must be f32.
 * @internal
 */
export function checkStats(op: string, name: string, st: Tensor, like: Tensor, n: number, c: number): void {
  if (st.dtype !== 'f32' || st.rank !== 3 || st.shape[0] !== n || st.shape[1] !== c || st.shape[2] !== 3)
    throw new Error(`${op}: ${name} ${shapeStr(st.shape)} ${st.dtype} must be f32 [${n},${c},3] (per image and channel: mean hi, mean lo, variance)`);
  checkSameDevice(op, { x: like, [name]: st });
  if (like.device === 'cpu' && like.dtype !== 'f32')
    throw new Error(`${op}: ${name} (channel statistics) need f32 activations on the CPU, got ${like.dtype}`);
}

/**
 * Per-channel statistics of x [N, S, C] (f32 on the CPU; any float dtype on CUDA): f32 [N, C, 3], per image and
 * channel the mean over the S positions as hi + lo (two floats carrying a double) and the biased variance.
 * `groupNorm(x, ..., { stats })` then reads x once; `conv2d(..., { stats })` computes them while writing its
 * output (CPU Winograd: from each output tile in cache; CUDA: from each 128-row tile in the tensor-core
 * kernel's epilogue), which is where they save a pass over memory.
 */
export function channelStats(x: Tensor): Tensor {
  const op = 'channelStats';
  checkFloat(op, 'x', x);
  checkRank(op, 'x', x, 3);
  if (x.device === 'cpu' && x.dtype !== 'f32') throw new Error(`${op}: x must be f32 on the CPU, got ${x.dtype}`);
  const y = out([x.shape[0], x.shape[2], 3], x, 'f32');
  runOp('channel_stats', [x], [y]);
  return y;
}

/** LayerNorm over the last dim of x [..., C]. @example const y = layerNorm(x, w, b, 1e-5); */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps = 1e-5): Tensor {
  const op = 'layerNorm';
  checkFloat(op, 'x', x);
  checkRank(op, 'x', x, [1, 8]);
  checkAffine(op, x, gamma, beta, x.shape[x.rank - 1]);
  checkEps(op, eps);
  const y = out(x.shape, x);
  runOp('layer_norm', [x, gamma, beta], [y], { eps });
  return y;
}
