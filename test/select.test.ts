/** topk and gather against the float64 references. */
import { FloatDType, gather, gatherSync, Tensor, topk, topkSync } from '../lib';
import { refGather, refTopk } from './reference/select';
import { expectCode, makeTensor, randn, rng, selectionOutsideGap } from './helpers';

describe('topk', () => {
  test('hand-checked: ties to the lower index, NaN last, -Infinity above NaN', () => {
    const scores = { data: Float32Array.of(1, NaN, 3, 3, -Infinity, 2, 3), shape: [7] };
    expect(topkSync(scores, 3, { order: 'score' }).indices.toArray()).toEqual([2, 3, 6]);
    expect(topkSync(scores, 4, { order: 'score' }).indices.toArray()).toEqual([2, 3, 6, 5]);
    expect(topkSync(scores, 4).indices.toArray()).toEqual([2, 3, 5, 6]);
    expect(topkSync(scores, 6, { order: 'score' }).indices.toArray()).toEqual([2, 3, 6, 5, 0, 4]);
    expect(topkSync(scores, 7, { order: 'score' }).indices.toArray()).toEqual([2, 3, 6, 5, 0, 4, 1]);
    const { values } = topkSync(scores, 7, { order: 'score' });
    expect(values!.toArray()).toEqual([3, 3, 3, 2, 1, -Infinity, NaN]);
  });

  test('all NaN: lower indices first', () => {
    const r = topkSync({ data: new Float32Array(5).fill(NaN), shape: [1, 5] }, 2, { order: 'score' });
    expect(r.indices.toArray()).toEqual([0, 1]);
    expect(r.indices.shape).toEqual([1, 2]);
  });

  test('-0 and +0 tie', () => {
    expect(topkSync({ data: Float32Array.of(-0, 0, -0), shape: [3] }, 2, { order: 'score' }).indices.toArray()).toEqual([0, 1]);
  });

  const cases: Array<[number, number, number, FloatDType]> = [
    [1, 1, 1, 'f32'],
    [3, 2, 2, 'f16'],
    [2, 7, 3, 'bf16'],
    [4, 577, 144, 'f32'],
    [2, 1031, 1031, 'f16'],
    [3, 1031, 1, 'bf16'],
    [2, 4784, 1196, 'f32'],
  ];
  for (const [B, N, k, dtype] of cases) {
    for (const order of ['index', 'score'] as const) {
      test(`B${B} N${N} k${k} ${dtype} order=${order} (with heavy ties and NaN)`, async () => {
        const r = rng(B * 1000 + N + k);
        // Coarse values force many exact ties; a few NaN and ±Infinity.
        const v = Array.from({ length: B * N }, () => {
          const u = r();
          if (u < 0.03) return NaN;
          if (u < 0.05) return u < 0.04 ? Infinity : -Infinity;
          return Math.floor(r() * 20) / 4;
        });
        const t = makeTensor(v, [B, N], dtype);
        const want = refTopk(t.exact, B, N, k, order);
        const res = await topk(t.t, k, { order });
        expect(res.indices.shape).toEqual([B, k]);
        expect(res.indices.toArray()).toEqual(want);
        expect(res.values!.toArray()).toEqual(want.map((i, n) => t.exact[Math.floor(n / k) * N + i]));
        const sync = topkSync(t.t, k, { order, values: false });
        expect(sync.values).toBeUndefined();
        expect(sync.indices.toArray()).toEqual(want);
      });
    }
  }

  test('values spread over every magnitude and sign (the radix step on the top bits of the key: buckets below, inside and above the cut)', () => {
    for (const [B, N, k, seed] of [[1, 12544, 1254, 1], [2, 3001, 1500, 2], [3, 2049, 7, 3], [1, 4096, 4095, 4]]) {
      const r = rng(seed);
      const v = Float32Array.from({ length: B * N }, (_, i) => {
        if (i % 97 === 5) return i % 2 ? 0 : -0;
        if (i % 101 === 7) return (r() - 0.5) * 2 ** -140; // subnormal
        return (r() - 0.5) * 2 ** Math.floor(r() * 60 - 30);
      });
      const want = refTopk(Array.from(v), B, N, k, 'index');
      expect(topkSync({ data: v, shape: [B, N] }, k).indices.toArray()).toEqual(want);
      expect(topkSync({ data: v, shape: [B, N] }, k, { order: 'score' }).indices.toArray()).toEqual(refTopk(Array.from(v), B, N, k, 'score'));
    }
  });

  test('score rows with a row stride are read in place; a strided last dimension is rejected', () => {
    const base = Float32Array.from(randn(5 * 3, 3));
    const view = { data: base, shape: [1, 5], strides: [0, 3], offset: 1 };
    // strides[1] = 3 is not contiguous: rejected rather than silently copied
    expect(() => topkSync(view, 2)).toThrow(/contiguous/);
    const rows = { data: base, shape: [3, 4], strides: [5, 1], offset: 0 };
    const got = topkSync(rows, 2, { order: 'score' }).indices.toArray();
    const dense = [0, 1, 2].flatMap((b) => Array.from(base.subarray(b * 5, b * 5 + 4)));
    expect(got).toEqual(refTopk(dense, 3, 4, 2, 'score'));
  });
});

