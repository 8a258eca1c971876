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
import { evaluateTeacher } from '../../lib/train/teacher';

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

test.run();
