// The fused adamw and sq_norm ops against float64 references (outputs poisoned with NaN first), the AdamW
// optimizer over several steps with clipping and a bf16 model copy, and the learning-rate schedules.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { adamwStep, sqNorm } from '../../lib/ops/optim';
import { AdamW, globalNorm } from '../../lib/train/optimizer';
import { lrSchedule } from '../../lib/train/schedule';
import { Trainer } from '../../lib/train/trainer';
import { EMA } from '../../lib/train/ema';
import { mse, pseudoHuber, gaussianKl, gaussianSample } from '../../lib/train/losses';
import { grad, DynamicLossScaler } from '../../lib/autograd';
import { DEVICE, TOL, assertClose, randn, rejects, roundTo, t } from '../helpers/check';
import { adamwRef, type Hyper } from '../helpers/refs';


for (const n of [1, 7, 1000, 16384 + 37]) {
  for (const gdtype of ['f32', 'bf16', 'f16'] as const) {
    test(`adamw: ${n} elements, ${gdtype} gradients, 4 steps, out-of-place (poisoned) and in-place agree with float64`, async () => {
      const p0 = roundTo('f32', randn(n, 1)), m0 = new Float64Array(n), v0 = new Float64Array(n);
      const pRef = Float64Array.from(p0), mRef = Float64Array.from(m0), vRef = Float64Array.from(v0);
      let p = t(p0, [n]), m = t(m0, [n]), v = t(v0, [n]);
      const pin = t(p0, [n]), min = t(m0, [n]), vin = t(v0, [n]);
      for (let step = 1; step <= 4; step++) {
        const h: Hyper = { lr: 1e-2 * step, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step, gradScale: step === 3 ? 0.25 : 1 };
        const g = roundTo(gdtype, randn(n, 10 + step, 0.5));
        const gT = t(g, [n], gdtype);
        // out of place: fresh poisoned outputs (setPoison is on in the helpers) and a bf16 model copy
        const po = hs.empty([n], { device: DEVICE }), mo = hs.empty([n], { device: DEVICE }), vo = hs.empty([n], { device: DEVICE });
        const model = hs.empty([n], { dtype: 'bf16', device: DEVICE });
        hs.runOp('adamw', [p, gT, m, v], [po, mo, vo, model], { lr: h.lr, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weight_decay: h.weightDecay, step, grad_scale: h.gradScale });
        adamwStep(pin, gT, min, vin, h);
        adamwRef(pRef, g, mRef, vRef, h);
        p.dispose(); m.dispose(); v.dispose();
        p = po; m = mo; v = vo;
        assertClose(await model.floats(), roundTo('bf16', pRef), TOL.bf16, `model weight (bf16) step ${step}`);
        model.dispose();
        gT.dispose();
      }
      assertClose(await p.floats(), pRef, TOL.f32, 'param');
      assertClose(await m.floats(), mRef, TOL.f32, 'm');
      assertClose(await v.floats(), vRef, TOL.f32, 'v');
      assertClose(await pin.floats(), await p.floats(), 0, 'in-place param equals out-of-place');
      for (const x of [p, m, v, pin, min, vin]) x.dispose();
    });
  }
}

test('adamw: checks step, betas and sizes before enqueueing', () => {
  const a = hs.zeros([4]), g = hs.zeros([5]);
  const h = { lr: 1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1 };
  assert.throws(() => adamwStep(a, g, a, a, h), /grad \[5\] must have 4 elements/);
  assert.throws(() => adamwStep(a, a, a, a, { ...h, step: 0 }), /step must be an integer >= 1/);
  assert.throws(() => adamwStep(a, a, a, a, { ...h, beta1: 1 }), /betas must be in \[0, 1\)/);
  assert.throws(() => adamwStep(a, a, hs.zeros([4], { dtype: 'bf16' }), a, h), /m must be f32/);
});

for (const dtype of ['f32', 'bf16', 'f16'] as const) {
  test(`sq_norm: ${dtype}, odd sizes, accumulate`, async () => {
    let total = 0;
    const acc = hs.zeros([1], { device: DEVICE });
    for (const n of [1, 13, 16384 * 3 + 5]) {
      const x = roundTo(dtype, randn(n, n));
      let ref = 0;
      for (const q of x) ref += q * q;
      total += ref;
      const xt = t(x, [n], dtype);
      assertClose(await sqNorm(xt).floats(), [ref], TOL.f32, `sum of squares of ${n}`);
      sqNorm(xt, acc);
      xt.dispose();
    }
    assertClose(await acc.floats(), [total], TOL.f32, 'accumulated');
  });
}

