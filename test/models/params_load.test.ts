// ParamStore.load: stored F32 / F16 / BF16 bytes go to the device as they are and are converted and repacked
// there (cast, permute). Checked bit for bit against the per-element JS path it replaced (readF32, the OIHW ->
// OHWI loop, tensor()), which a source without readRaw still takes: on every layout of the tiny fixtures and on
// a file of half-precision values chosen to hit the rounding (subnormals, ties, the f16 maximum, -0).
import { test } from 'uvu';
import * as hs from '../../lib';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { openModel, readDiffusersConfigs, weightRef, type OpenedModel } from '../../lib/io/model_files';
import { SafeTensors, saveSafetensors, type StTensorIn } from '../../lib/io/safetensors';
import { ParamStore, type ParamKind, type WeightSource } from '../../lib/nn/params';
import { UNet2DConditionModel, type UNetConfig } from '../../lib/models/unet';
import { AutoencoderKL, type VAEConfig } from '../../lib/models/vae';
import { CLIPTextModel, type CLIPTextConfig } from '../../lib/models/clip';
import { DEVICE } from '../helpers/check';
import { storeStateDict } from '../../lib/train/export';
import { f32ToBf16, f32ToF16 } from '../../lib/io/half';

const FIX = path.join(__dirname, '..', 'fixtures');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-params-'));

/** The same source without readRaw: ParamStore.load takes the JS path. */
function jsOnly(src: Map<string, WeightSource>): Map<string, WeightSource> {
  return new Map([...src].map(([k, w]) => [k, { shape: w.shape, source: w.source, readF32: () => w.readF32() }]));
}

async function sameParams(a: ParamStore, b: ParamStore, what: string): Promise<void> {
  const names = [...a.specs.keys()];
  assert.ok(names.length > 0, `${what}: no parameters`);
  for (const name of names) {
    assert.equal(a.get(name).shape, b.get(name).shape, `${what} ${name}: shape`);
    assert.is(a.get(name).dtype, b.get(name).dtype, `${what} ${name}: dtype`);
  }
  // All of a store in one read (a read per parameter costs a stream round trip): f16 / bf16 widen exactly.
  const flat = (p: ParamStore) => hs.tidy(() => hs.ops.concat(names.map((name) => hs.ops.cast(p.get(name), 'f32').reshape([-1])), 0));
  const [ta, tb] = [flat(a), flat(b)];
  const [u, v] = [await ta.floats(), await tb.floats()];
  ta.dispose();
  tb.dispose();
  let off = 0;
  for (const name of names) {
    const n = a.get(name).size;
    for (let i = off; i < off + n; i++)
      if (!Object.is(u[i], v[i])) assert.unreachable(`${what} ${name}[${i - off}]: ${u[i]} (raw bytes) != ${v[i]} (JS path)`);
    off += n;
  }
  assert.is(off, u.length);
}

function build(m: OpenedModel, c: 'unet' | 'vae' | 'text_encoder'): ParamStore {
  const cfg = m.configs[c]!;
  if (c === 'unet') return new UNet2DConditionModel(cfg as UNetConfig).params;
  if (c === 'vae') return new AutoencoderKL(cfg as VAEConfig).params;
  return new CLIPTextModel(cfg as CLIPTextConfig, 'text_encoder').params;
}

test('loading the tiny fixtures (all three layouts) from raw bytes gives the JS path\'s bits, f32 / bf16 / f16 storage', async () => {
  for (const m of ['tiny-sd15', 'tiny-sdxl']) {
    const dir = path.join(FIX, m, 'diffusers');
    const { configs } = readDiffusersConfigs(dir);
    const models = [openModel(dir), openModel(path.join(FIX, m, 'model.safetensors'), { configs }),
      openModel(path.join(FIX, m, 'single_file.safetensors'), { configFrom: dir })];
    try {
      for (const om of models)
        for (const c of ['unet', 'vae', 'text_encoder'] as const)
          // The transforms of the other layouts (slices of fused tensors, transposes) do not depend on the
          // storage dtype: one dtype there keeps the test short.
          for (const dtype of om.layout === 'diffusers' ? ['f32', 'bf16', 'f16'] as const : ['f16'] as const) {
            const src = om.components[c]!;
            assert.ok([...src.values()].every((w) => typeof w.readRaw === 'function'), 'file weights offer raw bytes');
            const a = build(om, c), b = build(om, c);
            a.load(src, { dtype, device: DEVICE });
            b.load(jsOnly(src), { dtype, device: DEVICE });
            await sameParams(a, b, `${m} ${om.layout} ${c} ${dtype}`);
            a.dispose();
            b.dispose();
          }
    } finally {
      for (const om of models) om.close();
    }
  }
});

