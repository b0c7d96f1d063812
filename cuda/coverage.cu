// CUDA coverage family: MMTok's coverage matrix and greedy maximum coverage.
// The matrix's rows come from launch_prep and its logits from tile_dots
// (cuda/features.cuh, shared with the diversity family).
//
// A call that waits (check_errors) ends by reading back one small status
// record (NaN/Inf input, too few columns left by `exclude`); one that does
// not wait reads nothing back.
//
// Sections: MMTok coverage · maximum coverage.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "cuda/features.cuh"
#include "tokensieve/coverage.h"

namespace tokensieve {
namespace cuda {

// ============================================================================
// MMTok coverage
// ============================================================================
//
// [P; α·Q] into `out` [B, m + n, n]: the rows are L2-normalised with a 1e-8
// clamp by prep_kernel, the logits come from tile_dots (text × vision over D,
// vision-aux × vision-aux over D') straight into the output rows, and one
// block per row turns them into its softmax scaled by 1/m (text) or α/n
// (vision). The exp is CUDA's expf and the sums run in a tree, so values
// agree with the CPU's to a few ulps, not bit for bit (the CPU uses its own
// vector exp).
namespace {

constexpr int kSoftmaxThreads = 256;

struct LogitParams {
  const float* a;  // [B, Ma, D] normalised rows
  const float* b;  // [B, Nb, D]
  int64_t Ma, Nb, D;
  int64_t tiles_i, tiles_j;
  float* out;            // [B, m + n, n]
  int64_t batch_stride;  // (m + n) · n
  int64_t row0;          // output row of a's row 0
};

__global__ void __launch_bounds__(kGemmThreads) logits_kernel(const LogitParams p) {
  __shared__ const float* a_rows[kTile];
  __shared__ const float* b_rows[kTile];
  const int64_t per_batch = p.tiles_i * p.tiles_j;
  const int64_t bb = blockIdx.x / per_batch, I = (blockIdx.x % per_batch) / p.tiles_j, J = blockIdx.x % p.tiles_j;
  if (threadIdx.x < 2 * kTile) {
    const int r = threadIdx.x % kTile;
    if (threadIdx.x < kTile) {
      const int64_t i = I * kTile + r;
      a_rows[r] = i < p.Ma ? p.a + (bb * p.Ma + i) * p.D : nullptr;
    } else {
      const int64_t j = J * kTile + r;
      b_rows[r] = j < p.Nb ? p.b + (bb * p.Nb + j) * p.D : nullptr;
    }
  }
  __syncthreads();
  float acc[4][4];
  tile_dots(a_rows, b_rows, p.D, acc);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (int r = 0; r < 4; ++r) {
    const int64_t i = I * kTile + ty + 16 * r;
    for (int c = 0; c < 4; ++c) {
      const int64_t j = J * kTile + tx + 16 * c;
      if (i < p.Ma && j < p.Nb) p.out[bb * p.batch_stride + (p.row0 + i) * p.Nb + j] = acc[r][c];
    }
  }
}

Status launch_logits(const float* a, int64_t Ma, const float* b, int64_t Nb, int64_t D, int64_t B, float* out,
                     int64_t batch_stride, int64_t row0, cudaStream_t stream) {
  LogitParams lp;
  lp.a = a;
  lp.b = b;
  lp.Ma = Ma;
  lp.Nb = Nb;
  lp.D = D;
  lp.tiles_i = blocks_for(Ma, kTile);
  lp.tiles_j = blocks_for(Nb, kTile);
  lp.out = out;
  lp.batch_stride = batch_stride;
  lp.row0 = row0;
  const int64_t blocks = B * lp.tiles_i * lp.tiles_j;
  TS_RETURN_IF_ERROR(check_grid_x(blocks, "mmtokCoverage"));
  logits_kernel<<<static_cast<unsigned>(blocks), kGemmThreads, 0, stream>>>(lp);
  TS_CUDA_CHECK_LAUNCH("logits_kernel");
  return Status::Ok();
}

// One block per output row: softmax(logits / τ) · (1/m or α/n), in place.
__global__ void __launch_bounds__(kSoftmaxThreads)
    coverage_softmax_kernel(float* out, int64_t m, int64_t n, float inv_tau_tv, float inv_tau_vv, double alpha) {
  const int64_t r = blockIdx.x % (m + n);
  float* row = out + static_cast<int64_t>(blockIdx.x) * n;
  const bool text = r < m;
  const float inv_tau = text ? inv_tau_tv : inv_tau_vv;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += kSoftmaxThreads) {
    const float v = __fmul_rn(row[j], inv_tau);
    row[j] = v;
    mx = fmaxf(mx, v);
  }
  mx = block_max<kSoftmaxThreads>(mx);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += kSoftmaxThreads) {
    const float e = expf(__fsub_rn(row[j], mx));
    row[j] = e;
    sum = __fadd_rn(sum, e);
  }
  sum = block_sum<kSoftmaxThreads>(sum);
  const float scale = static_cast<float>((text ? 1.0 / static_cast<double>(m) : alpha / static_cast<double>(n)) /
                                         static_cast<double>(sum));
  for (int64_t j = threadIdx.x; j < n; j += kSoftmaxThreads) row[j] = __fmul_rn(row[j], scale);
}

}  // namespace

