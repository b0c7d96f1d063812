/**
 * BlockMask: the three factories agree with each other and with the float64
 * reference lists, toDense round-trips, density honours broadcasting, and
 * every malformed input is refused with its code, naming the function called.
 */
import { BlockMask, Tensor, TokenSieveError } from '../lib';
import { describeCuda, expectCode, rng } from './helpers';
import { refDenseToLists, refListsToDense, refPad } from './reference/blockmask';

/** A random 0/1 mask [rows, nK] with about `p` density, some rows empty, some full. */
function randomDense(rows: number, nK: number, p: number, seed: number): Uint8Array {
  const r = rng(seed);
  const out = new Uint8Array(rows * nK);
  for (let i = 0; i < rows; i++) {
    const kind = r();
    for (let j = 0; j < nK; j++) out[i * nK + j] = kind < 0.1 ? 0 : kind < 0.2 ? 1 : r() < p ? 1 : 0;
  }
  return out;
}

function toCSR(lists: number[][]): { indptr: Int32Array; indices: Int32Array } {
  const indptr = new Int32Array(lists.length + 1);
  lists.forEach((l, r) => (indptr[r + 1] = indptr[r] + l.length));
  return { indptr, indices: Int32Array.from(lists.flat()) };
}

const i32 = (data: ArrayLike<number>, shape: number[]) => ({ data: Int32Array.from(data), shape, dtype: 'i32' as const });

describe('BlockMask factories agree', () => {
  // [Bm, Hm, seqQ, seqK, blockQ, blockK]: tails, primes, one block, non-square blocks
  const cases: Array<[number, number, number, number, number, number]> = [
    [1, 1, 1, 1, 64, 64],
    [1, 3, 449, 449, 64, 64],
    [2, 1, 130, 257, 128, 64],
    [3, 2, 97, 61, 16, 7],
    [2, 5, 17776, 17776, 2048, 4096],
  ];
  for (const [Bm, Hm, sq, sk, bq, bk] of cases) {
    test(`[${Bm}, ${Hm}] seqLens [${sq}, ${sk}] blocks ${bq}x${bk}`, () => {
      const nQ = Math.ceil(sq / bq);
      const nK = Math.ceil(sk / bk);
      const rows = Bm * Hm * nQ;
      const dense = randomDense(rows, nK, 0.4, Bm * 100 + Hm * 10 + nQ);
      const ref = refDenseToLists(dense, rows, nK);
      const seqLens: [number, number] = [sq, sk];

      const a = BlockMask.fromDense({ data: dense, shape: [Bm, Hm, nQ, nK] }, { blockQ: bq, blockK: bk, seqLens });
      expect(a.toDense().toArray()).toEqual(Array.from(dense));
      expect(a.blockShape).toEqual([Bm, Hm, nQ, nK]);
      expect(a.shape).toEqual([Bm, Hm, sq, sk]);
      expect(a.kvNumBlocks.toArray()).toEqual(ref.counts);
      const L = a.kvIndices.shape[3];
      expect(L).toBe(Math.max(1, ...ref.counts));
      const idx = a.kvIndices.toArray();
      for (let r = 0; r < rows; r++) expect(idx.slice(r * L, r * L + ref.counts[r])).toEqual(ref.lists[r]);

      // lists padded past nK with garbage: padding is never read
      const padded = refPad(ref.lists, nK + 2);
      const b = BlockMask.fromKvBlocks({
        kvNumBlocks: i32(padded.counts, [Bm, Hm, nQ]), kvIndices: i32(padded.indices, [Bm, Hm, nQ, nK + 2]), blockQ: bq, blockK: bk, seqLens,
      });
      expect(b.toDense().toArray()).toEqual(Array.from(dense));

      const csr = toCSR(ref.lists);
      const c = BlockMask.fromCSR({ ...csr, shape: [Bm, Hm, nQ, nK], blockQ: bq, blockK: bk, seqLens });
      expect(c.toDense().toArray()).toEqual(Array.from(dense));

      // the same mask split into disjoint partial and full lists
      const split = ref.lists.map((l) => ({ p: l.filter((_, t) => t % 2 === 0), f: l.filter((_, t) => t % 2 === 1) }));
      const pp = refPad(split.map((s) => s.p), Math.max(1, ...split.map((s) => s.p.length)));
      const ff = refPad(split.map((s) => s.f), nK);
      const d = BlockMask.fromKvBlocks({
        kvNumBlocks: i32(pp.counts, [Bm, Hm, nQ]), kvIndices: i32(pp.indices, [Bm, Hm, nQ, pp.indices.length / rows]),
        fullKvNumBlocks: i32(ff.counts, [Bm, Hm, nQ]), fullKvIndices: i32(ff.indices, [Bm, Hm, nQ, nK]), blockQ: bq, blockK: bk, seqLens,
      });
      expect(d.toDense().toArray()).toEqual(refListsToDense(split.map((s) => s.p), nK, split.map((s) => s.f)));
      expect(d.toDense().toArray()).toEqual(Array.from(dense));
      expect(d.fullKvNumBlocks!.toArray()).toEqual(split.map((s) => s.f.length));

      const kept = dense.reduce((s, x) => s + x, 0);
      for (const m of [a, b, c, d]) expect(m.density()).toBeCloseTo(kept / (rows * nK), 12);
      expect(a.sparsity()).toBeCloseTo(100 * (1 - kept / (rows * nK)), 10);
    });
  }
});

