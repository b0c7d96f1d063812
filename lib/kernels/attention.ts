/**
 * Attention-score extraction: softmax(q·kᵀ·scale + keyBias) reduced over a
 * set of query rows and over heads, for a range of key columns — the CLS row
 * (FasterVLM, VisionZip), one query row (FastV), all rows (attention received:
 * HiPrune, FoPru), a query range under a causal mask (VisionDrop), or a
 * multi-layer sum (VTC-CLS, with `accumulate`). The Nq×Nk probability matrix
 * is never materialised.
 */
import { invalid, makeError } from '../errors';
import { native, opParams } from '../native';
import { Tensor, TensorLike, toTensor } from '../tensor';
import {
  bool,
  callSite,
  checkOptions,
  commonDevice,
  expectDisjoint,
  expectFloat,
  expectInnerContiguous,
  expectRank,
  headsFirst,
  offHeap,
  int,
  oneOf,
  output,
  CallOutputs,
  OpPlan,
  runOp,
  runOpAsync,
  stream,
} from './common';

/**
 * Which query rows to reduce over: `'all'`, one row (negative counts from the
 * end: -1 is the last row), a half-open range `{ start, end }`, or a list.
 */
export type QuerySelection = 'all' | number | { start: number; end: number } | readonly number[] | Int32Array;

export interface ReductionOptions {
  /** Query rows to reduce over (default `'all'`). */
  queries?: QuerySelection;
  /** Reduction over the selected rows: `'mean'` (default) or `'sum'`. */
  reduce?: 'mean' | 'sum';
  /** Reduction over heads: `'mean'` (default), `'sum'`, or `'none'` (output [B, H, W]). */
  heads?: 'mean' | 'sum' | 'none';
  /** Key columns to return, half-open `[start, end)` of the full softmax row (default all). */
  keys?: { start?: number; end?: number };
  /** Write into this f32 tensor (on the inputs' device) instead of allocating. */
  out?: TensorLike;
  /** Add into `out` instead of overwriting it (multi-layer sums). Needs `out`. */
  accumulate?: boolean;
  /** Reject NaN/Inf inputs with ERR_RANGE (default true; forced off when `wait` is false on CUDA). */
  checkFinite?: boolean;
  /** CUDA stream to enqueue on (cudaStream_t as bigint; default: the input tensor's stream). */
  stream?: bigint;
  /** CUDA only: block until the work is done (default true). With false the call only enqueues. */
  wait?: boolean;
}

export interface AttentionScoresOptions extends ReductionOptions {
  /** Logit scale (default 1/√D). */
  scale?: number;
  /** Causal mask: query row i sees key j iff j <= i + causalOffset. */
  causal?: boolean;
  /** Default Nk − Nq (queries are the last Nq of Nk tokens; 0 when q and k have the same length). */
  causalOffset?: number;
  /** Additive per-key logit bias, f32 [B, Nk] (ToMe proportional attention: log(size)); -Infinity masks a key. */
  keyBias?: TensorLike;
  /** `'bhnd'` (default): q [B, H, Nq, D], k [B, H, Nk, D]; `'bnhd'`: q [B, Nq, H, D], k [B, Nk, H, D]. */
  layout?: 'bhnd' | 'bnhd';
  /**
   * `'native'` (default): logits from the inputs in f32. `'int8'`: q and k are
   * first quantized to INT8 (SageAttention style: one scale per `qRows`
   * tokens of q and per `kRows` tokens of k, per head; k minus its mean over
   * tokens with `smoothK`), logits are integer dot products times the scales,
   * the softmax stays f32. `'tf32'` and `'bf16'`: q and k are rounded to
   * TF32 (10 mantissa bits, round half away from zero) or bfloat16 (7 bits,
   * nearest even) before an f32-accumulated dot, which lets the CUDA kernel
   * use one tensor-core product instead of the three that keep f32 inputs at
   * f32 accuracy under `'native'`. Relative logit error up to about
   * 2·2⁻¹¹·Σ|q·k| (tf32) or 2·2⁻⁸·Σ|q·k| (bf16); inputs already exact in
   * the type are unchanged. Both back ends implement every precision. On a
   * CPU with AVX512_BF16 (`info().cpu.isa` `'avx512-bf16…'`), logits of bf16
   * operands (`'bf16'`, or bf16 q and k under any precision but `'int8'`)
   * take the bf16 dot tile: the same exact products, summed in pairs, and
   * the scale applied to each logit.
   */
  precision?: 'native' | 'int8' | 'tf32' | 'bf16';
  /** INT8: q tokens per scale (default 32, SageAttention's per-warp Q). */
  qRows?: number;
  /** INT8: k tokens per scale (default 64, SageAttention's per-block K). */
  kRows?: number;
  /** INT8: subtract k's per-channel mean over tokens before quantizing (default true; leaves the softmax unchanged). */
  smoothK?: boolean;
}

