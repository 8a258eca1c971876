/**
 * Building blocks shared by the UNet, the VAE and the CLIP text encoders. Each layer declares its parameters
 * (diffusers names) in a ParamStore when built, and reads them at forward time, so LoRA fusing can swap a
 * weight in place and runtime LoRA adapters can be attached per module name.
 * Images flow as NHWC [N, H, W, C]; sequences as [B, L, C].
 */
import { Tensor, tidy, empty, type DType, type DeviceName } from '../tensor';
import * as ops from '../ops';
import { ParamStore } from './params';
import { currentTape, recording } from '../autograd/tape';

export type Act = 'none' | 'silu' | 'gelu' | 'gelu_tanh' | 'quick_gelu';

/**
 * Whether a layer's forwardAccumulate may add into `acc`'s own storage (a GEMM or convolution epilogue with
 * beta = 1, instead of a separate add over the whole tensor): inference, acc in x's dtype, no runtime
 * adapters on the layer, nothing recording (a tape or a checkpoint may hold acc for later; a noGrad scope
 * outside them records nothing). On CUDA too (since session 11; the GEMM and convolution kernels' beta
 * epilogues are the ones the op tests check on the GPU): one launch and one pass over acc fewer per residual,
 * where the GPU UNet is bound by launches.
 */
function canAccumulate(acc: Tensor, x: Tensor, adapters: RuntimeAdapter[] | undefined): boolean {
  return acc.dtype === x.dtype && !(adapters && adapters.length > 0) && !recording();
}

/**
 * Whether a convolution may hand its output's channel statistics to the group norm after it (ops.conv2d's
 * `stats`, ops.groupNorm's `stats`: the norm then reads its input once): inference with no runtime adapters on
 * the layer. HYPERSD_GN_STATS unset: on the CPU in f32 when the output is at least 4 MiB. Past the last-level
 * cache (16 MiB and up: the SD1.5 VAE decoder's 128x128 to 512x512 activations) the norm's second read goes to
 * memory: 1.3-3.5x faster norms. At the SD1.5 UNet's 64x64 x 320 (5 MiB, L3-resident) a convolution + norm pair
 * with them took 40-120 us less than without (session 24: engine, paired medians of 80 alternations; the
 * statistics cost the 3x3 convolution ~25 us, the norm's statistics pass ~35-40); at 32x32 x 640 (2.5 MiB) and
 * below the difference was within the noise, so smaller outputs keep the two-pass norm (bench/gn_stats.ts).
 * 1: always, on CUDA too (its kernels, written in session 22, have not yet run on a GPU); 0: never.
 */
function canGiveStats(x: Tensor, w: Tensor, adapters: RuntimeAdapter[] | undefined, outBytes: number): boolean {
  const env = process.env.HYPERSD_GN_STATS;
  if (env !== undefined && env !== '' && env !== '0' && env !== '1')
    throw new Error(`HYPERSD_GN_STATS must be 0 or 1, got '${env}'`);
  if (env === '0' || (adapters && adapters.length > 0) || recording() || w.device !== x.device) return false;
  if (env === '1') return x.device === 'cuda' || x.dtype === 'f32';
  return x.device === 'cpu' && x.dtype === 'f32' && outBytes >= 4 * 2 ** 20;
}

/**
 * Whether a convolution may read its input's nearest 2x upsampling itself (ops.conv2d's `upsample`: the upsampled
 * tensor, 4x the input's bytes, is never formed): inference on the CPU with no runtime adapters on the layer
 * (HYPERSD_CONV_UPSAMPLE=0: never).
 */
function canUpsampleIn(x: Tensor, adapters: RuntimeAdapter[] | undefined): boolean {
  const env = process.env.HYPERSD_CONV_UPSAMPLE;
  if (env !== undefined && env !== '' && env !== '0' && env !== '1')
    throw new Error(`HYPERSD_CONV_UPSAMPLE must be 0 or 1, got '${env}'`);
  return env !== '0' && x.device === 'cpu' && !(adapters && adapters.length > 0) && !recording();
}

