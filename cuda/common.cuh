// Shared CUDA plumbing for cuda/*.cu: error checks that become a Status
// (ERR_CUDA with the CUDA error's name, the statement, file and line), a
// scoped device guard, stream-ordered scratch memory, dtype loads, the one
// float-dtype dispatch, warp/block reductions, and the "last block" ticket
// used for deterministic cross-block reductions.
//
// Host code here is header-inline so every .cu file is self-contained.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>

#include "tokensieve/tensor.h"

namespace tokensieve {
namespace cuda {

// ---- errors -----------------------------------------------------------------

inline Status cuda_status(cudaError_t e, const char* stmt, const char* file, int line) {
  return Status(Code::kCuda, std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e) + " (in `" + stmt +
                                 "` at " + file + ":" + std::to_string(line) + ")");
}

}  // namespace cuda
}  // namespace tokensieve

// Runs a CUDA runtime call; on failure clears the (non-sticky) error state and
// returns Status(Code::kCuda, "<name>: <description> (in `stmt` at file:line)").
#define TS_CUDA_TRY(stmt)                                                        \
  do {                                                                           \
    const cudaError_t ts_cuda_err_ = (stmt);                                     \
    if (ts_cuda_err_ != cudaSuccess) {                                           \
      (void)cudaGetLastError();                                                  \
      return ::tokensieve::cuda::cuda_status(ts_cuda_err_, #stmt, __FILE__, __LINE__); \
    }                                                                            \
  } while (0)

// After every kernel launch: a bad configuration (grid, block, shared memory)
// or a missing kernel image surfaces here as ERR_CUDA naming the kernel.
#define TS_CUDA_CHECK_LAUNCH(kernel_name)                                        \
  do {                                                                           \
    const cudaError_t ts_cuda_err_ = cudaGetLastError();                         \
    if (ts_cuda_err_ != cudaSuccess)                                             \
      return ::tokensieve::cuda::cuda_status(ts_cuda_err_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)

namespace tokensieve {
namespace cuda {

// ---- devices ----------------------------------------------------------------

inline std::string device_name(int device) {
  return device < 0 ? std::string("cpu") : "cuda:" + std::to_string(device);
}

// Kernels take device tensors only; validate() has already checked that all
// tensors of a call share one device, so checking the first is enough.
inline Status require_device(const TensorView& t, const char* name) {
  if (t.device < 0)
    return Status(Code::kDevice, std::string("expected ") + name +
                                     " on a CUDA device for the CUDA kernels but it is in host memory");
  return Status::Ok();
}

// Makes `device` current for a scope and restores the caller's device on
// exit. enter() also clears stale non-sticky errors of earlier, unrelated
// runtime calls on this thread so that launch checks do not misreport them.
class DeviceGuard {
 public:
  DeviceGuard() = default;
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard() {
    if (restore_) {
      (void)cudaSetDevice(previous_);
      (void)cudaGetLastError();
    }
  }

  Status enter(int device) {
    if (device < 0)
      return Status(Code::kDevice, "expected a CUDA device ordinal >= 0 but got " + std::to_string(device));
    (void)cudaGetLastError();
    TS_CUDA_TRY(cudaGetDevice(&previous_));
    if (previous_ == device) return Status::Ok();
    const cudaError_t e = cudaSetDevice(device);
    if (e == cudaErrorInvalidDevice) {
      (void)cudaGetLastError();
      int count = 0;
      if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
      (void)cudaGetLastError();
      return Status(Code::kDevice, "expected a CUDA device in [0, " + std::to_string(count) + ") but got " +
                                       device_name(device));
    }
    TS_CUDA_TRY(e);
    restore_ = true;
    return Status::Ok();
  }

 private:
  int previous_ = 0;
  bool restore_ = false;
};

// ---- stream-ordered memory --------------------------------------------------

// Whether `device` has stream-ordered memory pools (cudaMallocAsync). Without
// them every allocation falls back to cudaMalloc/cudaFree.
inline bool memory_pools_supported(int device) {
  int v = 0;
  const cudaError_t e = cudaDeviceGetAttribute(&v, cudaDevAttrMemoryPoolsSupported, device);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return v != 0;
}

// `device` must be current.
inline Status stream_malloc(int device, size_t bytes, cudaStream_t stream, void** out) {
  *out = nullptr;
  if (bytes == 0) return Status::Ok();
  if (memory_pools_supported(device)) {
    TS_CUDA_TRY(cudaMallocAsync(out, bytes, stream));
  } else {
    TS_CUDA_TRY(cudaMalloc(out, bytes));
  }
  return Status::Ok();
}

// `device` must be current. Pairs with stream_malloc on the same device.
inline Status stream_free(int device, void* ptr, cudaStream_t stream) {
  if (ptr == nullptr) return Status::Ok();
  if (memory_pools_supported(device)) {
    TS_CUDA_TRY(cudaFreeAsync(ptr, stream));
  } else {
    TS_CUDA_TRY(cudaFree(ptr));
  }
  return Status::Ok();
}

// Sub-buffers carved out of one scratch allocation, each 256-byte aligned.
class ScratchLayout {
 public:
  template <typename T>
  size_t add(int64_t count) {
    const size_t offset = bytes_;
    const size_t n = static_cast<size_t>(count > 0 ? count : 0) * sizeof(T);
    bytes_ += (n + 255) / 256 * 256;
    return offset;
  }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_ = 0;
};

// Scratch memory of one entry point, allocated on the op's stream and freed
// (stream-ordered, after everything enqueued before) when it goes out of
// scope, on every return path. The destructor makes its own device current,
// so the order of destruction relative to a DeviceGuard does not matter (with
// the legacy stream, cudaFreeAsync(ptr, 0) orders on the *current* device).
class Scratch {
 public:
  Scratch(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (ptr_ == nullptr) return;
    DeviceGuard guard;
    if (guard.enter(device_).ok()) (void)stream_free(device_, ptr_, stream_);
    (void)cudaGetLastError();
  }

  // Call once; bytes == 0 leaves the buffer null.
  Status allocate(size_t bytes) { return stream_malloc(device_, bytes, stream_, &ptr_); }

  template <typename T>
  T* at(size_t byte_offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(ptr_) + byte_offset);
  }

 private:
  int device_;
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

// Copies a device int flag to the host. cudaMemcpyAsync into pageable memory
// returns when the copy is done; the stream synchronize makes that explicit.
inline Status read_device_flag(const int* flag, cudaStream_t stream, int* host) {
  *host = 0;
  TS_CUDA_TRY(cudaMemcpyAsync(host, flag, sizeof(int), cudaMemcpyDeviceToHost, stream));
  TS_CUDA_TRY(cudaStreamSynchronize(stream));
  return Status::Ok();
}

// Rejects grids the launch would refuse (gridDim.x <= 2^31 - 1).
inline Status check_grid_x(int64_t blocks, const char* what) {
  if (blocks < 1 || blocks > 2147483647LL)
    return Status(Code::kUnsupported, std::string(what) + ": the problem needs " + std::to_string(blocks) +
                                          " thread blocks, more than one CUDA launch can hold (2^31 - 1)");
  return Status::Ok();
}

// ---- dtype loads --------------------------------------------------------------

__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ float load_f32(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p) { return __bfloat162float(*p); }

// ---- reductions -----------------------------------------------------------------

// Butterfly reductions over aligned groups of `width` lanes (a power of two
// <= 32). Every lane of the warp must call them (full mask). Each lane of a
// group ends with the same value: a + b == b + a exactly, so the butterfly
// gives bit-identical sums in all lanes.
__device__ __forceinline__ float warp_sum(float v, int width = 32) {
  for (int o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, width);
  return v;
}
__device__ __forceinline__ double warp_sum(double v, int width = 32) {
  for (int o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, width);
  return v;
}
__device__ __forceinline__ float warp_max(float v, int width = 32) {
  for (int o = width / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o, width));
  return v;
}

// Deterministic block sum (warp butterflies, then the warps in order), in
// float or double. kBlock threads must all call it; the result is valid in
// every thread.
template <int kBlock, typename T>
__device__ __forceinline__ T block_sum(T v) {
  static_assert(kBlock % 32 == 0 && kBlock <= 1024, "block size must be a multiple of 32");
  __shared__ T partial[kBlock / 32];
  __shared__ T total;
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    T s = 0;
    for (int w = 0; w < kBlock / 32; ++w) s += partial[w];
    total = s;
  }
  __syncthreads();
  return total;
}

// Block maximum (warp butterflies, then the warps); max is exact in any
// order. kBlock threads must all call it; the result is valid in every thread.
template <int kBlock>
__device__ __forceinline__ float block_max(float v) {
  static_assert(kBlock % 32 == 0 && kBlock <= 1024, "block size must be a multiple of 32");
  __shared__ float partial[kBlock / 32];
  __shared__ float total;
  v = warp_max(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = partial[0];
    for (int w = 1; w < kBlock / 32; ++w) m = fmaxf(m, partial[w]);
    total = m;
  }
  __syncthreads();
  return total;
}

// The "last block done" ticket: every block that shares `counter` stores its
// partial results, then calls this (all threads of the block); exactly one
// block — the last of `expected` to arrive — gets true, and may then read
// every block's partials with __ldcg (L2, not a possibly stale L1). Counters
// are zeroed (cudaMemsetAsync) before the launch. The integer atomic only
// decides *which* block combines; the combination itself runs in a fixed
// order, so results do not depend on scheduling.
__device__ __forceinline__ bool last_block_arrives(unsigned int* counter, unsigned int expected) {
  __shared__ unsigned int ticket;
  __threadfence();  // this thread's partial stores are visible device-wide ...
  __syncthreads();  // ... for every thread of the block, before the ticket
  if (threadIdx.x == 0) {
    ticket = atomicAdd(counter, 1u);
    __threadfence();  // acquire: order the reads below after the ticket
  }
  __syncthreads();
  return ticket == expected - 1u;
}

// ---- keys, argmax, device status ----------------------------------------------

constexpr unsigned kFullMask = 0xffffffffu;

// The softmaxes run in base 2 (exp2f), log2(e) folded into the logit scale as
// FlashAttention does; the lse goes back to base e through ln 2. One
// definition for the attention kernels (cpu/isa.h has the CPU's).
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// The order-preserving key of a float, the one of the CUDA back end (top-k,
// token matching, k-center's atomics): for non-NaN a, b, a < b <=> key(a) <
// key(b) and a == b <=> key(a) == key(b) (-0 and +0 share one key), so
// atomicMin/atomicMax on keys are float min/max. Positives get the sign bit
// set, negatives all bits flipped. NaN is not ordered: a caller that may see
// one decides where it goes (top-k puts it below every number).
__device__ __forceinline__ uint32_t float_key(float x) {
  if (x == 0.0f) x = 0.0f;
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// The inverse of float_key.
__device__ __forceinline__ float key_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// (value, index) is better than (ov, oi): larger value, then lower index —
// the CPU loops' "first maximum".
__device__ __forceinline__ bool better(float v, int i, float ov, int oi) { return v > ov || (v == ov && i < oi); }
__device__ __forceinline__ bool better(double v, int i, double ov, int oi) { return v > ov || (v == ov && i < oi); }

// Block-wide argmax of (v, i) with better(), v a float or a double; kThreads
// threads call it, all of them get the winner. Threads with nothing to offer
// pass (-inf, INT_MAX).
template <int kThreads, typename V>
__device__ __forceinline__ void block_argmax(V& v, int& i) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size must be a multiple of 32");
  __shared__ V part_v[kThreads / 32];
  __shared__ int part_i[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    const V ov = __shfl_xor_sync(kFullMask, v, o);
    const int oi = __shfl_xor_sync(kFullMask, i, o);
    if (better(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
  if (threadIdx.x % 32 == 0) {
    part_v[threadIdx.x / 32] = v;
    part_i[threadIdx.x / 32] = i;
  }
  __syncthreads();
  v = part_v[0];
  i = part_i[0];
  for (int w = 1; w < kThreads / 32; ++w)
    if (better(part_v[w], part_i[w], v, i)) {
      v = part_v[w];
      i = part_i[w];
    }
  __syncthreads();  // the partials may be reused by the next call
}

// Data errors found on the device, read back once per entry point (the
// diversity, coverage and stc families).
struct DeviceStatus {
  int flags;        // kBadValue | kTooFew | kSeedExcluded
  int bad_token;    // lowest b·N + n holding NaN/Inf (INT_MAX: none)
  int short_unit;   // lowest unit (b·segments + s) with fewer than k tokens left (INT_MAX: none)
  int short_count;  // its token count
};
constexpr int kBadValue = 1, kTooFew = 2, kSeedExcluded = 4;

// Zeroes flags, sets the "lowest" fields to INT_MAX-ish (0x7f7f7f7f).
inline Status clear_status(DeviceStatus* st, cudaStream_t stream) {
  TS_CUDA_TRY(cudaMemsetAsync(st, 0x7f, sizeof(DeviceStatus), stream));
  TS_CUDA_TRY(cudaMemsetAsync(&st->flags, 0, sizeof(int), stream));
  return Status::Ok();
}

inline Status read_status(const DeviceStatus* st, cudaStream_t stream, DeviceStatus* host) {
  TS_CUDA_TRY(cudaMemcpyAsync(host, st, sizeof(DeviceStatus), cudaMemcpyDeviceToHost, stream));
  TS_CUDA_TRY(cudaStreamSynchronize(stream));
  return Status::Ok();
}

inline int64_t blocks_for(int64_t n, int threads) { return (n + threads - 1) / threads; }

// Rows of a strided view: an uploaded list, or the range first + i (no
// upload, so no implicit synchronisation of a pageable host-to-device copy).
struct RowMap {
  const int32_t* list;  // device; null: rows are first, first + 1, ...
  int64_t first;
  __device__ __forceinline__ int64_t operator()(int64_t sel) const { return list ? list[sel] : first + sel; }
};

constexpr int kCheckThreads = 256;

// ---- check_finite: the input scan of every family that checks device inputs ----
// Sets `bit` in *flag when an element of a strided view [n0, n1, n2, len]
// (last dim contiguous; dim 2 mapped through `rows`) is NaN or ±Inf (-Inf is
// allowed with allow_neg_inf). One warp per row, rows grid-strided.
template <typename T>
__global__ void __launch_bounds__(kCheckThreads)
    nonfinite_kernel(const T* base, int64_t n0, int64_t n1, int64_t n2, int64_t s0, int64_t s1, int64_t s2,
                     RowMap rows, int64_t len, bool allow_neg_inf, int bit, int* flag) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kCheckThreads / 32);
  const int64_t total = n0 * n1 * n2;
  bool bad = false;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (kCheckThreads / 32) + threadIdx.x / 32; r < total;
       r += warps) {
    const int64_t i2 = r % n2, t = r / n2;
    const int64_t i1 = t % n1, i0 = t / n1;
    const T* row = base + i0 * s0 + i1 * s1 + rows(i2) * s2;
    for (int64_t d = lane; d < len; d += 32) {
      const float x = load_f32(row + d);
      if (!(isfinite(x) || (allow_neg_inf && x == -INFINITY))) bad = true;
    }
  }
  if (bad) atomicOr(flag, bit);
}

template <typename T>
Status launch_nonfinite(const T* base, int64_t n0, int64_t n1, int64_t n2, int64_t s0, int64_t s1, int64_t s2,
                        RowMap rows, int64_t len, bool allow_neg_inf, int bit, int* flag, cudaStream_t stream) {
  const int64_t total = n0 * n1 * n2;
  if (total <= 0 || len <= 0) return Status::Ok();
  const int64_t per_block = kCheckThreads / 32;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + per_block - 1) / per_block, 8192));
  nonfinite_kernel<T><<<blocks, kCheckThreads, 0, stream>>>(base, n0, n1, n2, s0, s1, s2, rows, len, allow_neg_inf,
                                                             bit, flag);
  TS_CUDA_CHECK_LAUNCH("nonfinite_kernel");
  return Status::Ok();
}


}  // namespace cuda
}  // namespace tokensieve

