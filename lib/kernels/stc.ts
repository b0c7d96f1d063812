/**
 * STC's pruner scores for a stream of video chunks (the memory lives in
 * methods/stc.ts's StreamPruner).
 */
import { deviceOf } from '../device';
import { invalid, makeError } from '../errors';
import { native, opParams } from '../native';
import { Tensor, TensorLike, toTensor } from '../tensor';
import { bool, callSite, checkOptions, commonDevice, expectFloat, expectInnerContiguous, int, oneOf, CallOutputs, OpPlan, rank3, excludeMask, runOp, runOpAsync, stream } from './common';

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
  const dev = deviceOf(ordinal);
  const scores = outs.empty([F, T], 'f32', dev, { stream: s });
  const chunkMean = outs.empty([Cm], 'f32', dev, { stream: s });
  const channels = outs.empty([Cs], 'i32', dev, { stream: s });
  const params = opParams('stcScores', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, memoryCount: count, memoryMode: mode === 'authors' ? 0 : 1 });
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
 * STC-Pruner scores of one chunk of frames [F, T, C] (see include/tokensieve/stc.h
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
