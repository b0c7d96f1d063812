// Parameter checks of the quantize family, shared by the CPU and CUDA back
// ends.
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "tokensieve/quantize.h"

namespace tokensieve {

using namespace check;

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
