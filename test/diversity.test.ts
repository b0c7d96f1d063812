/** kCenter and kMedoids against the float64 references, and their bad input. */
import { FloatDType, kCenter, kCenterSync, kMedoids, kMedoidsSync, Tensor, TokenSieveError } from '../lib';
import { native } from '../lib/native';
import { refKCenter, refKMedoids } from './reference/diversity';
import { expectClose, expectCode, expectReject, makeTensor, randn, rng } from './helpers';

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

/** expectClose that also accepts matching infinities (the first pick's distance). */
function expectDistances(actual: number[], expected: number[], atol: number, rtol: number): void {
  expect(actual.map((v) => v === Infinity)).toEqual(expected.map((v) => v === Infinity));
  expectClose(actual.map((v) => (v === Infinity ? 0 : v)), expected.map((v) => (v === Infinity ? 0 : v)), atol, rtol, 'distances');
}

function mask(B: number, N: number, seed: number, p: number): Uint8Array {
  const r = rng(seed);
  return Uint8Array.from({ length: B * N }, () => (r() < p ? 1 : 0));
}

describe('kCenter', () => {
  test('hand-checked: 5 points in the plane, cosine, DivPrune seed', () => {
    // Nearest-neighbour cosine distances: p0 0.006 (p4), p1 0.293 (p2),
    // p2 0.219 (p4), p3 1 (p1), p4 0.006 (p0) → seed p3; then p0 (distance
    // 2 from p3), then p1 (min(1, 1) = 1 beats p2's min(1.707, 0.293)).
    const x = { data: Float32Array.of(1, 0, 0, 1, 1, 1, -1, 0, 0.9, 0.1), shape: [5, 2] };
    const r = kCenterSync(x, 3);
    expect(r.order.toArray()).toEqual([3, 0, 1]);
    expect(r.indices.toArray()).toEqual([0, 1, 3]);
    expectClose(r.distances.toArray(), [1, 2, 1], 1e-6, 1e-6, 'distances');
    expect(r.indices.shape).toEqual([3]);
    // k = N picks everything, each exactly once.
    expect(kCenterSync(x, 5).order.toArray()).toEqual([3, 0, 1, 2, 4]);
  });

  test('exact duplicates and ties go to the lower index; picks are distinct', () => {
    // Rows 0, 2 and 4 are one point, rows 1 and 3 another: every
    // nearest-neighbour distance is 0 and the seed is row 0; row 1 is next;
    // then all remaining distances are 0 → lower index first.
    const x = { data: Float32Array.of(1, 2, 3, -1, 1, 2, 3, -1, 1, 2), shape: [5, 2] };
    for (const metric of ['cosine', 'l2'] as const) {
      const r = kCenterSync(x, 5, { metric });
      expect(r.order.toArray()).toEqual([0, 1, 2, 3, 4]);
      const d = r.distances.toArray();
      // l2 is exactly 0; 1 − x̂·x̂ may round to a few ulps.
      for (const i of [0, 2, 3, 4]) expect(Math.abs(d[i])).toBeLessThanOrEqual(metric === 'l2' ? 0 : 1e-6);
    }
  });

  test('collinear points, l2: farthest-point order; cosine sees one direction', () => {
    // Points 0, 1, 3, 7, 15 on a line.
    const x = { data: Float32Array.of(0, 0, 1, 2, 3, 6, 7, 14, 15, 30), shape: [5, 2] };
    const l2 = kCenterSync(x, 5, { metric: 'l2', seed: 'maxnorm' });
    expect(l2.order.toArray()).toEqual([4, 0, 3, 2, 1]);
    expectDistances(l2.distances.toArray(), [Infinity, 15, 7, 3, 1].map((v) => v * Math.sqrt(5)), 1e-4, 1e-5);
    // Cosine: rows 1..4 are one direction, row 0 is the zero vector (cos 0 →
    // distance 1 to everything): isolated seed = row 0 (NN distance 1).
    const cos = kCenterSync(x, 2, { metric: 'cosine' });
    expect(cos.order.toArray()).toEqual([0, 1]);
  });

  test('N = 1 and k = 1; explicit seed; exclude', () => {
    const one = kCenterSync({ data: Float32Array.of(3, 4), shape: [1, 2] }, 1);
    expect(one.order.toArray()).toEqual([0]);
    expect(one.distances.toArray()).toEqual([Infinity]);
    const x = { data: Float32Array.of(1, 0, 0, 1, 1, 1, -1, 0, 0.9, 0.1), shape: [5, 2] };
    expect(kCenterSync(x, 2, { seed: 4 }).order.toArray()).toEqual([4, 3]);
    const excl = { data: Uint8Array.of(0, 0, 0, 1, 0), shape: [5] };
    // Without row 3: NN distances p0 .006, p1 .293, p2 .219, p4 .006 → seed
    // p1; then p0 (distance 1) beats p4 (0.890) and p2 (0.293).
    expect(kCenterSync(x, 2, { exclude: excl }).order.toArray()).toEqual([1, 0]);
    expect(kCenterSync(x, 4, { exclude: excl }).indices.toArray()).toEqual([0, 1, 2, 4]);
  });

  type Case = [number, number, number, number, FloatDType, 'cosine' | 'l2', 'isolated' | 'maxnorm' | number, number, boolean];
  const cases: Case[] = [
    [1, 1, 3, 1, 'f32', 'cosine', 'isolated', 1, false],
    [2, 7, 5, 3, 'f16', 'l2', 'isolated', 1, false],
    [3, 13, 1, 13, 'bf16', 'l2', 'maxnorm', 1, false],
    [2, 31, 17, 4, 'f32', 'cosine', 2, 1, true],
    [1, 97, 33, 29, 'bf16', 'cosine', 'isolated', 1, true],
    [2, 577, 67, 58, 'f32', 'cosine', 'isolated', 1, false],
    [1, 577, 19, 64, 'f16', 'l2', 'maxnorm', 1, false],
    [3, 120, 11, 7, 'f32', 'cosine', 'isolated', 12, false],
    [2, 196, 9, 10, 'bf16', 'l2', 'isolated', 4, true],
    // Packed panels of 1 MiB and more (12 × 16 × 3001 floats: 2.3 MB) are written with
    // streaming stores: straight from f32 rows, and staged from bf16 ones.
    [1, 181, 3001, 20, 'f32', 'cosine', 'isolated', 1, false],
    [1, 181, 3001, 20, 'bf16', 'l2', 'maxnorm', 1, false],
    // DivPrune on LLaVA-1.5 (576 × 4,096, k 56): 9.4 MB of panels, 8 depth blocks.
    [1, 576, 4096, 56, 'f32', 'cosine', 'isolated', 1, false],
  ];
  for (const [B, N, C, k, dtype, metric, seed, segments, withExclude] of cases) {
    test(`B${B} N${N} C${C} k${k} ${dtype} ${metric} seed=${seed} segments=${segments}${withExclude ? ' exclude' : ''}`, async () => {
      const t = makeTensor(randn(B * N * C, B * 7919 + N * 31 + C), [B, N, C], dtype);
      let exclude: Uint8Array | undefined;
      if (withExclude) {
        exclude = mask(B, N, N + k, 0.2);
        // Keep every segment able to give k tokens, and the explicit seed allowed.
        const S = N / segments;
        for (let b = 0; b < B; b++)
          for (let g = 0; g < segments; g++) {
            for (let i = 0; i < S && exclude.slice(b * N + g * S, b * N + (g + 1) * S).filter((v) => !v).length < k; i++) exclude[b * N + g * S + i] = 0;
            if (typeof seed === 'number') exclude[b * N + g * S + seed] = 0;
          }
      }
      const want = refKCenter(t.exact, B, N, C, k, { metric, seed, segments, exclude });
      const opts = { metric, seed, segments, exclude: exclude && { data: exclude, shape: [B, N] } };
      const r = await kCenter(t.t, k, opts);
      expect(r.order.shape).toEqual([B, segments * k]);
      expect(r.order.toArray()).toEqual(want.order);
      expect(r.indices.toArray()).toEqual(want.sorted);
      expectDistances(r.distances.toArray(), want.distances, 1e-5, 1e-4);
      expect(kCenterSync(t.t, k, opts).order.toArray()).toEqual(want.order);
    });
  }

  test('duplicates across 64-row blocks of the distance matrix: exact zeros, ties to the lower index', () => {
    const N = 131, C = 37;
    const v = randn(N * C, 131);
    for (const d of [70, 100, 130]) for (let c = 0; c < C; c++) v[d * C + c] = v[3 * C + c];
    const t = makeTensor(v, [1, N, C]);
    for (const metric of ['l2', 'cosine'] as const) {
      const want = refKCenter(t.exact, 1, N, C, N, { metric });
      const r = kCenterSync(t.t, N, { metric });
      expect(r.order.toArray()).toEqual(want.order);
      const d = r.distances.toArray();
      // The last three picks are the duplicates of token 3, in index order.
      expect(r.order.toArray().slice(-3)).toEqual([70, 100, 130]);
      if (metric === 'l2') expect(d.slice(-3)).toEqual([0, 0, 0]);
      expectDistances(d, want.distances, 1e-5, 1e-4);
    }
  });

  test('large segment (N = 4100): the recompute-per-step path', () => {
    const N = 4100, C = 3, k = 9;
    const t = makeTensor(randn(N * C, 4100), [1, N, C]);
    const want = refKCenter(t.exact, 1, N, C, k, { metric: 'l2' });
    const r = kCenterSync(t.t, k, { metric: 'l2' });
    expect(r.order.toArray()).toEqual(want.order);
    expectDistances(r.distances.toArray(), want.distances, 1e-5, 1e-4);
  });

  test('bad input', async () => {
    const x = makeTensor(randn(2 * 6 * 4, 1), [2, 6, 4]).t;
    expectCode(() => kCenterSync(x, 7), RangeError, 'ERR_RANGE');
    expectCode(() => kCenterSync(x, 0), RangeError, 'ERR_RANGE');
    expectCode(() => kCenterSync(x, -1), RangeError, 'ERR_RANGE');
    expectCode(() => kCenterSync(x, 1.5), TypeError, 'ERR_ARG');
    expectCode(() => kCenterSync(x, 2, { segments: 4 }), RangeError, 'ERR_RANGE', /divide/);
    expectCode(() => kCenterSync(x, 4, { segments: 2 }), RangeError, 'ERR_RANGE');
    expectCode(() => kCenterSync(x, 2, { seed: 6 }), RangeError, 'ERR_RANGE');
    expectCode(() => kCenterSync(x, 2, { seed: 'random' as 'maxnorm' }), TypeError, 'ERR_ARG');
    expectCode(() => kCenterSync(x, 2, { metric: 'dot' as 'l2' }), TypeError, 'ERR_ARG');
    expectCode(() => kCenterSync(x, 2, { segment: 2 } as object), TypeError, 'ERR_ARG');
    expectCode(() => kCenterSync({ data: new Float32Array(6), shape: [6] }, 2), RangeError, 'ERR_SHAPE');
    expectCode(() => kCenterSync({ data: new Int32Array(6), shape: [1, 6, 1] }, 2), TypeError, 'ERR_DTYPE');
    const nan = new Float32Array(48).fill(1).map((v, i) => v + i);
    nan[29] = NaN;
    expectCode(() => kCenterSync({ data: nan, shape: [2, 6, 4] }, 2), RangeError, 'ERR_RANGE', /finite/);
    // The first offending token is named, wherever the bad values sit in the
    // 16-row panels (f32 rows are checked by their f64 squared norms).
    for (const [first, second] of [[3, 20], [17, 36], [0, 1], [36, 36]]) {
      const d = Array.from({ length: 37 * 5 }, (_, i) => Math.sin(i) + 0.2);
      d[second * 5 + 2] = Infinity;
      d[first * 5 + 4] = NaN;
      for (const dtype of ['f32', 'f16'] as const)
        for (const metric of ['cosine', 'l2'] as const)
          expectCode(() => kCenterSync(makeTensor(d, [1, 37, 5], dtype).t, 4, { metric }), RangeError, 'ERR_RANGE', new RegExp(`x\\[0, ${first}\\] holds NaN or Inf`));
    }
    // 300 tokens are 19 panels in four row blocks of the distance tiles, with
    // either seed and in kMedoids: the first bad token is still the one named.
    for (const [first, second] of [[130, 250], [97, 299], [5, 200]]) {
      const d = Array.from({ length: 300 * 5 }, (_, i) => Math.sin(i) + 0.2);
      d[second * 5 + 1] = -Infinity;
      d[first * 5 + 3] = NaN;
      const t = makeTensor(d, [1, 300, 5], 'f32').t;
      for (const seed of ['isolated', 'maxnorm'] as const)
        for (const metric of ['cosine', 'l2'] as const)
          expectCode(() => kCenterSync(t, 4, { metric, seed }), RangeError, 'ERR_RANGE', new RegExp(`x\\[0, ${first}\\] holds NaN or Inf`));
      expectCode(() => kMedoidsSync(t, 3), RangeError, 'ERR_RANGE', new RegExp(`x\\[0, ${first}\\] holds NaN or Inf`));
    }
    await expectReject(kCenter({ data: nan, shape: [2, 6, 4] }, 2), RangeError, 'ERR_RANGE');
    expectCode(() => kCenterSync(x, 2, { exclude: { data: new Uint8Array(6), shape: [6] } }), RangeError, 'ERR_SHAPE');
    expectCode(() => kCenterSync(x, 2, { exclude: { data: new Int32Array(12), shape: [2, 6] } }), TypeError, 'ERR_DTYPE');
    // Too many excluded tokens for k, and an excluded explicit seed.
    const ex = { data: Uint8Array.of(1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), shape: [2, 6] };
    expectCode(() => kCenterSync(x, 3, { exclude: ex }), RangeError, 'ERR_RANGE', /excluded/);
    expectCode(() => kCenterSync(x, 2, { exclude: ex, seed: 0 }), RangeError, 'ERR_RANGE', /excluded/);
    const gone = Tensor.from({ data: new Float32Array(12).fill(1), shape: [3, 4] });
    gone.dispose();
    expectCode(() => kCenterSync(gone, 1), TokenSieveError, 'ERR_DISPOSED');
  });
});


