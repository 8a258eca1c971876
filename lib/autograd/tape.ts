/**
 * Reverse-mode autograd on a tape.
 *
 * `grad(fn, params)` runs fn with a tape listening to every op (lib/ops/runtime.ts `setOpHook`) and every
 * reshape view (lib/tensor `setViewHook`), then walks the tape backwards from the loss. What gets recorded is
 * pruned to the path from the parameters: an op is recorded only when one of its inputs depends on a
 * parameter, so a frozen base network costs nothing on the tape, and its gradient function is told which
 * inputs need a gradient (`needs(i)`), so no weight-gradient kernel runs for a frozen weight.
 *
 * Values: the tape tracks, per tensor object, the value it currently holds ("depends on a parameter" or
 * not). An op writing its output in place (matmul / conv2d with beta != 0, or an output that is also an
 * input) gives the tensor a new value; the old one becomes an input of the new (C_old gets beta * dy).
 * Writing into a reshape view updates the viewed tensor's value too (how `mean` writes its result).
 *
 * Memory: the tape keeps alive only what gradients declared they read (registerGradient's `save`), as
 * aliases (views sharing the storage), so the forward's `tidy` scopes still free everything else. Each
 * alias is freed as soon as the last node reading it has run backward, and the tape drops the rest when
 * backward ends. A tensor written in place after it was saved is caught (write counts per tensor), as in
 * PyTorch.
 *
 * Mixed precision: every gradient on the tape is f32, whatever the dtype of the forward tensors (f16/bf16
 * activations and weights get f32 gradients).
 */
import { Tensor, keep, tidy, full, zeros, setViewHook, type DType } from '../tensor';
import { native } from '../native';
import { add, affine } from '../ops/elementwise';
import { cast } from '../ops/shape';
import { setOpHook, shapeStr, type Attrs, type OpHook } from '../ops/runtime';
import { getGradient, type GradContext, type GradFn, type SaveSelection } from './registry';

// ---- trainable marks ----
const trainable = new WeakSet<Tensor>();

/** Marks t as a parameter to train (or unmarks it): grad(fn) without a params list differentiates these. */
export function markTrainable<T extends Tensor>(t: T, on = true): T {
  if (!(t instanceof Tensor)) throw new Error('markTrainable: expected a Tensor');
  if (on) trainable.add(t);
  else trainable.delete(t);
  return t;
}
export function isTrainable(t: Tensor): boolean {
  return trainable.has(t);
}

// ---- write counts: a saved tensor remembers its count, so a later in-place write is caught ----
const versions = new WeakMap<Tensor, number>();
const versionOf = (t: Tensor): number => versions.get(t) ?? 0;
const bump = (t: Tensor): void => void versions.set(t, versionOf(t) + 1);

// ---- recorders: a stack, so backward (null: record nothing) and checkpoint recompute can nest ----
interface Recorder {
  onOp(op: string, inputs: readonly Tensor[], outputs: readonly Tensor[], attrs: Attrs): void;
  onView(from: Tensor, view: Tensor): void;
}
const stack: (Recorder | null)[] = [];
let prevOpHook: OpHook | null = null;
let prevViewHook: ((from: Tensor, view: Tensor) => void) | null = null;

function opHook(op: string, inputs: readonly Tensor[], outputs: readonly Tensor[], attrs: Attrs): void {
  if (prevOpHook) prevOpHook(op, inputs, outputs, attrs);
  const r = stack[stack.length - 1];
  if (r) r.onOp(op, inputs, outputs, attrs);
  for (const o of outputs) bump(o);
}
function viewHook(from: Tensor, view: Tensor): void {
  if (prevViewHook) prevViewHook(from, view);
  const r = stack[stack.length - 1];
  if (r) r.onView(from, view);
}

