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

// How logits are computed. kInt8 quantizes q and k to INT8 first
// (SageAttention style, layouts in quantize.h): per (b, h), q in blocks of
// q_block consecutive tokens and k in blocks of k_block, symmetric scales
// amax / 127 (last blocks may be short); with smooth_k, k minus its mean over
// the Nk tokens (per b, h, channel; computed in double, stored as f32) is
// quantized, which leaves the softmax unchanged. The logit of (i, j) is
// (Σ_d q8·k8, an exact integer) · sq(i) · sk(j) · scale (+ key_bias), then
// the softmax and reductions are those of kNative.
//
// kTF32 and kBF16 trade accuracy for tensor-core speed: q and k are rounded
// to tf32 (cvt.rna: 10 mantissa bits, ties away from zero) or to bf16
// (nearest even) first, and the logit is the f32-accumulated dot of the
// rounded values; everything after is as kNative. Inputs that are already
// exact in the type (f16/bf16 under kTF32, bf16 under kBF16) are unchanged.
// kNative keeps f32 accuracy for f32 inputs (the CUDA kernel splits each
// value into two tf32 terms, 3xTF32; the CPU uses f32 FMAs).
enum class ScorePrecision : int32_t { kNative = 0, kInt8 = 1, kTF32 = 2, kBF16 = 3 };

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
  ScorePrecision precision = ScorePrecision::kNative;
  int64_t q_block = 32;  // kInt8: tokens per q scale
  int64_t k_block = 64;  // kInt8: tokens per k scale
  bool smooth_k = true;  // kInt8: subtract k's mean over tokens first
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
