/**
 * CUDA quantization against the CPU kernels: byte-identical. Skipped, with the
 * reason printed, when no usable CUDA device is present.
 *
 * The second suite drives both variants of every kernel (16-byte vectors;
 * the scalar fallback for misaligned pointers and odd widths) at the widths
 * around a vector and around 4,096, and the sizes of the bandwidth target
 * (12,544 × 4,096); the third the call-overhead hook and the stream-ordered
 * error checks (no read-back unless the call waits).
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import {
  info,
  dequantize,
  attentionScores,
  attentionScoresSync,
  fasterVLMSync,
  fastVSync,
  FloatDType,
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
import { describeCuda, expectClose, expectCode, expectReject, makeTensor, randn, rng } from './helpers';
const dev = 'cuda:0';
let seed = 7400;

describeCuda('quantization: CUDA is byte-identical to CPU', () => {
  // C = 65: { group: 13 } divides it; 32 and 64 need pad (a short last group).
  const grans = ['tensor', 'token', 'channel', { group: 13 }, { group: 32, pad: true }, { group: 64, pad: true }, { rows: 128, pad: true }] as const;
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    for (const bits of [8, 4] as const) {
      test(`${dtype} ${bits}-bit, every granularity, with and without smoothing`, async () => {
        const shape = [2, 3, 577, 65];
        const x = makeTensor(randn(shape.reduce((a, b) => a * b), seed++, 2), shape, dtype).t;
        const xd = x.to(dev);
        let compared = 0;
        for (const granularity of grans) {
          for (const smooth of [false, true]) {
            compared++;
            const cpu = quantizeSync(x, { bits, granularity, smooth });
            const gpu = await quantize(xd, { bits, granularity, smooth });
            expect(gpu.data.device).toBe(dev);
            expect(gpu.data.toArray()).toEqual(cpu.data.toArray());
            expect(gpu.scales.toArray()).toEqual(cpu.scales.toArray());
            if (smooth) expect(gpu.mean!.toArray()).toEqual(cpu.mean!.toArray());
            for (const out of ['f32', 'f16', 'bf16'] as const) {
              expect(dequantizeSync(gpu, { dtype: out, addMean: smooth }).toArray()).toEqual(dequantizeSync(cpu, { dtype: out, addMean: smooth }).toArray());
            }
          }
        }
        expect(compared).toBe(grans.length * 2);
        const bad = Tensor.from({ data: Float32Array.of(1, NaN), shape: [2] }, { device: dev });
        expectCode(() => quantizeSync(bad), RangeError, 'ERR_RANGE');
        xd.dispose();
        bad.dispose();
      });
    }
  }

  test("INT8 attention scores: CUDA within f32 rounding of CPU", () => {
    const q = makeTensor(randn(2 * 16 * 577 * 64, seed++), [2, 16, 577, 64], 'f16').t;
    const k = makeTensor(randn(2 * 16 * 577 * 64, seed++), [2, 16, 577, 64], 'f16').t;
    for (const opts of [{}, { queries: 0, keys: { start: 1 } }, { causal: true, smoothK: false, qRows: 128 }] as const) {
      const cpu = attentionScoresSync(q, k, { ...opts, precision: 'int8' });
      const gpu = attentionScoresSync(q.to(dev), k.to(dev), { ...opts, precision: 'int8' });
      expectClose(gpu.toArray(), cpu.toArray(), 1e-7, 2e-4);
    }
  });
});

type Gran = 'tensor' | 'token' | 'channel' | { group: number; pad?: boolean } | { rows: number; pad?: boolean };

/** quantize on the CPU and on the device, every output compared byte for byte; returns the comparisons made. */
function compareQuantize(x: Tensor, xd: Tensor, bits: 8 | 4, granularity: Gran, out?: { data: Tensor; scales: Tensor }): number {
  const cpu = quantizeSync(x, { bits, granularity });
  const gpu = quantizeSync(xd, { bits, granularity, ...(out ? { out } : {}) });
  expect(gpu.data.device).toBe(dev);
  expect(gpu.data.toArray()).toEqual(cpu.data.toArray());
  expect(gpu.scales.toArray()).toEqual(cpu.scales.toArray());
  let n = 2;
  for (const dtype of ['f32', 'bf16'] as const) {
    expect(dequantizeSync(gpu, { dtype }).toArray()).toEqual(dequantizeSync(cpu, { dtype }).toArray());
    n++;
  }
  return n;
}

