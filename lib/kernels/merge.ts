/**
 * Token merging: ToMe's bipartite soft matching (and tomesd's 2-D split), the
 * scatter merge that applies a matching, unmerge, the compact source map, and
 * VisionZip/VisionDrop contextual merging.
 *
 * A matching is a {@link MergePlan}: `assign` (i32 [B, N]) gives the output
 * slot of every input token. Merging reduces the tokens of each slot, unmerging
 * gathers by `assign`, and composing a patch→token map with the plan gathers
 * `assign` by that map.
 */
import { Device, deviceOf } from '../device';
import type { NativeResult } from '../../typings/native';
import { describe, invalid, makeError, TokenSieveError } from '../errors';
import { native, opParams } from '../native';
import { allocate, Tensor, TensorLike, toTensor } from '../tensor';
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
import { planGather } from './select';

/** tomesd's 2-D split of an h×w token grid into sy×sx windows, one destination per window. */
export interface Split2d {
  /** Grid width and height in tokens (w·h must equal N). */
  w: number;
  h: number;
  /** Window width and height (1 <= sx <= w, 1 <= sy <= h, sx·sy >= 2). */
  sx: number;
  sy: number;
}

/**
 * How tokens are split into candidates (a, sources) and destinations (b).
 * - `'parity'` (default, ToMe): a = even indices, b = odd indices.
 * - `{ grid2d }`: the top-left token of every window is a destination (tomesd `no_rand`).
 * - `{ random2d }`: one destination per window drawn from `seed` (see {@link split2d}).
 * Leftover border tokens (h % sy rows, w % sx columns) are always sources.
 */
export type MergeSplit = 'parity' | { grid2d: Split2d } | { random2d: Split2d & { seed: number } };

/**
 * Precision of the similarity scores.
 * - `'f32'` (default): exact f32 cosines; the CPU and CUDA back ends give
 *   bit-identical scores (the same sequential f32 chain), hence identical plans.
 * - `'bf16'`: the L2-normalised rows (computed exactly as for 'f32') are rounded
 *   to bf16 (nearest even), and a score is the sum of the products of those
 *   bf16 values (each exact in f32), accumulated in f32 — what ToMe computes in
 *   a bf16 model. On CUDA it runs on the tensor cores (sm_80+), on a CPU with
 *   AVX512_BF16 on the bf16 dot tile (vdpbf16ps: 2× the f32 tile's
 *   multiply-adds); the back ends differ only in the order of the f32
 *   additions, so plans agree wherever no two candidates are within float
 *   rounding of each other. Any metric dtype.
 */
export type MatchPrecision = 'f32' | 'bf16';

const PRECISION_CODE: Record<MatchPrecision, number> = { f32: 0, bf16: 1 };

export interface BipartiteOptions {
  /** ToMe's class_token / distill_token: CLS must be token 0, the distill token token 1. Parity split only. */
  protect?: { cls?: boolean; distill?: boolean };
  split?: MergeSplit;
  /** Score precision, `'f32'` (default, exact) or `'bf16'` (tensor cores on CUDA); see {@link MatchPrecision}. */
  precision?: MatchPrecision;
  stream?: bigint;
  wait?: boolean;
}

export type MergeMode = 'wavg' | 'mean' | 'sum' | 'amax';

export interface MergeOptions {
  /**
   * `'mean'` (default, ToMe's merge() default: scatter_reduce mean with the
   * destination included), `'sum'`, `'amax'`, or `'wavg'` (ToMe's merge_wavg:
   * Σ x·size / Σ size, returns the new sizes).
   */
  mode?: MergeMode;
  /** wavg only: f32 [B, N, 1] token sizes (default: all ones). */
  sizes?: TensorLike;
  /**
   * Write into these contiguous tensors (on x's device) instead of
   * allocating new ones: `x` [B, N − r, C] of x's dtype and, with `'wavg'`,
   * `sizes` f32 [B, N − r, 1]. Reuse them across calls (a plan's shapes do
   * not change between layers of one image size) to keep allocation and
   * first-touch page faults out of a hot loop; they must not share memory
   * with the inputs. The result then holds these tensors.
   */
  out?: { x: TensorLike; sizes?: TensorLike };
  stream?: bigint;
  wait?: boolean;
}

export interface UnmergeOptions {
  stream?: bigint;
  wait?: boolean;
  /**
   * Write into this contiguous tensor ([B, N, C], x's dtype and device, not
   * sharing memory with x) instead of allocating one: reuse it across calls.
   * The result is then this tensor.
   */
  out?: TensorLike;
}

export interface MergeResult {
  /** [B, N − r, C], dtype of x: [unmerged, destinations] (CLS, distill first). */
  x: Tensor;
  /** wavg only: f32 [B, N − r, 1], how many original tokens each output token stands for. */
  sizes?: Tensor;
}

const MODE_CODE: Record<MergeMode, number> = { sum: 0, mean: 1, amax: 2, wavg: 3 };

/** Plans that were disposed (a plan is frozen, so this lives outside it). */
const disposedPlans = new WeakSet<object>();

/**
 * The result of a bipartite soft matching. Its tensors live on the metric's
 * device; dispose() frees them (device memory) — a disposed plan is rejected.
 */
