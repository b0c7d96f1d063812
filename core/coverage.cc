// Parameter checks of the coverage family (maximum coverage, MMTok's
// coverage matrix), shared by the CPU and CUDA back ends.
#include <cmath>
#include <string>

#include "core/check.h"
#include "tokensieve/coverage.h"

namespace tokensieve {

using namespace check;

Status validate(const MaxCoverageParams& p) {
  TS_RETURN_IF_ERROR(expect_float_input(p.coverage, "coverage", 3, "[B, R, N]"));
  const int64_t B = p.coverage.shape[0], N = p.coverage.shape[2];
  if (p.k < 1 || p.k > N)
    return Status(Code::kRange, "expected k in [1, " + std::to_string(N) + "] but got " + std::to_string(p.k));
  TS_RETURN_IF_ERROR(expect_exact(p.exclude, "exclude", DType::kU8, {B, N}, p.coverage, "coverage", true));
  TS_RETURN_IF_ERROR(expect_exact(p.order, "order", DType::kI32, {B, p.k}, p.coverage, "coverage", false));
  TS_RETURN_IF_ERROR(expect_exact(p.sorted, "sorted", DType::kI32, {B, p.k}, p.coverage, "coverage", true));
  TS_RETURN_IF_ERROR(expect_exact(p.gains, "gains", DType::kF32, {B, p.k}, p.coverage, "coverage", true));
  return Status::Ok();
}

Status validate(const MmtokCoverageParams& p) {
  TS_RETURN_IF_ERROR(expect_float_input(p.text, "text", 3, "[B, m, D]"));
  TS_RETURN_IF_ERROR(expect_float_input(p.vision, "vision", 3, "[B, n, D]"));
  const int64_t B = p.vision.shape[0], n = p.vision.shape[1], m = p.text.shape[1];
  if (p.text.shape[0] != B || p.text.shape[2] != p.vision.shape[2])
    return Status(Code::kShape, "expected text [B, m, D] to match vision " + shape_str(p.vision) + " in B and D but got " +
                                    shape_str(p.text));
  if (p.vision_aux.data != nullptr) {
    TS_RETURN_IF_ERROR(expect_float_input(p.vision_aux, "visionAux", 3, "[B, n, D']"));
    if (p.vision_aux.shape[0] != B || p.vision_aux.shape[1] != n)
      return Status(Code::kShape, "expected visionAux [B, n, D'] to match vision " + shape_str(p.vision) +
                                      " in B and n but got " + shape_str(p.vision_aux));
    if (p.vision_aux.device != p.vision.device) return Status(Code::kDevice, "expected visionAux on the device of vision");
  }
  if (p.text.device != p.vision.device) return Status(Code::kDevice, "expected text on the device of vision");
  if (!(p.tau_tv > 0) || !std::isfinite(p.tau_tv))
    return Status(Code::kRange, "expected tauTV > 0 but got " + std::to_string(p.tau_tv));
  if (!(p.tau_vv > 0) || !std::isfinite(p.tau_vv))
    return Status(Code::kRange, "expected tauVV > 0 but got " + std::to_string(p.tau_vv));
  if (!(p.alpha >= 0) || !std::isfinite(p.alpha))
    return Status(Code::kRange, "expected a finite alpha >= 0 but got " + std::to_string(p.alpha));
  TS_RETURN_IF_ERROR(expect_exact(p.out, "out", DType::kF32, {B, m + n, n}, p.vision, "vision", false));
  return Status::Ok();
}

}  // namespace tokensieve
