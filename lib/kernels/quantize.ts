/**
 * Symmetric INT8/INT4 quantization (SageAttention / PAROAttention style).
 * Layouts are stable (the block-sparse attention kernels read them):
 *
 * - data: 8 bits → i8 with x's shape; 4 bits → u8 [..., ceil(C/2)], element c
 *   of a row in byte c/2, **low nibble first** (even c low, odd c high), 4-bit
 *   two's complement in [-7, 7]; an odd C leaves the last high nibble 0.
 * - scales (f32): 'tensor' [1]; 'token' [..., 1]; 'channel' [C];
 *   { group: g } [..., ceil(C/g)]; { rows: n } for x [B, H, N, D]:
 *   [B, H, ceil(N/n), 1]. A group or row block that does not divide C or N
 *   is an error unless `pad: true` (the last block is then short).
 * - scale = max(amax, 1e-20) / Q, Q = 127 (INT8) or 7 (INT4);
 *   q = clamp(round(v / scale), -Q, Q), rounding half away from zero, the
 *   same arithmetic on CPU and CUDA (byte-identical data).
 * - smooth (K smoothing, x [B, H, N, D]): the mean over the N tokens per
 *   (b, h, channel), f32 [B, H, 1, D], is subtracted first and returned.
 */
import { deviceOf } from '../device';
import type { NativeResult } from '../../typings/native';
import { FloatDType, isFloatDType } from '../dtype';
import { invalid, makeError, TokenSieveError } from '../errors';
import { native, opParams } from '../native';
import { Tensor, TensorLike, toTensor } from '../tensor';
import { asCaller, bool, callSite, checkOptions, commonDevice, expectDisjoint, expectFloat, output, CallOutputs, OpPlan, runOp, runOpAsync, stream } from './common';

/** One scale per tensor, row ('token'), last-dim channel, group along the last dim, or block of rows of [B, H, N, D]. */
export type Granularity = 'tensor' | 'token' | 'channel' | { group: number; pad?: boolean } | { rows: number; pad?: boolean };

export interface QuantizeOptions {
  /** 8 (i8 data, default) or 4 (packed u8). */
  bits?: 8 | 4;
  /** Default 'token'. */
  granularity?: Granularity;
  /** x is [B, H, N, D]: subtract the per-(b, h, channel) mean over N first (K smoothing) and return it. */
  smooth?: boolean;
  /** NaN/Inf in x → ERR_RANGE (default true). */
  checkFinite?: boolean;
  /**
   * Write into these contiguous tensors (on x's device, layout above; `mean`
   * [B, H, 1, D] f32 with `smooth`) instead of allocating new ones — reuse
   * them across calls to keep allocation and first-touch page faults out of
   * a hot loop. The result then holds these tensors.
   */
  out?: { data: TensorLike; scales: TensorLike; mean?: TensorLike };
  stream?: bigint;
  wait?: boolean;
}

export interface QuantizedTensor {
  /** i8 (8 bits) or u8 (4 bits, packed), layout above. */
  data: Tensor;
  /** f32 scales, layout above. */
  scales: Tensor;
  /** f32 [B, H, 1, D] when quantized with `smooth`. */
  mean?: Tensor;
  bits: 8 | 4;
  granularity: Granularity;
  /** The shape of the original tensor. */
  shape: number[];
  /** The dtype of the original tensor (dequantize's default output). */
  dtype: FloatDType;
}

export interface DequantizeOptions {
  /** Output dtype (default: the original dtype). */
  dtype?: FloatDType;
  /** Add the smoothing mean back (default false: the K − mean that attention uses). */
  addMean?: boolean;
  /** Write into this contiguous tensor (the original shape, `dtype`, q's device) instead of allocating. */
  out?: TensorLike;
  stream?: bigint;
  wait?: boolean;
}

const GRANULARITY_CODE = { tensor: 0, token: 1, channel: 2, group: 3, rows: 4 } as const;

interface Scheme {
  bits: 8 | 4;
  code: number;
  block: number;
  pad: boolean;
  granularity: Granularity;
}

