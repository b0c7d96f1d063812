/**
 * PAROAttention's pieces: the six reorderings against two independent
 * float64 references (PARO's torch.permute table, and the order names read as
 * axis nesting), mask calibration and SpargeAttn's predictor on
 * hand-checkable cases and random data, and, on the block-sparse kernels,
 * the predictor, the plan search and paroAttention against dense and masked
 * float64 references.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  applyReorderSync,
  AXIS_ORDER_NAMES,
  blockAttentionMassSync,
  BlockMask,
  blockSparseAttentionSync,
  calibrateBlockMask,
  paroAttention,
  paroAttentionSync,
  predictBlockMask,
  predictBlockMaskFromPools,
  predictBlockMaskSync,
  reorderIndex,
  searchReorderPlan,
  searchReorderPlanSync,
} from '../lib';
import { sampleBlocks } from '../lib/methods/paro';
import { expectClose, expectCode, randn, rng } from './helpers';
import {
  ORDER_NAMES, PARO_TABLE, refBlockMass, refCalibrate, refMaskedAttention, refPermByName, refPool, refSparge, refTorchPermute, RefRule,
} from './reference/blockmask';

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

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

/** Host f32 tensor [B, H, N, D] of random values, and its exact values. */
function qkv(B: number, H: number, N: number, D: number, seed: number, scale = 1) {
  const data = Float32Array.from(randn(B * H * N * D, seed, scale));
  return { t: { data, shape: [B, H, N, D] }, v: Array.from(data) };
}
/** Rows [N, D] of head (b, h) of a [B, H, N, D] array. */
const head = (x: number[], b: number, h: number, H: number, N: number, D: number) => x.slice((b * H + h) * N * D, (b * H + h + 1) * N * D);

