// lora.ts: the kohya, kohya-LDM and peft files of test/fixtures/lora parse to the same modules, tensors and
// alpha for tiny-sd15 and tiny-sdxl; base + mergedDelta reproduces the generator's merged weights; the LDM
// spellings agree with the generator's diffusers->LDM table; bogus keys land in `unmatched`; peft alpha
// metadata (and its absence) is honoured.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { OpenedModel, openModel } from '../../lib/io/model_files';
import { SafeTensors, StTensorIn, saveSafetensors } from '../../lib/io/safetensors';
import { LoraModule, ParsedLora, loraTargetFromModel, mergedDelta, parseLora } from '../../lib/models/lora';
import { unetLayoutFromConfig, unetNameMap } from '../../lib/models/convert_ldm';

const FIX = path.join(__dirname, '..', 'fixtures');
const LORA = path.join(FIX, 'lora');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-lora-'));
const EXPECT = {
  'tiny-sd15': { unet: 271, text_encoder: 18 },
  'tiny-sdxl': { unet: 303, text_encoder: 18, text_encoder_2: 18 },
} as const;

const bases = new Map<string, OpenedModel>();
function base(m: string): OpenedModel {
  if (!bases.has(m)) bases.set(m, openModel(path.join(FIX, m, 'diffusers')));
  return bases.get(m)!;
}

const byId = (l: ParsedLora) => new Map(l.modules.map((x) => [`${x.component}/${x.module}`, x]));

