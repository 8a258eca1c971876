// Original (LDM / SGM / OpenCLIP) <-> diffusers parameter names, derived from the model's structure.
//
// Layout: a UNet is described by a UnetLayout (per down/up block: how many resnets, whether it has
// attentions, whether it ends in a down/upsampler), taken from a diffusers config or from the set of
// diffusers module names a model has. From it a NameMap is built: a table of block prefixes
// (`input_blocks.4.1` <-> `down_blocks.1.attentions.0`, `output_blocks.2.2` <-> `up_blocks.0.upsamplers.0`)
// plus the renames inside a block kind (resnet: in_layers.2 <-> conv1, emb_layers.1 <-> time_emb_proj,
// skip_connection <-> conv_shortcut, ...). The VAE works the same way (decoder.up.N is up_blocks.(n-1-N)).
// OpenCLIP text-encoder keys map to transformers CLIP names with a row split (fused in_proj -> q/k/v)
// or a transpose (text_projection), described by the returned transform, not applied here.
// Why: the LDM input_blocks numbering is a running count over resnets, attentions and downsamplers, so it
// changes with layers_per_block and with which blocks have attention; deriving it from the structure
// serves SD1.5, SDXL and the tiny test models (and LoRA files naming LDM modules) with one code path.

import { Config, hasCrossAttn, perBlock, unetConfigWithDefaults } from './configs';

export interface UnetLayout {
  down: { resnets: number; attentions: boolean; downsample: boolean }[];
  mid: { attention: boolean } | null;
  up: { resnets: number; attentions: boolean; upsample: boolean }[];
  addEmbedding: boolean;
}

export function unetLayoutFromConfig(config: Config): UnetLayout {
  const cfg = unetConfigWithDefaults(config);
  const n: number = cfg.block_out_channels.length;
  const lpb = perBlock(cfg.layers_per_block, n, 'layers_per_block');
  return {
    down: cfg.down_block_types.map((t: string, i: number) => ({ resnets: lpb[i], attentions: hasCrossAttn(t), downsample: i < n - 1 })),
    mid: cfg.mid_block_type == null ? null : { attention: cfg.mid_block_type === 'UNetMidBlock2DCrossAttn' },
    up: cfg.up_block_types.map((t: string, i: number) => ({ resnets: lpb[n - 1 - i] + 1, attentions: hasCrossAttn(t), upsample: i < n - 1 })),
    addEmbedding: cfg.addition_embed_type === 'text_time',
  };
}

