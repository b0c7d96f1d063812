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
import { describeCuda, expectClose, expectCode, expectReject, makeTensor, randn, rng, selectionOutsideGap } from './helpers';
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
    // fasterVLM and foPru keep the top-k of the scores they return: the
    // device's indices are held to the selection rule (README, "CPU and GPU:
    // tolerance and ties") against the CPU's, on the CPU's scores; the other
    // methods' selections are not one top-k, and are compared exactly
    // (random data leaves no near-tie at their cuts).
    const byRule = (x: { indices: Tensor; scores: Tensor }, y: { indices: Tensor }) => {
      const [B, k] = x.indices.shape;
      const n = x.scores.shape[1];
      const want = Array.from(x.indices.toArray());
      const got = Array.from(y.indices.toArray());
      const sc = x.scores.toArray();
      for (let r = 0; r < B; r++) {
        expect(selectionOutsideGap(want.slice(r * k, (r + 1) * k), got.slice(r * k, (r + 1) * k), (i) => Number(sc[r * n + i]))).toEqual([]);
      }
    };
    byRule(fasterVLMSync(a.host, { keep: 58 }), fasterVLMSync(a.device, { keep: 58 }));
    same(vtcClsSync([a.host, b.host], { keep: 64, startLayer: 0, endLayer: 2 }), vtcClsSync([a.device, b.device], { keep: 64, startLayer: 0, endLayer: 2 }));
    same(fastVSync(a.host, { imageStart: 35, imageLength: 500, keep: 100 }), fastVSync(a.device, { imageStart: 35, imageLength: 500, keep: 100 }));
    same(hiPruneSync(a.host, b.host, { retention: 640, crops: 5 }), hiPruneSync(a.device, b.device, { retention: 640, crops: 5 }));
    byRule(foPruSync(a.host, { keep: 144, cls: true }), foPruSync(a.device, { keep: 144, cls: true }));
    expect(fasterVLMSync(a.device, { keep: 58 }).indices.device).toBe(dev);
  });
});
