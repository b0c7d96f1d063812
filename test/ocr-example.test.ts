/**
 * examples/ocr: token merging and pruning inside PP-OCRv4's recognizer, run in
 * onnxruntime-node. Checks that the split model is the model (r = 0 gives the
 * unsplit model's text on every line and its probabilities to f32 rounding),
 * that the key-bias input implements proportional attention exactly (the
 * merged blocks equal the unmerged blocks on the duplicated tokens), and that
 * the CER the example reports is what its texts give (recomputed here with an
 * independent edit distance).
 *
 * The example has its own dependencies (onnxruntime-node, the model package):
 * without `examples/ocr/node_modules` the suites that need them are skipped
 * with the reason printed. The example loads tokensieve from dist/ (the built
 * root package), so the root must be built (`npm run build:ts`).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

/* eslint-disable @typescript-eslint/no-require-imports, @typescript-eslint/no-explicit-any */
const ocr = require('../examples/ocr/ocr') as any;

const root = path.resolve(__dirname, '..');
const distBuilt = fs.existsSync(path.join(root, 'dist', 'lib', 'index.js'));
const skipReason = !ocr.installed()
  ? 'examples/ocr is not installed (cd examples/ocr && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund)'
  : !distBuilt ? 'the root package is not built (dist/lib: npm run build:ts)'
  // scripts/sanitize.sh preloads libasan into every node it starts, with leak
  // detection on: onnxruntime's own allocations (not built with ASan) would be
  // reported. The default and CPU-only runs of CI test the example.
  : process.env.TOKENSIEVE_UNDER_ASAN === '1' ? 'under ASan (onnxruntime-node is not sanitized; the default and CPU-only runs test the example)' : '';

function describeOcr(name: string, body: () => void): void {
  if (!skipReason) {
    describe(name, body);
  } else {
    describe.skip(`${name} [skipped: ${skipReason}]`, body);
    // eslint-disable-next-line no-console
    console.warn(`OCR example tests skipped (${name}): ${skipReason}`);
  }
}