export class MergePlan {
  /** Batch size. */
  readonly batch: number;
  /** Tokens before the merge. */
  readonly n: number;
  /** Tokens merged away (after the cap; 0 for an identity plan). */
  readonly r: number;
  /** The device of every tensor of the plan. */
  readonly device: Device;
  /** i32 [B, N]: output slot of every input token, in [0, N − r). */
  readonly assign: Tensor;
  /** i32 [B, Na − r]: unmerged candidate tokens, in output order (undefined when none). */
  readonly unmerged: Tensor | undefined;
  /** i32 [B, r]: merged tokens, most similar first (undefined when r = 0). */
  readonly sources: Tensor | undefined;
  /** i32 [B, r]: the token each of `sources` merged into. */
  readonly destinations: Tensor | undefined;
  /** @internal */
  constructor(init: { batch: number; n: number; r: number; device: Device; assign: Tensor; unmerged?: Tensor; sources?: Tensor; destinations?: Tensor }) {
    this.batch = init.batch;
    this.n = init.n;
    this.r = init.r;
    this.device = init.device;
    this.assign = init.assign;
    this.unmerged = init.unmerged;
    this.sources = init.sources;
    this.destinations = init.destinations;
    // Its tensors and counts describe each other: none of them can be swapped.
    Object.freeze(this);
  }

  /** Tokens after the merge. */
  get nOut(): number {
    return this.n - this.r;
  }

  get disposed(): boolean {
    return disposedPlans.has(this);
  }

