/**
 * VisionDrop (Ruixxxx/VisionDrop): training-free visual-only token dropping
 * inside the LLM, in stages.
 *
 * Reference convention (specs/methods.md §5): after decoder layer
 * rank_layer − 1, with layer rank_layer's q/k (post-RoPE) of the current
 * sequence: softmax (fp32) of the image-token query rows against all keys
 * under the causal mask, mean over heads, keep the image-key columns, mean
 * over the image queries → one score per image token (earlier tokens are seen
 * by more queries: a positional bias the reference has and we keep).
 * Dominant = topk(score, d) in original order; the other image tokens become
 * c contextual tokens by contextual merging on the head-mean post-RoPE keys.
 * Output [dominant, contextual]; position ids are rebuilt contiguously by the
 * caller. The encoder stage is VisionZip's (see visionZip).
 */
import { invalid, makeError } from '../errors';
import { checkOptions, int } from '../kernels/common';
import { contextualMerge, contextualMergeSync } from '../kernels/merge';
import { gather, gatherSync } from '../kernels/select';
import { Tensor, TensorLike, toTensor } from '../tensor';
import { call, catTokens, drive, driveAsync, MergeSelectionResult, MethodGen, scoresOf, topkOf } from './common';


export interface VisionDropOptions {
  /** Index of the first image token in the sequence. */
  imageStart: number;
  /** Image tokens in the sequence now. */
  imageCount: number;
  /** Dominant tokens to keep. */
  dominant: number;
  /** Contextual tokens to form from the rest. */
  contextual: number;
  /** q/k layout (default 'bhnd'). */
  layout?: 'bhnd' | 'bnhd';
  /** Logit scale (default 1/√D). */
  scale?: number;
}

export interface VisionDropStage {
  /** Run after this decoder layer index (rank_layer − 1). */
  afterLayer: number;
  /** Image tokens going in. */
  from: number;
  dominant: number;
  contextual: number;
}

/**
 * The reference's multi-stage schedule: `layerList` (e.g. [8, 16, 24]) and
 * `imageTokenList` (e.g. [[30, 5], [22, 4], [16, 3]]); the encoder's
 * [dominant + contextual] is the first stage's input, and stage s goes from
 * sum(list[s − 1]) tokens to list[s].
 * @example visionDropStages([8, 16, 24], [[30, 5], [22, 4], [16, 3]], [42, 6])
 */
export function visionDropStages(layerList: number[], imageTokenList: Array<[number, number]>, encoder: [number, number]): VisionDropStage[] {
  if (!Array.isArray(layerList) || !Array.isArray(imageTokenList) || layerList.length !== imageTokenList.length) {
    throw makeError('ERR_ARG', 'visionDropStages: layerList and imageTokenList must be arrays of the same length');
  }
  const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;
  const pair = (v: unknown): v is [number, number] => Array.isArray(v) && v.length === 2 && count(v[0]) && count(v[1]);
  if (!pair(encoder)) throw invalid('ERR_ARG', 'visionDropStages encoder', '[dominant, contextual] of integers >= 1', encoder);
  layerList.forEach((layer, s) => {
    if (!count(layer)) throw invalid('ERR_ARG', `visionDropStages layerList[${s}]`, 'an integer >= 1', layer);
    if (!pair(imageTokenList[s])) throw invalid('ERR_ARG', `visionDropStages imageTokenList[${s}]`, '[dominant, contextual] of integers >= 1', imageTokenList[s]);
  });
  const stages: VisionDropStage[] = [];
  let from = encoder[0] + encoder[1];
  layerList.forEach((layer, s) => {
    const [d, c] = imageTokenList[s];
    if (d + c > from) throw makeError('ERR_RANGE', `visionDropStages: stage ${s} keeps ${d + c} of ${from} image tokens`);
    stages.push({ afterLayer: layer - 1, from, dominant: d, contextual: c });
    from = d + c;
  });
  return stages;
}

function* scoreSteps(q: TensorLike, k: TensorLike, o: VisionDropOptions, start: number, n: number): MethodGen<{ indices: Tensor; scores: Tensor }> {
  const scores = yield* scoresOf('visionDrop', { q, k, layout: o.layout, scale: o.scale }, {
    queries: { start, end: start + n }, reduce: 'mean', heads: 'mean', keys: { start, end: start + n }, causal: true,
  });
  const { indices } = yield* topkOf(scores, o.dominant, { order: 'index', values: false });
  return { indices, scores };
}

function prepare(op: string, hidden: TensorLike, opts: VisionDropOptions): { h: Tensor; start: number; n: number } {
  const o = checkOptions(op, opts, ['imageStart', 'imageCount', 'dominant', 'contextual', 'layout', 'scale']);
  const h = toTensor(hidden, 'hidden');
  if (h.ndim !== 3) throw makeError('ERR_SHAPE', `Expected image hidden states of rank 3 [B, nImg, C] for ${op} but received [${h.shape.join(', ')}]`);
  const n = int(op, 'imageCount', o.imageCount, 1, 2 ** 31 - 1);
  if (h.shape[1] !== n) throw makeError('ERR_SHAPE', `Expected hidden with imageCount = ${n} tokens for ${op} but received [${h.shape.join(', ')}]`);
  const start = int(op, 'imageStart', o.imageStart, 0, 2 ** 31 - 1);
  const d = int(op, 'dominant', o.dominant, 1, n);
  int(op, 'contextual', o.contextual, 1, Math.max(1, n - d));
  if (d + (o.contextual as number) > n) throw makeError('ERR_RANGE', `${op}: dominant + contextual exceeds the ${n} image tokens`);
  return { h, start, n };
}

/**
 * One LLM stage.
 * @param q,k layer rank_layer's post-RoPE queries and keys of the whole sequence, [B, H, L, D]
 * @param hidden the image tokens' hidden states, [B, nImg, C]
 * @param metric the image tokens' post-RoPE keys averaged over heads, [B, nImg, D]
 * @example const { tokens } = await visionDrop(q, k, imgHidden, imgKeyMean, { imageStart: 35, imageCount: 48, dominant: 30, contextual: 5 });
 */
export async function visionDrop(q: TensorLike, k: TensorLike, hidden: TensorLike, metric: TensorLike, opts: VisionDropOptions): Promise<MergeSelectionResult> {
  return driveAsync(steps('visionDrop', q, k, hidden, metric, opts), 'visionDrop');
}

export function visionDropSync(q: TensorLike, k: TensorLike, hidden: TensorLike, metric: TensorLike, opts: VisionDropOptions): MergeSelectionResult {
  return drive(steps('visionDropSync', q, k, hidden, metric, opts), 'visionDropSync');
}

function* steps(op: string, q: TensorLike, k: TensorLike, hidden: TensorLike, metric: TensorLike, opts: VisionDropOptions): MethodGen<MergeSelectionResult> {
  const { h, start, n } = prepare(op, hidden, opts);
  const { indices, scores } = yield* scoreSteps(q, k, opts, start, n);
  const ctx = (yield call(contextualMergeSync, contextualMerge, h, metric, { keptIndices: indices }, opts.contextual)) as Tensor;
  return { tokens: catTokens((yield call(gatherSync, gather, h, indices)) as Tensor, ctx), indices, scores };
}
