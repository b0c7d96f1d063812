// Diversity, coverage and clustering selection: greedy k-center
// (farthest-point, DivPrune/ToDRE), greedy maximum coverage (MMTok) and the
// MMTok coverage builder.
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
};

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
};

// STC-Pruner scores of one chunk of video frames, as the authors' code
// computes them (lern-to-write/STC 9b13ce0, model/prune.py,
// STC_Pruner.compress; methods.md §12a):
//   channels: the Cs = max(1, ⌊C/2⌋) channels of lowest population variance
//     of the raw x across the chunk's F·T tokens, in ascending-variance order
//     (ties to the lower channel) — torch.topk(var, Cs, largest=False). Every
//     later step sees only these channels, in this order;
//   chunk_mean = the raw (not normalised) mean of x over the F·T tokens;
//   memory = (memory_sum + chunk_mean) / (memory_count + 1), then
//     L2-normalised over the Cs channels. With memory_mode kAuthors the chunk
//     means are [Cs] vectors in each chunk's own channel order, so the memory
//     averages them by position, as the authors' history list does; with
//     kAligned they are [C] vectors by channel, averaged by channel identity,
//     and the memory takes this chunk's channels from the mean;
//   x̂ = x on the channels, L2-normalised over them (x / max(‖x‖, 1e-12), as
//     F.normalize; an all-zero token stays zero);
//   score = G(x̂, frame mean of x̂) + G(x̂, memory), with
//     G(x, μ) = Σ_{α ∈ {1/8, 1/4, 1/2, 1, 2}} exp(−||x − μ||² / (2α)).
// The authors' code has ⌊C/2⌋ channels, zero for C = 1; we keep one.
enum class StcMemory : int { kAuthors = 0, kAligned = 1 };

inline int64_t stc_scoring_channels(int64_t C) { return C / 2 > 1 ? C / 2 : 1; }
constexpr double kStcNormEps = 1e-12;  // F.normalize's eps: x / max(‖x‖, eps)

struct StcScoresParams {
  TensorView x;            // [F, T, C] f32/f16/bf16; stride(C) == 1; finite
  StcMemory memory_mode = StcMemory::kAuthors;
  TensorView memory_sum;   // f32 [Cs] (kAuthors) or [C] (kAligned): Σ of the earlier chunk means; data null: none
  int64_t memory_count = 0;  // chunks in memory_sum, >= 0 (0 when memory_sum is null)
  TensorView scores;       // f32 [F, T]
  TensorView chunk_mean;   // f32 [Cs] (kAuthors) or [C] (kAligned): this chunk's raw mean (to add to memory_sum)
  TensorView channels;     // i32 [Cs]: the scoring channels, ascending variance; data may be null
  void* stream = nullptr;
};

Status validate(const KCenterParams& p);
Status validate(const StcScoresParams& p);
Status validate(const KMedoidsParams& p);
Status validate(const MaxCoverageParams& p);
Status validate(const MmtokCoverageParams& p);

namespace cpu {
Status k_center(const KCenterParams& p);
Status k_medoids(const KMedoidsParams& p);
Status stc_scores(const StcScoresParams& p);
Status max_coverage(const MaxCoverageParams& p);
Status mmtok_coverage(const MmtokCoverageParams& p);
}  // namespace cpu

namespace cuda {
Status k_center(const KCenterParams& p);
Status k_medoids(const KMedoidsParams& p);
Status stc_scores(const StcScoresParams& p);
Status max_coverage(const MaxCoverageParams& p);
Status mmtok_coverage(const MmtokCoverageParams& p);
}  // namespace cuda

}  // namespace tokensieve
