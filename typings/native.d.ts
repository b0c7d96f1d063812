// The exact shape of the native module (build/Release/tokensieve.node).
// Only lib/ talks to it, and only after validating every argument.

/** Where a tensor's elements are: host TypedArray, owned device buffer, or a foreign device address. */
export type NativeMemory = ArrayBufferView | NativeDeviceBuffer | bigint;

/**
 * A tensor as the addon reads it: two positional arguments. `meta` packs
 * [dtype, device, offset, ndim, ...shape, ...strides] (may be padded; strides and offset in
 * elements; dtype 0 f32, 1 f16, 2 bf16, 3 i32, 4 i64, 5 i8, 6 u8; device -1
 * host, n >= 0 CUDA ordinal), `mem` is its memory.
 */
export interface NativeTensor {
  meta: Float64Array;
  mem: NativeMemory;
}

export interface NativeDeviceBuffer {
  readonly ptr: bigint;
  readonly bytes: number;
  readonly device: number;
  readonly disposed: boolean;
  readonly owned: boolean;
  dispose(): void;
}

export interface NativeDeviceBufferCtor {
  new (bytes: number, device: number, stream?: bigint, foreignPtr?: bigint): NativeDeviceBuffer;
}

/**
 * Every op takes positional arguments (reading named properties through
 * N-API cost more than small kernels), scalars packed in a Float64Array
 * (at least the listed length; longer is fine),
 * and ends with `async`: false runs on the calling thread and returns
 * undefined (or throws); true runs on libuv's pool and returns a Promise.
 */
export type NativeResult = undefined | Promise<void>;

export interface NativeCudaDevice {
  ordinal: number;
  name: string;
  capability: string;
  totalMemory: number;
  multiprocessors: number;
  kernelsAvailable: boolean;
  kernelsReason: string;
}

export interface NativeInfo {
  version: string;
  compiler: string;
  buildType: string;
  cudaCompiled: boolean;
  cudaCompiledVersion: number;
  cudaArchitectures: string;
  cpuIsas: string[];
  cpuIsa: string;
  threads: number;
  cuda: {
    compiled: boolean;
    available: boolean;
    runtimeVersion: number;
    driverVersion: number;
    reason: string;
    devices: NativeCudaDevice[];
  };
}

