// Attention-score extraction: softmax(q·kᵀ·scale + key_bias) reduced over a
// set of query rows and over heads, for a range of key columns, without
// materialising the Nq×Nk probability matrix.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {

enum class QueryReduce : int32_t { kMean = 0, kSum = 1 };
enum class HeadReduce : int32_t { kMean = 0, kSum = 1, kNone = 2 };

// The query rows and how the selected rows and the heads are reduced, shared
// by attention_scores and reduce_attention.
struct ScoreReduction {
  // Row indices into the query dimension (host memory; the CUDA path uploads
  // them). Any order; a row listed twice counts twice.
  const int32_t* query_rows = nullptr;
  int64_t num_query_rows = 0;
  QueryReduce query_reduce = QueryReduce::kMean;
  HeadReduce head_reduce = HeadReduce::kMean;
  // Output key columns [key_begin, key_end) of the full softmax row.
  int64_t key_begin = 0;
  int64_t key_end = 0;
  // Add into `out` instead of overwriting it (multi-layer sums, VTC-CLS).
  bool accumulate = false;
};

struct AttentionScoresParams {
  TensorView q;  // logical [B, H, Nq, D]; f32/f16/bf16; stride(D) == 1
  TensorView k;  // logical [B, H, Nk, D]; same dtype, B, H, D as q
  // Optional additive bias per key before the softmax, [B, Nk] f32 (ToMe's
  // log(size)). -inf masks a key. has_key_bias == false means all zeros.
  TensorView key_bias;
  bool has_key_bias = false;
  float scale = 1.0f;  // usually 1/sqrt(D)
  // Causal mask: query row i sees key j iff j <= i + causal_offset. The
  // natural offset for queries that are the last Nq of Nk tokens is Nk - Nq.
  bool causal = false;
  int64_t causal_offset = 0;
  ScoreReduction reduce;
  // Reject NaN/Inf in q, k (and NaN/+Inf in key_bias) with Code::kRange.
  bool check_finite = true;
  TensorView out;  // f32 [B, key_end - key_begin] or [B, H, key_end - key_begin]
  void* stream = nullptr;  // cudaStream_t for the CUDA path
};

struct ReduceAttentionParams {
  TensorView probs;  // [B, H, Nq, Nk] post-softmax probabilities; stride(Nk) == 1
  ScoreReduction reduce;
  bool check_finite = true;
  TensorView out;  // f32 [B, Nk'] or [B, H, Nk']
  void* stream = nullptr;
};

// Checks shared by both back ends (shapes, dtypes, ranges, output size).
Status validate(const AttentionScoresParams& p);
Status validate(const ReduceAttentionParams& p);

namespace cpu {
Status attention_scores(const AttentionScoresParams& p);
Status reduce_attention(const ReduceAttentionParams& p);
}  // namespace cpu

namespace cuda {
Status attention_scores(const AttentionScoresParams& p);
Status reduce_attention(const ReduceAttentionParams& p);
}  // namespace cuda

}  // namespace tokensieve
