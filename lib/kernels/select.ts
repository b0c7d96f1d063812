/**
 * Selection: stable top-k over score rows, and gathering token rows.
 */
import { deviceOf } from '../device';
import { makeError } from '../errors';
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
  int,
  oneOf,
  output,
  CallOutputs,
  OpPlan,
  runOp,
  runOpAsync,
  stream,
} from './common';

export interface TopkOptions {
  /**
   * `'index'` (default): the k indices in ascending order (raster order, as
   * the pruning references keep them); `'score'`: by descending score, ties
   * by ascending index.
   */
  order?: 'index' | 'score';
  /** Also return the values (default true). */
  values?: boolean;
  stream?: bigint;
  wait?: boolean;
}

export interface TopkResult {
  /** i32 [B, k] (or [k] for a 1-D input). */
  indices: Tensor;
  /** f32 [B, k] (or [k]); absent with `values: false`. */
  values?: Tensor;
}

export interface GatherOptions {
  stream?: bigint;
  wait?: boolean;
  /** Reject out-of-range indices (default true; on CUDA forced off with `wait: false`). */
  checkIndices?: boolean;
  /**
   * Write into this contiguous tensor ([B, K, C], or [K, C] with 1-D
   * indices; x's dtype and device; not sharing memory with x or indices)
   * instead of allocating one: reuse it across calls. The result is then
   * this tensor.
   */
  out?: TensorLike;
}

function planTopk(outs: CallOutputs, scoresIn: TensorLike, k: unknown, opts: TopkOptions | undefined): OpPlan<TopkResult> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['order', 'values', 'stream', 'wait']);
  let scores = toTensor(scoresIn, 'scores');
  const flat = scores.ndim === 1;
  if (flat) scores = scores.view([1, scores.shape[0]], [0, scores.strides[0]]);
  if (scores.ndim !== 2) {
    throw makeError('ERR_SHAPE', `Expected scores of rank 1 [N] or 2 [B, N] for ${op} but received shape [${scores.shape.join(', ')}]`);
  }
  if (scores.shape[0] < 1 || scores.shape[1] < 1) {
    throw makeError('ERR_SHAPE', `Expected non-empty scores for ${op} but received shape [${scores.shape.join(', ')}]`);
  }
  expectFloat(op, 'scores', scores);
  expectInnerContiguous(op, 'scores', scores);
  const [B, N] = scores.shape;
  const kk = int(op, 'k', k, 1, N);
  const order = oneOf(op, 'order', o.order, ['index', 'score'] as const, 'index');
  const withValues = bool(op, 'values', o.values, true);
  const ordinal = commonDevice(op, [['scores', scores]]);
  const s = stream(op, o.stream, scores.stream);
  const device = deviceOf(ordinal);
  const indices = outs.empty([B, kk], 'i32', device, { stream: s });
  const values = withValues ? outs.empty([B, kk], 'f32', device, { stream: s }) : undefined;
  const shape = flat ? [kk] : [B, kk];
  const params = opParams('topk', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, k: kk, orderByScore: order === 'score' ? 1 : 0 });
  const sd = scores.descriptor('scores');
  const id = indices.descriptor('indices');
  const vd = values?.descriptor('values');
  return {
    result: { indices: flat ? indices.view(shape) : indices, values: values && flat ? values.view(shape) : values },
    call: (async) => native().topk(params, sd.meta, sd.mem, id.meta, id.mem, vd?.meta, vd?.mem, s, async),
  };
}

/**
 * The k largest scores of each row. Stable: ties go to the lower index; NaN
 * ranks below every number.
 * @example const { indices } = await topk(scores, 144); // ascending indices
 * @throws {RangeError} ERR_RANGE when k is not in [1, N]
 */
export async function topk(scores: TensorLike, k: number, opts?: TopkOptions): Promise<TopkResult> {
  return runOpAsync('topk', callSite(topk), (outs) => planTopk(outs, scores, k, opts));
}

