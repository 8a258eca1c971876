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
 */
import { Tensor, keep, empty } from '../tensor';
import { runOp } from '../ops/runtime';
import type { ParamStore } from '../nn/params';
import type { RuntimeAdapter } from '../nn/layers';
import { saveSafetensors, type StTensorIn } from '../io/safetensors';
import type { ComponentName } from '../models/configs';

export const DEFAULT_LORA_TARGETS = [
  'to_q', 'to_k', 'to_v', 'to_out.0', 'proj_in', 'proj_out', 'ff.net.0.proj', 'ff.net.2',
  'conv1', 'conv2', 'conv_shortcut', 'downsamplers.0.conv', 'upsamplers.0.conv', 'time_emb_proj',
];

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

  constructor(readonly store: ParamStore, readonly component: ComponentName, o: LoraTrainOptions = {}) {
    this.rank = o.rank ?? 64;
    this.alpha = o.alpha ?? this.rank;
    this.name = o.name ?? 'train';
    if (!Number.isInteger(this.rank) || this.rank < 1) throw new Error(`TrainableLora: rank must be a positive integer, got ${this.rank}`);
    if (!Number.isFinite(this.alpha)) throw new Error(`TrainableLora: alpha must be a finite number, got ${this.alpha}`);
    const targets = o.targets ?? DEFAULT_LORA_TARGETS;
    const seed = o.seed ?? 0;
    let offset = 0;
    for (const [key, spec] of store.specs) {
      if (!key.endsWith('.weight') || (spec.kind !== 'linear' && spec.kind !== 'conv')) continue;
      const module = key.slice(0, -'.weight'.length);
      if (!targets.some((t) => module === t || module.endsWith(`.${t}`))) continue;
      const w = store.get(key);
      const r = this.rank;
      const [out, inC] = spec.shape;
      const kh = spec.kind === 'conv' ? spec.shape[2] : 1, kw = spec.kind === 'conv' ? spec.shape[3] : 1;
      const down = keep(empty(spec.kind === 'conv' ? [r, kh, kw, inC] : [r, inC], { device: w.device }));
      const bound = 1 / Math.sqrt(inC * kh * kw);
      runOp('rand', [], [down], { seed, offset: offset++, normal: 0 });
      runOp('affine', [down], [down], { a: 2 * bound, b: -bound });
      const up = keep(empty([out, r], { device: w.device }));
      runOp('fill', [], [up], { value: 0 });
      const adapter: RuntimeAdapter = { name: this.name, down, up, scale: this.alpha / r };
      const list = store.adapters.get(module) ?? [];
      list.push(adapter);
      store.adapters.set(module, list);
      this.modules.push({ module, kind: spec.kind, down, up, adapter });
    }
    if (this.modules.length === 0) throw new Error(`TrainableLora: no ${component} module matches the targets ${targets.join(', ')}`);
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
  }

  /** Writes the adapter as a kohya-format LoRA file (atomically). */
  async exportKohya(file: string, metadata: Record<string, string> = {}): Promise<void> {
    const prefix = this.component === 'unet' ? 'lora_unet' : this.component === 'text_encoder' ? 'lora_te' : 'lora_te2';
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
    saveSafetensors(file, tensors, {
      ss_network_module: 'networks.lora', ss_network_dim: String(this.rank), ss_network_alpha: String(this.alpha),
      hypersd_lora: JSON.stringify({ component: this.component, rank: this.rank, alpha: this.alpha, modules: this.modules.length }),
      ...metadata,
    });
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
