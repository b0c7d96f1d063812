/**
 * Block masks for block-sparse attention, in FlexAttention's format
 * (`BlockMask.from_kv_blocks`): for every (batch, head, q-block) row, a count
 * and the sorted kv-block indices it attends to, optionally split into
 * "partial" and "full" lists. The block-sparse kernel computes the union of
 * the two lists (there is no mask_mod here, so every listed block is computed
 * whole).
 *
 * Shapes: `kvNumBlocks` i32 [Bm, Hm, nQ], `kvIndices` i32 [Bm, Hm, nQ, L]
 * (the first `count` entries of a row are the blocks, strictly ascending; the
 * rest is padding the kernel never reads), with nQ = ⌈seqLens[0] / blockQ⌉,
 * nK = ⌈seqLens[1] / blockK⌉. Bm and Hm are 1 (broadcast over batch or heads)
 * or the batch and head counts of the attention it is used with.
 *
 * Every factory validates on the host, once, at construction: a mask that
 * exists is well formed, so the kernel only checks that it fits the call.
 */
import { Device, deviceOf, deviceOrdinal } from './device';
import { asCaller, callerName, invalid, makeError, TokenSieveError } from './errors';
import { checkOptions, int } from './kernels/common';
import type { BlockMaskLike } from './kernels/blocksparse';
import { hideFields, MAX_DIM, Tensor, TensorLike, toTensor } from './tensor';

/** What a block-sparse kernel reads, as a BlockMask holds it (Tensors; a BlockMaskLike). */
interface BlockMaskFields {
  readonly blockQ: number;
  readonly blockK: number;
  /** [query tokens, key tokens]. */
  readonly seqLens: readonly [number, number];
  /** i32 [Bm, Hm, nQ]. */
  readonly kvNumBlocks: Tensor;
  /** i32 [Bm, Hm, nQ, L]: the first kvNumBlocks entries of each row, strictly ascending. */
  readonly kvIndices: Tensor;
  readonly fullKvNumBlocks?: Tensor;
  readonly fullKvIndices?: Tensor;
}

/** Integer input: an Int32Array (a mask shared by the whole batch and all heads) or an i32 tensor. */
export type IndexInput = Int32Array | TensorLike;

export interface FromKvBlocksSpec {
  /** i32 [Bm, Hm, nQ], or an Int32Array of nQ counts ([1, 1, nQ]). */
  kvNumBlocks: IndexInput;
  /** i32 [Bm, Hm, nQ, L], or an Int32Array of Bm·Hm·nQ·L entries (Bm, Hm, nQ from kvNumBlocks). */
  kvIndices: IndexInput;
  /** FlexAttention's "full" blocks (no mask_mod). Here computed the same way; must be disjoint from the partial lists. */
  fullKvNumBlocks?: IndexInput;
  fullKvIndices?: IndexInput;
  /** Query block size in tokens (default 128, FlexAttention's default). */
  blockQ?: number;
  /** Key block size in tokens (default blockQ). */
  blockK?: number;
  /** [query tokens, key tokens]. */
  seqLens: readonly [number, number];
}

export interface FromDenseOptions {
  blockQ: number;
  /** Default blockQ. */
  blockK?: number;
  /** Default [nQ·blockQ, nK·blockK] (FlexAttention's default: no short tail block). */
  seqLens?: readonly [number, number];
}

export interface FromCSRSpec {
  /** Row pointers over the Bm·Hm·nQ rows in row-major (b, h, q-block) order: Bm·Hm·nQ + 1 entries, indptr[0] = 0. */
  indptr: IndexInput;
  /** The kv-block indices of each row, strictly ascending within a row. */
  indices: IndexInput;
  /** [Bm, Hm, nQ, nK], in blocks. */
  shape: readonly [number, number, number, number];
  blockQ: number;
  /** Default blockQ. */
  blockK?: number;
  /** Default [nQ·blockQ, nK·blockK]. */
  seqLens?: readonly [number, number];
}