/** @internal */
export function pushRecorder(r: Recorder | null): void {
  if (stack.length === 0) {
    prevOpHook = setOpHook(opHook);
    prevViewHook = setViewHook(viewHook);
  }
  stack.push(r);
}
/** @internal */
export function popRecorder(): void {
  stack.pop();
  if (stack.length === 0) {
    setOpHook(prevOpHook);
    setViewHook(prevViewHook);
    prevOpHook = prevViewHook = null;
  }
}
/** @internal whether a recorder that may hold tensors for later (a tape, a checkpoint's probe) is active anywhere
 * in the stack, even under a noGrad scope: a layer may then not reuse a tensor's storage in place. */
export function recording(): boolean {
  return stack.some((r) => r !== null);
}
/** @internal the tape recording right now, if any. */
export function currentTape(): Tape | null {
  const r = stack[stack.length - 1];
  return r instanceof Tape ? r : null;
}

/** Runs fn without recording anything on an active tape (optimizer steps, EMA updates, metrics). */
export function noGrad<T>(fn: () => T): T {
  pushRecorder(null);
  try {
    return fn();
  } finally {
    popRecorder();
  }
}

/** A new JS handle on t's storage: freeing t does not free it. */
function aliasOf(t: Tensor): Tensor {
  return keep(new Tensor(native().view(t.handle('autograd: tensor'), t.shape.slice(), null, null), t.shape, t.dtype, t.device));
}

// ---- the tape ----
/** One value a tensor holds on the tape (a tensor written in place holds several in turn). */
class Value {
  constructor(readonly shape: readonly number[], readonly dtype: DType) {}
}

interface Saved { orig: Tensor; alias: Tensor; version: number; refs: number }

interface Node {
  op: string;
  attrs: Attrs;
  fn: GradFn | null;
  inVals: (Value | null)[];
  outVals: Value[];
  inShapes: (readonly number[])[];
  inDtypes: DType[];
  outShapes: (readonly number[])[];
  savedIn: (Saved | null)[];
  savedOut: (Saved | null)[];
  /** The old value of output 0 of an op that accumulates into it (beta != 0): it receives beta * dy. */
  accum: { value: Value; beta: number } | null;
}

function selected(sel: SaveSelection, i: number): boolean {
  return sel === 'all' || (sel !== 'none' && sel.includes(i));
}

export class Tape implements Recorder {
  private readonly values = new WeakMap<Tensor, Value>();
  private readonly leaves = new Map<Tensor, Value>();
  private readonly viewBase = new WeakMap<Tensor, Tensor>();
  private readonly saved = new Map<Tensor, Saved>();
  private readonly aliases = new Set<Tensor>();
  private readonly nodes: Node[] = [];

  /** isSource: the tensors to differentiate with respect to (the parameters). */
  constructor(readonly isSource: (t: Tensor) => boolean) {}

  /** Ops recorded so far (for tests and debugging). */
  get recordedOps(): string[] {
    return this.nodes.map((n) => n.op);
  }

  /** The value t holds on this tape when it depends on a source; null otherwise. */
  valueOf(t: Tensor): Value | null {
    const v = this.values.get(t);
    if (v) return v;
    if (!this.isSource(t)) return null;
    const leaf = new Value(t.shape, t.dtype);
    this.leaves.set(t, leaf);
    this.values.set(t, leaf);
    return leaf;
  }
  dependsOnSource(t: Tensor): boolean {
    return this.values.has(t);
  }

  private save(t: Tensor, version: number): Saved {
    let s = this.saved.get(t);
    if (s && s.version === version) {
      s.refs++;
      return s;
    }
    s = { orig: t, alias: aliasOf(t), version, refs: 1 };
    this.saved.set(t, s);
    this.aliases.add(s.alias);
    return s;
  }
  private release(s: Saved | null): void {
    if (!s || --s.refs > 0) return;
    s.alias.dispose();
    this.aliases.delete(s.alias);
    if (this.saved.get(s.orig) === s) this.saved.delete(s.orig);
  }

