/**
 * INT8/INT4 quantization and INT8 attention scores: byte-exact codes and
 * scales against the reference arithmetic, round-trip error bounds derived
 * from the scale, hand-checked INT4 packing, K smoothing, bad input.
 */
import {
  attentionScoresSync,
  dequantize,
  dequantizeSync,
  errorReport,
  FloatDType,
  fromHalfBits,
  Granularity,
  quantize,
  quantizeSync,
  QuantizedTensor,
  Tensor,
  toHalfBits,
  topkSync,
} from '../lib';
import { refAttentionScores } from './reference/attention';
import { refDequantize, refQuantize, RefGranularity } from './reference/quantize';
import { expectClose, expectCode, makeTensor, randn, rng } from './helpers';

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

let seed = 900;

const asRef = (g: Granularity): RefGranularity =>
  typeof g === 'string' ? g : 'group' in g ? { group: g.group } : { rows: (g as { rows: number }).rows };

interface Case {
  shape: number[];
  bits: 8 | 4;
  granularity: Granularity;
  dtype: FloatDType;
  smooth?: boolean;
}

const CASES: Case[] = [];
for (const dtype of ['f32', 'f16', 'bf16'] as const) {
  for (const bits of [8, 4] as const) {
    CASES.push(
      { shape: [1], bits, granularity: 'tensor', dtype },
      { shape: [7, 1], bits, granularity: 'token', dtype },
      { shape: [3, 13], bits, granularity: 'token', dtype },
      { shape: [2, 5, 33], bits, granularity: 'channel', dtype },
      { shape: [4, 64], bits, granularity: { group: 32 }, dtype },
      { shape: [3, 100], bits, granularity: { group: 64, pad: true }, dtype },
      { shape: [2, 3, 577, 15], bits, granularity: { rows: 128, pad: true }, dtype },
      { shape: [2, 2, 64, 8], bits, granularity: { rows: 32 }, dtype, smooth: true },
      { shape: [1, 2, 9, 7], bits, granularity: 'tensor', dtype, smooth: true },
    );
  }
}

function label(c: Case): string {
  return `${c.dtype} ${c.bits}-bit ${JSON.stringify(c.granularity)} [${c.shape.join(', ')}]${c.smooth ? ' smooth' : ''}`;
}

describe('quantize matches the reference arithmetic byte for byte', () => {
  for (const c of CASES) {
    test(label(c), async () => {
      const n = c.shape.reduce((a, b) => a * b, 1);
      // Values with a per-channel offset (what smoothing is for) and spread magnitudes.
      const C = c.shape[c.shape.length - 1];
      const raw = Float64Array.from(randn(n, seed++, 1.3), (v, i) => v + ((i % C) % 3) * 0.7);
      const x = makeTensor(raw, c.shape, c.dtype);
      const q = await quantize(x.t, { bits: c.bits, granularity: c.granularity, smooth: c.smooth });
      const want = refQuantize(x.exact, c.shape, c.bits, asRef(c.granularity), c.smooth);
      expect(q.scales.toArray()).toEqual(want.scales);
      if (c.bits === 8) {
        expect(q.data.dtype).toBe('i8');
        expect(q.data.shape).toEqual(c.shape);
        expect(q.data.toArray()).toEqual(want.codes);
      } else {
        expect(q.data.dtype).toBe('u8');
        expect(q.data.shape).toEqual([...c.shape.slice(0, -1), Math.ceil(C / 2)]);
        expect(q.data.toArray()).toEqual(want.packed);
      }
      if (c.smooth) expect(q.mean!.toArray()).toEqual(want.mean);
      else expect(q.mean).toBeUndefined();

      // dequantize: q · scale (+ mean), exactly as the reference, in f32
      const deq = dequantizeSync(q, { dtype: 'f32', addMean: c.smooth });
      expect(deq.toArray()).toEqual(refDequantize(want, c.shape, asRef(c.granularity), !!c.smooth));
      // the default output dtype is the input's; half outputs round to nearest even
      const same = await dequantize(q, { addMean: c.smooth });
      expect(same.dtype).toBe(c.dtype);
      if (c.dtype !== 'f32') {
        const bits = toHalfBits(refDequantize(want, c.shape, asRef(c.granularity), !!c.smooth), c.dtype);
        expect(Array.from(same.data as Uint16Array)).toEqual(Array.from(bits));
      }

      // Round trip: every element within half a step of its scale (plus f32 rounding).
      const Q = c.bits === 8 ? 127 : 7;
      const scaleOf = (i: number): number => {
        const r = Math.floor(i / C), col = i % C;
        const g = c.granularity;
        if (g === 'tensor') return want.scales[0];
        if (g === 'token') return want.scales[r];
        if (g === 'channel') return want.scales[col];
        if ('group' in g) return want.scales[r * Math.ceil(C / g.group) + Math.floor(col / g.group)];
        const N = c.shape[2];
        return want.scales[Math.floor(r / N) * Math.ceil(N / g.rows) + Math.floor((r % N) / g.rows)];
      };
      const back = deq.toArray();
      let worst = 0;
      for (let i = 0; i < n; i++) {
        const bound = scaleOf(i) / 2 + 1e-6 * Math.abs(x.exact[i]) + 1e-7;
        worst = Math.max(worst, Math.abs(x.exact[i] - back[i]) / bound);
      }
      expect(worst).toBeLessThanOrEqual(1);
      expect(Math.max(...want.codes.map(Math.abs))).toBeLessThanOrEqual(Q);
    });
  }
});