/** One list (partial or full): counts [rows] and indices [rows, L] on the host. */
interface HostLists {
  counts: Int32Array;
  indices: Int32Array;
  L: number;
}

interface MaskInit {
  blockQ: number;
  blockK: number;
  seqLens: [number, number];
  Bm: number;
  Hm: number;
  nQ: number;
  nK: number;
  partial: HostLists;
  full?: HostLists;
  device: Device;
  /** The lists are this mask's own (built by a factory, not the caller's arrays): no copy needed. */
  owned?: boolean;
}

const INTERNAL = Symbol('tokensieve.blockmask');

/**
 * A validated block mask (FlexAttention's BlockMask without mask_mod). Build
 * one with {@link BlockMask.fromKvBlocks}, {@link BlockMask.fromDense} or
 * {@link BlockMask.fromCSR}; it owns its index tensors (`dispose()` frees
 * device copies). The host copy made at construction serves `toDense()` and
 * `density()` without device round trips.
 */
export class BlockMask implements BlockMaskFields {
  readonly blockQ: number;
  readonly blockK: number;
  readonly seqLens: readonly [number, number];
  /** [Bm, Hm, nQ, nK]: the mask's own (possibly broadcast) dimensions, in blocks; toDense() has this shape. */
  readonly blockShape: readonly [number, number, number, number];
  readonly kvNumBlocks: Tensor;
  readonly kvIndices: Tensor;
  readonly fullKvNumBlocks?: Tensor;
  readonly fullKvIndices?: Tensor;
  private readonly _init: MaskInit;
  private _disposed = false;

  /** @internal Use BlockMask.fromKvBlocks, fromDense or fromCSR. */
  constructor(token: symbol, init: MaskInit) {
    if (token !== INTERNAL) {
      throw new TokenSieveError('ERR_ARG', 'BlockMask cannot be constructed directly: use BlockMask.fromKvBlocks, BlockMask.fromDense or BlockMask.fromCSR');
    }
    // Own copies of the lists: a caller mutating its input arrays later
    // cannot invalidate what was validated (tensors and toDense read these).
    const own = (l: HostLists): HostLists => ({ counts: l.counts.slice(), indices: l.indices.slice(), L: l.L });
    if (!init.owned) init = { ...init, partial: own(init.partial), full: init.full && own(init.full), owned: true };
    this._init = init;
    this.blockQ = init.blockQ;
    this.blockK = init.blockK;
    this.seqLens = Object.freeze([init.seqLens[0], init.seqLens[1]]) as readonly [number, number];
    this.blockShape = Object.freeze([init.Bm, init.Hm, init.nQ, init.nK]) as readonly [number, number, number, number];
    const rows = [init.Bm, init.Hm, init.nQ];
    const made: Tensor[] = [];
    const place = (data: Int32Array, shape: number[]): Tensor => {
      const host = Tensor.from({ data: data.slice(), shape, dtype: 'i32' }); // (a tensor's data can be written by its user)
      if (init.device === 'cpu') return host;
      const t = host.to(init.device);
      made.push(t);
      return t;
    };
    try {
      this.kvNumBlocks = place(init.partial.counts, rows);
      this.kvIndices = place(init.partial.indices, [...rows, init.partial.L]);
      if (init.full) {
        this.fullKvNumBlocks = place(init.full.counts, rows);
        this.fullKvIndices = place(init.full.indices, [...rows, init.full.L]);
      }
    } catch (e) {
      for (const t of made) t.dispose(); // a failed upload frees what was already uploaded
      throw e;
    }
    hideFields(this, ['_init', '_disposed']);
  }

  /**
   * FlexAttention's `BlockMask.shape`: [Bm, Hm, query tokens, key tokens]
   * (the batch and head dimensions as stored, 1 where broadcast).
   */
  get shape(): readonly [number, number, number, number] {
    return [this.blockShape[0], this.blockShape[1], this.seqLens[0], this.seqLens[1]];
  }

