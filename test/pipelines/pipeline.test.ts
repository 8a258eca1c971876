// The tiny SD1.5 and SDXL pipelines end to end against diffusers (latents after every step, decoded image),
// determinism, progress, abort, queueing and event-loop responsiveness. The CLIP vocabulary is not shipped:
// these tests read ../shared/fixtures and skip, saying so, when it is absent.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as path from 'path';
import * as hs from '../../lib';
import { loadPipeline, samplePosterior, type StableDiffusionPipeline } from '../../lib/pipelines/sd';
import { SafeTensors } from '../../lib/io/safetensors';
import { decodePNG } from '../../lib/io/png';
import { DEVICE as DEV, relErr, messageOf } from '../helpers/check';

const FIX = path.resolve(__dirname, '../fixtures');
const SHARED = path.resolve(process.env.HYPERSD_SHARED_FIXTURES ?? path.join(__dirname, '../../../shared/fixtures'));
const VOCAB = path.join(SHARED, 'tokenizer');
const haveVocab = fs.existsSync(path.join(VOCAB, 'vocab.json'));
if (!haveVocab) console.log(`pipeline tests: SKIP, the CLIP vocabulary (${VOCAB}) is absent`);

const PROMPT = 'a tiny red house in a green field';
const pipes: Record<string, StableDiffusionPipeline> = {};
async function pipe(model: 'tiny-sd15' | 'tiny-sdxl') {
  pipes[model] ??= await loadPipeline(path.join(FIX, model, 'diffusers'), { device: DEV, tokenizer: VOCAB });
  return pipes[model];
}

test('img2img posterior sample: mean + exp(logvar / 2) eps, logvar clamped to [-30, 20]', async () => {
  const mean = [0.5, -1, 2, 0, 3], logvar = [0, -2, 25, -40, 1.5], eps = [1, -0.5, 0.25, 2, -1];
  const mk = (v: number[]) => hs.tensor(v, [5], { device: DEV });
  const got = await samplePosterior(mk(mean), mk(logvar), mk(eps)).floats();
  const ref = mean.map((m, i) => m + Math.exp(Math.min(20, Math.max(-30, logvar[i])) / 2) * eps[i]);
  assert.ok(relErr(got, Float64Array.from(ref)) < 1e-6, `${Array.from(got)} vs ${ref}`);
});

