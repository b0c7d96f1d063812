/**
 * The `ocr e2e` trials (issue 16): examples/ocr's PP-OCRv4 recognizer in
 * onnxruntime-node with ToMe or attention-received pruning between its
 * transformer blocks. Not a kernel timing: the example's own evaluation runs
 * on the bundled text lines and its CER/latency table is printed. The example
 * has its own dependencies (never the package's); without them, or outside a
 * repository checkout (the published package has no examples/), the trials
 * are skipped with the reason.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { OcrTrial } from './trials';

/** examples/ocr of this checkout: from dist/bench/ (the CLI) or bench/ (ts-jest). */
function exampleDir(): string | undefined {
  return [path.join(__dirname, '..', '..', 'examples', 'ocr'), path.join(__dirname, '..', 'examples', 'ocr')]
    .find((d) => fs.existsSync(path.join(d, 'evaluate.js')));
}

/** Why the trials cannot run here, or undefined when they can. */
export function ocrSkipReason(): string | undefined {
  const dir = exampleDir();
  if (!dir) return 'examples/ocr is not here (it lives in the repository, not in the published package)';
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ocr = require(path.join(dir, 'ocr')) as { installed(): boolean };
  if (!ocr.installed()) return 'examples/ocr is not installed (cd examples/ocr && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund)';
  return undefined;
}

interface Evaluation { lines: number }

/**
 * Runs the selected trials' methods on the bundled lines and prints the
 * table. quick: 16 lines, one timed run each, 10 neck runs per setting.
 */
export async function runOcrTrials(trials: OcrTrial[], o: { quick: boolean; threads?: number }, say: (s?: string) => void): Promise<void> {
  say();
  const why = ocrSkipReason();
  if (why) {
    for (const t of trials) say(`${t.name}: skipped (${why})`);
    return;
  }
  const dir = exampleDir()!;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ex = require(path.join(dir, 'evaluate')) as {
    evaluate(opts: object): Promise<Evaluation>;
    table(ev: Evaluation): string;
  };
  const threads = o.threads ?? 1;
  const methods = trials.map((t) => t.method);
  process.stderr.write(`  ocr e2e (${methods.join(', ')}): PP-OCRv4 rec on the bundled lines, ${threads} thread${threads === 1 ? '' : 's'} ...\n`);
  const ev = await ex.evaluate({
    methods, threads,
    limit: o.quick ? 16 : undefined,
    repeats: o.quick ? 1 : 3,
    neckRepeats: o.quick ? 10 : 40,
    progress: (s: string) => process.stderr.write(`\r    ${s}   `),
  });
  process.stderr.write('\n');
  say(`ocr e2e: PP-OCRv4 recognizer (onnxruntime-node, CPU) with tokensieve between its two transformer blocks; ${ev.lines} lines (examples/ocr)`);
  say();
  ex.table(ev).split('\n').forEach((l) => say(l));
}
