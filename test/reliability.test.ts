/**
 * What a hostile caller can do to the library: take memory away from a
 * running async call, pass huge or lying shapes, break views. Crashes are
 * caught by running such calls in a child process.
 */
import { spawnSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';
import {
  attentionScores, attentionScoresSync, bipartiteSoftMatch, bipartiteSoftMatchSync, contextualMergeSync, divPruneSync, errorReport, fromHalfBits,
  gather, gatherSync, HostTensorLike, kCenter, kCenterSync, kMedoids, kMedoidsSync, maxCoverage, maxCoverageSync, mergeSource, mergeSourceSync,
  mergeSync, mmtokCoverage, mmtokCoverageSync, mmTok, mmTokSync, patchMasks, quantize, quantizeSync, reduceAttention, reduceAttentionSync, stcScores,
  stcScoresSync, Tensor, toHalfBits, TokenSieveError, toMe, topkSync, vtcClsSync, hostCache, emptyHostCache,
} from '../lib';
import { CallOutputs } from '../lib/kernels/common';
import { hostPoolStats } from '../lib/hostpool';
import { expectCode, randn } from './helpers';

const dist = path.resolve(__dirname, '..', 'dist', 'lib');

/** A resizable ArrayBuffer (ES2024; the test typings predate it). */
type Resizable = ArrayBuffer & { resize(bytes: number): void };
const resizable = (bytes: number): Resizable => new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => Resizable)(bytes, { maxByteLength: bytes });

describe('memory taken away while an async call runs', () => {
  // Node-API can neither pin an ArrayBuffer nor see it detached, so async
  // calls stage host data in ArrayBuffers (binding/common.cc). Before they
  // did, shrinking a resizable input buffer crashed the process (SIGSEGV) and
  // a detached output failed without a code.
  for (const mode of ['transfer', 'resize'] as const) {
    test(`every async entry point survives its buffers being ${mode === 'transfer' ? 'transferred away (and freed)' : 'shrunk to 0'} mid-call`, () => {
      const r = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, 'child', 'detach.js'), dist, mode], { encoding: 'utf8', timeout: 120000 });
      expect(r.signal).toBeNull();
      expect(r.stderr).toBe('');
      const out = JSON.parse(r.stdout) as Record<string, string>;
      // Single-kernel calls read a staged copy: the result is the untouched data's.
      for (const op of ['attentionScores', 'reduceAttention', 'topk', 'gather', 'quantize', 'bipartiteSoftMatch', 'merge', 'contextualMerge',
        'kCenter', 'kMedoids', 'maxCoverage', 'mmtokCoverage', 'stcScores', 'fasterVLM', 'divPrune']) {
        expect(`${op}: ${out[op]}`).toBe(`${op}: equal`);
      }
      // A user-provided output taken away cannot receive the result.
      expect(out['attentionScores out']).toBe('rejected ERR_RANGE');
      // A method that reads its input again in a later step finds it gone.
      expect(out.tomesd).toBe('rejected ERR_RANGE');
    });
  }
});

