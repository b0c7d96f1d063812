/**
 * attentionScores / reduceAttention against the float64 reference, on random
 * inputs of awkward sizes, every dtype, both layouts, batched, causal on and
 * off, with poisoned outputs.
 */
import {
  attentionScores,
  attentionScoresSync,
  FloatDType,
  fromHalfBits,
  getThreads,
  QuerySelection,
  reduceAttention,
  reduceAttentionSync,
  setThreads,
  Tensor,
  toHalfBits,
} from '../lib';
import { bnhdToBhnd, refAttentionScores, RefReduction, refProbs, refReduce } from './reference/attention';
import { expectClose, expectCode, makeTensor, poisoned, randn } from './helpers';

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

interface Case {
  B: number;
  H: number;
  Nq: number;
  Nk: number;
  D: number;
  dtype: FloatDType;
  layout: 'bhnd' | 'bnhd';
  causal?: boolean;
  causalOffset?: number;
  queries?: QuerySelection;
  keys?: { start?: number; end?: number };
  heads?: 'mean' | 'sum' | 'none';
  reduce?: 'mean' | 'sum';
  bias?: boolean;
  scale?: number;
}

let seed = 1;

function build(c: Case) {
  const qv = randn(c.B * c.H * c.Nq * c.D, seed++, 1.5);
  const kv = randn(c.B * c.H * c.Nk * c.D, seed++, 1.5);
  const qShape = c.layout === 'bhnd' ? [c.B, c.H, c.Nq, c.D] : [c.B, c.Nq, c.H, c.D];
  const kShape = c.layout === 'bhnd' ? [c.B, c.H, c.Nk, c.D] : [c.B, c.Nk, c.H, c.D];
  const q = makeTensor(qv, qShape, c.dtype);
  const k = makeTensor(kv, kShape, c.dtype);
  const qExact = c.layout === 'bhnd' ? q.exact : bnhdToBhnd(q.exact, c.B, c.Nq, c.H, c.D);
  const kExact = c.layout === 'bhnd' ? k.exact : bnhdToBhnd(k.exact, c.B, c.Nk, c.H, c.D);
  let bias: Float32Array | undefined;
  if (c.bias) {
    const r = randn(c.B * c.Nk, seed++, 1);
    bias = Float32Array.from(r, (x, i) => (i % 5 === 3 ? -Infinity : Math.log(1 + Math.abs(x) * 3)));
  }
  return { q: q.t, k: k.t, qExact, kExact, bias };
}

function resolveRows(sel: QuerySelection | undefined, nq: number): number[] {
  if (sel === undefined || sel === 'all') return Array.from({ length: nq }, (_, i) => i);
  if (typeof sel === 'number') return [sel < 0 ? sel + nq : sel];
  if (Array.isArray(sel) || sel instanceof Int32Array) return Array.from(sel, (v) => (v < 0 ? v + nq : v));
  const r = sel as { start: number; end: number };
  const s = r.start < 0 ? r.start + nq : r.start;
  const e = r.end < 0 ? r.end + nq : r.end;
  return Array.from({ length: e - s }, (_, i) => s + i);
}

function expected(c: Case, data: ReturnType<typeof build>): Float64Array {
  const red: RefReduction = {
    rows: resolveRows(c.queries, c.Nq),
    reduce: c.reduce ?? 'mean',
    heads: c.heads ?? 'mean',
    keyBegin: c.keys?.start ?? 0,
    keyEnd: c.keys?.end ?? c.Nk,
  };
  return refAttentionScores(
    {
      q: data.qExact, k: data.kExact, B: c.B, H: c.H, Nq: c.Nq, Nk: c.Nk, D: c.D,
      scale: c.scale ?? 1 / Math.sqrt(c.D), causal: c.causal, causalOffset: c.causalOffset, keyBias: data.bias,
    },
    red,
  );
}

function outShape(c: Case): number[] {
  const W = (c.keys?.end ?? c.Nk) - (c.keys?.start ?? 0);
  return c.heads === 'none' ? [c.B, c.H, W] : [c.B, W];
}

function options(c: Case, data: ReturnType<typeof build>, out?: Tensor) {
  return {
    layout: c.layout,
    causal: c.causal,
    causalOffset: c.causalOffset,
    queries: c.queries,
    keys: c.keys,
    heads: c.heads,
    reduce: c.reduce,
    scale: c.scale,
    keyBias: data.bias ? { data: data.bias, shape: [c.B, c.Nk] } : undefined,
    out,
  };
}

