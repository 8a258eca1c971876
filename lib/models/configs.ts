// Built-in configs of the real models, and the parameter names and shapes a config implies.
//
// Layout: BUILTIN_CONFIGS.sd15 / .sdxl hold the diffusers config.json values of runwayml/stable-diffusion-v1-5
// and stabilityai/stable-diffusion-xl-base-1.0 (unet, vae, text_encoder(s), scheduler, model_index), with
// the fields those old files omit filled in with diffusers' defaults, so code reading a config never has
// to guess. `paramShapes(component, config)` lists every parameter (diffusers / transformers state-dict
// name -> shape) that a UNet2DConditionModel, AutoencoderKL or CLIPTextModel(WithProjection) built from
// that config owns.
// Why: single-file checkpoints carry no config, so the real one is the default; and the shape list is
// what a loader checks a file against (checkWeights) and what the LDM name conversion is tested against.
// Note: the real CLIP configs say eos_token_id 2 (a transformers-era quirk); the pooled token is the
// first <|endoftext|> (49407), which is also argmax(input_ids) for CLIP tokenizations.

export type ComponentName = 'unet' | 'vae' | 'text_encoder' | 'text_encoder_2';

/* eslint-disable @typescript-eslint/no-explicit-any */
export type Config = Record<string, any>;

export interface ModelConfigs {
  unet: Config;
  vae: Config;
  text_encoder: Config;
  text_encoder_2?: Config;
  scheduler: Config;
  model_index: Config;
}

/** diffusers' UNet2DConditionModel defaults (unetConfigWithDefaults; unet.ts refuses other values of the fields that
 * change the computation but not the weights) */
export const UNET_DEFAULTS: Readonly<Config> = {
  _class_name: 'UNet2DConditionModel',
  act_fn: 'silu',
  addition_embed_type: null,
  addition_embed_type_num_heads: 64,
  addition_time_embed_dim: null,
  attention_type: 'default',
  center_input_sample: false,
  class_embed_type: null,
  class_embeddings_concat: false,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  cross_attention_norm: null,
  downsample_padding: 1,
  dropout: 0.0,
  dual_cross_attention: false,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_only_cross_attention: null,
  mid_block_scale_factor: 1,
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  norm_eps: 1e-5,
  norm_num_groups: 32,
  num_attention_heads: null,
  num_class_embeds: null,
  only_cross_attention: false,
  out_channels: 4,
  projection_class_embeddings_input_dim: null,
  resnet_out_scale_factor: 1.0,
  resnet_skip_time_act: false,
  resnet_time_scale_shift: 'default',
  reverse_transformer_layers_per_block: null,
  time_cond_proj_dim: null,
  time_embedding_act_fn: null,
  time_embedding_dim: null,
  time_embedding_type: 'positional',
  timestep_post_act: null,
  transformer_layers_per_block: 1,
  upcast_attention: false,
  use_linear_projection: false,
};

const VAE_DEFAULTS: Config = {
  _class_name: 'AutoencoderKL',
  act_fn: 'silu',
  block_out_channels: [128, 256, 512, 512],
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
  force_upcast: true,
  in_channels: 3,
  out_channels: 3,
  latent_channels: 4,
  latents_mean: null,
  latents_std: null,
  layers_per_block: 2,
  norm_num_groups: 32,
};

const CLIP_L: Config = {
  architectures: ['CLIPTextModel'],
  attention_dropout: 0.0,
  bos_token_id: 0,
  dropout: 0.0,
  eos_token_id: 2,
  hidden_act: 'quick_gelu',
  hidden_size: 768,
  initializer_factor: 1.0,
  initializer_range: 0.02,
  intermediate_size: 3072,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  model_type: 'clip_text_model',
  num_attention_heads: 12,
  num_hidden_layers: 12,
  pad_token_id: 1,
  projection_dim: 768,
  vocab_size: 49408,
};

const SCALED_LINEAR = { beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', num_train_timesteps: 1000,
  trained_betas: null };

const SD15: ModelConfigs = {
  unet: {
    ...UNET_DEFAULTS,
    attention_head_dim: 8,
    block_out_channels: [320, 640, 1280, 1280],
    cross_attention_dim: 768,
    down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    sample_size: 64,
  },
  vae: { ...VAE_DEFAULTS, sample_size: 512, scaling_factor: 0.18215 },
  text_encoder: { ...CLIP_L },
  scheduler: {
    _class_name: 'PNDMScheduler', ...SCALED_LINEAR, clip_sample: false, set_alpha_to_one: false, skip_prk_steps: true,
    steps_offset: 1, prediction_type: 'epsilon', timestep_spacing: 'leading',
  },
  model_index: {
    _class_name: 'StableDiffusionPipeline',
    feature_extractor: ['transformers', 'CLIPImageProcessor'],
    requires_safety_checker: true,
    safety_checker: ['stable_diffusion', 'StableDiffusionSafetyChecker'],
    scheduler: ['diffusers', 'PNDMScheduler'],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  },
};

