// The UNet, CLIP text encoders and VAE against diffusers/transformers outputs on the tiny fixture models,
// in all three file layouts (diffusers folder, diffusers-prefixed file, single-file original).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as path from 'path';
import * as hs from '../../lib';
import { loadModel } from '../../lib/models/load';
import { SafeTensors } from '../../lib/io/safetensors';
import { DEVICE as DEV, relErr } from '../helpers/check';
import { setOpHook } from '../../lib/ops/runtime';
import { ParamStore } from '../../lib/nn/params';
import { Conv2d } from '../../lib/nn/layers';

const FIX = path.resolve(__dirname, '../fixtures');
const TOL = 1e-4;
// HYPERSD_TEST_DEVICE=cuda runs the networks on the GPU (bench/gpu-check.sh); HYPERSD_TEST_LAYOUTS=diffusers
// limits the layouts (the GPU machine gets only the diffusers folders, to keep the copied tree small).
const LAYOUTS = process.env.HYPERSD_TEST_LAYOUTS?.split(',');

function io(model: string) {
  const st = SafeTensors.open(path.join(FIX, model, 'io.safetensors'));
  const get = (k: string) => st.readF32(k);
  const ids = (k: string) => Int32Array.from(st.readI64(k), Number);
  const shape = (k: string) => st.info(k).shape;
  return { get, ids, shape, t: (k: string) => hs.tensor(get(k), shape(k), { device: DEV }) };
}

function layouts(model: string) {
  const dir = path.join(FIX, model);
  return [
    ['diffusers', path.join(dir, 'diffusers'), {}],
    ['prefixed', path.join(dir, 'model.safetensors'), { configFrom: path.join(dir, 'diffusers') }],
    ['single-file', path.join(dir, 'single_file.safetensors'), { configFrom: path.join(dir, 'diffusers') }],
  ].filter(([name]) => !LAYOUTS || LAYOUTS.includes(name)) as [string, string, { configFrom?: string }][];
}

async function close(t: hs.Tensor, ref: Float32Array, what: string) {
  const out = (await t.data()) as Float32Array;
  const e = relErr(out, ref);
  assert.ok(e < TOL, `${what}: relative error ${e}`);
}

for (const model of ['tiny-sd15', 'tiny-sdxl']) {
  const x = io(model);
  const sdxl = model === 'tiny-sdxl';
  for (const [layout, p, o] of layouts(model)) {
    test(`${model} ${layout}: unet, text encoders, vae match diffusers`, async () => {
      const m = loadModel(p, { ...o, device: DEV });
      try {
        assert.is(m.kind, sdxl ? 'sdxl' : 'sd15');
        const inputs = {
          sample: x.t('unet_in_sample'),
          timesteps: Array.from(x.ids('unet_in_timesteps')),
          encoderHiddenStates: x.t('unet_in_encoder_hidden_states'),
          textEmbeds: sdxl ? x.t('unet_in_text_embeds') : undefined,
          timeIds: sdxl ? x.t('unet_in_time_ids') : undefined,
        };
        await close(m.unet!.forward(inputs), x.get('unet_out'), 'unet_out');
        await close(m.unet!.forward({ ...inputs, timesteps: 500 }), x.get('unet_out_t500'), 'unet_out_t500');
        const te = [[m.textEncoder!, sdxl ? 'te1' : 'te'], ...(sdxl ? [[m.textEncoder2!, 'te2']] : [])] as const;
        for (const [enc, pre] of te) {
          const ids = x.ids(`${pre}_in_input_ids`);
          const r = enc.forward(ids, 2);
          await close(r.lastHiddenState, x.get(`${pre}_out_last_hidden_state`), `${pre} last_hidden_state`);
          await close(r.hiddenStates[r.hiddenStates.length - 2], x.get(`${pre}_out_penultimate`), `${pre} penultimate`);
          if (pre === 'te2') {
            await close(r.pooled, x.get('te2_out_pooler_unprojected'), 'te2 pooler');
            await close(r.textEmbeds!, x.get('te2_out_text_embeds'), 'te2 text_embeds');
          } else {
            await close(r.pooled, x.get(`${pre}_out_pooler`), `${pre} pooler`);
          }
        }
        await close(m.vae!.decode(x.t('vae_decode_in')), x.get('vae_decode_out'), 'vae decode');
        const enc = m.vae!.encode(x.t('vae_encode_in'));
        await close(enc.mean, x.get('vae_encode_mean'), 'vae encode mean');
        await close(enc.logvar, x.get('vae_encode_logvar'), 'vae encode logvar');
      } finally {
        m.dispose();
      }
    });
  }
}