/** ScorePrecision in include/tokensieve/attention.h. */
const SCORE_PRECISION = { native: 0, int8: 1, tf32: 2, bf16: 3 } as const;

const REDUCTION_KEYS = ['queries', 'reduce', 'heads', 'keys', 'out', 'accumulate', 'checkFinite', 'stream', 'wait'] as const;
const SCORE_KEYS = [...REDUCTION_KEYS, 'scale', 'causal', 'causalOffset', 'keyBias', 'layout', 'precision', 'qRows', 'kRows', 'smoothK'] as const;

/** Resolves a query selection to explicit row indices in [0, nq). */
export function resolveQueries(op: string, sel: unknown, nq: number): Int32Array {
  if (sel === undefined || sel === 'all') {
    const rows = new Int32Array(nq);
    for (let i = 0; i < nq; i++) rows[i] = i;
    return rows;
  }
  const row = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isInteger(v)) throw invalid('ERR_ARG', `${op} ${what}`, 'an integer', v);
    if (v < -nq || v >= nq) {
      throw makeError('ERR_RANGE', `Expected ${op} ${what} in [${-nq}, ${nq}) (there are ${nq} query rows) but received ${v}`);
    }
    return v < 0 ? v + nq : v;
  };
  if (typeof sel === 'number') return Int32Array.of(row(sel, 'queries'));
  if (Array.isArray(sel) || sel instanceof Int32Array) {
    if (sel.length === 0) throw makeError('ERR_RANGE', `Expected at least one query row for ${op} but received an empty list`);
    const rows = new Int32Array(sel.length);
    for (let i = 0; i < sel.length; i++) rows[i] = row(sel[i], `queries[${i}]`);
    return rows;
  }
  if (typeof sel === 'object' && sel !== null && 'start' in sel && 'end' in sel) {
    const { start, end } = sel as { start: unknown; end: unknown };
    const s = bound(op, 'queries.start', start, nq);
    const e = bound(op, 'queries.end', end, nq);
    if (s >= e) throw makeError('ERR_RANGE', `Expected a non-empty query range for ${op} but received [${s}, ${e})`);
    const rows = new Int32Array(e - s);
    for (let i = 0; i < rows.length; i++) rows[i] = s + i;
    return rows;
  }
  throw invalid('ERR_ARG', `${op} queries`, "'all', a row index, { start, end } or a list of rows", sel);
}

/** A range bound in [-n, n], negative counting from the end. */
function bound(op: string, what: string, v: unknown, n: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw invalid('ERR_ARG', `${op} ${what}`, 'an integer', v);
  if (v < -n || v > n) throw makeError('ERR_RANGE', `Expected ${op} ${what} in [${-n}, ${n}] but received ${v}`);
  return v < 0 ? v + n : v;
}

