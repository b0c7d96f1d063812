/**
 * Argument checking and native-call plumbing shared by the kernel wrappers.
 * The addon never sees an argument these helpers have not checked.
 */
import { DType, DTYPE_SIZE, isFloatDType } from '../dtype';
import { Device, deviceOf, requireCuda } from '../device';
import { callerName, describe, fromNative, invalid, makeError, renamed, TokenSieveError } from '../errors';
export { asCaller, callerName } from '../errors';
import { allocate, markFresh, Tensor, TensorLike, toTensor } from '../tensor';

/** Rejects unknown option names (a typo must not silently fall back to a default). */
export function checkOptions(op: string, opts: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (opts === undefined) return {};
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) {
    throw invalid('ERR_ARG', `${op} options`, 'an object', opts);
  }
  if (opts instanceof Tensor || ('data' in opts && 'shape' in opts)) {
    throw makeError('ERR_ARG', `${op}: expected an options object ({ ${allowed.join(', ')} }) but received a ${opts instanceof Tensor ? 'Tensor' : 'tensor { data, shape }'}; a tensor was passed where the options belong (check the argument order)`);
  }
  for (const key of Object.keys(opts)) {
    if (!allowed.includes(key)) {
      throw makeError('ERR_ARG', `${op}: unknown option '${key}' (expected one of ${allowed.join(', ')})`);
    }
  }
  return opts as Record<string, unknown>;
}

export function int(op: string, name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw invalid('ERR_ARG', `${op} ${name}`, 'an integer', v);
  }
  if (v < min || v > max) {
    throw makeError('ERR_RANGE', `Expected ${op} ${name} in [${min}, ${max}] but received ${describe(v)}`);
  }
  return v;
}

export function bool(op: string, name: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') throw invalid('ERR_ARG', `${op} ${name}`, 'a boolean', v);
  return v;
}

export function oneOf<T extends string>(op: string, name: string, v: unknown, values: readonly T[], fallback: T): T {
  if (v === undefined) return fallback;
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) {
    throw invalid('ERR_ARG', `${op} ${name}`, values.map((x) => `'${x}'`).join(' or '), v);
  }
  return v as T;
}

export function stream(op: string, v: unknown, fallback: bigint | undefined): bigint | undefined {
  if (v === undefined) return fallback;
  if (typeof v !== 'bigint') throw invalid('ERR_ARG', `${op} stream`, 'a bigint (cudaStream_t)', v);
  return v;
}

export function expectRank(op: string, name: string, t: Tensor, rank: number, dims: string): void {
  if (t.ndim !== rank) {
    throw makeError('ERR_SHAPE', `Expected ${name} of rank ${rank} ${dims} for ${op} but received shape [${t.shape.join(', ')}]`);
  }
  if (t.shape.some((d) => d === 0)) {
    throw makeError('ERR_SHAPE', `Expected every dimension of ${name} ${dims} to be >= 1 for ${op} but received shape [${t.shape.join(', ')}]`);
  }
}

export function expectFloat(op: string, name: string, t: Tensor): void {
  if (!isFloatDType(t.dtype)) {
    throw makeError('ERR_DTYPE', `Expected f32, f16 or bf16 for ${name} of ${op} but received ${t.dtype}`);
  }
}

export function expectInnerContiguous(op: string, name: string, t: Tensor): void {
  if (t.strides[t.ndim - 1] !== 1 && t.shape[t.ndim - 1] !== 1) {
    throw new TokenSieveError('ERR_UNSUPPORTED', `${op}: the last dimension of ${name} must be contiguous (stride 1) but has stride ${t.strides[t.ndim - 1]}`);
  }
}

/** All tensors on one device; returns its ordinal (and checks CUDA can serve it). */
export function commonDevice(op: string, tensors: ReadonlyArray<[string, Tensor | undefined]>): number {
  let first: [string, Tensor] | undefined;
  for (const [name, t] of tensors) {
    if (!t) continue;
    if (!first) first = [name, t];
    else if (t.device !== first[1].device) {
      throw new TokenSieveError('ERR_DEVICE', `${op}: expected ${name} on ${first[1].device} (the device of ${first[0]}) but it is on ${t.device}`);
    }
  }
  const ordinal = first ? first[1].ordinal : -1;
  if (ordinal >= 0) requireCuda(ordinal, op);
  return ordinal;
}

/**
 * Checks a caller-provided output tensor, or allocates one. Poisoning
 * outputs in tests relies on kernels writing every element of `out`.
 */