function parseScheme(op: string, bitsIn: unknown, g: unknown): Scheme {
  const bits = bitsIn === undefined ? 8 : bitsIn;
  if (bits !== 8 && bits !== 4) throw invalid('ERR_RANGE', `${op} bits`, '8 or 4', bits);
  const gran = g === undefined ? 'token' : g;
  if (gran === 'tensor' || gran === 'token' || gran === 'channel') {
    return { bits, code: GRANULARITY_CODE[gran], block: 0, pad: false, granularity: gran };
  }
  if (typeof gran === 'object' && gran !== null) {
    const o = gran as { group?: unknown; rows?: unknown; pad?: unknown };
    const keys = Object.keys(o).filter((k) => k !== 'pad');
    if (keys.length === 1 && (keys[0] === 'group' || keys[0] === 'rows')) {
      const n = o[keys[0] as 'group' | 'rows'];
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 2 ** 30) {
        throw invalid('ERR_RANGE', `${op} granularity.${keys[0]}`, 'an integer >= 1', n);
      }
      const pad = o.pad === undefined ? false : o.pad;
      if (typeof pad !== 'boolean') throw invalid('ERR_ARG', `${op} granularity.pad`, 'a boolean', pad);
      const copy = keys[0] === 'group' ? { group: n, pad } : { rows: n, pad };
      return { bits, code: GRANULARITY_CODE[keys[0] as 'group' | 'rows'], block: n, pad, granularity: copy };
    }
  }
  throw invalid('ERR_ARG', `${op} granularity`, "'tensor', 'token', 'channel', { group: n } or { rows: n }", gran);
}

/** The shapes of data and scales for x's shape under a scheme (mirrors core/quantize.cc). */
function layout(op: string, shape: readonly number[], s: Scheme): { data: number[]; scales: number[] } {
  const C = shape[shape.length - 1];
  const lead = shape.slice(0, -1);
  const data = s.bits === 8 ? shape.slice() : [...lead, Math.ceil(C / 2)];
  switch (s.code) {
    case 0:
      return { data, scales: [1] };
    case 1:
      return { data, scales: [...lead, 1] };
    case 2:
      return { data, scales: [C] };
    case 3:
      if (C % s.block !== 0 && !s.pad) {
        throw makeError('ERR_SHAPE', `${op}: the last dimension (${C}) is not a multiple of the group size ${s.block}; pass { group: ${s.block}, pad: true } to allow a short last group`);
      }
      return { data, scales: [...lead, Math.ceil(C / s.block)] };
    default: {
      if (shape.length !== 4) throw makeError('ERR_SHAPE', `${op}: { rows } granularity needs x of rank 4 [B, H, N, D] but received [${shape.join(', ')}]`);
      const N = shape[2];
      if (N % s.block !== 0 && !s.pad) {
        throw makeError('ERR_SHAPE', `${op}: the token count (${N}) is not a multiple of the row block ${s.block}; pass { rows: ${s.block}, pad: true } to allow a short last block`);
      }
      return { data, scales: [shape[0], shape[1], Math.ceil(N / s.block), 1] };
    }
  }
}

