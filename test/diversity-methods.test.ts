/** DivPrune, ToDRE and MMTok: the reference conventions (methods.md §4, §6), batched. */
import { centerClip, centerClipSync, divPrune, divPruneSync, mmTok, mmTokSync, toDRE, toDRESync } from '../lib';
import { refMaxCoverage, refMmtokCoverage } from './reference/coverage';
import { refKCenter, refKMedoids } from './reference/diversity';
import { expectCode, makeTensor, randn } from './helpers';

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;

/**
 * DivPrune's loop as the authors wrote it (float64): D = 1 − cos; the first
 * pick is argmax of each column's second-smallest value (topk(2,
 * largest=False)[1]); then argmax of the min over the picked rows; sorted.
 */
function divPruneAuthors(x: Float64Array, N: number, C: number, K: number): number[] {
  const rows = Array.from({ length: N }, (_, i) => Array.from(x.subarray(i * C, (i + 1) * C)));
  const norm = rows.map((r) => Math.hypot(...r));
  const D = rows.map((a, i) => rows.map((b, j) => 1 - a.reduce((s, v, c) => s + v * b[c], 0) / (norm[i] * norm[j])));
  const second = D.map((col) => col.slice().sort((p, q) => p - q)[1]);
  const S = [second.indexOf(Math.max(...second))];
  for (let i = 1; i < K; i++) {
    const score = Array.from({ length: N }, (_, j) => Math.min(...S.map((s) => D[s][j])));
    S.push(score.indexOf(Math.max(...score)));
  }
  return S.sort((p, q) => p - q);
}

