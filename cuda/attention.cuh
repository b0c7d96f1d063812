// The few-rows path of attention_scores (cuda/attention_rows.cu), as called by
// cuda/attention.cu: a memory-bound, GEMV-like pass over k for a handful of
// selected query rows (the CLS row, FastV's last row, a short query range).
#pragma once

#include <cstdint>

#include "tokensieve/attention.h"

namespace tokensieve {
namespace cuda {

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
