/**
 * Devices, build/runtime information and the CPU thread count.
 */
import { invalid, TokenSieveError } from './errors';
import { native, nativePath } from './native';
import { emptyHostPool, hostPoolStats } from './hostpool';
import type { NativeInfo } from '../typings/native';

/** `'cpu'` or `'cuda:N'` (`'cuda'` is accepted as `'cuda:0'`). */
export type Device = 'cpu' | `cuda:${number}`;
export type DeviceLike = Device | 'cuda';

/** Parses a device name; -1 is the host. */
export function deviceOrdinal(device: unknown, arg = 'device'): number {
  if (device === 'cpu' || device === undefined) return -1;
  if (device === 'cuda') return 0;
  if (typeof device === 'string') {
    const m = /^cuda:(\d{1,4})$/.exec(device);
    if (m) return Number(m[1]);
  }
  throw invalid('ERR_ARG', arg, "'cpu', 'cuda' or 'cuda:N'", device);
}

export function deviceOf(ordinal: number): Device {
  return ordinal < 0 ? 'cpu' : `cuda:${ordinal}`;
}

export interface CudaDeviceInfo {
  ordinal: number;
  name: string;
  /** Compute capability, e.g. "9.0". */
  capability: string;
  totalMemory: number;
  multiprocessors: number;
  /** Whether this build holds code this device can run, and why not. */
  kernelsAvailable: boolean;
  kernelsReason: string;
}

export interface Info {
  version: string;
  /** Path of the loaded native binary. */
  binary: string;
  build: {
    compiler: string;
    buildType: string;
    cudaCompiled: boolean;
    /** CUDART_VERSION compiled against, e.g. "13.0" ("" in a CPU-only build). */
    cudaCompiledVersion: string;
    /** CMake CUDA architectures, e.g. ["80-real", ..., "90-virtual"]. */
    cudaArchitectures: string[];
    /** The CPU kernel sets compiled in: ["baseline", "avx2", "avx512", "avx512-bf16", "avx512-vnni", "avx512-bf16-vnni"]. */
    cpuIsas: string[];
  };
  /**
   * isa: the set this CPU runs: "avx512" with "-bf16" (the bf16 dot tile,
   * vdpbf16ps, for products of bf16 operands) and/or "-vnni" (the INT8 tile,
   * vpdpbusd, for INT8 logits) where the CPU has them, or "avx2", or
   * "baseline"; TOKENSIEVE_CPU_ISA=avx512|avx2|baseline picks a narrower one.
   */
  cpu: { isa: string; threads: number; defaultThreads: number };
  /**
   * One plain sentence on what runs where, e.g. "Using the CPU kernels (avx2,
   * 16 threads). CUDA is not available (...); nothing needs doing: every
   * kernel and method runs on the CPU."
   */
  summary: string;
  cuda: {
    available: boolean;
    /** Why CUDA cannot be used ("" when available). */
    reason: string;
    runtimeVersion: string;
    driverVersion: string;
    devices: CudaDeviceInfo[];
  };
}

function cudaVersion(v: number): string {
  return v > 0 ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : '';
}

let cachedRuntime: NativeInfo['cuda'] | undefined;

function runtime(): NativeInfo['cuda'] {
  if (!cachedRuntime) cachedRuntime = native().info().cuda;
  return cachedRuntime;
}

/** Version, build flags, CUDA compiled/runtime/driver versions, devices, and why CUDA is unavailable. */
export function info(): Info {
  const n = native().info();
  cachedRuntime = n.cuda;
  return {
    version: n.version,
    binary: nativePath() ?? '',
    build: {
      compiler: n.compiler,
      buildType: n.buildType,
      cudaCompiled: n.cudaCompiled,
      cudaCompiledVersion: cudaVersion(n.cudaCompiledVersion),
      cudaArchitectures: n.cudaArchitectures ? n.cudaArchitectures.split(/[\s;]+/) : [],
      cpuIsas: n.cpuIsas,
    },
    cpu: { isa: n.cpuIsa, threads: n.threads, defaultThreads: native().defaultThreads() },
    summary: summaryOf(n.cpuIsa, n.threads, n.cuda.available, n.cuda.reason, n.cuda.devices.length),
    cuda: {
      available: n.cuda.available,
      reason: n.cuda.reason,
      runtimeVersion: cudaVersion(n.cuda.runtimeVersion),
      driverVersion: cudaVersion(n.cuda.driverVersion),
      devices: n.cuda.devices.map((d) => ({ ...d })),
    },
  };
}

