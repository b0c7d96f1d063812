// Parameter checks shared by the CPU and CUDA back ends. Every entry point
// calls validate() first, so a native runtime that links the kernels directly
// gets the same errors as the Node binding (which also validates in TS).
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/validate.h"
#include "tokensieve/attention.h"
#include "tokensieve/quantize.h"
#include "tokensieve/select.h"

namespace tokensieve {
namespace check {
namespace {
Status err(Code c, const std::string& m) { return Status(c, m); }
}  // namespace

std::string shape_str(const TensorView& t) {
  std::ostringstream os;
  os << "[";
  for (int i = 0; i < t.ndim; ++i) os << (i ? ", " : "") << t.shape[i];
  os << "]";
  return os.str();
}

Status expect_rank(const TensorView& t, const char* name, int ndim, const char* dims) {
  if (t.data == nullptr && t.numel() != 0)
    return err(Code::kArg, std::string("expected data for ") + name + " but got a null pointer");
  if (t.ndim != ndim) {
    std::ostringstream os;
    os << "expected " << name << " to have rank " << ndim << " " << dims << " but got shape "
       << shape_str(t);
    return err(Code::kShape, os.str());
  }
  for (int i = 0; i < ndim; ++i) {
    if (t.shape[i] < 1) {
      std::ostringstream os;
      os << "expected every dimension of " << name << " " << dims << " to be >= 1 but got shape "
         << shape_str(t);
      return err(Code::kShape, os.str());
    }
  }
  return Status::Ok();
}

Status expect_float(const TensorView& t, const char* name) {
  if (!is_float_dtype(t.dtype))
    return err(Code::kDType, std::string("expected f32, f16 or bf16 for ") + name + " but got " +
                                 dtype_name(t.dtype));
  return Status::Ok();
}

Status expect_dtype(const TensorView& t, const char* name, DType want) {
  if (t.dtype != want)
    return err(Code::kDType, std::string("expected ") + dtype_name(want) + " for " + name +
                                 " but got " + dtype_name(t.dtype));
  return Status::Ok();
}

Status expect_inner_contiguous(const TensorView& t, const char* name) {
  if (t.strides[t.ndim - 1] != 1 && t.shape[t.ndim - 1] != 1)
    return err(Code::kUnsupported, std::string("expected the last dimension of ") + name +
                                       " to be contiguous (stride 1) but got stride " +
                                       std::to_string(t.strides[t.ndim - 1]));
  return Status::Ok();
}

Status expect_contiguous(const TensorView& t, const char* name) {
  if (!t.is_contiguous())
    return err(Code::kUnsupported, std::string("expected ") + name + " to be contiguous");
  return Status::Ok();
}

Status expect_shape(const TensorView& t, const char* name, std::initializer_list<int64_t> dims) {
  bool ok = t.ndim == static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) {
    if (ok && t.shape[i] != d) ok = false;
    ++i;
  }
  if (!ok) {
    std::ostringstream os;
    os << "expected " << name << " to have shape [";
    i = 0;
    for (int64_t d : dims) os << (i++ ? ", " : "") << d;
    os << "] but got " << shape_str(t);
    return err(Code::kShape, os.str());
  }
  if (t.data == nullptr && t.numel() != 0)
    return err(Code::kArg, std::string("expected data for ") + name + " but got a null pointer");
  return Status::Ok();
}

Status expect_same_device(const TensorView& a, const char* an, const TensorView& b,
                          const char* bn) {
  if (a.device != b.device) {
    auto dev = [](int d) { return d < 0 ? std::string("cpu") : "cuda:" + std::to_string(d); };
    return err(Code::kDevice, std::string("expected ") + bn + " on " + dev(a.device) + " (the device of " +
                                  an + ") but got " + dev(b.device));
  }
  return Status::Ok();
}

}  // namespace check

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
  if (p.precision != ScorePrecision::kNative && p.precision != ScorePrecision::kInt8)
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

