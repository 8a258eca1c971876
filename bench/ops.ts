/**
 * bench/ops: achieved GFLOP/s (or GB/s) of the CPU ops on UNet/VAE-shaped problems, beside the machine's
 * ceilings measured in the same run: the FMA peak of a register-only loop (512-bit FMAs when the CPU has
 * AVX-512F, as the GEMM engine's micro-kernels then use them) and the memcpy bandwidth
 * (bench/native/peak.cpp), and OpenBLAS sgemm on the same shapes when libopenblas is installed
 * (bench/native/blas.cpp; a yardstick only, never linked into hypersd).
 *
 *   HYPERSD_ADDON=build/Release/hypersd.node npx tsx bench/ops.ts [--only gemm,conv,attn,norm] [--quick] [--write]
 *
 * The machine this was written on is shared with other jobs, so a ceiling measured a minute away from a run
 * says little about it. Each run of ours is therefore paired with a ceiling measured right before it (and an
 * OpenBLAS run right after it, for GEMM shapes); "% of peak" and "x OpenBLAS" are medians of those per-pair
 * ratios, the GFLOP/s columns medians of the runs. --write replaces the "CPU ops" section of bench/RESULTS.md
 * with this run's table, date, machine and command.
 * GEMMs are linear layers: x [M, K] times a weight [N, K] (transB). Convolutions are 3x3, stride 1, pad 1 on
 * NHWC, counted in direct-convolution FLOPs (2 H W Cout 9 Cin); "x our GEMM" divides by our own GEMM on the
 * implicit-GEMM shape M = H W, K = 9 Cin, N = Cout, run in the same pairs.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as readline from 'readline';
import * as hs from '../lib';

const args = process.argv.slice(2);
const onlyArg = args.find((a) => a.startsWith('--only='))?.slice(7) ?? (args.includes('--only') ? args[args.indexOf('--only') + 1] : '');
const only = onlyArg.split(',').filter(Boolean);
const want = (what: string) => only.length === 0 || only.includes(what);
const quick = args.includes('--quick');
const threads = hs.threads();
const loadBefore = os.loadavg().map((l) => l.toFixed(1)).join(' ');
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

// ---------- helper processes: ceilings and the OpenBLAS yardstick, one answer per request line ----------
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-bench-'));
function build(src: string, flags: string[], libs: string[] = []): string | null {
  const bin = path.join(tmp, path.basename(src, '.cpp'));
  try {
    execFileSync('g++', ['-O2', ...flags, path.join(__dirname, 'native', src), '-o', bin, ...libs], { stdio: 'pipe' });
    return bin;
  } catch {
    return null;
  }
}
class Helper {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly waiting: ((line: string) => void)[] = [];
  constructor(bin: string, argv: string[], env: NodeJS.ProcessEnv = process.env) {
    this.proc = spawn(bin, argv, { env });
    readline.createInterface({ input: this.proc.stdout }).on('line', (l) => this.waiting.shift()?.(l));
  }
  ask(line: string): Promise<number> {
    return new Promise((resolve) => {
      this.waiting.push((l) => resolve(Number(l)));
      this.proc.stdin.write(line + '\n');
    });
  }
  close(): void {
    this.proc.stdin.end();
  }
}
const peakBin = build('peak.cpp', ['-mavx2', '-mfma', '-pthread']);
const peak = peakBin ? new Helper(peakBin, [String(threads)]) : null;
const blasBin = build('blas.cpp', [], ['-lopenblas']);
// OpenBLAS's pthread workers spin for 2^28 TSC cycles (about 0.1 s) after each call by default: that spin
// overlapped the FMA-loop ceiling and our own next sample on this 2-core machine (the FMA loop ranged 113-197
// GFLOP/s within one run, short GEMM samples read 2x low). OPENBLAS_THREAD_TIMEOUT is the log2 of that spin:
// 17 (about 44 us at 3 GHz) is what our own pool spins before it sleeps, so back-to-back calls stay warm in both.
const blas = blasBin
  ? new Helper(blasBin, [], { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OPENBLAS_THREAD_TIMEOUT: '17' })
  : null;
const peaks: number[] = [], copies: number[] = [];
async function fmaPeak(): Promise<number> {
  const g = peak ? await peak.ask('fma 100') : NaN;
  peaks.push(g);
  return g;
}
async function copyRate(): Promise<number> {
  const g = peak ? await peak.ask('copy') : NaN;
  copies.push(g);
  return g;
}
/** memcpy of an n-byte buffer (cache-resident when small), the ceiling of ops on tensors of that size. */
async function copyRateOf(bytes: number): Promise<number> {
  return peak ? await peak.ask(`copy ${bytes}`) : NaN;
}

