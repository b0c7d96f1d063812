// Parameter checks of the attention family, shared by the CPU and CUDA back
// ends: every entry point calls validate() first, so a native runtime that
// links the kernels directly gets the same errors as the Node binding (which
// also validates in TS).
#include <cmath>
#include <string>

#include "core/check.h"
#include "tokensieve/attention.h"

namespace tokensieve {

using namespace check;

namespace {

Status validate_reduction(const ScoreReduction& r, int64_t nq, int64_t nk, int64_t batch,
                          int64_t heads, const TensorView& out, const TensorView& ref,
                          const char* ref_name) {
  if (r.num_query_rows < 1 || r.query_rows == nullptr)
    return err(Code::kRange, "expected at least one query row but got an empty selection");
  for (int64_t i = 0; i < r.num_query_rows; ++i) {
    const int32_t row = r.query_rows[i];
    if (row < 0 || row >= nq)
      return err(Code::kRange, "expected query rows in [0, " + std::to_string(nq) + ") but got " +
                                   std::to_string(row) + " at position " + std::to_string(i));
  }
  if (r.key_begin < 0 || r.key_end > nk || r.key_begin >= r.key_end)
    return err(Code::kRange, "expected a non-empty key range within [0, " + std::to_string(nk) +
                                 ") but got [" + std::to_string(r.key_begin) + ", " +
                                 std::to_string(r.key_end) + ")");
  if (r.query_reduce != QueryReduce::kMean && r.query_reduce != QueryReduce::kSum)
    return err(Code::kArg, "unknown query reduction");
  if (r.head_reduce != HeadReduce::kMean && r.head_reduce != HeadReduce::kSum &&
      r.head_reduce != HeadReduce::kNone)
    return err(Code::kArg, "unknown head reduction");
  const int64_t width = r.key_end - r.key_begin;
  TS_RETURN_IF_ERROR(expect_dtype(out, "out", DType::kF32));
  if (r.head_reduce == HeadReduce::kNone) {
    TS_RETURN_IF_ERROR(expect_shape(out, "out", {batch, heads, width}));
  } else {
    TS_RETURN_IF_ERROR(expect_shape(out, "out", {batch, width}));
  }
  if (out.data == nullptr) return err(Code::kArg, "expected data for out but got a null pointer");
  TS_RETURN_IF_ERROR(expect_contiguous(out, "out"));
  TS_RETURN_IF_ERROR(expect_same_device(ref, ref_name, out, "out"));
  return Status::Ok();
}

}  // namespace

Status validate(const AttentionScoresParams& p) {
  TS_RETURN_IF_ERROR(expect_rank(p.q, "q", 4, "[B, H, Nq, D]"));
  TS_RETURN_IF_ERROR(expect_rank(p.k, "k", 4, "[B, H, Nk, D]"));
  TS_RETURN_IF_ERROR(expect_float(p.q, "q"));
  if (p.k.dtype != p.q.dtype)
    return err(Code::kDType, std::string("expected k to have the dtype of q (") +
                                 dtype_name(p.q.dtype) + ") but got " + dtype_name(p.k.dtype));
  const char* dims[] = {"B", "H", "N", "D"};
  for (int i : {0, 1, 3}) {
    if (p.q.shape[i] != p.k.shape[i])
      return err(Code::kShape, std::string("expected q and k to agree in ") + dims[i] +
                                   " but got q " + shape_str(p.q) + " and k " + shape_str(p.k));
  }
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.q, "q"));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.k, "k"));
  TS_RETURN_IF_ERROR(expect_same_device(p.q, "q", p.k, "k"));
  const int64_t batch = p.q.shape[0], heads = p.q.shape[1];
  const int64_t nq = p.q.shape[2], nk = p.k.shape[2];
  if (p.has_key_bias) {
    TS_RETURN_IF_ERROR(expect_dtype(p.key_bias, "keyBias", DType::kF32));
    TS_RETURN_IF_ERROR(expect_shape(p.key_bias, "keyBias", {batch, nk}));
    TS_RETURN_IF_ERROR(expect_inner_contiguous(p.key_bias, "keyBias"));
    TS_RETURN_IF_ERROR(expect_same_device(p.q, "q", p.key_bias, "keyBias"));
    if (p.key_bias.data == nullptr)
      return err(Code::kArg, "expected data for keyBias but got a null pointer");
  }
  if (p.precision != ScorePrecision::kNative && p.precision != ScorePrecision::kInt8 &&
      p.precision != ScorePrecision::kTF32 && p.precision != ScorePrecision::kBF16)
    return err(Code::kArg, "unknown score precision");
  if (p.precision == ScorePrecision::kInt8 && (p.q_block < 1 || p.k_block < 1 || p.q_block > (int64_t{1} << 30) ||
                                               p.k_block > (int64_t{1} << 30)))
    return err(Code::kRange, "expected INT8 block sizes in [1, 2^30] but got q " + std::to_string(p.q_block) +
                                 ", k " + std::to_string(p.k_block));
  // Bounded so that row + offset + 1 cannot overflow in the kernels.
  constexpr int64_t kMaxOffset = int64_t{1} << 40;
  if (p.causal && (p.causal_offset < -kMaxOffset || p.causal_offset > kMaxOffset))
    return err(Code::kRange, "expected a causal offset within ±2^40 but got " + std::to_string(p.causal_offset));
  if (!std::isfinite(p.scale))
    return err(Code::kRange, "expected a finite scale but got " + std::to_string(p.scale));
  return validate_reduction(p.reduce, nq, nk, batch, heads, p.out, p.q, "q");
}

Status validate(const ReduceAttentionParams& p) {
  TS_RETURN_IF_ERROR(expect_rank(p.probs, "probs", 4, "[B, H, Nq, Nk]"));
  TS_RETURN_IF_ERROR(expect_float(p.probs, "probs"));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.probs, "probs"));
  return validate_reduction(p.reduce, p.probs.shape[2], p.probs.shape[3], p.probs.shape[0],
                            p.probs.shape[1], p.out, p.probs, "probs");
}

}  // namespace tokensieve