  onOp(op: string, inputs: readonly Tensor[], outputs: readonly Tensor[], attrs: Attrs): void {
    const inVals = inputs.map((t) => this.valueOf(t));
    const beta = typeof attrs.beta === 'number' ? attrs.beta : 0;
    const accVal = beta !== 0 && outputs.length > 0 ? this.valueOf(outputs[0]) : null;
    if (!accVal && !inVals.some((v) => v)) {
      for (const o of outputs) {
        this.values.delete(o);
        this.syncBase(o);
      }
      return;
    }
    const spec = getGradient(op);
    // Inputs are saved as they are now; outputs as they will be once this op's write is counted.
    const inSel = spec ? (typeof spec.save.inputs === 'function' ? spec.save.inputs(inVals.map((v) => !!v), attrs) : spec.save.inputs) : 'none';
    const savedIn = inputs.map((t, i) => (selected(inSel, i) ? this.save(t, versionOf(t)) : null));
    const savedOut = outputs.map((t, i) => (spec && selected(spec.save.outputs, i) ? this.save(t, versionOf(t) + 1) : null));
    const node: Node = {
      op, attrs, fn: spec?.fn ?? null, inVals,
      outVals: outputs.map((o) => new Value(o.shape, o.dtype)),
      inShapes: inputs.map((t) => t.shape), inDtypes: inputs.map((t) => t.dtype), outShapes: outputs.map((t) => t.shape),
      savedIn, savedOut, accum: accVal ? { value: accVal, beta } : null,
    };
    this.nodes.push(node);
    outputs.forEach((o, k) => {
      this.values.set(o, node.outVals[k]);
      this.syncBase(o);
    });
  }

  onView(from: Tensor, view: Tensor): void {
    this.viewBase.set(view, from);
    const v = this.valueOf(from);
    if (v) this.recordReshape(v, from.shape, view);
  }

  private recordReshape(v: Value, fromShape: readonly number[], to: Tensor): void {
    const out = new Value(to.shape, to.dtype);
    this.nodes.push({
      op: 'reshape', attrs: {}, fn: (ctx) => [ctx.dy[0]!.reshape(fromShape)], inVals: [v], outVals: [out],
      inShapes: [fromShape], inDtypes: [v.dtype], outShapes: [to.shape], savedIn: [null], savedOut: [null], accum: null,
    });
    this.values.set(to, out);
  }

  /** A write into a reshape view is a write into the tensor it views. */
  private syncBase(view: Tensor): void {
    const base = this.viewBase.get(view);
    if (!base) return;
    const v = this.values.get(view);
    if (v) this.recordReshape(v, view.shape, base);
    else this.values.delete(base);
    bump(base);
    this.syncBase(base);
  }

  /**
   * @internal Records one node with a custom gradient over `inputs` (the first `nSaved` of them kept for
   * backward); returns false (nothing recorded) when no input depends on a source.
   */
  recordCustom(op: string, inputs: readonly Tensor[], nSaved: number, outputs: readonly Tensor[], fn: GradFn): boolean {
    const inVals = inputs.map((t) => this.valueOf(t));
    if (!inVals.some((v) => v)) return false;
    const node: Node = {
      op, attrs: {}, fn, inVals, outVals: outputs.map((o) => new Value(o.shape, o.dtype)),
      inShapes: inputs.map((t) => t.shape), inDtypes: inputs.map((t) => t.dtype), outShapes: outputs.map((t) => t.shape),
      savedIn: inputs.map((t, i) => (i < nSaved ? this.save(t, versionOf(t)) : null)), savedOut: outputs.map(() => null), accum: null,
    };
    this.nodes.push(node);
    outputs.forEach((o, k) => this.values.set(o, node.outVals[k]));
    return true;
  }

