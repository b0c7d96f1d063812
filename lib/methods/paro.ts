/**
 * PAROAttention (thu-nics/PAROAttention; kernel code jamescsq47/PAROAtten):
 * per-head token reordering of a video's (frame, height, width) grid so that
 * each head's attention becomes block-local, then block-sparse attention
 * with a static mask found offline. Plus SpargeAttn's online block-mask
 * predictor (thu-ml/SpargeAttn `get_block_map_meansim`).
 *
 * The pieces, each usable alone:
 * - {@link reorderIndex}: PARO's six axis orders as per-head permutations;
 * - {@link searchReorderPlan}: the order per head that needs the fewest kv
 *   blocks to cover the attention mass (our metric; PARO's calibration code is
 *   not public);
 * - {@link calibrateBlockMask}: a static mask from block attention mass;
 * - {@link predictBlockMask}: SpargeAttn's predictor from pooled q/k blocks;
 * - {@link paroAttention}: plan → permutation → mask → block-sparse attention.
 *
 * The block-sparse kernels (blockPool, blockAttentionMass, applyReorder,
 * blockSparseAttention) come from lib/kernels/blocksparse.
 */
import { Device } from '../device';
import { fromHalfBits } from '../dtype';
import { describe, invalid, makeError } from '../errors';
import { checkOptions, int, oneOf } from '../kernels/common';
import { mulberry32 } from '../kernels/merge';
import { Tensor, TensorLike, toTensor, MAX_DIM } from '../tensor';
import { BlockMask, checkMaskFits, maskFromDenseRows } from '../blockmask';
import {
  applyReorder,
  applyReorderSync,
  blockAttentionMass,
  blockAttentionMassSync,
  BlockAttentionMassOptions,
  BlockMaskLike,
  blockPool,
  blockPoolSync,
  blockSparseAttention,
  blockSparseAttentionSync,
  BlockSparseAttentionOptions,
  BlockSparseAttentionResult,
  BlockSparsePrecision,
} from '../kernels/blocksparse';
import { call, drive, driveAsync, hostF32, indexTensor, MethodGen } from './common';

// ---------------------------------------------------------------------------
// Reordering

/**
 * PARO's axis orders, by index: the name lists the axes outermost first, so
 * 0 (FHW) is the raster order of a [F, H, W] grid and 1 (FWH) walks H fastest.
 */
export type AxisOrder = 0 | 1 | 2 | 3 | 4 | 5;

/** The names of the orders, indexed by {@link AxisOrder} (PARO's table). */
export const AXIS_ORDER_NAMES = ['FHW', 'FWH', 'HWF', 'HFW', 'WHF', 'WFH'] as const;

/**
 * PARO's `permutations` table, verified in jamescsq47/PAROAtten
 * paroattention/cogvideox.py (HEAD 3ac854f), `permute_qk`: the image part of
 * q/k/v is `x.reshape([BS, F, H, W, D]).permute(0, *(perm + 1), 4)` with
 * perm = [[0,1,2], [0,2,1], [1,2,0], [1,0,2], [2,1,0], [2,0,1]] commented
 * FHW, FWH, HWF, HFW, WHF, WFH. Permuting a [F, H, W] tensor by (a0, a1, a2)
 * makes axis a0 the outermost and a2 the innermost, so the comment names the
 * nesting (e.g. 2 = permute(1, 2, 0) → [H, W, F]). The text prefix (226
 * tokens for CogVideoX) is left in place; `permute_attn_out` applies the
 * inverse table (2 ↔ 5 swap, the others are involutions).
 */
const PARO_PERMUTATIONS: ReadonlyArray<readonly [number, number, number]> = [
  [0, 1, 2], [0, 2, 1], [1, 2, 0], [1, 0, 2], [2, 1, 0], [2, 0, 1],
];

/** A video token grid: F frames of H×W patches, after `prefix` tokens (e.g. text) and before `suffix` tokens. */
export interface TokenGrid {
  F: number;
  H: number;
  W: number;
  /** Tokens before the grid that stay in place (CogVideoX: 226 text tokens). Default 0. */
  prefix?: number;
  /** Tokens after the grid that stay in place. Default 0. */
  suffix?: number;
}

export interface ReorderIndex {
  /** i32 [heads·n]: position p of head h (permuted space) holds original token perm[h·n + p]. */
  perm: Int32Array;
  /** i32 [heads·n]: the inverse, inv[h·n + perm[h·n + p]] = p. */
  inv: Int32Array;
  heads: number;
  /** Tokens per head: prefix + F·H·W + suffix. */
  n: number;
}

function gridOf(op: string, grid: unknown): Required<TokenGrid> {
  if (typeof grid !== 'object' || grid === null) throw invalid('ERR_ARG', `${op} grid`, '{ F, H, W, prefix?, suffix? }', grid);
  const g = checkOptions(op, grid, ['F', 'H', 'W', 'prefix', 'suffix']);
  const F = int(op, 'grid.F', g.F, 1, MAX_DIM);
  const H = int(op, 'grid.H', g.H, 1, MAX_DIM);
  const W = int(op, 'grid.W', g.W, 1, MAX_DIM);
  const prefix = int(op, 'grid.prefix', g.prefix ?? 0, 0, MAX_DIM);
  const suffix = int(op, 'grid.suffix', g.suffix ?? 0, 0, MAX_DIM);
  if (prefix + F * H * W + suffix > MAX_DIM) throw makeError('ERR_RANGE', `${op}: the grid has ${prefix + F * H * W + suffix} tokens, over 2^31 − 1`);
  return { F, H, W, prefix, suffix };
}

function axisOrder(op: string, name: string, v: unknown): AxisOrder {
  return int(op, name, v, 0, 5) as AxisOrder;
}

/** One order for every head (a number) or one per head. */
function ordersOf(op: string, order: unknown): AxisOrder[] {
  if (typeof order === 'number') return [axisOrder(op, 'order', order)];
  if (typeof order !== 'object' || order === null || typeof (order as ArrayLike<number>).length !== 'number') {
    throw invalid('ERR_ARG', `${op} order`, 'an AxisOrder (0..5) or one per head', order);
  }
  const a = order as ArrayLike<unknown>;
  if (a.length < 1) throw makeError('ERR_RANGE', `${op}: order lists no heads`);
  return Array.from({ length: a.length }, (_, h) => axisOrder(op, `order[${h}]`, a[h]));
}

function fillPerm(g: Required<TokenGrid>, o: AxisOrder, perm: Int32Array, inv: Int32Array, base: number): void {
  const n = g.prefix + g.F * g.H * g.W + g.suffix;
  const dims = [g.F, g.H, g.W];
  const strides = [g.H * g.W, g.W, 1]; // of the original raster order
  const [a0, a1, a2] = PARO_PERMUTATIONS[o];
  let p = g.prefix;
  for (let t = 0; t < g.prefix; t++) perm[base + t] = t;
  for (let i0 = 0; i0 < dims[a0]; i0++) {
    for (let i1 = 0; i1 < dims[a1]; i1++) {
      const row = g.prefix + i0 * strides[a0] + i1 * strides[a1];
      for (let i2 = 0; i2 < dims[a2]; i2++) perm[base + p++] = row + i2 * strides[a2];
    }
  }
  for (let t = p; t < n; t++) perm[base + t] = t;
  for (let t = 0; t < n; t++) inv[base + perm[base + t]] = t;
}

