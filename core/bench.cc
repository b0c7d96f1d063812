// Validation of the benchmark helpers (include/tokensieve/bench.h).
#include <cmath>
#include <string>

#include "core/check.h"
#include "tokensieve/bench.h"

namespace tokensieve {

Status validate(const FillUniformParams& p) {
  const DType dt = p.out.dtype;
  if (dt != DType::kF32 && dt != DType::kF16 && dt != DType::kBF16)
    return Status(Code::kDType, "fillUniform: expected an f32, f16 or bf16 tensor");
  if (!p.out.is_contiguous()) return Status(Code::kArg, "fillUniform: expected a contiguous tensor");
  if (p.out.numel() > 0 && p.out.data == nullptr) return Status(Code::kArg, "fillUniform: null data");
  if (!std::isfinite(p.lo) || !std::isfinite(p.hi) || !(p.lo <= p.hi))
    return Status(Code::kRange, "fillUniform: expected finite lo <= hi");
  return Status::Ok();
}

}  // namespace tokensieve