test('AdamW: global-norm clipping, bf16 trainable with an f32 master, skipped non-finite step', async () => {
  const w = hs.tensor([1, -2, 3, 0.5], [2, 2], { dtype: 'bf16' });
  const b = hs.tensor([0.1, 0.2]);
  const opt = new AdamW(new Map([['w', w], ['b', b]]), { lr: 0.1, weightDecay: 0, maxGradNorm: 1 });
  assert.is(opt.masters.get('w')!.dtype, 'f32');
  assert.is(opt.masters.get('b'), b, 'an f32 trainable is its own master');
  const gw = hs.tensor([3, 0, 0, 0], [2, 2]), gb = hs.tensor([0, 4]);
  assert.ok(Math.abs((await globalNorm([gw, gb])) - 5) < 1e-6);
  const info = await opt.step(new Map([[w, gw], [b, gb]]));
  assert.ok(Math.abs(info.gradNorm - 5) < 1e-6 && Math.abs(info.clipCoef - 1 / 5) < 1e-6, `norm ${info.gradNorm} coef ${info.clipCoef}`);
  // step 1 of Adam moves every element with a non-zero gradient by lr (m / sqrt(v) = sign(g) after bias correction)
  const master = Float64Array.from(await opt.masters.get('w')!.floats());
  assertClose(master, [1 - 0.1, -2, 3, 0.5], 1e-6, 'master after one step');
  assertClose(await w.floats(), roundTo('bf16', master), 0, 'bf16 model weight = rounded master');
  const bad = await opt.step(new Map([[w, hs.tensor([NaN, 0, 0, 0], [2, 2])], [b, gb]]));
  assert.ok(bad.skipped && opt.stepCount === 1, 'a NaN gradient skips the step');
  assertClose(await opt.masters.get('w')!.floats(), master, 0, 'skipped step changed nothing');
  opt.dispose();
});

test('Trainer: gradient accumulation over two half batches equals one step on the whole batch', async () => {
  const x = hs.tensor(randn(8 * 5, 3), [8, 5]), y = hs.tensor(randn(8 * 3, 4), [8, 3]);
  const run = async (accum: number) => {
    const w = hs.tensor(randn(3 * 5, 5), [3, 5]);
    const tr = new Trainer({ trainables: new Map([['w', w]]), lr: 0.05, schedule: 'constant', gradAccum: accum, maxGradNorm: null });
    for (let s = 0; s < 3; s++) {
      await tr.trainStep((k) => {
        const rows = 8 / accum;
        const xs = hs.ops.slice(x, 0, k * rows, rows), ys = hs.ops.slice(y, 0, k * rows, rows);
        return mse(hs.ops.linear(xs, w), ys);
      });
    }
    const v = await w.floats();
    tr.dispose();
    return v;
  };
  const whole = await run(1), halves = await run(2);
  assertClose(halves, whole, 1e-6, 'weights after 3 steps');
});

test('EMA: shadow = d * shadow + (1 - d) * param; withAveraged swaps in and restores', async () => {
  const p = hs.tensor([1, 2]);
  const ema = new EMA(new Map([['p', p]]), 0.9);
  hs.runOp('fill', [], [p], { value: 3 });
  ema.update();
  assertClose(await ema.shadow.get('p')!.floats(), [0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 3], 1e-7, 'one update');
  const inside = await ema.withAveraged(async () => p.floats());
  assertClose(inside, [1.2, 2.1], 1e-6, 'averaged weights inside');
  assert.equal(Array.from(await p.floats()), [3, 3], 'restored after');
  const warm = new EMA(new Map([['p', p]]), 0.999, true);
  assert.ok(Math.abs(warm.currentDecay() - 0.1) < 1e-12, 'warm-up decay (1 + t) / (10 + t) at t = 0');
  ema.dispose();
  warm.dispose();
});

