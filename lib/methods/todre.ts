/**
 * ToDRE stage 1 (Li, Yang, Lu; arXiv 2505.18757; methods.md §4b): a diverse
 * subset of about 10% of the visual tokens by greedy k-center after the vision
 * encoder. The authors' code is not public, so the choices are ours and
 * documented: K = round(ratio·N) with ratio 0.1, 1 − cos distances and
 * DivPrune's seed (the most isolated token) unless `seed`/`metric` say
 * otherwise; indices sorted. Stage 2 (dropping visual tokens inside the
 * decoder) is a model-side decision and is not part of this function.
 */
import { makeError } from '../errors';
import { call, diversityKeep, drive, driveAsync, MethodGen } from './common';
import { checkOptions } from '../kernels/common';
import { DistanceMetric, kCenter, kCenterSync, KCenterOptions, KCenterResult } from '../kernels/diversity';
import { TensorLike, toTensor } from '../tensor';

export interface ToDREOptions {
  /** Kept fraction (default 0.1, the paper's ~10%). */
  /** Fraction kept, K = round(ratio·N) (default 0.1). */
  ratio?: number;
  /** Kept count instead of a ratio. */
  keep?: number;
  /** Pruned fraction instead of a ratio (K = round(N·(1 − reduction))). */
  reduction?: number;
  /** Default 'cosine'. */
  metric?: DistanceMetric;
  /** Default 'isolated' (DivPrune's rule); 'maxnorm' or an index are the alternatives. */
  seed?: 'isolated' | 'maxnorm' | number;
  exclude?: TensorLike;
  /** Per-frame selection for video: k per segment. */
  segments?: number;
}

function plan(op: string, x: TensorLike, opts: ToDREOptions | undefined): { k: number; o: KCenterOptions } {
  const o = checkOptions(op, opts, ['ratio', 'keep', 'reduction', 'metric', 'seed', 'exclude', 'segments']);
  const t = toTensor(x, 'x');
  if (t.ndim !== 2 && t.ndim !== 3) throw makeError('ERR_SHAPE', `Expected x of rank 3 [B, N, C] (or 2 [N, C]) for ${op} but received shape [${t.shape.join(', ')}]`);
  const segments = o.segments === undefined ? 1 : (o.segments as number);
  const N = t.shape[t.ndim - 2];
  const perSegment = Number.isInteger(segments) && segments >= 1 && N % segments === 0 ? N / segments : N;
  const k = diversityKeep(op, o, perSegment, 0.1);
  return {
    k,
    o: {
      metric: (o.metric as DistanceMetric | undefined) ?? 'cosine',
      seed: (o.seed as KCenterOptions['seed']) ?? 'isolated',
      exclude: o.exclude as TensorLike | undefined,
      segments: o.segments as number | undefined,
    },
  };
}

/**
 * @example const { indices } = await toDRE(visionFeatures); // ~10% of the tokens, ascending
 */
export async function toDRE(x: TensorLike, opts?: ToDREOptions): Promise<KCenterResult> {
  return driveAsync(steps('toDRE', x, opts), 'toDRE');
}

export function toDRESync(x: TensorLike, opts?: ToDREOptions): KCenterResult {
  return drive(steps('toDRESync', x, opts), 'toDRESync');
}

function* steps(op: string, x: TensorLike, opts: ToDREOptions | undefined): MethodGen<KCenterResult> {
  const { k, o } = plan(op, x, opts);
  return (yield call(kCenterSync, kCenter, x, k, o)) as KCenterResult;
}
