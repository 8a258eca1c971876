/**
 * bench/e2e: full-size SD1.5 (512x512) and SDXL (1024x1024) text-to-image with random weights, 1 and 4 steps:
 * seconds per image split into text encoding, UNet steps and VAE decode, and peak RSS.
 *   npx tsx bench/e2e.ts [--only sd15|sdxl] [--dtype f32|bf16|f16] [--steps 1,4] [--size N] [--device cpu|cuda] [--reps 1]
 *   [--vae-dtype f32|bf16|f16] (VAE weight storage; on a GPU the VAE computes in it)
 * Needs a CLIP vocabulary folder (vocab.json + merges.txt): --tokenizer dir (default ../shared/fixtures/tokenizer).
 */
import * as path from 'path';
import * as hs from '../lib';
import { builtinConfigs } from '../lib/models/configs';
import { UNet2DConditionModel, type UNetConfig } from '../lib/models/unet';
import { AutoencoderKL, type VAEConfig } from '../lib/models/vae';
import { CLIPTextModel, type CLIPTextConfig } from '../lib/models/clip';
import { CLIPTokenizer } from '../lib/models/clip_tokenizer';
import { StableDiffusionPipeline } from '../lib/pipelines/sd';
import type { LoadedModel } from '../lib/models/load';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1] : d; };
const only = opt('only', 'all');
const dtype = opt('dtype', 'bf16') as hs.DType;
const device = hs.resolveDevice(opt('device', 'cpu') as hs.DeviceName);
const reps = Number(opt('reps', '1'));
const vaeDtype = opt('vae-dtype', 'f32') as hs.DType;
const stepsList = opt('steps', '1,4').split(',').map(Number);
const tokDir = path.resolve(opt('tokenizer', path.join(__dirname, '../../shared/fixtures/tokenizer')));

function randomModel(kind: 'sd15' | 'sdxl'): LoadedModel {
  const c = builtinConfigs(kind);
  const unet = new UNet2DConditionModel(c.unet as UNetConfig);
  const vae = new AutoencoderKL(c.vae as VAEConfig);
  const te = new CLIPTextModel(c.text_encoder as CLIPTextConfig, 'text_encoder');
  const te2 = kind === 'sdxl' ? new CLIPTextModel(c.text_encoder_2 as CLIPTextConfig, 'text_encoder_2', true) : undefined;
  let seed = 1;
  for (const p of [unet.params, te.params, te2?.params]) p?.initRandom(seed++, { dtype, device });
  vae.params.initRandom(seed++, { dtype: vaeDtype, device });
  return {
    kind, layout: 'diffusers', path: `random ${kind}`, unet, vae, textEncoder: te, textEncoder2: te2,
    configs: c as LoadedModel['configs'], tokenizerDirs: {}, reports: {},
    dispose() { unet.dispose(); vae.dispose(); te.dispose(); te2?.dispose(); },
  };
}

(async () => {
  console.log(`hypersd bench/e2e  ${new Date().toISOString()}  threads=${hs.threads()}  weights ${dtype} (VAE ${vaeDtype})  device=${device}`);
  for (const kind of ['sd15', 'sdxl'] as const) {
    if (only !== 'all' && only !== kind) continue;
    // The random weights are filled by queued ops: wait for them, so the first image's text encoding does not
    // carry the whole model's initialisation (SDXL: ~12 s).
    const t0 = Date.now();
    const m = randomModel(kind);
    await hs.sync(device);
    console.log(`${kind}: random weights ${((Date.now() - t0) / 1000).toFixed(1)} s (not counted below)`);
    const tok = CLIPTokenizer.fromFiles(path.join(tokDir, 'vocab.json'), path.join(tokDir, 'merges.txt'));
    const tok2 = kind === 'sdxl' ? CLIPTokenizer.fromFiles(path.join(tokDir, 'vocab.json'), path.join(tokDir, 'merges.txt'), { padToken: '!' }) : null;
    const pipe = new StableDiffusionPipeline(m, tok, tok2, { modules: {} });
    const size = Number(opt('size', kind === 'sdxl' ? '1024' : '512'));
    for (const steps of stepsList) for (let rep = 0; rep < reps; rep++) {
      const t0 = Date.now(), ru0 = process.resourceUsage();
      const r = await pipe.generate({ prompt: 'a photo of a cat', steps, guidance: 0, sampler: 'ddim', width: size, height: size, seed: 1 });
      const total = (Date.now() - t0) / 1000;
      const ru = process.resourceUsage(), rss = ru.maxRSS / 1024;
      const faults = `${ru.minorPageFault - ru0.minorPageFault} page faults, ${((ru.systemCPUTime - ru0.systemCPUTime) / 1e6).toFixed(1)} s system time`;
      console.log(`${kind} ${size}x${size} ${steps} step(s): ${total.toFixed(1)} s/image = text ${(r.timings.textMs / 1000).toFixed(2)} s + UNet ${(r.timings.unetMs / 1000).toFixed(1)} s + VAE ${(r.timings.vaeMs / 1000).toFixed(1)} s; peak RSS ${rss.toFixed(0)} MiB, ${faults}`);
    }
    pipe.dispose();
  }
})();
