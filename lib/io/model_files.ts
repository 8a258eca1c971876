// Open a Stable Diffusion model (SD1.5 or SDXL) from the files users have, as lazy weights with diffusers names.
//
// Layouts understood:
//   'diffusers'          a pipeline folder: model_index.json, unet/ vae/ text_encoder/ text_encoder_2/ with
//                        config.json and safetensors weights (single, sharded via *.safetensors.index.json,
//                        or the *.fp16.* variant), tokenizer*/ and scheduler/ folders;
//   'diffusers-prefixed' one file whose keys are diffusers names prefixed by the component (`unet.conv_in.weight`);
//   'single-file'        an original LDM (SD1.5) or SGM (SDXL) checkpoint: model.diffusion_model.*,
//                        first_stage_model.*, cond_stage_model.transformer.* / conditioner.embedders.N.*.
// Every layout yields the same thing: per component a Map from the diffusers / transformers parameter name
// to a WeightRef that reads its tensor from disk on demand (converted to f32, or the raw stored bytes so
// F16/BF16 weights can be uploaded as they are). Original checkpoints are renamed with maps derived from the
// component configs (lib/models/convert_ldm.ts); a fused OpenCLIP in_proj becomes three row-slice reads
// and text_projection a transposed read, so nothing is materialised at open time.
// Why: users download all three layouts; the rest of hypersd should only ever see diffusers names.
// PyTorch pickles (.bin/.ckpt/.pt) are refused: unpickling runs code, and safetensors exists for every model.

import * as fs from 'fs';
import * as path from 'path';
import { ITEMSIZE, PICKLE_ADVICE, SafeTensors, StDType, numel, rawToF32 } from './safetensors';
import { ComponentName, Config, builtinConfigs, paramShapes } from '../models/configs';
import {
  NameMap, Transform, legacyVaeAttentionName, openClipToDiffusers, unetLayoutFromConfig, unetNameMap, vaeNameMap,
} from '../models/convert_ldm';

export type { ComponentName } from '../models/configs';
export type { StDType } from './safetensors';

export const COMPONENTS: readonly ComponentName[] = ['unet', 'vae', 'text_encoder', 'text_encoder_2'];

export interface WeightRef {
  name: string;
  shape: number[];
  dtype: StDType;
  /** "file.safetensors:key" for error messages */
  source: string;
  readF32(): Float32Array;
  /** The stored bytes (little-endian, `dtype`) already in the diffusers layout. */
  readRaw?(): { dtype: StDType; data: Buffer };
  readRawTransient?(): { dtype: StDType; data: Buffer };
}

export type ModelConfigsIn = Partial<Record<ComponentName | 'scheduler' | 'model_index', Config>>;

export interface OpenedModel {
  kind: 'sd15' | 'sdxl';
  layout: 'diffusers' | 'diffusers-prefixed' | 'single-file';
  path: string;
  configs: Partial<Record<ComponentName, Config>> & { scheduler?: Config; model_index?: Config };
  components: Partial<Record<ComponentName, Map<string, WeightRef>>>;
  tokenizerDirs: { tokenizer?: string; tokenizer_2?: string };
  /** Keys in the files that belong to no component (EMA copies, schedules, position_ids buffers, ...). */
  ignored: string[];
  close(): void;
}

export interface OpenModelOptions {
  /** Component configs to use instead of the file's own (diffusers) or the built-in real ones (single files). */
  configs?: ModelConfigsIn;
  /** A diffusers folder whose configs (and tokenizers) to use for a single or prefixed file. */
  configFrom?: string;
  /** Diffusers weight variant to prefer, e.g. 'fp16' for diffusion_pytorch_model.fp16.safetensors. */
  variant?: string;
}

const PICKLE = /\.(bin|ckpt|pt|pth|pkl)$/;

