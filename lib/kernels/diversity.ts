/**
 * Diversity and coverage selection: greedy k-center (farthest point), greedy
 * maximum coverage, and MMTok's coverage matrix.
 */
import type { NativeResult } from '../../typings/native';
import { invalid, makeError } from '../errors';
import { native } from '../native';
import { Tensor, TensorLike, toTensor } from '../tensor';
import { bool, callSite, checkOptions, commonDevice, expectFloat, expectInnerContiguous, int, oneOf, packParams, CallOutputs, OpPlan, runOp, runOpAsync, stream } from './common';

export type DistanceMetric = 'cosine' | 'l2';

export interface KCenterOptions {
  /** `'cosine'` (default): 1 − cos; `'l2'`: Euclidean distance. */
  metric?: DistanceMetric;
  /**
   * First pick of every segment: `'isolated'` (default, DivPrune: largest
   * nearest-neighbour distance), `'maxnorm'` (KKZ: largest L2 norm) or a
   * position inside each segment.
   */
  seed?: 'isolated' | 'maxnorm' | number;
  /** u8 [B, N] (or [N] with a 2-D x): nonzero tokens are never picked and are nobody's neighbour. */
  exclude?: TensorLike;
  /** Independent selection over this many contiguous segments of N/segments tokens (default 1); k is per segment. */
  segments?: number;
  stream?: bigint;
  wait?: boolean;
}

export interface KCenterResult {
  /** i32 [B, segments·k], ascending (raster order). */
  indices: Tensor;
  /** i32 [B, segments·k]: pick order, segment after segment. */
  order: Tensor;
  /**
   * f32 [B, segments·k]: each pick's distance to the nearest earlier pick
   * of its segment; for the first pick, its nearest-neighbour distance with
   * seed 'isolated' (+Infinity when alone) and +Infinity otherwise.
   */
  distances: Tensor;
}

export interface KMedoidsOptions {
  /** `'l2'` (default, CenterCLIP's Euclidean cdist) or `'cosine'`. */
  metric?: DistanceMetric;
  /** Independent clustering per contiguous segment (default 1); k is per segment. */
  segments?: number;
  /** Most update steps (default 100, CenterCLIP's script value). */
  maxIters?: number;
  /** Stop when Σ_k ||x_new − x_old|| < tol (default 1e-6). */
  tol?: number;
  stream?: bigint;
  wait?: boolean;
}

export interface KMedoidsResult {
  /** i32 [B, segments·k]: medoid token indices, ascending. */
  medoids: Tensor;
  /** i32 [B, N]: the column of `medoids` that each token's cluster has. */
  assignments: Tensor;
  /** i32 [B, segments]: update steps run. */
  iterations: Tensor;
}

export interface MaxCoverageOptions {
  /** u8 [B, N] (or [N] with a 2-D coverage): nonzero columns are never picked. */
  exclude?: TensorLike;
  stream?: bigint;
  wait?: boolean;
}

export interface MaxCoverageResult {
  /** i32 [B, k], ascending. */
  indices: Tensor;
  /** i32 [B, k] in pick order. */
  order: Tensor;
  /** f32 [B, k]: the gain of each pick. */
  gains: Tensor;
}

export interface MmtokInputs {
  /** [B, m, D] text embeddings (LLM input-embedding vectors of the question words). */
  text: TensorLike;
  /** [B, n, D] projected vision tokens. */
  vision: TensorLike;
  /** [B, n, D'] features for the vision–vision term (CLIP features); default `vision`. */
  visionAux?: TensorLike;
}

export interface MmtokCoverageOptions {
  /** Text–vision temperature (default 0.02, MMTok's LLaVA value). */
  tauTV?: number;
  /** Vision–vision temperature (default 0.2). */
  tauVV?: number;
  /** Weight of the vision–vision block (default 0.5). */
  alpha?: number;
  stream?: bigint;
  wait?: boolean;
}

