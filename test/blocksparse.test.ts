/**
 * blockSparseAttention, blockAttentionMass, blockPool and applyReorder
 * against the float64 references of test/reference/blocksparse.ts, on
 * random inputs of awkward sizes, every dtype and both layouts, GQA, empty
 * rows and masks at 5–50% density; the identities of specs/blocksparse.md
 * §6d; bad input. CUDA parity: test/cuda-blocksparse.test.ts.
 */
import {
  BlockMaskLike,
  FloatDType,
  applyReorder,
  applyReorderSync,
  blockAttentionMass,
  blockAttentionMassSync,
  blockPoolSync,
  blockSparseAttention,
  blockSparseAttentionSync,
} from '../lib';
import { expectClose, expectCode, expectReject, makeTensor, randn } from './helpers';
import { fromBnhd, maskOf, outValues, permutation, problem, randomKeep, roundTo, toBnhd, tol } from './blocksparse-fixtures';
import { refApplyReorder, refBlockAttentionMass, refBlockPool, refBlockSparseAttention } from './reference/blocksparse';
import { TokenSieveError } from '../lib/errors';
import { native } from '../lib/native';

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

describe('blockSparseAttention against float64', () => {
  const cases: Array<[string, number, number, number, number, number, number, FloatDType, 'bhnd' | 'bnhd', number, number, number]> = [
    // name, B, Hq, Hkv, N, Nk, D, dtype, layout, blockQ, blockK, density
    ['one token', 1, 1, 1, 1, 1, 8, 'f32', 'bhnd', 64, 64, 1],
    ['63 tokens, prime blocks', 1, 2, 2, 63, 63, 16, 'f32', 'bhnd', 17, 13, 0.5],
    ['65 tokens GQA 4:1, bnhd', 2, 4, 1, 65, 65, 24, 'f32', 'bnhd', 64, 64, 0.5],
    ['N != Nk, f16', 1, 2, 1, 37, 101, 32, 'f16', 'bhnd', 8, 16, 0.3],
    ['bf16 bnhd, 5% density', 1, 3, 3, 130, 130, 20, 'bf16', 'bnhd', 16, 16, 0.05],
    ['f16 d64 200 tokens, 20%', 1, 2, 2, 200, 200, 64, 'f16', 'bhnd', 64, 64, 0.2],
    ['f32 d80 tail 48 of 64', 1, 1, 1, 112, 112, 80, 'f32', 'bhnd', 64, 64, 0.5],
    // bf16 on the bf16 dot tile (where the CPU has it): an odd key block
    // (P·V back on the f32 tile), odd D and Nk; then even blocks with a last
    // block of 3 keys, 5 value panels (one alone) and GQA heads sharing the
    // key and value pairs.
    ['bf16 GQA 3:1, D 33, Nk 101, blocks of 13 keys', 1, 3, 1, 45, 101, 33, 'bf16', 'bhnd', 16, 13, 0.6],
    ['bf16 GQA 2:1, D 80, Nk 99, blocks of 32 keys', 2, 4, 2, 77, 99, 80, 'bf16', 'bnhd', 32, 32, 0.7],
  ];
  for (const [name, B, Hq, Hkv, N, Nk, D, dtype, layout, bq, bk, density] of cases) {
    test(name, () => {
      const p = problem(B, Hq, Hkv, N, Nk, D, dtype, layout, N * 7 + D);
      const nQ = Math.ceil(N / bq), nK = Math.ceil(Nk / bk);
      const keep = density >= 1 ? () => true : randomKeep(N + D, B, Hq, nQ, nK, density, [0]);
      const mask = maskOf(B, Hq, N, Nk, bq, bk, keep);
      const scale = 1 / Math.sqrt(D);
      const r = blockSparseAttentionSync(p.q, p.k, p.v, mask, { layout, returnLse: true });
      const ref = refBlockSparseAttention({ q: p.qx, k: p.kx, v: p.vx, B, Hq, Hkv, N, Nk, D, scale, keep, blockQ: bq, blockK: bk, roundP: dtype === 'f32' ? undefined : roundTo(dtype) });
      expect(r.out.dtype).toBe(dtype);
      expect(r.out.shape).toEqual(p.q.shape);
      const { atol, rtol } = tol(dtype);
      expectClose(outValues(p, r.out), ref.out, atol, rtol, 'out');
      const lse = r.lse!.toArray();
      for (let i = 0; i < lse.length; i++) {
        if (ref.lse[i] === -Infinity) expect(lse[i]).toBe(-Infinity);
        else expect(Math.abs(lse[i] - ref.lse[i])).toBeLessThan(1e-4);
      }
      if (density < 1) {
        // row 0 (q-block 0 of head 0) keeps nothing: zeros and LSE −∞
        const o = outValues(p, r.out);
        for (let i = 0; i < Math.min(bq, N); i++) {
          for (let d = 0; d < D; d++) expect(o[i * D + d]).toBe(0);
          expect(lse[i]).toBe(-Infinity);
        }
      }
    });
  }

  test('an all-ones mask equals the dense path, and both equal float64 softmax attention', () => {
    const p = problem(2, 2, 1, 77, 77, 16, 'f32', 'bhnd', 5);
    const all = maskOf(1, 1, 77, 77, 16, 32, () => true);
    const a = blockSparseAttentionSync(p.q, p.k, p.v, all).out.toArray();
    const d = blockSparseAttentionSync(p.q, p.k, p.v, 'dense', { blockQ: 16, blockK: 32 }).out.toArray();
    expect(a).toEqual(d);
    const ref = refBlockSparseAttention({ q: p.qx, k: p.kx, v: p.vx, B: 2, Hq: 2, Hkv: 1, N: 77, Nk: 77, D: 16, scale: 0.25, keep: () => true, blockQ: 16, blockK: 32 });
    expectClose(a, ref.out, 2e-6, 1e-4, 'dense');
  });

  test('a mask broadcast over batch and heads equals the same mask spelled out per (b, h)', () => {
    const p = problem(2, 3, 3, 50, 50, 8, 'f32', 'bhnd', 9);
    const keep = randomKeep(3, 1, 1, 4, 4, 0.4);
    const one = blockSparseAttentionSync(p.q, p.k, p.v, maskOf(1, 1, 50, 50, 16, 16, keep)).out.toArray();
    const full = blockSparseAttentionSync(p.q, p.k, p.v, maskOf(2, 3, 50, 50, 16, 16, (b, h, i, j) => keep(0, 0, i, j))).out.toArray();
    expect(one).toEqual(full);
  });

  test('partial + full lists compute their union', () => {
    const p = problem(1, 2, 2, 64, 64, 8, 'f32', 'bhnd', 11);
    const keep = randomKeep(4, 1, 2, 4, 4, 0.6);
    const split = (b: number, h: number, i: number, j: number) => keep(b, h, i, j) && (i + j) % 2 === 0;
    const rest = (b: number, h: number, i: number, j: number) => keep(b, h, i, j) && (i + j) % 2 === 1;
    const a = maskOf(1, 2, 64, 64, 16, 16, split);
    const f = maskOf(1, 2, 64, 64, 16, 16, rest);
    const both = blockSparseAttentionSync(p.q, p.k, p.v, { ...a, fullKvNumBlocks: f.kvNumBlocks, fullKvIndices: f.kvIndices }).out.toArray();
    const union = blockSparseAttentionSync(p.q, p.k, p.v, maskOf(1, 2, 64, 64, 16, 16, keep)).out.toArray();
    expect(both).toEqual(union);
  });

  test('reordered: inv(attn(perm(q, k, v))) = attn(q, k, v) under a full mask, and a permuted-space mask is the permuted token mask', () => {
    const B = 1, H = 2, N = 90, D = 16;
    const p = problem(B, H, H, N, N, D, 'f32', 'bhnd', 21);
    const perm = permutation(H, N, 8);
    const dense = blockSparseAttentionSync(p.q, p.k, p.v, 'dense').out.toArray();
    const reordered = blockSparseAttentionSync(p.q, p.k, p.v, 'dense', { reorder: { perm } }).out.toArray();
    expectClose(reordered, dense, 1e-6, 1e-5, 'reordered dense');
    // The same through applyReorder by hand.
    const qp = applyReorderSync(p.q, perm), kp = applyReorderSync(p.k, perm), vp = applyReorderSync(p.v, perm);
    const inPerm = blockSparseAttentionSync(qp, kp, vp, 'dense').out;
    expectClose(applyReorderSync(inPerm, perm, { inverse: true }).toArray(), dense, 1e-6, 1e-5, 'by hand');
    // A block mask in permuted space = dense attention under the token mask M[perm[p], perm[p']].
    const keep = randomKeep(12, 1, H, 6, 6, 0.35, [1]);
    const r = blockSparseAttentionSync(p.q, p.k, p.v, maskOf(1, H, N, N, 16, 16, keep), { reorder: { perm }, returnLse: true });
    const ref = refBlockSparseAttention({ q: p.qx, k: p.kx, v: p.vx, B, Hq: H, Hkv: H, N, Nk: N, D, scale: 0.25, keep, blockQ: 16, blockK: 16, perm });
    expectClose(r.out.toArray(), ref.out, 2e-6, 1e-4, 'permuted mask');
    const lse = r.lse!.toArray();
    // q-block 1 of head 0 is empty: its 16 permuted positions map to original rows that are 0
    for (let pos = 16; pos < 32; pos++) expect(lse[perm[pos]]).toBe(-Infinity);
  });

  test("precision 'bf16' and 'f16' on f32 inputs round q, k, v and P like the tensor cores", () => {
    const p = problem(1, 2, 2, 70, 70, 32, 'f32', 'bhnd', 31);
    for (const precision of ['bf16', 'f16'] as const) {
      const r = blockSparseAttentionSync(p.q, p.k, p.v, 'dense', { precision });
      const round = roundTo(precision);
      const ref = refBlockSparseAttention({ q: p.qx.map(round), k: p.kx.map(round), v: p.vx.map(round), B: 1, Hq: 2, Hkv: 2, N: 70, Nk: 70, D: 32, scale: 1 / Math.sqrt(32), keep: () => true, blockQ: 64, blockK: 64, roundP: round });
      const t = tol(precision);
      expectClose(r.out.toArray(), ref.out, t.atol / 4, t.rtol / 4, precision);
    }
  });

  // P (and q, k, v) are rounded by isa().round_f16 / round_bf16 on vectors;
  // the f16 one must have the bits of core/dtype.h's scalar conversions.
  test('the vectorised rounding to f16 has the bits of f32_to_f16 then f16_to_f32 for every kind of value', () => {
    // f32 bit pattern -> f16 bits (nearest even, overflow to Inf, subnormals, NaN quieted) -> f32 bits.
    const toHalf = (x: number): number => {
      const sign = (x >>> 16) & 0x8000, exp = (x >>> 23) & 0xff;
      let mant = x & 0x7fffff;
      if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
      const e = exp - 127 + 15;
      if (e >= 0x1f) return sign | 0x7c00;
      if (e <= 0) {
        if (e < -10) return sign;
        mant |= 0x800000;
        const shift = 14 - e;
        let half = mant >>> shift;
        const rem = mant & ((1 << shift) - 1), mid = 1 << (shift - 1);
        if (rem > mid || (rem === mid && (half & 1))) half++;
        return sign | half;
      }
      let half = (e << 10) | (mant >>> 13);
      const rem = mant & 0x1fff;
      if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
      return sign | half;
    };
    const fromHalf = (h: number): number => {
      const sign = (h & 0x8000) << 16, exp = (h >>> 10) & 0x1f, mant = h & 0x3ff;
      if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
      if (exp > 0) return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
      if (mant === 0) return sign >>> 0;
      let e = -14, m = mant;  // subnormal: normalise
      while (!(m & 0x400)) { m <<= 1; e--; }
      return (sign | ((e + 127) << 23) | ((m & 0x3ff) << 13)) >>> 0;
    };
    const special = [0, 0x80000000, 1, 0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0xc77ff000, 0x7f7fffff, 0x33800000, 0x33800001,
      0x33000000, 0x33000001, 0x387fc000, 0x387fe000, 0x38800000, 0x3f801000, 0x3f803000, 0x3f800fff, 0x3f801001, 0x7f800000, 0xff800000,
      0x7f800001, 0x7fc00000, 0x7fbfffff, 0xffffffff, 0x007fffff];
    let s = 17;
    const next = (): number => (s = (Math.imul(s, 1103515245) + 12345) >>> 0);
    // 8k + 5 values: the vector loop and a scalar tail; random bit patterns
    // (every exponent, NaNs among them), then values near f16's range.
    const bits = new Uint32Array(8 * 2000 + 5);
    bits.set(special);
    for (let i = special.length; i < bits.length; i++) bits[i] = i % 2 ? next() : (((next() % 40) + 100) << 23 | (next() & 0x807fffff)) >>> 0;
    const got = new Uint32Array(native().roundCheck(new Float32Array(bits.buffer), 'f16').buffer);
    for (let i = 0; i < bits.length; i++) {
      const want = fromHalf(toHalf(bits[i]));
      if (got[i] !== want) throw new Error(`0x${bits[i].toString(16)} -> 0x${got[i].toString(16)}, want 0x${want.toString(16)}`);
    }
  });

  test("precision 'int8' against the same-mask f32 reference: cosine >= 0.999, relative L1 <= 0.02", () => {
    for (const [N, D, dtype] of [[130, 64, 'f32'], [200, 128, 'bf16'], [65, 80, 'f16']] as const) {
      const p = problem(1, 2, 1, N, N, D, dtype, 'bhnd', N + D);
      // A shared offset in k (what K smoothing removes) and varied q scales.
      const kx = p.kx.map((x, i) => x + 0.8 * Math.sin(i % D));
      const k = makeTensor(kx, [1, 1, N, D], dtype);
      const keep = randomKeep(N, 1, 2, Math.ceil(N / 64), Math.ceil(N / 64), 0.5);
      const mask = maskOf(1, 2, N, N, 64, 64, keep);
      const r = blockSparseAttentionSync(p.q, k.t, p.v, mask, { precision: 'int8' }).out.toArray();
      const ref = refBlockSparseAttention({ q: p.qx, k: k.exact, v: p.vx, B: 1, Hq: 2, Hkv: 1, N, Nk: N, D, scale: 1 / Math.sqrt(D), keep, blockQ: 64, blockK: 64 }).out;
      let dot = 0, na = 0, nb = 0, l1 = 0, l1ref = 0;
      for (let i = 0; i < ref.length; i++) {
        dot += r[i] * ref[i];
        na += r[i] * r[i];
        nb += ref[i] * ref[i];
        l1 += Math.abs(r[i] - ref[i]);
        l1ref += Math.abs(ref[i]);
      }
      expect(dot / Math.sqrt(na * nb)).toBeGreaterThanOrEqual(0.999);
      expect(l1 / l1ref).toBeLessThanOrEqual(0.02);
    }
  });

  test('grouped-query heads share their kv head (packed once per kv head): each q head alone gives the same bits', () => {
    // Hq 4 over Hkv 2: q heads 0, 1 read kv head 0 and 2, 3 read kv head 1;
    // the keys, values and INT8 key codes are prepared once per kv head.
    const [B, Hq, Hkv, N, D] = [2, 4, 2, 150, 40];
    for (const [dtype, precision] of [['bf16', 'native'], ['f32', 'int8'], ['f16', 'int8']] as const) {
      const p = problem(B, Hq, Hkv, N, N, D, dtype, 'bhnd', 31);
      const keep = randomKeep(3, B, Hq, 3, 3, 0.5, [1]);
      const all = blockSparseAttentionSync(p.q, p.k, p.v, maskOf(B, Hq, N, N, 64, 64, keep), { precision, returnLse: true });
      const out = all.out.toArray(), lse = all.lse!.toArray();
      for (let b = 0; b < B; b++)
        for (let h = 0; h < Hq; h++) {
          const head = (t: typeof p.q, hh: number) => t.view([1, 1, N, D], t.strides, t.offset + b * t.strides[0] + hh * t.strides[1]);
          const one = blockSparseAttentionSync(head(p.q, h), head(p.k, h >> 1), head(p.v, h >> 1),
            maskOf(1, 1, N, N, 64, 64, (_b, _h, qb, kb) => keep(b, h, qb, kb)), { precision, returnLse: true });
          const at = ((b * Hq + h) * N) * D;
          expect(one.out.toArray()).toEqual(out.slice(at, at + N * D));
          expect(one.lse!.toArray()).toEqual(lse.slice((b * Hq + h) * N, (b * Hq + h + 1) * N));
        }
    }
  });

  test('the async twin gives the same result, and every output element is written', async () => {
    const p = problem(1, 2, 2, 45, 45, 8, 'bf16', 'bnhd', 41);
    const mask = maskOf(1, 2, 45, 45, 16, 16, randomKeep(5, 1, 2, 3, 3, 0.5));
    const a = await blockSparseAttention(p.q, p.k, p.v, mask, { layout: 'bnhd', returnLse: true });
    const s = blockSparseAttentionSync(p.q, p.k, p.v, mask, { layout: 'bnhd', returnLse: true });
    expect(a.out.toArray()).toEqual(s.out.toArray());
    expect(a.lse!.toArray()).toEqual(s.lse!.toArray());
    expect(a.out.toArray().some((x) => Number.isNaN(x))).toBe(false);
  });
});

