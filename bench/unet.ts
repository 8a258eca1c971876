/**
 * bench/unet: full-size UNets with random weights, batch 1: seconds per forward (median), achieved GFLOP/s
 * (FLOPs counted per op), peak RSS; f32 and bf16 weight storage; plus the SD1.5 VAE decoder at 512x512.
 *   npx tsx bench/unet.ts [--only sd15|sdxl|vae] [--reps 3] [--dtype f32|bf16|f16] [--xl-128] [--vae-1024] [--device cpu|cuda]
 *   [--profile | --profile-shapes] (with HYPERSD_SYNC=1: time per op name and dtype [and shapes])
 */
import { installFlopCounter, counter } from './flops';
import { setOpHook } from '../lib/ops/runtime';
installFlopCounter();
import * as hs from '../lib';
import { builtinConfigs } from '../lib/models/configs';
import { UNet2DConditionModel, type UNetConfig } from '../lib/models/unet';
import { AutoencoderKL, type VAEConfig } from '../lib/models/vae';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1] : d; };
const only = opt('only', 'all');
const reps = Number(opt('reps', '3'));
const dtypes = opt('dtype', 'f32,bf16').split(',') as hs.DType[];
const device = hs.resolveDevice(opt('device', 'cpu') as hs.DeviceName);

// --profile (with HYPERSD_SYNC=1, so that each op runs to completion inside its call): the op hook runs after
// each op, so the time since the previous hook call is charged to the op just reported (its run plus the JS
// before it), keyed by name and output dtype; printed after the runs.
const prof = new Map<string, { ms: number; n: number }>();
if (args.includes('--profile') || args.includes('--profile-shapes')) {
  if (process.env.HYPERSD_SYNC !== '1') console.log('(--profile without HYPERSD_SYNC=1 measures enqueue times only)');
  let lastT = 0;
  const prev = setOpHook((op, ins, outs, attrs) => {
    prev?.(op, ins, outs, attrs);
    const now = performance.now();
    if (lastT) {
      let key = `${op} ${outs[0]?.dtype ?? ''}`;
      if (args.includes('--profile-shapes')) key += ` ${ins.map((t) => `[${t.shape}]`).join(' ')} ${JSON.stringify(attrs)}`;
      const e = prof.get(key) ?? { ms: 0, n: 0 };
      e.ms += now - lastT;
      e.n++;
      prof.set(key, e);
    }
    lastT = now;
  });
}
function printProfile(label: string): void {
  if (!prof.size) return;
  const rows = [...prof.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((a, [, v]) => a + v.ms, 0);
  console.log(`  profile of ${label} (all runs): ${total.toFixed(0)} ms over ${rows.reduce((a, [, v]) => a + v.n, 0)} ops`);
  for (const [k, v] of rows.slice(0, args.includes('--profile-shapes') ? 40 : 14))
    console.log(`    ${k.padEnd(28)} ${v.ms.toFixed(1).padStart(9)} ms ${(100 * v.ms / total).toFixed(1).padStart(5)}%  ${String(v.n).padStart(6)} calls`);
  prof.clear();
}

async function timeIt(label: string, f: () => hs.Tensor): Promise<void> {
  counter.flops = 0;
  await f().data(); // warm-up (and FLOP count)
  const flops = counter.flops;
  const ts: number[] = [];
  const ru0 = process.resourceUsage();
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    const out = f();
    await out.data();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
    out.dispose();
  }
  ts.sort((a, b) => a - b);
  const med = ts[Math.floor(ts.length / 2)];
  const ru = process.resourceUsage();
  const rss = ru.maxRSS / 1024, faults = (ru.minorPageFault - ru0.minorPageFault) / reps;
  const sys = (ru.systemCPUTime - ru0.systemCPUTime) / 1e6 / reps;
  printProfile(label);
  console.log(`${label.padEnd(44)} ${med.toFixed(2).padStart(7)} s  ${(flops / 1e9).toFixed(0).padStart(6)} GFLOP  ${(flops / med / 1e9).toFixed(1).padStart(6)} GFLOP/s  peak RSS ${rss.toFixed(0)} MiB  ${(faults / 1000).toFixed(0)}k page faults, ${sys.toFixed(2)} s system time a run`);
}

(async () => {
  console.log(`hypersd bench/unet  ${new Date().toISOString()}  threads=${hs.threads()}  device=${device}`);
  for (const dtype of dtypes) {
    if (only === 'all' || only === 'sd15') {
      const u = new UNet2DConditionModel(builtinConfigs('sd15').unet as UNetConfig);
      u.params.initRandom(1, { dtype, device });
      const x = hs.ops.randn([1, 4, 64, 64], { seed: 2, device }), c = hs.ops.randn([1, 77, 768], { seed: 3, device });
      await timeIt(`SD1.5 UNet 64x64 latent, ${dtype} weights`, () => u.forward({ sample: x, timesteps: 999, encoderHiddenStates: c }));
      u.dispose();
    }
    if (only === 'all' || only === 'sdxl') {
      const u = new UNet2DConditionModel(builtinConfigs('sdxl').unet as UNetConfig);
      u.params.initRandom(1, { dtype, device });
      const c = hs.ops.randn([1, 77, 2048], { seed: 3, device }), te = hs.ops.randn([1, 1280], { seed: 4, device });
      const ids = hs.tensor([1024, 1024, 0, 0, 1024, 1024], [1, 6], { device });
      for (const s of args.includes('--xl-128') ? [64, 128] : [64]) {
        const x = hs.ops.randn([1, 4, s, s], { seed: 2, device });
        await timeIt(`SDXL UNet ${s}x${s} latent, ${dtype} weights`, () => u.forward({ sample: x, timesteps: 999, encoderHiddenStates: c, textEmbeds: te, timeIds: ids }));
      }
      u.dispose();
    }
    if (only === 'all' || only === 'vae') {
      const v = new AutoencoderKL(builtinConfigs('sd15').vae as VAEConfig);
      v.params.initRandom(1, { dtype, device });
      for (const s of args.includes('--vae-1024') ? [64, 128] : [64]) {
        const z = hs.ops.randn([1, 4, s, s], { seed: 2, device });
        await timeIt(`SD1.5 VAE decode ${8 * s}x${8 * s}, ${dtype} weights`, () => v.decode(z));
      }
      v.dispose();
    }
  }
})();