/**
 * Per-head permutations for PARO's axis orders: `order` is one AxisOrder
 * (heads = 1) or one per head (a plan's Int8Array, or numbers 0..5, checked
 * at run time). Prefix and suffix tokens keep their places.
 * @example reorderIndex({ F: 13, H: 30, W: 45, prefix: 226 }, plan.order) // CogVideoX, 48 heads
 * @throws {RangeError} ERR_RANGE for an order outside 0..5 or a grid over 2^31 − 1 tokens
 */
export function reorderIndex(grid: TokenGrid, order: AxisOrder | ArrayLike<number>): ReorderIndex {
  const op = 'reorderIndex';
  try {
    const g = gridOf(op, grid);
    const orders = ordersOf(op, order);
    const n = g.prefix + g.F * g.H * g.W + g.suffix;
    const heads = orders.length;
    if (heads * n > 2 ** 32 - 1) throw makeError('ERR_RANGE', `${op}: ${heads} heads of ${n} tokens is over 2^32 − 1 entries`);
    const perm = new Int32Array(heads * n);
    const inv = new Int32Array(heads * n);
    for (let h = 0; h < heads; h++) fillPerm(g, orders[h], perm, inv, h * n);
    return { perm, inv, heads, n };
  } catch (e) {
    throw prefixed(e, op);
  }
}

function prefixed(e: unknown, op: string): unknown {
  const err = e as { code?: string; message?: string };
  if (err && typeof err.code === 'string' && typeof err.message === 'string' && !err.message.startsWith(`${op}:`)) {
    err.message = `${op}: ${err.message}`;
  }
  return e;
}

// ---------------------------------------------------------------------------
// Row rules shared by calibration and plan search

/*
 * A row's blocks are ranked by descending value, ties to the lower index.
 * The ranking is never materialised: the values are sorted (a native
 * Float64Array sort, no comparator; ~10x faster than sorting indices at
 * CogVideoX sizes), the count comes from the sorted values, and the blocks are
 * marked by comparing with the count-th value (ties at it to the lowest
 * indices) — the same blocks an index sort would give.
 */

/** The n values of a row, sorted descending, in `scratch`. */
function sortedDesc(v: ArrayLike<number>, off: number, n: number, scratch: Float64Array): Float64Array {
  const s = scratch.subarray(0, n);
  for (let j = 0; j < n; j++) s[j] = v[off + j];
  return s.sort().reverse();
}

/**
 * The smallest number of blocks, taken by descending value, whose sum
 * reaches `coverage` of the row's total. The total is summed in the same
 * (sorted) order as the prefix, so coverage 1 is reached exactly at the last
 * block with mass. A row of total 0 needs 0 blocks.
 */
function coverageCount(sorted: Float64Array, coverage: number): number {
  let total = 0;
  for (let t = 0; t < sorted.length; t++) total += sorted[t];
  if (total <= 0) return 0;
  const goal = coverage * total;
  let s = 0;
  for (let t = 0; t < sorted.length; t++) {
    s += sorted[t];
    if (s >= goal) return t + 1;
  }
  return sorted.length;
}

/** Marks the first `count` blocks of the ranking (dense[doff + j] = 1). */
function markTop(v: ArrayLike<number>, off: number, n: number, sorted: Float64Array, count: number, dense: Uint8Array, doff: number): void {
  if (count <= 0) return;
  const c = Math.min(count, n);
  const thr = sorted[c - 1];
  let above = 0;
  while (above < c && sorted[above] > thr) above++;
  let ties = c - above; // blocks equal to thr to take, lowest indices first
  for (let j = 0; j < n; j++) {
    const x = v[off + j];
    if (x > thr) dense[doff + j] = 1;
    else if (x === thr && ties > 0) {
      dense[doff + j] = 1;
      ties--;
    }
  }
}

/** The top-ranked block: the largest value, the lowest index among equals. */
function topBlock(v: ArrayLike<number>, off: number, n: number): number {
  let best = 0;
  for (let j = 1; j < n; j++) if (v[off + j] > v[off + best]) best = j;
  return best;
}

/**
 * ⌈x⌉ with a relative allowance of 1e-9 below, so that products like
 * 0.3·10 = 3.0000000000000004 give 3 and not 4.
 */
function ceilCount(x: number): number {
  return Math.ceil(x - 1e-9 * Math.max(1, Math.abs(x)));
}

// ---------------------------------------------------------------------------
// calibrateBlockMask

export type CalibrationRule = { coverage: number } | { threshold: number } | { density: number };

export interface CalibrateOptions {
  /** Query block size in tokens. */
  blockQ: number;
  /** Key block size (default blockQ). */
  blockK?: number;
  /** [query tokens, key tokens] (default [nQ·blockQ, nK·blockK]). */
  seqLens?: readonly [number, number];
  /** Force the diagonal blocks on (default true). */
  keepDiagonal?: boolean;
  /** Force the first n q-block rows and the first n kv-block columns on (PARO's dense text blocks). Default 0. */
  keepPrefixBlocks?: number;
}

/**
 * A float tensor's values in row-major order, read in place when it is a
 * contiguous f32 host tensor (Tensor.toArray builds a JS array: ~10x slower
 * at CogVideoX sizes). Device tensors are copied to the host.
 */
function floatValues(t: Tensor): Float32Array {
  const host = t.isHost ? t.contiguous() : t.toHost().contiguous();
  const data = host.data.subarray(host.offset, host.offset + host.numel);
  if (host.dtype === 'f32') return data as Float32Array;
  return fromHalfBits(data as Uint16Array, host.dtype as 'f16' | 'bf16');
}

/** Validated values of a mass tensor as float64, with its dims; NaN, ±Inf and negative values are refused. */
function massValues(op: string, massIn: TensorLike): { v: Float32Array; Bm: number; Hm: number; nQ: number; nK: number; device: Device } {
  const t = toTensor(massIn, 'mass');
  if (t.dtype !== 'f32' && t.dtype !== 'f16' && t.dtype !== 'bf16') throw makeError('ERR_DTYPE', `Expected f32, f16 or bf16 for mass of ${op} but received ${t.dtype}`);
  if (t.ndim !== 4 || t.shape.some((d) => d < 1)) {
    throw makeError('ERR_SHAPE', `Expected mass of rank 4 [B, H, nQ, nK] with no empty dimension for ${op} but received shape [${t.shape.join(', ')}]`);
  }
  const v = floatValues(t);
  for (let i = 0; i < v.length; i++) {
    if (!(v[i] >= 0) || v[i] === Infinity) {
      throw makeError('ERR_RANGE', `${op}: mass holds ${describe(v[i])} at flat index ${i}; block attention mass must be finite and >= 0`);
    }
  }
  const [Bm, Hm, nQ, nK] = t.shape;
  return { v, Bm, Hm, nQ, nK, device: t.device };
}

