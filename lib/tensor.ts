/**
 * Tensors on the host or on a CUDA device.
 *
 * A host tensor views a TypedArray (never copies it on the way in). A device
 * tensor owns a block of device memory (released by `dispose()`, `using`, or
 * the garbage collector) or, from `Tensor.fromDevicePointer`, names memory
 * owned by another runtime. Shapes and strides are in elements.
 */
import * as os from 'os';
import type { NativeDeviceBuffer, NativeTensor } from '../typings/native';
import {
  DTYPE_ARRAY,
  DTYPE_CODE,
  DTYPE_SIZE,
  DType,
  dtypesForArray,
  fromHalfBits,
  HostData,
  isDType,
} from './dtype';
import { Device, DeviceLike, deviceOf, deviceOrdinal, requireCuda } from './device';
import { callerName, describe, fromNative, invalid, makeError, TokenSieveError } from './errors';
import { MIN_POOLED_BYTES, recycleHostBuffer, takeHostBuffer } from './hostpool';
import { native } from './native';

/** A plain host tensor: `{ data, shape, dtype? }`; f16/bf16 data is a Uint16Array with an explicit dtype. */
export interface HostTensorLike {
  data: HostData;
  shape: readonly number[];
  dtype?: DType;
  /** Element strides (default: contiguous, row-major). */
  strides?: readonly number[];
  /** Element offset of the first element in `data` (default 0). */
  offset?: number;
}

export type TensorLike = Tensor | HostTensorLike;

export interface DevicePointerSpec {
  /** Device address (e.g. from another runtime's tensor.data_ptr()). */
  ptr: bigint;
  shape: readonly number[];
  dtype: DType;
  /** Element strides (default contiguous). */
  strides?: readonly number[];
  device?: DeviceLike;
  /** The stream the memory is used on (cudaStream_t as bigint); kernels default to it. */
  stream?: bigint;
}

const INTERNAL = Symbol('tokensieve.tensor');

/**
 * Length of a descriptor's meta array: [dtype, device, offset, ndim] + 6
 * shape + 6 strides, then meta[16]: 1 for an output allocated by the call
 * being made (see markFresh).
 */
const META_LENGTH = 17;

// Descriptors come from a ring of arrays made once, not a fresh off-heap
// ArrayBuffer per tensor per call: the addon copies every field before the
// call that receives them returns (async calls included), and every
// descriptor goes to a native call right after it is made. Fresh ones were
// a third of a small call's time (a top-k of 576 scores: malloc, V8's
// sweeper freeing them on another thread, lock waits between the two).
// 64 is far more than one call takes.
const DESCRIPTOR_RING = 64;
const descriptorRing = Array.from({ length: DESCRIPTOR_RING }, () => new Float64Array(META_LENGTH));
let nextDescriptor = 0;

/**
 * Outputs the call being planned allocated itself. No JS outside the library
 * holds them until the call completes, so nothing can detach or shrink their
 * buffers while it runs: an async call writes them in place instead of into
 * a staged copy (binding/common.cc), which saves two copies on the event
 * loop's thread and moves their first-touch page faults to the worker.
 */
const freshOutputs = new WeakSet<Tensor>();

/** @internal Marks (or unmarks) a host tensor as an output of the call being made. */
export function markFresh(t: Tensor, fresh: boolean): void {
  if (fresh) freshOutputs.add(t);
  else freshOutputs.delete(t);
}

interface TensorInit {
  dtype: DType;
  shape: readonly number[];
  strides: readonly number[];
  offset: number;
  ordinal: number;
  data?: HostData;
  buffer?: NativeDeviceBuffer;
  ptr?: bigint;
  stream?: bigint;
  host?: HostBlock;
}