function rank3(op: string, name: string, t: Tensor, dims: string): { t: Tensor; flat: boolean } {
  const flat = t.ndim === 2;
  if (flat) t = t.view([1, t.shape[0], t.shape[1]], [0, t.strides[0], t.strides[1]]);
  if (t.ndim !== 3) throw makeError('ERR_SHAPE', `Expected ${name} of rank 3 ${dims} (or 2 without the batch) for ${op} but received shape [${t.shape.join(', ')}]`);
  if (t.shape.some((d) => d === 0)) throw makeError('ERR_SHAPE', `Expected every dimension of ${name} ${dims} to be >= 1 for ${op} but received shape [${t.shape.join(', ')}]`);
  expectFloat(op, name, t);
  expectInnerContiguous(op, name, t);
  return { t, flat };
}

function excludeMask(op: string, v: unknown, B: number, N: number): Tensor | undefined {
  if (v === undefined) return undefined;
  let m = toTensor(v as TensorLike, `${op} exclude`);
  if (m.dtype !== 'u8') throw makeError('ERR_DTYPE', `Expected u8 for ${op} exclude but received ${m.dtype}`);
  if (m.ndim === 1 && B === 1) m = m.view([1, m.shape[0]], [0, m.strides[0]]);
  if (m.ndim !== 2 || m.shape[0] !== B || m.shape[1] !== N) {
    throw makeError('ERR_SHAPE', `Expected ${op} exclude of shape [${B}, ${N}] but received [${m.shape.join(', ')}]`);
  }
  return m.isContiguous ? m : m.contiguous();
}

function deviceName(ordinal: number): 'cpu' {
  return (ordinal < 0 ? 'cpu' : `cuda:${ordinal}`) as 'cpu';
}

function planKCenter(outs: CallOutputs, xIn: TensorLike, k: unknown, opts: KCenterOptions | undefined): OpPlan<KCenterResult> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['metric', 'seed', 'exclude', 'segments', 'stream', 'wait']);
  const { t: x, flat } = rank3(op, 'x', toTensor(xIn, 'x'), '[B, N, C]');
  const [B, N] = x.shape;
  const segments = o.segments === undefined ? 1 : int(op, 'segments', o.segments, 1, N);
  if (N % segments !== 0) throw makeError('ERR_RANGE', `Expected ${op} segments to divide N = ${N} but received ${segments}`);
  const S = N / segments;
  const kk = int(op, 'k', k, 1, S);
  const metric = oneOf(op, 'metric', o.metric, ['cosine', 'l2'] as const, 'cosine');
  let seed = 0;
  let seedIndex = 0;
  if (typeof o.seed === 'number') {
    seed = 2;
    seedIndex = int(op, 'seed', o.seed, 0, S - 1);
  } else {
    const s = oneOf(op, 'seed', o.seed, ['isolated', 'maxnorm'] as const, 'isolated');
    seed = s === 'isolated' ? 0 : 1;
  }
  const exclude = excludeMask(op, o.exclude, B, N);
  const ordinal = commonDevice(op, [['x', x], ['exclude', exclude]]);
  const s = stream(op, o.stream, x.stream);
  const K = segments * kk;
  const dev = deviceName(ordinal);
  const order = outs.empty([B, K], 'i32', dev, { stream: s });
  const sorted = outs.empty([B, K], 'i32', dev, { stream: s });
  const distances = outs.empty([B, K], 'f32', dev, { stream: s });
  const params = packParams([kk, segments, metric === 'cosine' ? 0 : 1, seed, seedIndex, bool(op, 'wait', o.wait, true) ? 1 : 0]);
  const xd = x.descriptor('x');
  const ed = exclude?.descriptor('exclude');
  const od = order.descriptor('order');
  const sd = sorted.descriptor('sorted');
  const dd = distances.descriptor('distances');
  const out = (t: Tensor) => (flat ? t.view([K]) : t);
  return {
    result: { indices: out(sorted), order: out(order), distances: out(distances) },
    call: (async) => native().kCenter(params, xd.meta, xd.mem, ed?.meta, ed?.mem, od.meta, od.mem, sd.meta, sd.mem, dd.meta, dd.mem, s, async),
  };
}

/**
 * Greedy max–min (farthest-point) selection of k tokens per segment. Ties go
 * to the lower index.
 * @example const { indices } = await kCenter(features, 56); // DivPrune's rule, ascending
 * @throws {RangeError} ERR_RANGE for k outside [1, N/segments], segments not dividing N, NaN features
 */