function label(c: Case): string {
  const sel = c.queries === undefined ? 'all' : JSON.stringify(c.queries);
  return `B${c.B} H${c.H} Nq${c.Nq} Nk${c.Nk} D${c.D} ${c.dtype} ${c.layout}${c.causal ? ` causal(${c.causalOffset ?? 'default'})` : ''} q=${sel}` +
    `${c.keys ? ` keys=${JSON.stringify(c.keys)}` : ''}${c.heads ? ` heads=${c.heads}` : ''}${c.reduce ? ` reduce=${c.reduce}` : ''}${c.bias ? ' bias' : ''}`;
}

const SIZE_CASES: Case[] = [
  { B: 2, H: 3, Nq: 1, Nk: 1, D: 15, dtype: 'f32', layout: 'bhnd' },
  { B: 3, H: 2, Nq: 2, Nk: 2, D: 64, dtype: 'f16', layout: 'bnhd' },
  { B: 2, H: 4, Nq: 7, Nk: 7, D: 80, dtype: 'bf16', layout: 'bhnd', causal: true },
  { B: 2, H: 2, Nq: 577, Nk: 577, D: 64, dtype: 'f32', layout: 'bhnd' },
  { B: 2, H: 2, Nq: 577, Nk: 577, D: 64, dtype: 'bf16', layout: 'bnhd', queries: 0, keys: { start: 1 } },
  { B: 2, H: 1, Nq: 1031, Nk: 1031, D: 128, dtype: 'f16', layout: 'bhnd', causal: true, queries: { start: 100, end: 1031 } },
  { B: 1, H: 2, Nq: 577, Nk: 577, D: 80, dtype: 'f16', layout: 'bnhd', queries: -1, causal: true },
  { B: 2, H: 3, Nq: 7, Nk: 577, D: 80, dtype: 'f32', layout: 'bnhd', causal: true },
  { B: 2, H: 2, Nq: 31, Nk: 1031, D: 15, dtype: 'bf16', layout: 'bhnd', heads: 'none', bias: true },
  { B: 1, H: 1, Nq: 1031, Nk: 2, D: 128, dtype: 'f32', layout: 'bhnd', reduce: 'sum' },
];

describe('attentionScores matches the float64 reference', () => {
  for (const c of SIZE_CASES) {
    test(label(c), () => {
      const data = build(c);
      const out = poisoned(outShape(c));
      const r = attentionScoresSync(data.q, data.k, options(c, data, out));
      expect(r).toBe(out);
      expectClose(out.data as Float32Array, expected(c, data), 1e-7, 2e-4, label(c));
    });
  }
});

