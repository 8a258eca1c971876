/**
 * Trainable LoRA adapters on a frozen network, and their export as a kohya-format LoRA file.
 *
 * Training: each adapted module of a ParamStore gets a RuntimeAdapter (lib/nn/layers.ts) whose down/up
 * tensors are the trainables; the forward already runs them through the fused lora_linear / lora_conv2d
 * ops, so the frozen base needs no weight gradient. Init as peft: down ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
 * (kaiming-uniform with a = sqrt(5)), up = 0, so training starts from the base model exactly.
 * Default targets (TRAINING.md, the LCM-LoRA / Hyper-SD set): to_q, to_k, to_v, to_out.0, proj_in, proj_out,
 * ff.net.0.proj, ff.net.2, conv1, conv2, conv_shortcut, downsamplers.0.conv, upsamplers.0.conv,
 * time_emb_proj; rank 64, alpha 64.
 * Export (kohya / sd-scripts naming, read by lib/models/lora.ts parseLora and by diffusers' kohya converter):
 *   lora_unet_<module, '.' -> '_'>.lora_down.weight  [r, in] or [r, in, kh, kw] (PyTorch OIHW)
 *   lora_unet_<module>.lora_up.weight                [out, r] or [out, r, 1, 1]
 *   lora_unet_<module>.alpha                         scalar
 * with ss_network_module / ss_network_dim / ss_network_alpha metadata, written atomically.
 * Components: unet, text_encoder (lora_te_), text_encoder_2 (lora_te2_), matching the store's; the kohya format
 * has no VAE LoRA, so 'vae' is an Error. Options are checked before the first adapter is attached.
 */
import { Tensor, keep, empty } from '../tensor';
import { runOp } from '../ops/runtime';
import type { ParamStore } from '../nn/params';
import type { RuntimeAdapter } from '../nn/layers';
import { saveSafetensors, type StTensorIn } from '../io/safetensors';
import type { ComponentName } from '../models/configs';
import { show, checkOptionKeys, checkOutputFolder } from './show';

export const DEFAULT_LORA_TARGETS = [
  'to_q', 'to_k', 'to_v', 'to_out.0', 'proj_in', 'proj_out', 'ff.net.0.proj', 'ff.net.2',
  'conv1', 'conv2', 'conv_shortcut', 'downsamplers.0.conv', 'upsamplers.0.conv', 'time_emb_proj',
];

/** The components a kohya LoRA file can hold, and their key prefixes (lib/models/lora.ts parseLora). */
export const LORA_COMPONENTS = ['unet', 'text_encoder', 'text_encoder_2'] as const;
const KOHYA_PREFIX: Record<(typeof LORA_COMPONENTS)[number], string> = { unet: 'lora_unet', text_encoder: 'lora_te', text_encoder_2: 'lora_te2' };


export interface LoraTrainOptions {
  rank?: number;
  alpha?: number;
  /** module-name suffixes to adapt (default DEFAULT_LORA_TARGETS) */
  targets?: readonly string[];
  /** seed of the down init (Philox) */
  seed?: number;
  /** adapter name in the store's adapter lists */
  name?: string;
}

export interface TrainableLoraModule {
  module: string;
  kind: 'linear' | 'conv';
  /** linear [r, in]; conv OHWI [r, kh, kw, Cin] (our conv layout) */
  down: Tensor;
  /** [out, r] */
  up: Tensor;
  adapter: RuntimeAdapter;
}

export class TrainableLora {
  readonly modules: TrainableLoraModule[] = [];
  readonly rank: number;
  readonly alpha: number;
  readonly name: string;
  private disposed = false;

