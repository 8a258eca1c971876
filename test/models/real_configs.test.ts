// The real SD1.5 and SDXL architectures build from their configs (no file) with the right parameter counts,
// and one full-size SD1.5 UNet forward runs at a 32x32 latent with random weights.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { builtinConfigs } from '../../lib/models/configs';
import { UNet2DConditionModel, timestepTensor, type UNetConfig } from '../../lib/models/unet';
import { CLIPTextModel, type CLIPTextConfig } from '../../lib/models/clip';
import { AutoencoderKL, type VAEConfig } from '../../lib/models/vae';

test('configs: an unsupported activation or a size that is not a positive integer is an Error naming the field', () => {
  const sd = builtinConfigs('sd15');
  const unet = (o: Record<string, unknown>) => () => new UNet2DConditionModel({ ...(sd.unet as UNetConfig), ...o } as UNetConfig);
  const vae = (o: Record<string, unknown>) => () => new AutoencoderKL({ ...(sd.vae as VAEConfig), ...o } as VAEConfig);
  assert.throws(unet({ act_fn: 'gelu' }), /unet config: act_fn "gelu" is not supported/);
  assert.throws(unet({ in_channels: '4' }), /unet config: in_channels must be a positive integer or a list of them, got "4"/);
  assert.throws(unet({ block_out_channels: [320, 640.5, 1280, 1280] }), /unet config: block_out_channels must be/);
  assert.throws(vae({ act_fn: 'relu' }), /vae config: act_fn "relu" is not supported/);
  assert.throws(vae({ latent_channels: 0 }), /vae config: latent_channels must be a positive integer/);
  unet({ act_fn: 'swish' })();  // diffusers' other name for SiLU
  // fields that change the computation, not the weights: anything but the default had been ignored
  for (const [k, v] of [['center_input_sample', true], ['resnet_out_scale_factor', 2], ['mid_block_scale_factor', 2], ['downsample_padding', 0],
    ['time_embedding_act_fn', 'silu'], ['timestep_post_act', 'silu'], ['resnet_skip_time_act', true]] as [string, unknown][])
    assert.throws(unet({ [k]: v }), new RegExp(`unet config: ${k} ${JSON.stringify(v)} is not supported`));
  unet({ center_input_sample: false, resnet_out_scale_factor: 1.0, time_embedding_act_fn: null, only_cross_attention: [false, false, false, false] })();
  assert.throws(unet({ only_cross_attention: [false, true, false, false] }), /only_cross_attention \[false,true,false,false\] is not supported/);
  assert.throws(vae({ latents_mean: [0, 0, 0, 0] }), /vae config: latents_mean \[0,0,0,0\] is not supported/);
  assert.throws(vae({ shift_factor: 0.1 }), /vae config: shift_factor 0\.1 is not supported/);
  // NaN timesteps are Errors (they had given NaN output)
  assert.throws(() => timestepTensor([NaN], 1, 'cpu'), /unet: timestep 0 is NaN: timesteps must be finite numbers/);
});

test('parameter counts of the real architectures', () => {
  const sd = builtinConfigs('sd15'), xl = builtinConfigs('sdxl');
  assert.is(new UNet2DConditionModel(sd.unet as UNetConfig).parameterCount(), 859_520_964);
  assert.is(new UNet2DConditionModel(xl.unet as UNetConfig).parameterCount(), 2_567_463_684);
  assert.is(new AutoencoderKL(sd.vae as VAEConfig).parameterCount(), 83_653_863);
  assert.is(new CLIPTextModel(sd.text_encoder as CLIPTextConfig).parameterCount(), 123_060_480);
  assert.is(new CLIPTextModel(xl.text_encoder_2 as CLIPTextConfig, 'text_encoder_2', true).parameterCount(), 694_659_840);
});

test('full-size SD1.5 UNet forward at a 32x32 latent (random weights, bf16 storage)', async () => {
  const sd = builtinConfigs('sd15');
  const unet = new UNet2DConditionModel(sd.unet as UNetConfig);
  unet.params.initRandom(1, { dtype: 'bf16' });
  const x = hs.ops.randn([1, 4, 32, 32], { seed: 2 });
  const ctx = hs.ops.randn([1, 77, 768], { seed: 3 });
  const out = await unet.forward({ sample: x, timesteps: 999, encoderHiddenStates: ctx }).data();
  assert.is(out.length, 4 * 32 * 32);
  let s = 0;
  for (const v of out as Float32Array) {
    assert.ok(Number.isFinite(v));
    s += Math.abs(v);
  }
  assert.ok(s > 0, 'output is not all zeros');
  unet.dispose();
  x.dispose();
  ctx.dispose();
});

test.run();