const SDXL: ModelConfigs = {
  unet: {
    ...UNET_DEFAULTS,
    addition_embed_type: 'text_time',
    addition_time_embed_dim: 256,
    attention_head_dim: [5, 10, 20],
    block_out_channels: [320, 640, 1280],
    cross_attention_dim: 2048,
    down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
    up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
    projection_class_embeddings_input_dim: 2816,
    sample_size: 128,
    transformer_layers_per_block: [1, 2, 10],
    upcast_attention: null,
    use_linear_projection: true,
  },
  vae: { ...VAE_DEFAULTS, sample_size: 1024, scaling_factor: 0.13025 },
  text_encoder: { ...CLIP_L },
  text_encoder_2: {
    ...CLIP_L,
    architectures: ['CLIPTextModelWithProjection'],
    hidden_act: 'gelu',
    hidden_size: 1280,
    intermediate_size: 5120,
    num_attention_heads: 20,
    num_hidden_layers: 32,
    projection_dim: 1280,
  },
  scheduler: {
    _class_name: 'EulerDiscreteScheduler', ...SCALED_LINEAR, clip_sample: false, interpolation_type: 'linear',
    prediction_type: 'epsilon', sample_max_value: 1.0, set_alpha_to_one: false, skip_prk_steps: true, steps_offset: 1,
    timestep_spacing: 'leading', use_karras_sigmas: false,
  },
  model_index: {
    _class_name: 'StableDiffusionXLPipeline',
    force_zeros_for_empty_prompt: true,
    scheduler: ['diffusers', 'EulerDiscreteScheduler'],
    text_encoder: ['transformers', 'CLIPTextModel'],
    text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    tokenizer_2: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  },
};

/** Fresh deep copies, so callers may edit them. */
export function builtinConfigs(kind: 'sd15' | 'sdxl'): ModelConfigs {
  return structuredClone(kind === 'sd15' ? SD15 : SDXL);
}

/** A UNet config with diffusers' defaults filled in for absent fields. */
export function unetConfigWithDefaults(cfg: Config): Config {
  return { ...UNET_DEFAULTS, cross_attention_dim: 1280, ...withoutUndefined(cfg) };
}

export function vaeConfigWithDefaults(cfg: Config): Config {
  return { ...VAE_DEFAULTS, scaling_factor: 0.18215, sample_size: 32, ...withoutUndefined(cfg) };
}

function withoutUndefined(cfg: Config): Config {
  return Object.fromEntries(Object.entries(cfg).filter(([, v]) => v !== undefined));
}

/** Per-block value of a config field that is either one number or a list with one entry per block. */
export function perBlock(v: number | number[], n: number, field: string): number[] {
  if (Array.isArray(v)) {
    if (v.length !== n) throw new Error(`config field ${field} has ${v.length} entries, expected ${n} (one per block)`);
    return v;
  }
  return new Array<number>(n).fill(v);
}

export const hasCrossAttn = (blockType: string): boolean => blockType.includes('CrossAttn');

/** Every parameter of the component built from `config`: state-dict name -> shape. */
export function paramShapes(component: ComponentName, config: Config): Map<string, number[]> {
  switch (component) {
    case 'unet': return unetShapes(unetConfigWithDefaults(config));
    case 'vae': return vaeShapes(vaeConfigWithDefaults(config));
    case 'text_encoder':
    case 'text_encoder_2': return clipTextShapes(config);
  }
}

type Shapes = Map<string, number[]>;

function linear(s: Shapes, name: string, out: number, inp: number, bias = true): void {
  s.set(`${name}.weight`, [out, inp]);
  if (bias) s.set(`${name}.bias`, [out]);
}

function conv(s: Shapes, name: string, out: number, inp: number, k: number): void {
  s.set(`${name}.weight`, [out, inp, k, k]);
  s.set(`${name}.bias`, [out]);
}

function norm(s: Shapes, name: string, c: number): void {
  s.set(`${name}.weight`, [c]);
  s.set(`${name}.bias`, [c]);
}

function resnet(s: Shapes, name: string, inp: number, out: number, temb: number | null, timeOut = out): void {
  norm(s, `${name}.norm1`, inp);
  conv(s, `${name}.conv1`, out, inp, 3);
  if (temb !== null) linear(s, `${name}.time_emb_proj`, timeOut, temb);
  norm(s, `${name}.norm2`, out);
  conv(s, `${name}.conv2`, out, out, 3);
  if (inp !== out) conv(s, `${name}.conv_shortcut`, out, inp, 1);
}

