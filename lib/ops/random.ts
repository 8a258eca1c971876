/**
 * Counter-based random tensors (Philox4x32-10, native/include/hypersd/philox.h): the same seed and offset give
 * the same numbers on CPU and CUDA. Element i of a draw depends only on (seed, offset, i); use a different
 * offset (or seed) for each independent draw. (A PyTorch-compatible CPU generator is lib/random/torch_cpu.ts.)
 */
import { empty, type DType, type DeviceSetting, type Tensor } from '../tensor';
import { isFloat } from '../tensor/dtype';
import { runOp } from './runtime';

export interface RandomOptions {
  /** A non-negative safe integer. */
  seed: number;
  /** The Philox counter offset (a non-negative safe integer), default 0. */
  offset?: number;
  dtype?: DType;
  device?: DeviceSetting;
}

function draw(op: string, shape: readonly number[], o: RandomOptions, normal: boolean): Tensor {
  if (!o || !Number.isSafeInteger(o.seed) || o.seed < 0) throw new Error(`${op}: seed must be a non-negative safe integer, got ${o?.seed}`);
  const offset = o.offset ?? 0;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new Error(`${op}: offset must be a non-negative safe integer, got ${offset}`);
  const dtype = o.dtype ?? 'f32';
  if (!isFloat(dtype)) throw new Error(`${op}: dtype must be a float dtype, got ${dtype}`);
  if (!Array.isArray(shape)) throw new Error(`${op}: shape must be an array of integers`);
  const y = empty(shape, { dtype, device: o.device });
  if (y.size > 0) runOp('rand', [], [y], { seed: o.seed, offset, normal });
  return y;
}

/** N(0, 1) samples. @example randn([1, 4, 64, 64], { seed: 42 }) */
export const randn = (shape: readonly number[], o: RandomOptions): Tensor => draw('randn', shape, o, true);
/** U[0, 1) samples. */
export const rand = (shape: readonly number[], o: RandomOptions): Tensor => draw('rand', shape, o, false);
