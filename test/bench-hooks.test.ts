/**
 * The benchmark's native hooks (include/tokensieve/bench.h): the uniform
 * fill against a BigInt restatement of its generator (splitmix64), rounded to
 * each dtype, and on a GPU bit-equal with the host; the measured device roof
 * and the event timer on a GPU (skipped without one, with the reason); the
 * CPU roof's fields.
 */
import { fromHalfBits, info, Tensor, toHalfBits } from '../lib';
import { native } from '../lib/native';
import { describeCuda } from './helpers';

const M64 = (1n << 64n) - 1n;
/** bench.h: u(seed, i) = top 24 bits of splitmix64(seed + golden·(i + 1)) / 2^24. */
function unit(seed: bigint, i: number): number {
  let z = (seed + 0x9e3779b97f4a7c15n * BigInt(i + 1)) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  z ^= z >> 31n;
  return Number(z >> 40n) / 16777216;
}
/** lo + span·u with the two f32 roundings the kernels use, then the dtype's. */
function expected(n: number, seed: number, lo: number, hi: number, dtype: 'f32' | 'f16' | 'bf16'): number[] {
  const f = Math.fround;
  const v = Array.from({ length: n }, (_, i) => f(f(f(hi - lo) * unit(BigInt(seed), i)) + f(lo)));
  return dtype === 'f32' ? v : Array.from(fromHalfBits(toHalfBits(v, dtype), dtype));
}
function fill(t: Tensor, seed: number, lo: number, hi: number): void {
  const d = t.descriptor('x');
  native().fillUniform(d.meta, d.mem, seed, lo, hi, t.device === 'cpu' ? undefined : t.stream, false);
}

describe('fillUniform (bench inputs)', () => {
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    test(`${dtype}: the generator's values, every element written, awkward sizes`, () => {
      for (const n of [1, 7, 4099]) {
        const t = Tensor.empty([n], dtype, 'cpu');
        const poison = dtype === 'f32' ? new Float32Array(n).fill(NaN) : toHalfBits(new Array(n).fill(NaN), dtype);
        (t.data as Float32Array | Uint16Array).set(poison);
        fill(t, 1234567, -2, 3);
        expect(Array.from(t.toArray())).toEqual(expected(n, 1234567, -2, 3, dtype));
      }
    });
  }
  test('different seeds give different values; the range is [lo, hi)', () => {
    const a = Tensor.empty([2, 500], 'f32', 'cpu');
    const b = Tensor.empty([2, 500], 'f32', 'cpu');
    fill(a, 1, -0.5, 0.5);
    fill(b, 2, -0.5, 0.5);
    const av = Array.from(a.toArray());
    expect(av).not.toEqual(Array.from(b.toArray()));
    expect(Math.min(...av)).toBeGreaterThanOrEqual(-0.5);
    expect(Math.max(...av)).toBeLessThan(0.5);
  });
  test('bad tensors and ranges are refused with codes', () => {
    const i32 = Tensor.from({ data: new Int32Array(4), shape: [4] });
    expect(() => fill(i32, 1, 0, 1)).toThrow(expect.objectContaining({ code: 'ERR_DTYPE' }));
    const t = Tensor.empty([4], 'f32', 'cpu');
    expect(() => fill(t, 1, 1, 0)).toThrow(expect.objectContaining({ code: 'ERR_RANGE' }));
    const strided = Tensor.from({ data: new Float32Array(8), shape: [4], strides: [2] });
    expect(() => fill(strided, 1, 0, 1)).toThrow(expect.objectContaining({ code: 'ERR_ARG' }));
  });
});

describeCuda('bench hooks on the GPU', () => {
  test('fillUniform on the device equals the host fill bit for bit', () => {
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      const h = Tensor.empty([3, 1031], dtype, 'cpu');
      const d = Tensor.empty([3, 1031], dtype, 'cuda:0');
      fill(h, 99, -2, 2);
      fill(d, 99, -2, 2);
      expect(Array.from(d.to('cpu').toArray())).toEqual(Array.from(h.toArray()));
      d.dispose();
    }
  });
  test('measureDeviceRoof gives plausible ceilings and the timer measures enqueued work', () => {
    const r = native().measureDeviceRoof(0);
    expect(r.copyBytesPerSecond).toBeGreaterThan(1e11);
    expect(r.bf16MmaFlops).toBeGreaterThan(r.tf32MmaFlops);
    expect(r.expPerSecond).toBeGreaterThan(1e11);
    const t = Tensor.empty([1 << 24], 'f32', 'cuda:0');
    native().startTimer(0, undefined, 50);
    fill(t, 1, 0, 1);
    const ms = native().stopTimer(0, undefined);
    expect(ms).toBeGreaterThan(0);
    expect(ms).toBeLessThan(1000);
    t.dispose();
  });
});

describe('measureRoof (the CPU ceilings)', () => {
  test('every ceiling measured; the bf16 dot rate exactly where the bf16 dot tile runs', () => {
    const r = native().measureRoof();
    for (const v of [r.fmaGflops, r.expPerSecond, r.copyGBps]) expect(v).toBeGreaterThan(0);
    expect(r.threads).toBeGreaterThanOrEqual(1);
    if (info().cpu.isa.includes('bf16')) expect(r.bf16DotGflops).toBeGreaterThan(0);
    else expect(r.bf16DotGflops).toBe(0);
  });
});