Status mmtok_coverage(const MmtokCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.vision, "vision"));
  const int64_t B = p.vision.shape[0], n = p.vision.shape[1], m = p.text.shape[1], D = p.vision.shape[2];
  const bool aux = p.vision_aux.data != nullptr;
  const int64_t Da = aux ? p.vision_aux.shape[2] : D;
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.vision.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  ScratchLayout L;
  const size_t o_text = L.add<float>(B * m * D);             // [B, m, D]
  const size_t o_vision = L.add<float>(B * n * D);           // [B, n, D]
  const size_t o_aux = L.add<float>(aux ? B * n * Da : 0);   // [B, n, D']
  const size_t o_status = L.add<DeviceStatus>(3);            // text, vision, visionAux
  Scratch scratch(p.vision.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  DeviceStatus* st = scratch.at<DeviceStatus>(o_status);
  for (int i = 0; i < 3; ++i) TS_RETURN_IF_ERROR(clear_status(st + i, stream));
  float* z = scratch.at<float>(o_text);
  float* v = scratch.at<float>(o_vision);
  float* a = aux ? scratch.at<float>(o_aux) : v;
  constexpr double kEps = 1e-8;  // MMTok's F.normalize clamp
  TS_RETURN_IF_ERROR(launch_prep(p.text, nullptr, true, kEps, z, nullptr, nullptr, st, stream));
  TS_RETURN_IF_ERROR(launch_prep(p.vision, nullptr, true, kEps, v, nullptr, nullptr, st + 1, stream));
  if (aux) TS_RETURN_IF_ERROR(launch_prep(p.vision_aux, nullptr, true, kEps, a, nullptr, nullptr, st + 2, stream));
  float* out = p.out.ptr<float>();  // [B, m + n, n]
  TS_RETURN_IF_ERROR(launch_logits(z, m, v, n, D, B, out, (m + n) * n, 0, stream));
  TS_RETURN_IF_ERROR(launch_logits(a, n, a, n, Da, B, out, (m + n) * n, m, stream));
  TS_RETURN_IF_ERROR(check_grid_x(B * (m + n), "mmtokCoverage"));
  coverage_softmax_kernel<<<static_cast<unsigned>(B * (m + n)), kSoftmaxThreads, 0, stream>>>(
      out, m, n, static_cast<float>(1.0 / p.tau_tv), static_cast<float>(1.0 / p.tau_vv), p.alpha);
  TS_CUDA_CHECK_LAUNCH("coverage_softmax_kernel");
  // The NaN/Inf flags live on the device: reading them drains the stream, so
  // only a call that waits (check_errors) does; the rest stays stream-ordered.
  if (!p.check_errors) return Status::Ok();
  DeviceStatus hs[3];
  TS_CUDA_TRY(cudaMemcpyAsync(hs, st, sizeof(hs), cudaMemcpyDeviceToHost, stream));  // one copy, not three
  TS_CUDA_TRY(cudaStreamSynchronize(stream));
  const char* names[3] = {"text", "vision", "visionAux"};
  const int64_t rows[3] = {m, n, n};
  for (int i = 0; i < 3; ++i)
    if (hs[i].flags & kBadValue)
      return Status(Code::kRange, std::string("expected finite ") + names[i] + " but row " +
                                      std::to_string(hs[i].bad_token % rows[i]) + " of batch " +
                                      std::to_string(hs[i].bad_token / rows[i]) + " holds NaN or Inf");
  return Status::Ok();
}

