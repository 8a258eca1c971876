import * as hs from '../lib';
const filled = (n: number, s: number) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = Math.sin(i * 0.37 + s) * 0.1; return a; };
async function main() {
  for (const [S, Ci, Co] of [[512, 256, 128], [256, 512, 256], [64, 320, 640]]) {
    const x = hs.tensor(filled(S * S * Ci, 1), [1, S, S, Ci]), w = hs.tensor(filled(Co * Ci, 2), [Co, 1, 1, Ci]), b = hs.tensor(filled(Co, 3), [Co]);
    const x2 = x.reshape([S * S, Ci]), w2 = w.reshape([Co, Ci]);
    const ts: number[][] = [[], []];
    for (let r = 0; r < 5; r++) for (let k = 0; k < 2; k++) {
      const t0 = performance.now();
      const y = k === 0 ? hs.ops.conv2d(x, w, b) : hs.ops.linear(x2, w2, b);
      y.dispose(); await hs.sync('cpu'); ts[k].push(performance.now() - t0);
    }
    const fl = 2 * S * S * Ci * Co;
    const med = (a: number[]) => [...a].sort((p, q) => p - q)[2];
    console.log(`1x1 ${S}x${S} ${Ci}->${Co}: conv ${med(ts[0]).toFixed(1)} ms ${(fl / med(ts[0]) / 1e6).toFixed(1)} GFLOP/s, linear ${med(ts[1]).toFixed(1)} ms ${(fl / med(ts[1]) / 1e6).toFixed(1)}`);
  }
}
main();
