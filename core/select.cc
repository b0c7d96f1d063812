// Parameter checks of the select family (top-k, gather), shared by the CPU
// and CUDA back ends.
#include <sstream>
#include <string>

#include "core/check.h"
#include "tokensieve/select.h"

namespace tokensieve {

using namespace check;

Status validate(const TopkParams& p) {
  TS_RETURN_IF_ERROR(expect_rank(p.scores, "scores", 2, "[B, N]"));
  TS_RETURN_IF_ERROR(expect_float(p.scores, "scores"));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.scores, "scores"));
  const int64_t batch = p.scores.shape[0], n = p.scores.shape[1];
  if (p.k < 1 || p.k > n)
    return err(Code::kRange, "expected k in [1, " + std::to_string(n) + "] but got " +
                                 std::to_string(p.k));
  TS_RETURN_IF_ERROR(expect_dtype(p.indices, "indices", DType::kI32));
  TS_RETURN_IF_ERROR(expect_shape(p.indices, "indices", {batch, p.k}));
  TS_RETURN_IF_ERROR(expect_contiguous(p.indices, "indices"));
  TS_RETURN_IF_ERROR(expect_same_device(p.scores, "scores", p.indices, "indices"));
  if (p.indices.data == nullptr)
    return err(Code::kArg, "expected data for indices but got a null pointer");
  if (p.values.data != nullptr) {
    TS_RETURN_IF_ERROR(expect_dtype(p.values, "values", DType::kF32));
    TS_RETURN_IF_ERROR(expect_shape(p.values, "values", {batch, p.k}));
    TS_RETURN_IF_ERROR(expect_contiguous(p.values, "values"));
    TS_RETURN_IF_ERROR(expect_same_device(p.scores, "scores", p.values, "values"));
  }
  return Status::Ok();
}

Status validate(const GatherParams& p) {
  TS_RETURN_IF_ERROR(expect_rank(p.x, "x", 3, "[B, N, C]"));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.x, "x"));
  TS_RETURN_IF_ERROR(expect_rank(p.indices, "indices", 2, "[B, K]"));
  TS_RETURN_IF_ERROR(expect_dtype(p.indices, "indices", DType::kI32));
  TS_RETURN_IF_ERROR(expect_contiguous(p.indices, "indices"));
  if (p.indices.shape[0] != p.x.shape[0])
    return err(Code::kShape, "expected indices to have the batch size of x (" +
                                 std::to_string(p.x.shape[0]) + ") but got shape " +
                                 shape_str(p.indices));
  TS_RETURN_IF_ERROR(expect_dtype(p.out, "out", p.x.dtype));
  TS_RETURN_IF_ERROR(
      expect_shape(p.out, "out", {p.x.shape[0], p.indices.shape[1], p.x.shape[2]}));
  TS_RETURN_IF_ERROR(expect_contiguous(p.out, "out"));
  TS_RETURN_IF_ERROR(expect_same_device(p.x, "x", p.indices, "indices"));
  TS_RETURN_IF_ERROR(expect_same_device(p.x, "x", p.out, "out"));
  if (p.out.data == nullptr)
    return err(Code::kArg, "expected data for out but got a null pointer");
  return Status::Ok();
}
}  // namespace tokensieve
