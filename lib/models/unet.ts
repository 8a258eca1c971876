/**
 * UNet2DConditionModel, built from a diffusers unet/config.json: SD1.5, SDXL and the tiny test models share
 * this one code path. Parameter names are diffusers'. Activations are NHWC inside; the public forward takes
 * and returns NCHW like diffusers.
 */
import { Tensor, tidy, tensor, zeros, type DType } from '../tensor';
import * as ops from '../ops';
import { ParamStore, type LoadOptions, type WeightSource, type LoadReport } from '../nn/params';
import { checkpoint } from '../autograd';
import { Linear, Conv2d, GroupNorm, LayerNorm, MultiHeadAttention, toNHWC, toNCHW, activationDtype } from '../nn/layers';
import { checkConfigIntegers, UNET_DEFAULTS } from './configs';

export interface UNetConfig {
  in_channels: number; out_channels: number; block_out_channels: number[]; layers_per_block: number | number[];
  down_block_types: string[]; up_block_types: string[]; mid_block_type?: string | null;
  attention_head_dim: number | number[]; num_attention_heads?: number | number[] | null;
  cross_attention_dim: number | number[]; transformer_layers_per_block?: number | number[];
  use_linear_projection?: boolean; norm_num_groups?: number; norm_eps?: number;
  flip_sin_to_cos?: boolean; freq_shift?: number; addition_embed_type?: string | null;
  addition_time_embed_dim?: number | null; projection_class_embeddings_input_dim?: number | null;
  act_fn?: string; time_embedding_type?: string; resnet_time_scale_shift?: string; class_embed_type?: string | null;
  sample_size?: number; upcast_attention?: boolean; dual_cross_attention?: boolean; only_cross_attention?: boolean | boolean[];
  encoder_hid_dim?: number | null; center_input_sample?: boolean;
  [k: string]: unknown;
}

const perBlock = <T>(v: T | T[], n: number): T[] => (Array.isArray(v) ? v : Array(n).fill(v));

class Resnet {
  norm1: GroupNorm; conv1: Conv2d; temb: Linear | null; norm2: GroupNorm; conv2: Conv2d; shortcut: Conv2d | null;
  constructor(p: ParamStore, name: string, inC: number, outC: number, tembC: number | null, groups: number, eps: number) {
    this.norm1 = new GroupNorm(p, `${name}.norm1`, groups, inC, eps);
    this.conv1 = new Conv2d(p, `${name}.conv1`, inC, outC, 3, 1, 1);
    this.temb = tembC ? new Linear(p, `${name}.time_emb_proj`, tembC, outC) : null;
    this.norm2 = new GroupNorm(p, `${name}.norm2`, groups, outC, eps);
    this.conv2 = new Conv2d(p, `${name}.conv2`, outC, outC, 3, 1, 1);
    this.shortcut = inC !== outC ? new Conv2d(p, `${name}.conv_shortcut`, inC, outC, 1) : null;
  }
  /** x NHWC; embSilu = silu(temb) [B, tembC] (computed once per forward) */
  forward(x: Tensor, embSilu: Tensor | null): Tensor {
    return tidy(() => {
      const t = this.temb && embSilu ? this.temb.forward(embSilu) : null;
      // Batch 1: the time embedding is a per-channel term, folded into conv1's bias.
      const batch1 = t !== null && t.shape[0] === 1;
      let h: Tensor, stats: Tensor | null = null;
      if (t && !batch1) {
        h = ops.add(this.conv1.forward(this.norm1.forward(x, true)), t.reshape([t.shape[0], 1, 1, t.shape[1]]));
      } else {
        // conv1 hands norm2 its output's channel statistics where it can (CPU inference): norm2 reads h once.
        ({ y: h, stats } = this.conv1.forwardWithStats(this.norm1.forward(x, true), t ? t.reshape([t.shape[1]]) : undefined));
      }
      // With a shortcut conv its fresh output takes conv2's sum in place (forwardAccumulate); x itself may be
      // a skip connection the UNet reads again, so an identity shortcut keeps the separate add.
      if (this.shortcut) return this.conv2.forwardAccumulate(this.norm2.forward(h, true, false, stats), this.shortcut.forward(x));
      return ops.add(x, this.conv2.forward(this.norm2.forward(h, true, false, stats)));
    });
  }
}

