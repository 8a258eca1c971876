/**
 * Gradients registered per op name (the tfjs pattern): each op family's `lib/ops/<family>.grad.ts` calls
 * `registerGradient(op, fn, save)` beside the op's wrapper. `save` names the forward inputs and outputs the
 * gradient reads; the tape keeps only those alive until backward (an `add` keeps nothing, so a residual
 * add costs no memory on the tape). A gradient function returns one gradient per forward input (null where
 * `needs(i)` is false or the input is not differentiable); every gradient the tape hands around is f32.
 */
import type { DType, Tensor } from '../tensor';
import type { Attrs } from '../ops/runtime';

export interface GradContext {
  readonly op: string;
  readonly attrs: Readonly<Attrs>;
  /** Shapes and dtypes of every forward input and output (known even when the tensor was not saved). */
  readonly inShapes: readonly (readonly number[])[];
  readonly inDtypes: readonly DType[];
  readonly outShapes: readonly (readonly number[])[];
  /** A forward input the gradient declared in `save.inputs`; throws if it was written in place since. */
  input(i: number): Tensor;
  /** A forward output declared in `save.outputs`; throws if it was written in place since. */
  output(i: number): Tensor;
  /** f32 gradients of the outputs; null where no gradient flowed back. */
  readonly dy: readonly (Tensor | null)[];
  /** Whether input i needs a gradient (it lies on a path from a parameter). */
  needs(i: number): boolean;
}

export type GradFn = (ctx: GradContext) => readonly (Tensor | null | undefined)[];

export type SaveSelection = 'all' | 'none' | number[];

export interface GradSave {
  /**
   * Forward inputs the gradient reads: 'all' (default), 'none', their indices, or a function of which inputs
   * need a gradient (a frozen conv's dW is not computed, so its input x need not be kept).
   */
  inputs?: SaveSelection | ((needs: readonly boolean[], attrs: Readonly<Attrs>) => SaveSelection);
  /** Forward outputs the gradient reads (default none). */
  outputs?: 'all' | number[];
}

export interface GradSpec {
  fn: GradFn;
  save: Required<GradSave>;
}

const registry = new Map<string, GradSpec>();

/**
 * Registers op's gradient.
 * @example
 * registerGradient('silu', (ctx) => [siluBackward(ctx.input(0), ctx.dy[0]!)]);
 */
export function registerGradient(op: string, fn: GradFn, save: GradSave = {}): void {
  if (registry.has(op)) throw new Error(`autograd: a gradient for op '${op}' is already registered`);
  registry.set(op, { fn, save: { inputs: save.inputs ?? 'all', outputs: save.outputs ?? [] } });
}

export function getGradient(op: string): GradSpec | undefined {
  return registry.get(op);
}

/** Names of the ops with a registered gradient. */
export function registeredGradients(): string[] {
  return [...registry.keys()].sort();
}