/** The reason split into what happened and what would fix it ("...(cudaErrorX): install ..."). */
export function splitReason(reason: string): { why: string; fix: string } {
  const m = /^(.*?\))(?::\s*(.*))?$/s.exec(reason);
  return m ? { why: m[1], fix: m[2] ?? '' } : { why: reason, fix: '' };
}

function summaryOf(isa: string, threads: number, available: boolean, reason: string, devices: number): string {
  const cpu = `Using the CPU kernels (${isa}, ${threads} threads)`;
  if (available) return `${cpu} for host tensors and CUDA (${devices} device${devices === 1 ? '' : 's'}) for device tensors.`;
  const { why, fix } = splitReason(reason);
  return `${cpu}. CUDA is not available (${why}); nothing needs doing: every kernel and method runs on the CPU.` +
    (fix ? ` Only to use a GPU: ${fix}.` : '');
}

/** True when a CUDA device can be used. */
export function cudaAvailable(): boolean {
  return runtime().available;
}

/** Why CUDA cannot be used ("" when it can). */
export function cudaUnavailableReason(): string {
  return runtime().reason;
}

/** Throws ERR_DEVICE unless CUDA device `ordinal` exists and can run this build's kernels. */
export function requireCuda(ordinal: number, what: string): void {
  const rt = runtime();
  if (!rt.available) {
    throw new TokenSieveError('ERR_DEVICE', `${what}: CUDA is unavailable: ${rt.reason}`);
  }
  const dev = rt.devices.find((d) => d.ordinal === ordinal);
  if (!dev) {
    throw new TokenSieveError(
      'ERR_DEVICE',
      `${what}: there is no device cuda:${ordinal} (found ${rt.devices.length} CUDA device(s))`,
    );
  }
  if (!dev.kernelsAvailable) {
    throw new TokenSieveError('ERR_DEVICE', `${what}: cuda:${ordinal} (${dev.name}) cannot run this build: ${dev.kernelsReason}`);
  }
}

/**
 * Sets the size of the CPU thread pool shared by every kernel (the calling
 * thread counts as one): an integer from 1 to 1024, or `'default'` for
 * TOKENSIEVE_NUM_THREADS, else the number of cores. Returns the new size.
 * @throws {TypeError} ERR_ARG for anything else (0 and negative numbers included)
 */
export function setThreads(n: number | 'default'): number {
  if (n === 'default') return native().setThreads(0);
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 1024) {
    throw invalid('ERR_ARG', 'setThreads: n', "an integer from 1 to 1024 or 'default'", n);
  }
  return native().setThreads(n);
}

export function getThreads(): number {
  return native().getThreads();
}

export interface DeviceMemory {
  /** Bytes of device memory tokensieve owns now (all devices, the whole process). */
  bytes: number;
  /** How many device buffers hold them. */
  buffers: number;
}

/**
 * Device memory tokensieve owns now, from `Tensor.empty`, copies to a device
 * and kernel outputs, until `dispose()` or the garbage collector frees it
 * (memory viewed with `Tensor.fromDevicePointer` is not counted). The same
 * bytes are reported to V8 as external memory, so that the GC runs under
 * device-memory pressure. Zero in a process that never used CUDA.
 */
export function deviceMemory(): DeviceMemory {
  const m = native().deviceMemory();
  return { bytes: m.bytes, buffers: m.buffers };
}

export interface HostCache {
  /** Bytes of idle host blocks kept for reuse. */
  bytes: number;
  /** How many blocks hold them. */
  blocks: number;
}

/**
 * Large host blocks tokensieve keeps for reuse: the copies the Promise API
 * makes of the host data a call reads and writes (JS could otherwise detach
 * or shrink an ArrayBuffer while a kernel reads it), the CPU kernels'
 * scratch above 16 MiB (packed panels, distance matrices), and the memory of
 * disposed host outputs whose `data` was never read (lib/hostpool.ts). A
 * block of 64 KiB or more goes back to this cache when its call ends (an
 * output's, when it is disposed) and is reused by the next call of a similar
 * size (an output's, of the same size), so it does not pay a page fault per
 * 4 KiB every time. Each of the two caches (the addon's, the outputs') keeps
 * at most a sixteenth of the machine's memory (and 256 MiB) idle, and frees
 * blocks idle for 5 s. This reports what both keep now.
 */
export function hostCache(): HostCache {
  const m = native().hostCache();
  const o = hostPoolStats();
  return { bytes: m.bytes + o.bytes, blocks: m.blocks + o.blocks };
}

/** Frees every idle block of the host cache now; returns the bytes freed. */
export function emptyHostCache(): number {
  return native().emptyHostCache() + emptyHostPool();
}
