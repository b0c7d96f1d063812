/**
 * CUDA attention kernels against the CPU ones (which test/attention.test.ts
 * checks against the float64 references). Skipped, with the
 * reason printed, when no usable CUDA device is present.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import {
  attentionScores,
  attentionScoresSync,
  fasterVLMSync,
  fastVSync,
  FloatDType,
  fromHalfBits,
  toHalfBits,
  foPruSync,
  gather,
  gatherSync,
  hiPruneSync,
  dequantizeSync,
  quantize,
  quantizeSync,
  reduceAttentionSync,
  Tensor,
  TokenSieveError,
  topk,
  topkSync,
  vtcClsSync,
  deviceMemory,
  bipartiteSoftMatchSync,
  kCenterSync,
  kMedoids,
  maxCoverageSync,
  mmtokCoverageSync,
  stcScores,
} from '../lib';
import { native } from '../lib/native';
import { describeCuda, expectClose, expectCode, expectDerivedTolerance, expectReject, makeTensor, randn, rng } from './helpers';
import { bnhdToBhnd, refAttentionScores } from './reference/attention';
const dev = 'cuda:0';
let seed = 7100;

interface Case {
  B: number; H: number; Nq: number; Nk: number; D: number; dtype: FloatDType; layout: 'bhnd' | 'bnhd';
  opts: Record<string, unknown>;
}

const CASES: Case[] = [
  { B: 2, H: 3, Nq: 1, Nk: 1, D: 15, dtype: 'f32', layout: 'bhnd', opts: {} },
  { B: 3, H: 2, Nq: 2, Nk: 2, D: 64, dtype: 'f16', layout: 'bnhd', opts: {} },
  { B: 2, H: 4, Nq: 7, Nk: 7, D: 80, dtype: 'bf16', layout: 'bhnd', opts: { causal: true } },
  { B: 5, H: 16, Nq: 577, Nk: 577, D: 64, dtype: 'f16', layout: 'bhnd', opts: { queries: 0, keys: { start: 1 } } },
  { B: 2, H: 16, Nq: 577, Nk: 577, D: 64, dtype: 'bf16', layout: 'bnhd', opts: {} },
  { B: 1, H: 2, Nq: 1031, Nk: 1031, D: 128, dtype: 'f16', layout: 'bhnd', opts: { causal: true, queries: { start: 100, end: 1031 } } },
  { B: 2, H: 3, Nq: 7, Nk: 577, D: 80, dtype: 'f32', layout: 'bnhd', opts: { causal: true, heads: 'none' } },
  { B: 2, H: 2, Nq: 31, Nk: 1031, D: 15, dtype: 'bf16', layout: 'bhnd', opts: { heads: 'sum', reduce: 'sum', queries: [3, 3, 30] } },
  { B: 1, H: 1, Nq: 1031, Nk: 2, D: 128, dtype: 'f32', layout: 'bhnd', opts: { causal: true, causalOffset: -5 } },
  { B: 2, H: 2, Nq: 300, Nk: 300, D: 256, dtype: 'f16', layout: 'bhnd', opts: { queries: -1 } },
  { B: 1, H: 16, Nq: 729, Nk: 729, D: 72, dtype: 'bf16', layout: 'bnhd', opts: { keys: { start: 7, end: 700 } } },
];

describeCuda('attention kernels: CUDA matches CPU', () => {
  for (const c of CASES) {
    test(`B${c.B} H${c.H} Nq${c.Nq} Nk${c.Nk} D${c.D} ${c.dtype} ${c.layout} ${JSON.stringify(c.opts)}`, async () => {
      const qShape = c.layout === 'bhnd' ? [c.B, c.H, c.Nq, c.D] : [c.B, c.Nq, c.H, c.D];
      const kShape = c.layout === 'bhnd' ? [c.B, c.H, c.Nk, c.D] : [c.B, c.Nk, c.H, c.D];
      const q = makeTensor(randn(qShape.reduce((a, b) => a * b), seed++, 1.5), qShape, c.dtype).t;
      const k = makeTensor(randn(kShape.reduce((a, b) => a * b), seed++, 1.5), kShape, c.dtype).t;
      const bias = Tensor.from({ data: Float32Array.from(randn(c.B * c.Nk, seed++), (v, i) => (i % 7 === 2 ? -Infinity : v)), shape: [c.B, c.Nk] });
      const opts = { ...c.opts, layout: c.layout, keyBias: bias };
      const cpu = attentionScoresSync(q, k, opts);
      const qd = q.to(dev), kd = k.to(dev), bd = bias.to(dev);
      const gpu = attentionScoresSync(qd, kd, { ...opts, keyBias: bd });
      expect(gpu.device).toBe(dev);
      expectClose(gpu.toArray(), cpu.toArray(), 1e-7, 2e-4, 'sync');
      // async, into a poisoned device output, then accumulate onto it
      const poison = Tensor.from({ data: new Float32Array(cpu.numel).fill(NaN), shape: cpu.shape as number[] }, { device: dev });
      await attentionScores(qd, kd, { ...opts, keyBias: bd, out: poison });
      expectClose(poison.toArray(), cpu.toArray(), 1e-7, 2e-4, 'async');
      attentionScoresSync(qd, kd, { ...opts, keyBias: bd, out: poison, accumulate: true });
      expectClose(poison.toArray(), cpu.toArray().map((v) => 2 * v), 1e-7, 2e-4, 'accumulate');
      for (const t of [qd, kd, bd, gpu, poison]) t.dispose();
    });
  }

  test('NaN in a device input is an ERR_RANGE; checkFinite: false skips the check', async () => {
    const data = Float32Array.from(randn(2 * 2 * 9 * 8, 3));
    data[100] = NaN;
    const q = Tensor.from({ data, shape: [2, 2, 9, 8] }, { device: dev });
    expectCode(() => attentionScoresSync(q, q), RangeError, 'ERR_RANGE');
    await expectReject(attentionScores(q, q), RangeError, 'ERR_RANGE');
    expect(attentionScoresSync(q, q, { checkFinite: false }).shape).toEqual([2, 9]);
    q.dispose();
  });

  test('reduceAttention: CUDA matches CPU for every dtype', () => {
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      const p = makeTensor(Float64Array.from(randn(2 * 3 * 77 * 577, seed++), Math.abs), [2, 3, 77, 577], dtype).t;
      for (const opts of [{}, { queries: 0, keys: { start: 1 } }, { heads: 'none' as const, reduce: 'sum' as const, queries: [5, 5, 76] }]) {
        const cpu = reduceAttentionSync(p, opts);
        const pd = p.to(dev);
        const gpu = reduceAttentionSync(pd, opts);
        expectClose(gpu.toArray(), cpu.toArray(), 1e-7, 1e-5, `${dtype} ${JSON.stringify(opts)}`);
        pd.dispose();
        gpu.dispose();
      }
    }
  });
});

// ---- attentionScores on the tensor cores (cuda/attention.cu): every precision
// against the CPU at the same precision, under the tolerance rule (README,
// "CPU and GPU: tolerance and ties"): |cuda − exact| <= 2·|cpu − exact| + atol,
// exact being float64 of the inputs as the precision rounds them.

/** cvt.rna.tf32: 10 mantissa bits, half away from zero. */
function tf32Of(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  if ((u[0] & 0x7f800000) !== 0x7f800000) u[0] = ((u[0] + 0x1000) & ~0x1fff) >>> 0;
  return f[0];
}
function bf16Of(x: number): number {
  return fromHalfBits(toHalfBits([x], 'bf16'), 'bf16')[0];
}

