/**
 * Block-sparse (optionally reordered) attention and its helpers: the
 * per-head row reordering, exact block attention mass (for offline masks)
 * and block pooling (for online mask predictors). See
 * include/tokensieve/blocksparse.h for the exact semantics.
 */
import { deviceOf } from '../device';
import { invalid, makeError } from '../errors';
import { native, opParams } from '../native';
import { Tensor, TensorLike, toTensor } from '../tensor';
import {
  bool,
  callSite,
  checkOptions,
  commonDevice,
  expectFloat,
  expectInnerContiguous,
  expectOutputsDisjoint,
  expectRank,
  headsFirst,
  int,
  offHeap,
  oneOf,
  output,
  CallOutputs,
  OpPlan,
  runOp,
  runOpAsync,
  stream,
} from './common';

/** `'bhnd'` (default): [B, H, N, D]; `'bnhd'`: [B, N, H, D]. */
export type AttentionLayout = 'bhnd' | 'bnhd';

/**
 * What the block-sparse kernel reads of a mask: FlexAttention's BlockMask
 * fields (`BlockMask` in this package builds and validates them).
 */
export interface BlockMaskLike {
  /** Query tokens per q-block. */
  readonly blockQ: number;
  /** Key tokens per kv-block. */
  readonly blockK: number;
  /** [N, Nk]: the query and key lengths the mask was built for. */
  readonly seqLens: readonly [number, number];
  /** i32 [B|1, H|1, nQ]: kept kv blocks per q-block. */
  readonly kvNumBlocks: TensorLike;
  /** i32 [B|1, H|1, nQ, L]: the first count entries, sorted ascending. */
  readonly kvIndices: TensorLike;
  /** Optional second list (FlexAttention's full blocks); computed like the first. */
  readonly fullKvNumBlocks?: TensorLike;
  readonly fullKvIndices?: TensorLike;
}

/**
 * Precision of the products: `'native'` (default) the inputs' type (f32 in
 * f32; f16/bf16 with f32 accumulation); `'f16'`/`'bf16'`: q, k, v and the
 * probabilities rounded to that type, f32 accumulation (the tensor-core
 * path; f32 inputs are converted on load); `'int8'`: SageAttention-style
 * QKᵀ on INT8 (per 64-token blocks of q and of smoothed k), P·V in f16.
 */
export type BlockSparsePrecision = 'native' | 'f16' | 'bf16' | 'int8';
const PRECISIONS = ['native', 'f16', 'bf16', 'int8'] as const;

export interface BlockSparseAttentionOptions {
  layout?: AttentionLayout;
  /** Logit scale (default 1/√D). */
  scale?: number;
  /** Also return the log-sum-exp per row, f32 [B, H, N] (−Infinity for a row that keeps nothing). */
  returnLse?: boolean;
  precision?: BlockSparsePrecision;
  /** Block sizes of a `'dense'` mask (default 64; only the CUDA tiling cares). */
  blockQ?: number;
  blockK?: number;
  /**
   * Attend in permuted token order: position p of head h is original token
   * `perm[h·N + p]` (for q, k and v); the mask indexes permuted positions;
   * the output comes back in original order. i32 [H, N] on q's device, a
   * permutation per head (`reorderIndex` builds it). Needs Nk = N.
   */
  reorder?: { perm: TensorLike | Int32Array };
  /**
   * Reject NaN/Inf in q, k, v (default true). On CUDA this costs one pass
   * over the inputs and a stream synchronisation, so it applies only with
   * `wait: true`; with `wait: false` a NaN reaches the rows that attend to it.
   */
  checkFinite?: boolean;
  /**
   * Write into these contiguous tensors (on q's device) instead of
   * allocating new ones: `out` of q's shape and dtype and, with `returnLse`,
   * `lse` f32 [B, H, N]. Reuse them across calls (one layer's shapes repeat)
   * to keep allocation and first-touch page faults out of a hot loop; they
   * must not share memory with the inputs. The result then holds these
   * tensors; every element is written.
   */
  out?: { out: TensorLike; lse?: TensorLike };
  stream?: bigint;
  wait?: boolean;
}