/**
 * A host ArrayBuffer tokensieve allocated for a tensor (64 KiB or more),
 * shared by the tensor and its views as a device buffer is. `dispose()` of
 * any of them hands the memory back for reuse (lib/hostpool.ts) unless
 * `escaped`: once `data` was read, JS outside the library may hold the
 * TypedArray, so the memory stays with it and the collector frees it, as
 * for every other host tensor.
 */
interface HostBlock {
  escaped: boolean;
  released: boolean;
}

export function contiguousStrides(shape: readonly number[]): number[] {
  if (!Array.isArray(shape)) throw invalid('ERR_ARG', 'contiguousStrides shape', 'an array of integers', shape);
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The largest dimension: token, row and channel indices are i32. */
export const MAX_DIM = 2 ** 31 - 1;

function checkShape(shape: unknown, arg: string): number[] {
  if (!Array.isArray(shape) || shape.length > 6) {
    throw invalid('ERR_ARG', `${arg}.shape`, 'an array of at most 6 non-negative integers', shape);
  }
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw invalid('ERR_ARG', `${arg}.shape`, 'an array of non-negative integers', shape);
    }
    if (d > MAX_DIM) {
      throw makeError('ERR_RANGE', `Expected every dimension of ${arg}.shape to be at most 2^31 - 1 (indices are i32) but received [${shape.join(', ')}]`);
    }
  }
  return shape.slice() as number[];
}

function checkStrides(strides: unknown, rank: number, arg: string): number[] {
  if (!Array.isArray(strides) || strides.length !== rank) {
    throw invalid('ERR_ARG', `${arg}.strides`, `an array of ${rank} non-negative integers`, strides);
  }
  for (const s of strides) {
    if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) {
      throw invalid('ERR_ARG', `${arg}.strides`, 'non-negative integers', strides);
    }
  }
  return strides.slice() as number[];
}

/** Options of Tensor.from/empty: an object of known keys, each of its type (or undefined). */
function checkTensorOptions(op: string, opts: unknown, types: Record<string, string>): void {
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) throw invalid('ERR_ARG', `${op} options`, 'an object', opts);
  for (const [key, v] of Object.entries(opts)) {
    if (!(key in types)) throw makeError('ERR_ARG', `${op}: unknown option '${key}' (expected one of ${Object.keys(types).join(', ')})`);
    if (v !== undefined && typeof v !== types[key]) throw invalid('ERR_ARG', `${op} ${key}`, `a ${types[key]}`, v);
  }
}

/** Highest element index (relative to offset) a view addresses, or -1 when it is empty. */
function lastIndex(shape: readonly number[], strides: readonly number[]): number {
  let last = 0;
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] === 0) return -1;
    last += (shape[i] - 1) * strides[i];
  }
  return last;
}

function isDetached(data: ArrayBufferView): boolean {
  const buf = data.buffer as ArrayBuffer & { detached?: boolean; resizable?: boolean };
  if (typeof buf.detached === 'boolean') return buf.detached;
  if (buf.resizable === true) return false; // shrunk, not detached
  return buf.byteLength === 0 && data.byteLength === 0;
}

interface TensorState {
  data: HostData | undefined;
  buffer: NativeDeviceBuffer | undefined;
  ptr: bigint | undefined;
  host: HostBlock | undefined;
  disposed: boolean;
}

