/** Test utilities: seeded data, dtype rounding, poisoned outputs, comparisons. */
import { cudaAvailable, cudaUnavailableReason, DType, FloatDType, Tensor, toHalfBits, fromHalfBits } from '../lib';
import { native } from '../lib/native';
import type { NativeDeviceBuffer, NativeDeviceBufferCtor } from '../typings/native';

// Globals as module bindings: under jest every read of a global (Math,
// Infinity, ...) goes through the test context's interceptor (~150 ns),
// which made the float64 loops here about 100× slower than in plain Node.
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box–Muller). */
export function randn(n: number, seed: number, scale = 1): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12);
    const v = r();
    const m = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/**
 * Host tensor of `dtype` from float values, plus the values it actually
 * holds after rounding to that dtype (what a float64 reference must use).
 */
export function makeTensor(values: ArrayLike<number>, shape: number[], dtype: FloatDType = 'f32'): { t: Tensor; exact: Float64Array } {
  if (dtype === 'f32') {
    const data = Float32Array.from(values);
    return { t: Tensor.from({ data, shape }), exact: Float64Array.from(data) };
  }
  const bits = toHalfBits(values, dtype);
  return { t: Tensor.from({ data: bits, shape, dtype }), exact: Float64Array.from(fromHalfBits(bits, dtype)) };
}

/** An f32 output tensor filled with NaN, so any element a kernel does not write is caught. */
export function poisoned(shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.from({ data: new Float32Array(n).fill(NaN), shape });
}

/** Max |a - e| / (atol + rtol·|e|) over all elements; <= 1 passes. NaN in a fails. */
export function closeness(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol: number): { worst: number; at: number } {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const r = Number.isNaN(a) || Number.isNaN(e) ? (Number.isNaN(a) && Number.isNaN(e) ? 0 : Infinity) : Math.abs(a - e) / (atol + rtol * Math.abs(e));
    if (r > worst || Number.isNaN(r)) {
      worst = Number.isNaN(r) ? Infinity : r;
      at = i;
    }
  }
  return { worst, at };
}

export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol: number, what = ''): void {
  const { worst, at } = closeness(actual, expected, atol, rtol);
  if (!(worst <= 1)) {
    throw new Error(`${what} mismatch at ${at}: got ${actual[at]}, expected ${expected[at]} (atol ${atol}, rtol ${rtol}, ratio ${worst.toFixed(2)})`);
  }
}

/** Expects fn to throw (or reject) an error of `cls` with `code`. */
export function expectCode(fn: () => unknown, cls: Function, code: string, message?: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  if (caught === undefined) throw new Error(`expected ${cls.name} ${code} but nothing was thrown`);
  const err = caught as Error & { code?: string };
  if (!(err instanceof cls) || err.code !== code || (message && !message.test(err.message))) {
    throw new Error(`expected ${cls.name} ${code}${message ? ` matching ${message}` : ''} but got ${err.constructor?.name} ${err.code}: ${err.message}`);
  }
}

export async function expectReject(p: Promise<unknown>, cls: Function, code: string, message?: RegExp): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  if (caught === undefined) throw new Error(`expected a rejection with ${cls.name} ${code} but the promise resolved`);
  const err = caught as Error & { code?: string };
  if (!(err instanceof cls) || err.code !== code || (message && !message.test(err.message))) {
    throw new Error(`expected ${cls.name} ${code} but got ${err.constructor?.name} ${err.code}: ${err.message}`);
  }
}

/** Tolerances for kernel outputs whose inputs were rounded to `dtype` (the reference uses the rounded values). */
export function tolerance(dtype: DType): { atol: number; rtol: number } {
  return dtype === 'f32' ? { atol: 1e-7, rtol: 2e-4 } : { atol: 1e-7, rtol: 2e-4 };
}

/** `describe` that runs only with a usable CUDA device, and says why it is skipped otherwise. */
export function describeCuda(name: string, body: () => void): void {
  let available = false;
  let reason = '';
  try {
    available = cudaAvailable();
    reason = cudaUnavailableReason();
  } catch (e) {
    reason = (e as Error).message;
  }
  if (available) {
    describe(name, () => {
      // A GPU test that compares nothing passes for the wrong reason: every
      // test here must reach at least one expect(). Tests whose comparisons
      // are conditional also count them and assert the count.
      beforeEach(() => expect.hasAssertions());
      body();
    });
  } else {
    describe.skip(`${name} [skipped: ${reason || 'CUDA unavailable'}]`, body);
    // eslint-disable-next-line no-console
    console.warn(`CUDA tests skipped (${name}): ${reason || 'CUDA unavailable'}`);
  }
}

/**
 * Counts live owned device buffers: wraps the addon's DeviceBuffer class
 * (which Tensor.empty looks up on every allocation) so that each allocation
 * and each explicit dispose() is seen. A buffer left to the finalizer stays
 * counted — exactly a leak across pushes.
 */
