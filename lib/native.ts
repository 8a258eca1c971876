/**
 * Loads the native addon. Order: HYPERSD_ADDON (an explicit path, for development builds), then
 * node-gyp-build (prebuilds/ made by `npm run prebuilds`, then build/Release from `npm install`).
 */
import { AsyncLocalStorage } from 'async_hooks';
import * as path from 'path';

export interface NativeStats { allocatedBytes: number; cachedBytes: number; peakBytes: number; liveStorages: number }
export type Handle = { readonly __hsdHandle: unique symbol };
export interface Native {
  empty(shape: number[], dtype: string, device: string): Handle;
  fromBuffer(data: ArrayBufferView, shape: number[], dtype: string, device: string): Handle;
  view(h: Handle, shape: number[], strides: number[] | null, offset: number | null): Handle;
  /** Enqueues op (a name, or a number from opId) on the outputs' device; undefined attribute values are skipped. */
  run(op: string | number, inputs: Handle[], outputs: Handle[], attrs?: Record<string, number | boolean | number[] | undefined>): void;
  /** The number run() takes for an op name (an Error for an unknown op). */
  opId(op: string): number;
  /** The number runFlat() takes for a list of attribute names (in the order of runFlat's values). */
  attrKeys(names: string[]): number;
  /** run() by op number with numeric attributes: the names from attrKeys, values[i] the i-th name's value. */
  runFlat(op: number, inputs: Handle[], outputs: Handle[], keys: number, values: Float64Array): void;
  read(h: Handle): Promise<ArrayBuffer>;
  sync(device: string): Promise<void>;
  copyTo(h: Handle, device: string): Handle;
  dispose(h: Handle): void;
  /** Allocator statistics per device, and this thread's live (not disposed) tensor handles and their bytes (a view: 0). */
  memory(): { cpu: NativeStats; cuda: NativeStats; tensors: number; bytes: number; failedMarks: number };
  emptyCache(device: string): void;
  resetPeak(device: string): void;
  setThreads(n: number): void;
  threads(): number;
  cudaStatus(): { available: boolean; reason: string };
  ops(): { name: string; cpu: boolean; cuda: boolean }[];
  /** This thread's current client number: whose errors its syncs report and whose its enqueued ops record. */
  client(): number;
  /** A fresh client number (one per error scope). */
  newClient(): number;
  /** Sets this thread's client (see errorScope). */
  setClient(n: number): void;
  /** Drops, in stream order, the client's errors not yet thrown. */
  endClient(n: number): void;
}

let cached: Native | undefined;

/** The environment switches the native core reads, with the values it knows: a typo would otherwise be ignored. */
const ENV_VALUES: Record<string, string[]> = {
  HYPERSD_CPU_KERNELS: ['avx2', 'portable'],
  HYPERSD_CPU_MATH: ['f32', 'bf16'],
  HYPERSD_SYNC: ['0', '1'],
};
function checkEnv(): void {
  for (const [name, allowed] of Object.entries(ENV_VALUES)) {
    const v = process.env[name];
    if (v !== undefined && v !== '' && !allowed.includes(v))
      throw new Error(`hypersd: ${name}='${v}' is not one of ${allowed.map((a) => `'${a}'`).join(', ')} (or unset)`);
  }
}

export function native(): Native {
  if (cached) return cached;
  checkEnv();
  const explicit = process.env.HYPERSD_ADDON;
  try {
    if (explicit) {
      cached = require(path.resolve(explicit)) as Native;
    } else {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const load = require('node-gyp-build') as (dir: string) => Native;
      cached = load(path.resolve(__dirname, '..'));
    }
  } catch (e) {
    throw new Error(
      `hypersd: could not load the native addon (${(e as Error).message}). ` +
        'Build it with `npm install` (or `npx cmake-js compile`), or set HYPERSD_ADDON to a built hypersd.node.',
    );
  }
  return cached!;
}

// ---------- error scopes ----------
// A kernel error is thrown by the next sync of the client that queued the op. Every JS thread is one client,
// and within it each errorScope (a pipeline's queued calls run in one each) is a client of its own, carried
// across awaits by AsyncLocalStorage: a generate's sync reports its own ops' errors, not those of the caller's
// unsynced code running beside it, and the reverse. Before each call that enqueues, syncs or reads, `enqueuer`
// tells the addon whose turn it is (a thread-local number in the core; the addon's promise workers adopt it).
interface Scope { readonly id: number; live: boolean; readonly parent: Scope | undefined }
const scopes = new AsyncLocalStorage<Scope>();
let anyScope = false;  // until the first scope, every call is the thread's own: not even a getStore
let baseClient = 0, setClient = 0;

/** The addon, with this thread's client set to the error scope the caller runs in (or the thread's own). */
export function enqueuer(): Native {
  const nat = native();
  if (!anyScope) return nat;
  // a continuation that outlives its scope (a promise chain left running) belongs to the nearest enclosing scope
  // still running, or to the thread
  let s = scopes.getStore();
  while (s !== undefined && !s.live) s = s.parent;
  const want = s !== undefined ? s.id : baseClient;
  if (want !== setClient) {
    nat.setClient(want);
    setClient = want;
  }
  return nat;
}

/**
 * Runs fn in an error scope of its own: a kernel error from an op fn queues (directly or in anything it awaits)
 * is thrown by fn's own syncs and reads (`await t.data()`, `sync()`), never by code running beside it on this
 * thread, and fn's syncs do not throw the errors of ops queued outside it. An error fn never synced is dropped
 * when the scope ends (the tensors that op wrote stay failed: reading them is an Error). Scopes nest. Each
 * pipeline call runs in one.
 */
export async function errorScope<T>(fn: () => T | Promise<T>): Promise<T> {
  const nat = native();
  if (!anyScope) {
    baseClient = setClient = nat.client();
    anyScope = true;
  }
  const s: Scope = { id: nat.newClient(), live: true, parent: scopes.getStore() };
  try {
    return await scopes.run(s, fn);
  } finally {
    s.live = false;
    nat.endClient(s.id);
  }
}