export class Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  /** Offset of the first element, in elements, into `data` (host) or the device memory. */
  readonly offset: number;
  readonly device: Device;
  /** The stream this tensor's memory is ordered on (device tensors; undefined = default stream). */
  readonly stream: bigint | undefined;
  // The memory and the disposed flag in one non-enumerable slot: hidden from
  // console.log/JSON like #private fields, and one defineProperty per tensor
  // (four made hiding them a fifth of a small Sync call).
  private declare readonly _s: TensorState;

  /** @internal Use Tensor.from, Tensor.empty or Tensor.fromDevicePointer. */
  constructor(token: symbol, init: TensorInit) {
    if (token !== INTERNAL) {
      throw new TokenSieveError('ERR_ARG', 'Tensor cannot be constructed directly: use Tensor.from, Tensor.empty or Tensor.fromDevicePointer');
    }
    this.dtype = init.dtype;
    // Frozen copies: a shape mutated after the call (or during an async one)
    // cannot change what the checks saw.
    this.shape = Object.freeze(init.shape.slice());
    this.strides = Object.freeze(init.strides.slice());
    this.offset = init.offset;
    this.device = deviceOf(init.ordinal);
    this.stream = init.stream;
    Object.defineProperty(this, '_s', {
      value: { data: init.data, buffer: init.buffer, ptr: init.ptr, host: init.host, disposed: false } satisfies TensorState,
      enumerable: false,
    });
  }

  /**
   * Wraps host data (a view: nothing is copied) or an existing Tensor. With
   * `device`, the result is a copy on that device.
   * @example Tensor.from({ data: new Float32Array(6), shape: [2, 3] })
   * @example Tensor.from({ data: halfBits, shape: [1, 577, 64], dtype: 'f16' }, { device: 'cuda:0' })
   * @throws {TypeError} ERR_ARG / ERR_DTYPE for malformed input
   * @throws {RangeError} ERR_RANGE when the data is too short or detached
   */
  static from(src: TensorLike, opts: { device?: DeviceLike; name?: string } = {}): Tensor {
    checkTensorOptions('Tensor.from', opts, { device: 'string', name: 'string' });
    const t = toTensor(src, opts.name ?? 'tensor');
    return opts.device === undefined ? t : t.to(opts.device);
  }

  /**
   * A new tensor. Host memory is zeroed (unless `uninitialized`, for outputs
   * a kernel overwrites entirely); device memory is never initialised.
   */
  static empty(
    shape: readonly number[], dtype: DType = 'f32', device: DeviceLike = 'cpu', opts: { stream?: bigint; uninitialized?: boolean } = {},
  ): Tensor {
    checkTensorOptions('Tensor.empty', opts, { stream: 'bigint', uninitialized: 'boolean' });
    return allocate('Tensor.empty', shape, dtype, device, opts);
  }

  /**
   * Zero-copy view of device memory owned by another runtime (not freed by
   * tokensieve: keep the owner alive while the tensor is used).
   * @throws {TokenSieveError} ERR_DEVICE when CUDA is unavailable
   */
  static fromDevicePointer(spec: DevicePointerSpec): Tensor {
    if (typeof spec !== 'object' || spec === null) throw invalid('ERR_ARG', 'spec', 'an object', spec);
    if (typeof spec.ptr !== 'bigint' || spec.ptr <= 0n) throw invalid('ERR_ARG', 'spec.ptr', 'a non-zero bigint', spec.ptr);
    if (!isDType(spec.dtype)) throw invalid('ERR_DTYPE', 'spec.dtype', 'one of f32, f16, bf16, i32, i64, i8, u8', spec.dtype);
    const shape = checkShape(spec.shape, 'spec');
    const strides = spec.strides === undefined ? contiguousStrides(shape) : checkStrides(spec.strides, shape.length, 'spec');
    if (spec.stream !== undefined && typeof spec.stream !== 'bigint') throw invalid('ERR_ARG', 'spec.stream', 'a bigint', spec.stream);
    const ordinal = deviceOrdinal(spec.device ?? 'cuda:0', 'spec.device');
    if (ordinal < 0) throw invalid('ERR_DEVICE', 'spec.device', "a CUDA device ('cuda:N')", spec.device);
    requireCuda(ordinal, 'Tensor.fromDevicePointer');
    return new Tensor(INTERNAL, { dtype: spec.dtype, shape, strides, offset: 0, ordinal, ptr: spec.ptr, stream: spec.stream });
  }

  get ndim(): number {
    return this.shape.length;
  }
  get numel(): number {
    return numelOf(this.shape);
  }
  get isHost(): boolean {
    return this.device === 'cpu';
  }
  /** -1 for the host, else the CUDA ordinal. */
  get ordinal(): number {
    return deviceOrdinal(this.device);
  }
  get disposed(): boolean {
    return this._s.disposed || (this._s.buffer !== undefined && this._s.buffer.disposed) || (this._s.host !== undefined && this._s.host.released);
  }
  get isContiguous(): boolean {
    const c = contiguousStrides(this.shape);
    return this.shape.every((d, i) => d === 1 || this.strides[i] === c[i]);
  }

  /** The host TypedArray this tensor views (host tensors only). */
  get data(): HostData {
    this.assertAlive('data');
    if (this._s.data === undefined) {
      throw new TokenSieveError('ERR_DEVICE', `Tensor.data: the tensor is on ${this.device}; call toHost() first`);
    }
    if (this._s.host !== undefined) this._s.host.escaped = true; // dispose() must leave this memory alone
    return this._s.data;
  }

  /**
   * @internal The host TypedArray for the library's own reads (a byte span,
   * a copy): unlike `data`, it leaves the memory recyclable on dispose(), so
   * the array must not reach the user.
   */
  peekData(): HostData | undefined {
    return this._s.data;
  }

  /** Device address of the first element (device tensors only). */
  get ptr(): bigint {
    this.assertAlive('ptr');
    if (this.isHost) throw new TokenSieveError('ERR_DEVICE', 'Tensor.ptr: the tensor is on the host');
    const base = this._s.buffer ? this._s.buffer.ptr : (this._s.ptr as bigint);
    return base + BigInt(this.offset * DTYPE_SIZE[this.dtype]);
  }

  /**
   * A copy on `device` (this tensor itself when already there). Blocks until
   * the copy is complete.
   */
  to(device: DeviceLike): Tensor {
    this.assertAlive('to');
    const ordinal = deviceOrdinal(device);
    if (ordinal === this.ordinal) return this;
    if (ordinal >= 0 && !this.isHost) {
      throw new TokenSieveError('ERR_UNSUPPORTED', `Tensor.to: copies between CUDA devices are not supported (${this.device} → cuda:${ordinal}); go through the host`);
    }
    const op = callerName('Tensor.to');
    if (ordinal >= 0) {
      const src = this.contiguous();
      const dst = allocate(op, this.shape, this.dtype, deviceOf(ordinal));
      try {
        copyNative(dst, src, op);
      } catch (e) {
        dst.dispose(); // a failed copy frees its device memory now
        throw e;
      }
      return dst;
    }
    // device → host
    const host = allocate(op, this.shape, this.dtype, 'cpu');
    if (this.isContiguous) {
      copyNative(host, this, op);
      return host;
    }
    // A strided device view: bring back the span it covers, then compact.
    const span = lastIndex(this.shape, this.strides) + 1;
    const staging = allocate(op, [span], this.dtype, 'cpu');
    const flat = new Tensor(INTERNAL, {
      dtype: this.dtype, shape: [span], strides: [1], offset: this.offset, ordinal: this.ordinal,
      buffer: this._s.buffer, ptr: this._s.ptr, stream: this.stream,
    });
    copyNative(staging, flat, op);
    return new Tensor(INTERNAL, {
      dtype: this.dtype, shape: this.shape, strides: this.strides, offset: 0, ordinal: -1, data: staging.data,
    }).contiguous();
  }

  toHost(): Tensor {
    return this.to('cpu');
  }

  /** A contiguous tensor with the same values (this one when already contiguous). Host only. */
  contiguous(): Tensor {
    this.assertReadable('Tensor.contiguous');
    if (this.isContiguous && this.offset === 0) return this;
    if (!this.isHost) {
      throw new TokenSieveError('ERR_UNSUPPORTED', 'Tensor.contiguous: strided device tensors cannot be compacted on the device yet; use toHost()');
    }
    const src = this._s.data as unknown as { [i: number]: number | bigint };
    const out = new DTYPE_ARRAY[this.dtype](this.numel) as unknown as { [i: number]: number | bigint };
    const rank = this.ndim;
    const idx = new Array<number>(rank).fill(0);
    const n = this.numel;
    for (let i = 0; i < n; i++) {
      let off = this.offset;
      for (let d = 0; d < rank; d++) off += idx[d] * this.strides[d];
      out[i] = src[off];
      for (let d = rank - 1; d >= 0; d--) {
        if (++idx[d] < this.shape[d]) break;
        idx[d] = 0;
      }
    }
    return new Tensor(INTERNAL, {
      dtype: this.dtype, shape: this.shape, strides: contiguousStrides(this.shape), offset: 0, ordinal: -1, data: out as unknown as HostData,
    });
  }

  /** The values as numbers in row-major order (f16/bf16 decoded; i64 as numbers). Copies device data to the host. */
  toArray(): number[] {
    this.assertReadable('Tensor.toArray');
    if (this.numel === 0) return []; // (its buffer may be detached: an empty view reads nothing)
    const host = this.toHost().contiguous();
    const data = host._s.data as HostData; // read here, not handed out: the memory stays recyclable
    if (this.dtype === 'f16' || this.dtype === 'bf16') return Array.from(fromHalfBits(data as Uint16Array, this.dtype));
    if (data instanceof BigInt64Array) return Array.from(data, (v) => Number(v));
    return Array.from(data as ArrayLike<number>);
  }

  /** A view with new shape/strides over the same memory (no copy). */
  view(shape: readonly number[], strides?: readonly number[], offset: number = this.offset): Tensor {
    this.assertAlive('view');
    const dims = checkShape(shape, 'Tensor.view');
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
      throw invalid('ERR_ARG', 'Tensor.view offset', 'a non-negative integer', offset);
    }
    let st: number[];
    if (strides !== undefined) {
      st = checkStrides(strides, dims.length, 'view');
    } else {
      if (!this.isContiguous) throw new TokenSieveError('ERR_UNSUPPORTED', 'Tensor.view: reshaping a strided tensor needs explicit strides');
      if (numelOf(dims) !== this.numel) {
        throw makeError('ERR_SHAPE', `Tensor.view: cannot view ${this.numel} elements as [${dims.join(', ')}]`);
      }
      st = contiguousStrides(dims);
    }
    const last = lastIndex(dims, st);
    const data = this._s.data;
    if (last >= 0 && data !== undefined && offset + last >= data.length) {
      throw makeError('ERR_RANGE', `Tensor.view: the view reaches element ${offset + last} of ${data.length}`);
    }
    if (last >= 0 && this._s.buffer && (offset + last + 1) * DTYPE_SIZE[this.dtype] > this._s.buffer.bytes) {
      throw makeError('ERR_RANGE', `Tensor.view: the view reaches element ${offset + last} of a device buffer of ${this._s.buffer.bytes / DTYPE_SIZE[this.dtype]}`);
    }
    return new Tensor(INTERNAL, {
      dtype: this.dtype, shape: dims, strides: st, offset, ordinal: this.ordinal,
      data: this._s.data, buffer: this._s.buffer, ptr: this._s.ptr, stream: this.stream, host: this._s.host,
    });
  }

  /**
   * Releases device memory now. A host output tokensieve allocated (64 KiB
   * or more) whose `data` was never read goes back to a cache for the next
   * output of its size, views included (see hostCache); other host tensors
   * just drop their reference. Later use throws ERR_DISPOSED. Safe to call
   * twice. A kernel still running on device memory keeps it until it
   * finishes; an async call whose host `out` is taken back meanwhile rejects
   * with ERR_RANGE (it wrote a staged copy, which is dropped).
   */
  dispose(): void {
    if (this._s.disposed) return;
    this._s.disposed = true;
    if (this._s.buffer) {
      try {
        this._s.buffer.dispose();
      } catch (e) {
        throw fromNative(e, 'Tensor.dispose');
      }
    }
    const data = this._s.data, host = this._s.host;
    this._s.data = undefined;
    // No running kernel can hold it: an async call writes in place only into
    // outputs no one has been handed yet, and stages everything else.
    if (host !== undefined && !host.released && !host.escaped && data !== undefined) {
      host.released = true;
      recycleHostBuffer(data.buffer as ArrayBuffer);
    }
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }

  /**
   * @internal The descriptor the addon reads; `shape`/`strides`/`offset`
   * override the tensor's own (e.g. a [B, N, H, D] tensor read as [B, H, N,
   * D], or a span of its rows). Its meta array is a ring slot: pass it to the
   * native call now, before other descriptors are made.
   */
  descriptor(name: string, shape: readonly number[] = this.shape, strides: readonly number[] = this.strides, offset = this.offset): NativeTensor {
    this.assertReadable(name);
    const rank = shape.length;
    // Always 17 doubles (136 bytes): past V8's 64-byte on-heap limit, so the
    // addon reads it in place instead of V8 copying it out of the heap.
    const meta = descriptorRing[nextDescriptor];
    nextDescriptor = (nextDescriptor + 1) % DESCRIPTOR_RING;
    meta.fill(0);
    meta[0] = DTYPE_CODE[this.dtype];
    meta[1] = this.ordinal;
    meta[2] = offset;
    meta[3] = rank;
    for (let i = 0; i < rank; i++) {
      meta[4 + i] = shape[i];
      meta[4 + rank + i] = strides[i];
    }
    meta[16] = freshOutputs.has(this) ? 1 : 0;
    const mem = this._s.data ?? this._s.buffer ?? (this._s.ptr as bigint);
    return { meta, mem };
  }

  private assertAlive(what: string): void {
    if (this.disposed) throw new TokenSieveError('ERR_DISPOSED', `${what}: the tensor has been disposed`);
  }

  /**
   * @internal Throws unless the tensor can be read now: not disposed, and
   * (host) its TypedArray still holds every element the view addresses —
   * JS may have detached or shrunk the buffer since the tensor was made.
   */
  assertReadable(what: string): void {
    this.assertAlive(what);
    const data = this._s.data;
    if (data === undefined) return;
    const last = lastIndex(this.shape, this.strides);
    if (last < 0 || this.offset + last < data.length) return;
    if (isDetached(data)) throw makeError('ERR_RANGE', `${what}: the tensor's ArrayBuffer has been detached`);
    throw makeError('ERR_RANGE', `${what}: the tensor's buffer has shrunk to ${data.length} elements but the view reaches element ${this.offset + last}`);
  }
}

