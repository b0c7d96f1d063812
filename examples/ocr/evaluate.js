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

/** PaddleOCR's resized width of a line at height 48 (at most 1024), rounded up to a multiple of 8. */
function ownWidth(img) {
  return Math.ceil(Math.min(ocr.WIDTH, Math.ceil((ocr.HEIGHT * img.width) / img.height)) / 8) * 8;
}

/**
 * @param {object} [o]
 * @param {number} [o.threads=1]   onnxruntime and tokensieve threads
 * @param {number} [o.limit]       only the first `limit` lines
 * @param {number} [o.repeats=3]   timed runs per (line, setting); the median counts
 * @param {number[]} [o.removed]   tokens removed per 128 (at width 1024, exactly; at
 *                                 the line's own width, the same share of its N tokens, rounded)
 * @param {number|'own'} [o.width=1024] pad every line to this width (PaddleOCR's fixed
 *                                 width; 128 tokens), or 'own': the line's resized width
 *                                 rounded up to a multiple of 8 (N = width / 8, no padding tokens)
 * @param {string[]} [o.methods]   'tome' and/or 'prune'
 * @param {(s: string) => void} [o.progress]
 * @param {object} [o.recognizer] an existing Recognizer (same threads)
 */
async function evaluate(o = {}) {
  const threads = o.threads ?? 1;
  const repeats = Math.max(1, o.repeats ?? 3);
  const removed = o.removed ?? REMOVED;
  const methods = o.methods ?? METHODS;
  const width = o.width ?? ocr.WIDTH;
  if (width !== 'own' && !(Number.isInteger(width) && width >= 8 && width % 8 === 0)) throw new Error(`evaluate: width must be 'own' or a multiple of 8, not ${width}`);
  const prep = (d) => {
    const img = ocr.readGray(d.path);
    return ocr.preprocess(img, width === 'own' ? ownWidth(img) : width);
  };
  // Tokens removed from a line of N tokens for a setting given per 128.
  const take = (N, perc128) => (width === 'own' ? Math.round((N * perc128) / 128) : perc128);
  const rec = o.recognizer ?? await ocr.Recognizer.create({ threads });
  const loadBefore = os.loadavg()[0];
  let data = ocr.loadDataset();
  if (o.limit) data = data.slice(0, o.limit);
  const items = [];
  const runs = new Map(); // "method:removed" -> per-line results
  const settings = [{ method: 'none', removed: 0 }];
  for (const m of methods) for (const r of removed) if (r > 0) settings.push({ method: m, removed: r });
  for (const s of settings) runs.set(`${s.method}:${s.removed}`, []);

  // One untimed pass first: onnxruntime allocates its arenas on the first runs.
  const warm = prep(data[0]);
  await rec.runFull(warm);
  for (const s of settings) await rec.runSplit(warm, s.method, take(warm.shape[3] / 8, s.removed));

  for (const [i, d] of data.entries()) {
    const input = prep(d);
    const N = input.shape[3] / 8;
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
    items.push({ file: d.file, lang: d.lang, truth: d.text, model: full.text, fullMs: median(fullMs), backboneMs: median(bbMs), validTokens: Math.ceil(input.validWidth / 8), tokens: N });
    for (const s of settings) {
      const neck = [];
      const head = [];
      let out;
      // The backbone does not depend on the setting: its output is reused, its time counted once per line.
      for (let k = 0; k < repeats; k++) {
        out = await rec.runSplit(input, s.method, take(N, s.removed), bb);
        neck.push(out.neckMs);
        head.push(out.headMs);
      }
      runs.get(`${s.method}:${s.removed}`).push({ text: out.text, neckMs: median(neck), headMs: median(head), kept: out.kept, n: N });
    }
    if (o.progress) o.progress(`${i + 1}/${data.length} ${d.file}`);
  }

  const neck = o.neckRepeats === 0 ? [] : await neckBench(rec, data, settings, o.neckRepeats ?? 40, prep, take);

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
      // Mean over lines (at width 1024 every line has the same counts).
      tokensBlock1: mean(r.map((x) => (s.method === 'prune' ? x.n : x.kept))),
      tokens: mean(r.map((x) => x.kept)),
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
    // The 1-minute load average before and after: other work on a shared machine inflates the times.
    machine: `${os.cpus()[0]?.model ?? 'CPU'}, ${os.cpus().length} cores, Node ${process.version}, onnxruntime-node ${require('onnxruntime-node/package.json').version}, ${threads} thread${threads === 1 ? '' : 's'}, load average ${loadBefore.toFixed(1)} → ${os.loadavg()[0].toFixed(1)}`,
    lines: items.length,
    repeats,
    width,
    tokens: mean(items.map((it) => it.tokens)),
    items,
    fullMs: mean(items.map((it) => it.fullMs)),
    backboneMs: backbone,
    modelCerTruth: ocr.cer(models, truths),
    results,
    neck,
  };
}

/**
 * The neck alone, in steady state, on the longest bundled line: rounds over
 * the settings, each round running every setting once untimed (onnxruntime
 * re-plans its buffers when the token count changes) then 5 times timed, so
 * that load from other work on a shared machine falls on all settings alike.
 * Median over the `repeats` timed runs of the neck time and of the part spent
 * in tokensieve.
 */
