/**
 * FLOP counting for benchmarks through the op hook (lib/ops/runtime.ts setOpHook): every op the networks run
 * passes there with its inputs, outputs and attributes. Counted: 2*M*N*K for matmul / lora_linear (incl. the
 * low-rank product) / linear_geglu (N = both halves of the weight), 2*out*kh*kw*Cin for conv2d / lora_conv2d, 4*B*H*Lq*Lk*D for attention. Elementwise ops are
 * memory-bound and not counted.
 */
import { setOpHook } from '../lib/ops/runtime';
import type { Tensor } from '../lib';

export const counter = { flops: 0 };

const last = (t: Tensor) => t.shape[t.rank - 1];

export function installFlopCounter(): void {
  const prev = setOpHook((op, ins, outs, attrs) => {
    prev?.(op, ins, outs, attrs);
    const y = outs[0];
    switch (op) {
      case 'matmul': {
        const a = ins[0];
        const K = attrs.transA ? a.shape[a.rank - 2] : last(a);
        counter.flops += 2 * y.size * K;
        break;
      }
      case 'linear_geglu': {
        counter.flops += 2 * (y.size / last(y)) * ins[1].shape[0] * last(ins[0]);
        break;
      }
      case 'lora_linear': {
        const K = last(ins[0]), r = ins[ins.length - 2].shape[0], N = last(y), M = y.size / N;
        counter.flops += 2 * M * N * K + 2 * M * r * (K + N);
        break;
      }
      case 'conv2d':
      case 'lora_conv2d': {
        const w = ins[1];
        counter.flops += 2 * y.size * w.shape[1] * w.shape[2] * w.shape[3];
        break;
      }
      case 'attention': {
        const q = ins[0], k = ins[1];
        counter.flops += 4 * q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2];
        break;
      }
    }
  });
}
