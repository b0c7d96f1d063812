/**
 * FastV (pkunlp-icler/FastV): after LLM layer K-1, keep the image tokens the
 * last prompt token attends to most.
 *
 * Reference convention (specs/methods.md §9b): the post-softmax attention of
 * layer K-1, mean over heads, the row of the **last token** of the prefill
 * sequence, restricted to the image columns; `topk(R)`; the kept sequence
 * is `[0, imageStart) ∪ topk ∪ [imageStart + N, L)`, **sorted**, and those
 * original positions are kept as RoPE position ids (with gaps). The HF
 * version keeps `round(N·(1 − r))`. The reference selects with batch element
 * 0 for the whole batch; here every batch element gets its own selection
 * (identical for batch 1).
 */
import { makeError } from '../errors';
import { checkOptions, int } from '../kernels/common';
import { Tensor } from '../tensor';
import {
  AttentionSource,
  drive,
  driveAsync,
  hostI32,
  indexTensor,
  keepCount,
  MethodGen,
  scoresOf,
  SelectionResult,
  sourceDims,
  topkOf,
} from './common';

export interface FastVOptions {
  /** Position of the first image token in the sequence (35 for LLaVA-1.5, 5 for llava-hf). */
  imageStart: number;
  /** Number of image tokens (576 for LLaVA-1.5). */
  imageLength: number;
  /** Image tokens to keep (R). */
  keep?: number;
  /** Or the pruned fraction r: keep round(N·(1 − r)). */
  reduction?: number;
  /** The query row whose attention ranks the image tokens (default -1: the last token). */
  queryRow?: number;
  /** Causal mask for q/k input (default true; ignored for precomputed probabilities). */
  causal?: boolean;
}

export interface FastVResult extends SelectionResult {
  /** Kept image tokens, relative to imageStart, ascending: i32 [B, keep]. */
  indices: Tensor;
  /** Their original sequence positions (imageStart + index): i32 [B, keep]. */
  positions: Tensor;
  /** The whole kept sequence (prefix, kept image tokens, suffix) = FastV's keep indices and position ids: i32 [B, L − N + keep]. */
  sequence: Tensor;
  /** Head-mean attention of the query row to each image token: f32 [B, N]. */
  scores: Tensor;
}

function* fastVSteps(src: AttentionSource, opts: FastVOptions, op: string): MethodGen<FastVResult> {
  const o = checkOptions(op, opts, ['imageStart', 'imageLength', 'keep', 'reduction', 'queryRow', 'causal']);
  const { B, N: L, device } = sourceDims(op, src);
  const start = int(op, 'imageStart', o.imageStart, 0, L - 1);
  const n = int(op, 'imageLength', o.imageLength, 1, L - start);
  const k = keepCount(op, o, n);
  const queryRow = o.queryRow === undefined ? -1 : (o.queryRow as number);
  const scores = yield* scoresOf(op, src, {
    queries: queryRow,
    reduce: 'sum',
    heads: 'mean',
    keys: { start, end: start + n },
    causal: o.causal === undefined ? true : (o.causal as boolean),
  });
  if (scores.shape[1] !== n) throw makeError('ERR_INTERNAL', `${op}: unexpected score width`);
  const { indices } = yield* topkOf(scores, k, { order: 'index', values: false });
  const idx = hostI32(indices);
  const positions = new Int32Array(B * k);
  const seqLen = L - n + k;
  const sequence = new Int32Array(B * seqLen);
  for (let b = 0; b < B; b++) {
    let w = b * seqLen;
    for (let i = 0; i < start; i++) sequence[w++] = i;
    for (let i = 0; i < k; i++) {
      positions[b * k + i] = start + idx[b * k + i];
      sequence[w++] = start + idx[b * k + i];
    }
    for (let i = start + n; i < L; i++) sequence[w++] = i;
  }
  return {
    indices,
    scores,
    positions: indexTensor(positions, [B, k], device),
    sequence: indexTensor(sequence, [B, seqLen], device),
  };
}

/**
 * @example
 * // layer K-1 of the LLM, q/k [1, 32, L, 128]: keep 50% of 576 image tokens at 35
 * const { sequence } = await fastV({ q, k }, { imageStart: 35, imageLength: 576, reduction: 0.5 });
 */
export function fastV(src: AttentionSource, opts: FastVOptions): Promise<FastVResult> {
  return driveAsync(fastVSteps(src, opts, 'fastV'), 'fastV');
}

export function fastVSync(src: AttentionSource, opts: FastVOptions): FastVResult {
  return drive(fastVSteps(src, opts, 'fastVSync'), 'fastVSync');
}
