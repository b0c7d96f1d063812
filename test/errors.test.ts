/**
 * Bad input never crashes and never yields a silent wrong answer: every
 * public function rejects it with the documented class and code.
 */
import {
  attentionScores,
  attentionScoresSync,
  cudaAvailable,
  gather,
  gatherSync,
  reduceAttentionSync,
  setThreads,
  Tensor,
  TokenSieveError,
  topk,
  topkSync,
} from '../lib';
import { native } from '../lib/native';
import { expectCode, expectReject, randn } from './helpers';

const f32 = (shape: number[], seed = 1) => ({ data: Float32Array.from(randn(shape.reduce((a, b) => a * b, 1), seed)), shape });
const q = f32([2, 3, 5, 8], 1);
const k = f32([2, 3, 5, 8], 2);

function detached(n: number): Float32Array {
  const a = new Float32Array(n);
  structuredClone(a.buffer, { transfer: [a.buffer] });
  return a;
}

describe('attentionScores rejects bad input', () => {
  const cases: Array<[string, () => unknown, Function, string, RegExp?]> = [
    ['q is not a tensor', () => attentionScoresSync('q' as never, k), TypeError, 'ERR_ARG', /Tensor or \{ data, shape/],
    ['q data is a plain array', () => attentionScoresSync({ data: [1, 2] as never, shape: [2] }, k), TypeError, 'ERR_ARG'],
    ['q data is a Float64Array', () => attentionScoresSync({ data: new Float64Array(240) as never, shape: [2, 3, 5, 8] }, k), TypeError, 'ERR_DTYPE'],
    ['Uint16Array without a dtype', () => attentionScoresSync({ data: new Uint16Array(240), shape: [2, 3, 5, 8] }, k), TypeError, 'ERR_DTYPE', /f16' or 'bf16/],
    ['Float32Array labelled f16', () => attentionScoresSync({ data: new Float32Array(240), shape: [2, 3, 5, 8], dtype: 'f16' }, k), TypeError, 'ERR_DTYPE'],
    ['i32 q', () => attentionScoresSync({ data: new Int32Array(240), shape: [2, 3, 5, 8] }, k), TypeError, 'ERR_DTYPE'],
    ['q and k dtypes differ', () => attentionScoresSync(q, { data: new Uint16Array(240), shape: [2, 3, 5, 8], dtype: 'bf16' }), TypeError, 'ERR_DTYPE'],
    ['q of rank 3', () => attentionScoresSync(f32([3, 5, 8]), k), RangeError, 'ERR_SHAPE', /rank 4/],
    ['k of rank 5', () => attentionScoresSync(q, f32([1, 2, 3, 5, 8])), RangeError, 'ERR_SHAPE'],
    ['mismatched B', () => attentionScoresSync(q, f32([1, 3, 5, 8])), RangeError, 'ERR_SHAPE', /agree in B/],
    ['mismatched H', () => attentionScoresSync(q, f32([2, 2, 5, 8])), RangeError, 'ERR_SHAPE', /agree in H/],
    ['mismatched D', () => attentionScoresSync(q, f32([2, 3, 5, 7])), RangeError, 'ERR_SHAPE', /agree in D/],
    ['a zero-size dimension', () => attentionScoresSync(f32([2, 3, 0, 8]), k), RangeError, 'ERR_SHAPE', />= 1/],
    ['too-short data', () => attentionScoresSync({ data: new Float32Array(239), shape: [2, 3, 5, 8] }, k), RangeError, 'ERR_RANGE', /at least 240/],
    ['detached data', () => attentionScoresSync({ data: detached(240), shape: [2, 3, 5, 8] }, k), RangeError, 'ERR_RANGE', /detached|at least/],
    ['negative shape', () => attentionScoresSync({ data: new Float32Array(240), shape: [2, -3, 5, 8] }, k), TypeError, 'ERR_ARG'],
    ['fractional shape', () => attentionScoresSync({ data: new Float32Array(240), shape: [2, 3, 5.5, 8] }, k), TypeError, 'ERR_ARG'],
    ['negative offset', () => attentionScoresSync({ ...q, offset: -1 }, k), TypeError, 'ERR_ARG'],
    ['query row out of range', () => attentionScoresSync(q, k, { queries: 5 }), RangeError, 'ERR_RANGE', /\[-5, 5\)/],
    ['query row below -N', () => attentionScoresSync(q, k, { queries: -6 }), RangeError, 'ERR_RANGE'],
    ['fractional query row', () => attentionScoresSync(q, k, { queries: 1.5 }), TypeError, 'ERR_ARG'],
    ['empty query list', () => attentionScoresSync(q, k, { queries: [] }), RangeError, 'ERR_RANGE', /empty/],
    ['empty query range', () => attentionScoresSync(q, k, { queries: { start: 3, end: 3 } }), RangeError, 'ERR_RANGE', /non-empty/],
    ['query range past the end', () => attentionScoresSync(q, k, { queries: { start: 0, end: 6 } }), RangeError, 'ERR_RANGE'],
    ['query list with an out-of-range row', () => attentionScoresSync(q, k, { queries: [0, 9] }), RangeError, 'ERR_RANGE', /queries\[1\]/],
    ['unknown query selection', () => attentionScoresSync(q, k, { queries: 'cls' as never }), TypeError, 'ERR_ARG'],
    ['empty key range', () => attentionScoresSync(q, k, { keys: { start: 4, end: 2 } }), RangeError, 'ERR_RANGE'],
    ['key range past the end', () => attentionScoresSync(q, k, { keys: { end: 6 } }), RangeError, 'ERR_RANGE'],
    ['NaN in q', () => attentionScoresSync({ data: Float32Array.from(q.data, (v, i) => (i === 77 ? NaN : v)), shape: q.shape }, k), RangeError, 'ERR_RANGE', /NaN or infinite/],
    ['Infinity in k', () => attentionScoresSync(q, { data: Float32Array.from(k.data, (v, i) => (i === 5 ? Infinity : v)), shape: k.shape }), RangeError, 'ERR_RANGE'],
    ['-Infinity in k', () => attentionScoresSync(q, { data: Float32Array.from(k.data, (v, i) => (i === 200 ? -Infinity : v)), shape: k.shape }), RangeError, 'ERR_RANGE'],
    ['NaN in keyBias', () => attentionScoresSync(q, k, { keyBias: { data: Float32Array.of(0, 0, NaN, 0, 0, 0, 0, 0, 0, 0), shape: [2, 5] } }), RangeError, 'ERR_RANGE', /keyBias/],
    ['+Infinity in keyBias', () => attentionScoresSync(q, k, { keyBias: { data: Float32Array.of(0, 0, 0, 0, 0, 0, Infinity, 0, 0, 0), shape: [2, 5] } }), RangeError, 'ERR_RANGE'],
    ['keyBias of the wrong shape', () => attentionScoresSync(q, k, { keyBias: { data: new Float32Array(5), shape: [1, 5] } }), RangeError, 'ERR_SHAPE'],
    ['keyBias of the wrong dtype', () => attentionScoresSync(q, k, { keyBias: { data: new Uint16Array(10), shape: [2, 5], dtype: 'f16' } }), TypeError, 'ERR_DTYPE'],
    ['NaN scale', () => attentionScoresSync(q, k, { scale: NaN }), TypeError, 'ERR_ARG'],
    ['string scale', () => attentionScoresSync(q, k, { scale: '0.1' as never }), TypeError, 'ERR_ARG'],
    ['unknown option', () => attentionScoresSync(q, k, { querys: 0 } as never), TypeError, 'ERR_ARG', /unknown option 'querys'/],
    ['options not an object', () => attentionScoresSync(q, k, 7 as never), TypeError, 'ERR_ARG'],
    ['bad layout', () => attentionScoresSync(q, k, { layout: 'nbhd' as never }), TypeError, 'ERR_ARG'],
    ['bad heads', () => attentionScoresSync(q, k, { heads: 'max' as never }), TypeError, 'ERR_ARG'],
    ['bad reduce', () => attentionScoresSync(q, k, { reduce: 'max' as never }), TypeError, 'ERR_ARG'],
    ['fractional causalOffset', () => attentionScoresSync(q, k, { causal: true, causalOffset: 0.5 }), TypeError, 'ERR_ARG'],
    ['non-boolean causal', () => attentionScoresSync(q, k, { causal: 1 as never }), TypeError, 'ERR_ARG'],
    ['out of the wrong shape', () => attentionScoresSync(q, k, { out: { data: new Float32Array(8), shape: [2, 4] } }), RangeError, 'ERR_SHAPE'],
    ['out of the wrong dtype', () => attentionScoresSync(q, k, { out: { data: new Int32Array(10), shape: [2, 5] } }), TypeError, 'ERR_DTYPE'],
    ['out too short', () => attentionScoresSync(q, k, { out: { data: new Float32Array(9), shape: [2, 5] } }), RangeError, 'ERR_RANGE'],
    ['accumulate without out', () => attentionScoresSync(q, k, { accumulate: true }), TypeError, 'ERR_ARG', /accumulate needs/],
    ['out sharing memory with k', () => attentionScoresSync(q, k, { out: { data: new Float32Array((k as { data: Float32Array }).data.buffer, 4, 10), shape: [2, 5] } }), TypeError, 'ERR_ARG', /k share memory/],
    ['non-contiguous D', () => attentionScoresSync({ data: new Float32Array(480), shape: [2, 3, 5, 8], strides: [240, 80, 16, 2] }, k), TokenSieveError, 'ERR_UNSUPPORTED', /contiguous/],
    ['stream that is not a bigint', () => attentionScoresSync(q, k, { stream: 1 as never }), TypeError, 'ERR_ARG'],
  ];
  for (const [name, fn, cls, code, msg] of cases) {
    test(name, () => expectCode(fn, cls, code, msg));
  }

  test('a NaN or ±Inf at any key of a long row is caught, with and without keyBias', () => {
    // 77 keys: the row's check runs in the max pass in 32-key blocks, then
    // single keys; with a bias it is a separate scan before the bias.
    const [B, H, N, D] = [1, 2, 77, 16];
    const ql = f32([B, H, N, D], 3);
    const kl = f32([B, H, N, D], 4);
    const bias = { data: Float32Array.from({ length: B * N }, (_, i) => (i % 9 === 4 ? -Infinity : 0.25)), shape: [B, N] };
    for (const key of [0, 31, 32, 63, 64, 70, 76]) {
      for (const bad of [NaN, Infinity, -Infinity]) {
        const kb = { data: Float32Array.from(kl.data), shape: kl.shape };
        kb.data[(1 * N + key) * D + 5] = bad; // head 1
        for (const keyBias of [undefined, bias]) {
          expectCode(() => attentionScoresSync(ql, kb, { queries: 'all', keyBias }), RangeError, 'ERR_RANGE', /NaN or infinite/);
        }
      }
    }
    // Finite but overflowing logits are caught too; a finite row passes.
    const big = { data: Float32Array.from(kl.data, (v, i) => (i === (1 * N + 40) * D ? 3e38 : v)), shape: kl.shape };
    const qBig = { data: Float32Array.from(ql.data, (v) => (v === 0 ? 1 : Math.sign(v) * 1e3)), shape: ql.shape };
    expectCode(() => attentionScoresSync(qBig, big, { queries: 'all' }), RangeError, 'ERR_RANGE');
    expect(attentionScoresSync(ql, kl, { queries: 'all', keyBias: bias }).shape).toEqual([B, N]);
  });

  test('checkFinite: false skips the scan and does not crash on NaN', () => {
    const bad = { data: Float32Array.from(q.data, (v, i) => (i === 3 ? NaN : v)), shape: q.shape };
    const out = attentionScoresSync(bad, k, { checkFinite: false });
    expect(out.shape).toEqual([2, 5]);
  });

  test('a disposed tensor is rejected with ERR_DISPOSED', () => {
    const t = Tensor.from(q);
    t.dispose();
    expectCode(() => attentionScoresSync(t, k), TokenSieveError, 'ERR_DISPOSED');
    expectCode(() => t.data, TokenSieveError, 'ERR_DISPOSED');
    t.dispose(); // idempotent
  });

  test('async errors reject with the same class and code, and a stack through the caller', async () => {
    await expectReject(attentionScores(q, k, { queries: 99 }), RangeError, 'ERR_RANGE');
    await expectReject(attentionScores(q, f32([2, 3, 5, 7])), RangeError, 'ERR_SHAPE');
    const bad = { data: Float32Array.from(q.data, (v, i) => (i === 0 ? NaN : v)), shape: q.shape };
    let err: Error | undefined;
    try {
      await attentionScores(bad, k);
    } catch (e) {
      err = e as Error;
    }
    expect(err).toBeInstanceOf(RangeError);
    expect((err as Error & { code: string }).code).toBe('ERR_RANGE');
    expect(err!.stack).toMatch(/errors\.test\.ts/);
  });
});

describe('reduceAttention rejects bad input', () => {
  const p = f32([1, 2, 4, 4]);
  const cases: Array<[string, () => unknown, Function, string]> = [
    ['rank 3', () => reduceAttentionSync(f32([2, 4, 4])), RangeError, 'ERR_SHAPE'],
    ['out sharing memory with probs', () => reduceAttentionSync(p, { out: { data: new Float32Array(p.data.buffer, 0, 4), shape: [1, 4] } }), TypeError, 'ERR_ARG'],
    ['i8 probs', () => reduceAttentionSync({ data: new Int8Array(32), shape: [1, 2, 4, 4] }), TypeError, 'ERR_DTYPE'],
    ['NaN probs', () => reduceAttentionSync({ data: Float32Array.from(p.data, (v, i) => (i === 9 ? NaN : v)), shape: p.shape }), RangeError, 'ERR_RANGE'],
    ['Infinity probs', () => reduceAttentionSync({ data: Float32Array.from(p.data, (v, i) => (i === 31 ? Infinity : v)), shape: p.shape }), RangeError, 'ERR_RANGE'],
    ['query row out of range', () => reduceAttentionSync(p, { queries: 4 }), RangeError, 'ERR_RANGE'],
    ['empty key range', () => reduceAttentionSync(p, { keys: { start: 4 } }), RangeError, 'ERR_RANGE'],
    ['unknown option', () => reduceAttentionSync(p, { causal: true } as never), TypeError, 'ERR_ARG'],
    ['too-short data', () => reduceAttentionSync({ data: new Float32Array(31), shape: [1, 2, 4, 4] }), RangeError, 'ERR_RANGE'],
  ];
  for (const [name, fn, cls, code] of cases) test(name, () => expectCode(fn, cls, code));
});

describe('topk and gather reject bad input', () => {
  const s = f32([2, 6]);
  const cases: Array<[string, () => unknown, Function, string]> = [
    ['k = 0', () => topkSync(s, 0), RangeError, 'ERR_RANGE'],
    ['k < 0', () => topkSync(s, -2), RangeError, 'ERR_RANGE'],
    ['k > N', () => topkSync(s, 7), RangeError, 'ERR_RANGE'],
    ['fractional k', () => topkSync(s, 2.5), TypeError, 'ERR_ARG'],
    ['k not a number', () => topkSync(s, '3' as never), TypeError, 'ERR_ARG'],
    ['scores of rank 3', () => topkSync(f32([1, 2, 6]), 1), RangeError, 'ERR_SHAPE'],
    ['empty scores', () => topkSync({ data: new Float32Array(0), shape: [1, 0] }, 1), RangeError, 'ERR_SHAPE'],
    ['i32 scores', () => topkSync({ data: new Int32Array(12), shape: [2, 6] }, 1), TypeError, 'ERR_DTYPE'],
    ['bad order', () => topkSync(s, 2, { order: 'desc' as never }), TypeError, 'ERR_ARG'],
    ['index past N', () => gatherSync(f32([2, 4, 3]), { data: Int32Array.of(0, 1, 4, 0), shape: [2, 2] }), RangeError, 'ERR_RANGE'],
    ['negative index', () => gatherSync(f32([2, 4, 3]), { data: Int32Array.of(0, 1, -1, 0), shape: [2, 2] }), RangeError, 'ERR_RANGE'],
    ['i64 indices', () => gatherSync(f32([2, 4, 3]), { data: new BigInt64Array(4), shape: [2, 2] }), TypeError, 'ERR_DTYPE'],
    ['batch mismatch', () => gatherSync(f32([2, 4, 3]), { data: new Int32Array(6), shape: [3, 2] }), RangeError, 'ERR_SHAPE'],
    ['x of rank 4', () => gatherSync(f32([1, 2, 4, 3]), { data: new Int32Array(2), shape: [1, 2] }), RangeError, 'ERR_SHAPE'],
    ['unknown option', () => gatherSync(f32([2, 4, 3]), { data: new Int32Array(4), shape: [2, 2] }, { check: true } as never), TypeError, 'ERR_ARG'],
  ];
  for (const [name, fn, cls, code] of cases) test(name, () => expectCode(fn, cls, code));

  test('async topk and gather reject too', async () => {
    await expectReject(topk(s, 9), RangeError, 'ERR_RANGE');
    await expectReject(gather(f32([1, 4, 3]), { data: Int32Array.of(7), shape: [1, 1] }), RangeError, 'ERR_RANGE');
  });
});

describe('tensors, devices and threads', () => {
  test('Tensor cannot be constructed directly', () => {
    expect(() => new (Tensor as unknown as new (a: unknown, b: unknown) => Tensor)(Symbol('x'), {})).toThrow(TokenSieveError);
  });
  test('device name errors', () => {
    expectCode(() => Tensor.empty([2], 'f32', 'gpu' as never), TypeError, 'ERR_ARG');
    expectCode(() => Tensor.empty([2], 'f64' as never), TypeError, 'ERR_DTYPE');
  });
  test('setThreads rejects non-integers', () => {
    expectCode(() => setThreads(1.5), TypeError, 'ERR_ARG');
    expectCode(() => setThreads('2' as never), TypeError, 'ERR_ARG');
  });
  test('host tensors have no device pointer; views are bounds-checked', () => {
    const t = Tensor.from(f32([2, 3]));
    expectCode(() => t.ptr, TokenSieveError, 'ERR_DEVICE');
    expectCode(() => t.view([7]), RangeError, 'ERR_SHAPE');
    expectCode(() => t.view([2, 3], [3, 2]), RangeError, 'ERR_RANGE');
  });

  const maybe = cudaAvailable() ? test.skip : test;
  maybe('without CUDA, device tensors fail with ERR_DEVICE and the reason', () => {
    expectCode(() => Tensor.from(q, { device: 'cuda:0' }), TokenSieveError, 'ERR_DEVICE', /CUDA is unavailable: .+/);
    expectCode(() => Tensor.empty([4], 'f32', 'cuda'), TokenSieveError, 'ERR_DEVICE');
    expectCode(() => Tensor.fromDevicePointer({ ptr: 0x7f0000000000n, shape: [4], dtype: 'f32' }), TokenSieveError, 'ERR_DEVICE');
  });
});

describe('the native layer validates on its own (no crash on malformed calls)', () => {
  const n = () => native();
  const meta = (dtype: number, device: number, shape: number[], strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1))) =>
    Float64Array.of(dtype, device, 0, shape.length, ...shape, ...strides);
  const P = () => Float64Array.of(1, 1, 0, 0, 0, 0, 0, 4, 0, 1, 1, 0, 32, 64, 1); // wait, scale 1, keys [0, 4), checkFinite, 1 query row, native precision (PARAM_NAMES.attentionScores)
  const q = () => meta(0, -1, [1, 1, 4, 4]);
  type Slot = 'params' | 'rows' | 'q' | 'qMem' | 'out' | 'outMem';
  const att = (over: Partial<Record<Slot, unknown>> = {}) => {
    const pick = (slot: Slot, fallback: unknown) => (slot in over ? over[slot] : fallback);
    return n().attentionScores(
      pick('params', P()) as Float64Array, pick('rows', Int32Array.of(0)) as Int32Array,
      pick('q', q()) as Float64Array, pick('qMem', new Float32Array(16)) as Float32Array,
      q(), new Float32Array(16), undefined, undefined,
      pick('out', meta(0, -1, [1, 4])) as Float64Array, pick('outMem', new Float32Array(4)) as Float32Array, undefined, false,
    );
  };
  const cases: Array<[string, () => unknown, string]> = [
    ['no arguments', () => (n().attentionScores as unknown as () => unknown)(), 'ERR_ARG'],
    ['params of the wrong length', () => att({ params: Float64Array.of(1, 0) }), 'ERR_ARG'],
    ['params not a Float64Array', () => att({ params: [1, 1, 0, 0, 0, 0, 0, 4, 0, 1, 1, 0, 32, 64, 1] }), 'ERR_ARG'],
    ['an unknown precision', () => att({ params: Float64Array.of(1, 1, 0, 0, 0, 0, 0, 4, 0, 1, 1, 5, 32, 64, 1) }), 'ERR_ARG'],
    ['an INT8 block of 0 rows', () => att({ params: Float64Array.of(1, 1, 0, 0, 0, 0, 0, 4, 0, 1, 1, 1, 0, 64, 1) }), 'ERR_RANGE'],
    ['a query-row count past the array', () => att({ params: Float64Array.of(1, 1, 0, 0, 0, 0, 0, 4, 0, 1, 2, 0, 32, 64, 1) }), 'ERR_RANGE'],
    ['a NaN key bound', () => att({ params: Float64Array.of(1, 1, 0, 0, 0, 0, NaN, 4, 0, 1, 1, 0, 32, 64, 1) }), 'ERR_RANGE'],
    ['an unknown head reduction', () => att({ params: Float64Array.of(1, 1, 0, 0, 0, 7, 0, 4, 0, 1, 1, 0, 32, 64, 1) }), 'ERR_ARG'],
    ['missing q', () => att({ q: null }), 'ERR_ARG'],
    ['a descriptor that overstates its data', () => att({ qMem: new Float32Array(15) }), 'ERR_RANGE'],
    ['element size mismatch', () => att({ qMem: new Uint8Array(16) }), 'ERR_DTYPE'],
    ['host memory that is not a TypedArray', () => att({ qMem: [1, 2, 3] }), 'ERR_ARG'],
    ['a query row out of range', () => att({ rows: Int32Array.of(4) }), 'ERR_RANGE'],
    ['queryRows not an Int32Array', () => att({ rows: [0] }), 'ERR_ARG'],
    ['an unknown dtype code', () => att({ q: meta(42, -1, [1, 1, 4, 4]) }), 'ERR_DTYPE'],
    ['a descriptor with the wrong length', () => att({ q: Float64Array.of(0, -1, 0, 4, 1, 1, 4, 4) }), 'ERR_SHAPE'],
    ['negative strides', () => att({ q: meta(0, -1, [1, 1, 4, 4], [16, 16, -4, 1]) }), 'ERR_SHAPE'],
    ['fractional shape', () => att({ q: meta(0, -1, [1, 1, 4.5, 4]) }), 'ERR_SHAPE'],
    ['a view that overflows int64', () => att({ q: meta(0, -1, [1, 1, 2 ** 40, 4], [16, 16, 2 ** 40, 1]) }), 'ERR_RANGE'],
    ['a key range past Nk', () => att({ params: Float64Array.of(1, 1, 0, 0, 0, 0, 0, 5, 0, 1, 1, 0, 32, 64, 1) }), 'ERR_RANGE'],
    ['a causal offset beyond 2^40', () => att({ params: Float64Array.of(1, 1, 1, 2 ** 50, 0, 0, 0, 4, 0, 1, 1, 0, 32, 64, 1) }), 'ERR_RANGE'],
    ['an output of the wrong size', () => att({ out: meta(0, -1, [1, 3]), outMem: new Float32Array(3) }), 'ERR_SHAPE'],
    ['a device tensor with host memory', () => n().topk(Float64Array.of(1, 1, 0), meta(0, 0, [1, 2]), new Float32Array(2), meta(3, -1, [1, 1]), new Int32Array(1), undefined, undefined, undefined, false), 'ERR_ARG'],
    ['gather with an index past N', () => n().gather(Float64Array.of(1, 1), meta(0, -1, [1, 3, 2]), new Float32Array(6), meta(3, -1, [1, 1]), Int32Array.of(3), meta(0, -1, [1, 1, 2]), new Float32Array(2), undefined, false), 'ERR_RANGE'],
    ['quantize with 5 bits', () => n().quantize(Float64Array.of(1, 5, 1, 0, 0, 0, 1), meta(0, -1, [2, 4]), new Float32Array(8), meta(5, -1, [2, 4]), new Int8Array(8), meta(0, -1, [2, 1]), new Float32Array(2), undefined, undefined, undefined, false), 'ERR_RANGE'],
    ['quantize with scales of the wrong shape', () => n().quantize(Float64Array.of(1, 8, 1, 0, 0, 0, 1), meta(0, -1, [2, 4]), new Float32Array(8), meta(5, -1, [2, 4]), new Int8Array(8), meta(0, -1, [2]), new Float32Array(2), undefined, undefined, undefined, false), 'ERR_SHAPE'],
    ['quantize into u8 data at 8 bits', () => n().quantize(Float64Array.of(1, 8, 1, 0, 0, 0, 1), meta(0, -1, [2, 4]), new Float32Array(8), meta(6, -1, [2, 4]), new Uint8Array(8), meta(0, -1, [2, 1]), new Float32Array(2), undefined, undefined, undefined, false), 'ERR_DTYPE'],
    ['quantize smooth without a mean', () => n().quantize(Float64Array.of(1, 8, 1, 0, 0, 1, 1), meta(0, -1, [1, 1, 2, 4]), new Float32Array(8), meta(5, -1, [1, 1, 2, 4]), new Int8Array(8), meta(0, -1, [1, 1, 2, 1]), new Float32Array(2), undefined, undefined, undefined, false), 'ERR_SHAPE'],
    ['dequantize with an unknown granularity', () => n().dequantize(Float64Array.of(1, 8, 9, 0, 0, 0), meta(5, -1, [2, 4]), new Int8Array(8), meta(0, -1, [2, 1]), new Float32Array(2), undefined, undefined, meta(0, -1, [2, 4]), new Float32Array(8), undefined, false), 'ERR_ARG'],
    ['copy of different sizes', () => n().copy(meta(0, -1, [2]), new Float32Array(2), meta(0, -1, [3]), new Float32Array(3), undefined, false), 'ERR_SHAPE'],
  ];
  for (const [name, fn, code] of cases) {
    test(name, () => {
      let err: (Error & { code?: string }) | undefined;
      try {
        fn();
      } catch (e) {
        err = e as Error & { code?: string };
      }
      expect(err?.code).toBe(code);
    });
  }

  test('async calls with bad arguments reject instead of throwing', async () => {
    const p = n().topk(Float64Array.of(1, 5, 0), meta(0, -1, [1, 2]), new Float32Array(2), meta(3, -1, [1, 5]), new Int32Array(5), undefined, undefined, undefined, true);
    await expect(p).rejects.toMatchObject({ code: 'ERR_RANGE' });
  });
});
