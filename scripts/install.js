#!/usr/bin/env node
// `npm install` step: use a prebuilt addon when one matches (prebuilds/, made by `npm run prebuilds`),
// otherwise build from source with cmake-js (CUDA kernels when nvcc is found; HYPERSD_CUDA=0|1 forces),
// and fall back to node-gyp (binding.gyp, CPU only) when CMake is missing or fails. Downloads nothing.
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');
const fs = require('fs');

const root = path.resolve(__dirname, '..');
const bin = (name) => path.join(root, 'node_modules', '.bin', name);

function hasPrebuild() {
  if (process.env.HYPERSD_BUILD_FROM_SOURCE === '1') return false;
  try {
    const p = require('node-gyp-build').path(root);
    return p.includes(`${path.sep}prebuilds${path.sep}`);
  } catch {
    return false;
  }
}

function run(cmd, args) {
  console.log(`hypersd: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: process.env });
  return r.status === 0;
}

if (hasPrebuild()) {
  console.log('hypersd: using the prebuilt addon');
  process.exit(0);
}
const cmakeJs = fs.existsSync(bin('cmake-js')) ? bin('cmake-js') : 'cmake-js';
if (run(cmakeJs, ['compile'])) process.exit(0);
if (process.env.HYPERSD_CUDA === '1') {
  console.error('hypersd: the CUDA build was forced (HYPERSD_CUDA=1) and failed');
  process.exit(1);
}
console.warn('hypersd: cmake-js build failed; trying node-gyp (CPU-only core)');
const nodeGyp = fs.existsSync(bin('node-gyp')) ? bin('node-gyp') : 'node-gyp';
if (run(nodeGyp, ['rebuild'])) process.exit(0);
console.error('hypersd: could not build the native addon (need g++ and cmake, or node-gyp)');
process.exit(1);
