// model_files.ts / convert_ldm.ts / configs.ts: the three layouts of tiny-sd15 and tiny-sdxl give the same
// diffusers weights bit for bit; the LDM name maps, derived from the configs, are checked against an
// independent generator of original (openaimodel / LDM autoencoder) keys for the real SD1.5 and SDXL
// configs; folder variants (shards, fp16 variant, legacy VAE names) and the errors users meet.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  OpenedModel, WeightRef, checkWeights, openComponent, openModel, readDiffusersConfigs, verifyModel,
} from '../../lib/io/model_files';
import { SafeTensors, StTensorIn, saveSafetensors } from '../../lib/io/safetensors';
import { loadModel } from '../../lib/models/load';
import { describeFile } from '../../lib/cli/info';
import { ComponentName, builtinConfigs, paramShapes } from '../../lib/models/configs';
import { unetLayoutFromConfig, unetLayoutFromModules, unetNameMap, vaeNameMap } from '../../lib/models/convert_ldm';

const FIX = path.join(__dirname, '..', 'fixtures');
const MODELS = ['tiny-sd15', 'tiny-sdxl'] as const;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-mf-'));

function open3(m: string): OpenedModel[] {
  const dir = path.join(FIX, m, 'diffusers');
  const { configs } = readDiffusersConfigs(dir);
  return [
    openModel(dir),
    openModel(path.join(FIX, m, 'model.safetensors'), { configs }),
    openModel(path.join(FIX, m, 'single_file.safetensors'), { configFrom: dir }),
  ];
}