/** Levenshtein over code points with a full (n+1)×(m+1) table: not the example's rolling rows. */
function levenshtein(a: string, b: string): number {
  const x = [...a];
  const y = [...b];
  const d: number[][] = Array.from({ length: x.length + 1 }, (_, i) => Array.from({ length: y.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= x.length; i++) {
    for (let j = 1; j <= y.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
  }
  return d[x.length][y.length];
}

describe('OCR example helpers (no dependencies needed)', () => {
  test('nearestKept: every position takes the nearest kept slot, ties to the left', () => {
    expect(Array.from(ocr.nearestKept(Int32Array.from([2, 5, 9]), 12))).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    // position 7: 5 and 9 are both 2 away -> the left one (slot 1)
    expect(ocr.nearestKept(Int32Array.from([5, 9]), 10)[7]).toBe(0);
    expect(Array.from(ocr.nearestKept(Int32Array.from([0]), 3))).toEqual([0, 0, 0]);
    expect(Array.from(ocr.nearestKept(Int32Array.from([0, 1, 2]), 3))).toEqual([0, 1, 2]);
  });

  test('ctcDecode: argmax per column, repeats collapsed, blanks dropped', () => {
    const charset = ['<blank>', 'a', 'b'];
    const cols = [1, 1, 0, 1, 2, 2, 0, 0, 2];
    const probs = new Float32Array(cols.length * 3);
    cols.forEach((c, t) => { probs[t * 3 + c] = 1; });
    expect(ocr.ctcDecode(probs, cols.length, 3, charset)).toBe('aabb');
    expect(() => ocr.ctcDecode(probs, cols.length, 3, ['x'])).toThrow(/1 characters for 3 classes/);
  });

  test('editDistance and cer agree with an independent Levenshtein', () => {
    const pairs: Array<[string, string]> = [['kitten', 'sitting'], ['', 'abc'], ['今天天气很好', '今天天很好'], ['Hello world', 'Helloworld'], ['😀a', 'a😀']];
    for (const [a, b] of pairs) expect(ocr.editDistance(a, b)).toBe(levenshtein(a, b));
    expect(ocr.cer(['kitten', ''], ['sitting', 'ab'])).toBeCloseTo((3 + 2) / (7 + 2), 12);
  });
});

describeOcr('OCR example: PP-OCRv4 split at its SVTR neck (onnxruntime-node)', () => {
  // onnxruntime-node runs in a child process (see test/child/ocr.js for why);
  // it reports texts, probabilities' differences and the example's own CER.
  let out: any;
  beforeAll(() => {
    const r = spawnSync(process.execPath, [path.join(__dirname, 'child', 'ocr.js'), '14'], { encoding: 'utf8', timeout: 110000, maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`test/child/ocr.js failed (status ${r.status}, signal ${r.signal}):\n${r.stderr}`);
    out = JSON.parse(r.stdout);
  }, 120000);

  test('at least 50 bundled lines, Chinese and Latin, < 2 MB', () => {
    const d = ocr.loadDataset() as Array<{ text: string }>;
    expect(d.length).toBeGreaterThanOrEqual(50);
    expect(d.some((x) => /[\u4e00-\u9fff]/.test(x.text))).toBe(true);
    expect(d.some((x) => /^[\x20-\x7e]+$/.test(x.text))).toBe(true);
    const bytes = fs.readdirSync(ocr.DATA).reduce((s: number, f: string) => s + fs.statSync(path.join(ocr.DATA, f)).size, 0);
    expect(bytes).toBeLessThan(2 * 1024 * 1024);
  });

  test('r = 0: the split pipeline gives the unsplit model\'s text on every line and its probabilities to f32 rounding', () => {
    expect(out.unsplit.length).toBe(out.lines);
    for (const u of out.unsplit) {
      expect(`${u.file}: ${u.split}`).toBe(`${u.file}: ${u.full}`);
      expect(u.size).toBe(128 * 6625);
      // Probabilities are in [0, 1]: a few ulps of 1 (2^-24 each) after two
      // differently fused graphs, not a different computation.
      expect(u.maxDiff).toBeLessThan(1e-5);
    }
  });

  test('the key_bias input is proportional attention: blocks on merged tokens with log(size) = blocks on the tokens they stand for', () => {
    expect(out.bias.n).toBe(96);
    expect(out.bias.withBias).toBeLessThan(1e-4 * out.bias.maxAbs);
    // Without the bias the blocks are measurably different: the check above can fail.
    expect(out.bias.withoutBias).toBeGreaterThan(100 * out.bias.withBias);
  });

  test('merging and pruning change what the head sees (the settings are not no-ops)', () => {
    for (const m of ['tome', 'prune']) {
      expect(out.changed[m].kept).toBe(64);
      expect(out.changed[m].maxDiff).toBeGreaterThan(1e-3);
    }
  });

  test('an unknown method or a removed count outside [0, N) is refused with a message', () => {
    expect(out.errors).toEqual([
      "merge 0: runNeck: unknown method merge (expected 'none', 'tome' or 'prune')",
      'tome 128: runNeck: removed must be an integer in [0, 127] for 128 tokens, not 128',
      'prune -1: runNeck: removed must be an integer in [0, 127] for 128 tokens, not -1',
      'prune 2.5: runNeck: removed must be an integer in [0, 127] for 128 tokens, not 2.5',
    ]);
  });

  test('ToMe and pruning run for every setting; the CER they report is what their texts give', () => {
    const ev = out.evaluation;
    const models: string[] = ev.items.map((it: any) => it.model);
    const truths: string[] = ev.items.map((it: any) => it.truth);
    expect(ev.lines).toBe(14);
    expect(ev.results.length).toBe(1 + 2 * (out.removed.length - 1));
    expect(out.removed).toEqual([0, 8, 16, 32, 48, 64]);
    const cerOf = (hyps: string[], refs: string[]) => hyps.reduce((s, h, i) => s + levenshtein(h, refs[i]), 0) / refs.reduce((s, r) => s + [...r].length, 0);
    for (const r of ev.results) {
      const tag = `${r.method} removed=${r.removed}`;
      expect(`${tag}: ${r.texts.length}`).toBe(`${tag}: ${ev.lines}`);
      expect(`${tag}: ${r.tokens}`).toBe(`${tag}: ${128 - r.removed}`);
      expect(Math.abs(r.cerModel - cerOf(r.texts, models))).toBeLessThan(1e-12);
      expect(Math.abs(r.cerTruth - cerOf(r.texts, truths))).toBeLessThan(1e-12);
      expect(r.exact).toBe(r.texts.filter((t: string, i: number) => t === models[i]).length);
      for (const k of ['neckMs', 'headMs', 'wholeMs']) expect(Number.isFinite(r[k]) && r[k] > 0).toBe(true);
    }
    expect(ev.results.filter((r: any) => r.method === 'tome').map((r: any) => r.removed)).toEqual([8, 16, 32, 48, 64]);
    expect(ev.results.filter((r: any) => r.method === 'prune').map((r: any) => r.removed)).toEqual([8, 16, 32, 48, 64]);
    expect(ev.results.find((r: any) => r.method === 'none').cerModel).toBe(0);
    expect(Math.abs(ev.modelCerTruth - cerOf(models, truths))).toBeLessThan(1e-12);
  });

  test('at each line\'s own width (no padding tokens): every setting runs, the same share of N is removed, the CER is what the texts give', () => {
    const ev = out.own;
    const models: string[] = ev.items.map((it: any) => it.model);
    const Ns: number[] = ev.items.map((it: any) => it.tokens);
    expect(Ns.some((n) => n < 128)).toBe(true);
    for (const r of ev.results) {
      const tag = `own ${r.method} removed=${r.removed}`;
      const kept = Ns.map((n) => n - Math.min(Math.round((n * r.removed) / 128), r.method === 'tome' ? Math.floor(n / 2) : n));
      expect(`${tag}: ${r.tokens.toFixed(6)}`).toBe(`${tag}: ${(kept.reduce((a, b) => a + b, 0) / kept.length).toFixed(6)}`);
      const d = r.texts.reduce((s: number, h: string, i: number) => s + levenshtein(h, models[i]), 0);
      expect(Math.abs(r.cerModel - d / models.reduce((s, m) => s + [...m].length, 0))).toBeLessThan(1e-12);
    }
  });
});
