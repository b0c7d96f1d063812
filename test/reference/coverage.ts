/**
 * Float64 references for maximum coverage and MMTok's coverage matrix,
 * written as the authors' loops (methods.md §6), excluded tokens removed.
 */
import { row } from './diversity';

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

/** MMTok's greedy loop (mm_coverage_selection), per batch element. */
export function refMaxCoverage(cov: ArrayLike<number>, B: number, R: number, N: number, k: number, exclude?: ArrayLike<number>): { order: number[]; sorted: number[]; gains: number[] } {
  const order: number[] = [], sorted: number[] = [], gains: number[] = [];
  for (let b = 0; b < B; b++) {
    const best = new Array(R).fill(0);
    const masked = Array.from({ length: N }, (_, j) => (exclude ? exclude[b * N + j] !== 0 : false));
    const o: number[] = [];
    for (let t = 0; t < k; t++) {
      let arg = -1;
      let argGain = -Infinity;
      for (let j = 0; j < N; j++) {
        if (masked[j]) continue;
        let g = 0;
        for (let r = 0; r < R; r++) g += Math.max(0, cov[(b * R + r) * N + j] - best[r]);
        if (arg < 0 || g > argGain) {
          arg = j;
          argGain = g;
        }
      }
      masked[arg] = true;
      o.push(arg);
      gains.push(argGain);
      for (let r = 0; r < R; r++) best[r] = Math.max(best[r], cov[(b * R + r) * N + arg]);
    }
    order.push(...o);
    sorted.push(...o.slice().sort((p, q) => p - q));
  }
  return { order, sorted, gains };
}

function normalise(v: number[]): number[] {
  const n = Math.max(Math.hypot(...v), 1e-8);
  return v.map((x) => x / n);
}

function softmaxRow(s: number[]): number[] {
  const m = Math.max(...s);
  const e = s.map((x) => Math.exp(x - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

/** [P; α·Q] for every batch element, flattened [B, m + n, n]. */
export function refMmtokCoverage(
  text: ArrayLike<number>, vision: ArrayLike<number>, aux: ArrayLike<number> | undefined,
  B: number, m: number, n: number, D: number, Da: number, tauTV: number, tauVV: number, alpha: number,
): number[] {
  const out: number[] = [];
  for (let b = 0; b < B; b++) {
    const z = Array.from({ length: m }, (_, i) => normalise(row(text, (b * m + i) * D, D)));
    const v = Array.from({ length: n }, (_, i) => normalise(row(vision, (b * n + i) * D, D)));
    const a = aux ? Array.from({ length: n }, (_, i) => normalise(row(aux, (b * n + i) * Da, Da))) : v;
    const dot = (p: number[], q: number[]) => p.reduce((s, x, c) => s + x * q[c], 0);
    for (let i = 0; i < m; i++) out.push(...softmaxRow(v.map((vj) => dot(z[i], vj) / tauTV)).map((x) => x / m));
    for (let i = 0; i < n; i++) out.push(...softmaxRow(a.map((aj) => dot(a[i], aj) / tauVV)).map((x) => (alpha * x) / n));
  }
  return out;
}
