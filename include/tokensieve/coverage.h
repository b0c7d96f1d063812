// The coverage family: greedy maximum coverage (MMTok's selection) and
// MMTok's coverage matrix.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {

// Greedy maximum coverage: best = 0 per row; each step
// gain_j = Σ_r max(0, C[r, j] - best[r]), pick argmax (lower index on ties,
// never a picked or excluded column), best = max(best, C[:, j]).
struct MaxCoverageParams {
  TensorView coverage;  // [B, R, N] f32/f16/bf16; stride(N) == 1; finite
  TensorView exclude;   // u8 [B, N] contiguous; data null: none
  int64_t k = 0;        // 1 <= k <= non-excluded columns of every batch row
  TensorView order;     // i32 [B, k] pick order
  TensorView sorted;    // i32 [B, k] ascending; data may be null
  TensorView gains;     // f32 [B, k] each pick's gain; data may be null
  void* stream = nullptr;
  // CUDA only: read back the data errors the kernels find (NaN/Inf, fewer
  // than k columns not excluded) and fail with them — a stream synchronisation.
  // The binding clears it for calls that do not wait (`wait: false` only
  // enqueues); then such input leaves the outputs unspecified. The CPU back
  // end always checks.
  bool check_errors = true;
};

// MMTok's coverage matrix [P; α·Q] (methods.md §6). Rows are L2-normalised
// with a 1e-8 clamp on the norm; P = softmax(ẑ x̂ᵀ / tau_tv, dim=1) / m,
// Q = softmax(â âᵀ / tau_vv, dim=1) / n with â the normalised vision_aux
// (vision when absent).
struct MmtokCoverageParams {
  TensorView text;        // [B, m, D] f32/f16/bf16; stride(D) == 1
  TensorView vision;      // [B, n, D]
  TensorView vision_aux;  // [B, n, D'] or data null
  double tau_tv = 0.02;   // > 0
  double tau_vv = 0.2;    // > 0
  double alpha = 0.5;     // finite, >= 0
  TensorView out;         // f32 [B, m + n, n] contiguous
  void* stream = nullptr;
  // CUDA only: read back the data errors the kernels find (NaN/Inf in text,
  // vision, visionAux) and fail with them — a stream synchronisation.
  // The binding clears it for calls that do not wait (`wait: false` only
  // enqueues); then such input leaves the outputs unspecified. The CPU back
  // end always checks.
  bool check_errors = true;
};

Status validate(const MaxCoverageParams& p);
Status validate(const MmtokCoverageParams& p);

namespace cpu {
Status max_coverage(const MaxCoverageParams& p);
Status mmtok_coverage(const MmtokCoverageParams& p);
}  // namespace cpu

namespace cuda {
Status max_coverage(const MaxCoverageParams& p);
Status mmtok_coverage(const MmtokCoverageParams& p);
}  // namespace cuda

}  // namespace tokensieve
