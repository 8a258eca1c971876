/**
 * AutoencoderKL (encoder and decoder, with the mid-block attention) from a diffusers vae/config.json.
 * decode() takes latents already divided by scaling_factor (what diffusers passes to vae.decode) and returns
 * the unclamped image NCHW in about [-1, 1]; encode() returns the latent distribution's mean and logvar.
 * NHWC inside.
 */
import { checkConfigIntegers } from './configs';
import { Tensor, tidy, zeros, type DType } from '../tensor';
import * as ops from '../ops';
import { ParamStore, type LoadOptions, type WeightSource, type LoadReport } from '../nn/params';
import { Linear, Conv2d, GroupNorm, toNHWC, toNCHW, activationDtype } from '../nn/layers';

export interface VAEConfig {
  in_channels: number; out_channels: number; latent_channels: number; block_out_channels: number[];
  layers_per_block: number; norm_num_groups?: number; down_block_types?: string[]; up_block_types?: string[];
  scaling_factor?: number; mid_block_add_attention?: boolean; force_upcast?: boolean; [k: string]: unknown;
}

class Resnet {
  n1: GroupNorm; c1: Conv2d; n2: GroupNorm; c2: Conv2d; sc: Conv2d | null;
  constructor(p: ParamStore, name: string, inC: number, outC: number, groups: number) {
    this.n1 = new GroupNorm(p, `${name}.norm1`, groups, inC, 1e-6);
    this.c1 = new Conv2d(p, `${name}.conv1`, inC, outC, 3, 1, 1);
    this.n2 = new GroupNorm(p, `${name}.norm2`, groups, outC, 1e-6);
    this.c2 = new Conv2d(p, `${name}.conv2`, outC, outC, 3, 1, 1);
    this.sc = inC !== outC ? new Conv2d(p, `${name}.conv_shortcut`, inC, outC, 1) : null;
  }
  /** x NHWC, consumed: the VAE is a chain (no skip connections), so at inference x's storage (or the shortcut
   * conv's fresh output) takes conv2's sum in place (Conv2d.forwardAccumulate) instead of a separate add. Each
   * intermediate is disposed once its consumer is enqueued (as Chain does between layers), so norm2's output
   * takes norm1's block. xStats: x's channel statistics from the layer that produced it (norm1 then reads x
   * once); wantStats: return the output's (for the group norm that reads it next), where the convolutions can
   * give them. */
  forward(x: Tensor, xStats: Tensor | null = null, wantStats = false): { y: Tensor; stats: Tensor | null } {
    return tidy(() => {
      // With a shortcut conv, it reads x first, so that norm1 may then write over x (GroupNorm's overwrite: on
      // the CPU when nothing records) and x go once conv1 is queued: x, norm1's output and conv1's output no
      // longer live at once.
      const s = this.sc ? this.sc.forward(x) : null;
      const a = this.n1.forward(x, true, s !== null, xStats);
      // conv1 hands norm2 its output's channel statistics where it can (CPU inference): norm2 reads b once.
      const { y: b, stats } = this.c1.forwardWithStats(a);
      a.dispose();
      if (s) x.dispose();  // read by now (queued), and maybe overwritten: consumed
      const h = this.n2.forward(b, true, false, stats);
      b.dispose();
      stats?.dispose();
      const out = wantStats ? this.c2.forwardAccumulateWithStats(h, s ?? x) : { y: this.c2.forwardAccumulate(h, s ?? x), stats: null };
      h.dispose();
      return out;
    });
  }
}

