// LoRA files (kohya/sd-scripts and peft/diffusers naming) -> modules of the target model, and merged deltas.
//
// Layout of the inputs:
//   kohya   `lora_unet_<module with . -> _>.lora_down.weight` / `.lora_up.weight` / `.alpha` (0-dim), text
//           encoders `lora_te_` (SD1.5) or `lora_te1_` / `lora_te2_` (SDXL). The UNet module is named either
//           with diffusers paths (`lora_unet_down_blocks_1_attentions_0_..._to_q`, format 'kohya') or with
//           original LDM paths (`lora_unet_input_blocks_4_1_..._to_q`, `..._in_layers_2`, format 'kohya-ldm').
//   peft    `unet.<module>.lora_A.weight` (down) / `.lora_B.weight` (up), `text_encoder.` / `text_encoder_2.`;
//           alpha in __metadata__.lora_adapter_metadata (JSON: `unet.lora_alpha`, `unet.r`, patterns), else
//           a `<module>.alpha` tensor, else alpha = rank. Older diffusers spellings (`.lora.down.weight`,
//           `processor.to_q_lora.down.weight`, `lora_linear_layer.down.weight`) are read too, and a bare peft
//           UNet state dict (`down_blocks....lora_A.weight`, optionally under `base_model.model.`).
// Output: one LoraModule per adapted module with lazy down/up tensors, alpha and rank.
// Why: an underscore-joined kohya name cannot be split back into a dotted path by rule (module names contain
// underscores: `to_out_0`, `time_emb_proj`, `transformer_blocks`), so names are resolved by exact lookup in
// a table built from the target model's own module paths (and, for LDM names, their LDM spelling from the
// config-derived name map). Keys that resolve to nothing are returned by name in `unmatched`, not guessed.

import { SafeTensors, checkFloatWeight, numel } from '../io/safetensors';
import { OpenedModel, WeightRef, weightRef } from '../io/model_files';
import { ComponentName, Config } from './configs';
import { NameMap, unetLayoutFromConfig, unetLayoutFromModules, unetNameMap } from './convert_ldm';

export interface LoraModule {
  component: ComponentName;
  /** diffusers module path, e.g. 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q' */
  module: string;
  down: WeightRef;
  up: WeightRef;
  alpha: number;
  rank: number;
  kind: 'linear' | 'conv';
}

export interface LoraTarget {
  /** module paths that have a .weight, per component */
  modules: Partial<Record<ComponentName, Set<string>>>;
  /** the UNet config, used to spell module paths in LDM form; derived from the module names when absent */
  unetConfig?: Config;
}

export interface ParsedLora {
  format: 'kohya' | 'kohya-ldm' | 'peft';
  modules: LoraModule[];
  /** keys that match no module of the target (or miss their down/up partner), by name */
  unmatched: string[];
  metadata: Record<string, string>;
  /** closes the file the down/up WeightRefs read from */
  close(): void;
}

/** The target description of an opened model: every module with a weight, and its UNet config. */
export function loraTargetFromModel(m: OpenedModel): LoraTarget {
  const modules: LoraTarget['modules'] = {};
  for (const [c, map] of Object.entries(m.components) as [ComponentName, Map<string, WeightRef>][]) {
    modules[c] = new Set([...map.keys()].filter((k) => k.endsWith('.weight')).map((k) => k.slice(0, -7)));
  }
  return { modules, unetConfig: m.configs.unet };
}