function resolveKeys(op: string, keys: unknown, nk: number): [number, number] {
  if (keys === undefined) return [0, nk];
  if (typeof keys !== 'object' || keys === null) throw invalid('ERR_ARG', `${op} keys`, '{ start?, end? }', keys);
  const k = keys as { start?: unknown; end?: unknown };
  const s = k.start === undefined ? 0 : bound(op, 'keys.start', k.start, nk);
  const e = k.end === undefined ? nk : bound(op, 'keys.end', k.end, nk);
  if (s >= e) throw makeError('ERR_RANGE', `Expected a non-empty key range for ${op} but received [${s}, ${e})`);
  return [s, e];
}

/** The reduction fields shared by both kernels, checked. */
interface Reduction {
  queryRows: Int32Array;
  /** [queryReduce, headReduce, keyBegin, keyEnd, accumulate, checkFinite, wait]: the shared PARAM_NAMES slots of both kernels. */
  params: number[];
  out: Tensor;
  stream: bigint | undefined;
}

function planReduction(
  outs: CallOutputs, o: Record<string, unknown>, B: number, H: number, nq: number, nk: number, ordinal: number, defaultStream: bigint | undefined,
): Reduction {
  const op = outs.op;
  const queryRows = resolveQueries(op, o.queries, nq);
  const [keyBegin, keyEnd] = resolveKeys(op, o.keys, nk);
  const reduce = oneOf(op, 'reduce', o.reduce, ['mean', 'sum'] as const, 'mean');
  const heads = oneOf(op, 'heads', o.heads, ['mean', 'sum', 'none'] as const, 'mean');
  const accumulate = bool(op, 'accumulate', o.accumulate, false);
  if (accumulate && o.out === undefined) throw makeError('ERR_ARG', `${op}: accumulate needs an out tensor to add into`);
  const s = stream(op, o.stream, defaultStream);
  const width = keyEnd - keyBegin;
  const out = output(outs, o.out, heads === 'none' ? [B, H, width] : [B, width], ordinal, s);
  const params = [
    reduce === 'mean' ? 0 : 1,
    heads === 'mean' ? 0 : heads === 'sum' ? 1 : 2,
    keyBegin,
    keyEnd,
    accumulate ? 1 : 0,
    bool(op, 'checkFinite', o.checkFinite, true) ? 1 : 0,
    bool(op, 'wait', o.wait, true) ? 1 : 0,
  ];
  return { queryRows, params, out, stream: s };
}