export interface BlockSparseAttentionResult {
  /** Like q (dtype, layout, device). */
  out: Tensor;
  /** f32 [B, H, N]: natural-log log-sum-exp of the kept logits. */
  lse?: Tensor;
}

function permTensor(op: string, v: unknown, H: number, N: number): Tensor {
  const t = v instanceof Int32Array ? toTensor({ data: v, shape: [H, N] }, 'perm') : toTensor(v as TensorLike, 'perm');
  if (t.dtype !== 'i32') throw makeError('ERR_DTYPE', `Expected i32 for ${op} perm but received ${t.dtype}`);
  if (t.numel !== H * N) throw makeError('ERR_SHAPE', `Expected ${op} perm of ${H}×${N} elements ([H, N]) but received [${t.shape.join(', ')}]`);
  const flat = t.ndim === 2 ? t : t.view([H, N]);
  return flat.isContiguous ? flat : flat.contiguous();
}

function maskTensor(op: string, name: string, v: unknown): Tensor {
  if (v === undefined || v === null) throw makeError('ERR_ARG', `Expected ${op} mask.${name} (a tensor or Int32Array)`);
  const t = toTensor(v as TensorLike, `mask.${name}`);
  if (t.dtype !== 'i32') throw makeError('ERR_DTYPE', `Expected i32 for ${op} mask.${name} but received ${t.dtype}`);
  return t.isContiguous ? t : t.contiguous();
}

interface QkvViews {
  q: Tensor;
  k: Tensor;
  v?: Tensor;
  layout: AttentionLayout;
  qv: { shape: number[]; strides: number[] };
  kv: { shape: number[]; strides: number[] };
  vv?: { shape: number[]; strides: number[] };
}

function qkvViews(op: string, o: Record<string, unknown>, qIn: TensorLike, kIn: TensorLike, vIn?: TensorLike): QkvViews {
  const layout = oneOf(op, 'layout', o.layout, ['bhnd', 'bnhd'] as const, 'bhnd');
  const dims = layout === 'bhnd' ? '[B, H, N, D]' : '[B, N, H, D]';
  const q = toTensor(qIn, 'q');
  const k = toTensor(kIn, 'k');
  const v = vIn === undefined ? undefined : toTensor(vIn, 'v');
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (!t) continue;
    expectRank(op, name, t, 4, dims);
    expectFloat(op, name, t);
    expectInnerContiguous(op, name, t);
    if (t.dtype !== q.dtype) throw makeError('ERR_DTYPE', `Expected ${name} to have the dtype of q (${q.dtype}) for ${op} but received ${t.dtype}`);
    if (t.shape.some((d) => d === 0)) throw makeError('ERR_SHAPE', `Expected every dimension of ${name} to be >= 1 for ${op} but received [${t.shape.join(', ')}]`);
  }
  const qv = headsFirst(q, layout);
  const kv = headsFirst(k, layout);
  const vv = v ? headsFirst(v, layout) : undefined;
  if (kv.shape[0] !== qv.shape[0] || kv.shape[3] !== qv.shape[3] || qv.shape[1] % kv.shape[1] !== 0) {
    throw makeError('ERR_SHAPE', `Expected k with q's B and D and a head count dividing q's (layout '${layout}') for ${op} but received q [${q.shape.join(', ')}] and k [${k.shape.join(', ')}]`);
  }
  if (v && vv && vv.shape.some((d, i) => d !== kv.shape[i])) {
    throw makeError('ERR_SHAPE', `Expected v of k's shape [${k.shape.join(', ')}] for ${op} but received [${v.shape.join(', ')}]`);
  }
  return { q, k, v, layout, qv, kv, vv };
}

function scaleOf(op: string, v: unknown, D: number): number {
  if (v === undefined) return 1 / Math.sqrt(D);
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid('ERR_ARG', `${op} scale`, 'a finite number', v);
  return v;
}

const BSA_KEYS = ['layout', 'scale', 'returnLse', 'precision', 'blockQ', 'blockK', 'reorder', 'checkFinite', 'out', 'stream', 'wait'] as const;