type RuleKind = { kind: 'coverage' | 'threshold' | 'density'; value: number };

function ruleOf(op: string, rule: unknown): RuleKind {
  if (typeof rule !== 'object' || rule === null) throw invalid('ERR_ARG', `${op} rule`, '{ coverage } or { threshold } or { density }', rule);
  const keys = Object.keys(rule).filter((k) => (rule as Record<string, unknown>)[k] !== undefined);
  const known = keys.filter((k) => k === 'coverage' || k === 'threshold' || k === 'density');
  if (known.length !== 1 || keys.length !== 1) {
    throw makeError('ERR_ARG', `${op}: the rule takes exactly one of coverage, threshold or density but received { ${keys.join(', ')} }`);
  }
  const kind = known[0] as RuleKind['kind'];
  const value = (rule as Record<string, unknown>)[kind];
  if (typeof value !== 'number') throw invalid('ERR_ARG', `${op} ${kind}`, 'a number', value);
  const ok = kind === 'threshold' ? value >= 0 && value <= 1 : value > 0 && value <= 1;
  if (!ok) throw makeError('ERR_RANGE', `Expected ${op} ${kind} in ${kind === 'threshold' ? '[0, 1]' : '(0, 1]'} but received ${describe(value)}`);
  return { kind, value };
}

/** The kv blocks holding the same token positions as q-block i (self-attention's diagonal). */
function diagonalRange(i: number, blockQ: number, blockK: number, seqLens: readonly [number, number], nK: number): [number, number] {
  const first = i * blockQ;
  const last = Math.min((i + 1) * blockQ, seqLens[0]) - 1;
  if (first >= seqLens[1]) return [1, 0];
  return [Math.floor(first / blockK), Math.min(Math.floor(Math.min(last, seqLens[1] - 1) / blockK), nK - 1)];
}

/**
 * A static block mask from block attention mass (e.g. summed over
 * calibration prompts and timesteps from {@link blockAttentionMass}).
 *
 * `mass` is [Bm, Hm, nQ, nK], finite and >= 0 (NaN, ±Inf or a negative value
 * is an ERR_RANGE). Per row (b, h, q-block i), with blocks ranked by
 * descending mass, ties to the lower index, and T the row's total:
 * - `{ coverage: c }`, c ∈ (0, 1]: the smallest prefix of the ranking whose
 *   mass is >= c·T (T summed in ranking order, so c = 1 stops at the last
 *   block with mass; zero-mass blocks are never needed);
 * - `{ threshold: t }`, t ∈ [0, 1]: every block with mass / T >= t (none when
 *   T = 0);
 * - `{ density: d }`, d ∈ (0, 1]: the first ⌈d·nK⌉ of the ranking (ceil with
 *   a 1e-9 relative allowance, so 0.3 of 10 blocks is 3).
 * Then, independent of the rule (forced blocks do not count toward it):
 * `keepDiagonal` (default true) adds the kv blocks that hold q-block i's own
 * token positions (block i when blockQ = blockK); `keepPrefixBlocks: n` makes
 * the first n q-block rows dense and adds the first n kv blocks to every row
 * (PARO keeps its text blocks dense). A row still empty gets its top-ranked
 * block, so every row computes at least one block.
 * Runs on the calling thread (host work: about 0.3–1 s for a CogVideoX layer).
 * @example calibrateBlockMask(mass, { coverage: 0.95 }, { blockQ: 64, seqLens: [17776, 17776], keepPrefixBlocks: 4 })
 * @throws {RangeError} ERR_RANGE for NaN, ±Inf or negative mass, or a rule value out of range; ERR_SHAPE when seqLens and the block sizes disagree with mass
 * @throws {TypeError} ERR_ARG for a rule with other than one of coverage / threshold / density; ERR_DTYPE for a non-float mass
 */
export function calibrateBlockMask(mass: TensorLike, rule: CalibrationRule, opts: CalibrateOptions): BlockMask {
  return drive(calibrateSteps(mass, rule, opts, 'calibrateBlockMask'), 'calibrateBlockMask');
}

// eslint-disable-next-line require-yield
function* calibrateSteps(massIn: TensorLike, ruleIn: unknown, opts: CalibrateOptions, op: string): MethodGen<BlockMask> {
  if (opts === undefined) throw makeError('ERR_ARG', `${op}: options { blockQ, blockK?, seqLens?, keepDiagonal?, keepPrefixBlocks? } are required`);
  const o = checkOptions(op, opts, ['blockQ', 'blockK', 'seqLens', 'keepDiagonal', 'keepPrefixBlocks']);
  const rule = ruleOf(op, ruleIn);
  const blockQ = int(op, 'blockQ', o.blockQ, 1, MAX_DIM);
  const blockK = int(op, 'blockK', o.blockK ?? blockQ, 1, MAX_DIM);
  const keepDiagonal = boolOpt(op, 'keepDiagonal', o.keepDiagonal, true);
  const keepPrefix = int(op, 'keepPrefixBlocks', o.keepPrefixBlocks ?? 0, 0, MAX_DIM);
  const m = massValues(op, massIn);
  const seqLens = seqLensFor(op, o.seqLens, m.nQ, m.nK, blockQ, blockK);
  const { Bm, Hm, nQ, nK, v } = m;
  const dense = new Uint8Array(Bm * Hm * nQ * nK);
  const densityCount = rule.kind === 'density' ? Math.min(nK, Math.max(1, ceilCount(rule.value * nK))) : 0;
  const scratch = new Float64Array(nK);
  for (let r = 0; r < Bm * Hm * nQ; r++) {
    const off = r * nK;
    const i = r % nQ;
    const sorted = sortedDesc(v, off, nK, scratch);
    if (rule.kind === 'coverage') {
      markTop(v, off, nK, sorted, coverageCount(sorted, rule.value), dense, off);
    } else if (rule.kind === 'threshold') {
      let total = 0;
      for (let t = 0; t < nK; t++) total += sorted[t];
      if (total > 0) for (let j = 0; j < nK; j++) if (v[off + j] / total >= rule.value) dense[off + j] = 1;
    } else {
      markTop(v, off, nK, sorted, densityCount, dense, off);
    }
    if (keepDiagonal) {
      const [lo, hi] = diagonalRange(i, blockQ, blockK, seqLens, nK);
      for (let j = lo; j <= hi; j++) dense[off + j] = 1;
    }
    if (i < keepPrefix) dense.fill(1, off, off + nK);
    else for (let j = 0; j < Math.min(keepPrefix, nK); j++) dense[off + j] = 1;
    let any = false;
    for (let j = 0; j < nK && !any; j++) any = dense[off + j] === 1;
    if (!any) dense[off + topBlock(v, off, nK)] = 1;
  }
  return maskFromDenseRows(dense, { Bm, Hm, nQ, nK }, { blockQ, blockK }, seqLens, m.device);
}

function boolOpt(op: string, name: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') throw invalid('ERR_ARG', `${op} ${name}`, 'a boolean', v);
  return v;
}