/** A runtime LoRA adapter on one module: y += scale * (x down^T) up^T (conv: down is a conv, up 1x1). */
export interface RuntimeAdapter { name: string; down: Tensor; up: Tensor; scale: number }

export class Linear {
  constructor(readonly p: ParamStore, readonly name: string, readonly inF: number, readonly outF: number, readonly bias = true) {
    p.declare(`${name}.weight`, [outF, inF], 'linear');
    if (bias) p.declare(`${name}.bias`, [outF], 'bias');
  }
  forward(x: Tensor, act: Act = 'none'): Tensor {
    const w = this.p.get(`${this.name}.weight`);
    const b = this.bias ? this.p.get(`${this.name}.bias`) : null;
    const adapters = this.p.adapters.get(this.name);
    if (!adapters || adapters.length === 0) return ops.linear(x, w, b, act);
    return tidy(() => {
      let y = ops.loraLinear(x, w, b, adapters[0].down, adapters[0].up, adapters[0].scale);
      for (const a of adapters.slice(1)) {
        const t = ops.linear(x, a.down, null);
        y = ops.matmul(t, a.up, { transB: true, alpha: a.scale, beta: 1, out: y });
      }
      return applyAct(y, act);
    });
  }
  /** acc + this.forward(x); at inference acc's storage is reused for the sum (see canAccumulate). */
  forwardAccumulate(x: Tensor, acc: Tensor): Tensor {
    if (!canAccumulate(acc, x, this.p.adapters.get(this.name))) return ops.add(this.forward(x), acc);
    const w = this.p.get(`${this.name}.weight`), b = this.bias ? this.p.get(`${this.name}.bias`) : null;
    return ops.matmul(x, w, { transB: true, bias: b, beta: 1, out: acc });
  }
  /**
   * geglu(this.forward(x)) (diffusers' GEGLU projection): one fused kernel at inference with no runtime
   * adapters (ops.linearGeglu); the two ops under autograd, which the fused op has no gradient for.
   */
  forwardGeglu(x: Tensor): Tensor {
    const adapters = this.p.adapters.get(this.name);
    if ((adapters && adapters.length > 0) || currentTape()) return ops.geglu(this.forward(x));
    return ops.linearGeglu(x, this.p.get(`${this.name}.weight`), this.bias ? this.p.get(`${this.name}.bias`) : null);
  }
}

function applyAct(y: Tensor, act: Act): Tensor {
  switch (act) {
    case 'none': return y;
    case 'silu': return ops.silu(y);
    case 'gelu': return ops.gelu(y);
    case 'gelu_tanh': return ops.geluTanh(y);
    case 'quick_gelu': return ops.quickGelu(y);
  }
}

