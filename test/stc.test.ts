/**
 * stcScores, StreamPruner and stc against the float64 reference of the
 * authors' sequence (test/reference/diversity.ts refStcScores: lern-to-write/STC
 * 9b13ce0, STC_Pruner.compress). The hand-checked cases each pin one
 * convention of the authors' code and show, through the reference's other
 * readings, that the convention changes the kept set.
 */
import { FloatDType, StcMemory, StreamPruner, stc, stcScores, stcScoresSync, stcScoringChannels, stcSync } from '../lib';
import { RefStcConventions, refKeepLowest, refStcScores } from './reference/stc';
import { expectClose, expectCode, makeTensor, randn } from './helpers';
import { native } from '../lib/native';

const modes: StcMemory[] = ['authors', 'aligned'];

/** Kept positions of a stream of host chunks [F, T, C] under the reference. */
function refStream(chunks: ArrayLike<number>[], F: number, T: number, C: number, k: number, conv: RefStcConventions): number[][] {
  const past: number[][] = [];
  return chunks.map((x) => {
    const r = refStcScores(x, F, T, C, past, conv);
    past.push(r.chunkMean);
    return refKeepLowest(r.scores, F, T, k);
  });
}

describe('stcScores', () => {
  const cases: Array<[number, number, number, FloatDType]> = [
    [1, 1, 1, 'f32'],
    [1, 7, 2, 'f32'],
    [2, 5, 3, 'f16'],
    [4, 13, 31, 'bf16'],
    [3, 196, 64, 'f32'],
    [2, 11, 257, 'f32'],
  ];
  for (const [F, T, C, dtype] of cases) {
    for (const memory of modes) {
      test(`F${F} T${T} C${C} ${dtype} memory '${memory}'`, async () => {
        // Per-channel scales spread the variances apart, as in real features.
        const vals = randn(F * T * C, F * T + C).map((v, i) => v * (0.25 + ((i % C) % 7)) + 0.1 * ((i % C) % 3));
        const t = makeTensor(vals, [F, T, C], dtype);
        const Cs = stcScoringChannels(C);
        const Cm = memory === 'authors' ? Cs : C;
        const past = [Array.from(randn(Cm, 5, 0.3)), Array.from(randn(Cm, 6, 0.3))];
        const want = refStcScores(t.exact, F, T, C, past, { memory });
        const memorySum = { data: Float32Array.from(past[0].map((v, c) => v + past[1][c])), shape: [Cm] };
        const r = await stcScores(t.t, { memorySum, memoryCount: 2, memory });
        expect(r.scores.shape).toEqual([F, T]);
        expect(r.chunkMean.shape).toEqual([Cm]);
        expect(r.channels.toArray()).toEqual(want.channels);
        expectClose(r.scores.toArray(), want.scores, 1e-5, 1e-4, 'scores');
        expectClose(r.chunkMean.toArray(), want.chunkMean, 1e-6, 1e-5, 'chunkMean');
        const first = stcScoresSync(t.t, { memory });
        expectClose(first.scores.toArray(), refStcScores(t.exact, F, T, C, [], { memory }).scores, 1e-5, 1e-4, 'scores (no memory)');
      });
    }
  }

  test('scoring channels: ⌊C/2⌋ (one for C = 1), lowest variance first, ties to the lower channel', () => {
    expect([1, 2, 3, 4, 5, 1152].map(stcScoringChannels)).toEqual([1, 1, 1, 2, 2, 576]);
    // C = 5 → 2 channels. Variances: ch0 4, ch1 0, ch2 1, ch3 1, ch4 9 → [1, 2]
    // (2 and 3 tie; the lower channel wins), in ascending-variance order.
    const x = { data: Float32Array.of(2, 7, 1, 5, 3, -2, 7, -1, 3, -3), shape: [1, 2, 5] };
    expect(stcScoresSync(x).channels.toArray()).toEqual([1, 2]);
    // Three zero variances: the two lowest channels of them.
    const y = { data: Float32Array.of(0, 3, 0, 0, 9, 0, -3, 0, 0, -9), shape: [1, 2, 5] };
    expect(stcScoresSync(y).channels.toArray()).toEqual([0, 2]);
    const z = { data: Float32Array.of(5, 0.5, 0.25, 0, 0, -5, -0.5, -0.25, 0, 0), shape: [1, 2, 5] };
    expect(stcScoresSync(z).channels.toArray()).toEqual([3, 4]);
    // Variances 25, 0.25, 0.0625, 1, 1: the order follows the variance, not the channel.
    const w = { data: Float32Array.of(5, 0.5, 0.25, 1, 1, -5, -0.5, -0.25, -1, -1), shape: [1, 2, 5] };
    expect(stcScoresSync(w).channels.toArray()).toEqual([2, 1]);
  });

  test('bad input', () => {
    const x = makeTensor(randn(2 * 3 * 4, 1), [2, 3, 4]).t;
    expectCode(() => stcScoresSync(x, { memoryCount: 1 }), RangeError, 'ERR_RANGE');
    // memory 'authors' sums [C/2] chunk means, 'aligned' [C].
    expectCode(() => stcScoresSync(x, { memorySum: { data: new Float32Array(4), shape: [4] }, memoryCount: 1 }), RangeError, 'ERR_SHAPE', /\[2\]/);
    expectCode(() => stcScoresSync(x, { memorySum: { data: new Float32Array(2), shape: [2] }, memoryCount: 1, memory: 'aligned' }), RangeError, 'ERR_SHAPE', /\[4\]/);
    expectCode(() => stcScoresSync(x, { memory: 'channel' as StcMemory }), TypeError, 'ERR_ARG', /'authors' or 'aligned'/);
    expectCode(() => stcScoresSync({ data: new Float32Array(12), shape: [3, 4] }), RangeError, 'ERR_SHAPE');
    const nan = new Float32Array(24).fill(1);
    nan[5] = NaN;
    expectCode(() => stcScoresSync({ data: nan, shape: [2, 3, 4] }), RangeError, 'ERR_RANGE', /finite/);
  });
});