  dispose(): void {
    if (disposedPlans.has(this)) return;
    disposedPlans.add(this);
    for (const t of [this.assign, this.unmerged, this.sources, this.destinations]) t?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal */
  check(op: string): void {
    if (!(this instanceof MergePlan)) throw invalid('ERR_ARG', `${op} plan`, 'a MergePlan', this);
    if (disposedPlans.has(this)) throw new TokenSieveError('ERR_DISPOSED', `${op}: the MergePlan was disposed`);
    for (const [name, t] of [['assign', this.assign], ['unmerged', this.unmerged], ['sources', this.sources], ['destinations', this.destinations]] as const) {
      if (t?.disposed) throw new TokenSieveError('ERR_DISPOSED', `${op}: the MergePlan's ${name} was disposed`);
      t?.assertReadable(`${op} plan.${name}`);
    }
  }

  /**
   * @internal Throws ERR_RANGE unless every assign entry is an output slot in
   * [0, N − r). The merge kernels check this themselves; mergeSource copies
   * entries out without a kernel that looks at them, so it asks here (host
   * plans: a scan; a device plan's memory cannot be written from JS without
   * going around tokensieve).
   */
  checkAssign(op: string): void {
    if (!this.assign.isHost) return;
    const a = this.assign.data as Int32Array;
    const M = this.nOut;
    for (let i = 0; i < a.length; i++) {
      if (!(a[i] >= 0 && a[i] < M)) throw makeError('ERR_RANGE', `${op}: the plan's assign[${i}] = ${a[i]} is not an output slot in [0, ${M})`);
    }
  }
}

function checkPlan(op: string, plan: unknown): MergePlan {
  if (!(plan instanceof MergePlan)) throw invalid('ERR_ARG', `${op} plan`, 'a MergePlan', plan);
  plan.check(op);
  return plan;
}

/**
 * mulberry32, the 32-bit generator documented for the random 2-D split:
 * state += 0x6D2B79F5, then the xorshift-multiply output function. Window
 * choices are floor(u32 · (sx·sy) / 2³²), drawn in raster order of windows.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/**
 * tomesd's 2-D split (bipartite_soft_matching_random2d) as token lists.
 * Window (wy, wx) of the (h // sy)×(w // sx) windows gets one destination at
 * offset k = (dy·sx + dx) inside it: k = 0 (top-left) without a seed; with a
 * seed, k = floor(u · sx·sy / 2³²) where u is the next mulberry32(seed) output,
 * windows drawn row by row. tomesd draws k with torch.randint from a generator
 * forked from torch's global state, which cannot be reproduced bit for bit, so
 * the destinations differ from tomesd's for the same "seed"; the distribution
 * (uniform per window, one pattern shared by the batch) is the same.
 * Destinations and sources are each listed in ascending token order (the
 * order a stable argsort of tomesd's idx_buffer gives).
 * @throws {RangeError} ERR_SHAPE when w·h ≠ n; ERR_RANGE for a window that does not fit or holds one token
 */
export function split2d(op: string, n: number, s: Split2d, seed: number | undefined): { a: Int32Array; b: Int32Array } {
  const o = checkOptions(`${op} split`, s, seed === undefined ? ['w', 'h', 'sx', 'sy'] : ['w', 'h', 'sx', 'sy', 'seed']);
  const w = int(op, 'split w', o.w, 1, n);
  const h = int(op, 'split h', o.h, 1, n);
  if (w * h !== n) throw makeError('ERR_SHAPE', `Expected ${op} split w·h (${w}·${h} = ${w * h}) to equal the N = ${n} tokens of the metric`);
  const sx = int(op, 'split sx', o.sx, 1, w);
  const sy = int(op, 'split sy', o.sy, 1, h);
  if (sx * sy < 2) throw makeError('ERR_RANGE', `Expected ${op} split windows of at least 2 tokens but sx·sy = ${sx * sy}`);
  const next = seed === undefined ? undefined : mulberry32(seed);
  const isDst = new Uint8Array(n);
  const hsy = Math.floor(h / sy);
  const wsx = Math.floor(w / sx);
  for (let wy = 0; wy < hsy; wy++) {
    for (let wx = 0; wx < wsx; wx++) {
      const k = next ? Math.floor((next() * (sx * sy)) / 4294967296) : 0;
      const dy = Math.floor(k / sx);
      const dx = k % sx;
      isDst[(wy * sy + dy) * w + wx * sx + dx] = 1;
    }
  }
  const b = new Int32Array(hsy * wsx);
  const a = new Int32Array(n - b.length);
  let ia = 0;
  let ib = 0;
  for (let t = 0; t < n; t++) {
    if (isDst[t]) b[ib++] = t;
    else a[ia++] = t;
  }
  return { a, b };
}

function parseSplit(op: string, n: number, split: unknown): { a: Int32Array; b: Int32Array; parity: boolean } {
  if (split === undefined || split === 'parity') {
    const a = new Int32Array(Math.ceil(n / 2));
    const b = new Int32Array(Math.floor(n / 2));
    for (let i = 0; i < a.length; i++) a[i] = 2 * i;
    for (let i = 0; i < b.length; i++) b[i] = 2 * i + 1;
    return { a, b, parity: true };
  }
  if (typeof split !== 'object' || split === null || Array.isArray(split)) {
    throw invalid('ERR_ARG', `${op} split`, "'parity', { grid2d } or { random2d }", split);
  }
  const keys = Object.keys(split);
  if (keys.length !== 1 || (keys[0] !== 'grid2d' && keys[0] !== 'random2d')) {
    throw invalid('ERR_ARG', `${op} split`, "'parity', { grid2d } or { random2d }", split);
  }
  const s = (split as Record<string, unknown>)[keys[0]];
  if (typeof s !== 'object' || s === null) throw invalid('ERR_ARG', `${op} split.${keys[0]}`, 'an object', s);
  let seed: number | undefined;
  if (keys[0] === 'random2d') {
    const sd = (s as Record<string, unknown>).seed;
    if (typeof sd !== 'number' || !Number.isInteger(sd) || sd < 0 || sd > 0xffffffff) {
      throw invalid('ERR_ARG', `${op} split.random2d.seed`, 'an integer in [0, 2³² − 1]', sd);
    }
    seed = sd;
  }
  const { a, b } = split2d(op, n, s as Split2d, seed);
  return { a, b, parity: false };
}

// Device copies of the splits a successful call has used, per device: a split
// is a pure function of N and the split option, and uploading one from
// pageable memory synchronises the stream, which a call with `wait: false`
// must not do. An entry is found by a hash of the split and confirmed by
// comparing it; at most SPLIT_CACHE_PER_DEVICE entries per device (beyond
// them a split is uploaded per call, as a random2d split with a new seed per
// call would be), kept for the life of the process (2 · N i32 each), never
// freed, so no running kernel can read a freed one.
const SPLIT_CACHE_PER_DEVICE = 16;
interface CachedSplit { a: Int32Array; b: Int32Array; devA: Tensor; devB: Tensor }
const splitCache = new Map<string, CachedSplit>();
const splitCacheCount = new Map<number, number>();

function splitKey(ordinal: number, a: Int32Array, b: Int32Array): string {
  let h = 0x811c9dc5;  // FNV-1a over the lengths and the entries
  const mix = (v: number): void => {
    h = Math.imul(h ^ (v & 0xff), 0x01000193);
    h = Math.imul(h ^ ((v >>> 8) & 0xff), 0x01000193);
    h = Math.imul(h ^ ((v >>> 16) & 0xff), 0x01000193);
    h = Math.imul(h ^ (v >>> 24), 0x01000193);
  };
  mix(a.length);
  mix(b.length);
  for (let i = 0; i < a.length; i++) mix(a[i]);
  for (let i = 0; i < b.length; i++) mix(b[i]);
  return `${ordinal}:${a.length}:${b.length}:${h >>> 0}`;
}

function sameSplit(e: CachedSplit, a: Int32Array, b: Int32Array): boolean {
  if (e.a.length !== a.length || e.b.length !== b.length || e.devA.disposed || e.devB.disposed) return false;
  for (let i = 0; i < a.length; i++) if (e.a[i] !== a[i]) return false;
  for (let i = 0; i < b.length; i++) if (e.b[i] !== b[i]) return false;
  return true;
}

/** Split entries currently kept on devices (for tests). */
export function cachedSplitCount(): number {
  return splitCache.size;
}

function planMatch(outs: CallOutputs, metricIn: TensorLike, r: unknown, opts: BipartiteOptions | undefined): OpPlan<MergePlan> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['protect', 'split', 'precision', 'stream', 'wait']);
  const precision = oneOf(op, 'precision', o.precision, ['f32', 'bf16'] as const, 'f32');
  const metric = toTensor(metricIn, 'metric');
  if (metric.ndim !== 3 || metric.shape.some((d) => d < 1)) {
    throw makeError('ERR_SHAPE', `Expected metric of rank 3 [B, N, C] for ${op} but received shape [${metric.shape.join(', ')}]`);
  }
  expectFloat(op, 'metric', metric);
  expectInnerContiguous(op, 'metric', metric);
  const [B, N] = metric.shape;
  if (typeof r !== 'number' || !Number.isInteger(r)) throw invalid('ERR_ARG', `${op} r`, 'an integer', r);
  if (r < 0) throw makeError('ERR_RANGE', `Expected ${op} r >= 0 but received ${describe(r)}`);
  const prot = o.protect === undefined ? {} : checkOptions(`${op} protect`, o.protect, ['cls', 'distill']);
  const cls = bool(op, 'protect.cls', prot.cls, false);
  const distill = bool(op, 'protect.distill', prot.distill, false);
  const split = parseSplit(op, N, o.split);
  if (!split.parity && (cls || distill)) {
    throw makeError('ERR_ARG', `${op}: protect (CLS/distill) needs the parity split, as in ToMe (tomesd has no protected tokens)`);
  }
  const ordinal = commonDevice(op, [['metric', metric]]);
  const s = stream(op, o.stream, metric.stream);
  const device = deviceOf(ordinal);
  const wait = bool(op, 'wait', o.wait, true);
  // ToMe: r = min(r, (N − protected) // 2); tomesd: r = min(#src, r).
  const protectedCount = (cls ? 1 : 0) + (distill ? 1 : 0);
  const cap = split.parity ? Math.floor((N - protectedCount) / 2) : split.a.length;
  const rr = Math.min(r, cap);
  if (rr <= 0) {
    // ToMe's do_nothing: the tokens stay where they are.
    const ident = new Int32Array(B * N);
    for (let b = 0; b < B; b++) for (let i = 0; i < N; i++) ident[b * N + i] = i;
    const host = Tensor.from({ data: ident, shape: [B, N] });
    const unmHost = Tensor.from({ data: ident.slice(), shape: [B, N] });
    const plan = new MergePlan({
      batch: B, n: N, r: 0, device,
      assign: ordinal < 0 ? host : outs.adopt(host.to(device)),
      unmerged: ordinal < 0 ? unmHost : outs.adopt(unmHost.to(device)),
    });
    return { result: plan };
  }
  if (split.a.length === 0 || split.b.length === 0) {
    throw makeError('ERR_RANGE', `${op}: the split leaves no ${split.a.length === 0 ? 'sources' : 'destinations'} for N = ${N}`);
  }
  const hostA = Tensor.from({ data: split.a, shape: [split.a.length] });
  const hostB = Tensor.from({ data: split.b, shape: [split.b.length] });
  // On a device: the cached copy, else temporaries (adopted so a failure
  // frees them; after a success, cleanup caches them or disposes them).
  const key = ordinal < 0 ? '' : splitKey(ordinal, split.a, split.b);
  const hit = ordinal < 0 ? undefined : splitCache.get(key);
  const cached = hit !== undefined && sameSplit(hit, split.a, split.b);
  const splitA = ordinal < 0 ? hostA : cached ? hit.devA : outs.adopt(hostA.to(device));
  const splitB = ordinal < 0 ? hostB : cached ? hit.devB : outs.adopt(hostB.to(device));
  const nu = split.a.length - rr;
  const assign = outs.empty([B, N], 'i32', device, { stream: s });
  const unmerged = nu > 0 ? outs.empty([B, nu], 'i32', device, { stream: s }) : undefined;
  const sources = outs.empty([B, rr], 'i32', device, { stream: s });
  const destinations = outs.empty([B, rr], 'i32', device, { stream: s });
  const plan = new MergePlan({ batch: B, n: N, r: rr, device, assign, unmerged, sources, destinations });
  const params = opParams('bipartiteMatch', { wait: wait ? 1 : 0, r: rr, protectCls: cls ? 1 : 0, protectDistill: distill ? 1 : 0, precision: PRECISION_CODE[precision] });
  const md = metric.descriptor('metric');
  const ad = splitA.descriptor('splitA');
  const bd = splitB.descriptor('splitB');
  const asd = assign.descriptor('assign');
  const ud = unmerged?.descriptor('unmerged');
  const sd = sources.descriptor('sources');
  const dd = destinations.descriptor('destinations');
  return {
    result: plan,
    call: (async) => native().bipartiteMatch(params, md.meta, md.mem, ad.meta, ad.mem, bd.meta, bd.mem, asd.meta, asd.mem,
      ud?.meta, ud?.mem, sd.meta, sd.mem, dd.meta, dd.mem, s, async),
    cleanup: () => {
      if (ordinal < 0 || cached) return;
      const count = splitCacheCount.get(ordinal) ?? 0;
      if (hit === undefined && count < SPLIT_CACHE_PER_DEVICE) {
        splitCache.set(key, { a: split.a, b: split.b, devA: splitA, devB: splitB });
        splitCacheCount.set(ordinal, count + 1);
      } else {
        splitA.dispose();
        splitB.dispose();
      }
    },
  };
}

