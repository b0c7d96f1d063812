/**
 * CUDA quantization against the CPU kernels: byte-identical. Skipped, with the
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
