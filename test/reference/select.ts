/** Float64 references for top-k and gather: a full stable sort, and plain indexing. */

/** "a ranks before b": larger value first, NaN last, ties to the lower index. */
export function ranksBefore(v: ArrayLike<number>, a: number, b: number): boolean {
  const x = v[a], y = v[b];
  const xn = Number.isNaN(x), yn = Number.isNaN(y);
  if (xn !== yn) return yn;
  if (!xn && x !== y) return x > y;
  return a < b;
}

/** Top-k of one row by sorting all N indices. */
export function refTopkRow(v: ArrayLike<number>, k: number, order: 'index' | 'score'): number[] {
  const idx = Array.from({ length: v.length }, (_, i) => i);
  idx.sort((a, b) => (ranksBefore(v, a, b) ? -1 : ranksBefore(v, b, a) ? 1 : 0));
  const top = idx.slice(0, k);
  return order === 'index' ? top.sort((a, b) => a - b) : top;
}

export function refTopk(v: ArrayLike<number>, B: number, N: number, k: number, order: 'index' | 'score'): number[] {
  const out: number[] = [];
  for (let b = 0; b < B; b++) out.push(...refTopkRow(Array.prototype.slice.call(v, b * N, (b + 1) * N), k, order));
  return out;
}

export function refGather<T>(x: ArrayLike<T>, B: number, N: number, C: number, idx: ArrayLike<number>, K: number): T[] {
  const out: T[] = [];
  for (let b = 0; b < B; b++)
    for (let i = 0; i < K; i++) for (let c = 0; c < C; c++) out.push(x[(b * N + idx[b * K + i]) * C + c]);
  return out;
}