export async function kCenter(x: TensorLike, k: number, opts?: KCenterOptions): Promise<KCenterResult> {
  return runOpAsync('kCenter', callSite(kCenter), (outs) => planKCenter(outs, x, k, opts));
}

/** Synchronous twin of {@link kCenter}. */
export function kCenterSync(x: TensorLike, k: number, opts?: KCenterOptions): KCenterResult {
  return runOp('kCenterSync', (outs) => planKCenter(outs, x, k, opts));
}

function planKMedoids(outs: CallOutputs, xIn: TensorLike, k: unknown, opts: KMedoidsOptions | undefined): OpPlan<KMedoidsResult> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['metric', 'segments', 'maxIters', 'tol', 'stream', 'wait']);
  const { t: x, flat } = rank3(op, 'x', toTensor(xIn, 'x'), '[B, N, C]');
  const [B, N] = x.shape;
  const segments = o.segments === undefined ? 1 : int(op, 'segments', o.segments, 1, N);
  if (N % segments !== 0) throw makeError('ERR_RANGE', `Expected ${op} segments to divide N = ${N} but received ${segments}`);
  const kk = int(op, 'k', k, 1, N / segments);
  const metric = oneOf(op, 'metric', o.metric, ['cosine', 'l2'] as const, 'l2');
  const maxIters = o.maxIters === undefined ? 100 : int(op, 'maxIters', o.maxIters, 0, 1e6);
  const tol = o.tol === undefined ? 1e-6 : o.tol;
  if (typeof tol !== 'number' || Number.isNaN(tol)) throw invalid('ERR_ARG', `${op} tol`, 'a number', tol);
  if (!(tol >= 0)) throw makeError('ERR_RANGE', `Expected ${op} tol >= 0 but received ${tol}`);
  const ordinal = commonDevice(op, [['x', x]]);
  const s = stream(op, o.stream, x.stream);
  const dev = deviceName(ordinal);
  const medoids = outs.empty([B, segments * kk], 'i32', dev, { stream: s });
  const assignments = outs.empty([B, N], 'i32', dev, { stream: s });
  const iterations = outs.empty([B, segments], 'i32', dev, { stream: s });
  const params = packParams([kk, segments, metric === 'cosine' ? 0 : 1, maxIters, tol, bool(op, 'wait', o.wait, true) ? 1 : 0]);
  const xd = x.descriptor('x');
  const md = medoids.descriptor('medoids');
  const ad = assignments.descriptor('assignments');
  const id = iterations.descriptor('iterations');
  return {
    result: flat
      ? { medoids: medoids.view([segments * kk]), assignments: assignments.view([N]), iterations: iterations.view([segments]) }
      : { medoids, assignments, iterations },
    call: (async) => native().kMedoids(params, xd.meta, xd.mem, md.meta, md.mem, ad.meta, ad.mem, id.meta, id.mem, s, async),
  };
}

/**
 * k-medoids per segment as CenterCLIP clusters tokens: KKZ initialisation,
 * assign/update until the medoids stop moving; medoids ascending.
 * @example const { medoids } = await kMedoids(patches, 49, { segments: 6 }); // 6 segments of 98 tokens
 * @throws {RangeError} ERR_RANGE for k outside [1, N/segments], segments not dividing N, NaN features
 */
export async function kMedoids(x: TensorLike, k: number, opts?: KMedoidsOptions): Promise<KMedoidsResult> {
  return runOpAsync('kMedoids', callSite(kMedoids), (outs) => planKMedoids(outs, x, k, opts));
}

/** Synchronous twin of {@link kMedoids}. */
export function kMedoidsSync(x: TensorLike, k: number, opts?: KMedoidsOptions): KMedoidsResult {
  return runOp('kMedoidsSync', (outs) => planKMedoids(outs, x, k, opts));
}