// The one float-dtype dispatch of the CUDA back end: runs the lambda body
// with `scalar_t` bound to float, __half or __nv_bfloat16 and returns its
// Status; any other dtype fails loudly with ERR_DTYPE.
//
//   return TS_DISPATCH_FLOAT(t.dtype, "topk", [&] { kernel<scalar_t><<<...>>>(...); ... });
#define TS_DISPATCH_FLOAT(dtype, op_name, ...)                                                   \
  [&]() -> ::tokensieve::Status {                                                                \
    switch (dtype) {                                                                             \
      case ::tokensieve::DType::kF32: {                                                          \
        using scalar_t = float;                                                                  \
        return __VA_ARGS__();                                                                    \
      }                                                                                          \
      case ::tokensieve::DType::kF16: {                                                          \
        using scalar_t = __half;                                                                 \
        return __VA_ARGS__();                                                                    \
      }                                                                                          \
      case ::tokensieve::DType::kBF16: {                                                         \
        using scalar_t = __nv_bfloat16;                                                          \
        return __VA_ARGS__();                                                                    \
      }                                                                                          \
      default:                                                                                   \
        return ::tokensieve::Status(::tokensieve::Code::kDType,                                  \
                                    std::string(op_name) + ": expected f32, f16 or bf16 but got " + \
                                        ::tokensieve::dtype_name(dtype));                        \
    }                                                                                            \
  }()
