/**
 * Float64 references for token merging, written as literally as possible
 * after ToMe's tome/merge.py (bipartite_soft_matching, merge_wavg), tomesd's
 * bipartite_soft_matching_random2d and VisionZip's contextual tokens:
 * the full [Na, Nb] score matrix, max over rows, a (stable) descending
 * argsort, gathers and scatter-reduces.
 */

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

export interface RefPlan {
  /** Per batch row: unm_idx, src_idx, dst_idx as TOKEN indices; output of length N − r. */
  unm: number[][];
  src: number[][];
  dst: number[][];
  r: number;
  distill: boolean;
  /** Per batch row: the destination list b (token indices), for the output order. */
  b: number[];
}

/** Row x[off .. off + C) divided by its float64 norm (ToMe's metric / ‖metric‖, exactly). */
export function normalise(x: ArrayLike<number>, off: number, C: number): number[] {
  let ss = 0;
  for (let d = 0; d < C; d++) ss += x[off + d] * x[off + d];
  const n = Math.sqrt(ss);
  const out: number[] = [];
  for (let d = 0; d < C; d++) out.push(n > 0 ? x[off + d] / n : 0);
  return out;
}

/**
 * bipartite_soft_matching over an explicit split (ToMe: a = even, b = odd).
 * Returns token indices. r already capped by the caller, as ToMe does first.
 */
export function refMatch(
  metric: ArrayLike<number>, B: number, N: number, C: number, a: number[], bList: number[], r: number,
  cls: boolean, distill: boolean,
): RefPlan {
  const plan: RefPlan = { unm: [], src: [], dst: [], r, distill, b: bList };
  for (let bb = 0; bb < B; bb++) {
    const an = a.map((t) => normalise(metric, (bb * N + t) * C, C));
    const bn = bList.map((t) => normalise(metric, (bb * N + t) * C, C));
    // scores = a @ bᵀ, [Na, Nb]
    const scores = an.map((ar) => bn.map((br) => ar.reduce((s, v, d) => s + v * br[d], 0)));
    if (cls) scores[0].fill(-Infinity);
    if (distill) for (const row of scores) row[0] = -Infinity;
    const nodeMax: number[] = [];
    const nodeIdx: number[] = [];
    for (const row of scores) {
      let m = -Infinity;
      let mi = 0;
      row.forEach((v, j) => {
        if (v > m) {
          m = v;
          mi = j;
        }
      });
      nodeMax.push(m);
      nodeIdx.push(mi);
    }
    // argsort(descending), stable: ties keep ascending a position.
    const edge = nodeMax.map((_, i) => i).sort((x, y) => (nodeMax[y] > nodeMax[x] ? 1 : nodeMax[y] < nodeMax[x] ? -1 : x - y));
    let unmA = edge.slice(r);
    const srcA = edge.slice(0, r);
    if (cls) unmA = unmA.sort((x, y) => x - y);
    plan.unm.push(unmA.map((i) => a[i]));
    plan.src.push(srcA.map((i) => a[i]));
    plan.dst.push(srcA.map((i) => bList[nodeIdx[i]]));
  }
  return plan;
}

export function paritySplit(N: number): { a: number[]; b: number[] } {
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < N; i++) (i % 2 === 0 ? a : b).push(i);
  return { a, b };
}

/**
 * ToMe's merge(x, mode): unm gathered, sources scatter-reduced into dst
 * (include_self), cat([unm, dst]) (distill: [unm0, dst0, unm1:, dst1:]).
 * mode 'wavg' is merge_wavg: merge(x·size, sum) / merge(size, sum).
 */
