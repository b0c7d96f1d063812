// Device discovery, device memory and copies. The CUDA runtime is linked
// statically, so all of this must work — and report, not crash — on a
// machine with no driver or no GPU.
#include <cuda_runtime.h>

#include <string>

#include "cuda/common.cuh"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace cuda {
namespace {

// A kernel of this library, used to ask the runtime whether this build has
// code a device can run (SASS for its arch, or PTX it can JIT).
__global__ void probe_kernel(int* p) {
  if (p != nullptr) *p = 1;
}

std::string version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

bool pools_supported(int device) {
  int v = 0;
  return cudaDeviceGetAttribute(&v, cudaDevAttrMemoryPoolsSupported, device) == cudaSuccess && v != 0;
}

}  // namespace

int compiled_version() { return CUDART_VERSION; }

const char* compiled_architectures() { return TOKENSIEVE_CUDA_ARCHS; }

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.compiled = true;
  cudaRuntimeGetVersion(&info.runtime_version);
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    std::string why;
    if (e == cudaErrorInsufficientDriver && info.driver_version == 0)
      why = "no NVIDIA driver was found (" + std::string(cudaGetErrorName(e)) +
            "): install an NVIDIA driver that supports CUDA " + version_string(CUDART_VERSION);
    else if (e == cudaErrorInsufficientDriver)
      why = "the NVIDIA driver supports CUDA " + version_string(info.driver_version) + " but this build needs " +
            version_string(CUDART_VERSION) + " (" + cudaGetErrorName(e) + "): update the driver";
    else if (e == cudaErrorNoDevice)
      why = "no CUDA device is visible (cudaErrorNoDevice): check CUDA_VISIBLE_DEVICES and the driver";
    else
      why = std::string("CUDA could not be initialised: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
    info.unavailable_reason = why;
    return info;
  }
  if (count == 0) {
    info.unavailable_reason = "the CUDA driver reports no devices";
    return info;
  }
  int previous = 0;
  cudaGetDevice(&previous);
  for (int d = 0; d < count; ++d) {
    DeviceInfo dev;
    dev.ordinal = d;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) {
      (void)cudaGetLastError();
      dev.name = "unknown";
      dev.kernels_reason = "cudaGetDeviceProperties failed";
      info.devices.push_back(dev);
      continue;
    }
    dev.name = prop.name;
    dev.major = prop.major;
    dev.minor = prop.minor;
    dev.total_memory = prop.totalGlobalMem;
    dev.multiprocessors = prop.multiProcessorCount;
    cudaFuncAttributes attr;
    const cudaError_t fe = cudaSetDevice(d) == cudaSuccess ? cudaFuncGetAttributes(&attr, probe_kernel)
                                                           : cudaGetLastError();
    if (fe == cudaSuccess) {
      dev.kernels_available = true;
    } else {
      (void)cudaGetLastError();
      dev.kernels_reason = std::string("no kernel image for sm_") + std::to_string(prop.major) +
                           std::to_string(prop.minor) + " in this build (compiled for " +
                           TOKENSIEVE_CUDA_ARCHS + "; " + cudaGetErrorName(fe) + ")";
    }
    info.devices.push_back(dev);
  }
  cudaSetDevice(previous);
  info.available = false;
  for (const auto& d : info.devices) info.available = info.available || d.kernels_available;
  if (!info.available) info.unavailable_reason = "no CUDA device can run this build's kernels";
  return info;
}

Status stream_malloc(int device, size_t bytes, cudaStream_t stream, void** out) {
  *out = nullptr;
  if (pools_supported(device)) {
    TS_CUDA_TRY(cudaMallocAsync(out, bytes, stream));
  } else {
    TS_CUDA_TRY(cudaMalloc(out, bytes));
  }
  return Status::Ok();
}

Status stream_free(int device, void* ptr, cudaStream_t stream) {
  if (ptr == nullptr) return Status::Ok();
  if (pools_supported(device)) {
    TS_CUDA_TRY(cudaFreeAsync(ptr, stream));
  } else {
    TS_CUDA_TRY(cudaFree(ptr));
  }
  return Status::Ok();
}

Status device_malloc(int device, size_t bytes, void* stream, void** out) {
  *out = nullptr;
  if (bytes == 0) return Status::Ok();
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(device));
  return stream_malloc(device, bytes, static_cast<cudaStream_t>(stream), out);
}

Status device_free(int device, void* ptr, void* stream) {
  if (ptr == nullptr) return Status::Ok();
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(device));
  return stream_free(device, ptr, static_cast<cudaStream_t>(stream));
}

Status memcpy_sync(int device, void* dst, const void* src, size_t bytes, CopyKind kind, void* stream) {
  if (bytes == 0) return Status::Ok();
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(device));
  const cudaMemcpyKind k = kind == CopyKind::kHostToDevice   ? cudaMemcpyHostToDevice
                           : kind == CopyKind::kDeviceToHost ? cudaMemcpyDeviceToHost
                                                             : cudaMemcpyDeviceToDevice;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  TS_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, k, s));
  TS_CUDA_TRY(cudaStreamSynchronize(s));
  return Status::Ok();
}

Status stream_synchronize(int device, void* stream) {
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(device));
  TS_CUDA_TRY(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
  return Status::Ok();
}

}  // namespace cuda
}  // namespace tokensieve