export interface NativeModule {
  DeviceBuffer: NativeDeviceBufferCtor;
  /** Contiguous views of equal byte size; host↔device or within one side. */
  copy(dst: Float64Array, dstMem: NativeMemory, src: Float64Array, srcMem: NativeMemory, stream: bigint | undefined, async: boolean): NativeResult;
  synchronize(device: number, stream: bigint | undefined, async: boolean): NativeResult;
  info(): NativeInfo;
  setThreads(n: number): number;
  getThreads(): number;
  defaultThreads(): number;
  /** This machine's CPU ceilings with the current thread count (takes about a second); bf16DotGflops is 0 where the CPU has no bf16 dot tile. */
  measureRoof(): { fmaGflops: number; bf16DotGflops: number; expPerSecond: number; copyGBps: number; threads: number };
  /**
   * Device memory tokensieve owns now (bytes, buffers; process-wide), the
   * DeviceBuffer objects alive (owned or foreign, until the GC finalizes
   * them), and V8's external-memory count for this environment.
   */
  deviceMemory(): { bytes: number; buffers: number; objects: number; v8External: number };
  /** The idle host blocks kept for reuse (cpu/host_pool.h). */
  hostCache(): { bytes: number; blocks: number };
  /** Frees them; returns the bytes freed. */
  emptyHostCache(): number;
  /** Every op's params slots by name (binding/params.h), as lib/native.ts's PARAM_NAMES declares them. */
  paramNames(): Record<string, string[]>;
  /**
   * Test hook (not public API): the CPU a·bᵀ driver of cpu/gemm.h on row-major
   * a [m, K] and b [n, K]; returns a fresh [m, n]. `upper` (a == b) computes
   * j >= i and mirrors it; `aPanels` packs a as panels instead of reading rows.
   * `bf16` (not with upper or aPanels) rounds a and b to bf16 and multiplies
   * them on the bf16 dot tile where the CPU has one (else the f32 tile).
   */
  gemmNtCheck(a: Float32Array, m: number, b: Float32Array, n: number, K: number, upper: boolean, aPanels: boolean, bf16?: boolean): Float32Array;
  /**
   * Test hook (not public API): the bf16 dot kernels' conversions of x, in
   * place, unpacked as f32: `rows` (to_pairs: n values, then 0 when n is odd)
   * and `panel` (x's first 16·floor(n/16) values as a [depth][16] panel
   * through panel_to_pairs, then a zero row when depth is odd). null where
   * the CPU has no bf16 dot (info().cpu.isa is not 'avx512-bf16').
   */
  bf16PairsCheck(x: Float32Array): { rows: Float32Array; panel: Float32Array } | null;
  /** Test hook (not public API): ToMe's row normalisation; the panel with plain and with streaming stores. */
  normaliseCheck(x: Float32Array, rows: number, n: number): { rows: Float32Array; panel: Float32Array; panelStream: Float32Array } | null;
  /** Test hook (not public API): x rounded to bf16 or f16 (nearest even, NaN quieted) and kept as f32, by the CPU set's vectorised rounding. */
  roundCheck(x: Float32Array, dtype: 'bf16' | 'f16'): Float32Array;
  /**
   * Bench hook (not public API): fills a contiguous f32/f16/bf16 tensor with
   * lo + (hi − lo)·u(seed, index), u a splitmix64 hash in [0, 1): the same
   * values on the CPU and on a device, generated where the tensor lives.
   */
  fillUniform(meta: Float64Array, memory: NativeMemory, seed: number, lo: number, hi: number, stream: bigint | undefined, async: boolean): NativeResult;
  /** Bench hook: this GPU's ceilings measured now (device copy, bf16 and tf32 mma.sync, exp2). Throws ERR_UNSUPPORTED without CUDA. */
  measureDeviceRoof(device: number): { copyBytesPerSecond: number; bf16MmaFlops: number; tf32MmaFlops: number; expPerSecond: number };
  /**
   * Bench hook: CUDA events around the work enqueued between the two calls on
   * `stream`, after a kernel spinning `leadMicroseconds` so the host has
   * enqueued that work before the start event fires; stopTimer waits and returns ms.
   */
  startTimer(device: number, stream: bigint | undefined, leadMicroseconds: number): void;
  stopTimer(device: number, stream: bigint | undefined): number;
  /**
   * Test hook (not public API): launches one empty kernel on `stream` of CUDA
   * device `device` and synchronises it — the floor a Sync call's host
   * overhead is measured against. Throws ERR_UNSUPPORTED in a CPU-only build.
   */
  noopKernel(device: number, stream?: bigint): void;
  /**
   * params (PARAM_NAMES, lib/native.ts): [wait, scale, causal, causalOffset, queryReduce (0 mean, 1 sum),
   * headReduce (0 mean, 1 sum, 2 none), keyBegin, keyEnd, accumulate, checkFinite, numQueryRows,
   * precision (0 native, 1 int8, 2 tf32, 3 bf16), qBlock, kBlock, smoothK]
   */
  attentionScores(
    params: Float64Array, queryRows: Int32Array,
    q: Float64Array, qMem: NativeMemory, k: Float64Array, kMem: NativeMemory,
    keyBias: Float64Array | undefined, keyBiasMem: NativeMemory | undefined,
    out: Float64Array, outMem: NativeMemory, stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, queryReduce, headReduce, keyBegin, keyEnd, accumulate, checkFinite, numQueryRows] */
  reduceAttention(
    params: Float64Array, queryRows: Int32Array, probs: Float64Array, probsMem: NativeMemory,
    out: Float64Array, outMem: NativeMemory, stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, k, orderByScore] */
  topk(
    params: Float64Array, scores: Float64Array, scoresMem: NativeMemory, indices: Float64Array, indicesMem: NativeMemory,
    values: Float64Array | undefined, valuesMem: NativeMemory | undefined, stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, bits, granularity (0 tensor, 1 token, 2 channel, 3 group, 4 rows), block, pad, smooth, checkFinite] */
  quantize(
    params: Float64Array, x: Float64Array, xMem: NativeMemory, data: Float64Array, dataMem: NativeMemory,
    scales: Float64Array, scalesMem: NativeMemory, mean: Float64Array | undefined, meanMem: NativeMemory | undefined,
    stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, bits, granularity, block, pad, addMean] */
  dequantize(
    params: Float64Array, data: Float64Array, dataMem: NativeMemory, scales: Float64Array, scalesMem: NativeMemory,
    mean: Float64Array | undefined, meanMem: NativeMemory | undefined, out: Float64Array, outMem: NativeMemory,
    stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, checkIndices] */
  gather(
    params: Float64Array, x: Float64Array, xMem: NativeMemory, indices: Float64Array, indicesMem: NativeMemory,
    out: Float64Array, outMem: NativeMemory, stream: bigint | undefined, async: boolean,
  ): NativeResult;
  // ---- token merging (binding/merge.cc) ----
  /** params (PARAM_NAMES, lib/native.ts): [wait, r, protectCls, protectDistill, precision (0 f32, 1 bf16)]; unmerged/sources/destinations undefined when empty */
  bipartiteMatch(
    params: Float64Array, metric: Float64Array, metricMem: NativeMemory, splitA: Float64Array, splitAMem: NativeMemory,
    splitB: Float64Array, splitBMem: NativeMemory, assign: Float64Array, assignMem: NativeMemory,
    unmerged: Float64Array | undefined, unmergedMem: NativeMemory | undefined,
    sources: Float64Array | undefined, sourcesMem: NativeMemory | undefined,
    destinations: Float64Array | undefined, destinationsMem: NativeMemory | undefined,
    stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, nOut, mode (0 sum, 1 mean, 2 amax, 3 wavg)] */
  merge(
    params: Float64Array, x: Float64Array, xMem: NativeMemory, assign: Float64Array, assignMem: NativeMemory,
    sizes: Float64Array | undefined, sizesMem: NativeMemory | undefined, out: Float64Array, outMem: NativeMemory,
    sizesOut: Float64Array | undefined, sizesOutMem: NativeMemory | undefined, stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, c, keptGiven]; keptGiven 1: `remaining` is the kept tokens [B, K] (the back end lists the others) */
  contextualMerge(
    params: Float64Array, x: Float64Array, xMem: NativeMemory, metric: Float64Array, metricMem: NativeMemory,
    remaining: Float64Array, remainingMem: NativeMemory, out: Float64Array, outMem: NativeMemory,
    stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, k, segments, metric (0 cosine, 1 l2), seed (0 isolated, 1 maxnorm, 2 index), seedIndex] */
  kCenter(
    params: Float64Array, x: Float64Array, xMem: NativeMemory, exclude: Float64Array | undefined, excludeMem: NativeMemory | undefined,
    order: Float64Array, orderMem: NativeMemory, sorted: Float64Array, sortedMem: NativeMemory,
    distances: Float64Array, distancesMem: NativeMemory, stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, k] */
  maxCoverage(
    params: Float64Array, coverage: Float64Array, coverageMem: NativeMemory, exclude: Float64Array | undefined, excludeMem: NativeMemory | undefined,
    order: Float64Array, orderMem: NativeMemory, sorted: Float64Array, sortedMem: NativeMemory,
    gains: Float64Array, gainsMem: NativeMemory, stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, tauTV, tauVV, alpha] */
  mmtokCoverage(
    params: Float64Array, text: Float64Array, textMem: NativeMemory, vision: Float64Array, visionMem: NativeMemory,
    visionAux: Float64Array | undefined, visionAuxMem: NativeMemory | undefined, out: Float64Array, outMem: NativeMemory,
    stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, k, segments, metric (0 cosine, 1 l2), maxIters, tol] */
  kMedoids(
    params: Float64Array, x: Float64Array, xMem: NativeMemory, medoids: Float64Array, medoidsMem: NativeMemory,
    assignments: Float64Array, assignmentsMem: NativeMemory, iterations: Float64Array | undefined, iterationsMem: NativeMemory | undefined,
    stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params (PARAM_NAMES, lib/native.ts): [wait, memoryCount, memoryMode (0 authors, 1 aligned)] */
  stcScores(
    params: Float64Array, x: Float64Array, xMem: NativeMemory, memorySum: Float64Array | undefined, memorySumMem: NativeMemory | undefined,
    scores: Float64Array, scoresMem: NativeMemory, chunkMean: Float64Array, chunkMeanMem: NativeMemory,
    channels: Float64Array | undefined, channelsMem: NativeMemory | undefined,
    stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params: [wait, scale, precision (0 native, 1 f16, 2 bf16, 3 int8), dense, blockQ, blockK, checkFinite] */
  blockSparseAttention(
    params: Float64Array, q: Float64Array, qMem: NativeMemory, k: Float64Array, kMem: NativeMemory, v: Float64Array, vMem: NativeMemory,
    kvNumBlocks: Float64Array | undefined, kvNumBlocksMem: NativeMemory | undefined,
    kvIndices: Float64Array | undefined, kvIndicesMem: NativeMemory | undefined,
    fullKvNumBlocks: Float64Array | undefined, fullKvNumBlocksMem: NativeMemory | undefined,
    fullKvIndices: Float64Array | undefined, fullKvIndicesMem: NativeMemory | undefined,
    perm: Float64Array | undefined, permMem: NativeMemory | undefined,
    out: Float64Array, outMem: NativeMemory, lse: Float64Array | undefined, lseMem: NativeMemory | undefined,
    stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params: [wait, scale, blockQ, blockK, numQueryRows, checkFinite] */
  blockAttentionMass(
    params: Float64Array, rows: Int32Array | undefined, q: Float64Array, qMem: NativeMemory, k: Float64Array, kMem: NativeMemory,
    out: Float64Array, outMem: NativeMemory, stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params: [wait, block] */
  blockPool(
    params: Float64Array, x: Float64Array, xMem: NativeMemory, mean: Float64Array, meanMem: NativeMemory,
    selfSim: Float64Array, selfSimMem: NativeMemory, stream: bigint | undefined, async: boolean,
  ): NativeResult;
  /** params: [wait, inverse] */
  applyReorder(
    params: Float64Array, x: Float64Array, xMem: NativeMemory, perm: Float64Array, permMem: NativeMemory,
    out: Float64Array, outMem: NativeMemory, stream: bigint | undefined, async: boolean,
  ): NativeResult;
}