/** The layout implied by diffusers UNet names (module paths or parameter names). */
export function unetLayoutFromModules(names: Iterable<string>): UnetLayout {
  const blocks = { down: new Map<number, { resnets: number; attentions: boolean; sampler: boolean }>(),
    up: new Map<number, { resnets: number; attentions: boolean; sampler: boolean }>() };
  let hasMid = false, midAttention = false, addEmbedding = false;
  for (const name of names) {
    if (name.startsWith('add_embedding.')) addEmbedding = true;
    if (name.startsWith('mid_block.')) hasMid = true;
    if (name.startsWith('mid_block.attentions.')) midAttention = true;
    const m = /^(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\./.exec(name);
    if (!m) continue;
    const map = blocks[m[1] as 'down' | 'up'];
    const i = Number(m[2]);
    const b = map.get(i) ?? { resnets: 0, attentions: false, sampler: false };
    if (m[3] === 'resnets') b.resnets = Math.max(b.resnets, Number(m[4]) + 1);
    else if (m[3] === 'attentions') b.attentions = true;
    else b.sampler = true;
    map.set(i, b);
  }
  const list = (map: Map<number, { resnets: number; attentions: boolean; sampler: boolean }>) => {
    const out = [];
    for (let i = 0; i < map.size; i++) {
      const b = map.get(i);
      if (!b) throw new Error(`UNet module names skip block ${i}`);
      out.push(b);
    }
    return out;
  };
  return {
    down: list(blocks.down).map((b) => ({ resnets: b.resnets, attentions: b.attentions, downsample: b.sampler })),
    mid: hasMid ? { attention: midAttention } : null,
    up: list(blocks.up).map((b) => ({ resnets: b.resnets, attentions: b.attentions, upsample: b.sampler })),
    addEmbedding,
  };
}

type BlockKind = 'plain' | 'resnet' | 'attention' | 'vae_resnet' | 'vae_attention';

const RESNET: [string, string][] = [
  ['in_layers.0', 'norm1'], ['in_layers.2', 'conv1'], ['emb_layers.1', 'time_emb_proj'],
  ['out_layers.0', 'norm2'], ['out_layers.3', 'conv2'], ['skip_connection', 'conv_shortcut'],
];
const VAE_RESNET: [string, string][] = [
  ['norm1', 'norm1'], ['conv1', 'conv1'], ['norm2', 'norm2'], ['conv2', 'conv2'], ['nin_shortcut', 'conv_shortcut'],
];
const VAE_ATTENTION: [string, string][] = [
  ['norm', 'group_norm'], ['q', 'to_q'], ['k', 'to_k'], ['v', 'to_v'], ['proj_out', 'to_out.0'],
];
const LOCAL: Record<BlockKind, [string, string][] | null> = {
  plain: null, attention: null, resnet: RESNET, vae_resnet: VAE_RESNET, vae_attention: VAE_ATTENTION,
};

/**
 * Two-way name map between original and diffusers names. Works on module paths and on parameter names
 * (`input_blocks.1.0.in_layers.2.weight` <-> `down_blocks.0.resnets.0.conv1.weight`).
 */
export class NameMap {
  private readonly toD = new Map<string, { to: string; kind: BlockKind }>();
  private readonly toO = new Map<string, { to: string; kind: BlockKind }>();

  add(original: string, diffusers: string, kind: BlockKind): void {
    this.toD.set(original, { to: diffusers, kind });
    this.toO.set(diffusers, { to: original, kind });
  }

  /** Original name -> diffusers name, or null when no block prefix or local name matches. */
  toDiffusers(name: string): string | null {
    return translate(name, this.toD, 0);
  }

  /** Diffusers name -> original name, or null. */
  toOriginal(name: string): string | null {
    return translate(name, this.toO, 1);
  }

  /** Block prefixes, original -> diffusers. */
  entries(): [string, string][] {
    return [...this.toD].map(([o, { to }]) => [o, to]);
  }
}

function translate(name: string, table: Map<string, { to: string; kind: BlockKind }>, side: 0 | 1): string | null {
  const parts = name.split('.');
  for (let l = Math.min(parts.length, 6); l >= 1; l--) {
    const hit = table.get(parts.slice(0, l).join('.'));
    if (!hit) continue;
    const rest = parts.slice(l);
    const local = LOCAL[hit.kind];
    if (!local) return [hit.to, ...rest].join('.');
    const restName = rest.join('.');
    for (const pair of local) {
      const from = pair[side], to = pair[1 - side];
      if (restName === from || restName.startsWith(`${from}.`)) return `${hit.to}.${to}${restName.slice(from.length)}`;
    }
    return null;
  }
  return null;
}

/** LDM/SGM UNet (`model.diffusion_model.` stripped) <-> diffusers UNet2DConditionModel names. */
export function unetNameMap(layout: UnetLayout): NameMap {
  const m = new NameMap();
  m.add('time_embed.0', 'time_embedding.linear_1', 'plain');
  m.add('time_embed.2', 'time_embedding.linear_2', 'plain');
  if (layout.addEmbedding) {
    m.add('label_emb.0.0', 'add_embedding.linear_1', 'plain');
    m.add('label_emb.0.2', 'add_embedding.linear_2', 'plain');
  }
  m.add('input_blocks.0.0', 'conv_in', 'plain');
  let idx = 1;
  layout.down.forEach((b, i) => {
    for (let j = 0; j < b.resnets; j++, idx++) {
      m.add(`input_blocks.${idx}.0`, `down_blocks.${i}.resnets.${j}`, 'resnet');
      if (b.attentions) m.add(`input_blocks.${idx}.1`, `down_blocks.${i}.attentions.${j}`, 'attention');
    }
    if (b.downsample) m.add(`input_blocks.${idx++}.0.op`, `down_blocks.${i}.downsamplers.0.conv`, 'plain');
  });
  if (layout.mid) {
    m.add('middle_block.0', 'mid_block.resnets.0', 'resnet');
    if (layout.mid.attention) m.add('middle_block.1', 'mid_block.attentions.0', 'attention');
    m.add(`middle_block.${layout.mid.attention ? 2 : 1}`, 'mid_block.resnets.1', 'resnet');
  }
  idx = 0;
  layout.up.forEach((b, i) => {
    for (let j = 0; j < b.resnets; j++, idx++) {
      m.add(`output_blocks.${idx}.0`, `up_blocks.${i}.resnets.${j}`, 'resnet');
      if (b.attentions) m.add(`output_blocks.${idx}.1`, `up_blocks.${i}.attentions.${j}`, 'attention');
      // the upsampler sits in the block's last output_blocks entry, after the resnet (and attention)
      if (b.upsample && j === b.resnets - 1) m.add(`output_blocks.${idx}.${b.attentions ? 2 : 1}.conv`, `up_blocks.${i}.upsamplers.0.conv`, 'plain');
    }
  });
  m.add('out.0', 'conv_norm_out', 'plain');
  m.add('out.2', 'conv_out', 'plain');
  return m;
}

/** LDM VAE (`first_stage_model.` stripped) <-> diffusers AutoencoderKL names. */
export function vaeNameMap(config: Config): NameMap {
  const n: number = (config.block_out_channels ?? [128, 256, 512, 512]).length;
  const lpb: number = config.layers_per_block ?? 2;
  const m = new NameMap();
  for (const part of ['encoder', 'decoder']) {
    m.add(`${part}.conv_in`, `${part}.conv_in`, 'plain');
    m.add(`${part}.conv_out`, `${part}.conv_out`, 'plain');
    m.add(`${part}.norm_out`, `${part}.conv_norm_out`, 'plain');
    m.add(`${part}.mid.block_1`, `${part}.mid_block.resnets.0`, 'vae_resnet');
    m.add(`${part}.mid.attn_1`, `${part}.mid_block.attentions.0`, 'vae_attention');
    m.add(`${part}.mid.block_2`, `${part}.mid_block.resnets.1`, 'vae_resnet');
  }
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < lpb; j++) m.add(`encoder.down.${i}.block.${j}`, `encoder.down_blocks.${i}.resnets.${j}`, 'vae_resnet');
    if (i < n - 1) m.add(`encoder.down.${i}.downsample.conv`, `encoder.down_blocks.${i}.downsamplers.0.conv`, 'plain');
    const u = n - 1 - i; // the LDM decoder numbers its levels from the lowest resolution up
    for (let j = 0; j < lpb + 1; j++) m.add(`decoder.up.${u}.block.${j}`, `decoder.up_blocks.${i}.resnets.${j}`, 'vae_resnet');
    if (i < n - 1) m.add(`decoder.up.${u}.upsample.conv`, `decoder.up_blocks.${i}.upsamplers.0.conv`, 'plain');
  }
  m.add('quant_conv', 'quant_conv', 'plain');
  m.add('post_quant_conv', 'post_quant_conv', 'plain');
  return m;
}

