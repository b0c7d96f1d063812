// Parameter checks of the merge family (matching, merging, contextual
// tokens), shared by the CPU and CUDA back ends.
#include <cmath>
#include <sstream>
#include <string>

#include "core/check.h"
#include "tokensieve/merge.h"

namespace tokensieve {

using namespace check;

Status validate(const BipartiteMatchParams& p) {
  TS_RETURN_IF_ERROR(expect_rank(p.metric, "metric", 3, "[B, N, C]"));
  TS_RETURN_IF_ERROR(expect_float(p.metric, "metric"));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.metric, "metric"));
  const int64_t B = p.metric.shape[0], N = p.metric.shape[1];
  TS_RETURN_IF_ERROR(expect_rank(p.split_a, "split_a", 1, "[Na]"));
  TS_RETURN_IF_ERROR(expect_rank(p.split_b, "split_b", 1, "[Nb]"));
  TS_RETURN_IF_ERROR(expect_dtype(p.split_a, "split_a", DType::kI32));
  TS_RETURN_IF_ERROR(expect_dtype(p.split_b, "split_b", DType::kI32));
  TS_RETURN_IF_ERROR(expect_contiguous(p.split_a, "split_a"));
  TS_RETURN_IF_ERROR(expect_contiguous(p.split_b, "split_b"));
  const int64_t Na = p.split_a.shape[0], Nb = p.split_b.shape[0];
  if (Na + Nb != N)
    return Status(Code::kShape, "expected the split to cover the N = " + std::to_string(N) +
                                    " tokens but it has " + std::to_string(Na) + " + " + std::to_string(Nb));
  if (p.precision != MatchPrecision::kF32 && p.precision != MatchPrecision::kBF16)
    return Status(Code::kArg, "expected precision 0 (f32) or 1 (bf16) but got " +
                                  std::to_string(static_cast<int32_t>(p.precision)));
  const int64_t r_max = (p.protect_cls || p.protect_distill) ? Na - 1 : Na;
  if (p.r < 0 || p.r > r_max)
    return Status(Code::kRange, "expected r in [0, " + std::to_string(r_max) + "] but got " + std::to_string(p.r));
  TS_RETURN_IF_ERROR(expect_dtype(p.assign, "assign", DType::kI32));
  TS_RETURN_IF_ERROR(expect_shape(p.assign, "assign", {B, N}));
  TS_RETURN_IF_ERROR(expect_contiguous(p.assign, "assign"));
  // unm_idx [B, Na - r], src_idx and dst_idx [B, r]; an empty one (zero
  // columns) may be passed as a view without data.
  const std::pair<const TensorView*, const char*> idx_outs[] = {
      {&p.unm_idx, "unm_idx"}, {&p.src_idx, "src_idx"}, {&p.dst_idx, "dst_idx"}};
  for (const auto& io : idx_outs) {
    const TensorView& t = *io.first;
    const int64_t cols = io.first == &p.unm_idx ? Na - p.r : p.r;
    if (cols == 0 && t.data == nullptr) continue;
    TS_RETURN_IF_ERROR(expect_dtype(t, io.second, DType::kI32));
    if (t.ndim != 2 || t.shape[0] != B || t.shape[1] != cols)
      return Status(Code::kShape, std::string("expected ") + io.second + " of shape [" + std::to_string(B) + ", " +
                                      std::to_string(cols) + "] but got " + shape_str(t));
    if (t.data == nullptr)
      return Status(Code::kArg, std::string("expected data for ") + io.second + " but got a null pointer");
    TS_RETURN_IF_ERROR(expect_contiguous(t, io.second));
    TS_RETURN_IF_ERROR(expect_same_device(p.metric, "metric", t, io.second));
  }
  TS_RETURN_IF_ERROR(expect_same_device(p.metric, "metric", p.split_a, "split_a"));
  TS_RETURN_IF_ERROR(expect_same_device(p.metric, "metric", p.split_b, "split_b"));
  TS_RETURN_IF_ERROR(expect_same_device(p.metric, "metric", p.assign, "assign"));
  return Status::Ok();
}

Status validate(const MergeParams& p) {
  TS_RETURN_IF_ERROR(expect_rank(p.x, "x", 3, "[B, N, C]"));
  TS_RETURN_IF_ERROR(expect_float(p.x, "x"));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.x, "x"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2];
  if (static_cast<int32_t>(p.mode) < 0 || static_cast<int32_t>(p.mode) > 3)
    return Status(Code::kArg, "expected merge mode 0 (sum), 1 (mean), 2 (amax) or 3 (wavg) but got " +
                                  std::to_string(static_cast<int32_t>(p.mode)));
  if (p.n_out < 1 || p.n_out > N)
    return Status(Code::kRange, "expected n_out in [1, " + std::to_string(N) + "] but got " + std::to_string(p.n_out));
  TS_RETURN_IF_ERROR(expect_dtype(p.assign, "assign", DType::kI32));
  TS_RETURN_IF_ERROR(expect_shape(p.assign, "assign", {B, N}));
  TS_RETURN_IF_ERROR(expect_contiguous(p.assign, "assign"));
  TS_RETURN_IF_ERROR(expect_dtype(p.out, "out", p.x.dtype));
  TS_RETURN_IF_ERROR(expect_shape(p.out, "out", {B, p.n_out, C}));
  TS_RETURN_IF_ERROR(expect_contiguous(p.out, "out"));
  TS_RETURN_IF_ERROR(expect_same_device(p.x, "x", p.assign, "assign"));
  TS_RETURN_IF_ERROR(expect_same_device(p.x, "x", p.out, "out"));
  if (p.mode == MergeMode::kWavg) {
    if (p.sizes.data != nullptr) {
      TS_RETURN_IF_ERROR(expect_dtype(p.sizes, "sizes", DType::kF32));
      TS_RETURN_IF_ERROR(expect_shape(p.sizes, "sizes", {B, N, 1}));
      TS_RETURN_IF_ERROR(expect_contiguous(p.sizes, "sizes"));
      TS_RETURN_IF_ERROR(expect_same_device(p.x, "x", p.sizes, "sizes"));
    }
    TS_RETURN_IF_ERROR(expect_dtype(p.sizes_out, "sizes_out", DType::kF32));
    TS_RETURN_IF_ERROR(expect_shape(p.sizes_out, "sizes_out", {B, p.n_out, 1}));
    TS_RETURN_IF_ERROR(expect_contiguous(p.sizes_out, "sizes_out"));
    TS_RETURN_IF_ERROR(expect_same_device(p.x, "x", p.sizes_out, "sizes_out"));
  }
  return Status::Ok();
}