describe('predictBlockMask (blockPool + the Sparge rules)', () => {
  const cases: Array<[number, number, number, number, number, number, number]> = [
    // B, Hq, Hk, N, D, blockQ, blockK
    [1, 1, 1, 1, 3, 128, 64],
    [2, 2, 2, 300, 8, 128, 64], // tails: 300 = 2·128 + 44 = 4·64 + 44
    [1, 4, 2, 97, 5, 16, 8], // GQA, prime N
  ];
  for (const [B, Hq, Hk, N, D, bq, bk] of cases) {
    test(`B${B} Hq${Hq} Hk${Hk} N${N} D${D} blocks ${bq}x${bk} against float64 pooling and rules`, async () => {
      // low-rank-ish data so that some blocks are self-similar and some are not
      const q = qkv(B, Hq, N, D, N + 1);
      const k = qkv(B, Hk, N, D, N + 2);
      for (let i = 0; i < q.t.data.length; i++) q.t.data[i] += i % D === 0 ? 2 : 0;
      for (let i = 0; i < k.t.data.length; i++) k.t.data[i] += i % D === 1 ? 1.5 : 0;
      const qv = Array.from(q.t.data), kv = Array.from(k.t.data);
      for (const o of [{ cdf: 0.9 }, { topk: 0.4, sink: true }, { cdf: 1 }] as Array<{ cdf?: number; topk?: number; sink?: boolean }>) {
        const opts = { blockQ: bq, blockK: bk, simThreshold: 0.5, ...(o.cdf !== undefined ? { cdf: o.cdf } : { topk: o.topk }), attentionSink: o.sink ?? false };
        const got = predictBlockMaskSync(q.t, k.t, opts);
        const viaAsync = await predictBlockMask(q.t, k.t, opts);
        expect(viaAsync.toDense().toArray()).toEqual(got.toDense().toArray());
        expect(got.seqLens).toEqual([N, N]);
        expect(got.blockShape).toEqual([B, Hq, Math.ceil(N / bq), Math.ceil(N / bk)]);
        const want: number[] = [];
        for (let b = 0; b < B; b++) {
          for (let h = 0; h < Hq; h++) {
            const hk = Math.floor(h / (Hq / Hk));
            const pq = refPool(head(qv, b, h, Hq, N, D), N, D, bq);
            const pk = refPool(head(kv, b, hk, Hk, N, D), N, D, bk);
            want.push(...refSparge(pq.mean, pq.sim, pk.mean, pk.sim, { scale: 1 / Math.sqrt(D), simThreshold: 0.5, ...o }).flat());
          }
        }
        expect(got.toDense().toArray()).toEqual(want);
        if (o.cdf === 1) expect(got.density()).toBe(1);
      }
    });
  }

  test('bnhd layout gives the mask of the bhnd transpose', () => {
    const [B, H, N, D] = [1, 3, 40, 4];
    const q = qkv(B, H, N, D, 5);
    const k = qkv(B, H, N, D, 6);
    const t = (x: Float32Array) => {
      const out = new Float32Array(x.length);
      for (let h = 0; h < H; h++) for (let n = 0; n < N; n++) for (let d = 0; d < D; d++) out[(n * H + h) * D + d] = x[(h * N + n) * D + d];
      return { data: out, shape: [B, N, H, D] };
    };
    const a = predictBlockMaskSync(q.t, k.t, { blockQ: 16, blockK: 8, topk: 0.3, simThreshold: 0 });
    const b = predictBlockMaskSync(t(q.t.data), t(k.t.data), { blockQ: 16, blockK: 8, topk: 0.3, simThreshold: 0, layout: 'bnhd' });
    expect(b.toDense().toArray()).toEqual(a.toDense().toArray());
  });

  test('errors name predictBlockMask', async () => {
    const q = qkv(1, 2, 20, 4, 1).t;
    expectCode(() => predictBlockMaskSync(q, q, { cdf: 0.5, topk: 0.5 }), TypeError, 'ERR_ARG', /^predictBlockMaskSync: /);
    expectCode(() => predictBlockMaskSync({ data: new Float32Array(8), shape: [2, 4] }, q), RangeError, 'ERR_SHAPE', /^predictBlockMaskSync: /);
    expectCode(() => predictBlockMaskSync(q, q, { blockQ: 0 }), RangeError, 'ERR_RANGE', /blockQ/);
    await expect(predictBlockMask(q, q, { topk: 2 })).rejects.toMatchObject({ code: 'ERR_RANGE', message: expect.stringMatching(/^predictBlockMask: /) });
    const nan = qkv(1, 2, 20, 4, 1).t;
    nan.data[5] = NaN;
    expectCode(() => predictBlockMaskSync(nan, q), RangeError, 'ERR_RANGE', /^predictBlockMaskSync: /);
  });
});

/**
 * q, k of a grid where token i attends (almost only) to the tokens sharing
 * the coordinates named by `group` (e.g. 'FW': same frame and column):
 * one-hot group embeddings, q scaled up.
 */
function groupedQK(F: number, Hh: number, W: number, prefix: number, groups: string[], D: number, seed: number) {
  const H = groups.length;
  const N = prefix + F * Hh * W;
  const r = rng(seed);
  const q = new Float32Array(H * N * D);
  const k = new Float32Array(H * N * D);
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < N; t++) {
      let g: number;
      if (t < prefix) g = D - 1; // text: its own group
      else {
        const i = t - prefix;
        const c: Record<string, number> = { F: Math.floor(i / (Hh * W)), H: Math.floor(i / W) % Hh, W: i % W };
        const size: Record<string, number> = { F, H: Hh, W };
        g = 0;
        for (const a of groups[h]) g = g * size[a] + c[a];
      }
      for (let d = 0; d < D; d++) {
        const noise = (r() - 0.5) * 0.02;
        q[(h * N + t) * D + d] = (d === g ? 40 : 0) + noise; // logit 10 with D = 16: the group holds ~all the mass
        k[(h * N + t) * D + d] = (d === g ? 1 : 0) + noise;
      }
    }
  }
  return { q: { data: q, shape: [1, H, N, D] }, k: { data: k, shape: [1, H, N, D] }, N };
}

