// safetensors.ts under corruption: seeded byte flips in the header and the data, and truncations, of a
// small valid file. Every attempt must either load and read completely, or throw an Error whose message
// names the file; never a crash, a non-Error throw or a hang.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SafeTensors, saveSafetensors } from '../../lib/io/safetensors';
import { f32ToF16 } from '../../lib/io/half';

function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('random flips and truncations either load or throw an Error naming the file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-fuzz-'));
  try {
    const base = path.join(dir, 'base.safetensors');
    saveSafetensors(base, {
      'down_blocks.0.conv.weight': { dtype: 'F16', shape: [4, 2, 3, 3], data: f32ToF16(Array.from({ length: 72 }, (_, i) => i / 7)) },
      'ids': { dtype: 'I64', shape: [5], data: BigInt64Array.from([49406n, 1n, 2n, 3n, 49407n]) },
      'bias': { dtype: 'F32', shape: [4], data: Float32Array.of(1, 2, 3, 4) },
      'bf': { dtype: 'BF16', shape: [2, 2], data: Uint16Array.of(0x3f80, 0x4000, 0xbf80, 0) },
    }, { format: 'pt', layout: 'fuzz' });
    const good = fs.readFileSync(base);
    const headerEnd = 8 + Number(good.readBigUInt64LE(0));
    const rnd = mulberry32(20240611);
    const target = path.join(dir, 'mutant.safetensors');
    const counts = { loaded: 0, threw: 0 };
    const t0 = Date.now();
    for (let it = 0; it < 400; it++) {
      let buf = Buffer.from(good);
      const mode = it % 4;
      const flips = 1 + Math.floor(rnd() * 4);
      if (mode === 0 || mode === 3) { // header bytes, the 8 length bytes included
        for (let k = 0; k < flips; k++) buf[Math.floor(rnd() * headerEnd)] ^= 1 << Math.floor(rnd() * 8);
      }
      if (mode === 1 || mode === 3) { // data bytes
        for (let k = 0; k < flips; k++) buf[headerEnd + Math.floor(rnd() * (buf.length - headerEnd))] ^= 1 + Math.floor(rnd() * 255);
      }
      if (mode === 2 || (mode === 3 && rnd() < 0.5)) buf = buf.subarray(0, Math.floor(rnd() * buf.length));
      fs.writeFileSync(target, buf);
      let st: SafeTensors | null = null;
      try {
        st = SafeTensors.open(target);
        for (const k of st.keys()) {
          const info = st.info(k);
          if (info.dtype === 'I64') st.readI64(k); else st.readF32(k);
          st.readRaw(k);
        }
        counts.loaded++;
      } catch (e) {
        assert.instance(e, Error, `iteration ${it}: threw a non-Error`);
        assert.ok((e as Error).message.includes(target), `iteration ${it}: message lacks the file name: ${(e as Error).message}`);
        counts.threw++;
      } finally {
        st?.close();
      }
    }
    const ms = Date.now() - t0;
    assert.ok(counts.loaded > 50 && counts.threw > 50, `both outcomes exercised: ${JSON.stringify(counts)}`);
    assert.ok(ms < 2000, `400 iterations took ${ms} ms`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