export function countDeviceBuffers(): { live: () => number; restore: () => void } {
  const mod = native() as unknown as { DeviceBuffer: NativeDeviceBufferCtor };
  const Original = mod.DeviceBuffer;
  let live = 0;
  const counted = new WeakSet<object>();
  class Counted extends (Original as unknown as new (...args: unknown[]) => NativeDeviceBuffer) {
    constructor(...args: unknown[]) {
      super(...args);
      if (args[3] === undefined) {
        live++;
        counted.add(this);
      }
    }
    // A dispose() while an async call still holds the buffer is deferred by
    // the addon, but it was asked for: the buffer is not leaked.
    override dispose(): void {
      super.dispose();
      if (counted.delete(this)) live--;
    }
  }
  mod.DeviceBuffer = Counted as unknown as NativeDeviceBufferCtor;
  return { live: () => live, restore: () => { mod.DeviceBuffer = Original; } };
}

/** The selection rule's gap (README, "CPU and GPU: tolerance and ties"). */
export const SELECTION_GAP = 1e-5;
/** Scores below this magnitude are compared on it (a relative gap means nothing at 0). */
export const SELECTION_FLOOR = 1e-3;

/**
 * The selection rule: a selection `got` may differ from the reference's
 * `want` (kept indices of one row, any order) only by indices whose score
 * lies within the gap of the cut, the smallest score `want` keeps:
 * |s − cut| <= gap · max(|s|, |cut|, floor). Returns the indices that break
 * it (an index dropped or taken outside the gap, a repeated index, or a
 * different count): empty when the rule holds.
 */
export function selectionOutsideGap(
  want: ArrayLike<number>, got: ArrayLike<number>, scoreOf: (i: number) => number,
  gap = SELECTION_GAP, floor = SELECTION_FLOOR,
): number[] {
  const w = new Set(Array.from(want));
  const g = new Set(Array.from(got));
  if (w.size !== want.length || g.size !== got.length || want.length !== got.length) return [...g].filter((i) => !w.has(i)).concat(-1);
  let cut = Infinity;
  for (const i of w) cut = Math.min(cut, scoreOf(i));
  const near = (i: number): boolean => {
    const s = scoreOf(i);
    return Math.abs(s - cut) <= gap * Math.max(Math.abs(s), Math.abs(cut), floor);
  };
  const bad: number[] = [];
  for (const i of w) if (!g.has(i) && !near(i)) bad.push(i);
  for (const i of g) if (!w.has(i) && !near(i)) bad.push(i);
  return bad;
}

/**
 * The cross-device tolerance rule (README, "CPU and GPU: tolerance and
 * ties"), as FlashAttention states it: a fast path's result agrees when its
 * error against the float64 reference is at most `factor` times the error of
 * a same-precision baseline (the CPU back end) against that reference, plus
 * `atol`, plus the rounding of the exact value to f32 (`ulps` float ulps),
 * which any f32 output may carry. Returns the worst ratio of error to allowance.
 */
export function expectDerivedTolerance(
  fast: ArrayLike<number>, baseline: ArrayLike<number>, exact: ArrayLike<number>, what: string,
  { factor = 2, atol = 0, ulps = 1 }: { factor?: number; atol?: number; ulps?: number } = {},
): number {
  expect(fast.length).toBe(exact.length);
  expect(baseline.length).toBe(exact.length);
  let worst = 0;
  for (let i = 0; i < exact.length; i++) {
    const e = exact[i];
    const allowed = factor * Math.abs(baseline[i] - e) + atol + ulps * Math.abs(e) * 2 ** -23 + Number.MIN_VALUE;
    const err = Math.abs(fast[i] - e);
    if (!(err <= allowed)) {
      throw new Error(`${what}[${i}]: ${fast[i]} vs exact ${e} (error ${err.toExponential(3)}; baseline ${baseline[i]}, allowed ${allowed.toExponential(3)})`);
    }
    worst = Math.max(worst, err / allowed);
  }
  return worst;
}

/**
 * A test that judges leaks by RSS: skipped, with the reason printed, in the
 * ASan run (scripts/sanitize.sh), where the allocator's quarantine makes RSS
 * drift and LeakSanitizer checks leaks directly.
 */
export function rssTest(name: string, fn: () => unknown, timeout?: number): void {
  if (process.env.TOKENSIEVE_UNDER_ASAN === '1') {
    // eslint-disable-next-line no-console
    console.warn(`skipped under ASan (RSS drifts with its quarantine; LSan checks leaks in this run): ${name}`);
    test.skip(`${name} [skipped under ASan: LSan checks leaks instead]`, fn as () => void, timeout);
  } else {
    test(name, fn as () => void, timeout);
  }
}