/** A weight read from a safetensors tensor, optionally reshaped, row-sliced or transposed on the way. */
class StWeight implements WeightRef {
  readonly shape: number[];
  readonly dtype: StDType;
  constructor(private readonly st: SafeTensors, private readonly key: string, readonly name: string,
    private readonly transform: Transform = { kind: 'none' }) {
    const info = st.info(key);
    this.dtype = info.dtype;
    const s = info.shape;
    const bad = (what: string): never => {
      throw new Error(`${this.source}: cannot ${what} shape [${s.join(', ')}] for '${name}'`);
    };
    switch (transform.kind) {
      case 'none': this.shape = [...s]; break;
      case 'squeeze':
        if (s.length !== 4 || s[2] !== 1 || s[3] !== 1) bad('squeeze to 2-D');
        this.shape = [s[0], s[1]];
        break;
      case 'rows':
        if (s.length < 1 || s[0] % transform.parts !== 0) bad(`split into ${transform.parts} row blocks`);
        this.shape = [s[0] / transform.parts, ...s.slice(1)];
        break;
      case 'transpose':
        if (s.length !== 2) bad('transpose (needs 2-D)');
        this.shape = [s[1], s[0]];
        break;
    }
  }

  get source(): string {
    return `${this.st.path}:${this.key}`;
  }

  readRaw(): { dtype: StDType; data: Buffer } {
    return this.read(false);
  }
  /** readRaw's bytes in the shared staging buffer (SafetensorsFile.readScratch): valid until the next such read. */
  readRawTransient(): { dtype: StDType; data: Buffer } {
    return this.read(true);
  }
  private read(transient: boolean): { dtype: StDType; data: Buffer } {
    const t = this.transform;
    if (t.kind === 'rows') {
      const bytes = numel(this.shape) * ITEMSIZE[this.dtype];
      return { dtype: this.dtype, data: transient ? this.st.readScratch(this.key, t.part * bytes, bytes) : this.st.readRawSlice(this.key, t.part * bytes, bytes) };
    }
    const data = transient ? this.st.readScratch(this.key) : this.st.readRaw(this.key);
    return { dtype: this.dtype, data: t.kind === 'transpose' ? transposeBytes(data, this.shape[1], this.shape[0], ITEMSIZE[this.dtype]) : data };
  }

  readF32(): Float32Array {
    if (this.transform.kind === 'none' || this.transform.kind === 'squeeze') return this.st.readF32(this.key);
    return rawToF32(this.readRaw().data, this.dtype, this.source);
  }
}

/** [rows, cols] row-major -> [cols, rows], element size `size` bytes (1, 2, 4 or 8: every safetensors dtype),
 * through integer typed arrays, which keep every bit (a Buffer.copy per element took ~0.1 us). */
function transposeBytes(src: Buffer, rows: number, cols: number, size: number): Buffer {
  const dst = Buffer.from(new ArrayBuffer(src.length));
  const T = ({ 1: Uint8Array, 2: Uint16Array, 4: Uint32Array, 8: BigUint64Array } as const)[size as 1 | 2 | 4 | 8];
  if (!T) throw new Error(`transposeBytes: unsupported element size ${size}`);
  const a = src.byteOffset % size === 0 ? src : Buffer.from(src);  // aligned for the view
  const x = new T(a.buffer as ArrayBuffer, a.byteOffset, rows * cols), y = new T(dst.buffer as ArrayBuffer, dst.byteOffset, rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) y[c * rows + r] = x[r * cols + c];
  return dst;
}

/** A WeightRef over one tensor of an open file. */
export function weightRef(st: SafeTensors, key: string, name = key, transform?: Transform): WeightRef {
  return new StWeight(st, key, name, transform);
}

