// The numeric parameters of every op, by name. Each op's scalar arguments
// arrive as one Float64Array (`params`); its slots are listed once here, and
// the list gives both the enum the adapter reads them with (arg(a,
// KCenterSlots::k)) and the names paramNames() exports. lib/native.ts
// declares the same lists (PARAM_NAMES) to pack the arrays, and
// test/native-params.test.ts checks that the two agree. `wait` is slot 0 of
// every op.
#pragma once

#include <cstddef>

#define TS_SLOT_ENUM(name) name,
#define TS_SLOT_NAME(name) #name,
// struct <Op>Slots { enum : size_t { <names>..., kCount }; kNames[] };
#define TS_PARAM_SLOTS(Op, LIST)                                        \
  struct Op##Slots {                                                    \
    enum : size_t { LIST(TS_SLOT_ENUM) kCount };                        \
    static constexpr const char* kNames[] = {LIST(TS_SLOT_NAME)};       \
  };

// name (the JS op), Slots struct, list of slots
#define TS_PARAMS_ATTENTION_SCORES(P)                                                                          \
  P(wait) P(scale) P(causal) P(causalOffset) P(queryReduce) P(headReduce) P(keyBegin) P(keyEnd) P(accumulate) \
  P(checkFinite) P(numQueryRows) P(precision) P(qBlock) P(kBlock) P(smoothK)
#define TS_PARAMS_REDUCE_ATTENTION(P) \
  P(wait) P(queryReduce) P(headReduce) P(keyBegin) P(keyEnd) P(accumulate) P(checkFinite) P(numQueryRows)
#define TS_PARAMS_TOPK(P) P(wait) P(k) P(orderByScore)
#define TS_PARAMS_GATHER(P) P(wait) P(checkIndices)
#define TS_PARAMS_QUANTIZE(P) P(wait) P(bits) P(granularity) P(block) P(pad) P(smooth) P(checkFinite)
#define TS_PARAMS_DEQUANTIZE(P) P(wait) P(bits) P(granularity) P(block) P(pad) P(addMean)
#define TS_PARAMS_BIPARTITE_MATCH(P) P(wait) P(r) P(protectCls) P(protectDistill) P(precision)
#define TS_PARAMS_MERGE(P) P(wait) P(nOut) P(mode)
#define TS_PARAMS_CONTEXTUAL_MERGE(P) P(wait) P(c) P(keepSpec)
#define TS_PARAMS_K_CENTER(P) P(wait) P(k) P(segments) P(metric) P(seed) P(seedIndex)
#define TS_PARAMS_K_MEDOIDS(P) P(wait) P(k) P(segments) P(metric) P(maxIters) P(tol)
#define TS_PARAMS_MAX_COVERAGE(P) P(wait) P(k)
#define TS_PARAMS_MMTOK_COVERAGE(P) P(wait) P(tauTV) P(tauVV) P(alpha)
#define TS_PARAMS_STC_SCORES(P) P(wait) P(memoryCount) P(memoryMode)
#define TS_PARAMS_BLOCK_SPARSE_ATTENTION(P) P(wait) P(scale) P(precision) P(dense) P(blockQ) P(blockK) P(checkFinite)
#define TS_PARAMS_BLOCK_ATTENTION_MASS(P) P(wait) P(scale) P(blockQ) P(blockK) P(numQueryRows) P(checkFinite)
#define TS_PARAMS_BLOCK_POOL(P) P(wait) P(block)
#define TS_PARAMS_APPLY_REORDER(P) P(wait) P(inverse)

// Every op: X(jsName, Slots struct, list).
#define TS_FOR_EACH_OP(X)                                                   \
  X("attentionScores", AttentionScores, TS_PARAMS_ATTENTION_SCORES)         \
  X("reduceAttention", ReduceAttention, TS_PARAMS_REDUCE_ATTENTION)         \
  X("topk", Topk, TS_PARAMS_TOPK)                                           \
  X("gather", Gather, TS_PARAMS_GATHER)                                     \
  X("quantize", Quantize, TS_PARAMS_QUANTIZE)                               \
  X("dequantize", Dequantize, TS_PARAMS_DEQUANTIZE)                         \
  X("bipartiteMatch", BipartiteMatch, TS_PARAMS_BIPARTITE_MATCH)            \
  X("merge", Merge, TS_PARAMS_MERGE)                                        \
  X("contextualMerge", ContextualMerge, TS_PARAMS_CONTEXTUAL_MERGE)         \
  X("kCenter", KCenter, TS_PARAMS_K_CENTER)                                 \
  X("kMedoids", KMedoids, TS_PARAMS_K_MEDOIDS)                              \
  X("maxCoverage", MaxCoverage, TS_PARAMS_MAX_COVERAGE)                     \
  X("mmtokCoverage", MmtokCoverage, TS_PARAMS_MMTOK_COVERAGE)               \
  X("stcScores", StcScores, TS_PARAMS_STC_SCORES)                           \
  X("blockSparseAttention", BlockSparseAttention, TS_PARAMS_BLOCK_SPARSE_ATTENTION) \
  X("blockAttentionMass", BlockAttentionMass, TS_PARAMS_BLOCK_ATTENTION_MASS) \
  X("blockPool", BlockPool, TS_PARAMS_BLOCK_POOL)                           \
  X("applyReorder", ApplyReorder, TS_PARAMS_APPLY_REORDER)

namespace tokensieve {
namespace binding {

#define TS_DECLARE_SLOTS(js, Op, LIST) TS_PARAM_SLOTS(Op, LIST)
TS_FOR_EACH_OP(TS_DECLARE_SLOTS)
#undef TS_DECLARE_SLOTS

#define TS_WAIT_FIRST(js, Op, LIST) static_assert(Op##Slots::wait == 0, js ": wait must be slot 0");
TS_FOR_EACH_OP(TS_WAIT_FIRST)
#undef TS_WAIT_FIRST

// The value in `slot` of an op's params.
inline double arg(const double* a, size_t slot) { return a[slot]; }

}  // namespace binding
}  // namespace tokensieve