test('F16 and BF16 files: 3x3 and 1x1 conv, linear and norm weights, converted to every storage dtype, match the JS path bit for bit', async () => {
  // Values that exercise the conversions: f16 subnormals and maximum, -0, bf16 / f16 rounding ties.
  const special = [0, -0, 1, -1, 65504, -65504, 6.1e-5, 5.96e-8, 1e-7, 3.14159, 1 + 2 ** -9, 1 + 3 * 2 ** -9, 1 + 2 ** -8, -2.5e-6, 1234.5];
  const fill = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => (i < special.length ? special[(i + seed) % special.length] : Math.sin(i * 0.7 + seed) * 3));
  const specs: [string, number[], ParamKind][] = [
    ['conv3.weight', [5, 7, 3, 3], 'conv'], ['conv1.weight', [6, 4, 1, 1], 'conv'], ['lin.weight', [9, 11], 'linear'],
    ['norm.weight', [13], 'norm'], ['lin.bias', [9], 'bias'],
  ];
  for (const fileType of ['F16', 'BF16'] as const) {
    const tensors: Record<string, StTensorIn> = {};
    specs.forEach(([name, shape], k) => {
      const v = fill(shape.reduce((a, b) => a * b, 1), k);
      const u = fileType === 'F16' ? f32ToF16(v) : f32ToBf16(v);
      tensors[name] = { dtype: fileType, shape, data: u };
    });
    const file = path.join(tmp, `half-${fileType}.safetensors`);
    saveSafetensors(file, tensors);
    const st = SafeTensors.open(file);
    try {
      const src = new Map<string, WeightSource>(specs.map(([name]) => [name, weightRef(st, name)]));
      for (const dtype of ['f32', 'bf16', 'f16'] as const) {
        const mk = () => {
          const p = new ParamStore('test');
          for (const [name, shape, kind] of specs) p.declare(name, shape, kind);
          return p;
        };
        const a = mk(), b = mk();
        a.load(src, { dtype, device: DEVICE });
        b.load(jsOnly(src), { dtype, device: DEVICE });
        assert.equal(a.get('conv3.weight').shape, [5, 3, 3, 7]);
        assert.equal(a.get('conv1.weight').shape, [6, 1, 1, 4]);
        assert.is(a.get('norm.weight').dtype, 'f32');
        await sameParams(a, b, `${fileType} file, ${dtype} storage`);
        a.dispose();
        b.dispose();
      }
    } finally {
      st.close();
    }
  }
});

test('storeStateDict writes back the file\'s values in F32 and rounded to nearest even in F16 / BF16, PyTorch layout', async () => {
  const dir = path.join(FIX, 'tiny-sd15', 'diffusers');
  const om = openModel(dir);
  try {
    for (const c of ['unet', 'vae', 'text_encoder'] as const) {
      const src = om.components[c]!;
      const p = build(om, c);
      p.load(src, { dtype: 'f32', device: DEVICE });
      for (const dt of ['F32', 'F16', 'BF16'] as const) {
        const sd = await storeStateDict(p, dt);
        assert.equal(Object.keys(sd), [...p.specs.keys()]);
        for (const [name, e] of Object.entries(sd)) {
          assert.is(e.dtype, dt);
          assert.equal(e.shape, p.specs.get(name)!.shape);
          const f = src.get(name)!.readF32();  // the file's values (F32 or F16 there), PyTorch layout
          const u = dt === 'F32' ? f : dt === 'F16' ? f32ToF16(f) : f32ToBf16(f);
          const want = new Uint8Array(u.buffer, u.byteOffset, u.byteLength);
          const got = new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength);
          assert.is(got.length, want.length, `${c} ${name} ${dt}: bytes`);
          for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) assert.unreachable(`${c} ${name} ${dt}: byte ${i} differs`);
        }
      }
      p.dispose();
    }
  } finally {
    om.close();
  }
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
