/**
 * Shared pieces of the paper methods. Each method is written once, as a
 * generator that yields kernel calls; `drive` runs it synchronously (the
 * *Sync twin) and `driveAsync` off the event loop (the Promise API), so the
 * two can never drift apart.
 */
import { Device } from '../device';
import { asCaller, callerName, invalid, isTokenSieveError, makeError, renamed } from '../errors';
import { attentionScores, attentionScoresSync, AttentionScoresOptions, reduceAttention, reduceAttentionSync, ReductionOptions } from '../kernels/attention';
import { topk, topkSync, TopkOptions, TopkResult } from '../kernels/select';
import { Tensor, TensorLike, toTensor } from '../tensor';

/**
 * Where a method's attention comes from: query/key projections (the fused
 * kernel computes the softmax without materialising it) or precomputed
 * probabilities [B, H, N, N] (e.g. HF `output_attentions`).
 */
export type AttentionSource =
  | {
      q: TensorLike;
      k: TensorLike;
      layout?: 'bhnd' | 'bnhd';
      /** Default 1/√D. */
      scale?: number;
      keyBias?: TensorLike;
    }
  | { probs: TensorLike };

/** Every method returns at least these. */
export interface SelectionResult {
  /** Kept token indices, i32 [B, k], in the order the reference keeps them. */
  indices: Tensor;
  /** The per-token significance the selection ranked, f32 [B, N']. */
  scores: Tensor;
}

/**
 * One kernel call of a method, runnable either way: every method is written
 * once, as a generator that yields its steps, and {@link drive} (Sync) or
 * {@link driveAsync} (Promise API) runs them. A step that throws is thrown
 * back into the generator, so its try/finally blocks free what it holds.
 */
export interface Step {
  sync(): unknown;
  async(): Promise<unknown>;
}

/** A step calling `syncOp(...args)` or `asyncOp(...args)`, the twins of one op. */
export function call<A extends unknown[], T>(syncOp: (...a: A) => T, asyncOp: (...a: A) => Promise<T>, ...args: A): Step {
  return { sync: () => syncOp(...args), async: () => asyncOp(...args) };
}

export type MethodGen<R> = Generator<Step, R, unknown>;

/**
 * Runs a method's steps on this thread. `caller` is the public function the
 * user called: the kernels it runs name it in their errors, and every coded
 * error it throws reads `caller: ...`.
 */
export function drive<R>(gen: MethodGen<R>, name: string): R {
  const caller = callerName(name); // a method run by another public function (stc) reports that one
  try {
    let r = asCaller(caller, () => gen.next());
    while (!r.done) {
      let v: unknown;
      const step = r.value;
      try {
        v = asCaller(caller, () => step.sync());
      } catch (e) {
        r = asCaller(caller, () => gen.throw(e));
        continue;
      }
      r = asCaller(caller, () => gen.next(v));
    }
    return r.value;
  } catch (e) {
    throw renamed(e, caller);
  }
}

/** Runs a method's steps off the event loop (the Promise API); errors as {@link drive}. */
export async function driveAsync<R>(gen: MethodGen<R>, name: string): Promise<R> {
  const caller = callerName(name);
  const site: { stack?: string } = {};
  Error.captureStackTrace(site, driveAsync); // the method's caller: rejections point there, not at a step inside
  try {
    let r = asCaller(caller, () => gen.next());
    while (!r.done) {
      let v: unknown;
      const step = r.value;
      try {
        v = await asCaller(caller, () => step.async());
      } catch (e) {
        r = asCaller(caller, () => gen.throw(renamed(e, caller)));
        continue;
      }
      r = asCaller(caller, () => gen.next(v));
    }
    return r.value;
  } catch (e) {
    const err = renamed(e, caller);
    if (isTokenSieveError(err) && site.stack) {
      err.stack = `${err.name} [${err.code}]: ${err.message}\n${site.stack.split('\n').slice(1).join('\n')}`;
    }
    throw err;
  }
}

