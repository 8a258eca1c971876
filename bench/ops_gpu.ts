/**
 * bench/ops_gpu: achieved TFLOP/s (or GB/s) of the CUDA kernels on SD1.5/SDXL-shaped problems, beside two
 * ceilings measured in the same run: the device-to-device copy bandwidth (a 1 GiB `copy`, which is
 * cudaMemcpyAsync) and the best GEMM rate this run reached. Run by bench/gpu-check.sh; on its own:
 *
 *   npx tsx bench/ops_gpu.ts [--only gemm,lora,conv,attn,norm,ew,train] [--quick] [--write]
 *
 * Each figure is the median of 5 timed samples after a warm-up; a sample enqueues enough calls back to back
 * (outputs disposed at once: freeing is stream-ordered) to run >= ~25 ms, then syncs, so launch and sync
 * overheads are amortised as they are in a real UNet step. With $OUT set, the table and a JSON copy land
 * there (ops_gpu.md, ops_gpu.json); --write also replaces the "GPU ops" section of bench/RESULTS.md.
 * FLOP counts: GEMM 2MNK; conv 2 N Ho Wo Cout kh kw Cin; attention 4 B H Lq Lk D (QK^T and PV); LoRA counts
 * the base GEMM only, so its rate drop is the adapter's cost. Bandwidth rows count the minimum traffic
 * (each input read once, the output written once).
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as hs from '../lib';
import { conv2dBackwardInput } from '../lib/ops/conv.grad';

const args = process.argv.slice(2);
const onlyArg = args.find((a) => a.startsWith('--only='))?.slice(7) ?? (args.includes('--only') ? args[args.indexOf('--only') + 1] : '');
const only = (onlyArg ?? '').split(',').filter((s) => s && !s.startsWith('--'));
const want = (what: string) => only.length === 0 || only.includes(what);
const quick = args.includes('--quick');
const DEV = 'cuda' as const;
const SAMPLES = quick ? 3 : 5;
const TARGET_S = quick ? 0.01 : 0.025;

type Dt = 'f16' | 'bf16' | 'f32';
let seed = 1;
const randn = (shape: number[], dtype: Dt, scale = 1): hs.Tensor => {
  const t = hs.ops.randn(shape, { seed: seed++, dtype, device: DEV });
  if (scale === 1) return t;
  const s = hs.ops.affine(t, scale, 0);
  t.dispose();
  return s;
};

/** Median seconds per call of fn (which returns its outputs, disposed at once). */
async function time(fn: () => hs.Tensor | hs.Tensor[]): Promise<number> {
  const run = (n: number) => {
    for (let i = 0; i < n; i++) {
      const r = fn();
      for (const t of Array.isArray(r) ? r : [r]) t.dispose();
    }
  };
  run(1);
  await hs.sync(DEV);
  let t0 = performance.now();
  run(1);
  await hs.sync(DEV);
  const once = Math.max((performance.now() - t0) / 1e3, 1e-6);
  const inner = Math.max(1, Math.min(2000, Math.round(TARGET_S / once)));
  const ts: number[] = [];
  for (let s = 0; s < SAMPLES; s++) {
    t0 = performance.now();
    run(inner);
    await hs.sync(DEV);
    ts.push((performance.now() - t0) / 1e3 / inner);
  }
  ts.sort((a, b) => a - b);
  return ts[Math.floor(ts.length / 2)];
}

interface Row { kind: string; shape: string; dtype: string; value: number; unit: 'TFLOP/s' | 'GB/s' | 'us/op'; ms: number; note?: string }
const rows: Row[] = [];
const failures: string[] = [];
const esize = (d: Dt) => (d === 'f32' ? 4 : 2);