function bytesOf(a: ArrayBufferView): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** A device copy of `t` whose first element sits `offset` elements past an aligned address (a view into a larger buffer). */
function misaligned(t: Tensor, offset: number): { view: Tensor; owner: Tensor } {
  const host = t.isHost ? t : t.toHost();
  const arr = host.toArray();
  const padded = makeTensor([...new Array(offset).fill(0), ...arr], [arr.length + offset], host.dtype as FloatDType).t;
  const owner = padded.to(dev);
  const size = host.dtype === 'f32' ? 4 : 2;
  const view = Tensor.fromDevicePointer({ ptr: owner.ptr + BigInt(offset * size), shape: [...host.shape], dtype: host.dtype, device: dev });
  return { view, owner };
}

describeCuda('quantization: vector and scalar CUDA paths against the CPU', () => {
  const grans: Gran[] = ['token', { group: 8, pad: true }, { group: 32, pad: true }, { group: 5, pad: true }, { group: 256, pad: true }, 'channel', 'tensor'];
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    test(`${dtype}: widths 1..4097, 1 and 13 rows, every granularity, INT8 and INT4`, () => {
      let compared = 0;
      for (const W of [1, 3, 7, 8, 9, 4095, 4096, 4097]) {
        for (const rows of [1, 13]) {
          const x = makeTensor(randn(rows * W, seed++, 2), [rows, W], dtype).t;
          const xd = x.to(dev);
          const x4 = makeTensor(x.toArray(), [1, 1, rows, W], dtype).t;
          const x4d = x4.to(dev);
          for (const bits of [8, 4] as const) {
            for (const g of grans) compared += compareQuantize(x, xd, bits, g);
            compared += compareQuantize(x4, x4d, bits, { rows: 4, pad: true });
          }
          xd.dispose();
          x4d.dispose();
        }
      }
      expect(compared).toBeGreaterThan(0);
    });

    test(`${dtype}: misaligned x and outputs take the scalar kernels, same bytes`, () => {
      let compared = 0;
      for (const W of [8, 9, 64, 4096]) {
        const x = makeTensor(randn(5 * W, seed++, 2), [5, W], dtype).t;
        for (const offset of [1, 3]) {
          const { view, owner } = misaligned(x, offset);
          for (const bits of [8, 4] as const) {
            for (const g of ['token', { group: 8, pad: true }, 'channel', 'tensor'] as const) compared += compareQuantize(x, view, bits, g);
            // Misaligned outputs (x aligned): codes one byte past a boundary.
            const xd = x.to(dev);
            const bytes = bits === 8 ? 5 * W : 5 * Math.ceil(W / 2);
            const dataOwner = Tensor.empty([bytes + 1], 'u8', dev);
            const data = Tensor.fromDevicePointer({ ptr: dataOwner.ptr + 1n, shape: bits === 8 ? [5, W] : [5, Math.ceil(W / 2)], dtype: bits === 8 ? 'i8' : 'u8', device: dev });
            const scales = Tensor.empty([5, 1], 'f32', dev);
            compared += compareQuantize(x, xd, bits, 'token', { data, scales });
            xd.dispose();
            dataOwner.dispose();
            scales.dispose();
          }
          owner.dispose();
        }
      }
      expect(compared).toBeGreaterThan(0);
    });
  }

  test('12,544 × 4,096 f32 and bf16, per token and per group of 64, INT8 and INT4 (the bandwidth sizes)', async () => {
    let compared = 0;
    for (const dtype of ['f32', 'bf16'] as const) {
      const x = makeTensor(randn(12544 * 4096, seed++, 1), [12544, 4096], dtype).t;
      const xd = x.to(dev);
      for (const bits of [8, 4] as const) {
        for (const granularity of ['token', { group: 64 }] as const) {
          const cpu = await quantize(x, { bits, granularity });
          const gpu = await quantize(xd, { bits, granularity });
          // Int8Array/Uint8Array compared as whole buffers (toEqual on 51 M numbers is slow).
          expect(bytesOf(gpu.data.toHost().data).equals(bytesOf(cpu.data.data))).toBe(true);
          expect(gpu.scales.toArray()).toEqual(cpu.scales.toArray());
          compared += 2;
          const back = await dequantize(gpu, { dtype: 'f32' });
          const ref = await dequantize(cpu, { dtype: 'f32' });
          expect(bytesOf(back.toHost().data).equals(bytesOf(ref.data))).toBe(true);
          compared++;
          gpu.data.dispose();
          gpu.scales.dispose();
          back.dispose();
        }
      }
      xd.dispose();
    }
    expect(compared).toBe(12);
  }, 120_000);
});

