// Device discovery, device memory and copies. The CUDA runtime is linked
// statically, so everything here must work — and report, never crash or
// abort — on a machine without a driver or without a GPU.
#include <cuda_runtime.h>

#include <string>

#include "cuda/common.cuh"
#include "tokensieve/runtime.h"

#ifndef TOKENSIEVE_CUDA_ARCHS
#error "TOKENSIEVE_CUDA_ARCHS (the CMake CUDA architectures, space-separated) must be defined"
#endif

namespace tokensieve {
namespace cuda {
namespace {

// A kernel of this library compiled with the same -gencode list as the
// others: if the runtime can load it on a device (SASS for that arch, or PTX
// it can JIT), it can load every kernel of this build.
__global__ void probe_kernel(int* p) {
  if (p != nullptr) *p = 1;
}

// 13000 -> "13.0"
std::string cuda_version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

std::string error_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

std::string unavailable_reason(cudaError_t e, int driver_version) {
  const std::string needed = cuda_version_string(CUDART_VERSION);
  if (e == cudaErrorInsufficientDriver) {
    if (driver_version == 0)
      return "no NVIDIA driver found (cudaErrorInsufficientDriver): install an NVIDIA driver that supports CUDA " +
             needed + " or newer";
    return "the NVIDIA driver supports CUDA " + cuda_version_string(driver_version) + " but this build needs CUDA " +
           needed + " (cudaErrorInsufficientDriver): update the NVIDIA driver";
  }
  if (e == cudaErrorNoDevice)
    return "no CUDA device found (cudaErrorNoDevice): check that a GPU is installed, that the driver sees it "
           "(nvidia-smi) and that CUDA_VISIBLE_DEVICES does not hide it";
  return "CUDA could not be initialised (" + error_text(e) +
         "): check the NVIDIA driver installation (nvidia-smi) and its version (CUDA " + needed + " or newer)";
}

// Whether this build has code for `device`; on false, *reason says why.
bool probe_kernels(int device, int major, int minor, std::string* reason) {
  DeviceGuard guard;
  const Status s = guard.enter(device);
  if (!s.ok()) {
    *reason = "could not make the device current: " + s.message;
    return false;
  }
  cudaFuncAttributes attr;
  const cudaError_t e = cudaFuncGetAttributes(&attr, probe_kernel);
  if (e == cudaSuccess) return true;
  (void)cudaGetLastError();
  const std::string sm = "sm_" + std::to_string(major) + std::to_string(minor);
  if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction ||
      e == cudaErrorUnsupportedPtxVersion)
    *reason = "no kernel image for " + sm + " in this build (compiled for " + TOKENSIEVE_CUDA_ARCHS + "; " +
              cudaGetErrorName(e) + "): rebuild with this architecture in TOKENSIEVE_CUDA_ARCHITECTURES";
  else
    *reason = "the kernels could not be loaded on " + sm + " (" + error_text(e) + ")";
  return false;
}

}  // namespace

int compiled_version() { return CUDART_VERSION; }

const char* compiled_architectures() { return TOKENSIEVE_CUDA_ARCHS; }

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.compiled = true;
  if (cudaRuntimeGetVersion(&info.runtime_version) != cudaSuccess) info.runtime_version = 0;
  // With no driver installed this succeeds and reports 0.
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;
  (void)cudaGetLastError();

  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  (void)cudaGetLastError();
  if (e != cudaSuccess) {
    info.unavailable_reason = unavailable_reason(e, info.driver_version);
    return info;
  }
  if (count <= 0) {
    info.unavailable_reason = unavailable_reason(cudaErrorNoDevice, info.driver_version);
    return info;
  }

  for (int d = 0; d < count; ++d) {
    DeviceInfo dev;
    dev.ordinal = d;
    cudaDeviceProp prop;
    const cudaError_t pe = cudaGetDeviceProperties(&prop, d);
    if (pe != cudaSuccess) {
      (void)cudaGetLastError();
      dev.name = "unknown";
      dev.kernels_reason = "cudaGetDeviceProperties failed (" + error_text(pe) + ")";
      info.devices.push_back(dev);
      continue;
    }
    dev.name = prop.name;
    dev.major = prop.major;
    dev.minor = prop.minor;
    dev.total_memory = prop.totalGlobalMem;
    dev.multiprocessors = prop.multiProcessorCount;
    dev.kernels_available = probe_kernels(d, prop.major, prop.minor, &dev.kernels_reason);
    info.devices.push_back(dev);
  }
  // runtime.h: available = compiled, driver present, >= 1 device. Whether a
  // device can run this build's kernels is per device (kernels_available).
  info.available = true;
  (void)cudaGetLastError();
  return info;
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
  cudaMemcpyKind k = cudaMemcpyDeviceToDevice;
  if (kind == CopyKind::kHostToDevice) k = cudaMemcpyHostToDevice;
  if (kind == CopyKind::kDeviceToHost) k = cudaMemcpyDeviceToHost;
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