describe('BlockMask semantics', () => {
  test('hand-checked: Int32Array inputs are one mask [1, 1, nQ] shared by batch and heads', () => {
    // seqLens [100, 150], blocks 64: nQ = 2, nK = 3
    const m = BlockMask.fromKvBlocks({ kvNumBlocks: Int32Array.of(1, 2), kvIndices: Int32Array.of(2, 0, 0, 1, 2, 0), blockQ: 64, seqLens: [100, 150] });
    expect(m.blockShape).toEqual([1, 1, 2, 3]);
    expect(m.kvIndices.shape).toEqual([1, 1, 2, 3]);
    expect(m.toDense().toArray()).toEqual([0, 0, 1, 0, 1, 1]); // row 0: [2]; row 1: [1, 2]
    expect(m.density()).toBeCloseTo(3 / 6, 15);
    expect(m.blockK).toBe(64);
    expect(m.device).toBe('cpu');
  });

  test('an Int32Array of indices takes the rows of a [Bm, Hm, nQ] counts tensor', () => {
    const m = BlockMask.fromKvBlocks({ kvNumBlocks: i32([1, 0, 2, 1], [2, 1, 2]), kvIndices: Int32Array.of(1, 0, 0, 0, 0, 1, 1, 0), blockQ: 4, seqLens: [8, 8] });
    expect(m.kvIndices.shape).toEqual([2, 1, 2, 2]);
    expect(m.toDense().toArray()).toEqual([0, 1, 0, 0, 1, 1, 0, 1]);
  });

  test('defaults: blockQ 128 (FlexAttention), blockK = blockQ; fromDense seqLens = whole blocks', () => {
    const m = BlockMask.fromKvBlocks({ kvNumBlocks: Int32Array.of(1), kvIndices: Int32Array.of(0), seqLens: [128, 128] });
    expect([m.blockQ, m.blockK]).toEqual([128, 128]);
    const d = BlockMask.fromDense({ data: Uint8Array.of(1, 0, 1, 1), shape: [2, 2] }, { blockQ: 64, blockK: 32 });
    expect(d.seqLens).toEqual([128, 64]);
    expect(d.blockShape).toEqual([1, 1, 2, 2]);
  });

  test('rows with no block are allowed, and count in density', () => {
    const m = BlockMask.fromDense({ data: Uint8Array.of(0, 0, 0, 1, 1, 0), shape: [1, 1, 2, 3] }, { blockQ: 8 });
    expect(m.kvNumBlocks.toArray()).toEqual([0, 2]);
    expect(m.density()).toBeCloseTo(2 / 6, 15);
    const empty = BlockMask.fromDense({ data: new Uint8Array(4), shape: [1, 1, 2, 2] }, { blockQ: 8 });
    expect(empty.density()).toBe(0);
    expect(empty.kvIndices.shape).toEqual([1, 1, 2, 1]);
  });

  test('a mask broadcast over heads has the density of its expansion', () => {
    const one = randomDense(5, 7, 0.3, 11);
    const expanded = new Uint8Array(4 * 5 * 7);
    for (let h = 0; h < 4; h++) expanded.set(one, h * 35);
    const a = BlockMask.fromDense({ data: one, shape: [1, 1, 5, 7] }, { blockQ: 16 });
    const b = BlockMask.fromDense({ data: expanded, shape: [1, 4, 5, 7] }, { blockQ: 16 });
    expect(a.density()).toBeCloseTo(b.density(), 15);
    expect(a.density()).toBeGreaterThan(0);
  });

  test('owns copies: mutating the inputs afterwards changes nothing', () => {
    const counts = Int32Array.of(1, 1);
    const idx = Int32Array.of(0, 1);
    const m = BlockMask.fromKvBlocks({ kvNumBlocks: counts, kvIndices: idx, blockQ: 4, seqLens: [8, 8] });
    counts[0] = 2;
    idx[1] = 0;
    expect(m.toDense().toArray()).toEqual([1, 0, 0, 1]);
    expect(m.kvIndices.toArray()).toEqual([0, 1]);
  });

  test('strided and offset tensors are read as their values', () => {
    // a [1, 1, 2, 2] view every other element of a longer buffer, starting at 1
    const data = Uint8Array.of(9, 1, 9, 0, 9, 1, 9, 1);
    const m = BlockMask.fromDense({ data, shape: [1, 1, 2, 2], strides: [8, 8, 4, 2], offset: 1 }, { blockQ: 4 });
    expect(m.toDense().toArray()).toEqual([1, 0, 1, 1]);
  });

  test('to(cpu) is the mask itself; dispose is final and idempotent', () => {
    const m = BlockMask.fromDense({ data: Uint8Array.of(1), shape: [1, 1] }, { blockQ: 4 });
    expect(m.to('cpu')).toBe(m);
    m.dispose();
    m.dispose();
    expect(m.disposed).toBe(true);
    expectCode(() => m.toDense(), TokenSieveError, 'ERR_DISPOSED', /BlockMask.toDense/);
    expectCode(() => m.density(), TokenSieveError, 'ERR_DISPOSED');
    expect(String(m)).toMatch(/disposed/);
  });

  test('cannot be constructed directly', () => {
    const Ctor = BlockMask as unknown as new (t: symbol, i: object) => BlockMask;
    expectCode(() => new Ctor(Symbol('x'), {}), TokenSieveError, 'ERR_ARG');
  });
});

