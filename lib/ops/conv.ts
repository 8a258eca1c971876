/**
 * Convolution ops (native/cpu/conv.cpp, semantics in native/include/hypersd/OPS.md) on channels-last
 * activations: x [N, H, W, Cin], weights OHWI [Cout, kh, kw, Cin] (convert PyTorch's OIHW once at load time
 * with `ohwiFromOihw`), y [N, Ho, Wo, Cout]; cross-correlation with zero padding, as torch.nn.Conv2d.
 */
import type { Tensor } from '../tensor';
import { checkFloat, checkRank, checkSameDevice, out, runOp, sameShape, shapeStr } from './runtime';
import { checkStats } from './norm';

export interface Conv2dOptions {
  stride?: number;
  pad?: number;
  /** Write here (required when beta != 0). */
  out?: Tensor;
  /** 1 adds the convolution to `out` (a residual add for free); 0 (default) overwrites. */
  beta?: number;
  /**
   * CPU algorithm: 'auto' (default: for stride-1 3x3 convolutions with >= 16 channels in and out, Winograd
   * F(6x6,3x3) with >= 256 6x6 output tiles (96x96 and up), else F(4x4,3x3) with >= 16 4x4 tiles (16x16 and
   * up); otherwise implicit GEMM), 'gemm' (implicit GEMM, direct-convolution
   * arithmetic), 'winograd' (F(2x2,3x3)), 'winograd4' (F(4x4,3x3): 4x fewer multiply-adds, about 10x the
   * rounding error of the direct sum, ~4e-6 relative in f32), 'winograd6' (F(6x6,3x3): 5x fewer, about twice
   * F(4x4)'s error, ~4.5e-6). The CUDA kernels ignore it.
   */
  algo?: ConvAlgo;
  /**
   * Also writes y's per-channel statistics here (f32 [N, Cout, 3], see norm.ts's `channelStats`; y f32 on the
   * CPU), for a `groupNorm` of y: the CPU's Winograd algorithms sum them from each output tile while it is in
   * cache, CUDA's tensor-core kernel from each 128-row tile in its epilogue (Ho Wo a multiple of 128), the
   * others read y back once.
   */
  stats?: Tensor;
  /**
   * Convolve x nearest-upsampled 2x ([N, 2H, 2W, Cin], as upsampleNearest2x gives) without forming it: the
   * gathers read x at half the coordinates (CPU; the CUDA kernels do not take it).
   */
  upsample?: boolean;
}
export type ConvAlgo = 'auto' | 'gemm' | 'winograd' | 'winograd4' | 'winograd6';
const ALGO: Record<ConvAlgo, number> = { auto: 0, gemm: 1, winograd: 2, winograd4: 3, winograd6: 4 };

function checkInt(op: string, name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new Error(`${op}: ${name} must be an integer >= ${min}, got ${String(v)}`);
}

function convShape(op: string, x: Tensor, w: Tensor, stride: number, pad: number, up = false): number[] {
  checkFloat(op, 'x', x);
  checkFloat(op, 'w', w);
  checkRank(op, 'x', x, 4);
  checkRank(op, 'w', w, 4);
  checkInt(op, 'stride', stride, 1);
  checkInt(op, 'pad', pad, 0);
  const [n, h0, wd0, c] = x.shape;
  const h = up ? 2 * h0 : h0, wd = up ? 2 * wd0 : wd0;  // upsample: the input is x upsampled 2x
  const [co, kh, kw, ci] = w.shape;
  if (ci !== c)
    throw new Error(`${op}: x ${shapeStr(x.shape)} (NHWC) and w ${shapeStr(w.shape)} (OHWI) differ in Cin (${c} vs ${ci})`);
  if (kh < 1 || kw < 1) throw new Error(`${op}: w ${shapeStr(w.shape)} (OHWI) has an empty ${kh}x${kw} kernel`);
  if (h + 2 * pad < kh || wd + 2 * pad < kw)
    throw new Error(`${op}: the ${kh}x${kw} kernel of w ${shapeStr(w.shape)} is larger than x ${shapeStr(x.shape)} padded by ${pad}`);
  return [n, Math.floor((h + 2 * pad - kh) / stride) + 1, Math.floor((wd + 2 * pad - kw) / stride) + 1, co];
}

function checkBias(op: string, bias: Tensor | null | undefined, n: number): Tensor | undefined {
  if (bias === null || bias === undefined) return undefined;
  checkFloat(op, 'bias', bias);
  if (bias.rank !== 1 || bias.shape[0] !== n) throw new Error(`${op}: bias ${shapeStr(bias.shape)} must be [${n}]`);
  return bias;
}

/**
 * 2-D convolution, NHWC x OHWI -> NHWC.
 * @example
 * const h = conv2d(x, convIn.weight, convIn.bias, { pad: 1 });            // 3x3, same size
 * conv2d(h, down.weight, down.bias, { stride: 2, pad: 1 });              // downsample
 */
