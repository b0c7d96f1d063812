/**
 * STC-Pruner (lern-to-write/STC, methods.md §12a) as a streaming pruner:
 * each chunk of frames is scored against its frame means and the memory (the
 * mean of all chunk means so far, this chunk included), and the
 * `tokensPerFrame` lowest-scoring (most distinctive) tokens of every frame are
 * kept, sorted. The memory is a running sum and a count: O(C) however long
 * the stream (the reference keeps an unbounded list of chunk means, whose
 * mean is the same number). llava_vid's always-kept newline tokens are a
 * model-layout detail left to the caller.
 */
import { invalid, makeError } from '../errors';
import { checkOptions } from '../kernels/common';
import { stcScores, stcScoresSync, StcScoresResult } from '../kernels/diversity';
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

  #memory() {
    return this.#sum ? { memorySum: { data: this.#sum, shape: [this.#sum.length] }, memoryCount: this.#count } : {};
  }

  // The lowest scores are the top-k of the negated scores (ties to the lower index).
  #negated(r: StcScoresResult): Tensor {
    const s = r.scores.toArray();
    const chunkMean = Float32Array.from(r.chunkMean.toArray());
    if (!this.#sum) this.#sum = chunkMean;
    else for (let c = 0; c < chunkMean.length; c++) this.#sum[c] += chunkMean[c];
    this.#count++;
    return Tensor.from({ data: Float32Array.from(s, (v) => -v), shape: r.scores.shape });
  }

  /**
   * Scores a chunk [F, T, C], folds it into the memory and returns the kept
   * token positions of each frame.
   * @example
   * const pruner = new StreamPruner({ tokensPerFrame: 60 });
   * for (const chunk of chunks) { const { indices } = await pruner.push(chunk); ... }
   */
  async push(chunk: TensorLike): Promise<StreamPruneResult> {
    const { x, k } = this.#plan('StreamPruner.push', chunk);
    const r = await stcScores(x, this.#memory());
    const { indices } = await topk(this.#negated(r), k, { order: 'index', values: false });
    return { indices, scores: r.scores };
  }

  pushSync(chunk: TensorLike): StreamPruneResult {
    const { x, k } = this.#plan('StreamPruner.pushSync', chunk);
    const r = stcScoresSync(x, this.#memory());
    const { indices } = topkSync(this.#negated(r), k, { order: 'index', values: false });
    return { indices, scores: r.scores };
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
