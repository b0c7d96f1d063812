#!/usr/bin/env node
'use strict';
// The CLI: `npx tokensieve info`, `npx tokensieve bench`.
let cli;
try {
  cli = require('../dist/lib/cli.js');
} catch (e) {
  process.stderr.write(`tokensieve: the compiled library is missing (${e.message.split('\n')[0]}); run \`npm run build:ts\`\n`);
  process.exit(1);
}
cli.main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`tokensieve: ${err && err.code ? `[${err.code}] ` : ''}${err && err.message ? err.message : err}\n`);
    process.exit(1);
  },
);
