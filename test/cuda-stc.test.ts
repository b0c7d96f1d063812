/**
 * CUDA STC-Pruner: stcScores on the device against the CPU back end (which
 * test/stc.test.ts checks against the float64 reference), and StreamPruner /
 * stc over device chunks against the same chunks on the host.
 *
 * Both back ends run the same float64 sums in the same orders, so the chunk
 * mean is bit-equal; the scores go through exp, where CUDA's f64 exp may be
 * 1 ulp from glibc's, so they are compared within 2 float ulps. The kept
 * indices are then the same for random data (no two scores of a frame that
 * close at the cut). Skipped, with the reason printed, without a usable CUDA
 * device.
 */
import { FloatDType, StreamPruner, stc, stcScores, stcScoresSync, stcSync, Tensor, TokenSieveError } from '../lib';
import { countDeviceBuffers, describeCuda, expectCode, expectReject, makeTensor, randn } from './helpers';

const dev = 'cuda:0';

/** Distance in float ulps (order-preserving integer keys of the f32 bits). */
function ulps(a: number, b: number): number {
  const f = new Float32Array([a, b]);
  const u = new Uint32Array(f.buffer);
  const key = (x: number) => (x & 0x80000000 ? 0x80000000 - (x & 0x7fffffff) : 0x80000000 + x);
  return Math.abs(key(u[0]) - key(u[1]));
}

function expectUlps(actual: number[], expected: number[], max: number, what: string): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    if (!(Number.isFinite(actual[i]) && ulps(actual[i], expected[i]) <= max)) {
      throw new Error(`${what}[${i}]: cuda ${actual[i]}, cpu ${expected[i]} (${ulps(actual[i], expected[i])} ulps, at most ${max})`);
    }
  }
}

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
  for (const [F, T, C, dtype] of cases) {
    test(`stcScores device = host: F${F} T${T} C${C} ${dtype}`, async () => {
      const host = makeTensor(randn(F * T * C, 3 * F + T + C), [F, T, C], dtype).t;
      const x = host.to(dev);
      const sum = Float32Array.from(randn(C, C + 1, 0.3));
      const memHost = { data: sum, shape: [C] };
      const memDev = Tensor.from(memHost).to(dev);
      try {
        for (const withMemory of [false, true]) {
          const a = stcScoresSync(host, withMemory ? { memorySum: memHost, memoryCount: 3 } : {});
          const b = withMemory ? await stcScores(x, { memorySum: memDev, memoryCount: 3 }) : stcScoresSync(x);
          expect(b.scores.device).toBe(dev);
          expect(b.chunkMean.device).toBe(dev);
          expect(b.scores.shape).toEqual([F, T]);
          expect(b.chunkMean.toArray()).toEqual(a.chunkMean.toArray());
          expectUlps(b.scores.toArray(), a.scores.toArray(), 2, `scores (memory ${withMemory})`);
          b.scores.dispose();
          b.chunkMean.dispose();
        }
      } finally {
        x.dispose();
        memDev.dispose();
      }
    });
  }

  test('stcScores on a strided device view', () => {
    const [F, T, C, P] = [3, 20, 17, 5];
    const wide = makeTensor(randn(F * T * (C + P), 11), [F, T, C + P], 'bf16').t;
    const strides = [T * (C + P), C + P, 1];
    const wideDev = wide.to(dev);
    try {
      const a = stcScoresSync(wide.view([F, T, C], strides));
      const b = stcScoresSync(wideDev.view([F, T, C], strides));
      expect(b.chunkMean.toArray()).toEqual(a.chunkMean.toArray());
      expectUlps(b.scores.toArray(), a.scores.toArray(), 2, 'strided scores');
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
      // memorySum must be on the chunk's device.
      const clean = Tensor.from({ data: Float32Array.from(randn(2 * 6 * 4, 3)), shape: [2, 6, 4] }).to(dev);
      try {
        expectCode(() => stcScoresSync(clean, { memorySum: { data: new Float32Array(4), shape: [4] }, memoryCount: 1 }), TokenSieveError, 'ERR_DEVICE');
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
        expectUlps(b.scores.toArray(), a.scores.toArray(), 2, `chunk ${i} scores`);
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
