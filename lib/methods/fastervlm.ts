/**
 * FasterVLM (Theia-4869/FasterVLM): keep the patches the [CLS] token attends
 * to most, in one vision-encoder layer (LLaVA: attentions[-2]).
 *
 * Reference convention (specs/methods.md §2): the post-softmax CLS row with
 * the CLS column dropped and no renormalisation, `attn[:, :, 0, 1:]`; mean
 * over heads; `topk(keep)`; kept patches stay in raster order. The indices
 * returned are patch indices (0 = the first patch after CLS), batched (one
 * row per image or per LLaVA-NeXT crop: the reference applies the same
 * budget to each crop).
 */
import { checkOptions } from '../kernels/common';
import { AttentionSource, drive, driveAsync, keepCount, MethodGen, patchToTokenIndices, scoresOf, SelectionResult, sourceDims, tokenIndicesOption, topkOf } from './common';

export interface FasterVLMOptions {
  /** Tokens to keep per image (README: 144, 58, 29 of 576). */
  keep?: number;
  /** Or the pruned fraction r: keep round(N·(1 − r)) (LightCompress convention). */
  reduction?: number;
  /**
   * `false` (default): `indices` are patch indices (0 = the first patch after
   * CLS), as the authors' code returns them, for features without CLS.
   * `true`: positions in the token sequence that includes CLS (patch index
   * + 1), to `gather` rows of features that include CLS.
   */
  tokenIndices?: boolean;
}

function* fasterVLMSteps(src: AttentionSource, opts: FasterVLMOptions, op: string): MethodGen<SelectionResult> {
  const o = checkOptions(op, opts, ['keep', 'reduction', 'tokenIndices']);
  const tokenIndices = tokenIndicesOption(op, o.tokenIndices);
  const { N } = sourceDims(op, src);
  const k = keepCount(op, o, N - 1);
  const scores = yield* scoresOf(op, src, { queries: 0, reduce: 'sum', heads: 'mean', keys: { start: 1 } });
  const { indices } = yield* topkOf(scores, k, { order: 'index', values: false });
  return { indices: tokenIndices ? patchToTokenIndices(indices) : indices, scores };
}

/**
 * @example
 * // CLIP-L layer -2 of 5 crops: q, k [5, 16, 577, 64]
 * const { indices } = await fasterVLM({ q, k }, { keep: 58 }); // i32 [5, 58] patch indices, ascending
 * // to gather from features [5, 577, C] that include CLS:
 * const { indices: rows } = await fasterVLM({ q, k }, { keep: 58, tokenIndices: true }); // patch + 1
 */
export function fasterVLM(src: AttentionSource, opts: FasterVLMOptions): Promise<SelectionResult> {
  return driveAsync(fasterVLMSteps(src, opts, 'fasterVLM'), 'fasterVLM');
}

export function fasterVLMSync(src: AttentionSource, opts: FasterVLMOptions): SelectionResult {
  return drive(fasterVLMSteps(src, opts, 'fasterVLMSync'), 'fasterVLMSync');
}