describeCuda('call overhead: noop hook, stream-ordered error checks', () => {
  test('noopKernel runs, and a small quantizeSync costs little more than an empty kernel', () => {
    const x = Tensor.from({ data: Float32Array.from(randn(64 * 64, seed++)), shape: [64, 64] }, { device: dev });
    const out = { data: Tensor.empty([64, 64], 'i8', dev), scales: Tensor.empty([64, 1], 'f32', dev) };
    const median = (f: () => void): number => {
      const t: number[] = [];
      for (let i = 0; i < 200; i++) {
        const t0 = process.hrtime.bigint();
        f();
        t.push(Number(process.hrtime.bigint() - t0) / 1e3);
      }
      return t.sort((a, b) => a - b)[100];
    };
    for (let i = 0; i < 20; i++) quantizeSync(x, { out, checkFinite: false }); // warm: pool, module load
    const noop = median(() => native().noopKernel(0));
    const call = median(() => quantizeSync(x, { out, checkFinite: false }));
    // Reported, not a tight bound (shared CI GPUs): the target is <= 20 µs.
    process.stdout.write(`quantizeSync 64×64 on ${dev}: median ${call.toFixed(1)} µs, empty kernel + sync ${noop.toFixed(1)} µs, overhead ${(call - noop).toFixed(1)} µs\n`);
    expect(noop).toBeGreaterThan(0);
    expect(call - noop).toBeLessThan(1000);
    x.dispose();
    out.data.dispose();
    out.scales.dispose();
  });

  test('NaN input: wait: true rejects it, wait: false only enqueues (no read-back)', () => {
    let compared = 0;
    const vals = randn(2 * 16 * 8, seed++);
    vals[5] = NaN;
    const x = Tensor.from({ data: Float32Array.from(vals), shape: [2, 16, 8] }, { device: dev });
    expectCode(() => kCenterSync(x, 4), RangeError, 'ERR_RANGE');
    expect(() => kCenterSync(x, 4, { wait: false })).not.toThrow();
    const cov = Tensor.from({ data: Float32Array.from(vals), shape: [2, 8, 16] }, { device: dev });
    expectCode(() => maxCoverageSync(cov, 4), RangeError, 'ERR_RANGE');
    expect(() => maxCoverageSync(cov, 4, { wait: false })).not.toThrow();
    expectCode(() => quantizeSync(x), RangeError, 'ERR_RANGE');
    expect(() => quantizeSync(x, { wait: false })).not.toThrow();
    compared += 6;
    // The stream still works after the un-checked calls.
    native().noopKernel(0);
    expect(compared).toBe(6);
    x.dispose();
    cov.dispose();
  });
});

describe('noopKernel test hook without CUDA', () => {
  const compiled = info().build.cudaCompiled;
  (compiled ? test.skip : test)('throws ERR_UNSUPPORTED in a CPU-only build', () => {
    let code: unknown;
    try {
      native().noopKernel(0);
    } catch (e) {
      code = (e as { code?: string }).code;
    }
    expect(code).toBe('ERR_UNSUPPORTED');
  });
});