/** Token count N of an attention source (keys), and its batch size. */
export function sourceDims(op: string, src: unknown): { B: number; N: number; device: Device } {
  if (typeof src !== 'object' || src === null) throw invalid('ERR_ARG', `${op} attention`, '{ q, k } or { probs }', src);
  if (src instanceof Tensor || ('data' in src && 'shape' in src)) {
    throw makeError('ERR_ARG', `${op}: expected the attention as { q, k } or { probs } but received a ${src instanceof Tensor ? 'Tensor' : 'tensor { data, shape }'}; wrap it: ${op}({ q, k }, opts) or ${op}({ probs }, opts)`);
  }
  if ('probs' in src) {
    const p = toTensor((src as { probs: TensorLike }).probs, 'probs');
    if (p.ndim !== 4) throw makeError('ERR_SHAPE', `Expected probs of rank 4 [B, H, Nq, Nk] for ${op} but received shape [${p.shape.join(', ')}]`);
    return { B: p.shape[0], N: p.shape[3], device: p.device };
  }
  if ('q' in src && 'k' in src) {
    const s = src as { k: TensorLike; layout?: string };
    const k = toTensor(s.k, 'k');
    if (k.ndim !== 4) throw makeError('ERR_SHAPE', `Expected k of rank 4 for ${op} but received shape [${k.shape.join(', ')}]`);
    return { B: k.shape[0], N: s.layout === 'bnhd' ? k.shape[1] : k.shape[2], device: k.device };
  }
  throw invalid('ERR_ARG', `${op} attention`, '{ q, k } or { probs }', src);
}

/** Head-reduced attention scores from either kind of source. */
export function* scoresOf(
  op: string,
  src: AttentionSource,
  opts: ReductionOptions & { causal?: boolean },
): MethodGen<Tensor> {
  if ('probs' in src) {
    const { causal: _causal, ...rest } = opts;
    return (yield call(reduceAttentionSync, reduceAttention, src.probs, rest)) as Tensor;
  }
  if (!('q' in src) || !('k' in src)) throw invalid('ERR_ARG', `${op} attention`, '{ q, k } or { probs }', src);
  const o: AttentionScoresOptions = { ...opts };
  if (src.layout !== undefined) o.layout = src.layout;
  if (src.scale !== undefined) o.scale = src.scale;
  if (src.keyBias !== undefined) o.keyBias = src.keyBias;
  return (yield call(attentionScoresSync, attentionScores, src.q, src.k, o)) as Tensor;
}

export function* topkOf(scores: Tensor, k: number, opts: TopkOptions): MethodGen<TopkResult> {
  return (yield call(topkSync, topk, scores, k, opts)) as TopkResult;
}

