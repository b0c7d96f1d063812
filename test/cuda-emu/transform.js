#!/usr/bin/env node
'use strict';
// Rewrites every `kernel<<<grid, block, smem, stream>>>(args);` of a .cu file
// into `emu::launch([&] { kernel(args); }, grid, block, ...);` so the file
// compiles as host C++ against include/ (the emulator). Nothing else changes.
//   node transform.js in.cu out.cc
const fs = require('fs');
const [, , input, output] = process.argv;
const src = fs.readFileSync(input, 'utf8');
const launch = /([A-Za-z_][\w:]*(?:<[\w:, ]+>)?)\s*<<<([\s\S]*?)>>>\s*\(([\s\S]*?)\);/g;
let n = 0;
const out = src.replace(launch, (_, kernel, config, args) => {
  n += 1;
  return `emu::launch([&] { ${kernel}(${args}); }, ${config});`;
});
if (n === 0) {
  process.stderr.write(`${input}: no kernel launches found\n`);
  process.exit(1);
}
fs.writeFileSync(output, out);
