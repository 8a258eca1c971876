// Checks TorchCpuGenerator against tensors PyTorch 1.13's CPU generator produced (test/fixtures/rng): randn on
// both normal paths (< 16 and >= 16 elements, tails that are not a multiple of 16), rand, state carried across
// calls, and the noise stream diffusers drew in the scheduler fixtures. Every value must match bit for bit.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TorchCpuGenerator, TORCH_CPU_STATE_BYTES } from '../../lib/random/torch_cpu';
import { readSafetensors } from '../helpers/safetensors_min';

const dir = join(__dirname, '..', 'fixtures', 'rng');
const st = readSafetensors(join(dir, 'torch_cpu_rng.safetensors'));
const cases = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8')).cases as
  { name: string; seed: number; shape: number[]; fn: string }[];

function assertBitEqual(got: Float32Array, ref: Float32Array, what: string): void {
  assert.is(got.length, ref.length, `${what}: length`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const r = new Uint32Array(ref.buffer, ref.byteOffset, ref.length);
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== r[i]) assert.unreachable(`${what}: element ${i} is ${got[i]}, torch gave ${ref[i]}`);
  }
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

test('fixture lists 24 cases and each is checked', () => {
  assert.is(cases.length, 24);
});

for (const c of cases) {
  const n = numel(c.shape);
  if (c.name.includes('two_draws')) {
    test(`${c.name} (state carries over)`, () => {
      const g = new TorchCpuGenerator(c.seed);
      const tag = `randn_seed${c.seed}_two_draws`;
      assertBitEqual(g.randn(n), st.f32(`${tag}_first_1x4x8x8`), `${tag} first`);
      assertBitEqual(g.randn(n), st.f32(`${tag}_second_1x4x8x8`), `${tag} second`);
    });
  } else {
    test(c.name, () => {
      const g = new TorchCpuGenerator(c.seed);
      const got = c.fn === 'randn' ? g.randn(n) : g.rand(n);
      assertBitEqual(got, st.f32(c.name), c.name);
    });
  }
}

test('scheduler fixture noise: diffusers randn_tensor draws from manual_seed(1234), in order', () => {
  const sst = readSafetensors(join(__dirname, '..', 'fixtures', 'schedulers', 'schedulers.safetensors'));
  const index = JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', 'schedulers', 'index.json'), 'utf8'));
  let checked = 0;
  for (const run of index.runs as { id: string; steps: { i: number; noise_draws: number }[] }[]) {
    const g = new TorchCpuGenerator(index.noise_seed);
    for (const s of run.steps) {
      for (let j = 0; j < s.noise_draws; j++) {
        const ref = sst.f32(`${run.id}.step${s.i}.noise${j}`);
        assertBitEqual(g.randn(ref.length), ref, `${run.id}.step${s.i}.noise${j}`);
        checked++;
      }
    }
  }
  assert.ok(checked > 0);
});

test('scalar path caches the second normal across calls; the vector path leaves it alone', () => {
  const a = new TorchCpuGenerator(7);
  const first = a.randn(3); // 2 pairs drawn, one sine cached
  const big = a.randn(16); // vector path: cache untouched
  const next = a.randn(1); // returns the cached value, draws nothing
  const b = new TorchCpuGenerator(7);
  const four = b.randn(4);
  assertBitEqual(first, four.subarray(0, 3), 'first three');
  assertBitEqual(next, four.subarray(3, 4), 'cached fourth');
  const c = new TorchCpuGenerator(7);
  c.randn(4);
  assertBitEqual(big, c.randn(16), 'vector draw after the scalar draws');
});

test('getState/setState round-trip (torch layout, 5056 bytes) including the cached normal', () => {
  const g = new TorchCpuGenerator(42);
  g.randn(5);
  g.rand(700); // crosses an MT19937 regeneration
  const state = g.getState();
  assert.is(state.byteLength, TORCH_CPU_STATE_BYTES);
  const expected = [g.randn(1), g.randn(33), g.rand(5)];
  const h = new TorchCpuGenerator(0);
  h.setState(state);
  assertBitEqual(h.randn(1), expected[0], 'cached normal');
  assertBitEqual(h.randn(33), expected[1], 'randn after restore');
  assertBitEqual(h.rand(5), expected[2], 'rand after restore');
  assert.is(h.initialSeed(), 42n);
});

test('manualSeed resets caches; seeds use the low 32 bits like torch', () => {
  const g = new TorchCpuGenerator(5);
  g.randn(1);
  g.manualSeed(5);
  assertBitEqual(g.randn(2), new TorchCpuGenerator(5).randn(2), 'reseeded');
  assertBitEqual(new TorchCpuGenerator(2n ** 32n + 5n).rand(8), new TorchCpuGenerator(5).rand(8), 'low 32 bits');
  assert.throws(() => new TorchCpuGenerator(1.5), /integer/);
});

test.run();