describe('gather', () => {
  const dtypes: Array<['f32' | 'f16' | 'bf16' | 'i32' | 'i64' | 'i8' | 'u8', (n: number) => ArrayLike<number | bigint>]> = [
    ['f32', (n) => Float32Array.from(randn(n, n))],
    ['f16', (n) => Uint16Array.from({ length: n }, (_, i) => (i * 7919) & 0xffff)],
    ['bf16', (n) => Uint16Array.from({ length: n }, (_, i) => (i * 104729) & 0xffff)],
    ['i32', (n) => Int32Array.from({ length: n }, (_, i) => i * 31 - 500)],
    ['i64', (n) => BigInt64Array.from({ length: n }, (_, i) => BigInt(i) * 123456789123n - 7n)],
    ['i8', (n) => Int8Array.from({ length: n }, (_, i) => ((i * 13) % 256) - 128)],
    ['u8', (n) => Uint8Array.from({ length: n }, (_, i) => (i * 17) & 0xff)],
  ];
  for (const [dtype, make] of dtypes) {
    test(`${dtype}: B3 N7 C5, K4 with repeats`, async () => {
      const [B, N, C, K] = [3, 7, 5, 4];
      const data = make(B * N * C) as Tensor['data'];
      const x = { data, shape: [B, N, C], dtype };
      const idx = Int32Array.of(6, 0, 0, 3, 1, 1, 1, 1, 5, 2, 6, 4);
      const out = await gather(x, { data: idx, shape: [B, K] });
      expect(out.shape).toEqual([B, K, C]);
      expect(out.dtype).toBe(dtype);
      expect(Array.from(out.data as ArrayLike<number | bigint>)).toEqual(refGather(data as ArrayLike<number | bigint>, B, N, C, idx, K));
    });
  }

  test('2-D x with 1-D indices, large C, and a strided x view', () => {
    const N = 577, C = 1031;
    const x = Float32Array.from(randn(N * C, 9));
    const idx = Int32Array.from({ length: 58 }, (_, i) => (i * 97) % N);
    const out = gatherSync({ data: x, shape: [N, C] }, { data: idx, shape: [58] });
    expect(out.shape).toEqual([58, C]);
    expect(Array.from(out.data as Float32Array)).toEqual(refGather(x, 1, N, C, idx, 58));
    // every other token of a [1, 2N, C] buffer
    const big = new Float32Array(2 * N * C);
    for (let n = 0; n < N; n++) big.set(x.subarray(n * C, (n + 1) * C), 2 * n * C);
    const strided = gatherSync({ data: big, shape: [1, N, C], strides: [2 * N * C, 2 * C, 1] }, { data: idx, shape: [1, 58] });
    expect(Array.from(strided.data as Float32Array)).toEqual(refGather(x, 1, N, C, idx, 58));
  });

  test('out: a caller-provided tensor is written whole and returned, batched and with 1-D indices, sync and async', async () => {
    const [B, N, C, K] = [3, 7, 5, 4];
    const data = Float32Array.from(randn(B * N * C, 21));
    const idx = Int32Array.of(6, 0, 0, 3, 1, 1, 1, 1, 5, 2, 6, 4);
    const out = Tensor.from({ data: new Float32Array(B * K * C).fill(NaN), shape: [B, K, C] });
    expect(await gather({ data, shape: [B, N, C] }, { data: idx, shape: [B, K] }, { out })).toBe(out);
    expect(Array.from(out.data as Float32Array)).toEqual(refGather(data, B, N, C, idx, K));
    const flat = Tensor.from({ data: new Float32Array(K * C).fill(NaN), shape: [K, C] });
    expect(gatherSync({ data: data.subarray(0, N * C), shape: [N, C] }, { data: idx.subarray(0, K), shape: [K] }, { out: flat })).toBe(flat);
    expect(Array.from(flat.data as Float32Array)).toEqual(refGather(data, 1, N, C, idx, K));
  });

  test('out: bad shape, dtype, layout, shared memory, too short, disposed', () => {
    const [B, N, C, K] = [2, 7, 5, 3];
    const data = new Float32Array(B * N * C + B * K * C);
    const x = { data: data.subarray(0, B * N * C), shape: [B, N, C] };
    const idx = { data: Int32Array.of(0, 1, 2, 3, 4, 5), shape: [B, K] };
    expectCode(() => gatherSync(x, idx, { out: { data: new Float32Array(B * (K + 1) * C), shape: [B, K + 1, C] } }), RangeError, 'ERR_SHAPE');
    expectCode(() => gatherSync(x, idx, { out: { data: new Float32Array(K * C), shape: [K, C] } }), RangeError, 'ERR_SHAPE');
    expectCode(() => gatherSync(x, idx, { out: { data: new Int32Array(B * K * C), shape: [B, K, C] } }), TypeError, 'ERR_DTYPE');
    const wide = Tensor.from({ data: new Float32Array(B * K * (C + 1)), shape: [B, K, C + 1] });
    expectCode(() => gatherSync(x, idx, { out: wide.view([B, K, C], wide.strides) }), Error, 'ERR_UNSUPPORTED', /contiguous/);
    expectCode(() => gatherSync(x, idx, { out: { data: new Float32Array(B * K * C - 1), shape: [B, K, C] } }), RangeError, 'ERR_RANGE');
    expectCode(() => gatherSync(x, idx, { out: { data: data.subarray(B * N * C - 1), shape: [B, K, C] } }), TypeError, 'ERR_ARG', /share memory/);
    const gone = Tensor.from({ data: new Float32Array(B * K * C), shape: [B, K, C] });
    gone.dispose();
    expectCode(() => gatherSync(x, idx, { out: gone }), Error, 'ERR_DISPOSED');
    // A bad index is refused before anything is written.
    const keep = Tensor.from({ data: new Float32Array(B * K * C).fill(7), shape: [B, K, C] });
    expectCode(() => gatherSync(x, { data: Int32Array.of(0, 1, 2, 3, 4, 7), shape: [B, K] }, { out: keep }), RangeError, 'ERR_RANGE');
    expect(Array.from(keep.data as Float32Array).every((v) => v === 7)).toBe(true);
  });
});