function planMaxCoverage(outs: CallOutputs, cIn: TensorLike, k: unknown, opts: MaxCoverageOptions | undefined): OpPlan<MaxCoverageResult> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['exclude', 'stream', 'wait']);
  const { t: c, flat } = rank3(op, 'coverage', toTensor(cIn, 'coverage'), '[B, R, N]');
  const [B, , N] = c.shape;
  const kk = int(op, 'k', k, 1, N);
  const exclude = excludeMask(op, o.exclude, B, N);
  const ordinal = commonDevice(op, [['coverage', c], ['exclude', exclude]]);
  const s = stream(op, o.stream, c.stream);
  const dev = deviceName(ordinal);
  const order = outs.empty([B, kk], 'i32', dev, { stream: s });
  const sorted = outs.empty([B, kk], 'i32', dev, { stream: s });
  const gains = outs.empty([B, kk], 'f32', dev, { stream: s });
  const params = packParams([kk, bool(op, 'wait', o.wait, true) ? 1 : 0]);
  const cd = c.descriptor('coverage');
  const ed = exclude?.descriptor('exclude');
  const od = order.descriptor('order');
  const sd = sorted.descriptor('sorted');
  const gd = gains.descriptor('gains');
  const out = (t: Tensor) => (flat ? t.view([kk]) : t);
  return {
    result: { indices: out(sorted), order: out(order), gains: out(gains) },
    call: (async) => native().maxCoverage(params, cd.meta, cd.mem, ed?.meta, ed?.mem, od.meta, od.mem, sd.meta, sd.mem, gd.meta, gd.mem, s, async),
  };
}

/**
 * Greedy maximum coverage over the columns of `coverage` [B, R, N]:
 * gain_j = Σ_r max(0, C[r, j] − best[r]); ties to the lower index.
 * @example const { indices } = await maxCoverage(await mmtokCoverage({ text, vision }), 64);
 * @throws {RangeError} ERR_RANGE for k outside [1, N] or NaN coverage
 */
export async function maxCoverage(coverage: TensorLike, k: number, opts?: MaxCoverageOptions): Promise<MaxCoverageResult> {
  return runOpAsync('maxCoverage', callSite(maxCoverage), (outs) => planMaxCoverage(outs, coverage, k, opts));
}

/** Synchronous twin of {@link maxCoverage}. */
export function maxCoverageSync(coverage: TensorLike, k: number, opts?: MaxCoverageOptions): MaxCoverageResult {
  return runOp('maxCoverageSync', (outs) => planMaxCoverage(outs, coverage, k, opts));
}

function positive(op: string, name: string, v: unknown, fallback: number, allowZero = false): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || Number.isNaN(v)) throw invalid('ERR_ARG', `${op} ${name}`, 'a number', v);
  if (!Number.isFinite(v) || (allowZero ? v < 0 : v <= 0)) {
    throw makeError('ERR_RANGE', `Expected ${op} ${name} ${allowZero ? '>= 0' : '> 0'} and finite but received ${v}`);
  }
  return v;
}

/**
 * @internal The inputs of MMTok's coverage matrix, checked (also by mmTok
 * when it keeps every token and runs no kernel).
 */
export function checkMmtokInputs(op: string, inputs: unknown): { text: { t: Tensor; flat: boolean }; vision: { t: Tensor; flat: boolean }; aux?: { t: Tensor; flat: boolean } } {
  if (typeof inputs !== 'object' || inputs === null) throw invalid('ERR_ARG', `${op} inputs`, '{ text, vision, visionAux? }', inputs);
  const text = rank3(op, 'text', toTensor((inputs as MmtokInputs).text, 'text'), '[B, m, D]');
  const vision = rank3(op, 'vision', toTensor((inputs as MmtokInputs).vision, 'vision'), '[B, n, D]');
  const aux = (inputs as MmtokInputs).visionAux === undefined ? undefined : rank3(op, 'visionAux', toTensor((inputs as MmtokInputs).visionAux, 'visionAux'), "[B, n, D']");
  const [B, n, D] = vision.t.shape;
  if (text.t.shape[0] !== B || text.t.shape[2] !== D) {
    throw makeError('ERR_SHAPE', `Expected text [${B}, m, ${D}] to match vision for ${op} but received [${text.t.shape.join(', ')}]`);
  }
  if (aux && (aux.t.shape[0] !== B || aux.t.shape[1] !== n)) {
    throw makeError('ERR_SHAPE', `Expected visionAux [${B}, ${n}, D'] for ${op} but received [${aux.t.shape.join(', ')}]`);
  }
  return { text, vision, aux };
}

