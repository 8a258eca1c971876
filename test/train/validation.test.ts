// Training checkpoints whose metadata was damaged (the SHA-256 covers only the tensor bytes) are refused on load
// with an Error naming the file and the field, and change nothing; saves that fail name the destination file.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as hs from '../../lib';
import { Trainer } from '../../lib/train/trainer';
import { writeJsonAtomic } from '../../lib/train/export';
import { SafeTensors, saveSafetensors, type StTensorIn } from '../../lib/io/safetensors';
import { escapeRe, rejects } from '../helpers/check';

hs.setPoison(false);



function mk() {
  const p = hs.tensor([1, 2], [2]);
  const tr = new Trainer({ trainables: new Map([['p', p]]), schedule: 'constant', lr: 0.1, ema: { decay: 0.9, warmup: true }, seed: 4 });
  return { p, tr };
}

/** Copies a checkpoint with its state metadata edited (tensors and their digest unchanged). */
function rewrite(src: string, dst: string, edit: (meta: Record<string, any>) => void): void {
  const st = SafeTensors.open(src);
  const meta = JSON.parse(st.metadata.hypersd_train_state);
  const t: Record<string, StTensorIn> = {};
  for (const k of st.keys()) {
    const i = st.info(k);
    t[k] = { dtype: 'F32', shape: i.shape, data: st.readF32(k) };
  }
  st.close();
  edit(meta);
  saveSafetensors(dst, t, { format: 'hypersd_train_state', hypersd_train_state: JSON.stringify(meta) });
}

test('checkpoint metadata: step, ema.updates, rng, extra and extra.noiseOffset are checked on load, naming file and field', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-ckpt-'));
  const a = mk(), b = mk();
  try {
    await a.tr.trainStep(() => hs.ops.mean(hs.ops.mul(a.p, a.p)));
    a.tr.randn([2]).dispose();
    const good = path.join(dir, 'good.safetensors');
    await a.tr.save(good, { epoch: 1 });
    const pBefore = Array.from(await b.p.floats());
    // (each of these had loaded: NaN EMA weights after the next step, a failing kernel, a later error naming no
    // file, or a resume that no longer draws what the unbroken run would)
    const cases: [string, (m: Record<string, any>) => void, RegExp][] = [
      ['step 1e300', (m) => { m.step = 1e300; }, /field step must be an integer from 0 to 2\^53 - 1, got 1e\+300/],
      ['step "3"', (m) => { m.step = '3'; }, /field step must be an integer/],
      ['ema.updates "x"', (m) => { m.ema.updates = 'x'; }, /field ema.updates must be an integer >= 0, got "x"/],
      ['ema.updates -20', (m) => { m.ema.updates = -20; }, /field ema.updates must be an integer >= 0, got -20/],
      ['rng null', (m) => { m.rng = null; }, /field rng is null but this run has an RNG state/],
      ['rng [1, 2]', (m) => { m.rng = [1, 2]; }, /field rng must be four u32 words/],
      ['extra 5', (m) => { m.extra = 5; }, /field extra must be an object, got 5/],
      ['noiseOffset "abc"', (m) => { m.extra.noiseOffset = 'abc'; }, /field extra.noiseOffset .* must be an integer >= 0, got "abc"/],
      ['noiseOffset -5', (m) => { m.extra.noiseOffset = -5; }, /field extra.noiseOffset .* must be an integer >= 0, got -5/],
      ['noiseOffset missing', (m) => { delete m.extra.noiseOffset; }, /field extra.noiseOffset .* got none/],
    ];
    for (const [what, edit, re] of cases) {
      const f = path.join(dir, `${what.replace(/\W/g, '_')}.safetensors`);
      rewrite(good, f, edit);
      await rejects(() => b.tr.load(f), new RegExp(`^${escapeRe(f)}: corrupt checkpoint: ${re.source}`), what);
    }
    assert.is(b.tr.step, 0, 'no failed load changed the step');
    assert.is(b.tr.noiseOffset, 0);
    assert.is(b.tr.ema!.updates, 0);
    assert.equal(Array.from(await b.p.floats()), pBefore, 'nor the weights');
    // the untouched file still loads
    assert.equal(await b.tr.load(good), { epoch: 1 });
    assert.is(b.tr.step, 1);
    assert.is(b.tr.noiseOffset, 1);
    assert.is(b.tr.ema!.updates, 1);
  } finally {
    a.tr.dispose();
    b.tr.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('failed saves name the destination file (not only the temporary one) and leave nothing behind', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-save-'));
  const { tr } = mk();
  try {
    const missing = path.join(dir, 'no', 'such', 'state.safetensors');
    await rejects(() => tr.save(missing), new RegExp(`^${escapeRe(missing)}: cannot save the checkpoint: folder .* does not exist`), 'missing folder');
    const file = path.join(dir, 'state.safetensors');
    await rejects(() => tr.save(file, { big: 1n } as never), new RegExp(`^${escapeRe(file)}: checkpoint extra data is not JSON`), 'BigInt extra');
    await rejects(() => tr.save(file, [1, 2] as never), new RegExp(`^${escapeRe(file)}: .*extra must be an object`), 'array extra');
    const json = path.join(dir, 'nope', 'config.json');
    assert.throws(() => writeJsonAtomic(json, { a: 1 }), new RegExp(`^${escapeRe(json)}: writing failed`));
    assert.equal(fs.readdirSync(dir), [], 'nothing written');
  } finally {
    tr.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
