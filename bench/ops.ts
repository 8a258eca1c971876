/**
 * bench/ops: achieved GFLOP/s (or GB/s) of the CPU ops on UNet/VAE-shaped problems, beside the machine's
 * ceilings measured in the same run: the FMA peak of a register-only loop and the memcpy bandwidth
 * (bench/native/peak.cpp), and OpenBLAS sgemm on the same shapes when libopenblas is installed
 * (bench/native/blas.cpp; a yardstick only, never linked into hypersd).
 *
 *   HYPERSD_ADDON=build/Release/hypersd.node npx tsx bench/ops.ts [--only gemm,conv,attn,norm] [--quick] [--write]
 *
 * Each figure is the median of several timed runs after a warm-up (the VAE convolution runs once). --write
 * replaces the "CPU ops" section of bench/RESULTS.md with this run's table, date, machine and command.
 * GEMMs are linear layers: x [M, K] times a weight [N, K] (transB). Convolutions are 3x3, stride 1, pad 1 on
 * NHWC, counted in direct-convolution FLOPs (2 H W Cout 9 Cin); "vs GEMM" divides by our own GEMM rate on the
 * implicit-GEMM shape M = H W, K = 9 Cin, N = Cout, measured in the same run.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as hs from '../lib';

const args = process.argv.slice(2);
const only = (args.find((a) => a.startsWith('--only='))?.slice(7) ?? args[args.indexOf('--only') + 1] ?? '').split(',').filter((s) => s && !s.startsWith('--'));
const want = (what: string) => only.length === 0 || only.includes(what);
const quick = args.includes('--quick');
const threads = hs.threads();

// ---------- ceilings and the OpenBLAS yardstick (small C++ programs built here) ----------
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
const peakBin = build('peak.cpp', ['-mavx2', '-mfma', '-pthread']);
const peaks: { fma_gflops: number; copy_gbs: number }[] = [];
/** The ceilings are measured at the start, between the sections and at the end; the table uses the medians. */
function measurePeak(): void {
  if (peakBin) peaks.push(JSON.parse(execFileSync(peakBin, [String(threads)], { encoding: 'utf8' })));
}
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const blasBin = build('blas.cpp', [], ['-lopenblas']);
/** OpenBLAS sgemm GFLOP/s for x [M, K] times w [N, K]^T (median of reps after a warm-up), or undefined. */
function blas(M: number, K: number, N: number, reps: number): number | undefined {
  if (!blasBin) return undefined;
  const outText = execFileSync(blasBin, { input: `${M} ${K} ${N} ${reps}\n`, encoding: 'utf8',
    env: { ...process.env, OPENBLAS_NUM_THREADS: String(threads) } });
  return (JSON.parse(outText) as { gflops: number }).gflops;
}

// ---------- timing ----------
function filled(n: number, seed: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = ((s >>> 8) / 16777216 - 0.5) * scale;
  }
  return a;
}
/** Seconds of each of reps runs of fn() + sync, after one warm-up (none when reps is 1). */
async function times(fn: () => hs.Tensor, reps: number): Promise<number[]> {
  if (reps > 1) {
    fn().dispose();
    await hs.sync('cpu');
  }
  const ts: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    const y = fn();
    await hs.sync('cpu');
    ts.push((performance.now() - t0) / 1e3);
    y.dispose();
  }
  return ts;
}
const time = async (fn: () => hs.Tensor, reps: number) => median(await times(fn, reps));
const repsFor = (flops: number) => (quick ? 3 : Math.max(3, Math.min(15, Math.round(1e10 / flops))));
// The machine is shared: ours and OpenBLAS alternate over a few rounds per shape, and each reports the median
// of all its runs, so both see the same background load.
const ROUNDS = quick ? 1 : 3;

interface Row { kind: string; shape: string; ours: number; unit: string; blas?: number; note?: string }
const rows: Row[] = [];

/** Our and OpenBLAS's GFLOP/s for x [M, K] w [N, K]^T, alternating over ROUNDS rounds. */
async function gemmRates(M: number, K: number, N: number): Promise<{ ours: number; blas?: number }> {
  const x = hs.tensor(filled(M * K, 1), [M, K]), w = hs.tensor(filled(N * K, 2, 0.1), [N, K]);
  const flops = 2 * M * K * N, reps = repsFor(flops);
  const ours: number[] = [], ref: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const b = blas(M, K, N, reps);
    if (b !== undefined) ref.push(b);
    for (const s of await times(() => hs.ops.linear(x, w), reps)) ours.push(flops / s / 1e9);
  }
  x.dispose();
  w.dispose();
  return { ours: median(ours), blas: ref.length ? median(ref) : undefined };
}