/**
 * ToMe's bipartite soft matching: the r most similar candidate tokens (cosine
 * of the L2-normalised metric against their best destination) are merged into
 * it. r is capped at (N − protected) // 2 (parity split) or the number of
 * sources (2-D split); r = 0 (or a cap of 0) gives an identity plan. Ties go
 * to the lower index on every device (stable). `precision: 'bf16'` rounds the
 * normalised rows to bf16 and runs the CUDA score pass on the tensor cores
 * (see {@link MatchPrecision}); the default `'f32'` is exact.
 * @example
 * const plan = await bipartiteSoftMatch(keysHeadMean, 16, { protect: { cls: true } }); // metric [B, 197, 64]
 * const { x, sizes } = await merge(plan, hidden, { mode: 'wavg', sizes: prevSizes });
 * const fast = await bipartiteSoftMatch(videoKeys, 3136, { precision: 'bf16' });    // metric [1, 12544, 4096] on cuda:0
 * @throws {RangeError} ERR_RANGE for r < 0 or a non-finite metric; ERR_SHAPE for a grid that is not N tokens
 * @throws {TypeError} ERR_ARG for an unknown precision
 */
export async function bipartiteSoftMatch(metric: TensorLike, r: number, opts?: BipartiteOptions): Promise<MergePlan> {
  return runOpAsync('bipartiteSoftMatch', callSite(bipartiteSoftMatch), (outs) => planMatch(outs, metric, r, opts));
}

