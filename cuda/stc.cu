// CUDA stc family: STC-Pruner's token scores of one chunk of video frames.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "tokensieve/stc.h"

namespace tokensieve {
namespace cuda {

// ============================================================================
// STC scores
// ============================================================================
//
// The authors' sequence (include/tokensieve/stc.h) in six launches on
// p.stream and, when the call waits (device_checks), one status read-back
// (NaN/Inf in x). The CPU back end and this
// one agree within the cross-device tolerance (README), not bit for bit: the
// sums below run in parallel orders, all in f64.
//   1. stc_channel_kernel   one thread per channel (coalesced across threads),
//      walking the F·T tokens: raw mean, two-pass variance, finite check
//      (the lowest offending token into the status).
//   2. stc_rank_kernel      one thread per channel: its place in the stable
//      ascending order of the variances, by counting (lower variance, or
//      equal and lower channel); ch[place] = c for places below Cs.
//   3. stc_memory_kernel    one block: the chunk mean out, the memory over the
//      Cs channels (by position or by channel), normalised.
//   4. stc_norm_kernel      one warp per token: 1/max(‖x on ch‖, eps).
//   5. stc_frame_mean_kernel one thread per (frame, scoring channel).
//   6. stc_score_kernel     one warp per token: both squared distances, G.

namespace {

constexpr int kStcThreads = 128;      // channel, frame-mean, norm and score blocks
constexpr int kStcWarps = kStcThreads / 32;
constexpr int kStcRankThreads = 256;  // rank and memory blocks

// G(x, μ) = Σ_{α ∈ {1/8, 1/4, 1/2, 1, 2}} exp(−d²/(2α)).
__device__ __forceinline__ double stc_g(double d2) {
  return exp(-d2 * 4.0) + exp(-d2 * 2.0) + exp(-d2) + exp(-d2 * 0.5) + exp(-d2 * 0.25);
}

// x [F, T, C] (element strides s0, s1, 1). mean, var [C] (var unscaled: only ranked).
template <typename T>
__global__ void __launch_bounds__(kStcThreads)
    stc_channel_kernel(const T* __restrict__ x, int64_t s0, int64_t s1, int64_t F, int64_t Tn, int64_t C,
                       double* __restrict__ mean, double* __restrict__ var, DeviceStatus* st) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double raw = 0.0;
  int64_t first_bad = -1;
  for (int64_t f = 0; f < F; ++f)
    for (int64_t t = 0; t < Tn; ++t) {
      const double v = static_cast<double>(load_f32(x + f * s0 + t * s1 + c));
      if (!isfinite(v) && first_bad < 0) first_bad = f * Tn + t;
      raw += v;
    }
  if (first_bad >= 0) {
    atomicOr(&st->flags, kBadValue);
    atomicMin(&st->bad_token, static_cast<int>(first_bad));
  }
  const double m = raw / static_cast<double>(F * Tn);
  double v2 = 0.0;
  for (int64_t f = 0; f < F; ++f)
    for (int64_t t = 0; t < Tn; ++t) {
      const double d = static_cast<double>(load_f32(x + f * s0 + t * s1 + c)) - m;
      v2 += d * d;
    }
  mean[c] = m;
  var[c] = v2;
}

// ch [Cs] (zero-filled before): the scoring channels in ascending-variance
// order, ties to the lower channel (std::stable_sort's order). Finite
// variances give a permutation of places; NaN ones (an error, reported) may
// leave holes, which stay channel 0 so no later kernel reads outside x. The
// variances stream through shared memory in tiles; every thread of the block
// takes part in every barrier.
__global__ void __launch_bounds__(kStcRankThreads)
    stc_rank_kernel(const double* __restrict__ var, int64_t C, int64_t Cs, int* __restrict__ ch) {
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
  if (c < C && place < Cs) ch[place] = static_cast<int>(c);
}

// One block. chunk_mean f32 [Cs] (authors) or [C] (aligned); msum likewise or
// null; memory [Cs] out, normalised; channels i32 [Cs] or null.
__global__ void __launch_bounds__(kStcRankThreads)
    stc_memory_kernel(const double* __restrict__ mean, const int* __restrict__ ch, int64_t C, int64_t Cs,
                      bool aligned, const float* __restrict__ msum, double count1, double* __restrict__ memory,
                      float* __restrict__ chunk_mean, int* __restrict__ channels) {
  double ss = 0.0;
  for (int64_t j = threadIdx.x; j < Cs; j += kStcRankThreads) {
    const int c = ch[j];
    const int64_t slot = aligned ? c : j;
    const double m = ((msum != nullptr ? static_cast<double>(msum[slot]) : 0.0) + mean[c]) / count1;
    memory[j] = m;
    ss += m * m;
    if (!aligned) chunk_mean[j] = static_cast<float>(mean[c]);
    if (channels != nullptr) channels[j] = c;
  }
  if (aligned)
    for (int64_t c = threadIdx.x; c < C; c += kStcRankThreads) chunk_mean[c] = static_cast<float>(mean[c]);
  const double inv = 1.0 / fmax(sqrt(block_sum<kStcRankThreads>(ss)), kStcNormEps);
  for (int64_t j = threadIdx.x; j < Cs; j += kStcRankThreads) memory[j] *= inv;
}

// One warp per token i = f·T + t; inv [F·T] = 1/max(‖x on ch‖, eps).
template <typename T>
__global__ void __launch_bounds__(kStcThreads)
    stc_norm_kernel(const T* __restrict__ x, int64_t s0, int64_t s1, int64_t Tn, int64_t M, int64_t Cs,
                    const int* __restrict__ ch, double* __restrict__ inv) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kStcWarps) + threadIdx.x / 32;
  if (i >= M) return;  // whole warps leave together
  const T* row = x + (i / Tn) * s0 + (i % Tn) * s1;
  double ss = 0.0;
  for (int64_t j = threadIdx.x % 32; j < Cs; j += 32) {
    const double v = static_cast<double>(load_f32(row + ch[j]));
    ss += v * v;
  }
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) inv[i] = 1.0 / fmax(sqrt(ss), kStcNormEps);
}