function transformer2d(s: Shapes, name: string, c: number, layers: number, crossDim: number, linearProj: boolean): void {
  norm(s, `${name}.norm`, c);
  const proj = (n: string, out: number, inp: number) => (linearProj ? linear(s, n, out, inp) : conv(s, n, out, inp, 1));
  proj(`${name}.proj_in`, c, c);
  for (let d = 0; d < layers; d++) {
    const b = `${name}.transformer_blocks.${d}`;
    norm(s, `${b}.norm1`, c);
    for (const qkv of ['to_q', 'to_k', 'to_v']) linear(s, `${b}.attn1.${qkv}`, c, c, false);
    linear(s, `${b}.attn1.to_out.0`, c, c);
    norm(s, `${b}.norm2`, c);
    linear(s, `${b}.attn2.to_q`, c, c, false);
    linear(s, `${b}.attn2.to_k`, c, crossDim, false);
    linear(s, `${b}.attn2.to_v`, c, crossDim, false);
    linear(s, `${b}.attn2.to_out.0`, c, c);
    norm(s, `${b}.norm3`, c);
    linear(s, `${b}.ff.net.0.proj`, 8 * c, c);
    linear(s, `${b}.ff.net.2`, c, 4 * c);
  }
  proj(`${name}.proj_out`, c, c);
}

function unetShapes(cfg: Config): Shapes {
  const s: Shapes = new Map();
  const boc: number[] = cfg.block_out_channels;
  const n = boc.length;
  const lpb = perBlock(cfg.layers_per_block, n, 'layers_per_block');
  // transformer depth per block, or per block and layer (nested lists, as diffusers allows)
  const tl = cfg.transformer_layers_per_block;
  const tlpb: (number | number[])[] = Array.isArray(tl) ? tl : new Array(n).fill(tl);
  if (tlpb.length !== n) throw new Error(`config field transformer_layers_per_block has ${tlpb.length} entries, expected ${n}`);
  const revTlpb: (number | number[])[] = cfg.reverse_transformer_layers_per_block ?? [...tlpb].reverse();
  const depth = (v: number | number[], j: number): number => (Array.isArray(v) ? v[j] : v);
  const cross: number = cfg.cross_attention_dim;
  const lin: boolean = cfg.use_linear_projection;
  const k: number = cfg.conv_in_kernel;
  const temb: number = cfg.time_embedding_dim ?? boc[0] * 4;
  const timeOut = (c: number) => (cfg.resnet_time_scale_shift === 'scale_shift' ? 2 * c : c);
  if (cfg.time_embedding_type !== 'positional') throw new Error(`unet config: time_embedding_type ${cfg.time_embedding_type} is not supported`);
  if (cfg.class_embed_type !== null || cfg.num_class_embeds !== null) throw new Error('unet config: class embeddings are not supported');

  conv(s, 'conv_in', boc[0], cfg.in_channels, k);
  linear(s, 'time_embedding.linear_1', temb, boc[0]);
  linear(s, 'time_embedding.linear_2', temb, temb);
  if (cfg.time_cond_proj_dim != null) s.set('time_embedding.cond_proj.weight', [boc[0], cfg.time_cond_proj_dim]);
  if (cfg.addition_embed_type === 'text_time') {
    linear(s, 'add_embedding.linear_1', temb, cfg.projection_class_embeddings_input_dim);
    linear(s, 'add_embedding.linear_2', temb, temb);
  } else if (cfg.addition_embed_type != null) {
    throw new Error(`unet config: addition_embed_type ${cfg.addition_embed_type} is not supported`);
  }

  let out = boc[0];
  cfg.down_block_types.forEach((type: string, i: number) => {
    const inp = out;
    out = boc[i];
    for (let j = 0; j < lpb[i]; j++) {
      resnet(s, `down_blocks.${i}.resnets.${j}`, j === 0 ? inp : out, out, temb, timeOut(out));
      if (hasCrossAttn(type)) transformer2d(s, `down_blocks.${i}.attentions.${j}`, out, depth(tlpb[i], j), cross, lin);
    }
    if (i < n - 1) conv(s, `down_blocks.${i}.downsamplers.0.conv`, out, out, 3);
  });

  const c = boc[n - 1];
  if (cfg.mid_block_type === 'UNetMidBlock2DCrossAttn') {
    resnet(s, 'mid_block.resnets.0', c, c, temb, timeOut(c));
    transformer2d(s, 'mid_block.attentions.0', c, depth(tlpb[n - 1], 0), cross, lin);
    resnet(s, 'mid_block.resnets.1', c, c, temb, timeOut(c));
  } else if (cfg.mid_block_type != null) {
    throw new Error(`unet config: mid_block_type ${cfg.mid_block_type} is not supported`);
  }

  const rev = [...boc].reverse();
  const revLpb = [...lpb].reverse();
  let prev = rev[0];
  cfg.up_block_types.forEach((type: string, i: number) => {
    const o = rev[i];
    const inp = rev[Math.min(i + 1, n - 1)];
    const layers = revLpb[i] + 1;
    for (let j = 0; j < layers; j++) {
      const skip = j === layers - 1 ? inp : o;
      const rin = j === 0 ? prev : o;
      resnet(s, `up_blocks.${i}.resnets.${j}`, rin + skip, o, temb, timeOut(o));
      if (hasCrossAttn(type)) transformer2d(s, `up_blocks.${i}.attentions.${j}`, o, depth(revTlpb[i], j), cross, lin);
    }
    if (i < n - 1) conv(s, `up_blocks.${i}.upsamplers.0.conv`, o, o, 3);
    prev = o;
  });

  norm(s, 'conv_norm_out', boc[0]);
  conv(s, 'conv_out', cfg.out_channels, boc[0], cfg.conv_out_kernel);
  return s;
}

