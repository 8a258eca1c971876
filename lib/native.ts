/**
 * Loads the native addon. Order: HYPERSD_ADDON (an explicit path, for development builds), then
 * node-gyp-build (prebuilds/ made by `npm run prebuilds`, then build/Release from `npm install`).
 */
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
  memory(): { cpu: NativeStats; cuda: NativeStats; tensors: number; bytes: number };
  emptyCache(device: string): void;
  resetPeak(device: string): void;
  setThreads(n: number): void;
  threads(): number;
  cudaStatus(): { available: boolean; reason: string };
  ops(): { name: string; cpu: boolean; cuda: boolean }[];
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
