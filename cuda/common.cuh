// Shared CUDA plumbing: error checks that become Status (ERR_CUDA with the
// CUDA error name), a device guard, stream-ordered scratch memory, dtype
// loads and the one dtype dispatch every .cu file uses.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "tokensieve/tensor.h"

namespace tokensieve {
namespace cuda {

inline Status cuda_error(cudaError_t e, const char* stmt, const char* file, int line) {
  return Status(Code::kCuda, std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e) + " (in `" +
                                 stmt + "` at " + file + ":" + std::to_string(line) + ")");
}

// Every CUDA runtime call goes through this; a failure returns ERR_CUDA.
#define TS_CUDA_TRY(stmt)                                                          \
  do {                                                                             \
    cudaError_t _e = (stmt);                                                       \
    if (_e != cudaSuccess) {                                                       \
      (void)cudaGetLastError(); /* clear a non-sticky error */                     \
      return ::tokensieve::cuda::cuda_error(_e, #stmt, __FILE__, __LINE__);        \
    }                                                                              \
  } while (0)

// After every kernel launch: launch-configuration errors surface here.
#define TS_CUDA_CHECK_LAUNCH(name) TS_CUDA_TRY(cudaGetLastError())

// Makes `device` current for a scope and restores the caller's device.
class DeviceGuard {
 public:
  DeviceGuard() = default;
  Status enter(int device) {
    TS_CUDA_TRY(cudaGetDevice(&previous_));
    if (previous_ != device) {
      TS_CUDA_TRY(cudaSetDevice(device));
      restore_ = true;
    }
    return Status::Ok();
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool restore_ = false;
};

// Stream-ordered allocation (cudaMallocAsync) where the device supports
// memory pools, cudaMalloc otherwise.
Status stream_malloc(int device, size_t bytes, cudaStream_t stream, void** out);
Status stream_free(int device, void* ptr, cudaStream_t stream);

// Scratch memory freed (stream-ordered) when it goes out of scope, on every
// path out of an entry point.
class Scratch {
 public:
  Scratch(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~Scratch() {
    if (ptr_ != nullptr) stream_free(device_, ptr_, stream_);
  }
  Status allocate(size_t bytes) { return stream_malloc(device_, bytes == 0 ? 1 : bytes, stream_, &ptr_); }
  template <typename T>
  T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(ptr_) + byte_offset);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

 private:
  int device_;
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

// Rounds n up to a multiple of 256 bytes so sub-buffers carved from one
// scratch allocation stay aligned.
inline size_t align256(size_t n) { return (n + 255) / 256 * 256; }

inline Status require_device(const TensorView& t, const char* name) {
  if (t.device < 0)
    return Status(Code::kDevice, std::string("expected ") + name + " on a CUDA device but it is on the host");
  return Status::Ok();
}

__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ float load_f32(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p) { return __bfloat162float(*p); }

__device__ __forceinline__ float warp_sum(float v, unsigned width = 32) {
  for (unsigned o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, width);
  return v;
}
__device__ __forceinline__ float warp_max(float v, unsigned width = 32) {
  for (unsigned o = width / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o, width));
  return v;
}

}  // namespace cuda
}  // namespace tokensieve

// The one dtype dispatch: runs the body with `scalar_t` bound to the CUDA
// type of a float dtype; any other dtype returns ERR_DTYPE.
#define TS_DISPATCH_FLOAT(dtype, NAME, ...)                                                   \
  [&]() -> ::tokensieve::Status {                                                             \
    switch (dtype) {                                                                          \
      case ::tokensieve::DType::kF32: {                                                       \
        using scalar_t = float;                                                               \
        return __VA_ARGS__();                                                                 \
      }                                                                                       \
      case ::tokensieve::DType::kF16: {                                                       \
        using scalar_t = __half;                                                              \
        return __VA_ARGS__();                                                                 \
      }                                                                                       \
      case ::tokensieve::DType::kBF16: {                                                      \
        using scalar_t = __nv_bfloat16;                                                       \
        return __VA_ARGS__();                                                                 \
      }                                                                                       \
      default:                                                                                \
        return ::tokensieve::Status(::tokensieve::Code::kDType,                               \
                                    std::string(NAME) + ": unsupported dtype " +              \
                                        ::tokensieve::dtype_name(dtype));                     \
    }                                                                                         \
  }()
