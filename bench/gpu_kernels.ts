/**
 * bench/gpu_kernels: runs a few SD-shaped ops REPS times each (f16, CUDA) so that Nsight Compute can report each
 * kernel's own duration, free of the host's per-op cost that bench/ops_gpu.ts's back-to-back timings include
 * for small ops. bench/gpu-check.sh runs it as
 *
 *   ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
 *       node node_modules/tsx/dist/cli.mjs bench/gpu_kernels.ts
 *
 * Each line it prints names the op and the path (environment switches read per call) before its kernels run.
 */
import * as hs from '../lib';

const DEV = (process.env.HYPERSD_KERNELS_DEVICE ?? 'cuda') as 'cuda' | 'cpu';  // cpu: a smoke run of the script itself
const REPS = Number(process.env.REPS ?? 3);
let seed = 1;
const randn = (shape: number[], scale = 1): hs.Tensor => {
  const t = hs.ops.randn(shape, { seed: seed++, dtype: 'f16', device: DEV });
  if (scale === 1) return t;
  const s = hs.ops.affine(t, scale, 0);
  t.dispose();
  return s;
};

async function run(what: string, fn: () => hs.Tensor, env: Record<string, string> = {}): Promise<void> {
  Object.assign(process.env, env);
  await hs.sync(DEV);
  console.log(`-- ${what}${Object.keys(env).length ? ' ' + JSON.stringify(env) : ''}`);
  for (let i = 0; i < REPS; i++) fn().dispose();
  await hs.sync(DEV);
  for (const k of Object.keys(env)) delete process.env[k];
}

async function main(): Promise<void> {
  const st = hs.cudaStatus();
  if (DEV === 'cuda' && !st.available) throw new Error(`no usable CUDA device: ${st.reason}`);
  const a8 = randn([8]), b8 = randn([8]);
  await run('add 8 elements', () => hs.ops.add(a8, b8));
  const GN_ONLY = process.env.GN_ONLY === '1';  // just the group-norm shapes and their variants
  for (const [N, S, C, what] of [[2, 4096, 320, 'SD1.5 64x64'], [2, 1024, 1280, 'SDXL 32x32'], [1, 16384, 512, 'VAE 128x128'],
    [1, 65536, 256, 'VAE 256x256'], [1, 262144, 128, 'VAE 512x512'], [1, 1048576, 128, 'SDXL VAE 1024x1024']] as [number, number, number, string][]) {
    const x = randn([N, S, C]), g = randn([C]), b = randn([C]);
    const gn = () => hs.ops.groupNorm(x, g, b, { groups: 32, silu: true });
    await run(`group_norm+silu ${what} [${N}, ${S}, ${C}]`, gn);
    // the same tensor through SiLU: an elementwise read + write of the same bytes, the size's own "copy" kernel
    await run(`silu (copy-like) ${what} [${N}, ${S}, ${C}]`, () => hs.ops.silu(x));
    // the variants (environment switches read per call): the statistics grid in blocks a multiprocessor (by
    // default ~128 KB of x a block, 1-2 a multiprocessor), the apply grid, the partials summed by the statistics
    // kernel's last block instead of every apply block
    for (const env of [{ HYPERSD_GN_BPS: '1' }, { HYPERSD_GN_BPS: '2' }, { HYPERSD_GN_APPLY_BPS: '2' },
      { HYPERSD_GN_REDUCE_IN_STATS: '1' }])
      await run(`group_norm+silu ${what} [${N}, ${S}, ${C}]`, gn, env);
    for (const t of [x, g, b]) t.dispose();
  }
  if (GN_ONLY) return;
  {
    const x = randn([8192, 640]), g = randn([640]), b = randn([640]);
    await run('layer_norm [8192, 640]', () => hs.ops.layerNorm(x, g, b));
    for (const t of [x, g, b]) t.dispose();
  }
  {
    const m = randn([8192, 320]), bias = randn([320]);
    await run('add bias [8192, 320] + [320]', () => hs.ops.add(m, bias));
    const img = randn([2, 64, 64, 320]), img2 = randn([2, 64, 64, 320]);
    await run('concat channels 2 x [2, 64, 64, 320]', () => hs.ops.concat([img, img2], 3));
    const w = randn([320, 320], 0.05), w2 = randn([2560, 320], 0.05);
    await run('matmul 8192x320x320', () => hs.ops.matmul(m, w, { transB: true }));
    await run('linear_geglu 8192x320 -> 1280', () => hs.ops.linearGeglu(m, w2));
    const cw = randn([320, 3, 3, 320], 0.05);
    await run('conv2d 320->320 64x64 N=2', () => hs.ops.conv2d(img, cw, null, { pad: 1 }));
    for (const t of [m, bias, img, img2, w, w2, cw]) t.dispose();
  }
  {
    const x = randn([8192, 1280]), w = randn([1280, 1280], 0.05), down = randn([64, 1280], 0.05), up = randn([1280, 64], 0.05);
    await run('matmul 8192x1280x1280', () => hs.ops.matmul(x, w, { transB: true }));
    await run('lora_linear 8192x1280x1280 rank 64', () => hs.ops.loraLinear(x, w, null, down, up, 0.5));
    for (const t of [x, w, down, up]) t.dispose();
  }
  // (the d = 64 self-attention last: gpu-check's ncu-attn stage profiles its second launch)
  for (const [Lk, D, H] of [[77, 40, 8], [4096, 40, 8], [77, 64, 10], [4096, 64, 10]]) {
    const q = randn([2, 4096, H * D]), k = randn([2, Lk, H * D]), v = randn([2, Lk, H * D]);
    await run(`attention B=2 Lq=4096 Lk=${Lk} H=${H} d=${D}`, () => hs.ops.attention(q, k, v, { heads: H }));
    for (const t of [q, k, v]) t.dispose();
  }
  await hs.sync(DEV);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
