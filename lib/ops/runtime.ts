/**
 * The op runtime: argument checks shared by the op wrappers, and `runOp`, the one door to the native
 * op table. Wrappers check shapes/dtypes and throw a clear Error (op, argument, both shapes) before
 * anything is enqueued, then allocate outputs and enqueue.
 */
import { enqueuer, type Handle } from '../native';
import { Tensor, empty, type DType } from '../tensor';
import { isFloat } from '../tensor/dtype';

export type Attrs = Record<string, number | boolean | number[] | undefined>;

/** Called after every op is enqueued (autograd's tape records through it; tests count launches with it). */
export type OpHook = (op: string, inputs: readonly Tensor[], outputs: readonly Tensor[], attrs: Attrs) => void;
let opHook: OpHook | null = null;
/** Installs the op hook (null removes it) and returns the previous one, so a new hook can chain to it. */
export function setOpHook(fn: OpHook | null): OpHook | null {
  const prev = opHook;
  opHook = fn;
  return prev;
}

const opIds = new Map<string, number>();
const noAttrs: Attrs = Object.freeze({});
// Attributes that are all numbers or booleans (nearly every op's) go to the addon as a key set registered once
// per list of names (attrKeys) and the values in this scratch array (runFlat): the addon's enumeration of an
// attribute object cost ~0.4 us an attribute, a third of a typical op's enqueue (session 23: silu with three
// attributes 3.45 -> 2.80 us). Anything else (arrays of numbers) goes as the object (run).
const keySets = new Map<string, number>();
const attrVals = new Float64Array(32);

export function runOp(op: string, inputs: readonly Tensor[], outputs: readonly Tensor[], attrs: Attrs = noAttrs): void {
  const ins = new Array<Handle>(inputs.length), outs = new Array<Handle>(outputs.length);
  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i];
    if (!(t instanceof Tensor)) throw new Error(`${op}: input ${i} is not a Tensor`);
    ins[i] = t.handleFor(op, 'input', i);
  }
  for (let i = 0; i < outputs.length; i++) outs[i] = outputs[i].handleFor(op, 'output', i);
  // The op's number from the addon, looked up once per name (no name lookup per call); undefined attribute
  // values are skipped by the addon.
  let id = opIds.get(op);
  const nat = enqueuer();
  if (id === undefined) opIds.set(op, (id = nat.opId(op)));
  if (attrs === noAttrs) nat.run(id, ins, outs);  // no attributes: nothing for the addon to enumerate
  else {
    let sig = '', n = 0, flat = true;
    for (const k in attrs) {
      const v = attrs[k];
      if (v === undefined) continue;
      if (typeof v === 'number') attrVals[n] = v;
      else if (typeof v === 'boolean') attrVals[n] = v ? 1 : 0;
      else {
        flat = false;
        break;
      }
      sig = n === 0 ? k : `${sig},${k}`;
      if (++n === attrVals.length) {
        flat = false;
        break;
      }
    }
    if (!flat) nat.run(id, ins, outs, attrs);
    else {
      let ks = keySets.get(sig);
      if (ks === undefined) {
        const names = n === 0 ? [] : sig.split(',');
        // a name with a comma in it (no op has one) would not split back: such attributes go as the object
        ks = names.length === n ? nat.attrKeys(names) : -1;
        keySets.set(sig, ks);
      }
      if (ks < 0) nat.run(id, ins, outs, attrs);
      else nat.runFlat(id, ins, outs, ks, attrVals);
    }
  }
  if (opHook) {
    const clean: Attrs = {};
    for (const [k, v] of Object.entries(attrs)) if (v !== undefined) clean[k] = v;
    opHook(op, inputs, outputs, clean);
  }
}

export function shapeStr(s: readonly number[]): string {
  return `[${s.join(',')}]`;
}
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
export function checkFloat(op: string, name: string, t: Tensor): void {
  if (!(t instanceof Tensor)) throw new Error(`${op}: ${name} must be a Tensor`);
  if (!isFloat(t.dtype)) throw new Error(`${op}: ${name} must be a float tensor, got ${t.dtype}`);
}
export function checkRank(op: string, name: string, t: Tensor, rank: number | [number, number]): void {
  const [lo, hi] = Array.isArray(rank) ? rank : [rank, rank];
  if (t.rank < lo || t.rank > hi)
    throw new Error(`${op}: ${name} must have rank ${lo === hi ? lo : `${lo}..${hi}`}, got shape ${shapeStr(t.shape)}`);
}
export function checkSameDevice(op: string, ts: Record<string, Tensor | undefined>): void {
  let firstKey = '', first: Tensor | undefined;
  for (const k in ts) {
    const t = ts[k];
    if (!t) continue;
    if (!first) {
      firstKey = k;
      first = t;
    } else if (t.device !== first.device) throw new Error(`${op}: ${k} is on ${t.device} but ${firstKey} is on ${first.device}`);
  }
}
/** Output allocation on the inputs' device. */
export function out(shape: readonly number[], like: Tensor, dtype: DType = like.dtype): Tensor {
  return empty(shape, { dtype, device: like.device });
}
