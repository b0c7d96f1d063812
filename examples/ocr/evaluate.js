'use strict';
/**
 * The experiment: every bundled text line through the unsplit model and
 * through the split pipeline with ToMe / pruning at each setting; CER against
 * the unsplit model's own text and against the ground truth, and latency.
 * Used by run.js (the report), the jest test and `tokensieve bench`.
 */
const os = require('os');
const ocr = require('./ocr');

const REMOVED = [0, 8, 16, 32, 48, 64];
const METHODS = ['tome', 'prune'];

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * @param {object} [o]
 * @param {number} [o.threads=1]   onnxruntime and tokensieve threads
 * @param {number} [o.limit]       only the first `limit` lines
 * @param {number} [o.repeats=3]   timed runs per (line, setting); the median counts
 * @param {number[]} [o.removed]   tokens removed (of 128)
 * @param {string[]} [o.methods]   'tome' and/or 'prune'
 * @param {(s: string) => void} [o.progress]
 * @param {object} [o.recognizer] an existing Recognizer (same threads)
 */
async function evaluate(o = {}) {
  const threads = o.threads ?? 1;
  const repeats = Math.max(1, o.repeats ?? 3);
  const removed = o.removed ?? REMOVED;
  const methods = o.methods ?? METHODS;
  const rec = o.recognizer ?? await ocr.Recognizer.create({ threads });
  let data = ocr.loadDataset();
  if (o.limit) data = data.slice(0, o.limit);
  const items = [];
  const runs = new Map(); // "method:removed" -> per-line results
  const settings = [{ method: 'none', removed: 0 }];
  for (const m of methods) for (const r of removed) if (r > 0) settings.push({ method: m, removed: r });
  for (const s of settings) runs.set(`${s.method}:${s.removed}`, []);

  // One untimed pass first: onnxruntime allocates its arenas on the first runs.
  const warm = ocr.preprocess(ocr.readGray(data[0].path));
  await rec.runFull(warm);
  for (const s of settings) await rec.runSplit(warm, s.method, s.removed);

  for (const [i, d] of data.entries()) {
    const input = ocr.preprocess(ocr.readGray(d.path));
    const fullMs = [];
    let full;
    for (let k = 0; k < repeats; k++) {
      full = await rec.runFull(input);
      fullMs.push(full.ms);
    }
    const bbMs = [];
    let bb;
    for (let k = 0; k < repeats; k++) {
      bb = await rec.runBackbone(input);
      bbMs.push(bb.ms);
    }
    items.push({ file: d.file, lang: d.lang, truth: d.text, model: full.text, fullMs: median(fullMs), backboneMs: median(bbMs), validTokens: Math.ceil(input.validWidth / 8) });
    for (const s of settings) {
      const neck = [];
      const head = [];
      let out;
      // The backbone does not depend on the setting: its output is reused, its time counted once per line.
      for (let k = 0; k < repeats; k++) {
        out = await rec.runSplit(input, s.method, s.removed, bb);
        neck.push(out.neckMs);
        head.push(out.headMs);
      }
      runs.get(`${s.method}:${s.removed}`).push({ text: out.text, neckMs: median(neck), headMs: median(head), kept: out.kept });
    }
    if (o.progress) o.progress(`${i + 1}/${data.length} ${d.file}`);
  }

  const truths = items.map((it) => it.truth);
  const models = items.map((it) => it.model);
  const backbone = mean(items.map((it) => it.backboneMs));
  const results = settings.map((s) => {
    const r = runs.get(`${s.method}:${s.removed}`);
    const texts = r.map((x) => x.text);
    const neckMs = mean(r.map((x) => x.neckMs));
    const headMs = mean(r.map((x) => x.headMs));
    return {
      method: s.method,
      removed: s.removed,
      tokens: r[0].kept,
      texts,
      cerModel: ocr.cer(texts, models),
      cerTruth: ocr.cer(texts, truths),
      exact: texts.filter((t, i) => t === models[i]).length,
      neckMs,
      headMs,
      wholeMs: backbone + neckMs + headMs,
    };
  });
  return {
    machine: `${os.cpus()[0]?.model ?? 'CPU'}, ${os.cpus().length} cores, Node ${process.version}, onnxruntime-node ${require('onnxruntime-node/package.json').version}, ${threads} thread${threads === 1 ? '' : 's'}`,
    lines: items.length,
    repeats,
    tokens: 128,
    items,
    fullMs: mean(items.map((it) => it.fullMs)),
    backboneMs: backbone,
    modelCerTruth: ocr.cer(models, truths),
    results,
  };
}

