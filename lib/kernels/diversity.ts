/**
 * Diversity selection: greedy k-center (farthest point; DivPrune, ToDRE) and
 * k-medoids (CenterCLIP).
 */
import { deviceOf } from '../device';
import { invalid, makeError } from '../errors';
import { native, opParams } from '../native';
import { Tensor, TensorLike, toTensor } from '../tensor';
import { bool, callSite, checkOptions, commonDevice, expectFloat, expectInnerContiguous, int, oneOf, CallOutputs, OpPlan, rank3, excludeMask, runOp, runOpAsync, stream } from './common';

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
  const dev = deviceOf(ordinal);
  const order = outs.empty([B, K], 'i32', dev, { stream: s });
  const sorted = outs.empty([B, K], 'i32', dev, { stream: s });
  const distances = outs.empty([B, K], 'f32', dev, { stream: s });
  const params = opParams('kCenter', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, k: kk, segments, metric: metric === 'cosine' ? 0 : 1, seed, seedIndex });
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
  const dev = deviceOf(ordinal);
  const medoids = outs.empty([B, segments * kk], 'i32', dev, { stream: s });
  const assignments = outs.empty([B, N], 'i32', dev, { stream: s });
  const iterations = outs.empty([B, segments], 'i32', dev, { stream: s });
  const params = opParams('kMedoids', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, k: kk, segments, metric: metric === 'cosine' ? 0 : 1, maxIters, tol });
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