  /**
   * Backpropagates the gradients `dy` of `roots` (pairs [tensor, dy]; dy is read, not taken over) through the
   * tape; returns the f32 gradient of every source reached. The tape's saved tensors are freed as it goes.
   */
  backward(roots: readonly (readonly [Tensor, Tensor])[]): Map<Tensor, Tensor> {
    pushRecorder(null);
    const grads = new Map<Value, Tensor>();
    try {
      for (const [t, dy] of roots) {
        // a root that no op touched but is itself a source (the loss is a parameter, or a checkpointed fn passes an
        // input through): its gradient is the seed (it had been dropped: zeros; session 28, found by probing)
        const v = this.valueOf(t);
        if (!v) continue;
        if (dy.size !== t.size) throw new Error(`autograd: the gradient seed ${shapeStr(dy.shape)} does not fit ${shapeStr(t.shape)}`);
        this.accumulate(grads, v, this.asGrad(aliasOf(dy), v.shape));
      }
      for (let i = this.nodes.length - 1; i >= 0; --i) {
        const node = this.nodes[i];
        const dys = node.outVals.map((v) => grads.get(v) ?? null);
        node.outVals.forEach((v) => grads.delete(v));
        try {
          if (dys.some((d) => d)) this.step(node, dys, grads);
        } finally {
          for (const d of dys) d?.dispose();
          this.releaseNode(node);
        }
      }
      const out = new Map<Tensor, Tensor>();
      for (const [t, v] of this.leaves) {
        const g = grads.get(v);
        if (g) {
          out.set(t, g);
          grads.delete(v);
        }
      }
      return out;
    } finally {
      for (const g of grads.values()) g.dispose();
      popRecorder();
    }
  }

  private step(node: Node, dys: (Tensor | null)[], grads: Map<Value, Tensor>): void {
    if (!node.fn) {
      throw new Error(`autograd: op '${node.op}' has no registered gradient, but a gradient flows through it ` +
        `(inputs ${node.inShapes.map(shapeStr).join(', ')})`);
    }
    const ctx = this.context(node, dys);
    const res = tidy(() => node.fn!(ctx));
    const claimed = new Set<Tensor>(dys.filter((d): d is Tensor => d !== null));
    const unused: Tensor[] = [];
    node.inVals.forEach((v, k) => {
      const g = res[k];
      if (!g) return;
      if (!v) {
        unused.push(g);
        return;
      }
      const n = node.inShapes[k].reduce((a, b) => a * b, 1);
      if (!(g instanceof Tensor) || g.size !== n)
        throw new Error(`autograd: the gradient of '${node.op}' for input ${k} is ${g instanceof Tensor ? shapeStr(g.shape) : String(g)}, ` +
          `expected ${shapeStr(node.inShapes[k])}`);
      const owned = claimed.has(g) || this.aliases.has(g) ? aliasOf(g) : g;
      claimed.add(g);
      this.accumulate(grads, v, this.asGrad(owned, v.shape));
    });
    for (const g of unused) if (!claimed.has(g) && !this.aliases.has(g)) g.dispose();
    if (node.accum && dys[0]) {
      const { value, beta } = node.accum;
      this.accumulate(grads, value, beta === 1 ? this.asGrad(aliasOf(dys[0]), value.shape) : affine(dys[0], beta, 0));
    }
  }

  /** g (owned) as an f32 tensor of the given shape. */
  private asGrad(g: Tensor, shape: readonly number[]): Tensor {
    let t = g;
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      t = g.reshape(shape);
      g.dispose();
    }
    if (t.dtype !== 'f32') {
      const c = cast(t, 'f32');
      t.dispose();
      t = c;
    }
    return t;
  }

  private accumulate(grads: Map<Value, Tensor>, v: Value, g: Tensor): void {
    const prev = grads.get(v);
    if (!prev) {
      grads.set(v, g);
      return;
    }
    grads.set(v, add(prev, g));
    prev.dispose();
    g.dispose();
  }

  private context(node: Node, dys: (Tensor | null)[]): GradContext {
    const savedTensor = (s: Saved | null, what: string, i: number): Tensor => {
      if (!s) throw new Error(`autograd: the gradient of '${node.op}' reads ${what} ${i}, which its registerGradient 'save' does not name`);
      if (versionOf(s.orig) !== s.version)
        throw new Error(`autograd: ${what} ${i} ${shapeStr(s.orig.shape)} of '${node.op}' was written in place after the op ran, ` +
          'but its gradient needs the old value');
      return s.alias;
    };
    return {
      op: node.op, attrs: node.attrs, inShapes: node.inShapes, inDtypes: node.inDtypes, outShapes: node.outShapes, dy: dys,
      needs: (i) => !!node.inVals[i],
      input: (i) => savedTensor(node.savedIn[i] ?? null, 'input', i),
      output: (i) => savedTensor(node.savedOut[i] ?? null, 'output', i),
    };
  }

  private releaseNode(node: Node): void {
    for (const s of node.savedIn) this.release(s);
    for (const s of node.savedOut) this.release(s);
    node.savedIn = [];
    node.savedOut = [];
  }

  /** Frees every saved tensor still held (after backward, or when the forward failed). */
  dispose(): void {
    for (const node of this.nodes) this.releaseNode(node);
    this.nodes.length = 0;
  }
}

