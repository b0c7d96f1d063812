// The stc family: STC-Pruner's token scores of one chunk of video frames.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {

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
  // CUDA: read back the status record (NaN/Inf in x) and report it. The read
  // drains the stream, so the binding sets this only when the call waits;
  // without it a NaN/Inf in x gives unspecified scores, silently. The CPU
  // always checks.
  bool device_checks = true;
  void* stream = nullptr;
};

Status validate(const StcScoresParams& p);

namespace cpu {
Status stc_scores(const StcScoresParams& p);
}  // namespace cpu

namespace cuda {
Status stc_scores(const StcScoresParams& p);
}  // namespace cuda

}  // namespace tokensieve
