/**
 * CUDA tensors: transfers, views, dispose, device memory and the garbage
 * collector. Skipped, with the
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
let seed = 7000;

describeCuda('CUDA tensors', () => {
  test('host → device → host round trip for every dtype', () => {
    const arrays = {
      f32: Float32Array.from(randn(1031, 1)),
      f16: Uint16Array.from({ length: 1031 }, (_, i) => (i * 7919) & 0xffff),
      bf16: Uint16Array.from({ length: 1031 }, (_, i) => (i * 104729) & 0xffff),
      i32: Int32Array.from({ length: 1031 }, (_, i) => i * 3 - 999),
      i64: BigInt64Array.from({ length: 1031 }, (_, i) => BigInt(i) * 1234567891011n),
      i8: Int8Array.from({ length: 1031 }, (_, i) => (i % 256) - 128),
      u8: Uint8Array.from({ length: 1031 }, (_, i) => i & 0xff),
    } as const;
    for (const [dtype, data] of Object.entries(arrays)) {
      const d = Tensor.from({ data, shape: [1031], dtype: dtype as FloatDType }, { device: dev });
      expect(d.device).toBe(dev);
      expect(typeof d.ptr).toBe('bigint');
      const back = d.toHost();
      expect(Array.from(back.data as ArrayLike<number | bigint>)).toEqual(Array.from(data as ArrayLike<number | bigint>));
      d.dispose();
    }
  });

  test('dispose, Symbol.dispose and ERR_DISPOSED', () => {
    const t = Tensor.empty([1024], 'f32', dev);
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
    expectCode(() => t.toHost(), TokenSieveError, 'ERR_DISPOSED');
    expectCode(() => attentionScoresSync(t.view([1, 1, 32, 32], undefined, 0), t), TokenSieveError, 'ERR_DISPOSED');
    t.dispose();
  });

  test('device memory is counted and reported to V8 as external memory', () => {
    // process.memoryUsage().external does not include what addons report with
    // napi_adjust_external_memory (Node 20: +40 bytes for 256 MiB), so read
    // V8's own count, which is what drives its collections.
    const before = native().deviceMemory();
    const t = Tensor.empty([64, 1024, 1024], 'f32', dev); // 256 MiB
    const during = native().deviceMemory();
    expect(deviceMemory().bytes - before.bytes).toBe(256 * 1024 * 1024);
    expect(during.buffers - before.buffers).toBe(1);
    expect(during.v8External - before.v8External).toBeGreaterThanOrEqual(256 * 1024 * 1024);
    t.dispose();
    const after = native().deviceMemory();
    expect(after.bytes).toBe(before.bytes);
    expect(during.v8External - after.v8External).toBeGreaterThanOrEqual(256 * 1024 * 1024);
  });

  test('undisposed device tensors are freed by the garbage collector, even in a synchronous loop', () => {
    const dist = path.resolve(__dirname, '..', 'dist', 'lib', 'index.js');
    // 10x the device's memory in 1 GiB tensors, never disposed, no explicit
    // gc(): only possible if V8 sees the memory and finalizes the buffers
    // inside its collections (the loop never yields to the event loop).
    const r = spawnSync(process.execPath, ['-e', `
      const t = require(${JSON.stringify(dist)});
      const total = t.info().cuda.devices[0].totalMemory;
      const n = Math.ceil(10 * total / 2 ** 30);
      let peak = 0;
      for (let i = 0; i < n; i++) { t.Tensor.empty([256, 1024, 1024], 'f32', 'cuda:0'); peak = Math.max(peak, t.deviceMemory().bytes); }
      process.stdout.write(JSON.stringify({ n, total, peak }));`], { encoding: 'utf8', env: process.env, timeout: 300000 });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { n: number; total: number; peak: number };
    expect(out.n).toBeGreaterThanOrEqual(10);
    expect(out.peak).toBeLessThan(out.total);
  });

  test('a failing call frees the device memory it allocated (every family)', async () => {
    const nan = (shape: number[]): Tensor => {
      const data = Float32Array.from(randn(shape.reduce((a, b) => a * b), seed++));
      data[3] = NaN;
      return Tensor.from({ data, shape }, { device: dev });
    };
    const inputs = [nan([2, 3, 7, 8]), nan([2, 3, 7, 7]), nan([2, 5, 4]), nan([2, 9, 4]), nan([2, 3, 4])];
    const [q, probs, x, m, text] = inputs;
    const calls: Array<[string, () => unknown]> = [
      ['attentionScores', () => attentionScores(q, q.view(q.shape))],
      ['reduceAttention', () => reduceAttentionSync(probs)],
      ['quantize', () => quantize(x)],
      ['bipartiteSoftMatch', () => bipartiteSoftMatchSync(m, 2)],
      ['kCenter', () => kCenterSync(m, 2)],
      ['kMedoids', () => kMedoids(m, 2)],
      ['maxCoverage', () => maxCoverageSync(m, 2)],
      ['mmtokCoverage', () => mmtokCoverageSync({ text, vision: m })],
      ['stcScores', () => stcScores(m)],
    ];
    const before = deviceMemory().bytes;
    let failed = 0;
    for (const [name, call] of calls) {
      await expect(Promise.resolve().then(call)).rejects.toMatchObject({ code: 'ERR_RANGE' });
      expect(`${name}: ${deviceMemory().bytes - before} bytes left`).toBe(`${name}: 0 bytes left`);
      failed++;
    }
    expect(failed).toBe(calls.length);
    for (const t of inputs) t.dispose();
  });

  test('fromDevicePointer views foreign memory without copying (strided views too)', () => {
    const host = Float32Array.from({ length: 4 * 6 }, (_, i) => i);
    const owner = Tensor.from({ data: host, shape: [4, 6] }, { device: dev });
    const view = Tensor.fromDevicePointer({ ptr: owner.ptr, shape: [4, 3], strides: [6, 2], dtype: 'f32', device: dev });
    expect(view.toArray()).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]);
    view.dispose(); // not owned: must not free the owner's memory
    expect(owner.toArray()).toEqual(Array.from(host));
    owner.dispose();
  });

  test('mixing host and device inputs is an ERR_DEVICE', () => {
    const q = Tensor.from({ data: new Float32Array(64), shape: [1, 1, 8, 8] });
    const k = q.to(dev);
    expectCode(() => attentionScoresSync(q, k), TokenSieveError, 'ERR_DEVICE');
    k.dispose();
  });
});