export function output(
  outs: CallOutputs,
  out: unknown,
  shape: readonly number[],
  ordinal: number,
  streamId: bigint | undefined,
  name = 'out',
  dtype: DType = 'f32',
  uninitialized = false,
): Tensor {
  const op = outs.op;
  if (out === undefined) return outs.empty(shape, dtype, deviceOf(ordinal), { stream: streamId, uninitialized });
  const t = Tensor.from(out as Tensor, { name: `${op} ${name}` });
  if (t.dtype !== dtype) throw makeError('ERR_DTYPE', `Expected ${dtype} for ${op} ${name} but received ${t.dtype}`);
  if (t.ndim !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw makeError('ERR_SHAPE', `Expected ${op} ${name} of shape [${shape.join(', ')}] but received [${t.shape.join(', ')}]`);
  }
  if (!t.isContiguous) throw new TokenSieveError('ERR_UNSUPPORTED', `${op}: ${name} must be contiguous`);
  if (t.ordinal !== ordinal) {
    throw new TokenSieveError('ERR_DEVICE', `${op}: expected ${name} on ${deviceOf(ordinal)} but it is on ${t.device}`);
  }
  return t;
}

/** The bytes a tensor's elements span: [lo, hi) within `mem` (a host ArrayBuffer, or a device). */
function byteSpan(t: Tensor): { mem: unknown; lo: number; hi: number } {
  const size = DTYPE_SIZE[t.dtype];
  let extent = 1;
  for (let i = 0; i < t.ndim; i++) extent += (t.shape[i] - 1) * Math.abs(t.strides[i]);
  const data = t.peekData(); // its buffer compared, not kept: the memory stays recyclable
  if (data !== undefined) {
    const lo = data.byteOffset + t.offset * size;
    return { mem: data.buffer, lo, hi: lo + extent * size };
  }
  const lo = Number(t.ptr);
  return { mem: t.device, lo, hi: lo + extent * size };
}

/**
 * Outputs must not share memory with inputs (or each other): a kernel that
 * reads x while writing an aliased out would return a wrong answer, not an
 * error. Conservative: overlapping spans are rejected even when strides
 * interleave without touching.
 */
export function expectDisjoint(op: string, tensors: ReadonlyArray<readonly [string, Tensor | undefined]>): void {
  expectOutputsDisjoint(op, [], tensors);
}

/**
 * expectDisjoint where the inputs may share memory with each other (q, k
 * and v as views of one fused qkv projection): each output against every
 * input and every other output.
 */
export function expectOutputsDisjoint(
  op: string, inputs: ReadonlyArray<readonly [string, Tensor | undefined]>, outputs: ReadonlyArray<readonly [string, Tensor | undefined]>,
): void {
  const spans = (list: ReadonlyArray<readonly [string, Tensor | undefined]>) =>
    list.filter((e): e is readonly [string, Tensor] => e[1] !== undefined).map(([name, t]) => ({ name, ...byteSpan(t) }));
  const ins = spans(inputs), outsSpans = spans(outputs);
  for (let i = 0; i < outsSpans.length; i++) {
    for (const b of [...outsSpans.slice(i + 1), ...ins]) {
      const a = outsSpans[i];
      if (a.mem === b.mem && a.lo < b.hi && b.lo < a.hi) {
        throw makeError('ERR_ARG', `${op}: ${a.name} and ${b.name} share memory; pass separate buffers`);
      }
    }
  }
}

/**
 * The tensors one call allocates for its results. If the call fails (a check
 * after an allocation, a refused allocation, the kernel), every one of them
 * is disposed at once, so device memory does not wait for the garbage
 * collector; allocations are named after the user's function and refused
 * over the size limits (MAX_HOST_ELEMENTS, MAX_DEVICE_BYTES).
 */
export class CallOutputs {
  readonly op: string;
  private readonly _made: Tensor[] = [];
  private _hostBytes = 0;
  private readonly _async: boolean;
  /** `async`: the call runs on libuv's pool (its outputs are allocated on the event loop's thread). */
  constructor(op: string, async = false) {
    this.op = op;
    this._async = async;
  }
  empty(shape: readonly number[], dtype: DType, device: Device, opts: { stream?: bigint; uninitialized?: boolean } = {}): Tensor {
    const t = allocate(this.op, shape, dtype, device, opts, this._hostBytes, this._async);
    if (t.isHost) {
      this._hostBytes += t.numel * DTYPE_SIZE[dtype];
      markFresh(t, true);
    }
    this._made.push(t);
    return t;
  }
  /**
   * Called once the native call has been made (its descriptors read): from
   * here on the outputs may reach the user, so later calls stage them.
   */
  sealFresh(): void {
    for (const t of this._made) markFresh(t, false);
  }
  /** Takes ownership of a tensor made another way (e.g. a copy to the device). */
  adopt<T extends Tensor | undefined>(t: T): T {
    if (t) this._made.push(t);
    return t;
  }
  release(): void {
    for (const t of this._made) if (!t.disposed) t.dispose();
    this._made.length = 0;
  }
}

