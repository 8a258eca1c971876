/**
 * bench/gn_ncu_table: reads one bench/gpu-check.sh run's $OUT/ncu_gn_variants.csv and gpu-check.log (the
 * ncu-gn-variants stage: bench/gpu_kernels.ts GN_ONLY=1 under Nsight Compute) and prints each group-norm variant's
 * statistics + apply kernel durations (medians of the reps, us) beside the same-size SiLU kernel:
 *
 *   npx tsx bench/gn_ncu_table.ts <folder holding both files>
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const dir = process.argv[2];
if (!dir) throw new Error('usage: npx tsx bench/gn_ncu_table.ts <folder with ncu_gn_variants.csv and gpu-check.log>');
const parseCsv = (line: string): string[] => (line.match(/"([^"]*)"/g) ?? []).map((f) => f.slice(1, -1));
const lines = fs.readFileSync(path.join(dir, 'ncu_gn_variants.csv'), 'utf8').split('\n');
const hi = lines.findIndex((l) => l.includes('"Kernel Name"'));
const head = parseCsv(lines[hi]);
const [ki, vi, ui] = ['Kernel Name', 'Metric Value', 'Metric Unit'].map((k) => head.indexOf(k));
const kernels = lines.slice(hi + 1).filter((l) => l.startsWith('"')).map(parseCsv)
  .map((r) => ({ name: r[ki], us: Number(r[vi].replace(/,/g, '')) / (r[ui] === 'nsecond' || r[ui] === 'ns' ? 1000 : 1) }))
  .filter((k) => !k.name.includes('rand_kernel'));
const log = fs.readFileSync(path.join(dir, 'gpu-check.log'), 'utf8').split('\n');
const a = log.findIndex((l) => l.startsWith('=== [ncu-gn-variants]'));
const b = log.findIndex((l, i) => i > a && l.startsWith('=== ['));
const sections = log.slice(a, b).filter((l) => l.startsWith('-- ')).map((l) => l.slice(3).trim());
const median = (v: number[]): number => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)];
let p = 0;
for (const s of sections) {
  if (s.startsWith('group_norm')) {
    const ks = kernels.slice(p, p + 6);
    p += 6;
    const st = median(ks.filter((k) => k.name.includes('stats')).map((k) => k.us));
    const ap = median(ks.filter((k) => !k.name.includes('stats')).map((k) => k.us));
    console.log(`${s.padEnd(84)} ${st.toFixed(1).padStart(6)} + ${ap.toFixed(1).padStart(6)} = ${(st + ap).toFixed(1).padStart(6)} us`);
  } else {
    const ks = kernels.slice(p, p + 3);
    p += 3;
    console.log(`${s.padEnd(84)} ${median(ks.map((k) => k.us)).toFixed(1).padStart(24)} us`);
  }
}
