/**
 * Float64 reference for the CPU a·bᵀ driver (cpu/gemm.h): the exact
 * products of f32 inputs, and how far an f32 result may be from them.
 */

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;

/** exact[i * n + j] = Σ_d a[i * K + d] · b[j * K + d] in float64; abs[i * n + j] = Σ_d |a · b|. */
export function refGemmNt(a: ArrayLike<number>, m: number, b: ArrayLike<number>, n: number, K: number): { exact: Float64Array; abs: Float64Array } {
  const exact = new Float64Array(m * n);
  const abs = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      let t = 0;
      for (let d = 0; d < K; d++) {
        const p = a[i * K + d] * b[j * K + d];
        s += p;
        t += Math.abs(p);
      }
      exact[i * n + j] = s;
      abs[i * n + j] = t;
    }
  }
  return { exact, abs };
}

/**
 * The error bound of any f32 summation of K products in any order (each FMA
 * or add rounds once): γ_K · Σ|a·b| with γ_K = K·u / (1 − K·u), u = 2^-24,
 * plus the final rounding to f32.
 */
export function gemmErrorBound(abs: number, exact: number, K: number): number {
  const u = 2 ** -24;
  return ((K * u) / (1 - K * u)) * abs + u * Math.abs(exact) + Number.MIN_VALUE;
}