export class Conv2d {
  constructor(
    readonly p: ParamStore, readonly name: string, readonly inC: number, readonly outC: number,
    readonly k: number, readonly stride = 1, readonly pad = 0, readonly bias = true,
  ) {
    p.declare(`${name}.weight`, [outC, inC, k, k], 'conv');
    if (bias) p.declare(`${name}.bias`, [outC], 'bias');
  }
  /**
   * x NHWC [N, H, W, Cin] -> [N, Ho, Wo, Cout]. `extraBias` [Cout] is added to the bias (a per-channel term the
   * caller would otherwise add to the whole output: one [Cout] add instead of one over N*Ho*Wo*Cout values).
   */
  forward(x: Tensor, extraBias?: Tensor): Tensor {
    const w = this.p.get(`${this.name}.weight`);
    const b0 = this.bias ? this.p.get(`${this.name}.bias`) : null;
    if (!extraBias) return this.forwardWith(x, w, b0);
    return tidy(() => this.forwardWith(x, w, b0 ? ops.add(extraBias, b0) : extraBias));
  }
  /** acc + this.forward(x); at inference acc's storage is reused for the sum (see canAccumulate). */
  forwardAccumulate(x: Tensor, acc: Tensor): Tensor {
    if (!canAccumulate(acc, x, this.p.adapters.get(this.name))) return ops.add(this.forward(x), acc);
    const w = this.p.get(`${this.name}.weight`), b = this.bias ? this.p.get(`${this.name}.bias`) : null;
    return ops.conv2d(x, w, b, { stride: this.stride, pad: this.pad, beta: 1, out: acc });
  }
  /** forwardAccumulate(x, acc) and, where the convolution can give them (canGiveStats), the sum's channel statistics. */
  forwardAccumulateWithStats(x: Tensor, acc: Tensor): { y: Tensor; stats: Tensor | null } {
    const w = this.p.get(`${this.name}.weight`);
    const adapters = this.p.adapters.get(this.name);
    if (!canAccumulate(acc, x, adapters) || !canGiveStats(x, w, adapters, acc.size * 4)) return { y: this.forwardAccumulate(x, acc), stats: null };
    const b = this.bias ? this.p.get(`${this.name}.bias`) : null;
    const stats = empty([acc.shape[0], this.outC, 3], { dtype: 'f32', device: x.device });
    return { y: ops.conv2d(x, w, b, { stride: this.stride, pad: this.pad, beta: 1, out: acc, stats }), stats };
  }
  /** Whether forwardWithStats(x, ..., upsample = true) reads x's upsampling itself (else the caller upsamples). */
  readsUpsampled(x: Tensor): boolean {
    return canUpsampleIn(x, this.p.adapters.get(this.name));
  }
  /**
   * this.forward(x, extraBias) and, where the convolution can give them (canGiveStats), its output's
   * per-channel statistics for a group norm of it (GroupNorm.forward's `stats`); else stats is null.
   * upsample: convolve x nearest-upsampled 2x, read so by the convolution itself (only where readsUpsampled(x)).
   */
  forwardWithStats(x: Tensor, extraBias?: Tensor, upsample = false): { y: Tensor; stats: Tensor | null } {
    const w = this.p.get(`${this.name}.weight`);
    if (upsample && !this.readsUpsampled(x)) throw new Error(`${this.name}: this convolution cannot read its input upsampled here (readsUpsampled)`);
    const [n, h0, wd0] = x.shape;
    const h = upsample ? 2 * h0 : h0, wd = upsample ? 2 * wd0 : wd0;
    const ho = Math.floor((h + 2 * this.pad - this.k) / this.stride) + 1, wo = Math.floor((wd + 2 * this.pad - this.k) / this.stride) + 1;
    const b0 = this.bias ? this.p.get(`${this.name}.bias`) : null;
    const give = canGiveStats(x, w, this.p.adapters.get(this.name), n * ho * wo * this.outC * 4);
    if (!give && !upsample) return { y: this.forward(x, extraBias), stats: null };
    const stats = give ? empty([x.shape[0], this.outC, 3], { dtype: 'f32', device: x.device }) : undefined;
    const conv = (b: Tensor | null) => ops.conv2d(x, w, b, { stride: this.stride, pad: this.pad, stats, upsample });
    const y = extraBias ? tidy(() => conv(b0 ? ops.add(extraBias, b0) : extraBias)) : conv(b0);
    return { y, stats: stats ?? null };
  }
  private forwardWith(x: Tensor, w: Tensor, b: Tensor | null): Tensor {
    const adapters = this.p.adapters.get(this.name);
    if (!adapters || adapters.length === 0) return ops.conv2d(x, w, b, { stride: this.stride, pad: this.pad });
    return tidy(() => {
      let y = ops.loraConv2d(x, w, b, adapters[0].down, adapters[0].up, adapters[0].scale, { stride: this.stride, pad: this.pad });
      for (const a of adapters.slice(1)) {
        const t = ops.conv2d(x, a.down, null, { stride: this.stride, pad: this.pad });
        y = ops.matmul(t, a.up, { transB: true, alpha: a.scale, beta: 1, out: y });
      }
      return y;
    });
  }
}