// grid [F × jblocks]; fmean [F, Cs]: the frame means of x̂.
template <typename T>
__global__ void __launch_bounds__(kStcThreads)
    stc_frame_mean_kernel(const T* __restrict__ x, int64_t s0, int64_t s1, int64_t Tn, int64_t Cs,
                          const int* __restrict__ ch, const double* __restrict__ inv, double* __restrict__ fmean,
                          int64_t jblocks) {
  const int64_t f = blockIdx.x / jblocks;
  const int64_t j = (blockIdx.x % jblocks) * static_cast<int64_t>(kStcThreads) + threadIdx.x;
  if (j >= Cs) return;
  const T* col = x + f * s0 + ch[j];
  double s = 0.0;
  for (int64_t t = 0; t < Tn; ++t) s += static_cast<double>(load_f32(col + t * s1)) * inv[f * Tn + t];
  fmean[f * Cs + j] = s / static_cast<double>(Tn);
}

// One warp per token; scores f32 [F, T].
template <typename T>
__global__ void __launch_bounds__(kStcThreads)
    stc_score_kernel(const T* __restrict__ x, int64_t s0, int64_t s1, int64_t Tn, int64_t M, int64_t Cs,
                     const int* __restrict__ ch, const double* __restrict__ inv, const double* __restrict__ fmean,
                     const double* __restrict__ memory, float* __restrict__ scores) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kStcWarps) + threadIdx.x / 32;
  if (i >= M) return;
  const int64_t f = i / Tn;
  const T* row = x + f * s0 + (i % Tn) * s1;
  const double iv = inv[i];
  const double* fm = fmean + f * Cs;
  double df = 0.0, dm = 0.0;
  for (int64_t j = threadIdx.x % 32; j < Cs; j += 32) {
    const double v = static_cast<double>(load_f32(row + ch[j])) * iv;
    df += (v - fm[j]) * (v - fm[j]);
    dm += (v - memory[j]) * (v - memory[j]);
  }
  df = warp_sum(df);
  dm = warp_sum(dm);
  if (threadIdx.x % 32 == 0) scores[i] = static_cast<float>(stc_g(df) + stc_g(dm));
}

}  // namespace