export interface GradOptions {
  /** The gradient of the loss to start from (default: 1 for a one-element loss; required otherwise). */
  dLoss?: Tensor;
}
export interface GradResult {
  /** fn's result. */
  loss: Tensor;
  /** f32 gradient per parameter (in params order; zeros for a parameter the loss does not reach). */
  grads: Map<Tensor, Tensor>;
  /** The ops the tape recorded, in forward order (ops off the parameters' path are not among them). */
  ops: string[];
}

/**
 * Runs fn on a tape and returns its loss and the gradients of the loss with respect to params (default:
 * every tensor marked with markTrainable that fn used). fn runs inside a tidy scope.
 * @example
 * const { loss, grads } = grad(() => mseLoss(unet.forward(inputs), target), loraParams);
 * const { grads: g2 } = grad(() => model(x), [w], { dLoss: upstream }); // a non-scalar output
 */
export function grad(fn: () => Tensor, params?: readonly Tensor[], opts: GradOptions = {}): GradResult {
  if (params) params.forEach((p, i) => {
    if (!(p instanceof Tensor)) throw new Error(`grad: params[${i}] is not a Tensor`);
  });
  // A gradient of a gradient: the inner grad's backward records nothing on the outer tape, so the outer gradient
  // through it would be silently zero. (Inside noGrad, where the outer tape is not recording, grad is fine.) Any
  // recorder on top counts: inside a checkpoint's forward it is a Probe (and the recompute would fail at backward).
  if (stack.length > 0 && stack[stack.length - 1] !== null) throw new Error('grad: called while another grad is recording (a gradient of a gradient is not supported); run the inner grad inside noGrad if its result is a constant');
  const set = params ? new Set(params) : null;
  const tape = new Tape(set ? (t) => set.has(t) : isTrainable);
  let loss: Tensor;
  pushRecorder(tape);
  try {
    loss = tidy(fn);
  } catch (e) {
    tape.dispose();
    throw e;
  } finally {
    popRecorder();
  }
  const seed = checkSeed(loss, opts.dLoss, tape);
  const ops = tape.recordedOps;
  try {
    const got = tape.backward([[loss, seed]]);
    if (!params) return { loss, grads: got, ops };
    const grads = new Map<Tensor, Tensor>();
    for (const p of params) if (!grads.has(p)) grads.set(p, got.get(p) ?? zeros(p.shape, { device: p.device }));
    return { loss, grads, ops };
  } finally {
    if (seed !== opts.dLoss) seed.dispose();
    tape.dispose();
  }
}

function checkSeed(loss: unknown, dLoss: Tensor | undefined, tape: Tape): Tensor {
  if (!(loss instanceof Tensor)) {
    tape.dispose();
    throw new Error(`grad: fn must return a Tensor (the loss), got ${String(loss)}`);
  }
  if (dLoss) {
    if (!(dLoss instanceof Tensor) || dLoss.size !== loss.size) {
      tape.dispose();
      throw new Error(`grad: dLoss ${dLoss instanceof Tensor ? shapeStr(dLoss.shape) : String(dLoss)} must have the loss's shape ${shapeStr(loss.shape)}`);
    }
    // a seed made on another device (a loss scaler's seedFor() without a device, say) follows the loss
    return dLoss.device === loss.device ? dLoss : dLoss.to(loss.device);
  }
  if (loss.size !== 1) {
    tape.dispose();
    throw new Error(`grad: the loss ${shapeStr(loss.shape)} has more than one element: reduce it (mean) or pass dLoss`);
  }
  return full(loss.shape, 1, { device: loss.device });
}