async function measure(kind: string, shape: string, dtype: string, work: number, unit: Row['unit'], fn: () => hs.Tensor | hs.Tensor[],
                       note?: string): Promise<number> {
  try {
    const s = await time(fn);
    const value = unit === 'TFLOP/s' ? work / s / 1e12 : unit === 'us/op' ? s * 1e6 : work / s / 1e9;
    rows.push({ kind, shape, dtype, value, unit, ms: s * 1e3, note });
    console.log(`${kind.padEnd(16)} ${shape.padEnd(40)} ${dtype.padEnd(5)} ${value.toFixed(unit === 'GB/s' ? 0 : 1).padStart(8)} ${unit}  ${(s * 1e3).toFixed(3)} ms${note ? '  ' + note : ''}`);
    return s;
  } catch (e) {
    const msg = `${kind} ${shape} ${dtype}: ${(e as Error).message}`;
    failures.push(msg);
    console.log(`FAILED ${msg}`);
    return NaN;
  }
}

async function ceilings(): Promise<void> {
  const n = 512 * 2 ** 20;  // f16 elements: 1 GiB
  const x = randn([n], 'f16');
  const y = hs.empty([n], { dtype: 'f16', device: DEV });
  await measure('d2d copy', '1 GiB', 'f16', 2 * 2 * n, 'GB/s', () => {
    hs.runOp('copy', [x], [y]);
    return [];
  }, 'ceiling: cudaMemcpyAsync, read + write');
  x.dispose();
  y.dispose();
  // The floor under every small op: an 8-element add, enqueued back to back (JS, the queue, the worker's
  // host code and the launch); an op whose kernel is shorter than this cannot run faster in a network.
  const a = randn([8], 'f16'), b = randn([8], 'f16');
  await measure('op floor', 'add of 8 elements', 'f16', 1, 'us/op', () => hs.ops.add(a, b), 'per-op time with nothing to compute');
  a.dispose();
  b.dispose();
}

async function gemms(): Promise<void> {
  const linear = async (M: number, K: number, N: number, dtype: Dt, what: string, transB = true) => {
    const x = randn([M, K], dtype), w = randn(transB ? [N, K] : [K, N], dtype, 0.05);
    await measure('gemm', `${what} M=${M} K=${K} N=${N}${transB ? '' : ' (NN)'}`, dtype, 2 * M * N * K, 'TFLOP/s',
      () => hs.ops.matmul(x, w, { transB }));
    x.dispose();
    w.dispose();
  };
  for (const dt of ['bf16', 'f16'] as Dt[]) await linear(4096, 4096, 4096, dt, 'square');
  await linear(4096, 4096, 4096, 'f16', 'square', false);
  if (!quick) await linear(4096, 4096, 4096, 'f32', 'square (SIMT f32)');
  const unet: [number, number, number, string][] = [
    [8192, 320, 320, 'SD1.5 attn proj 64x64 x2'], [8192, 320, 2560, 'SD1.5 GEGLU in'], [8192, 1280, 320, 'SD1.5 FF out'],
    [2048, 1280, 10240, 'SDXL GEGLU in 32x32 x2'], [8192, 640, 640, 'SDXL attn proj 64x64 x2'], [154, 768, 3072, 'CLIP-L MLP'],
  ];
  for (const [M, K, N, what] of unet) await linear(M, K, N, 'f16', what);
  // fused epilogue: bias + GELU
  const x = randn([8192, 320], 'f16'), w = randn([1280, 320], 'f16', 0.05), b = randn([1280], 'f16');
  await measure('gemm+bias+gelu', 'M=8192 K=320 N=1280', 'f16', 2 * 8192 * 320 * 1280, 'TFLOP/s',
    () => hs.ops.matmul(x, w, { transB: true, bias: b, act: 'gelu' }));
  for (const t of [x, w, b]) t.dispose();
}

