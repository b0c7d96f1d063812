/// <reference lib="es2022" preserve="true" />
/// <reference lib="esnext.disposable" preserve="true" />
/**
 * tokensieve: fast, batched CPU and CUDA kernels for visual-token
 * compression, and the pruning methods built on them.
 */
export { Tensor, toTensor, contiguousStrides } from './tensor';
export type { TensorLike, HostTensorLike, DevicePointerSpec } from './tensor';
export {
  DTYPES,
  FLOAT_DTYPES,
  toHalfBits,
  fromHalfBits,
  f32ToF16Bits,
  f16BitsToF32,
  f32ToBf16Bits,
  bf16BitsToF32,
} from './dtype';
export type { DType, FloatDType, HostData } from './dtype';
export { info, cudaAvailable, cudaUnavailableReason, setThreads, getThreads, deviceMemory, hostCache, emptyHostCache } from './device';
export type { Device, DeviceLike, Info, CudaDeviceInfo, DeviceMemory, HostCache } from './device';
export { TokenSieveError, TokenSieveTypeError, TokenSieveRangeError, isTokenSieveError } from './errors';
export type { ErrorCode, TokenSieveAnyError } from './errors';
export {
  attentionScores,
  attentionScoresSync,
  reduceAttention,
  reduceAttentionSync,
} from './kernels/attention';
export type { AttentionScoresOptions, ReductionOptions, QuerySelection } from './kernels/attention';
export { topk, topkSync, gather, gatherSync } from './kernels/select';
export { quantize, quantizeSync, dequantize, dequantizeSync, errorReport } from './kernels/quantize';
export type { Granularity, QuantizeOptions, QuantizedTensor, DequantizeOptions, ErrorReport } from './kernels/quantize';
export type { TopkOptions, TopkResult, GatherOptions } from './kernels/select';
export { fasterVLM, fasterVLMSync } from './methods/fastervlm';
export type { FasterVLMOptions } from './methods/fastervlm';
export { vtcCls, vtcClsSync } from './methods/vtccls';
export type { VtcClsOptions } from './methods/vtccls';
export { fastV, fastVSync } from './methods/fastv';
export type { FastVOptions, FastVResult } from './methods/fastv';
export { hiPrune, hiPruneSync } from './methods/hiprune';
export type { HiPruneOptions, HiPruneResult } from './methods/hiprune';
export { foPru, foPruSync } from './methods/fopru';
export type { FoPruOptions, FoPruResult } from './methods/fopru';
export { pyRound } from './methods/common';
export type { AttentionSource, SelectionResult } from './methods/common';
// ---- token merging (issue 3) ----
export {
  MergePlan,
  bipartiteSoftMatch,
  bipartiteSoftMatchSync,
  merge,
  mergeSync,
  unmerge,
  unmergeSync,
  mergeSource,
  mergeSourceSync,
  patchMasks,
  contextualMerge,
  contextualMergeSync,
} from './kernels/merge';
export type { BipartiteOptions, MatchPrecision, MergeSplit, Split2d, MergeMode, MergeOptions, MergeResult, UnmergeOptions, ContextualMergeOptions, KeepSpec } from './kernels/merge';
export { ToMe, toMe, parseR } from './methods/tome';
export type { ToMeOptions, ToMeSchedule } from './methods/tome';
export { tomesd, tomesdSync } from './methods/tomesd';
export type { ToMeSDOptions, ToMeSDResult } from './methods/tomesd';
export { visionZip, visionZipSync, VISIONZIP_PRESETS } from './methods/visionzip';
export type { VisionZipOptions, MergeSelectionResult } from './methods/visionzip';
export { visionDrop, visionDropSync, visionDropStages } from './methods/visiondrop';
export type { VisionDropOptions, VisionDropStage } from './methods/visiondrop';
export { kCenter, kCenterSync, kMedoids, kMedoidsSync } from './kernels/diversity';
export type { DistanceMetric, KCenterOptions, KCenterResult, KMedoidsOptions, KMedoidsResult } from './kernels/diversity';
export { maxCoverage, maxCoverageSync, mmtokCoverage, mmtokCoverageSync } from './kernels/coverage';
export type { MaxCoverageOptions, MaxCoverageResult, MmtokInputs, MmtokCoverageOptions } from './kernels/coverage';
export { stcScores, stcScoresSync, stcScoringChannels } from './kernels/stc';
export type { StcScoresOptions, StcScoresResult, StcMemory } from './kernels/stc';
export {
  blockSparseAttention,
  blockSparseAttentionSync,
  blockAttentionMass,
  blockAttentionMassSync,
  blockPool,
  blockPoolSync,
  applyReorder,
  applyReorderSync,
} from './kernels/blocksparse';
export type {
  AttentionLayout,
  BlockMaskLike,
  BlockSparsePrecision,
  BlockSparseAttentionOptions,
  BlockSparseAttentionResult,
  BlockAttentionMassOptions,
  BlockPoolOptions,
  BlockPoolResult,
  ApplyReorderOptions,
} from './kernels/blocksparse';
export { divPrune, divPruneSync } from './methods/divprune';
export type { DivPruneOptions, DivPruneResult } from './methods/divprune';
export { toDRE, toDRESync } from './methods/todre';
export type { ToDREOptions } from './methods/todre';
export { mmTok, mmTokSync } from './methods/mmtok';
export type { MmTokOptions, MmTokResult } from './methods/mmtok';
export { centerClip, centerClipSync } from './methods/centerclip';
export type { CenterClipOptions, CenterClipResult } from './methods/centerclip';
export { StreamPruner, stc, stcSync } from './methods/stc';
export type { StreamPrunerOptions, StreamPruneResult } from './methods/stc';
// ---- block-sparse reordered attention (issue 15) ----
export { BlockMask } from './blockmask';
export type { IndexInput, FromKvBlocksSpec, FromDenseOptions, FromCSRSpec } from './blockmask';
export {
  AXIS_ORDER_NAMES,
  reorderIndex,
  calibrateBlockMask,
  predictBlockMask,
  predictBlockMaskSync,
  predictBlockMaskFromPools,
  searchReorderPlan,
  searchReorderPlanSync,
  paroAttention,
  paroAttentionSync,
} from './methods/paro';
export type {
  AxisOrder,
  TokenGrid,
  ReorderIndex,
  CalibrationRule,
  CalibrateOptions,
  PerHead,
  PredictBlockMaskOptions,
  PooledBlocks,
  ReorderPlan,
  SearchReorderOptions,
  ParoAttentionOptions,
  ParoAttentionResult,
} from './methods/paro';
