/**
 * CenterCLIP (mzhaoshuai/CenterCLIP, methods.md §8): the patch tokens of each
 * segment of `frameDuration` consecutive frames are clustered by k-medoids
 * (KKZ init, Euclidean by default, medoid ids sorted); the segment's tokens
 * become [mean of its frames' CLS tokens, the medoid tokens themselves]
 * (aggregation=None, the reference default).
 *
 * Batched per (sample, segment) with per-segment convergence (the reference
 * stops when the batch-mean movement is below the threshold; a converged
 * segment is a fixed point, so this differs only when some segment is still
 * oscillating at the iteration limit).
 */
import { invalid, makeError } from '../errors';
import { checkOptions } from '../kernels/common';
import { DistanceMetric, kMedoids, kMedoidsSync, KMedoidsOptions, KMedoidsResult } from '../kernels/diversity';
import { gather, gatherSync } from '../kernels/select';
import { toHalfBits } from '../dtype';
import { Tensor, TensorLike, toTensor } from '../tensor';
import { call, drive, driveAsync, MethodGen } from './common';

export interface CenterClipOptions {
  /** Frames per segment (default 2: CenterCLIP's 12 → 6 setting). */
  frameDuration?: number;
  /** Medoids per segment (default 49, the reference's cluster_num). */
  clusters?: number;
  /** Default 'l2' (the reference's euclidean cdist). */
  metric?: DistanceMetric;
  /** Default 100 (script iter_limit). */
  maxIters?: number;
  /** Default 1e-6 (script threshold). */
  tol?: number;
}

export interface CenterClipResult {
  /** [B, T/frameDuration, 1 + clusters, C], dtype of x: [CLS mean, medoid tokens] per segment. */
  tokens: Tensor;
  /** i32 [B, segments·clusters]: medoid positions in the flattened patch tokens [B, T·P] (frame-major), ascending. */
  medoids: Tensor;
  /** i32 [B, T·P]: each patch token's column in `medoids`. */
  assignments: Tensor;
}

function* steps(xIn: TensorLike, opts: CenterClipOptions | undefined, op: string): MethodGen<CenterClipResult> {
  const o = checkOptions(op, opts, ['frameDuration', 'clusters', 'metric', 'maxIters', 'tol']);
  const x = toTensor(xIn, 'x');
  if (x.ndim !== 4) throw makeError('ERR_SHAPE', `Expected x of rank 4 [B, T, 1 + P, C] (CLS first in each frame) for ${op} but received shape [${x.shape.join(', ')}]`);
  const [B, T, L, C] = x.shape;
  if (L < 2) throw makeError('ERR_SHAPE', `Expected at least one patch token per frame (L = 1 + P >= 2) for ${op} but received L = ${L}`);
  const P = L - 1;
  const fd = o.frameDuration === undefined ? 2 : o.frameDuration;
  if (typeof fd !== 'number' || !Number.isInteger(fd)) throw invalid('ERR_ARG', `${op} frameDuration`, 'an integer', fd);
  if (fd < 1 || T % fd !== 0) throw makeError('ERR_RANGE', `Expected ${op} frameDuration >= 1 dividing T = ${T} but received ${fd}`);
  const S = T / fd;
  const K = o.clusters === undefined ? 49 : o.clusters;
  if (typeof K !== 'number' || !Number.isInteger(K)) throw invalid('ERR_ARG', `${op} clusters`, 'an integer', K);
  if (K < 1 || K > fd * P) throw makeError('ERR_RANGE', `Expected ${op} clusters in [1, ${fd * P}] but received ${K}`);
  if (!x.isContiguous) throw makeError('ERR_ARG', `${op}: x must be contiguous`);
  const flat = x.view([B, T * L, C]);
  // Patch rows (frame-major) and CLS rows of the flattened [B, T·L, C].
  const patchIdx = new Int32Array(B * T * P);
  const clsIdx = new Int32Array(B * T);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      clsIdx[b * T + t] = t * L;
      for (let p = 0; p < P; p++) patchIdx[(b * T + t) * P + p] = t * L + 1 + p;
    }
  const dev = x.device;
  const patches = (yield call(gatherSync, gather, flat, Tensor.from({ data: patchIdx, shape: [B, T * P] }).to(dev))) as Tensor;
  const kmOpts: KMedoidsOptions = { segments: S, metric: o.metric as DistanceMetric | undefined, maxIters: o.maxIters as number | undefined, tol: o.tol as number | undefined };
  const km = (yield call(kMedoidsSync, kMedoids, patches, K, kmOpts)) as KMedoidsResult;
  const med = (yield call(gatherSync, gather, patches, km.medoids)) as Tensor; // [B, S·K, C]
  const cls = (yield call(gatherSync, gather, flat, Tensor.from({ data: clsIdx, shape: [B, T] }).to(dev))) as Tensor; // [B, T, C]
  patches.dispose();
  const clsv = cls.toArray();
  cls.dispose();
  const medHost = med.toHost();
  const medRaw = medHost.data as Float32Array | Uint16Array;
  const n = B * S * (1 + K) * C;
  const out = x.dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++) {
      const base = ((b * S + s) * (1 + K)) * C;
      const mean = new Float64Array(C);
      for (let f = 0; f < fd; f++) for (let c = 0; c < C; c++) mean[c] += clsv[(b * T + s * fd + f) * C + c];
      for (let c = 0; c < C; c++) mean[c] /= fd;
      if (out instanceof Float32Array) out.set(Float32Array.from(mean), base);
      else out.set(toHalfBits(mean, x.dtype as 'f16' | 'bf16'), base);
      out.set(medRaw.subarray(((b * S + s) * K) * C, ((b * S + s) * K + K) * C), base + C);
    }
  if (med !== medHost) medHost.dispose();
  med.dispose();
  const tokens = Tensor.from({ data: out, shape: [B, S, 1 + K, C], dtype: x.dtype });
  return { tokens: dev === 'cpu' ? tokens : tokens.to(dev), medoids: km.medoids, assignments: km.assignments };
}

/**
 * @example
 * // ViT-B/32 block input of 12 frames × (1 + 49) tokens → 6 segments × (1 + 49)
 * const { tokens } = await centerClip(x, { frameDuration: 2, clusters: 49 });
 */
export async function centerClip(x: TensorLike, opts?: CenterClipOptions): Promise<CenterClipResult> {
  return driveAsync(steps(x, opts, 'centerClip'), 'centerClip');
}

export function centerClipSync(x: TensorLike, opts?: CenterClipOptions): CenterClipResult {
  return drive(steps(x, opts, 'centerClipSync'), 'centerClipSync');
}
