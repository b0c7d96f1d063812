/**
 * Float64 reference of STC's pruner as the authors' code computes it, with
 * switches for the readings the tests prove wrong.
 */
import { row } from './diversity';

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;

/**
 * Which step of STC's pruner a reference run follows. The defaults are the
 * authors' code (lern-to-write/STC 9b13ce0, STC_Pruner.compress); `memory:
 * 'aligned'` is tokensieve's documented option. `normalize: 'all'` and
 * `memoryOf: 'normalised'` are the package's former readings, kept here only
 * so the tests can show that each convention changes the kept set.
 */
export interface RefStcConventions {
  memory?: 'authors' | 'aligned';
  normalize?: 'selected' | 'all';
  memoryOf?: 'raw' | 'normalised';
}

/**
 * STC scores of one chunk [F, T, C] (float64), with the earlier chunk means
 * (each as this function returned it: [Cs] in its chunk's channel order for
 * memory 'authors', [C] for 'aligned'). Follows the authors' code step by step:
 * select_feature_channel (population variance over the chunk's tokens, the
 * ⌊C/2⌋ lowest in ascending order), _update_memory (the raw mean of the
 * selected features, appended; the memory is the mean of the list),
 * compute_scores (F.normalize over the selected channels, eps 1e-12; frame
 * mean of the normalised features; G against it and against the normalised
 * memory).
 */
export function refStcScores(
  x: ArrayLike<number>, F: number, T: number, C: number, pastMeans: number[][], conv: RefStcConventions = {},
): { scores: number[]; chunkMean: number[]; channels: number[] } {
  const { memory: mode = 'authors', normalize = 'selected', memoryOf = 'raw' } = conv;
  const M = F * T;
  const rows = Array.from({ length: M }, (_, i) => row(x, i * C, C));
  const mean = Array.from({ length: C }, (_, c) => rows.reduce((s, r) => s + r[c], 0) / M);
  const variance = Array.from({ length: C }, (_, c) => rows.reduce((s, r) => s + (r[c] - mean[c]) ** 2, 0) / M);
  const Cs = Math.max(1, Math.floor(C / 2));
  const ch = Array.from({ length: C }, (_, c) => c).sort((a, b) => variance[a] - variance[b] || a - b).slice(0, Cs);
  const unit = (v: number[]): number[] => {
    const n = Math.max(Math.hypot(...v), 1e-12);
    return v.map((e) => e / n);
  };
  // [M, Cs]: the selected channels, in ascending-variance order, normalised.
  const xn = normalize === 'selected' ? rows.map((r) => unit(ch.map((c) => r[c]))) : rows.map((r) => { const u = unit(r); return ch.map((c) => u[c]); });
  const meanOf = (vs: number[][]): number[] => vs[0].map((_, j) => vs.reduce((s, v) => s + v[j], 0) / vs.length);
  // The chunk mean that goes into the memory list.
  const source = memoryOf === 'raw' ? rows : rows.map(unit); // [M, C]
  const chunkMean = mode === 'authors' ? meanOf(source.map((r) => ch.map((c) => r[c]))) : meanOf(source);
  const history = [...pastMeans, chunkMean];
  const memoryVec = mode === 'authors' ? meanOf(history) : ch.map((c) => history.reduce((s, m) => s + m[c], 0) / history.length);
  const memory = unit(memoryVec);
  const G = (d2: number) => [0.125, 0.25, 0.5, 1, 2].reduce((s, a) => s + Math.exp(-d2 / (2 * a)), 0);
  const scores: number[] = [];
  for (let f = 0; f < F; f++) {
    const fm = meanOf(xn.slice(f * T, (f + 1) * T));
    for (let t = 0; t < T; t++) {
      const r = xn[f * T + t];
      const df = r.reduce((s, v, j) => s + (v - fm[j]) ** 2, 0);
      const dm = r.reduce((s, v, j) => s + (v - memory[j]) ** 2, 0);
      scores.push(G(df) + G(dm));
    }
  }
  return { scores, chunkMean, channels: ch };
}

/** Kept positions per frame: the k lowest scores, ties to the lower index, ascending. */
export function refKeepLowest(scores: number[], F: number, T: number, k: number): number[] {
  const out: number[] = [];
  for (let f = 0; f < F; f++) {
    const idx = Array.from({ length: T }, (_, t) => t).sort((a, b) => scores[f * T + a] - scores[f * T + b] || a - b);
    out.push(...idx.slice(0, k).sort((a, b) => a - b));
  }
  return out;
}