/** Single-head self-attention over all pixels, with residual (diffusers Attention in the VAE mid block). */
class MidAttention {
  norm: GroupNorm; q: Linear; k: Linear; v: Linear; o: Linear;
  constructor(p: ParamStore, name: string, readonly ch: number, groups: number) {
    this.norm = new GroupNorm(p, `${name}.group_norm`, groups, ch, 1e-6);
    this.q = new Linear(p, `${name}.to_q`, ch, ch);
    this.k = new Linear(p, `${name}.to_k`, ch, ch);
    this.v = new Linear(p, `${name}.to_v`, ch, ch);
    this.o = new Linear(p, `${name}.to_out.0`, ch, ch);
  }
  forward(x: Tensor, xStats: Tensor | null = null): Tensor {
    return tidy(() => {
      const [n, h, w, c] = x.shape;
      const s = this.norm.forward(x, false, false, xStats).reshape([n, h * w, c]);
      const a = ops.attention(this.q.forward(s), this.k.forward(s), this.v.forward(s), { heads: 1, scale: 1 / Math.sqrt(c) });
      // x + to_out(a), into x's storage at inference (x, the mid block's input, is not read again).
      return this.o.forwardAccumulate(a, x.reshape([n, h * w, c])).reshape([n, h, w, c]);
    });
  }
}

class Mid {
  r0: Resnet; attn: MidAttention | null; r1: Resnet;
  constructor(p: ParamStore, name: string, ch: number, groups: number, withAttn: boolean) {
    this.r0 = new Resnet(p, `${name}.resnets.0`, ch, ch, groups);
    this.attn = withAttn ? new MidAttention(p, `${name}.attentions.0`, ch, groups) : null;
    this.r1 = new Resnet(p, `${name}.resnets.1`, ch, ch, groups);
  }
  forward(x: Tensor, xStats: Tensor | null = null, wantStats = false): { y: Tensor; stats: Tensor | null } {
    return tidy(() => {
      const r0 = this.r0.forward(x, xStats, this.attn !== null);
      const chain = new Chain(r0.y, r0.stats);
      if (this.attn) chain.next(this.attn.forward(chain.h, chain.stats));
      chain.nextWith(this.r1.forward(chain.h, null, wantStats));
      return { y: chain.h, stats: chain.stats };
    });
  }
}

/**
 * A chain of layers inside one tidy: each step's input is disposed as soon as the next step is enqueued, so
 * the scope does not hold every intermediate until it ends (the decoder's outputs at 1024x1024 are 0.5-1 GB
 * each: holding them all took SDXL's VAE decode to a 7.1 GB live peak). Disposing behind the queue is safe:
 * queued kernels keep the storage they read (stream-ordered reuse), and a layer that wrote into its input's
 * storage shares it with its output.
 */
class Chain {
  /** h's channel statistics when the layer that produced it gave them (for a group norm of h), else null. */
  constructor(public h: Tensor, public stats: Tensor | null = null) {}
  next(t: Tensor, stats: Tensor | null = null): Tensor {
    if (t !== this.h) this.h.dispose();
    this.stats?.dispose();
    this.h = t;
    this.stats = stats;
    return t;
  }
  nextWith(r: { y: Tensor; stats: Tensor | null }): Tensor {
    return this.next(r.y, r.stats);
  }
}

export class AutoencoderKL {
  readonly params = new ParamStore('vae');
  private enc: { convIn: Conv2d; blocks: { resnets: Resnet[]; down?: Conv2d }[]; mid: Mid; norm: GroupNorm; convOut: Conv2d };
  private dec: { convIn: Conv2d; mid: Mid; blocks: { resnets: Resnet[]; up?: Conv2d }[]; norm: GroupNorm; convOut: Conv2d };
  private quant: Conv2d; private postQuant: Conv2d;
  readonly scalingFactor: number;
  /** The activations' dtype (layers.ts activationDtype: 'auto' is the weights' half dtype on a GPU, f32 on the
   * CPU). decode() and encode() return f32 either way. */
  computeDtype: DType | 'auto' = 'auto';

  private cdt(device: Tensor['device']): DType {
    return activationDtype(this.computeDtype, this.params.get('decoder.conv_in.weight').dtype, device);
  }

