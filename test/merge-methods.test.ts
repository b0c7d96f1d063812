/** ToMe, tomesd, VisionZip and VisionDrop against float64 re-statements of the reference code. */
import { bipartiteSoftMatchSync, mergeSync, parseR, Tensor, toMe, tomesdSync, tomesd, unmergeSync, visionDrop, visionDropStages, visionDropSync, visionZip, visionZipSync } from '../lib';
import { expectClose, expectCode, makeTensor, randn } from './helpers';
import { refProbs } from './reference/attention';
import { paritySplit, refAssign, refContextual, refMatch, refMerge, refParseR, refSplit2d } from './reference/merge';
import { refTopkRow } from './reference/select';

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;

describe('parseR (ToMe parse_r)', () => {
  test('hand-checked schedules', () => {
    expect(parseR(12, { r: 8, inflection: -1 })).toEqual([16, 14, 13, 11, 10, 8, 7, 5, 4, 2, 1, 0]);
    expect(parseR(4, 13)).toEqual([13, 13, 13, 13]);
    expect(parseR(5, [3, 2])).toEqual([3, 2, 0, 0, 0]);
    expect(parseR(1, 7)).toEqual([7]);
  });
  test('matches the float64 restatement for ramps', () => {
    for (const L of [2, 12, 24, 40]) {
      for (const [r, inf] of [[13, 0.5], [7, -1], [16, 0], [23, 0.25], [5, 1.5]]) {
        // ToMe's negative ramp values act as 0 (do_nothing); the schedule holds the 0.
        expect(parseR(L, { r, inflection: inf })).toEqual(refParseR(L, { r, inflection: inf }).map((v) => Math.max(0, v)));
      }
    }
  });
  test('bad schedules', () => {
    expectCode(() => parseR(0, 3), TypeError, 'ERR_ARG');
    expectCode(() => parseR(3, 1.5), TypeError, 'ERR_ARG');
    expectCode(() => parseR(2, [1, 2, 3]), RangeError, 'ERR_RANGE');
    // Found by fuzzing: a hang then a V8 heap abort, a RangeError without a code, silent negatives.
    expectCode(() => parseR(2 ** 31, 1), RangeError, 'ERR_RANGE');
    expectCode(() => parseR(2 ** 53, 1), RangeError, 'ERR_RANGE');
    expectCode(() => parseR(3, -5), RangeError, 'ERR_RANGE');
    expectCode(() => parseR(3, [2, -1]), RangeError, 'ERR_RANGE');
    expectCode(() => parseR(3, { r: -2, inflection: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => parseR(3, { r: 2, inflection: NaN }), TypeError, 'ERR_ARG');
    expectCode(() => parseR(3, 2 ** 60), RangeError, 'ERR_RANGE');
    expect(parseR(3, { r: 4, inflection: 2 })).toEqual([0, 4, 12]); // ToMe: [-4, 4, 12]
    expectCode(() => toMe({ layers: 2, r: -1 }), RangeError, 'ERR_RANGE');
    expectCode(() => toMe({ layers: 3, r: 2, cls: 'yes' } as never), TypeError, 'ERR_ARG');
  });
});

describe('toMe across layers', () => {
  for (const [B, N, C, cls, distill] of [[2, 50, 8, true, false], [1, 31, 5, true, true], [3, 20, 4, false, false]] as const) {
    test(`B=${B} N=${N} cls=${cls} distill=${distill}: sizes, source and x as merge_wavg chained over layers`, async () => {
      const schedule = [5, 0, 7, 100];
      const tome = toMe({ layers: 4, r: schedule, cls, distill, traceSource: true });
      expect(tome.keyBias()).toBeUndefined();
      let x = makeTensor(randn(B * N * C, N), [B, N, C]);
      let xRef = Array.from(x.exact);
      let sizesRef: number[] | undefined;
      let sourceRef: number[] = [];
      for (let b = 0; b < B; b++) for (let p = 0; p < N; p++) sourceRef.push(p);
      let n = N;
      let cur: Tensor = x.t;
      for (let l = 0; l < 4; l++) {
        const metric = makeTensor(randn(B * n * 3, 10 + l), [B, n, 3]);
        cur = l % 2 === 0 ? tome.stepSync(cur, metric.t) : await tome.step(cur, metric.t);
        const cap = Math.floor((n - (cls ? 1 : 0) - (distill ? 1 : 0)) / 2);
        const r = Math.min(schedule[l], cap);
        if (schedule[l] <= 0) {
          expect(cur.shape[1]).toBe(n);
          continue;
        }
        const { a, b } = paritySplit(n);
        const ref = refMatch(metric.exact, B, n, 3, a, b, r, cls, distill);
        const m = refMerge(ref, xRef, B, n, C, 'wavg', sizesRef);
        const assign = refAssign(ref, B, n);
        sourceRef = sourceRef.map((t, i) => assign[Math.floor(i / N) * n + t]);
        xRef = m.x;
        sizesRef = m.sizes;
        n -= r;
        expect(cur.shape).toEqual([B, n, C]);
        expectClose(cur.toArray(), xRef, 1e-5, 1e-4, `layer ${l} x`);
        expect(tome.sizes!.toArray()).toEqual(sizesRef);
        expect(tome.source!.toArray()).toEqual(sourceRef);
        expectClose(tome.keyBias()!.toArray(), sizesRef.map(Math.log), 1e-6, 1e-6, 'keyBias');
      }
      expectCode(() => tome.stepSync(cur, makeTensor(randn(B * n * 3, 1), [B, n, 3]).t), RangeError, 'ERR_RANGE', /reset/);
      tome.reset();
      expect(tome.sizes).toBeUndefined();
      expect(tome.layer).toBe(0);
    });
  }
});

describe('tomesd', () => {
  test('even batch: random 2-D split from the seed, r = int(N·ratio), plain mean, unmerge restores length', async () => {
    const [B, w, h, C] = [2, 8, 6, 5];
    const N = w * h;
    const x = makeTensor(randn(B * N * C, 3), [B, N, C]);
    const { plan, merged } = tomesdSync(x.t, { w, h, ratio: 0.4, seed: 99 });
    const r = Math.trunc(N * 0.4);
    expect(plan.r).toBe(r);
    const split = refSplit2d(w, h, 2, 2, 99);
    const ref = refMatch(x.exact, B, N, C, split.a, split.b, r, false, false);
    expect(plan.sources!.toArray()).toEqual(ref.src.flat());
    expectClose(merged.toArray(), refMerge(ref, x.exact, B, N, C, 'mean').x, 1e-6, 1e-5, 'tomesd merge');
    expect(unmergeSync(plan, merged).shape).toEqual([B, N, C]);
    plan.dispose();
    const again = await tomesd(x.t, { w, h, ratio: 0.4, seed: 99 });
    expect(again.merged.toArray()).toEqual(merged.toArray());
  });
  test('odd batch: top-left destinations (tomesd forces use_rand off); the ratio caps at the sources', () => {
    const [B, w, h, C] = [1, 6, 4, 3];
    const N = w * h;
    const x = makeTensor(randn(B * N * C, 4), [B, N, C]);
    const { plan } = tomesdSync(x.t, { w, h, ratio: 0.9, seed: 5 });
    expect(plan.r).toBe(18); // int(24 · 0.9) = 21 > 18 sources
    for (const d of plan.destinations!.toArray()) expect([0, 2, 4, 12, 14, 16]).toContain(d);
    expectCode(() => tomesdSync(x.t, { w: 5, h, ratio: 0.5 }), RangeError, 'ERR_SHAPE');
    expectCode(() => tomesdSync(x.t, { w, h, ratio: 1 }), RangeError, 'ERR_RANGE');
  });
});

describe("precision 'bf16' through toMe and tomesd", () => {
  // t_dst = (1, 0.003) and (1, 0.001) against t_src = (1, 0): in f32 the second
  // is closer; rounded to bf16 both score exactly 1 and the lower index wins.
  test('toMe passes precision to the matching (default f32)', async () => {
    const metric = { data: Float32Array.of(1, 0, 1, 0.003, -1, 0.5, 1, 0.001), shape: [1, 4, 2] };
    const x = { data: Float32Array.of(10, 20, 30, 40), shape: [1, 4, 1] };
    const run = (precision?: 'f32' | 'bf16'): number[] => toMe({ layers: 1, r: 1, cls: false, precision }).stepSync(x, metric).toArray();
    // [t2, t1, t3 + t0] (f32) or [t2, t1 + t0, t3] (bf16)
    expect(run()).toEqual([30, 20, 25]);
    expect(run('f32')).toEqual([30, 20, 25]);
    expect(run('bf16')).toEqual([30, 15, 40]);
    const tome = toMe({ layers: 1, r: 1, cls: false, precision: 'bf16' });
    expect(tome.precision).toBe('bf16');
    expect((await tome.step(x, metric)).toArray()).toEqual([30, 15, 40]);
    // the same as the kernels called directly
    const m = makeTensor(randn(2 * 50 * 8, 12), [2, 50, 8], 'bf16').t;
    const h = makeTensor(randn(2 * 50 * 3, 13), [2, 50, 3]).t;
    const viaTome = toMe({ layers: 1, r: 9, precision: 'bf16' }).stepSync(h, m).toArray();
    const plan = bipartiteSoftMatchSync(m, 9, { protect: { cls: true, distill: false }, precision: 'bf16' });
    expect(viaTome).toEqual(mergeSync(plan, h, { mode: 'wavg' }).x.toArray());
  });

  test('tomesd passes precision to the matching (default f32)', async () => {
    // 4×1 grid, 2×1 windows, odd batch → destinations t0, t2; sources t1, t3.
    const x = { data: Float32Array.of(1, 0.003, 1, 0, 1, 0.001, -1, 0.5), shape: [1, 4, 2] };
    const opts = { w: 4, h: 1, sx: 2, sy: 1, ratio: 0.25 };
    expect(tomesdSync(x, opts).plan.destinations!.toArray()).toEqual([2]);
    expect(tomesdSync(x, { ...opts, precision: 'f32' }).plan.destinations!.toArray()).toEqual([2]);
    expect(tomesdSync(x, { ...opts, precision: 'bf16' }).plan.destinations!.toArray()).toEqual([0]);
    expect((await tomesd(x, { ...opts, precision: 'bf16' })).plan.destinations!.toArray()).toEqual([0]);
  });

  test('bad precision values', () => {
    expectCode(() => toMe({ layers: 2, r: 1, precision: 'fp8' } as never), TypeError, 'ERR_ARG', /precision/);
    expectCode(() => toMe({ layers: 2, r: 1, precision: 16 } as never), TypeError, 'ERR_ARG', /precision/);
    const x = { data: new Float32Array(4 * 2), shape: [1, 4, 2] };
    expectCode(() => tomesdSync(x, { w: 2, h: 2, precision: 'half' } as never), TypeError, 'ERR_ARG', /precision/);
  });
});

function clsRowScores(p: Float64Array, B: number, H: number, N: number): number[][] {
  // attn[:, :, 0, 1:].sum(heads)
  return Array.from({ length: B }, (_, b) => Array.from({ length: N - 1 }, (_, j) => {
    let s = 0;
    for (let h = 0; h < H; h++) s += p[((b * H + h) * N + 0) * N + j + 1];
    return s;
  }));
}

describe('visionZip', () => {
  test('dominant = CLS + top (d − 1) patches in original order; contextual from the rest; [dominant, contextual]', async () => {
    const [B, H, N, D, C, Cm, d, c] = [2, 3, 17, 4, 6, 5, 5, 3];
    const q = makeTensor(randn(B * H * N * D, 1), [B, H, N, D]);
    const k = makeTensor(randn(B * H * N * D, 2), [B, H, N, D]);
    const hidden = makeTensor(randn(B * N * C, 3), [B, N, C]);
    const metric = makeTensor(randn(B * N * Cm, 4), [B, N, Cm]);
    const p = refProbs({ q: q.exact, k: k.exact, B, H, Nq: N, Nk: N, D, scale: 1 / Math.sqrt(D) });
    const scores = clsRowScores(p, B, H, N);
    const dom = scores.map((s) => [0, ...refTopkRow(s, d - 1, 'index').map((i) => i + 1)]);
    const rem = dom.map((dd) => Array.from({ length: N }, (_, i) => i).filter((i) => !dd.includes(i)));
    const ctx = refContextual(hidden.exact, metric.exact, B, N, C, Cm, rem, c);
    const want: number[] = [];
    for (let b = 0; b < B; b++) {
      for (const t of dom[b]) for (let e = 0; e < C; e++) want.push(hidden.exact[(b * N + t) * C + e]);
      want.push(...ctx.slice(b * c * C, (b + 1) * c * C));
    }
    for (const res of [visionZipSync({ q: q.t, k: k.t }, hidden.t, metric.t, { dominant: d, contextual: c }), await visionZip({ q: q.t, k: k.t }, hidden.t, metric.t, { dominant: d, contextual: c })]) {
      expect(res.indices.toArray()).toEqual(dom.flat());
      expect(res.tokens.shape).toEqual([B, d + c, C]);
      expectClose(res.tokens.toArray(), want, 1e-5, 1e-4, 'visionZip tokens');
    }
    // probabilities as the source give the same selection
    const viaProbs = visionZipSync({ probs: { data: Float32Array.from(p), shape: [B, H, N, N] } }, hidden.t, metric.t, { dominant: d, contextual: c });
    expect(viaProbs.indices.toArray()).toEqual(dom.flat());
  });
  test('presets for 577 tokens: 162+30, 108+20, 54+10', () => {
    const [B, H, N, D, C] = [1, 2, 577, 8, 16];
    const q = makeTensor(randn(B * H * N * D, 5), [B, H, N, D]).t;
    const k = makeTensor(randn(B * H * N * D, 6), [B, H, N, D]).t;
    const hidden = makeTensor(randn(B * N * C, 7), [B, N, C]).t;
    const metric = makeTensor(randn(B * N * D, 8), [B, N, D]).t;
    for (const [preset, d] of [[192, 162], [128, 108], [64, 54]] as const) {
      const r = visionZipSync({ q, k }, hidden, metric, { preset });
      expect(r.tokens.shape).toEqual([B, preset, C]);
      expect(r.indices.shape).toEqual([B, d]);
      expect(r.indices.toArray()[0]).toBe(0);
    }
    expectCode(() => visionZipSync({ q, k }, hidden, metric, { preset: 100 as never }), TypeError, 'ERR_ARG');
    expectCode(() => visionZipSync({ q, k }, hidden, metric, { dominant: 500, contextual: 100 }), RangeError, 'ERR_RANGE');
  });
});

describe('visionDrop', () => {
  test('image-query rows under the causal mask, head mean, image-key columns; [dominant, contextual]', async () => {
    const [B, H, L, D, start, n, C, d, c] = [2, 2, 20, 4, 5, 12, 6, 4, 2];
    const q = makeTensor(randn(B * H * L * D, 11), [B, H, L, D]);
    const k = makeTensor(randn(B * H * L * D, 12), [B, H, L, D]);
    const hidden = makeTensor(randn(B * n * C, 13), [B, n, C]);
    const metric = makeTensor(randn(B * n * D, 14), [B, n, D]);
    const p = refProbs({ q: q.exact, k: k.exact, B, H, Nq: L, Nk: L, D, scale: 1 / Math.sqrt(D), causal: true });
    const scores = Array.from({ length: B }, (_, b) => Array.from({ length: n }, (_, j) => {
      let s = 0;
      for (let h = 0; h < H; h++) for (let i = start; i < start + n; i++) s += p[((b * H + h) * L + i) * L + start + j];
      return s / (H * n);
    }));
    // causal bias: the first image token is seen by every image query
    const dom = scores.map((s) => refTopkRow(s, d, 'index'));
    const rem = dom.map((dd) => Array.from({ length: n }, (_, i) => i).filter((i) => !dd.includes(i)));
    const ctx = refContextual(hidden.exact, metric.exact, B, n, C, D, rem, c);
    const opts = { imageStart: start, imageCount: n, dominant: d, contextual: c };
    for (const res of [visionDropSync(q.t, k.t, hidden.t, metric.t, opts), await visionDrop(q.t, k.t, hidden.t, metric.t, opts)]) {
      expectClose(res.scores.toArray(), scores.flat(), 1e-6, 1e-4, 'visionDrop scores');
      expect(res.indices.toArray()).toEqual(dom.flat());
      const got = res.tokens.toArray();
      for (let b = 0; b < B; b++) {
        const row = got.slice(b * (d + c) * C, (b + 1) * (d + c) * C);
        const want = [...dom[b].flatMap((t) => Array.from(hidden.exact.slice((b * n + t) * C, (b * n + t + 1) * C))), ...ctx.slice(b * c * C, (b + 1) * c * C)];
        expectClose(row, want, 1e-5, 1e-4, 'visionDrop tokens');
      }
    }
    expectCode(() => visionDropSync(q.t, k.t, hidden.t, metric.t, { ...opts, imageCount: 11 }), RangeError, 'ERR_SHAPE');
    expectCode(() => visionDropSync(q.t, k.t, hidden.t, metric.t, { ...opts, dominant: 11 }), RangeError, 'ERR_RANGE');
  });
  test('stage schedule as the reference inserts the encoder budget first', () => {
    expect(visionDropStages([8, 16, 24], [[30, 5], [22, 4], [16, 3]], [42, 6])).toEqual([
      { afterLayer: 7, from: 48, dominant: 30, contextual: 5 },
      { afterLayer: 15, from: 35, dominant: 22, contextual: 4 },
      { afterLayer: 23, from: 26, dominant: 16, contextual: 3 },
    ]);
    expectCode(() => visionDropStages([8], [[50, 5]], [42, 6]), RangeError, 'ERR_RANGE');
  });
});