function planQuantize(outs: CallOutputs, xIn: TensorLike, opts: QuantizeOptions | undefined): OpPlan<QuantizedTensor> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['bits', 'granularity', 'smooth', 'checkFinite', 'out', 'stream', 'wait']);
  const x = toTensor(xIn, 'x');
  expectFloat(op, 'x', x);
  if (x.ndim < 1 || x.shape.some((d) => d === 0)) throw makeError('ERR_SHAPE', `Expected a non-empty x for ${op} but received shape [${x.shape.join(', ')}]`);
  if (!x.isContiguous) throw new TokenSieveError('ERR_UNSUPPORTED', `${op}: x must be contiguous`);
  const s = parseScheme(op, o.bits, o.granularity);
  const smooth = bool(op, 'smooth', o.smooth, false);
  if (smooth && x.ndim !== 4) throw makeError('ERR_SHAPE', `${op}: smooth needs x of rank 4 [B, H, N, D] but received [${x.shape.join(', ')}]`);
  const shapes = layout(op, x.shape, s);
  const ordinal = commonDevice(op, [['x', x]]);
  const st = stream(op, o.stream, x.stream);
  const dev = deviceOf(ordinal);
  const out = o.out as QuantizeOptions['out'];
  if (out !== undefined && (typeof out !== 'object' || out === null || out.data === undefined || out.scales === undefined)) {
    throw invalid('ERR_ARG', `${op} out`, '{ data, scales, mean? } tensors', out);
  }
  if (out?.mean !== undefined && !smooth) throw makeError('ERR_ARG', `${op}: out.mean is only written with smooth: true`);
  const data = output(outs, out?.data, shapes.data, ordinal, st, 'out.data', s.bits === 8 ? 'i8' : 'u8', true);
  const scales = output(outs, out?.scales, shapes.scales, ordinal, st, 'out.scales', 'f32', true);
  const mean = smooth ? output(outs, out?.mean, [x.shape[0], x.shape[1], 1, x.shape[3]], ordinal, st, 'out.mean') : undefined;
  if (out !== undefined) expectDisjoint(op, [['x', x], ['out.data', data], ['out.scales', scales], ['out.mean', mean]]);
  const params = opParams('quantize', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, bits: s.bits, granularity: s.code, block: s.block, pad: s.pad ? 1 : 0, smooth: smooth ? 1 : 0, checkFinite: bool(op, 'checkFinite', o.checkFinite, true) ? 1 : 0 });
  const xd = x.descriptor('x');
  const dd = data.descriptor('data');
  const sd = scales.descriptor('scales');
  const md = mean?.descriptor('mean');
  return {
    result: { data, scales, mean, bits: s.bits, granularity: s.granularity, shape: x.shape.slice(), dtype: x.dtype as FloatDType },
    call: (async) => native().quantize(params, xd.meta, xd.mem, dd.meta, dd.mem, sd.meta, sd.mem, md?.meta, md?.mem, st, async),
  };
}

/**
 * Quantizes x (f32/f16/bf16) to INT8 or INT4 with one scale per tensor,
 * row, channel, group or block of rows.
 * @example const q = await quantize(k, { bits: 8, granularity: { rows: 64 }, smooth: true });
 * @example const w4 = await quantize(x, { bits: 4, granularity: { group: 64 } });
 * @throws {RangeError} ERR_RANGE for NaN/Inf input or bits other than 8/4; ERR_SHAPE when a group/row block does not divide and `pad` is not set
 */
export async function quantize(x: TensorLike, opts?: QuantizeOptions): Promise<QuantizedTensor> {
  return runOpAsync('quantize', callSite(quantize), (outs) => planQuantize(outs, x, opts));
}

/** Synchronous twin of {@link quantize}. */
export function quantizeSync(x: TensorLike, opts?: QuantizeOptions): QuantizedTensor {
  return runOp('quantizeSync', (outs) => planQuantize(outs, x, opts));
}

function planDequantize(outs: CallOutputs, q: QuantizedTensor, opts: DequantizeOptions | undefined): OpPlan<Tensor> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['dtype', 'addMean', 'out', 'stream', 'wait']);
  if (typeof q !== 'object' || q === null || !(q.data instanceof Tensor) || !(q.scales instanceof Tensor) || !Array.isArray(q.shape)) {
    throw invalid('ERR_ARG', `${op} q`, 'a QuantizedTensor from quantize()', q);
  }
  const s = parseScheme(op, q.bits, q.granularity);
  const shapes = layout(op, q.shape, s);
  const same = (t: Tensor, want: number[]) => t.ndim === want.length && t.shape.every((d, i) => d === want[i]);
  if (!same(q.data, shapes.data)) {
    throw makeError('ERR_SHAPE', `Expected ${op} data of shape [${shapes.data.join(', ')}] but received [${q.data.shape.join(', ')}]`);
  }
  if (!same(q.scales, shapes.scales)) {
    throw makeError('ERR_SHAPE', `Expected ${op} scales of shape [${shapes.scales.join(', ')}] for granularity ${JSON.stringify(q.granularity)} but received [${q.scales.shape.join(', ')}]`);
  }
  const dtype = o.dtype === undefined ? q.dtype : o.dtype;
  if (!isFloatDType(dtype)) throw invalid('ERR_DTYPE', `${op} dtype`, "'f32', 'f16' or 'bf16'", dtype);
  const addMean = bool(op, 'addMean', o.addMean, false);
  if (addMean && !(q.mean instanceof Tensor)) throw makeError('ERR_ARG', `${op}: addMean needs a tensor quantized with smooth: true`);
  const ordinal = commonDevice(op, [['data', q.data], ['scales', q.scales], ['mean', addMean ? q.mean : undefined]]);
  const st = stream(op, o.stream, q.data.stream);
  const out = output(outs, o.out, q.shape, ordinal, st, 'out', dtype, true);
  if (o.out !== undefined) expectDisjoint(op, [['out', out], ['data', q.data], ['scales', q.scales], ['mean', addMean ? q.mean : undefined]]);
  const params = opParams('dequantize', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, bits: s.bits, granularity: s.code, block: s.block, pad: s.pad ? 1 : 0, addMean: addMean ? 1 : 0 });
  const dd = q.data.descriptor('data');
  const sd = q.scales.descriptor('scales');
  const md = addMean ? q.mean?.descriptor('mean') : undefined;
  const od = out.descriptor('out');
  return {
    result: out,
    call: (async) => native().dequantize(params, dd.meta, dd.mem, sd.meta, sd.mem, md?.meta, md?.mem, od.meta, od.mem, st, async),
  };
}

