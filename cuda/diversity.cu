// CUDA diversity family: greedy k-center (farthest point) and k-medoids,
// per contiguous segment of tokens. The rows come from launch_prep and the
// pair distances from tile_dots (cuda/features.cuh, shared with MMTok's
// coverage matrix in cuda/coverage.cu).
//
// Exactness. Every distance is computed from one dot product, and every dot
// product as one sequential fmaf chain over the channels — the chain of the
// CPU back end's gemm_tile (cpu/gemm.h). Norms are float64 sums in channel
// order, as on the CPU. So with the AVX2 CPU back end the distances are
// bit-identical and the selections (ties included: the lower index wins) are
// the same tokens; test/cuda-emu/diversity_test.cc checks this.
//
// A call that waits (check_errors) ends by reading back one small status
// record (NaN/Inf input, too few tokens left by `exclude`, an excluded
// seed); one that does not wait reads nothing back.
//
// Sections: k-center · k-medoids.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "cuda/features.cuh"
#include "tokensieve/diversity.h"

namespace tokensieve {
namespace cuda {

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
  // The data errors live on the device: reading them drains the stream, so
  // only a call that waits (check_errors) does; the rest stays stream-ordered.
  if (!p.check_errors) return Status::Ok();
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
  if (!p.check_errors) return Status::Ok();  // a read-back drains the stream: only when waiting
  DeviceStatus hs;
  TS_RETURN_IF_ERROR(read_status(st, stream, &hs));
  return features_status(hs, N);
}

}  // namespace cuda
}  // namespace tokensieve