/** Synchronous twin of {@link bipartiteSoftMatch}. */
export function bipartiteSoftMatchSync(metric: TensorLike, r: number, opts?: BipartiteOptions): MergePlan {
  return runOp('bipartiteSoftMatchSync', (outs) => planMatch(outs, metric, r, opts));
}

function planMerge(outs: CallOutputs, planIn: unknown, xIn: TensorLike, opts: MergeOptions | undefined): OpPlan<MergeResult> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['mode', 'sizes', 'out', 'stream', 'wait']);
  const plan = checkPlan(op, planIn);
  const x = toTensor(xIn, 'x');
  if (x.ndim !== 3 || x.shape.some((d) => d < 1)) {
    throw makeError('ERR_SHAPE', `Expected x of rank 3 [B, N, C] for ${op} but received shape [${x.shape.join(', ')}]`);
  }
  expectFloat(op, 'x', x);
  expectInnerContiguous(op, 'x', x);
  const [B, N, C] = x.shape;
  if (B !== plan.batch || N !== plan.n) {
    throw makeError('ERR_SHAPE', `Expected x of shape [${plan.batch}, ${plan.n}, C] (the plan's batch and tokens) for ${op} but received [${x.shape.join(', ')}]`);
  }
  const mode = oneOf(op, 'mode', o.mode, ['wavg', 'mean', 'sum', 'amax'] as const, 'mean');
  let sizes: Tensor | undefined;
  if (o.sizes !== undefined && o.sizes !== null) {
    if (mode !== 'wavg') throw makeError('ERR_ARG', `${op}: sizes are only used with mode 'wavg' (received mode '${mode}')`);
    sizes = toTensor(o.sizes, 'sizes');
    if (sizes.dtype !== 'f32') throw makeError('ERR_DTYPE', `Expected f32 sizes for ${op} but received ${sizes.dtype}`);
    if (sizes.ndim !== 3 || sizes.shape[0] !== B || sizes.shape[1] !== N || sizes.shape[2] !== 1) {
      throw makeError('ERR_SHAPE', `Expected sizes of shape [${B}, ${N}, 1] for ${op} but received [${sizes.shape.join(', ')}]`);
    }
    if (!sizes.isContiguous) sizes = sizes.contiguous();
  }
  const ordinal = commonDevice(op, [['plan', plan.assign], ['x', x], ['sizes', sizes]]);
  const s = stream(op, o.stream, x.stream);
  const device = deviceOf(ordinal);
  const M = plan.nOut;
  const given = o.out as MergeOptions['out'];
  if (given !== undefined && (typeof given !== 'object' || given === null || given.x === undefined)) {
    throw invalid('ERR_ARG', `${op} out`, mode === 'wavg' ? '{ x, sizes } tensors' : '{ x } tensors', given);
  }
  if (given !== undefined && mode === 'wavg' && given.sizes === undefined) {
    throw makeError('ERR_ARG', `${op}: mode 'wavg' writes the new sizes too: pass out.sizes (f32 [${B}, ${M}, 1])`);
  }
  if (given?.sizes !== undefined && mode !== 'wavg') {
    throw makeError('ERR_ARG', `${op}: out.sizes is only written with mode 'wavg' (received mode '${mode}')`);
  }
  // The kernel writes every element of both (each slot has a member).
  const out = output(outs, given?.x, [B, M, C], ordinal, s, 'out.x', x.dtype, true);
  const sizesOut = mode === 'wavg' ? output(outs, given?.sizes, [B, M, 1], ordinal, s, 'out.sizes') : undefined;
  if (given !== undefined) {
    expectDisjoint(op, [['x', x], ['sizes', sizes], ['plan', plan.assign], ['out.x', out], ['out.sizes', sizesOut]]);
  }
  const params = opParams('merge', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, nOut: M, mode: MODE_CODE[mode] });
  const xd = x.descriptor('x');
  const ad = plan.assign.descriptor('assign');
  const szd = sizes?.descriptor('sizes');
  const od = out.descriptor('out');
  const sod = sizesOut?.descriptor('sizesOut');
  return {
    result: sizesOut ? { x: out, sizes: sizesOut } : { x: out },
    call: (async) => native().merge(params, xd.meta, xd.mem, ad.meta, ad.mem, szd?.meta, szd?.mem, od.meta, od.mem, sod?.meta, sod?.mem, s, async),
  };
}