function planScores(outs: CallOutputs, qIn: TensorLike, kIn: TensorLike, opts: AttentionScoresOptions | undefined): OpPlan<Tensor> {
  const op = outs.op;
  const o = checkOptions(op, opts, SCORE_KEYS);
  const layout = oneOf(op, 'layout', o.layout, ['bhnd', 'bnhd'] as const, 'bhnd');
  const dims = layout === 'bhnd' ? '[B, H, N, D]' : '[B, N, H, D]';
  const q = toTensor(qIn, 'q');
  const k = toTensor(kIn, 'k');
  expectRank(op, 'q', q, 4, dims);
  expectRank(op, 'k', k, 4, dims);
  expectFloat(op, 'q', q);
  if (k.dtype !== q.dtype) throw makeError('ERR_DTYPE', `Expected k to have the dtype of q (${q.dtype}) for ${op} but received ${k.dtype}`);
  expectInnerContiguous(op, 'q', q);
  expectInnerContiguous(op, 'k', k);
  const qv = headsFirst(q, layout);
  const kv = headsFirst(k, layout);
  const [B, H, Nq, D] = qv.shape;
  const Nk = kv.shape[2];
  for (const [i, name] of [[0, 'B'], [1, 'H'], [3, 'D']] as const) {
    if (kv.shape[i] !== qv.shape[i]) {
      throw makeError('ERR_SHAPE', `Expected q and k to agree in ${name} for ${op} but received q [${q.shape.join(', ')}] and k [${k.shape.join(', ')}] (layout '${layout}')`);
    }
  }
  const keyBias = o.keyBias === undefined ? undefined : toTensor(o.keyBias, 'keyBias');
  const ordinal = commonDevice(op, [['q', q], ['k', k], ['keyBias', keyBias], ['out', o.out instanceof Tensor ? o.out : undefined]]);
  if (keyBias) {
    if (keyBias.dtype !== 'f32') throw makeError('ERR_DTYPE', `Expected f32 for keyBias of ${op} but received ${keyBias.dtype}`);
    if (keyBias.ndim !== 2 || keyBias.shape[0] !== B || keyBias.shape[1] !== Nk) {
      throw makeError('ERR_SHAPE', `Expected keyBias of shape [${B}, ${Nk}] for ${op} but received [${keyBias.shape.join(', ')}]`);
    }
    expectInnerContiguous(op, 'keyBias', keyBias);
  }
  let scale = 1 / Math.sqrt(D);
  if (o.scale !== undefined) {
    if (typeof o.scale !== 'number' || !Number.isFinite(o.scale)) throw invalid('ERR_ARG', `${op} scale`, 'a finite number', o.scale);
    scale = o.scale;
  }
  const causal = bool(op, 'causal', o.causal, false);
  const causalOffset = o.causalOffset === undefined ? Nk - Nq : int(op, 'causalOffset', o.causalOffset, -2147483648, 2147483647);
  const precision = oneOf(op, 'precision', o.precision, ['native', 'int8', 'tf32', 'bf16'] as const, 'native');
  const qRows = o.qRows === undefined ? 32 : int(op, 'qRows', o.qRows, 1, 2 ** 30);
  const kRows = o.kRows === undefined ? 64 : int(op, 'kRows', o.kRows, 1, 2 ** 30);
  const smoothK = bool(op, 'smoothK', o.smoothK, true);
  if (precision !== 'int8' && (o.qRows !== undefined || o.kRows !== undefined || o.smoothK !== undefined)) {
    throw makeError('ERR_ARG', `${op}: qRows, kRows and smoothK apply to precision: 'int8' only`);
  }
  const r = planReduction(outs, o, B, H, Nq, Nk, ordinal, q.stream);
  if (o.out !== undefined) expectDisjoint(op, [['out', r.out], ['q', q], ['k', k], ['keyBias', keyBias]]);
  const [queryReduce, headReduce, keyBegin, keyEnd, accumulate, checkFinite, wait] = r.params;
  // A host q is passed as the span of rows the kernel reads (INT8: whole q
  // blocks, whose scales take every row), the rows and the causal offset
  // shifted to match: the same scores, and the Promise API stages those
  // rows of q, not all of it (a CLS row of CLIP-L b1: 2.4 MB less to copy).
  let rows = r.queryRows;
  let qShape = qv.shape, qOffset = q.offset;
  let causalFrom = causalOffset;
  if (ordinal < 0 && rows.length > 0) {
    let lo = Nq, hi = 0;
    for (const i of rows) {
      lo = Math.min(lo, i);
      hi = Math.max(hi, i + 1);
    }
    if (precision === 'int8') {
      lo = Math.floor(lo / qRows) * qRows;
      hi = Math.min(Nq, Math.ceil(hi / qRows) * qRows);
    }
    if (lo > 0 || hi < Nq) {
      rows = rows.map((i) => i - lo);
      qShape = [B, H, hi - lo, D];
      qOffset = q.offset + lo * qv.strides[2];
      causalFrom = Math.min(causalOffset + lo, 2147483647); // past Nk, every key is visible either way
    }
  }
  const params = opParams('attentionScores', {
    wait, scale, causal: causal ? 1 : 0, causalOffset: causalFrom, queryReduce, headReduce, keyBegin, keyEnd, accumulate, checkFinite,
    numQueryRows: rows.length, precision: SCORE_PRECISION[precision], qBlock: qRows, kBlock: kRows, smoothK: smoothK ? 1 : 0,
  });
  const qd = q.descriptor('q', qShape, qv.strides, qOffset);
  const kd = k.descriptor('k', kv.shape, kv.strides);
  const bd = keyBias?.descriptor('keyBias');
  const od = r.out.descriptor('out');
  return {
    result: r.out,
    call: (async) =>
      native().attentionScores(params, offHeap(rows), qd.meta, qd.mem, kd.meta, kd.mem, bd?.meta, bd?.mem, od.meta, od.mem, r.stream, async),
  };
}

