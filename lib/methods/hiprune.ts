/**
 * HiPrune (Danielement321/HiPrune), LLaVA path: anchors from a shallow
 * ("object") layer, their 4-neighbours as buffers, and registers from the
 * deep layer, all by global attention.
 *
 * Reference convention (specs/methods.md §3):
 * - score of a layer = mean attention each key receives over **all** query
 *   rows (CLS included), head mean, CLS column dropped: `A.mean(h).mean(q)[:, 1:]`;
 *   shallow = attentions[l-1] (l = 9), deep = attentions[-2];
 * - per-crop budget `int(T / crops)`; anchors = topk(shallow, round(T·α/5)) (Python round);
 * - buffers = anchors ± 1 and ± gridWidth, clamped to [0, N-1], deduplicated.
 *   The reference does **no row-wrap check** (idx-1 at column 0 is the last
 *   token of the previous row): that is the default (`neighbors: 'reference'`);
 *   `neighbors: 'grid'` keeps only true 2-D neighbours;
 * - registers = topk of the deep score over the tokens not yet chosen,
 *   `T - |anchors ∪ buffers|` of them;
 * - everything sorted (raster order).
 * The reference removes chosen tokens with `deep -= 1`; here they are
 * excluded outright, which differs only if an unchosen token's score and a
 * chosen token's score minus one tie at exactly 0.
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
  pyRound,
  scoresOf,
  SelectionResult,
  sourceDims,
  tokenIndicesOption,
  topkOf,
} from './common';

export interface HiPruneOptions {
  /**
   * Tokens kept per image, T (LLaVA-1.5: 192, 128, 64; NeXT: 640, 320, 160);
   * each crop keeps int(T / crops). Pass exactly one of `keep`, `ratio` or
   * `retention`.
   */
  keep?: number;
  /** Or the fraction of each crop's patches kept: round(ratio·N) per crop (Python rounding). */
  ratio?: number;
  /** The authors' name for `keep` (HiPrune's "retention" T); an alias. */
  retention?: number;
  /** Anchor fraction α (default 0.1). */
  alpha?: number;
  /** Patch-grid width (default 24 for CLIP-L/336). */
  gridWidth?: number;
  /** Crops per image: each batch element is one crop with budget int(T / crops) (default 1). */
  crops?: number;
  /** Whether token 0 is a CLS token to drop (default true). */
  cls?: boolean;
  /** `'reference'` (default): ±1 without a row-wrap check; `'grid'`: true 2-D 4-neighbours. */
  neighbors?: 'reference' | 'grid';
  /**
   * `false` (default): `indices` are patch indices (0 = the first patch after
   * CLS), as the authors' code returns them. `true`: positions in the token
   * sequence that includes CLS (patch index + 1), to gather rows of features
   * that include CLS. Needs `cls: true`; `anchors` stay patch indices.
   */
  tokenIndices?: boolean;
}

export interface HiPruneResult extends SelectionResult {
  /** Kept patch indices (token positions with `tokenIndices`), ascending, i32 [B, int(T / crops)]. */
  indices: Tensor;
  /** Deep-layer score, f32 [B, N]. */
  scores: Tensor;
  /** Shallow-layer score, f32 [B, N]. */
  shallowScores: Tensor;
  /** Anchor patch indices (by descending shallow score), i32 [B, nAnchors]. */
  anchors: Tensor;
}