describe('edge values', () => {
  test('all zeros quantize to zeros with the floor scale, and come back exactly', () => {
    for (const bits of [8, 4] as const) {
      const q = quantizeSync({ data: new Float32Array(12), shape: [3, 4] }, { bits, granularity: { group: 2 } });
      expect(Array.from(q.data.data as Uint8Array).every((v) => v === 0)).toBe(true);
      expect(q.scales.toArray()).toEqual(new Array(6).fill(Math.fround(Math.fround(1e-20) / (bits === 8 ? 127 : 7))));
      expect(dequantizeSync(q).toArray()).toEqual(new Array(12).fill(0));
    }
  });

  test('a constant row maps to ±Q and back to the constant', () => {
    const q = quantizeSync({ data: new Float32Array(9).fill(-2.5), shape: [1, 9] }, { bits: 8 });
    expect(q.data.toArray()).toEqual(new Array(9).fill(-127));
    expectClose(dequantizeSync(q).toArray(), new Array(9).fill(-2.5), 0, 1e-6);
  });

  test('a single outlier takes the extreme code; the rest keep the error bound of its scale', () => {
    const data = Float32Array.from(randn(64, 5, 0.01));
    data[17] = 100;
    const q = quantizeSync({ data, shape: [1, 64] }, { bits: 4 });
    const codes = refQuantize(data, [1, 64], 4, 'token').codes;
    expect(codes[17]).toBe(7);
    expect(codes.filter((c, i) => i !== 17).every((c) => c === 0)).toBe(true);
    const back = dequantizeSync(q).toArray();
    const scale = q.scales.toArray()[0];
    for (let i = 0; i < 64; i++) expect(Math.abs(back[i] - data[i])).toBeLessThanOrEqual(scale / 2 + 1e-6);
  });

  test('INT4 packing, hand-checked: low nibble first, two’s complement, odd length padded with 0', () => {
    // amax 7 → scale exactly 1: codes equal the values
    const q = quantizeSync({ data: Float32Array.of(1, -1, 7, -7, 3, -8.4, 0), shape: [1, 7] }, { bits: 4 });
    expect(q.scales.toArray()).toEqual([Math.fround(Math.fround(8.4) / 7)]);
    const q2 = quantizeSync({ data: Float32Array.of(1, -1, 7, -7, 3, -4, 0), shape: [1, 7] }, { bits: 4 });
    expect(q2.scales.toArray()).toEqual([1]);
    // bytes: [1 | -1<<4] = 0xF1, [7 | -7<<4] = 0x97, [3 | -4<<4] = 0xC3, [0 | pad] = 0x00
    expect(Array.from(q2.data.data as Uint8Array)).toEqual([0xf1, 0x97, 0xc3, 0x00]);
    expect(dequantizeSync(q2).toArray()).toEqual([1, -1, 7, -7, 3, -4, 0]);
  });

  test('half-way values round away from zero', () => {
    // amax 127 → scale 1; ±0.5 and ±2.5 → ±1 and ±3
    const q = quantizeSync({ data: Float32Array.of(127, 0.5, -0.5, 2.5, -2.5, 1.49), shape: [1, 6] }, { bits: 8 });
    expect(q.data.toArray()).toEqual([127, 1, -1, 3, -3, 1]);
  });

  test('NaN or Infinity is an ERR_RANGE, not a silent scale', () => {
    expectCode(() => quantizeSync({ data: Float32Array.of(1, NaN, 2), shape: [3] }), RangeError, 'ERR_RANGE', /NaN or Infinity/);
    expectCode(() => quantizeSync({ data: Float32Array.of(1, Infinity), shape: [1, 2] }, { bits: 4 }), RangeError, 'ERR_RANGE');
    expectCode(() => quantizeSync({ data: toHalfBits([1, NaN], 'f16'), shape: [2], dtype: 'f16' }), RangeError, 'ERR_RANGE');
  });
});