export function refMerge(
  plan: RefPlan, x: ArrayLike<number>, B: number, N: number, C: number, mode: 'sum' | 'mean' | 'amax' | 'wavg',
  sizes?: ArrayLike<number>,
): { x: number[]; sizes: number[] } {
  const outX: number[] = [];
  const outS: number[] = [];
  for (let bb = 0; bb < B; bb++) {
    const row = (t: number): number[] => Array.from({ length: C }, (_, d) => x[(bb * N + t) * C + d]);
    const size = (t: number): number => (sizes ? sizes[bb * N + t] : 1);
    const weight = mode === 'wavg' ? size : () => 1;
    // dst accumulators, include_self
    const acc = plan.b.map((t) => row(t).map((v) => (mode === 'wavg' ? v * weight(t) : v)));
    const cnt = plan.b.map((t) => weight(t));
    plan.src[bb].forEach((s, k) => {
      const j = plan.b.indexOf(plan.dst[bb][k]);
      const v = row(s);
      for (let d = 0; d < C; d++) {
        if (mode === 'amax') acc[j][d] = Math.max(acc[j][d], v[d]);
        else acc[j][d] += mode === 'wavg' ? v[d] * weight(s) : v[d];
      }
      cnt[j] += weight(s);
    });
    const dstRows = acc.map((r, j) => (mode === 'mean' || mode === 'wavg' ? r.map((v) => v / cnt[j]) : r));
    const unmRows = plan.unm[bb].map((t) => row(t));
    const unmSizes = plan.unm[bb].map((t) => size(t));
    let rows: number[][];
    let sz: number[];
    if (plan.distill) {
      rows = [unmRows[0], dstRows[0], ...unmRows.slice(1), ...dstRows.slice(1)];
      sz = [unmSizes[0], cnt[0], ...unmSizes.slice(1), ...cnt.slice(1)];
    } else {
      rows = [...unmRows, ...dstRows];
      sz = [...unmSizes, ...cnt];
    }
    for (const r of rows) outX.push(...r);
    outS.push(...sz);
  }
  return { x: outX, sizes: outS };
}

/** ToMe's unmerge: out[1::2] = dst, out[2·unm_idx] = unm, out[2·src_idx] = dst[dst_idx] (general split). */
export function refUnmerge(plan: RefPlan, x: ArrayLike<number>, B: number, nOut: number, C: number, N: number): number[] {
  const out = new Array<number>(B * N * C).fill(NaN);
  for (let bb = 0; bb < B; bb++) {
    const nu = plan.unm[bb].length;
    const slotOfUnm = (k: number): number => (plan.distill ? (k === 0 ? 0 : k + 1) : k);
    const slotOfB = (j: number): number => (plan.distill ? (j === 0 ? 1 : nu + j) : nu + j);
    const put = (t: number, slot: number): void => {
      for (let d = 0; d < C; d++) out[(bb * N + t) * C + d] = x[(bb * nOut + slot) * C + d];
    };
    plan.b.forEach((t, j) => put(t, slotOfB(j)));
    plan.unm[bb].forEach((t, k) => put(t, slotOfUnm(k)));
    plan.src[bb].forEach((t, k) => put(t, slotOfB(plan.b.indexOf(plan.dst[bb][k]))));
  }
  return out;
}

/** ToMe's parse_r(num_layers, r): int → constant; (r, inflect) → int()-truncated linear ramp; list → padded with 0. */
export function refParseR(numLayers: number, r: number | { r: number; inflection: number } | number[]): number[] {
  if (Array.isArray(r)) return [...r, ...new Array<number>(Math.max(0, numLayers - r.length)).fill(0)];
  const [rr, inflect] = typeof r === 'number' ? [r, 0] : [r.r, r.inflection];
  const min = Math.trunc(rr * (1 - inflect));
  const max = 2 * rr - min;
  const step = (max - min) / (numLayers - 1);
  return Array.from({ length: numLayers }, (_, i) => Math.trunc(min + step * i));
}

/**
 * VisionZip contextual tokens: remaining tokens (in order), targets at
 * arange(0, Nr, step)[:c], members assigned by argmax cosine (first max),
 * contextual = target + mean(members) (counts clamped to 1).
 */
