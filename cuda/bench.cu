// Benchmark support on the GPU (include/tokensieve/bench.h): the uniform
// fill, the device's ceilings measured in the run, and an event timer.
//
// The roof kernels are deliberately simple, each bounded by one unit:
//   copy: float4 grid-stride copy of 512 MiB (far beyond any L2), bytes read
//         plus written per second, best of a few launches;
//   mma:  every warp runs kChains independent accumulator chains of mma.sync
//         (bf16 m16n8k16 or tf32 m16n8k8) on register operands, so the
//         tensor cores are never starved by memory; FLOPs = 2·m·n·k per MMA;
//   exp:  every thread runs independent ex2.approx chains (the MUFU unit);
// all with several blocks per SM on every SM. Results are written to a
// sink the host never reads, under a condition the compiler cannot prove
// false, so nothing is optimised away.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "cuda/mma.cuh"
#include "tokensieve/bench.h"

namespace tokensieve {
namespace cuda {
namespace {

// The same generator as cpu/bench.cc, bit for bit.
__device__ __forceinline__ float unit(uint64_t seed, uint64_t i) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename T>
__global__ void fill_uniform_kernel(T* out, int64_t n, uint64_t seed, float lo, float span) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    store(out + i, __fadd_rn(__fmul_rn(span, unit(seed, static_cast<uint64_t>(i))), lo));
}

constexpr int kRoofThreads = 256;
constexpr int kChains = 4;        // independent MMA chains per warp
constexpr int kExpChains = 8;     // independent exp chains per thread
constexpr int kMmaIters = 4096;   // MMAs per chain
constexpr int kExpIters = 4096;

__global__ void copy_kernel(const float4* __restrict__ src, float4* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

__global__ void bf16_mma_kernel(float* sink, int never) {
  uint32_t a[4], b[2];
  const uint32_t seed = threadIdx.x * 2654435761u;
  for (int i = 0; i < 4; ++i) a[i] = pack2<__nv_bfloat16>(1e-3f * (seed & 7), 1e-3f);
  for (int i = 0; i < 2; ++i) b[i] = pack2<__nv_bfloat16>(1e-3f, 1e-3f * ((seed >> 3) & 7));
  float d[kChains][4] = {};
  for (int it = 0; it < kMmaIters; ++it)
#pragma unroll
    for (int c = 0; c < kChains; ++c) mma_m16n8k16<__nv_bfloat16>(d[c], a, b);
  float s = 0;
  for (int c = 0; c < kChains; ++c) s += d[c][0] + d[c][1] + d[c][2] + d[c][3];
  if (never == 1) sink[threadIdx.x] = s;
}

__global__ void tf32_mma_kernel(float* sink, int never) {
  uint32_t a[4], b[2];
  for (int i = 0; i < 4; ++i) a[i] = __float_as_uint(to_tf32(1e-3f * (threadIdx.x + i)));
  for (int i = 0; i < 2; ++i) b[i] = __float_as_uint(to_tf32(1e-3f * (threadIdx.x - i)));
  float d[kChains][4] = {};
  for (int it = 0; it < kMmaIters; ++it)
#pragma unroll
    for (int c = 0; c < kChains; ++c) mma_m16n8k8_tf32(d[c], a, b);
  float s = 0;
  for (int c = 0; c < kChains; ++c) s += d[c][0] + d[c][1] + d[c][2] + d[c][3];
  if (never == 1) sink[threadIdx.x] = s;
}

__global__ void exp_kernel(float* sink, int never) {
  float x[kExpChains];
  for (int c = 0; c < kExpChains; ++c) x[c] = -1e-3f * (threadIdx.x + c);
  for (int it = 0; it < kExpIters; ++it)
#pragma unroll
    for (int c = 0; c < kExpChains; ++c) x[c] = exp2f(x[c]) - 1.0f;  // stays in (-1, 0]
  float s = 0;
  for (int c = 0; c < kExpChains; ++c) s += x[c];
  if (never == 1) sink[threadIdx.x] = s;
}

// One thread spins for `cycles` SM clocks: queued ahead of a timed call, it
// keeps the GPU busy while the host enqueues the call's kernels, so the
// events around the call see the kernels back to back, not the launch gaps.
__global__ void spin_kernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

// Best of `reps` launches of `launch`, in milliseconds.
template <typename F>
Status best_ms(cudaStream_t stream, int reps, F launch, float* ms) {
  cudaEvent_t start, stop;
  TS_CUDA_TRY(cudaEventCreate(&start));
  const cudaError_t e = cudaEventCreate(&stop);
  if (e != cudaSuccess) {
    cudaEventDestroy(start);
    TS_CUDA_TRY(e);
  }
  Status status = Status::Ok();
  *ms = 1e30f;
  for (int r = 0; r <= reps && status.ok(); ++r) {  // r == 0 warms up
    float t = 0;
    status = [&]() -> Status {
      TS_CUDA_TRY(cudaEventRecord(start, stream));
      TS_RETURN_IF_ERROR(launch());
      TS_CUDA_TRY(cudaEventRecord(stop, stream));
      TS_CUDA_TRY(cudaEventSynchronize(stop));
      TS_CUDA_TRY(cudaEventElapsedTime(&t, start, stop));
      return Status::Ok();
    }();
    if (r > 0) *ms = std::min(*ms, t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return status;
}

// The timer's events, per device (created on first use, kept for the process).
constexpr int kMaxDevices = 64;
cudaEvent_t g_start[kMaxDevices], g_stop[kMaxDevices];
bool g_timer_ready[kMaxDevices];

Status timer_events(int device) {
  if (device < 0 || device >= kMaxDevices) return Status(Code::kDevice, "timer: device ordinal out of range");
  if (g_timer_ready[device]) return Status::Ok();
  TS_CUDA_TRY(cudaEventCreate(&g_start[device]));
  TS_CUDA_TRY(cudaEventCreate(&g_stop[device]));
  g_timer_ready[device] = true;
  return Status::Ok();
}

}  // namespace

Status fill_uniform(const FillUniformParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.out, "out"));
  const int64_t n = p.out.numel();
  if (n == 0) return Status::Ok();
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.out.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65536));
  return TS_DISPATCH_FLOAT(p.out.dtype, "fillUniform", [&] {
    fill_uniform_kernel<scalar_t><<<blocks, 256, 0, stream>>>(static_cast<scalar_t*>(p.out.data), n, p.seed, p.lo,
                                                              p.hi - p.lo);
    TS_CUDA_CHECK_LAUNCH("fill_uniform_kernel");
    return Status::Ok();
  });
}