describe('query selections, key ranges, reductions, masks', () => {
  const base = { B: 2, H: 3, Nq: 37, Nk: 41, D: 15, dtype: 'f32' as const, layout: 'bhnd' as const };
  const variants: Partial<Case>[] = [
    { queries: 0 },
    { queries: -1 },
    { queries: { start: 5, end: 20 } },
    { queries: { start: -4, end: -1 } },
    { queries: [3, 3, 10, 36] },
    { queries: Int32Array.of(30, 2) },
    { keys: { start: 1 } },
    { keys: { start: 5, end: 6 } },
    { keys: { start: 40 } },
    { heads: 'sum' },
    { heads: 'none', reduce: 'sum' },
    { reduce: 'sum', queries: [1, 2, 3, 4, 5, 6, 7] },
    { causal: true },
    { causal: true, causalOffset: 0 },
    { causal: true, causalOffset: -3 }, // rows 0..2 see no key and contribute nothing
    { causal: true, causalOffset: 100 },
    { causal: true, causalOffset: -36, queries: [0, 36] }, // row 36 sees key 0 only, row 0 nothing
    { bias: true },
    { bias: true, causal: true, heads: 'none' },
    { scale: 0.37 },
    { scale: 0 },
    { dtype: 'f16', layout: 'bnhd', queries: [0, 1, 2] },
    { dtype: 'bf16', layout: 'bnhd', causal: true, keys: { start: 3, end: 30 } },
  ];
  for (const v of variants) {
    const c: Case = { ...base, ...v };
    test(label(c), () => {
      const data = build(c);
      const out = poisoned(outShape(c));
      attentionScoresSync(data.q, data.k, options(c, data, out));
      expectClose(out.data as Float32Array, expected(c, data), 1e-7, 2e-4, label(c));
    });
  }

  test('a row that sees no key contributes zeros (no NaN), and every masked column is exactly 0', () => {
    const c: Case = { ...base, causal: true, causalOffset: -10, queries: { start: 0, end: 12 } };
    const data = build(c);
    const out = attentionScoresSync(data.q, data.k, options(c, data));
    const v = out.data as Float32Array;
    // rows 10 and 11 see keys 0 and 0..1; rows 0..9 see nothing
    for (let b = 0; b < c.B; b++) {
      for (let j = 2; j < c.Nk; j++) expect(v[b * c.Nk + j]).toBe(0);
      expect(v[b * c.Nk] + v[b * c.Nk + 1]).toBeCloseTo(2 / 12, 6);
    }
  });

  test('keyBias of -Infinity removes a key exactly', () => {
    const c: Case = { ...base, bias: true };
    const data = build(c);
    const out = attentionScoresSync(data.q, data.k, options(c, data));
    const v = out.data as Float32Array;
    for (let i = 0; i < c.B * c.Nk; i++) if (data.bias![i] === -Infinity) expect(v[i]).toBe(0);
  });

  test('a finite keyBias near the top of the f32 range takes all of its row (no NaN)', () => {
    // The logits are in base 2, so the bias is scaled by log2(e): 3e38 would
    // overflow to Infinity there, and stays the largest float instead.
    const [B, H, N, D] = [1, 2, 7, 4];
    const q = { data: Float32Array.from({ length: B * H * N * D }, (_, i) => Math.sin(i)), shape: [B, H, N, D] };
    const k = { data: Float32Array.from({ length: B * H * N * D }, (_, i) => Math.cos(i)), shape: [B, H, N, D] };
    const keyBias = { data: Float32Array.of(0, 0, 3e38, 0, 0, -Infinity, 0), shape: [B, N] };
    const v = attentionScoresSync(q, k, { queries: 'all', keyBias }).toArray();
    expect(v).toEqual([0, 0, 1, 0, 0, 0, 0]);
  });

  test('rows that see no key add nothing, in the tiled path too (no NaN from their exps), and keys past a causal row stay out of its sums', () => {
    // 61 rows: past the few-rows path, so rows go through 8-row tiles whose
    // column sums are taken over the whole tile at once. Batch 1's keys are
    // all masked; in batch 0 causal rows see 1..61 keys.
    const [B, H, N, D] = [2, 3, 61, 20];
    const q = { data: Float32Array.from({ length: B * H * N * D }, (_, i) => Math.sin(0.37 * i)), shape: [B, H, N, D] };
    const k = { data: Float32Array.from({ length: B * H * N * D }, (_, i) => Math.cos(0.11 * i)), shape: [B, H, N, D] };
    const keyBias = { data: Float32Array.from({ length: B * N }, (_, i) => (i < N ? 0 : -Infinity)), shape: [B, N] };
    const got = attentionScoresSync(q, k, { queries: 'all', keyBias, causal: true }).toArray();
    const want = refAttentionScores(
      { q: q.data, k: k.data, B, H, Nq: N, Nk: N, D, scale: 1 / Math.sqrt(D), causal: true, keyBias: keyBias.data },
      { rows: resolveRows('all', N), reduce: 'mean', heads: 'mean', keyBegin: 0, keyEnd: N },
    );
    // Batch 1's rows all add nothing: its mean over rows is exactly 0.
    for (let j = N; j < B * N; j++) expect(got[j]).toBe(0);
    expectClose(got.slice(0, N), want.slice(0, N), 1e-6, 1e-4, 'causal batch');
  });

  test('head mean of full rows sums to one over all keys', () => {
    const c: Case = { ...base };
    const data = build(c);
    const v = attentionScoresSync(data.q, data.k, options(c, data)).data as Float32Array;
    for (let b = 0; b < c.B; b++) {
      let s = 0;
      for (let j = 0; j < c.Nk; j++) s += v[b * c.Nk + j];
      expect(s).toBeCloseTo(1, 5);
    }
  });
});