Status stc_scores(const StcScoresParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const int64_t F = p.x.shape[0], T = p.x.shape[1], C = p.x.shape[2], M = F * T, Cs = stc_scoring_channels(C);
  // The status record names the offending token as an int (below its
  // 0x7f7f7f7f "none" value).
  if (M >= 0x7f7f7f7f)
    return Status(Code::kUnsupported, "stcScores: F·T = " + std::to_string(M) +
                                          " tokens is more than the 2139062142 the CUDA kernels index");
  const int64_t token_blocks = blocks_for(M, kStcWarps), jblocks = blocks_for(Cs, kStcThreads);
  TS_RETURN_IF_ERROR(check_grid_x(token_blocks, "stcScores"));
  TS_RETURN_IF_ERROR(check_grid_x(blocks_for(C, kStcRankThreads), "stcScores"));
  TS_RETURN_IF_ERROR(check_grid_x(F * jblocks, "stcScores"));
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  ScratchLayout L;
  const size_t o_status = L.add<DeviceStatus>(1);
  const size_t o_mean = L.add<double>(C);       // [C] raw channel means
  const size_t o_var = L.add<double>(C);        // [C] raw Σ(x − mean)²
  const size_t o_ch = L.add<int>(Cs);           // [Cs] scoring channels, ascending variance
  const size_t o_memory = L.add<double>(Cs);    // [Cs] normalised memory
  const size_t o_inv = L.add<double>(M);        // [F·T] 1/‖x on ch‖
  const size_t o_fmean = L.add<double>(F * Cs); // [F, Cs] frame means of x̂
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  DeviceStatus* st = scratch.at<DeviceStatus>(o_status);
  double* mean = scratch.at<double>(o_mean);
  double* var = scratch.at<double>(o_var);
  int* ch = scratch.at<int>(o_ch);
  double* memory = scratch.at<double>(o_memory);
  double* inv = scratch.at<double>(o_inv);
  double* fmean = scratch.at<double>(o_fmean);
  TS_RETURN_IF_ERROR(clear_status(st, stream));
  TS_CUDA_TRY(cudaMemsetAsync(ch, 0, static_cast<size_t>(Cs) * sizeof(int), stream));
  const int64_t s0 = p.x.strides[0], s1 = p.x.strides[1];
  const bool aligned = p.memory_mode == StcMemory::kAligned;
  const float* msum = p.memory_sum.data != nullptr ? p.memory_sum.ptr<const float>() : nullptr;
  int* channels = p.channels.data != nullptr ? p.channels.ptr<int>() : nullptr;
  const double count1 = static_cast<double>(p.memory_count + 1);
  TS_RETURN_IF_ERROR(TS_DISPATCH_FLOAT(p.x.dtype, "stcScores", [&] {
    const scalar_t* x = static_cast<const scalar_t*>(p.x.data);
    stc_channel_kernel<scalar_t><<<static_cast<unsigned>(blocks_for(C, kStcThreads)), kStcThreads, 0, stream>>>(
        x, s0, s1, F, T, C, mean, var, st);
    TS_CUDA_CHECK_LAUNCH("stc_channel_kernel");
    stc_rank_kernel<<<static_cast<unsigned>(blocks_for(C, kStcRankThreads)), kStcRankThreads, 0, stream>>>(
        var, C, Cs, ch);
    TS_CUDA_CHECK_LAUNCH("stc_rank_kernel");
    stc_memory_kernel<<<1, kStcRankThreads, 0, stream>>>(mean, ch, C, Cs, aligned, msum, count1, memory,
                                                         p.chunk_mean.ptr<float>(), channels);
    TS_CUDA_CHECK_LAUNCH("stc_memory_kernel");
    stc_norm_kernel<scalar_t><<<static_cast<unsigned>(token_blocks), kStcThreads, 0, stream>>>(
        x, s0, s1, T, M, Cs, ch, inv);
    TS_CUDA_CHECK_LAUNCH("stc_norm_kernel");
    stc_frame_mean_kernel<scalar_t><<<static_cast<unsigned>(F * jblocks), kStcThreads, 0, stream>>>(
        x, s0, s1, T, Cs, ch, inv, fmean, jblocks);
    TS_CUDA_CHECK_LAUNCH("stc_frame_mean_kernel");
    stc_score_kernel<scalar_t><<<static_cast<unsigned>(token_blocks), kStcThreads, 0, stream>>>(
        x, s0, s1, T, M, Cs, ch, inv, fmean, memory, p.scores.ptr<float>());
    TS_CUDA_CHECK_LAUNCH("stc_score_kernel");
    return Status::Ok();
  }));
  if (!p.device_checks) return Status::Ok();  // the caller does not wait: no read-back (see stc.h)
  DeviceStatus host;
  TS_RETURN_IF_ERROR(read_status(st, stream, &host));
  if (host.flags & kBadValue)
    return Status(Code::kRange, "expected finite features but x[" + std::to_string(host.bad_token / T) + ", " +
                                    std::to_string(host.bad_token % T) + "] holds NaN or Inf");
  return Status::Ok();
}

}  // namespace cuda
}  // namespace tokensieve
