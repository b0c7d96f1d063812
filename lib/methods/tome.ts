/**
 * ToMe (facebookresearch/ToMe): token merging inside every transformer block,
 * between the attention residual and the MLP.
 *
 * Reference convention (specs/methods.md §1): the metric is the block's keys
 * averaged over heads; bipartite soft matching on the parity split with CLS
 * (and the distill token) protected; merge_wavg carries `size` across layers;
 * proportional attention adds log(size) of each key to every logit; `r` per
 * layer comes from parse_r (int, (r, inflection) ramp, or a list).
 */
import { describe, invalid, makeError } from '../errors';
import { checkOptions, commonDevice, expectFloat, expectInnerContiguous, oneOf } from '../kernels/common';
import { bipartiteSoftMatch, bipartiteSoftMatchSync, MatchPrecision, merge, MergePlan, MergeResult, mergeSource, mergeSourceSync, mergeSync } from '../kernels/merge';
import { call, drive, driveAsync, MethodGen } from './common';
import { hideFields, Tensor, TensorLike, toTensor } from '../tensor';

/** A per-layer reduction: constant r, ToMe's (r, inflection) ramp, or an explicit list (padded with 0). */
export type ToMeSchedule = number | { r: number; inflection: number } | number[];

/**
 * ToMe's parse_r(num_layers, r): an int is constant; { r, inflection } is
 * min = int(r·(1 − inflection)), max = 2r − min, a linear ramp from min to
 * max over the layers with each value int()-truncated ({ r, inflection: -1 }
 * is the paper's decreasing schedule); a list is used as is, padded with 0.
 * (ToMe divides by num_layers − 1; with one layer we return [min].) r and
 * list values must be >= 0; ramp values below 0 (an inflection outside
 * [-1, 1]) become 0, which is what ToMe's merge makes of them.
 * @throws {RangeError} ERR_RANGE for r < 0, more than 65,536 layers, or a list longer than the layers
 * @example parseR(12, { r: 8, inflection: -1 }) // [16, 14, 13, 11, 10, 8, 7, 5, 4, 2, 1, 0]
 */
export function parseR(numLayers: number, r: ToMeSchedule): number[] {
  if (typeof numLayers !== 'number' || !Number.isInteger(numLayers) || numLayers < 1) {
    throw invalid('ERR_ARG', 'parseR numLayers', 'an integer >= 1', numLayers);
  }
  if (numLayers > MAX_LAYERS) {
    throw makeError('ERR_RANGE', `Expected parseR numLayers <= ${MAX_LAYERS} but received ${describe(numLayers)}`);
  }
  // r is a token count: a non-negative safe integer (ToMe reads r < 0 as 0; we refuse it).
  const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const isNumber = (v: unknown): v is number => typeof v === 'number';
  if (Array.isArray(r)) {
    if (!r.every(isNumber) || !r.every((v) => Number.isInteger(v))) throw invalid('ERR_ARG', 'parseR r', 'a list of integers', r);
    if (!r.every(isCount)) throw makeError('ERR_RANGE', `Expected parseR r to list integers >= 0 but received ${describe(r)}`);
    if (r.length > numLayers) throw makeError('ERR_RANGE', `parseR: ${r.length} values of r for ${numLayers} layers`);
    return [...r, ...new Array<number>(numLayers - r.length).fill(0)];
  }
  let rr: number;
  let inflect = 0;
  if (isNumber(r) && Number.isInteger(r)) {
    rr = r;
  } else if (typeof r === 'object' && r !== null && isNumber((r as { r: unknown }).r) && Number.isInteger((r as { r: number }).r)
    && isNumber((r as { inflection: unknown }).inflection)) {
    rr = (r as { r: number }).r;
    inflect = (r as { inflection: number }).inflection;
    if (!Number.isFinite(inflect)) throw invalid('ERR_ARG', 'parseR inflection', 'a finite number', inflect);
  } else {
    throw invalid('ERR_ARG', 'parseR r', 'an integer, { r, inflection } or a list of integers', r);
  }
  if (!isCount(rr)) throw makeError('ERR_RANGE', `Expected parseR r >= 0 (a safe integer) but received ${describe(rr)}`);
  const min = Math.trunc(rr * (1.0 - inflect));
  const max = 2 * rr - min;
  // An inflection outside [-1, 1] takes one end of the ramp below 0, which
  // ToMe's merge treats as 0 (do_nothing); the schedule says so.
  if (numLayers === 1) return [Math.max(0, min)];
  const step = (max - min) / (numLayers - 1);
  return Array.from({ length: numLayers }, (_, i) => Math.max(0, Math.trunc(min + step * i)));
}