describe('accumulate, async and determinism', () => {
  test('accumulate adds into out (multi-layer sums)', () => {
    const c: Case = { B: 2, H: 2, Nq: 9, Nk: 9, D: 16, dtype: 'f32', layout: 'bhnd', queries: 0, keys: { start: 1 } };
    const l1 = build(c);
    const l2 = build(c);
    const out = attentionScoresSync(l1.q, l1.k, options(c, l1));
    attentionScoresSync(l2.q, l2.k, { ...options(c, l2, out), accumulate: true });
    const e1 = expected(c, l1);
    const e2 = expected(c, l2);
    expectClose(out.data as Float32Array, e1.map((x, i) => x + e2[i]), 1e-7, 2e-4);
  });

  test('keys beyond the cache size (read row after row) give the bits of the same heads one at a time (rows side by side)', () => {
    // f32 keys over 16 MiB take dot_rows' in-order path, a head alone
    // (2 MB) the interleaved one: the same FMA chains, so the same bits.
    const [H, Nq, Nk, D] = [9, 8, 7283, 67];  // 17.6 MB of keys; D not a multiple of 8
    const q = Float32Array.from({ length: H * Nq * D }, (_, i) => Math.sin(i * 0.61 + 1));
    const k = Float32Array.from({ length: H * Nk * D }, (_, i) => Math.sin(i * 0.37 + 2) * 1.5);
    for (const queries of [0, [Nq - 1, 3]]) {
      const opts = { queries, keys: { start: 1 }, heads: 'none' as const };
      const whole = attentionScoresSync({ data: q, shape: [1, H, Nq, D] }, { data: k, shape: [1, H, Nk, D] }, opts).data as Float32Array;
      expect(whole.length).toBe(H * (Nk - 1));
      for (let h = 0; h < H; h++) {
        const one = attentionScoresSync({ data: q.subarray(h * Nq * D, (h + 1) * Nq * D), shape: [1, 1, Nq, D] },
          { data: k.subarray(h * Nk * D, (h + 1) * Nk * D), shape: [1, 1, Nk, D] }, opts).data as Float32Array;
        expect(Array.from(whole.subarray(h * (Nk - 1), (h + 1) * (Nk - 1)))).toEqual(Array.from(one));
      }
    }
  });

  test('the Promise API gives bit-identical results to the Sync API', async () => {
    const c: Case = { B: 2, H: 4, Nq: 130, Nk: 130, D: 64, dtype: 'bf16', layout: 'bnhd', causal: true };
    const data = build(c);
    const a = attentionScoresSync(data.q, data.k, options(c, data));
    const b = await attentionScores(data.q, data.k, options(c, data));
    expect(Array.from(b.data as Float32Array)).toEqual(Array.from(a.data as Float32Array));
  });

  // A host q is passed as the span of rows the kernel reads, with the rows
  // and the causal offset shifted; the Promise API then stages only that
  // span, or gathers it when it is a small part of what the view spans
  // (bnhd: every row of the span is strided across all heads).
  test('few query rows: the Promise API and the Sync API agree bit for bit and match float64 (spans, gathers, causal offsets, INT8 blocks)', async () => {
    const cases: Array<Case & { int8?: boolean }> = [
      { B: 2, H: 3, Nq: 61, Nk: 61, D: 24, dtype: 'f32', layout: 'bhnd', queries: 0 },
      { B: 1, H: 4, Nq: 97, Nk: 97, D: 40, dtype: 'f16', layout: 'bnhd', queries: [96, 40] },
      { B: 2, H: 2, Nq: 33, Nk: 70, D: 16, dtype: 'f32', layout: 'bhnd', queries: [30, 31], causal: true },
      { B: 1, H: 3, Nq: 50, Nk: 50, D: 8, dtype: 'bf16', layout: 'bnhd', queries: [7, 12], causal: true, causalOffset: -3 },
      { B: 1, H: 2, Nq: 44, Nk: 44, D: 16, dtype: 'f32', layout: 'bhnd', queries: [0, 43], causal: true, causalOffset: 2147483647 },
      { B: 2, H: 2, Nq: 130, Nk: 130, D: 32, dtype: 'f32', layout: 'bhnd', queries: [70, 100], int8: true },
    ];
    for (const c of cases) {
      const data = build(c);
      const opts = { ...options(c, data), ...(c.int8 ? { precision: 'int8' as const, qRows: 32 } : {}) };
      const sync = attentionScoresSync(data.q, data.k, opts).toArray();
      const promised = (await attentionScores(data.q, data.k, opts)).toArray();
      expect(promised).toEqual(sync);
      if (c.int8) {
        // The rows' q blocks (rows 64..127 of each head, 32 a block) set
        // their scales: a row outside them changes nothing, an unselected
        // row inside one changes the scores (through its block's scale).
        const scaled = (row: number): Tensor => {
          const v = Float32Array.from(data.q.data as Float32Array);
          for (let bh = 0; bh < c.B * c.H; bh++) for (let d = 0; d < c.D; d++) v[(bh * c.Nq + row) * c.D + d] *= 100;
          return Tensor.from({ data: v, shape: data.q.shape });
        };
        expect(attentionScoresSync(scaled(63), data.k, opts).toArray()).toEqual(sync);
        expect(attentionScoresSync(scaled(128), data.k, opts).toArray()).toEqual(sync);
        expect(attentionScoresSync(scaled(65), data.k, opts).toArray()).not.toEqual(sync);
        expect((await attentionScores(scaled(127), data.k, opts)).toArray()).not.toEqual(sync);
      } else {
        expectClose(sync, expected(c, data), 1e-6, 2e-4, JSON.stringify(c.queries));
      }
    }
  });

  test('results do not depend on the thread count', () => {
    const c: Case = { B: 1, H: 2, Nq: 300, Nk: 300, D: 32, dtype: 'f32', layout: 'bhnd' };
    const data = build(c);
    const before = getThreads();
    try {
      setThreads(1);
      const one = attentionScoresSync(data.q, data.k, options(c, data)).data as Float32Array;
      setThreads(3);
      const three = attentionScoresSync(data.q, data.k, options(c, data)).data as Float32Array;
      expect(Array.from(three)).toEqual(Array.from(one));
    } finally {
      setThreads(before);
    }
  });

  test('concurrent async calls all complete with correct results', async () => {
    const c: Case = { B: 1, H: 2, Nq: 65, Nk: 65, D: 24, dtype: 'f32', layout: 'bhnd' };
    const runs = Array.from({ length: 12 }, () => build(c));
    const outs = await Promise.all(runs.map((d) => attentionScores(d.q, d.k, options(c, d))));
    outs.forEach((o, i) => expectClose(o.data as Float32Array, expected(c, runs[i]), 1e-7, 2e-4));
  });
});

