/**
 * STC-Pruner (lern-to-write/STC 9b13ce0, `STC_Pruner.compress`; methods.md
 * §12a) as a streaming pruner, in the authors' sequence: each chunk keeps its
 * ⌊C/2⌋ lowest-variance channels in ascending-variance order, its tokens are
 * scored on those channels (L2-normalised over them) against their frame
 * means and the memory (the mean of all raw chunk means so far, this chunk
 * included, normalised), and the `tokensPerFrame` lowest-scoring (most
 * distinctive) tokens of every frame are kept, sorted. With `memory:
 * 'authors'` (the default) the chunk means are averaged by position, as the
 * authors' history list does, although different chunks may order different
 * channels there; `memory: 'aligned'` averages them by channel (a documented
 * difference, README "Differences from the authors' code"). The memory is a
 * running sum and a count: O(C) however long the stream (the reference keeps
 * an unbounded list of chunk means, whose mean is the same number).
 * llava_vid's always-kept newline tokens are a model-layout detail left to
 * the caller.
 *
 * Device chunks. The scores run on the chunk's device (cuda::stc_scores);
 * the memory stays on the host as C/2 or C floats, so chunks may come from any
 * device (or the host) in any mix without reset(). Each push of a device
 * chunk makes these blocking host round trips, all small next to the chunk:
 *   - up: the running memory sum (C/2 or C floats), into a temporary device tensor
 *     that is disposed as soon as the scores call returns;
 *   - down: the chunk mean (C/2 or C floats; the device copy, and that of
 *     the scoring channels, are then disposed) to fold into the memory, and
 *     the F×T scores for the lowest-k selection,
 *     which runs on the host with the same topk as host chunks;
 *   - up: the F×tokensPerFrame indices, returned on the chunk's device.
 * The returned `scores` are the kernel's output, on the chunk's device. CUDA
 * scores agree with the CPU's within the cross-device tolerance (f64 sums in
 * other orders), so the indices equal a host run's wherever no two scores of
 * a frame are that close at the cut.
 */
import { asCaller, invalid, makeError, renamed } from '../errors';
import { checkOptions, oneOf } from '../kernels/common';
import { StcMemory, stcScores, StcScoresOptions, stcScoresSync, StcScoresResult } from '../kernels/stc';
import { topk, topkSync, TopkResult } from '../kernels/select';
import { hideFields, Tensor, TensorLike, toTensor } from '../tensor';
import { call, drive, driveAsync, MethodGen } from './common';

export interface StreamPrunerOptions {
  /** Tokens kept per frame (default 60, the reference's token_per_frame). */
  tokensPerFrame?: number;
  /**
   * How chunk means are averaged into the memory: `'authors'` (default) by
   * position in each chunk's channel order, as the authors' code does;
   * `'aligned'` by channel identity. See {@link StcMemory}.
   */
  memory?: StcMemory;
}

export interface StreamPruneResult {
  /** i32 [F, tokensPerFrame]: kept positions inside each frame, ascending. */
  indices: Tensor;
  /** f32 [F, T]: the STC scores (lower = more distinctive). */
  scores: Tensor;
}

export class StreamPruner {
  readonly tokensPerFrame: number;
  readonly memory: StcMemory;
  private _sum: Float32Array | undefined;
  private _channels: number | undefined; // C of the chunks in the memory
  private _count = 0;

  constructor(opts?: StreamPrunerOptions) {
    const o = checkOptions('StreamPruner', opts, ['tokensPerFrame', 'memory']);
    const k = o.tokensPerFrame === undefined ? 60 : o.tokensPerFrame;
    if (typeof k !== 'number' || !Number.isInteger(k)) throw invalid('ERR_ARG', 'StreamPruner tokensPerFrame', 'an integer', k);
    if (k < 1) throw makeError('ERR_RANGE', `Expected StreamPruner tokensPerFrame >= 1 but received ${k}`);
    this.tokensPerFrame = k;
    this.memory = oneOf('StreamPruner', 'memory', o.memory, ['authors', 'aligned'] as const, 'authors');
    hideFields(this, ['_sum', '_channels', '_count']);
  }

  /** Chunks folded into the memory so far. */
  get chunks(): number {
    return this._count;
  }

  /** Forgets the memory (a new video). */
  reset(): void {
    this._sum = undefined;
    this._channels = undefined;
    this._count = 0;
  }

  private _plan(op: string, chunk: TensorLike): { x: Tensor; k: number } {
    const x = toTensor(chunk, 'chunk');
    if (x.ndim !== 3) throw makeError('ERR_SHAPE', `Expected a chunk of rank 3 [F, T, C] for ${op} but received shape [${x.shape.join(', ')}]`);
    if (this._channels !== undefined && this._channels !== x.shape[2]) {
      throw makeError('ERR_SHAPE', `Expected chunks of ${this._channels} channels for ${op} (the memory's) but received ${x.shape[2]}; reset() between videos`);
    }
    if (this.tokensPerFrame > x.shape[1]) throw makeError('ERR_RANGE', `Expected tokensPerFrame ${this.tokensPerFrame} <= T = ${x.shape[1]} for ${op}`);
    return { x, k: this.tokensPerFrame };
  }