function seqLensFor(op: string, v: unknown, nQ: number, nK: number, blockQ: number, blockK: number): [number, number] {
  if (v === undefined) return [nQ * blockQ, nK * blockK];
  if (!Array.isArray(v) || v.length !== 2) throw invalid('ERR_ARG', `${op} seqLens`, '[query tokens, key tokens]', v);
  const s: [number, number] = [int(op, 'seqLens[0]', v[0], 1, MAX_DIM), int(op, 'seqLens[1]', v[1], 1, MAX_DIM)];
  if (Math.ceil(s[0] / blockQ) !== nQ || Math.ceil(s[1] / blockK) !== nK) {
    throw makeError('ERR_SHAPE', `${op}: seqLens [${s.join(', ')}] with blocks ${blockQ}x${blockK} give ${Math.ceil(s[0] / blockQ)}x${Math.ceil(s[1] / blockK)} blocks but mass has ${nQ}x${nK}`);
  }
  return s;
}

// ---------------------------------------------------------------------------
// SpargeAttn's predictor

/** A hyper-parameter for every head (a number) or one per head (SpargeAttn's `hyperparameter_check`). */
export type PerHead = number | ArrayLike<number>;

export interface PredictBlockMaskOptions {
  /** Default 128 (SpargeAttn's BLKQ). */
  blockQ?: number;
  /** Default 64 (SpargeAttn's BLKK). */
  blockK?: number;
  /** Blocks whose self-similarity is <= this are always computed (SpargeAttn's simthreshd1). Default 0.6. */
  simThreshold?: PerHead;
  /** Keep the ranked blocks whose cumulative softmax is <= cdf (SpargeAttn's cdfthreshd). Default 0.98 unless topk is given. */
  cdf?: PerHead;
  /** Or keep int(topk·nK) blocks per row (computed in float32 as SpargeAttn does). */
  topk?: PerHead;
  /** Also keep kv block 0 in every row (SpargeAttn's attention_sink). Default false. */
  attentionSink?: boolean;
  layout?: 'bhnd' | 'bnhd';
  /** Scale of the pooled scores, default 1/√D (SpargeAttn uses D^-0.5 whatever the attention's scale). */
  scale?: number;
}

/** Pooled blocks: means f32 [B, H, nB, D] and self-similarities f32 [B, H, nB] (what blockPool returns). */
export interface PooledBlocks {
  mean: TensorLike;
  selfSim: TensorLike;
}

function perHead(op: string, name: string, v: unknown, H: number, lo: number, hi: number): Float64Array {
  const out = new Float64Array(H);
  const check = (x: unknown, at: string): number => {
    if (typeof x !== 'number') throw invalid('ERR_ARG', `${op} ${at}`, 'a number', x);
    if (!(x >= lo && x <= hi)) throw makeError('ERR_RANGE', `Expected ${op} ${at} in [${lo}, ${hi}] but received ${describe(x)}`);
    return x;
  };
  if (typeof v === 'number') return out.fill(check(v, name));
  if (typeof v !== 'object' || v === null || typeof (v as ArrayLike<number>).length !== 'number') {
    throw invalid('ERR_ARG', `${op} ${name}`, `a number or ${H} numbers (one per head)`, v);
  }
  const a = v as ArrayLike<unknown>;
  if (a.length !== H) throw makeError('ERR_SHAPE', `Expected ${op} ${name} to give ${H} values (one per head) but received ${a.length}`);
  for (let h = 0; h < H; h++) out[h] = check(a[h], `${name}[${h}]`);
  return out;
}

interface PoolDims { B: number; H: number; n: number; D: number }

function pooledOf(op: string, name: string, p: unknown): { mean: Float32Array; sim: Float32Array; dims: PoolDims } {
  if (typeof p !== 'object' || p === null || !('mean' in p) || !('selfSim' in p)) throw invalid('ERR_ARG', `${op} ${name}`, '{ mean, selfSim }', p);
  const mean = toTensor((p as PooledBlocks).mean, `${name}.mean`);
  const sim = toTensor((p as PooledBlocks).selfSim, `${name}.selfSim`);
  if (mean.ndim !== 4 || mean.shape.some((d) => d < 1)) throw makeError('ERR_SHAPE', `Expected ${name}.mean of rank 4 [B, H, nB, D] for ${op} but received shape [${mean.shape.join(', ')}]`);
  const [B, H, n, D] = mean.shape;
  if (sim.ndim !== 3 || sim.shape[0] !== B || sim.shape[1] !== H || sim.shape[2] !== n) {
    throw makeError('ERR_SHAPE', `Expected ${name}.selfSim of shape [${B}, ${H}, ${n}] for ${op} but received [${sim.shape.join(', ')}]`);
  }
  for (const [nm, t] of [[`${name}.mean`, mean], [`${name}.selfSim`, sim]] as const) {
    if (t.dtype !== 'f32' && t.dtype !== 'f16' && t.dtype !== 'bf16') throw makeError('ERR_DTYPE', `Expected a float tensor for ${nm} of ${op} but received ${t.dtype}`);
  }
  const mv = floatValues(mean);
  for (let i = 0; i < mv.length; i++) {
    if (!Number.isFinite(mv[i])) {
      const hint = name.startsWith('pooled ') ? ` (${name.slice(7)} holds NaN or Inf)` : '';
      throw makeError('ERR_RANGE', `${op}: ${name}.mean holds ${describe(mv[i])} at flat index ${i}${hint}`);
    }
  }
  // selfSim may be NaN (a block of zero vectors): NaN > threshold is false, so the block is always computed, as in SpargeAttn.
  return { mean: mv, sim: floatValues(sim), dims: { B, H, n, D } };
}

/**
 * SpargeAttn's `get_block_map_meansim` from pooled q and k blocks (the part
 * after pooling; {@link predictBlockMask} pools and calls this). The rules,
 * as in thu-ml/SpargeAttn spas_sage_attn/utils.py (HEAD bfd980b):
 * 1. a block is "similar" when its self-similarity is > simThreshold
 *    (strict, against the threshold rounded to float32 as SpargeAttn's
 *    tensor holds it; NaN is not similar);
 * 2. a q block that is not similar computes its whole row; a k block that is
 *    not similar is computed in every row and left out of the softmax
 *    (its pooled score is −inf);
 * 3. per row, p = softmax(pq·pkᵀ·scale) over the similar k blocks, ranked
 *    descending (ties to the lower index; torch.sort leaves ties unordered),
 *    cumulative sum; with `cdf`, keep the first count(cumsum <= cdf) of the
 *    ranking — `searchsorted(cdf, thr, right=True)`, so the block whose
 *    cumulative mass crosses the threshold is *not* kept; with `topk`, the
 *    first int(topk·nK) (float32 product, truncated);
 * 4. a row where that count is 0 keeps its top-ranked block (SpargeAttn's
 *    `num_to_select == 0 → 1`);
 * 5. `attentionSink` adds kv block 0 to every row.
 * The cumulative sum is divided by its own last value (float64), so cdf = 1
 * keeps every block. GQA: q head h reads k head ⌊h·Hk / Hq⌋.
 * @example predictBlockMaskFromPools(blockPoolSync(q, { block: 128 }), blockPoolSync(k, { block: 64 }), { seqLens: [N, N], topk: 0.5 })
 * @throws {RangeError} ERR_RANGE for non-finite pooled means or out-of-range hyper-parameters; ERR_SHAPE for pooled shapes that disagree
 */
