/**
 * Garbage collection on demand for tests that compare memory() counts (no --expose-gc needed: the flag is set
 * at run time and `gc` taken from a fresh context).
 */
import * as v8 from 'v8';
import * as vm from 'vm';

let gcNow: (() => void) | null = null;
/**
 * Collects the garbage now and lets the finalizers run (the addon uncounts a handle the GC collects in its
 * finalizer, which Node runs after the collection), so that tensors an earlier test dropped without disposing
 * are uncounted before a test takes memory() as its baseline: a collection during the test would otherwise
 * lower the counts below that baseline (seen once in the whole suite under ASan: 4 live handles after a
 * backward against 13 before).
 */
export async function settleGarbage(): Promise<void> {
  if (!gcNow) {
    v8.setFlagsFromString('--expose_gc');
    gcNow = vm.runInNewContext('gc') as () => void;
  }
  for (let i = 0; i < 2; i++) {
    gcNow();
    await new Promise((r) => setImmediate(r));
  }
}
