// Device discovery, device memory and copies. The CUDA runtime is linked
// statically, so everything here must work — and report, never crash or
// abort — on a machine without a driver or without a GPU.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>

#include "cuda/common.cuh"
#include "tokensieve/runtime.h"

#ifndef TOKENSIEVE_CUDA_ARCHS
#error "TOKENSIEVE_CUDA_ARCHS (the CMake CUDA architectures, space-separated) must be defined"
#endif

namespace tokensieve {
namespace cuda {
namespace {

// The empty kernel of the noop() test hook.
__global__ void noop_kernel() {}

// Devices whose default memory pool configure_memory_pool() has set up:
// a bit each below 64, a set (under the mutex) above.
std::atomic<uint64_t> g_pools_configured{0};
std::mutex g_pools_mu;
std::set<int> g_pools_configured_high;

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

// Scratch memory (cuda/common.cuh's Scratch) and device tensors come from
// the device's default stream-ordered pool (cudaMallocAsync). Its default
// release threshold is 0: at every synchronisation the pool hands all memory
// freed since back to the driver, so the next call's cudaMallocAsync maps
// fresh pages — tens of microseconds per call for a few MB of scratch, the
// bulk of a small call's overhead. With the threshold at UINT64_MAX freed
// memory stays in the pool and is reused, as a caching allocator's is; it is
// still this process's and cudaMemPoolTrimTo(pool, 0) on the pool of
// cudaDeviceGetDefaultMemPool releases it. Devices without pools (cudaMalloc
// fallback) are left alone. Once per device; later calls cost an atomic load.
Status configure_memory_pool(int device) {
  if (device < 0) return Status::Ok();
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if (bit != 0 && (g_pools_configured.load(std::memory_order_acquire) & bit) != 0) return Status::Ok();
  std::lock_guard<std::mutex> lock(g_pools_mu);
  if (bit != 0 ? (g_pools_configured.load(std::memory_order_relaxed) & bit) != 0
               : g_pools_configured_high.count(device) != 0)
    return Status::Ok();
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(device));
  if (memory_pools_supported(device)) {
    cudaMemPool_t pool = nullptr;
    TS_CUDA_TRY(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    TS_CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  }
  if (bit != 0)
    g_pools_configured.fetch_or(bit, std::memory_order_release);
  else
    g_pools_configured_high.insert(device);
  return Status::Ok();
}

Status device_malloc(int device, size_t bytes, void* stream, void** out) {
  *out = nullptr;
  if (bytes == 0) return Status::Ok();
  TS_RETURN_IF_ERROR(configure_memory_pool(device));
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(device));
  return stream_malloc(device, bytes, static_cast<cudaStream_t>(stream), out);
}

Status noop(int device, void* stream, bool wait) {
  TS_RETURN_IF_ERROR(configure_memory_pool(device));
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(device));
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  noop_kernel<<<1, 32, 0, s>>>();
  TS_CUDA_CHECK_LAUNCH("noop_kernel");
  if (wait) TS_CUDA_TRY(cudaStreamSynchronize(s));
  return Status::Ok();
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