export function predictBlockMaskFromPools(
  pooledQ: PooledBlocks, pooledK: PooledBlocks, opts: Omit<PredictBlockMaskOptions, 'layout'> & { seqLens: readonly [number, number] },
): BlockMask {
  return drive(fromPoolsSteps(pooledQ, pooledK, opts, 'predictBlockMaskFromPools'), 'predictBlockMaskFromPools');
}

// eslint-disable-next-line require-yield
function* fromPoolsSteps(pooledQ: unknown, pooledK: unknown, opts: unknown, op: string): MethodGen<BlockMask> {
  const o = checkOptions(op, opts, ['blockQ', 'blockK', 'simThreshold', 'cdf', 'topk', 'attentionSink', 'scale', 'seqLens']);
  const pq = pooledOf(op, 'pooledQ', pooledQ);
  const pk = pooledOf(op, 'pooledK', pooledK);
  return spargeMask(op, pq, pk, o, toTensor((pooledQ as PooledBlocks).mean, 'pooledQ.mean').device);
}

function spargeMask(
  op: string, pq: ReturnType<typeof pooledOf>, pk: ReturnType<typeof pooledOf>, o: Record<string, unknown>, device: Device,
): BlockMask {
  const { B, H, n: nQ, D } = pq.dims;
  const { H: Hk, n: nK } = pk.dims;
  if (pk.dims.B !== B || pk.dims.D !== D) {
    throw makeError('ERR_SHAPE', `${op}: pooled k [${pk.dims.B}, ${Hk}, ${nK}, ${pk.dims.D}] does not match pooled q [${B}, ${H}, ${nQ}, ${D}] in batch or D`);
  }
  if (H % Hk !== 0) throw makeError('ERR_SHAPE', `${op}: ${H} q heads are not a multiple of ${Hk} k heads`);
  const blockQ = int(op, 'blockQ', o.blockQ ?? 128, 1, MAX_DIM);
  const blockK = int(op, 'blockK', o.blockK ?? 64, 1, MAX_DIM);
  let seqLens: [number, number];
  if (Array.isArray(o.seqLens) && o.seqLens.length === 2) {
    seqLens = [int(op, 'seqLens[0]', o.seqLens[0], 1, MAX_DIM), int(op, 'seqLens[1]', o.seqLens[1], 1, MAX_DIM)];
  } else {
    throw invalid('ERR_ARG', `${op} seqLens`, '[query tokens, key tokens]', o.seqLens);
  }
  if (Math.ceil(seqLens[0] / blockQ) !== nQ || Math.ceil(seqLens[1] / blockK) !== nK) {
    throw makeError('ERR_SHAPE', `${op}: seqLens [${seqLens.join(', ')}] with blocks ${blockQ}x${blockK} give ${Math.ceil(seqLens[0] / blockQ)}x${Math.ceil(seqLens[1] / blockK)} blocks but the pooled blocks are ${nQ}x${nK}`);
  }
  if (o.cdf !== undefined && o.topk !== undefined) throw makeError('ERR_ARG', `${op}: pass cdf or topk, not both`);
  // SpargeAttn holds the threshold as a float32 tensor and compares float32 similarities with it.
  const simThr = perHead(op, 'simThreshold', o.simThreshold ?? 0.6, H, -Infinity, Infinity).map(Math.fround);
  const useTopk = o.topk !== undefined;
  const thr = useTopk ? perHead(op, 'topk', o.topk, H, 0, 1) : perHead(op, 'cdf', o.cdf ?? 0.98, H, 0, 1);
  const sink = boolOpt(op, 'attentionSink', o.attentionSink, false);
  let scale = 1 / Math.sqrt(D);
  if (o.scale !== undefined) {
    if (typeof o.scale !== 'number') throw invalid('ERR_ARG', `${op} scale`, 'a number', o.scale);
    if (!Number.isFinite(o.scale) || o.scale <= 0) throw makeError('ERR_RANGE', `Expected ${op} scale > 0 and finite but received ${describe(o.scale)}`);
    scale = o.scale;
  }
  const dense = new Uint8Array(B * H * nQ * nK);
  const logits = new Float64Array(nK);
  const p = new Float64Array(nK);
  const scratch = new Float64Array(nK);
  const similarK = new Uint8Array(Hk * nK);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor((h * Hk) / H);
      for (let j = 0; j < nK; j++) similarK[j] = pk.sim[(b * Hk + hk) * nK + j] > simThr[h] ? 1 : 0;
      const topkCount = useTopk ? Math.trunc(Math.fround(Math.fround(thr[h]) * nK)) : 0;
      for (let i = 0; i < nQ; i++) {
        const off = ((b * H + h) * nQ + i) * nK;
        if (!(pq.sim[(b * H + h) * nQ + i] > simThr[h])) {
          dense.fill(1, off, off + nK); // rule 2: a dissimilar q block computes its whole row
          continue;
        }
        let max = -Infinity;
        const qo = ((b * H + h) * nQ + i) * D;
        for (let j = 0; j < nK; j++) {
          if (!similarK[j]) {
            logits[j] = -Infinity;
            dense[off + j] = 1; // rule 2: a dissimilar k block is computed in every row
            continue;
          }
          const ko = ((b * Hk + hk) * nK + j) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += pq.mean[qo + d] * pk.mean[ko + d];
          logits[j] = s * scale;
          if (logits[j] > max) max = logits[j];
        }
        if (max === -Infinity) continue; // every k block is dissimilar, hence already on
        for (let j = 0; j < nK; j++) p[j] = logits[j] === -Infinity ? 0 : Math.exp(logits[j] - max);
        const sorted = sortedDesc(p, 0, nK, scratch);
        let count: number;
        if (useTopk) {
          count = topkCount;
        } else {
          let total = 0;
          for (let t = 0; t < nK; t++) total += sorted[t];
          let s = 0;
          count = 0;
          for (let t = 0; t < nK; t++) {
            s += sorted[t];
            if (s / total <= thr[h]) count = t + 1; // cumsum is non-decreasing: this counts the entries <= thr
          }
        }
        if (count === 0) count = 1; // rule 4
        markTop(p, 0, nK, sorted, count, dense, off);
      }
      if (sink) for (let i = 0; i < nQ; i++) dense[((b * H + h) * nQ + i) * nK] = 1;
    }
  }
  return maskFromDenseRows(dense, { Bm: B, Hm: H, nQ, nK }, { blockQ, blockK }, seqLens, device);
}

// ---------------------------------------------------------------------------
// Steps that need the block-sparse kernels (lib/kernels/blocksparse)

type AttentionOpts = BlockSparseAttentionOptions;
type AttentionOut = BlockSparseAttentionResult;
type MassOptions = BlockAttentionMassOptions;