describe('K smoothing', () => {
  const B = 2, H = 2, N = 80, D = 32;
  // keys with a large per-channel offset (the case SageAttention smooths)
  const kv = Float32Array.from(randn(B * H * N * D, 31), (v, i) => v * 0.3 + ((i % D) - 16) * 0.8);
  const qv = Float32Array.from(randn(B * H * N * D, 32));
  const k = { data: kv, shape: [B, H, N, D] };
  const q = { data: qv, shape: [B, H, N, D] };

  test('reduces the quantization error of keys with a channel offset', () => {
    const plain = errorReport(k, quantizeSync(k, { bits: 8, granularity: { rows: 16 } }));
    const smooth = errorReport(k, quantizeSync(k, { bits: 8, granularity: { rows: 16 }, smooth: true }));
    expect(smooth.relFrobenius).toBeLessThan(plain.relFrobenius / 4);
  });

  test('leaves softmax(QKᵀ) unchanged: attention from K − mean equals attention from K', () => {
    const ks = quantizeSync(k, { bits: 8, granularity: { rows: 16 }, smooth: true });
    const shifted = dequantizeSync(ks, { dtype: 'f32' }); // K − mean, quantized
    const withMean = dequantizeSync(ks, { dtype: 'f32', addMean: true }); // ≈ K
    const a = attentionScoresSync(q, shifted, { heads: 'none' }).toArray();
    const b = attentionScoresSync(q, withMean, { heads: 'none' }).toArray();
    expectClose(a, b, 1e-7, 1e-4);
  });
});