test('losses: MSE, pseudo-Huber, Gaussian KL and the reparameterised sample, values and gradients vs float64', async () => {
  const n = 37, c = 0.1;
  const a = roundTo('f32', randn(n, 1)), b = roundTo('f32', randn(n, 2)), lv = roundTo('f32', randn(n, 3, 0.5));
  const A = t(a, [n]), Bt = t(b, [n]), LV = t(lv, [n]), N = t(b, [n]);
  let ref = 0, hub = 0, kl = 0;
  const dHub = new Float64Array(n), dMean = new Float64Array(n), dLv = new Float64Array(n), dSampleLv = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const d = a[i] - b[i];
    ref += (d * d) / n;
    hub += (Math.sqrt(d * d + c * c) - c) / n;
    dHub[i] = d / Math.sqrt(d * d + c * c) / n;
    kl += 0.5 * (a[i] * a[i] + Math.exp(lv[i]) - 1 - lv[i]) / n;
    dMean[i] = a[i] / n;
    dLv[i] = 0.5 * (Math.exp(lv[i]) - 1) / n;
    dSampleLv[i] = 0.5 * Math.exp(0.5 * lv[i]) * b[i];
  }
  assertClose(await mse(A, Bt).floats(), [ref], TOL.f32, 'mse');
  const h = grad(() => pseudoHuber(A, Bt, c), [A]);
  assertClose(await h.loss.floats(), [hub], TOL.f32, 'pseudo-Huber');
  assertClose(await h.grads.get(A)!.floats(), dHub, TOL.f32, 'd pseudo-Huber / d pred');
  const k = grad(() => gaussianKl(A, LV), [A, LV]);
  assertClose(await k.loss.floats(), [kl], TOL.f32, 'KL');
  assertClose(await k.grads.get(A)!.floats(), dMean, TOL.f32, 'd KL / d mean');
  assertClose(await k.grads.get(LV)!.floats(), dLv, TOL.f32, 'd KL / d logvar');
  const z = grad(() => hs.ops.mean(gaussianSample(A, LV, N), [0]), [LV], {});
  assertClose(await z.grads.get(LV)!.floats(), Array.from(dSampleLv, (v) => v / n), TOL.f32, 'd sample / d logvar');
  assert.throws(() => pseudoHuber(A, Bt, 0), /c must be > 0/);
});

test('lrSchedule: constant, warmup and cosine', () => {
  const c = lrSchedule({ kind: 'constant', lr: 0.5 });
  assert.is(c(1), 0.5);
  assert.is(c(10000), 0.5);
  const w = lrSchedule({ kind: 'warmup', lr: 1, warmup: 4 });
  assert.equal([1, 2, 3, 4, 5, 100].map(w), [0.25, 0.5, 0.75, 1, 1, 1]);
  const cos = lrSchedule({ kind: 'cosine', lr: 1, warmup: 2, total: 12, minLr: 0.1 });
  assert.equal([cos(1), cos(2)], [0.5, 1]);
  assert.ok(Math.abs(cos(7) - (0.1 + 0.9 * 0.5)) < 1e-12, 'halfway down the cosine');
  assert.ok(Math.abs(cos(12) - 0.1) < 1e-12 && Math.abs(cos(50) - 0.1) < 1e-12, 'floor at minLr');
  const d = lrSchedule({ lr: 1e-4 });
  assert.is(d(1), 1e-4, 'default constant');
  assert.throws(() => lrSchedule({ kind: 'cosine', lr: 1 }), /needs total steps/);
  assert.throws(() => lrSchedule({ kind: 'linear' as never, lr: 1 }), /kind must be one of constant, warmup, cosine/);
  assert.throws(() => c(0), /step must be an integer >= 1/);
});

test('AdamW: bad options are Errors naming the option, before anything is allocated', () => {
  const p = hs.tensor([1, 2]), q = hs.tensor([3, 4]);
  const params = new Map([['p', p]]);
  const before = hs.memory().tensors;
  const bad: [unknown, RegExp][] = [
    [{ lr: -1 }, /AdamW: lr must be a finite number >= 0, got -1/],
    [{ lr: '0.1' }, /AdamW: lr must be a number or a schedule function/],
    [{ eps: 0 }, /AdamW: eps must be a finite number > 0, got 0/],
    [{ eps: -1 }, /AdamW: eps must be a finite number > 0/],
    [{ weightDecay: -1 }, /AdamW: weightDecay must be a finite number >= 0, got -1/],
    [{ decay: true }, /AdamW: decay must be a function/],
    [{ betas: [0.9] }, /AdamW: betas must be two numbers in \[0, 1\)/],
    [{ maxGradNorm: '1' }, /AdamW: maxGradNorm must be a number > 0 or null/],
    [{ learningRate: 1 }, /AdamW: unknown option learningRate/],
  ];
  for (const [o, re] of bad) assert.throws(() => new AdamW(params, o as never), re, JSON.stringify(o));
  assert.throws(() => new AdamW(new Map([['a', p], ['b', q], ['c', p]])), /AdamW: trainables a and c are the same tensor/);
  assert.throws(() => new AdamW({ p } as never), /AdamW: params must be a Map/);
  const gone = hs.tensor([1]);
  gone.dispose();
  assert.throws(() => new AdamW(new Map([['g', gone]])), /AdamW: trainable g was disposed/);
  assert.is(hs.memory().tensors, before, 'the failed constructors allocated nothing');
  p.dispose();
  q.dispose();
});