describeCuda('attentionScores tensor-core path: every dtype × precision within the tolerance rule', () => {
  type Precision = 'native' | 'tf32' | 'bf16' | 'int8';
  interface TcCase { B: number; H: number; Nq: number; Nk: number; D: number; opts: Record<string, unknown> }
  const shapes: TcCase[] = [
    { B: 2, H: 3, Nq: 130, Nk: 577, D: 80, opts: { causal: true, heads: 'none' } },
    { B: 1, H: 4, Nq: 577, Nk: 577, D: 64, opts: { queries: { start: 0, end: 577 }, keys: { start: 1 } } },
    { B: 2, H: 2, Nq: 65, Nk: 200, D: 200, opts: { queries: [64, 0, 0, 33], reduce: 'sum', heads: 'sum', causal: true, causalOffset: -3 } },
    { B: 1, H: 4, Nq: 1031, Nk: 1031, D: 128, opts: {} },
  ];
  let compared = 0;
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    for (const precision of ['native', 'tf32', 'bf16', 'int8'] as Precision[]) {
      for (const c of shapes) {
        test(`${dtype} ${precision} B${c.B} H${c.H} Nq${c.Nq} Nk${c.Nk} D${c.D} ${JSON.stringify(c.opts)}`, () => {
          expect.hasAssertions();
          const q = makeTensor(randn(c.B * c.H * c.Nq * c.D, seed++, 1.5), [c.B, c.H, c.Nq, c.D], dtype);
          const k = makeTensor(randn(c.B * c.H * c.Nk * c.D, seed++, 1.5), [c.B, c.H, c.Nk, c.D], dtype);
          const biasData = Float32Array.from(randn(c.B * c.Nk, seed++), (v, i) => (i % 7 === 2 ? -Infinity : v));
          const bias = Tensor.from({ data: biasData, shape: [c.B, c.Nk] });
          const seen = precision === 'tf32' && dtype === 'f32' ? tf32Of : precision === 'bf16' ? bf16Of : (x: number) => x;
          const scale = 1 / Math.sqrt(c.D);
          const o = c.opts as { queries?: unknown; keys?: { start?: number; end?: number }; reduce?: 'mean' | 'sum'; heads?: 'mean' | 'sum' | 'none'; causal?: boolean; causalOffset?: number };
          const rows = Array.isArray(o.queries) ? (o.queries as number[]) : [...Array(c.Nq).keys()];
          const keyBegin = o.keys?.start ?? 0, keyEnd = o.keys?.end ?? c.Nk;
          const exact = refAttentionScores(
            { q: q.exact.map(seen), k: k.exact.map(seen), B: c.B, H: c.H, Nq: c.Nq, Nk: c.Nk, D: c.D, scale, causal: o.causal, causalOffset: o.causalOffset ?? c.Nk - c.Nq, keyBias: biasData },
            { rows, reduce: o.reduce ?? 'mean', heads: o.heads ?? 'mean', keyBegin, keyEnd },
          );
          const opts = { ...c.opts, scale, precision, keyBias: bias };
          const cpu = attentionScoresSync(q.t, k.t, opts).toArray();
          const qd = q.t.to(dev), kd = k.t.to(dev), bd = bias.to(dev);
          const gpu = attentionScoresSync(qd, kd, { ...opts, keyBias: bd });
          let maxRef = 0;
          for (const v of exact) maxRef = Math.max(maxRef, Math.abs(v));
          // The baseline's worst error stands for every element (errors move between elements with the summation order).
          let base = 0;
          for (let i = 0; i < exact.length; i++) base = Math.max(base, Math.abs(cpu[i] - exact[i]));
          const baseline = Float64Array.from(exact, (e) => e + base);
          const worst = expectDerivedTolerance(gpu.toArray(), baseline, exact, `${dtype}/${precision}`, { atol: 1e-6 * maxRef, ulps: 4 });
          expect(worst).toBeLessThanOrEqual(1);
          compared++;
          for (const t of [qd, kd, bd, gpu]) t.dispose();
        });
      }
    }
  }
  test('the comparisons above ran', () => {
    expect(compared).toBe(3 * 4 * shapes.length);
  });
});

