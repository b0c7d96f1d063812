// The exact shape of the native module (build/Release/tokensieve.node).
// Only lib/ talks to it, and only after validating every argument.

/** A tensor as the addon reads it: strides and offset in elements. */
export interface NativeTensor {
  dtype: number; // 0 f32, 1 f16, 2 bf16, 3 i32, 4 i64, 5 i8, 6 u8
  shape: number[];
  strides: number[];
  offset: number;
  device: number; // -1 host, n >= 0 CUDA ordinal
  data?: ArrayBufferView; // host
  owner?: NativeDeviceBuffer; // device memory owned by tokensieve
  ptr?: bigint; // device memory owned elsewhere
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

export interface NativeReduction {
  queryRows: Int32Array;
  queryReduce: number; // 0 mean, 1 sum
  headReduce: number; // 0 mean, 1 sum, 2 none
  keyBegin: number;
  keyEnd: number;
  accumulate: boolean;
  checkFinite: boolean;
  out: NativeTensor;
  stream?: bigint;
  wait: boolean;
}

export interface NativeAttentionScoresArgs extends NativeReduction {
  q: NativeTensor;
  k: NativeTensor;
  keyBias?: NativeTensor;
  scale: number;
  causal: boolean;
  causalOffset: number;
}

export interface NativeReduceAttentionArgs extends NativeReduction {
  probs: NativeTensor;
}

export interface NativeTopkArgs {
  scores: NativeTensor;
  k: number;
  orderByScore: boolean;
  indices: NativeTensor;
  values?: NativeTensor;
  stream?: bigint;
  wait: boolean;
}

export interface NativeGatherArgs {
  x: NativeTensor;
  indices: NativeTensor;
  out: NativeTensor;
  checkIndices: boolean;
  stream?: bigint;
  wait: boolean;
}

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

/** Each kernel runs synchronously (returns undefined) or, with async = true, on libuv's pool. */
type NativeOp<A> = {
  (args: A, async: false): undefined;
  (args: A, async: true): Promise<void>;
};

export interface NativeModule {
  DeviceBuffer: NativeDeviceBufferCtor;
  copy: NativeOp<{ dst: NativeTensor; src: NativeTensor; stream?: bigint }>;
  synchronize: NativeOp<{ device: number; stream?: bigint }>;
  info(): NativeInfo;
  setThreads(n: number): number;
  getThreads(): number;
  defaultThreads(): number;
  /** This machine's CPU ceilings with the current thread count (takes about a second). */
  measureRoof(): { fmaGflops: number; expPerSecond: number; copyGBps: number; threads: number };
  attentionScores: NativeOp<NativeAttentionScoresArgs>;
  reduceAttention: NativeOp<NativeReduceAttentionArgs>;
  topk: NativeOp<NativeTopkArgs>;
  gather: NativeOp<NativeGatherArgs>;
}