function same(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Copy a LoRA file, adding tensors and replacing the metadata. */
function variant(src: string, dst: string, extra: Record<string, StTensorIn>, metadata?: Record<string, string>): string {
  const st = SafeTensors.open(src);
  const out: Record<string, StTensorIn> = {};
  for (const k of st.keys()) out[k] = { dtype: st.info(k).dtype, shape: st.info(k).shape, data: st.readRaw(k) };
  const meta = metadata ?? st.metadata;
  st.close();
  saveSafetensors(dst, { ...out, ...extra }, meta);
  return dst;
}

test('kohya, kohya-LDM and peft files parse to the same modules, tensors and alpha', () => {
  for (const m of ['tiny-sd15', 'tiny-sdxl'] as const) {
    const target = loraTargetFromModel(base(m));
    const files = [['kohya', 'kohya'], ['kohya_ldm', 'kohya-ldm'], ['peft', 'peft']] as const;
    const parsed = files.map(([f, format]) => {
      const l = parseLora(path.join(LORA, `${m}_${f}.safetensors`), target);
      assert.is(l.format, format, `${m}_${f} format`);
      assert.equal(l.unmatched, [], `${m}_${f} unmatched`);
      const counts: Record<string, number> = {};
      for (const x of l.modules) counts[x.component] = (counts[x.component] ?? 0) + 1;
      assert.equal(counts, { ...EXPECT[m] }, `${m}_${f} module counts`);
      return l;
    });
    const ref = byId(parsed[0]);
    for (const l of parsed.slice(1)) {
      const got = byId(l);
      assert.equal([...got.keys()].sort(), [...ref.keys()].sort());
      for (const [id, r] of ref) {
        const g = got.get(id)!;
        assert.is(g.alpha, 2, `${id} alpha`);
        assert.is(g.rank, 4);
        assert.is(g.kind, r.kind);
        assert.equal(g.down.shape, r.down.shape);
        assert.equal(g.up.shape, r.up.shape);
        assert.ok(same(g.down.readF32(), r.down.readF32()), `${id} down`);
        assert.ok(same(g.up.readF32(), r.up.readF32()), `${id} up`);
      }
    }
    const conv = ref.get('unet/down_blocks.1.resnets.0.conv1')!;
    assert.is(conv.kind, 'conv');
    assert.equal(conv.down.shape, [4, 32, 3, 3]);
    assert.is(ref.get('unet/mid_block.attentions.0.proj_in')!.kind, m === 'tiny-sd15' ? 'conv' : 'linear');
    assert.equal(ref.get('text_encoder/text_model.encoder.layers.0.mlp.fc1')!.up.shape, [64, 4]);
    parsed.forEach((l) => l.close());
  }
});

test('base + mergedDelta equals the stored merged weights at scales 1.0 and 0.5', () => {
  for (const m of ['tiny-sd15', 'tiny-sdxl']) {
    const io = SafeTensors.open(path.join(LORA, `${m}_lora_io.safetensors`));
    const target = loraTargetFromModel(base(m));
    for (const f of ['kohya', 'kohya_ldm', 'peft']) {
      const l = parseLora(path.join(LORA, `${m}_${f}.safetensors`), target);
      const mods = byId(l);
      let checked = 0;
      for (const key of io.keys()) {
        const r = /^merged_scale([\d.]+)\.unet\.(.+)\.weight$/.exec(key);
        if (!r) continue;
        const mod = mods.get(`unet/${r[2]}`)!;
        assert.ok(mod, `${f}: module ${r[2]}`);
        const w = base(m).components.unet!.get(`${r[2]}.weight`)!;
        const want = io.readF32(key);
        const delta = mergedDelta(mod, Number(r[1]));
        assert.equal(w.shape, io.info(key).shape);
        const merged = w.readF32().map((x, i) => x + delta[i]);
        let num = 0, den = 0;
        for (let i = 0; i < want.length; i++) { num += (merged[i] - want[i]) ** 2; den += want[i] ** 2; }
        assert.ok(Math.sqrt(num / den) < 1e-6, `${m} ${f} ${key}: rel err ${Math.sqrt(num / den)}`);
        checked++;
      }
      assert.is(checked, 8);
      l.close();
    }
    io.close();
  }
});

test('LDM spellings come from the config-driven name map and match the generator table', () => {
  for (const m of ['tiny-sd15', 'tiny-sdxl']) {
    const names: Record<string, string> = JSON.parse(fs.readFileSync(path.join(LORA, `${m}_unet_ldm_names.json`), 'utf8'));
    const map = unetNameMap(unetLayoutFromConfig(base(m).configs.unet!));
    for (const [d, o] of Object.entries(names)) {
      assert.is(map.toOriginal(d), o, d);
      assert.is(map.toDiffusers(o), d, o);
    }
    // without a config, the structure read from the module names gives the same result
    const target = loraTargetFromModel(base(m));
    const l = parseLora(path.join(LORA, `${m}_kohya_ldm.safetensors`), { modules: target.modules });
    assert.is(l.format, 'kohya-ldm');
    assert.is(l.modules.length, Object.values(EXPECT[m as keyof typeof EXPECT]).reduce((a, b) => a + b, 0));
    assert.equal(l.unmatched, []);
    l.close();
  }
});

test('keys naming no module of the target are reported in unmatched, by name', () => {
  const f32 = (shape: number[]) => ({ dtype: 'F32' as const, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
  const p = variant(path.join(LORA, 'tiny-sd15_kohya.safetensors'), path.join(tmp, 'bogus.safetensors'), {
    'lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight': f32([4, 32]),
    'lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight': f32([32, 4]),
    'lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q.alpha': f32([]),
    'lora_te_text_model_encoder_layers_9_mlp_fc1.lora_down.weight': f32([4, 32]),
    'lora_unet_conv_in.lora_down.weight': f32([4, 4, 3, 3]), // a real module, but its up is missing
    'some_other_tensor': f32([1]),
  });
  const l = parseLora(p, loraTargetFromModel(base('tiny-sd15')));
  assert.equal(l.unmatched.sort(), [
    'lora_te_text_model_encoder_layers_9_mlp_fc1.lora_down.weight',
    'lora_unet_conv_in.lora_down.weight',
    'lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q.alpha',
    'lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight',
    'lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight',
    'some_other_tensor',
  ]);
  assert.is(l.modules.length, 289);
  assert.equal(l.metadata, { ss_network_dim: '4', ss_network_alpha: '2.0' });
  l.close();
  // the SDXL LoRA against the SD1.5 model: nothing fits, and every key says so
  const x = parseLora(path.join(LORA, 'tiny-sdxl_kohya.safetensors'), loraTargetFromModel(base('tiny-sd15')));
  assert.ok(x.modules.length < 303 && x.unmatched.length > 0);
  x.close();
  assert.throws(() => parseLora(path.join(FIX, 'tiny-sd15', 'io.safetensors'), loraTargetFromModel(base('tiny-sd15'))), /io\.safetensors: no LoRA keys/);
});

test('peft alpha: metadata honoured, patterns applied, alpha = rank without metadata', () => {
  const target = loraTargetFromModel(base('tiny-sd15'));
  const src = path.join(LORA, 'tiny-sd15_peft.safetensors');
  const meta = JSON.parse(SafeTensors.open(src).metadata.lora_adapter_metadata);
  assert.is(meta['unet.lora_alpha'], 2);

  const none = parseLora(variant(src, path.join(tmp, 'peft-nometa.safetensors'), {}, { format: 'pt' }), target);
  assert.ok(none.modules.every((m) => m.alpha === 4 && m.rank === 4));
  none.close();

  const patterned = { ...meta, 'unet.alpha_pattern': { proj_in: 8 } };
  const p = parseLora(variant(src, path.join(tmp, 'peft-pattern.safetensors'), {}, { lora_adapter_metadata: JSON.stringify(patterned) }), target);
  for (const m of p.modules) assert.is(m.alpha, m.component === 'unet' && m.module.endsWith('.proj_in') ? 8 : 2, m.module);
  p.close();
});

test('a bare peft UNet state dict (no component prefix, or under base_model.model.) targets the UNet', () => {
  const src = SafeTensors.open(path.join(LORA, 'tiny-sdxl_peft.safetensors'));
  const out: Record<string, StTensorIn> = {};
  for (const k of src.keys()) {
    if (!k.startsWith('unet.')) continue;
    const bare = k.slice(5);
    out[bare.includes('attn1') ? `base_model.model.${bare}` : bare] = { dtype: 'F32', shape: src.info(k).shape, data: src.readF32(k) };
  }
  src.close();
  const p = path.join(tmp, 'bare.safetensors');
  saveSafetensors(p, out);
  const target = loraTargetFromModel(base('tiny-sdxl'));
  const l = parseLora(p, target);
  const ref = parseLora(path.join(LORA, 'tiny-sdxl_peft.safetensors'), target);
  assert.is(l.format, 'peft');
  assert.equal(l.unmatched, []);
  assert.equal(l.modules.map((m) => m.module).sort(), ref.modules.filter((m) => m.component === 'unet').map((m) => m.module).sort());
  assert.ok(l.modules.every((m) => m.component === 'unet' && m.alpha === 4), 'no metadata: alpha = rank');
  l.close();
  ref.close();
});

test('mergedDelta: linear and conv layouts against a direct computation', () => {
  const ref = (data: number[], shape: number[]) => ({ name: 'x', shape, dtype: 'F32' as const, source: 'mem', readF32: () => Float32Array.from(data) });
  const lin: LoraModule = { component: 'unet', module: 'm', kind: 'linear', rank: 2, alpha: 1,
    down: ref([1, 2, 3, 4, 5, 6], [2, 3]), up: ref([1, 0, 0, 1, 2, -1], [3, 2]) };
  // scale 2, alpha/rank 0.5 -> factor 1: up @ down
  assert.equal([...mergedDelta(lin, 2)], [1, 2, 3, 4, 5, 6, -2, -1, 0]);
  const cv: LoraModule = { ...lin, kind: 'conv', rank: 1, down: ref([1, 2, 3, 4], [1, 1, 2, 2]), up: ref([3, -1], [2, 1, 1, 1]) };
  assert.equal([...mergedDelta(cv, 1)], [3, 6, 9, 12, -1, -2, -3, -4]);
  assert.throws(() => mergedDelta({ ...cv, up: ref([1, 1, 1, 1, 1, 1, 1, 1], [2, 1, 2, 2]) }, 1), /must be \[out, rank\]/);
});

test.after(() => {
  for (const m of bases.values()) m.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});
test.run();
