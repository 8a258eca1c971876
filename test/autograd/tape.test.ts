// The tape itself: pruning to the parameters' path (a frozen weight launches no weight-gradient kernel),
// in-place writes, memory released after backward, checkpointing (same gradients as without), noGrad,
// errors, and the dynamic loss scaler.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as hs from '../../lib';
import { grad, checkpoint, noGrad, markTrainable, DynamicLossScaler, hasInfOrNaN, registeredGradients } from '../../lib/autograd';
import { setOpHook } from '../../lib/ops/runtime';
import { DEVICE, randn, relErr, t } from '../helpers/check';
import { settleGarbage } from '../helpers/gc';

const o = hs.ops;
const r = (shape: number[], seed: number, scale = 1) => t(randn(shape.reduce((a, b) => a * b, 1), seed, scale), shape);

/** Runs fn and returns what it returned plus every op launched meanwhile (name and output shapes). */
function launches<T>(fn: () => T): { result: T; ops: { op: string; out: string[] }[] } {
  const ops: { op: string; out: string[] }[] = [];
  const prev = setOpHook((op, ins, outs, attrs) => {
    prev?.(op, ins, outs, attrs);
    ops.push({ op, out: outs.map((x) => `${x.shape}`) });
  });
  try {
    return { result: fn(), ops };
  } finally {
    setOpHook(prev);
  }
}

async function disposeAll(res: { loss: hs.Tensor; grads: Map<hs.Tensor, hs.Tensor> }) {
  await res.loss.data();
  res.loss.dispose();
  for (const g of res.grads.values()) g.dispose();
}

test('a frozen first layer is not recorded; backward launches dW2 only (no dW1, no dh)', async () => {
  const x = r([4, 6], 1), w1 = r([5, 6], 2), w2 = r([3, 5], 3), b2 = r([3], 4);
  const { result: res, ops } = launches(() => grad(() => o.mean(o.linear(o.silu(o.linear(x, w1)), w2, b2)), [w2, b2]));
  assert.equal(res.ops, ['matmul', 'sum_to', 'reshape']);
  const back = ops.slice(ops.findIndex((l) => l.op === 'sum_to') + 1);
  const mm = back.filter((l) => l.op === 'matmul').map((l) => l.out[0]);
  assert.equal(mm, ['3,5'], `backward matmuls: ${mm}`);
  assert.ok(!back.some((l) => l.op === 'silu_backward'));
  await disposeAll(res);
  [x, w1, w2, b2].forEach((v) => v.dispose());
});

test('a frozen weight on a trainable path: dx is computed, dW is not', async () => {
  const x = r([4, 6], 5), w = r([5, 6], 6), cw = r([3, 3, 3, 2], 7), img = r([1, 4, 4, 2], 8);
  const { result: res, ops } = launches(() => grad(() => o.add(o.mean(o.linear(x, w)), o.mean(o.conv2d(img, cw, null, { pad: 1 }))), [x, img]));
  const back = ops.slice(ops.findIndex((l) => l.op === 'add') + 1);
  assert.ok(back.some((l) => l.op === 'matmul' && l.out[0] === '4,6'), 'dx launched');
  assert.ok(!back.some((l) => l.op === 'matmul' && l.out[0] === '5,6'), 'no dW launched');
  assert.ok(back.some((l) => l.op === 'conv2d_backward_input'));
  assert.ok(!back.some((l) => l.op === 'conv2d_backward_weight'), 'no conv dW launched');
  await disposeAll(res);
  [x, w, cw, img].forEach((v) => v.dispose());
});

test('LoRA on a frozen linear: gradients for down and up, none for the base weight', async () => {
  const x = r([2, 3, 8], 9), w = r([6, 8], 10), down = r([2, 8], 11), up = r([6, 2], 12);
  const { result: res, ops } = launches(() => grad(() => o.mean(o.loraLinear(x, w, null, down, up, 0.5)), [down, up]));
  const back = ops.slice(ops.findIndex((l) => l.op === 'sum_to') + 1).filter((l) => l.op === 'matmul').map((l) => l.out[0]);
  assert.ok(!back.includes('6,8'), `no dW: ${back}`);
  assert.ok(back.includes('2,8') && back.includes('6,2'), `d down and d up: ${back}`);
  await disposeAll(res);
  [x, w, down, up].forEach((v) => v.dispose());
});

