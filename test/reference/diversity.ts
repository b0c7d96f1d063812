/**
 * Float64 references for k-center, maximum coverage and MMTok's coverage
 * matrix, written as the authors' loops (methods.md §4, §6) with the
 * documented differences: picked tokens are masked, excluded tokens removed.
 */

export type Metric = 'cosine' | 'l2';

function row(x: ArrayLike<number>, off: number, C: number): number[] {
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