function planMmtok(outs: CallOutputs, inputs: MmtokInputs, opts: MmtokCoverageOptions | undefined): OpPlan<Tensor> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['tauTV', 'tauVV', 'alpha', 'stream', 'wait']);
  const { text, vision, aux } = checkMmtokInputs(op, inputs);
  const [B, n, D] = vision.t.shape;
  const m = text.t.shape[1];
  const tauTV = positive(op, 'tauTV', o.tauTV, 0.02);
  const tauVV = positive(op, 'tauVV', o.tauVV, 0.2);
  const alpha = positive(op, 'alpha', o.alpha, 0.5, true);
  const ordinal = commonDevice(op, [['vision', vision.t], ['text', text.t], ['visionAux', aux?.t]]);
  const s = stream(op, o.stream, vision.t.stream);
  const out = outs.empty([B, m + n, n], 'f32', deviceName(ordinal), { stream: s, uninitialized: true });
  const params = packParams([tauTV, tauVV, alpha, bool(op, 'wait', o.wait, true) ? 1 : 0]);
  const td = text.t.descriptor('text');
  const vd = vision.t.descriptor('vision');
  const ad = aux?.t.descriptor('visionAux');
  const od = out.descriptor('out');
  return {
    result: vision.flat ? out.view([m + n, n]) : out,
    call: (async) => native().mmtokCoverage(params, td.meta, td.mem, vd.meta, vd.mem, ad?.meta, ad?.mem, od.meta, od.mem, s, async),
  };
}

/**
 * MMTok's coverage matrix `[P; α·Q]`, f32 [B, m + n, n]: P = softmax(ẑ x̂ᵀ/τ_tv)/m
 * (text over vision), Q = softmax(â âᵀ/τ_vv)/n (vision over vision, on
 * `visionAux` when given); rows L2-normalised with a 1e-8 clamp.
 * @example const cov = await mmtokCoverage({ text, vision, visionAux: clip }, { tauTV: 0.02 });
 * @throws {RangeError} ERR_RANGE for tau <= 0 or NaN inputs
 */
export async function mmtokCoverage(inputs: MmtokInputs, opts?: MmtokCoverageOptions): Promise<Tensor> {
  return runOpAsync('mmtokCoverage', callSite(mmtokCoverage), (outs) => planMmtok(outs, inputs, opts));
}

/** Synchronous twin of {@link mmtokCoverage}. */
export function mmtokCoverageSync(inputs: MmtokInputs, opts?: MmtokCoverageOptions): Tensor {
  return runOp('mmtokCoverageSync', (outs) => planMmtok(outs, inputs, opts));
}

/**
 * How STC's memory averages chunk means (see {@link StcScoresOptions.memory}).
 * - `'authors'`: as lern-to-write/STC does: each chunk mean is taken over the
 *   chunk's scoring channels in that chunk's ascending-variance order, and the
 *   memory averages them by position, whichever channel sits there.
 * - `'aligned'`: chunk means over all C channels, averaged by channel; the
 *   memory then takes this chunk's scoring channels. A deliberate difference
 *   from the authors' code (README, "Differences from the authors' code").
 */
export type StcMemory = 'authors' | 'aligned';

export interface StcScoresOptions {
  /**
   * f32 [C/2] (`memory: 'authors'`, at least 1) or [C] (`'aligned'`): the sum of
   * the earlier chunks' `chunkMean`s (StreamPruner keeps it).
   */
  memorySum?: TensorLike;
  /** How many chunk means `memorySum` holds (default 0; needs memorySum when > 0). */
  memoryCount?: number;
  /** How chunk means are averaged (default `'authors'`). */
  memory?: StcMemory;
  stream?: bigint;
  wait?: boolean;
}

export interface StcScoresResult {
  /** f32 [F, T]: lower = more distinctive (kept first). */
  scores: Tensor;
  /** f32 [Cs] (`'authors'`, Cs = max(1, ⌊C/2⌋), in `channels` order) or [C] (`'aligned'`): this chunk's raw mean. */
  chunkMean: Tensor;
  /** i32 [Cs]: the scoring channels, lowest variance first (ties to the lower channel). */
  channels: Tensor;
}

