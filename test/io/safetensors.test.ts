// safetensors.ts: round trips for every dtype, header validation errors (each naming file and problem),
// and reading the shared fixtures.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SafeTensors, releaseReadScratch, saveSafetensors } from '../../lib/io/safetensors';
import { bf16BitsToFloat, f32ToBf16, f32ToF16 } from '../../lib/io/half';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-st-'));
const FIX = path.join(__dirname, '..', 'fixtures');

/** Build a file from a raw header object and a data section, bypassing the writer's checks. */
function rawFile(name: string, header: unknown, data: Uint8Array = new Uint8Array(0), pad = true): string {
  let json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  if (pad && json.length % 8) json = Buffer.concat([json, Buffer.alloc(8 - (json.length % 8), 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const p = path.join(dir, name);
  fs.writeFileSync(p, Buffer.concat([len, json, data]));
  return p;
}

function throwsNaming(fn: () => unknown, file: string, re: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, Error);
    const msg = (e as Error).message;
    assert.ok(msg.includes(file), `message names the file: ${msg}`);
    assert.match(msg, re);
    return;
  }
  assert.unreachable(`expected an error matching ${re}`);
}

test('round trip of every dtype, metadata, 0-dim and empty tensors', () => {
  const p = path.join(dir, 'all.safetensors');
  const vals = [1, -2.5, 3.25, 0.1, 65504, -1e-3];
  saveSafetensors(p, {
    f32: { dtype: 'F32', shape: [2, 3], data: Float32Array.from(vals) },
    f16: { dtype: 'F16', shape: [3, 2], data: f32ToF16(vals) },
    bf16: { dtype: 'BF16', shape: [6], data: f32ToBf16(vals) },
    f64: { dtype: 'F64', shape: [6], data: Float64Array.from(vals) },
    i64: { dtype: 'I64', shape: [3], data: BigInt64Array.from([1n, -5n, 49407n]) },
    i32: { dtype: 'I32', shape: [3], data: Int32Array.from([1, -5, 7]) },
    i16: { dtype: 'I16', shape: [2], data: Int16Array.from([-3, 4]) },
    i8: { dtype: 'I8', shape: [2], data: Int8Array.from([-128, 127]) },
    u8: { dtype: 'U8', shape: [2], data: Uint8Array.from([0, 255]) },
    bool: { dtype: 'BOOL', shape: [2], data: Uint8Array.from([1, 0]) },
    scalar: { dtype: 'F32', shape: [], data: Float32Array.of(2) },
    empty: { dtype: 'F16', shape: [0, 4], data: new Uint16Array(0) },
  }, { format: 'pt', note: 'hé' });
  const raw = fs.readFileSync(p);
  const n = Number(raw.readBigUInt64LE(0));
  assert.is((8 + n) % 8, 0, 'header padded to 8 bytes');
  assert.is(raw.subarray(8, 8 + n).toString().trimEnd(), raw.subarray(8, 8 + n).toString().replace(/ +$/, ''));
  assert.equal(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temp file left behind');

  const st = SafeTensors.open(p);
  assert.equal(st.metadata, { format: 'pt', note: 'hé' });
  assert.equal(st.keys().length, 12);
  assert.ok(st.has('f16') && !st.has('nope'));
  const f32 = Float32Array.from(vals);
  assert.equal([...st.readF32('f32')], [...f32]);
  assert.equal([...st.readF32('f16')], [1, -2.5, 3.25, 0.0999755859375, 65504, -0.0010004043579101562]);
  assert.equal([...st.readF32('f64')], [...f32]);
  assert.equal([...st.readF32('bf16')], [...f32ToBf16(vals)].map(bf16BitsToFloat));
  assert.equal([...st.readI64('i64')], [1n, -5n, 49407n]);
  assert.equal([...st.readI64('i32')], [1n, -5n, 7n]);
  assert.equal([...st.readF32('i64')], [1, -5, 49407]);
  assert.equal([...st.readF32('i16')], [-3, 4]);
  assert.equal([...st.readF32('i8')], [-128, 127]);
  assert.equal([...st.readF32('u8')], [0, 255]);
  assert.equal([...st.readF32('bool')], [1, 0]);
  assert.equal([...st.readF32('scalar')], [2]);
  assert.equal(st.info('scalar').shape, []);
  assert.is(st.readF32('empty').length, 0);
  const info = st.info('i32');
  assert.is(info.end - info.start, 12);
  assert.equal([...new Int32Array(st.readRaw('i32').buffer)], [1, -5, 7]);
  assert.equal([...new Uint16Array(st.readRawSlice('f16', 2, 4).buffer)], [...f32ToF16([-2.5, 3.25])]);
  throwsNaming(() => st.readRawSlice('f16', 10, 4), p, /outside tensor 'f16'/);
  // readScratch: the same bytes in one shared staging buffer, valid until the next such read.
  const s1 = st.readScratch('i32');
  assert.equal([...new Int32Array(s1.buffer, s1.byteOffset, 3)], [1, -5, 7]);
  const s2 = st.readScratch('f16', 2, 4);
  assert.equal([...new Uint16Array(s2.buffer, s2.byteOffset, 2)], [...f32ToF16([-2.5, 3.25])]);
  assert.is(s2.buffer, s1.buffer, 'one staging buffer');
  throwsNaming(() => st.readScratch('f16', 10, 4), p, /outside tensor 'f16'/);
  releaseReadScratch();
  assert.is.not(st.readScratch('i32').buffer, s1.buffer, 'a new buffer after release');
  throwsNaming(() => st.readI64('f32'), p, /'f32'.*not an integer/);
  throwsNaming(() => st.info('nope'), p, /no tensor named 'nope'/);
  st.close();
  throwsNaming(() => st.readF32('f32'), p, /closed.*'f32'/);
  st.close(); // idempotent
});

test('a PyTorch checkpoint (zip of pickles, or a bare pickle) is named as such, with the advice to convert it', () => {
  // torch.save since 1.6 writes a zip archive; older .ckpt / .pt files are a pickle stream (protocol 2-5).
  const zip = path.join(dir, 'model.ckpt');
  fs.writeFileSync(zip, Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04]), Buffer.alloc(200, 7)]));
  throwsNaming(() => SafeTensors.open(zip), zip, /PyTorch checkpoint \(a zip archive of pickles\), not safetensors; .*[Cc]onvert them to safetensors/);
  const pkl = path.join(dir, 'old.pt');
  fs.writeFileSync(pkl, Buffer.from([0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e]));  // pickle of {} (6 bytes)
  throwsNaming(() => SafeTensors.open(pkl), pkl, /PyTorch pickle file, not safetensors; .*does not load pickles/);
  // A safetensors file whose header length is 640 = 0x280 starts with the bytes 80 02, as a pickle does: it
  // still opens (its JSON starts at byte 8).
  const odd = rawFile('odd.safetensors', '{' + ' '.repeat(638) + '}');
  assert.equal([...fs.readFileSync(odd).subarray(0, 2)], [0x80, 0x02]);
  const st = SafeTensors.open(odd);
  assert.equal(st.keys(), []);
  st.close();
});

