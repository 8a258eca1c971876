/**
 * The `hypersd` command.
 *   hypersd generate --model <folder|file> --prompt "..." --out out.png [options]
 *   hypersd info <file|folder>
 *   hypersd run <component> --model <folder|file> --inputs in.safetensors --out out.safetensors [--repeat N]
 * Errors are one clear line on stderr and a non-zero exit code.
 */
import * as path from 'path';
import { parseArgs, Opts, checkInFolder, checkOutFile } from './args';
import * as hs from '../tensor';
import { loadPipeline, makeImage, type GenerateOptions, type GeneratedImage } from '../pipelines/sd';
import { PRESETS } from '../pipelines/presets';
import { SafeTensors } from '../io/safetensors';
import { describeFile } from './info';
import { runComponent } from './run';
import { trainTeacherCommand, TRAIN_USAGE } from './train';
import { drawText } from './font';
import type { SamplerName } from '../schedulers';

const USAGE = `usage:
  hypersd generate --model <folder|file> --prompt "..." [--out out.png] [--negative "..."]
                   [--tokenizer folder] [--lora file[:scale]]... [--lora-mode fuse|runtime]
                   [--preset name] [--sampler ddim|tcd|lcm|euler|euler_a] [--steps N] [--eta x]
                   [--guidance g] [--seed s] [--rng philox|torch-cpu] [--width W] [--height H]
                   [--num-images N] [--latents init.safetensors] [--image init.png --strength s]
                   [--grid 1,2,4,8] [--device auto|cpu|cuda] [--dtype f32|bf16|f16] [--config-from folder]
                   [--cpu-math f32|bf16]
  hypersd info <file|folder>
  hypersd run <unet|text_encoder|text_encoder_2|vae.decode|vae.encode> --model <folder|file>
              --inputs in.safetensors --out out.safetensors [--repeat N] [--device ..] [--dtype ..]
${TRAIN_USAGE}
presets: ${Object.keys(PRESETS).join(', ')}`;

export async function main(argv: string[]): Promise<void> {
  try {
    const p = parseArgs(argv, new Set(['help', 'no-progress', 'no-eval', 'quiet', 'resume']));
    const cmd = p._[0];
    if (!cmd || p.opts.has('help')) {
      process.stdout.write(USAGE + '\n');
      if (!cmd && !p.opts.has('help')) process.exitCode = 2;
      return;
    }
    const o = new Opts(p);
    // positional arguments past the command's own (a word left out of a quoted prompt had been dropped)
    const positionals = cmd === 'generate' || cmd === 'train-teacher' ? 1 : 2;
    if (p._.length > positionals) throw new Error(`${cmd}: unexpected argument '${p._[positionals]}' (quote values with spaces)`);
    if (cmd === 'generate') await generate(o);
    else if (cmd === 'info') {
      if (!p._[1]) throw new Error('info needs a file or folder');
      o.done();
      process.stdout.write(describeFile(p._[1]) + '\n');
    } else if (cmd === 'run') {
      if (!p._[1]) throw new Error('run needs a component: unet, text_encoder, text_encoder_2, vae.decode or vae.encode');
      await runComponent(p._[1], o);
    } else if (cmd === 'train-teacher') await trainTeacherCommand(o);
    else throw new Error(`unknown command '${cmd}' (generate, info, run)`);
  } catch (e) {
    process.stderr.write(`hypersd: ${(e as Error).message.split('\n')[0]}\n`);
    process.exitCode = 1;
  }
}

function progressBar(enabled: boolean) {
  let start = Date.now();
  return {
    reset() { start = Date.now(); },
    update(step: number, steps: number, label = '') {
      if (!enabled) return;
      const el = (Date.now() - start) / 1000;
      const rate = step / Math.max(el, 1e-9);
      const eta = (steps - step) / Math.max(rate, 1e-9);
      const w = 24, fill = Math.round((step / steps) * w);
      process.stderr.write(`\r${label}[${'#'.repeat(fill)}${'.'.repeat(w - fill)}] ${step}/${steps} ${rate.toFixed(2)} steps/s ETA ${eta.toFixed(1)}s   `);
      if (step === steps) process.stderr.write('\n');
    },
  };
}

