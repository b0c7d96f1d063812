/** stcScores, StreamPruner and stc against the float64 reference. */
import { FloatDType, StreamPruner, stc, stcScores, stcScoresSync, stcSync } from '../lib';
import { refKeepLowest, refStcScores } from './reference/diversity';
import { expectClose, expectCode, makeTensor, randn } from './helpers';

describe('stcScores', () => {
  const cases: Array<[number, number, number, FloatDType]> = [
    [1, 1, 1, 'f32'],
    [2, 5, 3, 'f16'],
    [4, 13, 31, 'bf16'],
    [3, 196, 64, 'f32'],
  ];
  for (const [F, T, C, dtype] of cases) {
    test(`F${F} T${T} C${C} ${dtype}`, async () => {
      const t = makeTensor(randn(F * T * C, F * T + C), [F, T, C], dtype);
      const past = [Array.from(randn(C, 5, 0.1)), Array.from(randn(C, 6, 0.1))];
      const want = refStcScores(t.exact, F, T, C, past);
      const memorySum = { data: Float32Array.from(past[0].map((v, c) => v + past[1][c])), shape: [C] };
      const r = await stcScores(t.t, { memorySum, memoryCount: 2 });
      expect(r.scores.shape).toEqual([F, T]);
      expectClose(r.scores.toArray(), want.scores, 1e-5, 1e-4, 'scores');
      expectClose(r.chunkMean.toArray(), want.chunkMean, 1e-6, 1e-4, 'chunkMean');
      const first = stcScoresSync(t.t);
      expectClose(first.scores.toArray(), refStcScores(t.exact, F, T, C, []).scores, 1e-5, 1e-4, 'scores (no memory)');
    });
  }

  test('bad input', () => {
    const x = makeTensor(randn(2 * 3 * 4, 1), [2, 3, 4]).t;
    expectCode(() => stcScoresSync(x, { memoryCount: 1 }), RangeError, 'ERR_RANGE');
    expectCode(() => stcScoresSync(x, { memorySum: { data: new Float32Array(3), shape: [3] }, memoryCount: 1 }), RangeError, 'ERR_SHAPE');
    expectCode(() => stcScoresSync({ data: new Float32Array(12), shape: [3, 4] }), RangeError, 'ERR_SHAPE');
    const nan = new Float32Array(24).fill(1);
    nan[5] = NaN;
    expectCode(() => stcScoresSync({ data: nan, shape: [2, 3, 4] }), RangeError, 'ERR_RANGE', /finite/);
  });
});

describe('StreamPruner', () => {
  test('hand-checked: an outlier token is the one kept', () => {
    // One frame of 4 tokens, C = 2 → one scoring channel: channel 0 (raw
    // variance 0.1875 against channel 1's 400). Normalised, channel 0 is
    // 0.0995 for tokens 0-2 and 0.148 for token 3: the farthest from the
    // frame mean and from the memory (this chunk's mean) → the lowest score.
    const x = { data: Float32Array.of(1, 10, 1, -10, 1, 10, 1.5, -10), shape: [1, 4, 2] };
    const p = new StreamPruner({ tokensPerFrame: 1 });
    expect(p.pushSync(x).indices.toArray()).toEqual([3]);
    expect(p.chunks).toBe(1);
  });

  test('across chunks: memory = mean of all chunk means; reset forgets it', async () => {
    const F = 2, T = 17, C = 12, k = 5;
    const chunks = [0, 1, 2].map((i) => makeTensor(randn(F * T * C, 70 + i), [F, T, C]));
    const past: number[][] = [];
    const want: number[][] = [];
    for (const c of chunks) {
      const r = refStcScores(c.exact, F, T, C, past);
      want.push(refKeepLowest(r.scores, F, T, k));
      past.push(r.chunkMean);
    }
    const p = new StreamPruner({ tokensPerFrame: k });
    for (let i = 0; i < 3; i++) {
      const r = await p.push(chunks[i].t);
      expect(r.indices.shape).toEqual([F, k]);
      expect(r.indices.toArray()).toEqual(want[i]);
    }
    expect(p.chunks).toBe(3);
    p.reset();
    expect(p.chunks).toBe(0);
    expect(p.pushSync(chunks[2].t).indices.toArray()).toEqual(refKeepLowest(refStcScores(chunks[2].exact, F, T, C, []).scores, F, T, k));
    const all = await stc(chunks.map((c) => c.t), { tokensPerFrame: k });
    expect(all.map((r) => r.indices.toArray())).toEqual(want);
    expect(stcSync(chunks.map((c) => c.t), { tokensPerFrame: k }).map((r) => r.indices.toArray())).toEqual(want);
  });

  test('bad input', () => {
    expectCode(() => new StreamPruner({ tokensPerFrame: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => new StreamPruner({ keep: 3 } as object), TypeError, 'ERR_ARG');
    const p = new StreamPruner({ tokensPerFrame: 4 });
    expectCode(() => p.pushSync(makeTensor(randn(6, 1), [1, 3, 2]).t), RangeError, 'ERR_RANGE');
    p.pushSync(makeTensor(randn(10, 1), [1, 5, 2]).t);
    expectCode(() => p.pushSync(makeTensor(randn(15, 1), [1, 5, 3]).t), RangeError, 'ERR_SHAPE', /reset/);
  });
});
