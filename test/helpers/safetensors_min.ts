// Minimal safetensors reader for tests: parses the JSON header and returns typed-array views (F32, F64, I64)
// over the file bytes. The full reader lives in lib/io; this one only exists so fixture tests stay self-contained.
import { readFileSync } from 'node:fs';

export interface TensorEntry {
  dtype: string;
  shape: number[];
  data: Float32Array | Float64Array | BigInt64Array;
}

export interface SafetensorsFile {
  metadata: Record<string, string>;
  keys: string[];
  has(name: string): boolean;
  get(name: string): TensorEntry;
  /** F32 tensor data (throws for other dtypes). */
  f32(name: string): Float32Array;
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export function readSafetensors(path: string): SafetensorsFile {
  const buf = readFileSync(path);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, unknown>;
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
  delete header.__metadata__;
  const base = 8 + headerLen;
  const entries = header as Record<string, HeaderEntry>;

  const get = (name: string): TensorEntry => {
    const e = entries[name];
    if (!e) throw new Error(`safetensors: no tensor named "${name}" in ${path}`);
    const [begin, end] = e.data_offsets;
    // Copy so the view is aligned regardless of the header length.
    const bytes = new Uint8Array(buf.subarray(base + begin, base + end));
    let data: TensorEntry['data'];
    switch (e.dtype) {
      case 'F32': data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4); break;
      case 'F64': data = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8); break;
      case 'I64': data = new BigInt64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8); break;
      default: throw new Error(`safetensors: dtype ${e.dtype} of "${name}" not supported by the test reader`);
    }
    return { dtype: e.dtype, shape: e.shape, data };
  };

  return {
    metadata,
    keys: Object.keys(entries),
    has: (name) => name in entries,
    get,
    f32: (name) => {
      const t = get(name);
      if (!(t.data instanceof Float32Array)) throw new Error(`safetensors: "${name}" is ${t.dtype}, not F32`);
      return t.data;
    },
  };
}
