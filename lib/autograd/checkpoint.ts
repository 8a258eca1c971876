/**
 * Gradient checkpointing: `checkpoint(fn, inputs)` runs fn without keeping its intermediates on the tape and
 * records one node instead; its backward re-runs fn on a fresh tape and backpropagates through that. Memory
 * for a UNet block drops from all its activations to its inputs, for the price of one more forward.
 *
 * fn receives the inputs as arguments and must read every activation through them (parameters may be
 * read directly): the forward's tidy scopes free other activations before backward needs them again. A
 * tensor that needs a gradient and is read by fn without being an input is an Error at once. The first run
 * records nothing but notes the parameters fn reads, so the node knows which gradients it owes.
 */
import { Tensor, tidy } from '../tensor';
import type { Attrs } from '../ops/runtime';
import { Tape, currentTape, pushRecorder, popRecorder } from './tape';

/** Watches a checkpointed forward: which sources it reads, and whether it reads a dependent non-input. */
class Probe {
  readonly sources = new Set<Tensor>();
  external: { op: string; t: Tensor } | null = null;
  private readonly viewOf = new WeakMap<Tensor, Tensor>();
  constructor(private readonly tape: Tape, private readonly inputs: ReadonlySet<Tensor>) {}
  private root(t: Tensor): Tensor {
    let r = t;
    for (let v = this.viewOf.get(r); v; v = this.viewOf.get(r)) r = v;
    return r;
  }
  onOp(op: string, inputs: readonly Tensor[], _outputs: readonly Tensor[], _attrs: Attrs): void {
    for (const x of inputs) {
      const t = this.root(x);
      if (this.inputs.has(t)) continue;
      if (this.tape.isSource(t)) this.sources.add(t);
      else if (!this.external && this.tape.dependsOnSource(t)) this.external = { op, t };
    }
  }
  onView(from: Tensor, view: Tensor): void {
    this.viewOf.set(view, from);
  }
}

/**
 * fn(...inputs), recomputed during backward instead of kept on the tape. Without an active tape it is
 * just fn(...inputs) in a tidy scope.
 * @example
 * h = checkpoint((x, e) => resnet.forward(x, e), [h, embSilu]);
 */
export function checkpoint<T extends Tensor | Tensor[]>(fn: (...inputs: Tensor[]) => T, inputs: readonly Tensor[]): T {
  inputs.forEach((t, i) => {
    if (!(t instanceof Tensor)) throw new Error(`checkpoint: inputs[${i}] is not a Tensor`);
  });
  const tape = currentTape();
  if (!tape) return tidy(() => fn(...inputs));
  const probe = new Probe(tape, new Set(inputs));
  pushRecorder(probe);
  let result: T;
  try {
    result = tidy(() => fn(...inputs));
  } finally {
    popRecorder();
  }
  const outs: Tensor[] = Array.isArray(result) ? result : [result as Tensor];
  if (probe.external) {
    for (const o of outs) o.dispose();
    const { op, t } = probe.external;
    throw new Error(`checkpoint: fn reads a tensor [${t.shape}] (in op '${op}') that needs a gradient but is not one of ` +
      'the checkpoint\'s inputs: pass it in inputs');
  }
  const sources = [...probe.sources];
  const n = inputs.length;
  tape.recordCustom('checkpoint', [...inputs, ...sources], n, outs, (ctx) => {
    const saved = inputs.map((_, i) => ctx.input(i));
    const want = new Set<Tensor>(sources);
    saved.forEach((a, i) => {
      if (ctx.needs(i)) want.add(a);
    });
    const inner = new Tape((t) => want.has(t));
    let again: T;
    pushRecorder(inner);
    try {
      again = tidy(() => fn(...saved));
    } catch (e) {
      inner.dispose();
      throw new Error(`checkpoint: recomputing the forward failed (every activation fn reads must be one of its inputs): ${(e as Error).message}`);
    } finally {
      popRecorder();
    }
    const outs2: Tensor[] = Array.isArray(again) ? again : [again as Tensor];
    try {
      const roots = outs2.flatMap((o, k) => (ctx.dy[k] ? [[o, ctx.dy[k]!] as const] : []));
      const g = inner.backward(roots);
      return [...saved.map((a) => g.get(a) ?? null), ...sources.map((s) => g.get(s) ?? null)];
    } finally {
      inner.dispose();
      for (const o of outs2) o.dispose();
    }
  });
  return result;
}
