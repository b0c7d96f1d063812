// CUDA entry points of the diversity family (k-center, maximum coverage,
// MMTok coverage).
//
// NOT IMPLEMENTED YET: every entry point validates its parameters and then
// returns Code::kUnsupported, never a wrong answer. Planned scheme (issue 4):
// k-center as one persistent block per (batch, segment) holding the
// min-distance vector in shared memory for N <= 4096 (no launch per step),
// and for larger N a cooperative multi-block kernel with a grid-wide argmax
// per step; the coverage greedy loop likewise.
#include "cuda/common.cuh"
#include "tokensieve/diversity.h"

namespace tokensieve {
namespace cuda {
namespace {

Status not_yet(const char* op) {
  return Status(Code::kUnsupported, std::string(op) +
                                        " has no CUDA kernel yet in this build; run it on host tensors "
                                        "(the CPU back end) instead");
}

}  // namespace

Status k_center(const KCenterParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return not_yet("kCenter");
}

Status k_medoids(const KMedoidsParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return not_yet("kMedoids");
}

Status stc_scores(const StcScoresParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return not_yet("stcScores");
}

Status max_coverage(const MaxCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return not_yet("maxCoverage");
}

Status mmtok_coverage(const MmtokCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return not_yet("mmtokCoverage");
}

}  // namespace cuda
}  // namespace tokensieve