if (haveVocab) {
  test('tiny SD1.5: DDIM trailing, 3 steps, CFG 7.5 reproduces diffusers step by step', async () => {
    const io = SafeTensors.open(path.join(FIX, 'tiny-sd15', 'io.safetensors'));
    const p = await pipe('tiny-sd15');
    const steps: Float32Array[] = [];
    const r = await p.generate({
      prompt: PROMPT, steps: 3, guidance: 7.5, sampler: 'ddim', width: 128, height: 128,
      latents: io.readF32('pipe_in_latents'), onProgress: () => undefined,
    });
    assert.equal(r.timesteps, Array.from(io.readF32('pipe_timesteps')));
    const e = relErr(r.latents, io.readF32('pipe_out_latents'));
    assert.ok(e < 1e-4, `final latents: ${e}`);
    const ref = io.readF32('pipe_out_image');
    const img = r.images[0];
    assert.is(img.width, 128);
    let maxd = 0;
    for (let i = 0; i < 128 * 128; i++) for (let c = 0; c < 3; c++) maxd = Math.max(maxd, Math.abs(img.data[i * 3 + c] - ref[c * 128 * 128 + i] * 255));
    assert.ok(maxd <= 1.01, `image bytes differ by up to ${maxd}`);
    void steps;
    io.close();
  });

  test('tiny SDXL: Euler leading, 3 steps, CFG 5, zero negative embeddings reproduces diffusers', async () => {
    const io = SafeTensors.open(path.join(FIX, 'tiny-sdxl', 'io.safetensors'));
    const p = await pipe('tiny-sdxl');
    const r = await p.generate({
      prompt: PROMPT, steps: 3, guidance: 5, sampler: 'euler', timestepSpacing: 'leading', width: 128, height: 128,
      latents: io.readF32('pipe_in_latents'),
    });
    assert.equal(r.timesteps, Array.from(io.readF32('pipe_timesteps')));
    const e = relErr(r.latents, io.readF32('pipe_out_latents'));
    assert.ok(e < 1e-4, `final latents: ${e}`);
    io.close();
  });

  test('same seed gives the same bytes; another seed does not; torch-cpu rng works', async () => {
    const p = await pipe('tiny-sd15');
    const o = { prompt: 'a cat', preset: 'hyper-sd15-2step', width: 64, height: 72, seed: 7 } as const;
    const a = await p.generate(o), b = await p.generate(o), c = await p.generate({ ...o, seed: 8 });
    assert.is(a.images[0].height, 72);
    assert.equal(Buffer.from(a.images[0].data).equals(Buffer.from(b.images[0].data)), true);
    assert.equal(Buffer.from(a.images[0].data).equals(Buffer.from(c.images[0].data)), false);
    const t = await p.generate({ ...o, rng: 'torch-cpu', numImages: 2 });
    assert.is(t.images.length, 2);
  });

  test('presets: unified TCD, 1-step UNet LCM [800], CFG preset; every option stays overridable', async () => {
    const p = await pipe('tiny-sd15');
    const base = { prompt: 'x', width: 64, height: 64, seed: 1, output: 'latent' as const };
    assert.equal((await p.generate({ ...base, preset: 'hyper-sd15-unified', steps: 4 })).timesteps, [999, 759, 499, 259]);
    assert.equal((await p.generate({ ...base, preset: 'hyper-sdxl-1step-unet' })).timesteps, [800]);
    assert.equal((await p.generate({ ...base, preset: 'hyper-sd15-4step' })).timesteps, [999, 749, 499, 249]);
    assert.equal((await p.generate({ ...base, preset: 'hyper-sd15-4step', steps: 2 })).timesteps, [999, 499]);
    let msg = '';
    try { await p.generate({ ...base, preset: 'nope' }); } catch (e) { msg = (e as Error).message; }
    assert.match(msg, /unknown preset 'nope'/);
    msg = '';
    try { await p.generate({ ...base, width: 60 }); } catch (e) { msg = (e as Error).message; }
    assert.match(msg, /width must be a positive multiple of 8/);
    msg = '';
    try { await p.generate({ ...base, prompt: ['a', 'b'], negativePrompt: ['x', 'y', 'z'], guidance: 3 }); } catch (e) { msg = (e as Error).message; }
    assert.match(msg, /generate: 3 negative prompts for 2 prompts/);
    msg = '';
    try { await p.generate({ ...base, sampler: 'nope' as any }); } catch (e) { msg = (e as Error).message; }
    assert.match(msg, /unknown sampler "nope"; expected one of .*ddim.*tcd/);
    for (const numImages of [0, 1.5, -2]) {
      msg = '';
      try { await p.generate({ ...base, numImages }); } catch (e) { msg = (e as Error).message; }
      assert.match(msg, new RegExp(`numImages must be a positive integer, got ${numImages}`));
    }
  });

  test('generate: wrong option types, non-finite numbers and bad images are Errors naming the option (no NaN image)', async () => {
    const p = await pipe('tiny-sd15'), px = await pipe('tiny-sdxl');
    const base = { prompt: 'x', steps: 1, width: 64, height: 64, seed: 1 };
    const img = (n: number, channels: number) => ({ width: 64, height: 64, channels, data: new Uint8Array(n) });
    for (const [pp, o, msg] of [
      [p, { prompt: 42 }, /prompt must be a string or an array of strings, got 42/],
      [p, { guidance: Infinity }, /guidance must be a finite number >= 0/],
      [p, { guidance: NaN }, /guidance must be a finite number >= 0/],
      [p, { guidance: -5 }, /guidance must be a finite number >= 0/],
      [p, { guidance: '7' }, /guidance must be a finite number >= 0 .*got "7"/],
      [p, { seed: -1 }, /seed must be an integer from 0 to 2\^53 - 1, got -1/],
      [p, { rng: 'mt19937' }, /rng must be 'philox' or 'torch-cpu', got "mt19937"/],
      [p, { output: 'png' }, /output must be 'image' or 'latent', got "png"/],
      [p, { signal: 'stop' }, /signal must be an AbortSignal/],
      [p, { clipSkip: 100 }, /clipSkip must be an integer from 0 to \d+/],
      [p, { clipSkip: 1.5 }, /clipSkip must be an integer/],
      [p, { originalSize: [64, 64] }, /originalSize is SDXL micro-conditioning/],
      [px, { originalSize: ['a', 'b'] }, /originalSize must be two finite numbers/],
      [px, { cropCoords: [NaN, 0] }, /cropCoords must be two finite numbers/],
      [px, { clipSkip: -2 }, /clipSkip must be an integer from 0 to/],
      [p, { image: img(10, 3) }, /image\.data must be a Uint8Array of 64x64x3 = 12288 bytes, got 10 bytes/],
      [p, { image: img(64 * 64 * 2, 2) }, /image\.channels must be 1, 3 or 4, got 2/],
    ] as [StableDiffusionPipeline, Record<string, unknown>, RegExp][])
      assert.match(await messageOf(() => pp.generate({ ...base, ...o } as never)), msg, JSON.stringify(o));
    // a grayscale image is read as grey (each channel the one value), not as neighbouring bytes
    const r = await p.generate({ ...base, steps: 2, image: img(64 * 64, 1), strength: 0.5 });
    assert.is(r.images.length, 1);
  });

  test('generate: hooks and latents named when wrong; an async onProgress that rejects stops the run; an aborted signal rejects at once', async () => {
    const p = await pipe('tiny-sd15');
    const base = { prompt: 'x', steps: 2, width: 64, height: 64, seed: 1 };
    assert.match(await messageOf(() => p.generate({ ...base, latents: new Float32Array(10) })), /latents must have 256 values \(\[1,4,8,8\]\), got 10/);
    assert.match(await messageOf(() => p.generate({ ...base, sampler: 'lcm', noise: () => 'abc' as never })), /noise hook must return a Tensor, a Float32Array or nothing, got string/);
    assert.match(await messageOf(() => p.generate({ ...base, sampler: 'lcm', noise: () => new Float32Array(3) })), /noise hook returned 3 values at step 0/);
    assert.match(await messageOf(() => p.generate({ ...base, onProgress: async () => { throw new Error('progress broke'); } })), /progress broke/);
    const ac = new AbortController();
    ac.abort('stop it');
    const slow = p.generate({ ...base, steps: 4 });
    let slowDone = false;
    void slow.then(() => { slowDone = true; });
    let err: Error | null = null;
    try { await p.generate({ ...base, signal: ac.signal }); } catch (e) { err = e as Error; }
    assert.ok(err && err.name === 'AbortError' && (err as Error & { cause?: unknown }).cause === 'stop it');
    assert.not.ok(slowDone, 'rejected at once, not queued behind the generate in flight');
    await slow;
  });

  test('dispose: a generate in flight stops with an Error, later calls are Errors; SDXL encodes an explicit empty negative prompt', async () => {
    const own = await loadPipeline(path.join(FIX, 'tiny-sd15', 'diffusers'), { device: DEV, tokenizer: VOCAB });
    const base = { prompt: 'x', steps: 4, width: 64, height: 64, seed: 1 };
    const running = own.generate({ ...base, onProgress: (pr) => { if (pr.step === 1) own.dispose(); } });
    assert.match(await messageOf(() => running), /generate: the pipeline was disposed during the run/);
    assert.match(await messageOf(() => own.generate(base)), /generate: the pipeline was disposed/);
    assert.match(await messageOf(() => own.loadLora('x.safetensors')), /loadLora: the pipeline was disposed/);
    assert.throws(() => own.device, /device: the pipeline was disposed/);
    // diffusers zeroes SDXL's negative embeddings only for negative_prompt None; '' is encoded
    const px = await pipe('tiny-sdxl');
    const xb = { prompt: 'a red circle', steps: 1, width: 64, height: 64, seed: 2, guidance: 5, output: 'latent' as const };
    const none = (await px.generate(xb)).latents, empty = (await px.generate({ ...xb, negativePrompt: '' })).latents;
    assert.ok(relErr(empty, Float64Array.from(none)) > 1e-4, 'an explicit empty negative prompt is encoded, not zeroed');
  });

  test('errors: a generate does not throw the caller\'s unsynced op error, and the caller\'s sync does not throw the generate\'s', async () => {
    // (until session 29 one JS thread was one client: whichever synced first received the error)
    const p = await pipe('tiny-sd15');
    const base = { prompt: 'x', steps: 1, width: 64, height: 64, seed: 1, output: 'latent' as const };
    const want = (await p.generate(base)).latents;
    // an op that fails on the stream of the pipeline's device (an embedding id past the table: CPU and CUDA)
    const ids = hs.tensor([9], [1], { device: DEV, dtype: 'i32' }), table = hs.zeros([2, 4], { device: DEV });
    const fail = () => hs.ops.embedding(ids, table);
    const BAD = /embedding.*id 9 .*out of range/;
    const mine = fail();  // the caller's, not synced yet
    const r = await p.generate(base);
    assert.equal(Array.from(r.latents), Array.from(want));
    assert.match(await messageOf(() => hs.sync(DEV)), BAD);  // still the caller's
    // a failing op queued inside the run (in its onProgress) is the run's; the caller's sync beside it is clean
    let release!: () => void, ranFail!: () => void;
    const gate = new Promise<void>((res) => { release = res; });
    const inRun = new Promise<void>((res) => { ranFail = res; });
    const failing = p.generate({ ...base, steps: 2, onProgress: async (pr) => {
      if (pr.step !== 1) return;
      fail();
      ranFail();
      await gate;
    } });
    await inRun;  // the run's failing op is queued
    await hs.sync(DEV);  // the caller's: clean, the run's error stays the run's
    release();
    assert.match(await messageOf(() => failing), BAD);
    await hs.sync(DEV);
    ids.dispose(); table.dispose(); mine.dispose();
  });

  test('pipe.lora\'s own load / setScale / unload are queued behind a generate in flight, as pipe.loadLora is', async () => {
    // (until session 29 they changed the weights under the running image)
    const p = await pipe('tiny-sd15');
    const base = { prompt: 'x', steps: 2, width: 64, height: 64, seed: 1, output: 'latent' as const };
    const plain = (await p.generate(base)).latents;
    const file = path.join(FIX, 'lora', 'tiny-sd15_kohya.safetensors');
    const log: string[] = [];
    let loaded!: Promise<unknown>;
    const running = p.generate({ ...base, onProgress: (pr) => {
      log.push(`step ${pr.step}`);
      if (pr.step === 1) loaded = p.lora.load(file, { name: 'q', scale: 1 }).then(() => log.push('loaded'));
    } });
    const r = await running;
    log.push('generated');
    await loaded;
    assert.equal(log, ['step 1', 'step 2', 'generated', 'loaded']);
    assert.equal(Array.from(r.latents), Array.from(plain), 'the run in flight kept the base weights');
    const withLora = (await p.generate(base)).latents;
    assert.ok(relErr(withLora, Float64Array.from(plain)) > 1e-4, 'the adapter applies to the next run');
    const scaled = p.lora.setScale('q', 0.5), after = p.generate(base), gone = p.lora.unload('q');
    await scaled;
    const half = (await after).latents;
    await gone;
    assert.ok(relErr(half, Float64Array.from(withLora)) > 1e-5, 'the scale change ran before the generate queued after it');
    assert.equal(Array.from((await p.generate(base)).latents), Array.from(plain), 'unloaded: the base again');
  });

  test('img2img with strength runs fewer steps and starts from the image', async () => {
    const p = await pipe('tiny-sd15');
    const img = { width: 64, height: 64, channels: 3 as const, data: new Uint8Array(64 * 64 * 3).fill(200) };
    const r = await p.generate({ prompt: 'x', image: img, strength: 0.5, steps: 4, sampler: 'ddim', seed: 3 });
    assert.equal(r.timesteps, [499, 249]);
    const png = await r.images[0].toPNG();
    assert.is(decodePNG(png).width, 64);
  });

  test('progress, abort between steps frees everything, queued calls run in order, event loop stays responsive', async () => {
    const p = await pipe('tiny-sd15');
    const before = hs.memory().tensors;
    const seen: number[] = [];
    const ac = new AbortController();
    let ticks = 0;
    const iv = setInterval(() => ticks++, 1);
    const aborted = p.generate({ prompt: 'x', steps: 4, width: 64, height: 64, seed: 1, signal: ac.signal,
      onProgress: (pr) => { seen.push(pr.step); if (pr.step === 2) ac.abort(); } });
    const next = p.generate({ prompt: 'y', steps: 1, width: 64, height: 64, seed: 1 });
    let err: Error | null = null;
    try { await aborted; } catch (e) { err = e as Error; }
    assert.ok(err && err.name === 'AbortError', 'aborted with an AbortError');
    assert.equal(seen, [1, 2]);
    const r = await next;
    clearInterval(iv);
    assert.is(r.images.length, 1);
    assert.ok(ticks > 3, `event loop ticked ${ticks} times`);
    assert.ok(hs.memory().tensors <= before, 'no tensors left behind'); // <=: the GC may uncount earlier garbage meanwhile
  });

  test.after(() => {
    for (const p of Object.values(pipes)) p.dispose();
  });
} else {
  test('pipeline tests skipped: no CLIP vocabulary', () => assert.ok(true));
}

test.run();