/**
 * Applies a plan: the tokens of every output slot reduced by `mode`. Output
 * order as ToMe's: [unmerged (CLS, distill first), destinations].
 * @example const { x, sizes } = mergeSync(plan, hidden, { mode: 'wavg', sizes }); // [B, N − r, C]
 * @throws {RangeError} ERR_SHAPE when x or sizes do not match the plan
 */
export async function merge(plan: MergePlan, x: TensorLike, opts?: MergeOptions): Promise<MergeResult> {
  return runOpAsync('merge', callSite(merge), (outs) => planMerge(outs, plan, x, opts));
}

/** Synchronous twin of {@link merge}. */
export function mergeSync(plan: MergePlan, x: TensorLike, opts?: MergeOptions): MergeResult {
  return runOp('mergeSync', (outs) => planMerge(outs, plan, x, opts));
}

function checkUnmerge(op: string, planIn: unknown, xIn: TensorLike): { plan: MergePlan; x: Tensor } {
  const plan = checkPlan(op, planIn);
  const x = toTensor(xIn, 'x');
  if (x.ndim !== 3 || x.shape[0] !== plan.batch || x.shape[1] !== plan.nOut) {
    throw makeError('ERR_SHAPE', `Expected x of shape [${plan.batch}, ${plan.nOut}, C] (the plan's merged tokens) for ${op} but received [${x.shape.join(', ')}]`);
  }
  commonDevice(op, [['plan', plan.assign], ['x', x]]);
  return { plan, x };
}

/**
 * Restores the original length and order: every token gets the value of the
 * slot it was merged into (a merged source gets its destination's value).
 * @example const full = await unmerge(plan, attnOut); // [B, N, C]
 */
export async function unmerge(plan: MergePlan, x: TensorLike, opts?: UnmergeOptions): Promise<Tensor> {
  return runOpAsync('unmerge', callSite(unmerge), (outs) => planUnmerge(outs, plan, x, opts));
}

/** Synchronous twin of {@link unmerge}. */
export function unmergeSync(plan: MergePlan, x: TensorLike, opts?: UnmergeOptions): Tensor {
  return runOp('unmergeSync', (outs) => planUnmerge(outs, plan, x, opts));
}

function planUnmerge(outs: CallOutputs, plan: MergePlan, x: TensorLike, opts: UnmergeOptions | undefined): OpPlan<Tensor> {
  const o = checkOptions(outs.op, opts, ['stream', 'wait', 'out']);
  const c = checkUnmerge(outs.op, plan, x);
  return planGather(outs, c.x, c.plan.assign, { ...o, checkIndices: false });
}

function checkSource(op: string, planIn: unknown, sourceIn: TensorLike | undefined): { plan: MergePlan; assign3: Tensor; source: Tensor; owned: boolean } {
  const plan = checkPlan(op, planIn);
  const assign3 = plan.assign.view([plan.batch, plan.n, 1]);
  if (sourceIn === undefined) {
    const ident = new Int32Array(plan.batch * plan.n);
    for (let b = 0; b < plan.batch; b++) for (let i = 0; i < plan.n; i++) ident[b * plan.n + i] = i;
    const host = Tensor.from({ data: ident, shape: [plan.batch, plan.n] });
    return { plan, assign3, source: plan.assign.isHost ? host : host.to(plan.device), owned: !plan.assign.isHost };
  }
  const source = toTensor(sourceIn, 'source');
  if (source.dtype !== 'i32') throw makeError('ERR_DTYPE', `Expected an i32 source map for ${op} but received ${source.dtype}`);
  if (source.ndim !== 2 || source.shape[0] !== plan.batch || source.shape[1] < 1) {
    throw makeError('ERR_SHAPE', `Expected a source map of shape [${plan.batch}, N_orig] for ${op} but received [${source.shape.join(', ')}]`);
  }
  commonDevice(op, [['plan', plan.assign], ['source', source]]);
  return { plan, assign3, source, owned: false };
}

/**
 * The compact source map after a merge: `out[b, p]` = the token that original
 * patch p is part of now (ToMe keeps a dense [B, N, N_orig] one-hot instead).
 * Start from `undefined` (every patch is its own token).
 * @example let source; source = await mergeSource(plan1, source); source = await mergeSource(plan2, source); // i32 [B, N_orig]
 * @throws {RangeError} ERR_RANGE when a source entry is not a token of the plan's input
 */
export async function mergeSource(plan: MergePlan, source?: TensorLike): Promise<Tensor> {
  return runOpAsync('mergeSource', callSite(mergeSource), (outs) => planSource(outs, plan, source));
}

/** Synchronous twin of {@link mergeSource}. */
export function mergeSourceSync(plan: MergePlan, source?: TensorLike): Tensor {
  return runOp('mergeSourceSync', (outs) => planSource(outs, plan, source));
}

function planSource(outs: CallOutputs, plan: MergePlan, sourceIn: TensorLike | undefined): OpPlan<Tensor> {
  const c = checkSource(outs.op, plan, sourceIn);
  c.plan.checkAssign(outs.op);
  if (c.owned) outs.adopt(c.source); // a temporary: freed on failure here, by cleanup after a success
  const g = planGather(outs, c.assign3, c.source, {});
  return {
    result: g.result.view([c.plan.batch, c.source.shape[1]]),
    call: g.call,
    cleanup: () => {
      if (c.owned) c.source.dispose();
    },
  };
}