export function refContextual(
  x: ArrayLike<number>, metric: ArrayLike<number>, B: number, N: number, C: number, Cm: number, remaining: number[][], c: number,
): number[] {
  const out: number[] = [];
  for (let bb = 0; bb < B; bb++) {
    const rem = remaining[bb];
    const Nr = rem.length;
    const step = Math.max(1, Math.floor(Nr / c));
    const targets: number[] = [];
    for (let i = 0; i < Nr && targets.length < c; i += step) targets.push(i);
    const isT = new Set(targets);
    const tn = targets.map((i) => normalise(metric, (bb * N + rem[i]) * Cm, Cm));
    const acc = targets.map(() => new Array<number>(C).fill(0));
    const cnt = targets.map(() => 0);
    for (let i = 0; i < Nr; i++) {
      if (isT.has(i)) continue;
      const m = normalise(metric, (bb * N + rem[i]) * Cm, Cm);
      let best = -Infinity;
      let bi = 0;
      tn.forEach((t, k) => {
        const s = t.reduce((a, v, d) => a + v * m[d], 0);
        if (s > best) {
          best = s;
          bi = k;
        }
      });
      cnt[bi]++;
      for (let d = 0; d < C; d++) acc[bi][d] += x[(bb * N + rem[i]) * C + d];
    }
    targets.forEach((ti, k) => {
      for (let d = 0; d < C; d++) out.push(x[(bb * N + rem[ti]) * C + d] + acc[k][d] / Math.max(1, cnt[k]));
    });
  }
  return out;
}

/** The output slot of every token under a reference plan (what the kernel's `assign` holds). */
export function refAssign(plan: RefPlan, B: number, N: number): number[] {
  const out = new Array<number>(B * N).fill(-1);
  for (let bb = 0; bb < B; bb++) {
    const nu = plan.unm[bb].length;
    const slotOfB = (j: number): number => (plan.distill ? (j === 0 ? 1 : nu + j) : nu + j);
    plan.b.forEach((t, j) => (out[bb * N + t] = slotOfB(j)));
    plan.unm[bb].forEach((t, k) => (out[bb * N + t] = plan.distill ? (k === 0 ? 0 : k + 1) : k));
    plan.src[bb].forEach((t, k) => (out[bb * N + t] = slotOfB(plan.b.indexOf(plan.dst[bb][k]))));
  }
  return out;
}

/**
 * tomesd's random 2-D split with the documented generator: mulberry32(seed),
 * one draw per window in raster order of windows, k = floor(u·sx·sy / 2³²),
 * destination at (dy, dx) = (k // sx, k % sx) of the window; no seed → k = 0.
 * Both lists ascending (a stable argsort of tomesd's idx_buffer).
 */
export function refSplit2d(w: number, h: number, sx: number, sy: number, seed?: number): { a: number[]; b: number[] } {
  let state = (seed ?? 0) >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  // idx_buffer: -1 at destinations, 0 elsewhere, then argsort (stable).
  const buf = new Array<number>(w * h).fill(0);
  for (let wy = 0; wy < Math.floor(h / sy); wy++) {
    for (let wx = 0; wx < Math.floor(w / sx); wx++) {
      const k = seed === undefined ? 0 : Math.floor((next() * sx * sy) / 2 ** 32);
      buf[(wy * sy + Math.floor(k / sx)) * w + wx * sx + (k % sx)] = -1;
    }
  }
  const order = buf.map((_, i) => i).sort((x, y) => buf[x] - buf[y] || x - y);
  const nd = buf.filter((v) => v === -1).length;
  return { b: order.slice(0, nd), a: order.slice(nd) };
}

// ---- bipartiteSoftMatch precision 'bf16' --------------------------------------
// The defined semantics in float64: every row normalised as the back ends do
// (four f64 partial sums of d % 4, f32 norm, f32 division), each value
// rounded to bf16 (nearest even), scores = Σ of the products (exact in f64).
// The back ends sum in f32 (the tensor cores in their own order), so a
// decision can be checked only where the reference leaves no two candidates
// within `tol` (relative to max(|x|, |y|, 0.1)) of each other; bit-equal
// values (exact ties) are decided by the lower index.
const f32Buf = new Float32Array(1);
const u32Buf = new Uint32Array(f32Buf.buffer);

