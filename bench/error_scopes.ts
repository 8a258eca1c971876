/**
 * bench/error_scopes: a stress check of kernel-error attribution within one JS thread. Rounds of four generates on
 * the tiny SD1.5 pipeline (some failing an op of their own in onProgress), the caller's own ops beside them (some
 * failing) with syncs at random moments, and an hs.errorScope of the caller's: every failure must reach exactly the
 * job that queued it (told apart by the embedding id in its message), and every clean generate must give its seed's
 * latents.
 *   npx tsx bench/error_scopes.ts [rounds (40)] [--tokenizer dir]   (needs the CLIP vocabulary: ../shared/fixtures)
 */
import * as path from 'path';
import * as hs from '../lib';
import { loadPipeline } from '../lib/pipelines/sd';
const FIX = path.join(__dirname, '../test/fixtures');
const ti = process.argv.indexOf('--tokenizer');
const TOK = ti > 0 ? process.argv[ti + 1] : path.join(__dirname, '../../shared/fixtures/tokenizer');
const ROUNDS = Number(process.argv[2]) > 0 ? Number(process.argv[2]) : 40;
const table = hs.zeros([2, 4]);
// an op that fails on the stream, naming id in its message (its tensors are freed at once: the stream keeps them)
const failWith = (id: number) => { const ids = hs.tensor([id], [1], { dtype: 'i32' }); hs.ops.embedding(ids, table).dispose(); ids.dispose(); };
const idOf = (m: string) => { const r = /id (\d+) /.exec(m); return r ? Number(r[1]) : -1; };
(async () => {
  const p = await loadPipeline(path.join(FIX, 'tiny-sd15', 'diffusers'), { tokenizer: TOK });
  const base = { prompt: 'x', steps: 2, width: 64, height: 64, output: 'latent' as const };
  const ref = new Map<number, number[]>();
  for (let seed = 0; seed < 4; seed++) ref.set(seed, Array.from((await p.generate({ ...base, seed })).latents));
  let bad = 0, checked = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const jobs: Promise<void>[] = [];
    for (let j = 0; j < 4; j++) {
      const seed = j, myId = 1000 + round * 10 + j, failIt = (round + j) % 3 === 0;
      jobs.push(p.generate({ ...base, seed, onProgress: async (pr) => {
        if (failIt && pr.step === 1) failWith(myId);
        await new Promise((r) => setTimeout(r, Math.random() * 3));
      } }).then((r) => {
        checked++;
        if (failIt) { bad++; console.log('FAIL: generate should have failed', myId); }
        else if (Array.from(r.latents).some((v, i) => v !== ref.get(seed)![i])) { bad++; console.log('FAIL: wrong latents', seed); }
      }, (e) => {
        checked++;
        const id = idOf((e as Error).message);
        if (!failIt || id !== myId) { bad++; console.log('FAIL: generate', myId, 'got', (e as Error).message.slice(0, 120)); }
      }));
    }
    // the caller's own work beside them
    jobs.push((async () => {
      for (let k = 0; k < 5; k++) {
        const myId = 5000 + round * 10 + k;
        const fails = k % 2 === 0;
        if (fails) failWith(myId);
        await new Promise((r) => setTimeout(r, Math.random() * 4));
        try { await hs.sync('cpu'); checked++; if (fails) { bad++; console.log('FAIL: caller sync clean but should fail', myId); } }
        catch (e) { checked++; const id = idOf((e as Error).message); if (!fails || id !== myId) { bad++; console.log('FAIL: caller got', (e as Error).message.slice(0, 100), 'expected', fails ? myId : 'none'); } }
      }
    })());
    // another scope of the caller's
    jobs.push(hs.errorScope(async () => {
      const myId = 9000 + round;
      failWith(myId);
      await new Promise((r) => setTimeout(r, Math.random() * 4));
      try { await hs.sync('cpu'); bad++; console.log('FAIL: scope clean'); } catch (e) { checked++; if (idOf((e as Error).message) !== myId) { bad++; console.log('FAIL: scope got', (e as Error).message.slice(0, 100)); } }
    }));
    await Promise.all(jobs);
  }
  await hs.sync('cpu');
  console.log(`error scopes: ${ROUNDS} rounds, ${checked} outcomes checked, ${bad} wrong`);
  p.dispose();
  table.dispose();
  if (bad) process.exitCode = 1;
})();