export function conv2d(x: Tensor, w: Tensor, bias?: Tensor | null, o: Conv2dOptions = {}): Tensor {
  const op = 'conv2d';
  const stride = o.stride ?? 1, pad = o.pad ?? 0, beta = o.beta ?? 0;
  const up = !!o.upsample;
  if (up && x.device !== 'cpu') throw new Error(`${op}: upsample (the input read as its nearest 2x upsampling) is supported on the CPU only, got a ${x.device} x`);
  const shape = convShape(op, x, w, stride, pad, up);
  const b = checkBias(op, bias, w.shape[0]);
  if (typeof beta !== 'number' || !Number.isFinite(beta)) throw new Error(`${op}: beta must be a finite number, got ${String(beta)}`);
  if (beta !== 0 && !o.out) throw new Error(`${op}: beta ${beta} accumulates into an existing output: pass out`);
  if (o.out) {
    checkFloat(op, 'out', o.out);
    if (!sameShape(o.out.shape, shape))
      throw new Error(`${op}: out ${shapeStr(o.out.shape)} must be ${shapeStr(shape)} (x ${shapeStr(x.shape)}, w ${shapeStr(w.shape)})`);
  }
  const algo = o.algo ?? 'auto';
  if (typeof algo !== 'string' || !Object.hasOwn(ALGO, algo)) throw new Error(`${op}: algo must be one of ${Object.keys(ALGO).join(', ')}, got '${String(algo)}'`);
  if ((algo === 'winograd' || algo === 'winograd4' || algo === 'winograd6') && (w.shape[1] !== 3 || w.shape[2] !== 3 || stride !== 1))
    throw new Error(`${op}: algo '${algo}' needs a 3x3 kernel and stride 1, got w ${shapeStr(w.shape)} and stride ${stride}`);
  checkSameDevice(op, { x, w, bias: b, out: o.out });
  const y = o.out ?? out(shape, x);
  if (o.stats) checkStats(op, 'stats', o.stats, y, shape[0], shape[3]);
  runOp(op, b ? [x, w, b] : [x, w], o.stats ? [y, o.stats] : [y],
    { stride, pad, beta, has_bias: b ? 1 : 0, algo: ALGO[algo], upsample: up ? 1 : undefined });
  return y;
}

/**
 * conv2d(x, w) + bias + scale * conv2d(x, down) up^T (LoCon: down [r, kh, kw, Cin] with w's kernel, stride
 * and padding; up [Cout, r] is 1x1), without forming the merged weight.
 * @example
 * const y = loraConv2d(x, w, b, lora.down, lora.up, lora.alpha / lora.rank, { pad: 1 });
 */
export function loraConv2d(x: Tensor, w: Tensor, bias: Tensor | null, down: Tensor, up: Tensor, scale: number,
                           o: { stride?: number; pad?: number } = {}): Tensor {
  const op = 'lora_conv2d';
  const stride = o.stride ?? 1, pad = o.pad ?? 0;
  const shape = convShape(op, x, w, stride, pad);
  const b = checkBias(op, bias, w.shape[0]);
  checkFloat(op, 'down', down);
  checkFloat(op, 'up', up);
  checkRank(op, 'down', down, 4);
  checkRank(op, 'up', up, 2);
  const r = down.shape[0];
  if (!sameShape(down.shape.slice(1), w.shape.slice(1)))
    throw new Error(`${op}: down ${shapeStr(down.shape)} must be [r, ${w.shape.slice(1).join(', ')}] like w ${shapeStr(w.shape)}`);
  if (up.shape[0] !== w.shape[0] || up.shape[1] !== r)
    throw new Error(`${op}: up ${shapeStr(up.shape)} must be [${w.shape[0]}, ${r}] (w ${shapeStr(w.shape)}, down ${shapeStr(down.shape)})`);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new Error(`${op}: scale must be a finite number, got ${String(scale)}`);
  checkSameDevice(op, { x, w, bias: b, down, up });
  const y = out(shape, x);
  runOp(op, b ? [x, w, b, down, up] : [x, w, down, up], [y], { stride, pad, scale, has_bias: b ? 1 : 0 });
  return y;
}

/**
 * A PyTorch conv weight [O, I, kh, kw] (OIHW) reordered to OHWI [O, kh, kw, I], the layout conv2d reads.
 * @example
 * const w = tensor(ohwiFromOihw(raw, [320, 4, 3, 3]), [320, 3, 3, 4]);
 */
export function ohwiFromOihw(w: Float32Array, shape: [number, number, number, number]): Float32Array {
  const [O, I, kh, kw] = shape;
  if (w.length !== O * I * kh * kw)
    throw new Error(`ohwiFromOihw: ${w.length} values do not fill shape ${shapeStr(shape)} (${O * I * kh * kw} elements)`);
  const r = new Float32Array(w.length);
  for (let o = 0; o < O; o++)
    for (let i = 0; i < I; i++)
      for (let y = 0; y < kh; y++)
        for (let x = 0; x < kw; x++) r[((o * kh + y) * kw + x) * I + i] = w[((o * I + i) * kh + y) * kw + x];
  return r;
}