describe('StreamPruner: the authors\' conventions, hand-checked', () => {
  test('features are normalised over the scoring channels only', () => {
    // One frame of 4 tokens, C = 2 → one scoring channel: channel 0
    // (variance 0 against channel 1's 250). Normalised over that one channel
    // every token is exactly 1: all scores equal G(0) + G(0) = 10, and the tie
    // goes to the lowest index. Normalising over both channels first (the
    // package's former reading) would single out token 1, whose channel 0 is
    // then the smallest (1 / ‖(1, −30)‖), farthest from frame mean and memory.
    const data = Float32Array.of(1, 10, 1, -30, 1, 10, 1, -10);
    const x = { data, shape: [1, 4, 2] };
    const r = new StreamPruner({ tokensPerFrame: 1 }).pushSync(x);
    expect(r.indices.toArray()).toEqual([0]);
    expect(r.scores.toArray()).toEqual([10, 10, 10, 10]);
    expect(refStream([data], 1, 4, 2, 1, {})).toEqual([[0]]);
    expect(refStream([data], 1, 4, 2, 1, { normalize: 'all' })).toEqual([[1]]);
  });

  test('the memory is the mean of raw chunk means, not of normalised ones', () => {
    // One frame, C = 2 → scoring channel 0 (variance 4.7 against 1675).
    // Channel 0 = [4, −1, −1, −1]: its raw mean 0.25 > 0, so the normalised
    // memory is +1; normalised over both channels first, token 0 (4 / ‖(4, 80)‖
    // = 0.05) weighs no more than the others (−0.05 each) and the memory would
    // be −1. On the scoring channel the tokens are [+1, −1, −1, −1], the frame
    // mean −0.5: token 0 scores G(2.25) + G(0) = 6.01, the others
    // G(0.25) + G(4) = 4.10 → token 1 (the lowest index of three ties).
    const data = Float32Array.of(4, 80, -1, -20, -1, 20, -1, -20);
    const r = new StreamPruner({ tokensPerFrame: 1 }).pushSync({ data, shape: [1, 4, 2] });
    expect(r.indices.toArray()).toEqual([1]);
    const G = (d2: number) => [0.125, 0.25, 0.5, 1, 2].reduce((s, a) => s + Math.exp(-d2 / (2 * a)), 0);
    expectClose(r.scores.toArray(), [G(2.25) + G(0), G(0.25) + G(4), G(0.25) + G(4), G(0.25) + G(4)], 1e-6, 1e-6, 'scores');
    expect(refStream([data], 1, 4, 2, 1, {})).toEqual([[1]]);
    expect(refStream([data], 1, 4, 2, 1, { memoryOf: 'normalised' })).toEqual([[0]]);
  });

  test("memory 'authors' averages chunk means by position, 'aligned' by channel", async () => {
    // C = 4 → 2 scoring channels; channels 2 and 3 (variance 10⁴) never score.
    // Chunk A: channel 0 (variance 0, mean 5) before channel 1 (variance 1,
    // mean 0) → order [0, 1], raw mean [5, 0].
    // Chunk B: tokens (±2, 0) and (0, ±1) on channels 0, 1: variances 2 and
    // 0.5 → order [1, 0], raw mean [0, 0]. On (ch1, ch0) the tokens normalise
    // to (0, 1), (0, −1), (1, 0), (−1, 0); their frame mean is 0.
    //   authors: memory = ([5, 0] + [0, 0]) / 2 by position = (1, 0) after
    //     normalising, i.e. along channel 1 in B's order: squared distances
    //     2, 2, 0, 4 → token 3 first, then token 0 (tie with 1).
    //   aligned: channel 0's mean 2.5 sits at B's position 1: memory (0, 1):
    //     distances 0, 4, 2, 2 → token 1 first, then token 2 (tie with 3).
    const A = Float32Array.of(5, 1, 100, 100, 5, -1, -100, -100);
    const B = Float32Array.of(2, 0, 100, 100, -2, 0, -100, -100, 0, 1, 100, 100, 0, -1, -100, -100);
    const chunkA = { data: A, shape: [1, 2, 4] }, chunkB = { data: B, shape: [1, 4, 4] };
    expect(stcScoresSync(chunkA).channels.toArray()).toEqual([0, 1]);
    expect(stcScoresSync(chunkB).channels.toArray()).toEqual([1, 0]);
    const run = async (memory: StcMemory, k: number) => {
      const p = new StreamPruner({ tokensPerFrame: k, memory });
      expect(p.memory).toBe(memory);
      await p.push(chunkA);
      return (await p.push(chunkB)).indices.toArray();
    };
    expect(await run('authors', 1)).toEqual([3]);
    expect(await run('authors', 2)).toEqual([0, 3]);
    expect(await run('aligned', 1)).toEqual([1]);
    expect(await run('aligned', 2)).toEqual([1, 2]);
    // The default is the authors'.
    const p = new StreamPruner({ tokensPerFrame: 1 });
    p.pushSync(chunkA);
    expect(p.pushSync(chunkB).indices.toArray()).toEqual([3]);
  });
});