// ============================================================================
// Maximum coverage
// ============================================================================
//
// Greedy maximum coverage, bit for bit the CPU's (cpu/coverage.cc): best = 0;
// every column's gain_j = Σ_r max(0, C[r, j] − best[r]) is kept in f64 and
// updated, not recomputed; pick the argmax (ties to the lower j, never a
// picked or excluded column), gains[t] = float(gain); the pick p raises
// best[r] to C[r, p] in the rows where C[r, p] > best[r], and there each
// column's gain drops by min(max(double(C[r, j]) − old, 0), double(C[r, p])
// − old), the raised rows in ascending r: the CPU's operations (no multiply,
// so no FMA contraction) in the CPU's order. Each column also counts its
// positive terms (rows with C[r, j] > best[r], in f32 comparisons); where
// none is left its gain is set to exactly 0, as on the CPU, so fully covered
// columns tie exactly. Three kernels, all on p.stream:
//   1. coverage_transpose_kernel: [B, R, N] (any dtype, strided B and R) →
//      scratch [B, N, Rp] f32 (Rp = R rounded up to 4), through a 32×32
//      shared tile so both the reads and the writes are coalesced: each
//      step reads its pick's column from it. It also records the lowest
//      non-finite (batch, row) and which batch rows hold one.
//   2. coverage_initial_gains_kernel: one thread per (batch, column): the
//      step-0 gains (best = 0: every row, terms min(max(double(c) − 0, 0),
//      +inf) added in ascending r), read from the input in its layout
//      (coalesced along N), spread over the whole GPU.
//   3. coverage_greedy_kernel: ONE persistent block per batch row runs all k
//      steps, no launch per step:
//      - Column j belongs to thread j % kCovThreads, which alone updates its
//        gain and state and keeps the best of its live columns (gain desc,
//        index asc) in registers; block_argmax over those tops is the pick.
//      - The rows in chunks of kCovThreads: thread i compares row r0 + i of
//        the pick's column with best[r] and, when raised, writes (r, old
//        best, increase) to the chunk's list in ascending r (warp ballots);
//        then every thread applies the list to its live columns, reading
//        C[r, j] from the input (coalesced along N). On MMTok's softmax
//        coverage ~7% of the rows are raised per step.
//      At the end the picked marks, scanned in ascending j with warp ballots,
//      give `sorted`.
// Limits (one code path, the state's storage changes): the gains live in
// global scratch [B, N] f64 (each thread's own columns, through L1/L2); up to
// kCovSharedCols (4,096) columns their picked/excluded marks live in shared
// memory, above it in global scratch [B, N]; up to kCovSharedRows (2,048)
// rows best[] lives in shared memory, above it in global scratch [B, Rp].
// N < 2^31 and B·R < 2^31 (the device status keys a bad row as b·R + r);
// beyond those ERR_UNSUPPORTED. The transposed copy costs 4·B·N·Rp bytes of
// scratch. Errors: NaN/Inf → ERR_RANGE naming the lowest (batch, row), as
// the CPU (which scans batch by batch, row by row); fewer than k columns left
// by `exclude` → ERR_RANGE for the lowest such batch row; a batch row's
// NaN/Inf wins over its own and any later row's shortage, as in the CPU's
// order.

