/**
 * The teacher-from-scratch run behind bench/RESULTS.md ("Training: teacher from scratch"): trains the tiny
 * SD1.5-architecture teacher on the procedural shapes dataset (lib/train/teacher.ts, the same code as
 * `hypersd train-teacher`), then writes
 *   bench/teacher_grid.png     25-step DDIM samples for fixed prompts, a real dataset image first in each row
 *   bench/teacher_report.json  loss tables, wall times, prompt-adherence figures
 *   bench/teacher_section.md   the markdown section, also put into bench/RESULTS.md in place of an earlier
 *                              "## Training: teacher from scratch" section (other sections are left as they are)
 * Usage: HYPERSD_ADDON=... npx tsx bench/teacher.ts [--out dir] [--steps N] [--vae-steps N] [--batch N] ...
 *        npx tsx bench/teacher.ts --from-report bench/teacher_report.json   (only re-render the markdown)
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseArgs, Opts } from '../lib/cli/args';
import { trainTeacher, evaluateTeacher, type TeacherReport } from '../lib/train/teacher';

interface Sweep { guidance: number; shape: number; background: number }

async function run(): Promise<void> {
  const o = new Opts(parseArgs(process.argv.slice(2)));
  const from = o.str('from-report');
  if (from) {
    // re-render the markdown of a finished run (bench/teacher_report.json) without training again
    o.done();
    const saved = JSON.parse(fs.readFileSync(from, 'utf8')) as TeacherReport & { guidanceSweep: Sweep[] };
    const md = section(saved, saved.guidanceSweep);
    fs.writeFileSync(path.join(__dirname, 'teacher_section.md'), md);
    putSection(path.join(__dirname, 'RESULTS.md'), md);
    process.stdout.write(md);
    return;
  }
  const out = o.str('out') ?? path.join(os.tmpdir(), 'hypersd-teacher');
  const opts = {
    out, seed: o.int('seed'), unetSteps: o.int('steps'), vaeSteps: o.int('vae-steps'), unetBatch: o.int('batch'),
    vaeBatch: o.int('vae-batch'), cacheSize: o.int('cache-size'), unetLr: o.num('lr'), vaeLr: o.num('vae-lr'),
    logEvery: o.int('log-every') ?? 100, evaluate: { guidance: o.num('guidance'), samplesPerPrompt: o.int('samples-per-prompt') },
  };
  o.done();
  const logFile = path.join(__dirname, 'teacher_log.txt');
  fs.writeFileSync(logFile, '');
  const t0 = Date.now();
  const r = await trainTeacher({
    ...opts,
    log: (line) => {
      const l = `[${((Date.now() - t0) / 1000).toFixed(0)} s] ${line}`;
      fs.appendFileSync(logFile, l + '\n');
      process.stdout.write(l + '\n');
    },
  });
  const ev = r.evaluation!;
  fs.writeFileSync(path.join(__dirname, 'teacher_grid.png'), ev.gridPng);
  const sweep: Sweep[] = [];
  for (const g of [1, 2, 3, 5, 7.5]) {
    const e = g === ev.guidance ? ev : await evaluateTeacher(out, { guidance: g, gridRows: 1, gridSamples: 1, seed: opts.seed ?? 0 });
    sweep.push({ guidance: g, shape: e.shapeColourMatch, background: e.backgroundMatch });
  }
  const { gridPng: _png, ...evJson } = ev;
  fs.writeFileSync(path.join(__dirname, 'teacher_report.json'), JSON.stringify({ ...r, evaluation: evJson, guidanceSweep: sweep }, null, 2) + '\n');
  const md = section(r, sweep);
  fs.writeFileSync(path.join(__dirname, 'teacher_section.md'), md);
  putSection(path.join(__dirname, 'RESULTS.md'), md);
  process.stdout.write(md);
  process.stdout.write(`sweep: ${JSON.stringify(sweep)}\n`);
}

function section(r: TeacherReport, sweep: Sweep[]): string {
  const ev = r.evaluation!;
  const min = (ms: number) => `${(ms / 60000).toFixed(1)} min`;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const lines: string[] = [];
  lines.push('## Training: teacher from scratch', '');
  lines.push(`Machine: ${os.cpus()[0]?.model ?? 'cpu'}, ${r.threads} threads, ${new Date().toISOString().slice(0, 10)}.`);
  lines.push(`Command: \`npx tsx bench/teacher.ts ${process.argv.slice(2).join(' ')}\` (the same code as \`hypersd train-teacher --out dir\`).`, '');
  lines.push(`Model (SD1.5 architecture, diffusers configs): UNet ${r.params.unet.toLocaleString('en')} parameters, VAE ${r.params.vae.toLocaleString('en')}, ` +
    `CLIP text encoder ${r.params.textEncoder.toLocaleString('en')}; 64x64 images, 4x8x8 latents.`, '');
  lines.push('| stage | steps x batch | wall time |', '|---|---|---|');
  lines.push(`| VAE (reconstruction MSE + 1e-4 KL) | ${r.vae.steps} x ${r.vae.batch} | ${min(r.vae.ms)} |`);
  lines.push(`| latent cache (${r.cache.size} images) + scaling factor | | ${min(r.cache.ms)} |`);
  lines.push(`| text encoder + UNet (epsilon MSE, scaled_linear) | ${r.unet.steps} x ${r.unet.batch} | ${min(r.unet.ms)} |`);
  lines.push(`| evaluation (${ev.samples + 32} samples, ${ev.steps}-step DDIM, CFG ${ev.guidance}) | | ${min(ev.ms)} |`);
  lines.push(`| **total** | | **${min(r.totalMs)}** (CPU time ${min(r.cpuMs)} on ${r.threads} threads) |`, '');
  lines.push(`VAE: measured scaling_factor ${r.vae.scalingFactor}; held-out reconstruction MSE ${r.vae.reconMse.toFixed(4)} (pixels in [-1, 1]).`, '');
  lines.push('Loss curves: each row is the mean over the steps since the previous row (one batch per step). VAE: total / reconstruction MSE / KL per latent element; UNet + text encoder: min-SNR-5-weighted epsilon MSE.', '');
  lines.push('| VAE step | loss | rec | KL |', '|---|---|---|---|');
  for (const v of r.vae.losses) lines.push(`| ${v.step} | ${v.loss.toFixed(4)} | ${v.extra?.rec.toFixed(4)} | ${v.extra?.kl.toFixed(3)} |`);
  const u = r.unet.losses, third = Math.ceil(u.length / 3);
  lines.push('', '| UNet step | loss | UNet step | loss | UNet step | loss |', '|---|---|---|---|---|---|');
  for (let i = 0; i < third; i++)
    lines.push(`| ${[u[i], u[i + third], u[i + 2 * third]].map((x) => (x ? `${x.step} | ${x.loss.toFixed(4)}` : ' | ')).join(' | ')} |`);
  lines.push('', '![teacher grid](teacher_grid.png)', '');
  lines.push('Grid: one row per prompt; first column a real dataset image of the caption, then 4 samples (25-step DDIM, ' +
    `trailing, CFG ${ev.guidance}, seeds fixed). Rows:`, '');
  ev.gridPrompts.forEach((p, i) => lines.push(`${i + 1}. ${p}`));
  lines.push('', `Prompt adherence: ${ev.prompts} single-shape prompts (every colour x shape, background drawn at random), ` +
    `${ev.samples / ev.prompts} samples each. Every pixel is classified to the nearest palette colour; the background is the majority ` +
    'colour of the 3-pixel border; the shape colour is the majority colour of the other pixels.', '');
  lines.push('| check | teacher samples | real images of the same captions | their VAE reconstructions |', '|---|---|---|---|');
  lines.push(`| shape colour = caption colour | **${pct(ev.shapeColourMatch)}** | ${pct(ev.realShapeColourMatch)} | ${pct(ev.vaeShapeColourMatch)} |`);
  lines.push(`| background colour = caption background | ${pct(ev.backgroundMatch)} | | |`, '');
  const miss = new Map<string, number>();
  for (const p of ev.perPrompt) for (const x of p.readShapes) if (x !== p.shape) miss.set(`${p.shape} read as ${x ?? 'no shape'}`, (miss.get(`${p.shape} read as ${x ?? 'no shape'}`) ?? 0) + 1);
  lines.push('The check reads colours only: shape identity and the spatial relations of the captions are not measured ' +
    "(the samples' outlines are rounder and softer than the real shapes, though triangles, squares and circles are told apart " +
    'in most of them; see the grid).', '');
  lines.push(`Misses: ${[...miss].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} (${n})`).join(', ')}.`, '');
  lines.push('The same check at other guidance scales (same prompts and seeds):', '');
  lines.push(`| guidance | ${sweep.map((x) => x.guidance).join(' | ')} |`, `|---|${sweep.map(() => '---|').join('')}`);
  lines.push(`| shape colour | ${sweep.map((x) => pct(x.shape)).join(' | ')} |`);
  lines.push(`| background | ${sweep.map((x) => pct(x.background)).join(' | ')} |`, '');
  return lines.join('\n') + '\n';
}

/** Replaces this section of RESULTS.md (up to the next "## " heading), or appends it. */
function putSection(file: string, md: string): void {
  const title = '## Training: teacher from scratch';
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Results\n';
  const at = text.indexOf(title);
  if (at < 0) {
    fs.writeFileSync(file, `${text.replace(/\n*$/, '')}\n\n${md}`);
    return;
  }
  const next = text.indexOf('\n## ', at + title.length);
  fs.writeFileSync(file, text.slice(0, at) + md + (next < 0 ? '' : `\n${text.slice(next + 1)}`));
}

run().catch((e) => {
  process.stderr.write(`bench/teacher: ${(e as Error).stack}\n`);
  process.exitCode = 1;
});
