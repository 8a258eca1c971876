// The built package: `require('hypersd')` and `import ... from 'hypersd'` both work from dist/ (built here
// with `npm run build` when missing), through the package.json exports map, and reach the native addon.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';

const ROOT = path.resolve(__dirname, '..');

test('dist builds, and require/import of the package both work', () => {
  if (!fs.existsSync(path.join(ROOT, 'dist/index.js')) || !fs.existsSync(path.join(ROOT, 'dist/index.mjs'))) {
    const b = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
    assert.is(b.status, 0, b.stderr);
  }
  // A scratch project whose node_modules/hypersd links to this package.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-pkg-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'hypersd'), 'dir');
  const env = { ...process.env };
  const cjs = spawnSync(process.execPath, ['-e',
    "const h=require('hypersd'); const t=h.tensor([1,2,3]); t.data().then(d=>{console.log(typeof h.loadPipeline, typeof h.train.AdamW, typeof h.ops.adamwStep, typeof h.ops.exp, typeof h.autograd.grad, Array.from(d).join(','))})"],
  { cwd: dir, encoding: 'utf8', env });
  assert.is(cjs.status, 0, cjs.stderr);
  assert.is(cjs.stdout.trim(), 'function function function function function 1,2,3');
  fs.writeFileSync(path.join(dir, 'm.mjs'),
    "import { tensor, loadPipeline } from 'hypersd';\nimport h from 'hypersd';\nconst d = await tensor([4, 5]).data();\nconsole.log(typeof loadPipeline, typeof h.ops.matmul, Array.from(d).join(','));\n");
  const esm = spawnSync(process.execPath, ['m.mjs'], { cwd: dir, encoding: 'utf8', env });
  assert.is(esm.status, 0, esm.stderr);
  assert.is(esm.stdout.trim(), 'function function 4,5');
  const types = fs.readFileSync(path.join(ROOT, 'dist/index.d.ts'), 'utf8');
  assert.match(types, /loadPipeline/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the C++ example links the core without Node and runs one op', () => {
  // `npm install` (cmake-js) builds it beside the addon; otherwise build it here with plain CMake.
  const addonDir = process.env.HYPERSD_ADDON ? path.dirname(path.dirname(path.resolve(process.env.HYPERSD_ADDON))) : path.join(ROOT, 'build');
  let exe = path.join(addonDir, 'hypersd_example');
  let tmp: string | null = null;
  if (!fs.existsSync(exe)) {
    tmp = path.join(os.tmpdir(), `hypersd-native-${process.pid}`);
    const cfg = spawnSync('cmake', ['-S', ROOT, '-B', tmp, '-DCMAKE_BUILD_TYPE=Release'], { encoding: 'utf8', env: { ...process.env, HYPERSD_CUDA: '0' } });
    assert.is(cfg.status, 0, cfg.stderr);
    const bld = spawnSync('cmake', ['--build', tmp, '--target', 'hypersd_example', '-j', '2'], { encoding: 'utf8' });
    assert.is(bld.status, 0, bld.stdout + bld.stderr);
    exe = path.join(tmp, 'hypersd_example');
  }
  const run = spawnSync(exe, { encoding: 'utf8' });
  assert.is(run.status, 0, run.stdout + run.stderr);
  assert.match(run.stdout, /\[\[4, 5\], \[10, 11\]\]/);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test.run();