namespace {

constexpr int kCovThreads = 256;     // greedy block and initial-gain block size
constexpr int kCovTile = 32;         // transpose tile (32 × 32, 8 rows of threads)
constexpr int64_t kCovSharedCols = 4096;  // columns whose marks fit in shared memory (16 KiB)
constexpr int64_t kCovSharedRows = 2048;  // rows of best[] that fit in shared memory (8 KiB)
constexpr int kCovLive = 0;          // mark of a column that may still be picked
constexpr int kCovExcluded = -1;     // mark of a column removed by `exclude`
constexpr int kCovPicked = -2;       // mark of a picked column
constexpr int kCovNoCandidate = 1 << 8;  // DeviceStatus flag: no live column left (a bug: live >= k was checked)

// How much a column's gain drops when a row's best rises from `from` to
// `to`: min(max(double(c) − double(from), 0), double(to) − double(from)),
// exactly as the CPU's coverage_update computes it ((0 < d) ? d : 0, then
// (d < w) ? d : w). Step 0 adds these terms with from = 0, to = +inf.
__device__ __forceinline__ double coverage_term(float c, float from, float to) {
  double d = static_cast<double>(c) - static_cast<double>(from);
  d = d > 0.0 ? d : 0.0;
  const double w = static_cast<double>(to) - static_cast<double>(from);
  return d < w ? d : w;
}

// Block-wide sum of an int (warp butterflies, then the warps); every thread
// gets the total.
template <int kThreads>
__device__ __forceinline__ int coverage_block_count(int v) {
  __shared__ int part[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  int s = 0;
  for (int w = 0; w < kThreads / 32; ++w) s += part[w];
  __syncthreads();  // part may be reused
  return s;
}

// coverage [B, R, N] (stride of N 1) → covt [B, N, Rp] f32. Grid: B × ⌈R/32⌉
// × ⌈N/32⌉ tiles, 256 threads (32 columns × 8 rows, 4 rows each).
template <typename T>
__global__ void __launch_bounds__(kCovTile * 8)
    coverage_transpose_kernel(const T* __restrict__ c, int64_t stride_b, int64_t stride_r, int64_t R, int64_t N,
                              int64_t Rp, int64_t tiles_r, int64_t tiles_n, float* __restrict__ covt,
                              int* __restrict__ bad_batch /* [B] */, DeviceStatus* st) {
  __shared__ float tile[kCovTile][kCovTile + 1];  // +1: no bank conflicts on the transposed read
  const int64_t per_batch = tiles_r * tiles_n;
  const int64_t b = blockIdx.x / per_batch, rest = blockIdx.x % per_batch;
  const int64_t r0 = rest / tiles_n * kCovTile, j0 = rest % tiles_n * kCovTile;
  const int tx = threadIdx.x % kCovTile, ty = threadIdx.x / kCovTile;
  int bad = INT_MAX;  // lowest b·R + r of this thread holding NaN/Inf
  for (int i = ty; i < kCovTile; i += 8) {
    const int64_t r = r0 + i, j = j0 + tx;
    float v = 0.0f;
    if (r < R && j < N) {
      v = load_f32(c + b * stride_b + r * stride_r + j);
      if (!isfinite(v) && bad == INT_MAX) bad = static_cast<int>(b * R + r);  // i ascends: the first is the lowest
    }
    tile[i][tx] = v;
  }
  if (bad != INT_MAX) {
    atomicMin(&st->bad_token, bad);
    atomicOr(&st->flags, kBadValue);
    bad_batch[b] = 1;
  }
  __syncthreads();
  for (int i = ty; i < kCovTile; i += 8) {
    const int64_t j = j0 + i, r = r0 + tx;
    if (j < N && r < R) covt[(b * N + j) * Rp + r] = tile[tx][i];
  }
}

// Step-0 gains (best = 0): gain [B, N] f64 and the positive terms [B, N]. Grid: B × ⌈N/256⌉; consecutive
// threads read consecutive columns of each row (coalesced).
template <typename T>
__global__ void __launch_bounds__(kCovThreads)
    coverage_initial_gains_kernel(const T* __restrict__ c, int64_t stride_b, int64_t stride_r, int64_t R, int64_t N,
                                  int64_t xblocks, double* __restrict__ gain, int* __restrict__ terms) {
  const int64_t b = blockIdx.x / xblocks;
  const int64_t j = blockIdx.x % xblocks * kCovThreads + threadIdx.x;
  if (j >= N) return;
  const T* col = c + b * stride_b + j;
  double g = 0.0;
  int positive = 0;
#pragma unroll 8  // independent loads ahead of the one chain of additions
  for (int64_t r = 0; r < R; ++r) {
    const float c = load_f32(col + r * stride_r);
    positive += c > 0.0f ? 1 : 0;
    g = g + coverage_term(c, 0.0f, INFINITY);
  }
  terms[b * N + j] = positive;
  gain[b * N + j] = positive == 0 ? 0.0 : g;
}

template <typename T>
struct CoverageGreedyArgs {
  const T* x;              // the coverage [B, R, N] in its layout
  int64_t stride_b, stride_r;
  const float* covt;       // [B, N, Rp] f32
  double* gain;            // [B, N] f64, step 0's gains on entry
  int* terms;              // [B, N] rows with C[r, j] > best[r]
  const uint8_t* exclude;  // [B, N] nonzero = never picked; null: none
  const int* bad_batch;    // [B] nonzero: the batch row holds NaN/Inf (skipped; the call fails)
  int64_t N, R, Rp, k;
  int* mark_g;             // [B, N] when N > kCovSharedCols, else null (shared memory)
  float* best_g;           // [B, Rp] when R > kCovSharedRows, else null (shared memory)
  int32_t* order;          // [B, k] pick order
  int32_t* sorted;         // [B, k] ascending; null: not wanted
  float* gains;            // [B, k]; null: not wanted
  int* available;          // [B] live columns, written only for a row with fewer than k
  DeviceStatus* st;
};

// The best of this thread's live columns (j ≡ tid mod kThreads): largest
// gain, then lowest j; (-inf, INT_MAX) when it has none.
template <int kThreads>
__device__ __forceinline__ void coverage_thread_top(const double* gain, const int* mark, int64_t N, double& v,
                                                    int& j) {
  v = -INFINITY;
  j = INT_MAX;
  for (int64_t c = threadIdx.x; c < N; c += kThreads)
    if (mark[c] == kCovLive && better(gain[c], static_cast<int>(c), v, j)) {
      v = gain[c];
      j = static_cast<int>(c);
    }
}

// One block per batch row, all k steps (see the section comment).
template <int kThreads, typename T>
__global__ void __launch_bounds__(kThreads) coverage_greedy_kernel(CoverageGreedyArgs<T> a) {
  __shared__ int mark_s[kCovSharedCols];                  // per column: kCovLive, kCovExcluded or kCovPicked
  __shared__ __align__(16) float best_s[kCovSharedRows];  // per row: the best coverage picked so far
  __shared__ int raised_r[kThreads];                      // one chunk's raised rows, ascending
  __shared__ float raised_from[kThreads];                 // their best before the pick
  __shared__ float raised_to[kThreads];                   // and after it
  __shared__ int warp_count[kThreads / 32];
  const int64_t b = blockIdx.x, N = a.N, R = a.R, k = a.k;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, w = tid / 32;
  if (a.bad_batch[b] != 0) return;  // uniform: the call reports the NaN/Inf, outputs are not needed
  int* mark = a.mark_g ? a.mark_g + b * N : mark_s;
  float* best = a.best_g ? a.best_g + b * a.Rp : best_s;
  double* gain = a.gain + b * N;
  int* terms = a.terms + b * N;
  const float* covt = a.covt + b * N * a.Rp;  // [N, Rp] of this batch row
  const T* x = a.x + b * a.stride_b;           // [R, N] of this batch row
  int live = 0;
  for (int64_t j = tid; j < N; j += kThreads) {
    const bool out = a.exclude != nullptr && a.exclude[b * N + j] != 0;
    mark[j] = out ? kCovExcluded : kCovLive;
    live += out ? 0 : 1;
  }
  for (int64_t r = tid; r < R; r += kThreads) best[r] = 0.0f;
  live = coverage_block_count<kThreads>(live);  // its barriers also publish best[]
  if (live < k) {                                // uniform
    if (tid == 0) {
      a.available[b] = live;
      atomicMin(&a.st->short_unit, static_cast<int>(b));
      atomicOr(&a.st->flags, kTooFew);
    }
    return;
  }
  double top_v;
  int top_j;
  coverage_thread_top<kThreads>(gain, mark, N, top_v, top_j);
  for (int64_t t = 0; t < k; ++t) {
    double v = top_v;
    int pick = top_j;
    block_argmax<kThreads>(v, pick);
    if (pick == INT_MAX) {  // uniform; cannot happen with live >= k, but never index with it
      if (tid == 0) atomicOr(&a.st->flags, kCovNoCandidate);
      return;
    }
    if (pick % kThreads == tid) mark[pick] = kCovPicked;  // only its owner reads it during the steps
    if (tid == 0) {
      a.order[b * k + t] = pick;
      if (a.gains != nullptr) a.gains[b * k + t] = static_cast<float>(v);
    }
    if (t + 1 == k) break;  // uniform
    const float* col = covt + static_cast<int64_t>(pick) * a.Rp;
    for (int64_t r0 = 0; r0 < R; r0 += kThreads) {
      const int64_t r = r0 + tid;
      float c = 0.0f, old = 0.0f;
      if (r < R) {
        c = col[r];
        old = best[r];
      }
      const bool up = r < R && c > old;
      const unsigned mask = __ballot_sync(kFullMask, up ? 1 : 0);
      if (lane == 0) warp_count[w] = __popc(mask);
      __syncthreads();
      int before = 0, count = 0;
      for (int q = 0; q < kThreads / 32; ++q) {
        if (q < w) before += warp_count[q];
        count += warp_count[q];
      }
      if (up) {
        const int slot = before + __popc(mask & ((1u << lane) - 1u));
        raised_r[slot] = static_cast<int>(r);
        raised_from[slot] = old;
        raised_to[slot] = c;
        best[r] = c;  // only this thread reads row r in this step
      }
      __syncthreads();
      if (count > 0)  // uniform
        for (int64_t j = tid; j < N; j += kThreads) {
          if (mark[j] != kCovLive) continue;  // never read again: the CPU's value is not needed
          double g = gain[j];
          int positive = terms[j];
          for (int e = 0; e < count; ++e) {
            const float cj = load_f32(x + static_cast<int64_t>(raised_r[e]) * a.stride_r + j);
            const float from = raised_from[e], to = raised_to[e];
            positive -= cj > from && cj <= to ? 1 : 0;  // its term is gone
            g = g - coverage_term(cj, from, to);
          }
          terms[j] = positive;
          gain[j] = positive == 0 ? 0.0 : g;
        }
      __syncthreads();  // the list and warp_count are rewritten by the next chunk
    }
    coverage_thread_top<kThreads>(gain, mark, N, top_v, top_j);
  }
  if (a.sorted != nullptr) {  // uniform
    // The picked marks in ascending j, kThreads columns per pass: column
    // j0 + tid is this thread's own, its rank = picks before it.
    int64_t base = 0;
    for (int64_t j0 = 0; j0 < N; j0 += kThreads) {
      const int64_t j = j0 + tid;
      const bool picked = j < N && mark[j] == kCovPicked;
      const unsigned mask = __ballot_sync(kFullMask, picked ? 1 : 0);
      if (lane == 0) warp_count[w] = __popc(mask);
      __syncthreads();
      int64_t before = base, total = base;
      for (int q = 0; q < kThreads / 32; ++q) {
        if (q < w) before += warp_count[q];
        total += warp_count[q];
      }
      if (picked) a.sorted[b * k + before + __popc(mask & ((1u << lane) - 1u))] = static_cast<int32_t>(j);
      __syncthreads();  // warp_count is rewritten by the next pass
      base = total;
    }
  }
}

}  // namespace

Status max_coverage(const MaxCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.coverage, "coverage"));
  const TensorView& c = p.coverage;
  const int64_t B = c.shape[0], R = c.shape[1], N = c.shape[2], k = p.k;
  if (N > INT_MAX)
    return Status(Code::kUnsupported, "maxCoverage: the CUDA kernel takes fewer than 2^31 columns but got N = " +
                                          std::to_string(N));
  if (B * R > INT_MAX)
    return Status(Code::kUnsupported, "maxCoverage: the CUDA kernel takes B·R < 2^31 coverage rows but got " +
                                          std::to_string(B) + "·" + std::to_string(R));
  const int64_t Rp = (R + 3) / 4 * 4;  // covt row pitch: 16-byte aligned columns
  const int64_t tiles_r = blocks_for(R, kCovTile), tiles_n = blocks_for(N, kCovTile);
  const int64_t xblocks = blocks_for(N, kCovThreads);
  TS_RETURN_IF_ERROR(check_grid_x(B * tiles_r * tiles_n, "maxCoverage"));
  TS_RETURN_IF_ERROR(check_grid_x(B * xblocks, "maxCoverage"));
  TS_RETURN_IF_ERROR(check_grid_x(B, "maxCoverage"));
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(c.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const bool global_cols = N > kCovSharedCols, global_rows = R > kCovSharedRows;
  ScratchLayout L;
  const size_t o_covt = L.add<float>(B * N * Rp);                      // [B, N, Rp]
  const size_t o_gain = L.add<double>(B * N);                          // [B, N]
  const size_t o_terms = L.add<int>(B * N);                            // [B, N]
  const size_t o_bad = L.add<int>(B);                                  // [B]
  const size_t o_avail = L.add<int>(B);                                // [B]
  const size_t o_status = L.add<DeviceStatus>(1);
  const size_t o_mark = L.add<int>(global_cols ? B * N : 0);           // [B, N] above kCovSharedCols
  const size_t o_best = L.add<float>(global_rows ? B * Rp : 0);        // [B, Rp] above kCovSharedRows
  Scratch scratch(c.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  float* covt = scratch.at<float>(o_covt);
  double* gain = scratch.at<double>(o_gain);
  int* terms = scratch.at<int>(o_terms);
  int* bad_batch = scratch.at<int>(o_bad);
  int* available = scratch.at<int>(o_avail);
  DeviceStatus* st = scratch.at<DeviceStatus>(o_status);
  TS_RETURN_IF_ERROR(clear_status(st, stream));
  TS_CUDA_TRY(cudaMemsetAsync(bad_batch, 0, static_cast<size_t>(B) * sizeof(int), stream));
  TS_RETURN_IF_ERROR(TS_DISPATCH_FLOAT(c.dtype, "maxCoverage", [&] {
    const scalar_t* x = static_cast<const scalar_t*>(c.data);
    coverage_transpose_kernel<scalar_t><<<static_cast<unsigned>(B * tiles_r * tiles_n), kCovTile * 8, 0, stream>>>(
        x, c.strides[0], c.strides[1], R, N, Rp, tiles_r, tiles_n, covt, bad_batch, st);
    TS_CUDA_CHECK_LAUNCH("coverage_transpose_kernel");
    coverage_initial_gains_kernel<scalar_t><<<static_cast<unsigned>(B * xblocks), kCovThreads, 0, stream>>>(
        x, c.strides[0], c.strides[1], R, N, xblocks, gain, terms);
    TS_CUDA_CHECK_LAUNCH("coverage_initial_gains_kernel");
    CoverageGreedyArgs<scalar_t> a;
    a.x = x;
    a.stride_b = c.strides[0];
    a.stride_r = c.strides[1];
    a.covt = covt;
    a.gain = gain;
    a.terms = terms;
    a.exclude = p.exclude.data ? p.exclude.ptr<const uint8_t>() : nullptr;
    a.bad_batch = bad_batch;
    a.N = N;
    a.R = R;
    a.Rp = Rp;
    a.k = k;
    a.mark_g = global_cols ? scratch.at<int>(o_mark) : nullptr;
    a.best_g = global_rows ? scratch.at<float>(o_best) : nullptr;
    a.order = p.order.ptr<int32_t>();
    a.sorted = p.sorted.data ? p.sorted.ptr<int32_t>() : nullptr;
    a.gains = p.gains.data ? p.gains.ptr<float>() : nullptr;
    a.available = available;
    a.st = st;
    coverage_greedy_kernel<kCovThreads, scalar_t><<<static_cast<unsigned>(B), kCovThreads, 0, stream>>>(a);
    TS_CUDA_CHECK_LAUNCH("coverage_greedy_kernel");
    return Status::Ok();
  }));
  // The data errors live on the device: reading them drains the stream, so
  // only a call that waits (check_errors) does; the rest stays stream-ordered.
  if (!p.check_errors) return Status::Ok();
  DeviceStatus host;
  TS_RETURN_IF_ERROR(read_status(st, stream, &host));
  const bool bad = (host.flags & kBadValue) != 0, too_few = (host.flags & kTooFew) != 0;
  // The CPU checks batch by batch (finiteness, then the exclude count): the
  // lowest failing batch row wins, and a bad row's batch never reports a
  // shortage (its block stops first).
  if (bad && (!too_few || host.bad_token / R < host.short_unit))
    return Status(Code::kRange, "expected finite coverage but row " + std::to_string(host.bad_token % R) +
                                    " of batch " + std::to_string(host.bad_token / R) + " holds NaN or Inf");
  if (too_few) {
    int count = 0;
    TS_CUDA_TRY(cudaMemcpyAsync(&count, available + host.short_unit, sizeof(int), cudaMemcpyDeviceToHost, stream));
    TS_CUDA_TRY(cudaStreamSynchronize(stream));
    return Status(Code::kRange, "expected at least k = " + std::to_string(k) +
                                    " columns that are not excluded in batch " + std::to_string(host.short_unit) +
                                    " but it has " + std::to_string(count));
  }
  if ((host.flags & kCovNoCandidate) != 0)
    return Status(Code::kInternal, "maxCoverage: the CUDA greedy ran out of candidate columns (a bug)");
  return Status::Ok();
}

}  // namespace cuda
}  // namespace tokensieve
