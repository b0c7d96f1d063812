/**
 * Host output memory kept for reuse: the ArrayBuffers of disposed outputs.
 *
 * A fresh ArrayBuffer of a few MB is fresh pages, and the first write to each
 * 4 KiB page is a page fault (~11 µs on the Firecracker VMs this project is
 * measured on). V8 frees an output's memory only when it collects the
 * tensor, so a Sync loop allocates new memory call after call between
 * collections: measured on a ToMe step (577 × 1024 f32, a 1.8 MB merged
 * output), a fresh output averaged 37 faults and 0.54 ms to allocate and
 * fill against 0.03 ms for a reused one (most calls fault nothing, and one
 * in a few faults every page, so the median hides it and the mean does not).
 *
 * So `dispose()` of a host tensor that tokensieve allocated hands its
 * ArrayBuffer here, detached from the tensor (a zero-copy transfer), and the
 * next output of the same byte size takes it. Only memory no JS outside the
 * library can still reach is taken: a tensor whose `data` was read, or the
 * `data` of one of its views, keeps its memory (lib/tensor.ts, HostBlock).
 *
 * Bounds as the addon's own cache (cpu/host_pool.h): buffers of 64 KiB and
 * more; at most a sixteenth of the machine's memory, and 256 MiB, kept idle
 * (the oldest go first); a buffer idle for 5 s is dropped (left to the
 * collector) by a timer that does not keep the process alive. Per JS
 * thread: a worker_thread's module instance keeps its own (its buffers
 * belong to its isolate).
 */
import * as os from 'os';

/** Outputs smaller than this come from V8's allocator as before (its heap reuses them). */
export const MIN_POOLED_BYTES = 1 << 16;
const IDLE_MS = 5000;
const CAP_BYTES = Math.min(256 * 2 ** 20, Math.floor(os.totalmem() / 16));

interface Idle {
  buffer: ArrayBuffer;
  since: number;
}

const idle: Idle[] = []; // in return order: the oldest first
let idleBytes = 0;
let timer: ReturnType<typeof setTimeout> | undefined;

/** A recycled ArrayBuffer of exactly `bytes` (the most recently returned: the warmest), or undefined. */
export function takeHostBuffer(bytes: number): ArrayBuffer | undefined {
  if (bytes < MIN_POOLED_BYTES) return undefined;
  for (let i = idle.length - 1; i >= 0; i--) {
    if (idle[i].buffer.byteLength === bytes) {
      const { buffer } = idle[i];
      idle.splice(i, 1);
      idleBytes -= bytes;
      return buffer;
    }
  }
  return undefined;
}

/**
 * Takes `buffer`'s memory for reuse: the buffer itself is detached (every
 * TypedArray over it reads as empty from now on) and a new ArrayBuffer over
 * the same memory is kept. A buffer that cannot be transferred is left alone.
 */
export function recycleHostBuffer(buffer: ArrayBuffer): void {
  const bytes = buffer.byteLength;
  if (bytes < MIN_POOLED_BYTES || bytes > CAP_BYTES) return;
  let moved: ArrayBuffer;
  try {
    moved = structuredClone(buffer, { transfer: [buffer] });
  } catch {
    return;
  }
  idle.push({ buffer: moved, since: Date.now() });
  idleBytes += bytes;
  let drop = 0;
  while (idleBytes > CAP_BYTES) idleBytes -= idle[drop++].buffer.byteLength;
  if (drop > 0) idle.splice(0, drop);
  schedule();
}

/** Drops buffers idle for IDLE_MS; the timer is unref'd, so it never keeps the process alive. */
function schedule(): void {
  if (timer !== undefined || idle.length === 0) return;
  timer = setTimeout(() => {
    timer = undefined;
    const now = Date.now();
    let drop = 0;
    while (drop < idle.length && now - idle[drop].since >= IDLE_MS) idleBytes -= idle[drop++].buffer.byteLength;
    if (drop > 0) idle.splice(0, drop);
    schedule();
  }, Math.max(1, IDLE_MS - (Date.now() - idle[0].since)));
  timer.unref?.();
}

/** What is kept now. */
export function hostPoolStats(): { bytes: number; blocks: number } {
  return { bytes: idleBytes, blocks: idle.length };
}

/** Drops every kept buffer (the collector frees them); returns their bytes. */
export function emptyHostPool(): number {
  const bytes = idleBytes;
  idle.length = 0;
  idleBytes = 0;
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  return bytes;
}