describe("attentionScores with precision: 'int8'", () => {
  // Stated tolerance: per key within 2% of the f32 scores for means over
  // many rows and 5% for a single row (the INT8 logit error does not average
  // out), and a score vector with cosine similarity >= 0.9999.
  test('scores within the stated tolerance of f32 on random inputs, every dtype and layout', () => {
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      const B = 2, H = 3, N = 97, D = 40;
      const q = makeTensor(randn(B * H * N * D, seed++), [B, N, H, D], dtype).t;
      const k = makeTensor(Float64Array.from(randn(B * H * N * D, seed++), (v, i) => v + (i % D) * 0.05), [B, N, H, D], dtype).t;
      for (const opts of [{}, { queries: 0, keys: { start: 1 } }, { causal: true }] as const) {
        const ref = attentionScoresSync(q, k, { ...opts, layout: 'bnhd' }).toArray();
        const int8 = attentionScoresSync(q, k, { ...opts, layout: 'bnhd', precision: 'int8' }).toArray();
        const int8Flat = attentionScoresSync(q, k, { ...opts, layout: 'bnhd', precision: 'int8', smoothK: false, qRows: 128, kRows: 64 }).toArray();
        const oneRow = 'queries' in opts;
        expectClose(int8, ref, 1e-5, oneRow ? 0.05 : 0.02, `${dtype} ${JSON.stringify(opts)}`);
        expectClose(int8Flat, ref, 1e-5, oneRow ? 0.1 : 0.05, `${dtype} no smoothing`);
        expect(errorReport({ data: Float32Array.from(ref), shape: [ref.length] }, { data: Float32Array.from(int8), shape: [int8.length] }).cosine).toBeGreaterThan(0.9999);
      }
    }
  });

  // The INT8 scores are the softmax of the dequantized codes: q·k with q =
  // q codes × block scale and k = (k − mean) codes × block scale (the mean
  // shifts a row's logits by a constant). With the codes from the reference
  // quantizer (byte-exact with quantizeSync), what remains is f32 rounding
  // of the scale products and the exp: ~1e-6. One code off by one moves a
  // probability by ~1e-3 relative, so this pins the codes, the block
  // scales, the mean and which q block a row takes its scale from.
  test('scores equal the softmax of the reference codes (CLS, rows, causal; k blocks that cut 16-key panels)', () => {
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      // D = 97 and 130: the smoothing pass's 64-column blocks and tails.
      for (const [B, H, N, D, qRows, kRows] of [[2, 3, 97, 40, 32, 7], [1, 2, 130, 64, 128, 64], [1, 1, 33, 19, 5, 16], [1, 1, 1, 8, 1, 1], [1, 2, 70, 97, 16, 64], [1, 1, 65, 130, 32, 13]]) {
        const q = makeTensor(randn(B * H * N * D, seed++), [B, H, N, D], dtype);
        // Channel offsets, so that the smoothing mean is far from 0.
        const k = makeTensor(Float64Array.from(randn(B * H * N * D, seed++), (v, i) => v + (i % D) * 0.3 - 2), [B, H, N, D], dtype);
        const rq = refQuantize(q.exact, [B, H, N, D], 8, { rows: qRows }, false);
        const rk = refQuantize(k.exact, [B, H, N, D], 8, { rows: kRows }, true);
        const qBlocks = Math.ceil(N / qRows), kBlocks = Math.ceil(N / kRows);
        const deq = (codes: number[], scales: number[], rows: number, blocks: number): Float64Array =>
          Float64Array.from(codes, (c, i) => {
            const bh = Math.floor(i / (N * D)), n = Math.floor(i / D) % N;
            return c * scales[bh * blocks + Math.floor(n / rows)];
          });
        const args = { q: deq(rq.codes, rq.scales, qRows, qBlocks), k: deq(rk.codes, rk.scales, kRows, kBlocks), B, H, Nq: N, Nk: N, D, scale: 1 / Math.sqrt(D) };
        const rowsOf = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
        for (const [opts, rows] of [[{ queries: 0 }, [0]], [{ queries: [N - 1, 0] }, [N - 1, 0]], [{}, rowsOf(N)], [{ causal: true }, rowsOf(N)]] as const) {
          const want = refAttentionScores({ ...args, causal: 'causal' in opts }, { rows, reduce: 'mean', heads: 'none', keyBegin: 0, keyEnd: N });
          const got = attentionScoresSync(q.t, k.t, { ...opts, heads: 'none', precision: 'int8', qRows, kRows }).toArray();
          expectClose(got, want, 1e-7, 2e-5, `${dtype} [${B}, ${H}, ${N}, ${D}] qRows ${qRows} kRows ${kRows} ${JSON.stringify(opts)}`);
        }
      }
    }
  });

  test('the same top-k as f32 on inputs without near-ties', () => {
    const r = rng(77);
    const B = 3, H = 4, N = 200, D = 64;
    // Key j's logit against the CLS query grows with a well-separated per-key level.
    const levels = Array.from({ length: N }, (_, j) => ((j * 37) % N) / N);
    const qv = new Float32Array(B * H * N * D);
    const kv = new Float32Array(B * H * N * D);
    for (let bh = 0; bh < B * H; bh++) {
      for (let j = 0; j < N; j++) {
        for (let d = 0; d < D; d++) {
          qv[(bh * N + j) * D + d] = (r() - 0.5) * 0.2 + (d === 0 ? 2 : 0);
          kv[(bh * N + j) * D + d] = (r() - 0.5) * 0.02 + (d === 0 ? 6 * levels[j] : 0);
        }
      }
    }
    const q = { data: qv, shape: [B, H, N, D] };
    const k = { data: kv, shape: [B, H, N, D] };
    const f32 = attentionScoresSync(q, k, { queries: 0, keys: { start: 1 } });
    const int8 = attentionScoresSync(q, k, { queries: 0, keys: { start: 1 }, precision: 'int8' });
    expect(topkSync(int8, 40).indices.toArray()).toEqual(topkSync(f32, 40).indices.toArray());
  });

  test('bad INT8 options', () => {
    const q = { data: new Float32Array(2 * 4 * 8), shape: [1, 2, 4, 8] };
    expectCode(() => attentionScoresSync(q, q, { precision: 'int4' as never }), TypeError, 'ERR_ARG');
    expectCode(() => attentionScoresSync(q, q, { precision: 'int8', qRows: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => attentionScoresSync(q, q, { kRows: 64 }), TypeError, 'ERR_ARG', /precision: 'int8' only/);
    const bad = { data: Float32Array.from({ length: 64 }, (_, i) => (i === 9 ? NaN : 1)), shape: [1, 2, 4, 8] };
    expectCode(() => attentionScoresSync(bad, q, { precision: 'int8' }), RangeError, 'ERR_RANGE');
  });

  test('NaN, ±Infinity, or a k − mean that overflows f32, anywhere in k: ERR_RANGE (smoothed or not, CLS or all rows)', () => {
    // The smoothed block scales come from each block's column range and
    // the mean (one pass over k): a non-finite k makes the mean non-finite,
    // and an overflowing difference shows in the range's.
    const [B, H, N, D] = [1, 2, 150, 67];
    const q = { data: Float32Array.from(randn(B * H * N * D, 3)), shape: [B, H, N, D] };
    const at = (1 * N + 131) * D + 66;  // head 1, the third k block, the last channel
    const cases: Array<[string, (k: Float32Array) => void, boolean]> = [
      ['NaN', (k) => { k[at] = NaN; }, true],
      ['+Infinity', (k) => { k[at] = Infinity; }, true],
      ['-Infinity', (k) => { k[at] = -Infinity; }, true],
      // Finite keys whose difference from the channel mean overflows: only
      // with smoothing (the unsmoothed amax of finite values is finite).
      ['k − mean overflow', (k) => { for (let j = 0; j < N; j++) k[(1 * N + j) * D + 66] = j === 131 ? 3e38 : -3e38; }, false],
    ];
    for (const [what, poison, always] of cases) {
      const kd = Float32Array.from(randn(B * H * N * D, 4));
      poison(kd);
      const k = { data: kd, shape: [B, H, N, D] };
      for (const opts of [{ queries: 0 }, {}]) {
        expectCode(() => attentionScoresSync(q, k, { ...opts, precision: 'int8' }), RangeError, 'ERR_RANGE', /finite/);
        if (always) expectCode(() => attentionScoresSync(q, k, { ...opts, precision: 'int8', smoothK: false }), RangeError, 'ERR_RANGE', /finite/);
        else expect(attentionScoresSync(q, k, { ...opts, precision: 'int8', smoothK: false }).toArray().every(Number.isFinite)).toBe(true);
      }
    }
  });
});