namespace {

// Expected scale shape for x's shape under `scheme` (see quantize.h).
Status scale_shape(const TensorView& x, const QuantScheme& s, std::vector<int64_t>* out) {
  const int64_t C = x.shape[x.ndim - 1];
  out->clear();
  switch (s.granularity) {
    case Granularity::kTensor:
      *out = {1};
      return Status::Ok();
    case Granularity::kToken:
      for (int i = 0; i + 1 < x.ndim; ++i) out->push_back(x.shape[i]);
      out->push_back(1);
      return Status::Ok();
    case Granularity::kChannel:
      *out = {C};
      return Status::Ok();
    case Granularity::kGroup: {
      if (s.block < 1) return err(Code::kRange, "expected a group size >= 1 but got " + std::to_string(s.block));
      if (C % s.block != 0 && !s.pad)
        return err(Code::kShape, "expected the last dimension (" + std::to_string(C) +
                                     ") to be a multiple of the group size " + std::to_string(s.block) +
                                     " (pass pad to allow a short last group)");
      for (int i = 0; i + 1 < x.ndim; ++i) out->push_back(x.shape[i]);
      out->push_back((C + s.block - 1) / s.block);
      return Status::Ok();
    }
    case Granularity::kRows: {
      if (x.ndim != 4)
        return err(Code::kShape, "expected x of rank 4 [B, H, N, D] for row-block scales but got shape " +
                                     shape_str(x));
      if (s.block < 1) return err(Code::kRange, "expected rows per block >= 1 but got " + std::to_string(s.block));
      const int64_t N = x.shape[2];
      if (N % s.block != 0 && !s.pad)
        return err(Code::kShape, "expected the token count (" + std::to_string(N) +
                                     ") to be a multiple of the row block " + std::to_string(s.block) +
                                     " (pass pad to allow a short last block)");
      *out = {x.shape[0], x.shape[1], (N + s.block - 1) / s.block, 1};
      return Status::Ok();
    }
  }
  return err(Code::kArg, "unknown granularity");
}

Status expect_shape_vec(const TensorView& t, const char* name, const std::vector<int64_t>& dims) {
  bool ok = t.ndim == static_cast<int>(dims.size());
  for (size_t i = 0; ok && i < dims.size(); ++i) ok = t.shape[i] == dims[i];
  if (!ok) {
    std::ostringstream os;
    os << "expected " << name << " to have shape [";
    for (size_t i = 0; i < dims.size(); ++i) os << (i ? ", " : "") << dims[i];
    os << "] but got " << shape_str(t);
    return err(Code::kShape, os.str());
  }
  return Status::Ok();
}

// data's shape: x's, with the last dim halved (rounded up) for 4 bits.
std::vector<int64_t> data_shape(const TensorView& x, int bits) {
  std::vector<int64_t> d(x.shape, x.shape + x.ndim);
  if (bits == 4) d.back() = (d.back() + 1) / 2;
  return d;
}

Status validate_scheme(const QuantScheme& s) {
  if (s.bits != 8 && s.bits != 4) return err(Code::kRange, "expected 8 or 4 bits but got " + std::to_string(s.bits));
  return Status::Ok();
}

Status check_quant_tensors(const TensorView& x, const QuantScheme& s, const TensorView& data,
                           const TensorView& scales, const char* xname) {
  TS_RETURN_IF_ERROR(validate_scheme(s));
  TS_RETURN_IF_ERROR(expect_dtype(data, "data", s.bits == 8 ? DType::kI8 : DType::kU8));
  TS_RETURN_IF_ERROR(expect_shape_vec(data, "data", data_shape(x, s.bits)));
  TS_RETURN_IF_ERROR(expect_contiguous(data, "data"));
  std::vector<int64_t> sshape;
  TS_RETURN_IF_ERROR(scale_shape(x, s, &sshape));
  TS_RETURN_IF_ERROR(expect_dtype(scales, "scales", DType::kF32));
  TS_RETURN_IF_ERROR(expect_shape_vec(scales, "scales", sshape));
  TS_RETURN_IF_ERROR(expect_contiguous(scales, "scales"));
  TS_RETURN_IF_ERROR(expect_same_device(x, xname, data, "data"));
  TS_RETURN_IF_ERROR(expect_same_device(x, xname, scales, "scales"));
  if (data.data == nullptr || scales.data == nullptr)
    return err(Code::kArg, "expected data and scales buffers but got a null pointer");
  return Status::Ok();
}

Status check_mean(const TensorView& x, const TensorView& mean, const char* xname) {
  if (x.ndim != 4)
    return err(Code::kShape, std::string("expected ") + xname + " of rank 4 [B, H, N, D] for the K mean but got shape " +
                                 shape_str(x));
  TS_RETURN_IF_ERROR(expect_dtype(mean, "mean", DType::kF32));
  TS_RETURN_IF_ERROR(expect_shape_vec(mean, "mean", {x.shape[0], x.shape[1], 1, x.shape[3]}));
  TS_RETURN_IF_ERROR(expect_contiguous(mean, "mean"));
  TS_RETURN_IF_ERROR(expect_same_device(x, xname, mean, "mean"));
  if (mean.data == nullptr) return err(Code::kArg, "expected a mean buffer but got a null pointer");
  return Status::Ok();
}

}  // namespace

Status validate(const QuantizeParams& p) {
  if (p.x.ndim < 1 || p.x.ndim > kMaxDims)
    return err(Code::kShape, "expected x of rank 1 to " + std::to_string(kMaxDims) + " but got shape " + shape_str(p.x));
  for (int i = 0; i < p.x.ndim; ++i)
    if (p.x.shape[i] < 1) return err(Code::kShape, "expected a non-empty x but got shape " + shape_str(p.x));
  TS_RETURN_IF_ERROR(expect_float(p.x, "x"));
  TS_RETURN_IF_ERROR(expect_contiguous(p.x, "x"));
  if (p.x.data == nullptr) return err(Code::kArg, "expected data for x but got a null pointer");
  TS_RETURN_IF_ERROR(check_quant_tensors(p.x, p.scheme, p.data, p.scales, "x"));
  if (p.smooth) TS_RETURN_IF_ERROR(check_mean(p.x, p.mean, "x"));
  return Status::Ok();
}

Status validate(const DequantizeParams& p) {
  const TensorView& x = p.out;
  if (x.ndim < 1 || x.ndim > kMaxDims)
    return err(Code::kShape, "expected out of rank 1 to " + std::to_string(kMaxDims) + " but got shape " + shape_str(x));
  for (int i = 0; i < x.ndim; ++i)
    if (x.shape[i] < 1) return err(Code::kShape, "expected a non-empty out but got shape " + shape_str(x));
  TS_RETURN_IF_ERROR(expect_float(x, "out"));
  TS_RETURN_IF_ERROR(expect_contiguous(x, "out"));
  if (x.data == nullptr) return err(Code::kArg, "expected data for out but got a null pointer");
  TS_RETURN_IF_ERROR(check_quant_tensors(x, p.scheme, p.data, p.scales, "out"));
  if (p.add_mean) TS_RETURN_IF_ERROR(check_mean(x, p.mean, "out"));
  return Status::Ok();
}

}  // namespace tokensieve
