/**
 * Inputs of the blocksparse suites (test/blocksparse.test.ts and
 * test/cuda-blocksparse.test.ts): FlexAttention-style mask lists built from
 * a keep function, random keep patterns, layouts, rounding, permutations.
 */
import { BlockMaskLike, FloatDType, Tensor } from '../lib';
import { makeTensor, randn, rng } from './helpers';
import { bnhdToBhnd } from './reference/attention';

export type Keep = (b: number, h: number, qb: number, kb: number) => boolean;

/** FlexAttention-style lists [Bm, Hm, nQ] / [Bm, Hm, nQ, nK + pad] from a keep function. */
export function lists(Bm: number, Hm: number, nQ: number, nK: number, keep: Keep, pad = 1): { counts: Int32Array; indices: Int32Array; L: number } {
  const L = nK + pad;
  const counts = new Int32Array(Bm * Hm * nQ);
  const indices = new Int32Array(Bm * Hm * nQ * L).fill(-3); // padding that must never be read
  for (let b = 0; b < Bm; b++)
    for (let h = 0; h < Hm; h++)
      for (let i = 0; i < nQ; i++) {
        const r = (b * Hm + h) * nQ + i;
        for (let j = 0; j < nK; j++) if (keep(b, h, i, j)) indices[r * L + counts[r]++] = j;
      }
  return { counts, indices, L };
}

export function maskOf(Bm: number, Hm: number, N: number, Nk: number, blockQ: number, blockK: number, keep: Keep): BlockMaskLike {
  const nQ = Math.ceil(N / blockQ), nK = Math.ceil(Nk / blockK);
  const l = lists(Bm, Hm, nQ, nK, keep);
  return {
    blockQ,
    blockK,
    seqLens: [N, Nk],
    kvNumBlocks: { data: l.counts, shape: [Bm, Hm, nQ] },
    kvIndices: { data: l.indices, shape: [Bm, Hm, nQ, l.L] },
  };
}

/** A random keep pattern at about `density`, with the listed rows empty. */
export function randomKeep(seed: number, Bm: number, Hm: number, nQ: number, nK: number, density: number, emptyRows: number[] = []): Keep {
  const r = rng(seed);
  const bits = new Uint8Array(Bm * Hm * nQ * nK).map(() => (r() < density ? 1 : 0));
  return (b, h, qb, kb) => {
    const row = ((Bm === 1 ? 0 : b) * Hm + (Hm === 1 ? 0 : h)) * nQ + qb;
    return !emptyRows.includes(row) && bits[row * nK + kb] === 1;
  };
}

/** [B, H, N, D] values laid out as [B, N, H, D]. */
export function toBnhd(x: ArrayLike<number>, B: number, H: number, N: number, D: number): Float64Array {
  const out = new Float64Array(B * H * N * D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let n = 0; n < N; n++)
        for (let d = 0; d < D; d++) out[((b * N + n) * H + h) * D + d] = x[((b * H + h) * N + n) * D + d];
  return out;
}
/** [B, N, H, D] values as [B, H, N, D] (the attention reference's converter, in this file's argument order). */
export const fromBnhd = (x: ArrayLike<number>, B: number, H: number, N: number, D: number): Float64Array => bnhdToBhnd(x, B, N, H, D);

export function roundTo(dtype: FloatDType): (x: number) => number {
  if (dtype === 'f32') return (x) => Math.fround(x);
  return (x) => makeTensor([x], [1], dtype).exact[0];
}

export function permutation(H: number, N: number, seed: number): Int32Array {
  const r = rng(seed);
  const perm = new Int32Array(H * N);
  for (let h = 0; h < H; h++) {
    const row = Array.from({ length: N }, (_, i) => i);
    for (let i = N - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [row[i], row[j]] = [row[j], row[i]];
    }
    perm.set(row, h * N);
  }
  return perm;
}

export interface Problem {
  B: number; Hq: number; Hkv: number; N: number; Nk: number; D: number; dtype: FloatDType; layout: 'bhnd' | 'bnhd';
  q: Tensor; k: Tensor; v: Tensor; qx: Float64Array; kx: Float64Array; vx: Float64Array;
}

export function problem(B: number, Hq: number, Hkv: number, N: number, Nk: number, D: number, dtype: FloatDType, layout: 'bhnd' | 'bnhd', seed: number): Problem {
  const make = (H: number, n: number, s: number) => {
    const vals = randn(B * H * n * D, s);
    const t = makeTensor(layout === 'bhnd' ? vals : toBnhd(vals, B, H, n, D), layout === 'bhnd' ? [B, H, n, D] : [B, n, H, D], dtype);
    return { t: t.t, x: layout === 'bhnd' ? t.exact : fromBnhd(t.exact, B, H, n, D) };
  };
  const q = make(Hq, N, seed), k = make(Hkv, Nk, seed + 1), v = make(Hkv, Nk, seed + 2);
  return { B, Hq, Hkv, N, Nk, D, dtype, layout, q: q.t, k: k.t, v: v.t, qx: q.x, kx: k.x, vx: v.x };
}

/** The kernel's output as logical [B, H, N, D] values. */
export function outValues(p: Problem, out: Tensor): Float64Array {
  const a = Float64Array.from(out.toArray());
  return p.layout === 'bhnd' ? a : fromBnhd(a, p.B, p.Hq, p.N, p.D);
}

/** Tolerance of a CPU result against float64 on the rounded inputs: P and the output are rounded to the dtype. */
export function tol(dtype: FloatDType): { atol: number; rtol: number } {
  return dtype === 'f32' ? { atol: 2e-6, rtol: 1e-4 } : dtype === 'f16' ? { atol: 2e-3, rtol: 2e-3 } : { atol: 1.6e-2, rtol: 1.6e-2 };
}