describe('quantize / dequantize reject bad input', () => {
  const x = { data: Float32Array.from(randn(2 * 3 * 10 * 8, 3)), shape: [2, 3, 10, 8] };
  const cases: Array<[string, () => unknown, Function, string]> = [
    ['bits 3', () => quantizeSync(x, { bits: 3 as never }), RangeError, 'ERR_RANGE'],
    ['unknown granularity', () => quantizeSync(x, { granularity: 'row' as never }), TypeError, 'ERR_ARG'],
    ['group 0', () => quantizeSync(x, { granularity: { group: 0 } }), RangeError, 'ERR_RANGE'],
    ['group not dividing without pad', () => quantizeSync(x, { granularity: { group: 3 } }), RangeError, 'ERR_SHAPE'],
    ['rows not dividing without pad', () => quantizeSync(x, { granularity: { rows: 4 } }), RangeError, 'ERR_SHAPE'],
    ['rows on a rank-2 tensor', () => quantizeSync({ data: new Float32Array(8), shape: [2, 4] }, { granularity: { rows: 1 } }), RangeError, 'ERR_SHAPE'],
    ['smooth on a rank-2 tensor', () => quantizeSync({ data: new Float32Array(8), shape: [2, 4] }, { smooth: true }), RangeError, 'ERR_SHAPE'],
    ['i32 input', () => quantizeSync({ data: new Int32Array(8), shape: [8] }), TypeError, 'ERR_DTYPE'],
    ['empty input', () => quantizeSync({ data: new Float32Array(0), shape: [0, 4] }), RangeError, 'ERR_SHAPE'],
    ['non-contiguous input', () => quantizeSync({ data: new Float32Array(16), shape: [2, 4], strides: [8, 1] }), Error, 'ERR_UNSUPPORTED'],
    ['unknown option', () => quantizeSync(x, { granularty: 'token' } as never), TypeError, 'ERR_ARG'],
  ];
  for (const [name, fn, cls, code] of cases) test(name, () => expectCode(fn, cls, code));

  test('dequantize checks the quantized tensor it is given', () => {
    const q = quantizeSync(x, { bits: 8, granularity: { rows: 5 } });
    const wrongScales: QuantizedTensor = { ...q, scales: Tensor.from({ data: new Float32Array(3), shape: [3] }) };
    expectCode(() => dequantizeSync(wrongScales), RangeError, 'ERR_SHAPE', /scales/);
    const wrongData: QuantizedTensor = { ...q, data: quantizeSync({ data: new Float32Array(8), shape: [8] }).data };
    expectCode(() => dequantizeSync(wrongData), RangeError, 'ERR_SHAPE', /data/);
    const wrongBits: QuantizedTensor = { ...q, bits: 4 };
    expectCode(() => dequantizeSync(wrongBits), RangeError, 'ERR_SHAPE');
    expectCode(() => dequantizeSync(q, { addMean: true }), TypeError, 'ERR_ARG', /smooth/);
    expectCode(() => dequantizeSync(q, { dtype: 'i8' as never }), TypeError, 'ERR_DTYPE');
    expectCode(() => dequantizeSync({ data: 1 } as never), TypeError, 'ERR_ARG');
    const disposed = quantizeSync(x);
    disposed.data.dispose();
    expectCode(() => dequantizeSync(disposed), Error, 'ERR_DISPOSED');
  });

  test('errorReport', () => {
    const a = { data: Float32Array.of(3, 4), shape: [2] };
    expect(errorReport(a, a)).toEqual({ maxAbs: 0, relFrobenius: 0, cosine: 1, count: 2 });
    const r = errorReport(a, { data: Float32Array.of(3, 0), shape: [2] });
    expect(r.maxAbs).toBe(4);
    expect(r.relFrobenius).toBeCloseTo(0.8, 12);
    expect(r.cosine).toBeCloseTo(0.6, 12);
    expectCode(() => errorReport(a, { data: new Float32Array(3), shape: [3] }), RangeError, 'ERR_SHAPE');
  });

  test('half-precision round trip of the dequantized values is exact through fromHalfBits', () => {
    const h = makeTensor(randn(40, 8), [5, 8], 'bf16');
    const q = quantizeSync(h.t, { bits: 8, granularity: 'channel' });
    const out = dequantizeSync(q);
    expect(Array.from(fromHalfBits(out.data as Uint16Array, 'bf16')).length).toBe(40);
  });
});

