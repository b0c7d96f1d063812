/**
 * STC-Pruner (lern-to-write/STC, methods.md §12a) as a streaming pruner:
 * each chunk of frames is scored against its frame means and the memory (the
 * mean of all chunk means so far, this chunk included), and the
 * `tokensPerFrame` lowest-scoring (most distinctive) tokens of every frame are
 * kept, sorted. The memory is a running sum and a count: O(C) however long
 * the stream (the reference keeps an unbounded list of chunk means, whose
 * mean is the same number). llava_vid's always-kept newline tokens are a
 * model-layout detail left to the caller.
 *
 * Device chunks. The scores run on the chunk's device (cuda::stc_scores);
 * the memory stays on the host as C floats, so chunks may come from any
 * device (or the host) in any mix without reset(). Each push of a device
 * chunk makes these blocking host round trips, all small next to the chunk:
 *   - up: the running memory sum, C floats, into a temporary device tensor
 *     that is disposed as soon as the scores call returns;
 *   - down: the chunk mean (C floats; the device copy is then disposed) to
 *     fold into the memory, and the F×T scores for the lowest-k selection,
 *     which runs on the host with the same topk as host chunks;
 *   - up: the F×tokensPerFrame indices, returned on the chunk's device.
 * The returned `scores` are the kernel's output, on the chunk's device. CUDA
 * scores may differ from the CPU's by about one float ulp (f64 exp), so the
 * indices equal a host run's wherever no two scores of a frame are that
 * close at the cut.
 */
import { invalid, makeError } from '../errors';
import { checkOptions } from '../kernels/common';
import { stcScores, StcScoresOptions, stcScoresSync, StcScoresResult } from '../kernels/diversity';
import { topk, topkSync } from '../kernels/select';
import { Tensor, TensorLike, toTensor } from '../tensor';

export interface StreamPrunerOptions {
  /** Tokens kept per frame (default 60, the reference's token_per_frame). */
  tokensPerFrame?: number;
}

export interface StreamPruneResult {
  /** i32 [F, tokensPerFrame]: kept positions inside each frame, ascending. */
  indices: Tensor;
  /** f32 [F, T]: the STC scores (lower = more distinctive). */
  scores: Tensor;
}

export class StreamPruner {
  readonly tokensPerFrame: number;
  #sum: Float32Array | undefined;
  #count = 0;

  constructor(opts?: StreamPrunerOptions) {
    const o = checkOptions('StreamPruner', opts, ['tokensPerFrame']);
    const k = o.tokensPerFrame === undefined ? 60 : o.tokensPerFrame;
    if (typeof k !== 'number' || !Number.isInteger(k)) throw invalid('ERR_ARG', 'StreamPruner tokensPerFrame', 'an integer', k);
    if (k < 1) throw makeError('ERR_RANGE', `Expected StreamPruner tokensPerFrame >= 1 but received ${k}`);
    this.tokensPerFrame = k;
  }

  /** Chunks folded into the memory so far. */
  get chunks(): number {
    return this.#count;
  }

  /** Forgets the memory (a new video). */
  reset(): void {
    this.#sum = undefined;
    this.#count = 0;
  }