/** More blocks than any transformer has; guards against allocating a schedule for 2^31 layers. */
const MAX_LAYERS = 65536;

export interface ToMeOptions {
  /** Number of transformer blocks. */
  layers: number;
  /** Tokens merged per block (see {@link parseR}). */
  r: ToMeSchedule;
  /** The model has a [CLS] token at index 0 (timm: cls_token is not None). Default true. */
  cls?: boolean;
  /** The model has a distillation token at index 1 (DeiT). Default false. */
  distill?: boolean;
  /** Proportional attention (default true, as apply_patch for timm). */
  propAttn?: boolean;
  /** Keep the compact source map (ToMe's trace_source). Default false. */
  traceSource?: boolean;
  /**
   * Precision of the matching scores: `'f32'` (default, exact) or `'bf16'`
   * (the normalised metric rounded to bf16, f32 sums — ToMe in a bf16 model;
   * tensor cores on CUDA). See {@link MatchPrecision}.
   */
  precision?: MatchPrecision;
}

/**
 * The state of one ToMe forward pass: sizes and the source map carried from
 * block to block. Call {@link ToMe.step} once per block, in order.
 */
export class ToMe {
  /** r for every block (parse_r). */
  readonly schedule: readonly number[];
  readonly cls: boolean;
  readonly distill: boolean;
  readonly propAttn: boolean;
  readonly traceSource: boolean;
  readonly precision: MatchPrecision;
  private _layer = 0;
  private _sizes: Tensor | undefined;
  private _source: Tensor | undefined;

  constructor(opts: ToMeOptions) {
    const o = checkOptions('toMe', opts, ['layers', 'r', 'cls', 'distill', 'propAttn', 'traceSource', 'precision']);
    this.schedule = parseR(o.layers as number, o.r as ToMeSchedule);
    const flag = (name: string, v: unknown, d: boolean): boolean => {
      if (v === undefined) return d;
      if (typeof v !== 'boolean') throw invalid('ERR_ARG', `toMe ${name}`, 'a boolean', v);
      return v;
    };
    this.cls = flag('cls', o.cls, true);
    this.distill = flag('distill', o.distill, false);
    this.propAttn = flag('propAttn', o.propAttn, true);
    this.traceSource = flag('traceSource', o.traceSource, false);
    this.precision = oneOf('toMe', 'precision', o.precision, ['f32', 'bf16'] as const, 'f32');
    hideFields(this, ['_layer', '_sizes', '_source']);
  }

  /** The next block's index. */
  get layer(): number {
    return this._layer;
  }

  /** f32 [B, N, 1]: original patches per token (undefined before the first merge: all ones). */
  get sizes(): Tensor | undefined {
    return this._sizes;
  }

  /** i32 [B, N_orig]: the current token of every original patch (traceSource). */
  get source(): Tensor | undefined {
    return this._source;
  }

  /**
   * The proportional-attention key bias for {@link attentionScores}
   * (`keyBias`): f32 [B, N] = log(size). Undefined when there is nothing to
   * add (propAttn off, or no merge yet: ToMe adds nothing while size is None).
   */
  keyBias(): Tensor | undefined {
    if (!this.propAttn || !this._sizes) return undefined;
    const s = this._sizes.toHost().toArray();
    const [B, N] = this._sizes.shape;
    const out = Tensor.from({ data: Float32Array.from(s, Math.log), shape: [B, N] });
    return this._sizes.isHost ? out : out.to(this._sizes.device);
  }

  /** Starts a new forward pass (ToMe resets size and source every forward). */
  reset(): void {
    this._sizes?.dispose();
    this._source?.dispose();
    this._sizes = undefined;
    this._source = undefined;
    this._layer = 0;
  }