test('every tensor the tape saved is freed after backward', async () => {
  const x = r([3, 5], 13), w = r([4, 5], 14), g = r([4], 15), b = r([4], 16);
  await hs.sync();
  await settleGarbage();
  const before = hs.memory();
  const res = grad(() => o.mean(o.gelu(o.layerNorm(o.linear(x, w), g, b))), [w, g, b]);
  await disposeAll(res);
  await hs.sync();
  const after = hs.memory();
  assert.is(after.tensors, before.tensors);
  assert.is(after.cpu.allocatedBytes, before.cpu.allocatedBytes);
  [x, w, g, b].forEach((v) => v.dispose());
});

test('in place: a write after the op ran is fine when the gradient does not read it, an Error when it does', async () => {
  const w = r([6], 17);
  const res = grad(() => {
    const y = o.silu(w); // silu's gradient reads w, not y
    hs.runOp('affine', [y], [y], { a: 2, b: 0 });
    return o.mean(y);
  }, [w]);
  const wv = Array.from(await w.floats());
  const ds = (v: number) => { const s = 1 / (1 + Math.exp(-v)); return s * (1 + v * (1 - s)); };
  assert.ok(relErr(await res.grads.get(w)!.floats(), wv.map((v) => (2 * ds(v)) / 6)) < 1e-5);
  await disposeAll(res);
  assert.throws(() => grad(() => {
    const a = o.affine(w, 1, 0);
    const y = o.mul(a, a); // mul's gradient reads a
    hs.runOp('affine', [a], [a], { a: 2, b: 0 });
    return o.mean(y);
  }, [w]), /written in place/);
  w.dispose();
});

test('grad(): unreached params get zeros, params default to markTrainable, dLoss rules, noGrad', async () => {
  const a = r([3], 18), b = r([3], 19);
  const res = grad(() => o.mean(o.mul(a, a)), [a, b]);
  assert.equal(Array.from(await res.grads.get(b)!.floats()), [0, 0, 0]);
  await disposeAll(res);
  markTrainable(b);
  const res2 = grad(() => o.mean(o.mul(a, b)));
  assert.equal([...res2.grads.keys()], [b]);
  await disposeAll(res2);
  markTrainable(b, false);
  assert.throws(() => grad(() => o.mul(a, a), [a]), /more than one element/);
  const res3 = grad(() => o.add(noGrad(() => o.mul(a, a)), a), [a], { dLoss: t([1, 2, 3], [3]) });
  assert.equal(Array.from(await res3.grads.get(a)!.floats()), [1, 2, 3]);
  assert.equal(res3.ops, ['add']);
  await disposeAll(res3);
  a.dispose();
  b.dispose();
});

test('a root that is itself a parameter gets the seed; a checkpoint passing an input through keeps its gradient; nested grad is an Error', async () => {
  // (all three had silently given zeros: found by probing, session 28)
  const s = r([1], 71), w = r([4], 72), v = r([4], 73);
  for (const f of [() => s, () => hs.tidy(() => s)]) {
    const res = grad(f, [s]);
    assert.equal(Array.from(await res.grads.get(s)!.floats()), [1], "d s / d s = 1");
  }
  const res = grad(() => {
    const [a, b] = checkpoint((p, q) => [o.mul(p, p), q], [w, v]);
    return o.add(o.mean(a), o.mean(o.mul(b, 3)));
  }, [w, v]);
  assert.equal(Array.from(await res.grads.get(v)!.floats()), [0.75, 0.75, 0.75, 0.75], 'the input passed through');
  const wv = await w.floats(), dw = await res.grads.get(w)!.floats();
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(dw[i] - wv[i] / 2) < 1e-6, `dw[${i}]`);
  assert.throws(() => grad(() => o.mean(grad(() => o.mean(o.mul(w, w)), [w]).grads.get(w)!), [w]),
    /grad: called while another grad is recording \(a gradient of a gradient is not supported\)/);
  // an inner grad under noGrad is a constant to the outer one, and allowed
  const ok = grad(() => o.mean(o.mul(w, noGrad(() => grad(() => o.mean(o.mul(w, w)), [w]).grads.get(w)!))), [w]);
  assert.is((await ok.grads.get(w)!.floats()).length, 4);
});

