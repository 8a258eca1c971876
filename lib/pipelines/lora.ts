/**
 * Applying LoRA adapters to loaded networks, two ways with the same result:
 * - fuse: W' = W + scale * (alpha/rank) * up @ down, written into the weight; the original tensor is kept so
 *   unfuse restores it bit for bit without reloading the base;
 * - runtime: the adapter's down/up tensors are attached to the module and the LoRA-matmul op applies them at
 *   each forward, so a server can switch adapters and scales per request without touching the base.
 * Several adapters can be active at once, each with its own scale.
 */
import { keep, tensor, type Tensor, type DType } from '../tensor';
import type { ParamStore } from '../nn/params';
import { oihwToOhwi } from '../nn/params';
import type { ComponentName } from '../io/model_files';
import { parseLora, mergedDelta, type LoraModule, type LoraTarget } from '../models/lora';

export type LoraMode = 'fuse' | 'runtime';

export interface LoadedLora {
  name: string;
  path: string;
  format: string;
  scale: number;
  mode: LoraMode;
  modules: LoraModule[];
  /** keys of the file that matched no module, by name */
  warnings: string[];
}

interface Applied { lora: LoadedLora; close: () => void; fusedOriginals: Map<string, { component: ComponentName; key: string; orig: Tensor }> /* 'component:key' */; runtime: Map<string, Tensor[]> }

/** Runs f after the calls queued before it (a pipeline's queue), or at once. */
export type LoraQueue = <T>(what: string, f: () => Promise<T>) => Promise<T>;

export class LoraManager {
  private applied = new Map<string, Applied>();
  /** queue: where load / setScale / unload run (a pipeline passes its own, so that `pipe.lora.load` waits for a
   * generate in flight as `pipe.loadLora` does: until session 29 it changed the weights under the running
   * image). */
  constructor(private stores: Partial<Record<ComponentName, ParamStore>>, private target: LoraTarget,
    private queue: LoraQueue = (_what, f) => f()) {}

  get names(): string[] {
    return [...this.applied.keys()];
  }
  list(): LoadedLora[] {
    return [...this.applied.values()].map((a) => a.lora);
  }

