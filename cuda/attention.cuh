// The few-rows path of attention_scores (cuda/attention_rows.cu), as called by
// cuda/attention.cu: a memory-bound, GEMV-like pass over k for a handful of
// selected query rows (the CLS row, FastV's last row, a short query range).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "tokensieve/attention.h"

namespace tokensieve {
namespace cuda {

// ---- shared by the all-rows (attention.cu) and few-rows paths ------------------

// What every attention kernel reads of q and k: element strides, the key
// bias, sizes, the scale in base 2, the causal mask and the selected rows.
// ScoresParams and RowsParams extend it.
struct QkOperands {
  // q[b, h, n, d] = q + b·q_sb + h·q_sh + n·q_sn + d (elements); k likewise.
  const void* q;
  int64_t q_sb, q_sh, q_sn;
  const void* k;
  int64_t k_sb, k_sh, k_sn;
  const float* bias;  // key_bias[b, j] = bias + b·bias_sb + j; null: no bias
  int64_t bias_sb;
  int H, D;
  int64_t Nk;
  float scale_log2;  // scale · log2(e)
  bool causal;
  int64_t causal_offset;
  RowMap rows;
  int nsel;
};

// Rows given as r0, r0 + 1, ... need no upload.
bool is_row_range(const ScoreReduction& r);

// The selected rows as the kernels read them: a range, or (when
// !is_row_range) the list copied on `stream` into `scratch` (nsel int32).
Status upload_rows(const ScoreReduction& r, int32_t* scratch, cudaStream_t stream, RowMap* rows);

// The QkOperands of a validated call; `rows` from upload_rows.
void fill_qk_operands(const AttentionScoresParams& p, RowMap rows, QkOperands* o);

// Most selected rows the rows path takes (rows live in registers).
constexpr int kRowsPathMaxRows = 8;

// Whether the rows path can compute this call at all: precision kNative, D <=
// 256, 1..kRowsPathMaxRows selected rows, a float dtype.
bool rows_path_supports(const AttentionScoresParams& p);

// Whether attention_scores should take the rows path: supported, and the
// base-2 logits it keeps in scratch (written once, read once: 8 bytes per
// selected row and output key) stay well below k's bytes.
bool rows_path_applies(const AttentionScoresParams& p);

// The rows path. Validates p and refuses (ERR_UNSUPPORTED) what it does not
// support, so tests may call it directly.
Status attention_scores_rows(const AttentionScoresParams& p);

// For tests: how many times attention_scores_rows has launched its kernels,
// and the width (bytes) of the k loads it would use for p.
uint64_t rows_path_calls();
int rows_path_load_bytes(const AttentionScoresParams& p);

}  // namespace cuda
}  // namespace tokensieve