Status validate(const ContextualMergeParams& p) {
  TS_RETURN_IF_ERROR(expect_rank(p.x, "x", 3, "[B, N, C]"));
  TS_RETURN_IF_ERROR(expect_float(p.x, "x"));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.x, "x"));
  TS_RETURN_IF_ERROR(expect_rank(p.metric, "metric", 3, "[B, N, Cm]"));
  TS_RETURN_IF_ERROR(expect_float(p.metric, "metric"));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.metric, "metric"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2];
  if (p.metric.shape[0] != B || p.metric.shape[1] != N)
    return Status(Code::kShape, "expected metric of shape [" + std::to_string(B) + ", " + std::to_string(N) +
                                    ", Cm] (the tokens of x) but got " + shape_str(p.metric));
  const bool from_kept = p.kept.data != nullptr, from_mask = p.keep_mask.data != nullptr;
  if (static_cast<int>(from_kept) + static_cast<int>(from_mask) + static_cast<int>(p.remaining.data != nullptr) != 1)
    return Status(Code::kArg, "expected exactly one of remaining, keptIndices and keepMask");
  if (from_mask) {
    // The count of remaining tokens is the mask's to tell: c is checked
    // against it where the mask is counted (cpu/merge.cc, cuda/merge.cu).
    TS_RETURN_IF_ERROR(expect_shape(p.keep_mask, "keepMask", {B, N}));
    TS_RETURN_IF_ERROR(expect_contiguous(p.keep_mask, "keepMask"));
    TS_RETURN_IF_ERROR(expect_same_device(p.x, "x", p.keep_mask, "keepMask"));
    if (p.c < 1 || p.c > N)
      return Status(Code::kRange, "expected c in [1, " + std::to_string(N) + "] but got " + std::to_string(p.c));
  } else {
    const TensorView& list = from_kept ? p.kept : p.remaining;
    const char* list_name = from_kept ? "keptIndices" : "remaining";
    TS_RETURN_IF_ERROR(expect_rank(list, list_name, 2, from_kept ? "[B, K]" : "[B, Nr]"));
    TS_RETURN_IF_ERROR(expect_dtype(list, list_name, DType::kI32));
    TS_RETURN_IF_ERROR(expect_contiguous(list, list_name));
    if (list.shape[0] != B)
      return Status(Code::kShape, std::string("expected ") + list_name + " to have the batch size of x (" +
                                      std::to_string(B) + ") but got " + shape_str(list));
    if (from_kept && list.shape[1] < 1)
      return Status(Code::kShape, "expected keptIndices of shape [B, K] with K >= 1 but got " + shape_str(list));
    if (from_kept && list.shape[1] >= N)
      return Status(Code::kRange, "no tokens remain to merge: keptIndices holds " + std::to_string(list.shape[1]) +
                                      " of the " + std::to_string(N) + " tokens");
    const int64_t Nr = from_kept ? N - list.shape[1] : list.shape[1];
    if (p.c < 1 || p.c > Nr)
      return Status(Code::kRange, "expected c in [1, " + std::to_string(Nr) + "] but got " + std::to_string(p.c));
    TS_RETURN_IF_ERROR(expect_same_device(p.x, "x", list, list_name));
  }
  TS_RETURN_IF_ERROR(expect_dtype(p.out, "out", p.x.dtype));
  TS_RETURN_IF_ERROR(expect_shape(p.out, "out", {B, p.c, C}));
  TS_RETURN_IF_ERROR(expect_contiguous(p.out, "out"));
  TS_RETURN_IF_ERROR(expect_same_device(p.x, "x", p.metric, "metric"));
  TS_RETURN_IF_ERROR(expect_same_device(p.x, "x", p.out, "out"));
  return Status::Ok();
}

Status check_remaining_count(int64_t nr, int64_t c) {
  if (nr < 1) return Status(Code::kRange, "no tokens remain to merge (keepMask keeps every token)");
  if (c > nr) return Status(Code::kRange, "expected c in [1, " + std::to_string(nr) + "] but got " + std::to_string(c));
  return Status::Ok();
}

}  // namespace tokensieve