// CPU inference: the convolutions before the group norms hand them their outputs' channel statistics (the VAE:
// every norm whose input a convolution wrote; the UNet at batch 1: each resnet's norm2), by default for outputs of
// 4 MiB and up, with HYPERSD_GN_STATS=1 at any size (as here: the fixtures' tensors are small). With
// HYPERSD_GN_STATS=0 the norms compute them: both within 1e-5 of each other (the fixtures pin both to diffusers).
if (DEV === 'cpu') test('group norms take the convolutions\' channel statistics and the VAE\'s upsamplers read their input upsampled (tiny SD1.5 VAE and UNet); HYPERSD_GN_STATS=0 / HYPERSD_CONV_UPSAMPLE=0 turn them off', async () => {
  const x = io('tiny-sd15');
  const m = loadModel(path.join(FIX, 'tiny-sd15', 'diffusers'), { components: ['unet', 'vae'] });
  const prevEnv = process.env.HYPERSD_GN_STATS;
  let withStats = 0, norms = 0, fusedUp = 0, upsamples = 0;
  const prev = setOpHook((op, ins, outs, attrs) => {
    prev?.(op, ins, outs, attrs);
    if (op === 'group_norm') {
      norms++;
      if (ins.length === 4) withStats++;
    }
    if (op === 'conv2d' && attrs.upsample) fusedUp++;
    if (op === 'upsample_nearest2x') upsamples++;
  });
  try {
    process.env.HYPERSD_GN_STATS = '1';
    const run = async () => {
      withStats = norms = 0;
      const dec = (await m.vae!.decode(x.t('vae_decode_in')).data()) as Float32Array;
      const decNorms = [withStats, norms];
      withStats = norms = 0;
      const enc = (await m.vae!.encode(x.t('vae_encode_in')).mean.data()) as Float32Array;
      const encNorms = [withStats, norms];
      withStats = norms = 0;
      const sample = x.t('unet_in_sample');
      const un = (await m.unet!.forward({ sample: hs.ops.slice(sample, 0, 0, 1), timesteps: 500,
        encoderHiddenStates: hs.ops.slice(x.t('unet_in_encoder_hidden_states'), 0, 0, 1) }).data()) as Float32Array;
      return { dec, enc, un, decNorms, encNorms, unetNorms: [withStats, norms] };
    };
    const a = await run();
    // decoder: every norm but the mid block's second resnet's norm1 (its input is the attention's output
    // projection, a matmul)
    assert.is(a.decNorms[0], a.decNorms[1] - 1, `decoder norms with statistics: ${a.decNorms}`);
    assert.ok(a.encNorms[0] > 0 && a.encNorms[0] < a.encNorms[1], `encoder norms with statistics: ${a.encNorms}`);
    assert.ok(a.unetNorms[0] > 0, `unet norms with statistics: ${a.unetNorms}`);
    // the decoder's upsamplers read their input upsampled (no upsample op); HYPERSD_CONV_UPSAMPLE=0 forms it
    assert.ok(fusedUp > 0, 'the decoder\'s upsampling convolutions read their input upsampled');
    const [fu, us] = [fusedUp, upsamples];
    process.env.HYPERSD_GN_STATS = '0';
    process.env.HYPERSD_CONV_UPSAMPLE = '0';
    fusedUp = upsamples = 0;
    const b = await run();
    assert.equal([b.decNorms[0], b.encNorms[0], b.unetNorms[0]], [0, 0, 0]);
    assert.equal([fusedUp, upsamples - us], [0, fu], 'HYPERSD_CONV_UPSAMPLE=0: an upsample op per upsampler instead');
    for (const k of ['dec', 'enc', 'un'] as const) {
      const e = relErr(a[k], b[k]);
      assert.ok(e < 1e-5, `${k}: with and without statistics differ by ${e}`);
    }
    process.env.HYPERSD_GN_STATS = 'yes';
    assert.throws(() => m.vae!.decode(x.t('vae_decode_in')), /HYPERSD_GN_STATS must be 0 or 1, got 'yes'/);
    process.env.HYPERSD_GN_STATS = '1';
    process.env.HYPERSD_CONV_UPSAMPLE = 'maybe';
    assert.throws(() => m.vae!.decode(x.t('vae_decode_in')), /HYPERSD_CONV_UPSAMPLE must be 0 or 1, got 'maybe'/);
  } finally {
    delete process.env.HYPERSD_CONV_UPSAMPLE;
    setOpHook(prev);
    if (prevEnv === undefined) delete process.env.HYPERSD_GN_STATS;
    else process.env.HYPERSD_GN_STATS = prevEnv;
    m.dispose();
  }
});