describe('large host blocks are reused: async staging and kernel scratch (cpu/host_pool.cc)', () => {
  // gather over x [1, 500, 96] (192,000 bytes staged) into out [1, 400, 96]
  // (153,600 bytes staged, copied back): both over the pool's 64 KiB floor.
  const N = 500, C = 96, K = 400;
  const idx = { data: Int32Array.from({ length: K }, (_, i) => (i * 37 + 11) % N), shape: [1, K] };
  const input = (seed: number) => ({ data: Float32Array.from(randn(N * C, seed)), shape: [1, N, C] });
  const poisoned = () => ({ data: new Float32Array(K * C).fill(NaN), shape: [1, K, C] });
  const same = (got: Tensor, want: Tensor) => {
    const g = got.toArray(), w = want.toArray();
    expect(g.length).toBe(w.length);
    expect(g.every((v, i) => Object.is(v, w[i]))).toBe(true);
  };

  test('a second call of the same size reuses the blocks, and reads its own data', async () => {
    emptyHostCache();
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
    const a = input(1), b = input(2);
    same(await gather(a, idx, { out: poisoned() }), gatherSync(a, idx));
    const after1 = hostCache();
    expect(after1.blocks).toBe(2); // x and out, returned when the call resolved
    expect(after1.bytes).toBeGreaterThanOrEqual(N * C * 4 + K * C * 4);
    expect(after1.bytes).toBeLessThanOrEqual(1.25 * (N * C * 4 + K * C * 4));
    // Blocks still holding a's data and a's result: b's answer must not see them.
    same(await gather(b, idx, { out: poisoned() }), gatherSync(b, idx));
    expect(hostCache()).toEqual(after1);
  });

  test("outputs the call allocates are written in place; once returned, they are staged like any user buffer", async () => {
    emptyHostCache();
    const a = input(7), b = input(8);
    const r = await gather(a, idx);
    same(r, gatherSync(a, idx));
    expect(hostCache().blocks).toBe(1); // x only: the fresh output was not staged
    // The result passed back as `out` is the user's now: taken away mid-call, the call rejects.
    const p = gather(b, idx, { out: r });
    structuredClone(r.data.buffer, { transfer: [r.data.buffer as ArrayBuffer] });
    await expect(p).rejects.toMatchObject({ code: 'ERR_RANGE' });
    // A method's later step reads an output of an earlier one: still equal to Sync.
    const text = { data: Float32Array.from(randn(5 * C, 9)), shape: [1, 5, C] };
    const vis = { data: Float32Array.from(randn(N * C, 10)), shape: [1, N, C] };
    const want = mmTokSync({ text, vision: vis }, { keep: 40 });
    const got = await mmTok({ text, vision: vis }, { keep: 40 });
    same(got.indices, want.indices);
    same(got.gains as Tensor, want.gains as Tensor);
  });

  test('spans of a MB and more (copied in chunks on the CPU pool) arrive intact, with an odd tail', async () => {
    // 3,001 × 131 f32 = 1.57 MB: six 256 KiB chunks and a partial one. The
    // identity gather returns x itself, so every byte of both staged copies
    // (x in, out back) is compared.
    const [n, c] = [3001, 131];
    const x = { data: Float32Array.from(randn(n * c, 41)), shape: [1, n, c] };
    const all = { data: Int32Array.from({ length: n }, (_, i) => i), shape: [1, n] };
    const out = { data: new Float32Array(n * c).fill(NaN), shape: [1, n, c] };
    const got = await gather(x, all, { out });
    expect(Buffer.from((got.data as Float32Array).buffer).equals(Buffer.from(x.data.buffer))).toBe(true);
    expect(Buffer.from(out.data.buffer).equals(Buffer.from(x.data.buffer))).toBe(true);
  });

  test('concurrent calls each get their own block', async () => {
    emptyHostCache();
    const xs = Array.from({ length: 6 }, (_, i) => input(10 + i));
    const got = await Promise.all(xs.map((x) => gather(x, idx, { out: poisoned() })));
    got.forEach((g, i) => same(g, gatherSync(xs[i], idx)));
    const st = hostCache();
    expect(st.blocks).toBeGreaterThanOrEqual(2);
    expect(st.blocks).toBeLessThanOrEqual(12);
  });

  test('small spans are not kept, and emptyHostCache frees the rest', async () => {
    emptyHostCache();
    const small = { data: Float32Array.from(randn(8 * C, 3)), shape: [1, 8, C] }; // 3 KB
    same(await gather(small, { data: new Int32Array([7, 0, 3]), shape: [1, 3] }), gatherSync(small, { data: new Int32Array([7, 0, 3]), shape: [1, 3] }));
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
    await gather(input(4), idx);
    const held = hostCache().bytes;
    expect(held).toBeGreaterThan(0);
    expect(emptyHostCache()).toBe(held);
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
    expect(emptyHostCache()).toBe(0);
  });

  test('blocks idle for 5 s are freed by the background thread', async () => {
    emptyHostCache();
    await gather(input(5), idx, { out: poisoned() });
    const returned = Date.now();
    expect(hostCache().blocks).toBe(2);
    await new Promise((r) => setTimeout(r, 3000));
    expect(hostCache().blocks).toBe(2);
    // Polled (a loaded machine may wake the thread late), then checked that
    // it was not early.
    while (hostCache().blocks > 0 && Date.now() - returned < 15000) await new Promise((r) => setTimeout(r, 100));
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
    expect(Date.now() - returned).toBeGreaterThanOrEqual(4900);
  }, 25000);

  test('kernel scratch over 16 MiB goes back to the cache and is reused by the next call', () => {
    // kCenter packs its rows as panels: 1,100 × 4,096 f32 is 18 MB, over what
    // a thread keeps for itself (Scratch::kKeepBytes).
    emptyHostCache();
    const x = { data: Float32Array.from(randn(1100 * 4096, 11)), shape: [1, 1100, 4096] };
    const first = kCenterSync(x, 9);
    const held = hostCache();
    expect(held.bytes).toBeGreaterThanOrEqual(1104 * 4096 * 4);
    const second = kCenterSync(x, 9);
    expect(hostCache()).toEqual(held);
    expect(Array.from(second.indices.toArray())).toEqual(Array.from(first.indices.toArray()));
    expect(Array.from(second.distances.toArray())).toEqual(Array.from(first.distances.toArray()));
  });
});

