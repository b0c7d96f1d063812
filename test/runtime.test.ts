/**
 * The package as a process sees it: loading, info(), threads, worker_threads,
 * the event loop, memory across many calls, and the two CPU instruction-set
 * builds. Child processes load the compiled package (dist/, built by the
 * jest global setup) with this process's environment.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { attentionScores, attentionScoresSync, deviceMemory, getThreads, info, setThreads, Tensor, toHalfBits, fromHalfBits, f32ToF16Bits, f16BitsToF32, f32ToBf16Bits, bf16BitsToF32 } from '../lib';
import { expectClose, expectCode, randn, rssTest } from './helpers';

const root = path.resolve(__dirname, '..');
const dist = path.join(root, 'dist', 'lib', 'index.js');

function runNode(code: string, env: Record<string, string | undefined> = {}, args: string[] = []) {
  const r = spawnSync(process.execPath, [...args, '-e', code], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 120000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('info()', () => {
  test('reports version, build flags, CPU and CUDA state with a reason', () => {
    const i = info();
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    expect(i.version).toBe(pkg.version);
    expect(i.binary).toMatch(/\.node$/);
    expect(i.build.cpuIsas).toEqual(['baseline', 'avx2', 'avx512', 'avx512-bf16', 'avx512-vnni', 'avx512-bf16-vnni']);
    expect(i.build.cpuIsas).toContain(i.cpu.isa);
    expect(i.cpu.threads).toBeGreaterThanOrEqual(1);
    expect(typeof i.build.cudaCompiled).toBe('boolean');
    if (i.build.cudaCompiled) {
      expect(i.build.cudaCompiledVersion).toMatch(/^\d+\.\d+$/);
      expect(i.build.cudaArchitectures).toEqual(expect.arrayContaining(['80-real', '86-real', '89-real', '90-real', '90-virtual']));
    } else {
      expect(i.build.cudaArchitectures).toEqual([]);
    }
    if (!i.cuda.available) {
      expect(i.cuda.reason.length).toBeGreaterThan(10);
      expect(i.cuda.devices).toEqual([]);
    } else {
      expect(i.cuda.reason).toBe('');
      for (const d of i.cuda.devices) expect(d.capability).toMatch(/^\d+\.\d+$/);
    }
  });
});

describe('loading', () => {
  test('importing and using the package prints nothing', () => {
    const r = runNode(`const t = require(${JSON.stringify(dist)}); t.info(); t.topkSync({ data: Float32Array.of(1, 2), shape: [2] }, 1);`);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('');
  });

  test('import never throws; the first use throws one ERR_LOAD listing what was tried and how to fix it', () => {
    const bogus = path.join(os.tmpdir(), `tokensieve-bogus-${process.pid}.node`);
    fs.writeFileSync(bogus, 'not an ELF file');
    try {
      const r = runNode(
        `const t = require(${JSON.stringify(dist)});
         try { t.info(); } catch (e) { process.stdout.write(JSON.stringify({ code: e.code, name: e.name, message: e.message })); }`,
        { TOKENSIEVE_NATIVE: bogus },
      );
      expect(r.status).toBe(0);
      const e = JSON.parse(r.stdout);
      expect(e.code).toBe('ERR_LOAD');
      expect(e.name).toBe('TokenSieveError');
      expect(e.message).toContain(bogus);
      // TOKENSIEVE_NATIVE names the one file to load; the advice for the
      // package's own binaries is in test/packaging.test.ts.
      expect(e.message).toMatch(/TOKENSIEVE_NATIVE is set to .* does not load/);
    } finally {
      fs.unlinkSync(bogus);
    }
  });

  test('TOKENSIEVE_NUM_THREADS sets the default pool size', () => {
    const r = runNode(`const t = require(${JSON.stringify(dist)}); process.stdout.write(JSON.stringify([t.getThreads(), t.info().cpu.defaultThreads]))`, {
      TOKENSIEVE_NUM_THREADS: '3',
    });
    expect(JSON.parse(r.stdout)).toEqual([3, 3]);
  });
});

describe('device buffers and the garbage collector', () => {
  test('DeviceBuffer objects are finalized inside the collection, not on a later turn of the event loop', () => {
    // Foreign-pointer buffers need no GPU, and their objects are counted like
    // owned ones. Before the addon registered for synchronous finalizers,
    // all 20,000 were still alive after gc() in the same synchronous task,
    // so a loop of undisposed device tensors ran the GPU out of memory.
    const nativeJs = path.resolve(__dirname, '..', 'dist', 'lib', 'native.js');
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', `
      const n = require(${JSON.stringify(nativeJs)}).native();
      const before = n.deviceMemory().objects;
      for (let i = 0; i < 20000; i++) new n.DeviceBuffer(1024, 0, undefined, 4096n);
      const made = n.deviceMemory().objects - before;
      global.gc();
      const left = n.deviceMemory().objects - before;
      process.stdout.write(JSON.stringify({ made, left, bytes: n.deviceMemory().bytes }));`], { encoding: 'utf8', env: process.env });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { made: number; left: number; bytes: number };
    expect(out.made).toBeGreaterThan(0);
    expect(out.left).toBeLessThanOrEqual(0);
    expect(out.bytes).toBe(0); // foreign memory is never counted as owned
  });

  test('deviceMemory() is zero where no device memory was allocated', () => {
    expect(deviceMemory()).toEqual({ bytes: 0, buffers: 0 });
  });
});

describe('threads', () => {
  test("setThreads resizes the shared pool, 'default' restores the default, 0 and negatives are refused", () => {
    const before = getThreads();
    try {
      expect(setThreads(3)).toBe(3);
      expect(getThreads()).toBe(3);
      expect(setThreads(1)).toBe(1);
      expect(setThreads('default')).toBe(info().cpu.defaultThreads);
      expect(getThreads()).toBe(info().cpu.defaultThreads);
      setThreads(2);
      for (const bad of [0, -1, 1025, NaN]) expectCode(() => setThreads(bad), TypeError, 'ERR_ARG');
      expect(getThreads()).toBe(2);
    } finally {
      setThreads(before);
    }
  });
});

describe('worker_threads', () => {
  test('the addon loads and computes in workers, concurrently with the main thread', async () => {
    const code = `
      const { parentPort } = require('worker_threads');
      const t = require(${JSON.stringify(dist)});
      const q = { data: Float32Array.from({ length: 2 * 4 * 33 * 16 }, (_, i) => Math.sin(i)), shape: [2, 4, 33, 16] };
      t.attentionScores(q, q, { queries: 'all' }).then((out) => parentPort.postMessage(Array.from(out.data)));
    `;
    const q = { data: Float32Array.from({ length: 2 * 4 * 33 * 16 }, (_, i) => Math.sin(i)), shape: [2, 4, 33, 16] };
    const workers = [0, 1, 2].map(() => new Worker(code, { eval: true }));
    const results = await Promise.all(
      workers.map((w) => new Promise<number[]>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      })),
    );
    const here = Array.from(attentionScoresSync(q, q).data as Float32Array);
    for (const r of results) expect(r).toEqual(here);
    await Promise.all(workers.map((w) => w.terminate()));
  });
});

describe('the Promise API', () => {
  test('runs CPU work off the event loop (an immediate fires before the result)', async () => {
    const q = { data: Float32Array.from(randn(1 * 8 * 1024 * 64, 3)), shape: [1, 8, 1024, 64] };
    let ticked = false;
    setImmediate(() => {
      ticked = true;
    });
    const out = await attentionScores(q, q);
    expect(ticked).toBe(true);
    expect(out.shape).toEqual([1, 1024]);
  });

  // Descriptors and parameter blocks are reused from rings (lib/tensor.ts,
  // lib/native.ts): the addon must have copied them before the call that
  // received them returns. Sync calls right after an async one go round
  // both rings several times while it runs, with other shapes and options.
  test('an async call keeps its shapes and options while later calls reuse the descriptor and parameter arrays', async () => {
    const make = (n: number, seed: number) => ({ data: Float32Array.from(randn(2 * 3 * n * 40, seed)), shape: [2, 3, n, 40] });
    const q = make(97, 41), k = make(97, 42);
    const opts = { causal: true, queries: [5, 96], heads: 'none' as const, keys: { start: 3, end: 90 } };
    const want = attentionScoresSync(q, k, opts).toArray();
    const pending = attentionScores(q, k, opts);
    const small = make(9, 43);
    for (let i = 0; i < 100; i++) attentionScoresSync(small, small, { queries: 'all', scale: 0.5 + i });
    const got = (await pending).toArray();
    expect(got).toEqual(want);
    expect(got).toHaveLength(2 * 3 * 87);
  });

  test('the inputs stay alive while the job runs, even if the caller drops them and the GC runs', () => {
    const r = runNode(
      `const t = require(${JSON.stringify(dist)});
       const make = (seed) => ({ data: Float32Array.from({ length: 4 * 768 * 32 }, (_, i) => Math.sin(i * seed)), shape: [1, 4, 768, 32] });
       const want = Array.from(t.attentionScoresSync(make(0.1), make(0.2)).data);
       const pending = t.attentionScores(make(0.1), make(0.2)); // nothing else references the inputs
       for (let i = 0; i < 5; i++) { global.gc(); new Float32Array(1 << 20).fill(7); }
       pending.then((out) => {
         const got = Array.from(out.data);
         process.stdout.write(JSON.stringify(got.length === want.length && got.every((v, i) => v === want[i])));
       });`,
      {},
      ['--expose-gc'],
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('true');
  });
});

describe('memory', () => {
  rssTest('no host memory growth across many sync and async calls', () => {
    const r = runNode(
      `const t = require(${JSON.stringify(dist)});
       const q = { data: Float32Array.from({ length: 2 * 4 * 64 * 32 }, (_, i) => Math.cos(i)), shape: [2, 4, 64, 32] };
       const rss = () => { global.gc(); return process.memoryUsage().rss; };
       (async () => {
         const round = async () => { t.attentionScoresSync(q, q); await t.attentionScores(q, q); t.topkSync({ data: new Float32Array(1000), shape: [1000] }, 10); };
         // RSS climbs for the first thousands of calls (V8 tiers up, allocators warm), then stays flat.
         for (let i = 0; i < 5000; i++) await round();
         const samples = [rss()];
         for (let w = 0; w < 3; w++) {
           for (let i = 0; i < 5000; i++) await round();
           samples.push(rss());
         }
         process.stdout.write(JSON.stringify(samples));
       })();`,
      {},
      ['--expose-gc'],
    );
    expect(r.status).toBe(0);
    const samples: number[] = JSON.parse(r.stdout);
    const growth = samples.slice(1).map((v, i) => v - samples[i]);
    // Three windows of 15000 calls each. A leak of even 1 KB per call adds
    // ~15 MB to every window; the allocator's one-off jumps (a new arena, a
    // heap page; up to ~8 MB seen on a loaded CI machine) land in one window,
    // so the smallest window's growth is the leak signal.
    expect(Math.min(...growth)).toBeLessThan(4 * 1024 * 1024);
  });
});

describe('CPU instruction sets', () => {
  test('the baseline build gives the same results as the AVX2 build (within f32 rounding)', () => {
    const code = `const t = require(${JSON.stringify(dist)});
      const n = 2 * 3 * 97 * 40;
      const q = { data: Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 2), shape: [2, 3, 97, 40] };
      const k = { data: Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.11) * 2), shape: [2, 3, 97, 40] };
      const h = { data: t.toHalfBits(q.data, 'f16'), shape: q.shape, dtype: 'f16' };
      const out = [t.attentionScoresSync(q, k, { causal: true }), t.attentionScoresSync(q, k, { queries: [0, 5] }), t.attentionScoresSync(h, h)];
      process.stdout.write(JSON.stringify({ isa: t.info().cpu.isa, out: out.map((o) => Array.from(o.data)) }));`;
    const base = JSON.parse(runNode(code, { TOKENSIEVE_CPU_ISA: 'baseline' }).stdout);
    const best = JSON.parse(runNode(code).stdout);
    expect(base.isa).toBe('baseline');
    for (let i = 0; i < 3; i++) expectClose(base.out[i], best.out[i], 1e-8, 1e-5, `output ${i}`);
  });
});

describe('f16 / bf16 conversion helpers', () => {
  test('round to nearest even, and round-trip exactly representable values', () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // rounds up to Infinity
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // ties to even: 0
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(bf16BitsToF32(0xc040)).toBe(-3);
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const back = toHalfBits(fromHalfBits(all, 'f16'), 'f16');
    for (let i = 0; i < 65536; i++) {
      const isNaN = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
      if (!isNaN && back[i] !== i) throw new Error(`f16 ${i.toString(16)} → ${back[i].toString(16)}`);
    }
  });

  test('the native f16/bf16 decoders agree with the JS ones on every bit pattern', () => {
    // gather copies bits; attention decodes them. Probe decoding through reduceAttention of single values.
    for (const dtype of ['f16', 'bf16'] as const) {
      const bits = Uint16Array.from({ length: 65536 }, (_, i) => i).filter((b) => {
        const v = dtype === 'f16' ? f16BitsToF32(b) : bf16BitsToF32(b);
        return Number.isFinite(v);
      });
      const n = bits.length;
      const t = Tensor.from({ data: bits, shape: [1, 1, 1, n], dtype });
      const { reduceAttentionSync } = require('../lib');
      const out = reduceAttentionSync(t, { reduce: 'sum', heads: 'sum' });
      const want = Float32Array.from(bits, (b) => (dtype === 'f16' ? f16BitsToF32(b) : bf16BitsToF32(b)));
      // (the sum turns -0 into +0)
      expect(Array.from(out.data as Float32Array)).toEqual(Array.from(want, (v) => v + 0));
    }
  });
});
