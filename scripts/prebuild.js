#!/usr/bin/env node
// `npm run prebuild`: N-API prebuilds with prebuildify (cmake-js backend, so CUDA is included when nvcc is
// found), picked up first by node-gyp-build. npm also runs a script named "prebuild" as the pre-hook of
// `npm run build` (the TypeScript build): in that case this does nothing.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

function ancestorsArgv() {
  const out = [];
  let pid = process.ppid;
  for (let i = 0; i < 8 && pid > 1; i++) {
    try {
      out.push(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean));
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      pid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    } catch {
      break;
    }
  }
  return out;
}

const asHook = ancestorsArgv().some((argv) => {
  const i = argv.findIndex((a) => a === 'run' || a === 'run-script');
  return i >= 0 && argv[i + 1] === 'build';
});
if (asHook) process.exit(0);
const bin = path.join(__dirname, '..', 'node_modules', '.bin', 'prebuildify');
const r = spawnSync(bin, ['--napi', '--strip', '--backend', 'cmake-js'], { stdio: 'inherit', cwd: path.join(__dirname, '..') });
process.exit(r.status ?? 1);
