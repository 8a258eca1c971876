/**
 * bench/gn_stats: what handing a group norm its input's channel statistics from the convolution that wrote it
 * costs and saves on the CPU, at the SD1.5 VAE decoder's and UNet's sizes (f32 activations, bf16 weights, batch
 * 1, 3x3 convolutions with their auto algorithm): the convolution with and without its stats output, the group
 * norm + SiLU with and without them, each a median of 5 samples of back-to-back calls, alternated in one process
 * (`--rounds`), with a glibc-like measured copy of the activation's bytes (ops.affine: one read, one write) beside
 * them as the ceiling of a one-pass norm.
 *   HYPERSD_ADDON=build/Release/hypersd.node npx tsx bench/gn_stats.ts [--rounds 2] [--only 512] [--device cuda]
 * On CUDA (bf16 activations and weights) the convolution's statistics come from the tensor-core kernel's
 * epilogue, and the copy is the `copy` op.
 */
import * as hs from '../lib';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1] : d; };
const rounds = Number(opt('rounds', '2'));
const only = opt('only', '');
const device = opt('device', 'cpu') as hs.DeviceName;
const dtype: hs.DType = device === 'cpu' ? 'f32' : 'bf16';

async function ms(f: () => hs.Tensor, n: number): Promise<number> {
  for (let i = 0; i < 2; i++) f().dispose();
  await hs.sync(device);
  const ts: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) f().dispose();
    await hs.sync(device);
    ts.push((performance.now() - t0) / n);
  }
  ts.sort((a, b) => a - b);
  return ts[2];
}

async function main(): Promise<void> {
  console.log(`hypersd bench/gn_stats  ${new Date().toISOString()}  device=${device} (${dtype})  threads=${hs.threads()}`);
  console.log('| activation | conv | conv + stats | norm + SiLU | norm + SiLU given stats | copy (CPU: affine; CUDA: the copy op) | saved a norm |');
  console.log('|---|---|---|---|---|---|---|');
  for (const [H, C, n] of [[512, 128, 3], [256, 256, 5], [128, 512, 10], [64, 320, 20], [32, 640, 30]] as const) {
    if (only && !`${H}`.includes(only)) continue;
    const o = { device, dtype };
    const x = hs.ops.randn([1, H, H, C], { seed: 1, ...o }), w = hs.ops.randn([C, 3, 3, C], { seed: 2, device, dtype: 'bf16' });
    const b = hs.ops.randn([C], { seed: 3, ...o }), g = hs.ops.randn([C], { seed: 4, ...o }), bb = hs.ops.randn([C], { seed: 5, ...o });
    const st = hs.empty([1, C, 3], { device });
    const cp = hs.empty([1, H * H, C], o);
    const y = hs.ops.conv2d(x, w, b, { pad: 1, stats: st }).reshape([1, H * H, C]);
    for (let r = 0; r < rounds; r++) {
      const conv = await ms(() => hs.ops.conv2d(x, w, b, { pad: 1 }), n);
      const convSt = await ms(() => hs.ops.conv2d(x, w, b, { pad: 1, stats: st }), n);
      const gn = await ms(() => hs.ops.groupNorm(y, g, bb, { groups: 32, silu: true }), 3 * n);
      const gnSt = await ms(() => hs.ops.groupNorm(y, g, bb, { groups: 32, silu: true, stats: st }), 3 * n);
      const copy = device === 'cpu' ? await ms(() => hs.ops.affine(y, 1, 0), 3 * n)
        : await ms(() => { hs.runOp('copy', [y], [cp]); return hs.empty([0], { device }); }, 3 * n);
      console.log(`| ${H}x${H}x${C} (${((dtype === 'f32' ? 4 : 2) * H * H * C / 2 ** 20).toFixed(0)} MiB) | ${conv.toFixed(2)} ms | ${convSt.toFixed(2)} ms | ` +
        `${gn.toFixed(3)} ms | ${gnSt.toFixed(3)} ms (${(100 * copy / gnSt).toFixed(0)}% of copy speed; before: ${(100 * copy / gn).toFixed(0)}%) | ` +
        `${copy.toFixed(3)} ms | ${(gn - gnSt - (convSt - conv)).toFixed(3)} ms |`);
    }
    for (const t of [x, w, b, g, bb, st, y, cp]) t.dispose();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