// ---------- our runs ----------
function filled(n: number, seed: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = ((s >>> 8) / 16777216 - 0.5) * scale;
  }
  return a;
}
/**
 * Seconds per fn(): n calls enqueued back to back (as a network runs them), one sync at the end, so the fixed
 * cost of a sync round trip (~0.1 ms) does not dominate the small shapes; after one untimed call, since the
 * helpers ran in between and this VM's cores run at half speed for the first 10-20 ms of work after a pause
 * (OpenBLAS's helper makes an untimed call before each timed batch too).
 */
async function once(fn: () => hs.Tensor, n = 1, warm = 1): Promise<number> {
  for (let i = 0; i < warm; i++) fn().dispose();
  await hs.sync('cpu');
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn().dispose();
  await hs.sync('cpu');
  return (performance.now() - t0) / 1e3 / n;
}
/**
 * Back-to-back calls per timed sample: about 3 GFLOP of work (15 ms or more). This VM's cores take 10-20 ms of
 * work to come back to full speed after an idle moment (measured 2026-11-26: after a 100 ms pause a 77 x 768 x 320
 * product took 1.6 ms, the next ten about 0.8 ms each, the rest 0.5), so short samples partly timed that ramp:
 * with 1 GFLOP samples the 77-key attention (0.2 GFLOP a call) read 45-47 GFLOP/s, with 4 GFLOP 71 (session 6).
 */
const batchFor = (flops: number) => Math.max(1, Math.round(3e9 / flops));
/** Untimed calls before each timed batch: about 6 GFLOP (13 ms or more), past that ramp (one call of the
 * smallest large GEMM, 4096 x 320 x 320 at 1.8 ms, left it inside: 78-79% of the peak in bench/ops against
 * 85-86% for the same call timed back to back after ten others, session 17). */
const warmFor = (flops: number) => Math.max(1, Math.round(6e9 / flops));
const pairsFor = (flops: number) => (quick ? 3 : Math.max(5, Math.min(21, Math.round(3e10 / flops))));

interface Row { kind: string; shape: string; rate: number; unit: string; pct: number; blas?: number; vsBlas?: number; note?: string }
const rows: Row[] = [];

/** Our GEMM x [M, K] w [N, K]^T over `pairs` runs, each after a ceiling run and before an OpenBLAS run. */
async function gemmPairs(M: number, K: number, N: number, pairs: number) {
  const x = hs.tensor(filled(M * K, 1), [M, K]), w = hs.tensor(filled(N * K, 2, 0.1), [N, K]);
  const flops = 2 * M * K * N;
  await once(() => hs.ops.linear(x, w));
  const ours: number[] = [], pct: number[] = [], ref: number[] = [], vs: number[] = [];
  for (let p = 0; p < pairs; p++) {
    const pk = await fmaPeak();
    const g = flops / (await once(() => hs.ops.linear(x, w), batchFor(flops), warmFor(flops))) / 1e9;
    ours.push(g);
    pct.push(g / pk);
    if (blas) {
      const b = await blas.ask(`${M} ${K} ${N} ${batchFor(flops)} ${warmFor(flops)}`);
      ref.push(b);
      vs.push(g / b);
    }
  }
  x.dispose();
  w.dispose();
  return { rate: median(ours), pct: median(pct), blas: blas ? median(ref) : undefined, vsBlas: blas ? median(vs) : undefined, runs: ours };
}