  private _next(x: TensorLike, metric: TensorLike, op: string): { r: number; x: Tensor; metric: Tensor } {
    if (this._layer >= this.schedule.length) {
      throw makeError('ERR_RANGE', `${op}: step ${this._layer} but the schedule has ${this.schedule.length} layers (call reset() for a new forward pass)`);
    }
    const r = this.schedule[this._layer];
    const xt = toTensor(x, 'x');
    const mt = toTensor(metric, 'metric');
    // Checked here as well: a block with r = 0 runs no kernel that would.
    for (const [name, t] of [['x', xt], ['metric', mt]] as const) {
      if (t.ndim !== 3 || t.shape.some((d) => d < 1)) {
        throw makeError('ERR_SHAPE', `Expected ${name} of rank 3 [B, N, C] for ${op} but received shape [${t.shape.join(', ')}]`);
      }
      expectFloat(op, name, t);
      expectInnerContiguous(op, name, t);
    }
    if (mt.shape[0] !== xt.shape[0] || mt.shape[1] !== xt.shape[1]) {
      throw makeError('ERR_SHAPE', `Expected metric [${xt.shape[0]}, ${xt.shape[1]}, C] (the tokens of x) for ${op} but received [${mt.shape.join(', ')}]`);
    }
    const sizes = this._sizes;
    if (sizes && (sizes.shape[0] !== xt.shape[0] || sizes.shape[1] !== xt.shape[1])) {
      throw makeError('ERR_SHAPE', `${op}: x has shape [${xt.shape.join(', ')}] but the carried sizes are for [${sizes.shape[0]}, ${sizes.shape[1]}] tokens (call reset() for a new forward pass)`);
    }
    commonDevice(op, [['x', xt], ['metric', mt], ['sizes', sizes]]);
    return { r, x: xt, metric: mt };
  }

  private _advance(plan: MergePlan, sizes: Tensor | undefined, source: Tensor | undefined): void {
    if (sizes) {
      this._sizes?.dispose();
      this._sizes = sizes;
    }
    if (source) {
      this._source?.dispose();
      this._source = source;
    }
    plan.dispose();
    this._layer++;
  }

  /**
   * One block: merges r tokens of x (after the attention residual) by the
   * metric (the block's keys averaged over heads, [B, N, C/H]), size-weighted.
   * @returns x with N − r tokens, [unmerged (CLS first), destinations]
   */
  step(x: TensorLike, metric: TensorLike): Promise<Tensor> {
    return driveAsync(this._steps(x, metric, 'ToMe.step'), 'ToMe.step');
  }

  /** Synchronous twin of {@link ToMe.step}. */
  stepSync(x: TensorLike, metric: TensorLike): Tensor {
    return drive(this._steps(x, metric, 'ToMe.stepSync'), 'ToMe.stepSync');
  }

  private *_steps(x: TensorLike, metric: TensorLike, op: string): MethodGen<Tensor> {
    const s = this._next(x, metric, op);
    if (s.r <= 0) {
      this._layer++;
      return s.x;
    }
    const plan = (yield call(bipartiteSoftMatchSync, bipartiteSoftMatch, s.metric, s.r, { protect: { cls: this.cls, distill: this.distill }, precision: this.precision })) as MergePlan;
    try {
      const source = this.traceSource ? ((yield call(mergeSourceSync, mergeSource, plan, this._source)) as Tensor) : undefined;
      const out = (yield call(mergeSync, merge, plan, s.x, { mode: 'wavg', sizes: this._sizes })) as MergeResult;
      this._advance(plan, out.sizes, source);
      return out.x;
    } catch (e) {
      plan.dispose();
      throw e;
    }
  }

}

/**
 * @example
 * const tome = toMe({ layers: 12, r: 16 });                  // ViT-B, r = 16
 * for (const block of blocks) {
 *   const { q, k } = block.qk(x);                            // [B, H, N, D]
 *   // proportional attention: scores/probs with keyBias = log(size)
 *   x = x + block.attn(q, k, tome.keyBias());
 *   x = await tome.step(x, headMean(k));                     // merge r tokens
 *   x = x + block.mlp(x);
 * }
 */
export function toMe(opts: ToMeOptions): ToMe {
  return new ToMe(opts);
}