/** Scoring channels of STC for C channels: ⌊C/2⌋, at least 1. */
export function stcScoringChannels(C: number): number {
  if (typeof C !== 'number' || !Number.isInteger(C) || C < 1) throw invalid('ERR_ARG', 'stcScoringChannels C', 'an integer >= 1', C);
  return Math.max(1, Math.floor(C / 2));
}

function planStc(outs: CallOutputs, xIn: TensorLike, opts: StcScoresOptions | undefined): OpPlan<StcScoresResult> {
  const op = outs.op;
  const o = checkOptions(op, opts, ['memorySum', 'memoryCount', 'memory', 'stream', 'wait']);
  const x = toTensor(xIn, 'x');
  if (x.ndim !== 3) throw makeError('ERR_SHAPE', `Expected x of rank 3 [F, T, C] for ${op} but received shape [${x.shape.join(', ')}]`);
  if (x.shape.some((d) => d === 0)) throw makeError('ERR_SHAPE', `Expected every dimension of x [F, T, C] to be >= 1 for ${op} but received shape [${x.shape.join(', ')}]`);
  expectFloat(op, 'x', x);
  expectInnerContiguous(op, 'x', x);
  const [F, T, C] = x.shape;
  const Cs = stcScoringChannels(C);
  const mode = oneOf(op, 'memory', o.memory, ['authors', 'aligned'] as const, 'authors');
  const Cm = mode === 'authors' ? Cs : C;
  let mem: Tensor | undefined;
  if (o.memorySum !== undefined) {
    mem = toTensor(o.memorySum as TensorLike, `${op} memorySum`);
    if (mem.dtype !== 'f32') throw makeError('ERR_DTYPE', `Expected f32 for ${op} memorySum but received ${mem.dtype}`);
    if (mem.ndim !== 1 || mem.shape[0] !== Cm) {
      throw makeError('ERR_SHAPE', `Expected ${op} memorySum of shape [${Cm}] (memory '${mode}', C = ${C}) but received [${mem.shape.join(', ')}]`);
    }
    if (!mem.isContiguous) mem = mem.contiguous();
  }
  const count = o.memoryCount === undefined ? 0 : int(op, 'memoryCount', o.memoryCount, 0, Number.MAX_SAFE_INTEGER);
  if (count > 0 && !mem) throw makeError('ERR_RANGE', `${op}: memoryCount ${count} needs a memorySum`);
  const ordinal = commonDevice(op, [['x', x], ['memorySum', mem]]);
  const s = stream(op, o.stream, x.stream);
  const dev = deviceName(ordinal);
  const scores = outs.empty([F, T], 'f32', dev, { stream: s });
  const chunkMean = outs.empty([Cm], 'f32', dev, { stream: s });
  const channels = outs.empty([Cs], 'i32', dev, { stream: s });
  const params = packParams([count, bool(op, 'wait', o.wait, true) ? 1 : 0, mode === 'authors' ? 0 : 1]);
  const xd = x.descriptor('x');
  const md = mem?.descriptor('memorySum');
  const sd = scores.descriptor('scores');
  const cd = chunkMean.descriptor('chunkMean');
  const hd = channels.descriptor('channels');
  return {
    result: { scores, chunkMean, channels },
    call: (async) =>
      native().stcScores(params, xd.meta, xd.mem, md?.meta, md?.mem, sd.meta, sd.mem, cd.meta, cd.mem, hd.meta, hd.mem, s, async),
  };
}

/**
 * STC-Pruner scores of one chunk of frames [F, T, C] (see include/tokensieve/diversity.h
 * for the exact definition); {@link StreamPruner} keeps the memory across chunks.
 * @example const { scores } = await stcScores(chunk); // [F, T], lower = more distinctive
 */
export async function stcScores(x: TensorLike, opts?: StcScoresOptions): Promise<StcScoresResult> {
  return runOpAsync('stcScores', callSite(stcScores), (outs) => planStc(outs, x, opts));
}

/** Synchronous twin of {@link stcScores}. */
export function stcScoresSync(x: TensorLike, opts?: StcScoresOptions): StcScoresResult {
  return runOp('stcScoresSync', (outs) => planStc(outs, x, opts));
}