async function neckBench(rec, data, settings, repeats, prep, take) {
  const longest = data.reduce((a, b) => (b.width / b.height > a.width / a.height ? b : a));
  const input = prep(longest);
  const N = input.shape[3] / 8;
  const bb = await rec.runBackbone(input);
  const per = 5;
  const rounds = Math.max(1, Math.ceil(repeats / per));
  const ms = settings.map(() => []);
  const tsMs = settings.map(() => []);
  for (let round = 0; round < rounds; round++) {
    for (const [i, s] of settings.entries()) {
      for (let k = 0; k <= per; k++) {
        const r = await rec.runNeck(bb.tokens, s.method, take(N, s.removed));
        if (k > 0) {
          ms[i].push(r.ms);
          tsMs[i].push(r.tsMs);
        }
      }
    }
  }
  return settings.map((s, i) => ({ method: s.method, removed: s.removed, file: longest.file, tokens: N, repeats: ms[i].length, neckMs: median(ms[i]), tokensieveMs: median(tsMs[i]) }));
}

/** Markdown table of one evaluation. */
function table(ev) {
  const pct = (x) => `${(100 * x).toFixed(2)}%`;
  const ms = (x) => x.toFixed(2);
  const cnt = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(1));
  const own = ev.width === 'own';
  const lines = [
    `| method | removed ${own ? 'per 128 (share of N)' : '/ 128'} | tokens in block 1 / block 2${own ? ' (mean)' : ''} | CER vs unsplit model | CER vs ground truth | lines = model | neck ms | head ms | whole ms |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of ev.results) {
    const name = r.method === 'none' ? 'none (split, r = 0)' : r.method === 'tome' ? 'ToMe' : 'prune';
    lines.push(`| ${name} | ${r.removed} | ${cnt(r.tokensBlock1)} / ${cnt(r.tokens)} | ${pct(r.cerModel)} | ${pct(r.cerTruth)} | ${r.exact}/${ev.lines} | ${ms(r.neckMs)} | ${ms(r.headMs)} | ${ms(r.wholeMs)} |`);
  }
  lines.push('');
  if (ev.neck && ev.neck.length) {
    lines.push(`Neck alone, steady state (${ev.neck[0].file}, ${ev.neck[0].tokens} tokens, median of ${ev.neck[0].repeats} runs per setting, interleaved in rounds of 5):`);
    lines.push('');
    lines.push(`| method | removed ${own ? 'per 128 (share of N)' : '/ 128'} | neck ms | of which tokensieve ms |`);
    lines.push('|---|---:|---:|---:|');
    for (const r of ev.neck) {
      lines.push(`| ${r.method === 'none' ? 'none' : r.method === 'tome' ? 'ToMe' : 'prune'} | ${r.removed} | ${ms(r.neckMs)} | ${r.tokensieveMs.toFixed(3)} |`);
    }
  }
  lines.push('');
  lines.push(`Unsplit model: ${ms(ev.fullMs)} ms per line (whole model), CER vs ground truth ${pct(ev.modelCerTruth)}; backbone part ${ms(ev.backboneMs)} ms. ${ev.lines} lines ${own ? `at their own width (mean ${cnt(ev.tokens)} tokens)` : 'padded to width 1024 (128 tokens)'}, median of ${ev.repeats} runs per line, mean over lines; ${ev.machine}.`);
  return lines.join('\n');
}

/** Hand-written SVG: CER vs tokens removed (left), neck latency (right). */
function svg(ev) {
  const W = 760;
  const H = 320;
  const pad = { l: 56, r: 16, t: 34, b: 64 };
  const pw = (W - 40) / 2 - pad.l - pad.r;
  const ph = H - pad.t - pad.b;
  const xs = [...new Set([0, ...ev.results.map((r) => r.removed)])].sort((a, b) => a - b);
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
    out.push(`<text x="${X(xmax / 2)}" y="${Y(0) + 30}" text-anchor="middle">${ev.width === 'own' ? 'tokens removed per 128 (share of each line\'s N)' : 'tokens removed (of 128)'}</text>`);
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
  // Steady-state neck times when measured (see neckBench), else the per-line means.
  const steady = ev.neck && ev.neck.length ? ev.neck : null;
  const neckOf = (r) => (steady ? steady.find((n) => n.method === r.method && n.removed === r.removed).neckMs : r.neckMs);
  const neckMax = Math.max(...ev.results.map(neckOf));
  panel(W / 2, 'neck latency, steady state (2 blocks + tokensieve)', 'ms per line', neckOf, neckMax, (v) => v.toFixed(2));
  // legend, one row under both panels
  [['tome', 'ToMe (merge before block 1, proportional attention)'], ['prune', 'attention-received pruning after block 1']].forEach(([m, label], i) => {
    const x = 60 + i * 360;
    const y = H - 10;
    out.push(`<line x1="${x}" y1="${y - 4}" x2="${x + 22}" y2="${y - 4}" stroke="${colors[m]}" stroke-width="2"/>`);
    out.push(`<text x="${x + 28}" y="${y}">${esc(label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

module.exports = { evaluate, table, svg, REMOVED, METHODS };
