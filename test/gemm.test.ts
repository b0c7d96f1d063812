/**
 * The CPU a·bᵀ driver (cpu/gemm.h) and its 6 × 16 register tile
 * (isa().gemm_tile), through the native test hook gemmNtCheck: every entry
 * against the float64 reference within the error bound of an f32 sum, on
 * sizes that are 1, primes and non-multiples of the register tile (6 × 16),
 * of the task tile (96) and of the depth block (512), with both layouts of
 * operand a, the upper-triangle mode, and the baseline x86-64 kernels.
 * Outputs start as NaN, so an entry the driver never wrote fails.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { getThreads, info, setThreads } from '../lib';
import { native } from '../lib/native';
import { randn } from './helpers';
import { gemmErrorBound, refGemmNt } from './reference/gemm';
import { toBf16 } from './reference/merge';

const root = path.resolve(__dirname, '..');

function f32(n: number, seed: number): Float32Array {
  // Mixed magnitudes and signs, some exact zeros: not only unit-scale noise.
  const v = randn(n, seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = i % 11 === 3 ? 0 : v[i] * (i % 7 === 0 ? 30 : 1);
  return out;
}

type Ref = { exact: Float64Array; abs: Float64Array };

function expectWithinBound(out: Float32Array, ref: Ref, K: number, what: string): void {
  const { exact, abs } = ref;
  const n = out.length;
  let worst = 0;
  for (let i = 0; i < n; i++) {
    const bound = gemmErrorBound(abs[i], exact[i], K);
    const err = Math.abs(out[i] - exact[i]);
    if (!(err <= bound)) throw new Error(`${what}: entry ${i} = ${out[i]}, exact ${exact[i]}, error ${err} > bound ${bound}`);
    worst = Math.max(worst, err / bound);
  }
  expect(worst).toBeLessThanOrEqual(1);
}

// [m, n, K]: 1; primes; one short of, at and one past 6, 16, 96, 256 and 512; large.
const SHAPES: Array<[number, number, number]> = [
  [1, 1, 1], [1, 17, 3], [5, 1, 7], [6, 16, 256], [7, 15, 255], [13, 29, 257], [95, 97, 64],
  [96, 96, 1], [97, 191, 31], [101, 103, 513], [193, 37, 1000], [211, 197, 300],
  // large: seven row blocks (the last of 5 rows), three depth blocks
  [581, 293, 1030],
];

describe('cpu gemm driver (a·bᵀ through the register tile)', () => {
  test.each(SHAPES)('m=%i n=%i K=%i, a as rows and as panels, against float64', (m, n, K) => {
    const a = f32(m * K, m * 7919 + K);
    const b = f32(n * K, n * 104729 + K);
    const rows = native().gemmNtCheck(a, m, b, n, K, false, false);
    const panels = native().gemmNtCheck(a, m, b, n, K, false, true);
    expectWithinBound(rows, refGemmNt(a, m, b, n, K), K, 'a as rows');
    // Each element is one sequential FMA chain over K whatever the layout
    // or blocking, so both layouts give the same bits.
    expect(Buffer.from(panels.buffer).equals(Buffer.from(rows.buffer))).toBe(true);
  });

  test.each([[1, 5], [17, 255], [97, 257], [197, 300], [581, 1030]])('upper triangle, n=%i K=%i: mirrored, and the same bits as the full product', (n, K) => {
    const a = f32(n * K, n + 31 * K);
    const ref = refGemmNt(a, n, a, n, K);
    for (const aPanels of [false, true]) {
      const upper = native().gemmNtCheck(a, n, a, n, K, true, aPanels);
      const full = native().gemmNtCheck(a, n, a, n, K, false, aPanels);
      expectWithinBound(upper, ref, K, `upper, aPanels ${aPanels}`);
      expect(Buffer.from(upper.buffer).equals(Buffer.from(full.buffer))).toBe(true);
      let asymmetric = 0;
      for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) if (!Object.is(upper[i * n + j], upper[j * n + i])) asymmetric++;
      expect(asymmetric).toBe(0);
    }
  });

  // [m, n]: few tasks per thread, where the driver cuts the rows into equal
  // blocks so that every thread gets as many tasks (ToMe's 289 × 288 step),
  // a single row block, and one past it.
  test.each([[150, 211], [289, 288], [9, 300], [97, 17], [385, 100]])(
    'm=%i n=%i: every thread count (balanced row blocks) gives the single-thread bits, every entry written',
    (m, n) => {
      const K = 70;
      const a = f32(m * K, m + 1);
      const b = f32(n * K, n + 2);
      const ref = refGemmNt(a, m, b, n, K);
      const before = getThreads();
      try {
        setThreads(1);
        const one = native().gemmNtCheck(a, m, b, n, K, false, true);
        expectWithinBound(one, ref, K, '1 thread');
        for (const threads of [2, 3, 4, 5, 7]) {
          setThreads(threads);
          for (const aPanels of [true, false]) {
            const out = native().gemmNtCheck(a, m, b, n, K, false, aPanels);
            if (!Buffer.from(out.buffer).equals(Buffer.from(one.buffer))) {
              expectWithinBound(out, ref, K, `${threads} threads`); // names the first wrong entry
              throw new Error(`${threads} threads, aPanels ${aPanels}: not the single-thread bits`);
            }
          }
        }
      } finally {
        setThreads(before);
      }
    },
  );

  test('the baseline x86-64 kernels (TOKENSIEVE_CPU_ISA=baseline) are within the same bound', () => {
    // [m, n, K, upper]: the last one the upper triangle, mirrored by the
    // baseline's scalar transpose (blocks of 96 rows, a 5-row remainder).
    const shapes = [[7, 15, 255, 0], [97, 191, 31, 0], [101, 103, 513, 0], [197, 197, 31, 1]];
    // One pool of values for every shape (a and b are prefixes of it).
    const a = f32(103 * 513, 77);
    const code = `const { native } = require(${JSON.stringify(path.join(root, 'dist', 'lib', 'native.js'))});
      const pool = new Float32Array(JSON.parse(require('fs').readFileSync(0, 'utf8')));
      const out = [];
      for (const [m, n, K, upper] of ${JSON.stringify(shapes)}) {
        const a = pool.slice(0, m * K), b = pool.slice(0, n * K);
        out.push(Array.from(native().gemmNtCheck(a, m, b, n, K, upper === 1, true)));
      }
      process.stdout.write(JSON.stringify({ isa: require(${JSON.stringify(path.join(root, 'dist', 'lib', 'index.js'))}).info().cpu.isa, out }));`;
    const r = spawnSync(process.execPath, ['-e', code], {
      env: { ...process.env, TOKENSIEVE_CPU_ISA: 'baseline' }, encoding: 'utf8', timeout: 120000, maxBuffer: 64 << 20, input: JSON.stringify(Array.from(a)),
    });
    expect(r.stderr).toBe('');
    const res = JSON.parse(r.stdout);
    expect(res.isa).toBe('baseline');
    expect(res.out).toHaveLength(shapes.length);
    shapes.forEach(([m, n, K, upper], s) => {
      const got = Float32Array.from(res.out[s]);
      expectWithinBound(got, refGemmNt(a.subarray(0, m * K), m, a.subarray(0, n * K), n, K), K, `baseline m=${m} n=${n} K=${K} upper ${upper}`);
      if (upper) for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) expect(got[i * n + j]).toBe(got[j * n + i]);
    });
  });

  // The AVX-512 tile (zmm, two panels per call) runs each element's FMA chain
  // in the same order as the AVX2 tile, and its exp the same operations per
  // lane with the sums in the same order: the same bits, not just the same bound.
  // Where the CPU has AVX512_VNNI the INT8 scores' row tiles run on vpdpbusd
  // (cpu/isa_avx512_vnni.cc): exact integer dots, so the same bits too (a
  // wrong code-sum correction fails this test).
  const hasAvx512 = info().cpu.isa.startsWith('avx512');
  if (!hasAvx512) console.log('skipped: the AVX-512 vs AVX2 bit-equality test needs a CPU with AVX-512F/VL');
  (hasAvx512 ? test : test.skip)('the AVX-512 kernels give the same bits as TOKENSIEVE_CPU_ISA=avx2 (products, ToMe plans and merges, k-center, attention, INT8 scores, quantization and max coverage; the last two also as baseline)', () => {
    const code = `const t = require(${JSON.stringify(path.join(root, 'dist', 'lib', 'index.js'))});
      const { native } = require(${JSON.stringify(path.join(root, 'dist', 'lib', 'native.js'))});
      const rnd = (n, s) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.7311 + s) * 1.7);
      const out = [];
      for (const [m, n, K, up] of [[1, 1, 3, false], [7, 33, 255, false], [97, 191, 31, false], [101, 103, 513, false], [197, 197, 300, true]])
        for (const panels of [false, true]) out.push(Array.from(native().gemmNtCheck(rnd(m * K, 1), m, up ? rnd(m * K, 1) : rnd(n * K, 2), n, K, up, panels)));
      const x = t.Tensor.from({ data: rnd(2 * 211 * 96, 3), shape: [2, 211, 96] });
      const plan = t.bipartiteSoftMatchSync(x, 50, { protect: { cls: true } });
      out.push(plan.unmerged.toArray(), plan.sources.toArray(), plan.destinations.toArray());
      // The plan's wavg merge of 333 channels (runs of 32 and 8 columns and a
      // tail), fractional sizes: one FMA per member and element on both sets.
      const mx = t.Tensor.from({ data: rnd(2 * 211 * 333, 9), shape: [2, 211, 333] });
      const msz = { data: Float32Array.from({ length: 2 * 211 }, (_, i) => 1 + (i % 5) * 0.37), shape: [2, 211, 1] };
      out.push(Array.from(t.mergeSync(plan, mx, { mode: 'wavg', sizes: msz }).x.data));
      // 288 destinations of 1,024 channels: 1.2 MB of panels, streamed on AVX-512.
      const wide = t.bipartiteSoftMatchSync(t.Tensor.from({ data: rnd(577 * 1024, 8), shape: [1, 577, 1024] }), 144, { protect: { cls: true } });
      out.push(wide.unmerged.toArray(), wide.sources.toArray(), wide.destinations.toArray());
      const kc = t.kCenterSync(t.Tensor.from({ data: rnd(157 * 130, 4), shape: [1, 157, 130] }), 23);
      out.push(kc.indices.toArray());
      // Panels of 2.3 MB: packed with streaming stores.
      const big = t.kCenterSync(t.Tensor.from({ data: rnd(181 * 3001, 7), shape: [1, 181, 3001] }), 20);
      out.push(big.order.toArray(), big.distances.toArray());
      // Attention: logits on the wide tile, the softmax's exps 16 at a time.
      const q = { data: rnd(2 * 3 * 97 * 40, 5), shape: [2, 3, 97, 40] }, k = { data: rnd(2 * 3 * 97 * 40, 6), shape: [2, 3, 97, 40] };
      out.push(Array.from(t.attentionScoresSync(q, k, { causal: true }).data), Array.from(t.attentionScoresSync(q, k, { queries: [0, 5] }).data));
      // INT8 scores: the smoothing mean (f64 chunk sums 32 columns at a
      // time), block amax and codes (zmm, ymm and scalar columns at D = 40),
      // CLS row and all rows, f16 keys; k blocks of 7 cut the 16-key panels.
      const half = (n, s) => t.Tensor.from({ data: t.toHalfBits(Array.from(rnd(n, s), (v, i) => v + (i % 40) * 0.1), 'f16'), shape: [2, 3, 97, 40], dtype: 'f16' });
      for (const [qq, kk] of [[q, k], [half(2 * 3 * 97 * 40, 12), half(2 * 3 * 97 * 40, 10)]])
        for (const opts of [{ queries: 0 }, {}]) out.push(Array.from(t.attentionScoresSync(qq, kk, { ...opts, precision: 'int8', kRows: 7 }).data));
      // D = 97: the mean's pass over 64, then 32 columns (zmm) or 16 (ymm),
      // and a scalar tail, with each k block's column range; the CLS row's
      // codes made inside its dot products (code_dot_rows), two rows' not.
      const q97 = { data: rnd(2 * 2 * 75 * 97, 14), shape: [2, 2, 75, 97] };
      const k97 = { data: rnd(2 * 2 * 75 * 97, 15).map((v, i) => v + (i % 97) * 0.07 - 3), shape: [2, 2, 75, 97] };
      for (const opts of [{ queries: 0 }, { queries: [74, 3] }, {}]) out.push(Array.from(t.attentionScoresSync(q97, k97, { ...opts, precision: 'int8', kRows: 32 }).data));
      // Block-sparse INT8 (QKᵀ on vpdpbusd where the CPU has VNNI; GQA heads
      // sharing the key quads, D = 97 and a 13-key block): the same bits.
      for (const [H, Hkv, N, D, bq, bk] of [[4, 2, 203, 40, 64, 64], [3, 1, 77, 97, 16, 13]]) {
        const bq4 = (n, s) => ({ data: rnd(n * N * D, s), shape: [1, n, N, D] });
        const bs = t.blockSparseAttentionSync(bq4(H, 16), bq4(Hkv, 17), bq4(Hkv, 18), 'dense', { blockQ: bq, blockK: bk, precision: 'int8', returnLse: true });
        out.push(Array.from(bs.out.data), Array.from(bs.lse.data));
      }
      // From here on, compared with the baseline set too.
      const exactFrom = out.length;
      // Quantization with smoothing: mean, scales and codes are exact in
      // any instruction set. 333 channels: zmm, ymm and scalar columns.
      const qz = t.quantizeSync({ data: rnd(2 * 2 * 67 * 333, 11).map((v, i) => v + (i % 333) * 0.01), shape: [2, 2, 67, 333] }, { granularity: { rows: 16, pad: true }, smooth: true });
      out.push(Array.from(qz.data.data), Array.from(qz.scales.data), Array.from(qz.mean.data));
      // INT4 groups of 32 (the last one short at 333 channels), packed two codes a byte.
      const q4 = t.quantizeSync({ data: rnd(37 * 333, 13), shape: [37, 333] }, { bits: 4, granularity: { group: 32, pad: true } });
      out.push(Array.from(q4.data.data), Array.from(q4.scales.data));
      // Max coverage, k = N: float64 gains updated per pick over 301 columns
      // (zmm blocks of 32, ymm of 16, a scalar tail), values over 14 decades
      // so that the counted terms decide the exact zeros.
      const cv = Float32Array.from({ length: 2 * 45 * 301 }, (_, i) => Math.sin(i * 0.377 + 9) > -0.3 ? Math.abs(Math.sin(i * 1.913)) * 10 ** (-14 * Math.abs(Math.sin(i * 0.0917))) : Math.sin(i * 0.377 + 9));
      const mc = t.maxCoverageSync({ data: cv, shape: [2, 45, 301] }, 301);
      out.push(mc.order.toArray(), mc.gains.toArray());
      process.stdout.write(JSON.stringify({ isa: t.info().cpu.isa, out, exactFrom }));`;
    const run = (isa: string | undefined): { isa: string; out: number[][]; exactFrom: number } => {
      const env = { ...process.env };
      if (isa) env.TOKENSIEVE_CPU_ISA = isa;
      else delete env.TOKENSIEVE_CPU_ISA;
      const r = spawnSync(process.execPath, ['-e', code], { env, encoding: 'utf8', timeout: 120000, maxBuffer: 64 << 20 });
      expect(r.stderr).toBe('');
      return JSON.parse(r.stdout);
    };
    const wide = run(undefined), narrow = run('avx2'), base = run('baseline');
    expect([wide.isa.split('-')[0], narrow.isa, base.isa]).toEqual(['avx512', 'avx2', 'baseline']);
    expect(wide.out).toHaveLength(narrow.out.length);
    wide.out.forEach((o, i) => {
      // Compare bit patterns (NaN-safe, -0 distinct).
      const bits = (v: number[]): number[] => Array.from(new Uint32Array(Float32Array.from(v).buffer));
      expect(bits(o)).toEqual(bits(narrow.out[i]));
      if (i >= wide.exactFrom) expect(bits(o)).toEqual(bits(base.out[i]));
    });
  });

  test('the hook refuses bad arguments with a TypeError or RangeError', () => {
    const a = new Float32Array(12);
    // Native errors come from the addon's realm, not jest's: compare names.
    const nameOf = (fn: () => unknown): string => {
      try {
        fn();
      } catch (e) {
        return `${(e as Error).name}: ${(e as Error).message}`;
      }
      return 'no error';
    };
    expect(nameOf(() => native().gemmNtCheck(a, 3, a, 3, 0, false, false))).toMatch(/^TypeError: gemmNtCheck/);
    expect(nameOf(() => native().gemmNtCheck(new Float64Array(12) as unknown as Float32Array, 3, a, 3, 4, false, false))).toMatch(/^TypeError: gemmNtCheck/);
    expect(nameOf(() => native().gemmNtCheck(a, 4, a, 3, 4, false, false))).toMatch(/^RangeError: gemmNtCheck/);
    expect(nameOf(() => native().gemmNtCheck(a, 3, a, 2, 4, true, false))).toMatch(/^RangeError: gemmNtCheck/);
  });
});

// The bf16 dot tile (cpu/isa_avx512_bf16.cc, vdpbf16ps) where the CPU has
// AVX512_BF16; elsewhere gemmNtCheck's bf16 mode runs the f32 tile over the
// rounded values, and these tests check that path instead. Either way every
// entry is a sum of the exact products of the rounded values, so the f32
// summation bound holds.
describe('cpu gemm driver, bf16 operands (the bf16 dot tile where the CPU has it)', () => {
  const dot = info().cpu.isa.includes('bf16');
  if (!dot) console.log(`the bf16 dot tile needs AVX512_BF16 (this CPU's set: ${info().cpu.isa}); its bf16 tests check the f32 tile over rounded values, and the conversion test is skipped`);

  // Odd K (a zero high half in the last pair), K past one and two depth
  // blocks of 512 pairs (1,025 and 2,051 channels), rows 1..8 per tile call
  // and 1..3 panels per call.
  const shapes: Array<[number, number, number]> = [
    [1, 1, 1], [1, 17, 3], [5, 1, 7], [8, 48, 2], [9, 49, 31], [13, 29, 257], [97, 191, 64], [101, 103, 1025], [37, 61, 2051],
    [289, 288, 1024],
  ];
  test.each(shapes)('m=%i n=%i K=%i against float64 over the bf16-rounded operands', (m, n, K) => {
    const a = f32(m * K, m * 31 + K);
    const b = f32(n * K, n * 37 + K);
    const got = native().gemmNtCheck(a, m, b, n, K, false, false, true);
    const ra = a.map(toBf16), rb = b.map(toBf16);
    // The rounding changed most values: the reference is over the rounded ones.
    expect(ra.filter((v, i) => v !== a[i]).length).toBeGreaterThan(0.5 * Math.min(a.length, 100) - 1);
    expectWithinBound(got, refGemmNt(ra, m, rb, n, K), K, `bf16 m=${m} n=${n} K=${K}`);
  });

  test('bf16 mode refuses upper and packed a', () => {
    const a = new Float32Array(12);
    expect(() => native().gemmNtCheck(a, 3, a, 3, 4, true, false, true)).toThrow(/gemmNtCheck/);
    expect(() => native().gemmNtCheck(a, 3, a, 3, 4, false, true, true)).toThrow(/gemmNtCheck/);
  });

  (dot ? test : test.skip)('the operand conversions round as f32_to_bf16 (nearest even, NaN quieted), in place, with zero pads', () => {
    const bf16Bits = (bits: number): number => {
      if ((bits & 0x7fffffff) >>> 0 > 0x7f800000) return ((bits >>> 16) | 0x40) << 16 >>> 0;
      return (((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) << 16) >>> 0;
    };
    const special = [0, 0x80000000, 1, 0x80000001, 0x7fff, 0x8000, 0x18000, 0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001,
      0xbf808000, 0xbf818000, 0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f800000, 0xff800000, 0x7f800001, 0x7fc00000, 0xffffffff];
    // n = 117: seven 16-value vectors and a 5-value tail (two pairs and a
    // lone value); depth 7 as a panel (a zero odd row); n = 16,003 likewise.
    for (const n of [1, 2, 117, 16003]) {
      const r = rngBits(n);
      const bits = new Uint32Array(n);
      for (let i = 0; i < n; i++) bits[i] = i < special.length ? special[i] : r();
      const x = new Float32Array(bits.buffer);
      const got = native().bf16PairsCheck(x)!;
      const rows = new Uint32Array(got.rows.buffer);
      expect(rows.length).toBe(n + (n % 2));
      for (let i = 0; i < n; i++) if (rows[i] !== bf16Bits(bits[i])) throw new Error(`n=${n} rows[${i}]: 0x${bits[i].toString(16)} -> 0x${rows[i].toString(16)}`);
      if (n % 2) expect(rows[n]).toBe(0);
      const depth = Math.floor(n / 16);
      const panel = new Uint32Array(got.panel.buffer);
      expect(panel.length).toBe((depth + (depth % 2)) * 16);
      for (let d = 0; d < depth; d++)
        for (let c = 0; c < 16; c++) if (panel[d * 16 + c] !== bf16Bits(bits[d * 16 + c])) throw new Error(`n=${n} panel[${d}][${c}]`);
      if (depth % 2) expect(Array.from(panel.subarray(depth * 16))).toEqual(new Array(16).fill(0));
    }
    expect(() => native().bf16PairsCheck(new Float32Array(0))).toThrow(/bf16PairsCheck/);
    expect(() => native().bf16PairsCheck(new Float64Array(4) as unknown as Float32Array)).toThrow(/bf16PairsCheck/);
  });
});

// Random 32-bit patterns (every exponent, NaNs among them).
function rngBits(seed: number): () => number {
  let s = (seed * 2654435761) >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>>= 0);
  };
}
