// safetensors: read lazily, validate strictly, write atomically.
//
// Layout of a file: u64 little-endian N, then N bytes of UTF-8 JSON (padded with spaces), then the data
// section. The JSON maps tensor name -> {dtype, shape, data_offsets: [begin, end]} with offsets relative
// to the data section, plus an optional "__metadata__" map of string -> string.
// Why this shape: model files are gigabytes, so `open` reads only the header and each read fetches one
// tensor's bytes with positioned reads (never the whole file into the JS heap). Everything in the header
// is checked at open time (offsets inside the data section, no overlaps or gaps, byte counts equal to
// prod(shape) * itemsize) so that a corrupt or truncated download fails at once with an Error naming
// the file and the tensor, instead of producing garbage weights later.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { bf16ToF32, f16ToF32 } from './half';

export type StDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const ITEMSIZE: Readonly<Record<StDType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

export interface StTensorInfo {
  name: string;
  dtype: StDType;
  shape: number[];
  /** absolute byte offsets in the file */
  start: number;
  end: number;
}

/** Headers larger than this are refused (the reference implementation uses the same bound). */
const MAX_HEADER = 100 * 1024 * 1024;

/** What to do with PyTorch pickle weights (hypersd reads safetensors only). */
export const PICKLE_ADVICE = 'hypersd does not load pickles (unpickling can run code). Convert them to safetensors first, ' +
  'e.g. in Python: safetensors.torch.save_file(torch.load(f, map_location="cpu", weights_only=True), f_out), ' +
  'or save_pretrained(..., safe_serialization=True) for a diffusers folder.';

if (os.endianness() !== 'LE') throw new Error('hypersd safetensors: big-endian hosts are not supported');

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function isDType(s: unknown): s is StDType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(ITEMSIZE, s);
}

/** Decode raw little-endian bytes of `dtype` into a Float32Array (ints are converted by value). */
export function rawToF32(raw: Uint8Array, dtype: StDType, where: string): Float32Array {
  const n = raw.byteLength / ITEMSIZE[dtype];
  const view = <T>(C: { new (b: ArrayBuffer, o: number, n: number): T; BYTES_PER_ELEMENT: number }): T =>
    raw.byteOffset % C.BYTES_PER_ELEMENT === 0
      ? new C(raw.buffer as ArrayBuffer, raw.byteOffset, n)
      : new C(raw.slice().buffer as ArrayBuffer, 0, n);
  switch (dtype) {
    case 'F32': return Float32Array.from(view(Float32Array));
    case 'F16': return f16ToF32(view(Uint16Array));
    case 'BF16': return bf16ToF32(view(Uint16Array));
    case 'F64': return Float32Array.from(view(Float64Array));
    case 'I32': return Float32Array.from(view(Int32Array));
    case 'I16': return Float32Array.from(view(Int16Array));
    case 'I8': return Float32Array.from(new Int8Array(raw.buffer, raw.byteOffset, n));
    case 'U8': case 'BOOL': return Float32Array.from(raw);
    case 'I64': {
      const src = view(BigInt64Array);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]);
      return out;
    }
    default: throw new Error(`${where}: cannot convert dtype ${dtype as string} to F32`);
  }
}

export class SafeTensors {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Byte offset of the data section (8 + header length). */
  readonly dataStart: number;
  private fd: number | null;
  private readonly tensors: Map<string, StTensorInfo>;

  private constructor(p: string, fd: number, dataStart: number, metadata: Record<string, string>,
    tensors: Map<string, StTensorInfo>) {
    this.path = p;
    this.fd = fd;
    this.dataStart = dataStart;
    this.metadata = metadata;
    this.tensors = tensors;
  }

