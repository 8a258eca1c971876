// Data for training: the procedural shapes dataset is a pure function of its seed, its captions name the
// colours the images show (the prompt-adherence reader agrees on real images), the caption vocabulary makes
// every word one token and loads as a tokenizer folder, seeded data order and RNG state resume exactly, the
// image-folder dataset resizes / center-crops / pairs captions, and the latent cache round-trips.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as hs from '../../lib';
import { writePNG } from '../../lib/io/png';
import { CLIPTokenizer } from '../../lib/models/clip_tokenizer';
import { AutoencoderKL } from '../../lib/models/vae';
import { shapeSample, randomScene, captionWords, readColours, COLOUR_NAMES } from '../../lib/train/shapes';
import { buildVocab, writeTokenizerFolder } from '../../lib/train/vocab';
import { DataOrder, Rng } from '../../lib/train/rng';
import { ImageFolderDataset, resizeCenterCrop } from '../../lib/train/image_folder';
import { buildLatentCache, LatentCache } from '../../lib/train/latent_cache';
import { shapesSource } from '../../lib/train/teacher';

hs.setPoison(false);

const tmpdir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-data-'));

test('shapes dataset: deterministic for a seed, different across seeds, captions follow the grammar', () => {
  for (let i = 0; i < 20; i++) {
    const a = shapeSample(7, i), b = shapeSample(7, i);
    assert.equal(a.caption, b.caption);
    assert.ok(Buffer.from(a.image.data).equals(Buffer.from(b.image.data)), `sample ${i} identical bytes`);
    assert.is(a.image.width, 64);
    assert.match(a.caption, /^an? \w+ (circle|square|triangle)( (above|below|to the left of|to the right of) an? \w+ (circle|square|triangle)|(, an? \w+ (circle|square|triangle))? and an? \w+ (circle|square|triangle))? on an? \w+ background$/);
  }
  const differ = Array.from({ length: 10 }, (_, i) => shapeSample(7, i).caption !== shapeSample(8, i).caption).filter(Boolean).length;
  assert.ok(differ >= 8, 'another seed gives another dataset');
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 400; i++) counts[randomScene(new Rng([1, i])).shapes.length]++;
  assert.ok(counts[1] > 150 && counts[2] > 100 && counts[3] > 30, `shape-count mix ${counts}`);
});

test('shapes dataset: the adherence reader finds the caption colours in real single-shape images', () => {
  let n = 0, ok = 0, bg = 0;
  for (let i = 0; n < 60; i++) {
    const s = shapeSample(3, i);
    if (s.scene.shapes.length !== 1) continue;
    n++;
    const r = readColours(s.image);
    if (r.shape === s.scene.shapes[0].colour) ok++;
    if (r.background === s.scene.background) bg++;
  }
  assert.is(bg, n, 'background colour');
  assert.is(ok, n, 'shape colour');
});

