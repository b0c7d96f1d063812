/**
 * tomesd (dbolya/tomesd): ToMe for Stable Diffusion. Before a block's
 * self-attention the tokens are merged, and the attention output is unmerged
 * before the residual: x = u(attn(m(norm(x)))) + x.
 *
 * Reference convention (specs/methods.md §1.5): the metric is the raw block
 * input x; r = int(N·ratio); one destination per sy×sx window of the h×w grid
 * (random from a generator, top-left with use_rand off or an odd batch, as
 * compute_merge forces); plain mean with the destination included, no sizes,
 * no proportional attention.
 *
 * Divergence: tomesd draws the windows with torch.randint from a generator
 * forked from torch's global RNG state; we use the documented mulberry32
 * generator seeded by `seed` (see split2d in kernels/merge.ts). Same
 * distribution, not the same draws.
 */
import { invalid } from '../errors';
import { checkOptions, oneOf } from '../kernels/common';
import { bipartiteSoftMatch, bipartiteSoftMatchSync, BipartiteOptions, MatchPrecision, merge, MergePlan, MergeResult, mergeSync } from '../kernels/merge';
import { Tensor, TensorLike, toTensor } from '../tensor';
import { call, drive, driveAsync, MethodGen } from './common';

export interface ToMeSDOptions {
  /** Token grid width and height (w·h = N). */
  w: number;
  h: number;
  /**
   * Fraction of tokens **merged** (default 0.5, tomesd's default; at most
   * 1 − 1/(sx·sy) takes effect). This is tomesd's own `ratio`, kept with its
   * upstream meaning: elsewhere in tokensieve `ratio` is the fraction kept.
   */
  ratio?: number;
  /** Window size (default 2×2). */
  sx?: number;
  sy?: number;
  /** Random destination per window (default true; forced off for an odd batch, as tomesd does). */
  useRand?: boolean;
  /** Seed of the window generator (default 0). */
  seed?: number;
  /**
   * Precision of the matching scores: `'f32'` (default, exact) or `'bf16'`
   * (the normalised x rounded to bf16, f32 sums — tomesd in an fp16/bf16
   * UNet; tensor cores on CUDA). See {@link MatchPrecision}.
   */
  precision?: MatchPrecision;
}

export interface ToMeSDResult {
  /** The plan: merge more tensors with merge(plan, t, { mode: 'mean' }); restore with unmerge(plan, y). Dispose it when done. */
  plan: MergePlan;
  /** x merged, [B, N − r, C] (mean). */
  merged: Tensor;
}

function prepare(x: TensorLike, opts: ToMeSDOptions, op: string): { x: Tensor; r: number; match: BipartiteOptions } {
  const o = checkOptions(op, opts, ['w', 'h', 'ratio', 'sx', 'sy', 'useRand', 'seed', 'precision']);
  const precision = oneOf(op, 'precision', o.precision, ['f32', 'bf16'] as const, 'f32');
  const t = toTensor(x, 'x');
  const ratio = o.ratio === undefined ? 0.5 : o.ratio;
  if (typeof ratio !== 'number' || !(ratio >= 0 && ratio < 1)) throw invalid('ERR_RANGE', `${op} ratio (the fraction of tokens merged, as in tomesd)`, 'a number in [0, 1)', ratio);
  const useRand = o.useRand === undefined ? true : o.useRand;
  if (typeof useRand !== 'boolean') throw invalid('ERR_ARG', `${op} useRand`, 'a boolean', useRand);
  const N = t.ndim === 3 ? t.shape[1] : 0;
  const B = t.ndim === 3 ? t.shape[0] : 0;
  const grid = { w: o.w as number, h: o.h as number, sx: (o.sx ?? 2) as number, sy: (o.sy ?? 2) as number };
  const rand = useRand && B % 2 === 0;
  const split = rand ? { random2d: { ...grid, seed: (o.seed ?? 0) as number } } : { grid2d: grid };
  return { x: t, r: Math.trunc(N * ratio), match: { split, precision } };
}

/**
 * @example
 * // SD UNet, 64×64 latent tokens: x [2, 4096, 320]
 * const { plan, merged } = await tomesd(x, { w: 64, h: 64, ratio: 0.5, seed: 42 });
 * const y = await unmerge(plan, attn(merged)); plan.dispose();
 */
export async function tomesd(x: TensorLike, opts: ToMeSDOptions): Promise<ToMeSDResult> {
  return driveAsync(steps(x, opts, 'tomesd'), 'tomesd');
}

export function tomesdSync(x: TensorLike, opts: ToMeSDOptions): ToMeSDResult {
  return drive(steps(x, opts, 'tomesdSync'), 'tomesdSync');
}

function* steps(x: TensorLike, opts: ToMeSDOptions, op: string): MethodGen<ToMeSDResult> {
  const p = prepare(x, opts, op);
  const plan = (yield call(bipartiteSoftMatchSync, bipartiteSoftMatch, p.x, p.r, p.match)) as MergePlan;
  try {
    return { plan, merged: ((yield call(mergeSync, merge, plan, p.x, { mode: 'mean' })) as MergeResult).x };
  } catch (e) {
    plan.dispose();
    throw e;
  }
}