async function loras(): Promise<void> {
  const [M, K, N, r] = [8192, 1280, 1280, 64];
  const x = randn([M, K], 'f16'), w = randn([N, K], 'f16', 0.05), down = randn([r, K], 'f16', 0.05), up = randn([N, r], 'f16', 0.05);
  const flops = 2 * M * N * K;
  const plain = await measure('gemm (base)', `M=${M} K=${K} N=${N}`, 'f16', flops, 'TFLOP/s', () => hs.ops.matmul(x, w, { transB: true }));
  const lora = await measure('lora_linear', `M=${M} K=${K} N=${N} rank ${r}`, 'f16', flops, 'TFLOP/s',
    () => hs.ops.loraLinear(x, w, null, down, up, 0.5));
  if (Number.isFinite(plain) && Number.isFinite(lora)) rows[rows.length - 1].note = `${(lora / plain).toFixed(3)}x the plain GEMM's time (ideal ${(1 + r / K + r / N).toFixed(3)}x)`;
  const xb = x.reshape([2, M / 2, K]);
  const downs = randn([2, r, K], 'f16', 0.05), ups = randn([2, N, r], 'f16', 0.05);
  const idx = hs.tensor(Int32Array.from([0, 1]), [2], { dtype: 'i32', device: DEV }), sc = hs.tensor([0.5, 1], [2], { device: DEV });
  await measure('lora_batched', `B=2 L=${M / 2} K=${K} N=${N} rank ${r}, 2 adapters`, 'f16', flops, 'TFLOP/s',
    () => hs.ops.loraLinearBatched(xb, w, null, downs, ups, idx, sc));
  for (const t of [xb, x, w, down, up, downs, ups, idx, sc]) t.dispose();
}

async function convs(): Promise<void> {
  const conv = async (N: number, H: number, Cin: number, Cout: number, k: number, stride: number, dtype: Dt, what: string) => {
    const pad = k === 3 ? 1 : 0;
    const x = randn([N, H, H, Cin], dtype), w = randn([Cout, k, k, Cin], dtype, 0.05);
    const Ho = Math.floor((H + 2 * pad - k) / stride) + 1;
    await measure('conv2d', `${what} ${Cin}->${Cout} ${H}x${H} k${k} s${stride} N=${N}`, dtype, 2 * N * Ho * Ho * Cout * k * k * Cin, 'TFLOP/s',
      () => hs.ops.conv2d(x, w, null, { pad, stride }));
    if (k === 3 && stride === 1 && Cin >= 16) {  // with the channel statistics from the epilogue (session 22)
      const st = hs.empty([N, Cout, 3], { device: DEV });
      await measure('conv2d', `${what} ${Cin}->${Cout} ${H}x${H} k${k} s${stride} N=${N} + stats`, dtype, 2 * N * Ho * Ho * Cout * k * k * Cin,
        'TFLOP/s', () => hs.ops.conv2d(x, w, null, { pad, stride, stats: st }));
      st.dispose();
    }
    x.dispose();
    w.dispose();
  };
  await conv(2, 64, 320, 320, 3, 1, 'f16', 'SD1.5 res');
  await conv(2, 64, 320, 320, 3, 1, 'bf16', 'SD1.5 res');
  await conv(2, 32, 640, 640, 3, 1, 'f16', 'res');
  await conv(2, 16, 1280, 1280, 3, 1, 'f16', 'res');
  await conv(2, 64, 320, 320, 3, 2, 'f16', 'downsample');
  await conv(2, 64, 320, 640, 1, 1, 'f16', 'shortcut');
  await conv(2, 64, 4, 320, 3, 1, 'f16', 'conv_in (scalar staging)');
  if (!quick) await conv(1, 256, 256, 256, 3, 1, 'f16', 'VAE decoder');
  const x = randn([2, 64, 64, 320], 'f16'), w = randn([320, 3, 3, 320], 'f16', 0.05), down = randn([32, 3, 3, 320], 'f16', 0.05), up = randn([320, 32], 'f16', 0.05);
  await measure('lora_conv2d', '320->320 64x64 k3 N=2 rank 32', 'f16', 2 * 2 * 64 * 64 * 320 * 9 * 320, 'TFLOP/s',
    () => hs.ops.loraConv2d(x, w, null, down, up, 1, { pad: 1 }), 'base conv FLOPs');
  for (const t of [x, w, down, up]) t.dispose();
}