/** Python 3's round(): half to even (what the references call). */
export function pyRound(x: number): number {
  if (typeof x !== 'number') throw invalid('ERR_ARG', 'pyRound', 'a number', x);
  const f = Math.floor(x);
  const diff = x - f;
  if (diff < 0.5) return f;
  if (diff > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * The kept count from `keep` (a count) or `reduction` (the pruned fraction
 * r, keeping round(N·(1 − r)) as the references do). Exactly one is needed.
 */
export function keepCount(op: string, opts: { keep?: unknown; reduction?: unknown }, n: number): number {
  if ((opts.keep === undefined) === (opts.reduction === undefined)) {
    throw makeError('ERR_ARG', `${op}: pass exactly one of keep (a token count) or reduction (the pruned fraction)`);
  }
  let k: number;
  if (opts.keep !== undefined) {
    if (typeof opts.keep !== 'number' || !Number.isInteger(opts.keep)) throw invalid('ERR_ARG', `${op} keep`, 'an integer', opts.keep);
    k = opts.keep;
  } else {
    const r = opts.reduction;
    if (typeof r !== 'number' || !(r >= 0 && r < 1)) throw invalid('ERR_RANGE', `${op} reduction`, 'a number in [0, 1)', r);
    k = pyRound(n * (1 - r));
  }
  if (k < 1 || k > n) throw makeError('ERR_RANGE', `Expected ${op} to keep between 1 and ${n} tokens but the options ask for ${k}`);
  return k;
}

/** Host Int32Array → i32 tensor on `device` (uploads when it is a CUDA device). */
export function indexTensor(data: Int32Array, shape: number[], device: Device): Tensor {
  const t = Tensor.from({ data, shape, dtype: 'i32' });
  return device === 'cpu' ? t : t.to(device);
}

/**
 * Patch indices → token positions in a sequence that starts with CLS
 * (each index + 1), on the same device (`tokenIndices: true`).
 */
export function patchToTokenIndices(indices: Tensor): Tensor {
  const shifted = Int32Array.from(hostI32(indices.isHost ? indices : indices.toHost()), (i) => i + 1);
  const out = indexTensor(shifted, indices.shape.slice(), indices.device);
  if (!indices.isHost) indices.dispose();
  return out;
}

/** `tokenIndices` option: a boolean, default false. */
export function tokenIndicesOption(op: string, v: unknown): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw invalid('ERR_ARG', `${op} tokenIndices`, 'a boolean', v);
  return v;
}

/** Host copy of a tensor's values as a Float32Array (no copy for contiguous host f32). */
export function hostF32(t: Tensor): Float32Array {
  if (t.isHost && t.dtype === 'f32' && t.isContiguous && t.offset === 0) return t.data as Float32Array;
  return Float32Array.from(t.toArray());
}

export function hostI32(t: Tensor): Int32Array {
  if (t.isHost && t.dtype === 'i32' && t.isContiguous && t.offset === 0) return t.data as Int32Array;
  return Int32Array.from(t.toArray());
}

// ---- shared by several methods (methods do not import each other) ----

/** The kept count from ratio / keep / reduction (one at most; default ratio). */
export function diversityKeep(op: string, o: Record<string, unknown>, N: number, defaultRatio: number): number {
  const given = ['ratio', 'keep', 'reduction'].filter((k) => o[k] !== undefined);
  if (given.length > 1) throw makeError('ERR_ARG', `${op}: pass at most one of ratio, keep or reduction`);
  if (o.keep !== undefined || o.reduction !== undefined) return keepCount(op, o, N);
  const r = o.ratio === undefined ? defaultRatio : o.ratio;
  if (typeof r !== 'number' || !(r > 0 && r <= 1)) throw invalid('ERR_RANGE', `${op} ratio`, 'a number in (0, 1]', r);
  const k = pyRound(r * N);
  if (k < 1) throw makeError('ERR_RANGE', `Expected ${op} to keep at least 1 of ${N} tokens but ratio ${r} keeps ${k}`);
  return k;
}

export interface MergeSelectionResult {
  /** [B, dominant + contextual, C]: [dominant (original order), contextual (target order)]. */
  tokens: Tensor;
  /** i32 [B, dominant]: the dominant token indices, ascending. */
  indices: Tensor;
  /** f32 [B, N']: the scores ranked. */
  scores: Tensor;
}

/**
 * Concatenates [B, K1, C] and [B, K2, C] along tokens. Done on the host: device
 * inputs are copied back, joined, and the result uploaded to their device.
 */
export function catTokens(a: Tensor, b: Tensor): Tensor {
  if (!a.isHost || !b.isHost) {
    const joined = catTokens(a.toHost(), b.toHost());
    return joined.to(a.device);
  }
  const [B, K1, C] = a.shape;
  const K2 = b.shape[1];
  const out = Tensor.empty([B, K1 + K2, C], a.dtype, 'cpu');
  const od = out.data as unknown as { set(src: ArrayLike<number>, off: number): void };
  const ad = a.contiguous().data as unknown as { subarray(s: number, e: number): ArrayLike<number> };
  const bd = b.contiguous().data as unknown as { subarray(s: number, e: number): ArrayLike<number> };
  for (let i = 0; i < B; i++) {
    od.set(ad.subarray(i * K1 * C, (i + 1) * K1 * C), i * (K1 + K2) * C);
    od.set(bd.subarray(i * K2 * C, (i + 1) * K2 * C), (i * (K1 + K2) + K1) * C);
  }
  return out;
}