async function generate(o: Opts): Promise<void> {
  const model = o.req('model');
  const prompt = o.req('prompt');
  const out = o.str('out') ?? 'out.png';
  const device = o.choice('device', ['auto', 'cpu', 'cuda'] as const) ?? 'auto';
  const dtype = o.choice('dtype', ['f32', 'bf16', 'f16'] as const);
  const loras = o.all('lora');
  const loraMode = o.choice('lora-mode', ['fuse', 'runtime'] as const) ?? 'fuse';
  const grid = o.str('grid');
  const latentsFile = o.str('latents');
  const g: GenerateOptions = {
    prompt,
    negativePrompt: o.str('negative'),
    preset: o.str('preset'),
    sampler: o.str('sampler') as SamplerName | undefined,
    steps: o.int('steps'),
    eta: o.num('eta'),
    guidance: o.num('guidance'),
    seed: o.int('seed') ?? 0,
    rng: o.choice('rng', ['philox', 'torch-cpu'] as const),
    width: o.int('width'),
    height: o.int('height'),
    numImages: o.int('num-images'),
    image: o.str('image'),
    strength: o.num('strength'),
  };
  const tokenizer = o.str('tokenizer');
  const configFrom = o.str('config-from');
  if (configFrom !== undefined) checkInFolder('--config-from', configFrom);
  const noProgress = o.flag('no-progress');
  // --cpu-math bf16: the CPU's linear layers and attention take bf16 inputs where it has AVX512_BF16 (HYPERSD_CPU_MATH).
  const cpuMath = o.str('cpu-math');
  if (cpuMath !== undefined) {
    if (cpuMath !== 'f32' && cpuMath !== 'bf16') throw new Error(`--cpu-math must be f32 or bf16, got '${cpuMath}'`);
    if (cpuMath === 'bf16') process.env.HYPERSD_CPU_MATH = 'bf16';
    else delete process.env.HYPERSD_CPU_MATH;
  }
  o.done();
  // The output is checked before any work: a generation that ends in a failed write is minutes lost on a CPU.
  if (!/\.png$/i.test(out)) throw new Error(`--out: hypersd writes PNG images, so the file name must end in .png, got '${out}'`);
  checkOutFile('--out', out);
  const pipe = await loadPipeline(model, { device, dtype, tokenizer, configFrom });
  try {
    for (const spec of loras) {
      const m = /^(.*?)(?::([0-9.+-eE]+))?$/.exec(spec)!;
      const scale = m[2] !== undefined ? Number(m[2]) : 1;
      if (!Number.isFinite(scale)) throw new Error(`--lora ${spec}: bad scale`);
      const l = await pipe.loadLora(m[1], { scale, mode: loraMode, name: path.basename(m[1]) });
      if (l.warnings.length) process.stderr.write(`hypersd: warning: ${l.warnings.length} keys in ${m[1]} match no module (e.g. ${l.warnings.slice(0, 3).join(', ')})\n`);
    }
    if (latentsFile) {
      const st = SafeTensors.open(latentsFile);
      if (!st.has('latents')) throw new Error(`${latentsFile}: no tensor named 'latents'`);
      g.latents = st.readF32('latents');
      st.close();
    }
    const bar = progressBar(!noProgress && process.stderr.isTTY !== false);
    if (grid) {
      const counts = grid.split(',').map((s) => Number(s));
      if (counts.some((c) => !Number.isInteger(c) || c < 1)) throw new Error(`--grid must be a comma list of step counts, got ${grid}`);
      const imgs: GeneratedImage[] = [];
      for (const steps of counts) {
        bar.reset();
        const r = await pipe.generate({ ...g, steps, numImages: 1, onProgress: (pr) => bar.update(pr.step, pr.steps, `${steps} steps `) });
        imgs.push(r.images[0]);
      }
      const labels = counts.map((c) => `${c} step${c > 1 ? 's' : ''}`);
      const sheet = composeGrid(imgs, labels);
      await sheet.toPNG(out);
      process.stdout.write(`${out}: ${sheet.width}x${sheet.height} grid of ${counts.join(', ')} steps\n`);
      return;
    }
    const r = await pipe.generate({ ...g, onProgress: (pr) => bar.update(pr.step, pr.steps) });
    const files: string[] = [];
    for (let i = 0; i < r.images.length; i++) {
      const f = r.images.length === 1 ? out : out.replace(/(\.png)?$/i, `-${i}.png`);
      await r.images[i].toPNG(f);
      files.push(f);
    }
    process.stdout.write(`${files.join(', ')}: ${r.images[0].width}x${r.images[0].height}, timesteps [${r.timesteps.join(', ')}], text ${r.timings.textMs} ms, unet ${r.timings.unetMs} ms, vae ${r.timings.vaeMs} ms\n`);
  } finally {
    pipe.dispose();
  }
}

/** Images side by side with a label strip on top. */
export function composeGrid(imgs: GeneratedImage[], labels: string[]): GeneratedImage {
  const h = Math.max(...imgs.map((i) => i.height));
  const scale = Math.max(1, Math.floor(h / 128));
  const strip = 7 * scale + 6;
  const W = imgs.reduce((a, i) => a + i.width, 0), H = h + strip;
  const data = new Uint8Array(W * H * 3).fill(255);
  const sheet = makeImage(W, H, data);
  let x0 = 0;
  imgs.forEach((img, k) => {
    for (let y = 0; y < img.height; y++)
      data.set(img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), ((y + strip) * W + x0) * 3);
    drawText(sheet, labels[k], x0 + 3, 3, scale, [0, 0, 0]);
    x0 += img.width;
  });
  return sheet;
}