// The few-rows path (cuda/attention_rows.cu: CLS row, FastV's last row, a
// short query range) against float64 under the README's tolerance rule: the
// device's error is at most 2× the CPU back end's plus atol (1e-6 of the
// largest value).
interface RowsCase {
  B: number; H: number; N: number; D: number; dtype: FloatDType; layout: 'bhnd' | 'bnhd';
  rows: number[]; opts: Record<string, unknown>; keys?: [number, number]; bias?: boolean;
}
const ROWS_CASES: RowsCase[] = [
  { B: 2, H: 16, N: 577, D: 64, dtype: 'f16', layout: 'bhnd', rows: [0], opts: { queries: 0, keys: { start: 1 } }, keys: [1, 577] },
  { B: 2, H: 16, N: 577, D: 64, dtype: 'f32', layout: 'bnhd', rows: [0], opts: { queries: 0 }, bias: true },
  { B: 1, H: 8, N: 1031, D: 128, dtype: 'bf16', layout: 'bhnd', rows: [1030], opts: { queries: -1, causal: true } },
  { B: 2, H: 3, N: 300, D: 80, dtype: 'f32', layout: 'bnhd', rows: [5, 2, 5], opts: { queries: [5, 2, 5], heads: 'none', reduce: 'sum' }, bias: true },
  { B: 1, H: 4, N: 1031, D: 80, dtype: 'f16', layout: 'bhnd', rows: [1000, 1001, 1002, 1003],
    opts: { queries: { start: 1000, end: 1004 }, causal: true, causalOffset: -20, keys: { start: 7, end: 900 } }, keys: [7, 900] },
  { B: 2, H: 2, N: 400, D: 256, dtype: 'f32', layout: 'bhnd', rows: [0, 9, 3, 8, 7, 6, 5, 399], opts: { queries: [0, 9, 3, 8, 7, 6, 5, 399], heads: 'sum' }, bias: true },
];

