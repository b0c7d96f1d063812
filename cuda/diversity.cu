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
//
// cpu::stc_scores, step for step, in five launches on p.stream and one status
// read-back (NaN/Inf in x):
//   1. stc_norm_kernel     one thread per token i = f·T + t: the finite check
//      (lowest offending i into the status) and inv[i] = f32(1/√ss), ss the
//      f64 sum of squares in channel order. x̂ = x·inv is never stored: every
//      later kernel recomputes it with the same f32 multiply, so it is the
//      same bits everywhere and x is read in its own (possibly 2-byte) dtype.
//   2. stc_channel_kernel  one thread per channel (coalesced across threads),
//      walking the F·T tokens in token order: pass 1 sums the raw values, x̂
//      (chunk mean) and x̂ per frame (frame means), pass 2 the raw two-pass
//      variance. Writes chunk_mean and memory = (memory_sum + chunk mean) /
//      (count + 1) for every channel.
//   3. stc_rank_kernel     one thread per channel: its place in the stable
//      ascending order of the variances, by counting (lower variance, or
//      equal and lower channel); kept iff place < Cs — std::stable_sort's
//      choice, ties to the lower channel.
//   4. stc_compact_kernel  one block: the kept channels, ascending (ballot scan).
//   5. stc_score_kernel    one thread per token, each block inside one frame:
//      ‖x̂ − frame mean‖² and ‖x̂ − memory‖² over the kept channels in
//      ascending order (f64), G of each, the f32 score.
// The f64 sums are sequential — float64 addition is not associative, and
// matching the CPU's bits means matching its order — so parallelism is
// across tokens or channels, never inside one sum. Every product and sum
// uses the explicitly rounded intrinsics: nvcc would otherwise contract
// d·d + acc into an FMA where the CPU (baseline x86-64) rounds twice.

namespace {

constexpr int kStcThreads = 128;      // norm, channel and score blocks
constexpr int kStcRankThreads = 256;  // rank and compact blocks
constexpr int kStcTile = 128;         // kept channels staged per shared-memory tile

// G(x, μ) = Σ_{α ∈ {1/8, 1/4, 1/2, 1, 2}} exp(−d²/(2α)), in that order (2α is
// exact, so −d²/(2α) is the CPU's quotient). CUDA's f64 exp is within 1 ulp
// of glibc's, the only step that may differ from the CPU.
__device__ __forceinline__ double stc_g(double d2) {
  double g = 0.0;
  g = __dadd_rn(g, exp(__ddiv_rn(-d2, 0.25)));
  g = __dadd_rn(g, exp(__ddiv_rn(-d2, 0.5)));
  g = __dadd_rn(g, exp(__ddiv_rn(-d2, 1.0)));
  g = __dadd_rn(g, exp(__ddiv_rn(-d2, 2.0)));
  g = __dadd_rn(g, exp(__ddiv_rn(-d2, 4.0)));
  return g;
}

// x [F, T, C] (element strides s0, s1, 1); inv [F·T]. An all-zero token gets
// inv = 0 (and stays zero); NaN/Inf give inv = 0 too, and are reported.
template <typename T>
__global__ void __launch_bounds__(kStcThreads)
    stc_norm_kernel(const T* __restrict__ x, int64_t s0, int64_t s1, int64_t Tn, int64_t M, int64_t C,
                    float* __restrict__ inv, DeviceStatus* st) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= M) return;
  const T* row = x + (i / Tn) * s0 + (i % Tn) * s1;
  double ss = 0.0;
  bool finite = true;
  for (int64_t c = 0; c < C; ++c) {
    const double v = static_cast<double>(load_f32(row + c));
    finite = finite && isfinite(v);
    ss = __dadd_rn(ss, __dmul_rn(v, v));
  }
  if (!finite) {
    atomicOr(&st->flags, kBadValue);
    atomicMin(&st->bad_token, static_cast<int>(i));
  }
  inv[i] = ss > 0.0 ? static_cast<float>(__ddiv_rn(1.0, __dsqrt_rn(ss))) : 0.0f;
}