async function main(): Promise<void> {
  const gemmShapes: [number, number, number][] = [[4096, 320, 320], [4096, 320, 2560], [1024, 1280, 5120], [77, 768, 320], [4096, 1280, 5120]];
  const convShapes: [number, number, number, number][] = [[64, 64, 320, 5], [32, 32, 640, 5], [16, 16, 1280, 5], [256, 256, 512, 1]];
  measurePeak();
  if (want('gemm')) {
    for (const [M, K, N] of gemmShapes) {
      const g = await gemmRates(M, K, N);
      rows.push({ kind: 'gemm', shape: `M=${M} K=${K} N=${N}`, ours: g.ours, unit: 'GFLOP/s', blas: g.blas });
    }
    measurePeak();
  }
  if (want('conv')) {
    for (const [H, W, C, reps0] of convShapes) {
      const reps = quick ? Math.min(reps0, 2) : reps0;
      const x = hs.tensor(filled(H * W * C, 3), [1, H, W, C]), w = hs.tensor(filled(C * 9 * C, 4, 0.05), [C, 3, 3, C]);
      const flops = 2 * H * W * C * 9 * C;
      const direct = flops / (await time(() => hs.ops.conv2d(x, w, null, { pad: 1, algo: 'gemm' }), reps)) / 1e9;
      const wino = flops / (await time(() => hs.ops.conv2d(x, w, null, { pad: 1, algo: 'winograd' }), reps)) / 1e9;
      x.dispose();
      w.dispose();
      // The same problem as a plain GEMM (M = H W, K = 9 C, N = C), ours and OpenBLAS, at the smaller sizes.
      const eq = H * W <= 4096 ? await gemmRates(H * W, 9 * C, C) : undefined;
      const vs = (g: number) => (eq ? `; ${(g / eq.ours).toFixed(2)}x our GEMM ${H * W}x${9 * C}x${C} (${eq.ours.toFixed(1)})` : '');
      rows.push({ kind: 'conv3x3 implicit GEMM', shape: `${C}->${C} ${H}x${W}`, ours: direct, unit: 'GFLOP/s', blas: eq?.blas,
        note: `OpenBLAS column: sgemm on the im2col shape${vs(direct)}` });
      rows.push({ kind: 'conv3x3 Winograd F(2x2,3x3)', shape: `${C}->${C} ${H}x${W}`, ours: wino, unit: 'GFLOP/s', blas: eq?.blas,
        note: `direct-conv FLOPs${vs(wino)}` });
    }
    measurePeak();
  }
  if (want('attn') && typeof hs.ops.attention === 'function') {
    for (const [L, Lk, D, H] of [[4096, 4096, 40, 8], [1024, 1024, 64, 10], [4096, 77, 40, 8]]) {
      const q = hs.tensor(filled(L * H * D, 5), [1, L, H * D]), k = hs.tensor(filled(Lk * H * D, 6), [1, Lk, H * D]);
      const v = hs.tensor(filled(Lk * H * D, 7), [1, Lk, H * D]);
      const flops = 4 * H * L * Lk * D;
      const s = await time(() => hs.ops.attention(q, k, v, { heads: H }), repsFor(flops));
      for (const t of [q, k, v]) t.dispose();
      rows.push({ kind: 'attention', shape: `L=${L} keys=${Lk} d=${D} heads=${H}`, ours: flops / s / 1e9, unit: 'GFLOP/s', note: 'QK^T + PV flops' });
    }
  }
  if (want('norm') && typeof hs.ops.groupNorm === 'function') {
    const [S, C] = [64 * 64, 320];
    const x = hs.tensor(filled(S * C, 8), [1, S, C]), g = hs.tensor(filled(C, 9), [C]), b = hs.tensor(filled(C, 10), [C]);
    const s = await time(() => hs.ops.groupNorm(x, g, b, { groups: 32, silu: true }), 15);
    for (const t of [x, g, b]) t.dispose();
    rows.push({ kind: 'group_norm+silu', shape: `${C}ch 64x64`, ours: (2 * S * C * 4) / s / 1e9, unit: 'GB/s', note: 'one read + one write' });
  }
  measurePeak();
  const peak = peaks.length ? { fma_gflops: median(peaks.map((p) => p.fma_gflops)), copy_gbs: median(peaks.map((p) => p.copy_gbs)) } : null;

  const lines: string[] = [];
  lines.push(`threads ${threads}; FMA peak ${peak ? peak.fma_gflops.toFixed(1) : '?'} GFLOP/s (median of ${peaks.map((p) => p.fma_gflops.toFixed(0)).join(', ')}); ` +
    `memcpy ${peak ? peak.copy_gbs.toFixed(1) : '?'} GB/s read + write (median of ${peaks.map((p) => p.copy_gbs.toFixed(1)).join(', ')})` +
    `${blasBin ? '' : '; OpenBLAS not installed'}`);
  lines.push('');
  lines.push('| op | shape | hypersd | % of peak | OpenBLAS sgemm | hypersd / OpenBLAS | note |');
  lines.push('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const ceiling = r.unit === 'GB/s' ? peak?.copy_gbs : peak?.fma_gflops;
    lines.push(`| ${r.kind} | ${r.shape} | ${r.ours.toFixed(1)} ${r.unit} | ${ceiling ? ((100 * r.ours) / ceiling).toFixed(0) + '%' : ''} | ` +
      `${r.blas ? r.blas.toFixed(1) : ''} | ${r.blas ? (r.ours / r.blas).toFixed(2) + 'x' : ''} | ${r.note ?? ''} |`);
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
    '- ceilings from bench/native/peak.cpp in the same run; OpenBLAS (Debian libopenblas) sgemm with the same thread count, as a yardstick only.',
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
