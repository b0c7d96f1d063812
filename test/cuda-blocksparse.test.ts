/**
 * blockSparseAttention, blockAttentionMass, blockPool and applyReorder on a
 * CUDA device against the CPU back end, under the derived tolerance rule
 * (README, "CPU and GPU: tolerance and ties"): |cuda − exact| ≤
 * 2·|cpu − exact| + atol, exact being float64 on the inputs as the tensor
 * cores round them. Skipped, with the reason printed, without a GPU (the
 * emulator program test/cuda-emu/blocksparse_test.cc runs the same kernels
 * on the CPU in CI).
 */
import { FloatDType, Tensor, applyReorderSync, blockAttentionMassSync, blockPoolSync, blockSparseAttentionSync } from '../lib';
import { TokenSieveError } from '../lib/errors';
import { describeCuda, expectClose, expectCode, expectDerivedTolerance, makeTensor, randn } from './helpers';
import { maskOf, outValues, permutation, problem, randomKeep, roundTo } from './blocksparse-fixtures';
import { refBlockSparseAttention } from './reference/blocksparse';

describeCuda('blockSparseAttention on CUDA', () => {
  // Parity with the CPU at the same precision under the derived tolerance rule
  // (README, "CPU and GPU: tolerance and ties"): |cuda − exact| ≤ 2·|cpu − exact| + atol.
  const cases: Array<[string, FloatDType, 'f16' | 'bf16' | 'native', number, number, number, number, number, 'bhnd' | 'bnhd', boolean, number]> = [
    ['f16 d64 GQA sparse', 'f16', 'native', 2, 4, 2, 300, 64, 'bhnd', false, 0.3],
    ['bf16 d128 dense bnhd', 'bf16', 'native', 1, 2, 2, 257, 128, 'bnhd', false, 1],
    ['f32 -> bf16 d80 reordered', 'f32', 'bf16', 1, 3, 1, 200, 80, 'bhnd', true, 0.5],
    ['f16 d96 one token', 'f16', 'native', 1, 1, 1, 1, 96, 'bhnd', false, 1],
  ];
  for (const [name, dtype, precision, B, Hq, Hkv, N, D, layout, reorder, density] of cases) {
    test(name, () => {
      const p = problem(B, Hq, Hkv, N, N, D, dtype, layout, N + D);
      const nQ = Math.ceil(N / 64);
      const keep = density >= 1 ? () => true : randomKeep(N, B, Hq, nQ, nQ, density, [1]);
      const mask = maskOf(B, Hq, N, N, 64, 64, keep);
      const perm = reorder ? permutation(Hq, N, 5) : undefined;
      const opts = { layout, precision, returnLse: true, ...(perm ? { reorder: { perm } } : {}) } as const;
      const cpu = blockSparseAttentionSync(p.q, p.k, p.v, mask, opts);
      const dq = p.q.to('cuda:0'), dk = p.k.to('cuda:0'), dv = p.v.to('cuda:0');
      const dm = {
        ...mask,
        kvNumBlocks: Tensor.from(mask.kvNumBlocks).to('cuda:0'),
        kvIndices: Tensor.from(mask.kvIndices).to('cuda:0'),
      };
      const dperm = perm ? Tensor.from({ data: perm, shape: [Hq, N] }).to('cuda:0') : undefined;
      const gpu = blockSparseAttentionSync(dq, dk, dv, dm, { ...opts, ...(dperm ? { reorder: { perm: dperm } } : {}) });
      const round = precision === 'native' ? (dtype === 'f32' ? (x: number) => x : roundTo(dtype)) : roundTo(precision);
      const exact = refBlockSparseAttention({ q: p.qx.map(round), k: p.kx.map(round), v: p.vx.map(round), B, Hq, Hkv, N, Nk: N, D, scale: 1 / Math.sqrt(D), keep, blockQ: 64, blockK: 64, perm });
      const atol = dtype === 'f16' || precision === 'f16' ? 2 ** -10 : 2 ** -7;
      expectDerivedTolerance(outValues(p, gpu.out.toHost()), outValues(p, cpu.out), exact.out, name, { atol });
      const gl = gpu.lse!.toArray(), cl = cpu.lse!.toArray();
      for (let i = 0; i < gl.length; i++) {
        if (cl[i] === -Infinity) expect(gl[i]).toBe(-Infinity);
        else expect(Math.abs(gl[i] - cl[i])).toBeLessThan(2e-3);
      }
      for (const t of [dq, dk, dv, dm.kvNumBlocks, dm.kvIndices, dperm, gpu.out, gpu.lse]) t?.dispose();
    });
  }

  test("int8 matches the CPU's int8 (same codes and scales) and the f32 reference (cosine >= 0.999)", () => {
    const p = problem(1, 4, 2, 333, 333, 64, 'f16', 'bhnd', 3);
    const keep = randomKeep(9, 1, 4, 6, 6, 0.4, [2]);
    const mask = maskOf(1, 4, 333, 333, 64, 64, keep);
    const cpu = blockSparseAttentionSync(p.q, p.k, p.v, mask, { precision: 'int8' }).out.toArray();
    const dq = p.q.to('cuda:0'), dk = p.k.to('cuda:0'), dv = p.v.to('cuda:0');
    const dm = { ...mask, kvNumBlocks: Tensor.from(mask.kvNumBlocks).to('cuda:0'), kvIndices: Tensor.from(mask.kvIndices).to('cuda:0') };
    const gpu = blockSparseAttentionSync(dq, dk, dv, dm, { precision: 'int8' }).out.toArray();
    const exact = refBlockSparseAttention({ q: p.qx, k: p.kx, v: p.vx, B: 1, Hq: 4, Hkv: 2, N: 333, Nk: 333, D: 64, scale: 1 / 8, keep, blockQ: 64, blockK: 64 }).out;
    expectDerivedTolerance(gpu, cpu, exact, 'int8', { atol: 2 ** -10 });
    let dot = 0, na = 0, nb = 0;
    for (let i = 0; i < exact.length; i++) {
      dot += gpu[i] * exact[i];
      na += gpu[i] * gpu[i];
      nb += exact[i] * exact[i];
    }
    expect(dot / Math.sqrt(na * nb)).toBeGreaterThanOrEqual(0.999);
    for (const t of [dq, dk, dv, dm.kvNumBlocks, dm.kvIndices]) t.dispose();
  });

  test("unsupported combinations throw ERR_UNSUPPORTED (f32 at native precision, odd head dims, small blocks)", () => {
    const q = makeTensor(randn(64 * 64, 1), [1, 1, 64, 64], 'f16').t.to('cuda:0');
    expectCode(() => blockSparseAttentionSync(q, q, q, 'dense', { blockQ: 32 }), TokenSieveError, 'ERR_UNSUPPORTED');
    const q32 = makeTensor(randn(64 * 32, 1), [1, 1, 64, 32], 'f16').t.to('cuda:0');
    expectCode(() => blockSparseAttentionSync(q32, q32, q32, 'dense'), TokenSieveError, 'ERR_UNSUPPORTED');
    const qf = makeTensor(randn(64 * 64, 1), [1, 1, 64, 64], 'f32').t.to('cuda:0');
    expectCode(() => blockSparseAttentionSync(qf, qf, qf, 'dense'), TokenSieveError, 'ERR_UNSUPPORTED');
    for (const t of [q, q32, qf]) t.dispose();
  });

  test('NaN in q, k or v is ERR_RANGE with wait (the device scan), and passes through with checkFinite: false', () => {
    const vals = randn(64 * 64, 4);
    vals[100] = NaN;
    const bad = makeTensor(vals, [1, 1, 64, 64], 'bf16').t.to('cuda:0');
    const ok = makeTensor(randn(64 * 64, 5), [1, 1, 64, 64], 'bf16').t.to('cuda:0');
    expectCode(() => blockSparseAttentionSync(ok, ok, bad, 'dense'), RangeError, 'ERR_RANGE', /NaN/);
    expectCode(() => blockSparseAttentionSync(ok, bad, ok, 'dense', { precision: 'int8' }), RangeError, 'ERR_RANGE', /NaN/);
    expectCode(() => blockAttentionMassSync(bad, ok), RangeError, 'ERR_RANGE', /NaN/);
    const r = blockSparseAttentionSync(bad, ok, ok, 'dense', { checkFinite: false });
    expect(r.out.toArray().filter((x) => Number.isNaN(x)).length).toBeGreaterThan(0);
    for (const t of [bad, ok, r.out]) t.dispose();
  });

  test('given device outputs (opts.out) are written in full with the bits of a fresh call; a host out is ERR_DEVICE', () => {
    const p = problem(1, 2, 2, 130, 130, 64, 'bf16', 'bnhd', 17);
    const mask = maskOf(1, 2, 130, 130, 64, 64, randomKeep(3, 1, 2, 3, 3, 0.5, [0]));
    const dq = p.q.to('cuda:0'), dk = p.k.to('cuda:0'), dv = p.v.to('cuda:0');
    const dm = { ...mask, kvNumBlocks: Tensor.from(mask.kvNumBlocks).to('cuda:0'), kvIndices: Tensor.from(mask.kvIndices).to('cuda:0') };
    const opts = { layout: 'bnhd', returnLse: true } as const;
    const fresh = blockSparseAttentionSync(dq, dk, dv, dm, opts);
    // Poisoned (0xFFFF is a bf16 NaN; NaN lse) so that an unwritten element shows.
    const out = Tensor.from({ data: new Uint16Array(130 * 2 * 64).fill(0xffff), shape: [1, 130, 2, 64], dtype: 'bf16' }).to('cuda:0');
    const lse = Tensor.from({ data: new Float32Array(2 * 130).fill(NaN), shape: [1, 2, 130] }).to('cuda:0');
    for (let i = 0; i < 2; i++) {
      const r = blockSparseAttentionSync(dq, dk, dv, dm, { ...opts, out: { out, lse } });
      expect(r.out.ptr).toBe(out.ptr);
      expect(Array.from(out.toHost().data as Uint16Array)).toEqual(Array.from(fresh.out.toHost().data as Uint16Array));
      expect(lse.toArray()).toEqual(fresh.lse!.toArray());
    }
    const host = { data: new Uint16Array(130 * 2 * 64), shape: [1, 130, 2, 64], dtype: 'bf16' as const };
    expectCode(() => blockSparseAttentionSync(dq, dk, dv, dm, { layout: 'bnhd', out: { out: host } }), TokenSieveError, 'ERR_DEVICE', /out\.out/);
    for (const t of [dq, dk, dv, dm.kvNumBlocks, dm.kvIndices, fresh.out, fresh.lse, out, lse]) t?.dispose();
  });

  test('mass, pool and reorder match the CPU', () => {
    const x = makeTensor(randn(2 * 2 * 90 * 32, 7), [2, 2, 90, 32], 'bf16').t;
    const dx = x.to('cuda:0');
    expectClose(blockAttentionMassSync(dx, dx, { blockQ: 16, blockK: 32, rows: [1, 5, 80] }).toArray(), blockAttentionMassSync(x, x, { blockQ: 16, blockK: 32, rows: [1, 5, 80] }).toArray(), 1e-5, 1e-4, 'mass');
    const pc = blockPoolSync(x, { block: 16 }), pg = blockPoolSync(dx, { block: 16 });
    expectClose(pg.mean.toArray(), pc.mean.toArray(), 1e-6, 1e-5, 'pool');
    const perm = permutation(2, 90, 2);
    const dperm = Tensor.from({ data: perm, shape: [2, 90] }).to('cuda:0');
    expect(applyReorderSync(dx, dperm).toArray()).toEqual(applyReorderSync(x, perm).toArray());
    for (const t of [dx, dperm]) t.dispose();
  });
});