// One thread per channel c. var [C]: Σ (x − mean)², unscaled (only ranked);
// fmean [F, C]: per-frame mean of x̂; memory [C]; chunk_mean f32 [C].
// msum f32 [C] or null; count1 = memory_count + 1.
template <typename T>
__global__ void __launch_bounds__(kStcThreads)
    stc_channel_kernel(const T* __restrict__ x, int64_t s0, int64_t s1, int64_t F, int64_t Tn, int64_t C,
                       const float* __restrict__ inv, const float* __restrict__ msum, double count1,
                       double* __restrict__ var, double* __restrict__ fmean, double* __restrict__ memory,
                       float* __restrict__ chunk_mean) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const double M = static_cast<double>(F * Tn);
  double raw = 0.0, nsum = 0.0;
  for (int64_t f = 0; f < F; ++f) {
    double fs = 0.0;
    for (int64_t t = 0; t < Tn; ++t) {
      const float v = load_f32(x + f * s0 + t * s1 + c);
      raw = __dadd_rn(raw, static_cast<double>(v));
      const double xn = static_cast<double>(__fmul_rn(v, inv[f * Tn + t]));
      nsum = __dadd_rn(nsum, xn);
      fs = __dadd_rn(fs, xn);
    }
    fmean[f * C + c] = __ddiv_rn(fs, static_cast<double>(Tn));
  }
  const double mean = __ddiv_rn(raw, M);
  double v2 = 0.0;
  for (int64_t f = 0; f < F; ++f)
    for (int64_t t = 0; t < Tn; ++t) {
      const double d = __dsub_rn(static_cast<double>(load_f32(x + f * s0 + t * s1 + c)), mean);
      v2 = __dadd_rn(v2, __dmul_rn(d, d));
    }
  var[c] = v2;
  const double cm = __ddiv_rn(nsum, M);
  chunk_mean[c] = static_cast<float>(cm);
  memory[c] = __ddiv_rn(__dadd_rn(msum != nullptr ? static_cast<double>(msum[c]) : 0.0, cm), count1);
}

// keep [C]: 1 iff channel c is among the Cs of lowest variance (stable order).
// The variances stream through shared memory in tiles; every thread of the
// block takes part in every barrier.
__global__ void __launch_bounds__(kStcRankThreads)
    stc_rank_kernel(const double* __restrict__ var, int64_t C, int64_t Cs, int* __restrict__ keep) {
  __shared__ double tile[kStcRankThreads];
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const double vc = c < C ? var[c] : 0.0;
  int64_t place = 0;
  for (int64_t base = 0; base < C; base += kStcRankThreads) {
    const int64_t o = base + threadIdx.x;
    tile[threadIdx.x] = o < C ? var[o] : 0.0;
    __syncthreads();
    const int n = static_cast<int>(C - base < kStcRankThreads ? C - base : kStcRankThreads);
    for (int k = 0; k < n; ++k) {
      const double w = tile[k];
      place += (w < vc || (w == vc && base + k < c)) ? 1 : 0;
    }
    __syncthreads();
  }
  if (c < C) keep[c] = place < Cs ? 1 : 0;
}

// One block: ch [Cs] = the kept channels in ascending order. Finite
// variances keep exactly Cs channels (the places are a permutation); NaN ones
// (non-finite x, reported as an error) can keep more, so writes stop at Cs,
// and the list is padded with channel 0 should it ever come out short — the
// score kernel never reads outside x.
__global__ void __launch_bounds__(kStcRankThreads)
    stc_compact_kernel(const int* __restrict__ keep, int64_t C, int64_t Cs, int* __restrict__ ch) {
  constexpr int kWarps = kStcRankThreads / 32;
  __shared__ int warp_count[kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int64_t before = 0;  // kept channels in earlier tiles
  for (int64_t base = 0; base < C; base += kStcRankThreads) {
    const int64_t c = base + threadIdx.x;
    const bool kept = c < C && keep[c] != 0;
    const unsigned ballot = __ballot_sync(kFullMask, kept);
    if (lane == 0) warp_count[warp] = __popc(ballot);
    __syncthreads();
    int64_t pos = before + __popc(ballot & ((1u << lane) - 1u));
    int64_t tile_count = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) pos += warp_count[w];
      tile_count += warp_count[w];
    }
    if (kept && pos < Cs) ch[pos] = static_cast<int>(c);
    before += tile_count;
    __syncthreads();  // warp_count is rewritten by the next tile
  }
  for (int64_t j = before + threadIdx.x; j < Cs; j += kStcRankThreads) ch[j] = 0;
}

// grid: [F × tblocks]; scores f32 [F, T]. ch [Cs], fmean [F, C], memory [C].
template <typename T>
__global__ void __launch_bounds__(kStcThreads)
    stc_score_kernel(const T* __restrict__ x, int64_t s0, int64_t s1, int64_t Tn, int64_t C, int64_t Cs,
                     const float* __restrict__ inv, const int* __restrict__ ch, const double* __restrict__ fmean,
                     const double* __restrict__ memory, float* __restrict__ scores, int64_t tblocks) {
  __shared__ int tile_ch[kStcTile];
  __shared__ double tile_fmean[kStcTile];
  __shared__ double tile_memory[kStcTile];
  const int64_t f = blockIdx.x / tblocks;
  const int64_t t = (blockIdx.x % tblocks) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const bool active = t < Tn;  // inactive threads still reach every barrier
  const T* row = x + f * s0 + (active ? t : 0) * s1;
  const float iv = active ? inv[f * Tn + t] : 0.0f;
  double df = 0.0, dm = 0.0;
  for (int64_t j0 = 0; j0 < Cs; j0 += kStcTile) {
    const int n = static_cast<int>(Cs - j0 < kStcTile ? Cs - j0 : kStcTile);
    for (int k = threadIdx.x; k < n; k += kStcThreads) {
      const int c = ch[j0 + k];
      tile_ch[k] = c;
      tile_fmean[k] = fmean[f * C + c];
      tile_memory[k] = memory[c];
    }
    __syncthreads();
    if (active) {
      for (int k = 0; k < n; ++k) {
        const double v = static_cast<double>(__fmul_rn(load_f32(row + tile_ch[k]), iv));
        const double a = __dsub_rn(v, tile_fmean[k]);
        df = __dadd_rn(df, __dmul_rn(a, a));
        const double b = __dsub_rn(v, tile_memory[k]);
        dm = __dadd_rn(dm, __dmul_rn(b, b));
      }
    }
    __syncthreads();  // the tile is refilled next
  }
  if (active) scores[f * Tn + t] = static_cast<float>(__dadd_rn(stc_g(df), stc_g(dm)));
}

}  // namespace