function planBlockSparse(
  outs: CallOutputs, qIn: TensorLike, kIn: TensorLike, vIn: TensorLike, maskIn: BlockMaskLike | 'dense', opts: BlockSparseAttentionOptions | undefined,
): OpPlan<BlockSparseAttentionResult> {
  const op = outs.op;
  const o = checkOptions(op, opts, BSA_KEYS);
  const { q, k, v, layout, qv, kv, vv } = qkvViews(op, o, qIn, kIn, vIn);
  const [B, H, N, D] = qv.shape;
  const Nk = kv.shape[2];
  const scale = scaleOf(op, o.scale, D);
  const precision = oneOf(op, 'precision', o.precision, PRECISIONS, 'native');
  let blockQ: number, blockK: number;
  let lists: Tensor[] = [];
  const dense = maskIn === 'dense';
  if (dense) {
    blockQ = o.blockQ === undefined ? 64 : int(op, 'blockQ', o.blockQ, 1, 1 << 20);
    blockK = o.blockK === undefined ? 64 : int(op, 'blockK', o.blockK, 1, 1 << 20);
  } else {
    if (typeof maskIn !== 'object' || maskIn === null) throw invalid('ERR_ARG', `${op} mask`, "a BlockMask or 'dense'", maskIn);
    if (o.blockQ !== undefined || o.blockK !== undefined) throw makeError('ERR_ARG', `${op}: blockQ and blockK are the mask's own; pass them only with mask 'dense'`);
    blockQ = int(op, 'mask.blockQ', maskIn.blockQ, 1, 1 << 20);
    blockK = int(op, 'mask.blockK', maskIn.blockK, 1, 1 << 20);
    const sl = maskIn.seqLens;
    if (!Array.isArray(sl) || sl.length !== 2 || sl[0] !== N || sl[1] !== Nk) {
      throw makeError('ERR_SHAPE', `Expected ${op} mask.seqLens [${N}, ${Nk}] (q and k lengths) but received ${JSON.stringify(sl)}`);
    }
    lists = [maskTensor(op, 'kvNumBlocks', maskIn.kvNumBlocks), maskTensor(op, 'kvIndices', maskIn.kvIndices)];
    if ((maskIn.fullKvNumBlocks === undefined) !== (maskIn.fullKvIndices === undefined)) {
      throw makeError('ERR_ARG', `${op}: mask.fullKvNumBlocks and mask.fullKvIndices come together`);
    }
    if (maskIn.fullKvNumBlocks !== undefined) {
      lists.push(maskTensor(op, 'fullKvNumBlocks', maskIn.fullKvNumBlocks), maskTensor(op, 'fullKvIndices', maskIn.fullKvIndices));
    }
  }
  const perm = o.reorder === undefined ? undefined : permTensor(op, (o.reorder as { perm?: unknown })?.perm, H, N);
  if (perm && Nk !== N) throw makeError('ERR_SHAPE', `${op}: reorder needs as many keys as queries but received N ${N}, Nk ${Nk}`);
  const names = ['kvNumBlocks', 'kvIndices', 'fullKvNumBlocks', 'fullKvIndices'];
  const ordinal = commonDevice(op, [['q', q], ['k', k], ['v', v], ['perm', perm], ...lists.map((t, i) => [`mask.${names[i]}`, t] as [string, Tensor])]);
  const s = stream(op, o.stream, q.stream);
  const dev = deviceOf(ordinal);
  const returnLse = bool(op, 'returnLse', o.returnLse, false);
  const given = o.out as BlockSparseAttentionOptions['out'];
  if (given !== undefined && (typeof given !== 'object' || given === null || given.out === undefined)) {
    throw invalid('ERR_ARG', `${op} out`, returnLse ? '{ out, lse } tensors' : '{ out } tensors', given);
  }
  if (given !== undefined && returnLse && given.lse === undefined) {
    throw makeError('ERR_ARG', `${op}: returnLse writes the log-sum-exp too: pass out.lse (f32 [${B}, ${H}, ${N}])`);
  }
  if (given?.lse !== undefined && !returnLse) throw makeError('ERR_ARG', `${op}: out.lse is only written with returnLse: true`);
  const out = given === undefined ? outs.empty(q.shape, q.dtype, dev, { stream: s }) : output(outs, given.out, q.shape, ordinal, s, 'out.out', q.dtype);
  const ov = headsFirst(out, layout);
  const lse = !returnLse ? undefined : given === undefined ? outs.empty([B, H, N], 'f32', dev, { stream: s }) : output(outs, given.lse, [B, H, N], ordinal, s, 'out.lse');
  if (given !== undefined) {
    const inputs = [['q', q], ['k', k], ['v', v], ['perm', perm], ...lists.map((t, i) => [`mask.${names[i]}`, t] as [string, Tensor])] as Array<[string, Tensor | undefined]>;
    expectOutputsDisjoint(op, inputs, [['out.out', out], ['out.lse', lse]]);
  }
  const params = opParams('blockSparseAttention', {
    wait: bool(op, 'wait', o.wait, true) ? 1 : 0,
    scale,
    precision: PRECISIONS.indexOf(precision),
    dense: dense ? 1 : 0,
    blockQ,
    blockK,
    checkFinite: bool(op, 'checkFinite', o.checkFinite, true) ? 1 : 0,
  });
  const qd = q.descriptor('q', qv.shape, qv.strides);
  const kd = k.descriptor('k', kv.shape, kv.strides);
  const vd = v!.descriptor('v', vv!.shape, vv!.strides);
  const ld = lists.map((t, i) => t.descriptor(`mask.${names[i]}`));
  const pd = perm?.descriptor('perm');
  const od = out.descriptor('out', ov.shape, ov.strides);
  const sd = lse?.descriptor('lse');
  return {
    result: lse ? { out, lse } : { out },
    call: (async) =>
      native().blockSparseAttention(
        params, qd.meta, qd.mem, kd.meta, kd.mem, vd.meta, vd.mem,
        ld[0]?.meta, ld[0]?.mem, ld[1]?.meta, ld[1]?.mem, ld[2]?.meta, ld[2]?.mem, ld[3]?.meta, ld[3]?.mem,
        pd?.meta, pd?.mem, od.meta, od.mem, sd?.meta, sd?.mem, s, async,
      ),
  };
}