describe('divPrune', () => {
  test('hand-checked on 5 points: seed = most isolated, then farthest, sorted', () => {
    // See diversity.test.ts for the distances: picks 3, 0, 1.
    const x = { data: Float32Array.of(1, 0, 0, 1, 1, 1, -1, 0, 0.9, 0.1), shape: [5, 2] };
    const r = divPruneSync(x, { keep: 3 });
    expect(r.indices.toArray()).toEqual([0, 1, 3]);
    expect(r.order.toArray()).toEqual([3, 0, 1]);
    // ratio 0.5 of 5 → round(2.5) = 2 (Python rounds half to even).
    expect(divPruneSync(x, { ratio: 0.5 }).indices.toArray()).toEqual([0, 3]);
  });

  test('default ratio 0.098 keeps 56 of 576; batched = per sample; matches the authors\' loop', async () => {
    const B = 2, N = 576, C = 24;
    const t = makeTensor(randn(B * N * C, 576), [B, N, C], 'f16');
    const r = await divPrune(t.t);
    expect(r.indices.shape).toEqual([B, 56]);
    const got = r.indices.toArray();
    for (let b = 0; b < B; b++) {
      const want = divPruneAuthors(t.exact.subarray(b * N * C, (b + 1) * N * C), N, C, 56);
      expect(got.slice(b * 56, (b + 1) * 56)).toEqual(want);
    }
    expect(divPruneSync(t.t).indices.toArray()).toEqual(got);
  });

  test('options', () => {
    const x = makeTensor(randn(20 * 3, 3), [20, 3]).t;
    expect(divPruneSync(x, { reduction: 0.75 }).indices.shape).toEqual([5]);
    expectCode(() => divPruneSync(x, { keep: 3, ratio: 0.5 }), TypeError, 'ERR_ARG');
    expectCode(() => divPruneSync(x, { ratio: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => divPruneSync(x, { ratio: 0.01 }), RangeError, 'ERR_RANGE');
    expectCode(() => divPruneSync(x, { keep: 21 }), RangeError, 'ERR_RANGE');
    expectCode(() => divPruneSync(x, { metric: 'l2' } as object), TypeError, 'ERR_ARG');
  });
});

describe('toDRE', () => {
  test('default: 10% by DivPrune\'s rule; segments and seed options', async () => {
    const B = 2, N = 130, C = 9;
    const t = makeTensor(randn(B * N * C, 130), [B, N, C]);
    const r = await toDRE(t.t);
    expect(r.indices.shape).toEqual([B, 13]);
    expect(r.indices.toArray()).toEqual(refKCenter(t.exact, B, N, C, 13).sorted);
    const seg = toDRESync(t.t, { segments: 2, seed: 'maxnorm', metric: 'l2' });
    // 10% of each 65-token segment: round(6.5) = 6 (half to even).
    expect(seg.indices.shape).toEqual([B, 12]);
    expect(seg.order.toArray()).toEqual(refKCenter(t.exact, B, N, C, 6, { segments: 2, seed: 'maxnorm', metric: 'l2' }).order);
  });
});

describe('mmTok', () => {
  test('hand-checked coverage: a text-relevant token first, then the best vision cover', () => {
    // One text token aligned with vision token 2; with τ_tv tiny, P puts all
    // its mass (1/m = 1) on token 2, which dominates the first gain.
    const text = { data: Float32Array.of(0, 1), shape: [1, 1, 2] };
    const vision = { data: Float32Array.of(1, 0, 1, 0.1, 0, 1, -1, 0.2), shape: [1, 4, 2] };
    const r = mmTokSync({ text, vision }, { keep: 2, tauTV: 0.001 });
    expect(r.order.toArray()[0]).toBe(2);
    expect(r.indices.shape).toEqual([1, 2]);
  });

  test('n <= keep keeps everything without selecting', async () => {
    const text = makeTensor(randn(2 * 3 * 4, 1), [2, 3, 4]).t;
    const vision = makeTensor(randn(2 * 5 * 4, 2), [2, 5, 4]).t;
    const r = await mmTok({ text, vision });
    expect(r.indices.toArray()).toEqual([0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
    expect(r.gains).toBeUndefined();
  });

  test('default keep 64 on n = 576, m = 16, batched: the reference pipeline', async () => {
    const B = 2, m = 16, n = 576, D = 32, Da = 24;
    const text = makeTensor(randn(B * m * D, 16), [B, m, D]);
    const vision = makeTensor(randn(B * n * D, 17), [B, n, D]);
    const aux = makeTensor(randn(B * n * Da, 18), [B, n, Da]);
    const cov = refMmtokCoverage(text.exact, vision.exact, aux.exact, B, m, n, D, Da, 0.02, 0.2, 0.5);
    const want = refMaxCoverage(cov, B, m + n, n, 64);
    const r = await mmTok({ text: text.t, vision: vision.t, visionAux: aux.t });
    expect(r.indices.shape).toEqual([B, 64]);
    expect(r.order.toArray()).toEqual(want.order);
    expect(r.indices.toArray()).toEqual(want.sorted);
    expect(mmTokSync({ text: text.t, vision: vision.t, visionAux: aux.t }).indices.toArray()).toEqual(want.sorted);
  });

  test('Sync calls reuse one coverage matrix: stale contents never leak into the next call', async () => {
    // Same shape, different data: the kept matrix holds the previous call's
    // coverage, so a kernel that left any element unwritten would change the
    // picks. Against the float64 reference each time, with a 2-D call of
    // another shape and an async call (which allocates its own) in between.
    const [B, m, n, D] = [2, 7, 61, 24];
    for (const seed of [31, 32, 33]) {
      const text = makeTensor(randn(B * m * D, seed), [B, m, D]);
      const vision = makeTensor(randn(B * n * D, seed + 100), [B, n, D]);
      const want = refMaxCoverage(refMmtokCoverage(text.exact, vision.exact, undefined, B, m, n, D, D, 0.02, 0.2, 0.5), B, m + n, n, 20);
      const r = mmTokSync({ text: text.t, vision: vision.t }, { keep: 20 });
      expect(r.order.toArray()).toEqual(want.order);
      expect(r.indices.toArray()).toEqual(want.sorted);
      const other = makeTensor(randn(40 * D, seed + 200), [40, D]).t;
      mmTokSync({ text: text.t.view([m, D], [D, 1]), vision: other }, { keep: 5 });
      expect((await mmTok({ text: text.t, vision: vision.t }, { keep: 20 })).order.toArray()).toEqual(want.order);
    }
  });

  test('bad input', () => {
    const text = makeTensor(randn(12, 1), [1, 3, 4]).t;
    const vision = makeTensor(randn(80, 2), [1, 20, 4]).t;
    expectCode(() => mmTokSync({ text, vision }, { keep: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => mmTokSync({ text, vision }, { keep: 4, tauTV: -1 }), RangeError, 'ERR_RANGE');
    expectCode(() => mmTokSync({ text, vision }, { keep: 4, tauVV: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => mmTokSync({ text, vision }, { k: 4 } as object), TypeError, 'ERR_ARG');
    // Also when n <= keep (no kernel runs).
    expectCode(() => mmTokSync({ text, vision }, { tauTV: 0 }), RangeError, 'ERR_RANGE');
  });
});

describe('centerClip', () => {
  test('hand-checked: CLS mean per segment, then the medoid tokens themselves', () => {
    // B 1, T 2 frames of [CLS, 3 patches], C 1, one segment of 2 frames, K 2.
    // Patches (frame-major): 0, 1, 10 | 11, 0.5, 12 → clusters {0, 1, 0.5}
    // and {10, 11, 12}; medoids 0.5 (position 4) and 11 (position 3).
    const x = { data: Float32Array.of(2, 0, 1, 10, 4, 11, 0.5, 12), shape: [1, 2, 4, 1] };
    const r = centerClipSync(x, { frameDuration: 2, clusters: 2 });
    expect(r.medoids.toArray()).toEqual([3, 4]);
    expect(r.tokens.shape).toEqual([1, 1, 3, 1]);
    expect(r.tokens.toArray()).toEqual([3, 11, 0.5]);
    expect(r.assignments.toArray()).toEqual([1, 1, 0, 0, 1, 0]);
  });

  test('batched, f16, segments of 2 frames: matches k-medoids per segment', async () => {
    const B = 2, T = 4, P = 7, C = 5, K = 3;
    const L = P + 1;
    const t = makeTensor(randn(B * T * L * C, 44), [B, T, L, C], 'f16');
    const r = await centerClip(t.t, { frameDuration: 2, clusters: K });
    const patches: number[] = [];
    for (let b = 0; b < B; b++) for (let f = 0; f < T; f++) for (let p = 0; p < P; p++) for (let c = 0; c < C; c++) patches.push(t.exact[((b * T + f) * L + 1 + p) * C + c]);
    const want = refKMedoids(patches, B, T * P, C, K, { segments: 2 });
    expect(r.medoids.toArray()).toEqual(want.medoids);
    expect(r.tokens.shape).toEqual([B, 2, 1 + K, C]);
    expect(r.tokens.dtype).toBe('f16');
    const tok = r.tokens.toArray();
    for (let b = 0; b < B; b++)
      for (let s = 0; s < 2; s++) {
        for (let c = 0; c < C; c++) {
          const mean = (t.exact[((b * T + 2 * s) * L) * C + c] + t.exact[((b * T + 2 * s + 1) * L) * C + c]) / 2;
          expect(Math.abs(tok[((b * 2 + s) * (1 + K)) * C + c] - mean)).toBeLessThanOrEqual(Math.abs(mean) * 1e-3 + 1e-6);
        }
        for (let i = 0; i < K; i++) {
          const m = want.medoids[b * 2 * K + s * K + i];
          for (let c = 0; c < C; c++) expect(tok[((b * 2 + s) * (1 + K) + 1 + i) * C + c]).toBe(patches[(b * T * P + m) * C + c]);
        }
      }
  });

  test('bad input', () => {
    const x = makeTensor(randn(1 * 4 * 3 * 2, 3), [1, 4, 3, 2]).t;
    expectCode(() => centerClipSync(x, { frameDuration: 3, clusters: 2 }), RangeError, 'ERR_RANGE');
    expectCode(() => centerClipSync(x, { clusters: 5 }), RangeError, 'ERR_RANGE');
    expectCode(() => centerClipSync(x, { clusters: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => centerClipSync(makeTensor(randn(8, 3), [4, 2]).t), RangeError, 'ERR_SHAPE');
  });
});
