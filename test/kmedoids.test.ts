/** kMedoids against the float64 reference (CenterCLIP's loop), and its bad input. */
import { FloatDType, kMedoids, kMedoidsSync } from '../lib';
import { refKMedoids } from './reference/diversity';
import { expectCode, makeTensor, randn, rng } from './helpers';

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
