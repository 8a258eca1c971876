/**
 * bench/op_floor: the per-op time of back-to-back 8-element adds (JS, the stream's queue, the worker's host
 * code, the launch): the floor under every small op of a network. Median of 5 runs of 20000 ops.
 *
 *   npx tsx bench/op_floor.ts [cpu|cuda] [f16|f32] [scope]
 * With `scope` the ops run inside hs.errorScope (as a pipeline's do): each enqueue then reads the scope.
 */
import * as hs from '../lib';

async function main(): Promise<void> {
  const device = (process.argv[2] ?? 'cuda') as 'cpu' | 'cuda';
  const dtype = (process.argv[3] ?? 'f16') as 'f16' | 'f32';
  const a = hs.ops.randn([8], { seed: 1, dtype, device }), b = hs.ops.randn([8], { seed: 2, dtype, device });
  const n = 20000, ts: number[] = [];
  const scoped = process.argv[4] === 'scope';
  const run = scoped ? hs.errorScope : (f: () => Promise<void>) => f();
  await run(async () => { for (let r = 0; r < 6; r++) {
    await hs.sync(device);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) hs.ops.add(a, b).dispose();
    await hs.sync(device);
    if (r > 0) ts.push(((performance.now() - t0) * 1e3) / n);
  } });
  ts.sort((x, y) => x - y);
  console.log(`op floor on ${device}${scoped ? ' in an error scope' : ''}: ` +
    `${ts[2].toFixed(2)} us an op (median of 5 x ${n}; min ${ts[0].toFixed(2)}, max ${ts[4].toFixed(2)})`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
