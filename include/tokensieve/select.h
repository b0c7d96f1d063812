// Selection: stable top-k over score rows and gathering of token rows.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {

// Top-k per row. Order of preference: larger value first, then lower index
// (stable); NaN ranks below every number (including -inf).
struct TopkParams {
  TensorView scores;  // [B, N] f32/f16/bf16; stride(N) == 1
  int64_t k = 0;      // 1 <= k <= N
  // false: the k indices in ascending index order (raster order);
  // true: by descending score, ties by ascending index.
  bool order_by_score = false;
  TensorView indices;  // i32 [B, k]
  TensorView values;   // f32 [B, k]; data may be null to skip the values
  void* stream = nullptr;
};

// out[b, i, :] = x[b, indices[b, i], :]
struct GatherParams {
  TensorView x;        // [B, N, C] any dtype; stride(C) == 1
  TensorView indices;  // i32 [B, K]; every value in [0, N)
  TensorView out;      // [B, K, C], dtype of x, contiguous
  // Reject indices outside [0, N) with Code::kRange. On CUDA the check reads
  // a device flag back, which waits for the stream.
  bool check_indices = true;
  void* stream = nullptr;
};

Status validate(const TopkParams& p);
Status validate(const GatherParams& p);

namespace cpu {
Status topk(const TopkParams& p);
Status gather(const GatherParams& p);
}  // namespace cpu

namespace cuda {
Status topk(const TopkParams& p);
Status gather(const GatherParams& p);
}  // namespace cuda

}  // namespace tokensieve