describe('reduceAttention matches the float64 reference', () => {
  const cases: Array<{ B: number; H: number; Nq: number; Nk: number; dtype: FloatDType; red: Partial<RefReduction> & { queries?: QuerySelection } }> = [
    { B: 1, H: 1, Nq: 1, Nk: 1, dtype: 'f32', red: {} },
    { B: 2, H: 3, Nq: 7, Nk: 7, dtype: 'f16', red: { queries: 0, keyBegin: 1 } },
    { B: 2, H: 2, Nq: 577, Nk: 577, dtype: 'bf16', red: {} },
    { B: 3, H: 2, Nq: 13, Nk: 29, dtype: 'f32', red: { heads: 'none', reduce: 'sum', queries: { start: 2, end: 9 } } },
    { B: 2, H: 4, Nq: 31, Nk: 31, dtype: 'f16', red: { heads: 'sum', queries: [30, 30, 1], keyBegin: 10, keyEnd: 20 } },
  ];
  for (const c of cases) {
    test(`B${c.B} H${c.H} Nq${c.Nq} Nk${c.Nk} ${c.dtype} ${JSON.stringify(c.red)}`, async () => {
      const D = 8;
      const p = refProbs({
        q: randn(c.B * c.H * c.Nq * D, seed++, 2), k: randn(c.B * c.H * c.Nk * D, seed++, 2),
        B: c.B, H: c.H, Nq: c.Nq, Nk: c.Nk, D, scale: 1, causal: true,
      });
      const probs = makeTensor(p, [c.B, c.H, c.Nq, c.Nk], c.dtype);
      const keyBegin = c.red.keyBegin ?? 0;
      const keyEnd = c.red.keyEnd ?? c.Nk;
      const heads = c.red.heads ?? 'mean';
      const reduce = c.red.reduce ?? 'mean';
      const rows = resolveRows(c.red.queries, c.Nq);
      const want = refReduce(probs.exact, c.B, c.H, c.Nq, c.Nk, { rows, reduce, heads, keyBegin, keyEnd });
      const W = keyEnd - keyBegin;
      const out = poisoned(heads === 'none' ? [c.B, c.H, W] : [c.B, W]);
      const opts = { queries: c.red.queries, keys: { start: keyBegin, end: keyEnd }, heads, reduce, out };
      reduceAttentionSync(probs.t, opts);
      expectClose(out.data as Float32Array, want, 1e-7, 1e-5);
      const asyncOut = await reduceAttention(probs.t, { ...opts, out: undefined });
      expect(Array.from(asyncOut.data as Float32Array)).toEqual(Array.from(out.data as Float32Array));
    });
  }

  test('reduceAttention of the exact probabilities equals attentionScores', () => {
    const c: Case = { B: 2, H: 2, Nq: 50, Nk: 50, D: 16, dtype: 'f32', layout: 'bhnd', causal: true };
    const data = build(c);
    const p = refProbs({ q: data.qExact, k: data.kExact, B: 2, H: 2, Nq: 50, Nk: 50, D: 16, scale: 0.25, causal: true });
    const fromProbs = reduceAttentionSync({ data: Float32Array.from(p), shape: [2, 2, 50, 50] }, { keys: { start: 1 } });
    const fused = attentionScoresSync(data.q, data.k, { causal: true, keys: { start: 1 } });
    expectClose(fused.data as Float32Array, Array.from(fromProbs.data as Float32Array), 1e-7, 2e-4);
  });

  test('strided probability views (a slice of a bigger map) are read in place', () => {
    const B = 1, H = 2, N = 9;
    const p = refProbs({ q: randn(H * N * 4, 5), k: randn(H * N * 4, 6), B, H, Nq: N, Nk: N, D: 4, scale: 1 });
    // Put each [N, N] map inside a [N, N + 3] row-padded buffer.
    const padded = new Float32Array(H * N * (N + 3)).fill(NaN);
    for (let h = 0; h < H; h++) for (let i = 0; i < N; i++) for (let j = 0; j < N; j++) padded[(h * N + i) * (N + 3) + j] = p[(h * N + i) * N + j];
    const view = { data: padded, shape: [B, H, N, N], strides: [H * N * (N + 3), N * (N + 3), N + 3, 1] };
    const out = reduceAttentionSync(view);
    expectClose(out.data as Float32Array, refReduce(Float32Array.from(p), B, H, N, N, { rows: [...Array(N).keys()], reduce: 'mean', heads: 'mean', keyBegin: 0, keyEnd: N }), 1e-7, 1e-5);
  });
});