  /** Where the index tensors live (the kernel requires q's device). */
  get device(): Device {
    return this._init.device;
  }

  get disposed(): boolean {
    return this._disposed;
  }

  /**
   * A mask from FlexAttention-style lists (`BlockMask.from_kv_blocks`).
   * @throws {RangeError} ERR_RANGE for a count outside [0, L], an index outside [0, nK), indices not strictly ascending (duplicates included), or a block in both the partial and the full list of a row
   * @throws {RangeError} ERR_SHAPE when the shapes disagree with each other or with seqLens / block sizes
   * @throws {TypeError} ERR_DTYPE for non-i32 tensors
   * @example BlockMask.fromKvBlocks({ kvNumBlocks: Int32Array.of(1, 2), kvIndices: Int32Array.of(0, 0, 0, 1), blockQ: 64, seqLens: [100, 100] })
   */
  static fromKvBlocks(spec: FromKvBlocksSpec): BlockMask {
    return asCaller('BlockMask.fromKvBlocks', () => fromKvBlocksImpl(callerName('BlockMask.fromKvBlocks'), spec));
  }

  /**
   * A mask from a dense u8 block mask [Bm, Hm, nQ, nK] (or [nQ, nK]); 1 keeps
   * the block, 0 skips it, any other value is an error. All blocks go to the
   * partial lists; L = max(1, the largest row count).
   * @throws {TypeError} ERR_DTYPE unless u8
   * @throws {RangeError} ERR_RANGE for a value other than 0 or 1; ERR_SHAPE for seqLens that do not give the dense mask's nQ × nK
   * @example BlockMask.fromDense({ data: Uint8Array.of(1, 0, 1, 1), shape: [2, 2] }, { blockQ: 64, seqLens: [100, 100] })
   */
  static fromDense(dense: TensorLike, opts: FromDenseOptions): BlockMask {
    return asCaller('BlockMask.fromDense', () => fromDenseImpl(callerName('BlockMask.fromDense'), dense, opts));
  }

  /**
   * A mask from compressed sparse rows over the Bm·Hm·nQ (b, h, q-block) rows
   * (FlashInfer's BSR `indptr` / `indices`).
   * @throws {RangeError} ERR_RANGE for a malformed indptr, an index outside [0, nK) or unsorted/duplicate indices in a row
   * @example BlockMask.fromCSR({ indptr: Int32Array.of(0, 1, 3), indices: Int32Array.of(0, 0, 1), shape: [1, 1, 2, 2], blockQ: 64 })
   */
  static fromCSR(spec: FromCSRSpec): BlockMask {
    return asCaller('BlockMask.fromCSR', () => fromCSRImpl(callerName('BlockMask.fromCSR'), spec));
  }

  /** The mask as u8 [Bm, Hm, nQ, nK] on the host: 1 where a block is computed (partial ∪ full). */
  toDense(): Tensor {
    this.assertAlive('BlockMask.toDense');
    const { Bm, Hm, nQ, nK, partial, full } = this._init;
    const rows = Bm * Hm * nQ;
    const out = new Uint8Array(rows * nK);
    for (const lists of full ? [partial, full] : [partial]) {
      for (let r = 0; r < rows; r++) {
        const c = lists.counts[r];
        for (let t = 0; t < c; t++) out[r * nK + lists.indices[r * lists.L + t]] = 1;
      }
    }
    return Tensor.from({ data: out, shape: [Bm, Hm, nQ, nK], dtype: 'u8' });
  }

  /**
   * Computed blocks / all blocks, over every (b, h, q-block) row the mask
   * stores (a mask broadcast over heads has the density of its expansion).
   * Blocks count equally, short tail blocks included.
   */
  density(): number {
    this.assertAlive('BlockMask.density');
    const { Bm, Hm, nQ, nK, partial, full } = this._init;
    let kept = 0;
    for (let r = 0; r < partial.counts.length; r++) kept += partial.counts[r] + (full ? full.counts[r] : 0);
    return kept / (Bm * Hm * nQ * nK);
  }