function* hiPruneSteps(shallow: AttentionSource, deep: AttentionSource, opts: HiPruneOptions, op: string): MethodGen<HiPruneResult> {
  const o = checkOptions(op, opts, ['keep', 'ratio', 'retention', 'alpha', 'gridWidth', 'crops', 'cls', 'neighbors', 'tokenIndices']);
  const { B, N: Ntok, device } = sourceDims(op, deep);
  const shallowDims = sourceDims(op, shallow);
  if (shallowDims.B !== B || shallowDims.N !== Ntok) {
    throw makeError('ERR_SHAPE', `Expected the shallow and deep attention of ${op} to have the same batch and token count but received B=${shallowDims.B}, N=${shallowDims.N} and B=${B}, N=${Ntok}`);
  }
  const cls = o.cls === undefined ? true : o.cls;
  if (typeof cls !== 'boolean') throw invalid('ERR_ARG', `${op} cls`, 'a boolean', cls);
  const N = cls ? Ntok - 1 : Ntok;
  if (N < 1) throw makeError('ERR_SHAPE', `${op}: no patch tokens left after dropping CLS`);
  const crops = o.crops === undefined ? 1 : int(op, 'crops', o.crops, 1, 1 << 20);
  const given = (['keep', 'ratio', 'retention'] as const).filter((key) => o[key] !== undefined);
  if (given.length !== 1) {
    throw makeError('ERR_ARG', `${op}: pass exactly one of keep (tokens kept per image), ratio (the fraction kept) or retention (an alias of keep)${given.length ? ` but received ${given.join(' and ')}` : ''}`);
  }
  let perCrop: number;
  if (o.ratio !== undefined) {
    const r = o.ratio;
    if (typeof r !== 'number' || !(r > 0 && r <= 1)) throw invalid('ERR_RANGE', `${op} ratio (the fraction of patches kept)`, 'a number in (0, 1]', r);
    perCrop = pyRound(r * N);
    if (perCrop < 1) throw makeError('ERR_RANGE', `Expected ${op} to keep at least 1 of ${N} patches but ratio ${r} keeps ${perCrop}`);
  } else {
    const name = given[0];
    const T = int(op, name, o[name], 1, N * crops);
    perCrop = Math.floor(T / crops);
    if (perCrop < 1) throw makeError('ERR_RANGE', `Expected ${op} ${name} >= crops (${crops}) but received ${T}`);
    if (perCrop > N) throw makeError('ERR_RANGE', `Expected ${op} ${name} per crop <= ${N} but received ${perCrop}`);
  }
  const tokenIndices = tokenIndicesOption(op, o.tokenIndices);
  if (tokenIndices && !cls) throw makeError('ERR_ARG', `${op}: tokenIndices needs cls: true (without a CLS token, patch and token indices are the same)`);
  const alpha = o.alpha === undefined ? 0.1 : o.alpha;
  if (typeof alpha !== 'number' || !(alpha >= 0 && alpha <= 1)) throw invalid('ERR_RANGE', `${op} alpha`, 'a number in [0, 1]', alpha);
  const W = o.gridWidth === undefined ? 24 : int(op, 'gridWidth', o.gridWidth, 1, N);
  const neighbors = o.neighbors === undefined ? 'reference' : o.neighbors;
  if (neighbors !== 'reference' && neighbors !== 'grid') throw invalid('ERR_ARG', `${op} neighbors`, "'reference' or 'grid'", neighbors);

  const reduction = { queries: 'all', reduce: 'mean', heads: 'mean', keys: { start: cls ? 1 : 0 } } as const;
  const shallowScores = yield* scoresOf(op, shallow, reduction);
  const deepScores = yield* scoresOf(op, deep, reduction);

  const nAnchors = Math.min(N, pyRound((perCrop * alpha) / 5));
  let anchorIdx = new Int32Array(0);
  if (nAnchors > 0) {
    const { indices } = yield* topkOf(shallowScores, nAnchors, { order: 'score', values: false });
    anchorIdx = Int32Array.from(indices.toArray());
  }
  const deepHost = hostF32(deepScores);
  const out = new Int32Array(B * perCrop);
  const chosen = new Uint8Array(N);
  for (let b = 0; b < B; b++) {
    chosen.fill(0);
    let count = 0;
    const take = (i: number): void => {
      if (!chosen[i]) {
        chosen[i] = 1;
        count++;
      }
    };
    for (let a = 0; a < nAnchors; a++) {
      const idx = anchorIdx[b * nAnchors + a];
      take(idx);
      if (neighbors === 'reference') {
        for (const nb of [idx - 1, idx + 1, idx - W, idx + W]) take(Math.min(N - 1, Math.max(0, nb)));
      } else {
        const col = idx % W;
        if (col > 0) take(idx - 1);
        if (col < W - 1 && idx + 1 < N) take(idx + 1);
        if (idx - W >= 0) take(idx - W);
        if (idx + W < N) take(idx + W);
      }
    }
    // Registers: the best deep-layer tokens among those not chosen yet
    // (stable: ties to the lower index, NaN last).
    const registers = Math.max(0, perCrop - count);
    if (registers > 0) {
      const row = deepHost.subarray(b * N, (b + 1) * N);
      const candidates: number[] = [];
      for (let i = 0; i < N; i++) if (!chosen[i]) candidates.push(i);
      candidates.sort((x, y) => {
        const vx = row[x], vy = row[y];
        const nx = Number.isNaN(vx), ny = Number.isNaN(vy);
        if (nx !== ny) return nx ? 1 : -1;
        if (!nx && vx !== vy) return vy - vx;
        return x - y;
      });
      for (let i = 0; i < registers; i++) chosen[candidates[i]] = 1;
    }
    // When anchors and buffers alone exceed the budget (only possible for
    // alpha near 1), the reference would fail in topk; keep the first perCrop.
    let w = b * perCrop;
    for (let i = 0; i < N && w < (b + 1) * perCrop; i++) if (chosen[i]) out[w++] = tokenIndices ? i + 1 : i;
  }
  return {
    indices: indexTensor(out, [B, perCrop], device),
    scores: deepScores,
    shallowScores,
    anchors: indexTensor(anchorIdx, [B, nAnchors], device),
  };
}

/**
 * @example
 * // LLaVA-1.5: shallow = layer 8 (l = 9, 1-based), deep = layer 22 (-2)
 * const { indices } = await hiPrune({ q: q8, k: k8 }, { q: q22, k: k22 }, { keep: 128 }); // patch indices
 */
export function hiPrune(shallow: AttentionSource, deep: AttentionSource, opts: HiPruneOptions): Promise<HiPruneResult> {
  return driveAsync(hiPruneSteps(shallow, deep, opts, 'hiPrune'), 'hiPrune');
}

export function hiPruneSync(shallow: AttentionSource, deep: AttentionSource, opts: HiPruneOptions): HiPruneResult {
  return drive(hiPruneSteps(shallow, deep, opts, 'hiPruneSync'), 'hiPruneSync');
}
