/** mulberry32: a seeded stream of uniforms in [0, 1): test/helpers/check.ts's randn and the fuzzers' generators
 * (bench/fuzz) draw from it. No imports, so a fuzzer can take it without the test helpers' settings. */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