  /** FlexAttention's `sparsity()`: the percentage of blocks skipped, 100·(1 − density()). */
  sparsity(): number {
    return 100 * (1 - this.density());
  }

  /** The same mask with its tensors on `device` (this mask when already there). Blocks until copied. */
  to(device: string): BlockMask {
    this.assertAlive('BlockMask.to');
    const target = deviceOf(deviceOrdinal(device, 'BlockMask.to device'));
    if (target === this._init.device) return this;
    return new BlockMask(INTERNAL, { ...this._init, device: target });
  }

  /** Frees the mask's device tensors now (host ones just drop their data). Safe to call twice. */
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    for (const t of [this.kvNumBlocks, this.kvIndices, this.fullKvNumBlocks, this.fullKvIndices]) t?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `BlockMask([${this.blockShape.join(', ')}] blocks of ${this.blockQ}x${this.blockK}, seqLens [${this.seqLens.join(', ')}], ${this.device}${this._disposed ? ', disposed' : ''})`;
  }

  private assertAlive(what: string): void {
    if (this._disposed) throw new TokenSieveError('ERR_DISPOSED', `${what}: the mask has been disposed`);
  }
}

// ---------------------------------------------------------------------------
// validation helpers

/** Block sizes: positive integers (the CUDA kernel narrows this to its tile sizes). */
function blockSizes(op: string, blockQ: unknown, blockK: unknown, defaultQ?: number): { blockQ: number; blockK: number } {
  const bq = int(op, 'blockQ', blockQ === undefined ? defaultQ : blockQ, 1, MAX_DIM);
  const bk = int(op, 'blockK', blockK === undefined ? bq : blockK, 1, MAX_DIM);
  return { blockQ: bq, blockK: bk };
}

function seqLensOf(op: string, v: unknown): [number, number] {
  if (!Array.isArray(v) || v.length !== 2) throw invalid('ERR_ARG', `${op} seqLens`, '[query tokens, key tokens]', v);
  return [int(op, 'seqLens[0]', v[0], 1, MAX_DIM), int(op, 'seqLens[1]', v[1], 1, MAX_DIM)];
}

/** An i32 input as a host Int32Array (contiguous copy or view) with its shape and device. */
function indexInput(op: string, name: string, v: unknown, flatShape: (n: number) => number[]): { data: Int32Array; shape: number[]; device: Device } {
  if (v instanceof Int32Array) return { data: v, shape: flatShape(v.length), device: 'cpu' };
  const t = toTensor(v, name);
  if (t.dtype !== 'i32') throw makeError('ERR_DTYPE', `Expected i32 for ${name} of ${op} but received ${t.dtype}`);
  const host = t.isHost ? t.contiguous() : t.toHost();
  const data = host.data as Int32Array;
  return { data: host.offset === 0 && data.length === host.numel ? data : data.subarray(host.offset, host.offset + host.numel), shape: t.shape.slice(), device: t.device };
}

function sameDevice(op: string, items: ReadonlyArray<[string, { device: Device } | undefined]>): Device {
  let first: [string, Device] | undefined;
  for (const [name, it] of items) {
    if (!it) continue;
    if (!first) first = [name, it.device];
    else if (it.device !== first[1]) {
      throw new TokenSieveError('ERR_DEVICE', `${op}: expected ${name} on ${first[1]} (the device of ${first[0]}) but it is on ${it.device}`);
    }
  }
  return first ? first[1] : 'cpu';
}

