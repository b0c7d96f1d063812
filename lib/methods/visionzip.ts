/**
 * VisionZip (dvlab-research/VisionZip) and the contextual-token helpers it
 * shares with VisionDrop.
 *
 * Reference convention (specs/methods.md §9a): in the penultimate encoder
 * layer, dominant = CLS + the top (dominant − 1) patches by the CLS attention
 * row summed over heads, kept in original order; the other tokens become
 * `contextual` tokens by contextual merging on that layer's head-mean keys;
 * output [dominant, contextual]. `dominant` counts the CLS token (the
 * README's 162+30 is 161 patches + CLS + 30 contextual = 192 tokens).
 */
import { makeError } from '../errors';
import { checkOptions, int } from '../kernels/common';
import { contextualMerge, contextualMergeSync } from '../kernels/merge';
import { gather, gatherSync } from '../kernels/select';
import { Tensor, TensorLike, toTensor } from '../tensor';
import { AttentionSource, call, catTokens, drive, driveAsync, MergeSelectionResult, MethodGen, scoresOf, sourceDims, topkOf } from './common';

export type { MergeSelectionResult } from './common';

/** README/config presets for 577 CLIP-L tokens (LLaVA-1.5): total 192, 128, 64. */
export const VISIONZIP_PRESETS = {
  192: { dominant: 162, contextual: 30 },
  128: { dominant: 108, contextual: 20 },
  64: { dominant: 54, contextual: 10 },
} as const;

export interface VisionZipOptions {
  /** Dominant tokens including CLS. */
  dominant?: number;
  contextual?: number;
  /** Or a preset: total tokens kept (192, 128 or 64). */
  preset?: 192 | 128 | 64;
}

function counts(op: string, opts: VisionZipOptions, N: number): { d: number; c: number } {
  const o = checkOptions(op, opts, ['dominant', 'contextual', 'preset']);
  let d = o.dominant;
  let c = o.contextual;
  if (o.preset !== undefined) {
    if (d !== undefined || c !== undefined) throw makeError('ERR_ARG', `${op}: pass a preset or dominant/contextual, not both`);
    const p = VISIONZIP_PRESETS[o.preset as 192];
    if (!p) throw makeError('ERR_ARG', `${op}: unknown preset ${String(o.preset)} (expected 192, 128 or 64)`);
    d = p.dominant;
    c = p.contextual;
  }
  const dd = int(op, 'dominant', d, 1, N);
  const cc = int(op, 'contextual', c, 1, Math.max(1, N - dd));
  if (dd + cc > N) throw makeError('ERR_RANGE', `${op}: dominant + contextual (${dd + cc}) exceeds the ${N} tokens`);
  return { d: dd, c: cc };
}

function* dominantSteps(src: AttentionSource, N: number, d: number): MethodGen<{ indices: Tensor; scores: Tensor }> {
  const scores = yield* scoresOf('visionZip', src, { queries: 0, reduce: 'sum', heads: 'sum', keys: { start: 1 } });
  let patches: Tensor | undefined;
  if (d > 1) {
    const r = yield* topkOf(scores, d - 1, { order: 'index', values: false });
    patches = r.indices;
  }
  // CLS (0) + patches + 1, ascending
  const B = scores.shape[0];
  const p = patches ? (patches.toHost().data as Int32Array) : new Int32Array(0);
  const idx = new Int32Array(B * d);
  for (let b = 0; b < B; b++) {
    idx[b * d] = 0;
    for (let j = 1; j < d; j++) idx[b * d + j] = p[b * (d - 1) + j - 1] + 1;
  }
  void N;
  const host = Tensor.from({ data: idx, shape: [B, d] });
  return { indices: scores.isHost ? host : host.to(scores.device), scores };
}

/**
 * @example
 * // CLIP-L layer 22: attention q, k [B, 16, 577, 64], hidden [B, 577, 1024], keys head-mean [B, 577, 64]
 * const { tokens } = await visionZip({ q, k }, hidden, keyMean, { preset: 192 }); // [B, 192, 1024]
 */
export async function visionZip(src: AttentionSource, hidden: TensorLike, metric: TensorLike, opts: VisionZipOptions): Promise<MergeSelectionResult> {
  return driveAsync(steps('visionZip', src, hidden, metric, opts), 'visionZip');
}

export function visionZipSync(src: AttentionSource, hidden: TensorLike, metric: TensorLike, opts: VisionZipOptions): MergeSelectionResult {
  return drive(steps('visionZipSync', src, hidden, metric, opts), 'visionZipSync');
}

function* steps(op: string, src: AttentionSource, hidden: TensorLike, metric: TensorLike, opts: VisionZipOptions): MethodGen<MergeSelectionResult> {
  const { N } = sourceDims(op, src);
  const { d, c } = counts(op, opts, N);
  const h = toTensor(hidden, 'hidden');
  if (h.ndim !== 3 || h.shape[1] !== N) {
    throw makeError('ERR_SHAPE', `Expected hidden of shape [B, ${N}, C] (the attention's ${N} tokens) for ${op} but received [${h.shape.join(', ')}]`);
  }
  const { indices, scores } = yield* dominantSteps(src, N, d);
  const ctx = (yield call(contextualMergeSync, contextualMerge, h, metric, { keptIndices: indices }, c)) as Tensor;
  const dom = (yield call(gatherSync, gather, h, indices)) as Tensor;
  return { tokens: catTokens(dom, ctx), indices, scores };
}