Status measure_device_roof(int device, DeviceRoof* out) {
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(device));
  int sms = 0;
  TS_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  cudaStream_t stream = nullptr;
  TS_CUDA_TRY(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  constexpr size_t kCopyBytes = size_t{512} << 20;
  void* buf = nullptr;
  Status status = [&]() -> Status {
    TS_CUDA_TRY(cudaMalloc(&buf, 2 * kCopyBytes));
    TS_CUDA_TRY(cudaMemsetAsync(buf, 0, 2 * kCopyBytes, stream));
    const float4* src = static_cast<const float4*>(buf);
    float4* dst = reinterpret_cast<float4*>(static_cast<char*>(buf) + kCopyBytes);
    const int64_t n4 = static_cast<int64_t>(kCopyBytes / sizeof(float4));
    float ms = 0;
    TS_RETURN_IF_ERROR(best_ms(stream, 5, [&]() -> Status {
      copy_kernel<<<static_cast<unsigned>(sms * 8), 512, 0, stream>>>(src, dst, n4);
      TS_CUDA_CHECK_LAUNCH("copy_kernel");
      return Status::Ok();
    }, &ms));
    out->copy_bytes_per_second = 2.0 * kCopyBytes / (ms * 1e-3);

    float* sink = static_cast<float*>(buf);
    const unsigned blocks = static_cast<unsigned>(sms * 4);
    const double warps = static_cast<double>(blocks) * (kRoofThreads / 32);
    TS_RETURN_IF_ERROR(best_ms(stream, 3, [&]() -> Status {
      bf16_mma_kernel<<<blocks, kRoofThreads, 0, stream>>>(sink, 0);
      TS_CUDA_CHECK_LAUNCH("bf16_mma_kernel");
      return Status::Ok();
    }, &ms));
    out->bf16_mma_flops = warps * kChains * kMmaIters * (2.0 * 16 * 8 * 16) / (ms * 1e-3);
    TS_RETURN_IF_ERROR(best_ms(stream, 3, [&]() -> Status {
      tf32_mma_kernel<<<blocks, kRoofThreads, 0, stream>>>(sink, 0);
      TS_CUDA_CHECK_LAUNCH("tf32_mma_kernel");
      return Status::Ok();
    }, &ms));
    out->tf32_mma_flops = warps * kChains * kMmaIters * (2.0 * 16 * 8 * 8) / (ms * 1e-3);
    TS_RETURN_IF_ERROR(best_ms(stream, 3, [&]() -> Status {
      exp_kernel<<<blocks, kRoofThreads, 0, stream>>>(sink, 0);
      TS_CUDA_CHECK_LAUNCH("exp_kernel");
      return Status::Ok();
    }, &ms));
    out->exp_per_second = static_cast<double>(blocks) * kRoofThreads * kExpChains * kExpIters / (ms * 1e-3);
    return Status::Ok();
  }();
  if (buf != nullptr) {
    const cudaError_t e = cudaFree(buf);
    if (status.ok() && e != cudaSuccess) status = Status(Code::kCuda, std::string("cudaFree: ") + cudaGetErrorName(e));
  }
  cudaStreamDestroy(stream);
  return status;
}

Status start_timer(int device, void* stream, double lead_us) {
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(device));
  TS_RETURN_IF_ERROR(timer_events(device));
  if (lead_us > 0) {
    int khz = 0;
    TS_CUDA_TRY(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device));
    spin_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<long long>(lead_us * 1e-3 * khz));
    TS_CUDA_CHECK_LAUNCH("spin_kernel");
  }
  TS_CUDA_TRY(cudaEventRecord(g_start[device], static_cast<cudaStream_t>(stream)));
  return Status::Ok();
}

Status stop_timer(int device, void* stream, float* ms) {
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(device));
  if (device < 0 || device >= kMaxDevices || !g_timer_ready[device])
    return Status(Code::kArg, "stopTimer: no timer was started on this device");
  TS_CUDA_TRY(cudaEventRecord(g_stop[device], static_cast<cudaStream_t>(stream)));
  TS_CUDA_TRY(cudaEventSynchronize(g_stop[device]));
  TS_CUDA_TRY(cudaEventElapsedTime(ms, g_start[device], g_stop[device]));
  return Status::Ok();
}

}  // namespace cuda
}  // namespace tokensieve
