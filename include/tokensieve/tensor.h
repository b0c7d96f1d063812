// tokensieve: plain C++ view of tensors and the status type every entry point
// returns. No N-API and no CUDA types here, so other native runtimes can link
// the kernels (libtokensieve_kernels.a) without Node.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace tokensieve {

// Element types. Inputs to kernels are f32/f16/bf16; indices are i32;
// quantized data uses i8/u8. The numeric values are part of the binding ABI.
enum class DType : int32_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kI32 = 3,
  kI64 = 4,
  kI8 = 5,
  kU8 = 6,
};

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kI8: return 1;
    case DType::kU8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
    case DType::kI8: return "i8";
    case DType::kU8: return "u8";
  }
  return "?";
}

inline bool is_float_dtype(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

constexpr int kMaxDims = 6;
constexpr int32_t kHostDevice = -1;

// A non-owning strided view. Strides are in elements (not bytes), so a view
// can express [B, N, H, D] storage as logical [B, H, N, D] by swapping the
// strides of the two middle dimensions.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int32_t ndim = 0;
  int32_t device = kHostDevice;  // -1: host memory, n >= 0: CUDA ordinal n
  int64_t shape[kMaxDims] = {0, 0, 0, 0, 0, 0};
  int64_t strides[kMaxDims] = {0, 0, 0, 0, 0, 0};

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  bool is_contiguous() const {
    int64_t expect = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expect) return false;
      expect *= shape[i];
    }
    return true;
  }
  bool on_host() const { return device == kHostDevice; }
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

// Stable error categories; the binding maps them to the JS error codes of
// the same name (ERR_SHAPE, ERR_DTYPE, ...).
enum class Code : int32_t {
  kOk = 0,
  kShape,        // ERR_SHAPE: wrong rank or mismatched dimensions
  kDType,        // ERR_DTYPE: unsupported or mismatched element type
  kDevice,       // ERR_DEVICE: tensors on different devices, unknown device
  kRange,        // ERR_RANGE: k, indices or ranges out of bounds; NaN/Inf inputs
  kDisposed,     // ERR_DISPOSED: use of released memory
  kCuda,         // ERR_CUDA: a CUDA call or launch failed
  kUnsupported,  // ERR_UNSUPPORTED: valid request this build cannot serve
  kArg,          // ERR_ARG: malformed argument (wrong JS type, bad option)
  kInternal,     // ERR_INTERNAL: a bug; never expected
};

inline const char* code_name(Code c) {
  switch (c) {
    case Code::kOk: return "OK";
    case Code::kShape: return "ERR_SHAPE";
    case Code::kDType: return "ERR_DTYPE";
    case Code::kDevice: return "ERR_DEVICE";
    case Code::kRange: return "ERR_RANGE";
    case Code::kDisposed: return "ERR_DISPOSED";
    case Code::kCuda: return "ERR_CUDA";
    case Code::kUnsupported: return "ERR_UNSUPPORTED";
    case Code::kArg: return "ERR_ARG";
    case Code::kInternal: return "ERR_INTERNAL";
  }
  return "ERR_INTERNAL";
}

struct Status {
  Code code = Code::kOk;
  std::string message;

  Status() = default;
  Status(Code c, std::string m) : code(c), message(std::move(m)) {}
  static Status Ok() { return Status(); }
  bool ok() const { return code == Code::kOk; }
};

#define TS_RETURN_IF_ERROR(expr)          \
  do {                                    \
    ::tokensieve::Status _st = (expr);    \
    if (!_st.ok()) return _st;            \
  } while (0)

}  // namespace tokensieve
