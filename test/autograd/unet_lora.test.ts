// End to end: the tiny SD1.5 UNet (test fixture) with runtime LoRA adapters (lib/nn/layers RuntimeAdapter)
// on every attention projection and on some convolutions, adapters marked trainable, base frozen:
// gradients are finite, agree with a finite difference of the f32 loss along the gradient, no weight
// gradient is launched for a frozen base conv, and the loss falls over a few SGD steps; checkpointing every
// block gives the same gradients.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as path from 'path';
import * as hs from '../../lib';
import { grad, checkpoint, markTrainable, noGrad } from '../../lib/autograd';
import { loadModel } from '../../lib/models/load';
import type { UNet2DConditionModel } from '../../lib/models/unet';
import type { RuntimeAdapter } from '../../lib/nn/layers';
import { setOpHook } from '../../lib/ops/runtime';
import { relErr } from '../helpers/check';

const o = hs.ops;
const FIX = path.resolve(__dirname, '../fixtures/tiny-sd15/diffusers');

function attachAdapters(unet: UNet2DConditionModel, rank: number): { adapters: RuntimeAdapter[]; convDowns: Set<string> } {
  const adapters: RuntimeAdapter[] = [];
  const convDowns = new Set<string>();
  let seed = 1000;
  for (const [name, spec] of unet.params.specs) {
    if (!name.endsWith('.weight')) continue;
    const mod = name.slice(0, -'.weight'.length);
    const isAttn = /\.attn[12]\.to_(q|k|v|out\.0)$/.test(mod);
    const isConv = /resnets\.0\.conv1$/.test(mod);
    if (!isAttn && !isConv) continue;
    const [out, inF] = spec.shape;
    const dShape = isConv ? [rank, spec.shape[2], spec.shape[3], inF] : [rank, inF];
    const down = markTrainable(o.randn(dShape, { seed: 7, offset: seed++ }));
    hs.runOp('affine', [down], [down], { a: 0.2, b: 0 });
    const up = markTrainable(o.randn([out, rank], { seed: 7, offset: seed++ }));
    hs.runOp('affine', [up], [up], { a: 0.05, b: 0 });
    const a: RuntimeAdapter = { name: 'test', down, up, scale: 1 };
    unet.params.adapters.set(mod, [a]);
    adapters.push(a);
    if (isConv) convDowns.add(`${dShape}`);
  }
  return { adapters, convDowns };
}

test('tiny UNet with trainable LoRA adapters: finite gradients that match the loss, frozen base, loss falls', async () => {
  const m = loadModel(FIX, { components: ['unet'] });
  const unet = m.unet!;
  const { adapters, convDowns } = attachAdapters(unet, 4);
  const params = adapters.flatMap((a) => [a.down, a.up]);
  const sample = o.randn([1, 4, 16, 16], { seed: 1 }), ctx = o.randn([1, 6, 32], { seed: 2 }), target = o.randn([1, 4, 16, 16], { seed: 3 });
  const lossFn = () => {
    const d = o.sub(unet.forward({ sample, timesteps: 400, encoderHiddenStates: ctx }), target);
    return o.mean(o.mul(d, d));
  };
  try {
    // One gradient, counting the weight-gradient kernels launched.
    const convDw: string[] = [];
    const prev = setOpHook((op, ins, outs, attrs) => {
      prev?.(op, ins, outs, attrs);
      if (op === 'conv2d_backward_weight') convDw.push(`${outs[0].shape}`);
    });
    let res;
    try {
      res = grad(lossFn, params);
    } finally {
      setOpHook(prev);
    }
    assert.ok(convDw.length > 0 && convDw.every((s) => convDowns.has(s)), `conv weight gradients only for adapters: ${convDw}`);
    let norm2 = 0;
    for (const g of res.grads.values()) for (const v of await g.floats()) {
      assert.ok(Number.isFinite(v), 'finite gradient');
      norm2 += v * v;
    }
    assert.ok(norm2 > 0, 'non-zero gradient');
    const loss0 = (await res.loss.floats())[0];

    // Directional derivative along the gradient: (L(p + e u) - L(p - e u)) / 2e = |g| for u = g / |g|.
    const norm = Math.sqrt(norm2), eps = 2e-2;
    const shift = (sign: number) => noGrad(() => {
      for (const [p, g] of res.grads) hs.runOp('scheduler_step', [p, g], [p], { a: 1, b: (sign * eps) / norm });
    });
    const evalLoss = async () => {
      const l = hs.tidy(lossFn);
      const v = (await l.floats())[0];
      l.dispose();
      return v;
    };
    shift(1);
    const lp = await evalLoss();
    shift(-2);
    const lm = await evalLoss();
    shift(1);
    const dd = (lp - lm) / (2 * eps);
    assert.ok(Math.abs(dd - norm) / norm < 5e-3, `directional derivative ${dd} vs gradient norm ${norm}`);
    for (const g of res.grads.values()) g.dispose();
    res.loss.dispose();

    // A few SGD steps.
    const losses = [loss0];
    for (let step = 0; step < 4; step++) {
      const r = grad(lossFn, params);
      for (const [p, g] of r.grads) hs.runOp('scheduler_step', [p, g], [p], { a: 1, b: -2 });
      for (const g of r.grads.values()) g.dispose();
      r.loss.dispose();
      losses.push(await evalLoss());
    }
    for (let i = 1; i < losses.length; i++) assert.ok(losses[i] < losses[i - 1], `loss falls: ${losses.join(', ')}`);
  } finally {
    for (const p of params) p.dispose();
    [sample, ctx, target].forEach((t) => t.dispose());
    m.dispose();
  }
});

