/**
 * CUDA token merging: parity with the CPU back end (which test/merge.test.ts
 * checks against the float64 references). Plans must match exactly: both
 * back ends compute each score as the same sequential fmaf chain and break
 * ties toward the lower index. Skipped, with the reason printed, without a
 * usable CUDA device.
 */
import { bipartiteSoftMatch, bipartiteSoftMatchSync, contextualMergeSync, FloatDType, mergeSourceSync, mergeSync, Tensor, toMe, unmergeSync } from '../lib';
import { describeCuda, expectClose, expectCode, makeTensor, randn } from './helpers';

const dev = 'cuda:0';

describeCuda('CUDA token merging', () => {
  const shapes: Array<[number, number, number, FloatDType]> = [[1, 2, 1, 'f32'], [2, 17, 8, 'f16'], [3, 197, 64, 'bf16'], [2, 577, 1024, 'f32'], [1, 2880, 64, 'bf16']];
  for (const [B, N, C, dt] of shapes) {
    test(`plan and merge parity B=${B} N=${N} C=${C} ${dt}`, async () => {
      const m = makeTensor(randn(B * N * C, N + C), [B, N, C], dt).t;
      const x = makeTensor(randn(B * N * 7, N), [B, N, 7], dt).t;
      const md = m.to(dev);
      const xd = x.to(dev);
      for (const [r, protect] of [[Math.floor(N / 4) || 1, { cls: true }], [N, { cls: true, distill: N > 2 }], [Math.floor(N / 3) || 1, {}]] as const) {
        const pc = bipartiteSoftMatchSync(m, r, { protect });
        const pd = await bipartiteSoftMatch(md, r, { protect });
        expect(pd.device).toBe(dev);
        expect(pd.assign.toArray()).toEqual(pc.assign.toArray());
        expect(pd.sources?.toArray()).toEqual(pc.sources?.toArray());
        expect(pd.destinations?.toArray()).toEqual(pc.destinations?.toArray());
        for (const mode of ['mean', 'sum', 'amax', 'wavg'] as const) {
          const a = mergeSync(pc, x, { mode });
          const b = mergeSync(pd, xd, { mode });
          expectClose(b.x.toArray(), a.x.toArray(), 1e-5, dt === 'f32' ? 1e-5 : 1e-2, `merge ${mode}`);
          if (mode === 'wavg') expect(b.sizes!.toArray()).toEqual(a.sizes!.toArray());
        }
        const merged = mergeSync(pd, xd, { mode: 'mean' }).x;
        expect(unmergeSync(pd, merged).toArray()).toEqual(unmergeSync(pc, merged.toHost()).toArray());
        expect(mergeSourceSync(pd).toArray()).toEqual(mergeSourceSync(pc).toArray());
        pd.dispose();
      }
      md.dispose();
      xd.dispose();
    });
  }

  test('random 2-D split parity', () => {
    const m = makeTensor(randn(2 * 48 * 16, 3), [2, 48, 16]).t;
    const split = { random2d: { w: 8, h: 6, sx: 2, sy: 2, seed: 9 } };
    const pc = bipartiteSoftMatchSync(m, 20, { split });
    const pd = bipartiteSoftMatchSync(m.to(dev), 20, { split });
    expect(pd.assign.toArray()).toEqual(pc.assign.toArray());
  });

  test('contextual merge parity', () => {
    const x = makeTensor(randn(2 * 577 * 256, 1), [2, 577, 256], 'bf16').t;
    const metric = makeTensor(randn(2 * 577 * 64, 2), [2, 577, 64], 'bf16').t;
    const kept = Int32Array.from({ length: 2 * 162 }, (_, i) => Math.floor(((i % 162) * 577) / 162));
    const keep = { keptIndices: Tensor.from({ data: kept, shape: [2, 162] }) };
    const a = contextualMergeSync(x, metric, keep, 30);
    const b = contextualMergeSync(x.to(dev), metric.to(dev), { keptIndices: keep.keptIndices.to(dev) }, 30);
    expectClose(b.toArray(), a.toArray(), 1e-5, 1e-2, 'contextual');
  });

  test('toMe on the device follows the CPU', () => {
    const [B, N, C] = [2, 197, 32];
    const tc = toMe({ layers: 2, r: 16, traceSource: true });
    const td = toMe({ layers: 2, r: 16, traceSource: true });
    let xc = makeTensor(randn(B * N * C, 5), [B, N, C]).t;
    let xd = xc.to(dev);
    for (let l = 0; l < 2; l++) {
      xc = tc.stepSync(xc, xc);
      xd = td.stepSync(xd, xd);
    }
    expectClose(xd.toArray(), xc.toArray(), 1e-5, 1e-4, 'toMe x');
    expect(td.source!.toArray()).toEqual(tc.source!.toArray());
  });

  test('bad input on the device', () => {
    const bad = Float32Array.from(randn(1 * 8 * 4, 1));
    bad[5] = NaN;
    const md = Tensor.from({ data: bad, shape: [1, 8, 4] }).to(dev);
    expectCode(() => bipartiteSoftMatchSync(md, 2), RangeError, 'ERR_RANGE');
    const plan = bipartiteSoftMatchSync(Tensor.from({ data: Float32Array.from(randn(32, 2)), shape: [1, 8, 4] }).to(dev), 2);
    expectCode(() => mergeSync(plan, Tensor.from({ data: new Float32Array(8 * 3), shape: [1, 8, 3] })), Error, 'ERR_DEVICE');
  });
});