function vaeMid(s: Shapes, name: string, c: number): void {
  resnet(s, `${name}.resnets.0`, c, c, null);
  norm(s, `${name}.attentions.0.group_norm`, c);
  for (const p of ['to_q', 'to_k', 'to_v', 'to_out.0']) linear(s, `${name}.attentions.0.${p}`, c, c);
  resnet(s, `${name}.resnets.1`, c, c, null);
}

function vaeShapes(cfg: Config): Shapes {
  const s: Shapes = new Map();
  const boc: number[] = cfg.block_out_channels;
  const n = boc.length;
  const L: number = cfg.latent_channels;
  const lpb: number = cfg.layers_per_block;
  conv(s, 'encoder.conv_in', boc[0], cfg.in_channels, 3);
  let out = boc[0];
  for (let i = 0; i < n; i++) {
    const inp = out;
    out = boc[i];
    for (let j = 0; j < lpb; j++) resnet(s, `encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? inp : out, out, null);
    if (i < n - 1) conv(s, `encoder.down_blocks.${i}.downsamplers.0.conv`, out, out, 3);
  }
  vaeMid(s, 'encoder.mid_block', boc[n - 1]);
  norm(s, 'encoder.conv_norm_out', boc[n - 1]);
  conv(s, 'encoder.conv_out', 2 * L, boc[n - 1], 3);

  const rev = [...boc].reverse();
  conv(s, 'decoder.conv_in', rev[0], L, 3);
  vaeMid(s, 'decoder.mid_block', rev[0]);
  let prev = rev[0];
  for (let i = 0; i < n; i++) {
    const o = rev[i];
    for (let j = 0; j < lpb + 1; j++) resnet(s, `decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? prev : o, o, null);
    if (i < n - 1) conv(s, `decoder.up_blocks.${i}.upsamplers.0.conv`, o, o, 3);
    prev = o;
  }
  norm(s, 'decoder.conv_norm_out', boc[0]);
  conv(s, 'decoder.conv_out', cfg.out_channels, boc[0], 3);
  conv(s, 'quant_conv', 2 * L, 2 * L, 1);
  conv(s, 'post_quant_conv', L, L, 1);
  return s;
}

/** CLIPTextModel, or CLIPTextModelWithProjection when the architectures field says so. */
function clipTextShapes(cfg: Config): Shapes {
  const s: Shapes = new Map();
  const h: number = cfg.hidden_size;
  const m = 'text_model';
  s.set(`${m}.embeddings.token_embedding.weight`, [cfg.vocab_size, h]);
  s.set(`${m}.embeddings.position_embedding.weight`, [cfg.max_position_embeddings, h]);
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `${m}.encoder.layers.${l}`;
    norm(s, `${p}.layer_norm1`, h);
    for (const q of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) linear(s, `${p}.self_attn.${q}`, h, h);
    norm(s, `${p}.layer_norm2`, h);
    linear(s, `${p}.mlp.fc1`, cfg.intermediate_size, h);
    linear(s, `${p}.mlp.fc2`, h, cfg.intermediate_size);
  }
  norm(s, `${m}.final_layer_norm`, h);
  if ((cfg.architectures ?? []).includes('CLIPTextModelWithProjection')) s.set('text_projection.weight', [cfg.projection_dim, h]);
  return s;
}

/** Each named config field, when present, is a positive integer or an array of them (JSON strings or fractions
 * would otherwise surface later as shape errors that print the same numbers). */
export function checkConfigIntegers(what: string, c: Record<string, unknown>, keys: string[]): void {
  for (const k of keys) {
    const v = c[k];
    if (v === undefined || v === null) continue;
    const ok = (x: unknown) => Number.isInteger(x) && (x as number) > 0;
    if (!(ok(v) || (Array.isArray(v) && v.length > 0 && v.every(ok))))
      throw new Error(`${what}: ${k} must be a positive integer or a list of them, got ${JSON.stringify(v)}`);
  }
}