describe('searchReorderPlan', () => {
  test('picks the order that makes each head\'s attention block-local (ties to the lower index)', async () => {
    // F=2, H=4, W=3; blocks of 4 = H. Head 0 attends within (f, w): H innermost → FWH (1) and WFH (5) tie → 1.
    // Head 1 within (f, h): W innermost, blocks of 4 ≠ W=3 ... use (f, h) with W=3 → FHW (0) / HFW (3) → 0.
    // Head 2 within (h, w): F innermost → HWF (2) / WHF (4) → 2.
    const { q, k } = groupedQK(2, 4, 3, 0, ['FW', 'FH', 'HW'], 16, 1);
    const grid = { F: 2, H: 4, W: 3 };
    const plan = searchReorderPlanSync(q, k, grid, { blockSize: 4, coverage: 0.9 });
    expect(Array.from(plan.order)).toEqual([1, 0, 2]);
    const sc = (h: number, o: number) => plan.scores[h * 6 + o];
    expect(sc(0, 1)).toBe(sc(0, 5));
    for (const o of [0, 2, 3, 4]) expect(sc(0, o)).toBeGreaterThan(sc(0, 1));
    expect(sc(0, 1)).toBeCloseTo(1 / 6, 6); // one kv block of six covers the row
    expect(sc(2, 2)).toBe(sc(2, 4));
    for (const o of [0, 1, 3, 5]) expect(sc(2, o)).toBeGreaterThan(sc(2, 2));
    const viaAsync = await searchReorderPlan(q, k, grid, { blockSize: 4, coverage: 0.9 });
    expect(Array.from(viaAsync.order)).toEqual([1, 0, 2]);
    expect(Array.from(viaAsync.scores)).toEqual(Array.from(plan.scores));
    // candidates: the others score NaN
    const only = searchReorderPlanSync(q, k, grid, { blockSize: 4, candidates: [5, 2] });
    expect(Array.from(only.order)).toEqual([5, 2, 2]);
    for (let h = 0; h < 3; h++) for (const o of [0, 1, 3, 4]) expect(only.scores[h * 6 + o]).toBeNaN();
  });

  test('scores equal the float64 block-mass reference on sampled q-blocks (prefix, suffix, tail block)', () => {
    const grid = { F: 3, H: 2, W: 5, prefix: 3, suffix: 2 }; // N = 35, blocks of 8: 5 q-blocks, the last short
    const [B, H, D, bs] = [2, 2, 6, 8];
    const N = 35;
    const q = qkv(B, H, N, D, 21);
    const k = qkv(B, H, N, D, 22);
    for (const [sampleRows, seed] of [[16, 7], [1000, 0]] as const) {
      const plan = searchReorderPlanSync(q.t, k.t, grid, { blockSize: bs, sampleRows, coverage: 0.8, seed });
      const blocks = Array.from(sampleBlocks(5, Math.ceil(sampleRows / bs), seed));
      expect(blocks.length).toBe(Math.min(5, Math.ceil(sampleRows / bs)));
      const rows = blocks.flatMap((i) => Array.from({ length: Math.min(bs, N - i * bs) }, (_, t) => i * bs + t));
      for (let o = 0; o < 6; o++) {
        const perm = refPermByName(grid.F, grid.H, grid.W, grid.prefix, grid.suffix, ORDER_NAMES[o]);
        for (let h = 0; h < H; h++) {
          let s = 0;
          for (let b = 0; b < B; b++) {
            const permuted = (x: number[]) => perm.flatMap((src) => head(x, b, h, H, N, D).slice(src * D, (src + 1) * D));
            const mass = refBlockMass(permuted(q.v), permuted(k.v), N, D, bs, 1 / Math.sqrt(D), rows);
            for (const i of blocks) {
              const row = mass.slice(i * 5, (i + 1) * 5);
              const sorted = [...row].sort((x, y) => y - x);
              const total = sorted.reduce((x, y) => x + y, 0);
              let c = 0, acc = 0;
              while (acc < 0.8 * total) acc += sorted[c++];
              s += c / 5;
            }
          }
          expect(plan.scores[h * 6 + o]).toBeCloseTo(s / (B * blocks.length), 6);
        }
      }
      for (let h = 0; h < H; h++) {
        const sc = Array.from(plan.scores.subarray(h * 6, h * 6 + 6));
        expect(plan.order[h]).toBe(sc.indexOf(Math.min(...sc)));
      }
    }
  });

  test('errors name searchReorderPlan', async () => {
    const q = qkv(1, 2, 12, 4, 1).t;
    const grid = { F: 2, H: 2, W: 3 };
    expectCode(() => searchReorderPlanSync(q, q, { F: 2, H: 2, W: 2 }), RangeError, 'ERR_SHAPE', /^searchReorderPlanSync: the grid has 8 tokens/);
    expectCode(() => searchReorderPlanSync(q, qkv(1, 1, 12, 4, 2).t, grid), RangeError, 'ERR_SHAPE', /as many k heads/);
    expectCode(() => searchReorderPlanSync(q, q, grid, { coverage: 0 }), RangeError, 'ERR_RANGE', /coverage/);
    expectCode(() => searchReorderPlanSync(q, q, grid, { candidates: [7] as never }), RangeError, 'ERR_RANGE', /order\[0\]/);
    expectCode(() => searchReorderPlanSync(q, q, grid, { blockSize: 0 }), RangeError, 'ERR_RANGE', /blockSize/);
    expectCode(() => searchReorderPlanSync(q, q, grid, { sampleRows: 2.5 }), TypeError, 'ERR_ARG', /sampleRows/);
    const nan = qkv(1, 2, 12, 4, 1).t;
    nan.data[3] = NaN;
    expectCode(() => searchReorderPlanSync(nan, q, grid), RangeError, 'ERR_RANGE', /^searchReorderPlanSync: /);
    await expect(searchReorderPlan(nan, q, grid)).rejects.toMatchObject({ code: 'ERR_RANGE', message: expect.stringMatching(/^searchReorderPlan: /) });
  });
});

