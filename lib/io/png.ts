/**
 * PNG in and out with node's zlib: 8-bit grey/grey+alpha/RGB/RGBA writing (filter 0) with tEXt/iTXt text, and
 * reading of 8-bit non-interlaced PNGs of every colour type with all five row filters, to RGB (alpha dropped),
 * enough for init images and for checking our own output.
 */
import * as zlib from 'zlib';
import * as fs from 'fs';
import { isUint8Array } from 'util/types';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  Buffer.from(data.buffer, data.byteOffset, data.length).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** The most pixels decodePNG accepts, and encodePNG writes: 16384 x 16384 (an SDXL image is 1024 x 1024). */
export const MAX_PIXELS = 16384 * 16384;
/** PNG's limit on width and height (IHDR holds them as 31-bit integers). */
export const MAX_PNG_DIMENSION = 2 ** 31 - 1;

export interface RawImage { width: number; height: number; channels: 1 | 3 | 4; data: Uint8Array }
/** What encodePNG writes: 8-bit grey (1), grey + alpha (2), RGB (3) or RGBA (4), rows top to bottom, interleaved. */
export interface EncodableImage { width: number; height: number; channels: 1 | 2 | 3 | 4; data: Uint8Array }

/** PNG colour type of each channel count: 0 grey, 4 grey + alpha, 2 RGB, 6 RGBA. */
const COLOUR_TYPE: Readonly<Record<number, number>> = { 1: 0, 2: 4, 3: 2, 4: 6 };

const show = (v: unknown): string =>
  typeof v === 'number' ? String(v) : typeof v === 'string' ? JSON.stringify(v) : v === null ? 'null' :
    typeof v === 'object' ? ((v as object).constructor?.name ?? 'object') : typeof v;