async function main(): Promise<void> {
  const gemmShapes: [number, number, number][] = [[4096, 320, 320], [4096, 320, 2560], [1024, 1280, 5120], [77, 768, 320], [4096, 1280, 5120]];
  if (want('gemm')) {
    for (const [M, K, N] of gemmShapes) {
      const g = await gemmPairs(M, K, N, pairsFor(2 * M * K * N));
      rows.push({ kind: 'gemm', shape: `M=${M} K=${K} N=${N}`, rate: g.rate, unit: 'GFLOP/s', pct: g.pct, blas: g.blas, vsBlas: g.vsBlas });
    }
  }
  if (want('conv')) {
    // Each algorithm forced ('gemm' implicit GEMM, 'winograd' F(2x2,3x3), 'winograd4' F(4x4,3x3), 'winograd6'
    // F(6x6,3x3), the last on the VAE shapes only); 'auto' is what the networks get (F(6x6) from 256 6x6 tiles,
    // else F(4x4) from 16 4x4 tiles, with the weights transformed per block up to 128 tiles).
    const ALGOS = ['gemm', 'winograd', 'winograd4', 'winograd6'] as const;
    const LABEL = { gemm: 'conv3x3 implicit GEMM', winograd: 'conv3x3 Winograd F(2x2,3x3)', winograd4: 'conv3x3 Winograd F(4x4,3x3)',
      winograd6: 'conv3x3 Winograd F(6x6,3x3)' };
    for (const [H, C] of [[64, 320], [32, 640], [16, 1280], [8, 1280], [128, 512], [256, 512]]) {
      const x = hs.tensor(filled(H * H * C, 3), [1, H, H, C]), w = hs.tensor(filled(C * 9 * C, 4, 0.05), [C, 3, 3, C]);
      const flops = 2 * H * H * C * 9 * C;
      const big = H * H > 4096;  // the VAE shapes: one pair, no GEMM / OpenBLAS twin (65536 x 4608 x 512 is 309 GFLOP)
      const pairs = big ? 1 : pairsFor(flops);
      const res = Object.fromEntries(ALGOS.map((k) => [k, { rate: [] as number[], pct: [] as number[], vsOurs: [] as number[] }]));
      const a = big ? null : hs.tensor(filled(H * H * 9 * C, 5), [H * H, 9 * C]), wk = w.reshape([C, 9 * C]);
      const twin: number[] = [], twinBlas: number[] = [];
      if (!big) for (const algo of ALGOS) if (algo !== 'winograd6') await once(() => hs.ops.conv2d(x, w, null, { pad: 1, algo }));
      for (let p = 0; p < pairs; p++) {
        const ourGemm = a ? flops / (await once(() => hs.ops.linear(a, wk))) / 1e9 : NaN;
        twin.push(ourGemm);
        if (a && blas) twinBlas.push(await blas.ask(`${H * H} ${9 * C} ${C}`));
        for (const algo of ALGOS) {
          if (big ? algo === 'winograd' : algo === 'winograd6') continue;
          const pk = await fmaPeak();
          const g = flops / (await once(() => hs.ops.conv2d(x, w, null, { pad: 1, algo }))) / 1e9;
          res[algo].rate.push(g);
          res[algo].pct.push(g / pk);
          res[algo].vsOurs.push(g / ourGemm);
        }
      }
      for (const t of [x, w, a]) t?.dispose();
      for (const algo of ALGOS) {
        const r = res[algo];
        if (!r.rate.length) continue;
        const vs = big ? '' : `${median(r.vsOurs).toFixed(2)}x our GEMM ${H * H}x${9 * C}x${C} (${median(twin).toFixed(1)} GFLOP/s)`;
        rows.push({
          kind: LABEL[algo], shape: `${C}->${C} ${H}x${H}`,
          rate: median(r.rate), unit: 'GFLOP/s', pct: median(r.pct), blas: twinBlas.length ? median(twinBlas) : undefined,
          note: [algo !== 'gemm' ? 'direct-conv FLOPs' : '', vs, twinBlas.length ? 'OpenBLAS column: sgemm on the im2col shape' : '']
            .filter(Boolean).join('; '),
        });
      }
    }
  }

  if (want('attn') && typeof hs.ops.attention === 'function') {
    for (const [L, Lk, D, H] of [[4096, 4096, 40, 8], [1024, 1024, 64, 10], [4096, 77, 40, 8]]) {
      const q = hs.tensor(filled(L * H * D, 5), [1, L, H * D]), k = hs.tensor(filled(Lk * H * D, 6), [1, Lk, H * D]);
      const v = hs.tensor(filled(Lk * H * D, 7), [1, Lk, H * D]);
      const flops = 4 * H * L * Lk * D;
      const rate: number[] = [], pct: number[] = [];
      await once(() => hs.ops.attention(q, k, v, { heads: H }));
      for (let p = 0; p < Math.min(9, pairsFor(flops)); p++) {
        const pk = await fmaPeak();
        const g = flops / (await once(() => hs.ops.attention(q, k, v, { heads: H }), batchFor(flops), warmFor(flops))) / 1e9;
        rate.push(g);
        pct.push(g / pk);
      }
      for (const t of [q, k, v]) t.dispose();
      rows.push({ kind: 'attention', shape: `L=${L} keys=${Lk} d=${D} heads=${H}`, rate: median(rate), unit: 'GFLOP/s', pct: median(pct), note: 'QK^T + PV flops' });
    }
  }
  if (want('norm') && typeof hs.ops.groupNorm === 'function') {
    // Memory-bound ops on the SD1.5 64x64 activation [1, 4096, 320] (5.2 MB), timed warm, as a network runs
    // them: each sample is 25 untimed calls then 100 timed ones back to back (together 7-15 ms). One call alone
    // mostly measures the thread pool's wake-up and the sync round trip, and after the pause between samples
    // this VM's cores take ~10 ms to come back to full speed: 50 calls timed with no warm-up read SiLU at
    // 137 us a call against 64-66 us warm (session 14; `add` 151 against 80). The memcpy ceiling is timed warm
    // the same way (peak.cpp: a quarter of its copies untimed first). Bytes counted are the op's compulsory
    // traffic (reads + writes of its tensors).
    const CALLS = 100, WARM = 25;
    const [S, C] = [64 * 64, 320];
    const x = hs.tensor(filled(S * C, 8), [1, S, C]), g = hs.tensor(filled(C, 9), [C]), b = hs.tensor(filled(C, 10), [C]);
    const x2 = hs.tensor(filled(S * 2 * C, 11), [1, S, 2 * C]), y = hs.tensor(filled(S * C, 12), [1, S, C]);
    const E = S * C * 4;
    const xst = hs.ops.channelStats(x);
    const cases: [string, string, number, () => hs.Tensor][] = [
      ['group_norm+silu', `${C}ch 64x64, 32 groups`, 2 * E, () => hs.ops.groupNorm(x, g, b, { groups: 32, silu: true })],
      // with x's channel statistics from the op that wrote it (conv2d's stats output; bench/gn_stats.ts times
      // what computing them adds to the convolution): x is read once
      ['group_norm+silu, producer\'s stats', `${C}ch 64x64, 32 groups`, 2 * E, () => hs.ops.groupNorm(x, g, b, { groups: 32, silu: true, stats: xst })],
      ['layer_norm', `[${S}, ${C}]`, 2 * E, () => hs.ops.layerNorm(x, g, b)],
      ['silu', `[${S}, ${C}]`, 2 * E, () => hs.ops.silu(x)],
      // Two distinct tensors: add(x, x) read one tensor twice, 2 tensors' traffic counted as 3 (111% of memcpy).
      ['add', `[${S}, ${C}] + [${S}, ${C}]`, 3 * E, () => hs.ops.add(x, y)],
      ['geglu', `[${S}, ${2 * C}] -> [${S}, ${C}]`, 3 * E, () => hs.ops.geglu(x2)],
    ];
    // Ceiling: memcpy of one such tensor (5.2 MB: it stays in the 32 MiB L3 between calls, as the op's tensors
    // do), measured right before each sample; the DRAM copy above is the bound for tensors beyond the cache.
    await copyRate();
    for (const [kind, shape, bytes, fn] of cases) {
      const rate: number[] = [], pct: number[] = [], ceil: number[] = [];
      await once(fn, CALLS);
      for (let p = 0; p < 9; p++) {
        const cp = await copyRateOf(E);
        const r = bytes / (await once(fn, CALLS, WARM)) / 1e9;
        rate.push(r);
        ceil.push(cp);
        pct.push(r / cp);
      }
      rows.push({ kind, shape, rate: median(rate), unit: 'GB/s', pct: median(pct),
        note: `compulsory reads + writes, ${CALLS} calls back to back after ${WARM}; % of a 5.2 MB memcpy (median ${median(ceil).toFixed(1)} GB/s)` });
    }
    for (const t of [x, g, b, x2, y, xst]) t.dispose();
    // The SD1.5 VAE decoder's largest group norm, [1, 262144, 128] (134 MB, far past the L3): without and with
    // the producing convolution's statistics, against a memcpy of the same bytes (memory to memory).
    const [S2, C2] = [512 * 512, 128], E2 = S2 * C2 * 4;
    const xv = hs.ops.randn([1, S2, C2], { seed: 13 }), g2 = hs.ops.randn([C2], { seed: 14 }), b2 = hs.ops.randn([C2], { seed: 15 });
    const st2 = hs.ops.channelStats(xv);
    for (const [kind, fn] of [
      ['group_norm+silu', () => hs.ops.groupNorm(xv, g2, b2, { groups: 32, silu: true })],
      ['group_norm+silu, producer\'s stats', () => hs.ops.groupNorm(xv, g2, b2, { groups: 32, silu: true, stats: st2 })],
    ] as [string, () => hs.Tensor][]) {
      const rate: number[] = [], pct: number[] = [], ceil: number[] = [];
      for (let p = 0; p < 5; p++) {
        const cp = await copyRateOf(E2);
        const r = 2 * E2 / (await once(fn, 10, 3)) / 1e9;
        rate.push(r);
        ceil.push(cp);
        pct.push(r / cp);
      }
      rows.push({ kind, shape: `${C2}ch 512x512 (VAE), 32 groups`, rate: median(rate), unit: 'GB/s', pct: median(pct),
        note: `compulsory reads + writes, 10 calls back to back after 3; % of a 134 MB memcpy (median ${median(ceil).toFixed(1)} GB/s)` });
    }
    for (const t of [xv, g2, b2, st2]) t.dispose();
  }

  if (copies.length === 0) await copyRate();

  const range = (v: number[]) => `median ${median(v).toFixed(1)}, range ${Math.min(...v).toFixed(1)}-${Math.max(...v).toFixed(1)}`;
  const lines: string[] = [];
  let wide = false;
  try { wide = / avx512f /.test(fs.readFileSync('/proc/cpuinfo', 'utf8')); } catch { /* not Linux */ }
  lines.push(`threads ${threads}; FMA peak (${wide ? '16' : '8'}-wide FMAs) ${peaks.length ? range(peaks) : '?'} GFLOP/s over ${peaks.length} measurements; ` +
    `memcpy ${copies.length ? range(copies) : '?'} GB/s (read + write)${blas ? '' : '; OpenBLAS not installed'}`);
  lines.push('');
  lines.push('| op | shape | hypersd | % of peak | OpenBLAS sgemm | hypersd / OpenBLAS | note |');
  lines.push('|---|---|---|---|---|---|---|');
  for (const r of rows)
    lines.push(`| ${r.kind} | ${r.shape} | ${r.rate.toFixed(1)} ${r.unit} | ${(100 * r.pct).toFixed(0)}% | ` +
      `${r.blas ? r.blas.toFixed(1) : ''} | ${r.vsBlas ? r.vsBlas.toFixed(2) + 'x' : ''} | ${r.note ?? ''} |`);
  peak?.close();
  blas?.close();
  // The memory-bound rows again through the engine from C++ (bench/native/pointwise_bench.cpp, built with the
  // addon: build*/hypersd_pointwise_bench), when that program is there: the same ops without the JS call per op.
  if (want('norm')) {
    const addon = process.env.HYPERSD_ADDON ? path.resolve(process.env.HYPERSD_ADDON) : path.join(__dirname, '..', 'build', 'Release', 'hypersd.node');
    const engineBench = path.join(path.dirname(addon), '..', 'hypersd_pointwise_bench');
    if (fs.existsSync(engineBench)) {
      try {
        const out = execFileSync(engineBench, [String(threads)], { encoding: 'utf8', timeout: 300_000 });
        lines.push('', 'The memory-bound rows through the engine from C++ (`' + path.relative(process.cwd(), engineBench) + ` ${threads}\`):`, '', ...out.trim().split('\n'));
      } catch (e) {
        lines.push('', `(${engineBench} failed: ${(e as Error).message.split('\n')[0]})`);
      }
    }
  }
  console.log(lines.join('\n'));
  if (args.includes('--write')) writeResults(lines);
  fs.rmSync(tmp, { recursive: true, force: true });
}