describe('blockSparseAttention into given outputs (opts.out)', () => {
  test('poisoned outputs are written in full with the bits of a fresh call, reused across calls, both layouts, every dtype', async () => {
    for (const [dtype, layout] of [['f32', 'bhnd'], ['bf16', 'bnhd'], ['f16', 'bhnd']] as const) {
      const [B, H, N, D] = [2, 3, 37, 24];
      const mask = maskOf(B, H, N, N, 16, 16, randomKeep(7, B, H, 3, 3, 0.4, [0]));
      const shape = layout === 'bhnd' ? [B, H, N, D] : [B, N, H, D];
      const bits = dtype === 'f32' ? Float32Array : Uint16Array;
      // NaN in f32; 0xFFFF is a NaN in f16 and bf16: an unwritten element shows.
      const out = { data: new bits(B * H * N * D).fill(dtype === 'f32' ? NaN : 0xffff), shape, dtype };
      const lse = { data: new Float32Array(B * H * N).fill(NaN), shape: [B, H, N] };
      for (const seed of [3, 4]) {  // the same buffers twice: a hot loop's reuse
        const p = problem(B, H, H, N, N, D, dtype, layout, seed);
        const fresh = blockSparseAttentionSync(p.q, p.k, p.v, mask, { layout, returnLse: true });
        const sync = blockSparseAttentionSync(p.q, p.k, p.v, mask, { layout, returnLse: true, out: { out, lse } });
        expect(sync.out.data).toBe(out.data);
        expect(sync.lse!.data).toBe(lse.data);
        expect(Array.from(out.data as ArrayLike<number>)).toEqual(Array.from(fresh.out.data as ArrayLike<number>));
        expect(Array.from(lse.data)).toEqual(Array.from(fresh.lse!.data as Float32Array));
        (out.data as Float32Array | Uint16Array).fill(dtype === 'f32' ? NaN : 0xffff);
        const viaAsync = await blockSparseAttention(p.q, p.k, p.v, mask, { layout, out: { out } });
        expect(viaAsync.out.data).toBe(out.data);
        expect(Array.from(out.data as ArrayLike<number>)).toEqual(Array.from(fresh.out.data as ArrayLike<number>));
      }
    }
  });

  test('q, k and v may be views of one fused qkv buffer; the outputs may not overlap them or each other', () => {
    const [H, N, D] = [2, 40, 8];
    // [1, N, 3, H, D] as one buffer; q, k, v are strided views of it in layout bnhd.
    const fused = makeTensor(randn(N * 3 * H * D, 9), [1, N, 3 * H, D]).t;
    const qkv = [0, 1, 2].map((i) => fused.view([1, N, H, D], fused.strides, fused.offset + i * H * D));
    const want = blockSparseAttentionSync(qkv[0].contiguous(), qkv[1].contiguous(), qkv[2].contiguous(), 'dense', { layout: 'bnhd' });
    const out = { data: new Float32Array(N * H * D).fill(NaN), shape: [1, N, H, D] };
    blockSparseAttentionSync(qkv[0], qkv[1], qkv[2], 'dense', { layout: 'bnhd', out: { out } });
    expect(Array.from(out.data)).toEqual(Array.from(want.out.data as Float32Array));
    const overQkv = fused.view([1, N, H, D], [N * H * D, H * D, D, 1], 2 * H * D);  // contiguous, across v's first rows and k's and q's later ones
    expectCode(() => blockSparseAttentionSync(qkv[0], qkv[1], qkv[2], 'dense', { layout: 'bnhd', out: { out: overQkv } }), TypeError, 'ERR_ARG', /out\.out and q share memory/);
    const shared = new Float32Array(N * H * D + N * H);
    const o2 = { out: { data: shared.subarray(0, N * H * D), shape: [1, N, H, D] }, lse: { data: shared.subarray(N * H * D - 1, N * H * D - 1 + N * H), shape: [1, H, N] } };
    expectCode(() => blockSparseAttentionSync(qkv[0], qkv[1], qkv[2], 'dense', { layout: 'bnhd', returnLse: true, out: o2 }), TypeError, 'ERR_ARG', /^blockSparseAttentionSync: out\.out and out\.lse share memory/);
  });

  test('bad outputs name the function and the field', async () => {
    const p = problem(1, 2, 2, 40, 40, 8, 'f32', 'bhnd', 1);
    const out = () => ({ data: new Float32Array(2 * 40 * 8), shape: [1, 2, 40, 8] });
    const lse = () => ({ data: new Float32Array(2 * 40), shape: [1, 2, 40] });
    const run = (o: object) => () => blockSparseAttentionSync(p.q, p.k, p.v, 'dense', o);
    expectCode(run({ out: 3 }), TypeError, 'ERR_ARG', /^blockSparseAttentionSync: .*\{ out \} tensors/);
    expectCode(run({ out: {} }), TypeError, 'ERR_ARG', /out/);
    expectCode(run({ out: { out: { data: new Uint16Array(2 * 40 * 8), shape: [1, 2, 40, 8], dtype: 'bf16' } } }), TypeError, 'ERR_DTYPE', /out\.out/);
    expectCode(run({ out: { out: { data: new Float32Array(2 * 41 * 8), shape: [1, 2, 41, 8] } } }), RangeError, 'ERR_SHAPE', /out\.out/);
    expectCode(run({ out: { out: { data: new Float32Array(2 * 40 * 8 - 1), shape: [1, 2, 40, 8] } } }), RangeError, 'ERR_RANGE', /at least/);
    const wide = makeTensor(randn(2 * 40 * 16, 2), [1, 2, 40, 16]).t;
    expectCode(run({ out: { out: wide.view([1, 2, 40, 8], wide.strides) } }), Error, 'ERR_UNSUPPORTED', /contiguous/);
    expectCode(run({ returnLse: true, out: { out: out() } }), TypeError, 'ERR_ARG', /out\.lse/);
    expectCode(run({ out: { out: out(), lse: lse() } }), TypeError, 'ERR_ARG', /only written with returnLse/);
    expectCode(run({ returnLse: true, out: { out: out(), lse: { data: new Float32Array(80), shape: [1, 80] } } }), RangeError, 'ERR_SHAPE', /out\.lse/);
    expectCode(run({ out: { out: { data: p.q.data, shape: [1, 2, 40, 8] } } }), TypeError, 'ERR_ARG', /out\.out and q share memory/);
    const gone = makeTensor(randn(2 * 40 * 8, 5), [1, 2, 40, 8]).t;
    gone.dispose();
    expectCode(run({ out: { out: gone } }), TokenSieveError, 'ERR_DISPOSED');
    await expectReject(blockSparseAttention(p.q, p.k, p.v, 'dense', { out: { out: out(), lse: lse() } }), TypeError, 'ERR_ARG');
  });
});

