/**
 * Float64 references for k-center and k-medoids, written as the authors'
 * loops (methods.md §4, §7) with the documented differences: picked tokens
 * are masked, excluded tokens removed.
 */

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

export type Metric = 'cosine' | 'l2';

/** Elements [off, off + C) of x as an array (a token's row). */
export function row(x: ArrayLike<number>, off: number, C: number): number[] {
  return Array.prototype.slice.call(x, off, off + C) as number[];
}

export function refDistance(a: number[], b: number[], metric: Metric): number {
  if (metric === 'l2') {
    let s = 0;
    for (let c = 0; c < a.length; c++) s += (a[c] - b[c]) ** 2;
    return Math.sqrt(s);
  }
  let dot = 0, na = 0, nb = 0;
  for (let c = 0; c < a.length; c++) {
    dot += a[c] * b[c];
    na += a[c] * a[c];
    nb += b[c] * b[c];
  }
  const den = Math.sqrt(na) * Math.sqrt(nb);
  return 1 - (den > 0 ? dot / den : 0);
}

export interface RefKCenter {
  order: number[];
  distances: number[];
}

/** One segment's rows (positions in the segment), all active unless excluded. */
export function refKCenterSegment(rows: number[][], k: number, metric: Metric, seed: 'isolated' | 'maxnorm' | number, excluded?: boolean[]): RefKCenter {
  const ids = rows.map((_, i) => i).filter((i) => !excluded || !excluded[i]);
  const n = ids.length;
  // Distances on the fly: no N×N table, so large N stays affordable.
  const dist = (a: number, b: number) => refDistance(rows[ids[a]], rows[ids[b]], metric);
  const distRow = (a: number) => ids.map((_, b) => dist(a, b));
  let s = 0;
  let first = Infinity;
  if (seed === 'isolated') {
    const nn = ids.map((_, a) => {
      let m = Infinity;
      for (let b = 0; b < n; b++) if (b !== a) m = Math.min(m, dist(a, b));
      return m;
    });
    for (let a = 1; a < n; a++) if (nn[a] > nn[s]) s = a;
    first = nn[s];
  } else if (seed === 'maxnorm') {
    const norm = ids.map((i) => Math.hypot(...rows[i]));
    for (let a = 1; a < n; a++) if (norm[a] > norm[s]) s = a;
  } else {
    s = ids.indexOf(seed);
  }
  const order = [ids[s]];
  const distances = [first];
  const picked = new Array(n).fill(false);
  picked[s] = true;
  const mind = distRow(s);
  for (let t = 1; t < k; t++) {
    let arg = -1;
    for (let j = 0; j < n; j++) if (!picked[j] && (arg < 0 || mind[j] > mind[arg])) arg = j;
    picked[arg] = true;
    order.push(ids[arg]);
    distances.push(mind[arg]);
    const d = distRow(arg);
    for (let j = 0; j < n; j++) mind[j] = Math.min(mind[j], d[j]);
  }
  return { order, distances };
}

export function refKCenter(
  x: ArrayLike<number>, B: number, N: number, C: number, k: number,
  opts: { metric?: Metric; seed?: 'isolated' | 'maxnorm' | number; segments?: number; exclude?: ArrayLike<number> } = {},
): { order: number[]; sorted: number[]; distances: number[] } {
  const segments = opts.segments ?? 1;
  const S = N / segments;
  const order: number[] = [], sorted: number[] = [], distances: number[] = [];
  for (let b = 0; b < B; b++) {
    const rowOrder: number[] = [];
    for (let g = 0; g < segments; g++) {
      const rows = Array.from({ length: S }, (_, i) => row(x, (b * N + g * S + i) * C, C));
      const excl = opts.exclude ? Array.from({ length: S }, (_, i) => opts.exclude![b * N + g * S + i] !== 0) : undefined;
      const r = refKCenterSegment(rows, k, opts.metric ?? 'cosine', opts.seed ?? 'isolated', excl);
      rowOrder.push(...r.order.map((i) => g * S + i));
      distances.push(...r.distances);
    }
    order.push(...rowOrder);
    sorted.push(...rowOrder.slice().sort((p, q) => p - q));
  }
  return { order, sorted, distances };
}

/**
 * CenterCLIP's batch_fast_kmedoids for one segment, float64: KKZ init,
 * assign (argmin over medoids in list order, a medoid is its own), update
 * (argmin over members of the summed distances to the members), stop on
 * Σ ||x_new − x_old|| < tol or maxIters; then id_sort and re-assign.
 */
export function refKMedoidsSegment(rows: number[][], k: number, metric: Metric, maxIters: number, tol: number): { medoids: number[]; assign: number[]; iters: number } {
  const S = rows.length;
  // Exact zeros on the diagonal (the reference's self_nearest makes the
  // self term a constant): a 2-member cluster is then an exact tie.
  const D = rows.map((a, i) => rows.map((b, j) => (i === j ? 0 : refDistance(a, b, metric))));
  const norm = rows.map((r) => Math.hypot(...r));
  let first = 0;
  for (let a = 1; a < S; a++) if (norm[a] > norm[first]) first = a;
  let med = [first];
  const mind = D[first].slice();
  while (med.length < k) {
    let arg = -1;
    for (let j = 0; j < S; j++) if (!med.includes(j) && (arg < 0 || mind[j] > mind[arg])) arg = j;
    med.push(arg);
    for (let j = 0; j < S; j++) mind[j] = Math.min(mind[j], D[arg][j]);
  }
  const assignAll = () =>
    Array.from({ length: S }, (_, j) => {
      const self = med.indexOf(j);
      if (self >= 0) return self;
      let best = 0;
      for (let m = 1; m < k; m++) if (D[med[m]][j] < D[med[best]][j]) best = m;
      return best;
    });
  let iters = 0;
  while (iters < maxIters) {
    const assign = assignAll();
    const next = med.map((old, m) => {
      const members = assign.map((a, j) => (a === m ? j : -1)).filter((j) => j >= 0);
      let best = old;
      let bestSum = Infinity;
      for (const i of members) {
        const s = members.reduce((acc, j) => acc + D[i][j], 0);
        if (s < bestSum) {
          bestSum = s;
          best = i;
        }
      }
      return best;
    });
    iters++;
    const moved = next.reduce((acc, n, m) => acc + Math.hypot(...rows[n].map((v, c) => v - rows[med[m]][c])), 0);
    med = next;
    if (moved < tol) break;
  }
  med.sort((a, b) => a - b);
  return { medoids: med, assign: assignAll(), iters };
}

export function refKMedoids(
  x: ArrayLike<number>, B: number, N: number, C: number, k: number,
  opts: { metric?: Metric; segments?: number; maxIters?: number; tol?: number } = {},
): { medoids: number[]; assignments: number[]; iterations: number[] } {
  const segments = opts.segments ?? 1;
  const S = N / segments;
  const medoids: number[] = [], assignments: number[] = [], iterations: number[] = [];
  for (let b = 0; b < B; b++)
    for (let g = 0; g < segments; g++) {
      const rows = Array.from({ length: S }, (_, i) => row(x, (b * N + g * S + i) * C, C));
      const r = refKMedoidsSegment(rows, k, opts.metric ?? 'l2', opts.maxIters ?? 100, opts.tol ?? 1e-6);
      medoids.push(...r.medoids.map((i) => g * S + i));
      assignments.push(...r.assign.map((a) => g * k + a));
      iterations.push(r.iters);
    }
  return { medoids, assignments, iterations };
}