// Read once: os.totalmem() is a system call, and it was half the cost of a
// small Sync call when read per output.
const HOST_OUTPUT_LIMIT = Math.floor(os.totalmem() / 2);

/**
 * The largest outputs tokensieve allocates; anything larger is an ERR_RANGE
 * before anything is allocated:
 * - host: 2^32 − 1 elements per tensor (V8's TypedArray limit), and half the
 *   machine's memory (os.totalmem() / 2) for all the outputs of one call —
 *   host memory is committed lazily, so a larger request would not fail
 *   here but get the process killed when the kernel writes it;
 * - device: 2^47 bytes per tensor (more than any device has); beyond the
 *   device's free memory the allocation fails with ERR_CUDA.
 */
export const MAX_HOST_ELEMENTS = 2 ** 32 - 1;
export const MAX_DEVICE_BYTES = 2 ** 47;
export function maxHostOutputBytes(): number {
  return HOST_OUTPUT_LIMIT;
}

/**
 * @internal Makes private fields non-enumerable, so they stay out of
 * console.log, Object.keys and JSON.stringify (as `#private` fields did; those
 * cannot be used: they break consumers' typings below ES2015 targets).
 */
export function hideFields(obj: object, names: readonly string[]): void {
  for (const n of names) Object.defineProperty(obj, n, { enumerable: false });
}

