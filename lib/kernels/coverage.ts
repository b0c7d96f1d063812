/**
 * Coverage selection: greedy maximum coverage and MMTok's coverage matrix.
 */
import { deviceOf } from '../device';
import { invalid, makeError } from '../errors';
import { native, opParams } from '../native';
import { Tensor, TensorLike, toTensor } from '../tensor';
import { bool, callSite, checkOptions, commonDevice, expectFloat, expectInnerContiguous, int, oneOf, CallOutputs, OpPlan, rank3, excludeMask, expectDisjoint, output, runOp, runOpAsync, stream } from './common';

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
  /**
   * Write into this contiguous f32 tensor ([B, m + n, n], or [m + n, n] for
   * 2-D inputs; on the inputs' device; not sharing memory with them) instead
   * of allocating one: reuse it across calls (a fresh host output of a MB or
   * more costs page faults). The result is then this tensor.
   */
  out?: TensorLike;
  stream?: bigint;
  wait?: boolean;
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
  const dev = deviceOf(ordinal);
  const order = outs.empty([B, kk], 'i32', dev, { stream: s });
  const sorted = outs.empty([B, kk], 'i32', dev, { stream: s });
  const gains = outs.empty([B, kk], 'f32', dev, { stream: s });
  const params = opParams('maxCoverage', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, k: kk });
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
  const o = checkOptions(op, opts, ['tauTV', 'tauVV', 'alpha', 'out', 'stream', 'wait']);
  const { text, vision, aux } = checkMmtokInputs(op, inputs);
  const [B, n, D] = vision.t.shape;
  const m = text.t.shape[1];
  const tauTV = positive(op, 'tauTV', o.tauTV, 0.02);
  const tauVV = positive(op, 'tauVV', o.tauVV, 0.2);
  const alpha = positive(op, 'alpha', o.alpha, 0.5, true);
  const ordinal = commonDevice(op, [['vision', vision.t], ['text', text.t], ['visionAux', aux?.t]]);
  const s = stream(op, o.stream, vision.t.stream);
  const given = o.out === undefined ? undefined : output(outs, o.out, vision.flat ? [m + n, n] : [B, m + n, n], ordinal, s, 'out', 'f32', true);
  const out = given ? (vision.flat ? given.view([1, m + n, n]) : given) : outs.empty([B, m + n, n], 'f32', deviceOf(ordinal), { stream: s, uninitialized: true });
  if (given) expectDisjoint(op, [['text', text.t], ['vision', vision.t], ['visionAux', aux?.t], ['out', out]]);
  const params = opParams('mmtokCoverage', { wait: bool(op, 'wait', o.wait, true) ? 1 : 0, tauTV, tauVV, alpha });
  const td = text.t.descriptor('text');
  const vd = vision.t.descriptor('vision');
  const ad = aux?.t.descriptor('visionAux');
  const od = out.descriptor('out');
  return {
    result: given ?? (vision.flat ? out.view([m + n, n]) : out),
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