test('AdamW.step: bad gradScale, gradients for no trainable and a failing decay() are Errors that change nothing', async () => {
  const x = hs.tensor([1, 1]), y = hs.tensor([1, 1]);
  const g = () => new Map([[x, hs.tensor([1, 1])], [y, hs.tensor([1, 1])]]);
  const opt = new AdamW(new Map([['x', x], ['y', y]]), { lr: 0.1, weightDecay: 0 });
  // (gradScale -1 had climbed the loss; NaN had returned skipped: the gradients themselves signal overflow)
  for (const gs of [-1, 0, NaN, Infinity]) await rejects(() => opt.step(g(), { gradScale: gs }), /AdamW.step: gradScale must be a finite number > 0/);
  await rejects(() => opt.step(new Map()), /no gradient for any trainable/);
  await rejects(() => opt.step(new Map([[hs.tensor([1, 1]), hs.tensor([1, 1])]])), /keyed by a tensor \[2\] that is not one of the trainables/);
  await rejects(() => opt.step(new Map([[x, hs.tensor(new Int32Array([1, 1]), [2])]])), /the gradient of x must be a float tensor, got i32/);
  assert.is(opt.stepCount, 0, 'no step counted');
  const o2 = new AdamW(new Map([['x', x], ['y', y]]), { lr: 0.1, decay: (n) => { if (n === 'y') throw new Error('decay cb failed'); return true; } });
  await rejects(() => o2.step(g()), /decay cb failed/);
  const o3 = new AdamW(new Map([['x', x], ['y', y]]), { lr: 0.1, decay: (() => 1) as never });
  await rejects(() => o3.step(g()), /decay\('x'\) must return a boolean/);
  const o4 = new AdamW(new Map([['x', x]]), { lr: () => -1 });
  await rejects(() => o4.step(new Map([[x, hs.tensor([1, 1])]])), /the lr schedule gave -1 for step 1/);
  assert.equal(Array.from(await x.floats()), [1, 1], 'x untouched (it had been updated before decay() failed for y)');
  assert.equal(Array.from(await y.floats()), [1, 1]);
  const ok = await opt.step(g());
  assert.ok(!ok.skipped && opt.stepCount === 1, 'a good step still runs');
  for (const o of [opt, o2, o3, o4]) o.dispose();
});

test('Trainer and lrSchedule: bad options are Errors naming the option, before the trainables are marked', () => {
  const p = hs.tensor([1, 2]);
  const trainables = new Map([['p', p]]);
  assert.throws(() => new Trainer({ trainables, learningRate: 1 } as never), /Trainer: unknown option learningRate/);
  assert.throws(() => new Trainer({ trainables, seed: NaN }), /Trainer: seed must be an integer >= 0, got NaN/);
  assert.throws(() => new Trainer({ trainables, seed: -1 }), /Trainer: seed must be an integer >= 0, got -1/);
  assert.throws(() => new Trainer({ trainables, ema: { decay: 2 } }), /Trainer: ema.decay must be a number in \[0, 1\], got 2/);
  assert.throws(() => new Trainer({ trainables: [p] as never }), /Trainer: trainables must be a Map/);
  assert.throws(() => lrSchedule({ lr: '1' as never }), /lrSchedule: lr must be a finite number >= 0, got '1'/);
  assert.throws(() => lrSchedule({ kind: 'cosine', lr: 1, total: 5, minLr: '0.1' as never }), /lrSchedule: minLr must be a number in \[0, lr\], got '0.1'/);
  p.dispose();
});

test('DynamicLossScaler: options are checked (finite, growth > 1, backoff in (0, 1), minScale <= initScale); the scale never grows to inf', () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ growthFactor: Infinity }, /growthFactor must be a finite number > 1, got Infinity/],
    [{ growthFactor: 1 }, /growthFactor must be a finite number > 1, got 1/],
    [{ backoffFactor: 1 }, /backoffFactor must be a number in \(0, 1\), got 1/],
    [{ backoffFactor: 0 }, /backoffFactor must be a number in \(0, 1\)/],
    [{ initScale: Infinity }, /initScale must be a finite number > 0/],
    [{ initScale: '8' }, /initScale must be a finite number > 0, got '8'/],
    [{ minScale: 16, initScale: 8 }, /minScale \(16\) must be <= initScale \(8\)/],
    [{ growthInterval: 0 }, /growthInterval must be an integer >= 1, got 0/],
    [{ growthInterval: 1.5 }, /growthInterval must be an integer >= 1/],
    [{ initscale: 8 }, /unknown option initscale/],
  ];
  for (const [o, re] of bad) assert.throws(() => new DynamicLossScaler(o as never), re, JSON.stringify(o));
  const s = new DynamicLossScaler({ initScale: 2 ** 1023, growthInterval: 1 });
  s.update(false);
  s.update(false);
  assert.is(s.scale, 2 ** 1023, 'growth stops short of inf');
  s.update(true);
  assert.is(s.scale, 2 ** 1022, 'and backs off from there');
});

test.run();