/**
 * @internal Tensor.empty for `op` (the user's function, named in errors):
 * refuses sizes over the limits before allocating, and reports a failed host
 * allocation as ERR_RANGE.
 */
/**
 * `asyncCall`: the allocation is made for an async call, whose work must not
 * run on the event loop's thread: a zeroed output then does not take a
 * reused buffer (zeroing it would be that work) but fresh memory, which the
 * system zeroes as the kernel's thread first touches it.
 */
/** A TypedArray of `dtype` over n elements of `buffer` from byteOffset. */
function typedOver(dtype: DType, buffer: ArrayBufferLike, byteOffset: number, n: number): HostData {
  return new (DTYPE_ARRAY[dtype] as unknown as new (b: ArrayBufferLike, o: number, l: number) => HostData)(buffer, byteOffset, n);
}

export function allocate(
  op: string, shape: readonly number[], dtype: DType, device: DeviceLike, opts: { stream?: bigint; uninitialized?: boolean } = {},
  hostBytesBefore = 0, asyncCall = false,
): Tensor {
  const dims = checkShape(shape, op);
  if (!isDType(dtype)) throw invalid('ERR_DTYPE', `${op} dtype`, `one of f32, f16, bf16, i32, i64, i8, u8`, dtype);
  const ordinal = deviceOrdinal(device, `${op} device`);
  let n = 1;
  for (const d of dims) n *= d; // exact up to 2^53; every limit below is far smaller
  const bytes = n * DTYPE_SIZE[dtype];
  const strides = contiguousStrides(dims);
  if (ordinal < 0) {
    if (n > MAX_HOST_ELEMENTS) {
      throw makeError('ERR_RANGE', `${op}: an output of shape [${dims.join(', ')}] (${n} elements) is over the host limit of ${MAX_HOST_ELEMENTS} elements`);
    }
    if (hostBytesBefore + bytes > maxHostOutputBytes()) {
      throw makeError('ERR_RANGE', `${op}: outputs of ${hostBytesBefore + bytes} bytes are over the host limit of half this machine's memory (${maxHostOutputBytes()} bytes)`);
    }
    let data: HostData;
    let host: HostBlock | undefined;
    try {
      if (bytes >= MIN_POOLED_BYTES) {
        // A disposed output's memory when one of this size is kept (lib/hostpool.ts), zeroed
        // unless the kernel writes it all. Else fresh: allocUnsafeSlow's (not Buffer's shared
        // pool: the ArrayBuffer is the tensor's alone) or a TypedArray's own, whose pages the
        // system zeroes when first touched (filling a huge one here would touch them all).
        const reused = opts.uninitialized || !asyncCall ? takeHostBuffer(bytes) : undefined;
        if (reused !== undefined) {
          if (!opts.uninitialized) new Uint8Array(reused).fill(0);
          data = typedOver(dtype, reused, 0, n);
        } else if (opts.uninitialized) {
          const buf = Buffer.allocUnsafeSlow(bytes);
          data = typedOver(dtype, buf.buffer, buf.byteOffset, n);
        } else {
          data = new DTYPE_ARRAY[dtype](n);
        }
        host = { escaped: false, released: false };
      } else {
        data = new DTYPE_ARRAY[dtype](n);
      }
    } catch {
      throw makeError('ERR_RANGE', `${op}: could not allocate ${bytes} bytes of host memory for an output of shape [${dims.join(', ')}]`);
    }
    return new Tensor(INTERNAL, { dtype, shape: dims, strides, offset: 0, ordinal, data, host });
  }
  if (bytes > MAX_DEVICE_BYTES) {
    throw makeError('ERR_RANGE', `${op}: an output of shape [${dims.join(', ')}] (${bytes} bytes) is over the device limit of 2^47 bytes`);
  }
  requireCuda(ordinal, op);
  let buffer: NativeDeviceBuffer;
  try {
    buffer = new (native().DeviceBuffer)(bytes, ordinal, opts.stream);
  } catch (e) {
    throw fromNative(e, op);
  }
  return new Tensor(INTERNAL, { dtype, shape: dims, strides, offset: 0, ordinal, buffer, stream: opts.stream });
}