  // The memory options of the scores call: the host sum as a view for a host
  // chunk; for a device chunk a copy on its device, which `release` disposes
  // (call it once the scores call has returned, on every path).
  private _memory(x: Tensor): { opts: StcScoresOptions; release: () => void } {
    const memory = this.memory;
    if (!this._sum) return { opts: { memory }, release: () => {} };
    const sum = { data: this._sum, shape: [this._sum.length] };
    if (x.isHost) return { opts: { memorySum: sum, memoryCount: this._count, memory }, release: () => {} };
    const onDevice = Tensor.from(sum).to(x.device);
    return { opts: { memorySum: onDevice, memoryCount: this._count, memory }, release: () => onDevice.dispose() };
  }

  // Folds the chunk mean into the memory and returns the negated scores on the
  // host: the lowest scores are the top-k of the negation (ties to the lower
  // index). For a device chunk both come down here; its chunk-mean tensor is
  // not returned, so it is disposed.
  private _negated(r: StcScoresResult, C: number): Tensor {
    const s = r.scores.toArray();
    const chunkMean = Float32Array.from(r.chunkMean.toArray());
    if (!r.chunkMean.isHost) r.chunkMean.dispose();
    if (!r.channels.isHost) r.channels.dispose();
    if (!this._sum) this._sum = chunkMean;
    else for (let c = 0; c < chunkMean.length; c++) this._sum[c] += chunkMean[c];
    this._channels = C;
    this._count++;
    return Tensor.from({ data: Float32Array.from(s, (v) => -v), shape: r.scores.shape });
  }

  // The host indices, on the device of the scores (the chunk's).
  private static _result(indices: Tensor, r: StcScoresResult): StreamPruneResult {
    return { indices: r.scores.isHost ? indices : indices.to(r.scores.device), scores: r.scores };
  }

  // A failure after the scores call must not leave its device outputs to the finalizers.
  private static _discard(r: StcScoresResult): void {
    for (const t of [r.scores, r.chunkMean, r.channels]) if (!t.isHost && !t.disposed) t.dispose();
  }

  /**
   * Scores a chunk [F, T, C] (host or device), folds it into the memory and
   * returns the kept token positions of each frame, on the chunk's device.
   * @example
   * const pruner = new StreamPruner({ tokensPerFrame: 60 });
   * for (const chunk of chunks) { const { indices } = await pruner.push(chunk); ... }
   */
  push(chunk: TensorLike): Promise<StreamPruneResult> {
    return driveAsync(this._steps('StreamPruner.push', chunk), 'StreamPruner.push');
  }

  pushSync(chunk: TensorLike): StreamPruneResult {
    return drive(this._steps('StreamPruner.pushSync', chunk), 'StreamPruner.pushSync');
  }

  private *_steps(op: string, chunk: TensorLike): MethodGen<StreamPruneResult> {
    const { x, k } = this._plan(op, chunk);
    const memory = this._memory(x);
    let r: StcScoresResult;
    try {
      r = (yield call(stcScoresSync, stcScores, x, memory.opts)) as StcScoresResult;
    } finally {
      memory.release();
    }
    try {
      const { indices } = (yield call(topkSync, topk, this._negated(r, x.shape[2]), k, { order: 'index', values: false })) as TopkResult;
      return StreamPruner._result(indices, r);
    } catch (e) {
      StreamPruner._discard(r);
      throw e;
    }
  }

}

/**
 * STC over a whole video given as chunks of frames: a fresh StreamPruner fed
 * every chunk in order.
 * @example const kept = await stc([chunk0, chunk1], { tokensPerFrame: 60 }); // one result per chunk
 */
export async function stc(chunks: readonly TensorLike[], opts?: StreamPrunerOptions): Promise<StreamPruneResult[]> {
  if (!Array.isArray(chunks)) throw invalid('ERR_ARG', 'stc chunks', 'an array of [F, T, C] tensors', chunks);
  const p = asCaller('stc', () => new StreamPruner(opts));
  const out: StreamPruneResult[] = [];
  try {
    for (const c of chunks) out.push(await asCaller('stc', () => p.push(c)));
  } catch (e) {
    throw renamed(e, 'stc');
  }
  return out;
}

export function stcSync(chunks: readonly TensorLike[], opts?: StreamPrunerOptions): StreamPruneResult[] {
  if (!Array.isArray(chunks)) throw invalid('ERR_ARG', 'stcSync chunks', 'an array of [F, T, C] tensors', chunks);
  return asCaller('stcSync', () => {
    const p = new StreamPruner(opts);
    const out: StreamPruneResult[] = [];
    for (const c of chunks) out.push(p.pushSync(c)); // not map: it skips the holes of a sparse array
    return out;
  });
}