/**
 * Per-token patch masks from a source map (ToMe's dense `source`, for
 * visualisation): u8 [B, nTokens, N_orig], 1 where patch p belongs to token t.
 * Runs on the host (a device map is copied back).
 * @example const masks = patchMasks(source, x.shape[1]);
 */
export function patchMasks(sourceIn: TensorLike, nTokens: number): Tensor {
  const op = 'patchMasks';
  const source = toTensor(sourceIn, 'source');
  if (source.dtype !== 'i32') throw makeError('ERR_DTYPE', `Expected an i32 source map for ${op} but received ${source.dtype}`);
  if (source.ndim !== 2) throw makeError('ERR_SHAPE', `Expected a source map of rank 2 [B, N_orig] for ${op} but received [${source.shape.join(', ')}]`);
  const T = int(op, 'nTokens', nTokens, 1, 2 ** 31 - 1);
  const [B, P] = source.shape;
  const masks = allocate(op, [B, T, P], 'u8', 'cpu'); // refused over the host limits before allocating
  const src = source.toHost().contiguous().data as Int32Array;
  const out = masks.data as Uint8Array;
  for (let b = 0; b < B; b++) {
    for (let p = 0; p < P; p++) {
      const t = src[b * P + p];
      if (t < 0 || t >= T) throw makeError('ERR_RANGE', `Expected source entries in [0, ${T}) for ${op} but received ${t} at [${b}, ${p}]`);
      out[(b * T + t) * P + p] = 1;
    }
  }
  return masks;
}

export interface ContextualMergeOptions {
  stream?: bigint;
  wait?: boolean;
}

function planContextual(outs: CallOutputs, xIn: TensorLike, metricIn: TensorLike, keep: unknown, c: unknown, opts: ContextualMergeOptions | undefined): OpPlan<Tensor> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['stream', 'wait']);
  const x = toTensor(xIn, 'x');
  const metric = toTensor(metricIn, 'metric');
  for (const [name, t] of [['x', x], ['metric', metric]] as const) {
    if (t.ndim !== 3 || t.shape.some((d) => d < 1)) {
      throw makeError('ERR_SHAPE', `Expected ${name} of rank 3 [B, N, C] for ${op} but received shape [${t.shape.join(', ')}]`);
    }
    expectFloat(op, name, t);
    expectInnerContiguous(op, name, t);
  }
  const [B, N, C] = x.shape;
  if (metric.shape[0] !== B || metric.shape[1] !== N) {
    throw makeError('ERR_SHAPE', `Expected metric of shape [${B}, ${N}, Cm] (the tokens of x) for ${op} but received [${metric.shape.join(', ')}]`);
  }
  const ordinal = commonDevice(op, [['x', x], ['metric', metric]]);
  // keep: { keepMask } u8/bool-like [B, N] (1 = kept, not merged) or { keptIndices } i32 [B, k].
  const k = checkOptions(`${op} keep`, keep, ['keepMask', 'keptIndices']);
  if ((k.keepMask === undefined) === (k.keptIndices === undefined)) {
    throw makeError('ERR_ARG', `${op}: pass exactly one of { keepMask } or { keptIndices }`);
  }
  // keptIndices or keepMask already on x's device (contiguous): the back end
  // lists the remaining tokens itself (a kernel on CUDA), so nothing is read
  // back. keptIndices' entries are checked there (distinct, in [0, N)), and
  // the mask's count of remaining tokens (the same in every row, at least c),
  // when the call waits. Otherwise the remaining tokens are listed here.
  const kiDev = k.keptIndices !== undefined && ordinal >= 0 ? toTensor(k.keptIndices, 'keptIndices') : undefined;
  const kmDev = k.keepMask !== undefined && ordinal >= 0 ? toTensor(k.keepMask as TensorLike, 'keepMask') : undefined;
  const keptOnDevice = kiDev !== undefined && kiDev.ordinal === ordinal && kiDev.isContiguous && kiDev.ndim === 2 && kiDev.shape[1] > 0;
  const maskOnDevice = kmDev !== undefined && kmDev.ordinal === ordinal && kmDev.isContiguous;
  let list: Tensor;  // [B, K] keptIndices, [B, N] keepMask, or [B, Nr] remaining tokens
  let nr: number;    // the remaining tokens; with a device keepMask, an upper bound (N)
  let keepSpec: 0 | 1 | 2 = 0;  // binding/merge.cc: 0 remaining, 1 keptIndices, 2 keepMask
  if (keptOnDevice) {
    if (kiDev.dtype !== 'i32') throw makeError('ERR_DTYPE', `Expected i32 keptIndices for ${op} but received ${kiDev.dtype}`);
    if (kiDev.shape[0] !== B) {
      throw makeError('ERR_SHAPE', `Expected keptIndices of shape [${B}, k] for ${op} but received [${kiDev.shape.join(', ')}]`);
    }
    list = kiDev;
    nr = N - kiDev.shape[1];
    keepSpec = 1;
  } else if (maskOnDevice) {
    if (kmDev.ndim !== 2 || kmDev.shape[0] !== B || kmDev.shape[1] !== N) {
      throw makeError('ERR_SHAPE', `Expected keepMask of shape [${B}, ${N}] for ${op} but received [${kmDev.shape.join(', ')}]`);
    }
    list = kmDev;
    nr = N;
    keepSpec = 2;
  } else {
    const rem = remainingTokens(op, k, B, N);
    nr = rem.length / B;
    const remHost = Tensor.from({ data: rem, shape: [B, nr] });
    list = ordinal < 0 ? remHost : outs.adopt(remHost.to(deviceOf(ordinal)));
  }
  if (nr < 1) throw makeError('ERR_RANGE', `${op}: no tokens remain to merge (every token is kept)`);
  const cc = int(op, 'c', c, 1, nr);
  const s = stream(op, o.stream, x.stream);
  const out = outs.empty([B, cc, C], x.dtype, deviceOf(ordinal), { stream: s, uninitialized: true });
  const params = opParams('contextualMerge', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, c: cc, keepSpec });
  const xd = x.descriptor('x');
  const md = metric.descriptor('metric');
  const ld = list.descriptor(['remaining', 'keptIndices', 'keepMask'][keepSpec]);
  const od = out.descriptor('out');
  return {
    result: out,
    call: (async) => native().contextualMerge(params, xd.meta, xd.mem, md.meta, md.mem, ld.meta, ld.mem, od.meta, od.mem, s, async),
    cleanup: () => {
      if (keepSpec === 0 && ordinal >= 0) list.dispose();
    },
  };
}