test('writer refuses bad input and names the tensor', () => {
  const p = path.join(dir, 'bad-write.safetensors');
  throwsNaming(() => saveSafetensors(p, { w: { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) } }), p,
    /'w'.*12 bytes.*needs 16/);
  throwsNaming(() => saveSafetensors(p, { w: { dtype: 'F8' as 'F32', shape: [1], data: new Uint8Array(1) } }), p,
    /'w'.*unknown dtype/);
  assert.not.ok(fs.existsSync(p));
});

test('header validation errors name the file and the problem', () => {
  const f = (name: string, header: unknown, data?: Uint8Array, pad?: boolean) => rawFile(name, header, data, pad);
  const d16 = new Uint8Array(16);
  const cases: [string, RegExp][] = [
    [f('dtype.st', { a: { dtype: 'F8_E4M3', shape: [4], data_offsets: [0, 4] } }, d16), /tensor 'a': unknown dtype "F8_E4M3"/],
    [f('count.st', { a: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }, d16), /tensor 'a': 16 bytes stored but shape \[3\] of F32 needs 12/],
    [f('past.st', { a: { dtype: 'F32', shape: [8], data_offsets: [0, 32] } }, d16), /tensor 'a'.*past the end of the data section/],
    [f('rev.st', { a: { dtype: 'U8', shape: [0], data_offsets: [8, 4] } }, d16), /tensor 'a'.*reversed/],
    [f('overlap.st', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, d16), /'a' and 'b' overlap/],
    [f('shape.st', { a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, d16), /tensor 'a': shape \[-1\]/],
    [f('offs.st', { a: { dtype: 'F32', shape: [1], data_offsets: [0] } }, d16), /tensor 'a': data_offsets/],
    [f('entry.st', { a: 3 }, d16), /tensor 'a': entry is not an object/],
    [f('meta.st', { __metadata__: { k: 1 } }), /__metadata__\['k'\] is not a string/],
    [f('array.st', '[1,2]'), /not a JSON object/],
    [f('json.st', '{"a": '), /not valid JSON/],
    [f('utf8.st', Buffer.from([0x7b, 0xff, 0x7d]).toString('latin1')), /not valid (UTF-8|JSON)/],
  ];
  for (const [p, re] of cases) throwsNaming(() => SafeTensors.open(p), p, re);

  const short = path.join(dir, 'short.st');
  fs.writeFileSync(short, Buffer.from([1, 2, 3]));
  throwsNaming(() => SafeTensors.open(short), short, /shorter than the 8-byte header length/);
  const huge = path.join(dir, 'huge.st');
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(1n << 60n);
  fs.writeFileSync(huge, b);
  throwsNaming(() => SafeTensors.open(huge), huge, /header length \d+ exceeds the file size/);
  const missing = path.join(dir, 'missing.st');
  throwsNaming(() => SafeTensors.open(missing), missing, /cannot open/);

  // bytes that belong to no tensor (before, between or after the tensors) are refused, as the format's reference
  // reader refuses them (a file whose data moved under unchanged offsets had loaded as other weights); unpadded
  // headers are accepted
  const hole = f('hole.st', { a: { dtype: 'F32', shape: [1], data_offsets: [8, 12] }, b: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } }, d16, false);
  throwsNaming(() => SafeTensors.open(hole), hole, /bytes \[0, 8\) of the data section belong to no tensor \(before 'a'\)/);
  const gap = f('gap.st', { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] }, c: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } }, d16);
  throwsNaming(() => SafeTensors.open(gap), gap, /bytes \[4, 8\) of the data section belong to no tensor \(before 'b'\)/);
  const tail = f('tail.st', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, d16);
  throwsNaming(() => SafeTensors.open(tail), tail, /the last 8 bytes of the data section belong to no tensor/);
  const ok = SafeTensors.open(f('unpadded.st', { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, e: { dtype: 'F32', shape: [0], data_offsets: [16, 16] } }, d16, false));
  assert.equal(ok.keys().sort(), ['a', 'e']);
  ok.close();
});

test('a __proto__ key in the header is data, not a prototype', () => {
  const p = rawFile('proto.st', '{"__metadata__":{"__proto__":"x","a":"b"},"__proto__":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
    new Uint8Array([7]));
  const st = SafeTensors.open(p);
  assert.is(Object.getPrototypeOf(st.metadata), Object.prototype);
  assert.is(st.metadata.a, 'b');
  assert.equal([...st.readF32('__proto__')], [7]);
  st.close();
});

test('reads the fixture io files (F32 and I64)', () => {
  const st = SafeTensors.open(path.join(FIX, 'tiny-sd15', 'io.safetensors'));
  const ids = st.readI64('te_in_input_ids');
  assert.equal(st.info('te_in_input_ids').shape, [2, 77]);
  assert.is(ids[0], 49406n);
  assert.is(ids[76], 49407n);
  assert.equal([...st.readI64('unet_in_timesteps')], [999n, 250n]);
  const x = st.readF32('unet_in_sample');
  assert.is(x.length, 2 * 4 * 16 * 16);
  assert.ok(x.every(Number.isFinite));
  st.close();
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));
test.run();