function same(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Copy selected tensors of a file (raw bytes, renamed) into a new file. */
function rewrite(src: string, dst: string, rename: (k: string) => string | null, metadata?: Record<string, string>): void {
  const st = SafeTensors.open(src);
  const out: Record<string, StTensorIn> = {};
  for (const k of st.keys()) {
    const n = rename(k);
    if (n === null) continue;
    const i = st.info(k);
    out[n] = { dtype: i.dtype, shape: i.shape, data: st.readRaw(k) };
  }
  st.close();
  saveSafetensors(dst, out, metadata);
}

function throwsWith(fn: () => unknown, ...res: RegExp[]): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, Error);
    for (const re of res) assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected an error matching ${res.join(' ')}`);
}

test('three layouts give the same diffusers keys, shapes and values (tiny-sd15, tiny-sdxl)', () => {
  for (const m of MODELS) {
    const models = open3(m);
    assert.equal(models.map((x) => x.layout), ['diffusers', 'diffusers-prefixed', 'single-file']);
    assert.equal(models.map((x) => x.kind), m === 'tiny-sd15' ? ['sd15', 'sd15', 'sd15'] : ['sdxl', 'sdxl', 'sdxl']);
    const comps: ComponentName[] = m === 'tiny-sd15' ? ['unet', 'vae', 'text_encoder'] : ['unet', 'vae', 'text_encoder', 'text_encoder_2'];
    for (const x of models) {
      assert.equal(Object.keys(x.components).sort(), [...comps].sort(), `${m} ${x.layout} components`);
      verifyModel(x); // every key and shape the configs imply, nothing else
    }
    let compared = 0;
    for (const c of comps) {
      const ref = models[0].components[c]!;
      for (const other of models.slice(1)) {
        const got = other.components[c]!;
        assert.equal([...got.keys()].sort(), [...ref.keys()].sort(), `${m} ${other.layout} ${c} keys`);
        for (const [k, w] of ref) {
          const v = got.get(k)!;
          assert.equal(v.shape, w.shape, `${k} shape`);
          assert.is(v.dtype, w.dtype);
          assert.ok(same(v.readF32(), w.readF32()), `${m} ${other.layout} ${c} ${k} values (from ${v.source})`);
          assert.ok(v.readRaw!().data.equals(w.readRaw!().data), `${k} raw bytes`);
          compared++;
        }
      }
    }
    assert.ok(compared > 1500);
    assert.ok(models[0].tokenizerDirs.tokenizer?.endsWith('tokenizer'));
    assert.is(models[0].configs.unet!.norm_num_groups, 8);
    assert.is(models[1].configs.scheduler!._class_name, m === 'tiny-sd15' ? 'DDIMScheduler' : 'EulerDiscreteScheduler');
    models.forEach((x) => x.close());
  }
});

test('OpenCLIP bigG: in_proj rows become q/k/v, text_projection is transposed, sources name the original key', () => {
  const [d, , s] = open3('tiny-sdxl');
  const q = s.components.text_encoder_2!.get('text_model.encoder.layers.1.self_attn.k_proj.weight')!;
  assert.match(q.source, /single_file\.safetensors:conditioner\.embedders\.1\.model\.transformer\.resblocks\.1\.attn\.in_proj_weight$/);
  assert.equal(q.shape, [32, 32]);
  const st = SafeTensors.open(path.join(FIX, 'tiny-sdxl', 'single_file.safetensors'));
  const proj = st.readF32('conditioner.embedders.1.model.text_projection');
  const dp = d.components.text_encoder_2!.get('text_projection.weight')!.readF32();
  for (let i = 0; i < 32; i++) for (let j = 0; j < 32; j++) assert.is(dp[i * 32 + j], proj[j * 32 + i]);
  const vae = s.components.vae!.get('decoder.mid_block.attentions.0.to_out.0.weight')!;
  assert.equal(vae.shape, [64, 64]);
  assert.match(vae.source, /first_stage_model\.decoder\.mid\.attn_1\.proj_out\.weight$/);
  st.close();
  d.close();
  s.close();
});

// ---- an independent generator of original-layout keys, written from the LDM/SGM module structure ----

interface LdmUnet {
  mc: number; inC: number; outC: number; mult: number[]; nres: number; depth: number[] /* 0 = no attention */;
  midDepth: number; ctx: number; linear: boolean; adm?: number;
}

function ldmUnetKeys(h: LdmUnet): Map<string, number[]> {
  const s = new Map<string, number[]>();
  const lin = (n: string, o: number, i: number, bias = true) => { s.set(`${n}.weight`, [o, i]); if (bias) s.set(`${n}.bias`, [o]); };
  const cv = (n: string, o: number, i: number, k: number) => { s.set(`${n}.weight`, [o, i, k, k]); s.set(`${n}.bias`, [o]); };
  const gn = (n: string, c: number) => { s.set(`${n}.weight`, [c]); s.set(`${n}.bias`, [c]); };
  const temb = 4 * h.mc;
  const res = (n: string, i: number, o: number) => {
    gn(`${n}.in_layers.0`, i); cv(`${n}.in_layers.2`, o, i, 3); lin(`${n}.emb_layers.1`, o, temb);
    gn(`${n}.out_layers.0`, o); cv(`${n}.out_layers.3`, o, o, 3);
    if (i !== o) cv(`${n}.skip_connection`, o, i, 1);
  };
  const st = (n: string, c: number, depth: number) => {
    gn(`${n}.norm`, c);
    const proj = (p: string) => (h.linear ? lin(p, c, c) : cv(p, c, c, 1));
    proj(`${n}.proj_in`);
    for (let d = 0; d < depth; d++) {
      const b = `${n}.transformer_blocks.${d}`;
      for (const a of ['attn1', 'attn2']) {
        lin(`${b}.${a}.to_q`, c, c, false);
        lin(`${b}.${a}.to_k`, c, a === 'attn1' ? c : h.ctx, false);
        lin(`${b}.${a}.to_v`, c, a === 'attn1' ? c : h.ctx, false);
        lin(`${b}.${a}.to_out.0`, c, c);
      }
      lin(`${b}.ff.net.0.proj`, 8 * c, c); lin(`${b}.ff.net.2`, c, 4 * c);
      for (const k of ['norm1', 'norm2', 'norm3']) gn(`${b}.${k}`, c);
    }
    proj(`${n}.proj_out`);
  };
  lin('time_embed.0', temb, h.mc); lin('time_embed.2', temb, temb);
  if (h.adm) { lin('label_emb.0.0', temb, h.adm); lin('label_emb.0.2', temb, temb); }
  cv('input_blocks.0.0', h.mc, h.inC, 3);
  let ch = h.mc, idx = 1;
  const chans = [ch];
  h.mult.forEach((mu, level) => {
    for (let r = 0; r < h.nres; r++, idx++) {
      res(`input_blocks.${idx}.0`, ch, mu * h.mc);
      ch = mu * h.mc;
      if (h.depth[level]) st(`input_blocks.${idx}.1`, ch, h.depth[level]);
      chans.push(ch);
    }
    if (level !== h.mult.length - 1) { cv(`input_blocks.${idx++}.0.op`, ch, ch, 3); chans.push(ch); }
  });
  res('middle_block.0', ch, ch); st('middle_block.1', ch, h.midDepth); res('middle_block.2', ch, ch);
  idx = 0;
  [...h.mult.keys()].reverse().forEach((level) => {
    for (let i = 0; i <= h.nres; i++, idx++) {
      const o = h.mult[level] * h.mc;
      res(`output_blocks.${idx}.0`, ch + chans.pop()!, o);
      ch = o;
      let sub = 1;
      if (h.depth[level]) st(`output_blocks.${idx}.${sub++}`, ch, h.depth[level]);
      if (level && i === h.nres) cv(`output_blocks.${idx}.${sub}.conv`, ch, ch, 3);
    }
  });
  gn('out.0', h.mc); cv('out.2', h.outC, h.mc, 3);
  return s;
}

function ldmVaeKeys(ch: number, mult: number[], nres: number, z: number): Map<string, number[]> {
  const s = new Map<string, number[]>();
  const cv = (n: string, o: number, i: number, k: number) => { s.set(`${n}.weight`, [o, i, k, k]); s.set(`${n}.bias`, [o]); };
  const gn = (n: string, c: number) => { s.set(`${n}.weight`, [c]); s.set(`${n}.bias`, [c]); };
  const res = (n: string, i: number, o: number) => {
    gn(`${n}.norm1`, i); cv(`${n}.conv1`, o, i, 3); gn(`${n}.norm2`, o); cv(`${n}.conv2`, o, o, 3);
    if (i !== o) cv(`${n}.nin_shortcut`, o, i, 1);
  };
  const mid = (p: string, c: number) => {
    res(`${p}.mid.block_1`, c, c);
    gn(`${p}.mid.attn_1.norm`, c);
    for (const q of ['q', 'k', 'v', 'proj_out']) cv(`${p}.mid.attn_1.${q}`, c, c, 1);
    res(`${p}.mid.block_2`, c, c);
  };
  cv('encoder.conv_in', ch, 3, 3);
  let bi = ch;
  mult.forEach((m, level) => {
    for (let i = 0; i < nres; i++) { res(`encoder.down.${level}.block.${i}`, bi, ch * m); bi = ch * m; }
    if (level !== mult.length - 1) cv(`encoder.down.${level}.downsample.conv`, bi, bi, 3);
  });
  mid('encoder', bi); gn('encoder.norm_out', bi); cv('encoder.conv_out', 2 * z, bi, 3);
  bi = ch * mult[mult.length - 1];
  cv('decoder.conv_in', bi, z, 3); mid('decoder', bi);
  for (let level = mult.length - 1; level >= 0; level--) {
    for (let i = 0; i <= nres; i++) { res(`decoder.up.${level}.block.${i}`, bi, ch * mult[level]); bi = ch * mult[level]; }
    if (level) cv(`decoder.up.${level}.upsample.conv`, bi, bi, 3);
  }
  gn('decoder.norm_out', bi); cv('decoder.conv_out', 3, bi, 3);
  cv('quant_conv', 2 * z, 2 * z, 1); cv('post_quant_conv', z, z, 1);
  return s;
}

const TINY_SD15: LdmUnet = { mc: 32, inC: 4, outC: 4, mult: [1, 2, 2, 2], nres: 2, depth: [1, 1, 1, 0], midDepth: 1, ctx: 32, linear: false };
const TINY_SDXL: LdmUnet = { mc: 32, inC: 4, outC: 4, mult: [1, 2, 2], nres: 2, depth: [0, 2, 2], midDepth: 2, ctx: 64, linear: true, adm: 80 };
const REAL_SD15: LdmUnet = { mc: 320, inC: 4, outC: 4, mult: [1, 2, 4, 4], nres: 2, depth: [1, 1, 1, 0], midDepth: 1, ctx: 768, linear: false };
const REAL_SDXL: LdmUnet = { mc: 320, inC: 4, outC: 4, mult: [1, 2, 4], nres: 2, depth: [0, 2, 10], midDepth: 10, ctx: 2048, linear: true, adm: 2816 };

test('the independent LDM key generator reproduces the tiny single files exactly', () => {
  for (const [m, h, vaeMult] of [['tiny-sd15', TINY_SD15, [1, 1, 2, 2]], ['tiny-sdxl', TINY_SDXL, [1, 1, 2, 2]]] as const) {
    const st = SafeTensors.open(path.join(FIX, m, 'single_file.safetensors'));
    const file = (prefix: string) => st.keys().filter((k) => k.startsWith(prefix)).map((k) => `${k.slice(prefix.length)} ${st.info(k).shape}`).sort();
    const gen = (s: Map<string, number[]>) => [...s].map(([k, v]) => `${k} ${v}`).sort();
    assert.equal(file('model.diffusion_model.'), gen(ldmUnetKeys(h)), `${m} unet`);
    assert.equal(file('first_stage_model.'), gen(ldmVaeKeys(32, [...vaeMult], 1, 4)), `${m} vae`);
    st.close();
  }
});

function checkBijection(original: Map<string, number[]>, expected: Map<string, number[]>, toD: (k: string) => string | null,
  toO: (k: string) => string | null, squeeze = false): void {
  const seen = new Map<string, string>();
  for (const [k, shape] of original) {
    const d = toD(k);
    assert.ok(d, `no diffusers name for ${k}`);
    assert.not.ok(seen.has(d!), `${k} and ${seen.get(d!)} both map to ${d}`);
    seen.set(d!, k);
    const want = expected.get(d!);
    assert.ok(want, `${k} -> ${d}, which the config does not have`);
    const got = squeeze && shape.length === 4 && want!.length === 2 ? shape.slice(0, 2) : shape;
    assert.equal(got, want, `${k} -> ${d} shape`);
    assert.is(toO(d!), k, `round trip of ${k}`);
  }
  assert.is(seen.size, expected.size, 'every diffusers parameter is covered');
}

test('real SD1.5 and SDXL configs: LDM UNet and VAE keys map onto the diffusers parameters bijectively', () => {
  for (const [kind, h] of [['sd15', REAL_SD15], ['sdxl', REAL_SDXL]] as const) {
    const cfg = builtinConfigs(kind);
    const map = unetNameMap(unetLayoutFromConfig(cfg.unet));
    const expected = paramShapes('unet', cfg.unet);
    checkBijection(ldmUnetKeys(h), expected, (k) => map.toDiffusers(k), (k) => map.toOriginal(k));
    // the layout recovered from the diffusers names alone gives the same map
    const fromNames = unetNameMap(unetLayoutFromModules(expected.keys()));
    assert.equal(fromNames.entries(), map.entries());
    const vmap = vaeNameMap(cfg.vae);
    checkBijection(ldmVaeKeys(128, [1, 2, 4, 4], 2, 4), paramShapes('vae', cfg.vae), (k) => vmap.toDiffusers(k), (k) => vmap.toOriginal(k), true);
  }
  assert.is(unetNameMap(unetLayoutFromConfig(builtinConfigs('sd15').unet)).toDiffusers('output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight'),
    'up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight');
  assert.is(unetNameMap(unetLayoutFromConfig(builtinConfigs('sdxl').unet)).toDiffusers('output_blocks.2.2.conv.bias'),
    'up_blocks.0.upsamplers.0.conv.bias');
});

test('real parameter counts of the built-in configs', () => {
  const count = (m: Map<string, number[]>) => [...m.values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);
  const sd = builtinConfigs('sd15'), xl = builtinConfigs('sdxl');
  assert.is(count(paramShapes('unet', sd.unet)), 859520964);
  assert.is(count(paramShapes('unet', xl.unet)), 2567463684);
  assert.is(count(paramShapes('vae', sd.vae)), 83653863);
  assert.is(count(paramShapes('text_encoder', sd.text_encoder)), 123060480);
  assert.is(count(paramShapes('text_encoder_2', xl.text_encoder_2!)), 694659840);
});

test('single files without configs use the real configs: the tiny model then fails the check, naming keys', () => {
  const m = openModel(path.join(FIX, 'tiny-sd15', 'single_file.safetensors'));
  assert.is(m.configs.unet!.block_out_channels[0], 320);
  assert.is(m.configs.scheduler!._class_name, 'PNDMScheduler');
  assert.equal(m.tokenizerDirs, {});
  throwsWith(() => verifyModel(m), /tiny-sd15\/single_file\.safetensors: unet weights do not match/, /wrong shape \(\d+\): conv_in\.weight expected \[320, 4, 3, 3\] got \[32, 4, 3, 3\]/);
  const soft = verifyModel(m, false);
  assert.ok(soft.unet!.mismatched.length > 100);
  m.close();
  // a config whose structure does not match: keys left without a name
  const cfg = { ...builtinConfigs('sd15').unet, layers_per_block: 1 };
  throwsWith(() => openModel(path.join(FIX, 'tiny-sd15', 'single_file.safetensors'), { configs: { unet: cfg } }),
    /keys have no diffusers name/, /model\.diffusion_model\.input_blocks\.\d+/);
});

test('checkWeights: non-strict lists, strict throws one Error naming every key', () => {
  const mk = (name: string, shape: number[]): WeightRef => ({ name, shape, dtype: 'F32', source: `f:${name}`, readF32: () => new Float32Array(0) });
  const expected = new Map([['a.weight', [2, 3]], ['b.weight', [4]], ['c.bias', [1]]]);
  const got = new Map([['a.weight', mk('a.weight', [3, 2])], ['c.bias', mk('c.bias', [1])], ['z.weight', mk('z.weight', [1])]]);
  const r = checkWeights(expected, got, { strict: false, component: 'unet', source: 'x.safetensors' });
  assert.equal(r, { missing: ['b.weight'], unexpected: ['z.weight'], mismatched: [{ name: 'a.weight', expected: [2, 3], got: [3, 2] }] });
  throwsWith(() => checkWeights(expected, got, { strict: true, component: 'unet', source: 'x.safetensors' }),
    /^x\.safetensors: unet weights/, /missing \(1\): b\.weight/, /unexpected \(1\): z\.weight/, /a\.weight expected \[2, 3\] got \[3, 2\]/);
  assert.equal(checkWeights(expected, new Map([...expected].map(([k, s]) => [k, mk(k, s)])), { strict: true, component: 'u', source: 's' }),
    { missing: [], unexpected: [], mismatched: [] });
});

/** A scratch pipeline folder linking to tiny-sd15's files; `edit` rearranges it. */
function scratch(name: string, edit: (dir: string) => void): string {
  const src = path.join(FIX, 'tiny-sd15', 'diffusers');
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const e of fs.readdirSync(src, { recursive: true, withFileTypes: true })) {
    const rel = path.relative(src, path.join(e.parentPath, e.name));
    if (e.isDirectory()) fs.mkdirSync(path.join(dir, rel), { recursive: true });
    else fs.symlinkSync(path.join(src, rel), path.join(dir, rel));
  }
  edit(dir);
  return dir;
}

/** Replaces a scratch folder's model_index.json (a link to the fixture: replace it, do not write through it) with
 * the JSON of what edit returns, or of the parsed file as edit left it when it returns nothing. */
function editModelIndex(dir: string, edit: (mi: Record<string, unknown>) => unknown): void {
  const file = path.join(dir, 'model_index.json');
  const mi = JSON.parse(fs.readFileSync(file, 'utf8'));
  const out = edit(mi) ?? mi;
  fs.unlinkSync(file);
  fs.writeFileSync(file, JSON.stringify(out));
}

test('sharded weights with an index, and the fp16 variant', () => {
  const dir = scratch('sharded', (d) => {
    const u = path.join(d, 'unet');
    const orig = path.join(FIX, 'tiny-sd15', 'diffusers', 'unet', 'diffusion_pytorch_model.safetensors');
    fs.unlinkSync(path.join(u, 'diffusion_pytorch_model.safetensors'));
    const keys = SafeTensors.open(orig).keys();
    const half = new Set(keys.filter((_, i) => i % 2 === 0));
    rewrite(orig, path.join(u, 'diffusion_pytorch_model-00001-of-00002.safetensors'), (k) => (half.has(k) ? k : null));
    rewrite(orig, path.join(u, 'diffusion_pytorch_model-00002-of-00002.safetensors'), (k) => (half.has(k) ? null : k));
    const weight_map = Object.fromEntries(keys.map((k) => [k, `diffusion_pytorch_model-0000${half.has(k) ? 1 : 2}-of-00002.safetensors`]));
    fs.writeFileSync(path.join(u, 'diffusion_pytorch_model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map }));
    const v = path.join(d, 'vae');
    fs.renameSync(path.join(v, 'diffusion_pytorch_model.safetensors'), path.join(v, 'diffusion_pytorch_model.fp16.safetensors'));
  });
  const ref = openModel(path.join(FIX, 'tiny-sd15', 'diffusers'));
  const m = openModel(dir);
  verifyModel(m);
  for (const c of ['unet', 'vae'] as const) {
    for (const [k, w] of ref.components[c]!) assert.ok(same(m.components[c]!.get(k)!.readF32(), w.readF32()), `${c} ${k}`);
  }
  assert.match(m.components.unet!.get('conv_in.weight')!.source, /diffusion_pytorch_model-0000[12]-of-00002\.safetensors:conv_in\.weight$/);
  assert.match(m.components.vae!.get('quant_conv.weight')!.source, /diffusion_pytorch_model\.fp16\.safetensors:/);
  throwsWith(() => openModel(dir, { variant: 'bf16' }), /no 'bf16' variant weights/);
  m.close();
  ref.close();
});

test('legacy diffusers VAE attention names and lone component files', () => {
  const vaeSrc = path.join(FIX, 'tiny-sd15', 'diffusers', 'vae', 'diffusion_pytorch_model.safetensors');
  const legacy = path.join(tmp, 'legacy_vae.safetensors');
  rewrite(vaeSrc, legacy, (k) => k.replace(/\.to_q\./, '.query.').replace(/\.to_k\./, '.key.').replace(/\.to_v\./, '.value.').replace(/\.to_out\.0\./, '.proj_attn.'));
  const cfg = readDiffusersConfigs(path.join(FIX, 'tiny-sd15', 'diffusers')).configs;
  const ref = openModel(path.join(FIX, 'tiny-sd15', 'diffusers'));
  const v = openComponent(legacy, 'vae', cfg.vae!);
  assert.ok(v.weights.has('encoder.mid_block.attentions.0.to_out.0.weight'));
  assert.equal([...v.weights.keys()].sort(), [...ref.components.vae!.keys()].sort());
  v.close();
  // an original-layout UNet on its own (as a UNet-only release would be)
  const ldmUnet = path.join(tmp, 'ldm_unet.safetensors');
  rewrite(path.join(FIX, 'tiny-sd15', 'single_file.safetensors'), ldmUnet, (k) => (k.startsWith('model.diffusion_model.') ? k : null));
  const u = openComponent(ldmUnet, 'unet', cfg.unet!);
  for (const [k, w] of ref.components.unet!) assert.ok(same(u.weights.get(k)!.readF32(), w.readF32()), k);
  u.close();
  const plain = openComponent(path.join(FIX, 'tiny-sd15', 'diffusers', 'unet', 'diffusion_pytorch_model.safetensors'), 'unet', cfg.unet!);
  assert.is(plain.weights.size, 684);
  plain.close();
  ref.close();
});

test('errors users meet name the path and the fix', () => {
  const binOnly = scratch('bin-only', (d) => {
    fs.unlinkSync(path.join(d, 'unet', 'diffusion_pytorch_model.safetensors'));
    fs.writeFileSync(path.join(d, 'unet', 'diffusion_pytorch_model.bin'), 'not really a pickle');
  });
  throwsWith(() => openModel(binOnly), /bin-only\/unet \(component 'unet'\): only PyTorch pickle weights found \(diffusion_pytorch_model\.bin\)/, /[Cc]onvert them to safetensors/);
  throwsWith(() => openModel(path.join(binOnly, 'unet', 'diffusion_pytorch_model.bin')), /pickle/);

  const noVae = scratch('no-vae', (d) => fs.rmSync(path.join(d, 'vae'), { recursive: true }));
  throwsWith(() => openModel(noVae), /model_index\.json lists component 'vae' but the folder .*no-vae\/vae is missing/);
  const noCfg = scratch('no-config', (d) => fs.unlinkSync(path.join(d, 'text_encoder', 'config.json')));
  throwsWith(() => openModel(noCfg), /no-config\/text_encoder: missing config\.json for component 'text_encoder'/);
  const noWeights = scratch('no-weights', (d) => fs.unlinkSync(path.join(d, 'text_encoder', 'model.safetensors')));
  throwsWith(() => openModel(noWeights), /no safetensors weights for component 'text_encoder'/);
  const badShard = scratch('bad-shard', (d) => {
    fs.writeFileSync(path.join(d, 'text_encoder', 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { 'text_model.final_layer_norm.weight': 'model-00001-of-00002.safetensors' } }));
  });
  throwsWith(() => openModel(badShard), /shard model-00001-of-00002\.safetensors is missing/);

  // the UNet's config decides SD1.5 or SDXL; a pipeline class or a text_encoder_2 that says otherwise is an Error
  // (SD1.5 weights had loaded as SDXL, failing at generate with a TypeError; session 28)
  const xlClass = scratch('xl-class', (d) => editModelIndex(d, (mi) => { mi._class_name = 'StableDiffusionXLPipeline'; }));
  throwsWith(() => openModel(xlClass), /xl-class: unet\/config\.json describes an SD1\.5 UNet .* but model_index\.json names StableDiffusionXLPipeline/);
  const strayTe2 = scratch('stray-te2', (d) => {
    fs.cpSync(path.join(d, 'text_encoder'), path.join(d, 'text_encoder_2'), { recursive: true });
    editModelIndex(d, (mi) => { mi.text_encoder_2 = ['transformers', 'CLIPTextModelWithProjection']; });
  });
  throwsWith(() => openModel(strayTe2), /stray-te2: unet\/config\.json describes an SD1\.5 UNet .* but there is a text_encoder_2/);
  // loadModel's options
  throwsWith(() => loadModel(path.join(FIX, 'tiny-sd15', 'diffusers'), { components: ['unett'] as never }), /components must be a non-empty array of unet, vae, text_encoder, text_encoder_2; got \["unett"\]/);
  throwsWith(() => loadModel(path.join(FIX, 'tiny-sd15', 'diffusers'), { components: [] }), /components must be a non-empty array/);
  throwsWith(() => loadModel(path.join(FIX, 'tiny-sd15', 'diffusers'), { components: ['text_encoder_2'] }), /an SD1\.5 model has no text_encoder_2/);
  throwsWith(() => loadModel(path.join(FIX, 'tiny-sd15', 'diffusers'), { dtype: 'fp16' as never }), /loadModel: dtype must be f32, f16 or bf16, got "fp16"/);

  throwsWith(() => openModel(path.join(FIX, 'tiny-sd15', 'diffusers', 'unet')), /single component folder/);
  throwsWith(() => openModel(path.join(tmp, 'nothing-here')), /no such file or folder/);
  throwsWith(() => openModel(path.join(FIX, 'lora', 'tiny-sd15_peft.safetensors')), /tiny-sd15_peft.safetensors: this is a LoRA file/, /parseLora/);
  throwsWith(() => openModel(path.join(FIX, 'tiny-sd15', 'io.safetensors')), /not a full model file/, /openComponent/);
  const sd2 = path.join(tmp, 'sd2.safetensors');
  saveSafetensors(sd2, {
    'model.diffusion_model.out.2.bias': { dtype: 'F32', shape: [1], data: new Float32Array(1) },
    'cond_stage_model.model.ln_final.bias': { dtype: 'F32', shape: [1], data: new Float32Array(1) },
  });
  throwsWith(() => openModel(sd2), /Stable Diffusion 2\.x/);

  // extra keys of original checkpoints (EMA, schedules, position_ids buffers) are set aside, not loaded
  const extra = path.join(tmp, 'extra.safetensors');
  rewrite(path.join(FIX, 'tiny-sd15', 'single_file.safetensors'), extra, (k) => k);
  const st = SafeTensors.open(extra);
  const out: Record<string, StTensorIn> = {};
  for (const k of st.keys()) out[k] = { dtype: st.info(k).dtype, shape: st.info(k).shape, data: st.readRaw(k) };
  st.close();
  out['alphas_cumprod'] = { dtype: 'F32', shape: [2], data: new Float32Array(2) };
  out['model_ema.decay'] = { dtype: 'F32', shape: [], data: new Float32Array(1) };
  out['cond_stage_model.transformer.text_model.embeddings.position_ids'] = { dtype: 'I64', shape: [1, 77], data: new BigInt64Array(77) };
  // the VAE's training loss (LPIPS, discriminator) that some checkpoints carry is not the model (it had failed the load)
  out['first_stage_model.loss.logvar'] = { dtype: 'F32', shape: [], data: new Float32Array(1) };
  saveSafetensors(extra, out);
  const m = openModel(extra, { configFrom: path.join(FIX, 'tiny-sd15', 'diffusers') });
  verifyModel(m);
  assert.equal(m.ignored.sort(), ['alphas_cumprod', 'cond_stage_model.transformer.text_model.embeddings.position_ids', 'first_stage_model.loss.logvar', 'model_ema.decay']);
  m.close();

  // session 28 (probing): a model_index that is not an object, a shard index naming a file outside the folder,
  // configFrom given for a diffusers folder (it had been ignored), and `info` on a full model named '…lora…'
  const badMi = scratch('bad-mi', (d) => editModelIndex(d, () => 'hello'));  // the file '"hello"'
  throwsWith(() => openModel(badMi), /bad-mi\/model_index\.json: not a JSON object/);
  // every JSON file read there is an object: a component config or a shard index that is null or an array too
  const badCfg = scratch('bad-cfg', (d) => {
    fs.unlinkSync(path.join(d, 'vae', 'config.json'));
    fs.writeFileSync(path.join(d, 'vae', 'config.json'), '[1, 2]');
  });
  throwsWith(() => openModel(badCfg), /bad-cfg\/vae\/config\.json: not a JSON object/);
  const nullIdx = scratch('null-idx', (d) => fs.writeFileSync(path.join(d, 'text_encoder', 'model.safetensors.index.json'), 'null'));
  throwsWith(() => openModel(nullIdx), /null-idx\/text_encoder\/model\.safetensors\.index\.json: not a JSON object/);
  const escape = scratch('escape', (d) => {
    fs.writeFileSync(path.join(d, 'text_encoder', 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { 'text_model.final_layer_norm.weight': '../vae/diffusion_pytorch_model.safetensors' } }));
  });
  throwsWith(() => openModel(escape), /weight_map\['text_model\.final_layer_norm\.weight'\] is not a file name in this folder/);
  throwsWith(() => openModel(path.join(FIX, 'tiny-sd15', 'diffusers'), { configFrom: path.join(FIX, 'tiny-sd15', 'diffusers') }), /configFrom applies to single-file checkpoints/);
  const named = path.join(tmp, 'sd15_hyper_lora_fused.safetensors');
  fs.copyFileSync(path.join(FIX, 'tiny-sd15', 'model.safetensors'), named);
  assert.match(describeFile(named), /SD1\.5 model, diffusers-prefixed layout/);
  assert.match(describeFile(path.join(FIX, 'lora', 'tiny-sd15_kohya.safetensors')), /kohya|LoRA/i);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();