function writeResults(table: string[]): void {
  const file = path.join(__dirname, 'RESULTS.md');
  const heading = '## CPU ops (2-core AMD EPYC, AVX2)';
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const section = [
    heading, '',
    `- date: ${execFileSync('date', { encoding: 'utf8' }).trim()}`,
    `- machine: ${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}; kernels: ${process.env.HYPERSD_CPU_KERNELS ?? 'auto (avx2)'}`,
    `- command: \`HYPERSD_ADDON=${process.env.HYPERSD_ADDON ?? ''} npx tsx bench/ops.ts ${args.join(' ')}\``,
    '- ceilings from bench/native/peak.cpp and OpenBLAS (Debian libopenblas, same thread count, a yardstick only) in the',
    '  same run, each measured right beside the run it is compared with; "% of peak" and "x OpenBLAS" are medians of those',
    `  per-pair ratios. Load average before the run: ${loadBefore}, after: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`,
    '  (the machine is shared with other jobs; absolute figures move by tens of percent between runs).',
    '', ...table, '',
  ].join('\n');
  let text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Benchmark results\n\n';
  const at = text.indexOf(heading);
  if (at < 0) text = text.trimEnd() + '\n\n' + section;
  else {
    const next = text.indexOf('\n## ', at + heading.length);
    text = text.slice(0, at) + section + (next < 0 ? '' : text.slice(next + 1));
  }
  fs.writeFileSync(file, text);
  console.log(`wrote ${file}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
