/**
 * Float64 references for block masks, mask calibration, SpargeAttn's
 * predictor, PARO's reorderings and masked attention. Written from the rules
 * (not from lib/): plain loops, one row at a time.
 */

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

/** Dense 0/1 [rows, nK] → counts and per-row ascending index lists. */
export function refDenseToLists(dense: ArrayLike<number>, rows: number, nK: number): { counts: number[]; lists: number[][] } {
  const lists: number[][] = [];
  for (let r = 0; r < rows; r++) {
    const l: number[] = [];
    for (let j = 0; j < nK; j++) if (dense[r * nK + j]) l.push(j);
    lists.push(l);
  }
  return { counts: lists.map((l) => l.length), lists };
}

/** Lists (and optional full lists) → dense 0/1 [rows, nK]. */
export function refListsToDense(lists: number[][], nK: number, full?: number[][]): number[] {
  const out = new Array<number>(lists.length * nK).fill(0);
  lists.forEach((l, r) => l.forEach((j) => (out[r * nK + j] = 1)));
  full?.forEach((l, r) => l.forEach((j) => (out[r * nK + j] = 1)));
  return out;
}

/** Lists padded to L with `pad` → { counts, indices } flat arrays. */
export function refPad(lists: number[][], L: number, pad = -7): { counts: Int32Array; indices: Int32Array } {
  const counts = Int32Array.from(lists.map((l) => l.length));
  const indices = new Int32Array(lists.length * L).fill(pad);
  lists.forEach((l, r) => l.forEach((j, t) => (indices[r * L + t] = j)));
  return { counts, indices };
}

export const ORDER_NAMES = ['FHW', 'FWH', 'HWF', 'HFW', 'WHF', 'WFH'];

/**
 * PARO's permutation by the order's *name*: the original token (f, h, w)
 * moves to the position whose digits, outermost first, are the coordinates
 * named by the letters. Independent of lib's table of axis tuples.
 */
export function refPermByName(F: number, H: number, W: number, prefix: number, suffix: number, name: string): number[] {
  const size: Record<string, number> = { F, H, W };
  const n = prefix + F * H * W + suffix;
  const perm = new Array<number>(n).fill(-1);
  for (let t = 0; t < prefix; t++) perm[t] = t;
  for (let t = prefix + F * H * W; t < n; t++) perm[t] = t;
  for (let f = 0; f < F; f++) {
    for (let h = 0; h < H; h++) {
      for (let w = 0; w < W; w++) {
        const coord: Record<string, number> = { F: f, H: h, W: w };
        let pos = 0;
        for (const c of name) pos = pos * size[c] + coord[c];
        perm[prefix + pos] = prefix + (f * H + h) * W + w;
      }
    }
  }
  return perm;
}

/**
 * PARO's permute_qk emulated literally: x.reshape(F, H, W).permute(dims)
 * flattened, with dims from PAROAtten's `permutations` table, applied to the
 * token ids 0..FHW-1.
 */
export const PARO_TABLE = [[0, 1, 2], [0, 2, 1], [1, 2, 0], [1, 0, 2], [2, 1, 0], [2, 0, 1]];
export function refTorchPermute(F: number, H: number, W: number, dims: number[]): number[] {
  const shape = [F, H, W];
  const strides = [H * W, W, 1];
  const ps = dims.map((d) => shape[d]);
  const pst = dims.map((d) => strides[d]);
  const out: number[] = [];
  for (let a = 0; a < ps[0]; a++) for (let b = 0; b < ps[1]; b++) for (let c = 0; c < ps[2]; c++) out.push(a * pst[0] + b * pst[1] + c * pst[2]);
  return out;
}

/** Indices of a row by descending value, ties to the lower index (a stable sort of an index list). */
function ranked(row: number[]): number[] {
  const idx = row.map((_, j) => j);
  return idx.sort((a, b) => (row[b] !== row[a] ? row[b] - row[a] : a - b));
}

export type RefRule = { coverage: number } | { threshold: number } | { density: number };

/**
 * calibrateBlockMask's rules on one mass [rows = Bm·Hm·nQ, nK] (q-block i =
 * r mod nQ), float64: see lib/methods/paro.ts for the statement.
 */
export function refCalibrate(
  mass: ArrayLike<number>, rows: number, nQ: number, nK: number, rule: RefRule,
  o: { blockQ: number; blockK: number; seqLens: [number, number]; keepDiagonal: boolean; keepPrefixBlocks: number },
): number[] {
  const out = new Array<number>(rows * nK).fill(0);
  for (let r = 0; r < rows; r++) {
    const i = r % nQ;
    const row = Array.from({ length: nK }, (_, j) => mass[r * nK + j]);
    const order = ranked(row);
    const keep = new Set<number>();
    let total = 0;
    for (const j of order) total += row[j];
    if ('coverage' in rule) {
      let s = 0;
      for (const j of order) {
        if (total <= 0 || s >= rule.coverage * total) break;
        s += row[j];
        keep.add(j);
      }
    } else if ('threshold' in rule) {
      if (total > 0) row.forEach((m, j) => { if (m / total >= rule.threshold) keep.add(j); });
    } else {
      // ⌈d·nK⌉ of the decimal product (rounded to 9 places first, so 0.3·10 is 3)
      const k = Math.max(1, Math.min(nK, Math.ceil(Math.round(rule.density * nK * 1e9) / 1e9)));
      order.slice(0, k).forEach((j) => keep.add(j));
    }
    if (o.keepDiagonal) {
      // every kv block sharing a token position with q-block i
      for (let t = i * o.blockQ; t < Math.min((i + 1) * o.blockQ, o.seqLens[0]); t++) {
        if (t < o.seqLens[1]) keep.add(Math.floor(t / o.blockK));
      }
    }
    if (i < o.keepPrefixBlocks) for (let j = 0; j < nK; j++) keep.add(j);
    for (let j = 0; j < Math.min(o.keepPrefixBlocks, nK); j++) keep.add(j);
    if (keep.size === 0) keep.add(order[0]);
    keep.forEach((j) => (out[r * nK + j] = 1));
  }
  return out;
}

