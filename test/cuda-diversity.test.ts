/**
 * CUDA k-center, k-medoids and MMTok coverage, and the methods built on them
 * (DivPrune, ToDRE, CenterCLIP, MMTok) on device tensors: parity with the CPU
 * back end, which test/diversity.test.ts checks
 * against float64 references. Both back ends compute every distance as the
 * same sequential FMA chain, so k-center and k-medoids must agree exactly
 * (with the AVX2 CPU kernels; the baseline ones round differently), ties
 * included. Skipped, with the reason printed, without a usable CUDA device.
 */
import {
  centerClipSync,
  divPrune,
  divPruneSync,
  FloatDType,
  info,
  kCenter,
  kCenterSync,
  kMedoidsSync,
  mmTokSync,
  mmtokCoverageSync,
  Tensor,
  toDRESync,
  TokenSieveError,
} from '../lib';
import { countDeviceBuffers, describeCuda, expectClose, expectCode, makeTensor, randn } from './helpers';

const dev = 'cuda:0';
const exactCpu = () => info().cpu.isa !== 'baseline';

/** Features with exact ties: every 5th row repeats one of the first 8, every 11th is zero. */
function features(B: number, N: number, C: number, dt: FloatDType, seed: number): Tensor {
  const v = randn(B * N * C, seed);
  for (let b = 0; b < B; b++)
    for (let i = 8; i < N; i++) {
      if (i % 5 === 0) for (let c = 0; c < C; c++) v[(b * N + i) * C + c] = v[(b * N + (i % 8)) * C + c];
      if (i % 11 === 5) for (let c = 0; c < C; c++) v[(b * N + i) * C + c] = 0;
    }
  return makeTensor(v, [B, N, C], dt).t;
}

