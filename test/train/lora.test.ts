// LoRA training on a tiny frozen UNet: the loss falls; a run resumed from a checkpoint reproduces the
// unbroken run's losses bit for bit; the exported kohya file reloads through parseLora and the pipeline's
// LoraManager (runtime and fused) with the trained adapter's outputs; corrupt and mismatched checkpoints are
// refused with a clear Error and leave the previous checkpoint and the running state as they were.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as hs from '../../lib';
import { UNet2DConditionModel, type UNetConfig } from '../../lib/models/unet';
import { parseLora, type LoraTarget } from '../../lib/models/lora';
import { LoraManager } from '../../lib/pipelines/lora';
import { TrainableLora } from '../../lib/train/lora';
import { Trainer } from '../../lib/train/trainer';
import { mse, pseudoHuber } from '../../lib/train/losses';
import { escapeRe, relErr, rejects } from '../helpers/check';

hs.setPoison(false);

const CONFIG: UNetConfig = {
  in_channels: 4, out_channels: 4, block_out_channels: [8, 16], layers_per_block: 1,
  down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
  attention_head_dim: 2, cross_attention_dim: 8, norm_num_groups: 4,
};
const B = 2;


function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-train-'));
}

/** A frozen random UNet with a fresh LoRA and its trainer (everything seeded). */
function setup(o: { rank?: number; loss?: 'mse' | 'huber' } = {}) {
  const unet = new UNet2DConditionModel(CONFIG);
  unet.params.initRandom(3);
  const lora = new TrainableLora(unet.params, 'unet', { rank: o.rank ?? 4, alpha: 2, seed: 1 });
  const trainer = new Trainer({
    trainables: lora.trainables(), lr: 1e-2, schedule: 'warmup', warmup: 3, seed: 5,
    fingerprint: { unet: CONFIG, rank: lora.rank },
  });
  const ctx = hs.ops.randn([B, 5, 8], { seed: 10 });
  const x0 = hs.ops.randn([B, 4, 8, 8], { seed: 11 });
  const lossOf = o.loss === 'huber' ? (a: hs.Tensor, b: hs.Tensor) => pseudoHuber(a, b, 0.05) : mse;
  /** One denoising step: noise and timesteps drawn from the trainer's seeded streams. */
  const step = () => {
    const ts = [trainer.rng.int(1000), trainer.rng.int(1000)];
    return trainer.trainStep(() => {
      const noise = trainer.randn([B, 4, 8, 8]);
      const noisy = hs.ops.add(hs.ops.mul(x0, 0.7), hs.ops.mul(noise, 0.7));
      return lossOf(unet.forward({ sample: noisy, timesteps: ts, encoderHiddenStates: ctx }), noise);
    });
  };
  const dispose = () => {
    trainer.dispose();
    lora.dispose();
    unet.dispose();
    ctx.dispose();
    x0.dispose();
  };
  return { unet, lora, trainer, step, ctx, dispose };
}

test('LoRA on a frozen tiny UNet: the loss falls (fixed batch), the base weights never change', async () => {
  const s = setup();
  const baseW = await s.unet.params.get('down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight').floats();
  const x = hs.ops.randn([B, 4, 8, 8], { seed: 20 }), target = hs.ops.randn([B, 4, 8, 8], { seed: 21 });
  const losses: number[] = [];
  for (let i = 0; i < 12; i++) {
    const r = await s.trainer.trainStep(() => mse(s.unet.forward({ sample: x, timesteps: [10, 500], encoderHiddenStates: s.ctx }), target));
    losses.push(r.loss);
  }
  assert.ok(losses[11] < losses[0] * 0.97, `loss ${losses[0]} -> ${losses[11]}`);
  assert.equal(await s.unet.params.get('down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight').floats(), baseW, 'frozen base unchanged');
  x.dispose();
  target.dispose();
  s.dispose();
});