/** The block-sparse kernels, as one object (the steps below call K.xSync / K.x). */
const K = {
  applyReorder, applyReorderSync, blockAttentionMass, blockAttentionMassSync, blockPool, blockPoolSync, blockSparseAttention, blockSparseAttentionSync,
};

/** Disposes a tensor a step made (never one the caller passed). */
function free(t: Tensor | undefined, keep: readonly unknown[] = []): void {
  if (t && !keep.includes(t) && !t.disposed) t.dispose();
}

interface AttnDims { B: number; H: number; N: number; D: number; device: Device }

function attnDims(op: string, name: string, xIn: TensorLike, layout: 'bhnd' | 'bnhd'): AttnDims {
  const x = toTensor(xIn, name);
  if (x.ndim !== 4 || x.shape.some((d) => d < 1)) {
    throw makeError('ERR_SHAPE', `Expected ${name} of rank 4 ${layout === 'bhnd' ? '[B, H, N, D]' : '[B, N, H, D]'} for ${op} but received shape [${x.shape.join(', ')}]`);
  }
  const [B, a, b, D] = x.shape;
  return layout === 'bhnd' ? { B, H: a, N: b, D, device: x.device } : { B, H: b, N: a, D, device: x.device };
}

/**
 * SpargeAttn's predictor on q and k: pools q in blocks of blockQ and k in
 * blocks of blockK ({@link blockPool}), then applies the rules of
 * {@link predictBlockMaskFromPools}. The mask is on q's device, [B, Hq, nQ, nK].
 * Differences from SpargeAttn: a short last block is pooled over its real
 * rows (SpargeAttn's Triton kernel also normalises the padding rows); the
 * scores are computed in float64 on the host.
 * The rules run on the calling thread (about 0.4 s for a CogVideoX layer).
 * @example const mask = await predictBlockMask(q, k, { cdf: 0.98 }); // then blockSparseAttention(q, k, v, mask)
 * @throws {RangeError} ERR_RANGE for NaN/Inf in q or k or out-of-range options; ERR_SHAPE for q, k that do not pair
 */
export function predictBlockMask(q: TensorLike, k: TensorLike, opts: PredictBlockMaskOptions = {}): Promise<BlockMask> {
  return driveAsync(predictSteps(q, k, opts, 'predictBlockMask'), 'predictBlockMask');
}

/** Synchronous twin of {@link predictBlockMask}. */
export function predictBlockMaskSync(q: TensorLike, k: TensorLike, opts: PredictBlockMaskOptions = {}): BlockMask {
  return drive(predictSteps(q, k, opts, 'predictBlockMaskSync'), 'predictBlockMaskSync');
}

function* predictSteps(q: TensorLike, k: TensorLike, opts: PredictBlockMaskOptions, op: string): MethodGen<BlockMask> {
  const o = checkOptions(op, opts, ['blockQ', 'blockK', 'simThreshold', 'cdf', 'topk', 'attentionSink', 'layout', 'scale']);
  const layout = oneOf(op, 'layout', o.layout, ['bhnd', 'bnhd'] as const, 'bhnd');
  const blockQ = int(op, 'blockQ', o.blockQ ?? 128, 1, MAX_DIM);
  const blockK = int(op, 'blockK', o.blockK ?? 64, 1, MAX_DIM);
  const qd = attnDims(op, 'q', q, layout);
  const kd = attnDims(op, 'k', k, layout);
  const pq = (yield call(K.blockPoolSync, K.blockPool, q, { block: blockQ, layout })) as { mean: Tensor; selfSim: Tensor };
  let pk: { mean: Tensor; selfSim: Tensor } | undefined;
  try {
    pk = (yield call(K.blockPoolSync, K.blockPool, k, { block: blockK, layout })) as { mean: Tensor; selfSim: Tensor };
    const { layout: _l, ...rest } = o;
    return spargeMask(op, pooledOf(op, 'pooled q', pq), pooledOf(op, 'pooled k', pk), { ...rest, blockQ, blockK, seqLens: [qd.N, kd.N] }, qd.device);
  } finally {
    for (const t of [pq.mean, pq.selfSim, pk?.mean, pk?.selfSim]) free(t);
  }
}

// ---------------------------------------------------------------------------
// searchReorderPlan

export interface ReorderPlan {
  /** The chosen AxisOrder per head, i8 [H]. */
  order: Int8Array;
  /** [H·6]: score of head h under order o at h·6 + o (lower is sparser); NaN for orders not searched. */
  scores: Float32Array;
}

export interface SearchReorderOptions {
  /** Block size (q and kv) of the mass the score is computed on. Default 64. */
  blockSize?: number;
  /** Query rows to sample: ⌈sampleRows / blockSize⌉ whole q-blocks (all when that covers N). Default 256. */
  sampleRows?: number;
  /** Mass fraction a row must keep. Default 0.9. */
  coverage?: number;
  /** Orders to try (default all six); the others score NaN. */
  candidates?: ArrayLike<number>;
  /** Seed of the q-block sample (default 0). */
  seed?: number;
  layout?: 'bhnd' | 'bnhd';
  scale?: number;
}

/** Sorted q-block indices: `count` of nQ, drawn without replacement by `seed` (all when count >= nQ). */
export function sampleBlocks(nQ: number, count: number, seed: number): Int32Array {
  const all = Int32Array.from({ length: nQ }, (_, i) => i);
  if (count >= nQ) return all;
  const r = mulberry32(seed); // deterministic: the sample must not depend on Math.random
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor((r() / 4294967296) * (nQ - i));
    const t = all[i];
    all[i] = all[j];
    all[j] = t;
  }
  return all.slice(0, count).sort();
}

/**
 * The sparsity score of one mass tensor [B, H, nQ, nK] per head: the mean,
 * over batch and the sampled q-blocks, of the fraction of kv blocks needed to
 * reach `coverage` of the row's mass (smallest prefix by descending mass).
 */
export function sparsityScores(mass: ArrayLike<number>, dims: { B: number; H: number; nQ: number; nK: number }, blocks: ArrayLike<number>, coverage: number): Float64Array {
  const { B, H, nQ, nK } = dims;
  const out = new Float64Array(H);
  const scratch = new Float64Array(nK);
  for (let h = 0; h < H; h++) {
    let s = 0;
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < blocks.length; t++) {
        const off = ((b * H + h) * nQ + blocks[t]) * nK;
        s += coverageCount(sortedDesc(mass, off, nK, scratch), coverage) / nK;
      }
    }
    out[h] = s / (B * blocks.length);
  }
  return out;
}

/**
 * Picks, per head, the PARO axis order under which attention is most
 * block-sparse. For each candidate order, q and k are reordered
 * ({@link applyReorder}), the exact block attention mass of the sampled
 * q-blocks is computed ({@link blockAttentionMass}, blocks of blockSize), and
 * the head's score is the mean fraction of kv blocks needed to reach
 * `coverage` of a row's mass. The order with the lowest score wins; ties keep
 * the lower order index (FHW first). The same q-block positions are sampled
 * under every order. Our metric: PARO's calibration code is not public; its
 * paper's quantization term is not included.
 * @example const plan = await searchReorderPlan(q, k, { F: 13, H: 30, W: 45, prefix: 226 });
 * @throws {RangeError} ERR_SHAPE when the grid's token count is not q's and k's, or k has other heads than q; ERR_RANGE for NaN/Inf in q or k or out-of-range options
 */