describe('kMedoids', () => {
  test('well-separated clusters: converges to each cluster\'s medoid', () => {
    // Three 1-D-ish clusters around 0, 10 and 20 (the middle point of each
    // has the least summed distance), interleaved in token order.
    const pts = [0, 10, 20, 1, 11, 21, -1, 9, 19, 0.5, 10.5, 20.5];
    const x = { data: Float32Array.from(pts.flatMap((p) => [p, 0])), shape: [12, 2] };
    const r = kMedoidsSync(x, 3);
    // Cluster {0, 1, -1, 0.5}: tokens 0 (value 0) and 9 (value 0.5) tie at a
    // summed distance of 2.5 → the lower index, token 0; likewise 1 and 2.
    expect(r.medoids.toArray()).toEqual([0, 1, 2]);
    expect(r.assignments.toArray()).toEqual([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
    const it = r.iterations.toArray()[0];
    expect(it).toBeGreaterThanOrEqual(1);
    expect(it).toBeLessThan(100);
  });

  test('one degenerate cluster (all duplicates) and k = N', () => {
    const x = { data: new Float32Array(10).fill(3), shape: [5, 2] };
    const r = kMedoidsSync(x, 2);
    // KKZ: equal norms → token 0; then every distance is 0 → token 1. All
    // others tie at distance 0 → the earlier medoid (token 0).
    expect(r.medoids.toArray()).toEqual([0, 1]);
    expect(r.assignments.toArray()).toEqual([0, 1, 0, 0, 0]);
    const all = kMedoidsSync(makeTensor(randn(14, 1), [7, 2]).t, 7);
    expect(all.medoids.toArray()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(all.assignments.toArray()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(kMedoidsSync({ data: Float32Array.of(1, 2), shape: [1, 2] }, 1).medoids.toArray()).toEqual([0]);
  });

  const cases: Array<[number, number, number, number, number, FloatDType, 'l2' | 'cosine']> = [
    [1, 1, 3, 1, 1, 'f32', 'l2'],
    [2, 17, 5, 4, 1, 'f16', 'l2'],
    [3, 30, 7, 5, 3, 'bf16', 'cosine'],
    [2, 98, 24, 49, 1, 'f32', 'l2'],
    [1, 294, 16, 49, 3, 'f32', 'cosine'],
  ];
  for (const [B, N, C, k, segments, dtype, metric] of cases) {
    test(`B${B} N${N} C${C} k${k} segments ${segments} ${dtype} ${metric}`, async () => {
      // Clustered data: 6 centres plus noise, so the iterations do work.
      const r = rng(N * C + k);
      const centres = Array.from({ length: 6 }, (_, i) => Array.from(randn(C, i + 100, 3)));
      const noise = randn(B * N * C, N + C);
      const v = Array.from({ length: B * N * C }, (_, i) => centres[Math.floor(r() * 6)][i % C] * 0 + noise[i]);
      for (let t = 0; t < B * N; t++) {
        const c = centres[t % 6];
        for (let d = 0; d < C; d++) v[t * C + d] += c[d];
      }
      const t = makeTensor(v, [B, N, C], dtype);
      const want = refKMedoids(t.exact, B, N, C, k, { metric, segments });
      const res = await kMedoids(t.t, k, { metric, segments });
      expect(res.medoids.toArray()).toEqual(want.medoids);
      expect(res.assignments.toArray()).toEqual(want.assignments);
      expect(res.iterations.toArray()).toEqual(want.iterations);
      expect(kMedoidsSync(t.t, k, { metric, segments }).medoids.toArray()).toEqual(want.medoids);
    });
  }

  test('maxIters 0 returns the KKZ medoids, sorted', () => {
    const t = makeTensor(randn(40 * 3, 40), [40, 3]);
    const want = refKMedoids(t.exact, 1, 40, 3, 5, { maxIters: 0 });
    const r = kMedoidsSync(t.t, 5, { maxIters: 0 });
    expect(r.medoids.toArray()).toEqual(want.medoids);
    expect(r.iterations.toArray()).toEqual([0]);
  });

  test('bad input', async () => {
    const x = makeTensor(randn(2 * 6 * 4, 1), [2, 6, 4]).t;
    expectCode(() => kMedoidsSync(x, 7), RangeError, 'ERR_RANGE');
    expectCode(() => kMedoidsSync(x, 0), RangeError, 'ERR_RANGE');
    expectCode(() => kMedoidsSync(x, 2, { segments: 4 }), RangeError, 'ERR_RANGE');
    expectCode(() => kMedoidsSync(x, 2, { tol: -1 }), RangeError, 'ERR_RANGE');
    expectCode(() => kMedoidsSync(x, 2, { maxIters: -1 }), RangeError, 'ERR_RANGE');
    expectCode(() => kMedoidsSync(x, 2, { metric: 'dot' as 'l2' }), TypeError, 'ERR_ARG');
    const nan = new Float32Array(48).fill(0.25);
    nan[3] = NaN;
    expectCode(() => kMedoidsSync({ data: nan, shape: [2, 6, 4] }, 2), RangeError, 'ERR_RANGE', /finite/);
    await expect(kMedoids({ data: nan, shape: [2, 6, 4] }, 2)).rejects.toMatchObject({ code: 'ERR_RANGE' });
    expectCode(() => kMedoidsSync({ data: new Float32Array(4097), shape: [4097, 1] }, 2), Error, 'ERR_UNSUPPORTED');
  });
});

describe('the native layer checks k-center and k-medoids parameters on its own', () => {
  const n = () => native();
  const meta = (dtype: number, shape: number[]) =>
    Float64Array.of(dtype, -1, 0, shape.length, ...shape, ...shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1)));
  const x = () => meta(0, [1, 6, 2]);
  const xm = () => Float32Array.of(1, 0, 0, 1, 1, 1, -1, 0, 0.5, 0.2, 3, 1);
  const kc = (params: number[], order = meta(3, [1, 2]), orderMem: Int32Array = new Int32Array(2)) =>
    n().kCenter(Float64Array.from(params), x(), xm(), undefined, undefined, order, orderMem, meta(3, [1, 2]), new Int32Array(2), meta(0, [1, 2]), new Float32Array(2), undefined, false);
  const cases: Array<[string, () => unknown, string]> = [
    ['kCenter k = 0', () => kc([1, 0, 1, 0, 0, 0]), 'ERR_RANGE'],
    ['kCenter NaN k', () => kc([1, NaN, 1, 0, 0, 0]), 'ERR_RANGE'],
    ['kCenter segments not dividing N', () => kc([1, 2, 4, 0, 0, 0]), 'ERR_RANGE'],
    ['kCenter unknown metric', () => kc([1, 2, 1, 7, 0, 0]), 'ERR_ARG'],
    ['kCenter unknown seed rule', () => kc([1, 2, 1, 0, 9, 0]), 'ERR_ARG'],
    ['kCenter seed index past the segment', () => kc([1, 2, 1, 0, 2, 6]), 'ERR_RANGE'],
    ['kCenter order of the wrong shape', () => kc([1, 2, 1, 0, 0, 0], meta(3, [1, 3]), new Int32Array(3)), 'ERR_SHAPE'],
    ['kMedoids NaN tol', () => n().kMedoids(Float64Array.of(1, 2, 1, 1, 10, NaN), x(), xm(), meta(3, [1, 2]), new Int32Array(2), meta(3, [1, 6]), new Int32Array(6), undefined, undefined, undefined, false), 'ERR_RANGE'],
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