  /** Open a file and validate its header; tensor data is read on demand. */
  static open(p: string): SafeTensors {
    let fd: number;
    try {
      fd = fs.openSync(p, 'r');
    } catch (e) {
      throw new Error(`${p}: cannot open safetensors file: ${(e as Error).message}`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      const { dataStart, metadata, tensors } = parseHeader(p, fd, size);
      return new SafeTensors(p, fd, dataStart, metadata, tensors);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  keys(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): StTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`${this.path}: no tensor named '${name}'`);
    return t;
  }

  /** The tensor's bytes, exactly as stored (little-endian). The Buffer owns a fresh, aligned ArrayBuffer. */
  readRaw(name: string): Buffer {
    const t = this.info(name);
    return this.readBytes(t, 0, t.end - t.start);
  }

  /**
   * The tensor's bytes (or `length` of them from `offset`) in a staging buffer shared by every file, valid only
   * until the next readScratch call: for a caller that copies them away at once (ParamStore.load uploads them
   * synchronously). Reusing one buffer spares a fresh ArrayBuffer per weight, whose pages the kernel must zero
   * on first touch (2 GB of them for SD1.5's weights). releaseReadScratch() drops it.
   */
  readScratch(name: string, offset = 0, length?: number): Buffer {
    const t = this.sliceOf(name, offset, length);
    const len = length ?? t.end - t.start - offset;
    if (!scratch || scratch.byteLength < len) scratch = new ArrayBuffer(Math.max(len, Math.min(2 * (scratch?.byteLength ?? 0), 256 << 20)));
    const buf = Buffer.from(scratch, 0, len);
    this.readInto(t, buf, offset);
    return buf;
  }

  /** `length` bytes of tensor `name` starting `offset` bytes into it (for row slices of fused weights). */
  readRawSlice(name: string, offset: number, length: number): Buffer {
    return this.readBytes(this.sliceOf(name, offset, length), offset, length);
  }

  /** Tensor `name`, checking that [offset, offset + length) (length: to its end) lies inside it. */
  private sliceOf(name: string, offset: number, length?: number): StTensorInfo {
    const t = this.info(name);
    const len = length ?? t.end - t.start - offset;
    if (offset < 0 || len < 0 || offset + len > t.end - t.start)
      throw new Error(`${this.path}: slice [${offset}, ${offset + len}) is outside tensor '${name}' (${t.end - t.start} bytes)`);
    return t;
  }

  /** Any numeric dtype, converted to float32 by value. */
  readF32(name: string): Float32Array {
    const t = this.info(name);
    if (t.dtype === 'F32') {
      const out = new Float32Array(numel(t.shape));
      this.readInto(t, new Uint8Array(out.buffer));
      return out;
    }
    return rawToF32(this.readRaw(name), t.dtype, `${this.path}: tensor '${name}'`);
  }

  /** Integer dtypes widened to int64 (token ids, timesteps). */
  readI64(name: string): BigInt64Array {
    const t = this.info(name);
    const raw = this.readRaw(name);
    const n = numel(t.shape);
    switch (t.dtype) {
      case 'I64': return new BigInt64Array(raw.buffer, raw.byteOffset, n);
      case 'I32': return BigInt64Array.from(new Int32Array(raw.buffer, raw.byteOffset, n), (v) => BigInt(v));
      case 'I16': return BigInt64Array.from(new Int16Array(raw.buffer, raw.byteOffset, n), (v) => BigInt(v));
      case 'I8': return BigInt64Array.from(new Int8Array(raw.buffer, raw.byteOffset, n), (v) => BigInt(v));
      case 'U8': case 'BOOL': return BigInt64Array.from(raw, (v) => BigInt(v));
      default: throw new Error(`${this.path}: tensor '${name}' has dtype ${t.dtype}, not an integer type`);
    }
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  private readBytes(t: StTensorInfo, offset: number, length: number): Buffer {
    const buf = Buffer.from(new ArrayBuffer(length));
    this.readInto(t, buf, offset);
    return buf;
  }

  private readInto(t: StTensorInfo, dst: Uint8Array, offset = 0): void {
    if (this.fd === null) throw new Error(`${this.path}: file is closed (reading '${t.name}')`);
    let done = 0;
    while (done < dst.byteLength) {
      const n = fs.readSync(this.fd, dst, done, dst.byteLength - done, t.start + offset + done);
      if (n === 0) throw new Error(`${this.path}: file ended while reading tensor '${t.name}' (truncated since open?)`);
      done += n;
    }
  }
}

let scratch: ArrayBuffer | null = null;
/** Drops the staging buffer of SafetensorsFile.readScratch (ParamStore.load calls it when done). */
export function releaseReadScratch(): void {
  scratch = null;
}

function parseHeader(p: string, fd: number, size: number):
  { dataStart: number; metadata: Record<string, string>; tensors: Map<string, StTensorInfo> } {
  const fail = (msg: string): never => {
    throw new Error(`${p}: invalid safetensors file: ${msg}`);
  };
  // A PyTorch checkpoint (.ckpt / .pt / .bin) given where safetensors are expected: say so, rather than
  // reporting its first bytes as an absurd header length.
  // A header length whose low bytes read 80 02..05 is legal (640 = 0x280), so a file whose JSON header starts
  // where it should ('{' at byte 8) is never taken for a pickle.
  const head = Buffer.alloc(Math.min(size, 9));
  readFully(p, fd, head, 0);
  const jsonAt8 = head.length === 9 && head[8] === 0x7b;
  const zip = head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  const pickle = head.length >= 2 && head[0] === 0x80 && head[1] >= 2 && head[1] <= 5;
  if (!jsonAt8 && (zip || pickle))
    throw new Error(`${p}: this is a PyTorch ${zip ? 'checkpoint (a zip archive of pickles)' : 'pickle file'}, not safetensors; ${PICKLE_ADVICE}`);
  if (size < 8) fail(`file is ${size} bytes, shorter than the 8-byte header length`);
  const lenBuf = head.subarray(0, 8);
  const n = lenBuf.readBigUInt64LE(0);
  if (n > BigInt(size - 8)) fail(`header length ${n} exceeds the file size ${size} (truncated or not safetensors)`);
  if (n > BigInt(MAX_HEADER)) fail(`header length ${n} exceeds ${MAX_HEADER} bytes`);
  if (n < 2n) fail(`header length ${n} is too short for a JSON object`);
  const hlen = Number(n);
  const hbuf = Buffer.alloc(hlen);
  readFully(p, fd, hbuf, 8);

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(hbuf);
  } catch {
    return fail('header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('header is not a JSON object');

  const dataStart = 8 + hlen;
  const dataSize = size - dataStart;
  let metadata: Record<string, string> = {};
  const tensors = new Map<string, StTensorInfo>();
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('__metadata__ is not an object');
      const entries = Object.entries(v as Record<string, unknown>);
      for (const [k, s] of entries) if (typeof s !== 'string') fail(`__metadata__['${k}'] is not a string`);
      metadata = Object.fromEntries(entries) as Record<string, string>;
      continue;
    }
    const bad = (msg: string): never => fail(`tensor '${name}': ${msg}`);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) bad('entry is not an object');
    const { dtype, shape, data_offsets: off } = v as { dtype: unknown; shape: unknown; data_offsets: unknown };
    if (!isDType(dtype)) return bad(`unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      return bad(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0))
      return bad(`data_offsets ${JSON.stringify(off)} is not a pair of non-negative integers`);
    const [b, e] = off as [number, number];
    if (b > e) bad(`data_offsets [${b}, ${e}] are reversed`);
    if (e > dataSize) bad(`data_offsets [${b}, ${e}] run past the end of the data section (${dataSize} bytes; truncated file?)`);
    const want = numel(shape as number[]) * ITEMSIZE[dtype];
    if (want !== e - b) bad(`${e - b} bytes stored but shape ${JSON.stringify(shape)} of ${dtype} needs ${want}`);
    tensors.set(name, { name, dtype, shape: shape as number[], start: dataStart + b, end: dataStart + e });
  }
  // The tensors tile the data section exactly, as the format's reference reader requires: no overlaps, and no
  // bytes that belong to no tensor (a file with its data shifted under unchanged offsets had loaded as other
  // weights).
  const sorted = [...tensors.values()].filter((t) => t.end > t.start).sort((x, y) => x.start - y.start);
  let at = dataStart;
  for (let i = 0; i < sorted.length; i++) {
    if (i > 0 && sorted[i].start < sorted[i - 1].end) fail(`tensors '${sorted[i - 1].name}' and '${sorted[i].name}' overlap`);
    if (sorted[i].start > at)
      fail(`bytes [${at - dataStart}, ${sorted[i].start - dataStart}) of the data section belong to no tensor (before '${sorted[i].name}'): not a valid safetensors file`);
    at = sorted[i].end;
  }
  if (at !== dataStart + dataSize)
    fail(`the last ${dataStart + dataSize - at} bytes of the data section belong to no tensor: not a valid safetensors file`);
  return { dataStart, metadata, tensors };
}

function readFully(p: string, fd: number, dst: Buffer, pos: number): void {
  let done = 0;
  while (done < dst.length) {
    const n = fs.readSync(fd, dst, done, dst.length - done, pos + done);
    if (n === 0) throw new Error(`${p}: unexpected end of file while reading the header`);
    done += n;
  }
}

export interface StTensorIn {
  dtype: StDType;
  shape: number[];
  data: ArrayBufferView;
}

/**
 * Write tensors to `p` as safetensors (tensors in the order given; header padded to a multiple of 8 bytes
 * with spaces). The file is written beside `p` under a temporary name and renamed into place, so readers
 * never see a half-written file.
 *
 * @example saveSafetensors('out.safetensors', { w: { dtype: 'F32', shape: [2, 2], data: new Float32Array(4) } })
 */
export function saveSafetensors(p: string, tensors: Record<string, StTensorIn>,
  metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata))
      if (typeof v !== 'string') throw new Error(`${p}: metadata['${k}'] must be a string`);
    header.__metadata__ = metadata;
  }
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    if (name === '__metadata__') throw new Error(`${p}: '__metadata__' cannot be a tensor name`);
    if (!isDType(t.dtype)) throw new Error(`${p}: tensor '${name}': unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw new Error(`${p}: tensor '${name}': shape ${JSON.stringify(t.shape)} is not a list of non-negative integers`);
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const want = numel(t.shape) * ITEMSIZE[t.dtype];
    if (bytes.byteLength !== want)
      throw new Error(`${p}: tensor '${name}': data has ${bytes.byteLength} bytes, shape ${JSON.stringify(t.shape)} of ${t.dtype} needs ${want}`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + want] };
    offset += want;
    parts.push(bytes);
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));

  const tmp = path.join(path.dirname(p), `.${path.basename(p)}.${process.pid}.${Date.now()}.tmp`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w');
    writeFully(fd, len);
    writeFully(fd, json);
    for (const b of parts) writeFully(fd, b);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, p);
  } catch (e) {
    if (fd !== undefined) try { fs.closeSync(fd); } catch { /* already closed */ }
    try { fs.unlinkSync(tmp); } catch { /* never created */ }
    throw new Error(`${p}: writing safetensors failed: ${(e as Error).message}`);
  }
}

function writeFully(fd: number, b: Uint8Array): void {
  let done = 0;
  while (done < b.byteLength) done += fs.writeSync(fd, b, done, b.byteLength - done);
}

/** A weight must be stored as a float: an integer or boolean tensor in its place (a corrupt or foreign file) had
 * been converted by value without a word. */
export function checkFloatWeight(w: { dtype?: string; source: string }): void {
  if (w.dtype !== undefined && !['F64', 'F32', 'F16', 'BF16'].includes(w.dtype))
    throw new Error(`${w.source}: stored as ${w.dtype}; a weight must be F32, F16, BF16 or F64`);
}
