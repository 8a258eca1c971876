// PNG reading: every colour type and all five row filters against pixels known in advance (the files are built
// here by a small encoder of the test's own that filters rows as the PNG specification says), and malformed
// files: each is an Error naming the file, never a crash, a hang or a huge allocation.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as zlib from 'zlib';
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { MAX_PIXELS, MAX_PNG_DIMENSION, decodePNG, encodePNG, readPNG, writePNG } from '../../lib/io/png';

const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const v of b) c = crcTable[(c ^ v) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type: string, data: Uint8Array, badCrc = false): Buffer {
  const head = Buffer.concat([Buffer.from(type, 'ascii'), Buffer.from(data)]);
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  head.copy(out, 4);
  out.writeUInt32BE((crc(head) ^ (badCrc ? 1 : 0)) >>> 0, 8 + data.length);
  return out;
}
function ihdr(w: number, h: number, ctype: number, depth = 8, interlace = 0): Buffer {
  const d = Buffer.alloc(13);
  d.writeUInt32BE(w, 0);
  d.writeUInt32BE(h, 4);
  d[8] = depth;
  d[9] = ctype;
  d[12] = interlace;
  return chunk('IHDR', d);
}
const SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A PNG of 8-bit samples (spp per pixel), row y filtered with filter y % 5 (or `filters`). */
function buildPNG(w: number, h: number, ctype: number, spp: number, samples: Uint8Array, extra: Buffer[] = [], filters?: number[]): Buffer {
  const stride = w * spp;
  const raw = Buffer.alloc((stride + 1) * h);
  for (let y = 0; y < h; y++) {
    const f = filters ? filters[y % filters.length] : y % 5;
    raw[y * (stride + 1)] = f;
    for (let i = 0; i < stride; i++) {
      const x = samples[y * stride + i];
      const a = i >= spp ? samples[y * stride + i - spp] : 0;
      const b = y > 0 ? samples[(y - 1) * stride + i] : 0;
      const c = y > 0 && i >= spp ? samples[(y - 1) * stride + i - spp] : 0;
      let pred = 0;
      if (f === 1) pred = a;
      else if (f === 2) pred = b;
      else if (f === 3) pred = (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      raw[y * (stride + 1) + 1 + i] = (x - pred) & 0xff;
    }
  }
  return Buffer.concat([SIG, ihdr(w, h, ctype), ...extra, chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', new Uint8Array(0))]);
}

function samples(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out[i] = (s >>> 16) & 0xff;
  }
  return out;
}

/** fn throws an Error (a plain one, not a RangeError from a typed array) whose message starts with prefix and
 * matches re: decodePNG's name the file, encodePNG's the function. */
function throwsNaming(fn: () => unknown, re: RegExp, prefix = /^img\.png: /): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, Error);
    assert.not.instance(e, RangeError);
    assert.match((e as Error).message, prefix);
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected an error matching ${re}`);
}

test('every colour type and all five row filters decode to the pixels written', () => {
  const w = 13, h = 11;
  for (const [ctype, spp] of [[0, 1], [2, 3], [4, 2], [6, 4]] as const) {
    const s = samples(w * h * spp, 7 + ctype);
    const img = decodePNG(buildPNG(w, h, ctype, spp, s), 'img.png');
    assert.equal([img.width, img.height, img.channels], [w, h, 3]);
    for (let i = 0; i < w * h; i++)
      for (let k = 0; k < 3; k++) {
        const want = ctype === 0 || ctype === 4 ? s[i * spp] : s[i * spp + k];  // gray (and alpha dropped)
        if (img.data[i * 3 + k] !== want) assert.unreachable(`ctype ${ctype}: pixel ${i} channel ${k} is ${img.data[i * 3 + k]}, want ${want}`);
      }
  }
  // Palette: indices into a 5-entry PLTE.
  const pal = Buffer.from([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150]);
  const idx = samples(w * h, 3).map((v) => v % 5);
  const img = decodePNG(buildPNG(w, h, 3, 1, idx, [chunk('PLTE', pal)]), 'img.png');
  for (let i = 0; i < w * h; i++) assert.equal([...img.data.subarray(i * 3, i * 3 + 3)], [...pal.subarray(idx[i] * 3, idx[i] * 3 + 3)]);
  // Our own encoder's output reads back.
  const rgb = samples(w * h * 3, 5);
  assert.equal([...decodePNG(encodePNG({ width: w, height: h, channels: 3, data: rgb })).data], [...rgb]);
});

test('malformed files are Errors naming the file and what is wrong', () => {
  const s = samples(8 * 8 * 3, 1);
  const good = buildPNG(8, 8, 2, 3, s);
  throwsNaming(() => decodePNG(Buffer.from('GIF89a......'), 'img.png'), /not a PNG file/);
  throwsNaming(() => decodePNG(good.subarray(0, good.length - 20), 'img.png'), /truncated/);
  // A flipped bit in the image data: the CRC says so before zlib sees it.
  const flipped = Buffer.from(good);
  flipped[SIG.length + 25 + 12] ^= 0x10;
  throwsNaming(() => decodePNG(flipped, 'img.png'), /IDAT chunk fails its CRC/);
  throwsNaming(() => decodePNG(Buffer.concat([SIG, chunk('IHDR', new Uint8Array(5))]), 'img.png'), /IHDR chunk of 5 bytes/);
  throwsNaming(() => decodePNG(Buffer.concat([SIG, ihdr(8, 8, 2, 16)]), 'img.png'), /only 8-bit PNGs/);
  throwsNaming(() => decodePNG(Buffer.concat([SIG, ihdr(8, 8, 2, 8, 1)]), 'img.png'), /interlaced/);
  throwsNaming(() => decodePNG(Buffer.concat([SIG, ihdr(8, 8, 7)]), 'img.png'), /unknown colour type 7/);
  throwsNaming(() => decodePNG(Buffer.concat([SIG, ihdr(0, 8, 2)]), 'img.png'), /image of 0x8 pixels/);
  // Declared sizes are bounded before any allocation: 100000 x 100000 RGB would ask for 30 GB.
  throwsNaming(() => decodePNG(Buffer.concat([SIG, ihdr(100000, 100000, 2), chunk('IEND', new Uint8Array(0))]), 'img.png'),
    new RegExp(`100000x100000 is more than ${MAX_PIXELS} pixels`));
  // A decompression bomb: 64 KB of compressed zeros that inflate to 64 MB, in a file declaring 8 x 8 pixels.
  const bomb = Buffer.concat([SIG, ihdr(8, 8, 2), chunk('IDAT', zlib.deflateSync(Buffer.alloc(64 << 20), { level: 9 })), chunk('IEND', new Uint8Array(0))]);
  throwsNaming(() => decodePNG(bomb, 'img.png'), /image data longer than a 8x8 image/);
  throwsNaming(() => decodePNG(Buffer.concat([SIG, ihdr(8, 8, 2), chunk('IDAT', Buffer.from('not zlib')), chunk('IEND', new Uint8Array(0))]), 'img.png'),
    /corrupt image data/);
  // Image data for 4 of the 8 rows declared.
  const half = Buffer.concat([SIG, ihdr(8, 8, 2), chunk('IDAT', zlib.deflateSync(Buffer.alloc(25 * 4))), chunk('IEND', new Uint8Array(0))]);
  throwsNaming(() => decodePNG(half, 'img.png'), /image data too short/);
  throwsNaming(() => decodePNG(Buffer.concat([SIG, ihdr(8, 8, 2), chunk('IEND', new Uint8Array(0))]), 'img.png'), /corrupt image data/);
  throwsNaming(() => decodePNG(buildPNG(4, 4, 2, 3, samples(48, 2), [], [5]), 'img.png'), /bad row filter 5/);
  throwsNaming(() => decodePNG(buildPNG(4, 4, 3, 1, new Uint8Array(16).fill(1)), 'img.png'), /palette image without a valid PLTE/);
  throwsNaming(() => decodePNG(buildPNG(4, 4, 3, 1, new Uint8Array(16).fill(2), [chunk('PLTE', new Uint8Array(6))]), 'img.png'),
    /uses palette entry 2 of 2/);
});

test('readPNG: a missing file is an Error naming the file', () => {
  assert.throws(() => readPNG('/nonexistent/dir/init.png'), (e: Error) => /^\/nonexistent\/dir\/init\.png: cannot read the PNG file: ENOENT/.test(e.message));
});

test('random corruptions of a valid file: an image of the declared size or an Error, nothing else', () => {
  const good = buildPNG(16, 12, 6, 4, samples(16 * 12 * 4, 9));
  let s = 12345, images = 0, errors = 0;
  const rnd = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let trial = 0; trial < 400; trial++) {
    const b = Buffer.from(good);
    const edits = 1 + Math.floor(rnd() * 4);
    for (let e = 0; e < edits; e++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
    const cut = rnd() < 0.2 ? Math.floor(rnd() * b.length) : b.length;
    try {
      const img = decodePNG(b.subarray(0, cut), 'img.png');
      assert.is(img.data.length, img.width * img.height * 3);
      images++;
    } catch (e) {
      if (!(e instanceof Error) || !/^img\.png: /.test(e.message)) throw new Error(`trial ${trial}: ${String(e)}`);
      errors++;
    }
  }
  assert.ok(errors > 300, `${errors} errors, ${images} images`);
});

/** The chunks of a PNG file: type and data, in order. */
function chunksOf(png: Buffer): { type: string; data: Buffer }[] {
  const out: { type: string; data: Buffer }[] = [];
  for (let pos = 8; pos + 8 <= png.length;) {
    const len = png.readUInt32BE(pos);
    out.push({ type: png.toString('ascii', pos + 4, pos + 8), data: png.subarray(pos + 8, pos + 8 + len) });
    pos += 12 + len;
  }
  return out;
}

const encodeThrows = (fn: () => unknown, re: RegExp) => throwsNaming(fn, re, /^encodePNG: /);

test('encodePNG: 1, 2, 3 and 4 channels are grey, grey + alpha, RGB and RGBA files holding the samples given', () => {
  const w = 5, h = 3;
  for (const [channels, ctype] of [[1, 0], [2, 4], [3, 2], [4, 6]] as const) {
    const data = samples(w * h * channels, 20 + channels);
    const png = encodePNG({ width: w, height: h, channels, data });
    const chunks = chunksOf(png);
    const ih = chunks[0].data;
    assert.equal([chunks[0].type, ih.readUInt32BE(0), ih.readUInt32BE(4), ih[8], ih[9]], ['IHDR', w, h, 8, ctype]);
    // The file's rows are the samples given, each behind filter byte 0 (alpha included).
    const raw = zlib.inflateSync(Buffer.concat(chunks.filter((c) => c.type === 'IDAT').map((c) => c.data)));
    const stride = w * channels;
    for (let y = 0; y < h; y++) {
      assert.is(raw[y * (stride + 1)], 0);
      assert.equal([...raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1))], [...data.subarray(y * stride, (y + 1) * stride)]);
    }
    // Our decoder reads it back as RGB: grey replicated, alpha dropped.
    const img = decodePNG(png, 'img.png');
    assert.equal([img.width, img.height, img.channels], [w, h, 3]);
    for (let i = 0; i < w * h; i++)
      for (let k = 0; k < 3; k++) {
        const want = channels <= 2 ? data[i * channels] : data[i * channels + k];
        if (img.data[i * 3 + k] !== want) assert.unreachable(`channels ${channels}: pixel ${i} channel ${k} is ${img.data[i * 3 + k]}, want ${want}`);
      }
  }
  // A Buffer, or a Uint8Array view into a larger buffer, is written from its own bytes.
  const big = samples(100, 4);
  const view = big.subarray(10, 10 + 2 * 2 * 3);
  assert.equal([...decodePNG(encodePNG({ width: 2, height: 2, channels: 3, data: view })).data], [...view]);
  assert.equal([...decodePNG(encodePNG({ width: 2, height: 2, channels: 3, data: Buffer.from(view) })).data], [...view]);
});

test('encodePNG: a malformed image is an Error naming the field, never a file of garbage', () => {
  const img = (o: Record<string, unknown>) => ({ width: 2, height: 2, channels: 3, data: new Uint8Array(12), ...o }) as never;
  for (const channels of [0, 5, 3.5, NaN, '3', undefined]) encodeThrows(() => encodePNG(img({ channels })), /channels must be 1 \(grey\), 2 \(grey \+ alpha\), 3 \(RGB\) or 4 \(RGBA\)/);
  for (const key of ['width', 'height']) {
    for (const v of [0, -2, 2.5, NaN, Infinity, 2 ** 32, MAX_PNG_DIMENSION + 1, '2'])
      encodeThrows(() => encodePNG(img({ [key]: v })), new RegExp(`${key} must be an integer in \\[1, 2147483647\\]`));
  }
  // Sizes PNG allows but no reader could allocate: refused before the data length is looked at.
  encodeThrows(() => encodePNG(img({ width: 1e6, height: 1e6, data: new Uint8Array(3) })), new RegExp(`1000000x1000000 is more than ${MAX_PIXELS} pixels`));
  encodeThrows(() => encodePNG(img({ width: MAX_PNG_DIMENSION, height: 1, data: new Uint8Array(3) })), /more than/);
  // Samples wider than a byte (or not bytes at all) are not reinterpreted as bytes.
  encodeThrows(() => encodePNG(img({ width: 2, height: 1, data: new Float32Array(6).fill(0.5) })), /data must be a Uint8Array or Buffer.*got Float32Array/);
  encodeThrows(() => encodePNG(img({ width: 2, height: 1, data: new Uint16Array(6) })), /data must be a Uint8Array or Buffer.*got Uint16Array/);
  encodeThrows(() => encodePNG(img({ width: 1, height: 1, data: [255, 0, 0] })), /data must be a Uint8Array or Buffer.*got Array/);
  encodeThrows(() => encodePNG(img({ data: new Uint8Array(13) })), /data has 13 bytes but a 2x2 image of 3 channels needs 12/);
  encodeThrows(() => encodePNG(img({ channels: 2, data: new Uint8Array(12) })), /data has 12 bytes but a 2x2 image of 2 channels needs 8/);
  encodeThrows(() => encodePNG(null as never), /image must be/);
  // decodePNG, handed something other than bytes, says so with the label.
  throwsNaming(() => decodePNG('not a png' as never, 'img.png'), /must be a Uint8Array or Buffer, got "not a png"/);
  throwsNaming(() => decodePNG(new ArrayBuffer(8) as never, 'img.png'), /must be a Uint8Array or Buffer, got ArrayBuffer/);
});

test('encodePNG text: Latin-1 values as tEXt, others as UTF-8 iTXt, keys held to the PNG keyword rules', () => {
  const img = { width: 1, height: 1, channels: 3 as const, data: new Uint8Array(3) };
  const text = { prompt: 'a red circle, café', negative: '猫 🐱 — ok', Software: 'hypersd' };
  const png = encodePNG(img, text);
  const chunks = chunksOf(png).filter((c) => c.type === 'tEXt' || c.type === 'iTXt');
  assert.equal(chunks.map((c) => c.type), ['tEXt', 'iTXt', 'tEXt']);
  assert.is(chunks[0].data.toString('latin1'), 'prompt\0a red circle, café');
  // iTXt: keyword, NUL, compression flag 0, method 0, empty language tag and translated keyword, UTF-8 text.
  const it = chunks[1].data;
  assert.is(it.subarray(0, 9).toString('latin1'), 'negative\0');
  assert.equal([...it.subarray(9, 13)], [0, 0, 0, 0]);
  assert.is(it.subarray(13).toString('utf8'), '猫 🐱 — ok');
  assert.is(decodePNG(png).width, 1); // still a valid file (ancillary chunks pass their CRC)
  for (const key of ['', 'a\0b', 'x'.repeat(80), ' lead', 'trail ', 'two  spaces', 'tab\there', 'ключ', 'a\u0080'])
    encodeThrows(() => encodePNG(img, { [key]: 'v' }), /text key .* is not a PNG keyword/);
  encodePNG(img, { ['k'.repeat(79)]: 'v', 'Comment é': 'v' }); // 79 characters and Latin-1 keys are fine
  encodeThrows(() => encodePNG(img, { prompt: 'a\0b' }), /text value of "prompt" contains a NUL/);
  encodeThrows(() => encodePNG(img, { prompt: 'broken \ud83d pair' }), /text value of "prompt" contains an unpaired UTF-16 surrogate/);
  encodeThrows(() => encodePNG(img, { steps: 4 } as never), /text value of "steps" must be a string, got 4/);
  encodeThrows(() => encodePNG(img, 'prompt' as never), /text must be an object/);
});

test('writePNG: an unwritable path is an Error naming the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hypersd-png-'));
  try {
    const img = { width: 1, height: 1, channels: 2 as const, data: Uint8Array.from([9, 128]) };
    writePNG(join(dir, 'ga.png'), img);
    assert.equal([...readPNG(join(dir, 'ga.png')).data], [9, 9, 9]);
    assert.throws(() => writePNG(dir, img), (e: Error) => e.message.startsWith(`${dir}: cannot write the PNG file: EISDIR`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