class TransformerBlock {
  norm1: LayerNorm; attn1: MultiHeadAttention; norm2: LayerNorm; attn2: MultiHeadAttention; norm3: LayerNorm;
  ffIn: Linear; ffOut: Linear;
  constructor(p: ParamStore, name: string, dim: number, heads: number, headDim: number, crossDim: number) {
    const names: [string, string, string, string] = ['to_q', 'to_k', 'to_v', 'to_out.0'];
    this.norm1 = new LayerNorm(p, `${name}.norm1`, dim);
    this.attn1 = new MultiHeadAttention(p, `${name}.attn1`, dim, dim, heads, headDim, names, false);
    this.norm2 = new LayerNorm(p, `${name}.norm2`, dim);
    this.attn2 = new MultiHeadAttention(p, `${name}.attn2`, dim, crossDim, heads, headDim, names, false);
    this.norm3 = new LayerNorm(p, `${name}.norm3`, dim);
    this.ffIn = new Linear(p, `${name}.ff.net.0.proj`, dim, dim * 8);
    this.ffOut = new Linear(p, `${name}.ff.net.2`, dim * 4, dim);
  }
  /** x [B, L, C]; x is consumed: at inference its storage may hold the residual sums (Transformer2D gives it
   * nothing it reads again). */
  forward(x: Tensor, ctx: Tensor): Tensor {
    return tidy(() => {
      // h = x + attn1(norm1 x); h += attn2(norm2 h, ctx); h += ff(norm3 h), each residual add folded into the
      // output projection's GEMM where the layers allow it (forwardAccumulate).
      let h = this.attn1.forward(this.norm1.forward(x), null, false, x);
      h = this.attn2.forward(this.norm2.forward(h), ctx, false, h);
      return this.ffOut.forwardAccumulate(this.ffIn.forwardGeglu(this.norm3.forward(h)), h);
    });
  }
}

class Transformer2D {
  norm: GroupNorm; projIn: Linear | Conv2d; projOut: Linear | Conv2d; blocks: TransformerBlock[];
  constructor(p: ParamStore, name: string, ch: number, heads: number, depth: number, crossDim: number, linearProj: boolean, groups: number) {
    const headDim = ch / heads;
    if (!Number.isInteger(headDim)) throw new Error(`${name}: ${ch} channels do not split into ${heads} heads`);
    this.norm = new GroupNorm(p, `${name}.norm`, groups, ch, 1e-6);
    this.projIn = linearProj ? new Linear(p, `${name}.proj_in`, ch, ch) : new Conv2d(p, `${name}.proj_in`, ch, ch, 1);
    this.blocks = [];
    for (let i = 0; i < depth; i++) this.blocks.push(new TransformerBlock(p, `${name}.transformer_blocks.${i}`, ch, heads, headDim, crossDim));
    this.projOut = linearProj ? new Linear(p, `${name}.proj_out`, ch, ch) : new Conv2d(p, `${name}.proj_out`, ch, ch, 1);
  }
  /** x NHWC, consumed (its storage may hold the output at inference). */
  forward(x: Tensor, ctx: Tensor): Tensor {
    return tidy(() => {
      const [n, hh, ww, c] = x.shape;
      // NHWC makes proj_in/out (1x1 conv or linear) and the blocks act on [N, H*W, C] with no transposes.
      let h = this.projIn.forward(this.norm.forward(x));
      h = h.reshape([n, hh * ww, c]);
      for (const b of this.blocks) h = b.forward(h, ctx);
      // x + proj_out(h): x (a resnet's output) is not read again by the UNet, so its storage may take the sum.
      return this.projOut.forwardAccumulate(h.reshape([n, hh, ww, c]), x);
    });
  }
}

interface Block {
  resnets: Resnet[]; attentions: Transformer2D[]; down?: Conv2d; up?: Conv2d;
}

export interface UNetInputs {
  sample: Tensor;            // NCHW [B, C, H, W]
  timesteps: Tensor | number | number[]; // [B] or one value for all
  encoderHiddenStates: Tensor; // [B, L, cross_attention_dim]
  textEmbeds?: Tensor;       // SDXL pooled [B, P]
  timeIds?: Tensor;          // SDXL [B, 6]
}

export class UNet2DConditionModel {
  readonly params = new ParamStore('unet');
  private convIn: Conv2d; private convOut: Conv2d; private normOut: GroupNorm;
  private time1: Linear; private time2: Linear; private add1?: Linear; private add2?: Linear;
  private downs: Block[] = []; private mid: { resnets: Resnet[]; attentions: Transformer2D[] }; private ups: Block[] = [];
  readonly isSDXL: boolean;
  /** Training: recompute each resnet and transformer block's forward during backward (saves activation memory). */
  gradientCheckpointing = false;
  /** The activations' dtype (layers.ts activationDtype: 'auto' is the weights' half dtype on a GPU, f32 on the
   * CPU). The output keeps the sample's dtype. */
  computeDtype: DType | 'auto' = 'auto';

