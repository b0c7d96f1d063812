#!/usr/bin/env node
'use strict';
// The CLI: `npx tokensieve info`, `npx tokensieve bench`. The benchmarks are
// their own entry (dist/bench/run.js): the library (dist/lib) never imports them.
const [cmd, ...rest] = process.argv.slice(2);
const entry = cmd === 'bench' ? '../dist/bench/run.js' : '../dist/lib/cli.js';
let mod;
try {
  mod = require(entry);
} catch (e) {
  process.stderr.write(`tokensieve: the compiled package is missing (${e.message.split('\n')[0]}); run \`npm run build:ts\`\n`);
  process.exit(1);
}
(cmd === 'bench' ? mod.main(rest) : mod.main(process.argv.slice(2))).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`tokensieve: ${err && err.code ? `[${err.code}] ` : ''}${err && err.message ? err.message : err}\n`);
    process.exit(1);
  },
);
