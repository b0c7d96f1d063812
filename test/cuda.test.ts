/**
 * CUDA path: device tensors, memory, and parity with the CPU kernels (which
 * the other suites check against the float64 references). Skipped, with the
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

interface Case {
  B: number; H: number; Nq: number; Nk: number; D: number; dtype: FloatDType; layout: 'bhnd' | 'bnhd';
  opts: Record<string, unknown>;
}

const CASES: Case[] = [
  { B: 2, H: 3, Nq: 1, Nk: 1, D: 15, dtype: 'f32', layout: 'bhnd', opts: {} },
  { B: 3, H: 2, Nq: 2, Nk: 2, D: 64, dtype: 'f16', layout: 'bnhd', opts: {} },
  { B: 2, H: 4, Nq: 7, Nk: 7, D: 80, dtype: 'bf16', layout: 'bhnd', opts: { causal: true } },
  { B: 5, H: 16, Nq: 577, Nk: 577, D: 64, dtype: 'f16', layout: 'bhnd', opts: { queries: 0, keys: { start: 1 } } },
  { B: 2, H: 16, Nq: 577, Nk: 577, D: 64, dtype: 'bf16', layout: 'bnhd', opts: {} },
  { B: 1, H: 2, Nq: 1031, Nk: 1031, D: 128, dtype: 'f16', layout: 'bhnd', opts: { causal: true, queries: { start: 100, end: 1031 } } },
  { B: 2, H: 3, Nq: 7, Nk: 577, D: 80, dtype: 'f32', layout: 'bnhd', opts: { causal: true, heads: 'none' } },
  { B: 2, H: 2, Nq: 31, Nk: 1031, D: 15, dtype: 'bf16', layout: 'bhnd', opts: { heads: 'sum', reduce: 'sum', queries: [3, 3, 30] } },
  { B: 1, H: 1, Nq: 1031, Nk: 2, D: 128, dtype: 'f32', layout: 'bhnd', opts: { causal: true, causalOffset: -5 } },
  { B: 2, H: 2, Nq: 300, Nk: 300, D: 256, dtype: 'f16', layout: 'bhnd', opts: { queries: -1 } },
  { B: 1, H: 16, Nq: 729, Nk: 729, D: 72, dtype: 'bf16', layout: 'bnhd', opts: { keys: { start: 7, end: 700 } } },
];

describeCuda('attention kernels: CUDA matches CPU', () => {
  for (const c of CASES) {
    test(`B${c.B} H${c.H} Nq${c.Nq} Nk${c.Nk} D${c.D} ${c.dtype} ${c.layout} ${JSON.stringify(c.opts)}`, async () => {
      const qShape = c.layout === 'bhnd' ? [c.B, c.H, c.Nq, c.D] : [c.B, c.Nq, c.H, c.D];
      const kShape = c.layout === 'bhnd' ? [c.B, c.H, c.Nk, c.D] : [c.B, c.Nk, c.H, c.D];
      const q = makeTensor(randn(qShape.reduce((a, b) => a * b), seed++, 1.5), qShape, c.dtype).t;
      const k = makeTensor(randn(kShape.reduce((a, b) => a * b), seed++, 1.5), kShape, c.dtype).t;
      const bias = Tensor.from({ data: Float32Array.from(randn(c.B * c.Nk, seed++), (v, i) => (i % 7 === 2 ? -Infinity : v)), shape: [c.B, c.Nk] });
      const opts = { ...c.opts, layout: c.layout, keyBias: bias };
      const cpu = attentionScoresSync(q, k, opts);
      const qd = q.to(dev), kd = k.to(dev), bd = bias.to(dev);
      const gpu = attentionScoresSync(qd, kd, { ...opts, keyBias: bd });
      expect(gpu.device).toBe(dev);
      expectClose(gpu.toArray(), cpu.toArray(), 1e-7, 2e-4, 'sync');
      // async, into a poisoned device output, then accumulate onto it
      const poison = Tensor.from({ data: new Float32Array(cpu.numel).fill(NaN), shape: cpu.shape as number[] }, { device: dev });
      await attentionScores(qd, kd, { ...opts, keyBias: bd, out: poison });
      expectClose(poison.toArray(), cpu.toArray(), 1e-7, 2e-4, 'async');
      attentionScoresSync(qd, kd, { ...opts, keyBias: bd, out: poison, accumulate: true });
      expectClose(poison.toArray(), cpu.toArray().map((v) => 2 * v), 1e-7, 2e-4, 'accumulate');
      for (const t of [qd, kd, bd, gpu, poison]) t.dispose();
    });
  }

  test('NaN in a device input is an ERR_RANGE; checkFinite: false skips the check', async () => {
    const data = Float32Array.from(randn(2 * 2 * 9 * 8, 3));
    data[100] = NaN;
    const q = Tensor.from({ data, shape: [2, 2, 9, 8] }, { device: dev });
    expectCode(() => attentionScoresSync(q, q), RangeError, 'ERR_RANGE');
    await expectReject(attentionScores(q, q), RangeError, 'ERR_RANGE');
    expect(attentionScoresSync(q, q, { checkFinite: false }).shape).toEqual([2, 9]);
    q.dispose();
  });

  test('reduceAttention: CUDA matches CPU for every dtype', () => {
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      const p = makeTensor(Float64Array.from(randn(2 * 3 * 77 * 577, seed++), Math.abs), [2, 3, 77, 577], dtype).t;
      for (const opts of [{}, { queries: 0, keys: { start: 1 } }, { heads: 'none' as const, reduce: 'sum' as const, queries: [5, 5, 76] }]) {
        const cpu = reduceAttentionSync(p, opts);
        const pd = p.to(dev);
        const gpu = reduceAttentionSync(pd, opts);
        expectClose(gpu.toArray(), cpu.toArray(), 1e-7, 1e-5, `${dtype} ${JSON.stringify(opts)}`);
        pd.dispose();
        gpu.dispose();
      }
    }
  });
});

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
});

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
