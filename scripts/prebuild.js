#!/usr/bin/env node
// `npm run prebuilds`: an N-API prebuild for this platform, picked up first by node-gyp-build (and by
// scripts/install.js, which then skips compiling). Built with cmake-js like `npm install` (so the CUDA kernels
// are in it when nvcc is found; HYPERSD_CUDA=0|1 and HYPERSD_CUDA_ARCHS apply) into build-prebuild/, then
// copied to prebuilds/<platform>-<arch>/hypersd.node. (prebuildify is not used: it only drives node-gyp, whose
// binding.gyp is the CPU-only fallback.) The script is not named "prebuild" on purpose: npm would run that as
// the pre-hook of `npm run build`, and a CPU-only prebuild would then shadow the CUDA build of `npm install`.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.join(__dirname, '..');
const out = path.join(root, 'build-prebuild');
const r = spawnSync(process.execPath, [path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js'), 'compile', '-O', out],
  { stdio: 'inherit', cwd: root });
if (r.status !== 0) process.exit(r.status ?? 1);
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
fs.mkdirSync(dir, { recursive: true });
fs.copyFileSync(path.join(out, 'Release', 'hypersd.node'), path.join(dir, 'hypersd.node'));
console.log(`prebuild: ${path.relative(root, path.join(dir, 'hypersd.node'))}`);