/** Markdown table of one evaluation. */
function table(ev) {
  const pct = (x) => `${(100 * x).toFixed(2)}%`;
  const ms = (x) => x.toFixed(2);
  const lines = [
    '| method | removed / 128 | tokens in block 1 / block 2 | CER vs unsplit model | CER vs ground truth | lines = model | neck ms | head ms | whole ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of ev.results) {
    const name = r.method === 'none' ? 'none (split, r = 0)' : r.method === 'tome' ? 'ToMe' : 'prune';
    lines.push(`| ${name} | ${r.removed} | ${r.method === 'prune' ? ev.tokens : r.tokens} / ${r.tokens} | ${pct(r.cerModel)} | ${pct(r.cerTruth)} | ${r.exact}/${ev.lines} | ${ms(r.neckMs)} | ${ms(r.headMs)} | ${ms(r.wholeMs)} |`);
  }
  lines.push('');
  lines.push(`Unsplit model: ${ms(ev.fullMs)} ms per line (whole model), CER vs ground truth ${pct(ev.modelCerTruth)}; backbone part ${ms(ev.backboneMs)} ms. ${ev.lines} lines, median of ${ev.repeats} runs per line, mean over lines; ${ev.machine}.`);
  return lines.join('\n');
}

/** Hand-written SVG: CER vs tokens removed (left), neck latency (right). */
function svg(ev) {
  const W = 760;
  const H = 300;
  const pad = { l: 56, r: 16, t: 34, b: 44 };
  const pw = (W - 40) / 2 - pad.l - pad.r;
  const ph = H - pad.t - pad.b;
  const xs = [0, ...new Set(ev.results.map((r) => r.removed))].sort((a, b) => a - b);
  const xmax = Math.max(...xs);
  const series = (method) => [ev.results.find((r) => r.method === 'none'), ...ev.results.filter((r) => r.method === method)].filter(Boolean);
  const colors = { tome: '#1f77b4', prune: '#d62728' };
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`];
  const panel = (x0, title, ylabel, value, ymaxRaw, fmt, dashedValue) => {
    const ymax = ymaxRaw > 0 ? ymaxRaw * 1.1 : 1;
    const X = (v) => x0 + pad.l + (v / xmax) * pw;
    const Y = (v) => pad.t + ph - (v / ymax) * ph;
    out.push(`<text x="${x0 + pad.l + pw / 2}" y="18" text-anchor="middle" font-size="13">${esc(title)}</text>`);
    out.push(`<line x1="${X(0)}" y1="${Y(0)}" x2="${X(xmax)}" y2="${Y(0)}" stroke="black"/>`);
    out.push(`<line x1="${X(0)}" y1="${Y(0)}" x2="${X(0)}" y2="${pad.t}" stroke="black"/>`);
    for (const v of xs) out.push(`<text x="${X(v).toFixed(1)}" y="${Y(0) + 14}" text-anchor="middle">${v}</text>`);
    for (let k = 0; k <= 4; k++) {
      const v = (ymax * k) / 4;
      out.push(`<line x1="${X(0) - 3}" y1="${Y(v).toFixed(1)}" x2="${X(xmax)}" y2="${Y(v).toFixed(1)}" stroke="#ddd"/>`);
      out.push(`<text x="${X(0) - 5}" y="${(Y(v) + 4).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`);
    }
    out.push(`<text x="${X(xmax / 2)}" y="${H - 8}" text-anchor="middle">tokens removed (of 128)</text>`);
    out.push(`<text transform="translate(${x0 + 12},${pad.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(ylabel)}</text>`);
    for (const m of ['tome', 'prune']) {
      const s = series(m);
      if (s.length < 2) continue;
      const draw = (f, dash) => {
        out.push(`<polyline fill="none" stroke="${colors[m]}" stroke-width="2"${dash ? ' stroke-dasharray="5,4"' : ''} points="${s.map((r) => `${X(r.removed).toFixed(1)},${Y(f(r)).toFixed(1)}`).join(' ')}"/>`);
        for (const r of s) out.push(`<circle cx="${X(r.removed).toFixed(1)}" cy="${Y(f(r)).toFixed(1)}" r="3" fill="${colors[m]}"/>`);
      };
      draw(value, false);
      if (dashedValue) draw(dashedValue, true);
    }
  };
  const cerMax = Math.max(...ev.results.map((r) => Math.max(r.cerModel, r.cerTruth)));
  panel(0, 'CER (solid: vs unsplit model, dashed: vs truth)', 'CER %', (r) => 100 * r.cerModel, 100 * cerMax, (v) => v.toFixed(1), (r) => 100 * r.cerTruth);
  const neckMax = Math.max(...ev.results.map((r) => r.neckMs));
  panel(W / 2, 'neck latency (2 blocks + tokensieve)', 'ms per line', (r) => r.neckMs, neckMax, (v) => v.toFixed(2));
  // legend
  out.push(`<rect x="${W / 2 - 120}" y="${pad.t + 4}" width="104" height="38" fill="white" stroke="#ccc"/>`);
  [['tome', 'ToMe (merge)'], ['prune', 'attention prune']].forEach(([m, label], i) => {
    const y = pad.t + 16 + 16 * i;
    out.push(`<line x1="${W / 2 - 114}" y1="${y}" x2="${W / 2 - 96}" y2="${y}" stroke="${colors[m]}" stroke-width="2"/>`);
    out.push(`<text x="${W / 2 - 92}" y="${y + 4}">${label}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

module.exports = { evaluate, table, svg, REMOVED, METHODS };