  #plan(op: string, chunk: TensorLike): { x: Tensor; k: number } {
    const x = toTensor(chunk, 'chunk');
    if (x.ndim !== 3) throw makeError('ERR_SHAPE', `Expected a chunk of rank 3 [F, T, C] for ${op} but received shape [${x.shape.join(', ')}]`);
    if (this.#sum && this.#sum.length !== x.shape[2]) {
      throw makeError('ERR_SHAPE', `Expected chunks of ${this.#sum.length} channels for ${op} (the memory's) but received ${x.shape[2]}; reset() between videos`);
    }
    if (this.tokensPerFrame > x.shape[1]) throw makeError('ERR_RANGE', `Expected tokensPerFrame ${this.tokensPerFrame} <= T = ${x.shape[1]} for ${op}`);
    return { x, k: this.tokensPerFrame };
  }

  // The memory options of the scores call: the host sum as a view for a host
  // chunk; for a device chunk a copy on its device, which `release` disposes
  // (call it once the scores call has returned, on every path).
  #memory(x: Tensor): { opts: StcScoresOptions; release: () => void } {
    if (!this.#sum) return { opts: {}, release: () => {} };
    const sum = { data: this.#sum, shape: [this.#sum.length] };
    if (x.isHost) return { opts: { memorySum: sum, memoryCount: this.#count }, release: () => {} };
    const onDevice = Tensor.from(sum).to(x.device);
    return { opts: { memorySum: onDevice, memoryCount: this.#count }, release: () => onDevice.dispose() };
  }

  // Folds the chunk mean into the memory and returns the negated scores on the
  // host: the lowest scores are the top-k of the negation (ties to the lower
  // index). For a device chunk both come down here; its chunk-mean tensor is
  // not returned, so it is disposed.
  #negated(r: StcScoresResult): Tensor {
    const s = r.scores.toArray();
    const chunkMean = Float32Array.from(r.chunkMean.toArray());
    if (!r.chunkMean.isHost) r.chunkMean.dispose();
    if (!this.#sum) this.#sum = chunkMean;
    else for (let c = 0; c < chunkMean.length; c++) this.#sum[c] += chunkMean[c];
    this.#count++;
    return Tensor.from({ data: Float32Array.from(s, (v) => -v), shape: r.scores.shape });
  }

  // The host indices, on the device of the scores (the chunk's).
  static #result(indices: Tensor, r: StcScoresResult): StreamPruneResult {
    return { indices: r.scores.isHost ? indices : indices.to(r.scores.device), scores: r.scores };
  }

  // A failure after the scores call must not leave its device outputs to the finalizers.
  static #discard(r: StcScoresResult): void {
    for (const t of [r.scores, r.chunkMean]) if (!t.isHost && !t.disposed) t.dispose();
  }

  /**
   * Scores a chunk [F, T, C] (host or device), folds it into the memory and
   * returns the kept token positions of each frame, on the chunk's device.
   * @example
   * const pruner = new StreamPruner({ tokensPerFrame: 60 });
   * for (const chunk of chunks) { const { indices } = await pruner.push(chunk); ... }
   */
  async push(chunk: TensorLike): Promise<StreamPruneResult> {
    const { x, k } = this.#plan('StreamPruner.push', chunk);
    const memory = this.#memory(x);
    let r: StcScoresResult;
    try {
      r = await stcScores(x, memory.opts);
    } finally {
      memory.release();
    }
    try {
      const { indices } = await topk(this.#negated(r), k, { order: 'index', values: false });
      return StreamPruner.#result(indices, r);
    } catch (e) {
      StreamPruner.#discard(r);
      throw e;
    }
  }

  pushSync(chunk: TensorLike): StreamPruneResult {
    const { x, k } = this.#plan('StreamPruner.pushSync', chunk);
    const memory = this.#memory(x);
    let r: StcScoresResult;
    try {
      r = stcScoresSync(x, memory.opts);
    } finally {
      memory.release();
    }
    try {
      const { indices } = topkSync(this.#negated(r), k, { order: 'index', values: false });
      return StreamPruner.#result(indices, r);
    } catch (e) {
      StreamPruner.#discard(r);
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
  const p = new StreamPruner(opts);
  const out: StreamPruneResult[] = [];
  for (const c of chunks) out.push(await p.push(c));
  return out;
}

export function stcSync(chunks: readonly TensorLike[], opts?: StreamPrunerOptions): StreamPruneResult[] {
  if (!Array.isArray(chunks)) throw invalid('ERR_ARG', 'stc chunks', 'an array of [F, T, C] tensors', chunks);
  const p = new StreamPruner(opts);
  return chunks.map((c) => p.pushSync(c));
}