describe('paroAttention', () => {
  const grid = { F: 2, H: 3, W: 5, prefix: 3, suffix: 2 }; // N = 35
  const [B, H, N, D] = [2, 3, 35, 5];
  const q = qkv(B, H, N, D, 31);
  const k = qkv(B, H, N, D, 32);
  const v = qkv(B, H, N, D, 33);
  const scale = 1 / Math.sqrt(D);
  const plan = { order: Int8Array.of(1, 4, 5) };

  test('a full mask, or dense, equals dense attention (and the float64 reference)', async () => {
    const dense = blockSparseAttentionSync(q.t, k.t, v.t, 'dense').out.toArray();
    const want: number[] = [];
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
      want.push(...refMaskedAttention(head(q.v, b, h, H, N, D), head(k.v, b, h, H, N, D), head(v.v, b, h, H, N, D), N, N, D, scale, () => true));
    }
    expectClose(dense, want, 1e-6, 1e-4, 'dense');
    const full = BlockMask.fromDense({ data: new Uint8Array(5 * 5).fill(1), shape: [5, 5] }, { blockQ: 8, seqLens: [N, N] });
    const r1 = paroAttentionSync(q.t, k.t, v.t, { grid, plan, mask: full });
    const r2 = paroAttentionSync(q.t, k.t, v.t, { grid, plan, mask: 'dense' });
    const r3 = await paroAttention(q.t, k.t, v.t, { grid, plan, mask: full, returnLse: true });
    for (const r of [r1, r2, r3]) expectClose(r.out.toArray(), dense, 1e-6, 1e-4, 'paro full');
    expect(r3.lse!.shape).toEqual([B, H, N]);
    expect(r1.perm.length).toBe(H * N);
    expect(Array.from(r1.perm.subarray(N, 2 * N))).toEqual(refPermByName(2, 3, 5, 3, 2, 'WHF'));
  });

  test('a mask in permuted space equals the float64 reference with the permuted token mask', () => {
    const bq = 8, bk = 4;
    const nQ = Math.ceil(N / bq), nK = Math.ceil(N / bk);
    const dense = new Uint8Array(B * H * nQ * nK);
    const r = rng(9);
    for (let i = 0; i < dense.length; i++) dense[i] = r() < 0.35 ? 1 : 0;
    for (let i = 0; i < nK; i++) dense[2 * nK + i] = 0; // an empty row: out 0, lse −inf
    const mask = BlockMask.fromDense({ data: dense, shape: [B, H, nQ, nK] }, { blockQ: bq, blockK: bk, seqLens: [N, N] });
    const res = paroAttentionSync(q.t, k.t, v.t, { grid, plan, mask, returnLse: true });
    const { inv } = reorderIndex(grid, [1, 4, 5]);
    const want: number[] = [];
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
      // original tokens i, j meet where their permuted positions' blocks are kept
      const allowed = (i: number, j: number) => dense[(((b * H + h) * nQ + Math.floor(inv[h * N + i] / bq)) * nK) + Math.floor(inv[h * N + j] / bk)] === 1;
      want.push(...refMaskedAttention(head(q.v, b, h, H, N, D), head(k.v, b, h, H, N, D), head(v.v, b, h, H, N, D), N, N, D, scale, allowed));
    }
    expectClose(res.out.toArray(), want, 1e-6, 1e-4, 'paro masked');
    const lse = res.lse!.toArray();
    // the rows of permuted q-block 2 of (b 0, h 0) keep nothing
    for (let p = 16; p < 24; p++) expect(lse[inv.indexOf(p)]).toBe(-Infinity); // (h 0: inv[i] = p)
    expect(res.mask).toBe(mask);
  });

  test('calibrated mask: the mask of blockAttentionMass in permuted space, and the output it gives', async () => {
    const res = paroAttentionSync(q.t, k.t, v.t, { grid, plan, coverage: 0.7, blockQ: 8, blockK: 8 });
    const mask = res.mask as BlockMask;
    expect(mask).toBeInstanceOf(BlockMask);
    expect(mask.seqLens).toEqual([N, N]);
    const { perm } = reorderIndex(grid, [1, 4, 5]);
    const qp = applyReorderSync(q.t, perm), kp = applyReorderSync(k.t, perm);
    const want = calibrateBlockMask(blockAttentionMassSync(qp, kp, { blockQ: 8, blockK: 8 }), { coverage: 0.7 }, { blockQ: 8, seqLens: [N, N], keepPrefixBlocks: 1 });
    expect(mask.toDense().toArray()).toEqual(want.toDense().toArray());
    expect(mask.density()).toBeLessThan(1);
    // the output is block-sparse attention with that mask
    const again = paroAttentionSync(q.t, k.t, v.t, { grid, plan, mask });
    expect(again.out.toArray()).toEqual(res.out.toArray());
    // searched plan: the same as searchReorderPlan's
    const searched = await paroAttention(q.t, k.t, v.t, { grid, coverage: 0.7, search: { sampleRows: 16, seed: 3 } });
    const p = searchReorderPlanSync(q.t, k.t, grid, { blockSize: 64, sampleRows: 16, seed: 3 });
    expect(Array.from((searched.plan as { order: Int8Array }).order)).toEqual(Array.from(p.order));
  });

  test('grouped-query attention with a plan and a mask: the float64 reference with k, v heads shared', () => {
    const k1 = qkv(B, 1, N, D, 41);
    const v1 = qkv(B, 1, N, D, 42);
    const mask = BlockMask.fromDense({ data: Uint8Array.from({ length: 25 }, (_, i) => (i % 4 === 1 || i % 6 === 0 ? 1 : 0)), shape: [1, 1, 5, 5] }, { blockQ: 8, seqLens: [N, N] });
    const dense = Array.from(mask.toDense().toArray());
    const res = paroAttentionSync(q.t, k1.t, v1.t, { grid, plan, mask });
    const { inv } = reorderIndex(grid, [1, 4, 5]);
    const want: number[] = [];
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
      const allowed = (i: number, j: number) => dense[Math.floor(inv[h * N + i] / 8) * 5 + Math.floor(inv[h * N + j] / 8)] === 1;
      want.push(...refMaskedAttention(head(q.v, b, h, H, N, D), head(k1.v, b, 0, 1, N, D), head(v1.v, b, 0, 1, N, D), N, N, D, scale, allowed));
    }
    expectClose(res.out.toArray(), want, 1e-6, 1e-4, 'paro GQA');
  });

  test('one order in the plan applies to every head', () => {
    const mask = BlockMask.fromDense({ data: Uint8Array.from({ length: 25 }, (_, i) => (i % 3 === 0 ? 1 : 0)), shape: [5, 5] }, { blockQ: 8, seqLens: [N, N] });
    const one = paroAttentionSync(q.t, k.t, v.t, { grid, plan: { order: [3] }, mask });
    const all = paroAttentionSync(q.t, k.t, v.t, { grid, plan: { order: [3, 3, 3] }, mask });
    expect(one.out.toArray()).toEqual(all.out.toArray());
    expect(Array.from(one.perm)).toEqual(Array.from(all.perm));
  });

  test('errors name paroAttention', async () => {
    expectCode(() => paroAttentionSync(q.t, k.t, v.t, { grid: { F: 2, H: 3, W: 4 }, plan }), RangeError, 'ERR_SHAPE', /^paroAttentionSync: the grid has 24 tokens/);
    expectCode(() => paroAttentionSync(q.t, k.t, v.t, { grid, plan: { order: [0, 1] } }), RangeError, 'ERR_SHAPE', /2 orders but q has 3 heads/);
    expectCode(() => paroAttentionSync(q.t, k.t, v.t, { grid, plan: { order: [0, 1, 9] } }), RangeError, 'ERR_RANGE', /order\[2\]/);
    const wrong = BlockMask.fromDense({ data: new Uint8Array(4).fill(1), shape: [2, 2] }, { blockQ: 32, seqLens: [40, 40] });
    expectCode(() => paroAttentionSync(q.t, k.t, v.t, { grid, plan, mask: wrong }), RangeError, 'ERR_SHAPE', /seqLens \[40, 40\]/);
    const heads2 = BlockMask.fromDense({ data: new Uint8Array(2 * 25).fill(1), shape: [1, 2, 5, 5] }, { blockQ: 8, seqLens: [N, N] });
    expectCode(() => paroAttentionSync(q.t, k.t, v.t, { grid, plan, mask: heads2 }), RangeError, 'ERR_SHAPE', /head dimension is 2/);
    expectCode(() => paroAttentionSync(q.t, k.t, v.t, { grid, plan, mask: 'dense', coverage: 0.5 }), TypeError, 'ERR_ARG', /not both/);
    expectCode(() => paroAttentionSync(q.t, k.t, v.t, { grid, plan, coverage: 2 }), RangeError, 'ERR_RANGE', /^paroAttentionSync: .*coverage/);
    expectCode(() => paroAttentionSync(q.t, k.t, v.t, undefined as never), TypeError, 'ERR_ARG');
    const k1 = qkv(B, 1, N, D, 40).t;
    expectCode(() => paroAttentionSync(q.t, k1, k1, { grid, plan }), RangeError, 'ERR_SHAPE', /grouped-query attention\), pass both plan and mask/);
    expectCode(() => paroAttentionSync(q.t, k.t, v.t, { grid, plan, precision: 'fp8' as never }), TypeError, 'ERR_ARG', /^paroAttentionSync: .*precision/);
    await expect(paroAttention(q.t, k.t, v.t, { grid, plan, coverage: 2 })).rejects.toMatchObject({ code: 'ERR_RANGE', message: expect.stringMatching(/^paroAttention: /) });
  });
});