  constructor(readonly config: UNetConfig) {
    const c = config, p = this.params;
    const boc = c.block_out_channels, nb = boc.length;
    const groups = c.norm_num_groups ?? 32, eps = c.norm_eps ?? 1e-5;
    if (c.time_embedding_type && c.time_embedding_type !== 'positional') throw new Error(`unet config: time_embedding_type ${c.time_embedding_type} is not supported`);
    if (c.class_embed_type) throw new Error(`unet config: class_embed_type ${c.class_embed_type} is not supported`);
    if (c.resnet_time_scale_shift && c.resnet_time_scale_shift !== 'default') throw new Error(`unet config: resnet_time_scale_shift ${c.resnet_time_scale_shift} is not supported`);
    // (an unsupported activation had been run as SiLU, and "4" for 4 had failed later as "expected [32,4,3,3], got
    // [32,4,3,3]")
    if (c.act_fn !== undefined && c.act_fn !== null && c.act_fn !== 'silu' && c.act_fn !== 'swish')
      throw new Error(`unet config: act_fn ${JSON.stringify(c.act_fn)} is not supported (silu)`);
    // Fields that change the computation but not the weights' shapes: anything but diffusers' default had been
    // ignored, computing another network (found by probing)
    const cfg = c as unknown as Record<string, unknown>;
    for (const k of ['center_input_sample', 'resnet_skip_time_act', 'resnet_out_scale_factor', 'mid_block_scale_factor',
      'downsample_padding', 'timestep_post_act', 'time_embedding_act_fn', 'dual_cross_attention', 'only_cross_attention',
      'attention_type', 'cross_attention_norm', 'class_embeddings_concat', 'mid_block_only_cross_attention', 'encoder_hid_dim',
      'encoder_hid_dim_type']) {
      const v = cfg[k], def = UNET_DEFAULTS[k];
      if (v === undefined || v === def || (Array.isArray(v) && v.every((x) => x === def))) continue;  // (per-block lists)
      throw new Error(`unet config: ${k} ${JSON.stringify(v)} is not supported (only diffusers' default, ${JSON.stringify(def)})`);
    }
    checkConfigIntegers('unet config', c as unknown as Record<string, unknown>,
      ['in_channels', 'out_channels', 'block_out_channels', 'layers_per_block', 'norm_num_groups', 'cross_attention_dim',
        'attention_head_dim', 'num_attention_heads', 'transformer_layers_per_block', 'projection_class_embeddings_input_dim', 'addition_time_embed_dim']);
    // diffusers: num_attention_heads defaults to attention_head_dim (which SD configs use to mean heads).
    const heads = perBlock((c.num_attention_heads ?? c.attention_head_dim) as number | number[], nb);
    const layers = perBlock(c.layers_per_block, nb);
    const depth = perBlock(c.transformer_layers_per_block ?? 1, nb);
    const cross = perBlock(c.cross_attention_dim, nb);
    const linearProj = !!c.use_linear_projection;
    const temb = boc[0] * 4;
    this.convIn = new Conv2d(p, 'conv_in', c.in_channels, boc[0], 3, 1, 1);
    this.time1 = new Linear(p, 'time_embedding.linear_1', boc[0], temb);
    this.time2 = new Linear(p, 'time_embedding.linear_2', temb, temb);
    this.isSDXL = c.addition_embed_type === 'text_time';
    if (c.addition_embed_type && !this.isSDXL) throw new Error(`unet config: addition_embed_type ${c.addition_embed_type} is not supported`);
    if (this.isSDXL) {
      this.add1 = new Linear(p, 'add_embedding.linear_1', c.projection_class_embeddings_input_dim!, temb);
      this.add2 = new Linear(p, 'add_embedding.linear_2', temb, temb);
    }
    let outC = boc[0];
    c.down_block_types.forEach((type, i) => {
      const inC = outC;
      outC = boc[i];
      const name = `down_blocks.${i}`;
      const hasAttn = type === 'CrossAttnDownBlock2D';
      if (!hasAttn && type !== 'DownBlock2D') throw new Error(`unet config: down block type ${type} is not supported`);
      const b: Block = { resnets: [], attentions: [] };
      for (let j = 0; j < layers[i]; j++) {
        b.resnets.push(new Resnet(p, `${name}.resnets.${j}`, j === 0 ? inC : outC, outC, temb, groups, eps));
        if (hasAttn) b.attentions.push(new Transformer2D(p, `${name}.attentions.${j}`, outC, heads[i], depth[i], cross[i], linearProj, groups));
      }
      if (i < nb - 1) b.down = new Conv2d(p, `${name}.downsamplers.0.conv`, outC, outC, 3, 2, 1);
      this.downs.push(b);
    });
    const midType = c.mid_block_type ?? 'UNetMidBlock2DCrossAttn';
    if (midType !== 'UNetMidBlock2DCrossAttn') throw new Error(`unet config: mid block type ${midType} is not supported`);
    const top = boc[nb - 1];
    this.mid = {
      resnets: [new Resnet(p, 'mid_block.resnets.0', top, top, temb, groups, eps), new Resnet(p, 'mid_block.resnets.1', top, top, temb, groups, eps)],
      attentions: [new Transformer2D(p, 'mid_block.attentions.0', top, heads[nb - 1], depth[nb - 1], cross[nb - 1], linearProj, groups)],
    };
    const rboc = [...boc].reverse(), rheads = [...heads].reverse(), rlayers = [...layers].reverse();
    const rdepth = [...depth].reverse(), rcross = [...cross].reverse();
    outC = rboc[0];
    c.up_block_types.forEach((type, i) => {
      const prevOut = outC;
      outC = rboc[i];
      const inC = rboc[Math.min(i + 1, nb - 1)];
      const name = `up_blocks.${i}`;
      const hasAttn = type === 'CrossAttnUpBlock2D';
      if (!hasAttn && type !== 'UpBlock2D') throw new Error(`unet config: up block type ${type} is not supported`);
      const n = rlayers[i] + 1;
      const b: Block = { resnets: [], attentions: [] };
      for (let j = 0; j < n; j++) {
        const skip = j === n - 1 ? inC : outC;
        const rin = j === 0 ? prevOut : outC;
        b.resnets.push(new Resnet(p, `${name}.resnets.${j}`, rin + skip, outC, temb, groups, eps));
        if (hasAttn) b.attentions.push(new Transformer2D(p, `${name}.attentions.${j}`, outC, rheads[i], rdepth[i], rcross[i], linearProj, groups));
      }
      if (i < nb - 1) b.up = new Conv2d(p, `${name}.upsamplers.0.conv`, outC, outC, 3, 1, 1);
      this.ups.push(b);
    });
    this.normOut = new GroupNorm(p, 'conv_norm_out', groups, boc[0], eps);
    this.convOut = new Conv2d(p, 'conv_out', boc[0], c.out_channels, 3, 1, 1);
  }

