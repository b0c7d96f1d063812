'use strict';
/**
 * The onnxruntime-node half of test/ocr-example.test.ts, run in a plain Node
 * process: onnxruntime's JS wrapper checks `data instanceof Float32Array`,
 * which fails for arrays its native binding creates in the main realm when
 * the wrapper itself is loaded inside jest's sandbox. Prints one JSON object;
 * the test makes every judgement.
 *
 *   node test/child/ocr.js [limit]   (limit: lines for the CER part, default 14)
 */
const path = require('path');

const ocr = require(path.join(__dirname, '..', '..', 'examples', 'ocr', 'ocr'));
const { evaluate, REMOVED } = require(path.join(__dirname, '..', '..', 'examples', 'ocr', 'evaluate'));

const maxDiff = (a, b) => {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

async function main() {
  const limit = Number(process.argv[2] || 14);
  const rec = await ocr.Recognizer.create({ threads: 1 });
  const ts = rec.ts;
  const data = ocr.loadDataset();
  const out = { lines: data.length, unsplit: [], bias: {}, changed: {} };

  // 1. r = 0: the split pipeline against the unsplit model, every line.
  for (const d of data) {
    const input = ocr.preprocess(ocr.readGray(d.path));
    const full = await rec.runFull(input);
    const split = await rec.runSplit(input, 'none', 0);
    out.unsplit.push({ file: d.file, full: full.text, split: split.text, maxDiff: maxDiff(full.probs, split.probs), size: full.probs.length });
  }

  // 2. Proportional attention through the key_bias input: both blocks on the
  // merged tokens with bias log(size), unmerged, against both blocks on the
  // expanded tokens (every position holding its merged token) without bias.
  const fox = data.find((x) => x.text.startsWith('The quick brown fox'));
  const input = ocr.preprocess(ocr.readGray(fox.path));
  const bb = await rec.runBackbone(input);
  const N = bb.tokens.dims[1];
  const x = { data: bb.tokens.data, shape: [1, N, 120] };
  const plan = ts.bipartiteSoftMatchSync(x, 32, { protect: { cls: false } });
  const merged = ts.mergeSync(plan, x, { mode: 'wavg' });
  const n = plan.nOut;
  const bias = Float32Array.from(merged.sizes.toArray(), Math.log);
  const T = (a, m) => new rec.ort.Tensor('float32', Float32Array.from(a), [1, m, 120]);
  const blocks = async (t, b) => (await rec.runBlock(1, (await rec.runBlock(0, t, b)).y, b)).y;
  const want = (await blocks(T(ts.unmergeSync(plan, merged.x).data, N))).data;
  const unm = async (b) => ts.unmergeSync(plan, { data: Float32Array.from((await blocks(T(merged.x.data, n), b)).data), shape: [1, n, 120] }).data;
  const got = await unm(bias);
  const noBias = await unm(undefined);
  plan.dispose();
  out.bias = { n, maxAbs: want.reduce((m, v) => Math.max(m, Math.abs(v)), 0), withBias: maxDiff(got, want), withoutBias: maxDiff(noBias, want) };

  // 3. Merging and pruning reach the head.
  const base = await rec.runSplit(input, 'none', 0, bb);
  for (const m of ['tome', 'prune']) {
    const r = await rec.runSplit(input, m, 64, bb);
    out.changed[m] = { kept: r.kept, maxDiff: maxDiff(r.probs, base.probs) };
  }

  // Bad settings are refused with a message, not run as something else.
  out.errors = [];
  for (const [m, k] of [['merge', 0], ['tome', N], ['prune', -1], ['prune', 2.5]]) {
    try {
      await rec.runNeck(bb.tokens, m, k);
      out.errors.push(`${m} ${k}: no error`);
    } catch (e) {
      out.errors.push(`${m} ${k}: ${e.message}`);
    }
  }

  // 4. Every setting on `limit` lines, with the texts the CER is computed from.
  const ev = await evaluate({ recognizer: rec, limit, repeats: 1, neckRepeats: 3 });
  out.removed = REMOVED;
  out.evaluation = {
    lines: ev.lines,
    items: ev.items.map((it) => ({ file: it.file, truth: it.truth, model: it.model })),
    modelCerTruth: ev.modelCerTruth,
    results: ev.results,
  };
  // 5. The same at each line's own width (no padding tokens).
  const own = await evaluate({ recognizer: rec, limit, repeats: 1, neckRepeats: 0, width: 'own' });
  out.own = {
    lines: own.lines,
    items: own.items.map((it) => ({ file: it.file, truth: it.truth, model: it.model, tokens: it.tokens })),
    results: own.results,
  };
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