describe('errors raised by the kernels inside a method name the method, never the kernel', () => {
  const INTERNAL = /applyReorder|blockAttentionMass|blockPool|blockSparseAttention|calibrateBlockMask|BlockMask\.from|Tensor\.empty/;
  const grid = { F: 2, H: 2, W: 3 };
  const q = qkv(1, 2, 12, 4, 1).t;
  const nan = qkv(1, 2, 12, 4, 2).t;
  nan.data[7] = NaN;
  const plan = { order: [0, 1] };
  const cases: Array<[string, () => unknown, () => Promise<unknown>]> = [
    ['searchReorderPlan', () => searchReorderPlanSync(nan, q, grid), () => searchReorderPlan(nan, q, grid)],
    ['predictBlockMask', () => predictBlockMaskSync(q, nan), () => predictBlockMask(q, nan)],
    ['paroAttention', () => paroAttentionSync(nan, q, q, { grid, plan }), () => paroAttention(nan, q, q, { grid, plan })],
    ['paroAttention', () => paroAttentionSync(q, q, nan, { grid, plan, mask: 'dense' }), () => paroAttention(q, q, nan, { grid, plan, mask: 'dense' })],
    ['paroAttention', () => paroAttentionSync(q, q, qkv(1, 2, 11, 4, 3).t, { grid, plan }), () => paroAttention(q, q, qkv(1, 2, 11, 4, 3).t, { grid, plan })],
  ];
  for (const [name, sync, async] of cases) {
    test(`${name} (sync and async)`, async () => {
      let caught: (Error & { code?: string }) | undefined;
      try {
        sync();
      } catch (e) {
        caught = e as Error;
      }
      expect(caught).toBeDefined();
      expect(caught!.code).toMatch(/^ERR_(RANGE|SHAPE)$/);
      expect(caught!.message.startsWith(`${name}Sync: `)).toBe(true);
      expect(caught!.message).not.toMatch(INTERNAL);
      const err = await async().then(() => undefined, (e: Error & { code?: string }) => e);
      expect(err).toBeDefined();
      expect(err!.code).toBe(caught!.code);
      expect(err!.message.startsWith(`${name}: `)).toBe(true);
      expect(err!.message).not.toMatch(INTERNAL);
    });
  }
});