  load(src: Map<string, WeightSource>, opts?: LoadOptions, label?: string): LoadReport {
    return this.params.load(src, opts, label);
  }
  parameterCount(): number {
    return this.params.parameterCount();
  }

  /** Returns the predicted noise, NCHW like the input sample. */
  forward(inp: UNetInputs): Tensor {
    return tidy(() => {
      const c = this.config;
      const x0 = inp.sample;
      if (x0.rank !== 4 || x0.shape[1] !== c.in_channels || x0.shape[0] < 1 || x0.shape[2] < 1 || x0.shape[3] < 1)
        throw new Error(`unet: sample must be [B, ${c.in_channels}, H, W] with B, H, W >= 1, got [${x0.shape}]`);
      const B = x0.shape[0];
      const ehs0 = inp.encoderHiddenStates;
      const crossDim = Array.isArray(c.cross_attention_dim) ? c.cross_attention_dim[0] : c.cross_attention_dim;
      if (ehs0.rank !== 3 || ehs0.shape[0] !== B || ehs0.shape[2] !== crossDim)
        throw new Error(`unet: encoder_hidden_states must be [${B}, L, ${crossDim}], got [${ehs0.shape}]`);
      const ts = timestepTensor(inp.timesteps, B, x0.device);
      // time embedding
      const tproj = ops.timestepEmbedding(ts, c.block_out_channels[0], { flipSinToCos: c.flip_sin_to_cos ?? true, freqShift: c.freq_shift ?? 0 });
      let emb = this.time2.forward(this.time1.forward(tproj, 'silu'));
      if (this.isSDXL) {
        const { textEmbeds, timeIds } = inp;
        const P = (c.projection_class_embeddings_input_dim ?? 0) - 6 * (c.addition_time_embed_dim ?? 0);
        if (!textEmbeds || textEmbeds.rank !== 2 || textEmbeds.shape[0] !== B || textEmbeds.shape[1] !== P)
          throw new Error(`unet: SDXL needs text_embeds [${B}, ${P}], got ${textEmbeds ? `[${textEmbeds.shape}]` : 'none'}`);
        if (!timeIds || timeIds.rank !== 2 || timeIds.shape[0] !== B || timeIds.shape[1] !== 6)
          throw new Error(`unet: SDXL needs time_ids [${B}, 6], got ${timeIds ? `[${timeIds.shape}]` : 'none'}`);
        const d = c.addition_time_embed_dim!;
        const tids = ops.asDtype(timeIds, 'f32');
        const te = ops.timestepEmbedding(tids.reshape([B * 6]), d, { flipSinToCos: c.flip_sin_to_cos ?? true, freqShift: c.freq_shift ?? 0 });
        const addIn = ops.concat([ops.asDtype(textEmbeds, 'f32'), te.reshape([B, 6 * d])], 1);
        emb = ops.add(emb, this.add2!.forward(this.add1!.forward(addIn, 'silu')));
      }
      const cdt = activationDtype(this.computeDtype, this.params.get('conv_in.weight').dtype, x0.device);
      const cast = (t: Tensor) => ops.asDtype(t, cdt);
      const embSilu = cast(ops.silu(emb));
      const ehs = cast(ehs0);
      // down
      let h = this.convIn.forward(toNHWC(cast(x0)));
      const skips: Tensor[] = [h];
      const ck = this.gradientCheckpointing;
      const res = (r: Resnet, x: Tensor) => (ck ? checkpoint((a, e) => r.forward(a, e), [x, embSilu]) : r.forward(x, embSilu));
      const att = (a: Transformer2D, x: Tensor) => (ck ? checkpoint((y, c) => a.forward(y, c), [x, ehs]) : a.forward(x, ehs));
      for (const b of this.downs) {
        b.resnets.forEach((r, j) => {
          h = res(r, h);
          if (b.attentions.length) h = att(b.attentions[j], h);
          skips.push(h);
        });
        if (b.down) {
          h = b.down.forward(h);
          skips.push(h);
        }
      }
      // mid
      h = res(this.mid.resnets[0], h);
      h = att(this.mid.attentions[0], h);
      h = res(this.mid.resnets[1], h);
      // up
      for (const b of this.ups) {
        b.resnets.forEach((r, j) => {
          const s = skips.pop()!;
          h = res(r, ops.concat([h, s], 3));
          if (b.attentions.length) h = att(b.attentions[j], h);
        });
        if (b.up) {
          const target = skips[skips.length - 1];
          h = upsampleTo(h, target.shape[1], target.shape[2]);
          h = b.up.forward(h);
        }
      }
      h = toNCHW(this.convOut.forward(this.normOut.forward(h, true)));
      return ops.asDtype(h, x0.dtype);
    });
  }