test('grad inside a checkpointed fn is the same clear Error at the call; under noGrad there it is allowed', async () => {
  // (the checkpoint's forward records on a probe, not a tape: the nested grad had slipped through and failed only at
  // backward, as 'checkpoint: recomputing the forward failed')
  const w = r([4], 74), x = r([4], 75);
  const inner = () => grad(() => o.mean(o.mul(w, w)), [w]).grads.get(w)!;
  assert.throws(() => grad(() => o.mean(checkpoint((q) => o.mul(q, inner()), [x])), [w, x]),
    /^grad: called while another grad is recording \(a gradient of a gradient is not supported\)/);
  const ok = grad(() => o.mean(checkpoint((q) => o.mul(q, noGrad(inner)), [x])), [x]);
  const wv = await w.floats(), dx = await ok.grads.get(x)!.floats();
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(dx[i] - wv[i] / 8) < 1e-6, `dx[${i}]`);
  await disposeAll(ok);
  w.dispose();
  x.dispose();
});

test('an op without a registered gradient on the path is a clear Error', async () => {
  assert.ok(registeredGradients().includes('attention'));
  const x = r([2, 3, 4], 20), w = r([5, 4], 21), downs = r([1, 2, 4], 22), ups = r([1, 5, 2], 23);
  const idx = hs.tensor(Int32Array.from([0, -1]), [2], { device: DEVICE }), sc = t([1, 1], [2]);
  assert.throws(() => grad(() => o.mean(o.loraLinearBatched(x, w, null, downs, ups, idx, sc)), [x]), /lora_linear_batched' has no registered gradient/);
  [x, w, downs, ups, idx, sc].forEach((v) => v.dispose());
});

/** A transformer-ish block: h + W2 geglu(W1 layerNorm(h) + b1), plus a scalar gain. */
function block(p: hs.Tensor[], h: hs.Tensor): hs.Tensor {
  const [g, b, w1, b1, w2] = p;
  return o.add(h, o.linear(o.geglu(o.linear(o.layerNorm(h, g, b), w1, b1)), w2));
}

test('checkpoint: the same gradients as without, and only one node on the tape per checkpoint', async () => {
  const x = r([2, 5, 6], 24), w0 = r([6, 6], 25, 0.5);
  const p = [r([6], 26), r([6], 27), r([16, 6], 28, 0.4), r([16], 29), r([6, 8], 30, 0.4)];
  const p2 = [r([6], 31), r([6], 32), r([16, 6], 33, 0.4), r([16], 34), r([6, 8], 35, 0.4)];
  const params = [w0, ...p, ...p2];
  const loss = (ck: boolean) => () => {
    const h0 = o.linear(x, w0);
    const run = (ps: hs.Tensor[], h: hs.Tensor) => (ck ? checkpoint((v) => block(ps, v), [h]) : block(ps, h));
    // nested: the second block runs inside a checkpoint that also checkpoints the first
    const h2 = ck ? checkpoint((v) => run(p2, run(p, v)), [h0]) : run(p2, run(p, h0));
    return o.mean(o.mul(h2, h2));
  };
  const plain = grad(loss(false), params);
  const ck = grad(loss(true), params);
  assert.equal(ck.ops, ['matmul', 'checkpoint', 'mul', 'sum_to', 'reshape']);
  assert.equal(Array.from(await ck.loss.floats()), Array.from(await plain.loss.floats()));
  for (const q of params) {
    const e = relErr(await ck.grads.get(q)!.floats(), await plain.grads.get(q)!.floats());
    assert.ok(e < 1e-6, `checkpointed gradient differs: ${e}`);
  }
  await disposeAll(plain);
  await disposeAll(ck);
  // A dependent activation read without being passed in is refused.
  assert.throws(() => grad(() => {
    const h0 = o.linear(x, w0);
    return o.mean(checkpoint((v) => o.add(v, h0), [x]));
  }, params), /not one of the checkpoint's inputs/);
  [x, ...params].forEach((v) => v.dispose());
});

test('loss scaling: inf/NaN detection, back-off, growth, unscaling', async () => {
  const fin = t([1, -2, 3], [3]), inf = t([1, Infinity, 3], [3]), nan = t([NaN, 0], [2]);
  assert.is(await hasInfOrNaN([fin]), false);
  assert.is(await hasInfOrNaN([fin, inf]), true);
  assert.is(await hasInfOrNaN([nan, fin]), true);
  const s = new DynamicLossScaler({ initScale: 8, growthInterval: 2 });
  const g = t([8, 16, -24], [3]);
  assert.is(await s.unscale([g]), true);
  assert.equal(Array.from(await g.floats()), [1, 2, -3]);
  assert.is(s.scale, 8);
  assert.is(await s.unscale([g]), true);
  assert.is(s.scale, 16);
  assert.is(await s.unscale([fin, inf]), false);
  assert.is(s.scale, 8);
  assert.equal(Array.from(await inf.floats()), [1, Infinity, 3], 'a skipped step leaves the gradients alone');
  // seeding with the scale scales every gradient
  const w = r([4], 36);
  const seed = s.seedFor([1]);
  const res = grad(() => o.mean(o.mul(w, w)), [w], { dLoss: seed });
  assert.is(await s.unscale(res.grads), true);
  const wv = Array.from(await w.floats());
  assert.ok(relErr(await res.grads.get(w)!.floats(), wv.map((v) => v / 2)) < 1e-6);
  await disposeAll(res);
  [fin, inf, nan, g, w, seed].forEach((v) => v.dispose());
});


// nn's forwardAccumulate (the residual adds the networks fold into a GEMM / convolution epilogue): in place into
// acc at inference (CPU and CUDA) and under a top-level noGrad; under a tape or a checkpoint acc stays untouched (they may
// hold it for later) and gradients flow through the composed add.
test('Linear / Conv2d forwardAccumulate: in place at inference only, same sums, gradients under a tape', async () => {
  const { ParamStore } = await import('../../lib/nn/params');
  const { Linear, Conv2d } = await import('../../lib/nn/layers');
  const p = new ParamStore('t');
  const lin = new Linear(p, 'lin', 8, 6), conv = new Conv2d(p, 'conv', 4, 6, 3, 1, 1);
  p.set('lin.weight', t(randn(48, 1), [6, 8]));
  p.set('lin.bias', t(randn(6, 2), [6]));
  p.set('conv.weight', t(randn(6 * 9 * 4, 3, 0.3), [6, 3, 3, 4]));
  p.set('conv.bias', t(randn(6, 4), [6]));
  const cases: [string, hs.Tensor, number[], (x: hs.Tensor, acc: hs.Tensor) => hs.Tensor, (x: hs.Tensor) => hs.Tensor][] = [
    ['linear', t(randn(3 * 8, 5), [3, 8]), [3, 6], (x, a) => lin.forwardAccumulate(x, a), (x) => lin.forward(x)],
    ['conv', t(randn(2 * 5 * 5 * 4, 6), [2, 5, 5, 4]), [2, 5, 5, 6], (x, a) => conv.forwardAccumulate(x, a), (x) => conv.forward(x)],
  ];
  for (const [name, x, shape, acc, plain] of cases) {
    const n = shape.reduce((q, r) => q * r, 1);
    const r0 = randn(n, 7);
    const want = hs.ops.add(plain(x), t(r0, shape));
    const wantV = await want.floats();
    // Inference (and a top-level noGrad): the result is acc itself, holding the sum.
    for (const wrap of [(f: () => hs.Tensor) => f(), (f: () => hs.Tensor) => noGrad(f)]) {
      const a = t(r0, shape);
      const y = wrap(() => acc(x, a));
      assert.ok(y === a, `${name}: in place`);
      assert.ok(relErr(await y.floats(), wantV) < 1e-5, `${name}: sum`);
    }
    // Under a tape, and inside a checkpoint: acc is not written, and gradients reach acc and x.
    for (const viaCheckpoint of [false, true]) {
      const a = markTrainable(t(r0, shape)), xx = markTrainable(t(await x.floats(), x.shape));
      const r = grad(() => hs.ops.mean(viaCheckpoint ? checkpoint((q, s) => acc(q, s), [xx, a]) : acc(xx, a)), [a, xx]);
      assert.equal(Array.from(await a.floats()), Array.from(Float32Array.from(r0)), `${name}: acc untouched (checkpoint ${viaCheckpoint})`);
      assert.ok(relErr(await r.grads.get(a)!.floats(), new Array(n).fill(1 / n)) < 1e-6, `${name}: d acc`);
      assert.ok(r.grads.has(xx), `${name}: d x`);
      assert.ok(Math.abs((await r.loss.floats())[0] - wantV.reduce((q, v) => q + v, 0) / n) < 1e-4, `${name}: loss`);
    }
  }
  p.dispose();
});

test.run();