describe('blockAttentionMass, blockPool, applyReorder against float64', () => {
  test.each([
    [1, 1, 1, 1, 1, 4, 1, 1],
    [2, 2, 1, 37, 53, 12, 8, 16],
    [1, 3, 3, 70, 70, 16, 64, 64],
    // q-blocks of 50 rows (row tiles of 24, 24, 2), prime key blocks (8-wide partial sums and a tail)
    [1, 2, 2, 150, 101, 24, 50, 13],
  ])('mass B%i H%i Hkv%i N%i Nk%i D%i blocks %i x %i', (B, H, Hkv, N, Nk, D, bq, bk) => {
    const q = makeTensor(randn(B * H * N * D, N), [B, H, N, D]);
    const k = makeTensor(randn(B * Hkv * Nk * D, Nk), [B, Hkv, Nk, D]);
    const m = blockAttentionMassSync(q.t, k.t, { blockQ: bq, blockK: bk });
    expect(m.shape).toEqual([B, H, Math.ceil(N / bq), Math.ceil(Nk / bk)]);
    const ref = refBlockAttentionMass(q.exact, k.exact, B, H, Hkv, N, Nk, D, 1 / Math.sqrt(D), bq, bk);
    expectClose(m.toArray(), ref, 1e-6, 1e-5, 'mass');
    // Each q-block's mass sums to the number of its rows.
    const a = m.toArray(), nQ = Math.ceil(N / bq), nK = Math.ceil(Nk / bk);
    for (let r = 0; r < B * H * nQ; r++) {
      let s = 0;
      for (let j = 0; j < nK; j++) s += a[r * nK + j];
      expect(s).toBeCloseTo(Math.min(bq, N - (r % nQ) * bq), 4);
    }
    if (N > 10) {
      const rows = [0, 3, 9, N - 1];
      const ms = blockAttentionMassSync(q.t, k.t, { blockQ: bq, blockK: bk, rows });
      expectClose(ms.toArray(), refBlockAttentionMass(q.exact, k.exact, B, H, Hkv, N, Nk, D, 1 / Math.sqrt(D), bq, bk, rows), 1e-6, 1e-5, 'sampled');
    }
  });

  // bf16 q and k: the logits on the bf16 dot tile where the CPU has it (odd D: a zero pad in the last pair).
  test.each([[2, 4, 2, 75, 101, 33, 16, 13], [1, 2, 1, 130, 130, 64, 64, 64]])('mass bf16 B%i H%i Hkv%i N%i Nk%i D%i blocks %i x %i', (B, H, Hkv, N, Nk, D, bq, bk) => {
    const q = makeTensor(randn(B * H * N * D, N + 1), [B, H, N, D], 'bf16');
    const k = makeTensor(randn(B * Hkv * Nk * D, Nk + 1), [B, Hkv, Nk, D], 'bf16');
    const m = blockAttentionMassSync(q.t, k.t, { blockQ: bq, blockK: bk });
    expectClose(m.toArray(), refBlockAttentionMass(q.exact, k.exact, B, H, Hkv, N, Nk, D, 1 / Math.sqrt(D), bq, bk), 1e-6, 1e-5, 'mass');
  });

  test('mass in bnhd, f16, async', async () => {
    const B = 1, H = 2, N = 33, D = 8;
    const vals = randn(B * H * N * D, 3);
    const q = makeTensor(toBnhd(vals, B, H, N, D), [B, N, H, D], 'f16');
    const m = await blockAttentionMass(q.t, q.t, { layout: 'bnhd', blockQ: 8, blockK: 8 });
    const exact = fromBnhd(q.exact, B, H, N, D);
    expectClose(m.toArray(), refBlockAttentionMass(exact, exact, B, H, H, N, N, D, 1 / Math.sqrt(D), 8, 8), 1e-6, 1e-5, 'mass');
  });

  test.each([[1, 1, 1, 3, 5], [2, 3, 67, 20, 16], [1, 2, 64, 64, 64]])('pool B%i H%i N%i D%i block %i', (B, H, N, D, block) => {
    const x = makeTensor(randn(B * H * N * D, N + D).map((v, i) => (i % 5 === 0 ? 0 : v + 0.3)), [B, H, N, D], 'bf16');
    const r = blockPoolSync(x.t, { block });
    const ref = refBlockPool(x.exact, B, H, N, D, block);
    expectClose(r.mean.toArray(), ref.mean, 1e-6, 1e-5, 'mean');
    expectClose(r.selfSim.toArray(), ref.selfSim, 1e-6, 1e-5, 'selfSim');
  });

  test('applyReorder forward and inverse, both layouts, every dtype', async () => {
    const B = 2, H = 3, N = 29, D = 5;
    const perm = permutation(H, N, 17);
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      const x = makeTensor(randn(B * H * N * D, 2), [B, H, N, D], dtype);
      const f = applyReorderSync(x.t, perm);
      expect(f.dtype).toBe(dtype);
      expect(Array.from(f.toArray())).toEqual(Array.from(refApplyReorder(x.exact, perm, B, H, N, D)));
      const back = await applyReorder(f, { data: perm, shape: [H, N] }, { inverse: true });
      expect(Array.from(back.toArray())).toEqual(Array.from(x.exact));
      const xb = makeTensor(toBnhd(x.exact, B, H, N, D), [B, N, H, D], dtype);
      const fb = applyReorderSync(xb.t, perm, { layout: 'bnhd' });
      expect(Array.from(fromBnhd(fb.toArray(), B, H, N, D))).toEqual(Array.from(refApplyReorder(x.exact, perm, B, H, N, D)));
    }
  });
});

