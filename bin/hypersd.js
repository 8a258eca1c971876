#!/usr/bin/env node
// The `hypersd` command: the compiled CLI from dist/, or the TypeScript sources through tsx in a checkout.
'use strict';
const path = require('path');
const fs = require('fs');
const compiled = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
if (fs.existsSync(compiled)) {
  require(compiled).main(process.argv.slice(2));
} else {
  require('tsx/cjs');
  require(path.join(__dirname, '..', 'lib', 'cli', 'main.ts')).main(process.argv.slice(2));
}
