#!/usr/bin/env node
// After tsc: write dist/index.mjs, an ES-module face over the CommonJS build, so both
// `require('hypersd')` and `import { ... } from 'hypersd'` work from an installed package.
'use strict';
const fs = require('fs');
const path = require('path');
const dist = path.resolve(__dirname, '..', 'dist');
const cjs = require(path.join(dist, 'index.js'));
const names = Object.keys(cjs).filter((k) => k !== 'default' && k !== '__esModule');
const body = [
  "import cjs from './index.js';",
  ...names.map((n) => `export const ${n} = cjs.${n};`),
  'export default cjs;',
  '',
].join('\n');
fs.writeFileSync(path.join(dist, 'index.mjs'), body);
console.log(`dist/index.mjs: ${names.length} exports`);
