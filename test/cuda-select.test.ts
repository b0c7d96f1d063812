/**
 * CUDA top-k and gather against the CPU kernels: equal, ties and NaN included. Skipped, with the
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
let seed = 7200;

describeCuda('selection kernels: CUDA matches CPU exactly', () => {
  const shapes: Array<[number, number, number]> = [[1, 1, 1], [3, 7, 3], [4, 577, 144], [2, 1031, 1031], [2, 4784, 1196], [1, 100003, 4097], [300, 129, 64]];
  for (const [B, N, k] of shapes) {
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      test(`topk B${B} N${N} k${k} ${dtype}, with ties, NaN and ±Infinity`, async () => {
        const r = rng(B * N + k);
        const v = Array.from({ length: B * N }, () => {
          const u = r();
          return u < 0.02 ? NaN : u < 0.03 ? Infinity : u < 0.04 ? -Infinity : Math.floor(r() * 64) / 8;
        });
        const s = makeTensor(v, [B, N], dtype).t;
        const sd = s.to(dev);
        for (const order of ['index', 'score'] as const) {
          const cpu = topkSync(s, k, { order });
          const gpu = await topk(sd, k, { order });
          expect(gpu.indices.toArray()).toEqual(cpu.indices.toArray());
          expect(gpu.values!.toArray()).toEqual(cpu.values!.toArray());
        }
        sd.dispose();
      });
    }
  }

  test('gather: every dtype, out-of-range indices rejected', async () => {
    for (const dtype of ['f32', 'f16', 'i64', 'u8'] as const) {
      const data = dtype === 'i64' ? BigInt64Array.from({ length: 3 * 50 * 33 }, (_, i) => BigInt(i)) : dtype === 'u8' ? Uint8Array.from({ length: 3 * 50 * 33 }, (_, i) => i & 255) : dtype === 'f16' ? Uint16Array.from({ length: 3 * 50 * 33 }, (_, i) => i) : Float32Array.from(randn(3 * 50 * 33, 2));
      const x = Tensor.from({ data, shape: [3, 50, 33], dtype }, { device: dev });
      const idx = Tensor.from({ data: Int32Array.from({ length: 3 * 20 }, (_, i) => (i * 13) % 50), shape: [3, 20] });
      const cpu = gatherSync(x.toHost(), idx);
      const gpu = await gather(x, idx.to(dev));
      expect(gpu.toArray()).toEqual(cpu.toArray());
      const bad = Tensor.from({ data: Int32Array.of(0, 50, 1, 2, 3, 4), shape: [3, 2] }, { device: dev });
      expectCode(() => gatherSync(x, bad), RangeError, 'ERR_RANGE');
      x.dispose();
    }
  });

  test('gather into a device out: the CPU result, every element written; a host out is refused', () => {
    const x = Tensor.from({ data: Float32Array.from(randn(3 * 50 * 33, 3)), shape: [3, 50, 33] });
    const idx = Tensor.from({ data: Int32Array.from({ length: 3 * 20 }, (_, i) => (i * 17) % 50), shape: [3, 20] });
    const out = Tensor.from({ data: new Float32Array(3 * 20 * 33).fill(NaN), shape: [3, 20, 33] }).to(dev);
    expect(gatherSync(x.to(dev), idx.to(dev), { out })).toBe(out);
    expect(out.toArray()).toEqual(gatherSync(x, idx).toArray());
    expectCode(() => gatherSync(x.to(dev), idx.to(dev), { out: Tensor.empty([3, 20, 33], 'f32', 'cpu') }), Error, 'ERR_DEVICE');
  });
});
