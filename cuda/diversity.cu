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

#include <algorithm>
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
//
// Per unit u = (batch b, segment s) of S tokens:
//   1. prep_kernel (shared with k-medoids and MMTok): one warp per token, its
//      norm as a float64 sum in channel order, the row as f32 (normalised for
//      cosine) into scratch, its raw norm, and for l2 its own dot chain.
//   2. active_kernel: the non-excluded positions of the segment, ascending
//      (ballot + block prefix), and the count; too few → status.
//   3. S <= kCenterLoopMax (4096): pair_kernel writes the unit's S × S distance
//      matrix (64 × 64 tiles over the upper triangle, mirrored; diagonal 0)
//      and, for the 'isolated' seed, every token's nearest-neighbour distance
//      (atomicMin on order-preserving keys: min is exact in any order). Then
//      kcenter_loop_kernel, one persistent block per unit, runs all k steps
//      with the min-distance vector in shared memory: per step one row of the
//      matrix (from L2) and one block argmax — no launch per step.
//      Matrices are made in waves of units so that at most kMatrixBudget
//      floats are alive.
//   4. S > kCenterLoopMax (no matrix): pair_kernel reduces the nearest
//      neighbours without storing; kcenter_seed_kernel picks the seed; then one
//      launch of kcenter_step_kernel per step: every block computes the
//      distances of its 256 columns to the last pick (sequential chains again),
//      folds them into the unit's min-distance vector in global memory and
//      offers its best column; the last block of the unit to arrive (a ticket)
//      reduces the offers in block order and records the pick. k − 1 launches.
//   5. sort_picks_kernel: each segment's picks ascending (rank by counting).
namespace {

constexpr int kPrepWarps = 4;               // prep: one warp per token
constexpr int kTile = 64;                   // pair GEMM: 64 × 64 outputs per block
constexpr int kTileK = 16;                  // channels per shared-memory stage
constexpr int kGemmThreads = 256;           // 16 × 16 threads, 4 × 4 outputs each
constexpr int kLoopThreads = 512;           // persistent loop: one block per unit
constexpr int64_t kMaxLoopTokens = 4096;    // the loop's min distances in shared memory (16 KiB)
// Segments of up to this many tokens take the matrix + persistent-loop path
// of k-center, longer ones the launch-per-step path. The emulator tests build
// a second copy with a small value, so the step path runs on every test shape.
#ifndef TS_KCENTER_LOOP_MAX
#define TS_KCENTER_LOOP_MAX kMaxLoopTokens
#endif
constexpr int64_t kCenterLoopMax = TS_KCENTER_LOOP_MAX;
static_assert(kCenterLoopMax <= kMaxLoopTokens, "the loop kernel holds at most kMaxLoopTokens distances");
constexpr int kStepThreads = 256;           // large segments: one column per thread
constexpr int kStepChunk = 32;              // channels per shared-memory stage of a step
constexpr int64_t kMatrixBudget = int64_t{1} << 28;  // floats of distance matrices alive at once (1 GiB)
constexpr int kSortThreads = 256;

struct PrepParams {
  const void* x;  // [B, N, C], stride(C) == 1
  int64_t stride_b, stride_n;
  int64_t B, N, C;
  const uint8_t* exclude;  // u8 [B, N] or null: excluded tokens are skipped (not even checked)
  bool normalise;          // scale rows to unit norm
  double eps;              // > 0: divide by max(norm, eps) (MMTok's F.normalize); 0: zero rows stay zero
  float* rows;             // [B, N, C] f32 out
  float* raw_norm;         // [B, N] or null: the norm of the raw row
  float* sq;               // [B, N] or null: the stored row's own dot chain (l2)
  DeviceStatus* st;
};

// One warp per token. The lanes load 32 channels at a time (coalesced) and
// every lane then adds them in channel order (shuffles), so the float64 sum
// runs in the CPU's order; its products are exact in float64, so an FMA
// could not change it either.
template <typename T>
__global__ void __launch_bounds__(kPrepWarps * 32) prep_kernel(const PrepParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t t = blockIdx.x * static_cast<int64_t>(kPrepWarps) + threadIdx.x / 32;  // token b·N + n
  if (t >= p.B * p.N) return;  // the whole warp leaves together
  if (p.exclude != nullptr && p.exclude[t] != 0) return;
  const int64_t b = t / p.N, n = t % p.N, C = p.C;
  const T* row = static_cast<const T*>(p.x) + b * p.stride_b + n * p.stride_n;
  double ss = 0.0;
  bool finite = true;
  for (int64_t c0 = 0; c0 < C; c0 += 32) {
    const float v = c0 + lane < C ? load_f32(row + c0 + lane) : 0.0f;
    finite = finite && isfinite(v);
    const int cn = static_cast<int>(C - c0 < 32 ? C - c0 : 32);
    for (int i = 0; i < cn; ++i) {
      const double vi = __shfl_sync(kFullMask, v, i);
      ss = __dadd_rn(ss, __dmul_rn(vi, vi));
    }
  }
  if (__ballot_sync(kFullMask, !finite) != 0) {
    if (lane == 0) {
      atomicOr(&p.st->flags, kBadValue);
      atomicMin(&p.st->bad_token, static_cast<int>(t));
    }
    return;
  }
  const double norm = sqrt(ss);
  float inv = 1.0f;
  if (p.normalise) {
    if (p.eps > 0)
      inv = static_cast<float>(1.0 / (norm > p.eps ? norm : p.eps));
    else
      inv = ss > 0 ? static_cast<float>(1.0 / norm) : 0.0f;
  }
  float* dst = p.rows + t * C;
  float self = 0.0f;
  for (int64_t c0 = 0; c0 < C; c0 += 32) {
    float v = c0 + lane < C ? load_f32(row + c0 + lane) : 0.0f;
    if (p.normalise) v = __fmul_rn(v, inv);
    if (c0 + lane < C) dst[c0 + lane] = v;
    if (p.sq != nullptr) {
      const int cn = static_cast<int>(C - c0 < 32 ? C - c0 : 32);
      for (int i = 0; i < cn; ++i) {
        const float vi = __shfl_sync(kFullMask, v, i);
        self = fmaf(vi, vi, self);
      }
    }
  }
  if (lane == 0) {
    if (p.raw_norm != nullptr) p.raw_norm[t] = static_cast<float>(norm);
    if (p.sq != nullptr) p.sq[t] = self;
  }
}

Status launch_prep(const TensorView& x, const uint8_t* exclude, bool normalise, double eps, float* rows,
                   float* raw_norm, float* sq, DeviceStatus* st, cudaStream_t stream) {
  PrepParams pp;
  pp.x = x.data;
  pp.stride_b = x.strides[0];
  pp.stride_n = x.strides[1];
  pp.B = x.shape[0];
  pp.N = x.shape[1];
  pp.C = x.shape[2];
  pp.exclude = exclude;
  pp.normalise = normalise;
  pp.eps = eps;
  pp.rows = rows;
  pp.raw_norm = raw_norm;
  pp.sq = sq;
  pp.st = st;
  // The status record names a bad token as an int below its 0x7f7f7f7f "none".
  if (pp.B * pp.N >= 0x7f7f7f7f)
    return Status(Code::kUnsupported, "the CUDA diversity kernels index at most 2139062142 tokens per call, got " +
                                          std::to_string(pp.B * pp.N));
  const int64_t blocks = blocks_for(pp.B * pp.N, kPrepWarps);
  TS_RETURN_IF_ERROR(check_grid_x(blocks, "diversity prep"));
  return TS_DISPATCH_FLOAT(x.dtype, "diversity prep", [&] {
    prep_kernel<scalar_t><<<static_cast<unsigned>(blocks), kPrepWarps * 32, 0, stream>>>(pp);
    TS_CUDA_CHECK_LAUNCH("prep_kernel");
    return Status::Ok();
  });
}

struct UnitParams {
  int64_t N, S, segments, k;
  const uint8_t* exclude;  // [B, N] or null
  int32_t* ids;            // [U, S]: active positions of the segment, ascending
  int32_t* count;          // [U]
  uint32_t* nn_key;        // [U, S] or null: set to key(+inf)
  DeviceStatus* st;
};

// One block per unit: the active positions in order (per chunk of 256: warp
// ballots, then the warps' counts in order).
__global__ void __launch_bounds__(256) active_kernel(const UnitParams p) {
  __shared__ int warp_count[8];
  __shared__ int running;
  const int64_t u = blockIdx.x, b = u / p.segments, base = (u % p.segments) * p.S;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  if (threadIdx.x == 0) running = 0;
  __syncthreads();
  for (int64_t i0 = 0; i0 < p.S; i0 += 256) {
    const int64_t i = i0 + threadIdx.x;
    const bool active = i < p.S && (p.exclude == nullptr || p.exclude[b * p.N + base + i] == 0);
    const unsigned ballot = __ballot_sync(kFullMask, active);
    if (lane == 0) warp_count[w] = __popc(ballot);
    if (p.nn_key != nullptr && i < p.S) p.nn_key[u * p.S + i] = 0xff800000u;  // float_key(+inf)
    __syncthreads();
    int offset = running;
    for (int v = 0; v < w; ++v) offset += warp_count[v];
    if (active) p.ids[u * p.S + offset + __popc(ballot & ((1u << lane) - 1u))] = static_cast<int32_t>(i);
    __syncthreads();
    if (threadIdx.x == 0)
      for (int v = 0; v < 8; ++v) running += warp_count[v];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    p.count[u] = running;
    if (running < p.k) {
      atomicOr(&p.st->flags, kTooFew);
      atomicMin(&p.st->short_unit, static_cast<int>(u));
    }
  }
}

__device__ __forceinline__ float to_distance(int metric, float dot, float sqi, float sqj) {
  if (metric == static_cast<int>(DistanceMetric::kCosine)) return __fsub_rn(1.0f, dot);
  // (sq_i + sq_j) − 2·dot, each step rounded as the CPU's expression.
  return sqrtf(fmaxf(0.0f, __fsub_rn(__fadd_rn(sqi, sqj), __fmul_rn(2.0f, dot))));
}

// acc[r][c] = Σ_d a_rows[ty + 16r][d] · b_rows[tx + 16c][d] over one 64 × 64
// tile (tx, ty = thread % 16, thread / 16): every element one sequential
// fmaf chain over d = 0..C−1, the CPU's qk_tile chain. Row pointers live in
// shared memory; a null pointer is a zero row. 256 threads call it.
__device__ void tile_dots(const float* const* a_rows, const float* const* b_rows, int64_t C, float (&acc)[4][4]) {
  __shared__ float As[kTileK][kTile + 1];  // [channel, row]; +1: conflict-free transposed stores
  __shared__ float Bs[kTileK][kTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;
  for (int64_t d0 = 0; d0 < C; d0 += kTileK) {
    for (int e = threadIdx.x; e < kTile * kTileK; e += kGemmThreads) {
      const int row = e / kTileK, kk = e % kTileK;
      const float* a = a_rows[row];
      const float* b = b_rows[row];
      As[kk][row] = (a != nullptr && d0 + kk < C) ? a[d0 + kk] : 0.0f;
      Bs[kk][row] = (b != nullptr && d0 + kk < C) ? b[d0 + kk] : 0.0f;
    }
    __syncthreads();
    const int dn = static_cast<int>(C - d0 < kTileK ? C - d0 : kTileK);  // no padded terms in the chains
    for (int kk = 0; kk < dn; ++kk) {
      float a[4], b[4];
      for (int r = 0; r < 4; ++r) a[r] = As[kk][ty + 16 * r];
      for (int c = 0; c < 4; ++c) b[c] = Bs[kk][tx + 16 * c];
      for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
    }
    __syncthreads();
  }
}

struct PairParams {
  const float* rows;     // [B, N, C] prepared rows
  const float* sq;       // [B, N] (l2) or null
  const int32_t* ids;    // [U, S]
  const int32_t* count;  // [U]
  int64_t N, C, S, segments;
  int64_t unit0;         // first unit of this launch
  int64_t tiles;         // T = ceil(S / 64); a unit has T(T+1)/2 tile blocks
  int metric;
  float* matrix;         // [units of the launch, S, S] or null
  uint32_t* nn_key;      // [U, S] or null: nearest-neighbour distance keys
};

// One 64 × 64 tile (I <= J) of a unit's pairwise distances over its active
// tokens (compacted order). d(i, j) is computed once and mirrored: the chains
// are symmetric anyway (fmaf(a, b, c) == fmaf(b, a, c)), this halves the work.
__global__ void __launch_bounds__(kGemmThreads) pair_kernel(const PairParams p) {
  __shared__ const float* a_rows[kTile];
  __shared__ const float* b_rows[kTile];
  __shared__ float sq_a[kTile], sq_b[kTile];
  __shared__ float mirror[kTile][kTile + 1];  // [j, i] for the transposed store
  __shared__ uint32_t row_min[kTile], col_min[kTile];
  const int64_t tri = p.tiles * (p.tiles + 1) / 2;
  const int64_t ul = blockIdx.x / tri, u = p.unit0 + ul;
  int64_t rem = blockIdx.x % tri, I = 0;
  while (rem >= p.tiles - I) {
    rem -= p.tiles - I;
    ++I;
  }
  const int64_t J = I + rem;
  const int64_t n = p.count[u];
  if (I * kTile >= n || J * kTile >= n) return;
  const int64_t b = u / p.segments, base = (u % p.segments) * p.S;
  const int32_t* ids = p.ids + u * p.S;
  if (threadIdx.x < 2 * kTile) {
    const int r = threadIdx.x % kTile;
    const int64_t a = (threadIdx.x < kTile ? I : J) * kTile + r;
    const int64_t tok = a < n ? b * p.N + base + ids[a] : -1;
    const float* ptr = tok >= 0 ? p.rows + tok * p.C : nullptr;
    const float s = (tok >= 0 && p.sq != nullptr) ? p.sq[tok] : 0.0f;
    if (threadIdx.x < kTile) {
      a_rows[r] = ptr;
      sq_a[r] = s;
      row_min[r] = 0xff800000u;
    } else {
      b_rows[r] = ptr;
      sq_b[r] = s;
      col_min[r] = 0xff800000u;
    }
  }
  __syncthreads();
  float acc[4][4];
  tile_dots(a_rows, b_rows, p.C, acc);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float* D = p.matrix != nullptr ? p.matrix + ul * p.S * p.S : nullptr;
  for (int r = 0; r < 4; ++r) {
    const int ii = ty + 16 * r;
    const int64_t i = I * kTile + ii;
    for (int c = 0; c < 4; ++c) {
      const int jj = tx + 16 * c;
      const int64_t j = J * kTile + jj;
      const bool valid = i < n && j < n;
      const float d = i == j ? 0.0f : to_distance(p.metric, acc[r][c], sq_a[ii], sq_b[jj]);
      if (valid && D != nullptr) D[i * p.S + j] = d;
      if (I != J) mirror[jj][ii] = d;
      if (valid && i != j && p.nn_key != nullptr) {
        const uint32_t key = float_key(d);
        atomicMin(&row_min[ii], key);
        if (I != J) atomicMin(&col_min[jj], key);  // the diagonal tile holds (j, i) itself
      }
    }
  }
  __syncthreads();
  if (D != nullptr && I != J) {
    for (int e = threadIdx.x; e < kTile * kTile; e += kGemmThreads) {
      const int jj = e / kTile, ii = e % kTile;
      const int64_t i = I * kTile + ii, j = J * kTile + jj;
      if (i < n && j < n) D[j * p.S + i] = mirror[jj][ii];
    }
  }
  if (p.nn_key != nullptr && threadIdx.x < 2 * kTile) {
    const int r = threadIdx.x % kTile;
    const int64_t a = (threadIdx.x < kTile ? I : J) * kTile + r;
    if (a < n) atomicMin(&p.nn_key[u * p.S + a], threadIdx.x < kTile ? row_min[r] : col_min[r]);
  }
}

Status launch_pairs(const PairParams& pp, int64_t units, cudaStream_t stream) {
  const int64_t blocks = units * (pp.tiles * (pp.tiles + 1) / 2);
  TS_RETURN_IF_ERROR(check_grid_x(blocks, "pairwise distances"));
  pair_kernel<<<static_cast<unsigned>(blocks), kGemmThreads, 0, stream>>>(pp);
  TS_CUDA_CHECK_LAUNCH("pair_kernel");
  return Status::Ok();
}

struct SeedParams {
  const uint32_t* nn_key;  // [U, S] (isolated)
  const float* raw_norm;   // [B, N]
  const int32_t* ids;      // [U, S]
  const int32_t* count;    // [U]
  int64_t N, S, segments, k;
  int seed;                // CenterSeed
  int64_t seed_index;
  DeviceStatus* st;
};

// The seed of unit u among its n active tokens, as the CPU picks it (first
// maximum); every thread gets it. Returns false when there is none (seed
// index excluded, or NaN input that left no maximum).
template <int kThreads>
__device__ bool pick_seed(const SeedParams& p, int64_t u, int64_t n, int* seed, float* value) {
  const int64_t b = u / p.segments, base = (u % p.segments) * p.S;
  const int32_t* ids = p.ids + u * p.S;
  float v = -INFINITY;
  int i = INT_MAX;
  for (int64_t a = threadIdx.x; a < n; a += kThreads) {
    float c = -INFINITY;
    if (p.seed == static_cast<int>(CenterSeed::kIsolated))
      c = key_float(p.nn_key[u * p.S + a]);
    else if (p.seed == static_cast<int>(CenterSeed::kMaxNorm))
      c = p.raw_norm[b * p.N + base + ids[a]];
    else
      c = ids[a] == p.seed_index ? 0.0f : -INFINITY;
    if (better(c, static_cast<int>(a), v, i) && (p.seed != static_cast<int>(CenterSeed::kIndex) || c == 0.0f)) {
      v = c;
      i = static_cast<int>(a);
    }
  }
  block_argmax<kThreads>(v, i);
  if (i == INT_MAX) {
    if (threadIdx.x == 0 && p.seed == static_cast<int>(CenterSeed::kIndex)) atomicOr(&p.st->flags, kSeedExcluded);
    return false;
  }
  *seed = i;
  *value = p.seed == static_cast<int>(CenterSeed::kIsolated) ? v : INFINITY;
  return true;
}

// One farthest-point step over a unit's n tokens: folds `row` (the distances
// from the last pick a; `first`: the seed's, copied) into the min distances
// `mind` (picked tokens hold -inf, so they never win) and returns in every
// thread the first maximum (v, i) — the CPU's argmax. Each thread touches only
// its own columns j ≡ thread (mod kThreads), so no barrier is needed beyond
// block_argmax's.
template <int kThreads>
__device__ __forceinline__ void farthest_step(const float* row, float* mind, int64_t n, int a, bool first, float& v,
                                              int& i) {
  v = -INFINITY;
  i = INT_MAX;
  for (int64_t j = threadIdx.x; j < n; j += kThreads) {
    const float m = j == a ? -INFINITY : (first ? row[j] : fminf(mind[j], row[j]));
    mind[j] = m;
    if (better(m, static_cast<int>(j), v, i)) {
      v = m;
      i = static_cast<int>(j);
    }
  }
  block_argmax<kThreads>(v, i);
}

struct LoopParams {
  SeedParams seed;
  const float* matrix;  // [units of the launch, S, S]
  int64_t unit0;
  int32_t* order;       // [B, segments·k] = [U, k]
  float* dist;          // [U, k] or null
};

// One block per unit: all k steps with the min distances in shared memory.
__global__ void __launch_bounds__(kLoopThreads) kcenter_loop_kernel(const LoopParams p) {
  __shared__ float mind[kMaxLoopTokens];  // distance to the nearest pick; -inf once picked
  const SeedParams& sp = p.seed;
  const int64_t u = p.unit0 + blockIdx.x, n = sp.count[u], k = sp.k, S = sp.S;
  if (n < k) return;  // reported by active_kernel
  const int64_t base = (u % sp.segments) * S;
  const int32_t* ids = sp.ids + u * S;
  const float* D = p.matrix + static_cast<int64_t>(blockIdx.x) * S * S;
  int a = 0;
  float v = 0.0f;
  if (!pick_seed<kLoopThreads>(sp, u, n, &a, &v)) return;
  for (int64_t t = 0;; ++t) {
    if (threadIdx.x == 0) {
      p.order[u * k + t] = static_cast<int32_t>(base + ids[a]);
      if (p.dist != nullptr) p.dist[u * k + t] = v;
    }
    if (t + 1 == k) break;
    float bv;
    int bi;
    farthest_step<kLoopThreads>(D + static_cast<int64_t>(a) * S, mind, n, a, t == 0, bv, bi);
    if (bi == INT_MAX) return;  // only with NaN input, which is reported
    a = bi;
    v = bv;
  }
}

// Large segments: the seed, and the min distances' initial state.
__global__ void __launch_bounds__(kLoopThreads) kcenter_seed_kernel(const SeedParams sp, int32_t* order, float* dist,
                                                                     int32_t* pick /* [U] */) {
  const int64_t u = blockIdx.x, n = sp.count[u], k = sp.k;
  if (threadIdx.x == 0) pick[u] = -1;
  if (n < k) return;
  int a = 0;
  float v = 0.0f;
  if (!pick_seed<kLoopThreads>(sp, u, n, &a, &v)) return;
  if (threadIdx.x == 0) {
    order[u * k] = static_cast<int32_t>((u % sp.segments) * sp.S + sp.ids[u * sp.S + a]);
    if (dist != nullptr) dist[u * k] = v;
    pick[u] = a;
  }
}

struct StepParams {
  const float* rows;     // [B, N, C]
  const float* sq;       // [B, N] or null
  const int32_t* ids;    // [U, S]
  const int32_t* count;  // [U]
  int64_t N, C, S, segments, k, t;  // t: the step (>= 1)
  int64_t col_blocks;    // blocks per unit
  int metric;
  float* mind;           // [U, S]
  int32_t* pick;         // [U]: the last pick (compacted), -1: stopped
  float* offer_v;        // [U, col_blocks]
  int32_t* offer_i;      // [U, col_blocks]
  unsigned int* tickets; // [U], zero between launches
  int32_t* order;        // [U, k]
  float* dist;           // [U, k] or null
};

// Step t of a large segment: columns of this block against the last pick.
__global__ void __launch_bounds__(kStepThreads) kcenter_step_kernel(const StepParams p) {
  __shared__ float prow[kStepChunk];
  __shared__ float xs[kStepThreads][kStepChunk + 1];  // [column, channel]
  const int64_t u = blockIdx.x / p.col_blocks, cb = blockIdx.x % p.col_blocks;
  const int64_t n = p.count[u];
  const int a = p.pick[u];
  if (n < p.k || a < 0) return;  // every block of the unit leaves: no ticket is taken
  const int64_t b = u / p.segments, base = (u % p.segments) * p.S;
  const int32_t* ids = p.ids + u * p.S;
  const int64_t ta = b * p.N + base + ids[a];
  const int64_t j = cb * kStepThreads + threadIdx.x;
  float acc = 0.0f;
  for (int64_t d0 = 0; d0 < p.C; d0 += kStepChunk) {
    if (threadIdx.x < kStepChunk) prow[threadIdx.x] = d0 + threadIdx.x < p.C ? p.rows[ta * p.C + d0 + threadIdx.x] : 0.0f;
    for (int e = threadIdx.x; e < kStepThreads * kStepChunk; e += kStepThreads) {
      const int r = e / kStepChunk, d = e % kStepChunk;
      const int64_t jj = cb * kStepThreads + r;
      xs[r][d] = (jj < n && d0 + d < p.C) ? p.rows[(b * p.N + base + ids[jj]) * p.C + d0 + d] : 0.0f;
    }
    __syncthreads();
    const int dn = static_cast<int>(p.C - d0 < kStepChunk ? p.C - d0 : kStepChunk);
    for (int d = 0; d < dn; ++d) acc = fmaf(prow[d], xs[threadIdx.x][d], acc);
    __syncthreads();
  }
  float bv = -INFINITY;
  int bi = INT_MAX;
  if (j < n) {
    const int64_t tj = b * p.N + base + ids[j];
    const float d = to_distance(p.metric, acc, p.sq != nullptr ? p.sq[ta] : 0.0f, p.sq != nullptr ? p.sq[tj] : 0.0f);
    float* m = p.mind + u * p.S + j;
    const float v = j == a ? -INFINITY : (p.t == 1 ? d : fminf(*m, d));
    *m = v;
    bv = v;
    bi = static_cast<int>(j);
  }
  block_argmax<kStepThreads>(bv, bi);
  if (threadIdx.x == 0) {
    p.offer_v[u * p.col_blocks + cb] = bv;
    p.offer_i[u * p.col_blocks + cb] = bi;
  }
  if (!last_block_arrives(&p.tickets[u], static_cast<unsigned int>(p.col_blocks))) return;
  bv = -INFINITY;
  bi = INT_MAX;
  for (int64_t c = threadIdx.x; c < p.col_blocks; c += kStepThreads) {
    const float ov = __ldcg(p.offer_v + u * p.col_blocks + c);
    const int oi = __ldcg(p.offer_i + u * p.col_blocks + c);
    if (better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  block_argmax<kStepThreads>(bv, bi);
  if (threadIdx.x == 0) {
    p.tickets[u] = 0;  // every block of this launch has arrived: ready for the next step
    if (bi == INT_MAX) {
      p.pick[u] = -1;  // NaN input (reported): stop this unit
    } else {
      p.order[u * p.k + p.t] = static_cast<int32_t>(base + ids[bi]);
      if (p.dist != nullptr) p.dist[u * p.k + p.t] = bv;
      p.pick[u] = bi;
    }
  }
}

// sorted[u, :] = order[u, :] ascending (values are distinct: rank by counting).
__global__ void __launch_bounds__(kSortThreads) sort_picks_kernel(const int32_t* order, int64_t k, int32_t* sorted) {
  const int64_t u = blockIdx.x;
  const int32_t* o = order + u * k;
  for (int64_t t = threadIdx.x; t < k; t += kSortThreads) {
    const int32_t v = o[t];
    int64_t rank = 0;
    for (int64_t q = 0; q < k; ++q) rank += o[q] < v ? 1 : 0;
    sorted[u * k + rank] = v;
  }
}

// What k-center and k-medoids share before their own kernels: the prepared
// rows, raw norms and squared norms, each unit's active tokens, and the pair
// tiles over them. add() reserves the scratch; launch() runs prep_kernel and
// active_kernel and describes the tiles (pairs.matrix, pairs.nn_key and
// pairs.unit0 are the caller's to set).
struct UnitSetup {
  size_t o_rows = 0, o_norm = 0, o_sq = 0, o_ids = 0, o_count = 0, o_nn = 0;
  UnitParams units;
  PairParams pairs;
  float* raw_norm = nullptr;

  void add(ScratchLayout& L, const TensorView& x, int64_t segments, DistanceMetric metric, bool nn) {
    const int64_t B = x.shape[0], N = x.shape[1], C = x.shape[2], U = B * segments, S = N / segments;
    o_rows = L.add<float>(B * N * C);                                        // [B, N, C]
    o_norm = L.add<float>(B * N);                                            // [B, N]
    o_sq = L.add<float>(metric == DistanceMetric::kL2 ? B * N : 0);          // [B, N]
    o_ids = L.add<int32_t>(U * S);                                           // [U, S]
    o_count = L.add<int32_t>(U);                                             // [U]
    o_nn = L.add<uint32_t>(nn ? U * S : 0);                                  // [U, S]
  }

  Status launch(const Scratch& scratch, const TensorView& x, const uint8_t* exclude, int64_t segments, int64_t k,
                DistanceMetric metric, bool nn, DeviceStatus* st, cudaStream_t stream) {
    const int64_t B = x.shape[0], N = x.shape[1], C = x.shape[2], U = B * segments, S = N / segments;
    const bool l2 = metric == DistanceMetric::kL2;
    float* rows = scratch.at<float>(o_rows);
    float* sq = l2 ? scratch.at<float>(o_sq) : nullptr;
    raw_norm = scratch.at<float>(o_norm);
    TS_RETURN_IF_ERROR(launch_prep(x, exclude, !l2, 0.0, rows, raw_norm, sq, st, stream));
    units.N = N;
    units.S = S;
    units.segments = segments;
    units.k = k;
    units.exclude = exclude;
    units.ids = scratch.at<int32_t>(o_ids);
    units.count = scratch.at<int32_t>(o_count);
    units.nn_key = nn ? scratch.at<uint32_t>(o_nn) : nullptr;
    units.st = st;
    TS_RETURN_IF_ERROR(check_grid_x(U, "diversity units"));
    active_kernel<<<static_cast<unsigned>(U), 256, 0, stream>>>(units);
    TS_CUDA_CHECK_LAUNCH("active_kernel");
    pairs.rows = rows;
    pairs.sq = sq;
    pairs.ids = units.ids;
    pairs.count = units.count;
    pairs.N = N;
    pairs.C = C;
    pairs.S = S;
    pairs.segments = segments;
    pairs.tiles = blocks_for(S, kTile);
    pairs.metric = static_cast<int>(metric);
    pairs.matrix = nullptr;
    pairs.nn_key = units.nn_key;
    pairs.unit0 = 0;
    return Status::Ok();
  }
};

// The host side of a DeviceStatus after prep/active kernels: the CPU's messages.
Status features_status(const DeviceStatus& hs, int64_t N, const char* name = "features") {
  if (hs.flags & kBadValue)
    return Status(Code::kRange, std::string("expected finite ") + name + " but x[" + std::to_string(hs.bad_token / N) +
                                    ", " + std::to_string(hs.bad_token % N) + "] holds NaN or Inf");
  return Status::Ok();
}

}  // namespace

Status k_center(const KCenterParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2];
  const int64_t segments = p.segments, S = N / segments, U = B * segments, k = p.k;
  const bool isolated = p.seed == CenterSeed::kIsolated;
  const bool on_chip = S <= kCenterLoopMax;
  const int64_t wave = on_chip ? std::max<int64_t>(1, std::min<int64_t>(U, kMatrixBudget / (S * S))) : 0;
  const int64_t col_blocks = blocks_for(S, kStepThreads);
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  ScratchLayout L;
  UnitSetup setup;
  setup.add(L, p.x, segments, p.metric, isolated);
  const size_t o_matrix = L.add<float>(wave * S * S);  // [wave, S, S]
  const size_t o_mind = L.add<float>(on_chip ? 0 : U * S);
  const size_t o_pick = L.add<int32_t>(on_chip ? 0 : U);
  const size_t o_offer_v = L.add<float>(on_chip ? 0 : U * col_blocks);
  const size_t o_offer_i = L.add<int32_t>(on_chip ? 0 : U * col_blocks);
  const size_t o_tickets = L.add<unsigned int>(on_chip ? 0 : U);
  const size_t o_status = L.add<DeviceStatus>(1);
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  DeviceStatus* st = scratch.at<DeviceStatus>(o_status);
  TS_RETURN_IF_ERROR(clear_status(st, stream));
  const uint8_t* exclude = p.exclude.data != nullptr ? p.exclude.ptr<const uint8_t>() : nullptr;
  TS_RETURN_IF_ERROR(setup.launch(scratch, p.x, exclude, segments, k, p.metric, isolated, st, stream));
  const UnitParams& up = setup.units;
  PairParams pp = setup.pairs;
  SeedParams sp;
  sp.nn_key = up.nn_key;
  sp.raw_norm = setup.raw_norm;
  sp.ids = up.ids;
  sp.count = up.count;
  sp.N = N;
  sp.S = S;
  sp.segments = segments;
  sp.k = k;
  sp.seed = static_cast<int>(p.seed);
  sp.seed_index = p.seed_index;
  sp.st = st;
  int32_t* order = p.order.ptr<int32_t>();
  float* dist = p.distances.data != nullptr ? p.distances.ptr<float>() : nullptr;
  if (on_chip) {
    for (int64_t u0 = 0; u0 < U; u0 += wave) {
      const int64_t units = std::min(wave, U - u0);
      pp.unit0 = u0;
      pp.matrix = scratch.at<float>(o_matrix);
      pp.nn_key = up.nn_key;
      TS_RETURN_IF_ERROR(launch_pairs(pp, units, stream));
      LoopParams lp;
      lp.seed = sp;
      lp.matrix = pp.matrix;
      lp.unit0 = u0;
      lp.order = order;
      lp.dist = dist;
      kcenter_loop_kernel<<<static_cast<unsigned>(units), kLoopThreads, 0, stream>>>(lp);
      TS_CUDA_CHECK_LAUNCH("kcenter_loop_kernel");
    }
  } else {
    if (isolated) {
      pp.unit0 = 0;
      pp.matrix = nullptr;
      pp.nn_key = up.nn_key;
      TS_RETURN_IF_ERROR(launch_pairs(pp, U, stream));
    }
    int32_t* pick = scratch.at<int32_t>(o_pick);
    kcenter_seed_kernel<<<static_cast<unsigned>(U), kLoopThreads, 0, stream>>>(sp, order, dist, pick);
    TS_CUDA_CHECK_LAUNCH("kcenter_seed_kernel");
    StepParams tp;
    tp.rows = pp.rows;
    tp.sq = pp.sq;
    tp.ids = up.ids;
    tp.count = up.count;
    tp.N = N;
    tp.C = C;
    tp.S = S;
    tp.segments = segments;
    tp.k = k;
    tp.col_blocks = col_blocks;
    tp.metric = static_cast<int>(p.metric);
    tp.mind = scratch.at<float>(o_mind);
    tp.pick = pick;
    tp.offer_v = scratch.at<float>(o_offer_v);
    tp.offer_i = scratch.at<int32_t>(o_offer_i);
    tp.tickets = scratch.at<unsigned int>(o_tickets);
    tp.order = order;
    tp.dist = dist;
    TS_CUDA_TRY(cudaMemsetAsync(tp.tickets, 0, sizeof(unsigned int) * U, stream));
    TS_RETURN_IF_ERROR(check_grid_x(U * col_blocks, "kCenter"));
    for (int64_t t = 1; t < k; ++t) {
      tp.t = t;
      kcenter_step_kernel<<<static_cast<unsigned>(U * col_blocks), kStepThreads, 0, stream>>>(tp);
      TS_CUDA_CHECK_LAUNCH("kcenter_step_kernel");
    }
  }
  if (p.sorted.data != nullptr) {
    sort_picks_kernel<<<static_cast<unsigned>(U), kSortThreads, 0, stream>>>(order, k, p.sorted.ptr<int32_t>());
    TS_CUDA_CHECK_LAUNCH("sort_picks_kernel");
  }
  DeviceStatus hs;
  TS_RETURN_IF_ERROR(read_status(st, stream, &hs));
  TS_RETURN_IF_ERROR(features_status(hs, N));
  if (hs.flags & kTooFew) {
    int32_t have = 0;
    TS_CUDA_TRY(cudaMemcpyAsync(&have, up.count + hs.short_unit, sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    TS_CUDA_TRY(cudaStreamSynchronize(stream));
    return Status(Code::kRange, "expected at least k = " + std::to_string(k) +
                                    " tokens that are not excluded in segment " +
                                    std::to_string(hs.short_unit % segments) + " of batch " +
                                    std::to_string(hs.short_unit / segments) + " but it has " + std::to_string(have));
  }
  if (hs.flags & kSeedExcluded)
    return Status(Code::kRange, "expected the seed index " + std::to_string(p.seed_index) + " not to be excluded");
  return Status::Ok();
}

// ============================================================================
// k-medoids
// ============================================================================
//
// prep_kernel and pair_kernel as for k-center (every segment's S × S matrix,
// S <= 4096 by validate(), in waves), then kmedoids_loop_kernel: one
// persistent block per unit runs CenterCLIP's whole loop — KKZ seeding,
// assign / update until the medoids move less than `tol` or `max_iters`,
// id_sort, a last assignment — in the CPU's order of operations: the
// members' distance sums in float64 in token order, the movement as float64
// sums in channel then medoid order, so the iteration count and the medoids
// are the CPU's.
namespace {

constexpr int kMedoidThreads = 512;

struct MedoidParams {
  const void* x;           // [B, N, C] raw input (the movement is measured on it)
  int64_t stride_b, stride_n;
  const float* matrix;     // [units of the launch, S, S]
  const float* raw_norm;   // [B, N]
  int64_t N, C, S, segments, k, unit0;
  int64_t max_iters;
  double tol;
  int32_t* assign;         // [units, S] scratch: cluster (column of the medoid list) per token
  double* sums;            // [units, S] scratch: summed distance to the cluster's members
  float* mind;             // [units, S] scratch: KKZ min distances
  double* moved;           // [units, k] scratch: each medoid's movement
  int32_t* next;           // [units, k] scratch: the updated medoids
  int32_t* medoids;        // [B, segments·k] = [U, k]
  int32_t* assignments;    // [B, N]
  int32_t* iterations;     // [B, segments] = [U] or null
};

template <typename T>
__global__ void __launch_bounds__(kMedoidThreads) kmedoids_loop_kernel(const MedoidParams p) {
  __shared__ int32_t med[kMaxLoopTokens];    // medoid m's token (local), in KKZ/update order, later ascending
  __shared__ int32_t medof[kMaxLoopTokens];  // token -> its medoid column, -1 if none
  __shared__ int stop;
  const int64_t ul = blockIdx.x, u = p.unit0 + ul, S = p.S, k = p.k, C = p.C;
  const int64_t b = u / p.segments, seg = u % p.segments, base = seg * S;
  const float* D = p.matrix + ul * S * S;
  int32_t* assign = p.assign + ul * S;
  double* sums = p.sums + ul * S;
  float* mind = p.mind + ul * S;
  double* moved = p.moved + ul * k;
  int32_t* next = p.next + ul * k;
  const T* x = static_cast<const T*>(p.x) + b * p.stride_b;
  for (int64_t j = threadIdx.x; j < S; j += kMedoidThreads) medof[j] = -1;
  // KKZ: the largest raw norm, then the farthest point from the picks.
  float v = -INFINITY;
  int a = INT_MAX;
  for (int64_t j = threadIdx.x; j < S; j += kMedoidThreads)
    if (better(p.raw_norm[b * p.N + base + j], static_cast<int>(j), v, a)) {
      v = p.raw_norm[b * p.N + base + j];
      a = static_cast<int>(j);
    }
  block_argmax<kMedoidThreads>(v, a);
  if (a == INT_MAX) return;  // NaN input (reported)
  for (int64_t m = 0;; ++m) {
    if (threadIdx.x == 0) {
      med[m] = a;
      medof[a] = static_cast<int32_t>(m);
    }
    if (m + 1 == k) break;
    int bi;
    farthest_step<kMedoidThreads>(D + static_cast<int64_t>(a) * S, mind, S, a, m == 0, v, bi);
    if (bi == INT_MAX) return;
    a = bi;
  }
  __syncthreads();
  // Nearest medoid (ties to the earlier column); a medoid is its own.
  auto assign_all = [&]() {
    for (int64_t j = threadIdx.x; j < S; j += kMedoidThreads) {
      int32_t best = medof[j];
      if (best < 0) {
        best = 0;
        float bd = INFINITY;
        for (int64_t m = 0; m < k; ++m) {
          const float d = D[static_cast<int64_t>(med[m]) * S + j];
          if (d < bd) {
            bd = d;
            best = static_cast<int32_t>(m);
          }
        }
      }
      assign[j] = best;
    }
    __syncthreads();
  };
  int64_t iters = 0;
  while (iters < p.max_iters) {
    assign_all();
    for (int64_t i = threadIdx.x; i < S; i += kMedoidThreads) {
      const int32_t m = assign[i];
      double s = 0.0;
      for (int64_t j = 0; j < S; ++j)
        if (assign[j] == m) s = __dadd_rn(s, static_cast<double>(D[i * S + j]));
      sums[i] = s;
    }
    __syncthreads();
    for (int64_t m = threadIdx.x; m < k; m += kMedoidThreads) {
      double best = INFINITY;
      int32_t nx = med[m];
      for (int64_t i = 0; i < S; ++i)
        if (assign[i] == m && sums[i] < best) {
          best = sums[i];
          nx = static_cast<int32_t>(i);
        }
      next[m] = nx;
      const T* xn = x + (base + nx) * p.stride_n;
      const T* xo = x + (base + med[m]) * p.stride_n;
      double d2 = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const double d = __dsub_rn(static_cast<double>(load_f32(xn + c)), static_cast<double>(load_f32(xo + c)));
        d2 = __dadd_rn(d2, __dmul_rn(d, d));
      }
      moved[m] = sqrt(d2);
    }
    __syncthreads();
    for (int64_t m = threadIdx.x; m < k; m += kMedoidThreads) medof[med[m]] = -1;
    __syncthreads();
    for (int64_t m = threadIdx.x; m < k; m += kMedoidThreads) {
      med[m] = next[m];  // clusters are disjoint, so the new medoids are distinct
      medof[next[m]] = static_cast<int32_t>(m);
    }
    ++iters;
    if (threadIdx.x == 0) {
      double total = 0.0;  // in medoid order, as the CPU
      for (int64_t m = 0; m < k; ++m) total = __dadd_rn(total, moved[m]);
      stop = total < p.tol ? 1 : 0;
    }
    __syncthreads();
    if (stop) break;
  }
  // id_sort: medoids ascending (distinct: rank by counting), then assign again.
  for (int64_t m = threadIdx.x; m < k; m += kMedoidThreads) {
    int64_t rank = 0;
    for (int64_t q = 0; q < k; ++q) rank += med[q] < med[m] ? 1 : 0;
    next[rank] = med[m];
  }
  __syncthreads();
  for (int64_t m = threadIdx.x; m < k; m += kMedoidThreads) {
    med[m] = next[m];
    medof[next[m]] = static_cast<int32_t>(m);
    p.medoids[u * k + m] = static_cast<int32_t>(base + next[m]);
  }
  __syncthreads();
  assign_all();
  for (int64_t j = threadIdx.x; j < S; j += kMedoidThreads)
    p.assignments[b * p.N + base + j] = static_cast<int32_t>(seg * k + assign[j]);
  if (threadIdx.x == 0 && p.iterations != nullptr) p.iterations[u] = static_cast<int32_t>(iters);
}

}  // namespace

Status k_medoids(const KMedoidsParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2];
  const int64_t segments = p.segments, S = N / segments, U = B * segments, k = p.k;
  const int64_t wave = std::max<int64_t>(1, std::min<int64_t>(U, kMatrixBudget / (S * S)));
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  ScratchLayout L;
  UnitSetup setup;
  setup.add(L, p.x, segments, p.metric, /*nn=*/false);
  const size_t o_matrix = L.add<float>(wave * S * S);  // [wave, S, S]
  const size_t o_assign = L.add<int32_t>(wave * S);
  const size_t o_sums = L.add<double>(wave * S);
  const size_t o_mind = L.add<float>(wave * S);
  const size_t o_moved = L.add<double>(wave * k);
  const size_t o_next = L.add<int32_t>(wave * k);
  const size_t o_status = L.add<DeviceStatus>(1);
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  DeviceStatus* st = scratch.at<DeviceStatus>(o_status);
  TS_RETURN_IF_ERROR(clear_status(st, stream));
  TS_RETURN_IF_ERROR(setup.launch(scratch, p.x, nullptr, segments, k, p.metric, /*nn=*/false, st, stream));
  PairParams pp = setup.pairs;
  pp.matrix = scratch.at<float>(o_matrix);
  MedoidParams mp;
  mp.x = p.x.data;
  mp.stride_b = p.x.strides[0];
  mp.stride_n = p.x.strides[1];
  mp.matrix = pp.matrix;
  mp.raw_norm = setup.raw_norm;
  mp.N = N;
  mp.C = C;
  mp.S = S;
  mp.segments = segments;
  mp.k = k;
  mp.max_iters = p.max_iters;
  mp.tol = p.tol;
  mp.assign = scratch.at<int32_t>(o_assign);
  mp.sums = scratch.at<double>(o_sums);
  mp.mind = scratch.at<float>(o_mind);
  mp.moved = scratch.at<double>(o_moved);
  mp.next = scratch.at<int32_t>(o_next);
  mp.medoids = p.medoids.ptr<int32_t>();
  mp.assignments = p.assignments.ptr<int32_t>();
  mp.iterations = p.iterations.data != nullptr ? p.iterations.ptr<int32_t>() : nullptr;
  for (int64_t u0 = 0; u0 < U; u0 += wave) {
    const int64_t units = std::min(wave, U - u0);
    pp.unit0 = u0;
    mp.unit0 = u0;
    TS_RETURN_IF_ERROR(launch_pairs(pp, units, stream));
    TS_RETURN_IF_ERROR(TS_DISPATCH_FLOAT(p.x.dtype, "kMedoids", [&] {
      kmedoids_loop_kernel<scalar_t><<<static_cast<unsigned>(units), kMedoidThreads, 0, stream>>>(mp);
      TS_CUDA_CHECK_LAUNCH("kmedoids_loop_kernel");
      return Status::Ok();
    }));
  }
  DeviceStatus hs;
  TS_RETURN_IF_ERROR(read_status(st, stream, &hs));
  return features_status(hs, N);
}

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
  DeviceStatus hs[3];
  TS_RETURN_IF_ERROR(read_status(st, stream, &hs[0]));
  TS_RETURN_IF_ERROR(read_status(st + 1, stream, &hs[1]));
  TS_RETURN_IF_ERROR(read_status(st + 2, stream, &hs[2]));
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
// Greedy maximum coverage, bit for bit the CPU's (cpu/diversity.cc): best = 0;
// each step gain_j = Σ_r max(0, C[r, j] − best[r]) summed in float in
// ascending r, pick the argmax (ties to the lower j, never a picked or
// excluded column), best = max(best, C[:, j]). Three kernels, all on p.stream:
//   1. coverage_transpose_kernel: [B, R, N] (any dtype, strided B and R) →
//      scratch [B, N, Rp] f32 (Rp = R rounded up to 4: every column starts on
//      16 bytes, so a column's gain streams it with float4 loads), through a
//      32×32 shared tile so both the reads and the writes are coalesced. It
//      also records the lowest non-finite (batch, row) and which batch rows
//      hold one.
//   2. coverage_initial_gains_kernel: one thread per (batch, column): the
//      step-0 gains (best = 0), read from the input in its layout (coalesced
//      along N), spread over the whole GPU rather than one block per row.
//   3. coverage_greedy_kernel: ONE persistent block per batch row runs all k
//      steps — no launch per step — as a block-parallel exact lazy greedy:
//      - Every live column keeps an upper bound of its gain (the gain computed
//        at some earlier step) and the step it was computed at ("fresh" when
//        that is the current step). Gains only shrink as best grows, and in
//        float too: each term max(0, c − best) is monotone in best (rounding
//        is monotone) and the terms are added in the same order every time,
//        so a stale gain is never below the true one.
//      - Column j belongs to thread j % kCovThreads, which alone reads and
//        writes its bound and stamp, and keeps the best of its columns (bound
//        desc, index asc) in registers.
//      - A round: block_argmax over the threads' tops of (bound, 2·j + stale)
//        — the stale bit rides in the index's low bit, so ties still go to the
//        lower j and the winner says whether it is fresh. A fresh winner is
//        the step's argmax: every other fresh gain loses to it, and every
//        stale bound loses to it under (gain desc, index asc), so the true
//        gain below that bound does too. A stale winner: every thread whose
//        top is stale recomputes that column (in parallel, one sequential
//        float sum over r each) and rescans its columns; then the next round.
//        The winner's own thread always recomputes, so each losing round
//        freshens at least one column: a step ends after at most N rounds;
//        in practice after about 2 (the first freshens ~every thread's top;
//        2.0–2.5 per step on MMTok-like, tied and random data under the
//        emulator), i.e. about one column's sequential sum per step.
//      - The pick: its thread marks it picked, thread 0 writes order/gains,
//        all threads fold its column into best[].
//      At the end the picked marks, scanned in ascending j with warp ballots,
//      give `sorted`.
// Limits (one code path, the state's storage changes): up to kCovSharedCols
// (4,096) columns the bounds and stamps live in shared memory, above it in
// global scratch [B, N] (still one block per row and no per-step launch, but
// each rescan walks ⌈N/256⌉ columns per thread through L2); up to
// kCovSharedRows (2,048) rows best[] lives in shared memory, above it in
// global scratch [B, Rp]. N < 2^30 (the stale bit shares the index) and
// B·R < 2^31 (the device status keys a bad row as b·R + r); beyond those
// ERR_UNSUPPORTED. The transposed copy costs 4·B·N·Rp bytes of scratch.
// Errors: NaN/Inf → ERR_RANGE naming the lowest (batch, row), as the CPU
// (which scans batch by batch, row by row); fewer than k columns left by
// `exclude` → ERR_RANGE for the lowest such batch row; a batch row's NaN/Inf
// wins over its own and any later row's shortage, as in the CPU's order.

namespace {

constexpr int kCovThreads = 256;     // greedy block and initial-gain block size
constexpr int kCovTile = 32;         // transpose tile (32 × 32, 8 rows of threads)
constexpr int64_t kCovSharedCols = 4096;  // columns whose state fits in shared memory (32 KiB)
constexpr int64_t kCovSharedRows = 2048;  // rows of best[] that fit in shared memory (8 KiB)
constexpr int kCovExcluded = -1;     // stamp of a column removed by `exclude`
constexpr int kCovPicked = -2;       // stamp of a picked column
constexpr int kCovNoCandidate = 1 << 8;  // DeviceStatus flag: no live column left (a bug: live >= k was checked)

// One term of a gain: std::max(0.0f, c - best) exactly as the CPU writes it
// ((0 < d) ? d : 0 — so -0 and NaN go to +0 the same way).
__device__ __forceinline__ float coverage_term(float c, float best) {
  const float d = c - best;
  return 0.0f < d ? d : 0.0f;
}

// Σ_r coverage_term(col[r], best[r]) in ascending r, one float accumulator:
// the CPU's column_gain. col and best are 16-byte aligned (Rp-padded rows);
// the float4 loads only batch the reads, the additions stay sequential.
// best may point into shared or global memory (generic addressing).
__device__ __forceinline__ float coverage_gain(const float* __restrict__ col, const float* best, int64_t R) {
  float g = 0.0f;
  int64_t r = 0;
#pragma unroll 4  // 16 loads in flight; the additions still form one chain in r order
  for (; r + 4 <= R; r += 4) {
    const float4 c = *reinterpret_cast<const float4*>(col + r);
    const float4 m = *reinterpret_cast<const float4*>(best + r);
    g += coverage_term(c.x, m.x);
    g += coverage_term(c.y, m.y);
    g += coverage_term(c.z, m.z);
    g += coverage_term(c.w, m.w);
  }
  for (; r < R; ++r) g += coverage_term(col[r], best[r]);
  return g;
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

// Step-0 gains (best = 0): initial [B, N]. Grid: B × ⌈N/256⌉; consecutive
// threads read consecutive columns of each row (coalesced). The same terms in
// the same order as coverage_gain with best = 0, so the same bits.
template <typename T>
__global__ void __launch_bounds__(kCovThreads)
    coverage_initial_gains_kernel(const T* __restrict__ c, int64_t stride_b, int64_t stride_r, int64_t R, int64_t N,
                                  int64_t xblocks, float* __restrict__ initial) {
  const int64_t b = blockIdx.x / xblocks;
  const int64_t j = blockIdx.x % xblocks * kCovThreads + threadIdx.x;
  if (j >= N) return;
  const T* col = c + b * stride_b + j;
  float g = 0.0f;
#pragma unroll 8  // independent loads ahead of the one chain of additions
  for (int64_t r = 0; r < R; ++r) g += coverage_term(load_f32(col + r * stride_r), 0.0f);
  initial[b * N + j] = g;
}

struct CoverageGreedyArgs {
  const float* covt;       // [B, N, Rp] f32
  const float* initial;    // [B, N] step-0 gains
  const uint8_t* exclude;  // [B, N] nonzero = never picked; null: none
  const int* bad_batch;    // [B] nonzero: the batch row holds NaN/Inf (skipped; the call fails)
  int64_t N, R, Rp, k;
  float* bound_g;          // [B, N] when N > kCovSharedCols, else null (shared memory)
  int* stamp_g;            // [B, N] idem
  float* best_g;           // [B, Rp] when R > kCovSharedRows, else null (shared memory)
  int32_t* order;          // [B, k] pick order
  int32_t* sorted;         // [B, k] ascending; null: not wanted
  float* gains;            // [B, k]; null: not wanted
  int* available;          // [B] live columns, written only for a row with fewer than k
  DeviceStatus* st;
};

// The best of this thread's columns (j ≡ tid mod kThreads): largest bound,
// then lowest j; (-inf, INT_MAX) when it has no live column.
template <int kThreads>
__device__ __forceinline__ void coverage_thread_top(const float* bound, const int* stamp, int64_t N, float& v,
                                                    int& j) {
  v = -INFINITY;
  j = INT_MAX;
  for (int64_t c = threadIdx.x; c < N; c += kThreads)
    if (stamp[c] >= 0 && better(bound[c], static_cast<int>(c), v, j)) {
      v = bound[c];
      j = static_cast<int>(c);
    }
}

// One block per batch row, all k steps (see the section comment). At most 4
// blocks per SM (64 registers): shared memory allows 5, but for 5 ptxas
// (sm_90) squeezes the kernel into 48 registers and spills.
template <int kThreads>
__global__ void __launch_bounds__(kThreads, 4) coverage_greedy_kernel(CoverageGreedyArgs a) {
  __shared__ float bound_s[kCovSharedCols];  // per column: its gain at step stamp (an upper bound later)
  __shared__ int stamp_s[kCovSharedCols];    // per column: that step, or kCovExcluded / kCovPicked
  __shared__ __align__(16) float best_s[kCovSharedRows];  // per row: the best coverage picked so far
  __shared__ int warp_count[kThreads / 32];
  const int64_t b = blockIdx.x, N = a.N, R = a.R, k = a.k;
  const int tid = static_cast<int>(threadIdx.x);
  if (a.bad_batch[b] != 0) return;  // uniform: the call reports the NaN/Inf, outputs are not needed
  float* bound = a.bound_g ? a.bound_g + b * N : bound_s;
  int* stamp = a.stamp_g ? a.stamp_g + b * N : stamp_s;
  float* best = a.best_g ? a.best_g + b * a.Rp : best_s;
  const float* covt = a.covt + b * N * a.Rp;  // [N, Rp] of this batch row
  int live = 0;
  for (int64_t j = tid; j < N; j += kThreads) {
    const bool out = a.exclude != nullptr && a.exclude[b * N + j] != 0;
    bound[j] = out ? -INFINITY : a.initial[b * N + j];
    stamp[j] = out ? kCovExcluded : 0;  // step 0's gains are exact: fresh at step 0
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
  float top_v;
  int top_j;
  coverage_thread_top<kThreads>(bound, stamp, N, top_v, top_j);
  for (int64_t t = 0; t < k; ++t) {
    const int step = static_cast<int>(t);
    float gain;
    int pick;
    for (;;) {
      const bool has = top_j != INT_MAX;
      const bool stale = has && stamp[top_j] != step;
      float v = top_v;
      int code = has ? top_j * 2 + (stale ? 1 : 0) : INT_MAX;
      block_argmax<kThreads>(v, code);
      if (code == INT_MAX) {  // uniform; cannot happen with live >= k, but never index with it
        if (tid == 0) atomicOr(&a.st->flags, kCovNoCandidate);
        return;
      }
      if ((code & 1) == 0) {  // fresh: the exact argmax of this step
        gain = v;
        pick = code >> 1;
        break;
      }
      if (stale) {  // a stale winner: every stale top is recomputed, in parallel
        bound[top_j] = coverage_gain(covt + static_cast<int64_t>(top_j) * a.Rp, best, R);
        stamp[top_j] = step;
        coverage_thread_top<kThreads>(bound, stamp, N, top_v, top_j);
      }
    }
    if (pick % kThreads == tid) {  // the pick was its owner's top
      stamp[pick] = kCovPicked;
      bound[pick] = -INFINITY;
      coverage_thread_top<kThreads>(bound, stamp, N, top_v, top_j);
    }
    if (tid == 0) {
      a.order[b * k + t] = pick;
      if (a.gains != nullptr) a.gains[b * k + t] = gain;
    }
    // Every read of best[] in this step happened before the last argmax's
    // barriers; the update is published by the barrier below.
    const float* col = covt + static_cast<int64_t>(pick) * a.Rp;
    for (int64_t r = tid; r < R; r += kThreads) {
      const float c = col[r], m = best[r];
      best[r] = m < c ? c : m;  // std::max(best, c), as the CPU
    }
    __syncthreads();
  }
  if (a.sorted != nullptr) {  // uniform
    // The picked marks in ascending j, kThreads columns per pass: column
    // j0 + tid is this thread's own, its rank = picks before it.
    const int lane = tid % 32, w = tid / 32;
    int64_t base = 0;
    for (int64_t j0 = 0; j0 < N; j0 += kThreads) {
      const int64_t j = j0 + tid;
      const bool picked = j < N && stamp[j] == kCovPicked;
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
  if (N >= (int64_t{1} << 30))
    return Status(Code::kUnsupported, "maxCoverage: the CUDA kernel takes fewer than 2^30 columns but got N = " +
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
  const size_t o_init = L.add<float>(B * N);                           // [B, N]
  const size_t o_bad = L.add<int>(B);                                  // [B]
  const size_t o_avail = L.add<int>(B);                                // [B]
  const size_t o_status = L.add<DeviceStatus>(1);
  const size_t o_bound = L.add<float>(global_cols ? B * N : 0);        // [B, N] above kCovSharedCols
  const size_t o_stamp = L.add<int>(global_cols ? B * N : 0);          // [B, N] idem
  const size_t o_best = L.add<float>(global_rows ? B * Rp : 0);        // [B, Rp] above kCovSharedRows
  Scratch scratch(c.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  float* covt = scratch.at<float>(o_covt);
  float* initial = scratch.at<float>(o_init);
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
        x, c.strides[0], c.strides[1], R, N, xblocks, initial);
    TS_CUDA_CHECK_LAUNCH("coverage_initial_gains_kernel");
    return Status::Ok();
  }));
  CoverageGreedyArgs a;
  a.covt = covt;
  a.initial = initial;
  a.exclude = p.exclude.data ? p.exclude.ptr<const uint8_t>() : nullptr;
  a.bad_batch = bad_batch;
  a.N = N;
  a.R = R;
  a.Rp = Rp;
  a.k = k;
  a.bound_g = global_cols ? scratch.at<float>(o_bound) : nullptr;
  a.stamp_g = global_cols ? scratch.at<int>(o_stamp) : nullptr;
  a.best_g = global_rows ? scratch.at<float>(o_best) : nullptr;
  a.order = p.order.ptr<int32_t>();
  a.sorted = p.sorted.data ? p.sorted.ptr<int32_t>() : nullptr;
  a.gains = p.gains.data ? p.gains.ptr<float>() : nullptr;
  a.available = available;
  a.st = st;
  coverage_greedy_kernel<kCovThreads><<<static_cast<unsigned>(B), kCovThreads, 0, stream>>>(a);
  TS_CUDA_CHECK_LAUNCH("coverage_greedy_kernel");
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

// ============================================================================
// STC scores
// ============================================================================
//
// The authors' sequence (include/tokensieve/diversity.h) in six launches on
// p.stream and one status read-back (NaN/Inf in x). The CPU back end and this
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
  DeviceStatus host;
  TS_RETURN_IF_ERROR(read_status(st, stream, &host));
  if (host.flags & kBadValue)
    return Status(Code::kRange, "expected finite features but x[" + std::to_string(host.bad_token / T) + ", " +
                                    std::to_string(host.bad_token % T) + "] holds NaN or Inf");
  return Status::Ok();
}

}  // namespace cuda
}  // namespace tokensieve
