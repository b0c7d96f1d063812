/**
 * FoPru (arXiv 2411.14164): focal pruning by attention-based significance.
 *
 * Reference convention (specs/methods.md §7; the only public code found is
 * indicative, not authoritative): significance = the mean over query rows of
 * the head-mean attention, i.e. the attention each token receives (the
 * reference also computes the row mean and keeps the one with the larger
 * variance — for softmax rows that is always the column mean, so only the
 * column mean is computed here).
 * - `strategy: 'rank'`: keep the `keep` most significant tokens.
 * - `strategy: 'row'`: N must be a perfect square (remove CLS first, or pass
 *   `cls: true`); a grid row's significance is the sum over its tokens; keep
 *   the top rows as whole rows (`rows`, or `ratio` → floor(nRows·ratio) as
 *   the class form does, or `keep` tokens → floor(keep / width) rows).
 * Selected tokens are returned sorted (positional order restored).
 */
import { invalid, makeError } from '../errors';
import { checkOptions, int } from '../kernels/common';
import { Tensor } from '../tensor';
import {
  AttentionSource,
  drive,
  driveAsync,
  hostF32,
  indexTensor,
  MethodGen,
  scoresOf,
  SelectionResult,
  sourceDims,
  topkOf,
} from './common';

export interface FoPruOptions {
  /** `'rank'` (default) or `'row'`. */
  strategy?: 'rank' | 'row';
  /** Tokens to keep ('rank'), or tokens rounded down to whole rows ('row'). */
  keep?: number;
  /** Fraction to keep: floor(N·ratio) tokens ('rank') or floor(nRows·ratio) rows ('row'). */
  ratio?: number;
  /** Rows to keep ('row' only). */
  rows?: number;
  /** Whether token 0 is a CLS token to drop before ranking (default false). */
  cls?: boolean;
}

export interface FoPruResult extends SelectionResult {
  /** For 'row': the kept grid rows, ascending, i32 [B, rows]. */
  rows?: Tensor;
}

function* foPruSteps(src: AttentionSource, opts: FoPruOptions, op: string): MethodGen<FoPruResult> {
  const o = checkOptions(op, opts, ['strategy', 'keep', 'ratio', 'rows', 'cls']);
  const strategy = o.strategy === undefined ? 'rank' : o.strategy;
  if (strategy !== 'rank' && strategy !== 'row') throw invalid('ERR_ARG', `${op} strategy`, "'rank' or 'row'", strategy);
  const cls = o.cls === undefined ? false : o.cls;
  if (typeof cls !== 'boolean') throw invalid('ERR_ARG', `${op} cls`, 'a boolean', cls);
  const { B, N: Ntok, device } = sourceDims(op, src);
  const N = cls ? Ntok - 1 : Ntok;
  if (N < 1) throw makeError('ERR_SHAPE', `${op}: no tokens left after dropping CLS`);
  const given = ['keep', 'ratio', 'rows'].filter((key) => o[key] !== undefined);
  if (given.length !== 1 || (strategy === 'rank' && given[0] === 'rows')) {
    throw makeError('ERR_ARG', `${op}: pass exactly one of keep or ratio${strategy === 'row' ? ' or rows' : ''}`);
  }
  const ratio = o.ratio;
  if (ratio !== undefined && (typeof ratio !== 'number' || !(ratio > 0 && ratio <= 1))) {
    throw invalid('ERR_RANGE', `${op} ratio`, 'a number in (0, 1]', ratio);
  }
  let width = 0;
  if (strategy === 'row') {
    width = Math.round(Math.sqrt(N));
    if (width * width !== N) {
      throw makeError('ERR_SHAPE', `${op} strategy 'row' needs a square token grid but N = ${N}${cls ? '' : ' (pass cls: true to drop a CLS token)'}`);
    }
  }

  const scores = yield* scoresOf(op, src, { queries: 'all', reduce: 'mean', heads: 'mean', keys: { start: cls ? 1 : 0 } });

  if (strategy === 'rank') {
    const k = o.keep !== undefined ? int(op, 'keep', o.keep, 1, N) : Math.floor(N * (ratio as number));
    if (k < 1) throw makeError('ERR_RANGE', `${op}: ratio ${ratio} keeps no token of ${N}`);
    const { indices } = yield* topkOf(scores, k, { order: 'index', values: false });
    return { indices, scores };
  }

  const nRows =
    o.rows !== undefined ? int(op, 'rows', o.rows, 1, width)
    : o.keep !== undefined ? Math.floor(int(op, 'keep', o.keep, 1, N) / width)
    : Math.floor(width * (ratio as number));
  if (nRows < 1) throw makeError('ERR_RANGE', `${op}: the options keep no whole row of ${width} tokens`);
  const s = hostF32(scores);
  const rowScores = new Float32Array(B * width);
  for (let b = 0; b < B; b++) {
    for (let r = 0; r < width; r++) {
      let sum = 0;
      for (let c = 0; c < width; c++) sum += s[b * N + r * width + c];
      rowScores[b * width + r] = sum;
    }
  }
  const rowScoreTensor = Tensor.from({ data: rowScores, shape: [B, width] });
  const { indices: rowIdx } = yield* topkOf(rowScoreTensor, nRows, { order: 'index', values: false });
  const rows = rowIdx.data as Int32Array;
  const out = new Int32Array(B * nRows * width);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < nRows; i++) {
      const r = rows[b * nRows + i];
      for (let c = 0; c < width; c++) out[(b * nRows + i) * width + c] = r * width + c;
    }
  }
  return {
    indices: indexTensor(out, [B, nRows * width], device),
    scores,
    rows: indexTensor(Int32Array.from(rows), [B, nRows], device),
  };
}

/**
 * @example
 * const { indices } = await foPru({ probs }, { strategy: 'rank', keep: 144, cls: true });
 */
export function foPru(src: AttentionSource, opts: FoPruOptions): Promise<FoPruResult> {
  return driveAsync(foPruSteps(src, opts, 'foPru'), 'foPru');
}

export function foPruSync(src: AttentionSource, opts: FoPruOptions): FoPruResult {
  return drive(foPruSteps(src, opts, 'foPruSync'), 'foPruSync');
}
