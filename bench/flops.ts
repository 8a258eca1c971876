/**
 * FLOP counting per op for benchmarks: wraps runOp through the op hook-free path by observing the op
 * wrappers' calls. Counts 2*M*N*K for matmul/linear, 2*Ho*Wo*Cout*Cin*kh*kw*N for conv2d, 4*B*H*Lq*Lk*D for
 * attention; elementwise ops are not counted (they are memory-bound).
 */
import * as ops from '../lib/ops';
import type { Tensor } from '../lib';

export const counter = { flops: 0 };
type AnyFn = (...a: any[]) => Tensor;

function wrap(name: keyof typeof ops, count: (args: any[], out: Tensor) => number): void {
  const orig = (ops as any)[name] as AnyFn;
  (ops as any)[name] = (...args: any[]) => {
    const out = orig(...args);
    counter.flops += count(args, out);
    return out;
  };
}

export function installFlopCounter(): void {
  const mm = (a: any[], out: Tensor) => {
    const A = a[0] as Tensor, B = a[1] as Tensor, o = a[2] ?? {};
    const K = o.transA ? A.shape[A.rank - 2] : A.shape[A.rank - 1];
    return 2 * out.size * K;
  };
  wrap('matmul', mm);
  wrap('linear', (a, out) => 2 * out.size * (a[0] as Tensor).shape[(a[0] as Tensor).rank - 1]);
  wrap('loraLinear', (a, out) => {
    const x = a[0] as Tensor, r = (a[3] as Tensor).shape[0], K = x.shape[x.rank - 1], N = out.shape[out.rank - 1];
    const M = out.size / N;
    return 2 * M * N * K + 2 * M * r * (K + N);
  });
  wrap('conv2d', (a, out) => {
    const w = a[1] as Tensor; // [Cout, kh, kw, Cin]
    return 2 * out.size * w.shape[1] * w.shape[2] * w.shape[3];
  });
  wrap('loraConv2d', (a, out) => {
    const w = a[1] as Tensor, d = a[3] as Tensor;
    const per = out.size / out.shape[3];
    return 2 * out.size * w.shape[1] * w.shape[2] * w.shape[3] + 2 * per * d.shape[0] * (d.shape[1] * d.shape[2] * d.shape[3] + out.shape[3]);
  });
  wrap('attention', (a, out) => {
    const q = a[0] as Tensor, k = a[1] as Tensor;
    return 4 * q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2];
  });
}