  load(path: string, o: { name?: string; scale?: number; mode?: LoraMode } = {}): Promise<LoadedLora> {
    return this.queue('loadLora', () => this.loadNow(path, o));
  }
  private async loadNow(path: string, o: { name?: string; scale?: number; mode?: LoraMode }): Promise<LoadedLora> {
    const name = o.name ?? path;
    if (this.applied.has(name)) throw new Error(`a LoRA named '${name}' is already loaded (unload it first)`);
    const scale = o.scale ?? 1;
    const mode = o.mode ?? 'fuse';
    checkScale(path, scale);
    if (mode !== 'fuse' && mode !== 'runtime') throw new Error(`${path}: mode must be 'fuse' or 'runtime', got ${JSON.stringify(mode)}`);
    const parsed = parseLora(path, this.target);
    try {
      if (parsed.modules.length === 0)
        throw new Error(`${path}: none of its ${parsed.unmatched.length} keys names a module of this model (${parsed.unmatched.slice(0, 3).join(', ')}${parsed.unmatched.length > 3 ? ', ...' : ''}): a LoRA for another model?`);
      // Check every shape before changing anything.
      for (const m of parsed.modules) {
        const store = this.stores[m.component];
        if (!store) throw new Error(`${path}: the LoRA has ${m.component} modules but this model has no ${m.component}`);
        const spec = store.specs.get(`${m.module}.weight`);
        if (!spec) throw new Error(`${path}: module ${m.component}.${m.module} has no weight in this model`);
        const [out, inF] = spec.shape;
        const kdims = spec.shape.slice(2);
        const wantDown = [m.rank, inF, ...(m.kind === 'conv' ? kdims : [])];
        const wantUp = [out, m.rank, ...(m.kind === 'conv' ? [1, 1] : [])];
        const ok = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);
        if (!ok(m.down.shape, wantDown) && !(m.kind === 'linear' && ok(m.down.shape, [m.rank, inF, 1, 1])))
          throw new Error(`${m.down.source}: shape [${m.down.shape}] does not fit ${m.component}.${m.module}.weight [${spec.shape}] (expected [${wantDown}])`);
        if (!ok(m.up.shape, wantUp) && !(m.kind === 'linear' && ok(m.up.shape, [out, m.rank, 1, 1])))
          throw new Error(`${m.up.source}: shape [${m.up.shape}] does not fit ${m.component}.${m.module}.weight [${spec.shape}] (expected [${wantUp}])`);
      }
      const lora: LoadedLora = { name, path, format: parsed.format, scale, mode, modules: parsed.modules, warnings: parsed.unmatched };
      // The file stays open while the adapter is loaded: a fused adapter re-reads it to change its scale.
      const a: Applied = { lora, close: () => parsed.close(), fusedOriginals: new Map(), runtime: new Map() };
      try {
        if (mode === 'fuse') await this.fuse(a, scale);
        else this.attach(a, scale);
      } catch (e) {
        // a fuse cut short (a damaged file, a dispose) puts back the originals it had swapped out
        this.restore(a);
        throw e;
      }
      this.applied.set(name, a);
      return lora;
    } catch (e) {
      parsed.close();
      throw e;
    }
  }

  /** Changes a loaded adapter's scale (runtime: instant; fused: re-fuses from the kept originals). */
  setScale(name: string, scale: number): Promise<void> {
    return this.queue('setLoraScale', () => this.setScaleNow(name, scale));
  }
  private async setScaleNow(name: string, scale: number): Promise<void> {
    const a = this.get(name);
    checkScale(name, scale);
    if (a.lora.mode === 'runtime') {
      for (const m of a.lora.modules) {
        const list = this.stores[m.component]!.adapters.get(m.module) ?? [];
        for (const ad of list) if (ad.name === name) ad.scale = scale * (m.alpha / m.rank);
      }
    } else {
      await this.unfused(a, async () => {
        try {
          await this.fuse(a, scale);
        } catch (e) {
          // All or nothing: back to the old scale (a fuse cut short had left the weights matching neither), or, if
          // even that cannot be read again, the adapter unloaded.
          this.restore(a);
          try {
            await this.fuse(a, a.lora.scale);
          } catch {
            this.restore(a);
            a.close();
            this.applied.delete(name);
            throw new Error(`${(e as Error).message} (LoRA '${name}' could not be fused again at its old scale either and was unloaded)`);
          }
          throw e;
        }
      });
    }
    a.lora.scale = scale;
  }

  unload(name: string): Promise<void> {
    return this.queue('unloadLora', () => this.unloadNow(name));
  }
  private async unloadNow(name: string): Promise<void> {
    const a = this.get(name);
    if (a.lora.mode === 'fuse') {
      await this.unfused(a, async () => {});
    } else {
      for (const m of a.lora.modules) {
        const store = this.stores[m.component]!;
        const list = (store.adapters.get(m.module) ?? []).filter((x) => x.name !== name);
        if (list.length) store.adapters.set(m.module, list);
        else store.adapters.delete(m.module);
      }
      for (const ts of a.runtime.values()) for (const t of ts) t.dispose();
    }
    a.close();
    this.applied.delete(name);
  }

  /** Unloads everything, newest first (synchronous: fused originals are restored without re-fusing). */
  unloadAll(): void {
    for (const a of [...this.applied.values()].reverse()) {
      if (a.lora.mode === 'fuse') this.restore(a);
      else {
        for (const m of a.lora.modules) this.stores[m.component]?.adapters.delete(m.module);
        for (const ts of a.runtime.values()) for (const t of ts) t.dispose();
      }
      a.close();
    }
    this.applied.clear();
  }

  private get(name: string): Applied {
    const a = this.applied.get(name);
    if (!a) throw new Error(`no LoRA named '${name}' is loaded (loaded: ${this.names.join(', ') || 'none'})`);
    return a;
  }

  /** Fused adapters stack: unfuses those fused after a (newest first) and a itself, runs body, then fuses those
   * after a again, whatever body did. */
  private async unfused(a: Applied, body: () => Promise<void>): Promise<void> {
    const fused = [...this.applied.values()].filter((x) => x.lora.mode === 'fuse');
    const later = fused.slice(fused.indexOf(a) + 1);
    for (const x of [...later].reverse()) this.restore(x);
    this.restore(a);
    try {
      await body();
    } finally {
      for (const x of later) await this.fuse(x, x.lora.scale);
    }
  }

  private async fuse(a: Applied, scale: number): Promise<void> {
    for (const m of a.lora.modules) {
      const store = this.stores[m.component]!;
      const key = `${m.module}.weight`;
      const cur = store.get(key);
      const spec = store.specs.get(key)!;
      const base = (await cur.data()) as Float32Array;
      let delta = mergedDelta(m, scale);
      if (spec.kind === 'conv') delta = oihwToOhwi(delta, spec.shape[0], spec.shape[1], spec.shape[2], spec.shape[3]);
      const merged = new Float32Array(base.length);
      for (let i = 0; i < base.length; i++) merged[i] = base[i] + delta[i];
      const next = tensor(merged, cur.shape, { dtype: cur.dtype as DType, device: cur.device });
      const id = `${m.component}:${key}`;
      if (!a.fusedOriginals.has(id)) {
        // keep the original: detach it from the store without disposing
        a.fusedOriginals.set(id, { component: m.component, key, orig: cur });
        store.replaceKeep(key, next);
      } else {
        store.set(key, next);
      }
    }
  }

  private restore(a: Applied): void {
    for (const { component, key, orig } of a.fusedOriginals.values()) this.stores[component]!.set(key, orig);
    a.fusedOriginals.clear();
  }

  /** The adapters' tensors belong to the manager (keep: an enclosing tidy scope had freed them under the model),
   * all read before any is attached. */
  private attach(a: Applied, scale: number): void {
    const made: [LoraModule, Tensor, Tensor][] = [];
    try {
      for (const m of a.lora.modules) made.push([m, ...this.adapterTensors(m)]);
    } catch (e) {
      for (const [, d, u] of made) {
        d.dispose();
        u.dispose();
      }
      throw e;
    }
    for (const [m, dT, uT] of made) {
      const store = this.stores[m.component]!;
      a.runtime.set(m.module, [dT, uT]);
      const list = store.adapters.get(m.module) ?? [];
      list.push({ name: a.lora.name, down: dT, up: uT, scale: scale * (m.alpha / m.rank) });
      store.adapters.set(m.module, list);
    }
  }

  private adapterTensors(m: LoraModule): [Tensor, Tensor] {
    const store = this.stores[m.component]!;
    const dev = store.get(`${m.module}.weight`).device;
    const spec = store.specs.get(`${m.module}.weight`)!;
    let down = m.down.readF32();
    let downShape: number[];
    if (m.kind === 'conv' && spec.kind === 'conv') {
      const [, inC, kh, kw] = spec.shape;
      down = oihwToOhwi(down, m.rank, inC, kh, kw);
      downShape = [m.rank, kh, kw, inC];
    } else downShape = [m.rank, spec.shape[1] * (spec.kind === 'conv' ? spec.shape[2] * spec.shape[3] : 1)];
    const up = m.up.readF32();
    return [keep(tensor(down, downShape, { device: dev })), keep(tensor(up, [spec.shape[0], m.rank], { device: dev }))];
  }
}

/** A LoRA scale is a finite number (NaN or infinity fused into the weights made every image NaN). */
function checkScale(what: string, scale: unknown): void {
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new Error(`${what}: LoRA scale must be a finite number, got ${String(scale)}`);
}
