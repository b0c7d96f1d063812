/**
 * Float64 references for the attention-score kernels: the dense, obvious
 * computation (full softmax rows), written from the semantics in
 * include/tokensieve/attention.h, never from the kernels.
 */

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

export interface RefAttentionArgs {
  /** q values in logical [B, H, Nq, D] order (already rounded to the input dtype). */
  q: ArrayLike<number>;
  /** k values in logical [B, H, Nk, D] order. */
  k: ArrayLike<number>;
  B: number;
  H: number;
  Nq: number;
  Nk: number;
  D: number;
  scale: number;
  causal?: boolean;
  causalOffset?: number;
  keyBias?: ArrayLike<number>; // [B, Nk]
}

export interface RefReduction {
  rows: readonly number[];
  reduce: 'mean' | 'sum';
  heads: 'mean' | 'sum' | 'none';
  keyBegin: number;
  keyEnd: number;
}

/** Softmax probabilities [B, H, Nq, Nk] in float64 (masked entries 0; fully masked rows all 0). */
export function refProbs(a: RefAttentionArgs): Float64Array {
  const { B, H, Nq, Nk, D } = a;
  const offset = a.causalOffset ?? Nk - Nq;
  const p = new Float64Array(B * H * Nq * Nk);
  const s = new Float64Array(Nk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < Nq; i++) {
        const qo = ((b * H + h) * Nq + i) * D;
        let m = -Infinity;
        for (let j = 0; j < Nk; j++) {
          if (a.causal && j > i + offset) {
            s[j] = -Infinity;
            continue;
          }
          const ko = ((b * H + h) * Nk + j) * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += a.q[qo + d] * a.k[ko + d];
          s[j] = dot * a.scale + (a.keyBias ? a.keyBias[b * Nk + j] : 0);
          if (s[j] > m) m = s[j];
        }
        if (m === -Infinity) continue;
        let z = 0;
        for (let j = 0; j < Nk; j++) z += s[j] === -Infinity ? 0 : Math.exp(s[j] - m);
        const po = ((b * H + h) * Nq + i) * Nk;
        for (let j = 0; j < Nk; j++) p[po + j] = s[j] === -Infinity ? 0 : Math.exp(s[j] - m) / z;
      }
    }
  }
  return p;
}

/** Reduction of probabilities [B, H, Nq, Nk] as attentionScores/reduceAttention define it. */
export function refReduce(p: ArrayLike<number>, B: number, H: number, Nq: number, Nk: number, r: RefReduction): Float64Array {
  const W = r.keyEnd - r.keyBegin;
  const perHead = new Float64Array(B * H * W);
  const w = r.reduce === 'mean' ? 1 / r.rows.length : 1;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (const i of r.rows) {
        const po = ((b * H + h) * Nq + i) * Nk;
        for (let j = 0; j < W; j++) perHead[(b * H + h) * W + j] += w * p[po + r.keyBegin + j];
      }
    }
  }
  if (r.heads === 'none') return perHead;
  const out = new Float64Array(B * W);
  const hw = r.heads === 'mean' ? 1 / H : 1;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) for (let j = 0; j < W; j++) out[b * W + j] += hw * perHead[(b * H + h) * W + j];
  }
  return out;
}

export function refAttentionScores(a: RefAttentionArgs, r: RefReduction): Float64Array {
  return refReduce(refProbs(a), a.B, a.H, a.Nq, a.Nk, r);
}

/** Reorders [B, N, H, D] values into [B, H, N, D]. */
export function bnhdToBhnd(x: ArrayLike<number>, B: number, N: number, H: number, D: number): Float64Array {
  const out = new Float64Array(B * N * H * D);
  for (let b = 0; b < B; b++)
    for (let n = 0; n < N; n++)
      for (let h = 0; h < H; h++)
        for (let d = 0; d < D; d++) out[((b * H + h) * N + n) * D + d] = x[((b * N + n) * H + h) * D + d];
  return out;
}