// The selection rule of README "CPU and GPU: tolerance and ties", as the GPU
// tests apply it (test/cuda-methods.test.ts): checked here on hand-made cases
// and on the CPU's own top-k, so that it can fail.
describe('the selection rule', () => {
  test('indices may differ only within the gap of the cut', () => {
    const s = [5, 4, 3.00002, 3, 1];
    const of = (i: number): number => s[i];
    expect(selectionOutsideGap([0, 1], [1, 0], of)).toEqual([]);  // order is free
    expect(selectionOutsideGap([0, 1], [0, 2], of)).toEqual([2]);  // 3.00002 is far below the cut 4
    expect(selectionOutsideGap([0, 1, 2], [0, 1, 3], of)).toEqual([]);  // 3 vs 3.00002: 6.7e-6 relative
    expect(selectionOutsideGap([0, 1, 2], [0, 1, 4], of)).toEqual([4]);
    expect(selectionOutsideGap([0, 1], [0, 0], of)).not.toEqual([]);  // a repeat
    expect(selectionOutsideGap([0, 1], [0], of)).not.toEqual([]);  // a different count
    const z = [1, 2e-9, 1e-9];  // near 0 the floor (1e-3) applies
    expect(selectionOutsideGap([0, 1], [0, 2], (i) => z[i])).toEqual([]);
  });

  test("a CPU top-k keeps to the rule against itself; a swap across a wide cut breaks it", () => {
    const n = 577;
    const k = 58;
    const scores = Float32Array.from(randn(n, 4242));
    const idx = Array.from(topkSync({ data: scores, shape: [1, n] }, k).indices.toArray());
    const of = (i: number): number => scores[i];
    expect(selectionOutsideGap(idx, idx, of)).toEqual([]);
    const order = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b);
    expect(new Set(idx)).toEqual(new Set(order.slice(0, k)));
    const swapped = order.slice(0, k - 1).concat(order[k + 20]);  // the 79th in place of the 58th
    expect(selectionOutsideGap(idx, swapped, of)).toEqual([order[k + 20]]);
  });
});
