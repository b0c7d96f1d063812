// Parameter checks of the stc family (STC-Pruner scores), shared by the CPU
// and CUDA back ends.
#include <cmath>
#include <string>

#include "core/check.h"
#include "tokensieve/stc.h"

namespace tokensieve {

using namespace check;

Status validate(const StcScoresParams& p) {
  TS_RETURN_IF_ERROR(expect_float_input(p.x, "x", 3, "[F, T, C]"));
  const int64_t F = p.x.shape[0], T = p.x.shape[1], C = p.x.shape[2], Cs = stc_scoring_channels(C);
  if (p.memory_mode != StcMemory::kAuthors && p.memory_mode != StcMemory::kAligned)
    return Status(Code::kArg, "expected memory mode 0 (authors) or 1 (aligned) but got " +
                                  std::to_string(static_cast<int>(p.memory_mode)));
  const int64_t Cm = p.memory_mode == StcMemory::kAuthors ? Cs : C;  // length of a chunk mean
  TS_RETURN_IF_ERROR(expect_exact(p.memory_sum, "memorySum", DType::kF32, {Cm}, p.x, "x", true));
  if (p.memory_count < 0 || (p.memory_sum.data == nullptr && p.memory_count != 0))
    return Status(Code::kRange, "expected a memory count >= 0 (0 without a memory sum) but got " +
                                    std::to_string(p.memory_count));
  TS_RETURN_IF_ERROR(expect_exact(p.scores, "scores", DType::kF32, {F, T}, p.x, "x", false));
  TS_RETURN_IF_ERROR(expect_exact(p.chunk_mean, "chunkMean", DType::kF32, {Cm}, p.x, "x", false));
  TS_RETURN_IF_ERROR(expect_exact(p.channels, "channels", DType::kI32, {Cs}, p.x, "x", true));
  return Status::Ok();
}

}  // namespace tokensieve