test('resume: a run saved at step 3 and resumed in a fresh process state reproduces steps 4..6 bit for bit', async () => {
  const dir = tmpdir();
  try {
    const a = setup({ loss: 'huber' });
    const unbroken: number[] = [];
    for (let i = 0; i < 6; i++) unbroken.push((await a.step()).loss);
    a.dispose();

    const b = setup({ loss: 'huber' });
    for (let i = 0; i < 3; i++) await b.step();
    await b.trainer.save(path.join(dir, 'state.safetensors'));
    b.dispose();

    const c = setup({ loss: 'huber' });
    await c.trainer.load(path.join(dir, 'state.safetensors'));
    assert.is(c.trainer.step, 3);
    const resumed: number[] = [];
    for (let i = 0; i < 3; i++) resumed.push((await c.step()).loss);
    c.dispose();
    assert.equal(resumed, unbroken.slice(3), 'identical losses after resume');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('export: the kohya file reloads with parseLora and LoraManager (runtime and fused) with the same outputs', async () => {
  const dir = tmpdir();
  const s = setup();
  try {
    for (let i = 0; i < 3; i++) await s.step();
    const x = hs.ops.randn([B, 4, 8, 8], { seed: 30 });
    const run = () => hs.tidy(() => s.unet.forward({ sample: x, timesteps: [100, 900], encoderHiddenStates: s.ctx })).floats();
    const trained = await run();
    const file = path.join(dir, 'lora.safetensors');
    await s.lora.exportKohya(file);
    s.lora.detach();
    const base = await run();
    assert.ok(relErr(trained, base) > 1e-4, 'the adapter changes the output');

    const target: LoraTarget = {
      modules: { unet: new Set([...s.unet.params.specs.keys()].filter((k) => k.endsWith('.weight')).map((k) => k.slice(0, -7))) },
      unetConfig: CONFIG,
    };
    const parsed = parseLora(file, target);
    assert.is(parsed.format, 'kohya');
    assert.is(parsed.unmatched.length, 0, `unmatched: ${parsed.unmatched.slice(0, 3)}`);
    assert.is(parsed.modules.length, s.lora.modules.length);
    assert.ok(parsed.modules.every((m) => m.rank === 4 && m.alpha === 2));
    assert.ok(parsed.modules.some((m) => m.kind === 'conv') && parsed.modules.some((m) => m.kind === 'linear'));
    const conv = parsed.modules.find((m) => m.module === 'down_blocks.0.resnets.0.conv1')!;
    assert.equal(conv.down.shape, [4, 8, 3, 3], 'conv down in PyTorch OIHW');
    assert.equal(conv.up.shape, [8, 4, 1, 1], 'conv up [out, r, 1, 1]');
    parsed.close();

    const mgr = new LoraManager({ unet: s.unet.params }, target);
    await mgr.load(file, { name: 'x', mode: 'runtime' });
    const rt = await run();
    assert.ok(relErr(rt, trained) < 1e-6, `runtime reload: relative error ${relErr(rt, trained)}`);
    mgr.unload('x');
    await mgr.load(file, { name: 'x', mode: 'fuse' });
    const fused = await run();
    assert.ok(relErr(fused, trained) < 1e-5, `fused reload: relative error ${relErr(fused, trained)}`);
    mgr.unload('x');
    assert.equal(await run(), base, 'unfuse restores the base');
    x.dispose();
  } finally {
    s.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('checkpoints: corrupt, truncated, foreign and mismatched files give clear Errors; nothing changes', async () => {
  const dir = tmpdir();
  const file = path.join(dir, 'state.safetensors');
  const s = setup();
  try {
    for (let i = 0; i < 2; i++) await s.step();
    await s.trainer.save(file);
    const good = fs.readFileSync(file);
    const probe = s.lora.modules[0].down;
    const before = await probe.floats();
    const other = setup();
    await other.step();
    const otherBefore = await other.lora.modules[0].down.floats();

    // a failing save (a disposed tensor cannot be read) leaves the previous checkpoint as it was
    const victim = s.trainer.optimizer.m.get(`${s.lora.modules[0].module}.lora_down.weight`)!;
    const keepM = hs.keep(hs.ops.contiguous(victim));
    victim.dispose();
    await rejects(() => s.trainer.save(file), /disposed/);
    assert.ok(fs.readFileSync(file).equals(good), 'previous checkpoint intact after a failed save');
    assert.ok(!fs.readdirSync(dir).some((f) => f.endsWith('.tmp')), 'no temporary file left behind');
    s.trainer.optimizer.m.set(`${s.lora.modules[0].module}.lora_down.weight`, keepM);

    const cases: [string, (b: Buffer) => Buffer, RegExp][] = [
      ['flipped data byte', (b) => { const c = Buffer.from(b); c[c.length - 10] ^= 0xff; return c; }, /corrupt checkpoint: tensor data does not match its SHA-256/],
      ['truncated', (b) => b.subarray(0, b.length - 100), /corrupt checkpoint: .*(truncated|past the end)/],
      ['garbage', () => Buffer.from('not a checkpoint at all'), /corrupt checkpoint/],
    ];
    for (const [what, damage, re] of cases) {
      const bad = path.join(dir, `${what.replace(/ /g, '_')}.safetensors`);
      fs.writeFileSync(bad, damage(good));
      await rejects(() => other.trainer.load(bad), re, what);
    }
    await rejects(() => other.trainer.load(path.join(dir, 'missing.safetensors')), /no such checkpoint/);
    // a LoRA of another rank: same names, other shapes and fingerprint
    const r8 = setup({ rank: 8 });
    await rejects(() => r8.trainer.load(file), /does not match this run: .*rank: checkpoint 4 vs run 8/);
    r8.dispose();
    // a plain weights file is not a training checkpoint
    await s.lora.exportKohya(path.join(dir, 'lora.safetensors'));
    await rejects(() => other.trainer.load(path.join(dir, 'lora.safetensors')), /not a hypersd training checkpoint/);

    assert.equal(await other.lora.modules[0].down.floats(), otherBefore, 'failed loads changed nothing');
    assert.is(other.trainer.step, 1);
    assert.equal(await probe.floats(), before);
    // and the intact checkpoint still loads
    await other.trainer.load(file);
    assert.is(other.trainer.step, 2);
    assert.equal(await other.lora.modules[0].down.floats(), before);
    other.dispose();
  } finally {
    s.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('TrainableLora: bad options are Errors naming them, before any adapter is attached', async () => {
  const unet = new UNet2DConditionModel(CONFIG);
  unet.params.initRandom(3);
  try {
    const bad: [string, unknown, RegExp][] = [
      // (a 'vae' LoRA had been exported with lora_te2_ keys; a UNet store called 'text_encoder' with lora_te_ keys)
      ['vae', {}, /component must be one of unet, text_encoder, text_encoder_2 .*got "vae"/],
      ['text_encoder', {}, /component 'text_encoder' does not match the store, which holds the unet's parameters/],
      ['unet', { seed: NaN }, /seed must be an integer >= 0, got NaN/],
      ['unet', { seed: -1 }, /seed must be an integer >= 0, got -1/],
      ['unet', { targets: 'to_q' }, /targets must be a non-empty list/],
      ['unet', { targets: ['to_q', 'to_qq'] }, /target to_qq matches no linear or conv module of the unet/],
      ['unet', { rank: 4, ranks: 8 }, /unknown option ranks/],
    ];
    for (const [component, o, re] of bad)
      assert.throws(() => new TrainableLora(unet.params, component as never, o as never), re, `${component} ${JSON.stringify(o)}`);
    assert.is(unet.params.adapters.size, 0, 'no adapter left attached');
    const a = new TrainableLora(unet.params, 'unet', { rank: 2 });
    const n = unet.params.adapters.size;
    assert.throws(() => new TrainableLora(unet.params, 'unet', { rank: 2 }), /an adapter named 'train' is already attached to/);
    assert.is(unet.params.adapters.size, n);
    assert.ok([...unet.params.adapters.values()].every((l) => l.length === 1), 'one adapter per module');
    // (setScale(NaN) had failed later, in matmul)
    assert.throws(() => a.setScale(NaN), /TrainableLora.setScale: scale must be a finite number, got NaN/);
    assert.throws(() => a.setScale('2' as never), /scale must be a finite number, got "2"/);
    assert.is(a.modules[0].adapter.scale, 1, 'scale unchanged');
    a.dispose();
    assert.is(unet.params.adapters.size, 0);
  } finally {
    unet.dispose();
  }
});

test('exportKohya: failures name the destination file; adapter metadata cannot be overridden; a disposed adapter is an Error', async () => {
  const dir = tmpdir();
  const unet = new UNet2DConditionModel(CONFIG);
  unet.params.initRandom(3);
  const lora = new TrainableLora(unet.params, 'unet', { rank: 2, alpha: 2 });
  try {
    // (the error had named only '.x.safetensors.<pid>.<time>.tmp')
    const missing = path.join(dir, 'no', 'such', 'x.safetensors');
    await rejects(() => lora.exportKohya(missing), new RegExp(`^${escapeRe(missing)}: `), 'missing folder');
    assert.ok(!fs.existsSync(path.join(dir, 'no')));
    const file = path.join(dir, 'y.safetensors');
    await rejects(() => lora.exportKohya(file, { ss_network_alpha: '64' }), /metadata\['ss_network_alpha'\] is written from the adapter \(2\)/, 'override');
    assert.ok(!fs.existsSync(file), 'nothing written');
    await lora.exportKohya(file, { ss_network_alpha: '2', note: 'x' });
    lora.dispose();
    await rejects(() => lora.exportKohya(file), /cannot export the LoRA: it was disposed/, 'after dispose');
  } finally {
    lora.dispose();
    unet.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