/** The tokens each batch row does not keep, ascending: [B · Nr] (Nr the same for every row). */
function remainingTokens(op: string, k: { keepMask?: unknown; keptIndices?: unknown }, B: number, N: number): Int32Array {
  const kept = new Uint8Array(B * N);
  if (k.keepMask !== undefined) {
    const m = toTensor(k.keepMask as TensorLike, 'keepMask');
    if (m.ndim !== 2 || m.shape[0] !== B || m.shape[1] !== N) {
      throw makeError('ERR_SHAPE', `Expected keepMask of shape [${B}, ${N}] for ${op} but received [${m.shape.join(', ')}]`);
    }
    const vals = m.toArray();
    for (let i = 0; i < B * N; i++) kept[i] = vals[i] !== 0 ? 1 : 0;
  } else {
    const ki = toTensor(k.keptIndices as TensorLike, 'keptIndices');
    if (ki.dtype !== 'i32') throw makeError('ERR_DTYPE', `Expected i32 keptIndices for ${op} but received ${ki.dtype}`);
    if (ki.ndim !== 2 || ki.shape[0] !== B) {
      throw makeError('ERR_SHAPE', `Expected keptIndices of shape [${B}, k] for ${op} but received [${ki.shape.join(', ')}]`);
    }
    const K = ki.shape[1];
    const vals = K === 0 ? [] : ki.toArray();  // nothing kept: no read
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < K; j++) {
        const t = vals[b * K + j];
        if (t < 0 || t >= N) throw makeError('ERR_RANGE', `Expected keptIndices in [0, ${N}) for ${op} but received ${t} at [${b}, ${j}]`);
        if (kept[b * N + t]) throw makeError('ERR_RANGE', `Expected distinct keptIndices for ${op} but ${t} repeats at [${b}, ${j}]`);
        kept[b * N + t] = 1;
      }
    }
  }
  let nr = -1;
  for (let b = 0; b < B; b++) {
    let cnt = 0;
    for (let i = 0; i < N; i++) cnt += kept[b * N + i] ? 0 : 1;
    if (nr >= 0 && cnt !== nr) throw makeError('ERR_SHAPE', `${op}: every batch row must leave the same number of remaining tokens (row 0: ${nr}, row ${b}: ${cnt})`);
    nr = cnt;
  }
  const rem = new Int32Array(B * nr);
  for (let b = 0, w = 0; b < B; b++) for (let i = 0; i < N; i++) if (!kept[b * N + i]) rem[w++] = i;
  return rem;
}

export type KeepSpec = { keepMask: TensorLike } | { keptIndices: TensorLike };

/**
 * VisionZip/VisionDrop contextual tokens: of the tokens not kept, c targets at
 * uniform stride (step = max(1, Nr // c)); every other remaining token joins
 * its argmax-cosine target; each output = target + mean(members) (the sum of
 * the target and the mean, as the references do; empty cluster → target).
 * A keptIndices or keepMask on x's device is read there, not read back; its
 * errors (repeats, out of range; mask rows leaving different counts or fewer
 * than c) are reported when the call waits.
 * @example const ctx = await contextualMerge(hidden, keysHeadMean, { keptIndices: dominant }, 30); // [B, 30, C]
 * @throws {RangeError} ERR_RANGE when c is not in [1, Nr]
 */
export async function contextualMerge(x: TensorLike, metric: TensorLike, keep: KeepSpec, c: number, opts?: ContextualMergeOptions): Promise<Tensor> {
  return runOpAsync('contextualMerge', callSite(contextualMerge), (outs) => planContextual(outs, x, metric, keep, c, opts));
}

/** Synchronous twin of {@link contextualMerge}. */
export function contextualMergeSync(x: TensorLike, metric: TensorLike, keep: KeepSpec, c: number, opts?: ContextualMergeOptions): Tensor {
  return runOp('contextualMergeSync', (outs) => planContextual(outs, x, metric, keep, c, opts));
}