  constructor(readonly config: VAEConfig) {
    const c = config, p = this.params, boc = c.block_out_channels, nb = boc.length;
    const g = c.norm_num_groups ?? 32, L = c.latent_channels;
    const attn = c.mid_block_add_attention ?? true;
    for (const k of ['latents_mean', 'latents_std', 'shift_factor']) {
      const v = (c as unknown as Record<string, unknown>)[k];
      if (v !== undefined && v !== null) throw new Error(`vae config: ${k} ${JSON.stringify(v)} is not supported (latents are scaled by scaling_factor alone; it had been ignored)`);
    }
    const act = (c as { act_fn?: unknown }).act_fn;
    if (act !== undefined && act !== 'silu' && act !== 'swish') throw new Error(`vae config: act_fn ${JSON.stringify(act)} is not supported (silu)`);
    checkConfigIntegers('vae config', c as unknown as Record<string, unknown>, ['in_channels', 'out_channels', 'latent_channels', 'block_out_channels', 'layers_per_block', 'norm_num_groups']);
    for (const t of c.down_block_types ?? []) if (t !== 'DownEncoderBlock2D') throw new Error(`vae config: down block type ${t} is not supported`);
    for (const t of c.up_block_types ?? []) if (t !== 'UpDecoderBlock2D') throw new Error(`vae config: up block type ${t} is not supported`);
    this.scalingFactor = c.scaling_factor ?? 0.18215;
    // encoder
    const eb: { resnets: Resnet[]; down?: Conv2d }[] = [];
    let out = boc[0];
    const encIn = new Conv2d(p, 'encoder.conv_in', c.in_channels, boc[0], 3, 1, 1);
    for (let i = 0; i < nb; i++) {
      const inC = out;
      out = boc[i];
      const b: { resnets: Resnet[]; down?: Conv2d } = { resnets: [] };
      for (let j = 0; j < c.layers_per_block; j++) b.resnets.push(new Resnet(p, `encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? inC : out, out, g));
      if (i < nb - 1) b.down = new Conv2d(p, `encoder.down_blocks.${i}.downsamplers.0.conv`, out, out, 3, 2, 0);
      eb.push(b);
    }
    this.enc = {
      convIn: encIn, blocks: eb, mid: new Mid(p, 'encoder.mid_block', boc[nb - 1], g, attn),
      norm: new GroupNorm(p, 'encoder.conv_norm_out', g, boc[nb - 1], 1e-6),
      convOut: new Conv2d(p, 'encoder.conv_out', boc[nb - 1], 2 * L, 3, 1, 1),
    };
    this.quant = new Conv2d(p, 'quant_conv', 2 * L, 2 * L, 1);
    this.postQuant = new Conv2d(p, 'post_quant_conv', L, L, 1);
    // decoder
    const rb = [...boc].reverse();
    const decIn = new Conv2d(p, 'decoder.conv_in', L, rb[0], 3, 1, 1);
    const decMid = new Mid(p, 'decoder.mid_block', rb[0], g, attn);
    const db: { resnets: Resnet[]; up?: Conv2d }[] = [];
    out = rb[0];
    for (let i = 0; i < nb; i++) {
      const prev = out;
      out = rb[i];
      const b: { resnets: Resnet[]; up?: Conv2d } = { resnets: [] };
      for (let j = 0; j < c.layers_per_block + 1; j++) b.resnets.push(new Resnet(p, `decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? prev : out, out, g));
      if (i < nb - 1) b.up = new Conv2d(p, `decoder.up_blocks.${i}.upsamplers.0.conv`, out, out, 3, 1, 1);
      db.push(b);
    }
    this.dec = {
      convIn: decIn, mid: decMid, blocks: db, norm: new GroupNorm(p, 'decoder.conv_norm_out', g, boc[0], 1e-6),
      convOut: new Conv2d(p, 'decoder.conv_out', boc[0], c.out_channels, 3, 1, 1),
    };
  }

  load(src: Map<string, WeightSource>, opts?: LoadOptions, label?: string): LoadReport {
    return this.params.load(src, opts, label);
  }
  parameterCount(): number {
    return this.params.parameterCount();
  }