describe('caller-provided outputs', () => {
  const shape = [2, 3, 70, 24];
  const n = shape.reduce((a, b) => a * b);
  const x = { data: Float32Array.from(randn(n, 77, 2)), shape };

  test('quantize fills out (every byte, poisoned first) exactly as a fresh call, and returns those tensors', async () => {
    for (const bits of [8, 4] as const) {
      for (const smooth of [false, true]) {
        const fresh = quantizeSync(x, { bits, granularity: { rows: 32, pad: true }, smooth });
        const data = bits === 8 ? new Int8Array(n).fill(-99) : new Uint8Array(n / 2).fill(0xa5);
        const out = {
          data: { data, shape: fresh.data.shape.slice() },
          scales: { data: new Float32Array(fresh.scales.numel).fill(NaN), shape: fresh.scales.shape.slice() },
          mean: smooth ? { data: new Float32Array(2 * 3 * 24).fill(NaN), shape: [2, 3, 1, 24] } : undefined,
        };
        const q = await quantize(x, { bits, granularity: { rows: 32, pad: true }, smooth, out });
        expect(q.data.data).toBe(data); // a view of the caller's buffer, not a copy
        expect(Array.from(data)).toEqual(fresh.data.toArray());
        expect(Array.from(out.scales.data)).toEqual(fresh.scales.toArray());
        if (smooth) expect(Array.from(out.mean!.data)).toEqual(fresh.mean!.toArray());
        // Reused: a second call into the same buffers gives the same bytes.
        quantizeSync(x, { bits, granularity: { rows: 32, pad: true }, smooth, out });
        expect(Array.from(data)).toEqual(fresh.data.toArray());
      }
    }
  });

  test('dequantize fills out as a fresh call', () => {
    const q = quantizeSync(x, { bits: 4, granularity: { group: 8 } });
    const fresh = dequantizeSync(q, { dtype: 'bf16' });
    const out = { data: new Uint16Array(n).fill(0x7fc1), shape, dtype: 'bf16' as const };
    const r = dequantizeSync(q, { dtype: 'bf16', out });
    expect(r.data).toBe(out.data);
    expect(Array.from(out.data)).toEqual(Array.from(fresh.data as Uint16Array));
  });

  test('bad outputs are rejected before anything runs', () => {
    const rows = { granularity: { rows: 35 } as Granularity };
    const good = () => ({ data: { data: new Int8Array(n), shape }, scales: { data: new Float32Array(12), shape: [2, 3, 2, 1] } });
    expectCode(() => quantizeSync(x, { ...rows, out: { ...good(), data: { data: new Uint8Array(n), shape } } }), TypeError, 'ERR_DTYPE');
    expectCode(() => quantizeSync(x, { ...rows, out: { ...good(), scales: { data: new Float32Array(6), shape: [2, 3, 1, 1] } } }), RangeError, 'ERR_SHAPE');
    expectCode(() => quantizeSync(x, { ...rows, out: { ...good(), mean: { data: new Float32Array(144), shape: [2, 3, 1, 24] } } }), TypeError, 'ERR_ARG', /smooth/);
    expectCode(() => quantizeSync(x, { ...rows, out: { data: good().data } as never }), TypeError, 'ERR_ARG');
    // data aliasing x: the kernel would read codes it has just written.
    const alias = new Int8Array(x.data.buffer, 0, n);
    expectCode(() => quantizeSync(x, { ...rows, out: { ...good(), data: { data: alias, shape } } }), TypeError, 'ERR_ARG', /share memory/);
    expectCode(() => dequantizeSync(quantizeSync(x), { dtype: 'f32', out: { data: new Float32Array(n).subarray(1), shape } }), RangeError, 'ERR_RANGE', /at least/);
    // dequantize into memory that holds the codes it reads.
    const shared = new ArrayBuffer(4 * n);
    const q = quantizeSync(x, { bits: 8, out: { data: { data: new Int8Array(shared, 0, n), shape }, scales: { data: new Float32Array(2 * 3 * 70), shape: [2, 3, 70, 1] } } });
    expectCode(() => dequantizeSync(q, { dtype: 'f32', out: { data: new Float32Array(shared), shape } }), TypeError, 'ERR_ARG', /share memory/);
  });
});