async function attns(): Promise<void> {
  const attn = async (B: number, Lq: number, Lk: number, H: number, D: number, what: string, dtype: Dt = 'f16', causal = false) => {
    const q = randn([B, Lq, H * D], dtype), k = randn([B, Lk, H * D], dtype), v = randn([B, Lk, H * D], dtype);
    await measure('attention', `${what} B=${B} Lq=${Lq} Lk=${Lk} H=${H} d=${D}${causal ? ' causal' : ''}`, dtype,
      4 * B * H * Lq * Lk * D * (causal ? 0.5 : 1), 'TFLOP/s', () => hs.ops.attention(q, k, v, { heads: H, causal }));
    for (const t of [q, k, v]) t.dispose();
  };
  await attn(2, 4096, 4096, 10, 64, 'SDXL-like self');
  await attn(2, 4096, 4096, 10, 64, 'SDXL-like self', 'bf16');
  await attn(2, 4096, 4096, 8, 40, 'SD1.5 self 64x64');
  await attn(2, 4096, 77, 8, 40, 'SD1.5 cross');
  await attn(2, 1024, 1024, 8, 80, 'SD1.5 self 32x32');
  await attn(2, 256, 256, 8, 160, 'SD1.5 self 16x16');
  await attn(2, 4096, 77, 10, 64, 'SDXL cross');
  await attn(2, 1024, 1024, 20, 64, 'SDXL self 32x32');
  await attn(2, 4096, 512, 10, 64, 'keys at the wgmma threshold');
  await attn(2, 77, 77, 12, 64, 'CLIP-L text', 'f16', true);
  if (!quick) await attn(1, 1024, 1024, 8, 40, 'SIMT path', 'f32');
}

async function bandwidth(): Promise<void> {
  const gn = async (N: number, S: number, C: number, what: string, dtype: Dt = 'f16') => {
    const x = randn([N, S, C], dtype), g = randn([C], 'f32'), b = randn([C], 'f32');
    await measure('group_norm+silu', `${what} [${N}, ${S}, ${C}] 32 groups`, dtype, 2 * N * S * C * esize(dtype), 'GB/s',
      () => hs.ops.groupNorm(x, g, b, { groups: 32, silu: true }), 'min traffic (the kernels read x twice)');
    // given x's channel statistics (as the convolution that wrote x hands them over, session 22): one read of x
    const st = hs.ops.channelStats(x);
    await measure('group_norm+silu', `${what} [${N}, ${S}, ${C}] 32 groups, producer's stats`, dtype, 2 * N * S * C * esize(dtype), 'GB/s',
      () => hs.ops.groupNorm(x, g, b, { groups: 32, silu: true, stats: st }), 'min traffic (x read once)');
    st.dispose();
    // the same tensor copied (cudaMemcpyAsync): what "a copy" reaches at this size, host floor included
    const y = hs.empty([N, S, C], { dtype, device: DEV });
    await measure('copy', `the same [${N}, ${S}, ${C}]`, dtype, 2 * N * S * C * esize(dtype), 'GB/s', () => {
      hs.runOp('copy', [x], [y]);
      return [];
    }, 'same-size copy, for the row above');
    for (const t of [x, g, b, y]) t.dispose();
  };
  await gn(2, 4096, 320, 'SD1.5 64x64');
  await gn(2, 1024, 1280, 'SDXL 32x32');
  await gn(1, 128 * 128, 512, 'VAE 128x128');
  await gn(1, 256 * 256, 256, 'VAE 256x256');
  await gn(1, 512 * 512, 128, 'VAE 512x512');
  if (!quick) await gn(1, 1024 * 1024, 128, 'SDXL VAE 1024x1024');
  const x = randn([8192, 640], 'f16'), g = randn([640], 'f16'), b = randn([640], 'f16');
  await measure('layer_norm', '[8192, 640]', 'f16', 2 * 8192 * 640 * 2, 'GB/s', () => hs.ops.layerNorm(x, g, b));
  for (const t of [x, g, b]) t.dispose();
  const n = 64 * 2 ** 20;
  const a = randn([n], 'f16'), c = randn([n], 'f16'), e = randn([n], 'f16');
  await measure('add', `${n} elements`, 'f16', 3 * 2 * n, 'GB/s', () => hs.ops.add(a, c));
  await measure('silu', `${n} elements`, 'f16', 2 * 2 * n, 'GB/s', () => hs.ops.silu(a));
  await measure('scheduler_step', `${n} elements + noise`, 'f16', 4 * 2 * n, 'GB/s', () => hs.ops.schedulerStep(a, c, e, 0.9, -0.1, 0.05));
  const rows = Math.floor(n / 1280);
  const rowb = randn([1280], 'f16'), m = randn([rows, 1280], 'f16');
  await measure('add (bias bcast)', `[${rows}, 1280] + [1280]`, 'f16', 2 * 2 * rows * 1280, 'GB/s', () => hs.ops.add(m, rowb));
  const img = randn([2, 64, 64, 640], 'f16');
  await measure('upsample2x', '[2, 64, 64, 640]', 'f16', 5 * 2 * 64 * 64 * 640 * 2, 'GB/s', () => hs.ops.upsampleNearest2x(img));
  const cat2 = randn([2, 64, 64, 640], 'f16');
  await measure('concat (channels)', '2 x [2, 64, 64, 640]', 'f16', 4 * 2 * 64 * 64 * 640 * 2, 'GB/s', () => hs.ops.concat([img, cat2], 3));
  await measure('randn', `${n} elements`, 'f16', 2 * n, 'GB/s', () => hs.ops.randn([n], { seed: 7, dtype: 'f16', device: DEV }), 'write only');
  for (const t of [a, c, e, rowb, m, img, cat2]) t.dispose();
}

