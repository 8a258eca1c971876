/** The fuzzers' seeded generator (mulberry32, as test/helpers/check.ts's randn): uniform, ints, picks, normals. */
export function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
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