const KOHYA = /^(lora_unet|lora_te1|lora_te2|lora_te)_(.+)\.(lora_down\.weight|lora_up\.weight|alpha)$/;
const KOHYA_COMPONENT: Record<string, ComponentName> = {
  lora_unet: 'unet', lora_te: 'text_encoder', lora_te1: 'text_encoder', lora_te2: 'text_encoder_2',
};
const PEFT = /^(?:(unet|text_encoder|text_encoder_2)\.)?(.+?)\.(lora_A(?:\.default)?\.weight|lora_B(?:\.default)?\.weight|lora\.down\.weight|lora\.up\.weight|lora_linear_layer\.down\.weight|lora_linear_layer\.up\.weight|alpha)$/;
const PROCESSOR = /^(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/;

type Part = 'down' | 'up' | 'alpha';

interface Pending { component: ComponentName; module: string; keys: Partial<Record<Part, string>>; format: ParsedLora['format'] }

/** Exact lookup table: underscore spelling -> module path (null where two paths share a spelling). */
function underscoreTable(paths: Iterable<[string, string]>): Map<string, string | null> {
  const t = new Map<string, string | null>();
  for (const [spelled, module] of paths) {
    const u = spelled.replace(/\./g, '_');
    const prev = t.get(u);
    t.set(u, prev === undefined || prev === module ? module : null);
  }
  return t;
}

/**
 * Parse a LoRA file against a target model. Tensors stay on disk until read; call close() when done.
 *
 * @example
 * const model = openModel('sdxl-base');
 * const lora = parseLora('Hyper-SDXL-8steps-lora.safetensors', loraTargetFromModel(model));
 * for (const m of lora.modules) addDelta(m.component, m.module, mergedDelta(m, 1.0));
 * lora.close();
 */
export function parseLora(path: string, target: LoraTarget): ParsedLora {
  const st = SafeTensors.open(path);
  try {
    return parse(path, st, target);
  } catch (e) {
    st.close();
    throw e;
  }
}

function parse(path: string, st: SafeTensors, target: LoraTarget): ParsedLora {
  const mods = (c: ComponentName) => target.modules[c] ?? new Set<string>();
  const tables = new Map<ComponentName, Map<string, string | null>>();
  const table = (c: ComponentName) => {
    if (!tables.has(c)) tables.set(c, underscoreTable([...mods(c)].map((m) => [m, m] as [string, string])));
    return tables.get(c)!;
  };
  let ldm: Map<string, string | null> | null = null;
  const ldmTable = () => {
    if (!ldm) {
      const unet = mods('unet');
      const map: NameMap = unetNameMap(target.unetConfig ? unetLayoutFromConfig(target.unetConfig) : unetLayoutFromModules(unet));
      const pairs: [string, string][] = [];
      for (const m of unet) {
        const o = map.toOriginal(m);
        if (o) pairs.push([o, m]);
      }
      ldm = underscoreTable(pairs);
    }
    return ldm;
  };

  const pending = new Map<string, Pending>();
  const unmatched: string[] = [];
  let loraKeys = 0;
  const add = (key: string, component: ComponentName, module: string | null | undefined, part: Part, format: ParsedLora['format']) => {
    if (!module || !mods(component).has(module)) return unmatched.push(key);
    const id = `${component}/${module}`;
    const p = pending.get(id) ?? { component, module, keys: {}, format };
    if (p.keys[part]) throw new Error(`${path}: keys '${p.keys[part]}' and '${key}' both give the ${part} of ${component} module '${module}'`);
    p.keys[part] = key;
    pending.set(id, p);
  };

  for (const key of st.keys()) {
    let m = KOHYA.exec(key);
    if (m) {
      loraKeys++;
      const c = KOHYA_COMPONENT[m[1]];
      const part: Part = m[3] === 'alpha' ? 'alpha' : m[3].startsWith('lora_down') ? 'down' : 'up';
      const direct = table(c).get(m[2]);
      if (direct !== undefined || c !== 'unet') add(key, c, direct, part, 'kohya');
      else add(key, c, ldmTable().get(m[2]), part, 'kohya-ldm');
      continue;
    }
    if ((m = PROCESSOR.exec(key))) {
      loraKeys++;
      const [prefix, proj, dir] = [m[1], m[2], m[3]];
      const dot = prefix.indexOf('.');
      const c = prefix.slice(0, dot) as ComponentName;
      if (!['unet', 'text_encoder', 'text_encoder_2'].includes(c)) unmatched.push(key);
      else add(key, c, `${prefix.slice(dot + 1)}.${proj === 'to_out' ? 'to_out.0' : proj}`, dir as Part, 'peft');
      continue;
    }
    // a bare peft state dict of one UNet has no component prefix (peft's own `base_model.model.` is dropped)
    if ((m = PEFT.exec(key.replace(/^base_model\.model\./, ''))) && (m[1] || m[3] !== 'alpha')) {
      loraKeys++;
      const s = m[3];
      const part: Part = s === 'alpha' ? 'alpha' : /lora_A|down/.test(s) ? 'down' : 'up';
      add(key, (m[1] || 'unet') as ComponentName, m[2], part, 'peft');
      continue;
    }
    unmatched.push(key);
  }
  if (loraKeys === 0) {
    throw new Error(`${path}: no LoRA keys found (expected kohya 'lora_unet_...lora_down.weight' or peft 'unet....lora_A.weight'); first keys: ${st.keys().slice(0, 3).join(', ')}`);
  }

  const peftMeta = parsePeftMetadata(path, st.metadata);
  const modules: LoraModule[] = [];
  const counts = { kohya: 0, 'kohya-ldm': 0, peft: 0 };
  for (const p of pending.values()) {
    const { down: dk, up: uk, alpha: ak } = p.keys;
    if (!dk || !uk) {
      unmatched.push(...[dk, uk, ak].filter((k): k is string => !!k));
      continue;
    }
    counts[p.format]++;
    const down = weightRef(st, dk), up = weightRef(st, uk);
    for (const w of [down, up]) checkFloatWeight(w);
    const rank = down.shape[0];
    if (down.shape.length < 2 || up.shape.length < 2 || up.shape[1] !== rank || numel(up.shape) !== up.shape[0] * rank) {
      throw new Error(`${path}: ${p.component} module '${p.module}': down [${down.shape.join(', ')}] and up [${up.shape.join(', ')}] do not form a rank-${rank} LoRA`);
    }
    let alpha: number;
    if (ak) {
      const a = weightRef(st, ak).readF32();
      if (a.length !== 1 || !Number.isFinite(a[0])) throw new Error(`${path}: alpha '${ak}' is not a finite scalar`);
      alpha = a[0];
    } else if (p.format === 'peft' && peftMeta) {
      alpha = peftAlpha(peftMeta, p.component, p.module, rank);
    } else {
      alpha = rank;
    }
    modules.push({ component: p.component, module: p.module, down, up, alpha, rank, kind: down.shape.length === 4 ? 'conv' : 'linear' });
  }
  const format = (Object.keys(counts) as ParsedLora['format'][]).reduce((a, b) => (counts[b] > counts[a] ? b : a), 'kohya');
  return { format, modules, unmatched, metadata: st.metadata, close: () => st.close() };
}

/** diffusers writes peft's LoraConfig per component into the metadata as JSON with `component.field` keys. */
function parsePeftMetadata(path: string, meta: Record<string, string>): Record<string, unknown> | null {
  const raw = meta.lora_adapter_metadata;
  if (raw === undefined) return null;
  try {
    const j = JSON.parse(raw);
    if (typeof j === 'object' && j !== null) return j;
  } catch { /* reported below */ }
  throw new Error(`${path}: __metadata__.lora_adapter_metadata is not a JSON object`);
}

function peftAlpha(meta: Record<string, unknown>, c: ComponentName, module: string, rank: number): number {
  // peft matches pattern keys against the end of the module path
  const byPattern = (field: string): number | undefined => {
    const pat = meta[`${c}.${field}`];
    if (typeof pat !== 'object' || pat === null) return undefined;
    for (const [k, v] of Object.entries(pat)) if ((module === k || module.endsWith(`.${k}`)) && typeof v === 'number') return v;
    return undefined;
  };
  const base = meta[`${c}.lora_alpha`];
  // (a lora_alpha of another type had silently meant alpha = rank)
  if (base !== undefined && !(typeof base === 'number' && Number.isFinite(base)))
    throw new Error(`__metadata__.lora_adapter_metadata: ${c}.lora_alpha must be a finite number, got ${JSON.stringify(base)}`);
  let alpha = byPattern('alpha_pattern') ?? (typeof base === 'number' ? base : rank);
  if (meta[`${c}.use_rslora`] === true) alpha *= Math.sqrt(rank); // rsLoRA scales by alpha / sqrt(r)
  return alpha;
}

/**
 * scale * (alpha / rank) * (up.flatten(1) @ down.flatten(1)), laid out as the base weight:
 * [out, in] for a linear, [out, in, kh, kw] for a conv (up must be 1x1).
 */
export function mergedDelta(m: LoraModule, scale: number): Float32Array {
  const r = m.rank;
  const out = m.up.shape[0];
  if (numel(m.up.shape) !== out * r) throw new Error(`${m.up.source}: LoRA up of '${m.module}' must be [out, rank] or [out, rank, 1, 1], got [${m.up.shape.join(', ')}]`);
  const up = m.up.readF32(), down = m.down.readF32();
  const K = down.length / r;
  const s = (scale * m.alpha) / r;
  const delta = new Float32Array(out * K);
  for (let o = 0; o < out; o++) {
    const row = o * K;
    for (let j = 0; j < r; j++) {
      const a = s * up[o * r + j];
      if (a === 0) continue;
      const d = j * K;
      for (let k = 0; k < K; k++) delta[row + k] += a * down[d + k];
    }
  }
  return delta;
}