/** Block means and self-similarity |Σ x̂|² / n² of rows [N, D] in blocks of `block` (float64). */
export function refPool(x: ArrayLike<number>, N: number, D: number, block: number): { mean: number[][]; sim: number[] } {
  const mean: number[][] = [];
  const sim: number[] = [];
  for (let s = 0; s < N; s += block) {
    const e = Math.min(N, s + block);
    const m = new Array<number>(D).fill(0);
    const u = new Array<number>(D).fill(0);
    for (let t = s; t < e; t++) {
      let nrm = 0;
      for (let d = 0; d < D; d++) nrm += x[t * D + d] ** 2;
      nrm = Math.sqrt(nrm);
      for (let d = 0; d < D; d++) {
        m[d] += x[t * D + d] / (e - s);
        u[d] += x[t * D + d] / nrm;
      }
    }
    mean.push(m);
    sim.push(u.reduce((a, b) => a + b * b, 0) / (e - s) ** 2);
  }
  return { mean, sim };
}

/**
 * SpargeAttn's get_block_map_meansim for one (b, h) from pooled blocks,
 * float64: rows of q blocks, columns of k blocks.
 */
export function refSparge(
  pq: number[][], simQ: number[], pk: number[][], simK: number[],
  o: { scale: number; simThreshold: number; cdf?: number; topk?: number; sink?: boolean },
): number[][] {
  const nK = pk.length;
  return pq.map((qv, i) => {
    const row = new Array<number>(nK).fill(0);
    const thr = Math.fround(o.simThreshold); // SpargeAttn's float32 hyper-parameter tensor
    const simk = simK.map((s) => s > thr);
    if (!(simQ[i] > thr)) return row.fill(1);
    simk.forEach((s, j) => { if (!s) row[j] = 1; });
    const logits = pk.map((kv, j) => (simk[j] ? qv.reduce((a, x, d) => a + x * kv[d], 0) * o.scale : -Infinity));
    const max = Math.max(...logits);
    if (max !== -Infinity) {
      const e = logits.map((l) => (l === -Infinity ? 0 : Math.exp(l - max)));
      const z = e.reduce((a, b) => a + b, 0);
      const p = e.map((x) => x / z);
      const order = ranked(p);
      let num: number;
      if (o.topk !== undefined) {
        num = Math.trunc(Math.fround(Math.fround(o.topk) * nK));
      } else {
        // torch.searchsorted(cdf, thr, right=True): the number of cdf entries <= thr
        let c = 0;
        num = 0;
        const zs = order.reduce((a, j) => a + p[j], 0);
        for (const j of order) {
          c += p[j];
          if (c / zs <= o.cdf!) num++;
        }
      }
      if (num === 0) num = 1;
      order.slice(0, num).forEach((j) => (row[j] = 1));
    }
    if (o.sink) row[0] = 1;
    return row;
  });
}

/**
 * softmax(q·kᵀ·scale) of one head, restricted per query row i to the keys j
 * with allowed(i, j), renormalised over them; O = 0 for a row with no key.
 */
export function refMaskedAttention(
  q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, N: number, Nk: number, D: number, scale: number,
  allowed: (i: number, j: number) => boolean,
): number[] {
  const out = new Array<number>(N * D).fill(0);
  for (let i = 0; i < N; i++) {
    const s: number[] = [];
    let max = -Infinity;
    for (let j = 0; j < Nk; j++) {
      if (!allowed(i, j)) { s.push(-Infinity); continue; }
      let d = 0;
      for (let c = 0; c < D; c++) d += q[i * D + c] * k[j * D + c];
      s.push(d * scale);
      max = Math.max(max, d * scale);
    }
    if (max === -Infinity) continue;
    let z = 0;
    const e = s.map((x) => (x === -Infinity ? 0 : Math.exp(x - max)));
    e.forEach((x) => (z += x));
    for (let j = 0; j < Nk; j++) {
      if (e[j] === 0) continue;
      for (let c = 0; c < D; c++) out[i * D + c] += (e[j] / z) * v[j * D + c];
    }
  }
  return out;
}

/** Exact block attention mass of one head [nQ, nK] over the given query rows (all by default). */
export function refBlockMass(q: ArrayLike<number>, k: ArrayLike<number>, N: number, D: number, block: number, scale: number, rows?: number[]): number[] {
  const nB = Math.ceil(N / block);
  const out = new Array<number>(nB * nB).fill(0);
  for (const i of rows ?? Array.from({ length: N }, (_, t) => t)) {
    const s = Array.from({ length: N }, (_, j) => {
      let d = 0;
      for (let c = 0; c < D; c++) d += q[i * D + c] * k[j * D + c];
      return d * scale;
    });
    const max = Math.max(...s);
    const e = s.map((x) => Math.exp(x - max));
    const z = e.reduce((a, b) => a + b, 0);
    e.forEach((x, j) => (out[Math.floor(i / block) * nB + Math.floor(j / block)] += x / z));
  }
  return out;
}
