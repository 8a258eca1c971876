// The teacher from scratch, a few steps of each stage through the `hypersd train-teacher` command: it writes a
// diffusers folder that loadPipeline runs, and the evaluation (grid + prompt adherence) runs on it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as hs from '../../lib';
import { main } from '../../lib/cli/main';
import { loadPipeline } from '../../lib/pipelines/sd';
import { decodePNG } from '../../lib/io/png';
import { evaluateTeacher, trainTeacher } from '../../lib/train/teacher';
import { escapeRe, rejects } from '../helpers/check';

hs.setPoison(false);

test('train-teacher: a short run writes a diffusers folder that loadPipeline runs and the evaluation reads', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-teacher-'));
  const out = path.join(dir, 'teacher');
  try {
    const write = process.stdout.write;
    let printed = '';
    process.stdout.write = ((s: string) => { printed += s; return true; }) as typeof process.stdout.write;
    try {
      await main(['train-teacher', '--out', out, '--steps', '2', '--vae-steps', '2', '--batch', '2', '--vae-batch', '2',
        '--cache-size', '8', '--no-eval', '--no-progress', '--quiet', '--seed', '3', '--checkpoint-every', '1']);
    } finally {
      process.stdout.write = write;
    }
    assert.is(process.exitCode ?? 0, 0, 'exit code');
    assert.match(printed, /teacher written \(vae 2 steps .* unet 2 steps/);
    for (const f of ['model_index.json', 'unet/config.json', 'unet/diffusion_pytorch_model.safetensors', 'vae/config.json',
      'vae/diffusion_pytorch_model.safetensors', 'text_encoder/config.json', 'text_encoder/model.safetensors',
      'tokenizer/vocab.json', 'tokenizer/merges.txt', 'tokenizer/tokenizer_config.json', 'scheduler/scheduler_config.json',
      'training/latents.safetensors', 'training/report.json', 'training/vae/config.json', 'training/unet_state.safetensors'])
      assert.ok(fs.existsSync(path.join(out, f)), `${f} written`);
    const vaeCfg = JSON.parse(fs.readFileSync(path.join(out, 'vae/config.json'), 'utf8'));
    assert.ok(vaeCfg.scaling_factor > 0 && vaeCfg.scaling_factor !== 0.18215, 'scaling_factor measured from the latents');
    const report = JSON.parse(fs.readFileSync(path.join(out, 'training/report.json'), 'utf8'));
    assert.is(report.unet.losses.length, 2);
    assert.ok(report.unet.losses.every((r: { loss: number }) => Number.isFinite(r.loss)));

    const pipe = await loadPipeline(out, { device: 'cpu' });
    const r = await pipe.generate({ prompt: 'a red circle on a blue background', steps: 2, guidance: 3, seed: 1, width: 64, height: 64 });
    assert.equal([r.images[0].width, r.images[0].height], [64, 64]);
    assert.equal(r.latentShape, [1, 4, 8, 8]);
    pipe.dispose();

    // an interrupted run picks up the finished VAE, the cache and the last UNet checkpoint
    process.stdout.write = ((s: string) => { printed += s; return true; }) as typeof process.stdout.write;
    try {
      await main(['train-teacher', '--out', out, '--steps', '3', '--batch', '2', '--cache-size', '8', '--no-eval', '--no-progress',
        '--quiet', '--seed', '3', '--resume']);
    } finally {
      process.stdout.write = write;
    }
    const again = JSON.parse(fs.readFileSync(path.join(out, 'training/report.json'), 'utf8'));
    assert.is(again.vae.steps, 0, 'the VAE is not trained again');
    assert.equal(again.unet.losses.map((r: { step: number }) => r.step), [3], 'only step 3 ran');

    const ev = await evaluateTeacher(out, { samplesPerPrompt: 1, steps: 1, prompts: 3, gridRows: 2, gridSamples: 1 });
    assert.is(ev.samples, 3);
    assert.ok(ev.shapeColourMatch >= 0 && ev.shapeColourMatch <= 1);
    assert.is(ev.realShapeColourMatch, 1, 'the reader finds the colour in real images');
    const grid = decodePNG(ev.gridPng);
    assert.ok(grid.width > 2 * 64 && grid.height > 2 * 64, `grid ${grid.width}x${grid.height}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('train-teacher: bad options are one clear error', async () => {
  const err = process.stderr.write;
  let said = '';
  process.stderr.write = ((s: string) => { said += s; return true; }) as typeof process.stderr.write;
  try {
    await main(['train-teacher', '--steps', '2']);
    assert.match(said, /missing required option --out/);
    said = '';
    await main(['train-teacher', '--out', '/tmp/x', '--stepz', '2']);
    assert.match(said, /unknown option --stepz/);
  } finally {
    process.stderr.write = err;
    process.exitCode = 0;
  }
});


/** The smallest run: one step of each stage, a 2-image cache, no evaluation. */
const TINY = { vaeSteps: 1, vaeBatch: 1, cacheSize: 2, unetSteps: 1, unetBatch: 1, evaluate: false };

test('trainTeacher: every option is checked at the start, one Error naming it, before anything is written', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-teacher-opts-'));
  const out = path.join(dir, 'teacher');
  try {
    // (the library had checked none of these: NaN offset noise meant none, snrGamma -1 plain MSE, a caption
    // dropout of 2 dropped every caption, vaeSteps -5 skipped the VAE, threads 0 was ignored, a NaN logvar trained
    // nothing and wrote a model; emaDecay, unetLr, unetBatch and the UNet channels failed only after the VAE stage)
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ offsetNoise: NaN }, /option offsetNoise must be a finite number >= 0/],
      [{ snrGamma: -1 }, /option snrGamma must be a finite number >= 0/],
      [{ captionDropout: 2 }, /option captionDropout must be a number in \[0, 1\], got 2/],
      [{ vaeSteps: -5 }, /option vaeSteps must be an integer >= 0, got -5/],
      [{ threads: 0 }, /option threads must be an integer from 1 to 1024, got 0/],
      [{ vaeInitLogvar: NaN }, /option vaeInitLogvar must be a finite number/],
      [{ emaDecay: 2 }, /option emaDecay must be a number in \[0, 1\], got 2/],
      [{ unetLr: -1 }, /option unetLr must be a finite number >= 0, got -1/],
      [{ unetBatch: 0 }, /option unetBatch must be an integer >= 1, got 0/],
      [{ unetSteps: 1.5 }, /option unetSteps must be an integer >= 0, got 1.5/],
      [{ seed: -1 }, /option seed must be an integer from 0 to/],
      [{ vaeChannels: [16, 16, 32] }, /option vaeChannels must be a list of four positive integers/],
      [{ unetChannels: [30, 64] }, /options unetChannels, textWidth make an invalid unet: .*30 channels do not split into 8 groups/],
      [{ textWidth: 30 }, /option textWidth must be a multiple of 4/],
      [{ evaluate: { samplesPerPrompt: 0 } }, /option evaluate: option samplesPerPrompt must be an integer >= 1, got 0/],
      [{ resume: 'yes' }, /option resume must be a boolean/],
      [{ unetStep: 3 }, /unknown option unetStep/],
    ];
    for (const [o, re] of bad) {
      await rejects(() => trainTeacher({ out, ...TINY, ...o } as never), new RegExp(`^trainTeacher: ${re.source}`), JSON.stringify(o));
      assert.ok(!fs.existsSync(out), `${JSON.stringify(o)}: nothing written`);
    }
    await rejects(() => evaluateTeacher(out, { guidance: -1 }), /^evaluateTeacher: option guidance must be a finite number >= 0, got -1/, 'evaluateTeacher');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('trainTeacher resume: a damaged vae/config.json names the file; a run whose every step is skipped is an Error, not a model', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-teacher-nan-'));
  const out = path.join(dir, 'teacher');
  try {
    const r = await trainTeacher({ out, ...TINY, seed: 1 });
    assert.equal([r.vae.skipped, r.unet.skipped], [0, 0], 'skipped steps are reported');
    const cfgFile = path.join(out, 'training', 'vae', 'config.json');
    const cfg = fs.readFileSync(cfgFile);
    fs.writeFileSync(cfgFile, '{"block_out_channels": [16, 16');
    await rejects(() => trainTeacher({ out, ...TINY, seed: 1, resume: true }), new RegExp(`^${escapeRe(cfgFile)}: cannot read the VAE config`), 'damaged config');
    fs.writeFileSync(cfgFile, cfg);
    // every latent of the cache NaN (a damaged cache): every UNet step's loss is NaN, so every step is skipped
    const cache = path.join(out, 'training', 'latents.safetensors');
    const b = Buffer.from(fs.readFileSync(cache));
    for (let i = 8 + Number(b.readBigUInt64LE(0)); i < b.length; i++) b[i] = 0xff;
    fs.writeFileSync(cache, b);
    fs.rmSync(path.join(out, 'unet'), { recursive: true });
    await rejects(() => trainTeacher({ out, ...TINY, seed: 1, unetSteps: 2, resume: true }),
      /^trainTeacher: the unet stage's first 2 steps were all skipped because the loss or its gradients were not finite .*the model was not written/, 'NaN cache');
    assert.ok(!fs.existsSync(path.join(out, 'unet')), 'no model written');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