describe('blocksparse bad input', () => {
  const p = problem(1, 2, 2, 40, 40, 8, 'f32', 'bhnd', 1);
  const good = maskOf(1, 2, 40, 40, 16, 16, () => true);
  const nQ = 3;
  const withLists = (counts: number[], indices: number[], L: number): BlockMaskLike => ({
    blockQ: 16, blockK: 16, seqLens: [40, 40],
    kvNumBlocks: { data: Int32Array.from(counts), shape: [1, 1, nQ] },
    kvIndices: { data: Int32Array.from(indices), shape: [1, 1, nQ, L] },
  });
  test.each([
    ['unsorted', withLists([2, 1, 1], [1, 0, 0, 0, 0, 0], 2), /sorted/],
    ['duplicate', withLists([2, 1, 1], [1, 1, 0, 0, 0, 0], 2), /sorted ascending without duplicates/],
    ['out of range', withLists([1, 1, 1], [3, 0, 0, 0, 0, 0], 2), /in \[0, 3\)/],
    ['negative index', withLists([1, 1, 1], [-1, 0, 0, 0, 0, 0], 2), /in \[0, 3\)/],
    ['count above L', withLists([3, 1, 1], [0, 1, 0, 0, 0, 0], 2), /kvNumBlocks in \[0, 2\]/],
    ['negative count', withLists([-1, 1, 1], [0, 1, 0, 0, 0, 0], 2), /kvNumBlocks/],
  ])('mask lists: %s is ERR_RANGE naming the function', (_, mask, msg) => {
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, mask as BlockMaskLike), RangeError, 'ERR_RANGE', msg as RegExp);
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, mask as BlockMaskLike), RangeError, 'ERR_RANGE', /^blockSparseAttentionSync/);
  });

  test('overlapping partial and full lists', () => {
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, { ...good, fullKvNumBlocks: good.kvNumBlocks, fullKvIndices: good.kvIndices }), RangeError, 'ERR_RANGE', /disjoint/);
  });

  test('shapes, dtypes, options', () => {
    const k3 = makeTensor(randn(3 * 40 * 8, 1), [1, 3, 40, 8]).t;
    expectCode(() => blockSparseAttentionSync(p.q, k3, k3, 'dense'), RangeError, 'ERR_SHAPE', /head count/);
    const kh = makeTensor(randn(2 * 40 * 8, 1), [1, 2, 40, 8], 'f16').t;
    expectCode(() => blockSparseAttentionSync(p.q, kh, kh, 'dense'), TypeError, 'ERR_DTYPE');
    expectCode(() => blockSparseAttentionSync(p.q, p.k, makeTensor(randn(2 * 41 * 8, 1), [1, 2, 41, 8]).t, 'dense'), RangeError, 'ERR_SHAPE');
    expectCode(() => blockSparseAttentionSync(p.q.view([2, 40, 8]), p.k, p.v, 'dense'), RangeError, 'ERR_SHAPE');
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, { ...good, seqLens: [40, 41] }), RangeError, 'ERR_SHAPE', /seqLens/);
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, { ...good, blockQ: 16.5 }), TypeError, 'ERR_ARG', /integer/);
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, { ...good, blockQ: 0 }), RangeError, 'ERR_RANGE');
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, { ...good, kvIndices: { data: new Float32Array(6), shape: [1, 1, 3, 2] } }), TypeError, 'ERR_DTYPE');
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, 'sparse' as unknown as 'dense'), TypeError, 'ERR_ARG');
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, good, { blockQ: 64 }), TypeError, 'ERR_ARG', /mask's own/);
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, 'dense', { precision: 'fp8' as 'f16' }), TypeError, 'ERR_ARG');
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, 'dense', { scale: NaN }), TypeError, 'ERR_ARG');
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, 'dense', { tile: 3 } as object), TypeError, 'ERR_ARG');
  });

  test('permutations', () => {
    const bad = permutation(2, 40, 3);
    bad[5] = bad[6];
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, 'dense', { reorder: { perm: bad } }), RangeError, 'ERR_RANGE', /permutation/);
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, 'dense', { reorder: { perm: new Int32Array(79) } }), RangeError, 'ERR_RANGE', /at least 80 elements/);
    expectCode(() => blockSparseAttentionSync(p.q, p.k, p.v, 'dense', { reorder: { perm: { data: new Int32Array(81), shape: [81] } } }), RangeError, 'ERR_SHAPE');
    expectCode(() => applyReorderSync(p.q, Int32Array.from({ length: 80 }, (_, i) => (i % 40) + 1)), RangeError, 'ERR_RANGE', /^applyReorderSync.*permutation/);
    const k2 = makeTensor(randn(2 * 41 * 8, 1), [1, 2, 41, 8]).t;
    expectCode(() => blockSparseAttentionSync(p.q, k2, k2, 'dense', { reorder: { perm: permutation(2, 40, 1) } }), RangeError, 'ERR_SHAPE', /as many keys/);
  });

  test('NaN inputs, disposed tensors, rows, async rejections', async () => {
    const vals = randn(2 * 40 * 8, 4);
    vals[77] = NaN;
    const qn = makeTensor(vals, [1, 2, 40, 8]).t;
    expectCode(() => blockSparseAttentionSync(qn, p.k, p.v, 'dense'), RangeError, 'ERR_RANGE', /finite/);
    expectCode(() => blockSparseAttentionSync(p.q, qn, p.v, 'dense'), RangeError, 'ERR_RANGE', /finite/);
    expectCode(() => blockAttentionMassSync(qn, p.k), RangeError, 'ERR_RANGE', /finite/);
    expectCode(() => blockAttentionMassSync(p.q, qn), RangeError, 'ERR_RANGE', /k\[0, 0, 9\] holds NaN/);
    const late = randn(2 * 40 * 8, 8);
    late[(40 + 37) * 8 + 5] = NaN;  // kv head 1, key 37: the last 16-key task
    expectCode(() => blockAttentionMassSync(p.q, makeTensor(late, [1, 2, 40, 8]).t), RangeError, 'ERR_RANGE', /k\[0, 1, 37\] holds NaN/);
    await expectReject(blockSparseAttention(qn, p.k, p.v, good), RangeError, 'ERR_RANGE');
    expectCode(() => blockAttentionMassSync(p.q, p.k, { rows: [3, 2] }), RangeError, 'ERR_RANGE', /sorted/);
    expectCode(() => blockAttentionMassSync(p.q, p.k, { rows: [40] }), RangeError, 'ERR_RANGE');
    expectCode(() => blockAttentionMassSync(p.q, p.k, { rows: [] }), RangeError, 'ERR_RANGE');
    expectCode(() => blockPoolSync(p.q, { block: 0 }), RangeError, 'ERR_RANGE');
    const gone = makeTensor(randn(2 * 40 * 8, 5), [1, 2, 40, 8]).t;
    gone.dispose();
    expectCode(() => blockSparseAttentionSync(gone, p.k, p.v, 'dense'), TokenSieveError, 'ERR_DISPOSED');
    // A NaN in a late 64-key task of the second kv head, in k or in v, is
    // found and named by its (attended) position, on every precision.
    const big = problem(1, 2, 2, 200, 200, 8, 'f32', 'bhnd', 6);
    for (const which of ['k', 'v'] as const) {
      const vals = Float32Array.from(big[which].data as Float32Array);
      vals[(200 + 190) * 8 + 3] = NaN;
      const bad = makeTensor(vals, [1, 2, 200, 8]).t;
      const [k, v] = which === 'k' ? [bad, big.v] : [big.k, bad];
      for (const precision of ['native', 'int8'] as const) {
        expectCode(() => blockSparseAttentionSync(big.q, k, v, 'dense', { precision }), RangeError, 'ERR_RANGE', /k\[0, 1, 190\] or v there/);
      }
    }
  });
});
