/**
 * MMTok (Ironieser/MMTok, methods.md §6): greedy maximum coverage over the
 * coverage matrix [P; α·Q] built from the question's text embeddings and the
 * vision tokens. k = min(keep, n) with keep 64 by default; if n <= keep, every
 * token is kept and no selection runs; indices sorted ascending. Batched here
 * (the reference is batch-size 1).
 */
import { invalid, makeError } from '../errors';
import { checkOptions, commonDevice } from '../kernels/common';
import { checkMmtokInputs, maxCoverage, maxCoverageSync, MaxCoverageResult, mmtokCoverage, mmtokCoverageSync, MmtokCoverageOptions, MmtokInputs } from '../kernels/coverage';
import { Tensor, TensorLike, toTensor } from '../tensor';
import { call, drive, driveAsync, indexTensor, MethodGen, Step } from './common';

export interface MmTokOptions {
  /** Target number of vision tokens (default 64, the reference's target_vision_tokens). */
  keep?: number;
  /** Text–vision temperature (default 0.02; MMTok's Qwen setting is 0.01). */
  tauTV?: number;
  /** Vision–vision temperature (default 0.2). */
  tauVV?: number;
  /** Weight of the vision–vision block (default 0.5). */
  alpha?: number;
  /** u8 [B, n]: tokens never kept (the reference's padding_patch_indices). */
  exclude?: TensorLike;
}

export interface MmTokResult {
  /** i32 [B, k] ascending. */
  indices: Tensor;
  /** i32 [B, k] pick order (equal to `indices` when everything is kept). */
  order: Tensor;
  /** f32 [B, k] gain of each pick (absent when everything is kept). */
  gains?: Tensor;
}

interface Plan {
  k: number;
  all?: MmTokResult;
  cov: MmtokCoverageOptions;
  exclude?: TensorLike;
}

function plan(op: string, inputs: MmtokInputs, opts: MmTokOptions | undefined): Plan {
  const o = checkOptions(op, opts, ['keep', 'tauTV', 'tauVV', 'alpha', 'exclude']);
  // Checked in full even when every token is kept and no kernel runs.
  const checked = checkMmtokInputs(op, inputs);
  commonDevice(op, [['vision', checked.vision.t], ['text', checked.text.t], ['visionAux', checked.aux?.t]]);
  const vision = toTensor(inputs.vision, 'vision');
  const keep = o.keep === undefined ? 64 : o.keep;
  if (typeof keep !== 'number' || !Number.isInteger(keep) || keep < 1) throw invalid('ERR_RANGE', `${op} keep`, 'an integer >= 1', keep);
  const cov: MmtokCoverageOptions = { tauTV: o.tauTV as number | undefined, tauVV: o.tauVV as number | undefined, alpha: o.alpha as number | undefined };
  // Checked here too: with n <= keep no kernel runs, but bad options are still bad.
  for (const [name, v, zeroOk] of [['tauTV', cov.tauTV, false], ['tauVV', cov.tauVV, false], ['alpha', cov.alpha, true]] as const) {
    if (v === undefined) continue;
    if (typeof v !== 'number' || Number.isNaN(v)) throw invalid('ERR_ARG', `${op} ${name}`, 'a number', v);
    if (!Number.isFinite(v) || (zeroOk ? v < 0 : v <= 0)) throw makeError('ERR_RANGE', `Expected ${op} ${name} ${zeroOk ? '>= 0' : '> 0'} and finite but received ${v}`);
  }
  const n = vision.shape[vision.ndim - 2];
  if (n !== undefined && n <= keep && o.exclude === undefined) {
    // The reference keeps everything without selecting.
    const B = vision.ndim === 3 ? vision.shape[0] : 1;
    const data = Int32Array.from({ length: B * n }, (_, i) => i % n);
    const shape = vision.ndim === 3 ? [B, n] : [n];
    const idx = indexTensor(data, shape, vision.device);
    return { k: n, all: { indices: idx, order: idx }, cov };
  }
  return { k: Math.min(keep, n), cov, exclude: o.exclude as TensorLike | undefined };
}

/**
 * @example
 * const { indices } = await mmTok({ text: questionEmbeds, vision: projected, visionAux: clipFeatures }, { keep: 64 });
 * const kept = await gather(projected, indices);
 */
export async function mmTok(inputs: MmtokInputs, opts?: MmTokOptions): Promise<MmTokResult> {
  return driveAsync(steps('mmTok', inputs, opts), 'mmTok');
}

export function mmTokSync(inputs: MmtokInputs, opts?: MmTokOptions): MmTokResult {
  return drive(steps('mmTokSync', inputs, opts), 'mmTokSync');
}

/**
 * The coverage matrix lives only between the two kernels. One host matrix
 * of up to 16 MiB is kept for the next Sync call of the same shape: a fresh
 * one is fresh pages whenever the allocator has trimmed the last (576
 * tokens: 1.4 MB, ~340 page faults, ~4 ms on the development VM, against a
 * 5.5 ms call). The async path allocates its own (written in place on the
 * worker; a kept one would be staged as a copy on the event loop's thread).
 * A call that finds the spare taken allocates its own.
 */
let spareCoverage: Tensor | undefined;
const SPARE_COVERAGE_BYTES = 16 << 20;

function takeSpare(shape: readonly number[]): Tensor | undefined {
  const t = spareCoverage;
  if (t === undefined || t.disposed || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) return undefined;
  spareCoverage = undefined;
  return t;
}

function keepOrDispose(t: Tensor): void {
  if (t.isHost && !t.disposed && spareCoverage === undefined && t.numel * 4 <= SPARE_COVERAGE_BYTES) spareCoverage = t;
  else t.dispose();
}

function* steps(op: string, inputs: MmtokInputs, opts: MmTokOptions | undefined): MethodGen<MmTokResult> {
  const p = plan(op, inputs, opts);
  if (p.all) return p.all;
  const text = toTensor(inputs.text, 'text');
  const vision = toTensor(inputs.vision, 'vision');
  const [m, n] = [text.shape[text.ndim - 2], vision.shape[vision.ndim - 2]];
  const shape = vision.ndim === 3 ? [vision.shape[0], m + n, n] : [m + n, n];
  const build: Step = {
    sync: () => {
      const spare = vision.isHost ? takeSpare(shape) : undefined;
      try {
        return mmtokCoverageSync(inputs, spare ? { ...p.cov, out: spare } : p.cov);
      } catch (e) {
        if (spare) keepOrDispose(spare);
        throw e;
      }
    },
    async: () => mmtokCoverage(inputs, p.cov),
  };
  const coverage = (yield build) as Tensor;
  try {
    const r = (yield call(maxCoverageSync, maxCoverage, coverage, p.k, { exclude: p.exclude })) as MaxCoverageResult;
    return { indices: r.indices, order: r.order, gains: r.gains };
  } finally {
    keepOrDispose(coverage);
  }
}