function readJson(p: string): Config {
  let text: string;
  try {
    text = fs.readFileSync(p, 'utf8');
  } catch (e) {
    throw new Error(`${p}: cannot read: ${(e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${p}: invalid JSON: ${(e as Error).message}`);
  }
  // (every file read here is an object: null or an array had failed later as a TypeError or a lost component)
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${p}: not a JSON object`);
  return v as Config;
}

const isDir = (p: string): boolean => fs.existsSync(p) && fs.statSync(p).isDirectory();

/** The configs of a diffusers pipeline folder (those present), and its tokenizer folders. */
export function readDiffusersConfigs(dir: string): { configs: ModelConfigsIn; tokenizerDirs: OpenedModel['tokenizerDirs'] } {
  if (!isDir(dir)) throw new Error(`${dir}: not a diffusers folder (not a directory)`);
  const configs: ModelConfigsIn = {};
  const mi = path.join(dir, 'model_index.json');
  if (fs.existsSync(mi)) {
    configs.model_index = readJson(mi);
  }
  for (const c of COMPONENTS) {
    const p = path.join(dir, c, 'config.json');
    if (fs.existsSync(p)) configs[c] = readJson(p);
  }
  const sch = path.join(dir, 'scheduler', 'scheduler_config.json');
  if (fs.existsSync(sch)) configs.scheduler = readJson(sch);
  const tokenizerDirs: OpenedModel['tokenizerDirs'] = {};
  for (const t of ['tokenizer', 'tokenizer_2'] as const) if (isDir(path.join(dir, t))) tokenizerDirs[t] = path.join(dir, t);
  return { configs, tokenizerDirs };
}

/**
 * Open a model folder or file. Weights stay on disk until a WeightRef is read; call close() when done.
 *
 * @example
 * const m = openModel('stable-diffusion-v1-5');            // diffusers folder
 * const w = m.components.unet!.get('conv_in.weight')!.readF32();
 * m.close();
 */
export function openModel(p: string, opts: OpenModelOptions = {}): OpenedModel {
  if (!fs.existsSync(p)) throw new Error(`${p}: no such file or folder`);
  if (isDir(p)) {
    // a diffusers folder carries its own configs (configFrom had been silently ignored there)
    if (opts.configFrom !== undefined) throw new Error(`${p}: configFrom applies to single-file checkpoints; a diffusers folder has its own configs (pass configs to override them)`);
    return openDiffusers(p, opts);
  }
  if (PICKLE.test(p)) throw new Error(pickleMessage(p, [path.basename(p)]));
  const st = SafeTensors.open(p);
  try {
    return openSingleFile(p, st, opts);
  } catch (e) {
    st.close();
    throw e;
  }
}

function pickleMessage(where: string, files: string[]): string {
  return `${where}: only PyTorch pickle weights found (${files.join(', ')}); ${PICKLE_ADVICE}`;
}

class Opened implements OpenedModel {
  configs: OpenedModel['configs'] = {};
  components: OpenedModel['components'] = {};
  tokenizerDirs: OpenedModel['tokenizerDirs'] = {};
  ignored: string[] = [];
  readonly files: SafeTensors[] = [];
  constructor(public kind: 'sd15' | 'sdxl', public layout: OpenedModel['layout'], public path: string) {}
  close(): void {
    for (const f of this.files) f.close();
  }
}

function put(map: Map<string, WeightRef>, ref: WeightRef, component: string): void {
  const prev = map.get(ref.name);
  if (prev) throw new Error(`${ref.source}: ${component} weight '${ref.name}' also comes from ${prev.source}`);
  map.set(ref.name, ref);
}

/** Buffers and bookkeeping tensors that are not parameters of the diffusers modules. */
const isBuffer = (name: string): boolean => name.endsWith('embeddings.position_ids');

// ---------------------------------------------------------------- diffusers folder

function openDiffusers(dir: string, opts: OpenModelOptions): OpenedModel {
  const own = readDiffusersConfigs(dir);
  const mi = own.configs.model_index;
  const listed = (c: ComponentName): boolean => {
    if (!mi) return isDir(path.join(dir, c));
    const v = mi[c];
    return Array.isArray(v) && v[0] !== null;
  };
  if (!mi && !isDir(path.join(dir, 'unet'))) {
    if (fs.existsSync(path.join(dir, 'config.json')))
      throw new Error(`${dir}: this is a single component folder (config.json, no model_index.json); pass the pipeline folder that contains it, or use openComponent()`);
    throw new Error(`${dir}: not a diffusers pipeline folder (no model_index.json and no unet/ folder)`);
  }
  const configs = { ...own.configs, ...opts.configs };
  const unetCfg = configs.unet;
  // The UNet's config decides when there is one (SDXL's takes the text_time embedding); a pipeline class that says
  // otherwise, or a text_encoder_2 beside an SD1.5 UNet, is an Error (SD1.5 weights had loaded as SDXL and failed
  // only at generate).
  const classSaysXL = typeof mi?._class_name === 'string' ? /XL/.test(mi._class_name) : null;
  const te2 = listed('text_encoder_2');
  let xl: boolean;
  if (unetCfg && typeof unetCfg === 'object') {
    xl = unetCfg.addition_embed_type === 'text_time';
    const what = xl ? 'an SDXL UNet (addition_embed_type text_time)' : 'an SD1.5 UNet (no text_time embedding)';
    if (classSaysXL !== null && classSaysXL !== xl) throw new Error(`${dir}: unet/config.json describes ${what} but model_index.json names ${mi!._class_name}`);
    if (!xl && te2) throw new Error(`${dir}: unet/config.json describes ${what} but there is a text_encoder_2`);
  } else xl = classSaysXL ?? te2;
  const m = new Opened(xl ? 'sdxl' : 'sd15', 'diffusers', dir);
  m.configs = configs;
  m.tokenizerDirs = own.tokenizerDirs;
  try {
    const required = new Set<ComponentName>(['unet', 'vae', ...COMPONENTS.filter(listed)]);
    for (const c of COMPONENTS) {
      if (!required.has(c)) continue;
      const cdir = path.join(dir, c);
      if (!isDir(cdir)) {
        throw new Error(mi?.[c] ? `${dir}: model_index.json lists component '${c}' but the folder ${cdir} is missing`
          : `${dir}: component '${c}' is missing (no ${cdir} folder)`);
      }
      if (!configs[c]) throw new Error(`${cdir}: missing config.json for component '${c}'`);
      const map = new Map<string, WeightRef>();
      for (const { file, keys } of componentFiles(cdir, c, opts.variant)) {
        const st = SafeTensors.open(file);
        m.files.push(st);
        for (const key of keys ?? st.keys()) {
          if (!st.has(key)) throw new Error(`${file}: the shard index lists '${key}' in this file but it is not there`);
          if (isBuffer(key)) {
            m.ignored.push(`${c}/${key}`);
            continue;
          }
          const name = c === 'vae' ? legacyVaeAttentionName(key) : key;
          const squeeze = name !== key && st.info(key).shape.length === 4;
          put(map, weightRef(st, key, name, squeeze ? { kind: 'squeeze' } : undefined), c);
        }
      }
      m.components[c] = map;
    }
  } catch (e) {
    m.close();
    throw e;
  }
  return m;
}

/** The safetensors files of a component folder, choosing one weight set (plain, variant, sharded). */
function componentFiles(cdir: string, component: string, variant?: string): { file: string; keys?: string[] }[] {
  const names = fs.readdirSync(cdir);
  type Cand = { variant: string | null; canonical: boolean; files: { file: string; keys?: string[] }[]; label: string };
  const cands: Cand[] = [];
  const sharded = new Set<string>();
  for (const n of names) {
    const im = /^(.+)\.safetensors\.index(?:\.([\w-]+))?\.json$/.exec(n);
    if (!im) continue;
    const idx = readJson(path.join(cdir, n));
    const wm = idx.weight_map;
    if (typeof wm !== 'object' || wm === null) throw new Error(`${path.join(cdir, n)}: shard index has no weight_map`);
    const byFile = new Map<string, string[]>();
    for (const [k, f] of Object.entries(wm)) {
      if (typeof f !== 'string' || f !== path.basename(f) || f === '..' || f === '.')
        throw new Error(`${path.join(cdir, n)}: weight_map['${k}'] is not a file name in this folder (${JSON.stringify(f)})`);
      if (!byFile.has(f)) byFile.set(f, []);
      byFile.get(f)!.push(k);
    }
    for (const f of byFile.keys()) {
      sharded.add(f);
      if (!fs.existsSync(path.join(cdir, f))) throw new Error(`${path.join(cdir, n)}: shard ${f} is missing from ${cdir}`);
    }
    cands.push({ variant: im[2] ?? null, canonical: true, label: n,
      files: [...byFile].map(([f, keys]) => ({ file: path.join(cdir, f), keys })) });
  }
  for (const n of names) {
    if (!n.endsWith('.safetensors') || sharded.has(n)) continue;
    const vm = /^(diffusion_pytorch_model|model)(?:\.([\w-]+))?\.safetensors$/.exec(n);
    cands.push({ variant: vm?.[2] ?? null, canonical: !!vm, label: n, files: [{ file: path.join(cdir, n) }] });
  }
  if (cands.length === 0) {
    const pickles = names.filter((n) => PICKLE.test(n));
    if (pickles.length) throw new Error(pickleMessage(`${cdir} (component '${component}')`, pickles));
    throw new Error(`${cdir}: no safetensors weights for component '${component}'`);
  }
  const want = variant ?? null;
  let pick = cands.filter((c) => c.variant === want);
  if (pick.length === 0) {
    if (variant) throw new Error(`${cdir}: no '${variant}' variant weights (found: ${cands.map((c) => c.label).join(', ')})`);
    pick = cands.filter((c) => c.variant === 'fp16');
    if (pick.length === 0) pick = cands;
  }
  if (pick.length > 1) pick = pick.filter((c) => c.canonical);
  if (pick.length !== 1) throw new Error(`${cdir}: cannot choose between weight files ${cands.map((c) => c.label).join(', ')}`);
  return pick[0].files;
}

// ---------------------------------------------------------------- single files

function openSingleFile(p: string, st: SafeTensors, opts: OpenModelOptions): OpenedModel {
  const keys = st.keys();
  const has = (prefix: string) => keys.some((k) => k.startsWith(prefix));
  let layout: OpenedModel['layout'];
  let kind: 'sd15' | 'sdxl';
  if (keys.some((k) => /(^|\.)lora_(unet|te\d?_|A\.|B\.|down\.|up\.)/.test(k))) {
    throw new Error(`${p}: this is a LoRA file, not a model; load the base model and apply it with parseLora()`);
  }
  if (has('model.diffusion_model.')) {
    layout = 'single-file';
    if (has('cond_stage_model.model.')) throw new Error(`${p}: this looks like a Stable Diffusion 2.x checkpoint (OpenCLIP-H text encoder); only SD1.5 and SDXL are supported`);
    // the UNet decides: SDXL's has the label (text_time) embedding
    kind = has('model.diffusion_model.label_emb.') ? 'sdxl' : 'sd15';
  } else if (COMPONENTS.some((c) => has(`${c}.`))) {
    layout = 'diffusers-prefixed';
    kind = has('unet.add_embedding.') ? 'sdxl' : 'sd15';
    if (kind === 'sd15' && has('text_encoder_2.')) throw new Error(`${p}: text_encoder_2 weights beside an SD1.5 UNet (no add_embedding)`);
  } else {
    throw new Error(`${p}: not a full model file: expected keys starting with 'model.diffusion_model.' (original checkpoint) ` +
      `or 'unet.' / 'vae.' / 'text_encoder.' (diffusers-prefixed); first keys: ${keys.slice(0, 3).join(', ')}. ` +
      'A LoRA goes to parseLora(), a lone UNet or VAE file to openComponent().');
  }
  const m = new Opened(kind, layout, p);
  m.files.push(st);
  const from = opts.configFrom ? readDiffusersConfigs(opts.configFrom) : null;
  m.configs = { ...builtinConfigs(kind), ...from?.configs, ...opts.configs };
  if (kind === 'sd15') delete m.configs.text_encoder_2;
  if (from) m.tokenizerDirs = from.tokenizerDirs;

  if (layout === 'diffusers-prefixed') {
    for (const key of keys) {
      const dot = key.indexOf('.');
      const c = key.slice(0, dot) as ComponentName;
      if (dot < 0 || !COMPONENTS.includes(c) || isBuffer(key)) {
        m.ignored.push(key);
        continue;
      }
      const map = m.components[c] ?? (m.components[c] = new Map());
      put(map, weightRef(st, key, key.slice(dot + 1)), c);
    }
    return m;
  }
  convertOriginal(p, st, keys, m);
  return m;
}

/** Route and rename the keys of an LDM/SGM checkpoint into diffusers components. */
function convertOriginal(p: string, st: SafeTensors, keys: string[], m: Opened): void {
  const unetMap = unetNameMap(unetLayoutFromConfig(requireConfig(m, 'unet')));
  const vaeMap = vaeNameMap(requireConfig(m, 'vae'));
  const unmapped: string[] = [];
  const comp = (c: ComponentName) => m.components[c] ?? (m.components[c] = new Map());
  const renamed = (c: ComponentName, key: string, rest: string, map: NameMap) => {
    const name = map.toDiffusers(rest);
    if (!name) return unmapped.push(key);
    const squeeze = c === 'vae' && /mid_block\.attentions\.0\.to_(q|k|v|out\.0)\.weight$/.test(name) && st.info(key).shape.length === 4;
    put(comp(c), weightRef(st, key, name, squeeze ? { kind: 'squeeze' } : undefined), c);
  };
  const hfClip = (c: ComponentName, key: string, rest: string) => {
    const name = rest.startsWith('text_model.') ? rest : `text_model.${rest}`;
    if (isBuffer(name)) return m.ignored.push(key);
    put(comp(c), weightRef(st, key, name), c);
  };
  for (const key of keys) {
    let r: RegExpExecArray | null;
    if (key.startsWith('model.diffusion_model.')) renamed('unet', key, key.slice(22), unetMap);
    // (the VAE's training loss, LPIPS and discriminator weights, which some checkpoints carry: not the model)
    else if (key.startsWith('first_stage_model.loss.')) m.ignored.push(key);
    else if (key.startsWith('first_stage_model.')) renamed('vae', key, key.slice(18), vaeMap);
    else if (key.startsWith('cond_stage_model.transformer.')) hfClip('text_encoder', key, key.slice(29));
    else if ((r = /^conditioner\.embedders\.\d+\.transformer\.(.+)$/.exec(key))) hfClip('text_encoder', key, r[1]);
    else if ((r = /^conditioner\.embedders\.\d+\.model\.(.+)$/.exec(key))) {
      const outs = openClipToDiffusers(r[1]);
      if (outs === null) unmapped.push(key);
      else if (outs.length === 0) m.ignored.push(key);
      else for (const o of outs) put(comp('text_encoder_2'), weightRef(st, key, o.name, o.transform), 'text_encoder_2');
    } else m.ignored.push(key);
  }
  if (unmapped.length) {
    throw new Error(`${p}: ${unmapped.length} keys have no diffusers name under the UNet/VAE configs in use ` +
      `(does the config match this checkpoint? pass configs or configFrom): ${unmapped.slice(0, 20).join(', ')}` +
      (unmapped.length > 20 ? ', ...' : ''));
  }
}

function requireConfig(m: Opened, c: ComponentName): Config {
  const cfg = m.configs[c];
  if (!cfg) throw new Error(`${m.path}: no config for component '${c}'`);
  return cfg;
}

/**
 * Open one component from a lone file: diffusers names (`conv_in.weight`, e.g. Hyper-SDXL-1step-Unet),
 * or original names (`model.diffusion_model.*` / bare `input_blocks.*` for a UNet, `first_stage_model.*` /
 * `encoder.down.*` for a VAE). The caller closes the returned handle.
 */
export function openComponent(p: string, component: 'unet' | 'vae', config: Config):
  { weights: Map<string, WeightRef>; close(): void } {
  if (PICKLE.test(p)) throw new Error(pickleMessage(p, [path.basename(p)]));
  const st = SafeTensors.open(p);
  try {
    const keys = st.keys();
    const weights = new Map<string, WeightRef>();
    const map = component === 'unet' ? unetNameMap(unetLayoutFromConfig(config)) : vaeNameMap(config);
    const strip = component === 'unet' ? 'model.diffusion_model.' : 'first_stage_model.';
    const original = component === 'unet'
      ? keys.some((k) => /^(model\.diffusion_model\.)?input_blocks\./.test(k))
      : keys.some((k) => /^(first_stage_model\.)?encoder\.down\./.test(k));
    const unmapped: string[] = [];
    for (const key of keys) {
      const rest = key.startsWith(strip) ? key.slice(strip.length) : key;
      let name: string | null = original ? map.toDiffusers(rest) : rest;
      if (component === 'vae' && name) name = legacyVaeAttentionName(name);
      if (!name) {
        unmapped.push(key);
        continue;
      }
      const squeeze = component === 'vae' && /mid_block\.attentions\.0\.to_(q|k|v|out\.0)\.weight$/.test(name) && st.info(key).shape.length === 4;
      put(weights, weightRef(st, key, name, squeeze ? { kind: 'squeeze' } : undefined), component);
    }
    if (unmapped.length) throw new Error(`${p}: ${unmapped.length} ${component} keys have no diffusers name under the given config: ${unmapped.slice(0, 20).join(', ')}`);
    return { weights, close: () => st.close() };
  } catch (e) {
    st.close();
    throw e;
  }
}

// ---------------------------------------------------------------- checks

export interface WeightCheck {
  missing: string[];
  unexpected: string[];
  mismatched: { name: string; expected: number[]; got: number[] }[];
}

/**
 * Compare loaded weights with what a module expects (name -> shape). With `strict`, any difference throws
 * one Error naming every missing, unexpected and misshapen key.
 */
export function checkWeights(expected: Map<string, number[]>, got: Map<string, WeightRef>,
  opts: { strict: boolean; component: string; source: string }): WeightCheck {
  const r: WeightCheck = { missing: [], unexpected: [], mismatched: [] };
  for (const [name, shape] of expected) {
    const w = got.get(name);
    if (!w) r.missing.push(name);
    else if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) r.mismatched.push({ name, expected: shape, got: w.shape });
  }
  for (const name of got.keys()) if (!expected.has(name)) r.unexpected.push(name);
  if (opts.strict && (r.missing.length || r.unexpected.length || r.mismatched.length)) {
    const parts: string[] = [];
    if (r.missing.length) parts.push(`missing (${r.missing.length}): ${r.missing.join(', ')}`);
    if (r.unexpected.length) parts.push(`unexpected (${r.unexpected.length}): ${r.unexpected.join(', ')}`);
    if (r.mismatched.length) {
      parts.push(`wrong shape (${r.mismatched.length}): ` +
        r.mismatched.map((x) => `${x.name} expected [${x.expected.join(', ')}] got [${x.got.join(', ')}]`).join(', '));
    }
    throw new Error(`${opts.source}: ${opts.component} weights do not match its config: ${parts.join('; ')}`);
  }
  return r;
}

/** checkWeights for every component of an opened model against the shapes its configs imply; strict also
 * requires every component of its kind to be present. */
export function verifyModel(m: OpenedModel, strict = true): Partial<Record<ComponentName, WeightCheck>> {
  const out: Partial<Record<ComponentName, WeightCheck>> = {};
  const needed: ComponentName[] = m.kind === 'sdxl' ? [...COMPONENTS] : ['unet', 'vae', 'text_encoder'];
  const absent = needed.filter((c) => !m.components[c]);
  if (strict && absent.length) throw new Error(`${m.path}: no weights for component(s) ${absent.join(', ')} of this ${m.kind} model`);
  for (const c of COMPONENTS) {
    const got = m.components[c];
    if (!got) continue;
    const cfg = m.configs[c];
    if (!cfg) throw new Error(`${m.path}: no config for component '${c}'`);
    out[c] = checkWeights(paramShapes(c, cfg), got, { strict, component: c, source: m.path });
  }
  return out;
}
