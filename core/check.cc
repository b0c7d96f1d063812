// The check:: building blocks (core/check.h) of every family's validate().
#include <sstream>
#include <string>

#include "core/check.h"

namespace tokensieve {
namespace check {

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

Status expect_float_input(const TensorView& t, const char* name, int ndim, const char* dims) {
  TS_RETURN_IF_ERROR(expect_rank(t, name, ndim, dims));
  TS_RETURN_IF_ERROR(expect_float(t, name));
  return expect_inner_contiguous(t, name);
}

Status expect_exact(const TensorView& t, const char* name, DType want, std::initializer_list<int64_t> dims,
                    const TensorView& ref, const char* ref_name, bool optional) {
  if (t.data == nullptr && optional) return Status::Ok();
  if (t.data == nullptr) return err(Code::kArg, std::string("expected data for ") + name + " but got a null pointer");
  TS_RETURN_IF_ERROR(expect_dtype(t, name, want));
  TS_RETURN_IF_ERROR(expect_shape(t, name, dims));
  TS_RETURN_IF_ERROR(expect_contiguous(t, name));
  return expect_same_device(ref, ref_name, t, name);
}

}  // namespace check
}  // namespace tokensieve