/** What the tensor cores multiply under precision 'tf32' (cvt.rna: 10 mantissa bits, half away from zero). */
function roundTf32(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  if ((u[0] & 0x7f800000) !== 0x7f800000) u[0] = ((u[0] + 0x1000) & ~0x1fff) >>> 0;
  return f[0];
}
/** bfloat16, round to nearest even. */
function roundBf16(x: number): number {
  return fromHalfBits(toHalfBits([x], 'bf16'), 'bf16')[0];
}

describe('bf16 operands on the bf16 dot tile (where the CPU has it)', () => {
  // Aligned bf16 rows are used as they lie (a row's channel pairs are its
  // values); rows that are not 4-byte aligned (a subarray at an odd element)
  // or have an odd D are converted first. Either way the same pairs meet
  // the same tile: the same bits, under every precision that leaves bf16
  // values unchanged.
  for (const D of [64, 33]) {
    test(`D=${D}: unaligned rows give the bits of aligned ones; native, tf32 and bf16 agree`, () => {
      const [B, H, N] = [2, 3, 97];
      const n = B * H * N * D;
      const bits = (seed: number) => toHalfBits(Float32Array.from(randn(n, seed)), 'bf16');
      const qb = bits(D), kb = bits(D + 1);
      const shifted = (b: Uint16Array) => {
        const u = new Uint16Array(n + 1);
        u.set(b, 1);
        return u.subarray(1);
      };
      const run = (q: Uint16Array, k: Uint16Array, precision: 'native' | 'tf32' | 'bf16') =>
        Array.from(attentionScoresSync({ data: q, shape: [B, H, N, D], dtype: 'bf16' }, { data: k, shape: [B, H, N, D], dtype: 'bf16' },
          { queries: 'all', keys: { start: 1 }, precision }).data as Float32Array);
      const aligned = run(qb, kb, 'native');
      expect(run(shifted(qb), shifted(kb), 'native')).toEqual(aligned);
      expect(run(qb, shifted(kb), 'bf16')).toEqual(aligned);
      expect(run(shifted(qb), kb, 'tf32')).toEqual(aligned);
      expect(aligned.every((v) => v > 0 && Number.isFinite(v))).toBe(true);
    });
  }
});