Status stc_scores(const StcScoresParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const int64_t F = p.x.shape[0], T = p.x.shape[1], C = p.x.shape[2], M = F * T;
  const int64_t Cs = C / 2 > 1 ? C / 2 : 1;
  // The status record names the offending token as an int (below its
  // 0x7f7f7f7f "none" value).
  if (M >= 0x7f7f7f7f)
    return Status(Code::kUnsupported, "stcScores: F·T = " + std::to_string(M) +
                                          " tokens is more than the 2139062142 the CUDA kernels index");
  const int64_t tblocks = blocks_for(T, kStcThreads);
  TS_RETURN_IF_ERROR(check_grid_x(blocks_for(M, kStcThreads), "stcScores"));
  TS_RETURN_IF_ERROR(check_grid_x(blocks_for(C, kStcRankThreads), "stcScores"));
  TS_RETURN_IF_ERROR(check_grid_x(F * tblocks, "stcScores"));
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  ScratchLayout L;
  const size_t o_status = L.add<DeviceStatus>(1);
  const size_t o_inv = L.add<float>(M);        // [F·T] 1/‖x‖ per token
  const size_t o_var = L.add<double>(C);       // [C] raw Σ(x − mean)²
  const size_t o_fmean = L.add<double>(F * C); // [F, C] frame means of x̂
  const size_t o_memory = L.add<double>(C);    // [C] memory mean
  const size_t o_keep = L.add<int>(C);         // [C] kept-channel flags
  const size_t o_ch = L.add<int>(Cs);          // [Cs] kept channels, ascending
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  DeviceStatus* st = scratch.at<DeviceStatus>(o_status);
  float* inv = scratch.at<float>(o_inv);
  double* var = scratch.at<double>(o_var);
  double* fmean = scratch.at<double>(o_fmean);
  double* memory = scratch.at<double>(o_memory);
  int* keep = scratch.at<int>(o_keep);
  int* ch = scratch.at<int>(o_ch);
  TS_RETURN_IF_ERROR(clear_status(st, stream));
  const int64_t s0 = p.x.strides[0], s1 = p.x.strides[1];
  const float* msum = p.memory_sum.data != nullptr ? p.memory_sum.ptr<const float>() : nullptr;
  const double count1 = static_cast<double>(p.memory_count + 1);
  TS_RETURN_IF_ERROR(TS_DISPATCH_FLOAT(p.x.dtype, "stcScores", [&] {
    const scalar_t* x = static_cast<const scalar_t*>(p.x.data);
    stc_norm_kernel<scalar_t><<<static_cast<unsigned>(blocks_for(M, kStcThreads)), kStcThreads, 0, stream>>>(
        x, s0, s1, T, M, C, inv, st);
    TS_CUDA_CHECK_LAUNCH("stc_norm_kernel");
    stc_channel_kernel<scalar_t><<<static_cast<unsigned>(blocks_for(C, kStcThreads)), kStcThreads, 0, stream>>>(
        x, s0, s1, F, T, C, inv, msum, count1, var, fmean, memory, p.chunk_mean.ptr<float>());
    TS_CUDA_CHECK_LAUNCH("stc_channel_kernel");
    stc_rank_kernel<<<static_cast<unsigned>(blocks_for(C, kStcRankThreads)), kStcRankThreads, 0, stream>>>(
        var, C, Cs, keep);
    TS_CUDA_CHECK_LAUNCH("stc_rank_kernel");
    stc_compact_kernel<<<1, kStcRankThreads, 0, stream>>>(keep, C, Cs, ch);
    TS_CUDA_CHECK_LAUNCH("stc_compact_kernel");
    stc_score_kernel<scalar_t><<<static_cast<unsigned>(F * tblocks), kStcThreads, 0, stream>>>(
        x, s0, s1, T, C, Cs, inv, ch, fmean, memory, p.scores.ptr<float>(), tblocks);
    TS_CUDA_CHECK_LAUNCH("stc_score_kernel");
    return Status::Ok();
  }));
  DeviceStatus host;
  TS_RETURN_IF_ERROR(read_status(st, stream, &host));
  if (host.flags & kBadValue)
    return Status(Code::kRange, "expected finite features but x[" + std::to_string(host.bad_token / T) + ", " +
                                    std::to_string(host.bad_token % T) + "] holds NaN or Inf");
  return Status::Ok();
}

}  // namespace cuda
}  // namespace tokensieve