// A string with an unpaired UTF-16 surrogate, which UTF-8 cannot hold (Buffer.from would write U+FFFD instead).
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Text chunks. Keys follow the PNG keyword rules (1-79 printable Latin-1 characters, no leading, trailing or
 * consecutive spaces) whatever the value. A value of Latin-1 characters only (U+0000-U+00FF) is written as tEXt;
 * any other value (a prompt with CJK or emoji, say) as an uncompressed iTXt chunk holding UTF-8, which PNG readers
 * (exiftool, PIL's PngImagePlugin, ...) return as the same string. NUL is not allowed in either.
 */
function textChunks(text: unknown): Buffer[] {
  if (text === undefined) return [];
  if (text === null || typeof text !== 'object' || Array.isArray(text)) {
    throw new Error(`encodePNG: text must be an object of string keys and values, got ${Array.isArray(text) ? 'an array' : show(text)}`);
  }
  const out: Buffer[] = [];
  for (const [k, v] of Object.entries(text)) {
    if (k.length < 1 || k.length > 79 || /[^\x20-\x7e\xa1-\xff]/.test(k) || k.startsWith(' ') || k.endsWith(' ') || k.includes('  ')) {
      throw new Error(`encodePNG: text key ${JSON.stringify(k)} is not a PNG keyword: keys must be 1-79 printable Latin-1 ` +
        'characters (no NUL, control characters or characters past U+00FF; no leading, trailing or double spaces)');
    }
    if (typeof v !== 'string') throw new Error(`encodePNG: text value of ${JSON.stringify(k)} must be a string, got ${show(v)}`);
    if (v.includes('\0')) throw new Error(`encodePNG: text value of ${JSON.stringify(k)} contains a NUL character, which PNG text cannot hold`);
    if (LONE_SURROGATE.test(v)) {
      throw new Error(`encodePNG: text value of ${JSON.stringify(k)} contains an unpaired UTF-16 surrogate, which UTF-8 cannot encode`);
    }
    if (/^[\x00-\xff]*$/.test(v)) out.push(chunk('tEXt', Buffer.from(`${k}\0${v}`, 'latin1')));
    // iTXt: keyword NUL, compression flag 0, method 0, language tag "" NUL, translated keyword "" NUL, UTF-8 text.
    else out.push(chunk('iTXt', Buffer.concat([Buffer.from(k, 'latin1'), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(v, 'utf8')])));
  }
  return out;
}

/**
 * An 8-bit PNG (filter 0, zlib level 6) of `img`, with optional text chunks (see textChunks: tEXt for Latin-1
 * values, iTXt UTF-8 otherwise). Throws an Error naming the field at fault for anything that is not a
 * well-formed image: channels other than 1-4, sizes that are not positive integers (or past MAX_PIXELS), data
 * that is not a Uint8Array/Buffer of exactly width*height*channels bytes.
 */
export function encodePNG(img: EncodableImage, text?: Record<string, string>): Buffer {
  if (img === null || typeof img !== 'object') throw new Error(`encodePNG: image must be { width, height, channels, data }, got ${show(img)}`);
  const { width, height, channels, data } = img as { width: unknown; height: unknown; channels: unknown; data: unknown };
  if (typeof channels !== 'number' || !(channels in COLOUR_TYPE)) {
    throw new Error(`encodePNG: channels must be 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), got ${show(channels)}`);
  }
  for (const [key, v] of [['width', width], ['height', height]] as const) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_PNG_DIMENSION) {
      throw new Error(`encodePNG: ${key} must be an integer in [1, ${MAX_PNG_DIMENSION}], got ${show(v)}`);
    }
  }
  const w = width as number, h = height as number;
  if (w * h > MAX_PIXELS) throw new Error(`encodePNG: ${w}x${h} is more than ${MAX_PIXELS} pixels (the largest image hypersd reads)`);
  if (!isUint8Array(data)) {
    throw new Error(`encodePNG: data must be a Uint8Array or Buffer of 8-bit samples, got ${show(data)}` +
      (ArrayBuffer.isView(data) ? ' (convert the samples to bytes first; its memory is not written as is)' : ''));
  }
  if (data.length !== w * h * channels) {
    throw new Error(`encodePNG: data has ${data.length} bytes but a ${w}x${h} image of ${channels} channels needs ${w * h * channels}`);
  }
  const texts = textChunks(text);
  const stride = w * channels;
  const raw = Buffer.alloc((stride + 1) * h);
  for (let y = 0; y < h; y++) {
    raw[y * (stride + 1)] = 0;
    Buffer.from(data.buffer, data.byteOffset + y * stride, stride).copy(raw, y * (stride + 1) + 1);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = COLOUR_TYPE[channels];
  const parts = [Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), ...texts];
  parts.push(chunk('IDAT', zlib.deflateSync(raw, { level: 6 })), chunk('IEND', new Uint8Array(0)));
  return Buffer.concat(parts);
}