describe('README: Block-sparse reordered attention (PAROAttention)', () => {
  test('the sample type-checks under --strict against the published typings and runs on the CPU', () => {
    const root = path.resolve(__dirname, '..');
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    const start = readme.indexOf('\n## Block-sparse reordered attention (PAROAttention)\n');
    expect(start).toBeGreaterThan(readme.indexOf('\n## Diversity, coverage and clustering selection\n')); // after the method sections
    const rest = readme.slice(start + 1);
    const section = rest.slice(0, rest.slice(3).search(/^## /m) + 3);
    const m = /^```ts\n([\s\S]*?)^```/m.exec(section);
    expect(m).not.toBeNull();
    const code = m![1].replace(/from 'tokensieve'/g, `from ${JSON.stringify(path.join(root, 'dist', 'lib'))}`);
    expect(code).not.toBe(m![1]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tokensieve-paro-readme-'));
    try {
      fs.writeFileSync(path.join(dir, 'sample.ts'), code);
      const tsc = require.resolve('typescript/bin/tsc');
      const args = [tsc, '--strict', '--target', 'es2022', '--module', 'commonjs', '--types', 'node', '--typeRoots', path.join(root, 'node_modules', '@types'),
        '--skipLibCheck', '--outDir', dir, path.join(dir, 'sample.ts')];
      try {
        execFileSync(process.execPath, args, { cwd: dir, encoding: 'utf8', stdio: 'pipe' });
      } catch (e) {
        const err = e as { stdout?: string; stderr?: string };
        throw new Error(`the README sample does not compile:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
      }
      const out = execFileSync(process.execPath, [path.join(dir, 'sample.js')], { encoding: 'utf8', timeout: 120000 });
      expect(out).toMatch(/^orders [0-5] [0-5] [0-5] [0-5], mask density (0\.\d\d|1\.00)$/m);
      expect(out).toMatch(/^out 1 x 4 x 172 x 64 f32; sparge 1 x 4 x 172 x 64; paro 1 x 4 x 172 x 64$/m);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
