/**
 * PAROAttention's pieces: the six reorderings against two independent
 * float64 references (PARO's torch.permute table, and the order names read as
 * axis nesting), mask calibration and SpargeAttn's predictor on
 * hand-checkable cases and random data, and (with lib/kernels/blocksparse)
 * the plan search and paroAttention against dense and masked references.
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  AXIS_ORDER_NAMES,
  BlockMask,
  calibrateBlockMask,
  predictBlockMaskFromPools,
  reorderIndex,
  TokenSieveError,
} from '../lib';
import { expectCode, randn, rng } from './helpers';
import { ORDER_NAMES, PARO_TABLE, refCalibrate, refPermByName, refSparge, refTorchPermute, RefRule } from './reference/blockmask';

describe('reorderIndex', () => {
  const grids: Array<[number, number, number, number, number]> = [
    [1, 1, 1, 0, 0],
    [2, 3, 5, 0, 0],
    [3, 1, 4, 2, 0],
    [2, 7, 2, 0, 3],
    [5, 3, 7, 11, 2],
    [13, 30, 45, 226, 0], // CogVideoX
  ];
  for (const [F, H, W, prefix, suffix] of grids) {
    test(`grid ${F}x${H}x${W}, prefix ${prefix}, suffix ${suffix}: each order as PARO's permute and as its name`, () => {
      const n = prefix + F * H * W + suffix;
      const all = reorderIndex({ F, H, W, prefix, suffix }, [0, 1, 2, 3, 4, 5]);
      expect(all.heads).toBe(6);
      expect(all.n).toBe(n);
      const seen = new Set<string>();
      for (let o = 0; o < 6; o++) {
        const perm = Array.from(all.perm.subarray(o * n, (o + 1) * n));
        const inv = all.inv.subarray(o * n, (o + 1) * n);
        // the name read as axis nesting, and PAROAtten's x.reshape(F,H,W).permute(table[o])
        expect(perm).toEqual(refPermByName(F, H, W, prefix, suffix, ORDER_NAMES[o]));
        const torch = refTorchPermute(F, H, W, PARO_TABLE[o]).map((t) => t + prefix);
        expect(perm.slice(prefix, prefix + F * H * W)).toEqual(torch);
        // a permutation; inv ∘ perm = id; prefix and suffix fixed
        expect([...perm].sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, t) => t));
        for (let p = 0; p < n; p++) expect(inv[perm[p]]).toBe(p);
        for (let t = 0; t < prefix; t++) expect(perm[t]).toBe(t);
        for (let t = n - suffix; t < n; t++) expect(perm[t]).toBe(t);
        // one head alone gives the same permutation
        expect(Array.from(reorderIndex({ F, H, W, prefix, suffix }, o as 0).perm)).toEqual(perm);
        seen.add(perm.join(','));
      }
      if (F > 1 && H > 1 && W > 1) expect(seen.size).toBe(6);
      expect(Array.from(all.perm.subarray(0, n))).toEqual(Array.from({ length: n }, (_, t) => t)); // FHW = raster
    });
  }

  test('hand-checked: F=1, H=2, W=3 under FWH walks columns', () => {
    // raster (h, w): 0=(0,0) 1=(0,1) 2=(0,2) 3=(1,0) 4=(1,1) 5=(1,2); FWH: w outer, h inner
    expect(Array.from(reorderIndex({ F: 1, H: 2, W: 3 }, 1).perm)).toEqual([0, 3, 1, 4, 2, 5]);
    expect(Array.from(reorderIndex({ F: 1, H: 2, W: 3, prefix: 1 }, 1).perm)).toEqual([0, 1, 4, 2, 5, 3, 6]);
    expect(AXIS_ORDER_NAMES).toEqual(['FHW', 'FWH', 'HWF', 'HFW', 'WHF', 'WFH']);
  });

  test('per-head orders from an Int8Array', () => {
    const r = reorderIndex({ F: 2, H: 2, W: 2 }, Int8Array.of(5, 0, 2) as unknown as ArrayLike<0>);
    expect(r.heads).toBe(3);
    expect(Array.from(r.perm.subarray(8, 16))).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(Array.from(r.perm.subarray(0, 8))).toEqual(refPermByName(2, 2, 2, 0, 0, 'WFH'));
    expect(Array.from(r.perm.subarray(16))).toEqual(refPermByName(2, 2, 2, 0, 0, 'HWF'));
  });

  test('bad grids and orders', () => {
    const g = { F: 2, H: 2, W: 2 };
    expectCode(() => reorderIndex(g, 6 as 0), RangeError, 'ERR_RANGE', /^reorderIndex: .*order/);
    expectCode(() => reorderIndex(g, [0, -1] as never), RangeError, 'ERR_RANGE', /order\[1\]/);
    expectCode(() => reorderIndex(g, [0, 1.5] as never), TypeError, 'ERR_ARG', /order\[1\]/);
    expectCode(() => reorderIndex(g, [] as never), RangeError, 'ERR_RANGE', /no heads/);
    expectCode(() => reorderIndex(g, 'FHW' as never), TypeError, 'ERR_ARG');
    expectCode(() => reorderIndex({ F: 0, H: 2, W: 2 }, 0), RangeError, 'ERR_RANGE', /grid\.F/);
    expectCode(() => reorderIndex({ F: 2, H: 2, W: 2, prefix: -1 }, 0), RangeError, 'ERR_RANGE', /prefix/);
    expectCode(() => reorderIndex({ F: 2, H: 2, W: 2, T: 1 } as never, 0), TypeError, 'ERR_ARG', /unknown option 'T'/);
    expectCode(() => reorderIndex({ F: 70000, H: 70000, W: 1 }, 0), RangeError, 'ERR_RANGE', /2\^31/);
    expectCode(() => reorderIndex(null as never, 0), TypeError, 'ERR_ARG');
  });
});

const f32 = (data: ArrayLike<number>, shape: number[]) => ({ data: Float32Array.from(data), shape });

describe('calibrateBlockMask', () => {
  // one row of 5 blocks, blockQ = blockK = 4, seqLens [4, 20]: q-block 0's diagonal is kv block 0
  const row = (values: number[], rule: RefRule, extra: object = {}) =>
    calibrateBlockMask(f32(values, [1, 1, 1, values.length]), rule as never, { blockQ: 4, seqLens: [4, 4 * values.length], keepDiagonal: false, ...extra }).toDense().toArray();

  test('coverage: the smallest prefix by descending mass reaching c of the total', () => {
    // total 10: ranking 3 (4), 1 (3), 0 (2), 4 (1), 2 (0)
    expect(row([2, 3, 0, 4, 1], { coverage: 0.4 })).toEqual([0, 0, 0, 1, 0]); // 4 >= 4
    expect(row([2, 3, 0, 4, 1], { coverage: 0.41 })).toEqual([0, 1, 0, 1, 0]); // 4 < 4.1 <= 7
    expect(row([2, 3, 0, 4, 1], { coverage: 0.9 })).toEqual([1, 1, 0, 1, 0]); // 9 >= 9
    expect(row([2, 3, 0, 4, 1], { coverage: 1 })).toEqual([1, 1, 0, 1, 1]); // the zero block is never needed
    // ties go to the lower index
    expect(row([1, 2, 2, 2, 1], { coverage: 0.25 })).toEqual([0, 1, 0, 0, 0]);
    expect(row([1, 2, 2, 2, 1], { coverage: 0.5 })).toEqual([0, 1, 1, 0, 0]);
    // coverage 1 on awkward floats still stops at the last block with mass
    expect(row([0.1, 0.2, 0.3, 0, 0.7], { coverage: 1 })).toEqual([1, 1, 1, 0, 1]);
  });

  test('threshold: every block with mass / total >= t', () => {
    expect(row([2, 3, 0, 4, 1], { threshold: 0.3 })).toEqual([0, 1, 0, 1, 0]);
    expect(row([2, 3, 0, 4, 1], { threshold: 0.31 })).toEqual([0, 0, 0, 1, 0]);
    expect(row([2, 3, 0, 4, 1], { threshold: 0 })).toEqual([1, 1, 1, 1, 1]);
    // nothing reaches 0.5: the row keeps its top block
    expect(row([2, 3, 0, 4, 1], { threshold: 0.5 })).toEqual([0, 0, 0, 1, 0]);
  });

  test('density: the top ⌈d·nK⌉ blocks (0.3 of 10 is 3, not 4)', () => {
    const ten = [5, 1, 9, 3, 3, 0, 7, 2, 8, 6];
    expect(row(ten, { density: 0.3 })).toEqual([0, 0, 1, 0, 0, 0, 1, 0, 1, 0]); // 9, 8, 7
    expect(row(ten, { density: 0.3 }).reduce((a, b) => a + b, 0)).toBe(3);
    expect(row(ten, { density: 0.31 }).reduce((a, b) => a + b, 0)).toBe(4);
    expect(row(ten, { density: 0.01 })).toEqual([0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    expect(row(ten, { density: 1 })).toEqual(new Array(10).fill(1));
  });

  test('forced blocks: diagonal, prefix rows and columns, at least one per row', () => {
    // 3 q-blocks x 3 kv-blocks, all mass on kv block 2
    const mass = f32([0, 0, 5, 0, 0, 5, 0, 0, 5], [1, 1, 3, 3]);
    const base = { blockQ: 4, seqLens: [12, 12] as [number, number] };
    expect(calibrateBlockMask(mass, { coverage: 1 }, { ...base, keepDiagonal: false }).toDense().toArray()).toEqual([0, 0, 1, 0, 0, 1, 0, 0, 1]);
    expect(calibrateBlockMask(mass, { coverage: 1 }, base).toDense().toArray()).toEqual([1, 0, 1, 0, 1, 1, 0, 0, 1]);
    expect(calibrateBlockMask(mass, { coverage: 1 }, { ...base, keepDiagonal: false, keepPrefixBlocks: 1 }).toDense().toArray()).toEqual([1, 1, 1, 1, 0, 1, 1, 0, 1]);
    // a zero row keeps its top-ranked block: the lowest index
    const zero = f32([0, 0, 0, 0, 0, 0], [1, 1, 2, 3]);
    expect(calibrateBlockMask(zero, { coverage: 0.5 }, { blockQ: 4, seqLens: [8, 12], keepDiagonal: false }).toDense().toArray()).toEqual([1, 0, 0, 1, 0, 0]);
    // non-square blocks: q-block i (8 tokens) holds kv blocks 2i, 2i+1 (4 tokens); the tail q-block only kv block 4
    const m = calibrateBlockMask(f32(new Array(15).fill(0), [1, 1, 3, 5]), { threshold: 1 }, { blockQ: 8, blockK: 4, seqLens: [18, 18] });
    expect(m.toDense().toArray()).toEqual([1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1]);
    expect([m.blockQ, m.blockK]).toEqual([8, 4]);
  });

  const shapes: Array<[number, number, number, number]> = [[1, 1, 1, 1], [2, 3, 7, 5], [1, 4, 13, 13], [3, 1, 2, 11]];
  const rules: RefRule[] = [{ coverage: 0.9 }, { coverage: 0.5 }, { coverage: 1 }, { threshold: 0.1 }, { threshold: 0 }, { density: 0.25 }, { density: 0.7 }];
  for (const [B, H, nQ, nK] of shapes) {
    test(`random mass [${B}, ${H}, ${nQ}, ${nK}] with ties and zeros, every rule, against the float64 reference`, () => {
      const r = rng(B * 1000 + H * 100 + nQ * 10 + nK);
      // coarse values force ties; some zeros
      const mass = Array.from({ length: B * H * nQ * nK }, () => (r() < 0.2 ? 0 : Math.floor(r() * 8) / 8));
      const t = f32(mass, [B, H, nQ, nK]);
      const exact = Array.from(t.data);
      for (const rule of rules) {
        for (const [keepDiagonal, keepPrefixBlocks] of [[true, 0], [false, 0], [true, 2]] as const) {
          const o = { blockQ: 16, blockK: 12, seqLens: [nQ * 16 - 3, nK * 12 - 1] as [number, number], keepDiagonal, keepPrefixBlocks };
          const got = calibrateBlockMask(t, rule as never, o);
          const want = refCalibrate(exact, B * H * nQ, nQ, nK, rule, o);
          expect(got.toDense().toArray()).toEqual(want);
          expect(got.blockShape).toEqual([B, H, nQ, nK]);
          // every row computes at least one block
          const counts = got.kvNumBlocks.toArray();
          expect(Math.min(...counts)).toBeGreaterThanOrEqual(1);
        }
      }
    });
  }

  test('bad input names calibrateBlockMask', () => {
    const ok = f32([1, 2, 3, 4], [1, 1, 2, 2]);
    const o = { blockQ: 4 };
    const C = /^calibrateBlockMask: /;
    expect(calibrateBlockMask(ok, { coverage: 0.5 }, o)).toBeInstanceOf(BlockMask);
    expectCode(() => calibrateBlockMask(f32([1, NaN, 3, 4], [1, 1, 2, 2]), { coverage: 0.5 }, o), RangeError, 'ERR_RANGE', /NaN at flat index 1/);
    expectCode(() => calibrateBlockMask(f32([1, Infinity, 3, 4], [1, 1, 2, 2]), { coverage: 0.5 }, o), RangeError, 'ERR_RANGE', C);
    expectCode(() => calibrateBlockMask(f32([1, -1, 3, 4], [1, 1, 2, 2]), { coverage: 0.5 }, o), RangeError, 'ERR_RANGE', /-1/);
    expectCode(() => calibrateBlockMask(f32([1, 2, 3, 4], [1, 2, 2]), { coverage: 0.5 }, o), RangeError, 'ERR_SHAPE', C);
    expectCode(() => calibrateBlockMask({ data: Int32Array.of(1, 2, 3, 4), shape: [1, 1, 2, 2] }, { coverage: 0.5 }, o), TypeError, 'ERR_DTYPE', C);
    expectCode(() => calibrateBlockMask(ok, { coverage: 0 }, o), RangeError, 'ERR_RANGE', /coverage in \(0, 1\]/);
    expectCode(() => calibrateBlockMask(ok, { coverage: 1.5 }, o), RangeError, 'ERR_RANGE');
    expectCode(() => calibrateBlockMask(ok, { threshold: -0.1 }, o), RangeError, 'ERR_RANGE', /threshold/);
    expectCode(() => calibrateBlockMask(ok, { density: NaN }, o), RangeError, 'ERR_RANGE', /density/);
    expectCode(() => calibrateBlockMask(ok, { coverage: 0.5, density: 0.5 } as never, o), TypeError, 'ERR_ARG', /exactly one/);
    expectCode(() => calibrateBlockMask(ok, {} as never, o), TypeError, 'ERR_ARG', /exactly one/);
    expectCode(() => calibrateBlockMask(ok, { coverage: '0.5' } as never, o), TypeError, 'ERR_ARG');
    expectCode(() => calibrateBlockMask(ok, { coverage: 0.5 }, { blockQ: 4, seqLens: [4, 8] }), RangeError, 'ERR_SHAPE', /give 1x2 blocks but mass has 2x2/);
    expectCode(() => calibrateBlockMask(ok, { coverage: 0.5 }, { blockQ: 0 }), RangeError, 'ERR_RANGE', /blockQ/);
    expectCode(() => calibrateBlockMask(ok, { coverage: 0.5 }, { blockQ: 4, keepPrefixBlocks: -1 }), RangeError, 'ERR_RANGE', /keepPrefixBlocks/);
    expectCode(() => calibrateBlockMask(ok, { coverage: 0.5 }, { blockQ: 4, keepDiagonal: 1 } as never), TypeError, 'ERR_ARG', /keepDiagonal/);
    expectCode(() => calibrateBlockMask(ok, { coverage: 0.5 }, undefined as never), TypeError, 'ERR_ARG', /required/);
  });
});

describe('SpargeAttn predictor rules (predictBlockMaskFromPools)', () => {
  /** Pooled tensors for one (b, h): q means [nQ, D], k means [nK, D], similarities. */
  const pools = (qm: number[][], qs: number[], km: number[][], ks: number[]) => ({
    q: { mean: f32(qm.flat(), [1, 1, qm.length, qm[0].length]), selfSim: f32(qs, [1, 1, qs.length]) },
    k: { mean: f32(km.flat(), [1, 1, km.length, km[0].length]), selfSim: f32(ks, [1, 1, ks.length]) },
  });
  // D = 1, scale 1: logits are q·k; k means ln(4), ln(2), ln(1), ln(1) → probs 0.5, 0.25, 0.125, 0.125
  const km = [[Math.log(4)], [Math.log(2)], [0], [0]];
  const seq = (nQ: number, nK: number) => [nQ * 128, nK * 64] as [number, number];
  const run = (p: ReturnType<typeof pools>, o: object) =>
    predictBlockMaskFromPools(p.q, p.k, { scale: 1, seqLens: seq(p.q.selfSim.shape[2], p.k.selfSim.shape[2]), ...o }).toDense().toArray();

  test('cdf keeps the ranked blocks whose cumulative probability is <= cdf (the crossing block is not kept)', () => {
    const p = pools([[1]], [1], km, [1, 1, 1, 1]);
    expect(run(p, { cdf: 0.6 })).toEqual([1, 0, 0, 0]); // cdf 0.5, 0.75, ...
    expect(run(p, { cdf: 0.8 })).toEqual([1, 1, 0, 0]);
    expect(run(p, { cdf: 0.9 })).toEqual([1, 1, 1, 0]); // 0.875 <= 0.9; ties (blocks 2, 3) to the lower index
    expect(run(p, { cdf: 0.4 })).toEqual([1, 0, 0, 0]); // none <= 0.4: at least the top block
    expect(run(p, { cdf: 1 })).toEqual([1, 1, 1, 1]); // cdf = 1 is dense
    expect(run(p, {})).toEqual([1, 1, 1, 0]); // default cdf 0.98: 1 > 0.98
  });

  test('topk keeps int(topk·nK) blocks (at least one), plus the forced ones', () => {
    const p = pools([[1]], [1], km, [1, 1, 1, 1]);
    expect(run(p, { topk: 0.5 })).toEqual([1, 1, 0, 0]);
    expect(run(p, { topk: 0.74 })).toEqual([1, 1, 0, 0]); // int(2.96) = 2
    expect(run(p, { topk: 0.75 })).toEqual([1, 1, 1, 0]);
    expect(run(p, { topk: 0 })).toEqual([1, 0, 0, 0]);
    expect(run(p, { topk: 1 })).toEqual([1, 1, 1, 1]);
    // a dissimilar k block (sim 0.6 <= 0.6) is kept in every row and left out of the softmax
    const q = pools([[1]], [1], km, [1, 1, 0.6, 1]);
    expect(run(q, { topk: 0.25 })).toEqual([1, 0, 1, 0]);
    expect(run(q, { topk: 0.5 })).toEqual([1, 1, 1, 0]);
  });

  test('a dissimilar q block computes its whole row; similarity is compared strictly (> threshold)', () => {
    const p = pools([[1], [1]], [0.6, 0.61], km, [1, 1, 1, 1]);
    expect(run(p, { topk: 0.25 })).toEqual([1, 1, 1, 1, 1, 0, 0, 0]);
    expect(run(p, { topk: 0.25, simThreshold: 0.59 })).toEqual([1, 0, 0, 0, 1, 0, 0, 0]);
    expect(run(p, { topk: 0.25, simThreshold: [0.7] })).toEqual([1, 1, 1, 1, 1, 1, 1, 1]);
    // NaN similarity (a block of zero vectors) is not similar: always computed
    const n = pools([[1]], [NaN], km, [1, 1, 1, 1]);
    expect(run(n, { topk: 0.25 })).toEqual([1, 1, 1, 1]);
    // every k block dissimilar: all computed
    const k = pools([[1]], [1], km, [0, 0, 0, 0]);
    expect(run(k, { cdf: 0.1 })).toEqual([1, 1, 1, 1]);
  });

  test('attentionSink keeps kv block 0', () => {
    const p = pools([[-1]], [1], km, [1, 1, 1, 1]); // q = -1 ranks block 2 first (ties 2, 3 → 2)
    expect(run(p, { topk: 0.25 })).toEqual([0, 0, 1, 0]);
    expect(run(p, { topk: 0.25, attentionSink: true })).toEqual([1, 0, 1, 0]);
  });

  const cases: Array<[number, number, number, number, number, number]> = [
    // B, Hq, Hk, nQ, nK, D
    [1, 1, 1, 1, 1, 1],
    [2, 3, 3, 5, 7, 4],
    [1, 4, 2, 9, 13, 8],
    [2, 2, 1, 3, 17, 3],
  ];
  for (const [B, Hq, Hk, nQ, nK, D] of cases) {
    test(`random pools B${B} Hq${Hq} Hk${Hk} ${nQ}x${nK} D${D} against the float64 reference (cdf, topk, sink)`, () => {
      const qm = randn(B * Hq * nQ * D, nQ * 7 + D);
      const kmr = randn(B * Hk * nK * D, nK * 11 + D);
      const r = rng(B + Hq + nK);
      const qs = Array.from({ length: B * Hq * nQ }, () => r() * 1.2 - 0.1);
      const ks = Array.from({ length: B * Hk * nK }, () => r() * 1.2 - 0.1);
      const pq = { mean: f32(qm, [B, Hq, nQ, D]), selfSim: f32(qs, [B, Hq, nQ]) };
      const pk = { mean: f32(kmr, [B, Hk, nK, D]), selfSim: f32(ks, [B, Hk, nK]) };
      const qf = Array.from(pq.mean.data), kf = Array.from(pk.mean.data), qsf = Array.from(pq.selfSim.data), ksf = Array.from(pk.selfSim.data);
      const thr = Array.from({ length: Hq }, (_, h) => 0.3 + 0.1 * h);
      for (const o of [{ cdf: 0.7 }, { cdf: 0.98 }, { topk: 0.3, sink: true }, { cdf: 1 }, { topk: 0.5 }] as Array<{ cdf?: number; topk?: number; sink?: boolean }>) {
        const got = predictBlockMaskFromPools(pq, pk, {
          blockQ: 128, blockK: 64, seqLens: [nQ * 128 - 5, nK * 64 - 63], simThreshold: thr, scale: 0.7,
          ...(o.cdf !== undefined ? { cdf: o.cdf } : { topk: o.topk }), attentionSink: o.sink ?? false,
        });
        const want: number[] = [];
        for (let b = 0; b < B; b++) {
          for (let h = 0; h < Hq; h++) {
            const hk = Math.floor(h / (Hq / Hk));
            const rows = (m: number[], H: number, n: number, hh: number) => Array.from({ length: n }, (_, i) => m.slice(((b * H + hh) * n + i) * D, ((b * H + hh) * n + i + 1) * D));
            const map = refSparge(rows(qf, Hq, nQ, h), qsf.slice((b * Hq + h) * nQ, (b * Hq + h + 1) * nQ), rows(kf, Hk, nK, hk), ksf.slice((b * Hk + hk) * nK, (b * Hk + hk + 1) * nK),
              { scale: 0.7, simThreshold: thr[h], ...o });
            want.push(...map.flat());
          }
        }
        expect(got.toDense().toArray()).toEqual(want);
        if (o.cdf === 1) expect(got.density()).toBe(1);
      }
    });
  }

  test('bad input names predictBlockMaskFromPools', () => {
    const p = pools([[1]], [1], km, [1, 1, 1, 1]);
    const P = /^predictBlockMaskFromPools: /;
    const go = (o: object, q: object = p.q, k: object = p.k) => () => predictBlockMaskFromPools(q as never, k as never, { seqLens: seq(1, 4), ...o });
    expectCode(go({ cdf: 0.5, topk: 0.5 }), TypeError, 'ERR_ARG', /not both/);
    expectCode(go({ cdf: 1.5 }), RangeError, 'ERR_RANGE', P);
    expectCode(go({ topk: -0.1 }), RangeError, 'ERR_RANGE', /topk/);
    expectCode(go({ simThreshold: [0.1, 0.2] }), RangeError, 'ERR_SHAPE', /one per head/);
    expectCode(go({ simThreshold: NaN }), RangeError, 'ERR_RANGE', /simThreshold/);
    expectCode(go({ scale: 0 }), RangeError, 'ERR_RANGE', /scale/);
    expectCode(go({ seqLens: [128, 64] }), RangeError, 'ERR_SHAPE', /give 1x1 blocks but the pooled blocks are 1x4/);
    expectCode(go({}, { mean: f32([NaN], [1, 1, 1, 1]), selfSim: f32([1], [1, 1, 1]) }), RangeError, 'ERR_RANGE', /NaN/);
    expectCode(go({}, { mean: f32([1, 1], [1, 1, 1, 2]), selfSim: f32([1], [1, 1, 1]) }), RangeError, 'ERR_SHAPE', /batch or D/);
    expectCode(go({}, { mean: f32([1], [1, 1, 1, 1]), selfSim: f32([1, 1], [1, 1, 2]) }), RangeError, 'ERR_SHAPE', /selfSim/);
    expectCode(go({}, { mean: f32([1], [1, 1, 1, 1]) }), TypeError, 'ERR_ARG');
    expectCode(go({ block: 64 }), TypeError, 'ERR_ARG', /unknown option 'block'/);
  });
});

// ---------------------------------------------------------------------------
// With the block-sparse kernels

const haveKernels = fs.existsSync(path.join(__dirname, '..', 'lib', 'kernels', 'blocksparse.ts'));
const describeKernels = haveKernels ? describe : describe.skip;
if (!haveKernels) {
  // eslint-disable-next-line no-console
  console.warn('paro: lib/kernels/blocksparse is not in this tree; the plan search and paroAttention tests are skipped');
}

describeKernels('with lib/kernels/blocksparse', () => {
  test('placeholder until the kernels land', () => {
    expect(TokenSieveError).toBeDefined();
  });
});