export function decodePNG(buf: Uint8Array, label = 'PNG'): RawImage {
  if (!isUint8Array(buf)) throw new Error(`${label}: the PNG file's bytes must be a Uint8Array or Buffer, got ${show(buf)}`);
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  if (b.length < 8 || b.readUInt32BE(0) !== 0x89504e47) throw new Error(`${label}: not a PNG file`);
  let pos = 8, width = 0, height = 0, depth = 0, ctype = -1, interlace = 0;
  const idat: Buffer[] = [];
  let palette: Buffer | null = null;
  while (pos + 8 <= b.length) {
    const len = b.readUInt32BE(pos), type = b.toString('ascii', pos + 4, pos + 8);
    if (pos + 12 + len > b.length) throw new Error(`${label}: truncated ${type} chunk`);
    const d = b.subarray(pos + 8, pos + 8 + len);
    // Critical chunks (upper-case first letter) must pass their CRC; ancillary ones are skipped unchecked.
    if (type.charCodeAt(0) >= 65 && type.charCodeAt(0) <= 90 && crc32(b.subarray(pos + 4, pos + 8 + len)) !== b.readUInt32BE(pos + 8 + len))
      throw new Error(`${label}: ${type} chunk fails its CRC (corrupt file)`);
    if (type === 'IHDR') {
      if (len !== 13) throw new Error(`${label}: IHDR chunk of ${len} bytes (must be 13)`);
      width = d.readUInt32BE(0); height = d.readUInt32BE(4); depth = d[8]; ctype = d[9]; interlace = d[12];
    } else if (type === 'PLTE') palette = d;
    else if (type === 'IDAT') idat.push(d);
    else if (type === 'IEND') break;
    pos += 12 + len;
  }
  if (ctype < 0) throw new Error(`${label}: no IHDR chunk`);
  if (depth !== 8) throw new Error(`${label}: only 8-bit PNGs are supported (this one is ${depth}-bit)`);
  if (interlace) throw new Error(`${label}: interlaced PNGs are not supported`);
  const spp = ({ 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 } as Record<number, number>)[ctype];
  if (!spp) throw new Error(`${label}: unknown colour type ${ctype}`);
  // Sizes come from the file: bounded before anything is allocated (a service decoding uploaded init images).
  if (width < 1 || height < 1) throw new Error(`${label}: image of ${width}x${height} pixels`);
  if (width * height > MAX_PIXELS)
    throw new Error(`${label}: ${width}x${height} is more than ${MAX_PIXELS} pixels (the largest image hypersd reads)`);
  if (ctype === 3 && (!palette || palette.length % 3 !== 0 || palette.length === 0))
    throw new Error(`${label}: palette image without a valid PLTE chunk`);
  const stride = width * spp;
  const expected = (stride + 1) * height;
  let raw: Buffer;
  try {
    // No more output than the image needs (a small compressed stream can expand to gigabytes).
    raw = zlib.inflateSync(Buffer.concat(idat), { maxOutputLength: expected + 1 });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ERR_BUFFER_TOO_LARGE') throw new Error(`${label}: image data longer than a ${width}x${height} image`);
    throw new Error(`${label}: corrupt image data (${err.message})`);
  }
  if (raw.length < expected) throw new Error(`${label}: image data too short`);
  const px = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const o = y * stride;
    for (let i = 0; i < stride; i++) {
      const a = i >= spp ? px[o + i - spp] : 0;
      const up = y > 0 ? px[o - stride + i] : 0;
      const c = y > 0 && i >= spp ? px[o - stride + i - spp] : 0;
      let v = src[i];
      if (f === 1) v += a;
      else if (f === 2) v += up;
      else if (f === 3) v += (a + up) >> 1;
      else if (f === 4) {
        const p = a + up - c, pa = Math.abs(p - a), pb = Math.abs(p - up), pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? up : c;
      } else if (f !== 0) throw new Error(`${label}: bad row filter ${f}`);
      px[o + i] = v & 0xff;
    }
  }
  // to RGB
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    if (ctype === 2 || ctype === 6) for (let k = 0; k < 3; k++) rgb[i * 3 + k] = px[i * spp + k];
    else if (ctype === 3) {
      if (px[i] * 3 >= palette!.length) throw new Error(`${label}: pixel ${i} uses palette entry ${px[i]} of ${palette!.length / 3}`);
      for (let k = 0; k < 3; k++) rgb[i * 3 + k] = palette![px[i] * 3 + k];
    } else for (let k = 0; k < 3; k++) rgb[i * 3 + k] = px[i * spp];
  }
  return { width, height, channels: 3, data: rgb };
}

export function readPNG(file: string): RawImage {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new Error(`${file}: cannot read the PNG file: ${(e as Error).message}`);
  }
  return decodePNG(bytes, file);
}
export function writePNG(file: string, img: EncodableImage, text?: Record<string, string>): void {
  const png = encodePNG(img, text);
  try {
    fs.writeFileSync(file, png);
  } catch (e) {
    throw new Error(`${file}: cannot write the PNG file: ${(e as Error).message}`, { cause: e });
  }
}
