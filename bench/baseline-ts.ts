/**
 * Plain TypeScript baselines: the obvious f32 loops a user would write
 * without tokensieve. Same results as the kernels (to rounding).
 */

/**
 * Head-mean of softmax(q·kᵀ·scale) over the selected rows, for keys
 * [keyStart, N). q, k: [B, H, N, D] f32 contiguous.
 */
export function attentionScoresTs(
  q: Float32Array, k: Float32Array, B: number, H: number, N: number, D: number,
  rows: readonly number[], keyStart: number, causal: boolean,
): Float32Array {
  const W = N - keyStart;
  const out = new Float32Array(B * W);
  const logits = new Float32Array(N);
  const scale = 1 / Math.sqrt(D);
  const w = 1 / (rows.length * H);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * N * D;
      for (const i of rows) {
        const visible = causal ? i + 1 : N;
        let max = -Infinity;
        for (let j = 0; j < visible; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[base + i * D + d] * k[base + j * D + d];
          logits[j] = dot * scale;
          if (logits[j] > max) max = logits[j];
        }
        let sum = 0;
        for (let j = 0; j < visible; j++) {
          logits[j] = Math.exp(logits[j] - max);
          sum += logits[j];
        }
        const inv = w / sum;
        for (let j = keyStart; j < visible; j++) out[b * W + j - keyStart] += logits[j] * inv;
      }
    }
  }
  return out;
}

/** Top-k of each row: sort all indices (stable on ties), keep k, back to index order. */
export function topkTs(scores: Float32Array, B: number, N: number, k: number): Int32Array {
  const out = new Int32Array(B * k);
  const idx = new Array<number>(N);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < N; i++) idx[i] = i;
    const row = scores.subarray(b * N, (b + 1) * N);
    idx.sort((x, y) => row[y] - row[x] || x - y);
    const top = idx.slice(0, k).sort((x, y) => x - y);
    out.set(top, b * k);
  }
  return out;
}