/**
 * Attention that computes only the (q-block, kv-block) tiles a block mask
 * keeps: out = softmax over the kept keys (renormalised) of q·kᵀ·scale, times
 * v. q [B, Hq, N, D], k and v [B, Hkv, Nk, D] (Hq a multiple of Hkv: grouped-
 * query attention). A row that keeps no block gets 0 (and lse −Infinity).
 * `mask: 'dense'` computes every block: the dense baseline.
 * @example
 * const mask = BlockMask.fromDense(dense, { blockQ: 64, blockK: 64, seqLens: [N, N] });
 * const { out } = await blockSparseAttention(q, k, v, mask);
 * @throws ERR_SHAPE / ERR_DTYPE / ERR_RANGE / ERR_DEVICE / ERR_UNSUPPORTED (a combination a back end cannot run; never a silent fallback)
 */
export async function blockSparseAttention(
  q: TensorLike, k: TensorLike, v: TensorLike, mask: BlockMaskLike | 'dense', opts?: BlockSparseAttentionOptions,
): Promise<BlockSparseAttentionResult> {
  return runOpAsync('blockSparseAttention', callSite(blockSparseAttention), (outs) => planBlockSparse(outs, q, k, v, mask, opts));
}

/** Synchronous twin of {@link blockSparseAttention}. */
export function blockSparseAttentionSync(
  q: TensorLike, k: TensorLike, v: TensorLike, mask: BlockMaskLike | 'dense', opts?: BlockSparseAttentionOptions,
): BlockSparseAttentionResult {
  return runOp('blockSparseAttentionSync', (outs) => planBlockSparse(outs, q, k, v, mask, opts));
}

export interface BlockAttentionMassOptions {
  blockQ?: number;
  blockK?: number;
  layout?: AttentionLayout;
  scale?: number;
  /** Sorted, distinct query rows to sum over (default: all). */
  rows?: Int32Array | readonly number[];
  checkFinite?: boolean;
  stream?: bigint;
  wait?: boolean;
}