function shapeStr(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

/** "[b, h, i]" of a flat row index, for messages. */
function rowAt(r: number, Hm: number, nQ: number): string {
  const i = r % nQ;
  const h = Math.floor(r / nQ) % Hm;
  const b = Math.floor(r / (nQ * Hm));
  return `[${b}, ${h}, ${i}]`;
}

/**
 * Counts in [0, L]; the first count indices of each row in [0, nK) and
 * strictly ascending (a duplicate would make the kernel add a block twice).
 */
function checkLists(op: string, prefix: string, lists: HostLists, Hm: number, nQ: number, nK: number): void {
  const { counts, indices, L } = lists;
  for (let r = 0; r < counts.length; r++) {
    const c = counts[r];
    if (c < 0 || c > L) {
      throw makeError('ERR_RANGE', `${op}: ${prefix}NumBlocks${rowAt(r, Hm, nQ)} = ${c} is outside [0, ${L}] (L, the last dimension of ${prefix}Indices)`);
    }
    let prev = -1;
    for (let t = 0; t < c; t++) {
      const j = indices[r * L + t];
      if (j < 0 || j >= nK) {
        throw makeError('ERR_RANGE', `${op}: ${prefix}Indices${rowAt(r, Hm, nQ).slice(0, -1)}, ${t}] = ${j} is outside [0, ${nK}) (nK = ⌈seqLens[1] / blockK⌉)`);
      }
      if (j <= prev) {
        throw makeError('ERR_RANGE', `${op}: ${prefix}Indices${rowAt(r, Hm, nQ)} must be strictly ascending in its first ${c} entries but entry ${t} is ${j} after ${prev}${j === prev ? ' (a duplicate)' : ''}`);
      }
      prev = j;
    }
  }
}

/** No block in both the partial and the full list of a row (the kernel would add it twice). */
function checkDisjoint(op: string, a: HostLists, b: HostLists, Hm: number, nQ: number): void {
  for (let r = 0; r < a.counts.length; r++) {
    let i = 0;
    let j = 0;
    const ca = a.counts[r];
    const cb = b.counts[r];
    while (i < ca && j < cb) {
      const x = a.indices[r * a.L + i];
      const y = b.indices[r * b.L + j];
      if (x === y) {
        throw makeError('ERR_RANGE', `${op}: kv block ${x} of row ${rowAt(r, Hm, nQ)} is in both kvIndices and fullKvIndices (the lists must be disjoint)`);
      }
      if (x < y) i++;
      else j++;
    }
  }
}

function listsFrom(
  op: string, prefix: string, numIn: unknown, idxIn: unknown, nQ: number,
): { lists: HostLists; Bm: number; Hm: number; device: Device } {
  const num = indexInput(op, `${prefix}NumBlocks`, numIn, (n) => [1, 1, n]);
  if (num.shape.length !== 3) {
    throw makeError('ERR_SHAPE', `Expected ${prefix}NumBlocks of rank 3 [Bm, Hm, nQ] for ${op} but received shape ${shapeStr(num.shape)}`);
  }
  const [Bm, Hm, nq] = num.shape;
  if (Bm < 1 || Hm < 1) throw makeError('ERR_SHAPE', `Expected ${prefix}NumBlocks [Bm, Hm, nQ] with Bm, Hm >= 1 for ${op} but received shape ${shapeStr(num.shape)}`);
  if (nq !== nQ) {
    throw makeError('ERR_SHAPE', `Expected ${prefix}NumBlocks of shape [Bm, Hm, ${nQ}] for ${op} (nQ = ⌈seqLens[0] / blockQ⌉) but received ${shapeStr(num.shape)}`);
  }
  // An Int32Array of indices takes the rows of the counts: [Bm, Hm, nQ, length / (Bm·Hm·nQ)].
  const rows = Bm * Hm * nQ;
  const idx = indexInput(op, `${prefix}Indices`, idxIn, (n) => [Bm, Hm, nQ, n % rows === 0 ? n / rows : -1]);
  if (idx.shape.length !== 4 || idx.shape[0] !== Bm || idx.shape[1] !== Hm || idx.shape[2] !== nQ || idx.shape[3] < 1) {
    const got = idx.shape.includes(-1) ? `${idx.data.length} entries (not a multiple of Bm·Hm·nQ = ${rows})` : shapeStr(idx.shape);
    throw makeError('ERR_SHAPE', `Expected ${prefix}Indices of shape [${Bm}, ${Hm}, ${nQ}, L] with L >= 1 (matching ${prefix}NumBlocks) for ${op} but received ${got}`);
  }
  return { lists: { counts: num.data, indices: idx.data, L: idx.shape[3] }, Bm, Hm, device: sameDevice(op, [[`${prefix}NumBlocks`, num], [`${prefix}Indices`, idx]]) };
}

function fromKvBlocksImpl(op: string, spec: FromKvBlocksSpec): BlockMask {
  const o = checkOptions(op, spec, ['kvNumBlocks', 'kvIndices', 'fullKvNumBlocks', 'fullKvIndices', 'blockQ', 'blockK', 'seqLens']);
  const { blockQ, blockK } = blockSizes(op, o.blockQ, o.blockK, 128);
  const seqLens = seqLensOf(op, o.seqLens);
  const nQ = Math.ceil(seqLens[0] / blockQ);
  const nK = Math.ceil(seqLens[1] / blockK);
  if (o.kvNumBlocks === undefined || o.kvIndices === undefined) throw makeError('ERR_ARG', `${op}: kvNumBlocks and kvIndices are required`);
  if ((o.fullKvNumBlocks === undefined) !== (o.fullKvIndices === undefined)) {
    throw makeError('ERR_ARG', `${op}: pass fullKvNumBlocks and fullKvIndices together (or neither)`);
  }
  const partial = listsFrom(op, 'kv', o.kvNumBlocks, o.kvIndices, nQ);
  const full = o.fullKvNumBlocks === undefined ? undefined : listsFrom(op, 'fullKv', o.fullKvNumBlocks, o.fullKvIndices, nQ);
  if (full && (full.Bm !== partial.Bm || full.Hm !== partial.Hm)) {
    throw makeError('ERR_SHAPE', `Expected fullKvNumBlocks of shape [${partial.Bm}, ${partial.Hm}, ${nQ}] (as kvNumBlocks) for ${op} but received [${full.Bm}, ${full.Hm}, ${nQ}]`);
  }
  const device = sameDevice(op, [['kvNumBlocks', partial], ['fullKvNumBlocks', full]]);
  checkLists(op, 'kv', partial.lists, partial.Hm, nQ, nK);
  if (full) {
    checkLists(op, 'fullKv', full.lists, partial.Hm, nQ, nK);
    checkDisjoint(op, partial.lists, full.lists, partial.Hm, nQ);
  }
  return new BlockMask(INTERNAL, { blockQ, blockK, seqLens, Bm: partial.Bm, Hm: partial.Hm, nQ, nK, partial: partial.lists, full: full?.lists, device });
}

/** seqLens given, or the default of full blocks; checked against nQ, nK. */
function seqLensFor(op: string, v: unknown, nQ: number, nK: number, blockQ: number, blockK: number, what: string): [number, number] {
  if (v === undefined) {
    if (nQ * blockQ > MAX_DIM || nK * blockK > MAX_DIM) throw makeError('ERR_RANGE', `${op}: ${nQ}·${blockQ} or ${nK}·${blockK} tokens is over 2^31 − 1`);
    return [nQ * blockQ, nK * blockK];
  }
  const s = seqLensOf(op, v);
  if (Math.ceil(s[0] / blockQ) !== nQ || Math.ceil(s[1] / blockK) !== nK) {
    throw makeError('ERR_SHAPE', `${op}: seqLens [${s.join(', ')}] with blocks ${blockQ}x${blockK} give ${Math.ceil(s[0] / blockQ)}x${Math.ceil(s[1] / blockK)} blocks but ${what} has ${nQ}x${nK}`);
  }
  return s;
}

/** Dense 0/1 rows → lists (L = max(1, largest count): compact at low density). */
function listsFromDenseRows(dense: Uint8Array, rows: number, nK: number): HostLists {
  const counts = new Int32Array(rows);
  let L = 1;
  for (let r = 0; r < rows; r++) {
    let c = 0;
    for (let j = 0; j < nK; j++) c += dense[r * nK + j];
    counts[r] = c;
    if (c > L) L = c;
  }
  const indices = new Int32Array(rows * L);
  for (let r = 0; r < rows; r++) {
    let t = 0;
    for (let j = 0; j < nK; j++) if (dense[r * nK + j]) indices[r * L + t++] = j;
  }
  return { counts, indices, L };
}

function fromDenseImpl(op: string, denseIn: TensorLike, opts: FromDenseOptions): BlockMask {
  const o = checkOptions(op, opts, ['blockQ', 'blockK', 'seqLens']);
  if (opts === undefined) throw makeError('ERR_ARG', `${op}: options { blockQ, blockK?, seqLens? } are required`);
  const { blockQ, blockK } = blockSizes(op, o.blockQ, o.blockK);
  let t = toTensor(denseIn, 'dense');
  if (t.dtype !== 'u8') throw makeError('ERR_DTYPE', `Expected u8 (0/1) for dense of ${op} but received ${t.dtype}`);
  if (t.ndim === 2) t = t.view([1, 1, t.shape[0], t.shape[1]], [0, 0, t.strides[0], t.strides[1]]);
  if (t.ndim !== 4 || t.shape.some((d) => d < 1)) {
    throw makeError('ERR_SHAPE', `Expected dense of rank 4 [Bm, Hm, nQ, nK] (or 2 [nQ, nK]) with no empty dimension for ${op} but received shape ${shapeStr(t.shape)}`);
  }
  const [Bm, Hm, nQ, nK] = t.shape;
  const seqLens = seqLensFor(op, o.seqLens, nQ, nK, blockQ, blockK, 'dense');
  const device = t.device;
  const host = t.isHost ? t.contiguous() : t.toHost();
  const data = (host.data as Uint8Array).subarray(host.offset, host.offset + host.numel);
  for (let i = 0; i < data.length; i++) {
    if (data[i] > 1) {
      const j = i % nK;
      throw makeError('ERR_RANGE', `${op}: dense${rowAt(Math.floor(i / nK), Hm, nQ).slice(0, -1)}, ${j}] = ${data[i]}; a block mask holds 0 or 1`);
    }
  }
  const partial = listsFromDenseRows(data, Bm * Hm * nQ, nK);
  return new BlockMask(INTERNAL, { blockQ, blockK, seqLens, Bm, Hm, nQ, nK, partial, device, owned: true });
}

function fromCSRImpl(op: string, spec: FromCSRSpec): BlockMask {
  const o = checkOptions(op, spec, ['indptr', 'indices', 'shape', 'blockQ', 'blockK', 'seqLens']);
  const { blockQ, blockK } = blockSizes(op, o.blockQ, o.blockK);
  const shape = o.shape;
  if (!Array.isArray(shape) || shape.length !== 4) throw invalid('ERR_ARG', `${op} shape`, '[Bm, Hm, nQ, nK] (in blocks)', shape);
  const [Bm, Hm, nQ, nK] = shape.map((d, i) => int(op, `shape[${i}]`, d, 1, MAX_DIM));
  const seqLens = seqLensFor(op, o.seqLens, nQ, nK, blockQ, blockK, 'shape');
  const rows = Bm * Hm * nQ;
  const ptr = indexInput(op, 'indptr', o.indptr, (n) => [n]);
  const idx = indexInput(op, 'indices', o.indices, (n) => [n]);
  if (ptr.shape.length !== 1 || ptr.shape[0] !== rows + 1) {
    throw makeError('ERR_SHAPE', `Expected indptr of shape [${rows + 1}] (Bm·Hm·nQ + 1) for ${op} but received ${shapeStr(ptr.shape)}`);
  }
  if (idx.shape.length !== 1) throw makeError('ERR_SHAPE', `Expected indices of rank 1 for ${op} but received shape ${shapeStr(idx.shape)}`);
  const device = sameDevice(op, [['indptr', ptr], ['indices', idx]]);
  const p = ptr.data;
  if (p[0] !== 0) throw makeError('ERR_RANGE', `${op}: indptr[0] must be 0 but is ${p[0]}`);
  let L = 1;
  for (let r = 0; r < rows; r++) {
    const c = p[r + 1] - p[r];
    if (c < 0) throw makeError('ERR_RANGE', `${op}: indptr must be non-decreasing but indptr[${r + 1}] = ${p[r + 1]} < indptr[${r}] = ${p[r]}`);
    if (c > L) L = c;
  }
  if (p[rows] !== idx.data.length) {
    throw makeError('ERR_RANGE', `${op}: indptr[${rows}] must equal the length of indices (${idx.data.length}) but is ${p[rows]}`);
  }
  if (L > nK) {
    // More entries than kv blocks: some entry repeats or is out of range; say which row.
    let r = 0;
    while (p[r + 1] - p[r] !== L) r++;
    throw makeError('ERR_RANGE', `${op}: row ${rowAt(r, Hm, nQ)} lists ${L} kv blocks but there are only nK = ${nK}`);
  }
  const counts = new Int32Array(rows);
  const indices = new Int32Array(rows * L);
  for (let r = 0; r < rows; r++) {
    const c = p[r + 1] - p[r];
    counts[r] = c;
    indices.set(idx.data.subarray(p[r], p[r] + c), r * L);
  }
  const partial = { counts, indices, L };
  checkLists(op, 'kv', partial, Hm, nQ, nK);
  return new BlockMask(INTERNAL, { blockQ, blockK, seqLens, Bm, Hm, nQ, nK, partial, device, owned: true });
}

/**
 * @internal Throws unless `mask` fits an attention call of batch B, H query
 * heads, Nq query and Nk key tokens: Bm ∈ {1, B}, Hm ∈ {1, H}, seqLens = [Nq, Nk].
 */
export function checkMaskFits(op: string, mask: BlockMaskLike, B: number, H: number, Nq: number, Nk: number): void {
  if (typeof mask !== 'object' || mask === null) throw invalid('ERR_ARG', `${op} mask`, "a BlockMask or 'dense'", mask);
  const counts = toTensor(mask.kvNumBlocks, 'mask.kvNumBlocks');
  if (counts.ndim !== 3) throw makeError('ERR_SHAPE', `Expected mask.kvNumBlocks of rank 3 [Bm, Hm, nQ] for ${op} but received shape [${counts.shape.join(', ')}]`);
  const [Bm, Hm] = counts.shape;
  if (Bm !== 1 && Bm !== B) throw makeError('ERR_SHAPE', `${op}: the mask's batch dimension is ${Bm}; expected 1 (broadcast) or ${B} (the batch)`);
  if (Hm !== 1 && Hm !== H) throw makeError('ERR_SHAPE', `${op}: the mask's head dimension is ${Hm}; expected 1 (broadcast) or ${H} (the query heads)`);
  if (mask.seqLens[0] !== Nq || mask.seqLens[1] !== Nk) {
    throw makeError('ERR_SHAPE', `${op}: the mask is for seqLens [${mask.seqLens.join(', ')}] but the attention has [${Nq}, ${Nk}] tokens`);
  }
}

/** @internal A mask from host dense rows (calibrate/predict): validated by construction. */
export function maskFromDenseRows(
  dense: Uint8Array, dims: { Bm: number; Hm: number; nQ: number; nK: number }, blocks: { blockQ: number; blockK: number }, seqLens: [number, number], device: Device,
): BlockMask {
  const partial = listsFromDenseRows(dense, dims.Bm * dims.Hm * dims.nQ, dims.nK);
  return new BlockMask(INTERNAL, { ...blocks, seqLens, ...dims, partial, device, owned: true });
}

