/**
 * CUDA STC-Pruner: stcScores on the device against the float64 reference of
 * the authors' sequence, under the cross-device tolerance rule (README, "CPU
 * and GPU: tolerance and ties"): the device's error is at most twice the CPU
 * back end's plus one f32 rounding. Both run f64 sums, in different orders.
 * The scoring channels must be equal, and StreamPruner / stc over device
 * chunks keep the same tokens as over the same chunks on the host (random
 * data: no two scores of a frame near-tied at the cut). Skipped, with the
 * reason printed, without a usable CUDA device.
 */
import { FloatDType, StcMemory, StreamPruner, stc, stcScores, stcScoresSync, stcScoringChannels, stcSync, Tensor, TokenSieveError } from '../lib';
import { refStcScores } from './reference/stc';
import { countDeviceBuffers, describeCuda, expectClose, expectCode, expectDerivedTolerance, expectReject, makeTensor, randn } from './helpers';

const dev = 'cuda:0';

describeCuda('CUDA STC-Pruner', () => {
  const cases: Array<[number, number, number, FloatDType]> = [
    [1, 1, 1, 'f32'],
    [2, 5, 3, 'f16'],
    [4, 13, 31, 'bf16'],
    [3, 196, 64, 'f32'],
    [2, 131, 257, 'f16'],
    [4, 196, 96, 'bf16'],
    [8, 196, 1152, 'bf16'],
  ];
  let compared = 0;
  for (const [F, T, C, dtype] of cases) {
    for (const memory of ['authors', 'aligned'] as StcMemory[]) {
      test(`stcScores device vs host vs float64: F${F} T${T} C${C} ${dtype} memory '${memory}'`, async () => {
        const t = makeTensor(randn(F * T * C, 3 * F + T + C), [F, T, C], dtype);
        const host = t.t;
        const x = host.to(dev);
        const Cm = memory === 'authors' ? stcScoringChannels(C) : C;
        const sum = Float32Array.from(randn(Cm, C + 1, 0.3));
        const memHost = { data: sum, shape: [Cm] };
        const memDev = Tensor.from(memHost).to(dev);
        try {
          for (const withMemory of [false, true]) {
            // The reference's memory list: one vector standing for the 3 earlier means.
            const past = withMemory ? [0, 1, 2].map(() => Array.from(sum, (v) => v / 3)) : [];
            const want = refStcScores(t.exact, F, T, C, past, { memory });
            const a = stcScoresSync(host, withMemory ? { memorySum: memHost, memoryCount: 3, memory } : { memory });
            const b = withMemory ? await stcScores(x, { memorySum: memDev, memoryCount: 3, memory }) : stcScoresSync(x, { memory });
            expect(b.scores.device).toBe(dev);
            expect(b.scores.shape).toEqual([F, T]);
            expect(b.channels.toArray()).toEqual(a.channels.toArray());
            expectDerivedTolerance(b.chunkMean.toArray(), a.chunkMean.toArray(), want.chunkMean, `chunkMean (memory ${withMemory})`);
            expectDerivedTolerance(b.scores.toArray(), a.scores.toArray(), want.scores, `scores (memory ${withMemory})`, { atol: 1e-6 });
            compared += F * T;
            for (const r of [b.scores, b.chunkMean, b.channels]) r.dispose();
          }
        } finally {
          x.dispose();
          memDev.dispose();
        }
      });
    }
  }
  test('the comparisons above ran', () => expect(compared).toBeGreaterThan(0));

  test('stcScores on a strided device view', () => {
    const [F, T, C, P] = [3, 20, 17, 5];
    const wide = makeTensor(randn(F * T * (C + P), 11), [F, T, C + P], 'bf16').t;
    const strides = [T * (C + P), C + P, 1];
    const wideDev = wide.to(dev);
    try {
      const a = stcScoresSync(wide.view([F, T, C], strides));
      const b = stcScoresSync(wideDev.view([F, T, C], strides));
      expect(b.channels.toArray()).toEqual(a.channels.toArray());
      expectClose(b.chunkMean.toArray(), a.chunkMean.toArray(), 1e-7, 1e-6, 'strided chunkMean');
      expectClose(b.scores.toArray(), a.scores.toArray(), 1e-6, 1e-6, 'strided scores');
    } finally {
      wideDev.dispose();
    }
  });

  test('bad input on the device', async () => {
    const data = Float32Array.from(randn(2 * 6 * 4, 2));
    data[(1 * 6 + 2) * 4 + 3] = NaN;
    data[(1 * 6 + 4) * 4 + 0] = Infinity;
    const host = Tensor.from({ data, shape: [2, 6, 4] });
    const x = host.to(dev);
    try {
      let want = '';
      try {
        stcScoresSync(host);
      } catch (e) {
        want = (e as Error).message;
      }
      expect(want).toMatch(/x\[1, 2\]/);
      expectCode(() => stcScoresSync(x), RangeError, 'ERR_RANGE', /x\[1, 2\] holds NaN or Inf/);
      await expectReject(stcScores(x), RangeError, 'ERR_RANGE', /x\[1, 2\]/);
      // wait: false reads nothing back: the NaN goes unreported (scores unspecified).
      const unchecked = stcScoresSync(x, { wait: false });
      for (const t of [unchecked.scores, unchecked.chunkMean, unchecked.channels]) t.dispose();
      // memorySum must be on the chunk's device.
      const clean = Tensor.from({ data: Float32Array.from(randn(2 * 6 * 4, 3)), shape: [2, 6, 4] }).to(dev);
      try {
        // A finite chunk: the unchecked call gives the checked call's outputs.
        const w = stcScoresSync(clean), n = stcScoresSync(clean, { wait: false });
        expect(n.scores.toArray()).toEqual(w.scores.toArray());
        expect(n.chunkMean.toArray()).toEqual(w.chunkMean.toArray());
        for (const r of [w, n]) for (const t of [r.scores, r.chunkMean, r.channels]) t.dispose();
        expectCode(() => stcScoresSync(clean, { memorySum: { data: new Float32Array(2), shape: [2] }, memoryCount: 1 }), TokenSieveError, 'ERR_DEVICE');
      } finally {
        clean.dispose();
      }
    } finally {
      x.dispose();
    }
  });

  test('StreamPruner over device chunks keeps the host chunks\' tokens', async () => {
    const [F, T, C, k] = [4, 196, 64, 60];
    const chunks = [0, 1, 2, 3].map((i) => makeTensor(randn(F * T * C, 40 + i), [F, T, C], i % 2 ? 'bf16' : 'f32').t);
    const onDev = chunks.map((c) => c.to(dev));
    try {
      const ph = new StreamPruner({ tokensPerFrame: k });
      const pd = new StreamPruner({ tokensPerFrame: k });
      for (let i = 0; i < chunks.length; i++) {
        const a = ph.pushSync(chunks[i]);
        const b = i % 2 ? pd.pushSync(onDev[i]) : await pd.push(onDev[i]);
        expect(b.indices.device).toBe(dev);
        expect(b.scores.device).toBe(dev);
        expect(b.indices.shape).toEqual([F, k]);
        expect(b.indices.toArray()).toEqual(a.indices.toArray());
        expectClose(b.scores.toArray(), a.scores.toArray(), 1e-6, 1e-6, `chunk ${i} scores`);
        b.indices.dispose();
        b.scores.dispose();
      }
      expect(pd.chunks).toBe(4);
      // The memory is on the host: a host chunk may follow device chunks without reset().
      const extra = makeTensor(randn(F * T * C, 99), [F, T, C]).t;
      expect(pd.pushSync(extra).indices.toArray()).toEqual(ph.pushSync(extra).indices.toArray());
      pd.reset();
      const fresh = new StreamPruner({ tokensPerFrame: k }).pushSync(chunks[2]);
      expect(pd.pushSync(onDev[2]).indices.toArray()).toEqual(fresh.indices.toArray());
      // The whole-video helpers.
      const want = stcSync(chunks, { tokensPerFrame: k }).map((r) => r.indices.toArray());
      const got = await stc(onDev, { tokensPerFrame: k });
      expect(got.map((r) => r.indices.device)).toEqual(onDev.map(() => dev));
      expect(got.map((r) => r.indices.toArray())).toEqual(want);
      expect(stcSync(onDev, { tokensPerFrame: k }).map((r) => r.indices.toArray())).toEqual(want);
      // tokensPerFrame = T keeps every token.
      expect(new StreamPruner({ tokensPerFrame: T }).pushSync(onDev[0]).indices.toArray()).toEqual(
        Array.from({ length: F * T }, (_, i) => i % T),
      );
    } finally {
      for (const t of onDev) t.dispose();
    }
  });

  test('no device buffers outlive a push (many pushes)', async () => {
    const [F, T, C, k] = [2, 49, 256, 10];
    const x = makeTensor(randn(F * T * C, 5), [F, T, C], 'f16').t.to(dev);
    const counter = countDeviceBuffers();
    try {
      // The counter itself works: one allocation, one dispose.
      const probe = Tensor.empty([4], 'f32', dev);
      expect(counter.live()).toBe(1);
      probe.dispose();
      expect(counter.live()).toBe(0);
      const p = new StreamPruner({ tokensPerFrame: k });
      for (let i = 0; i < 200; i++) {
        const r = i % 2 ? p.pushSync(x) : await p.push(x);
        // The caller owns exactly the two returned tensors; everything else
        // (memory upload, chunk mean) is already disposed.
        expect(counter.live()).toBe(2);
        r.indices.dispose();
        r.scores.dispose();
      }
      expect(counter.live()).toBe(0);
      expect(p.chunks).toBe(200);
    } finally {
      counter.restore();
      x.dispose();
    }
  });
});
