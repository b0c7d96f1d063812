/**
 * Float64 references of the blocksparse family, written from the definitions
 * (include/tokensieve/blocksparse.h, specs/blocksparse.md §6d), not from the
 * kernels: masked attention renormalised over the kept keys, exact block
 * attention mass, block pooling and the per-head gather.
 * Tensors are plain row-major arrays in logical [B, H, N, D] order.
 */

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

export interface RefAttentionInput {
  q: ArrayLike<number>; // [B, Hq, N, D]
  k: ArrayLike<number>; // [B, Hkv, Nk, D]
  v: ArrayLike<number>; // [B, Hkv, Nk, D]
  B: number;
  Hq: number;
  Hkv: number;
  N: number;
  Nk: number;
  D: number;
  scale: number;
  /** keep(b, h, qBlock, kBlock) for q-blocks of blockQ and kv-blocks of blockK positions (permuted space). */
  keep: (b: number, h: number, qb: number, kb: number) => boolean;
  blockQ: number;
  blockK: number;
  /** [Hq·N]: position p of head h is token perm[h·N + p] (q, k, v alike); out in original order. */
  perm?: ArrayLike<number>;
  /** Rounds each probability before P·V (the kernels' f16/bf16 P); identity by default. */
  roundP?: (p: number) => number;
}

/** out [B, Hq, N, D] and lse [B, Hq, N] (−Infinity for a row that keeps nothing). */
export function refBlockSparseAttention(a: RefAttentionInput): { out: Float64Array; lse: Float64Array } {
  const { B, Hq, Hkv, N, Nk, D } = a;
  const out = new Float64Array(B * Hq * N * D);
  const lse = new Float64Array(B * Hq * N).fill(-Infinity);
  const group = Hq / Hkv;
  const src = (h: number, p: number) => (a.perm ? a.perm[h * N + p] : p);
  const s = new Float64Array(Nk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / group);
      for (let p = 0; p < N; p++) {
        const i = src(h, p);
        let mx = -Infinity;
        for (let jp = 0; jp < Nk; jp++) {
          s[jp] = -Infinity;
          if (!a.keep(b, h, Math.floor(p / a.blockQ), Math.floor(jp / a.blockK))) continue;
          const j = src(h, jp);
          let acc = 0;
          for (let d = 0; d < D; d++) acc += a.q[((b * Hq + h) * N + i) * D + d] * a.k[((b * Hkv + kvh) * Nk + j) * D + d];
          s[jp] = acc * a.scale;
          if (s[jp] > mx) mx = s[jp];
        }
        if (mx === -Infinity) continue;
        let l = 0;
        for (let jp = 0; jp < Nk; jp++) l += Math.exp(s[jp] - mx);
        lse[(b * Hq + h) * N + i] = mx + Math.log(l);
        const o = ((b * Hq + h) * N + i) * D;
        for (let jp = 0; jp < Nk; jp++) {
          if (s[jp] === -Infinity) continue;
          const w = a.roundP ? a.roundP(Math.exp(s[jp] - mx)) / l : Math.exp(s[jp] - mx) / l;
          const vj = ((b * Hkv + kvh) * Nk + src(h, jp)) * D;
          for (let d = 0; d < D; d++) out[o + d] += w * a.v[vj + d];
        }
      }
    }
  }
  return { out, lse };
}

/** Exact per-block attention mass [B, H, nQ, nK] over the given query rows (default all). */
export function refBlockAttentionMass(
  q: ArrayLike<number>, k: ArrayLike<number>, B: number, H: number, Hkv: number, N: number, Nk: number, D: number,
  scale: number, blockQ: number, blockK: number, rows?: ArrayLike<number>,
): Float64Array {
  const nQ = Math.ceil(N / blockQ), nK = Math.ceil(Nk / blockK);
  const out = new Float64Array(B * H * nQ * nK);
  const used = rows ? Array.from(rows) : Array.from({ length: N }, (_, i) => i);
  const s = new Float64Array(Nk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / Hkv));
      for (const i of used) {
        let mx = -Infinity;
        for (let j = 0; j < Nk; j++) {
          let acc = 0;
          for (let d = 0; d < D; d++) acc += q[((b * H + h) * N + i) * D + d] * k[((b * Hkv + kvh) * Nk + j) * D + d];
          s[j] = acc * scale;
          mx = Math.max(mx, s[j]);
        }
        let l = 0;
        for (let j = 0; j < Nk; j++) l += Math.exp(s[j] - mx);
        const row = ((b * H + h) * nQ + Math.floor(i / blockQ)) * nK;
        for (let j = 0; j < Nk; j++) out[row + Math.floor(j / blockK)] += Math.exp(s[j] - mx) / l;
      }
    }
  }
  return out;
}

/** Block means [B, H, nB, D] and mean pairwise cosine similarity [B, H, nB] (diagonal included). */
export function refBlockPool(x: ArrayLike<number>, B: number, H: number, N: number, D: number, block: number): { mean: Float64Array; selfSim: Float64Array } {
  const nB = Math.ceil(N / block);
  const mean = new Float64Array(B * H * nB * D);
  const selfSim = new Float64Array(B * H * nB);
  for (let bh = 0; bh < B * H; bh++) {
    for (let blk = 0; blk < nB; blk++) {
      const r0 = blk * block, r1 = Math.min(N, r0 + block), n = r1 - r0;
      let pairs = 0;
      for (let i = r0; i < r1; i++) {
        for (let j = r0; j < r1; j++) {
          let dot = 0, ni = 0, nj = 0;
          for (let d = 0; d < D; d++) {
            const a = x[(bh * N + i) * D + d], c = x[(bh * N + j) * D + d];
            dot += a * c;
            ni += a * a;
            nj += c * c;
          }
          pairs += ni > 0 && nj > 0 ? dot / Math.sqrt(ni * nj) : 0;
        }
        for (let d = 0; d < D; d++) mean[((bh * nB) + blk) * D + d] += x[(bh * N + i) * D + d] / n;
      }
      selfSim[bh * nB + blk] = pairs / (n * n);
    }
  }
  return { mean, selfSim };
}

/** out[b, h, p] = x[b, h, perm[h·N + p]] (inverse: out[b, h, perm[h·N + p]] = x[b, h, p]). */
export function refApplyReorder(x: ArrayLike<number>, perm: ArrayLike<number>, B: number, H: number, N: number, D: number, inverse = false): Float64Array {
  const out = new Float64Array(B * H * N * D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let p = 0; p < N; p++) {
        const t = perm[h * N + p];
        const from = inverse ? p : t, to = inverse ? t : p;
        for (let d = 0; d < D; d++) out[((b * H + h) * N + to) * D + d] = x[((b * H + h) * N + from) * D + d];
      }
  return out;
}