  /** z: latents / scaling_factor, NCHW [B, latent, h, w] -> image NCHW [B, 3, 8h, 8w] (unclamped). */
  decode(z: Tensor): Tensor {
    const L = this.config.latent_channels;
    if (z.rank !== 4 || z.shape[1] !== L) throw new Error(`vae.decode: latents must be [B, ${L}, h, w], got [${z.shape}]`);
    return tidy(() => {
      const cdt = this.cdt(z.device);
      // Each group norm's input comes with its channel statistics where the layer before could give them (CPU
      // inference: the convolutions sum them as they write; Chain carries them): the norm reads it once.
      const c = new Chain(this.postQuant.forward(toNHWC(ops.asDtype(z, cdt))));
      c.nextWith(this.dec.convIn.forwardWithStats(c.h));
      c.nextWith(this.dec.mid.forward(c.h, c.stats, true));
      for (const b of this.dec.blocks) {
        // the last resnet before an upsampler feeds no group norm
        b.resnets.forEach((r, j) => c.nextWith(r.forward(c.h, c.stats, !(b.up && j === b.resnets.length - 1))));
        // the upsampler: the convolution reads h nearest-upsampled 2x itself where it can (CPU inference; the
        // 4x larger upsampled tensor, 268 MB at 512x512, is never formed), else upsample then convolve
        if (b.up && b.up.readsUpsampled(c.h)) {
          c.nextWith(b.up.forwardWithStats(c.h, undefined, true));
        } else if (b.up) {
          c.next(ops.upsampleNearest2x(c.h));
          c.nextWith(b.up.forwardWithStats(c.h));
        }
      }
      c.next(this.dec.norm.forward(c.h, true, false, c.stats));
      c.next(toNCHW(this.dec.convOut.forward(c.h)));
      return ops.asDtype(c.h, 'f32');
    });
  }

  /** img NCHW in [-1, 1] -> { mean, logvar } NCHW [B, latent, H/8, W/8] (logvar clamped to [-30, 20]). */
  encode(img: Tensor): { mean: Tensor; logvar: Tensor } {
    const C = this.config.in_channels;
    if (img.rank !== 4 || img.shape[1] !== C) throw new Error(`vae.encode: image must be [B, ${C}, H, W], got [${img.shape}]`);
    return tidy(() => {
      const cdt = this.cdt(img.device);
      const first = this.enc.convIn.forwardWithStats(toNHWC(ops.asDtype(img, cdt)));
      const c = new Chain(first.y, first.stats);
      for (const b of this.enc.blocks) {
        // the last resnet before a downsampler feeds no group norm
        b.resnets.forEach((r, j) => c.nextWith(r.forward(c.h, c.stats, !(b.down && j === b.resnets.length - 1))));
        if (b.down) {
          c.next(padBottomRight(c.h));
          c.nextWith(b.down.forwardWithStats(c.h));
        }
      }
      c.nextWith(this.enc.mid.forward(c.h, c.stats, true));
      c.next(this.enc.norm.forward(c.h, true, false, c.stats));
      c.next(this.enc.convOut.forward(c.h));
      c.next(this.quant.forward(c.h));
      const L = this.config.latent_channels;
      const h = ops.asDtype(c.h, 'f32');
      const mean = toNCHW(ops.slice(h, 3, 0, L));
      const logvar = toNCHW(ops.clamp(ops.slice(h, 3, L, L), -30, 20));
      return { mean, logvar };
    });
  }

  dispose(): void {
    this.params.dispose();
  }
}


/** diffusers' encoder downsampler pads (left 0, right 1, top 0, bottom 1) before a stride-2 conv. */
function padBottomRight(x: Tensor): Tensor {
  const [n, h, w, c] = x.shape;
  const col = zeros([n, h, 1, c], { device: x.device, dtype: x.dtype });
  const wide = ops.concat([x, col], 2);
  const row = zeros([n, 1, w + 1, c], { device: x.device, dtype: x.dtype });
  return ops.concat([wide, row], 1);
}