/**
 * q · scale (+ mean with `addMean`), in the original dtype or `dtype`.
 * @example const approx = await dequantize(q, { dtype: 'f32' });
 */
export async function dequantize(q: QuantizedTensor, opts?: DequantizeOptions): Promise<Tensor> {
  return runOpAsync('dequantize', callSite(dequantize), (outs) => planDequantize(outs, q, opts));
}

/** Synchronous twin of {@link dequantize}. */
export function dequantizeSync(q: QuantizedTensor, opts?: DequantizeOptions): Tensor {
  return runOp('dequantizeSync', (outs) => planDequantize(outs, q, opts));
}

export interface ErrorReport {
  /** max |x − y| */
  maxAbs: number;
  /** ‖x − y‖ / ‖x‖ (Frobenius) */
  relFrobenius: number;
  /** x·y / (‖x‖ ‖y‖); 1 when both are zero */
  cosine: number;
  count: number;
}

/**
 * How far an approximation (a tensor, or a QuantizedTensor — dequantized
 * with its mean added back) is from x, in float64 on the host.
 * @example const { relFrobenius } = errorReport(k, await quantize(k, { bits: 4, granularity: { group: 64 } }));
 */
export function errorReport(x: TensorLike, approx: TensorLike | QuantizedTensor): ErrorReport {
  return asCaller('errorReport', () => errorReportOf(x, approx)); // its dequantize step reports as errorReport
}

function errorReportOf(x: TensorLike, approx: TensorLike | QuantizedTensor): ErrorReport {
  const a = toTensor(x, 'x');
  let b: Tensor;
  if (typeof approx === 'object' && approx !== null && 'scales' in approx && 'bits' in approx) {
    const q = approx as QuantizedTensor;
    b = dequantizeSync(q, { dtype: 'f32', addMean: q.mean instanceof Tensor });
  } else {
    b = toTensor(approx, 'approx');
  }
  if (a.numel !== b.numel) throw makeError('ERR_SHAPE', `errorReport: x has ${a.numel} elements but the approximation has ${b.numel}`);
  const xs = a.toArray();
  const ys = b.toArray();
  let maxAbs = 0, diff2 = 0, x2 = 0, y2 = 0, xy = 0;
  for (let i = 0; i < xs.length; i++) {
    const d = xs[i] - ys[i];
    maxAbs = Math.max(maxAbs, Math.abs(d));
    diff2 += d * d;
    x2 += xs[i] * xs[i];
    y2 += ys[i] * ys[i];
    xy += xs[i] * ys[i];
  }
  const cosine = x2 === 0 && y2 === 0 ? 1 : xy / Math.sqrt(x2 * y2);
  return { maxAbs, relFrobenius: x2 === 0 ? Math.sqrt(diff2) : Math.sqrt(diff2 / x2), cosine, count: xs.length };
}