/** Synchronous twin of {@link topk}. */
export function topkSync(scores: TensorLike, k: number, opts?: TopkOptions): TopkResult {
  return runOp('topkSync', (outs) => planTopk(outs, scores, k, opts));
}

/**
 * gather's `out`, checked: the caller's tensor ([K, C] for 1-D indices) and
 * its [B, K, C] view for the kernel.
 */
function givenOut(outs: CallOutputs, outIn: unknown, flat: boolean, shape: number[], x: Tensor, idx: Tensor, ordinal: number,
  s: bigint | undefined): { out: Tensor; out3: Tensor } {
  const out = output(outs, outIn, flat ? shape.slice(1) : shape, ordinal, s, 'out', x.dtype, true);
  expectDisjoint(outs.op, [['x', x], ['indices', idx], ['out', out]]);
  return { out, out3: flat ? out.view(shape) : out };
}

/** @internal Also the plan of unmerge and mergeSource (errors name their op). */
export function planGather(outs: CallOutputs, xIn: TensorLike, idxIn: TensorLike, opts: GatherOptions | undefined): OpPlan<Tensor> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['stream', 'wait', 'checkIndices', 'out']);
  let x = toTensor(xIn, 'x');
  let idx = toTensor(idxIn, 'indices');
  const flat = x.ndim === 2 && idx.ndim === 1;
  if (flat) {
    x = x.view([1, x.shape[0], x.shape[1]], [0, x.strides[0], x.strides[1]]);
    idx = idx.view([1, idx.shape[0]], [0, idx.strides[0]]);
  }
  if (x.ndim !== 3) {
    throw makeError('ERR_SHAPE', `Expected x of rank 3 [B, N, C] (or 2 [N, C] with 1-D indices) for ${op} but received shape [${x.shape.join(', ')}]`);
  }
  if (idx.dtype !== 'i32') throw makeError('ERR_DTYPE', `Expected i32 indices for ${op} but received ${idx.dtype}`);
  if (idx.ndim !== 2 || idx.shape[0] !== x.shape[0]) {
    throw makeError('ERR_SHAPE', `Expected indices of shape [${x.shape[0]}, K] for ${op} but received [${idx.shape.join(', ')}]`);
  }
  expectInnerContiguous(op, 'x', x);
  if (!idx.isContiguous) idx = idx.contiguous();
  const ordinal = commonDevice(op, [['x', x], ['indices', idx]]);
  const [B, , C] = x.shape;
  const K = idx.shape[1];
  const s = stream(op, o.stream, x.stream);
  const given = o.out === undefined ? undefined : givenOut(outs, o.out, flat, [B, K, C], x, idx, ordinal, s);
  const out = given?.out3 ?? outs.empty([B, K, C], x.dtype, deviceOf(ordinal), { stream: s, uninitialized: true });
  const params = opParams('gather', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, checkIndices: bool(op, 'checkIndices', o.checkIndices, true) ? 1 : 0 });
  const xd = x.descriptor('x');
  const id = idx.descriptor('indices');
  const od = out.descriptor('out');
  return {
    result: given ? given.out : flat ? out.view([K, C]) : out,
    call: (async) => native().gather(params, xd.meta, xd.mem, id.meta, id.mem, od.meta, od.mem, s, async),
  };
}

/**
 * Token rows by index: `out[b, i, :] = x[b, indices[b, i], :]`, any dtype.
 * @example const kept = await gather(features, indices); // [B, k, C]
 * @throws {RangeError} ERR_RANGE for an index outside [0, N)
 */
export async function gather(x: TensorLike, indices: TensorLike, opts?: GatherOptions): Promise<Tensor> {
  return runOpAsync('gather', callSite(gather), (outs) => planGather(outs, x, indices, opts));
}

/** Synchronous twin of {@link gather}. */
export function gatherSync(x: TensorLike, indices: TensorLike, opts?: GatherOptions): Tensor {
  return runOp('gatherSync', (outs) => planGather(outs, x, indices, opts));
}
