#!/usr/bin/env node
'use strict';
// CI: writes the README's quick start, as pasted, into a consumer project.
//   node .ci/readme-quickstart.js <README.md> <dir>
// Takes the first ```ts / ```js (or typescript, javascript) block under the
// "## Quick start" heading and writes it unchanged to <dir>/quickstart.mts
// (TypeScript: compiled as an ES module, so top-level await works) or
// quickstart.mjs / quickstart.cjs (JavaScript with import / require). Prints
// the file name written.
const fs = require('fs');
const path = require('path');

const [readme, dir] = process.argv.slice(2);
const text = fs.readFileSync(readme, 'utf8');
const start = text.search(/^## Quick start\s*$/m);
if (start < 0) {
  process.stderr.write(`${readme}: no "## Quick start" section\n`);
  process.exit(1);
}
const rest = text.slice(start).replace(/^## Quick start\s*$/m, '');
const section = rest.slice(0, rest.search(/^## /m) < 0 ? undefined : rest.search(/^## /m));
const m = /^```(ts|typescript|js|javascript)[^\n]*\n([\s\S]*?)^```/m.exec(section);
if (!m) {
  process.stderr.write(`${readme}: no ts or js code block in "## Quick start"\n`);
  process.exit(1);
}
const ts = m[1] === 'ts' || m[1] === 'typescript';
const cjs = !ts && /\brequire\(/.test(m[2]) && !/^\s*import\s/m.test(m[2]);
const file = path.join(dir, ts ? 'quickstart.mts' : cjs ? 'quickstart.cjs' : 'quickstart.mjs');
fs.writeFileSync(file, m[2]);
process.stdout.write(`${path.basename(file)}\n`);