export function searchReorderPlan(q: TensorLike, k: TensorLike, grid: TokenGrid, opts: SearchReorderOptions = {}): Promise<ReorderPlan> {
  return driveAsync(searchSteps(q, k, grid, opts, 'searchReorderPlan'), 'searchReorderPlan');
}

/** Synchronous twin of {@link searchReorderPlan}. */
export function searchReorderPlanSync(q: TensorLike, k: TensorLike, grid: TokenGrid, opts: SearchReorderOptions = {}): ReorderPlan {
  return drive(searchSteps(q, k, grid, opts, 'searchReorderPlanSync'), 'searchReorderPlanSync');
}

function candidatesOf(op: string, v: unknown): AxisOrder[] {
  if (v === undefined) return [0, 1, 2, 3, 4, 5];
  const list = ordersOf(op, v);
  return [...new Set(list)].sort((a, b) => a - b);
}

function* searchSteps(q: TensorLike, k: TensorLike, gridIn: TokenGrid, opts: SearchReorderOptions, op: string): MethodGen<ReorderPlan> {
  const o = checkOptions(op, opts, ['blockSize', 'sampleRows', 'coverage', 'candidates', 'seed', 'layout', 'scale']);
  const grid = gridOf(op, gridIn);
  const layout = oneOf(op, 'layout', o.layout, ['bhnd', 'bnhd'] as const, 'bhnd');
  const blockSize = int(op, 'blockSize', o.blockSize ?? 64, 1, MAX_DIM);
  const sampleRows = int(op, 'sampleRows', o.sampleRows ?? 256, 1, MAX_DIM);
  const coverage = o.coverage ?? 0.9;
  if (typeof coverage !== 'number') throw invalid('ERR_ARG', `${op} coverage`, 'a number', coverage);
  if (!(coverage > 0 && coverage <= 1)) throw makeError('ERR_RANGE', `Expected ${op} coverage in (0, 1] but received ${describe(coverage)}`);
  const seed = int(op, 'seed', o.seed ?? 0, 0, 2 ** 32 - 1);
  const candidates = candidatesOf(op, o.candidates);
  const qd = attnDims(op, 'q', q, layout);
  const kd = attnDims(op, 'k', k, layout);
  const n = grid.prefix + grid.F * grid.H * grid.W + grid.suffix;
  if (qd.N !== n || kd.N !== n) {
    throw makeError('ERR_SHAPE', `${op}: the grid has ${n} tokens (prefix ${grid.prefix} + ${grid.F}·${grid.H}·${grid.W} + suffix ${grid.suffix}) but q has ${qd.N} and k ${kd.N}`);
  }
  if (kd.H !== qd.H) throw makeError('ERR_SHAPE', `${op}: reordering needs as many k heads as q heads (q has ${qd.H}, k ${kd.H}): each head has its own order`);
  const { B, H } = qd;
  const nQ = Math.ceil(n / blockSize);
  const blocks = sampleBlocks(nQ, Math.ceil(sampleRows / blockSize), seed);
  const rowList: number[] = [];
  for (const i of blocks) for (let t = i * blockSize; t < Math.min((i + 1) * blockSize, n); t++) rowList.push(t);
  const rows = blocks.length === nQ ? undefined : Int32Array.from(rowList);
  const scores = new Float32Array(H * 6).fill(NaN);
  for (const order of candidates) {
    const { perm } = reorderIndex(grid, order);
    const permAll = new Int32Array(H * n);
    for (let h = 0; h < H; h++) permAll.set(perm, h * n);
    const permT = indexTensor(permAll, [H, n], qd.device);
    let qp: Tensor | undefined;
    let kp: Tensor | undefined;
    let mass: Tensor | undefined;
    try {
      qp = (yield call(K.applyReorderSync, K.applyReorder, q, permT, { layout })) as Tensor;
      kp = (yield call(K.applyReorderSync, K.applyReorder, k, permT, { layout })) as Tensor;
      const mo: MassOptions = { blockQ: blockSize, blockK: blockSize, layout };
      if (o.scale !== undefined) mo.scale = o.scale as number;
      if (rows) mo.rows = rows;
      mass = (yield call(K.blockAttentionMassSync, K.blockAttentionMass, qp, kp, mo)) as Tensor;
      const m = hostF32(mass);
      for (let i = 0; i < m.length; i++) {
        if (!Number.isFinite(m[i])) throw makeError('ERR_RANGE', `${op}: the block attention mass holds ${describe(m[i])} (NaN or Inf in q or k?)`);
      }
      const s = sparsityScores(m, { B, H, nQ, nK: Math.ceil(n / blockSize) }, blocks, coverage);
      for (let h = 0; h < H; h++) scores[h * 6 + order] = s[h];
    } finally {
      free(mass);
      free(kp, [k]);
      free(qp, [q]);
      free(permT);
    }
  }
  const chosen = new Int8Array(H);
  for (let h = 0; h < H; h++) {
    let best = candidates[0];
    for (const c of candidates) if (scores[h * 6 + c] < scores[h * 6 + best]) best = c; // strict: ties keep the lower index
    chosen[h] = best;
  }
  return { order: chosen, scores };
}

// ---------------------------------------------------------------------------
// paroAttention

export interface ParoAttentionOptions {
  /** The video token grid of q/k/v's token axis (prefix/suffix tokens stay in place). */
  grid: TokenGrid;
  /** The per-head orders; searched with {@link searchReorderPlan} (options `search`) when absent. */
  plan?: { order: ArrayLike<number> };
  /** A mask in permuted space; calibrated from the exact block mass with `coverage` when absent. */
  mask?: BlockMaskLike | 'dense';
  /** Coverage of the calibrated mask (default 0.95). */
  coverage?: number;
  /** Block sizes of the calibrated mask (default 64×64, PARO's CTA). */
  blockQ?: number;
  blockK?: number;
  /** Calibration: keep diagonal blocks (default true) and the first n block rows/columns (default: the blocks covering the prefix). */
  keepDiagonal?: boolean;
  keepPrefixBlocks?: number;
  /** Options of the plan search (blockSize defaults to blockQ). */
  search?: Omit<SearchReorderOptions, 'layout' | 'scale'>;
  layout?: 'bhnd' | 'bnhd';
  scale?: number;
  precision?: BlockSparsePrecision;
  returnLse?: boolean;
}

export interface ParoAttentionResult {
  /** Attention output, like q, in the original token order. */
  out: Tensor;
  /** f32 [B, H, N] log-sum-exp per row (with returnLse), in the original order. */
  lse?: Tensor;
  /** The orders used. */
  plan: ReorderPlan | { order: ArrayLike<number> };
  /** The mask used (in permuted space); owned by the caller when it was calibrated here. */
  mask: BlockMaskLike | 'dense';
  /** i32 [H·N]: the permutation of each head (reorderIndex). */
  perm: Int32Array;
}