// By default (HYPERSD_GN_STATS unset) a convolution gives its statistics on the CPU from 4 MiB of output up
// (a 3x3 conv to 64x64 x 256 channels f32: exactly 4 MiB), not below (32x32), and not with a runtime adapter.
if (DEV === 'cpu') test('Conv2d.forwardWithStats: statistics from 4 MiB of f32 output up by default', async () => {
  const prevEnv = process.env.HYPERSD_GN_STATS;
  delete process.env.HYPERSD_GN_STATS;
  const p = new ParamStore('t');
  const conv = new Conv2d(p, 'c', 16, 256, 3, 1, 1);
  p.initRandom(1);
  try {
    for (const [h, want] of [[64, true], [32, false]] as const) {
      const x = hs.ops.randn([1, h, h, 16], { seed: 2 });
      const r = conv.forwardWithStats(x);
      assert.is(r.stats !== null, want, `${h}x${h}: statistics given`);
      if (r.stats) {
        const ref = hs.ops.channelStats(r.y.reshape([1, h * h, 256]));
        const [a, b] = [await r.stats.floats(), await ref.floats()];
        for (let i = 0; i < a.length; i += 3) assert.ok(Math.abs(a[i + 2] - b[i + 2]) <= 1e-5 * b[i + 2], `variance ${i / 3}`);
      }
    }
  } finally {
    if (prevEnv === undefined) delete process.env.HYPERSD_GN_STATS;
    else process.env.HYPERSD_GN_STATS = prevEnv;
    p.dispose();
  }
});

test('bf16 weight storage stays close to f32 and halves matrix memory', async () => {
  const x = io('tiny-sd15');
  const p = path.join(FIX, 'tiny-sd15', 'diffusers');
  const mem = () => hs.memory().bytes;
  const before = mem();
  const m32 = loadModel(p, { components: ['unet'], device: DEV });
  const b32 = mem() - before;
  const m16 = loadModel(p, { components: ['unet'], dtype: 'bf16', device: DEV });
  const b16 = mem() - before - b32;
  assert.ok(b16 < 0.55 * b32, `bf16 storage ${b16} bytes vs f32 ${b32}`);
  const inputs = { sample: x.t('unet_in_sample'), timesteps: Array.from(x.ids('unet_in_timesteps')), encoderHiddenStates: x.t('unet_in_encoder_hidden_states') };
  const out = (await m16.unet!.forward(inputs).data()) as Float32Array;
  const e = relErr(out, x.get('unet_out'));
  assert.ok(e < 3e-2 && e > 0, `bf16 unet relative error ${e}`);
  m32.dispose();
  m16.dispose();
});

// (needs the prefixed file: left out when HYPERSD_TEST_LAYOUTS leaves that layout out)
if (!LAYOUTS || LAYOUTS.includes('prefixed')) test('strict loading names missing keys; strict:false reports them', () => {
  const dir = path.join(FIX, 'tiny-sd15');
  // The SDXL unet config against SD1.5 weights: keys and shapes disagree.
  assert.throws(() => loadModel(path.join(dir, 'model.safetensors'), { configFrom: path.join(FIX, 'tiny-sdxl', 'diffusers'), components: ['unet'] }),
    /unet .*(missing|unexpected|wrong shape).*down_blocks/);
  const m = loadModel(path.join(dir, 'model.safetensors'), { configFrom: path.join(FIX, 'tiny-sdxl', 'diffusers'), components: ['unet'], strict: false });
  const r = m.reports.unet!;
  assert.ok(r.missing.length + r.unexpected.length + r.mismatched.length > 0);
  assert.ok(r.missing.includes('add_embedding.linear_1.weight'));
  m.dispose();
});

test.run();