// Training kernels: rates to track. The attention backward runs the tensor-core kernels for these f16 inputs
// with head dims up to 64 (80 and 160 too with HYPERSD_ATTN_BWD=mma-all), the SIMT ones with
// HYPERSD_ATTN_BWD=simt (gpu-check's bench-attn-bwd-simt / -mma-all stages).
async function training(): Promise<void> {
  const f32 = (shape: number[]) => hs.empty(shape, { dtype: 'f32', device: DEV });
  for (const [B, L, H, D, what] of [[1, 1024, 8, 64, ''], [1, 4096, 8, 40, ' (SD1.5 64x64)'], [1, 4096, 10, 64, ' (SDXL-sized heads)'],
    [2, 1024, 8, 80, ' (SD1.5 32x32)'], [2, 256, 8, 160, ' (SD1.5 16x16)']] as
    [number, number, number, number, string][]) {
    if (quick && L > 1024) continue;
    const q = randn([B, L, H * D], 'f16'), k = randn([B, L, H * D], 'f16'), v = randn([B, L, H * D], 'f16');
    const fwd = hs.ops.attention(q, k, v, { heads: H, returnLse: true });
    const dout = randn([B, L, H * D], 'f16');
    await measure('attention_bwd', `B=${B} L=${L} H=${H} d=${D} (dq, dk, dv)${what}`, 'f16>f32', 2.5 * 4 * B * H * L * L * D, 'TFLOP/s', () => {
      const outs = [f32([B, L, H * D]), f32([B, L, H * D]), f32([B, L, H * D])];
      hs.runOp('attention_backward', [q, k, v, fwd.out, dout, fwd.lse], outs, { heads: H, scale: 1 / Math.sqrt(D), causal: 0 });
      return outs;
    }, '2.5x the forward FLOPs');
    for (const t of [q, k, v, fwd.out, fwd.lse, dout]) t.dispose();
  }
  {
    const [N, Hh, C] = [2, 32, 320];
    const x = randn([N, Hh, Hh, C], 'f16'), w = randn([C, 3, 3, C], 'f16', 0.05), dy = randn([N, Hh, Hh, C], 'f16');
    const flops = 2 * N * Hh * Hh * C * 9 * C;
    await measure('conv_bwd_input', `${C}->${C} ${Hh}x${Hh} k3 N=${N}`, 'f16>f32', flops, 'TFLOP/s', () => {
      const dx = f32([N, Hh, Hh, C]);
      hs.runOp('conv2d_backward_input', [dy, w], [dx], { stride: 1, pad: 1 });
      return dx;
    });
    // the same gradient as a forward convolution of dy (f32, as autograd passes it) with the flipped, transposed
    // weight (lib/ops/conv.grad.ts under HYPERSD_CONV_BWD=fwd: the cast, the weight's slices, concat and permute
    // included), with a bf16 weight: f16 weights keep the backward kernel on CUDA (dy rounded to f16 would lose
    // small gradients); bf16 x bf16 into f32 runs on the tensor cores (conv.cu's compute dtype)
    const dy32 = randn([N, Hh, Hh, C], 'f32'), wb = randn([C, 3, 3, C], 'bf16', 0.05);
    process.env.HYPERSD_CONV_BWD = 'fwd';
    await measure('conv_bwd_input', `${C}->${C} ${Hh}x${Hh} k3 N=${N} (as a forward conv, bf16 weight)`, 'f32>f32', flops, 'TFLOP/s',
      () => conv2dBackwardInput(dy32, wb, [N, Hh, Hh, C], { pad: 1 }));
    delete process.env.HYPERSD_CONV_BWD;
    for (const t of [dy32, wb]) t.dispose();
    await measure('conv_bwd_weight', `${C}->${C} ${Hh}x${Hh} k3 N=${N}`, 'f16>f32', flops, 'TFLOP/s', () => {
      const dw = f32([C, 3, 3, C]);
      hs.runOp('conv2d_backward_weight', [x, dy], [dw], { stride: 1, pad: 1 });
      return dw;
    });
    for (const t of [x, w, dy]) t.dispose();
  }
}