describeCuda('attentionScores, few rows: CUDA within the derived tolerance of float64', () => {
  for (const c of ROWS_CASES) {
    test(`B${c.B} H${c.H} N${c.N} D${c.D} ${c.dtype} ${c.layout} ${JSON.stringify(c.opts)}`, async () => {
      const shape = c.layout === 'bhnd' ? [c.B, c.H, c.N, c.D] : [c.B, c.N, c.H, c.D];
      const n = c.B * c.H * c.N * c.D;
      const q = makeTensor(randn(n, seed++, 1.5), shape, c.dtype);
      const k = makeTensor(randn(n, seed++, 1.5), shape, c.dtype);
      const biasData = Float32Array.from(randn(c.B * c.N, seed++), (v, i) => (i % 7 === 2 ? -Infinity : v));
      const bias = c.bias ? Tensor.from({ data: biasData, shape: [c.B, c.N] }) : undefined;
      const opts = { ...c.opts, layout: c.layout, ...(bias ? { keyBias: bias } : {}) };
      const asBhnd = (x: Float64Array) => (c.layout === 'bhnd' ? x : bnhdToBhnd(x, c.B, c.N, c.H, c.D));
      const o = c.opts as { causal?: boolean; causalOffset?: number; heads?: 'mean' | 'sum' | 'none'; reduce?: 'mean' | 'sum' };
      const [keyBegin, keyEnd] = c.keys ?? [0, c.N];
      // The reference over the selected rows only (rows s = 0..nsel-1 of a
      // gathered q; a causal case selects a contiguous range, so its offset
      // moves by the first row).
      const nsel = c.rows.length;
      const qAll = asBhnd(q.exact);
      const qSel = new Float64Array(c.B * c.H * nsel * c.D);
      for (let bh = 0; bh < c.B * c.H; bh++)
        for (let s = 0; s < nsel; s++)
          qSel.set(qAll.subarray((bh * c.N + c.rows[s]) * c.D, (bh * c.N + c.rows[s] + 1) * c.D), (bh * nsel + s) * c.D);
      if (o.causal) expect(c.rows).toEqual(c.rows.map((_, s) => c.rows[0] + s));
      const exact = refAttentionScores(
        { q: qSel, k: asBhnd(k.exact), B: c.B, H: c.H, Nq: nsel, Nk: c.N, D: c.D, scale: 1 / Math.sqrt(c.D),
          causal: o.causal, causalOffset: (o.causalOffset ?? 0) + c.rows[0], keyBias: bias ? biasData : undefined },
        { rows: c.rows.map((_, s) => s), reduce: o.reduce ?? 'mean', heads: o.heads ?? 'mean', keyBegin, keyEnd });
      const atol = 1e-6 * exact.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const cpu = attentionScoresSync(q.t, k.t, opts).toArray();
      const qd = q.t.to(dev), kd = k.t.to(dev), bd = bias?.to(dev);
      const dopts = { ...opts, ...(bd ? { keyBias: bd } : {}) };
      let compared = 0;
      const gpu = attentionScoresSync(qd, kd, dopts);
      expectDerivedTolerance(gpu.toArray(), cpu, exact, 'sync', { atol });
      compared += exact.length;
      // async into a poisoned device output (unwritten elements stay NaN), then accumulate onto it
      const poison = Tensor.from({ data: new Float32Array(exact.length).fill(NaN), shape: gpu.shape as number[] }, { device: dev });
      await attentionScores(qd, kd, { ...dopts, out: poison });
      expectDerivedTolerance(poison.toArray(), cpu, exact, 'async', { atol });
      compared += exact.length;
      attentionScoresSync(qd, kd, { ...dopts, out: poison, accumulate: true });
      expectDerivedTolerance(poison.toArray(), cpu.map((v) => 2 * v), exact.map((v) => 2 * v), 'accumulate', { atol: 2 * atol });
      compared += exact.length;
      expect(compared).toBeGreaterThan(0);
      for (const t of [qd, kd, bd, gpu, poison]) t?.dispose();
    });
  }
});
