#!/usr/bin/env node
'use strict';
/**
 * Token merging and pruning inside PP-OCRv4's recognizer: CER and latency
 * against tokens removed, on the bundled text lines.
 *
 *   cd examples/ocr && ONNXRUNTIME_NODE_INSTALL=skip npm install && node run.js
 *
 * Options:
 *   --threads <n>   onnxruntime + tokensieve threads (default 1)
 *   --repeats <n>   timed runs per line and setting, median taken (default 3)
 *   --limit <n>     only the first n lines
 *   --width <w>     1024 (default: every line padded to 1024, 128 tokens, as
 *                   PaddleOCR's fixed-width rec input) or own (each line at its
 *                   resized width, no padding tokens; the same share removed)
 *   --write         also write results.json and cer.svg (results-own.json and
 *                   cer-own.svg with --width own) next to this file
 *   --show          print every line's text per setting
 */
const fs = require('fs');
const path = require('path');
const ocr = require('./ocr');
const { evaluate, table, svg } = require('./evaluate');

function parse(argv) {
  const o = { threads: 1, repeats: 3, write: false, show: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) throw new Error(`${a} expects a positive integer`);
      return v;
    };
    if (a === '--threads') o.threads = num();
    else if (a === '--repeats') o.repeats = num();
    else if (a === '--limit') o.limit = num();
    else if (a === '--width') {
      const w = argv[++i];
      if (w === 'own') o.width = 'own';
      else if (/^\d+$/.test(w || '') && Number(w) % 8 === 0 && Number(w) > 0) o.width = Number(w);
      else throw new Error(`--width expects own or a positive multiple of 8, not ${w}`);
    } else if (a === '--write') o.write = true;
    else if (a === '--show') o.show = true;
    else throw new Error(`unknown option ${a} (see the comment at the top of run.js)`);
  }
  return o;
}

async function main() {
  const o = parse(process.argv.slice(2));
  if (!ocr.installed()) {
    console.error('examples/ocr is not installed: run `ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund` in examples/ocr');
    process.exit(1);
  }
  const ev = await evaluate({ ...o, progress: (s) => process.stderr.write(`\r${s}   `) });
  process.stderr.write('\n');
  if (o.show) {
    ev.items.forEach((it, i) => {
      console.log(`${it.file} truth: ${JSON.stringify(it.truth)} model: ${JSON.stringify(it.model)}`);
      for (const r of ev.results) if (r.texts[i] !== it.model) console.log(`    ${r.method} ${r.removed}: ${JSON.stringify(r.texts[i])}`);
    });
  }
  console.log(table(ev));
  if (o.write) {
    const slim = { ...ev, results: ev.results.map((r) => ({ ...r })) };
    const suffix = ev.width === 'own' ? '-own' : ev.width === 1024 ? '' : `-${ev.width}`;
    fs.writeFileSync(path.join(__dirname, `results${suffix}.json`), `${JSON.stringify(slim, null, 1)}\n`);
    fs.writeFileSync(path.join(__dirname, `cer${suffix}.svg`), svg(ev));
    console.error(`wrote results${suffix}.json and cer${suffix}.svg`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