describe("precision 'tf32' and 'bf16': logits from rounded q and k", () => {
  const cases: Array<Case & { precision: 'tf32' | 'bf16' }> = [
    { B: 2, H: 3, Nq: 131, Nk: 131, D: 64, dtype: 'f32', layout: 'bhnd', precision: 'tf32' },
    { B: 2, H: 3, Nq: 131, Nk: 131, D: 64, dtype: 'f32', layout: 'bhnd', precision: 'bf16' },
    { B: 1, H: 2, Nq: 37, Nk: 577, D: 15, dtype: 'f32', layout: 'bnhd', precision: 'tf32', causal: true, bias: true },
    { B: 2, H: 2, Nq: 577, Nk: 577, D: 80, dtype: 'f32', layout: 'bhnd', precision: 'bf16', queries: 0, keys: { start: 1 } },
    { B: 1, H: 2, Nq: 97, Nk: 97, D: 80, dtype: 'f16', layout: 'bhnd', precision: 'bf16', heads: 'none' },
  ];
  const round = { tf32: roundTf32, bf16: roundBf16 };
  for (const c of cases) {
    test(`${c.precision}: ${label(c)}`, () => {
      const data = build(c);
      const rounded = { ...data, qExact: data.qExact.map(round[c.precision]), kExact: data.kExact.map(round[c.precision]) };
      const out = poisoned(outShape(c));
      attentionScoresSync(data.q, data.k, { ...options(c, data, out), precision: c.precision });
      expectClose(out.data as Float32Array, expected(c, rounded), 1e-7, 2e-4, label(c));
      // The rounding is applied: on f32 inputs the result is not the native one.
      if (c.dtype === 'f32') {
        const native = attentionScoresSync(data.q, data.k, options(c, data)).data as Float32Array;
        expect(Array.from(out.data as Float32Array)).not.toEqual(Array.from(native));
      }
    });
  }

  test('inputs exact in the type are unchanged: f16/bf16 under tf32, bf16 under bf16 equal native bit for bit', () => {
    for (const [dtype, precision] of [['f16', 'tf32'], ['bf16', 'tf32'], ['bf16', 'bf16']] as const) {
      const c: Case = { B: 2, H: 2, Nq: 41, Nk: 41, D: 24, dtype, layout: 'bhnd', causal: true };
      const data = build(c);
      const native = attentionScoresSync(data.q, data.k, options(c, data)).data as Float32Array;
      const fast = attentionScoresSync(data.q, data.k, { ...options(c, data), precision }).data as Float32Array;
      expect(Array.from(fast)).toEqual(Array.from(native));
    }
  });

  test('hand-checked: tf32 rounds 1 + 2^-11 half away from zero to 1 + 2^-10, bf16 to 1', () => {
    // One query [1 + 2^-11], keys [1] and [0], scale 1: the probability of key 0 is σ(q).
    const q = Tensor.from({ data: Float32Array.of(1 + 2 ** -11), shape: [1, 1, 1, 1] });
    const k = Tensor.from({ data: Float32Array.of(1, 0), shape: [1, 1, 2, 1] });
    const sigma = (x: number) => 1 / (1 + Math.exp(-x));
    const at = (precision: 'native' | 'tf32' | 'bf16') => (attentionScoresSync(q, k, { scale: 1, precision }).data as Float32Array)[0];
    expect(at('native')).toBeCloseTo(sigma(1 + 2 ** -11), 7);
    expect(at('tf32')).toBeCloseTo(sigma(1 + 2 ** -10), 7);
    expect(at('bf16')).toBeCloseTo(sigma(1), 7);
    expect(at('tf32')).not.toBe(at('native'));
  });

  test('INT8-only options are refused with other precisions; unknown precisions too', () => {
    const q = Tensor.from({ data: new Float32Array(8).fill(0.5), shape: [1, 1, 2, 4] });
    expectCode(() => attentionScoresSync(q, q, { precision: 'tf32', qRows: 4 }), TypeError, 'ERR_ARG', /int8/);
    expectCode(() => attentionScoresSync(q, q, { precision: 'fp8' as 'tf32' }), TypeError, 'ERR_ARG', /precision/);
  });
});