test('vocabulary: every caption word is one token; the folder loads as a CLIPTokenizer', () => {
  const v = buildVocab(captionWords());
  const dir = tmpdir();
  try {
    writeTokenizerFolder(dir, v, 20);
    const tok = CLIPTokenizer.fromFolder(dir);
    assert.is(tok.maxLength, 20);
    assert.is(tok.bosId, v.bosId);
    assert.is(tok.eosId, v.eosId);
    for (const w of captionWords()) assert.is(tok.tokenize(w).length, 1, `'${w}' is one token`);
    for (let i = 0; i < 30; i++) {
      const c = shapeSample(2, i).caption;
      const ids = tok.call(c);
      assert.is(tok.encode(c).length, c.replace(/,/g, ' ,').split(/\s+/).length, c);
      assert.is(ids[0], v.bosId);
      assert.ok(Array.from(ids).every((id) => id <= v.eosId));
    }
    assert.ok(COLOUR_NAMES.every((c) => v.vocab[`${c}</w>`] !== undefined));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('data order and RNG: seeded permutations per epoch, exact resume from saved state', () => {
  const o = new DataOrder(10, 42);
  const e0 = o.batch(0, 10), e1 = o.batch(10, 10);
  assert.equal([...e0].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.not.equal(e0, e1, 'a new permutation each epoch');
  assert.equal(new DataOrder(10, 42).batch(13, 4), o.batch(13, 4), 'position k is a pure function of (seed, k)');
  const r = new Rng(9);
  for (let i = 0; i < 5; i++) r.u32();
  const st = r.getState();
  const a = [r.float(), r.int(1000), r.normal()];
  const r2 = new Rng(123);
  r2.setState(st);
  assert.equal([r2.float(), r2.int(1000), r2.normal()], a);
  assert.throws(() => r2.setState([0, 0, 0, 0]), /four u32 words/);
});

test('image folder: pairs captions, resizes and center-crops; errors name the problem', () => {
  const dir = tmpdir();
  try {
    // a 96x48 image: left half red, right half blue, with a green 2-pixel border column in the middle
    const W = 96, H = 48, data = new Uint8Array(W * H * 3);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) data.set(x < 47 ? [255, 0, 0] : x < 49 ? [0, 255, 0] : [0, 0, 255], (y * W + x) * 3);
    writePNG(path.join(dir, 'b.png'), { width: W, height: H, channels: 3, data });
    fs.writeFileSync(path.join(dir, 'b.txt'), 'a wide picture\n');
    writePNG(path.join(dir, 'a.png'), shapeSample(1, 0).image);
    fs.writeFileSync(path.join(dir, 'a.txt'), shapeSample(1, 0).caption);
    const ds = new ImageFolderDataset(dir, 32);
    assert.is(ds.length, 2);
    assert.is(ds.caption(1), 'a wide picture');
    const img = ds.image(1);
    assert.equal([img.width, img.height], [32, 32]);
    // 96x48 -> 64x32, crop x 16..47: the middle (green) column lands at x ~ 15..16 of the crop
    const px = (x: number, y: number) => Array.from(img.data.subarray((y * 32 + x) * 3, (y * 32 + x) * 3 + 3));
    assert.equal(px(2, 5), [255, 0, 0]);
    assert.equal(px(30, 5), [0, 0, 255]);
    assert.ok(px(15, 5)[1] > 60 || px(16, 5)[1] > 60, 'the green seam is kept at the centre');
    assert.equal(ds.image(0).width, 32);
    const same = resizeCenterCrop(shapeSample(1, 0).image, 64);
    assert.ok(Buffer.from(same.data).equals(Buffer.from(shapeSample(1, 0).image.data)), 'same size: unchanged');
    writePNG(path.join(dir, 'c.png'), shapeSample(1, 1).image);
    assert.throws(() => new ImageFolderDataset(dir, 32), /1 images in .* have no \.txt caption \(e\.g\. c\.png\)/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('latent cache: encodes, saves, reopens; batches are seeded samples times scaling_factor', async () => {
  const dir = tmpdir();
  try {
    const vae = new AutoencoderKL({
      in_channels: 3, out_channels: 3, latent_channels: 4, block_out_channels: [8, 8, 8, 8], layers_per_block: 1, norm_num_groups: 4,
    });
    vae.params.initRandom(2);
    const file = path.join(dir, 'latents.safetensors');
    const c = await buildLatentCache(vae, shapesSource(5, 5), file, { batch: 2, scalingFactor: 0.5 });
    const r = LatentCache.open(file);
    assert.equal(r.shape, [5, 4, 8, 8]);
    assert.equal(r.captions, c.captions);
    assert.is(r.captions[3], shapeSample(5, 3).caption);
    assert.is(r.scalingFactor, 0.5);
    const means = r.batch([3, 1], null);
    const direct = await hs.tidy(() => {
      const img = shapeSample(5, 3).image;
      const x = new Float32Array(3 * 64 * 64);
      for (let i = 0; i < 64 * 64; i++) for (let k = 0; k < 3; k++) x[k * 4096 + i] = img.data[i * 3 + k] / 127.5 - 1;
      return vae.encode(hs.tensor(x, [1, 3, 64, 64])).mean;
    }).floats();
    assert.equal(Array.from(means.subarray(0, 256)), Array.from(direct, (v) => Math.fround(v * 0.5)));
    const s1 = r.batch([0, 4], new Rng(1)), s2 = r.batch([0, 4], new Rng(1));
    assert.equal(s1, s2, 'seeded samples');
    assert.ok(s1.some((v, i) => v !== r.batch([0, 4], null)[i]), 'samples differ from the means');
    fs.writeFileSync(path.join(dir, 'bad.safetensors'), fs.readFileSync(file).subarray(0, 200));
    assert.throws(() => LatentCache.open(path.join(dir, 'bad.safetensors')), /invalid safetensors file/);
    vae.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
