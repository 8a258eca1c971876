// The `hypersd` command on the tiny models: generate writes a PNG of the right size, --grid writes a labelled
// sheet, info describes checkpoints and LoRAs, run compares components tensor by tensor, errors are one line.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { readPNG } from '../../lib/io/png';
import { SafeTensors, saveSafetensors } from '../../lib/io/safetensors';
import { relErr } from '../helpers/check';

const ROOT = path.resolve(__dirname, '../..');
const FIX = path.join(ROOT, 'test/fixtures');
const VOCAB = path.resolve(ROOT, '../shared/fixtures/tokenizer');
const haveVocab = fs.existsSync(path.join(VOCAB, 'vocab.json'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-cli-'));

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/hypersd.js'), ...args], { encoding: 'utf8', env: process.env });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

if (haveVocab) {
  test('generate writes a PNG of the asked size; --grid writes one sheet', () => {
    const out = path.join(tmp, 'a.png');
    const r = cli(['generate', '--model', path.join(FIX, 'tiny-sd15/diffusers'), '--tokenizer', VOCAB, '--preset', 'hyper-sd15-2step',
      '--prompt', 'a red circle', '--width', '64', '--height', '80', '--seed', '3', '--out', out, '--device', 'cpu']);
    assert.is(r.code, 0, r.err);
    const img = readPNG(out);
    assert.is(img.width, 64);
    assert.is(img.height, 80);
    const g = path.join(tmp, 'g.png');
    const r2 = cli(['generate', '--model', path.join(FIX, 'tiny-sd15/diffusers'), '--tokenizer', VOCAB, '--prompt', 'x', '--width', '64',
      '--height', '64', '--grid', '1,2', '--out', g, '--lora', path.join(FIX, 'lora/tiny-sd15_kohya.safetensors') + ':0.5', '--cpu-math', 'bf16']);
    assert.is(r2.code, 0, r2.err);
    const sheet = readPNG(g);
    assert.is(sheet.width, 128);
    assert.ok(sheet.height > 64);
  });

  test('--latents starts from given latents (same result as the pipeline test fixture)', () => {
    const io = SafeTensors.open(path.join(FIX, 'tiny-sd15/io.safetensors'));
    const lat = path.join(tmp, 'lat.safetensors');
    saveSafetensors(lat, { latents: { dtype: 'F32', shape: [1, 4, 16, 16], data: io.readF32('pipe_in_latents') } });
    const out = path.join(tmp, 'l.png');
    const r = cli(['generate', '--model', path.join(FIX, 'tiny-sd15/diffusers'), '--tokenizer', VOCAB, '--prompt', 'a tiny red house in a green field',
      '--sampler', 'ddim', '--steps', '3', '--guidance', '7.5', '--width', '128', '--height', '128', '--latents', lat, '--out', out]);
    assert.is(r.code, 0, r.err);
    const img = readPNG(out), ref = io.readF32('pipe_out_image');
    let maxd = 0;
    for (let i = 0; i < 128 * 128; i++) for (let c = 0; c < 3; c++) maxd = Math.max(maxd, Math.abs(img.data[i * 3 + c] - ref[c * 128 * 128 + i] * 255));
    assert.ok(maxd <= 1.01, `max byte difference ${maxd}`);
  });
}

test('info describes checkpoints in each layout and LoRA files', () => {
  let r = cli(['info', path.join(FIX, 'tiny-sdxl/single_file.safetensors')]);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /SDXL model, single-file layout/);
  r = cli(['info', path.join(FIX, 'tiny-sd15/diffusers')]);
  assert.match(r.out, /SD1.5 model, diffusers layout/);
  r = cli(['info', path.join(FIX, 'lora/tiny-sdxl_kohya_ldm.safetensors')]);
  assert.match(r.out, /LoRA, kohya \(original LDM module names\) format, rank 4/);
  r = cli(['info', path.join(FIX, 'lora/tiny-sd15_peft.safetensors')]);
  assert.match(r.out, /peft/);
});

test('run: unet and text_encoder_2 on named inputs reproduce diffusers; --repeat prints a median', () => {
  const io = SafeTensors.open(path.join(FIX, 'tiny-sdxl/io.safetensors'));
  const inp = path.join(tmp, 'in.safetensors');
  const f = (k: string) => ({ dtype: 'F32' as const, shape: io.info(k).shape, data: io.readF32(k) });
  saveSafetensors(inp, {
    sample: f('unet_in_sample'), timestep: { dtype: 'F32', shape: [2], data: Float32Array.from(io.readI64('unet_in_timesteps'), Number) },
    encoder_hidden_states: f('unet_in_encoder_hidden_states'), text_embeds: f('unet_in_text_embeds'), time_ids: f('unet_in_time_ids'),
    input_ids: { dtype: 'I64', shape: [2, 77], data: io.readI64('te2_in_input_ids') },
  });
  const out = path.join(tmp, 'out.safetensors');
  let r = cli(['run', 'unet', '--model', path.join(FIX, 'tiny-sdxl/diffusers'), '--inputs', inp, '--out', out, '--repeat', '2', '--device', 'cpu']);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /median [0-9.]+ s per run over 2 runs/);
  let o = SafeTensors.open(out);
  assert.ok(relErr(o.readF32('out'), io.readF32('unet_out')) < 1e-4);
  o.close();
  r = cli(['run', 'text_encoder_2', '--model', path.join(FIX, 'tiny-sdxl/diffusers'), '--inputs', inp, '--out', out]);
  assert.is(r.code, 0, r.err);
  o = SafeTensors.open(out);
  assert.ok(relErr(o.readF32('text_embeds'), io.readF32('te2_out_text_embeds')) < 1e-4);
  assert.ok(relErr(o.readF32('penultimate_hidden_state'), io.readF32('te2_out_penultimate')) < 1e-4);
  o.close();
  // a missing input is named
  r = cli(['run', 'vae.decode', '--model', path.join(FIX, 'tiny-sdxl/diffusers'), '--inputs', inp, '--out', out]);
  assert.is(r.code, 1);
  assert.match(r.err, /missing input tensor 'latents'/);
  assert.is(r.err.trim().split('\n').length, 1);
});

