/**
 * DivPrune (vbdi/divprune, methods.md §4a): greedy max–min diversity over
 * the visual tokens with D = 1 − cos, seeded with the most isolated token
 * (largest nearest-neighbour distance), K = round(ratio·N), kept indices
 * sorted. Batched here (the reference uses batch element 0 only).
 *
 * Differences from the reference, all deliberate: distances in f32 (the
 * reference uses the model dtype, fp16); picked tokens are masked explicitly
 * (the reference relies on their ≈0 distance, which can re-pick a token when
 * duplicates remain); an all-zero token has cos 0 (the reference divides by
 * its zero norm and gets NaN).
 */
import { invalid, makeError } from '../errors';
import { checkOptions } from '../kernels/common';
import { kCenter, kCenterSync, KCenterOptions, KCenterResult } from '../kernels/diversity';
import { TensorLike, toTensor } from '../tensor';
import { call, diversityKeep, drive, driveAsync, MethodGen } from './common';

export interface DivPruneOptions {
  /** Kept fraction, K = round(ratio·N) (default 0.098: 56 of 576, the reference's SUBSET_RATIO). */
  ratio?: number;
  /** Kept count instead of a ratio. */
  keep?: number;
  /** Pruned fraction instead of a ratio (K = round(N·(1 − reduction))). */
  reduction?: number;
  /** u8 [B, N]: tokens never kept (e.g. padding). */
  exclude?: TensorLike;
}

/** Indices ascending (what the reference keeps), plus the pick order and max–min distances. */
export type DivPruneResult = KCenterResult;

function plan(op: string, x: TensorLike, opts: DivPruneOptions | undefined): { k: number; o: KCenterOptions } {
  const o = checkOptions(op, opts, ['ratio', 'keep', 'reduction', 'exclude']);
  const t = toTensor(x, 'x');
  if (t.ndim !== 2 && t.ndim !== 3) throw makeError('ERR_SHAPE', `Expected x of rank 3 [B, N, C] (or 2 [N, C]) for ${op} but received shape [${t.shape.join(', ')}]`);
  const N = t.shape[t.ndim - 2];
  const k = diversityKeep(op, o, N, 0.098);
  return { k, o: { metric: 'cosine', seed: 'isolated', exclude: o.exclude as TensorLike | undefined } };
}

/**
 * @example
 * // LLaVA-1.5: the 576 projected image tokens of each sample → 56 kept
 * const { indices } = await divPrune(imageEmbeds); // [B, 56], ascending
 * const kept = await gather(imageEmbeds, indices);
 */
export async function divPrune(x: TensorLike, opts?: DivPruneOptions): Promise<DivPruneResult> {
  return driveAsync(steps('divPrune', x, opts), 'divPrune');
}

export function divPruneSync(x: TensorLike, opts?: DivPruneOptions): DivPruneResult {
  return drive(steps('divPruneSync', x, opts), 'divPruneSync');
}

function* steps(op: string, x: TensorLike, opts: DivPruneOptions | undefined): MethodGen<DivPruneResult> {
  const { k, o } = plan(op, x, opts);
  return (yield call(kCenterSync, kCenter, x, k, o)) as DivPruneResult;
}