function planProbs(outs: CallOutputs, pIn: TensorLike, opts: ReductionOptions | undefined): OpPlan<Tensor> {
  const op = outs.op;
  const o = checkOptions(op, opts, REDUCTION_KEYS);
  const probs = toTensor(pIn, 'probs');
  expectRank(op, 'probs', probs, 4, '[B, H, Nq, Nk]');
  expectFloat(op, 'probs', probs);
  expectInnerContiguous(op, 'probs', probs);
  const [B, H, Nq, Nk] = probs.shape;
  const ordinal = commonDevice(op, [['probs', probs], ['out', o.out instanceof Tensor ? o.out : undefined]]);
  const r = planReduction(outs, o, B, H, Nq, Nk, ordinal, probs.stream);
  if (o.out !== undefined) expectDisjoint(op, [['out', r.out], ['probs', probs]]);
  const [queryReduce, headReduce, keyBegin, keyEnd, accumulate, checkFinite, wait] = r.params;
  const params = opParams('reduceAttention', { wait, queryReduce, headReduce, keyBegin, keyEnd, accumulate, checkFinite, numQueryRows: r.queryRows.length });
  const pd = probs.descriptor('probs');
  const od = r.out.descriptor('out');
  return {
    result: r.out,
    call: (async) => native().reduceAttention(params, offHeap(r.queryRows), pd.meta, pd.mem, od.meta, od.mem, r.stream, async),
  };
}

/**
 * Attention each selected query row pays to each key, reduced over the rows
 * and the heads: f32 `[B, W]` (or `[B, H, W]` with `heads: 'none'`), where W
 * is the width of `keys`.
 *
 * @example
 * // FasterVLM: the CLS row, CLS column dropped, mean over heads
 * const s = await attentionScores(q, k, { queries: 0, keys: { start: 1 } });
 * @example
 * // attention received by every key (mean over all rows)
 * const r = await attentionScores(q, k, { queries: 'all' });
 * @throws {RangeError} ERR_SHAPE / ERR_RANGE, {TypeError} ERR_DTYPE / ERR_ARG, {TokenSieveError} ERR_DEVICE / ERR_CUDA
 */
export async function attentionScores(q: TensorLike, k: TensorLike, opts?: AttentionScoresOptions): Promise<Tensor> {
  return runOpAsync('attentionScores', callSite(attentionScores), (outs) => planScores(outs, q, k, opts));
}

/** Synchronous twin of {@link attentionScores} (blocks the calling thread). */
export function attentionScoresSync(q: TensorLike, k: TensorLike, opts?: AttentionScoresOptions): Tensor {
  return runOp('attentionScoresSync', (outs) => planScores(outs, q, k, opts));
}

/**
 * The same selection and reduction as {@link attentionScores}, from
 * precomputed probabilities `[B, H, Nq, Nk]` (e.g. HF `output_attentions`).
 * @example const s = await reduceAttention(attn, { queries: 0, keys: { start: 1 } });
 */
export async function reduceAttention(probs: TensorLike, opts?: ReductionOptions): Promise<Tensor> {
  return runOpAsync('reduceAttention', callSite(reduceAttention), (outs) => planProbs(outs, probs, opts));
}

/** Synchronous twin of {@link reduceAttention}. */
export function reduceAttentionSync(probs: TensorLike, opts?: ReductionOptions): Tensor {
  return runOp('reduceAttentionSync', (outs) => planProbs(outs, probs, opts));
}