/**
 * PAROAttention as one call: the plan (given or searched) gives each head's
 * permutation; the mask (given, in permuted space, or calibrated from the
 * exact block attention mass of the permuted q, k with `coverage`) says which
 * blocks to compute; {@link blockSparseAttention} runs with
 * `reorder: { perm }`, so q, k, v are read in permuted order and the output
 * comes back in the original order. Calibrating here costs a full O(N²) mass
 * pass: for a static mask, calibrate once offline and pass `mask`.
 * @example const { out } = await paroAttention(q, k, v, { grid: { F: 13, H: 30, W: 45, prefix: 226 }, coverage: 0.95 });
 * @throws {RangeError} ERR_SHAPE for a grid, plan or mask that does not fit q, k, v; ERR_RANGE for NaN/Inf or out-of-range options
 * @throws {TokenSieveError} ERR_DEVICE for a mask on another device than q; ERR_UNSUPPORTED for what the kernel cannot run
 */
export function paroAttention(q: TensorLike, k: TensorLike, v: TensorLike, opts: ParoAttentionOptions): Promise<ParoAttentionResult> {
  return driveAsync(paroSteps(q, k, v, opts, 'paroAttention'), 'paroAttention');
}

/** Synchronous twin of {@link paroAttention}. */
export function paroAttentionSync(q: TensorLike, k: TensorLike, v: TensorLike, opts: ParoAttentionOptions): ParoAttentionResult {
  return drive(paroSteps(q, k, v, opts, 'paroAttentionSync'), 'paroAttentionSync');
}

function* paroSteps(q: TensorLike, k: TensorLike, v: TensorLike, opts: ParoAttentionOptions, op: string): MethodGen<ParoAttentionResult> {
  if (opts === undefined) throw makeError('ERR_ARG', `${op}: options { grid, ... } are required`);
  const o = checkOptions(op, opts, ['grid', 'plan', 'mask', 'coverage', 'blockQ', 'blockK', 'keepDiagonal', 'keepPrefixBlocks', 'search', 'layout', 'scale', 'precision', 'returnLse']);
  const grid = gridOf(op, o.grid);
  const layout = oneOf(op, 'layout', o.layout, ['bhnd', 'bnhd'] as const, 'bhnd');
  const blockQ = int(op, 'blockQ', o.blockQ ?? 64, 1, MAX_DIM);
  const blockK = int(op, 'blockK', o.blockK ?? blockQ, 1, MAX_DIM);
  const qd = attnDims(op, 'q', q, layout);
  const kd = attnDims(op, 'k', k, layout);
  const n = grid.prefix + grid.F * grid.H * grid.W + grid.suffix;
  if (qd.N !== n || kd.N !== n) {
    throw makeError('ERR_SHAPE', `${op}: the grid has ${n} tokens (prefix ${grid.prefix} + ${grid.F}·${grid.H}·${grid.W} + suffix ${grid.suffix}) but q has ${qd.N} and k ${kd.N}`);
  }
  if (o.mask !== undefined && o.coverage !== undefined) throw makeError('ERR_ARG', `${op}: pass mask or coverage, not both`);
  if ((o.plan === undefined || o.mask === undefined) && kd.H !== qd.H) {
    // The search and the calibration reorder k per q head; the kernel itself handles grouped-query attention.
    throw makeError('ERR_SHAPE', `${op}: with ${kd.H} k heads for ${qd.H} q heads (grouped-query attention), pass both plan and mask (searching a plan and calibrating a mask need as many k heads as q heads)`);
  }
  const H = qd.H;
  // 1. the plan
  let plan: ReorderPlan | { order: ArrayLike<number> };
  if (o.plan !== undefined) {
    if (typeof o.plan !== 'object' || o.plan === null || !('order' in o.plan)) throw invalid('ERR_ARG', `${op} plan`, '{ order } (one AxisOrder per head)', o.plan);
    plan = o.plan as { order: ArrayLike<number> };
  } else {
    const so: SearchReorderOptions = { blockSize: blockQ, ...(o.search as SearchReorderOptions | undefined), layout };
    if (o.scale !== undefined) so.scale = o.scale as number;
    plan = yield* searchSteps(q, k, grid, so, op);
  }
  const orders = ordersOf(op, plan.order);
  if (orders.length !== H && orders.length !== 1) throw makeError('ERR_SHAPE', `${op}: the plan has ${orders.length} orders but q has ${H} heads`);
  const one = reorderIndex(grid, orders as AxisOrder[]);
  const perm = one.heads === H ? one.perm : new Int32Array(H * n).map((_, i) => one.perm[i % n]);
  const permT = indexTensor(perm, [H, n], qd.device);
  let mask: BlockMaskLike | 'dense';
  let madeMask: BlockMask | undefined;
  try {
    // 2. the mask, in permuted space
    if (o.mask !== undefined) {
      mask = o.mask as BlockMaskLike | 'dense';
      if (mask !== 'dense') checkMaskFits(op, mask, qd.B, H, qd.N, kd.N);
    } else {
      const coverage = o.coverage ?? 0.95;
      let qp: Tensor | undefined;
      let kp: Tensor | undefined;
      let mass: Tensor | undefined;
      try {
        qp = (yield call(K.applyReorderSync, K.applyReorder, q, permT, { layout })) as Tensor;
        kp = (yield call(K.applyReorderSync, K.applyReorder, k, permT, { layout })) as Tensor;
        const mo: MassOptions = { blockQ, blockK, layout };
        if (o.scale !== undefined) mo.scale = o.scale as number;
        mass = (yield call(K.blockAttentionMassSync, K.blockAttentionMass, qp, kp, mo)) as Tensor;
        const keepPrefixBlocks = o.keepPrefixBlocks ?? Math.ceil(grid.prefix / blockQ);
        const co: CalibrateOptions = { blockQ, blockK, seqLens: [qd.N, kd.N], keepPrefixBlocks: keepPrefixBlocks as number };
        if (o.keepDiagonal !== undefined) co.keepDiagonal = o.keepDiagonal as boolean;
        madeMask = yield* calibrateSteps(mass, { coverage } as CalibrationRule, co, op);
        mask = madeMask;
      } finally {
        free(mass);
        free(kp, [k]);
        free(qp, [q]);
      }
    }
    // 3. block-sparse attention in permuted space, output in the original order
    const ao: AttentionOpts = { layout, reorder: { perm: permT } };
    if (o.scale !== undefined) ao.scale = o.scale as number;
    if (o.precision !== undefined) ao.precision = o.precision as AttentionOpts['precision'];
    if (o.returnLse !== undefined) ao.returnLse = o.returnLse as boolean;
    const r = (yield call(K.blockSparseAttentionSync, K.blockSparseAttention, q, k, v, mask, ao)) as AttentionOut;
    const result: ParoAttentionResult = { out: r.out, plan, mask, perm };
    if (r.lse) result.lse = r.lse;
    return result;
  } catch (e) {
    madeMask?.dispose();
    throw e;
  } finally {
    free(permT);
  }
}
