import { mulberry32 } from '../../test/helpers/mulberry32';

/** The fuzzers' seeded generator (test/helpers/check.ts's mulberry32): uniform, ints, picks, normals. */
export function rng(seed: number) {
  const next = mulberry32(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(a: readonly T[]): T => a[Math.floor(next() * a.length)];
  const normal = () => {
    const u1 = next() || 1e-12, u2 = next();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  };
  const randn = (n: number, scale = 1) => {
    const o = new Float64Array(n);
    for (let i = 0; i < n; i++) o[i] = normal() * scale;
    return o;
  };
  return { next, int, pick, normal, randn };
}
