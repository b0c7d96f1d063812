/** maxCoverage and mmtokCoverage against the float64 references, and their bad input. */
import { FloatDType, getThreads, maxCoverage, maxCoverageSync, mmtokCoverage, mmtokCoverageSync, setThreads, Tensor, TokenSieveError } from '../lib';
import { native } from '../lib/native';
import { refMaxCoverage, refMmtokCoverage } from './reference/coverage';
import { expectClose, expectCode, expectReject, makeTensor, randn, rng } from './helpers';

function mask(B: number, N: number, seed: number, p: number): Uint8Array {
  const r = rng(seed);
  return Uint8Array.from({ length: B * N }, () => (r() < p ? 1 : 0));
}

describe('maxCoverage', () => {
  test('hand-checked: ties to the lower index, gains, best update', () => {
    // Columns: 0 covers row 0, 1 covers row 1, 2 half of each.
    const c = { data: Float32Array.of(1, 0, 0.5, 0, 1, 0.5), shape: [2, 3] };
    const r = maxCoverageSync(c, 3);
    expect(r.order.toArray()).toEqual([0, 1, 2]);
    expect(r.gains.toArray()).toEqual([1, 1, 0]);
    const ex = maxCoverageSync(c, 2, { exclude: { data: Uint8Array.of(1, 0, 0), shape: [3] } });
    expect(ex.order.toArray()).toEqual([1, 2]);
    expect(ex.gains.toArray()).toEqual([1, 0.5]);
    // Negative coverage never adds gain.
    const neg = maxCoverageSync({ data: Float32Array.of(-1, -2, 0.25), shape: [1, 3] }, 2);
    expect(neg.order.toArray()).toEqual([2, 0]);
    expect(neg.gains.toArray()).toEqual([0.25, 0]);
  });

  const cases: Array<[number, number, number, number, FloatDType, boolean]> = [
    [1, 1, 1, 1, 'f32', false],
    [2, 3, 7, 7, 'f16', false],
    [3, 17, 13, 5, 'bf16', true],
    [1, 592, 576, 64, 'f32', false],
    [2, 61, 257, 31, 'f32', true],
  ];
  for (const [B, R, N, k, dtype, withExclude] of cases) {
    test(`B${B} R${R} N${N} k${k} ${dtype}${withExclude ? ' exclude' : ''}`, async () => {
      const r = rng(B * R * N + k);
      // Sparse-ish non-negative coverage like softmax rows, with some negatives.
      const v = Array.from({ length: B * R * N }, () => (r() < 0.7 ? r() * r() : -r() * 0.1));
      const t = makeTensor(v, [B, R, N], dtype);
      let exclude: Uint8Array | undefined;
      if (withExclude) {
        exclude = mask(B, N, k, 0.3);
        for (let b = 0; b < B; b++) for (let j = 0; j < k; j++) exclude[b * N + j] = 0;
      }
      const want = refMaxCoverage(t.exact, B, R, N, k, exclude);
      const opts = exclude ? { exclude: { data: exclude, shape: [B, N] } } : undefined;
      const res = await maxCoverage(t.t, k, opts);
      expect(res.order.toArray()).toEqual(want.order);
      expect(res.indices.toArray()).toEqual(want.sorted);
      expectClose(res.gains.toArray(), want.gains, 1e-6, 1e-4, 'gains');
      expect(maxCoverageSync(t.t, k, opts).order.toArray()).toEqual(want.order);
    });
  }

  test('padded coverage rows are read in place, and the padding (NaN) never', () => {
    const [B, R, N, k] = [2, 37, 131, 20];
    const r = rng(99);
    const v = Float32Array.from({ length: B * R * N }, () => (r() < 0.7 ? r() * r() : -r() * 0.1));
    const want = maxCoverageSync({ data: v, shape: [B, R, N] }, k);
    const ld = N + 3;
    const padded = new Float32Array(B * R * ld).fill(NaN);
    for (let i = 0; i < B * R; i++) padded.set(v.subarray(i * N, (i + 1) * N), i * ld);
    const res = maxCoverageSync({ data: padded, shape: [B, R, N], strides: [R * ld, ld, 1] }, k);
    expect(res.order.toArray()).toEqual(want.order.toArray());
    expect(res.gains.toArray()).toEqual(want.gains.toArray());
  });

  test('fully covered columns tie at exactly 0: the rest are picked in ascending order', () => {
    // Values over 14 decades, so that even f64 sums round: the gains,
    // updated pick by pick, carry rounding residue, but a column with no row
    // above best is exactly 0 (its positive terms are counted), so k = N
    // ends with the zero-gain columns in index order, as the float64
    // reference's exact zeros. Fails if the count is dropped.
    for (const [R, N] of [[50, 120], [7, 300]]) {
      const r = rng(R + N);
      const v = Array.from({ length: R * N }, () => (r() < 0.6 ? r() * 10 ** (-14 * r()) : -r()));
      const t = makeTensor(v, [1, R, N]);
      const want = refMaxCoverage(t.exact, 1, R, N, N);
      const res = maxCoverageSync(t.t, N);
      expect(res.order.toArray()).toEqual(want.order);
      const gains = Array.from(res.gains.toArray());
      const firstZero = want.gains.indexOf(0);
      expect(firstZero).toBeGreaterThan(0);
      expect(firstZero).toBeLessThan(N - 10);  // many zero-gain picks, in ascending order
      expect(gains.slice(firstZero).every((g) => Object.is(g, 0))).toBe(true);
      expectClose(gains, want.gains, 1e-6, 1e-12, 'gains');
    }
  });

  test('heavy exact ties (coarse values): lower index first at every step', () => {
    // Multiples of 1/8 add exactly, so many columns tie on their gain.
    for (const [R, N, k] of [[5, 40, 40], [30, 200, 60]]) {
      const r = rng(R * N);
      const v = Array.from({ length: 2 * R * N }, () => Math.floor(r() * 4) / 8);
      const t = makeTensor(v, [2, R, N]);
      const want = refMaxCoverage(t.exact, 2, R, N, k);
      const res = maxCoverageSync(t.t, k);
      expect(res.order.toArray()).toEqual(want.order);
      expect(res.gains.toArray()).toEqual(want.gains);
    }
  });

  test('the selection on several threads equals the one on one thread, bit for bit (chunks, ties, exclusions, NaN rows)', async () => {
    // With more than one thread a batch row's selection is one pool job
    // whose participants take (step, column chunk) tickets, and the rows a
    // pick raises come from a transposed copy: the same order and gains as
    // the serial loop, whatever the chunking (3 and 4 threads cut the
    // columns differently) and the row blocks of the copy (64 rows).
    const before = getThreads();
    try {
      for (const [B, R, N, k, ties] of [[1, 70, 33, 33, false], [2, 65, 64, 40, true], [1, 130, 577, 70, false], [3, 200, 97, 97, true]] as const) {
        const r = rng(R * N + k);
        const v = Float32Array.from({ length: B * R * N }, () => (ties ? Math.floor(r() * 4) / 8 : r() < 0.7 ? r() * r() : -r() * 0.1));
        const exclude = mask(B, N, k + 1, 0.1);
        for (let b = 0; b < B; b++) for (let j = 0; j < k && j < N; j++) if (j % 7 !== 3) exclude[b * N + j] = 0;
        const kk = Math.min(k, N - Math.max(...Array.from({ length: B }, (_, b) => exclude.subarray(b * N, (b + 1) * N).reduce((s, e) => s + e, 0))));
        const c = { data: v, shape: [B, R, N] };
        const opts = { exclude: { data: exclude, shape: [B, N] } };
        setThreads(1);
        const one = maxCoverageSync(c, kk, opts);
        const want = refMaxCoverage(Array.from(v), B, R, N, kk, exclude);
        expect(one.order.toArray()).toEqual(want.order);
        for (const threads of [2, 3, 4]) {
          setThreads(threads);
          for (const res of [maxCoverageSync(c, kk, opts), await maxCoverage(c, kk, opts)]) {
            expect(res.order.toArray()).toEqual(one.order.toArray());
            expect(res.gains.toArray()).toEqual(one.gains.toArray());
          }
        }
        // A NaN in a late row block is found and named on every thread count.
        const bad = Float32Array.from(v);
        bad[(R - 1) * N + (N >> 1)] = NaN;
        expectCode(() => maxCoverageSync({ data: bad, shape: [B, R, N] }, kk), RangeError, 'ERR_RANGE', new RegExp(`row ${R - 1} of batch 0`));
      }
    } finally {
      setThreads(before);
    }
  });

  test('bad input', async () => {
    const c = makeTensor(randn(2 * 3 * 5, 2), [2, 3, 5]).t;
    expectCode(() => maxCoverageSync(c, 6), RangeError, 'ERR_RANGE');
    expectCode(() => maxCoverageSync(c, 0), RangeError, 'ERR_RANGE');
    expectCode(() => maxCoverageSync({ data: new Float32Array(5), shape: [5] }, 1), RangeError, 'ERR_SHAPE', /rank 3/);
    expectCode(() => maxCoverageSync({ data: new Float32Array(10), shape: [1, 1, 2, 5] }, 1), RangeError, 'ERR_SHAPE');
    const nan = Float32Array.of(0.1, NaN, 0.3);
    expectCode(() => maxCoverageSync({ data: nan, shape: [1, 3] }, 1), RangeError, 'ERR_RANGE', /finite/);
    await expectReject(maxCoverage({ data: nan, shape: [1, 3] }, 1), RangeError, 'ERR_RANGE');
    expectCode(() => maxCoverageSync(c, 4, { exclude: { data: Uint8Array.of(1, 1, 0, 0, 0, 0, 0, 0, 0, 0), shape: [2, 5] } }), RangeError, 'ERR_RANGE', /excluded/);
  });
});

