/**
 * The methods reproduce the reference code's selections: hand-checkable
 * cases that pin each convention (order, ties, CLS, budgets, neighbours),
 * then random, batched comparisons against float64 transcriptions of the
 * reference code, from q/k and from precomputed probabilities.
 */
import {
  fasterVLM,
  fasterVLMSync,
  fastV,
  fastVSync,
  foPru,
  foPruSync,
  hiPrune,
  hiPruneSync,
  pyRound,
  vtcCls,
  vtcClsSync,
} from '../lib';
import { refProbs } from './reference/attention';
import { Probs, refFasterVLM, refFastV, refFoPru, refHiPrune, refVtcCls } from './reference/methods';
import { refTopkRow } from './reference/select';
import { expectClose, expectCode, makeTensor, randn } from './helpers';

/** Probabilities [1, H, N, N] from explicit rows; unspecified rows are uniform. */
function probsFrom(H: number, N: number, rows: Record<string, number[]>): { data: Float32Array; shape: number[] } {
  const data = new Float32Array(H * N * N).fill(1 / N);
  for (const [key, row] of Object.entries(rows)) {
    const [h, i] = key.split(',').map(Number);
    data.set(row, (h * N + i) * N);
  }
  return { data, shape: [1, H, N, N] };
}

const rowsOf = (t: { toArray(): number[]; shape: readonly number[] }): number[][] => {
  const v = t.toArray();
  const [B, k] = t.shape;
  return Array.from({ length: B }, (_, b) => v.slice(b * k, (b + 1) * k));
};

let seed = 100;
/** Random q/k [B, H, N, D] and the float64 probabilities they give. */
function randomAttention(B: number, H: number, N: number, D: number, dtype: 'f32' | 'bf16' = 'f32', causal = false) {
  const q = makeTensor(randn(B * H * N * D, seed++, 2), [B, H, N, D], dtype);
  const k = makeTensor(randn(B * H * N * D, seed++, 2), [B, H, N, D], dtype);
  const p = refProbs({ q: q.exact, k: k.exact, B, H, Nq: N, Nk: N, D, scale: 1 / Math.sqrt(D), causal });
  const probs: Probs = { p, B, H, N };
  return { q: q.t, k: k.t, probs, probsTensor: { data: Float32Array.from(p), shape: [B, H, N, N] } };
}

describe('pyRound is Python 3 round (half to even)', () => {
  test.each([
    [2.5, 2], [3.5, 4], [0.5, 0], [1.5, 2], [1.28, 1], [3.84, 4], [2.56, 3], [144, 144], [-1.5, -2], [-2.5, -2],
  ])('round(%p) = %p', (x, want) => expect(pyRound(x)).toBe(want));
});