describe('BlockMask refuses malformed input, naming the function called', () => {
  const seqLens: [number, number] = [100, 150]; // nQ = 2, nK = 3 with blocks of 64
  const kv = (counts: number[], indices: number[], L = 3, extra: object = {}) => () =>
    BlockMask.fromKvBlocks({ kvNumBlocks: i32(counts, [1, 1, 2]), kvIndices: i32(indices, [1, 1, 2, L]), blockQ: 64, seqLens, ...extra });

  test('lists: unsorted, duplicate, out of range, count outside [0, L]', () => {
    const F = /^BlockMask\.fromKvBlocks: /;
    expect(kv([2, 1], [0, 2, 0, 1, 0, 0])()).toBeInstanceOf(BlockMask); // the valid baseline
    expectCode(kv([2, 1], [2, 0, 0, 1, 0, 0]), RangeError, 'ERR_RANGE', /strictly ascending/);
    expectCode(kv([2, 1], [1, 1, 0, 1, 0, 0]), RangeError, 'ERR_RANGE', /duplicate/);
    expectCode(kv([2, 1], [0, 3, 0, 1, 0, 0]), RangeError, 'ERR_RANGE', /kvIndices\[0, 0, 0, 1\] = 3 is outside \[0, 3\)/);
    expectCode(kv([1, 1], [0, 0, 0, -1, 0, 0]), RangeError, 'ERR_RANGE', /outside/);
    expectCode(kv([4, 1], [0, 1, 2, 0, 0, 0]), RangeError, 'ERR_RANGE', /kvNumBlocks\[0, 0, 0\] = 4 is outside \[0, 3\]/);
    expectCode(kv([1, -1], [0, 1, 2, 0, 0, 0]), RangeError, 'ERR_RANGE', /outside/);
    for (const f of [kv([2, 1], [2, 0, 0, 1, 0, 0]), kv([4, 1], [0, 1, 2, 0, 0, 0])]) expectCode(f, RangeError, 'ERR_RANGE', F);
  });

  test('partial and full lists must be disjoint and shaped alike', () => {
    const full = (counts: number[], indices: number[], shape = [1, 1, 2]) => ({ fullKvNumBlocks: i32(counts, shape), fullKvIndices: i32(indices, [...shape, 2]) });
    expect(kv([1, 1], [0, 0, 0, 1, 0, 0], 3, full([1, 1], [2, 0, 0, 0]))()).toBeInstanceOf(BlockMask);
    expectCode(kv([1, 1], [0, 0, 0, 1, 0, 0], 3, full([1, 2], [2, 0, 0, 1])), RangeError, 'ERR_RANGE', /kv block 1 of row \[0, 0, 1\] is in both/);
    expectCode(kv([1, 1], [0, 0, 0, 1, 0, 0], 3, full([1, 1, 1, 1], [2, 0, 0, 0, 2, 0, 0, 0], [1, 2, 2])), RangeError, 'ERR_SHAPE');
    expectCode(kv([1, 1], [0, 0, 0, 1, 0, 0], 3, { fullKvNumBlocks: i32([1, 1], [1, 1, 2]) }), TypeError, 'ERR_ARG', /together/);
    expectCode(kv([1, 1], [0, 0, 0, 1, 0, 0], 3, full([1, 1], [3, 0, 0, 0])), RangeError, 'ERR_RANGE', /fullKvIndices/);
  });

  test('shapes and dtypes', () => {
    const base = { blockQ: 64, seqLens };
    // nQ must be ⌈100 / 64⌉ = 2
    expectCode(() => BlockMask.fromKvBlocks({ ...base, kvNumBlocks: i32([1, 1, 1], [1, 1, 3]), kvIndices: i32([0, 0, 0], [1, 1, 3, 1]) }), RangeError, 'ERR_SHAPE', /nQ/);
    expectCode(() => BlockMask.fromKvBlocks({ ...base, kvNumBlocks: i32([1, 1], [2]), kvIndices: i32([0, 0], [2, 1]) }), RangeError, 'ERR_SHAPE', /rank 3/);
    expectCode(() => BlockMask.fromKvBlocks({ ...base, kvNumBlocks: i32([1, 1], [1, 1, 2]), kvIndices: i32([0, 0], [1, 2, 1, 1]) }), RangeError, 'ERR_SHAPE', /kvIndices of shape \[1, 1, 2, L\]/);
    expectCode(() => BlockMask.fromKvBlocks({ ...base, kvNumBlocks: Int32Array.of(1, 1), kvIndices: Int32Array.of(0, 0, 0) }), RangeError, 'ERR_SHAPE', /not a multiple of Bm·Hm·nQ = 2/);
    expectCode(() => BlockMask.fromKvBlocks({ ...base, kvNumBlocks: { data: Float32Array.of(1, 1), shape: [1, 1, 2] }, kvIndices: Int32Array.of(0, 0) }), TypeError, 'ERR_DTYPE', /i32 for kvNumBlocks/);
    expectCode(() => BlockMask.fromKvBlocks({ ...base, kvNumBlocks: [1, 1] as unknown as Int32Array, kvIndices: Int32Array.of(0, 0) }), TypeError, 'ERR_ARG');
    expectCode(() => BlockMask.fromKvBlocks({ ...base, kvNumBlocks: Int32Array.of(1, 1) } as never), TypeError, 'ERR_ARG', /required/);
    expectCode(() => BlockMask.fromKvBlocks({ ...base, kvNumBlocks: Int32Array.of(1, 1), kvIndices: Int32Array.of(0, 0), blockSize: 64 } as never), TypeError, 'ERR_ARG', /unknown option 'blockSize'/);
  });

  test('block sizes and seqLens', () => {
    const mk = (o: object) => () => BlockMask.fromKvBlocks({ kvNumBlocks: Int32Array.of(1), kvIndices: Int32Array.of(0), seqLens: [64, 64], ...o });
    expectCode(mk({ blockQ: 0 }), RangeError, 'ERR_RANGE', /blockQ/);
    expectCode(mk({ blockQ: 64, blockK: -64 }), RangeError, 'ERR_RANGE', /blockK/);
    expectCode(mk({ blockQ: 63.5 }), TypeError, 'ERR_ARG', /blockQ/);
    expectCode(mk({ blockQ: NaN }), TypeError, 'ERR_ARG');
    expectCode(mk({ blockQ: 64, seqLens: [64] }), TypeError, 'ERR_ARG', /seqLens/);
    expectCode(mk({ blockQ: 64, seqLens: [0, 64] }), RangeError, 'ERR_RANGE', /seqLens\[0\]/);
    expectCode(mk({ blockQ: 64, seqLens: [65, 64] }), RangeError, 'ERR_SHAPE', /\[Bm, Hm, 2\]/); // nQ = 2, one count given
  });

  test('fromDense: u8 only, 0/1 only, seqLens consistent with the block grid', () => {
    const d = (data: ArrayLike<number>, shape: number[]) => ({ data: Uint8Array.from(data), shape });
    expectCode(() => BlockMask.fromDense({ data: Int32Array.of(1), shape: [1, 1] }, { blockQ: 4 }), TypeError, 'ERR_DTYPE', /^BlockMask\.fromDense: .*u8/);
    expectCode(() => BlockMask.fromDense(d([1, 2, 0, 1], [2, 2]), { blockQ: 4 }), RangeError, 'ERR_RANGE', /dense\[0, 0, 0, 1\] = 2/);
    expectCode(() => BlockMask.fromDense(d([1, 0, 0], [3]), { blockQ: 4 }), RangeError, 'ERR_SHAPE', /rank 4/);
    expectCode(() => BlockMask.fromDense(d([], [1, 1, 0, 2]), { blockQ: 4 }), RangeError, 'ERR_SHAPE');
    expectCode(() => BlockMask.fromDense(d([1, 1], [1, 2]), { blockQ: 4, seqLens: [4, 9] }), RangeError, 'ERR_SHAPE', /give 1x3 blocks but dense has 1x2/);
    expectCode(() => BlockMask.fromDense(d([1], [1, 1]), undefined as never), TypeError, 'ERR_ARG', /required/);
    expectCode(() => BlockMask.fromDense(d([1], [1, 1]), { blockK: 4 } as never), TypeError, 'ERR_ARG', /blockQ/);
  });

  test('fromCSR: indptr well formed, rows valid', () => {
    const shape: [number, number, number, number] = [1, 2, 2, 3]; // 4 rows, nK = 3
    const c = (indptr: number[], indices: number[]) => () => BlockMask.fromCSR({ indptr: Int32Array.from(indptr), indices: Int32Array.from(indices), shape, blockQ: 8 });
    expect(c([0, 1, 1, 3, 4], [2, 0, 1, 0])().toDense().toArray()).toEqual([0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0]);
    expectCode(c([0, 1, 1, 3], [2, 0, 1]), RangeError, 'ERR_SHAPE', /indptr of shape \[5\]/);
    expectCode(c([1, 1, 1, 3, 4], [2, 0, 1, 0]), RangeError, 'ERR_RANGE', /indptr\[0\] must be 0/);
    expectCode(c([0, 2, 1, 3, 4], [2, 0, 1, 0]), RangeError, 'ERR_RANGE', /non-decreasing/);
    expectCode(c([0, 1, 1, 3, 5], [2, 0, 1, 0]), RangeError, 'ERR_RANGE', /length of indices/);
    expectCode(c([0, 1, 1, 3, 4], [2, 1, 0, 0]), RangeError, 'ERR_RANGE', /^BlockMask\.fromCSR: kvIndices\[0, 1, 0\] must be strictly ascending/);
    expectCode(c([0, 4, 4, 4, 4], [0, 1, 2, 2]), RangeError, 'ERR_RANGE', /lists 4 kv blocks but there are only nK = 3/);
    expectCode(c([0, 1, 1, 3, 4], [2, 0, 1, 3]), RangeError, 'ERR_RANGE', /outside \[0, 3\)/);
    expectCode(() => BlockMask.fromCSR({ indptr: Int32Array.of(0, 0), indices: new Int32Array(0), shape: [1, 1, 1] as never, blockQ: 8 }), TypeError, 'ERR_ARG', /shape/);
  });
});

describeCuda('BlockMask on CUDA', () => {
  test('to(cuda) copies the lists; toDense and density read the host copy; fromDense of a device tensor stays there', () => {
    const dense = randomDense(2 * 3 * 5, 7, 0.5, 3);
    const m = BlockMask.fromDense({ data: dense, shape: [2, 3, 5, 7] }, { blockQ: 64, seqLens: [300, 420] });
    const g = m.to('cuda:0');
    expect(g.device).toBe('cuda:0');
    expect(g.kvIndices.device).toBe('cuda:0');
    expect(g.kvNumBlocks.toArray()).toEqual(m.kvNumBlocks.toArray());
    expect(g.toDense().toArray()).toEqual(Array.from(dense));
    const onDevice = Tensor.from({ data: dense, shape: [2, 3, 5, 7] }, { device: 'cuda:0' });
    const h = BlockMask.fromDense(onDevice, { blockQ: 64, seqLens: [300, 420] });
    expect(h.device).toBe('cuda:0');
    expect(h.toDense().toArray()).toEqual(Array.from(dense));
    g.dispose();
    h.dispose();
    expect(g.kvIndices.disposed).toBe(true);
    expect(m.kvIndices.disposed).toBe(false);
    onDevice.dispose();
  });
});