/** How one diffusers tensor is obtained from an original one. */
export type Transform =
  | { kind: 'none' }
  | { kind: 'squeeze' } // [C, C, 1, 1] -> [C, C]
  | { kind: 'rows'; part: number; parts: number } // rows [part*R/parts, (part+1)*R/parts)
  | { kind: 'transpose' }; // 2-D transpose

/** Old diffusers VAE attention names (before 0.14), still found in some diffusers-layout VAE files. */
export function legacyVaeAttentionName(name: string): string {
  return name.replace(/(mid_block\.attentions\.0\.)(query|key|value|proj_attn)\./, (_, p: string, n: string) =>
    `${p}${{ query: 'to_q', key: 'to_k', value: 'to_v', proj_attn: 'to_out.0' }[n]}.`);
}

/**
 * OpenCLIP text tower (`...model.` stripped) -> transformers CLIPTextModelWithProjection names.
 * Returns [] for keys that carry no weight of the diffusers model (logit_scale, attn_mask), null for
 * keys not recognised.
 */
export function openClipToDiffusers(key: string): { name: string; transform: Transform }[] | null {
  const none: Transform = { kind: 'none' };
  const simple: Record<string, string> = {
    'token_embedding.weight': 'text_model.embeddings.token_embedding.weight',
    'positional_embedding': 'text_model.embeddings.position_embedding.weight',
    'ln_final.weight': 'text_model.final_layer_norm.weight',
    'ln_final.bias': 'text_model.final_layer_norm.bias',
  };
  if (simple[key]) return [{ name: simple[key], transform: none }];
  if (key === 'text_projection') return [{ name: 'text_projection.weight', transform: { kind: 'transpose' } }];
  if (key === 'text_projection.weight') return [{ name: 'text_projection.weight', transform: none }]; // already nn.Linear
  if (key === 'logit_scale' || key === 'attn_mask') return [];
  const m = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(key);
  if (!m) return null;
  const p = `text_model.encoder.layers.${m[1]}`;
  const fused = /^attn\.in_proj_(weight|bias)$/.exec(m[2]);
  if (fused) {
    return ['q_proj', 'k_proj', 'v_proj'].map((q, part) =>
      ({ name: `${p}.self_attn.${q}.${fused[1]}`, transform: { kind: 'rows', part, parts: 3 } }));
  }
  const local: Record<string, string> = {
    'ln_1': 'layer_norm1', 'ln_2': 'layer_norm2', 'attn.out_proj': 'self_attn.out_proj', 'mlp.c_fc': 'mlp.fc1',
    'mlp.c_proj': 'mlp.fc2',
  };
  const lm = /^(.+)\.(weight|bias)$/.exec(m[2]);
  if (!lm || !local[lm[1]]) return null;
  return [{ name: `${p}.${local[lm[1]]}.${lm[2]}`, transform: none }];
}