  constructor(readonly store: ParamStore, readonly component: ComponentName, o: LoraTrainOptions = {}) {
    // Everything is checked before the first adapter is attached (a bad option is one Error naming it).
    const where = 'TrainableLora';
    if (!LORA_COMPONENTS.includes(component as never))
      throw new Error(`${where}: component must be one of ${LORA_COMPONENTS.join(', ')} (the kohya format has no ${show(component)} LoRA), got ${show(component)}`);
    if (!store || !(store.specs instanceof Map) || !(store.adapters instanceof Map)) throw new Error(`${where}: store must be a model's ParamStore`);
    // (a UNet's store exported as 'text_encoder' had written lora_te_ keys no loader would apply to the UNet)
    if (store.component !== component) throw new Error(`${where}: component '${component}' does not match the store, which holds the ${store.component}'s parameters`);
    checkOptionKeys(where, o, ['rank', 'alpha', 'targets', 'seed', 'name']);
    this.rank = o.rank ?? 64;
    this.alpha = o.alpha ?? this.rank;
    this.name = o.name ?? 'train';
    if (!Number.isInteger(this.rank) || this.rank < 1) throw new Error(`${where}: rank must be a positive integer, got ${show(this.rank)}`);
    if (typeof this.alpha !== 'number' || !Number.isFinite(this.alpha)) throw new Error(`${where}: alpha must be a finite number, got ${show(this.alpha)}`);
    if (typeof this.name !== 'string' || this.name === '') throw new Error(`${where}: name must be a non-empty string, got ${show(this.name)}`);
    const seed = o.seed ?? 0;
    // (NaN had been taken as some seed; -1 failed later as a 'rand' kernel error)
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`${where}: seed must be an integer >= 0, got ${show(seed)}`);
    const targets = o.targets ?? DEFAULT_LORA_TARGETS;
    if (!Array.isArray(targets) || targets.length === 0 || !targets.every((t) => typeof t === 'string' && t !== ''))
      throw new Error(`${where}: targets must be a non-empty list of module-name suffixes, got ${show(targets)}`);
    const matches = (module: string, t: string) => module === t || module.endsWith(`.${t}`);
    const chosen: [string, string][] = [];
    for (const [key, spec] of store.specs) {
      if (!key.endsWith('.weight') || (spec.kind !== 'linear' && spec.kind !== 'conv')) continue;
      const module = key.slice(0, -'.weight'.length);
      if (targets.some((t) => matches(module, t))) chosen.push([key, module]);
    }
    if (chosen.length === 0) throw new Error(`${where}: no ${component} module matches the targets ${targets.join(', ')}`);
    if (o.targets !== undefined) {
      // (explicit targets: a misspelt one had been ignored without a word)
      const unused = targets.filter((t) => !chosen.some(([, m]) => matches(m, t)));
      if (unused.length) throw new Error(`${where}: target${unused.length > 1 ? 's' : ''} ${unused.join(', ')} match${unused.length > 1 ? '' : 'es'} no linear or conv module of the ${component}`);
    }
    for (const [, module] of chosen)
      if ((store.adapters.get(module) ?? []).some((a) => a.name === this.name))
        throw new Error(`${where}: an adapter named '${this.name}' is already attached to ${module} (detach or dispose it, or pick another name)`);
    let offset = 0;
    try {
      for (const [key, module] of chosen) {
        const spec = store.specs.get(key)!;
        const w = store.get(key);
        const r = this.rank;
        const [out, inC] = spec.shape;
        const kind = spec.kind as 'linear' | 'conv';
        const kh = kind === 'conv' ? spec.shape[2] : 1, kw = kind === 'conv' ? spec.shape[3] : 1;
        const down = keep(empty(kind === 'conv' ? [r, kh, kw, inC] : [r, inC], { device: w.device }));
        let up: Tensor | undefined;
        try {
          const bound = 1 / Math.sqrt(inC * kh * kw);
          runOp('rand', [], [down], { seed, offset: offset++, normal: 0 });
          runOp('affine', [down], [down], { a: 2 * bound, b: -bound });
          up = keep(empty([out, r], { device: w.device }));
          runOp('fill', [], [up], { value: 0 });
        } catch (e) {
          // (not yet in this.modules: this.dispose() below would not free them)
          down.dispose();
          up?.dispose();
          throw e;
        }
        const adapter: RuntimeAdapter = { name: this.name, down, up, scale: this.alpha / r };
        const list = store.adapters.get(module) ?? [];
        list.push(adapter);
        store.adapters.set(module, list);
        this.modules.push({ module, kind, down, up, adapter });
      }
    } catch (e) {
      // (e.g. out of memory half way: the adapters attached so far are taken off again)
      this.dispose();
      throw e;
    }
  }

  /** The trainable tensors by name (`<module>.lora_down.weight`, `<module>.lora_up.weight`). */
  trainables(): Map<string, Tensor> {
    const m = new Map<string, Tensor>();
    for (const x of this.modules) {
      m.set(`${x.module}.lora_down.weight`, x.down);
      m.set(`${x.module}.lora_up.weight`, x.up);
    }
    return m;
  }

  /** Sets the multiplier the forward applies (scale * alpha / rank). */
  setScale(scale: number): void {
    if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new Error(`TrainableLora.setScale: scale must be a finite number, got ${show(scale)}`);
    for (const x of this.modules) x.adapter.scale = (scale * this.alpha) / this.rank;
  }

  /** Detaches the adapters from the store (the tensors stay alive until dispose). */
  detach(): void {
    for (const x of this.modules) {
      const list = (this.store.adapters.get(x.module) ?? []).filter((a) => a !== x.adapter);
      if (list.length) this.store.adapters.set(x.module, list);
      else this.store.adapters.delete(x.module);
    }
  }

  dispose(): void {
    this.detach();
    for (const x of this.modules) {
      x.down.dispose();
      x.up.dispose();
    }
    this.disposed = true;
  }

  /** Writes the adapter as a kohya-format LoRA file (atomically). */
  async exportKohya(file: string, metadata: Record<string, string> = {}): Promise<void> {
    if (typeof file !== 'string' || file === '') throw new Error(`TrainableLora.exportKohya: file must be a non-empty path, got ${show(file)}`);
    if (this.disposed) throw new Error(`${file}: cannot export the LoRA: it was disposed`);
    if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) throw new Error(`${file}: LoRA metadata must be an object of strings`);
    const own: Record<string, string> = {
      ss_network_module: 'networks.lora', ss_network_dim: String(this.rank), ss_network_alpha: String(this.alpha),
      hypersd_lora: JSON.stringify({ component: this.component, rank: this.rank, alpha: this.alpha, modules: this.modules.length }),
    };
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new Error(`${file}: metadata['${k}'] must be a string`);
      // (ss_network_alpha '64' over a trained alpha of 2 had been written: loaders read the wrong scale)
      if (k in own && own[k] !== v) throw new Error(`${file}: metadata['${k}'] is written from the adapter (${own[k]}); it cannot be set to '${v}'`);
    }
    checkOutputFolder(file, 'export the LoRA');
    const prefix = KOHYA_PREFIX[this.component as (typeof LORA_COMPONENTS)[number]];
    const tensors: Record<string, StTensorIn> = {};
    for (const x of this.modules) {
      const key = `${prefix}_${x.module.replace(/\./g, '_')}`;
      let down = await x.down.floats();
      const up = await x.up.floats();
      let downShape = [...x.down.shape], upShape = [...x.up.shape];
      if (x.kind === 'conv') {
        const [r, kh, kw, c] = x.down.shape;
        down = ohwiToOihw(down, r, kh, kw, c);
        downShape = [r, c, kh, kw];
        upShape = [upShape[0], upShape[1], 1, 1];
      }
      tensors[`${key}.lora_down.weight`] = { dtype: 'F32', shape: downShape, data: down };
      tensors[`${key}.lora_up.weight`] = { dtype: 'F32', shape: upShape, data: up };
      tensors[`${key}.alpha`] = { dtype: 'F32', shape: [], data: Float32Array.of(this.alpha) };
    }
    saveSafetensors(file, tensors, { ...metadata, ...own });
  }
}

/** Our conv layout OHWI [O, kh, kw, I] -> PyTorch OIHW [O, I, kh, kw]. */
export function ohwiToOihw(w: Float32Array, o: number, kh: number, kw: number, i: number): Float32Array {
  if (kh === 1 && kw === 1) return w;
  const out = new Float32Array(w.length);
  for (let a = 0; a < o; a++)
    for (let y = 0; y < kh; y++)
      for (let x = 0; x < kw; x++)
        for (let c = 0; c < i; c++) out[((a * i + c) * kh + y) * kw + x] = w[((a * kh + y) * kw + x) * i + c];
  return out;
}
