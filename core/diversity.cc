// Parameter checks of the diversity family (k-center, k-medoids), shared by
// the CPU and CUDA back ends.
#include <cmath>
#include <string>

#include "core/check.h"
#include "tokensieve/diversity.h"

namespace tokensieve {

using namespace check;

Status validate(const KCenterParams& p) {
  TS_RETURN_IF_ERROR(expect_float_input(p.x, "x", 3, "[B, N, C]"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1];
  if (p.segments < 1 || N % p.segments != 0)
    return Status(Code::kRange, "expected segments >= 1 dividing N = " + std::to_string(N) + " but got " +
                                    std::to_string(p.segments));
  const int64_t S = N / p.segments;
  if (p.k < 1 || p.k > S)
    return Status(Code::kRange, "expected k in [1, " + std::to_string(S) + "] (tokens per segment) but got " +
                                    std::to_string(p.k));
  if (p.metric != DistanceMetric::kCosine && p.metric != DistanceMetric::kL2)
    return Status(Code::kArg, "unknown distance metric");
  if (p.seed != CenterSeed::kIsolated && p.seed != CenterSeed::kMaxNorm && p.seed != CenterSeed::kIndex)
    return Status(Code::kArg, "unknown seed rule");
  if (p.seed == CenterSeed::kIndex && (p.seed_index < 0 || p.seed_index >= S))
    return Status(Code::kRange, "expected a seed index in [0, " + std::to_string(S) + ") but got " +
                                    std::to_string(p.seed_index));
  const int64_t K = p.segments * p.k;
  TS_RETURN_IF_ERROR(expect_exact(p.exclude, "exclude", DType::kU8, {B, N}, p.x, "x", true));
  TS_RETURN_IF_ERROR(expect_exact(p.order, "order", DType::kI32, {B, K}, p.x, "x", false));
  TS_RETURN_IF_ERROR(expect_exact(p.sorted, "sorted", DType::kI32, {B, K}, p.x, "x", true));
  TS_RETURN_IF_ERROR(expect_exact(p.distances, "distances", DType::kF32, {B, K}, p.x, "x", true));
  return Status::Ok();
}

Status validate(const KMedoidsParams& p) {
  TS_RETURN_IF_ERROR(expect_float_input(p.x, "x", 3, "[B, N, C]"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1];
  if (p.segments < 1 || N % p.segments != 0)
    return Status(Code::kRange, "expected segments >= 1 dividing N = " + std::to_string(N) + " but got " +
                                    std::to_string(p.segments));
  const int64_t S = N / p.segments;
  if (p.k < 1 || p.k > S)
    return Status(Code::kRange, "expected k in [1, " + std::to_string(S) + "] (tokens per segment) but got " +
                                    std::to_string(p.k));
  if (S * S > (int64_t{16} << 20))
    return Status(Code::kUnsupported, "kMedoids keeps a segment's distance matrix; " + std::to_string(S) +
                                          " tokens per segment is above the 4096 supported (use more segments)");
  if (p.metric != DistanceMetric::kCosine && p.metric != DistanceMetric::kL2)
    return Status(Code::kArg, "unknown distance metric");
  if (p.max_iters < 0) return Status(Code::kRange, "expected maxIters >= 0 but got " + std::to_string(p.max_iters));
  if (!(p.tol >= 0)) return Status(Code::kRange, "expected tol >= 0 but got " + std::to_string(p.tol));
  TS_RETURN_IF_ERROR(expect_exact(p.medoids, "medoids", DType::kI32, {B, p.segments * p.k}, p.x, "x", false));
  TS_RETURN_IF_ERROR(expect_exact(p.assignments, "assignments", DType::kI32, {B, N}, p.x, "x", false));
  TS_RETURN_IF_ERROR(expect_exact(p.iterations, "iterations", DType::kI32, {B, p.segments}, p.x, "x", true));
  return Status::Ok();
}

}  // namespace tokensieve