/**
 * One op, as its Sync and async entry points share it: `plan` checks the
 * arguments and allocates outputs through `outs`; `call` runs the kernel
 * (absent when there is nothing to compute); `cleanup` frees temporaries
 * (success or not). A failing call releases every output it allocated.
 */
export interface OpPlan<R> {
  result: R;
  call?: (async: boolean) => unknown;
  cleanup?: () => void;
}

function planned<R>(op: string, plan: (outs: CallOutputs) => OpPlan<R>, outs: CallOutputs): OpPlan<R> {
  try {
    return plan(outs);
  } catch (e) {
    outs.release();
    throw renamed(e, op); // every message starts with the function called: "topkSync: Expected ..."
  }
}

/** Runs an op on this thread. `op` is the function called (or, inside a method, the method). */
export function runOp<R>(opName: string, plan: (outs: CallOutputs) => OpPlan<R>): R {
  const op = callerName(opName);
  const outs = new CallOutputs(op);
  const p = planned(op, plan, outs);
  try {
    p.call?.(false);
  } catch (e) {
    outs.sealFresh();
    outs.release();
    throw fromNative(e, op);
  } finally {
    p.cleanup?.();
  }
  outs.sealFresh();
  return p.result;
}

/** Runs an op on libuv's pool; rejections carry the caller's stack (`site`, from callSite). */
export async function runOpAsync<R>(opName: string, site: { stack?: string }, plan: (outs: CallOutputs) => OpPlan<R>): Promise<R> {
  const op = callerName(opName);
  const outs = new CallOutputs(op, true);
  const p = planned(op, plan, outs);
  try {
    const pending = p.call?.(true);
    outs.sealFresh(); // the descriptors are read: nothing marked may reach the user
    await pending;
  } catch (e) {
    outs.sealFresh();
    outs.release();
    throw fromNative(e, op, site);
  } finally {
    p.cleanup?.();
  }
  return p.result;
}

/** Captures the caller's stack for async errors (cheap: the stack is formatted lazily). */
export function callSite(fn: Function): { stack?: string } {
  const site: { stack?: string } = {};
  Error.captureStackTrace(site, fn);
  return site;
}

/** A rank-3 [B, N, C] input (rank 2 is one batch row), non-empty, float, contiguous inner dimension. */
export function rank3(op: string, name: string, t: Tensor, dims: string): { t: Tensor; flat: boolean } {
  const flat = t.ndim === 2;
  if (flat) t = t.view([1, t.shape[0], t.shape[1]], [0, t.strides[0], t.strides[1]]);
  if (t.ndim !== 3) throw makeError('ERR_SHAPE', `Expected ${name} of rank 3 ${dims} (or 2 without the batch) for ${op} but received shape [${t.shape.join(', ')}]`);
  if (t.shape.some((d) => d === 0)) throw makeError('ERR_SHAPE', `Expected every dimension of ${name} ${dims} to be >= 1 for ${op} but received shape [${t.shape.join(', ')}]`);
  expectFloat(op, name, t);
  expectInnerContiguous(op, name, t);
  return { t, flat };
}

export function excludeMask(op: string, v: unknown, B: number, N: number): Tensor | undefined {
  if (v === undefined) return undefined;
  let m = toTensor(v as TensorLike, `${op} exclude`);
  if (m.dtype !== 'u8') throw makeError('ERR_DTYPE', `Expected u8 for ${op} exclude but received ${m.dtype}`);
  if (m.ndim === 1 && B === 1) m = m.view([1, m.shape[0]], [0, m.strides[0]]);
  if (m.ndim !== 2 || m.shape[0] !== B || m.shape[1] !== N) {
    throw makeError('ERR_SHAPE', `Expected ${op} exclude of shape [${B}, ${N}] but received [${m.shape.join(', ')}]`);
  }
  return m.isContiguous ? m : m.contiguous();
}

/** The rows in an Int32Array of at least 17 elements (off V8's heap; the addon reads the first `length`). */
export function offHeap(rows: Int32Array): Int32Array {
  if (rows.length > 16) return rows;
  const padded = new Int32Array(17);
  padded.set(rows);
  return padded;
}

/** Logical [B, H, N, D] view of an attention input in either layout. */
export function headsFirst(t: Tensor, layout: 'bhnd' | 'bnhd'): { shape: number[]; strides: number[] } {
  if (layout === 'bhnd') return { shape: t.shape.slice(), strides: t.strides.slice() };
  const [b, n, h, d] = t.shape;
  const [sb, sn, sh, sd] = t.strides;
  return { shape: [b, h, n, d], strides: [sb, sh, sn, sd] };
}
