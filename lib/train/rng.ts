/**
 * Seeded, serialisable random numbers for training on the JS side: timesteps, data order, augmentation
 * choices. xoshiro128** (four u32 words of state, seeded through splitmix32) is small, fast and its whole
 * state fits in a checkpoint's metadata, so a resumed run draws exactly the numbers an unbroken run would.
 * Tensor noise is drawn separately with the counter-based Philox op (seed + offset, see lib/ops/random.ts),
 * whose "state" is just the offset counter.
 */

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** Mixes several integers into one 32-bit seed (e.g. [seed, epoch] or [seed, imageIndex]). */
export function hashSeed(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    const next = splitmix32((h ^ (x >>> 0)) >>> 0);
    h = (next() ^ Math.imul(Math.floor(x / 2 ** 32) >>> 0, 0x27d4eb2d)) >>> 0;
  }
  return h >>> 0;
}

export class Rng {
  private s: Uint32Array;

  constructor(seed: number | number[]) {
    const mix = splitmix32(Array.isArray(seed) ? hashSeed(...seed) : hashSeed(seed));
    this.s = Uint32Array.from([mix(), mix(), mix(), mix()]);
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }

  /** A uniformly random u32. */
  u32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  }
  /** Uniform in [0, 1) with 32 random bits. */
  float(): number {
    return this.u32() / 4294967296;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1) throw new Error(`Rng.int: n must be a positive integer, got ${n}`);
    return Math.floor(this.float() * n);
  }
  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.float();
  }
  /** Standard normal (Box-Muller, one value per call). */
  normal(): number {
    const u1 = 1 - this.float(), u2 = this.float();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  /** Fisher-Yates, in place. */
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [xs[i], xs[j]] = [xs[j], xs[i]];
    }
    return xs;
  }

  /** The whole state, for checkpoints. */
  getState(): number[] {
    return Array.from(this.s);
  }
  setState(st: readonly number[]): void {
    if (!isRngState(st))
      throw new Error(`Rng.setState: expected four u32 words (not all zero), got ${JSON.stringify(st)}`);
    this.s = Uint32Array.from(st);
  }
}

/** A valid Rng state: four u32 words, not all zero. */
export function isRngState(st: unknown): st is number[] {
  return Array.isArray(st) && st.length === 4 && st.every((v) => Number.isInteger(v) && v >= 0 && v < 2 ** 32) && !st.every((v) => v === 0);
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * Seeded data order: epoch e visits 0..n-1 in a permutation drawn from hash(seed, e). Position k of the stream
 * is (epoch floor(k / n), slot k % n), so the order is a pure function of (seed, k): resuming needs only k.
 */
export class DataOrder {
  private epoch = -1;
  private perm: number[] = [];
  constructor(readonly size: number, readonly seed: number, readonly shuffle = true) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`DataOrder: dataset size must be a positive integer, got ${size}`);
  }
  /** The dataset index at stream position k. */
  at(k: number): number {
    const e = Math.floor(k / this.size);
    if (!this.shuffle) return k % this.size;
    if (e !== this.epoch) {
      this.epoch = e;
      this.perm = new Rng([this.seed, e]).shuffle(Array.from({ length: this.size }, (_, i) => i));
    }
    return this.perm[k % this.size];
  }
  /** Indices of the batch that starts at stream position k. */
  batch(k: number, batchSize: number): number[] {
    return Array.from({ length: batchSize }, (_, i) => this.at(k + i));
  }
}