/** x rounded to bf16 (round to nearest even), as a number. */
export function toBf16(x: number): number {
  f32Buf[0] = x;
  const b = u32Buf[0];
  u32Buf[0] = (((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) << 16) >>> 0;
  return f32Buf[0];
}

/** Row x[off .. off + C) normalised as the back ends do, then rounded to bf16. */
export function normBf16(x: ArrayLike<number>, off: number, C: number): number[] {
  const s = [0, 0, 0, 0];
  for (let d = 0; d < C; d++) s[d & 3] += x[off + d] * x[off + d];
  const norm = Math.fround(Math.sqrt((s[0] + s[1]) + (s[2] + s[3])));
  return Array.from({ length: C }, (_, d) => (norm > 0 ? toBf16(Math.fround(x[off + d] / norm)) : 0));
}

/** x and y are equal, or within tol of each other (relative to max(|x|, |y|, 0.1)). */
export function closeRel(x: number, y: number, tol = 1e-5): boolean {
  return x === y || (Number.isFinite(x) && Number.isFinite(y) && Math.abs(x - y) <= tol * Math.max(Math.abs(x), Math.abs(y), 0.1));
}

export interface Bf16Ref {
  top: number[]; // per a position: best score (-inf: CLS or no candidate)
  arg: number[]; // first argmax (b position)
  decided: boolean[]; // the next distinct score is not close
  order: number[]; // stable descending edge order (a positions)
  pinned: boolean[]; // per edge position: its group of close values is one value or bit-equal values
  group: number[];
}

/**
 * The bf16-semantics scores and edge order of batch row bb (a, b: token
 * lists of the split), with what is decided beyond `tol`; `norm` = normalise
 * gives the same for the f32 precision (its float64 reference).
 */
export function refBf16(
  metric: ArrayLike<number>, bb: number, N: number, C: number, a: number[], b: number[], cls: boolean, distill: boolean, tol = 1e-5,
  norm: (x: ArrayLike<number>, off: number, C: number) => number[] = normBf16,
): Bf16Ref {
  const an = a.map((t) => norm(metric, (bb * N + t) * C, C));
  const bn = b.map((t) => norm(metric, (bb * N + t) * C, C));
  const close = (x: number, y: number): boolean => closeRel(x, y, tol);
  const top: number[] = [];
  const arg: number[] = [];
  const decided: boolean[] = [];
  an.forEach((ar, i) => {
    let m = -Infinity;
    let mi = 0;
    let next = -Infinity;
    if (!(cls && i === 0)) {
      for (let j = distill ? 1 : 0; j < bn.length; j++) {
        const s = ar.reduce((acc, v, d) => acc + v * bn[j][d], 0);
        if (s > m) {
          next = m;
          m = s;
          mi = j;
        } else if (s < m) {
          next = Math.max(next, s);
        }
      }
    }
    top.push(m);
    arg.push(m === -Infinity ? 0 : mi);
    decided.push(m === -Infinity || !close(m, next));
  });
  const order = top.map((_, i) => i).sort((x, y) => (top[y] > top[x] ? 1 : top[y] < top[x] ? -1 : x - y));
  const group: number[] = [];
  order.forEach((i, k) => group.push(k > 0 && close(top[order[k - 1]], top[i]) ? group[k - 1] : k));
  const last: number[] = new Array<number>(order.length);
  for (let k = order.length - 1; k >= 0; k--) last[k] = k + 1 < order.length && group[k + 1] === group[k] ? last[k + 1] : k;
  const pinned = order.map((_, k) => top[order[group[k]]] === top[order[last[k]]]);
  return { top, arg, decided, order, pinned, group };
}