/** Wraps every resnet and transformer block of the UNet in checkpoint(), as a gradientCheckpointing option would. */
function checkpointBlocks(unet: UNet2DConditionModel): () => void {
  type Fwd = (x: hs.Tensor, y: hs.Tensor) => hs.Tensor;
  const u = unet as unknown as Record<'downs' | 'ups', { resnets: { forward: Fwd }[]; attentions: { forward: Fwd }[] }[]> &
    { mid: { resnets: { forward: Fwd }[]; attentions: { forward: Fwd }[] } };
  const restore: (() => void)[] = [];
  for (const b of [...u.downs, u.mid, ...u.ups])
    for (const m of [...b.resnets, ...b.attentions]) {
      const orig = m.forward;
      m.forward = (x, y) => checkpoint((a, c) => orig.call(m, a, c), [x, y]);
      restore.push(() => void (m.forward = orig));
    }
  return () => restore.forEach((f) => f());
}

test('tiny UNet: checkpointing every block gives the same LoRA gradients', async () => {
  const m = loadModel(FIX, { components: ['unet'] });
  const unet = m.unet!;
  const { adapters } = attachAdapters(unet, 2);
  const params = adapters.flatMap((a) => [a.down, a.up]);
  const sample = o.randn([1, 4, 16, 16], { seed: 4 }), ctx = o.randn([1, 5, 32], { seed: 5 });
  const lossFn = () => o.mean(o.mul(unet.forward({ sample, timesteps: 700, encoderHiddenStates: ctx }), sample));
  try {
    const plain = grad(lossFn, params);
    const restore = checkpointBlocks(unet);
    let ck;
    try {
      ck = grad(lossFn, params);
    } finally {
      restore();
    }
    assert.ok(ck.ops.filter((op) => op === 'checkpoint').length >= 10, 'blocks recorded as checkpoints');
    assert.ok(ck.ops.length < plain.ops.length / 3, `${ck.ops.length} nodes instead of ${plain.ops.length}`);
    assert.equal(Array.from(await ck.loss.floats()), Array.from(await plain.loss.floats()));
    // Not bit-identical: inside a checkpoint a block's contributions to its input's gradient are summed
    // before the skip connection's is added, a different association of the same f32 sum.
    for (const p of params) {
      const e = relErr(await ck.grads.get(p)!.floats(), await plain.grads.get(p)!.floats());
      assert.ok(e < 1e-5, `gradient differs by ${e}`);
    }
    for (const r of [plain, ck]) {
      r.loss.dispose();
      for (const g of r.grads.values()) g.dispose();
    }
  } finally {
    for (const p of params) p.dispose();
    [sample, ctx].forEach((t) => t.dispose());
    m.dispose();
  }
});

test.run();
