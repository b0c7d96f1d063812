/**
 * Methods on device tensors give the CPU selections. Skipped, with the
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
let seed = 7300;

describeCuda('methods on device tensors give the CPU selections', () => {
  test('fasterVLM, vtcCls, fastV, hiPrune, foPru', () => {
    const mk = (B: number, H: number, N: number, D: number) => {
      const q = makeTensor(randn(B * H * N * D, seed++, 2), [B, H, N, D], 'f16').t;
      const k = makeTensor(randn(B * H * N * D, seed++, 2), [B, H, N, D], 'f16').t;
      return { host: { q, k }, device: { q: q.to(dev), k: k.to(dev) } };
    };
    const a = mk(5, 16, 577, 64);
    const b = mk(5, 16, 577, 64);
    const same = (x: { indices: Tensor }, y: { indices: Tensor }) => expect(y.indices.toArray()).toEqual(x.indices.toArray());
    same(fasterVLMSync(a.host, { keep: 58 }), fasterVLMSync(a.device, { keep: 58 }));
    same(vtcClsSync([a.host, b.host], { keep: 64, startLayer: 0, endLayer: 2 }), vtcClsSync([a.device, b.device], { keep: 64, startLayer: 0, endLayer: 2 }));
    same(fastVSync(a.host, { imageStart: 35, imageLength: 500, keep: 100 }), fastVSync(a.device, { imageStart: 35, imageLength: 500, keep: 100 }));
    same(hiPruneSync(a.host, b.host, { retention: 640, crops: 5 }), hiPruneSync(a.device, b.device, { retention: 640, crops: 5 }));
    same(foPruSync(a.host, { keep: 144, cls: true }), foPruSync(a.device, { keep: 144, cls: true }));
    expect(fasterVLMSync(a.device, { keep: 58 }).indices.device).toBe(dev);
  });
});