  dispose(): void {
    this.params.dispose();
  }
}

/** Nearest upsampling to the skip connection's size: 2x, then cropped when the skip is odd (diffusers' upsample_size). */
export function upsampleTo(h: Tensor, H: number, W: number): Tensor {
  let u = ops.upsampleNearest2x(h);
  if (u.shape[1] !== H) u = ops.slice(u, 1, 0, H);
  if (u.shape[2] !== W) u = ops.slice(u, 2, 0, W);
  return u;
}

export function timestepTensor(t: Tensor | number | number[], B: number, device: Tensor['device']): Tensor {
  if (t instanceof Tensor) {
    const f = ops.asDtype(t, 'f32');
    if (f.size === 1 && B > 1) return ops.add(zeros([B], { device }), f.reshape([1]));
    if (f.size !== B) throw new Error(`unet: timesteps must have ${B} values (one per sample), got [${t.shape}]`);
    return f.reshape([B]);
  }
  const arr = Array.isArray(t) ? t : Array(B).fill(t);
  if (arr.length !== B) throw new Error(`unet: timesteps must have ${B} values, got ${arr.length}`);
  const bad = arr.findIndex((v) => typeof v !== 'number' || !Number.isFinite(v));
  if (bad >= 0) throw new Error(`unet: timestep ${bad} is ${String(arr[bad])}: timesteps must be finite numbers`);
  return tensor(Float32Array.from(arr), [B], { device });
}
