/**
 * `hypersd train-teacher --out <dir> [options]`: trains the tiny SD1.5-architecture teacher from scratch on the
 * procedural shapes dataset (lib/train/teacher.ts) with a progress bar, and writes a diffusers folder that
 * `hypersd generate --model <dir>` and loadPipeline run.
 */
import { Opts } from './args';
import { trainTeacher, type TeacherOptions } from '../train/teacher';

export const TRAIN_USAGE = `  hypersd train-teacher --out <dir> [--steps N (UNet, 6000)] [--vae-steps N (2500)] [--batch N (16)]
                        [--vae-batch N (8)] [--lr x (1e-3)] [--vae-lr x (1e-3)] [--cache-size N (4096)]
                        [--offset-noise x (0.1)] [--snr-gamma g (5; 0 = plain MSE)]
                        [--vae <trained vae/ folder>] [--seed s] [--threads N] [--checkpoint-every N] [--resume]
                        [--no-eval] [--guidance g (2)]
                        [--samples-per-prompt N (2)] [--no-progress] [--quiet]`;

export async function trainTeacherCommand(o: Opts): Promise<void> {
  const out = o.req('out');
  const noProgress = o.flag('no-progress') || process.stderr.isTTY === false;
  const quiet = o.flag('quiet');
  const evaluate = !o.flag('no-eval');
  const opts: TeacherOptions = {
    out,
    seed: o.int('seed'),
    vae: o.str('vae'),
    unetSteps: o.int('steps'),
    vaeSteps: o.int('vae-steps'),
    unetBatch: o.int('batch'),
    vaeBatch: o.int('vae-batch'),
    unetLr: o.num('lr'),
    vaeLr: o.num('vae-lr'),
    cacheSize: o.int('cache-size'),
    offsetNoise: o.num('offset-noise'),
    snrGamma: o.num('snr-gamma'),
    threads: o.int('threads'),
    checkpointEvery: o.int('checkpoint-every'),
    resume: o.flag('resume'),
    evaluate: evaluate ? { guidance: o.num('guidance'), samplesPerPrompt: o.int('samples-per-prompt') } : false,
  };
  o.done();
  const ev = typeof opts.evaluate === 'object' ? opts.evaluate : undefined;
  // (checked before the ~45 minutes of training: zero batches had failed deep inside, zero samples per prompt
  // only at the evaluation after training, zero threads was ignored)
  for (const [flag, v] of [['steps', opts.unetSteps], ['vae-steps', opts.vaeSteps], ['lr', opts.unetLr], ['vae-lr', opts.vaeLr],
    ['offset-noise', opts.offsetNoise], ['snr-gamma', opts.snrGamma], ['checkpoint-every', opts.checkpointEvery],
    ['guidance', ev?.guidance], ['seed', opts.seed]] as [string, number | undefined][])
    if (v !== undefined && !(v >= 0)) throw new Error(`option --${flag} must be >= 0, got ${v}`);
  for (const [flag, v] of [['batch', opts.unetBatch], ['vae-batch', opts.vaeBatch], ['cache-size', opts.cacheSize], ['threads', opts.threads],
    ['samples-per-prompt', ev?.samplesPerPrompt]] as [string, number | undefined][])
    if (v !== undefined && !(v >= 1)) throw new Error(`option --${flag} must be >= 1, got ${v}`);
  let start = Date.now(), stage = '';
  opts.onProgress = ({ stage: st, step, steps, loss }) => {
    if (noProgress) return;
    if (st !== stage) {
      stage = st;
      start = Date.now();
    }
    const el = (Date.now() - start) / 1000, eta = (el / step) * (steps - step), w = 24, fill = Math.round((step / steps) * w);
    const lossText = st === 'cache' ? '' : ` loss ${loss.toFixed(4)}`;
    process.stderr.write(`\r${st.padEnd(5)} [${'#'.repeat(fill)}${'.'.repeat(w - fill)}] ${step}/${steps}${lossText} ETA ${eta.toFixed(0)}s   `);
    if (step === steps) process.stderr.write('\n');
  };
  opts.log = quiet ? undefined : (line) => {
    if (noProgress) process.stdout.write(line + '\n');
  };
  const r = await trainTeacher(opts);
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  process.stdout.write(`${out}: teacher written (vae ${r.vae.steps} steps in ${s(r.vae.ms)}, cache ${s(r.cache.ms)}, unet ${r.unet.steps} steps in ${s(r.unet.ms)}; total ${s(r.totalMs)})\n`);
  if (r.evaluation) {
    const e = r.evaluation;
    process.stdout.write(`prompt adherence: shape colour ${(100 * e.shapeColourMatch).toFixed(1)}% of ${e.samples} samples, background ${(100 * e.backgroundMatch).toFixed(1)}%; grid in ${out}/training/grid.png\n`);
  }
}