function planMass(outs: CallOutputs, qIn: TensorLike, kIn: TensorLike, opts: BlockAttentionMassOptions | undefined): OpPlan<Tensor> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['blockQ', 'blockK', 'layout', 'scale', 'rows', 'checkFinite', 'stream', 'wait']);
  const { q, k, qv, kv } = qkvViews(op, o, qIn, kIn);
  const [B, H, N, D] = qv.shape;
  const Nk = kv.shape[2];
  const blockQ = o.blockQ === undefined ? 64 : int(op, 'blockQ', o.blockQ, 1, 1 << 20);
  const blockK = o.blockK === undefined ? blockQ : int(op, 'blockK', o.blockK, 1, 1 << 20);
  let rows: Int32Array | undefined;
  if (o.rows !== undefined) {
    const r = o.rows;
    if (!(r instanceof Int32Array) && !Array.isArray(r)) throw invalid('ERR_ARG', `${op} rows`, 'an Int32Array or number[]', r);
    rows = Int32Array.from(r as ArrayLike<number>);
    if (rows.length === 0) throw makeError('ERR_RANGE', `${op}: expected at least one row in rows`);
    for (let i = 0; i < rows.length; i++) {
      if (!(rows[i] >= 0 && rows[i] < N) || (i > 0 && rows[i] <= rows[i - 1]) || rows[i] !== Number((r as ArrayLike<number>)[i])) {
        throw makeError('ERR_RANGE', `${op}: expected rows sorted ascending, distinct, integers in [0, ${N}) but entry ${i} is ${(r as ArrayLike<number>)[i]}`);
      }
    }
  }
  const ordinal = commonDevice(op, [['q', q], ['k', k]]);
  const s = stream(op, o.stream, q.stream);
  const nQ = Math.ceil(N / blockQ), nK = Math.ceil(Nk / blockK);
  const out = outs.empty([B, H, nQ, nK], 'f32', deviceOf(ordinal), { stream: s });
  const params = opParams('blockAttentionMass', {
    wait: bool(op, 'wait', o.wait, true) ? 1 : 0,
    scale: scaleOf(op, o.scale, D),
    blockQ,
    blockK,
    numQueryRows: rows ? rows.length : 0,
    checkFinite: bool(op, 'checkFinite', o.checkFinite, true) ? 1 : 0,
  });
  const qd = q.descriptor('q', qv.shape, qv.strides);
  const kd = k.descriptor('k', kv.shape, kv.strides);
  const od = out.descriptor('out');
  return {
    result: out,
    call: (async) => native().blockAttentionMass(params, rows ? offHeap(rows) : undefined, qd.meta, qd.mem, kd.meta, kd.mem, od.meta, od.mem, s, async),
  };
}

/**
 * Exact attention mass per (q-block, kv-block): f32 [B, H, nQ, nK], entry
 * (I, J) = Σ over the used query rows i in q-block I of Σ_{j in kv-block J}
 * softmax_j(q_i·k_j·scale), the softmax over all keys (no N×N in memory).
 * What offline masks (PARO) are calibrated from.
 */
export async function blockAttentionMass(q: TensorLike, k: TensorLike, opts?: BlockAttentionMassOptions): Promise<Tensor> {
  return runOpAsync('blockAttentionMass', callSite(blockAttentionMass), (outs) => planMass(outs, q, k, opts));
}

/** Synchronous twin of {@link blockAttentionMass}. */
export function blockAttentionMassSync(q: TensorLike, k: TensorLike, opts?: BlockAttentionMassOptions): Tensor {
  return runOp('blockAttentionMassSync', (outs) => planMass(outs, q, k, opts));
}

export interface BlockPoolOptions {
  /** Tokens per block (the last block may be short). */
  block: number;
  layout?: AttentionLayout;
  stream?: bigint;
  wait?: boolean;
}

export interface BlockPoolResult {
  /** f32 [B, H, nB, D]: each block's mean row. */
  mean: Tensor;
  /** f32 [B, H, nB]: mean pairwise cosine similarity within the block, diagonal included (SpargeAttn). */
  selfSim: Tensor;
}