describe('mmtokCoverage', () => {
  const cases: Array<[number, number, number, number, number | undefined, FloatDType]> = [
    [1, 1, 1, 1, undefined, 'f32'],
    [2, 5, 17, 9, undefined, 'f16'],
    [1, 16, 57, 33, 19, 'f32'],
    [2, 3, 31, 8, 5, 'bf16'],
    // Large: seven 96-row blocks, three depth blocks, 2.4 MB of streamed panels.
    [1, 16, 577, 1030, undefined, 'f32'],
    [1, 7, 200, 600, 300, 'bf16'],
  ];
  for (const [B, m, n, D, Da, dtype] of cases) {
    test(`B${B} m${m} n${n} D${D}${Da ? ` aux D'${Da}` : ''} ${dtype}`, async () => {
      const text = makeTensor(randn(B * m * D, m + 1), [B, m, D], dtype);
      const vision = makeTensor(randn(B * n * D, n + 2), [B, n, D], dtype);
      const aux = Da ? makeTensor(randn(B * n * Da, n + 3), [B, n, Da], dtype) : undefined;
      const opts = { tauTV: 0.05, tauVV: 0.2, alpha: 0.7 };
      const want = refMmtokCoverage(text.exact, vision.exact, aux?.exact, B, m, n, D, Da ?? D, opts.tauTV, opts.tauVV, opts.alpha);
      const out = await mmtokCoverage({ text: text.t, vision: vision.t, visionAux: aux?.t }, opts);
      expect(out.shape).toEqual([B, m + n, n]);
      expectClose(out.toArray(), want, 1e-7, 2e-4, 'coverage');
      const sync = mmtokCoverageSync({ text: text.t, vision: vision.t, visionAux: aux?.t }, opts);
      expectClose(sync.toArray(), want, 1e-7, 2e-4, 'coverage (sync)');
    });
  }

  test('defaults are τ_tv 0.02, τ_vv 0.2, α 0.5', () => {
    const text = makeTensor(randn(3 * 4, 9), [3, 4]);
    const vision = makeTensor(randn(6 * 4, 10), [6, 4]);
    const want = refMmtokCoverage(text.exact, vision.exact, undefined, 1, 3, 6, 4, 4, 0.02, 0.2, 0.5);
    const out = mmtokCoverageSync({ text: text.t, vision: vision.t });
    expect(out.shape).toEqual([9, 6]);
    expectClose(out.toArray(), want, 1e-7, 2e-4);
  });

  test('out: written in place (every element), for 3-D and 2-D inputs, Sync and async', async () => {
    const [B, m, n, D] = [2, 5, 37, 11];
    const text = makeTensor(randn(B * m * D, 21), [B, m, D]).t;
    const vision = makeTensor(randn(B * n * D, 22), [B, n, D]).t;
    const fresh = mmtokCoverageSync({ text, vision }).toArray();
    for (const async of [false, true]) {
      const out = Tensor.from({ data: new Float32Array(B * (m + n) * n).fill(NaN), shape: [B, m + n, n] });
      const got = async ? await mmtokCoverage({ text, vision }, { out }) : mmtokCoverageSync({ text, vision }, { out });
      expect(got).toBe(out);
      expect(Array.from(out.toArray())).toEqual(Array.from(fresh));
    }
    const t2 = text.view([m, D], [D, 1]), v2 = vision.view([n, D], [D, 1]);
    const out2 = Tensor.from({ data: new Float32Array((m + n) * n).fill(NaN), shape: [m + n, n] });
    expect(mmtokCoverageSync({ text: t2, vision: v2 }, { out: out2 })).toBe(out2);
    expect(Array.from(out2.toArray())).toEqual(Array.from(fresh).slice(0, (m + n) * n));
  });

  test('out: wrong shape, dtype or memory shared with an input', () => {
    const text = makeTensor(randn(12, 1), [1, 3, 4]).t;
    const vision = makeTensor(randn(20, 2), [1, 5, 4]).t;
    expectCode(() => mmtokCoverageSync({ text, vision }, { out: Tensor.empty([1, 8, 4]) }), RangeError, 'ERR_SHAPE');
    expectCode(() => mmtokCoverageSync({ text, vision }, { out: Tensor.empty([8, 5]) }), RangeError, 'ERR_SHAPE');
    expectCode(() => mmtokCoverageSync({ text, vision }, { out: Tensor.empty([1, 8, 5], 'i32') }), TypeError, 'ERR_DTYPE');
    const shared = Float32Array.from(randn(60, 3));
    const v = { data: shared.subarray(20, 40), shape: [1, 5, 4] };
    expectCode(() => mmtokCoverageSync({ text, vision: v }, { out: { data: shared.subarray(0, 40), shape: [1, 8, 5] } }), TypeError, 'ERR_ARG', /share memory/);
  });

  test('bad input', () => {
    const text = makeTensor(randn(12, 1), [1, 3, 4]).t;
    const vision = makeTensor(randn(20, 2), [1, 5, 4]).t;
    expectCode(() => mmtokCoverageSync({ text, vision }, { tauTV: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => mmtokCoverageSync({ text, vision }, { tauVV: -1 }), RangeError, 'ERR_RANGE');
    expectCode(() => mmtokCoverageSync({ text, vision }, { alpha: Infinity }), RangeError, 'ERR_RANGE');
    expectCode(() => mmtokCoverageSync({ text, vision }, { tauTV: NaN }), TypeError, 'ERR_ARG');
    expectCode(() => mmtokCoverageSync({ text: makeTensor(randn(9, 1), [1, 3, 3]).t, vision }), RangeError, 'ERR_SHAPE');
    expectCode(() => mmtokCoverageSync({ text, vision, visionAux: makeTensor(randn(8, 1), [1, 4, 2]).t }), RangeError, 'ERR_SHAPE');
    const nan = new Float32Array(20).fill(0.5);
    nan[7] = NaN;
    expectCode(() => mmtokCoverageSync({ text, vision: { data: nan, shape: [1, 5, 4] } }), RangeError, 'ERR_RANGE', /finite/);
  });
});

describe('the native layer checks coverage parameters on its own', () => {
  const n = () => native();
  const meta = (dtype: number, shape: number[]) =>
    Float64Array.of(dtype, -1, 0, shape.length, ...shape, ...shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1)));
  const x = () => meta(0, [1, 6, 2]);
  const xm = () => Float32Array.of(1, 0, 0, 1, 1, 1, -1, 0, 0.5, 0.2, 3, 1);
  const cases: Array<[string, () => unknown, string]> = [
    ['maxCoverage k > N', () => n().maxCoverage(Float64Array.of(1, 7), x(), xm(), undefined, undefined, meta(3, [1, 7]), new Int32Array(7), meta(3, [1, 7]), new Int32Array(7), meta(0, [1, 7]), new Float32Array(7), undefined, false), 'ERR_RANGE'],
    ['mmtokCoverage tau 0', () => n().mmtokCoverage(Float64Array.of(1, 0, 0.2, 0.5), meta(0, [1, 1, 2]), Float32Array.of(1, 0), x(), xm(), undefined, undefined, meta(0, [1, 7, 6]), new Float32Array(42), undefined, false), 'ERR_RANGE'],
    ['mmtokCoverage out of the wrong shape', () => n().mmtokCoverage(Float64Array.of(1, 0.02, 0.2, 0.5), meta(0, [1, 1, 2]), Float32Array.of(1, 0), x(), xm(), undefined, undefined, meta(0, [1, 6, 6]), new Float32Array(36), undefined, false), 'ERR_SHAPE'],
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