test('errors are one clear line with a non-zero exit', () => {
  let r = cli(['generate', '--model', path.join(tmp, 'nope'), '--prompt', 'x']);
  assert.is(r.code, 1);
  assert.match(r.err, /^hypersd: .*nope/);
  r = cli(['generate', '--model', path.join(FIX, 'tiny-sd15/diffusers'), '--prompt', 'x', '--bogus', '1']);
  assert.is(r.code, 1);
  assert.match(r.err, /unknown option --bogus/);
  r = cli(['generate', '--model', path.join(FIX, 'tiny-sd15/diffusers'), '--prompt', 'x', '--cpu-math', 'fp8']);
  assert.is(r.code, 1);
  assert.match(r.err, /--cpu-math must be f32 or bf16, got 'fp8'/);
  // The output name and folder are checked before the model loads (no generation ends in a failed write).
  r = cli(['generate', '--model', path.join(tmp, 'nope'), '--prompt', 'x', '--out', path.join(tmp, 'a.jpg')]);
  assert.is(r.code, 1);
  assert.match(r.err, /--out: hypersd writes PNG images, so the file name must end in \.png, got '.*a\.jpg'/);
  r = cli(['generate', '--model', path.join(tmp, 'nope'), '--prompt', 'x', '--out', path.join(tmp, 'no', 'such', 'a.png')]);
  assert.is(r.code, 1);
  assert.match(r.err, /--out .*a\.png: cannot write into .*such \(ENOENT\)/);
  r = cli(['frobnicate']);
  assert.is(r.code, 1);
  assert.match(r.err, /unknown command 'frobnicate'/);
  // Checked before any work (session 28, found by probing): an option's value that is another option, stray
  // positional words, empty numbers, values outside a choice, an --out that is a folder, a missing --config-from.
  const model = ['generate', '--model', path.join(tmp, 'nope')];
  for (const [args, msg] of [
    [[...model, '--prompt', '--out', path.join(tmp, 'b.png')], /option --prompt needs a value, got the option --out/],
    [[...model, '--prompt', 'a', 'red', 'circle'], /generate: unexpected argument 'red'/],
    [[...model, '--prompt', 'x', '--seed', ''], /option --seed must be a number, got ''/],
    [[...model, '--prompt', 'x', '--rng', 'mt19937'], /option --rng must be philox, torch-cpu; got 'mt19937'/],
    [[...model, '--prompt', 'x', '--dtype', 'fp16'], /option --dtype must be f32, bf16, f16; got 'fp16'/],
    [[...model, '--prompt', 'x', '--out', path.join(tmp, 'dir.png')], /--out .*dir\.png: is a folder, not a file/],
    [[...model, '--prompt', 'x', '--config-from', path.join(tmp, 'nowhere')], /--config-from .*nowhere: no such folder/],
    [['train-teacher', '--out', path.join(tmp, 't'), '--vae-batch', '0'], /option --vae-batch must be >= 1, got 0/],
    [['train-teacher', '--out', path.join(tmp, 't'), '--samples-per-prompt', '0'], /option --samples-per-prompt must be >= 1, got 0/],
    [['run', 'unet', '--model', path.join(tmp, 'nope'), '--inputs', 'x', '--out', path.join(tmp, 'no', 'o.safetensors')], /--out .*o\.safetensors: cannot write into/],
    [['run', 'unet', '--model', path.join(tmp, 'nope'), '--inputs', tmp, '--out', path.join(tmp, 'o.safetensors')], /--inputs .*: no such file/],
    [['run', 'unet', '--model', path.join(tmp, 'nope'), '--inputs', path.join(FIX, 'tiny-sd15', 'io.safetensors'), '--out', path.join(FIX, 'tiny-sd15', 'io.safetensors')], /is the --inputs file: it would be overwritten/],
    [['run', 'unet', '--model', path.join(tmp, 'nope'), '--inputs', 'x', '--out', path.join(tmp, 'o.safetensors'), '--repeat', '99999'], /option --repeat must be from 0 to 10000, got 99999/],
  ] as [string[], RegExp][]) {
    fs.mkdirSync(path.join(tmp, 'dir.png'), { recursive: true });
    r = cli(args);
    assert.is(r.code, 1, args.join(' '));
    assert.match(r.err, msg);
    assert.is(r.err.trim().split('\n').length, 1);
  }
});

test('run text_encoder: token ids outside int32 are an Error (an I64 id of 2^32 + 320 had wrapped to 320)', () => {
  const inputs = path.join(tmp, 'ids.safetensors');
  const ids = new BigInt64Array(77);
  ids[0] = 49406n;
  ids[1] = 2n ** 32n + 320n;
  saveSafetensors(inputs, { input_ids: { dtype: 'I64', shape: [1, 77], data: ids } });
  const r = cli(['run', 'text_encoder', '--model', path.join(FIX, 'tiny-sd15/diffusers'), '--inputs', inputs, '--out', path.join(tmp, 'te.safetensors')]);
  assert.is(r.code, 1, r.err);
  assert.match(r.err, /ids\.safetensors: input_ids\[1\] = 4294967616 is not a token id/);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
