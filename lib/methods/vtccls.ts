/**
 * VTC-CLS (THU-MIG/VTC-CLS): like FasterVLM, but the CLS-row score is summed
 * over a range of vision-encoder layers.
 *
 * Reference convention (specs/methods.md §2b): for each layer in
 * `attentions[start:-1]` (default start 16 of 24: layers 16…22), the head
 * mean of the CLS row without the CLS column; the score is the sum over
 * those layers; `topk(keep)` sorted back to positional order. Batched here
 * (the reference is batch-size 1).
 */
import { invalid, makeError } from '../errors';
import { checkOptions } from '../kernels/common';
import { Tensor } from '../tensor';
import { AttentionSource, drive, driveAsync, keepCount, MethodGen, patchToTokenIndices, scoresOf, SelectionResult, sourceDims, tokenIndicesOption, topkOf } from './common';

export interface VtcClsOptions {
  /** Tokens to keep per image. */
  keep?: number;
  /** Or the pruned fraction r: keep round(N·(1 − r)). */
  reduction?: number;
  /** `true`: indices are token positions counting CLS (patch index + 1) instead of patch indices (default false). */
  tokenIndices?: boolean;
  /** First layer of the sum (default 16, the reference's --layer). */
  startLayer?: number;
  /** One past the last layer (default layers.length - 1: the reference's `[start:-1]`). */
  endLayer?: number;
}

function* vtcClsSteps(layers: readonly AttentionSource[], opts: VtcClsOptions, op: string): MethodGen<SelectionResult> {
  const o = checkOptions(op, opts, ['keep', 'reduction', 'startLayer', 'endLayer', 'tokenIndices']);
  const tokenIndices = tokenIndicesOption(op, o.tokenIndices);
  if (!Array.isArray(layers) || layers.length === 0) throw invalid('ERR_ARG', `${op} layers`, 'a non-empty array of attention sources', layers);
  const start = o.startLayer === undefined ? 16 : (o.startLayer as number);
  const end = o.endLayer === undefined ? layers.length - 1 : (o.endLayer as number);
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > layers.length || start >= end) {
    throw makeError('ERR_RANGE', `Expected 0 <= startLayer < endLayer <= ${layers.length} for ${op} but received [${start}, ${end})`);
  }
  // Every layer is checked, used or not (the default range leaves out the last, as the reference's [start:-1]).
  const dims = layers.map((l) => sourceDims(op, l));
  for (let l = 1; l < dims.length; l++) {
    if (dims[l].B !== dims[0].B || dims[l].N !== dims[0].N || dims[l].device !== dims[0].device) {
      throw makeError('ERR_SHAPE', `${op}: layer ${l} has B = ${dims[l].B}, N = ${dims[l].N} on ${dims[l].device} but layer 0 has B = ${dims[0].B}, N = ${dims[0].N} on ${dims[0].device}`);
    }
  }
  const { N } = dims[start];
  const k = keepCount(op, o, N - 1);
  let scores: Tensor | undefined;
  for (let l = start; l < end; l++) {
    const base = { queries: 0, reduce: 'sum', heads: 'mean', keys: { start: 1 } } as const;
    scores = scores === undefined
      ? yield* scoresOf(op, layers[l], base)
      : yield* scoresOf(op, layers[l], { ...base, out: scores, accumulate: true });
  }
  const { indices } = yield* topkOf(scores as Tensor, k, { order: 'index', values: false });
  return { indices: tokenIndices ? patchToTokenIndices(indices) : indices, scores: scores as Tensor };
}

/**
 * @example
 * // all 24 CLIP layers' q/k; sums layers 16…22 like the reference
 * const { indices } = await vtcCls(layers, { keep: 64 });
 */
export function vtcCls(layers: readonly AttentionSource[], opts: VtcClsOptions): Promise<SelectionResult> {
  return driveAsync(vtcClsSteps(layers, opts, 'vtcCls'), 'vtcCls');
}

export function vtcClsSync(layers: readonly AttentionSource[], opts: VtcClsOptions): SelectionResult {
  return drive(vtcClsSteps(layers, opts, 'vtcClsSync'), 'vtcClsSync');
}
