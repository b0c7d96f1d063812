// The diversity family: greedy k-center (farthest point; DivPrune, ToDRE)
// and k-medoids (CenterCLIP), per contiguous segment of tokens. Coverage
// (tokensieve/coverage.h) and STC (tokensieve/stc.h) are families of their own.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {

enum class DistanceMetric : int32_t {
  kCosine = 0,  // 1 - cos(x, y); an all-zero row has cos 0 with everything
  kL2 = 1,      // ||x - y||
};

enum class CenterSeed : int32_t {
  kIsolated = 0,  // DivPrune: the token whose nearest-neighbour distance is largest
  kMaxNorm = 1,   // KKZ: the token with the largest L2 norm (of the raw features)
  kIndex = 2,     // an explicit position inside each segment
};

// Greedy max–min selection, independently per contiguous segment of N/segments
// tokens. Every tie (seed and steps) goes to the lower index. Excluded tokens
// are removed entirely: never picked and never anyone's neighbour. Picked
// tokens are masked explicitly (the reference relies on their distance being
// ~0), so the k indices of a segment are always distinct.
struct KCenterParams {
  TensorView x;        // [B, N, C] f32/f16/bf16; stride(C) == 1; finite
  TensorView exclude;  // u8 [B, N] contiguous, nonzero = excluded; data null: none
  int64_t k = 0;         // per segment: 1 <= k <= non-excluded tokens of every segment
  int64_t segments = 1;  // >= 1, divides N
  DistanceMetric metric = DistanceMetric::kCosine;
  CenterSeed seed = CenterSeed::kIsolated;
  int64_t seed_index = 0;  // kIndex: position inside each segment, in [0, N/segments)
  TensorView order;      // i32 [B, segments*k]: global token indices, segment after segment, in pick order
  TensorView sorted;     // i32 [B, segments*k] ascending; data may be null
  // f32 [B, segments*k]; data may be null. Step t > 0: the max–min distance of
  // the pick (its distance to the nearest earlier pick of its segment). Step 0:
  // the seed's nearest-neighbour distance for kIsolated (+inf when it is alone),
  // +inf for the other seeds.
  TensorView distances;
  void* stream = nullptr;
  // CUDA only: read back the data errors the kernels find (NaN/Inf, too few
  // tokens, an excluded seed) and fail with them — a stream synchronisation.
  // The binding clears it for calls that do not wait (`wait: false` only
  // enqueues); then such input leaves the outputs unspecified. The CPU back
  // end always checks.
  bool check_errors = true;
};

// k-medoids per contiguous segment (CenterCLIP's batch_fast_kmedoids):
// KKZ initialisation (largest raw L2 norm, then farthest point), then
// assign (nearest medoid; ties to the earlier medoid; a medoid is always its
// own cluster's) / update (the member with the least sum of distances to the
// other members; ties to the lower index) until the medoids move less than
// `tol` (Σ_k ||x_new − x_old||, per segment) or after `max_iters` updates.
// Needs the segment's distance matrix: (N/segments)² <= 16 Mi floats.
struct KMedoidsParams {
  TensorView x;          // [B, N, C] f32/f16/bf16; stride(C) == 1; finite
  int64_t k = 0;         // per segment, 1 <= k <= N/segments
  int64_t segments = 1;  // divides N
  DistanceMetric metric = DistanceMetric::kL2;
  int64_t max_iters = 100;  // >= 0
  double tol = 1e-6;        // >= 0
  TensorView medoids;       // i32 [B, segments*k]: global token indices, ascending within each segment (so overall)
  TensorView assignments;   // i32 [B, N]: the column of `medoids` each token belongs to
  TensorView iterations;    // i32 [B, segments] update steps run; data may be null
  void* stream = nullptr;
  // CUDA only: read back the data errors the kernels find (NaN/Inf) and
  // fail with them — a stream synchronisation. The binding clears it for calls that do not wait (`wait: false` only
  // enqueues); then such input leaves the outputs unspecified. The CPU back
  // end always checks.
  bool check_errors = true;
};

Status validate(const KCenterParams& p);
Status validate(const KMedoidsParams& p);

namespace cpu {
Status k_center(const KCenterParams& p);
Status k_medoids(const KMedoidsParams& p);
}  // namespace cpu

namespace cuda {
Status k_center(const KCenterParams& p);
Status k_medoids(const KMedoidsParams& p);
}  // namespace cuda

}  // namespace tokensieve
