/**
 * `hypersd run <component>`: one network on named input tensors from a safetensors file, outputs written to
 * another, so anyone can compare hypersd with diffusers tensor by tensor. `--repeat N` runs N more times and
 * prints the median seconds per run (load excluded): the same command is a benchmark.
 */
import * as fs from 'fs';
import * as path from 'path';
import { SafeTensors, saveSafetensors } from '../io/safetensors';
import { loadModel } from '../models/load';
import * as hs from '../tensor';
import { checkInFolder, checkOutFile, type Opts } from './args';
import type { ComponentName } from '../io/model_files';

const COMPONENTS: Record<string, ComponentName> = {
  unet: 'unet', text_encoder: 'text_encoder', text_encoder_2: 'text_encoder_2', 'vae.decode': 'vae', 'vae.encode': 'vae',
};

export async function runComponent(component: string, o: Opts): Promise<void> {
  const comp = COMPONENTS[component];
  if (!comp) throw new Error(`unknown component '${component}' (${Object.keys(COMPONENTS).join(', ')})`);
  const modelPath = o.req('model'), inputs = o.req('inputs'), outFile = o.req('out');
  const repeat = o.int('repeat') ?? 0;
  const device = o.choice('device', ['auto', 'cpu', 'cuda'] as const) ?? 'auto';
  const dtype = o.choice('dtype', ['f32', 'bf16', 'f16'] as const);
  const configFrom = o.str('config-from');
  o.done();
  if (repeat < 0 || repeat > 10_000) throw new Error(`option --repeat must be from 0 to 10000, got ${repeat}`);
  if (configFrom !== undefined) checkInFolder('--config-from', configFrom);
  checkOutFile('--out', outFile);
  if (!fs.existsSync(inputs) || !fs.statSync(inputs).isFile()) throw new Error(`--inputs ${inputs}: no such file`);
  if (path.resolve(outFile) === path.resolve(inputs)) throw new Error(`--out ${outFile} is the --inputs file: it would be overwritten`);
  const st = SafeTensors.open(inputs);
  const need = (k: string, rank?: number) => {
    if (!st.has(k)) throw new Error(`${inputs}: missing input tensor '${k}' for ${component}`);
    const info = st.info(k);
    if (rank !== undefined && info.shape.length !== rank) throw new Error(`${inputs}: input '${k}' must have rank ${rank}, got [${info.shape}]`);
    return info;
  };
  const m = loadModel(modelPath, { components: [comp], device, dtype, configFrom });
  try {
    const dev = hs.resolveDevice(device);
    const T = (k: string, rank?: number) => {
      const info = need(k, rank);
      return hs.tensor(st.readF32(k), info.shape, { device: dev });
    };
    let once: () => Promise<Record<string, hs.Tensor>>;
    if (comp === 'unet') {
      const net = m.unet!;
      const sample = T('sample', 4), ehs = T('encoder_hidden_states', 3);
      const ts = Array.from(st.readF32((need('timestep'), 'timestep')));
      const sdxl = net.isSDXL;
      const textEmbeds = sdxl ? T('text_embeds', 2) : undefined, timeIds = sdxl ? T('time_ids', 2) : undefined;
      once = async () => ({ out: net.forward({ sample, timesteps: ts.length === 1 ? ts[0] : ts, encoderHiddenStates: ehs, textEmbeds, timeIds }) });
    } else if (comp === 'vae') {
      const vae = m.vae!;
      if (component === 'vae.decode') {
        const z = T('latents', 4);
        once = async () => ({ sample: vae.decode(z) });
      } else {
        const x = T('sample', 4);
        once = async () => {
          const r = vae.encode(x);
          return { mean: r.mean, logvar: r.logvar };
        };
      }
    } else {
      const enc = comp === 'text_encoder' ? m.textEncoder! : m.textEncoder2!;
      if (!enc) throw new Error(`${modelPath}: no ${comp}`);
      const info = need('input_ids', 2);
      // ids as whole numbers in int32's range (an I64 id of 2^32 + 320 had wrapped to 320, F32 1.5 truncated)
      const raw: ArrayLike<number | bigint> = st.info('input_ids').dtype === 'I64' ? st.readI64('input_ids') : st.readF32('input_ids');
      const ids = Int32Array.from(raw as ArrayLike<number>, (v, i) => {
        const x = Number(v);
        if (!Number.isInteger(x) || x < -(2 ** 31) || x >= 2 ** 31) throw new Error(`${inputs}: input_ids[${i}] = ${String(v)} is not a token id`);
        return x;
      });
      once = async () => {
        const r = enc.forward(ids, info.shape[0], { device: dev });
        const o: Record<string, hs.Tensor> = {
          last_hidden_state: r.lastHiddenState, penultimate_hidden_state: r.hiddenStates[r.hiddenStates.length - 2], pooler_output: r.pooled,
        };
        if (r.textEmbeds) o.text_embeds = r.textEmbeds;
        return o;
      };
    }
    const outs = await once();
    const save: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    for (const [k, t] of Object.entries(outs)) save[k] = { dtype: 'F32', shape: [...t.shape], data: (await t.data()) as Float32Array };
    saveSafetensors(outFile, save, { producer: 'hypersd run', component });
    const times: number[] = [];
    for (let i = 0; i < repeat; i++) {
      const t0 = process.hrtime.bigint();
      const r = await once();
      for (const t of Object.values(r)) await t.data();
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
      for (const t of Object.values(r)) t.dispose();
    }
    const line = `${component}: wrote ${Object.keys(save).join(', ')} to ${outFile}`;
    if (repeat > 0) {
      times.sort((a, b) => a - b);
      process.stdout.write(`${line}; median ${times[Math.floor(times.length / 2)].toFixed(3)} s per run over ${repeat} runs\n`);
    } else process.stdout.write(line + '\n');
  } finally {
    m.dispose();
    st.close();
  }
}
