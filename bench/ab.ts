/**
 * bench/ab: two settings of an environment variable the CPU kernels read at each call (HYPERSD_GEMM_ROWS_M,
 * HYPERSD_CONV_ALGO, HYPERSD_WINO_VARIANT, HYPERSD_CPU_KERNELS, or a temporary one a change under test adds),
 * compared side by side in one process: the two settings alternate sample by sample, so the machine's drift
 * (tens of percent within minutes on a shared VM) hits both alike; prints the medians and the median of the
 * per-pair ratios B / A.
 *   HYPERSD_ADDON=build/Release/hypersd.node npx tsx bench/ab.ts VAR valueA valueB [--only gemm,conv,attn,geglu,pw] [--pairs 9]
 * ATTN_SHAPES='[[L, Lk, D, H], ...]' replaces the attention shapes, CONV_SHAPES='[[size, Cin, Cout(, batch)], ...]' the 3x3 ones.
 */
import * as hs from '../lib';

const args = process.argv.slice(2);
const [name, A, B] = args;
if (!name || A === undefined || B === undefined) {
  console.error('usage: npx tsx bench/ab.ts VAR valueA valueB [--only gemm,conv,attn,geglu] [--pairs 9]');
  process.exit(2);
}
const opt = (k: string) => { const i = args.indexOf(k); return i >= 0 ? args[i + 1] : undefined; };
const only = opt('--only')?.split(',');
const pairs = Number(opt('--pairs') ?? 9);
const want = (k: string) => !only || only.includes(k);
const filled = (n: number, s: number) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = Math.sin(i * 0.37 + s) * 0.1; return a; };
const median = (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1];

type Case = [string, number, () => hs.Tensor, string?];  // label, FLOPs (or bytes) per call, one call, unit
const cases: Case[] = [];
if (want('gemm'))
  for (const [M, K, N] of [[77, 768, 320], [64, 1280, 1280], [256, 1280, 10240], [4096, 320, 320], [1024, 1280, 5120]]) {
    const x = hs.tensor(filled(M * K, 1), [M, K]), w = hs.tensor(filled(N * K, 2), [N, K]), b = hs.tensor(filled(N, 3), [N]);
    cases.push([`linear ${M}x${K}x${N}`, 2 * M * K * N, () => hs.ops.linear(x, w, b)]);
  }
if (want('conv'))
  for (const [S, Ci, Co, N = 1] of (process.env.CONV_SHAPES ? JSON.parse(process.env.CONV_SHAPES) : [[8, 1280, 1280], [16, 1280, 1280], [32, 640, 640], [64, 320, 320]])) {
    const x = hs.tensor(filled(N * S * S * Ci, 1), [N, S, S, Ci]), w = hs.tensor(filled(Co * 9 * Ci, 2), [Co, 3, 3, Ci]);
    const b = hs.tensor(filled(Co, 3), [Co]);
    cases.push([`conv3x3 ${N > 1 ? `${N}x` : ''}${S}x${S} ${Ci}->${Co}`, 2 * N * S * S * Ci * Co * 9, () => hs.ops.conv2d(x, w, b, { pad: 1 })]);
  }
if (want('attn'))
  for (const [L, Lk, D, H] of (process.env.ATTN_SHAPES ? JSON.parse(process.env.ATTN_SHAPES) : [[4096, 4096, 40, 8], [1024, 1024, 80, 8], [4096, 77, 40, 8]])) {
    const q = hs.tensor(filled(L * H * D, 1), [1, L, H * D]), k = hs.tensor(filled(Lk * H * D, 2), [1, Lk, H * D]);
    const v = hs.tensor(filled(Lk * H * D, 3), [1, Lk, H * D]);
    cases.push([`attention L=${L} keys=${Lk} d=${D}`, 4 * L * Lk * D * H, () => hs.ops.attention(q, k, v, { heads: H })]);
  }
if (want('pw')) {
  // Memory-bound ops on the SD1.5 64x64 activation (5.2 MB): bytes are the compulsory reads + writes.
  const [S, C] = [4096, 320], E = S * C * 4;
  const x = hs.tensor(filled(S * C, 1), [1, S, C]), g = hs.tensor(filled(C, 2), [C]), b = hs.tensor(filled(C, 3), [C]);
  const y = hs.tensor(filled(S * C, 4), [1, S, C]);
  cases.push(['silu [4096, 320]', 2 * E, () => hs.ops.silu(x), 'GB/s']);
  cases.push(['add [4096, 320]', 3 * E, () => hs.ops.add(x, y), 'GB/s']);
  cases.push(['layer_norm [4096, 320]', 2 * E, () => hs.ops.layerNorm(x, g, b), 'GB/s']);
  cases.push(['group_norm+silu 320ch 64x64', 2 * E, () => hs.ops.groupNorm(x, g, b, { groups: 32, silu: true }), 'GB/s']);
  const x2 = hs.tensor(filled(S * 2 * C, 5), [1, S, 2 * C]);
  cases.push(['geglu [4096, 640] -> [4096, 320]', 3 * E, () => hs.ops.geglu(x2), 'GB/s']);
}
if (want('geglu'))
  for (const [M, K, N2] of [[4096, 320, 2560], [1024, 640, 5120]]) {
    const x = hs.tensor(filled(M * K, 1), [M, K]), w = hs.tensor(filled(N2 * K, 2), [N2, K]), b = hs.tensor(filled(N2, 3), [N2]);
    cases.push([`linearGeglu ${M}x${K}x${N2}`, 2 * M * K * N2, () => hs.ops.linearGeglu(x, w, b)]);
  }

(async () => {
  console.log(`hypersd bench/ab  ${new Date().toISOString()}  ${name}: A=${A} B=${B}  ${pairs} pairs  threads=${hs.threads()}`);
  for (const [label, flops, fn, unit] of cases) {
    // calls per sample, back to back (about 0.3 GFLOP; 10 calls of a memory-bound op)
    const n = unit ? 10 : Math.max(1, Math.round(3e8 / flops));
    const sample = async (value: string) => {
      process.env[name] = value;
      const t0 = performance.now();
      for (let i = 0; i < n; i++) fn().dispose();
      await hs.sync('cpu');
      return (flops * n) / ((performance.now() - t0) / 1e3) / 1e9;
    };
    await sample(A);
    await sample(B);
    const ra: number[] = [], rb: number[] = [], ratio: number[] = [];
    for (let p = 0; p < pairs; p++) {
      const a = await sample(A), b = await sample(B);
      ra.push(a);
      rb.push(b);
      ratio.push(b / a);
    }
    console.log(`${label.padEnd(32)} A ${median(ra).toFixed(1).padStart(6)}  B ${median(rb).toFixed(1).padStart(6)} ${unit ?? 'GFLOP/s'}  B/A ${median(ratio).toFixed(3)}`);
  }
})();
