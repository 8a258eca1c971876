/**
 * Autograd: reverse mode on a tape (tape.ts), gradients registered per op beside the ops
 * (lib/ops/<family>.grad.ts, loaded here), gradient checkpointing and dynamic loss scaling.
 * @example
 * import { grad, markTrainable } from 'hypersd/autograd';
 * const { loss, grads } = grad(() => mean(mul(d, d)), [w]);
 */
import '../ops/gemm.grad';
import '../ops/conv.grad';
import '../ops/attention.grad';
import '../ops/norm.grad';
import '../ops/activation.grad';
import '../ops/elementwise.grad';
import '../ops/shape.grad';
import '../ops/embedding.grad';
import '../ops/unary.grad';

export { grad, noGrad, markTrainable, isTrainable, Tape, type GradOptions, type GradResult } from './tape';
export { checkpoint } from './checkpoint';
export { DynamicLossScaler, hasInfOrNaN, type LossScalerOptions } from './loss_scale';
export { registerGradient, registeredGradients, type GradContext, type GradFn, type GradSave } from './registry';
export { conv2dBackwardInput, conv2dBackwardWeight } from '../ops/conv.grad';