function planPool(outs: CallOutputs, xIn: TensorLike, opts: BlockPoolOptions | undefined): OpPlan<BlockPoolResult> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['block', 'layout', 'stream', 'wait']);
  const { q: x, qv } = qkvViews(op, o, xIn, xIn);
  const [B, H, N, D] = qv.shape;
  const block = int(op, 'block', o.block, 1, 1 << 20);
  const ordinal = commonDevice(op, [['x', x]]);
  const s = stream(op, o.stream, x.stream);
  const nB = Math.ceil(N / block);
  const dev = deviceOf(ordinal);
  const mean = outs.empty([B, H, nB, D], 'f32', dev, { stream: s });
  const selfSim = outs.empty([B, H, nB], 'f32', dev, { stream: s });
  const params = opParams('blockPool', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, block });
  const xd = x.descriptor('x', qv.shape, qv.strides);
  const md = mean.descriptor('mean');
  const sd = selfSim.descriptor('selfSim');
  return { result: { mean, selfSim }, call: (async) => native().blockPool(params, xd.meta, xd.mem, md.meta, md.mem, sd.meta, sd.mem, s, async) };
}

/** Mean-pooled blocks of x and their self-similarity (SpargeAttn's block statistics). */
export async function blockPool(x: TensorLike, opts: BlockPoolOptions): Promise<BlockPoolResult> {
  return runOpAsync('blockPool', callSite(blockPool), (outs) => planPool(outs, x, opts));
}

/** Synchronous twin of {@link blockPool}. */
export function blockPoolSync(x: TensorLike, opts: BlockPoolOptions): BlockPoolResult {
  return runOp('blockPoolSync', (outs) => planPool(outs, x, opts));
}

export interface ApplyReorderOptions {
  layout?: AttentionLayout;
  /** Scatter back: out[b, h, perm[h, p]] = x[b, h, p]. */
  inverse?: boolean;
  stream?: bigint;
  wait?: boolean;
}

function planReorder(outs: CallOutputs, xIn: TensorLike, permIn: TensorLike | Int32Array, opts: ApplyReorderOptions | undefined): OpPlan<Tensor> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['layout', 'inverse', 'stream', 'wait']);
  const layout = oneOf(op, 'layout', o.layout, ['bhnd', 'bnhd'] as const, 'bhnd');
  const x = toTensor(xIn, 'x');
  expectRank(op, 'x', x, 4, layout === 'bhnd' ? '[B, H, N, D]' : '[B, N, H, D]');
  expectInnerContiguous(op, 'x', x);
  const xv = headsFirst(x, layout);
  const [, H, N] = xv.shape;
  const perm = permTensor(op, permIn, H, N);
  const ordinal = commonDevice(op, [['x', x], ['perm', perm]]);
  const s = stream(op, o.stream, x.stream);
  const out = outs.empty(x.shape, x.dtype, deviceOf(ordinal), { stream: s });
  const ov = headsFirst(out, layout);
  const params = opParams('applyReorder', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, inverse: bool(op, 'inverse', o.inverse, false) ? 1 : 0 });
  const xd = x.descriptor('x', xv.shape, xv.strides);
  const pd = perm.descriptor('perm');
  const od = out.descriptor('out', ov.shape, ov.strides);
  return { result: out, call: (async) => native().applyReorder(params, xd.meta, xd.mem, pd.meta, pd.mem, od.meta, od.mem, s, async) };
}

/**
 * Per-head row gather: out[b, h, p] = x[b, h, perm[h·N + p]] (inverse:
 * out[b, h, perm[h·N + p]] = x[b, h, p]); perm i32 [H, N] on x's device,
 * a permutation per head (`reorderIndex` builds it).
 */
export async function applyReorder(x: TensorLike, perm: TensorLike | Int32Array, opts?: ApplyReorderOptions): Promise<Tensor> {
  return runOpAsync('applyReorder', callSite(applyReorder), (outs) => planReorder(outs, x, perm, opts));
}

/** Synchronous twin of {@link applyReorder}. */
export function applyReorderSync(x: TensorLike, perm: TensorLike | Int32Array, opts?: ApplyReorderOptions): Tensor {
  return runOp('applyReorderSync', (outs) => planReorder(outs, x, perm, opts));
}