function gpuName(): string {
  try {
    return execFileSync('nvidia-smi', ['--query-gpu=name,memory.total,clocks.max.sm,driver_version', '--format=csv,noheader'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown GPU';
  }
}

async function main(): Promise<void> {
  const st = hs.cudaStatus();
  if (!st.available) throw new Error(`no usable CUDA device: ${st.reason}`);
  const gpu = gpuName();
  console.log(`GPU: ${gpu}`);
  if (want('ceiling') || only.length === 0) await ceilings();
  if (want('gemm')) await gemms();
  if (want('lora')) await loras();
  if (want('conv')) await convs();
  if (want('attn')) await attns();
  if (want('norm') || want('ew')) await bandwidth();
  if (want('train')) await training();

  const copy = rows.find((r) => r.kind === 'd2d copy')?.value;
  const bestGemm = Math.max(0, ...rows.filter((r) => r.kind === 'gemm').map((r) => r.value));
  const lines: string[] = [];
  lines.push(`GPU ${gpu}; ceilings measured in this run: device copy ${copy ? copy.toFixed(0) : '?'} GB/s (read + write), ` +
    `best GEMM ${bestGemm ? bestGemm.toFixed(1) : '?'} TFLOP/s`);
  lines.push('');
  lines.push('| op | shape | dtype | achieved | % of ceiling | time | note |');
  lines.push('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const ceil = r.unit === 'GB/s' ? copy : r.unit === 'TFLOP/s' ? bestGemm : undefined;
    const pct = ceil && r.kind !== 'd2d copy' ? `${((100 * r.value) / ceil).toFixed(0)}% of ${r.unit === 'GB/s' ? 'copy' : 'best GEMM'}` : '';
    lines.push(`| ${r.kind} | ${r.shape} | ${r.dtype} | ${r.value.toFixed(r.unit === 'GB/s' ? 0 : 1)} ${r.unit} | ${pct} | ${r.ms.toFixed(3)} ms | ${r.note ?? ''} |`);
  }
  if (failures.length) lines.push('', 'Failed:', ...failures.map((f) => `- ${f}`));
  const table = lines.join('\n');
  console.log('\n' + table);
  if (process.env.OUT) {
    fs.writeFileSync(path.join(process.env.OUT, 'ops_gpu.md'), table + '\n');
    fs.writeFileSync(path.join(process.env.OUT, 'ops_gpu.json'), JSON.stringify({ gpu, date: new Date().toISOString(), rows, failures }, null, 1));
  }
  if (args.includes('--write')) writeResults(lines, gpu);
  if (failures.length) process.exitCode = 1;
}

function writeResults(table: string[], gpu: string): void {
  const file = path.join(__dirname, 'RESULTS.md');
  const heading = '## GPU ops';
  const section = [
    heading, '',
    `- date: ${new Date().toISOString()}`,
    `- machine: ${gpu}; host ${os.cpus()[0]?.model ?? '?'}`,
    `- command: \`npx tsx bench/ops_gpu.ts ${args.join(' ')}\``,
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