describe('FasterVLM', () => {
  // CLS + 4 patches, 2 heads. Head-mean CLS row over patches: [0.25, 0.2, 0.3, 0.1].
  const probs = probsFrom(2, 5, { '0,0': [0.1, 0.4, 0.1, 0.3, 0.1], '1,0': [0.2, 0.1, 0.3, 0.3, 0.1] });

  test('hand-checked: CLS row, CLS column dropped, head mean, raster order', () => {
    const r = fasterVLMSync({ probs }, { keep: 2 });
    expect(r.indices.toArray()).toEqual([0, 2]); // patches 0 (0.25) and 2 (0.3), in raster order
    expectClose(r.scores.toArray(), [0.25, 0.2, 0.3, 0.1], 1e-7, 1e-6);
  });

  test('ties go to the lower patch index; reduction = round(N·(1 − r))', () => {
    const tie = probsFrom(1, 5, { '0,0': [0.2, 0.2, 0.2, 0.2, 0.2] });
    expect(fasterVLMSync({ probs: tie }, { keep: 2 }).indices.toArray()).toEqual([0, 1]);
    // 4 patches, r = 0.375 → round(2.5) = 2 (half to even)
    expect(fasterVLMSync({ probs }, { reduction: 0.375 }).indices.shape).toEqual([1, 2]);
    // r = 0.125 → round(3.5) = 4
    expect(fasterVLMSync({ probs }, { reduction: 0.125 }).indices.shape).toEqual([1, 4]);
  });

  test('random, batched: q/k and probabilities both match the reference', async () => {
    const a = randomAttention(3, 4, 50, 16);
    const want = refFasterVLM(a.probs, 12);
    const fromQk = await fasterVLM({ q: a.q, k: a.k }, { keep: 12 });
    const fromProbs = fasterVLMSync({ probs: a.probsTensor }, { keep: 12 });
    expect(rowsOf(fromQk.indices)).toEqual(want.indices);
    expect(rowsOf(fromProbs.indices)).toEqual(want.indices);
    expectClose(fromQk.scores.toArray(), want.scores.flat(), 1e-8, 1e-4);
  });

  test('CLIP-L size (577 tokens, keep 58), bf16 q/k', () => {
    const a = randomAttention(2, 2, 577, 64, 'bf16');
    expect(rowsOf(fasterVLMSync({ q: a.q, k: a.k }, { keep: 58 }).indices)).toEqual(refFasterVLM(a.probs, 58).indices);
  });

  test('bad budgets', () => {
    expectCode(() => fasterVLMSync({ probs }, { keep: 5 }), RangeError, 'ERR_RANGE');
    expectCode(() => fasterVLMSync({ probs }, { keep: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => fasterVLMSync({ probs }, {}), TypeError, 'ERR_ARG');
    expectCode(() => fasterVLMSync({ probs }, { keep: 2, reduction: 0.5 }), TypeError, 'ERR_ARG');
    expectCode(() => fasterVLMSync({ probs }, { reduction: 1 }), RangeError, 'ERR_RANGE');
    expectCode(() => fasterVLMSync({ attn: probs } as never, { keep: 2 }), TypeError, 'ERR_ARG');
  });
});

describe('VTC-CLS', () => {
  test('hand-checked: sums layers [start, end), the default end drops the last layer', () => {
    const l0 = probsFrom(1, 4, { '0,0': [0.1, 0.5, 0.2, 0.2] });
    const l1 = probsFrom(1, 4, { '0,0': [0.1, 0.1, 0.4, 0.4] });
    const last = probsFrom(1, 4, { '0,0': [0.0, 0.0, 0.0, 1.0] });
    const layers = [{ probs: l0 }, { probs: l1 }, { probs: last }];
    const r = vtcClsSync(layers, { keep: 1, startLayer: 0 });
    // sums over patches: [0.6, 0.6, 0.6] → tie → patch 0; the last layer (which would pick patch 2) is excluded
    expectClose(r.scores.toArray(), [0.6, 0.6, 0.6], 1e-7, 1e-6);
    expect(r.indices.toArray()).toEqual([0]);
    expect(vtcClsSync(layers, { keep: 1, startLayer: 0, endLayer: 3 }).indices.toArray()).toEqual([2]);
    expect(vtcClsSync(layers, { keep: 1, startLayer: 1, endLayer: 2 }).indices.toArray()).toEqual([1]);
  });

  test('random, batched, 5 layers from q/k: matches the reference', async () => {
    const layers = Array.from({ length: 5 }, () => randomAttention(2, 3, 37, 8));
    const want = refVtcCls(layers.map((l) => l.probs), 2, 4, 9);
    const got = await vtcCls(layers.map((l) => ({ q: l.q, k: l.k })), { keep: 9, startLayer: 2 });
    expect(rowsOf(got.indices)).toEqual(want);
  });

  test('bad layer ranges', () => {
    const l = { probs: probsFrom(1, 4, {}) };
    expectCode(() => vtcClsSync([], { keep: 1 }), TypeError, 'ERR_ARG');
    expectCode(() => vtcClsSync([l, l], { keep: 1 }), RangeError, 'ERR_RANGE'); // default start 16
    expectCode(() => vtcClsSync([l, l], { keep: 1, startLayer: 1, endLayer: 1 }), RangeError, 'ERR_RANGE');
  });
});

describe('FastV', () => {
  test('hand-checked: last row, image columns only, sorted sequence with original positions', () => {
    // L = 6, image tokens at [1, 4). Last row attention: [.1, .3, .05, .25, .2, .1]
    const probs = probsFrom(1, 6, { '0,5': [0.1, 0.3, 0.05, 0.25, 0.2, 0.1] });
    const r = fastVSync({ probs }, { imageStart: 1, imageLength: 3, keep: 2 });
    expect(r.indices.toArray()).toEqual([0, 2]);
    expect(r.positions.toArray()).toEqual([1, 3]);
    expect(r.sequence.toArray()).toEqual([0, 1, 3, 4, 5]);
    expectClose(r.scores.toArray(), [0.3, 0.05, 0.25], 1e-7, 1e-6);
    // queryRow picks another row
    expect(fastVSync({ probs }, { imageStart: 1, imageLength: 3, keep: 1, queryRow: 0 }).indices.toArray()).toEqual([0]);
  });

  test('random causal LLM layer from q/k (batched) matches the reference', async () => {
    const a = randomAttention(2, 4, 60, 16, 'f32', true);
    const want = refFastV(a.probs, 7, 40, 20);
    const got = await fastV({ q: a.q, k: a.k }, { imageStart: 7, imageLength: 40, reduction: 0.5 });
    expect(rowsOf(got.indices)).toEqual(want.image);
    expect(rowsOf(got.sequence)).toEqual(want.sequence);
    expect(rowsOf(got.positions)).toEqual(want.image.map((r) => r.map((i) => i + 7)));
    // probabilities give the same
    expect(rowsOf(fastVSync({ probs: a.probsTensor }, { imageStart: 7, imageLength: 40, keep: 20 }).sequence)).toEqual(want.sequence);
  });

  test('only the last query row given (decode-style q of length 1)', () => {
    const a = randomAttention(1, 2, 30, 8, 'f32', true);
    const qData = (a.q.data as Float32Array);
    const D = 8, N = 30;
    const qLast = new Float32Array(2 * D);
    for (let h = 0; h < 2; h++) qLast.set(qData.subarray((h * N + N - 1) * D, (h * N + N) * D), h * D);
    const got = fastVSync({ q: { data: qLast, shape: [1, 2, 1, D] }, k: a.k }, { imageStart: 3, imageLength: 20, keep: 5 });
    expect(rowsOf(got.indices)).toEqual(refFastV(a.probs, 3, 20, 5).image);
  });

  test('bad image spans', () => {
    const probs = probsFrom(1, 6, {});
    expectCode(() => fastVSync({ probs }, { imageStart: 6, imageLength: 1, keep: 1 }), RangeError, 'ERR_RANGE');
    expectCode(() => fastVSync({ probs }, { imageStart: 2, imageLength: 5, keep: 1 }), RangeError, 'ERR_RANGE');
    expectCode(() => fastVSync({ probs }, { imageStart: 2, imageLength: 3, keep: 4 }), RangeError, 'ERR_RANGE');
  });
});

describe('HiPrune', () => {
  // CLS + a 4×4 grid. Shallow: token 4 (row 1, column 0) gets the most attention.
  const N = 17;
  const shallowRow = Array.from({ length: N }, (_, j) => (j === 5 ? 0.5 : 0.5 / 16));
  const deepRow = Array.from({ length: N }, (_, j) => (j === 0 ? 0 : 0.01 * j));
  const rows = (r: number[]) => Object.fromEntries(Array.from({ length: N }, (_, i) => [`0,${i}`, r]));
  const shallow = { probs: probsFrom(1, N, rows(shallowRow)) };
  const deep = { probs: probsFrom(1, N, rows(deepRow.map((v) => v / deepRow.reduce((a, b) => a + b, 0)))) };

  test("hand-checked: the reference's ±1 neighbours wrap rows (4 − 1 = 3, the previous row's end)", () => {
    // T = 5, α = 1 → round(5·1/5) = 1 anchor: patch 4; buffers 3, 5, 0, 8 → 5 tokens, no registers
    const r = hiPruneSync(shallow, deep, { retention: 5, alpha: 1, gridWidth: 4 });
    expect(r.anchors.toArray()).toEqual([4]);
    expect(r.indices.toArray()).toEqual([0, 3, 4, 5, 8]);
  });

  test("hand-checked: neighbors: 'grid' drops the wrapped neighbour and adds a deep register", () => {
    // buffers 5, 0, 8 (no left neighbour in column 0) → 4 tokens + 1 register: the best remaining deep token (15)
    const r = hiPruneSync(shallow, deep, { retention: 5, alpha: 1, gridWidth: 4, neighbors: 'grid' });
    expect(r.indices.toArray()).toEqual([0, 4, 5, 8, 15]);
  });

  test('hand-checked: registers fill the budget from the deep layer, excluding chosen tokens', () => {
    // T = 7: round(7/5) = 1 anchor (4) + buffers {0, 3, 5, 8} + 2 registers: 15, 14
    expect(hiPruneSync(shallow, deep, { retention: 7, alpha: 1, gridWidth: 4 }).indices.toArray()).toEqual([0, 3, 4, 5, 8, 14, 15]);
    // T = 8: round(8/5) = 2 anchors: 4, then patch 0 (all others tie: lower index); 0's buffers add 1
    const two = hiPruneSync(shallow, deep, { retention: 8, alpha: 1, gridWidth: 4 });
    expect(two.anchors.toArray()).toEqual([4, 0]);
    expect(two.indices.toArray()).toEqual([0, 1, 3, 4, 5, 8, 14, 15]);
    // α = 0.1: round(8·0.1/5) = 0 anchors → all 8 from the deep layer
    expect(hiPruneSync(shallow, deep, { retention: 8, gridWidth: 4 }).indices.toArray()).toEqual([8, 9, 10, 11, 12, 13, 14, 15]);
  });

  test('random, batched crops (LLaVA-NeXT style budget int(T / crops)) match the reference', async () => {
    const s = randomAttention(3, 2, 50, 8);
    const d = randomAttention(3, 2, 50, 8);
    // 49 patches on a 7×7 grid; T = 100 over 3 crops → 33 per crop; α = 0.4 → round(33·0.4/5) = 3 anchors
    const want = refHiPrune(s.probs, d.probs, 100, 0.4, 7);
    const got = await hiPrune({ q: s.q, k: s.k }, { probs: d.probsTensor }, { retention: 100, crops: 3, alpha: 0.4, gridWidth: 7 });
    expect(got.indices.shape).toEqual([3, 33]);
    expect(rowsOf(got.indices)).toEqual(want);
  });

  test('LLaVA-1.5 size: 577 tokens, T = 128, α = 0.1, W = 24', () => {
    const s = randomAttention(1, 2, 577, 16);
    const d = randomAttention(1, 2, 577, 16);
    const got = hiPruneSync({ q: s.q, k: s.k }, { q: d.q, k: d.k }, { retention: 128 });
    expect(rowsOf(got.indices)).toEqual(refHiPrune(s.probs, d.probs, 128, 0.1, 24));
  });

  test('bad options', () => {
    expectCode(() => hiPruneSync(shallow, deep, { retention: 17 }), RangeError, 'ERR_RANGE');
    expectCode(() => hiPruneSync(shallow, deep, { retention: 2, crops: 3 }), RangeError, 'ERR_RANGE');
    expectCode(() => hiPruneSync(shallow, deep, { retention: 4, alpha: 1.5 }), RangeError, 'ERR_RANGE');
    expectCode(() => hiPruneSync(shallow, deep, { retention: 4, neighbors: 'diag' as never }), TypeError, 'ERR_ARG');
    expectCode(() => hiPruneSync(shallow, { probs: probsFrom(1, 5, {}) }, { retention: 4 }), RangeError, 'ERR_SHAPE');
  });
});

describe('FoPru', () => {
  test("hand-checked 'rank' and 'row' on a 3×3 grid", () => {
    // Every query row attends the same way: column mean = that row.
    const row = [0.05, 0.1, 0.05, 0.2, 0.02, 0.03, 0.15, 0.2, 0.2];
    const probs = probsFrom(1, 9, Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`0,${i}`, row])));
    expect(foPruSync({ probs }, { strategy: 'rank', keep: 3 }).indices.toArray()).toEqual([3, 7, 8]); // 0.2 ties → lower indices
    // row sums: 0.2, 0.25, 0.55 → top row 2, then row 1
    const r = foPruSync({ probs }, { strategy: 'row', rows: 1 });
    expect(r.indices.toArray()).toEqual([6, 7, 8]);
    expect(r.rows!.toArray()).toEqual([2]);
    expect(foPruSync({ probs }, { strategy: 'row', keep: 7 }).indices.toArray()).toEqual([3, 4, 5, 6, 7, 8]); // floor(7/3) = 2 rows
    expect(foPruSync({ probs }, { strategy: 'row', ratio: 0.5 }).indices.toArray()).toEqual([6, 7, 8]); // floor(3·0.5) = 1 row
  });

  test('random, batched: rank and row match the reference (CLS dropped)', async () => {
    const a = randomAttention(2, 3, 50, 8);
    // drop CLS: the reference sees the 49×49 patch block; use probabilities re-sliced accordingly
    const B = 2, H = 3, N = 50;
    const patch = new Float64Array(B * H * 49 * 49);
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < 49; i++) for (let j = 0; j < 49; j++)
      patch[((b * H + h) * 49 + i) * 49 + j] = a.probs.p[((b * H + h) * N + i + 1) * N + j + 1];
    const probs = { data: Float32Array.from(patch), shape: [B, H, 49, 49] };
    const ref = { p: Float32Array.from(patch), B, H, N: 49 };
    expect(rowsOf((await foPru({ probs }, { strategy: 'rank', keep: 20 })).indices)).toEqual(refFoPru(ref, 'rank', 20));
    expect(rowsOf(foPruSync({ probs }, { strategy: 'row', rows: 3 }).indices)).toEqual(refFoPru(ref, 'row', 3));
    // cls: true computes the column mean over all 50 query rows of the full map and drops column 0
    const withCls = foPruSync({ q: a.q, k: a.k }, { strategy: 'rank', keep: 10, cls: true });
    expect(withCls.scores.shape).toEqual([2, 49]);
    const full = refFoPru(a.probs, 'rank', 50); // all 50 columns, ascending
    expect(full[0]).toEqual([...Array(50).keys()]);
    const colMean = (b: number) => Array.from({ length: 49 }, (_, j) => {
      let v = 0;
      for (let h = 0; h < H; h++) for (let i = 0; i < N; i++) v += a.probs.p[((b * H + h) * N + i) * N + j + 1];
      return v / H / N;
    });
    expect(rowsOf(withCls.indices)).toEqual([0, 1].map((b) => refTopkRow(colMean(b), 10, 'index')));
  });

  test('bad options', () => {
    const probs = probsFrom(1, 10, {});
    expectCode(() => foPruSync({ probs }, { strategy: 'row', rows: 1 }), RangeError, 'ERR_SHAPE');
    expectCode(() => foPruSync({ probs }, { strategy: 'rank', rows: 1 }), TypeError, 'ERR_ARG');
    expectCode(() => foPruSync({ probs }, { strategy: 'rank', keep: 11 }), RangeError, 'ERR_RANGE');
    expectCode(() => foPruSync({ probs }, { strategy: 'rank', ratio: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => foPruSync({ probs }, { strategy: 'top' as never, keep: 1 }), TypeError, 'ERR_ARG');
  });
});