describe('disposed host outputs are reused (lib/hostpool.ts)', () => {
  // A gather of 400 rows × 96 f32 is a 153,600-byte output, over the 64 KiB floor.
  const N = 500, C = 96, K = 400, bytes = K * C * 4;
  const idx = { data: Int32Array.from({ length: K }, (_, i) => (i * 37 + 11) % N), shape: [1, K] };
  const input = (seed: number) => ({ data: Float32Array.from(randn(N * C, seed)), shape: [1, N, C] });
  // The values a call must return, computed with nothing in the cache.
  const expected = (seed: number) => {
    const x = input(seed).data;
    return Array.from(idx.data).flatMap((r) => Array.from(x.subarray(r * C, r * C + C)));
  };
  beforeEach(() => {
    emptyHostCache();
  });

  test('an output never read through data goes back on dispose and the next output of its size takes it, written whole', () => {
    const a = gatherSync(input(1), idx);
    expect(a.toArray()).toEqual(expected(1)); // toArray copies: the memory stays recyclable
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
    a.dispose();
    expect(hostCache()).toEqual({ bytes, blocks: 1 });
    // The next output gets a's memory, still holding a's values: every element must be overwritten.
    const b = gatherSync(input(2), idx);
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
    expect(b.toArray()).toEqual(expected(2));
    // Another size does not take it.
    b.dispose();
    const c = gatherSync(input(3), { data: idx.data.subarray(0, K - 1), shape: [1, K - 1] });
    expect(hostCache()).toEqual({ bytes, blocks: 1 });
    expect(c.toArray()).toEqual(expected(3).slice(0, (K - 1) * C));
  });

  test('Tensor.empty zeroes reused memory; an uninitialized output reuses it as it is', () => {
    gatherSync(input(4), idx).dispose();
    const z = Tensor.empty([K, C]);
    expect(hostCache().blocks).toBe(0);
    expect(z.toArray().every((v) => v === 0)).toBe(true);
    z.dispose();
    expect(hostCache().blocks).toBe(1);
  });

  test('an output whose data was read (directly or through a view) keeps its memory', () => {
    const a = gatherSync(input(5), idx);
    const d = a.data as Float32Array;
    a.dispose();
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
    expect(d.length).toBe(K * C);
    expect(Array.from(d)).toEqual(expected(5));
    const b = gatherSync(input(6), idx);
    const viewData = b.view([K * C]).data as Float32Array;
    b.dispose();
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
    expect(Array.from(viewData)).toEqual(expected(6));
  });

  test('views share the memory: once it is reused they are disposed too, as device views are', () => {
    const a = gatherSync(input(7), idx);
    const v = a.view([K, C]);
    a.dispose();
    expect(hostCache().blocks).toBe(1);
    expect(v.disposed).toBe(true);
    expectCode(() => v.toArray(), TokenSieveError, 'ERR_DISPOSED');
    expectCode(() => gatherSync(v, { data: Int32Array.of(0), shape: [1] }), TokenSieveError, 'ERR_DISPOSED');
    // Disposing a view returns the shared memory too.
    const b = gatherSync(input(8), idx);
    const w = b.view([K * C]);
    w.dispose();
    expect(b.disposed).toBe(true);
    expect(hostCache().blocks).toBe(1);
  });

  test('user arrays are never taken, and small outputs are not kept', () => {
    const data = new Float32Array(K * C).fill(1);
    const t = Tensor.from({ data, shape: [K, C] });
    t.dispose();
    expect(data.length).toBe(K * C);
    const s = gatherSync(input(9), { data: Int32Array.of(1, 2), shape: [1, 2] }); // 768 bytes
    s.dispose();
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
  });

  test('an async output taken back by dispose while the call that writes it runs: the call rejects, the new owner keeps its values', async () => {
    const r = gatherSync(input(10), idx);
    const p = gather(input(11), idx, { out: r });
    r.dispose(); // staged by the call (r is the user's): its memory goes to the cache now
    const taker = gatherSync(input(12), idx); // takes r's memory
    await expect(p).rejects.toMatchObject({ code: 'ERR_RANGE' });
    expect(taker.toArray()).toEqual(expected(12));
    // An output the async call allocated itself, disposed after it resolved, is reused.
    const q = await gather(input(13), idx);
    expect(q.toArray()).toEqual(expected(13));
    q.dispose();
    expect(hostCache().blocks).toBeGreaterThanOrEqual(1);
  });

  test('a zeroed output takes reused memory in a Sync call, never in an async one (zeroing it would block the event loop)', async () => {
    // All-rows scores per head, [1, 16, 1100] f32 = 70,400 bytes, a zeroed output
    // (accumulate adds into it), after a Tensor.empty of that size is returned.
    // (The outputs' cache alone: the async call's staged q and k go to the addon's.)
    const [H, Nq, D] = [16, 1100, 8];
    const q = { data: Float32Array.from(randn(H * Nq * D, 21)), shape: [1, H, Nq, D] };
    const k = { data: Float32Array.from(randn(H * Nq * D, 22)), shape: [1, H, Nq, D] };
    const opts = { queries: 'all' as const, heads: 'none' as const };
    const want = attentionScoresSync(q, k, opts).toArray();
    emptyHostCache();
    Tensor.empty([1, H, Nq]).dispose();
    expect(hostPoolStats().blocks).toBe(1);
    const a = await attentionScores(q, k, opts);
    expect(hostPoolStats().blocks).toBe(1);
    expect(a.toArray()).toEqual(want);
    const s = attentionScoresSync(q, k, opts);
    expect(hostPoolStats().blocks).toBe(0);
    expect(s.toArray()).toEqual(want);
    // Tensor.empty takes s's memory (holding these scores) zeroed: accumulating adds to 0.
    s.dispose();
    const z = Tensor.empty([1, H, Nq]);
    expect(hostPoolStats().blocks).toBe(0);
    expect(attentionScoresSync(q, k, { ...opts, accumulate: true, out: z }).toArray()).toEqual(want);
  });

  test('at most 256 MiB (or a sixteenth of memory) kept idle, the oldest dropped first; emptyHostCache drops them all', () => {
    // Uninitialized 100 MiB outputs: allocUnsafeSlow and the transfer touch no page.
    const big = () => Tensor.empty([25 * 2 ** 20], 'f32', 'cpu', { uninitialized: true });
    const cap = Math.min(256 * 2 ** 20, Math.floor(os.totalmem() / 16));
    const each = 100 * 2 ** 20;
    const three = [big(), big(), big()]; // alive together: none takes another's memory
    for (const t of three) t.dispose();
    const kept = Math.min(3, Math.floor(cap / each));
    expect(hostCache()).toEqual({ bytes: kept * each, blocks: kept });
    expect(emptyHostCache()).toBe(kept * each);
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
  });

  test('outputs idle for 5 s are dropped, by a timer that does not keep the process alive', async () => {
    gatherSync(input(14), idx).dispose();
    const returned = Date.now();
    await new Promise((r) => setTimeout(r, 3000));
    expect(hostCache().blocks).toBe(1);
    while (hostCache().blocks > 0 && Date.now() - returned < 15000) await new Promise((r) => setTimeout(r, 100));
    expect(hostCache()).toEqual({ bytes: 0, blocks: 0 });
    expect(Date.now() - returned).toBeGreaterThanOrEqual(4900);
    // A process whose only pending work is that timer exits at once (it would stay 5 s).
    const script = `const t = require(${JSON.stringify(dist)}); const o = t.gatherSync({ data: new Float32Array(${N * C}), shape: [1, ${N}, ${C}] }, { data: new Int32Array(${K}), shape: [1, ${K}] }); o.dispose(); const at = Date.now(); process.on('exit', () => console.log(t.hostCache().blocks, Date.now() - at));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 });
    const [blocks, lingered] = r.stdout.trim().split(' ').map(Number);
    expect(blocks).toBe(1);
    expect(lingered).toBeLessThan(4000);
  }, 30000);
});

describe('huge outputs are refused before anything is allocated', () => {
  const broadcast = { data: new Float32Array(8), shape: [1, 2 ** 31, 4], strides: [0, 0, 1] };
  test('Tensor.empty over the limits', () => {
    expectCode(() => Tensor.empty([2 ** 31, 4]), RangeError, 'ERR_RANGE'); // a dimension over 2^31 - 1 (was V8's uncoded "Invalid typed array length")
    expectCode(() => Tensor.empty([2 ** 20, 2 ** 20]), RangeError, 'ERR_RANGE'); // 2^40 elements
    // More than half of this machine's memory (or, on a machine of over 32 GiB, the per-tensor limit).
    const n = Math.floor(os.totalmem() / 2 / 4) + 1;
    expectCode(() => Tensor.empty(n <= 2 ** 31 - 1 ? [n] : [Math.ceil(n / 2 ** 30), 2 ** 30], 'f32'), RangeError, 'ERR_RANGE', /half this machine's memory|host limit/);
  });
  test('a broadcast view of 2^31 tokens is refused by every op, at once', () => {
    // Before: the view passed the bounds check; kCenter/divPrune ran for over
    // 10 s growing memory by 256 MB, the others tried to allocate outputs.
    const t0 = Date.now();
    expectCode(() => kCenterSync(broadcast, 2), RangeError, 'ERR_RANGE');
    expectCode(() => divPruneSync(broadcast, { keep: 2 }), RangeError, 'ERR_RANGE');
    expectCode(() => kMedoidsSync(broadcast, 2), RangeError, 'ERR_RANGE');
    expectCode(() => topkSync({ data: new Float32Array(8), shape: [2 ** 31, 4], strides: [0, 1] }, 2), RangeError, 'ERR_RANGE');
    expectCode(() => stcScoresSync(broadcast), RangeError, 'ERR_RANGE');
    expectCode(() => reduceAttentionSync({ data: new Float32Array(8), shape: [1, 1, 2 ** 31, 4], strides: [0, 0, 0, 1] }), RangeError, 'ERR_RANGE');
    expect(Date.now() - t0).toBeLessThan(5000);
  });
  test("outputs that fit the per-tensor limit but not the machine: half the memory, per call", () => {
    // [2^31 - 1, 2] indices and values: 32 GiB, which would be committed lazily and get the process killed.
    expectCode(() => topkSync({ data: new Float32Array(8), shape: [2 ** 31 - 1, 4], strides: [0, 1] }, 2), RangeError, 'ERR_RANGE', os.totalmem() < 2 ** 36 ? /half this machine's memory/ : undefined);
    expectCode(() => patchMasks({ data: new Int32Array(4), shape: [1, 4] }, 2 ** 31 - 1), RangeError, 'ERR_RANGE');
  });
  test('a tensor snapshots its shape: mutating it later changes nothing', async () => {
    const like = { data: Float32Array.from(randn(2 * 2 * 9 * 8, 3)), shape: [2, 2, 9, 8] };
    const want = attentionScoresSync(like, like, { queries: 0, keys: { start: 1 } }).toArray();
    const p = attentionScores(like, like, { queries: 0, keys: { start: 1 } });
    like.shape[2] = 1;
    expect((await p).toArray()).toEqual(want);
    const t = Tensor.from({ data: new Float32Array(6), shape: [2, 3] });
    expect(() => { (t.shape as number[])[0] = 6; }).toThrow(TypeError);
    expect(t.shape).toEqual([2, 3]);
  });
});

describe('reads from JS check the view too', () => {
  test('Tensor.view refuses negative, NaN and fractional offsets', () => {
    const t = Tensor.from({ data: new Float32Array(8), shape: [8] });
    for (const off of [-2, NaN, 1.5, '1' as unknown as number]) expectCode(() => t.view([2], [1], off), TypeError, 'ERR_ARG');
    expect(t.view([2], [1], 6).toArray()).toEqual([0, 0]);
  });
  test('a buffer detached or shrunk after the tensor was made is an ERR_RANGE, never zeros or a shorter answer', () => {
    const detached = Tensor.from({ data: new Int32Array([0, 1, 1, 0]), shape: [1, 4] });
    structuredClone(detached.data.buffer, { transfer: [detached.data.buffer as ArrayBuffer] });
    expectCode(() => patchMasks(detached, 2), RangeError, 'ERR_RANGE'); // was all-zero masks
    const ab = resizable(16);
    const x = Tensor.from({ data: new Float32Array(ab, 0, 4), shape: [4] });
    (x.data as Float32Array).set([1, 2, 3, 4]);
    ab.resize(8);
    expectCode(() => errorReport(x, { data: new Float32Array(4), shape: [4] }), RangeError, 'ERR_RANGE'); // was a report on 2 elements
    expectCode(() => x.toArray(), RangeError, 'ERR_RANGE');
    const gone = new Float32Array(4);
    structuredClone(gone.buffer, { transfer: [gone.buffer] });
    expectCode(() => errorReport({ data: gone, shape: [4] }, { data: new Float32Array(4), shape: [4] }), RangeError, 'ERR_RANGE'); // was a raw TypeError
    const ki = new Int32Array([0, 1]);
    structuredClone(ki.buffer, { transfer: [ki.buffer] });
    const h = { data: Float32Array.from(randn(12, 4)), shape: [1, 4, 3] };
    expectCode(() => contextualMergeSync(h, h, { keptIndices: { data: ki, shape: [1, 2] } }, 1), RangeError, 'ERR_RANGE');
  });
});

describe('shortcut paths check their inputs', () => {
  const x = (B: number, N: number, C: number, seed = 1) => ({ data: Float32Array.from(randn(B * N * C, seed)), shape: [B, N, C] });
  test('mmTok with keep >= n (no kernel runs) still refuses bad text', () => {
    const vision = x(1, 8, 4);
    const disposed = Tensor.from(x(1, 3, 4));
    disposed.dispose();
    expectCode(() => mmTokSync({ text: disposed, vision }, { keep: 64 }), TokenSieveError, 'ERR_DISPOSED');
    expectCode(() => mmTokSync({ text: { data: new Float64Array(12) as never, shape: [1, 3, 4] }, vision }, { keep: 64 }), TypeError, 'ERR_DTYPE');
    expectCode(() => mmTokSync({ text: x(1, 3, 5), vision }, { keep: 64 }), RangeError, 'ERR_SHAPE');
    expect(mmTokSync({ text: x(1, 3, 4), vision }, { keep: 64 }).indices.toArray()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });
  test('bipartiteSoftMatch with r = 0 and ToMe blocks with r = 0 check their views', () => {
    const ab = resizable(2 * 9 * 4 * 4);
    const m = Tensor.from({ data: new Float32Array(ab), shape: [2, 9, 4] });
    ab.resize(16);
    expectCode(() => bipartiteSoftMatchSync(m, 0), RangeError, 'ERR_RANGE');
    const tome = toMe({ layers: 2, r: [0, 0] });
    expectCode(() => tome.stepSync(x(2, 9, 4), x(2, 9, 4).data as never), TypeError, 'ERR_ARG');
    expectCode(() => tome.stepSync(x(2, 9, 4), x(2, 8, 4)), RangeError, 'ERR_SHAPE');
    expectCode(() => tome.stepSync(x(2, 9, 4), { data: new Float32Array(72), shape: [2, 9, 2, 2] }), RangeError, 'ERR_SHAPE');
    expect(tome.stepSync(x(2, 9, 4), x(2, 9, 4)).shape).toEqual([2, 9, 4]);
  });
  test("vtcCls checks the last layer, which the reference's [start:-1] never reads", () => {
    const q = { data: Float32Array.from(randn(1 * 2 * 9 * 4, 5)), shape: [1, 2, 9, 4] };
    const k = { data: Float32Array.from(randn(1 * 2 * 9 * 4, 6)), shape: [1, 2, 9, 4] };
    const layers = Array.from({ length: 4 }, () => ({ q, k }));
    expect(vtcClsSync(layers, { keep: 3, startLayer: 0 }).indices.shape).toEqual([1, 3]);
    expectCode(() => vtcClsSync([...layers.slice(0, 3), null as never], { keep: 3, startLayer: 0 }), TypeError, 'ERR_ARG');
    const short = { data: new Float32Array(1 * 2 * 5 * 4), shape: [1, 2, 5, 4] };
    const short2 = { data: new Float32Array(1 * 2 * 5 * 4), shape: [1, 2, 5, 4] };
    expectCode(() => vtcClsSync([...layers.slice(0, 3), { q: short, k: short2 }], { keep: 3, startLayer: 0 }), RangeError, 'ERR_SHAPE');
  });
  test("mergeSource refuses a host plan whose assign was tampered with, as merge does", () => {
    const plan = bipartiteSoftMatchSync(x(1, 9, 4), 2);
    expect(() => { (plan as { assign: unknown }).assign = undefined; }).toThrow(TypeError); // frozen
    (plan.assign.data as Int32Array)[3] = 1000;
    expectCode(() => mergeSync(plan, x(1, 9, 4)), RangeError, 'ERR_RANGE');
    expectCode(() => mergeSourceSync(plan), RangeError, 'ERR_RANGE');
  });
  test('toHalfBits and fromHalfBits check their arguments', () => {
    expectCode(() => (toHalfBits as () => unknown)(), TypeError, 'ERR_ARG');
    expectCode(() => toHalfBits([1], 'f8' as never), TypeError, 'ERR_DTYPE');
    expectCode(() => fromHalfBits(null as never, 'bf16'), TypeError, 'ERR_ARG');
  });
});

describe('a failing call frees every output it allocated', () => {
  // Each call below fails in the kernel, after its outputs were allocated: on
  // a GPU those would hold device memory until the garbage collector ran.
  const nan = (shape: number[]): HostTensorLike => {
    const data = Float32Array.from(randn(shape.reduce((a, b) => a * b), 9));
    data[3] = NaN;
    return { data, shape };
  };
  // Made before the allocations are watched: the plan is an input here.
  const plans = [0, 1].map(() => bipartiteSoftMatchSync({ data: Float32Array.from(randn(2 * 9 * 4, 2)), shape: [2, 9, 4] }, 2));
  const cases: Array<[string, () => unknown, () => Promise<unknown>]> = [
    ['attentionScores', () => attentionScoresSync(nan([2, 3, 7, 8]), nan([2, 3, 7, 8])), () => attentionScores(nan([2, 3, 7, 8]), nan([2, 3, 7, 8]))],
    ['reduceAttention', () => reduceAttentionSync(nan([2, 3, 7, 7])), () => reduceAttention(nan([2, 3, 7, 7]))],
    ['gather', () => gatherSync(nan([2, 5, 3]), { data: Int32Array.of(0, 9, 1, 2), shape: [2, 2] }), () => gather(nan([2, 5, 3]), { data: Int32Array.of(0, 9, 1, 2), shape: [2, 2] })],
    ['quantize', () => quantizeSync(nan([2, 5, 4])), () => quantize(nan([2, 5, 4]))],
    ['bipartiteSoftMatch', () => bipartiteSoftMatchSync(nan([2, 9, 4]), 2), () => bipartiteSoftMatch(nan([2, 9, 4]), 2)],
    ['mergeSource', () => mergeSourceSync(plans[0], { data: Int32Array.of(0, 1, 2, 99, 0, 1, 2, 3), shape: [2, 4] }), () => mergeSource(plans[1], { data: Int32Array.of(0, 1, 2, 99, 0, 1, 2, 3), shape: [2, 4] })],
    ['kCenter', () => kCenterSync(nan([2, 9, 4]), 2), () => kCenter(nan([2, 9, 4]), 2)],
    ['kMedoids', () => kMedoidsSync(nan([2, 9, 4]), 2), () => kMedoids(nan([2, 9, 4]), 2)],
    ['maxCoverage', () => maxCoverageSync(nan([2, 9, 4]), 2), () => maxCoverage(nan([2, 9, 4]), 2)],
    ['mmtokCoverage', () => mmtokCoverageSync({ text: nan([2, 3, 4]), vision: nan([2, 9, 4]) }), () => mmtokCoverage({ text: nan([2, 3, 4]), vision: nan([2, 9, 4]) })],
    ['stcScores', () => stcScoresSync(nan([2, 9, 4])), () => stcScores(nan([2, 9, 4]))],
  ];
  for (const [name, sync, async] of cases) {
    test(`${name} (Sync and async)`, async () => {
      for (const run of [sync, async]) {
        // Every tensor an op allocates goes through CallOutputs.empty.
        const spy = jest.spyOn(CallOutputs.prototype, 'empty');
        try {
          await expect(Promise.resolve().then(run)).rejects.toMatchObject({ code: 'ERR_RANGE' });
          const allocated = spy.mock.results.map((r) => r.value as Tensor);
          expect(allocated.length).toBeGreaterThan(0);
          expect(allocated.filter((t) => !t.disposed).map((t) => `${name}: ${t}`)).toEqual([]); // none left allocated
        } finally {
          spy.mockRestore();
        }
      }
    });
  }
});