describe('StreamPruner', () => {
  test('random multi-chunk streams whose channel orders differ between chunks', async () => {
    const F = 2, T = 17, C = 12, k = 5;
    // Each chunk scales its channels by another permutation, so each keeps
    // other channels, in another order.
    const chunks = [0, 1, 2, 3].map((i) =>
      makeTensor(randn(F * T * C, 70 + i).map((v, j) => v * (0.2 + (((j % C) * (i + 5)) % C) / 4)), [F, T, C]),
    );
    const orders = chunks.map((c) => stcScoresSync(c.t).channels.toArray().join());
    expect(new Set(orders).size).toBe(chunks.length);
    const wanted: Record<StcMemory, number[][]> = {
      authors: refStream(chunks.map((c) => c.exact), F, T, C, k, {}),
      aligned: refStream(chunks.map((c) => c.exact), F, T, C, k, { memory: 'aligned' }),
    };
    // The two memories disagree on this stream (else this test shows nothing).
    expect(wanted.authors.slice(1)).not.toEqual(wanted.aligned.slice(1));
    for (const memory of modes) {
      const want = wanted[memory];
      const p = new StreamPruner({ tokensPerFrame: k, memory });
      for (let i = 0; i < chunks.length; i++) {
        const r = i % 2 ? p.pushSync(chunks[i].t) : await p.push(chunks[i].t);
        expect(r.indices.shape).toEqual([F, k]);
        expect(r.indices.toArray()).toEqual(want[i]);
      }
      expect(p.chunks).toBe(chunks.length);
      p.reset();
      expect(p.chunks).toBe(0);
      expect(p.pushSync(chunks[2].t).indices.toArray()).toEqual(refStream([chunks[2].exact], F, T, C, k, { memory })[0]);
      const all = await stc(chunks.map((c) => c.t), { tokensPerFrame: k, memory });
      expect(all.map((r) => r.indices.toArray())).toEqual(want);
      expect(stcSync(chunks.map((c) => c.t), { tokensPerFrame: k, memory }).map((r) => r.indices.toArray())).toEqual(want);
    }
  });

  test('bad input', () => {
    expectCode(() => new StreamPruner({ tokensPerFrame: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => new StreamPruner({ keep: 3 } as object), TypeError, 'ERR_ARG');
    expectCode(() => new StreamPruner({ memory: 'position' as StcMemory }), TypeError, 'ERR_ARG');
    const p = new StreamPruner({ tokensPerFrame: 4 });
    expectCode(() => p.pushSync(makeTensor(randn(6, 1), [1, 3, 2]).t), RangeError, 'ERR_RANGE');
    p.pushSync(makeTensor(randn(10, 1), [1, 5, 2]).t);
    expectCode(() => p.pushSync(makeTensor(randn(15, 1), [1, 5, 3]).t), RangeError, 'ERR_SHAPE', /reset/);
    // C = 4 and C = 5 both score on 2 channels; the memory still refuses to mix them.
    const q = new StreamPruner({ tokensPerFrame: 1 });
    q.pushSync(makeTensor(randn(8, 2), [1, 2, 4]).t);
    expectCode(() => q.pushSync(makeTensor(randn(10, 3), [1, 2, 5]).t), RangeError, 'ERR_SHAPE', /4 channels/);
  });
});

describe('the native layer checks STC parameters on its own', () => {
  const n = () => native();
  const meta = (dtype: number, shape: number[]) =>
    Float64Array.of(dtype, -1, 0, shape.length, ...shape, ...shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1)));
  const x = () => meta(0, [1, 6, 2]);
  const xm = () => Float32Array.of(1, 0, 0, 1, 1, 1, -1, 0, 0.5, 0.2, 3, 1);
  const cases: Array<[string, () => unknown, string]> = [
    ['stcScores memory count without a sum', () => n().stcScores(Float64Array.of(1, 1, 0), x(), xm(), undefined, undefined, meta(0, [1, 6]), new Float32Array(6), meta(0, [2]), new Float32Array(2), undefined, undefined, undefined, false), 'ERR_RANGE'],
    ['stcScores unknown memory mode', () => n().stcScores(Float64Array.of(1, 0, 7), x(), xm(), undefined, undefined, meta(0, [1, 6]), new Float32Array(6), meta(0, [2]), new Float32Array(2), undefined, undefined, undefined, false), 'ERR_ARG'],
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
});