export class GroupNorm {
  constructor(readonly p: ParamStore, readonly name: string, readonly groups: number, readonly channels: number, readonly eps: number) {
    if (channels % groups !== 0) throw new Error(`${name}: ${channels} channels do not split into ${groups} groups`);
    p.declare(`${name}.weight`, [channels], 'norm');
    p.declare(`${name}.bias`, [channels], 'norm');
  }
  /** x NHWC or [N, S, C]. overwrite: x is consumed and, when nothing records, its storage may take the result
   * (ops.groupNorm's overwrite: on the CPU). */
  forward(x: Tensor, silu = false, overwrite = false, stats: Tensor | null = null): Tensor {
    const shape = x.shape;
    const n = shape[0], c = shape[shape.length - 1];
    const flat = x.reshape([n, x.size / (n * c), c]);
    // stats: x's channel statistics from the op that produced it (Conv2d.forwardWithStats): x is read once.
    const y = ops.groupNorm(flat, this.p.get(`${this.name}.weight`), this.p.get(`${this.name}.bias`), {
      groups: this.groups, eps: this.eps, silu, overwrite: overwrite && !recording(), stats,
    });
    // The [N, S, C] handles go at once (the op holds what it reads, the view returned holds y's storage), so a
    // caller disposing the result frees the storage then, not when its tidy scope ends.
    const out = y.reshape(shape);
    flat.dispose();
    if (y !== flat) y.dispose();
    return out;
  }
}

export class LayerNorm {
  constructor(readonly p: ParamStore, readonly name: string, readonly dim: number, readonly eps = 1e-5) {
    p.declare(`${name}.weight`, [dim], 'norm');
    p.declare(`${name}.bias`, [dim], 'norm');
  }
  forward(x: Tensor): Tensor {
    return ops.layerNorm(x, this.p.get(`${this.name}.weight`), this.p.get(`${this.name}.bias`), this.eps);
  }
}

/** Multi-head attention with separate q/k/v projections (diffusers Attention, CLIP self-attention). */
export class MultiHeadAttention {
  readonly q: Linear; readonly k: Linear; readonly v: Linear; readonly o: Linear;
  constructor(
    p: ParamStore, readonly name: string, queryDim: number, kvDim: number, readonly heads: number, readonly headDim: number,
    names: [string, string, string, string], qkvBias: boolean,
  ) {
    const inner = heads * headDim;
    this.q = new Linear(p, `${name}.${names[0]}`, queryDim, inner, qkvBias);
    this.k = new Linear(p, `${name}.${names[1]}`, kvDim, inner, qkvBias);
    this.v = new Linear(p, `${name}.${names[2]}`, kvDim, inner, qkvBias);
    this.o = new Linear(p, `${name}.${names[3]}`, inner, queryDim, true);
  }
  /** x [B, Lq, Cq], ctx [B, Lk, Ckv] (self-attention when absent); with `acc`, acc + the output (acc's storage
   * possibly reused, see Linear.forwardAccumulate). */
  forward(x: Tensor, ctx: Tensor | null = null, causal = false, acc?: Tensor): Tensor {
    return tidy(() => {
      const kv = ctx ?? x;
      const q = this.q.forward(x), k = this.k.forward(kv), v = this.v.forward(kv);
      const a = ops.attention(q, k, v, { heads: this.heads, scale: 1 / Math.sqrt(this.headDim), causal });
      return acc ? this.o.forwardAccumulate(a, acc) : this.o.forward(a);
    });
  }
}

/** The activations' dtype of a network whose `computeDtype` is `setting`: 'auto' is the weights' half dtype on a
 * GPU (the tensor-core kernels; f32 runs the SIMT ones, 10-100x slower) and f32 on the CPU (whose kernels compute
 * in f32). */
export function activationDtype(setting: DType | 'auto', weights: DType, device: DeviceName): DType {
  if (setting !== 'auto') return setting;
  return device === 'cuda' && weights !== 'f32' ? weights : 'f32';
}

/** NCHW [N, C, H, W] -> NHWC and back. */
export const toNHWC = (x: Tensor): Tensor => ops.permute(x, [0, 2, 3, 1]);
export const toNCHW = (x: Tensor): Tensor => ops.permute(x, [0, 3, 1, 2]);