describeCuda('CUDA diversity kernels', () => {
  const shapes: Array<[number, number, number, number, number, FloatDType]> = [
    // B, N, C, k, segments, dtype
    [1, 1, 1, 1, 1, 'f32'],
    [2, 17, 8, 5, 1, 'f16'],
    [3, 130, 33, 12, 1, 'bf16'],
    [1, 576, 1024, 58, 1, 'f32'],
    [2, 576, 4096, 56, 1, 'bf16'],
    [1, 2880, 1024, 288, 1, 'f32'],
    [1, 64 * 196, 64, 20, 64, 'f32'], // video: a segment per frame
    [1, 4100, 24, 30, 1, 'f32'],      // above the on-chip limit: one launch per step
  ];
  for (const [B, N, C, k, segments, dt] of shapes) {
    test(`kCenter parity B=${B} N=${N} C=${C} k=${k} segments=${segments} ${dt}`, async () => {
      const x = features(B, N, C, dt, N + C);
      const xd = x.to(dev);
      try {
        for (const metric of ['cosine', 'l2'] as const)
          for (const seed of ['isolated', 'maxnorm', 3 % (N / segments)] as const) {
            const a = kCenterSync(x, k, { metric, seed, segments });
            const b = await kCenter(xd, k, { metric, seed, segments });
            expect(b.indices.device).toBe(dev);
            if (exactCpu()) {
              expect(b.order.toArray()).toEqual(a.order.toArray());
              expect(b.indices.toArray()).toEqual(a.indices.toArray());
              expect(b.distances.toArray()).toEqual(a.distances.toArray());
            } else {
              expectClose(b.distances.toArray(), a.distances.toArray(), 1e-5, 1e-4, 'max-min distances');
            }
            for (const r of [b.indices, b.order, b.distances]) r.dispose();
          }
      } finally {
        xd.dispose();
      }
    });
  }

  test('kCenter with exclude masks on the device', () => {
    const [B, N, C] = [2, 96, 16];
    const x = features(B, N, C, 'f32', 4);
    const ex = Uint8Array.from({ length: B * N }, (_, i) => ((i * 7 + 3) % 4 === 0 ? 1 : 0));
    const exclude = Tensor.from({ data: ex, shape: [B, N] });
    const a = kCenterSync(x, 7, { exclude, segments: 3 });
    const b = kCenterSync(x.to(dev), 7, { exclude: exclude.to(dev), segments: 3 });
    expect(b.order.toArray()).toEqual(a.order.toArray());
    const picked = b.indices.toArray();
    for (let i = 0; i < picked.length; i++) expect(ex[Math.floor(i / 21) * N + picked[i]]).toBe(0);
  });

  test('kMedoids parity (CenterCLIP shapes)', () => {
    for (const [N, C, k, segments, dt] of [[98, 768, 49, 1, 'f32'], [588, 768, 49, 6, 'bf16'], [130, 12, 20, 1, 'f16'], [4096, 16, 64, 1, 'f32']] as const) {
      const x = features(2, N, C, dt, N);
      const xd = x.to(dev);
      for (const metric of ['l2', 'cosine'] as const) {
        const a = kMedoidsSync(x, k, { segments, metric });
        const b = kMedoidsSync(xd, k, { segments, metric });
        expect(b.medoids.toArray()).toEqual(a.medoids.toArray());
        expect(b.assignments.toArray()).toEqual(a.assignments.toArray());
        expect(b.iterations.toArray()).toEqual(a.iterations.toArray());
      }
      xd.dispose();
    }
  });

  test('mmtokCoverage parity', () => {
    for (const [m, n, D, Da, dt] of [[16, 576, 4096, 1024, 'f32'], [3, 17, 8, 0, 'bf16'], [1, 1, 1, 0, 'f16']] as const) {
      const text = makeTensor(randn(2 * m * D, 1), [2, m, D], dt).t;
      const vision = makeTensor(randn(2 * n * D, 2), [2, n, D], dt).t;
      const aux = Da > 0 ? makeTensor(randn(2 * n * Da, 3), [2, n, Da], dt).t : undefined;
      const a = mmtokCoverageSync({ text, vision, visionAux: aux });
      const b = mmtokCoverageSync({ text: text.to(dev), vision: vision.to(dev), visionAux: aux?.to(dev) });
      expect(b.device).toBe(dev);
      expectClose(b.toArray(), a.toArray(), 1e-9, 2e-5, 'coverage');
    }
  });

  test('methods on device tensors: DivPrune, ToDRE, CenterCLIP, MMTok', async () => {
    const x = features(2, 576, 256, 'f32', 9);
    const xd = x.to(dev);
    const a = divPruneSync(x);
    const b = await divPrune(xd);
    expect(b.indices.device).toBe(dev);
    expect(b.indices.toArray()).toEqual(a.indices.toArray());
    expect(toDRESync(xd, { segments: 4 }).indices.toArray()).toEqual(toDRESync(x, { segments: 4 }).indices.toArray());
    const clip = makeTensor(randn(1 * 12 * 50 * 64, 5), [1, 12, 50, 64]).t;
    const cc = centerClipSync(clip);
    const cd = centerClipSync(clip.to(dev));
    expect(cd.tokens.device).toBe(dev);
    expect(cd.medoids.toArray()).toEqual(cc.medoids.toArray());
    expectClose(cd.tokens.toArray(), cc.tokens.toArray(), 0, 1e-6, 'centerClip tokens');
    const text = makeTensor(randn(2 * 16 * 256, 6), [2, 16, 256]).t;
    const mc = mmTokSync({ text, vision: x }, { keep: 64 });
    const md = mmTokSync({ text: text.to(dev), vision: xd }, { keep: 64 });
    expect(md.indices.device).toBe(dev);
    // The coverage values differ by ulps (expf vs the CPU's exp): the picks
    // agree unless two gains are that close, which these inputs avoid.
    expect(md.indices.toArray()).toEqual(mc.indices.toArray());
    xd.dispose();
  });

  test('bad input on the device', () => {
    const v = Float32Array.from(randn(2 * 12 * 5, 1));
    v[(12 + 4) * 5 + 2] = NaN;
    const xd = Tensor.from({ data: v, shape: [2, 12, 5] }).to(dev);
    expectCode(() => kCenterSync(xd, 3), RangeError, 'ERR_RANGE', /x\[1, 4\]/);
    expectCode(() => kMedoidsSync(xd, 3), RangeError, 'ERR_RANGE', /x\[1, 4\]/);
    expectCode(() => kCenterSync(xd, 13), RangeError, 'ERR_RANGE');
    const ex = Tensor.from({ data: new Uint8Array(24).fill(1), shape: [2, 12] }).to(dev);
    const ok = Tensor.from({ data: Float32Array.from(randn(2 * 12 * 5, 2)), shape: [2, 12, 5] }).to(dev);
    expectCode(() => kCenterSync(ok, 2, { exclude: ex }), RangeError, 'ERR_RANGE', /not excluded/);
    expectCode(() => kCenterSync(ok, 2, { exclude: Tensor.from({ data: new Uint8Array(24), shape: [2, 12] }) }), TokenSieveError, 'ERR_DEVICE');
    for (const t of [xd, ex, ok]) t.dispose();
  });

  test('no device buffers outlive their calls, failed calls included', async () => {
    const x = features(1, 96, 16, 'f32', 3).to(dev);
    const v = Float32Array.from(randn(96 * 16, 4));
    v[5] = NaN;
    const bad = Tensor.from({ data: v, shape: [1, 96, 16] }).to(dev);
    const counter = countDeviceBuffers();
    try {
      for (let i = 0; i < 50; i++) {
        const r = i % 2 ? kCenterSync(x, 9, { segments: 2 }) : await kCenter(x, 9, { segments: 2 });
        for (const t of [r.indices, r.order, r.distances]) t.dispose();
        const m = kMedoidsSync(x, 7);
        for (const t of [m.medoids, m.assignments, m.iterations]) t.dispose();
        mmtokCoverageSync({ text: x, vision: x }).dispose();
        // A failing call disposes the outputs it allocated.
        expectCode(() => kCenterSync(bad, 3), RangeError, 'ERR_RANGE');
        expectCode(() => kMedoidsSync(bad, 3), RangeError, 'ERR_RANGE');
        await expect(kCenter(bad, 3)).rejects.toMatchObject({ code: 'ERR_RANGE' });
        expect(counter.live()).toBe(0);
      }
    } finally {
      counter.restore();
      x.dispose();
      bad.dispose();
    }
  });
});