function copyNative(dst: Tensor, src: Tensor, op: string): void {
  const d = dst.descriptor('dst');
  const s = src.descriptor('src');
  try {
    native().copy(d.meta, d.mem, s.meta, s.mem, src.stream ?? dst.stream, false);
  } catch (e) {
    throw fromNative(e, op);
  }
}

/**
 * Accepts a Tensor or a plain host tensor and returns a Tensor view, after
 * checking the data type, shape, strides and that the data is long enough.
 * `name` is used in error messages.
 */
export function toTensor(src: unknown, name: string): Tensor {
  if (src instanceof Tensor) {
    src.assertReadable(name);
    return src;
  }
  if (typeof src !== 'object' || src === null || !('data' in src) || !('shape' in src)) {
    if (typeof src === 'object' && src !== null && 'indices' in src && (src as { indices?: unknown }).indices instanceof Tensor) {
      // A topk / method result where its tensor belongs: gather(x, await topk(s, k)).
      throw makeError('ERR_ARG', `Expected a Tensor or { data, shape, dtype? } for ${name} but received a result object { ${Object.keys(src).join(', ')} }; pass its .indices`);
    }
    throw invalid('ERR_ARG', name, 'a Tensor or { data, shape, dtype? }', src);
  }
  const like = src as HostTensorLike;
  const data = like.data as unknown;
  if (!ArrayBuffer.isView(data) || data instanceof DataView) {
    throw invalid('ERR_ARG', `${name}.data`, 'a TypedArray', data);
  }
  const allowed = dtypesForArray(data);
  if (allowed.length === 0) {
    throw invalid('ERR_DTYPE', `${name}.data`, 'a Float32Array, Uint16Array (f16/bf16), Int32Array, BigInt64Array, Int8Array or Uint8Array', data);
  }
  let dtype: DType;
  if (like.dtype === undefined) {
    if (allowed.length > 1) {
      throw makeError('ERR_DTYPE', `Expected a dtype ('f16' or 'bf16') for ${name}: a Uint16Array holds either`);
    }
    dtype = allowed[0];
  } else {
    if (!isDType(like.dtype)) throw invalid('ERR_DTYPE', `${name}.dtype`, 'one of f32, f16, bf16, i32, i64, i8, u8', like.dtype);
    if (!allowed.includes(like.dtype)) {
      throw makeError('ERR_DTYPE', `Expected ${DTYPE_ARRAY[like.dtype].name} data for dtype '${like.dtype}' of ${name} but received ${describe(data)}`);
    }
    dtype = like.dtype;
  }
  const shape = checkShape(like.shape, name);
  const strides = like.strides === undefined ? contiguousStrides(shape) : checkStrides(like.strides, shape.length, name);
  const offset = like.offset ?? 0;
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
    throw invalid('ERR_ARG', `${name}.offset`, 'a non-negative integer', offset);
  }
  const typed = data as HostData;
  const last = lastIndex(shape, strides);
  if (last >= 0 && offset + last >= typed.length) {
    if (isDetached(typed)) {
      throw makeError('ERR_RANGE', `Expected live data for ${name} but its ArrayBuffer is detached`);
    }
    throw makeError(
      'ERR_RANGE',
      `Expected at least ${offset + last + 1} elements in ${name}.data for shape [${shape.join(', ')}] but received ${typed.length}`,
    );
  }
  return new Tensor(INTERNAL, { dtype, shape, strides, offset, ordinal: -1, data: typed });
}
