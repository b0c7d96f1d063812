// CUDA token merging: bipartite soft matching, scatter merge, contextual merge.
//
// bipartite_match (all on the stream; the flags — split validity, finite
// input — are read back only when the call waits, device_checks: without
// that the host never blocks, and a bad split or NaN goes unreported):
//   1. normalise_rows_kernel: 8 rows per warp, metric / ‖metric‖ in f32 (the
//      norm summed in f64 in the CPU's order, so every value has the CPU's
//      bits) into scratch [B, N, Cf] twice: exactly, and rounded to tf32
//      (cvt.rna) for the tensor cores; a flag records NaN/Inf.
//   2. score_candidates_tf32_kernel: a TF32 mma.sync GEMM a·bᵀ (128 × 128
//      block tiles, cp.async double-buffered 16-channel k-tiles) whose
//      epilogue keeps, per (a-row, column tile), the approximate maximum, the
//      count of entries within the candidate window 2Δ of it and the first
//      two such columns (TileCandidates); the [Na, Nb] scores are never
//      written. Δ (tf32_window) bounds the TF32 score's distance from the
//      exact f32 one.
//   2b. recheck_kernel: one warp per a-row rescores every column that can
//      still be the row's maximum (approximate score within 2Δ of the row's
//      approximate maximum) with the CPU's sequential fmaf chain over the
//      exact rows: best score and first argmax are the CPU's bits.
//   3. rank_kernel: the stable descending rank of every a-row's best score
//      (count of rows that beat it: larger score, or equal and lower index),
//      so ties go to the lower index exactly as the CPU's stable sort.
//   4. plan_kernel: sources = ranks < r, unmerged = the rest (in rank order,
//      or ascending with CLS), and the output slot of every token.
// merge: a per-batch CSR of each slot's members in token order (csr_kernel,
// one block per batch row), then one block per (slot, batch row) reduces its members
// in that order over the channels. A bad assign value flags the CSR, and the
// reduction then does nothing; the flag is read back only when the call
// waits (device_checks).
// contextual_merge: normalise the remaining tokens (only those are read and
// checked, as on the CPU), each member's argmax target (sequential fmaf
// chains again), CSR per target in member order, target + mean(members); the
// NaN flag is read back only when the call waits (device_checks). A device
// keptIndices or keepMask is turned into the remaining tokens by kernels; a
// mask's count stays on the device (RemainingCount), so nothing is read back
// before the work is enqueued.
// The split is checked to be a partition of [0, N) first (split_count /
// split_check kernels; the later kernels do nothing through a bad split, and
// the one read-back at the end reports it): a bad one would leave tokens
// unassigned.
//
// MatchPrecision::kF32 (the default) runs steps 1–2b above.
// MatchPrecision::kBF16 replaces them with bf16 tensor-core steps (the rank
// and plan kernels are shared):
//   1'. normalise_rows_kernel into bf16: 8 rows per warp; the four interleaved f64
//       partial sums of a row are four lanes (the CPU's order again, so the
//       f32 norm and every normalised value are the CPU's bits), then the
//       warp writes each row as bf16 (round to nearest even) into scratch
//       [B, N, Cp], Cp = C rounded up to the k-tile, zero padded.
//   2'. score_argmax_bf16_kernel: a WMMA GEMM a·bᵀ (bf16 16×16×16 fragments,
//       f32 accumulators) fused with the row max / first argmax; the scores
//       never leave the block. One block per 128 a-rows × 128 b-columns tile;
//       each folds its rows' best into a per-row 64-bit key with atomicMax
//       (see match_key), so the result does not depend on block order.
//   2''. key_decode_kernel: keys → best score / argmax as step 2 writes them.
#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "cuda/mma.cuh"
#include "tokensieve/merge.h"

namespace tokensieve {
namespace cuda {
namespace {

// Explicitly rounded arithmetic: nvcc would otherwise contract a + b·c into
// an fma where the CPU (baseline x86-64, no contraction) rounds twice. (The
// emulator, test/cuda-emu, supplies these intrinsics too.)
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

constexpr int kThreads = 256;
constexpr int kNoBadSplit = 0x7f7f7f7f;  // split_check's "no bad position" (memset 0x7f)

// One thread per token: the f64 sum of squares runs in the CPU's order (four
// interleaved partial sums), so the f32 norm — and every normalised value —
// is bit-identical to the CPU's.
template <typename T>
__global__ void normalise_kernel(const T* __restrict__ x, int64_t stride_b, int64_t stride_n, int64_t B, int64_t N,
                                 int64_t C, const int32_t* __restrict__ rows, int64_t R, const int* __restrict__ live,
                                 float* __restrict__ out, int* flag) {
  // Thread t: token rows[t] of batch row t / R (rows [B, R]); with `live`
  // (a count on the device) only the first *live entries of each row.
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= B * R || (live != nullptr && t % R >= *live)) return;
  const int64_t b = t / R, n = rows[t];
  const T* row = x + b * stride_b + n * stride_n;
  double s4[4] = {0, 0, 0, 0};  // element d into sum d % 4, as cpu/merge.cc
  bool finite = true;
  for (int64_t d = 0; d < C; ++d) {
    const float v = load_f32(row + d);
    finite = finite && isfinite(v);
    s4[d & 3] += static_cast<double>(v) * v;
  }
  const double ss = (s4[0] + s4[1]) + (s4[2] + s4[3]);
  if (!finite) atomicOr(flag, 1);
  const float norm = static_cast<float>(sqrt(ss));
  float* dst = out + (b * N + n) * C;
  for (int64_t d = 0; d < C; ++d) dst[d] = norm > 0.0f ? div_rn(load_f32(row + d), norm) : 0.0f;
}

// ---- MatchPrecision::kBF16: tensor-core scores ----------------------------
//
// Tiles, reasoned from the H100 numbers of specs/performance.md (nothing here
// was tuned on a GPU):
// * 128 × 128 block tiles, 8 warps in a 4 × 2 grid, each warp 32 rows × 64
//   columns = 2 × 4 accumulator fragments (64 f32 registers per thread).
//   Per 16-channel step a warp loads 2 a- and 4 b-fragments for 8 MMAs, and
//   the block moves (128 + 128)·2 bytes per channel for 2·128·128 FLOPs: 64
//   FLOP per byte of shared/L2 traffic, the usual balance for mma.sync-era
//   tiles. __launch_bounds__(256, 2) caps registers at 128 so two blocks
//   (16 warps) share an SM and hide each other's loads and barriers.
// * k-tiles of 32 channels, two shared-memory stages (register-staged double
//   buffering: the next tile's global loads are in flight while the tensor
//   cores work on the current one; one __syncthreads per k-tile). Rows are
//   padded to 40 bf16 (80 bytes) so 8 consecutive rows' 16-byte chunks fall
//   in distinct banks. 2 × 256 × 80 = 40 KiB of operands + 2 KiB of row
//   offsets stays under the 48 KiB of static shared memory (the emulator has
//   no dynamic shared memory); the epilogue reuses the operand stages.
// * One tile per block: at N = 12,544 (Na = Nb = 6,272) that is 49 × 49 =
//   2,401 blocks, about 9 rounds of the 264 resident blocks of 132 SMs, and
//   the rows' results meet in global memory through atomicMax on a 64-bit
//   key — deterministic, whatever the order. Blocks are rastered in groups
//   of 16 row tiles (the 264 resident blocks touch ~16 a-tiles and ~17
//   b-tiles, ~33 MB at C = 4,096, inside the 50 MB L2). A tiny N is one block.
constexpr int kTcM = 128;                               // a-rows per block tile
constexpr int kTcN = 128;                               // b-columns per block tile
constexpr int kTcK = 32;                                // channels per k-tile (one shared-memory stage)
constexpr int kTcWarpsM = 4, kTcWarpsN = 2;             // warp grid of a block
constexpr int kTcWarpM = kTcM / kTcWarpsM;              // 32 rows per warp
constexpr int kTcWarpN = kTcN / kTcWarpsN;              // 64 columns per warp
constexpr int kTcFragsM = kTcWarpM / 16, kTcFragsN = kTcWarpN / 16;  // 2 × 4 fragments per warp
constexpr int kTcThreads = 32 * kTcWarpsM * kTcWarpsN;  // 256
constexpr int kTcLds = kTcK + 8;                        // shared row pitch, bf16 elements (80 bytes)
constexpr int kTcEpiLd = kTcWarpN + 4;                  // epilogue staging pitch, floats
constexpr int kTcGroupRows = 16;                        // row tiles per raster group
constexpr int kTcStage = (kTcM + kTcN) * kTcLds;        // bf16 per stage: a rows, then b rows
constexpr int kTcRowChunks = kTcK / 8;                  // 16-byte chunks per tile row per k-tile
constexpr int kTcChunks = (kTcM + kTcN) * kTcRowChunks / kTcThreads;  // 16-byte chunks per thread per k-tile
constexpr int kTcOperandBytes = 2 * kTcStage * 2;
constexpr int kTcEpiBytes = kTcWarpsM * kTcWarpsN * 16 * kTcEpiLd * 4;
constexpr int kTcSmemBytes = kTcOperandBytes > kTcEpiBytes ? kTcOperandBytes : kTcEpiBytes;
constexpr int kNormRowsPerWarp = 8;                     // normalise_rows_kernel: 4 lanes per row
static_assert(kTcChunks * kTcThreads == (kTcM + kTcN) * kTcRowChunks, "k-tile chunks must split evenly");
static_assert(kTcSmemBytes + (kTcM + kTcN) * 8 <= 48 * 1024, "static shared memory is limited to 48 KiB");
static_assert(kTcK % 16 == 0 && kTcLds % 8 == 0 && kTcEpiLd % 4 == 0, "WMMA ldm rules");

__device__ __forceinline__ uint4 load16(const __nv_bfloat16* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ void store16(__nv_bfloat16* p, uint4 v) { *reinterpret_cast<uint4*>(p) = v; }
__device__ __forceinline__ __nv_bfloat16 to_bf16(float v) { return __float2bfloat16_rn(v); }

// A row's candidate (score v, column j) as one 64-bit key whose unsigned
// order is the selection order: the float's order-preserving key (float_key,
// cuda/common.cuh; -0 counted as +0 because they compare equal) above
// 0xFFFFFFFF − j, so a larger score wins and an
// equal score goes to the lower column (the CPU's first maximum). Every
// finite score gives a key > 0; 0 means "no candidate".
__device__ __forceinline__ unsigned long long match_key(float v, int64_t j) {
  return (static_cast<unsigned long long>(float_key(v)) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(j));
}

__device__ __forceinline__ unsigned long long shfl_xor_u64(unsigned long long v, int o) {
  const int lo = __shfl_xor_sync(0xffffffffu, static_cast<int>(static_cast<uint32_t>(v)), o);
  const int hi = __shfl_xor_sync(0xffffffffu, static_cast<int>(static_cast<uint32_t>(v >> 32)), o);
  return (static_cast<unsigned long long>(static_cast<uint32_t>(hi)) << 32) | static_cast<uint32_t>(lo);
}

// Normalised rows as bf16 or tf32, [B, N, Cp] (channels C..Cp-1 zero), and
// optionally exactly (f32, the CPU's bits). Warp w owns
// rows 8w .. 8w+7. Phase 1: lane 4r + q sums the squares of channels
// d ≡ q (mod 4) of row r in f64 (cpu/merge.cc's partial sum q), and two xor
// shuffles form (s0 + s1) + (s2 + s3) in every lane of the quad (a + b ==
// b + a exactly). Phase 2: the whole warp divides each row by its f32 norm
// (IEEE division) and rounds to bf16, 32 channels at a time (coalesced).
__device__ __forceinline__ __nv_bfloat16 round_operand(float v, __nv_bfloat16*) { return to_bf16(v); }
__device__ __forceinline__ float round_operand(float v, float*) { return to_tf32(v); }

template <typename T, typename Out>
__global__ void normalise_rows_kernel(const T* __restrict__ x /* [B, N, C] strided */, int64_t stride_b,
                                      int64_t stride_n, int64_t B, int64_t N, int64_t C, int64_t Cp,
                                      Out* __restrict__ out /* [B, N, Cp] */, float* __restrict__ exact /* [B, N, Cp] or null */,
                                      int* flag) {
  const int lane = threadIdx.x % 32;
  const int64_t row0 = (blockIdx.x * static_cast<int64_t>(kThreads / 32) + threadIdx.x / 32) * kNormRowsPerWarp;
  const int64_t rows = B * N;
  const int64_t t = row0 + lane / 4;
  const int q = lane % 4;
  double s = 0.0;
  bool finite = true;
  if (t < rows) {
    const T* row = x + (t / N) * stride_b + (t % N) * stride_n;
    for (int64_t d = q; d < C; d += 4) {
      const float v = load_f32(row + d);
      finite = finite && isfinite(v);
      s += static_cast<double>(v) * v;  // exact product: an fma rounds the same
    }
  }
  if (!finite) atomicOr(flag, 1);
  s += __shfl_xor_sync(0xffffffffu, s, 1);  // lanes q = 0, 1: s0 + s1; q = 2, 3: s2 + s3
  s += __shfl_xor_sync(0xffffffffu, s, 2);  // (s0 + s1) + (s2 + s3)
  const float norm = static_cast<float>(sqrt(s));
  for (int k = 0; k < kNormRowsPerWarp; ++k) {
    const float nk = __shfl_sync(0xffffffffu, norm, 4 * k);
    const int64_t tk = row0 + k;
    if (tk >= rows) break;  // the same in every lane of the warp
    const T* row = x + (tk / N) * stride_b + (tk % N) * stride_n;
    for (int64_t d = lane; d < Cp; d += 32) {
      const float v = d < C && nk > 0.0f ? div_rn(load_f32(row + d), nk) : 0.0f;
      if (exact != nullptr) exact[tk * Cp + d] = v;
      out[tk * Cp + d] = round_operand(v, out);
    }
  }
}

// One k-tile of the block's 256 tile rows (a rows 0..127, b rows 128..255)
// into registers: chunk c is tile row c / kTcRowChunks, channels
// (c % kTcRowChunks)·8 .. +8, so consecutive threads read one row's 64
// contiguous bytes; rows past the end (offset -1) are zeros.
__device__ __forceinline__ void fetch_tile(uint4 (&staged)[kTcChunks], const __nv_bfloat16* __restrict__ rows,
                                           const int64_t* row_off, int64_t k0) {
  for (int q = 0; q < kTcChunks; ++q) {
    const int c = threadIdx.x + q * kTcThreads;
    const int64_t off = row_off[c / kTcRowChunks];
    staged[q] = off >= 0 ? load16(rows + off + k0 + (c % kTcRowChunks) * 8) : uint4{0u, 0u, 0u, 0u};
  }
}

// ... and from registers into a shared-memory stage [kTcM + kTcN][kTcLds].
__device__ __forceinline__ void put_tile(__nv_bfloat16* stage, const uint4 (&staged)[kTcChunks]) {
  for (int q = 0; q < kTcChunks; ++q) {
    const int c = threadIdx.x + q * kTcThreads;
    store16(stage + (c / kTcRowChunks) * kTcLds + (c % kTcRowChunks) * 8, staged[q]);
  }
}

// rows: bf16 normalised [B, N, Cp]; a-rows are tokens a_tok[i], columns
// tokens b_tok[j]; keys [B, Na] zeroed, each row's best folded in with
// atomicMax (match_key). grid: [B × row tiles × column tiles].
__global__ void __launch_bounds__(kTcThreads, 2)
    score_argmax_bf16_kernel(const __nv_bfloat16* __restrict__ rows /* [B, N, Cp] */, int64_t N, int64_t Cp,
                             const int32_t* __restrict__ a_tok /* [Na] */, int64_t Na,
                             const int32_t* __restrict__ b_tok /* [Nb] */, int64_t Nb, bool skip_col0,
                             int64_t row_tiles, int64_t col_tiles, unsigned long long* __restrict__ keys /* [B, Na] */,
                             int* flag, const int* __restrict__ bad_split) {
  if (*bad_split != kNoBadSplit) return;  // tokens out of range: nothing may be read through them
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // bf16 WMMA needs sm_80 (only reachable in a build for older archs).
  if (threadIdx.x == 0) atomicOr(flag, 4);
#else
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(128) unsigned char smem[kTcSmemBytes];  // 2 stages [kTcM + kTcN][kTcLds] bf16; epilogue [8][16][kTcEpiLd] f32
  __shared__ int64_t row_off[kTcM + kTcN];  // element offset in `rows` of each tile row (a, then b); -1: past the end
  const int64_t tiles = row_tiles * col_tiles;
  const int64_t b = blockIdx.x / tiles;
  // Grouped raster: consecutive blocks walk the columns of kTcGroupRows row
  // tiles, so the blocks resident at once share a- and b-tiles in L2.
  const int64_t t = blockIdx.x % tiles;
  const int64_t rt0 = t / (kTcGroupRows * col_tiles) * kTcGroupRows;
  const int64_t group_rows = row_tiles - rt0 < kTcGroupRows ? row_tiles - rt0 : kTcGroupRows;
  const int64_t in_group = t - rt0 * col_tiles;
  const int64_t i0 = (rt0 + in_group % group_rows) * kTcM;  // first a-row of the tile
  const int64_t j0 = in_group / group_rows * kTcN;          // first b-column of the tile
  for (int e = threadIdx.x; e < kTcM + kTcN; e += kTcThreads) {
    const int64_t idx = e < kTcM ? i0 + e : j0 + (e - kTcM);
    const bool in = e < kTcM ? idx < Na : idx < Nb;
    row_off[e] = in ? (b * N + (e < kTcM ? a_tok[idx] : b_tok[idx])) * Cp : -1;
  }
  __syncthreads();
  __nv_bfloat16* stage = reinterpret_cast<__nv_bfloat16*>(smem);
  uint4 staged[kTcChunks];  // the next k-tile, in flight during the MMAs
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp % kTcWarpsM, wn = warp / kTcWarpsM;  // the warp's 32 × 64 block of the tile
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kTcFragsM][kTcFragsN];
  for (int g = 0; g < kTcFragsM; ++g)
    for (int f = 0; f < kTcFragsN; ++f) wmma::fill_fragment(acc[g][f], 0.0f);
  const int64_t nk = Cp / kTcK;
  fetch_tile(staged, rows, row_off, 0);
  put_tile(stage, staged);
  __syncthreads();
  for (int64_t kt = 0; kt < nk; ++kt) {
    const int s = static_cast<int>(kt & 1);
    if (kt + 1 < nk) fetch_tile(staged, rows, row_off, (kt + 1) * kTcK);
    const __nv_bfloat16* sa = stage + s * kTcStage + (wm * kTcWarpM) * kTcLds;         // [32][kTcLds] a rows
    const __nv_bfloat16* sb = stage + s * kTcStage + (kTcM + wn * kTcWarpN) * kTcLds;  // [64][kTcLds] b rows = bᵀ col-major
#pragma unroll
    for (int kk = 0; kk < kTcK; kk += 16) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> bf[kTcFragsN];
      for (int f = 0; f < kTcFragsN; ++f) wmma::load_matrix_sync(bf[f], sb + f * 16 * kTcLds + kk, kTcLds);
      for (int g = 0; g < kTcFragsM; ++g) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> af;
        wmma::load_matrix_sync(af, sa + g * 16 * kTcLds + kk, kTcLds);
        for (int f = 0; f < kTcFragsN; ++f) wmma::mma_sync(acc[g][f], af, bf[f], acc[g][f]);
      }
    }
    if (kt + 1 < nk) put_tile(stage + (s ^ 1) * kTcStage, staged);  // the other stage was last read before the previous barrier
    __syncthreads();
  }
  // Epilogue (the stages are dead after the last barrier): per 16-row group,
  // the warp's 4 accumulators go to its [16][kTcEpiLd] staging tile; lanes
  // 2r and 2r + 1 scan row r's two 32-column halves in increasing column
  // order (strict '>': the first maximum), then keep the larger key.
  float* epi = reinterpret_cast<float*>(smem) + warp * 16 * kTcEpiLd;
  const int er = lane / 2, eh = lane % 2;
  const int64_t jc = j0 + wn * kTcWarpN + eh * 32;  // first column of this lane's half
  for (int g = 0; g < kTcFragsM; ++g) {
    for (int f = 0; f < kTcFragsN; ++f)
      wmma::store_matrix_sync(epi + f * 16, acc[g][f], kTcEpiLd, wmma::mem_row_major);
    __syncwarp();
    float bv = -INFINITY;
    int64_t bj = -1;
    for (int c = 0; c < 32; ++c) {
      const int64_t j = jc + c;
      const float v = epi[er * kTcEpiLd + eh * 32 + c];
      if (j < Nb && !(skip_col0 && j == 0) && v > bv) {
        bv = v;
        bj = j;
      }
    }
    unsigned long long key = bj >= 0 ? match_key(bv, bj) : 0ull;
    const unsigned long long other = shfl_xor_u64(key, 1);
    key = other > key ? other : key;
    const int64_t i = i0 + wm * kTcWarpM + g * 16 + er;
    if (eh == 0 && key != 0 && i < Na) atomicMax(keys + b * Na + i, key);
    __syncwarp();  // every lane has read the staging tile before the next group overwrites it
  }
#endif
}

// ---- MatchPrecision::kF32: TF32 tensor-core scores + exact recheck --------
//
// The score GEMM runs on TF32 mma.sync (m16n8k8, f32 accumulators) over the
// normalised rows rounded to tf32 (cvt.rna); its approximate scores s̃ only
// nominate candidates, and every candidate that can still be a row's maximum
// is recomputed exactly (recheck_kernel), as the CPU computes it, so the
// best score and the argmax are the exact-f32 ones (see tf32_window).
//
// Tiles (reasoned, not tuned: no GPU was available to this change):
// * 128 × 128 block tiles as the bf16 path, 8 warps in a 2 × 4 grid, each
//   warp 64 rows × 32 columns = 4 × 4 m16n8 accumulators (64 f32 registers
//   per thread). Per 8-channel step a warp issues 4 ldmatrix.x4 for its A
//   fragments and 2 for its B fragments (a tf32 element is two b16 halves,
//   so ldmatrix's 8 × 8 b16 matrix is 8 rows × 4 tf32 channels, exactly an
//   m16n8k8 fragment quarter) for 16 MMAs.
// * k-tiles of 16 channels, two shared-memory stages filled by cp.async
//   (16 bytes per copy, 4 per thread per k-tile): the next k-tile lands while
//   the tensor cores work on the current one, one __syncthreads per k-tile.
//   Rows are padded to 20 floats (80 bytes): 8 consecutive rows' 16-byte
//   ldmatrix rows fall in distinct bank groups. 2 × 256 × 80 = 40 KiB, plus
//   2 KiB of row offsets and 2 KiB of epilogue state, stays within the 48 KiB
//   of static shared memory (the emulator has no dynamic shared memory).
//   The rows are stored with Cp = C rounded up to 16 (zero padded) so every
//   cp.async source is 16-byte aligned.
// * Epilogue, in registers (the scores never leave the block): per tile row
//   the tile's approximate maximum m (shared atomicMax on float_key), then
//   every entry within the window 2Δ of m is counted and the first two
//   found are kept: TileCandidates [B, Na, column tiles].
// * recheck_kernel, one warp per a-row: M̃ = max over tiles of m; a tile with
//   m >= M̃ − 2Δ contributes its kept columns when it counted at most two
//   (then they are all of its entries >= m − 2Δ ⊇ those >= M̃ − 2Δ), else
//   all of its columns. Each candidate's score is recomputed as one
//   sequential fmaf chain over the exact normalised f32 rows — the chain of
//   cpu/isa gemm_tile (acc = fma(a[d], b[d], acc), d ascending, from +0) —
//   so the best score has the CPU's bits and ties go to the lower column.
//   Random rows at C = 1,024 give about one candidate per row; a row of many
//   near-equal columns (duplicated tokens) costs up to a full tile per tile.
constexpr int kTfK = 16;                                // channels per k-tile (one shared-memory stage)
constexpr int kTfLds = kTfK + 4;                        // shared row pitch, floats (80 bytes)
constexpr int kTfWarpsM = 2, kTfWarpsN = 4;             // warp grid of a block
constexpr int kTfWarpM = kTcM / kTfWarpsM;              // 64 rows per warp
constexpr int kTfWarpN = kTcN / kTfWarpsN;              // 32 columns per warp
constexpr int kTfFragsM = kTfWarpM / 16, kTfFragsN = kTfWarpN / 8;  // 4 × 4 m16n8 accumulators per warp
constexpr int kTfStage = (kTcM + kTcN) * kTfLds;        // floats per stage: a rows, then b rows
constexpr int kTfRowChunks = kTfK / 4;                  // 16-byte chunks per tile row per k-tile
constexpr int kTfChunks = (kTcM + kTcN) * kTfRowChunks / kTcThreads;  // cp.async copies per thread per k-tile
constexpr int kTfPad = 16;                              // Cp: C rounded up to this
constexpr int kRecheckWarps = kThreads / 32;            // recheck_kernel: a-rows per block
static_assert(kTfChunks * kTcThreads == (kTcM + kTcN) * kTfRowChunks, "k-tile copies must split evenly");
static_assert(2 * kTfStage * 4 + (kTcM + kTcN) * 8 + kTcM * 16 <= 48 * 1024, "static shared memory is limited to 48 KiB");
static_assert(kTfWarpsM * kTfWarpsN * 32 == kTcThreads && kTfPad % kTfK == 0, "tile shape");

// One (a-row, column tile) of the TF32 pass: the tile's approximate maximum
// (-inf: no column), how many of its entries lie within the window of it,
// and the columns of the first two found (-1: none).
struct __align__(16) TileCandidates {
  float max;
  int32_t count;
  int32_t col[2];
};

// 2Δ, the candidate window of the TF32 pass at depth C. Δ bounds
// |s̃ − s| for every pair, s̃ the tensor-core score and s the CPU's f32 chain:
//  * operands: â, b̂ are the normalised f32 rows (‖â‖, ‖b̂‖ ≤ 1 + 2^-20);
//    cvt.rna gives ã = â(1 + δ), |δ| ≤ u = 2^-11 (tf32 keeps 10 fraction
//    bits), so |ã·b̃ − â·b̂| ≤ (2u + u²) Σ|â_d b̂_d| ≤ (2^-10 + 2^-22)·S,
//    S = Σ|â_d b̂_d| ≤ ‖â‖‖b̂‖ (Cauchy–Schwarz);
//  * tensor-core accumulation: products of tf32 values are exact; each
//    m16n8k8 adds 8 of them to the accumulator. Assume only that every MMA
//    loses at most 9 ulps of the largest of its 9 terms (alignment to the
//    largest exponent and truncation, as measured on Ampere/Hopper), i.e.
//    ≤ 9·2^-23·S̃ per MMA, S̃ = Σ|ã_d b̃_d| ≤ (1 + 2^-10)·S: over C/8 + 1
//    MMAs (the padded tail) that is ≤ (C + 8)·2^-21·S̃ with room to spare;
//  * the CPU's chain itself: C fma roundings, |s − â·b̂| ≤ C·2^-24·S/(1 − C·2^-24),
//    taken as C·2^-23·S;
//  * tf32 subnormals (rounded at a fixed 2^-136) and any flush to zero of
//    tiny products: absolute ≤ C·2^-126, covered by 2^-100.
// With S ≤ 1.002 (the norms, the (1 + 2^-10) of S̃) everything is scaled by
// 1.002. A column can be the exact maximum only if s̃ ≥ M̃ − 2Δ (M̃ the row's
// approximate maximum: s_max ≥ s(argmax s̃) ≥ M̃ − Δ and s̃ ≥ s − Δ); the f32
// rounding of M̃ − 2Δ (≤ 2^-24) is far inside the slack. At C = 1,024 the
// window is about 3.1e-3 in cosine.
inline float tf32_window(int64_t C) {
  const double c = static_cast<double>(C);
  const double delta =
      (std::ldexp(1.0, -10) + std::ldexp(1.0, -22) + (c + 8) * std::ldexp(1.0, -21) + c * std::ldexp(1.0, -23)) *
          1.002 +
      std::ldexp(1.0, -100);
  return static_cast<float>(2 * delta);
}

// One k-tile of the block's 256 tile rows (a rows 0..127, b rows 128..255)
// into a shared-memory stage [kTcM + kTcN][kTfLds] by cp.async; copy c is
// tile row c / kTfRowChunks, channels (c % kTfRowChunks)·4 .. +4, so
// consecutive threads read one row's 64 contiguous bytes. Rows past the end
// (offset -1) are zeros.
__device__ __forceinline__ void fetch_tile_tf32(float* stage, const float* __restrict__ rows, const int64_t* row_off,
                                                int64_t k0) {
#pragma unroll
  for (int q = 0; q < kTfChunks; ++q) {
    const int c = threadIdx.x + q * kTcThreads;
    const int64_t off = row_off[c / kTfRowChunks];
    float* dst = stage + (c / kTfRowChunks) * kTfLds + (c % kTfRowChunks) * 4;
    if (off >= 0)
      cp_async16(dst, rows + off + k0 + (c % kTfRowChunks) * 4);
    else
      *reinterpret_cast<float4*>(dst) = float4{0.0f, 0.0f, 0.0f, 0.0f};
  }
  cp_async_commit();
}

// rows: tf32 normalised [B, N, Cp]; a-rows are tokens a_tok[i], columns
// tokens b_tok[j]; out: TileCandidates [B, Na, col_tiles]. grid: [B × row
// tiles × column tiles], rastered as the bf16 kernel.
__global__ void __launch_bounds__(kTcThreads, 2)
    score_candidates_tf32_kernel(const float* __restrict__ rows /* [B, N, Cp] */, int64_t N, int64_t Cp,
                                 const int32_t* __restrict__ a_tok /* [Na] */, int64_t Na,
                                 const int32_t* __restrict__ b_tok /* [Nb] */, int64_t Nb, bool skip_col0,
                                 int64_t row_tiles, int64_t col_tiles, float window,
                                 TileCandidates* __restrict__ out /* [B, Na, col_tiles] */, int* flag,
                                 const int* __restrict__ bad_split) {
  if (*bad_split != kNoBadSplit) return;  // tokens out of range: nothing may be read through them
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  if (threadIdx.x == 0) atomicOr(flag, 4);  // TF32 mma.sync needs sm_80 (only reachable in a build for older archs)
#else
  __shared__ __align__(128) float smem[2 * kTfStage];  // 2 stages [kTcM + kTcN][kTfLds]
  __shared__ int64_t row_off[kTcM + kTcN];             // element offset in `rows` of each tile row; -1: past the end
  __shared__ uint32_t tile_max[kTcM];                  // float_key of each tile row's maximum; 0: none
  __shared__ int32_t tile_count[kTcM];                 // entries within the window of it
  __shared__ int32_t tile_col[kTcM][2];                // the first two found
  const int64_t tiles = row_tiles * col_tiles;
  const int64_t b = blockIdx.x / tiles;
  const int64_t t = blockIdx.x % tiles;
  const int64_t rt0 = t / (kTcGroupRows * col_tiles) * kTcGroupRows;
  const int64_t group_rows = row_tiles - rt0 < kTcGroupRows ? row_tiles - rt0 : kTcGroupRows;
  const int64_t in_group = t - rt0 * col_tiles;
  const int64_t rt = rt0 + in_group % group_rows, ct = in_group / group_rows;
  const int64_t i0 = rt * kTcM;  // first a-row of the tile
  const int64_t j0 = ct * kTcN;  // first b-column of the tile
  for (int e = threadIdx.x; e < kTcM + kTcN; e += kTcThreads) {
    const int64_t idx = e < kTcM ? i0 + e : j0 + (e - kTcM);
    const bool in = e < kTcM ? idx < Na : idx < Nb;
    row_off[e] = in ? (b * N + (e < kTcM ? a_tok[idx] : b_tok[idx])) * Cp : -1;
  }
  for (int e = threadIdx.x; e < kTcM; e += kTcThreads) {
    tile_max[e] = 0u;
    tile_count[e] = 0;
    tile_col[e][0] = tile_col[e][1] = -1;
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp % kTfWarpsM, wn = warp / kTfWarpsM;  // the warp's 64 × 32 block of the tile
  const int g = lane / 4, tq = lane % 4;                   // fragment row group / column pair
  float acc[kTfFragsM][kTfFragsN][4];
#pragma unroll
  for (int f = 0; f < kTfFragsM; ++f)
#pragma unroll
    for (int n = 0; n < kTfFragsN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[f][n][e] = 0.0f;
  // ldmatrix: lane l addresses row l % 8 of matrix m = l / 8. A fragment f:
  // matrices (rows 0-7 | 8-15) × (k 0-3 | 4-7) = a[0..3]; B pair p: matrices
  // (k 0-3 | 4-7) of n-fragments 2p and 2p + 1 = b[0], b[1] of each.
  const int lm = lane / 8, lr = lane % 8;
  const int a_row = wm * kTfWarpM + (lm & 1) * 8 + lr, a_k = (lm >> 1) * 4;
  const int b_row = kTcM + wn * kTfWarpN + (lm >> 1) * 8 + lr, b_k = (lm & 1) * 4;
  const int64_t nk = Cp / kTfK;
  fetch_tile_tf32(smem, rows, row_off, 0);
  for (int64_t kt = 0; kt < nk; ++kt) {
    const float* st = smem + (kt & 1) * kTfStage;
    cp_async_wait_all();
    __syncthreads();  // k-tile kt landed for everyone; the other stage's last readers are done
    if (kt + 1 < nk) fetch_tile_tf32(smem + ((kt + 1) & 1) * kTfStage, rows, row_off, (kt + 1) * kTfK);
#pragma unroll
    for (int ks = 0; ks < kTfK; ks += 8) {
      uint32_t bf[kTfFragsN][2];
#pragma unroll
      for (int p = 0; p < kTfFragsN / 2; ++p) {
        uint32_t r[4];
        ldmatrix_x4(r, st + (b_row + p * 16) * kTfLds + ks + b_k);
        bf[2 * p][0] = r[0];
        bf[2 * p][1] = r[1];
        bf[2 * p + 1][0] = r[2];
        bf[2 * p + 1][1] = r[3];
      }
#pragma unroll
      for (int f = 0; f < kTfFragsM; ++f) {
        uint32_t af[4];
        ldmatrix_x4(af, st + (a_row + f * 16) * kTfLds + ks + a_k);
#pragma unroll
        for (int n = 0; n < kTfFragsN; ++n) mma_m16n8k8_tf32(acc[f][n], af, bf[n]);
      }
    }
  }
  // Epilogue. Thread (g, tq) holds, for fragment f, rows f·16 + g (e = 0, 1)
  // and f·16 + g + 8 (e = 2, 3) of the warp block, columns n·8 + 2tq + (e & 1).
  auto col_of = [&](int n, int e) { return j0 + wn * kTfWarpN + n * 8 + 2 * tq + (e & 1); };
  auto valid = [&](int64_t j) { return j < Nb && !(skip_col0 && j == 0); };
  // 1: each tile row's maximum (quad shuffles, then a shared atomicMax).
#pragma unroll
  for (int f = 0; f < kTfFragsM; ++f)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float m = -INFINITY;
#pragma unroll
      for (int n = 0; n < kTfFragsN; ++n)
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e)
          if (valid(col_of(n, e))) m = fmaxf(m, acc[f][n][e]);
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
      if (tq == 0 && m > -INFINITY) atomicMax(&tile_max[wm * kTfWarpM + f * 16 + h * 8 + g], float_key(m));
    }
  __syncthreads();
  // 2: the entries within the window of it (NaN compares false: none).
#pragma unroll
  for (int f = 0; f < kTfFragsM; ++f)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = wm * kTfWarpM + f * 16 + h * 8 + g;
      const uint32_t key = tile_max[row];
      if (key == 0u) continue;
      const float threshold = key_float(key) - window;
#pragma unroll
      for (int n = 0; n < kTfFragsN; ++n)
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e) {
          const int64_t j = col_of(n, e);
          if (valid(j) && acc[f][n][e] >= threshold) {
            const int k = atomicAdd(&tile_count[row], 1);
            if (k < 2) tile_col[row][k] = static_cast<int32_t>(j);
          }
        }
    }
  __syncthreads();
  for (int e = threadIdx.x; e < kTcM; e += kTcThreads) {
    const int64_t i = i0 + e;
    if (i >= Na) break;
    TileCandidates c;
    c.max = tile_max[e] != 0u ? key_float(tile_max[e]) : -INFINITY;
    c.count = tile_count[e];
    c.col[0] = tile_col[e][0];
    c.col[1] = tile_col[e][1];
    out[(b * Na + i) * col_tiles + ct] = c;
  }
#endif
}

// The exact score of a pair: cpu/isa gemm_tile's chain (one fmaf per
// channel, ascending, from +0) over the exact normalised rows, so the bits
// are the CPU's.
__device__ __forceinline__ float exact_score(const float* __restrict__ x, const float* __restrict__ y, int64_t C) {
  float acc = 0.0f;
  int64_t d = 0;
  for (; d + 4 <= C; d += 4) {  // rows are 16-byte aligned (pitch Cp)
    const float4 u = __ldg(reinterpret_cast<const float4*>(x + d));
    const float4 v = __ldg(reinterpret_cast<const float4*>(y + d));
    acc = fmaf(u.x, v.x, acc);
    acc = fmaf(u.y, v.y, acc);
    acc = fmaf(u.z, v.z, acc);
    acc = fmaf(u.w, v.w, acc);
  }
  for (; d < C; ++d) acc = fmaf(x[d], y[d], acc);
  return acc;
}

// One warp per (batch row, a-row): the candidates of TileCandidates within
// the window of the row's approximate maximum, rescored exactly; best/arg
// [B, Na] as the CPU writes them (no candidate, or the CLS row: -inf and
// column 0). grid: [B × blocks of kRecheckWarps rows].
__global__ void __launch_bounds__(kThreads)
    recheck_kernel(const float* __restrict__ exact /* [B, N, Cp] */, int64_t N, int64_t C, int64_t Cp,
                   const int32_t* __restrict__ a_tok, int64_t Na, const int32_t* __restrict__ b_tok, int64_t Nb,
                   bool skip_col0, bool cls_row0, const TileCandidates* __restrict__ cand /* [B, Na, col_tiles] */,
                   int64_t col_tiles, float window, float* __restrict__ best, int32_t* __restrict__ arg,
                   int64_t xblocks, const int* __restrict__ bad_split) {
  if (*bad_split != kNoBadSplit) return;
  const int lane = threadIdx.x % 32;
  const int64_t b = blockIdx.x / xblocks;
  const int64_t i = (blockIdx.x % xblocks) * kRecheckWarps + threadIdx.x / 32;
  if (i >= Na) return;  // the same in every lane of the warp
  const TileCandidates* tc = cand + (b * Na + i) * col_tiles;
  float rmax = -INFINITY;
  for (int64_t t = lane; t < col_tiles; t += 32) rmax = fmaxf(rmax, tc[t].max);
  for (int o = 16; o > 0; o /= 2) rmax = fmaxf(rmax, __shfl_xor_sync(0xffffffffu, rmax, o));
  float bv = -INFINITY;
  int32_t bj = INT_MAX;
  if (!(cls_row0 && i == 0) && rmax > -INFINITY) {
    const float threshold = rmax - window;
    const float* x = exact + (b * N + a_tok[i]) * Cp;
    auto consider = [&](int64_t j) {
      const float s = exact_score(x, exact + (b * N + b_tok[j]) * Cp, C);
      if (better(s, static_cast<int>(j), bv, bj)) {
        bv = s;
        bj = static_cast<int32_t>(j);
      }
    };
    for (int64_t t = 0; t < col_tiles; ++t) {  // warp-uniform: every lane reads the same tile
      const TileCandidates c = tc[t];
      if (!(c.max >= threshold)) continue;
      if (c.count <= 2) {
        const int32_t j = lane == 0 ? c.col[0] : c.col[1];  // not c.col[lane]: a dynamic index puts c in local memory
        if (lane < c.count && j >= 0) consider(j);
      } else {
        for (int64_t j = t * kTcN + lane; j < (t + 1) * kTcN && j < Nb; j += 32)
          if (!(skip_col0 && j == 0)) consider(j);
      }
    }
  }
  for (int o = 16; o > 0; o /= 2) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int32_t oj = __shfl_xor_sync(0xffffffffu, bj, o);
    if (better(ov, oj, bv, bj)) {
      bv = ov;
      bj = oj;
    }
  }
  if (lane == 0) {
    const bool none = bj == INT_MAX;  // no candidate (only protected columns, NaN input) or the CLS row
    best[b * Na + i] = none ? -INFINITY : bv;
    arg[b * Na + i] = none ? 0 : bj;
  }
}

// keys [B, Na] → best [B, Na], arg [B, Na] as recheck_kernel writes
// them: no candidate (key 0: no column but a protected one) and the CLS row
// give -inf and column 0.
__global__ void key_decode_kernel(const unsigned long long* __restrict__ keys /* [B, Na] */, int64_t total, int64_t Na,
                                  bool cls_row0, float* __restrict__ best /* [B, Na] */,
                                  int32_t* __restrict__ arg /* [B, Na] */) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= total) return;
  const unsigned long long k = keys[t];
  float v = -INFINITY;
  int32_t a = 0;
  if (k != 0 && !(cls_row0 && t % Na == 0)) {
    const uint32_t ord = static_cast<uint32_t>(k >> 32);
    v = __uint_as_float((ord & 0x80000000u) ? (ord & 0x7fffffffu) : ~ord);
    a = static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(k));
  }
  best[t] = v;
  arg[t] = a;
}

// The split must be a partition of [0, N) (validate() checked Na + Nb == N):
// count every token's occurrences ...
__global__ void split_count_kernel(const int32_t* __restrict__ a_tok, int64_t Na, const int32_t* __restrict__ b_tok,
                                   int64_t Nb, int64_t N, int* __restrict__ seen /* [N], zeroed */) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= Na + Nb) return;
  const int32_t t = i < Na ? a_tok[i] : b_tok[i - Na];
  if (t >= 0 && t < N) atomicAdd(&seen[t], 1);
}

// ... then flag the lowest position holding a token out of range or seen
// twice (a deterministic report, whatever the order of the atomics above).
__global__ void split_check_kernel(const int32_t* __restrict__ a_tok, int64_t Na, const int32_t* __restrict__ b_tok,
                                   int64_t Nb, int64_t N, const int* __restrict__ seen, int* __restrict__ bad_pos) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= Na + Nb) return;
  const int32_t t = i < Na ? a_tok[i] : b_tok[i - Na];
  if (t < 0 || t >= N || seen[t] != 1) atomicMin(bad_pos, static_cast<int>(i));
}

__global__ void rank_kernel(const float* __restrict__ best, int64_t Na, int32_t* __restrict__ rank, int64_t xblocks) {
  const int64_t b = blockIdx.x / xblocks;  // grid: [B × blocks]
  const int64_t i = (blockIdx.x % xblocks) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= Na) return;
  const float* v = best + b * Na;
  const float vi = v[i];
  int32_t r = 0;
  for (int64_t j = 0; j < Na; ++j) r += (v[j] > vi || (v[j] == vi && j < i)) ? 1 : 0;
  rank[b * Na + i] = r;
}

__global__ void plan_kernel(const int32_t* __restrict__ rank, const int32_t* __restrict__ arg, int64_t Na, int64_t Nb,
                            int64_t N, int64_t r, bool cls, bool distill, const int32_t* __restrict__ a_tok,
                            const int32_t* __restrict__ b_tok, int32_t* __restrict__ assign, int32_t* __restrict__ unm,
                            int32_t* __restrict__ src, int32_t* __restrict__ dst, int64_t xblocks,
                            const int* __restrict__ bad_split) {
  if (*bad_split != kNoBadSplit) return;  // nothing may be written through a bad split
  const int64_t b = blockIdx.x / xblocks;  // grid: [B × blocks]
  const int64_t t = (blockIdx.x % xblocks) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t Nu = Na - r;
  auto slot_b = [&](int64_t j) -> int32_t { return static_cast<int32_t>(distill ? (j == 0 ? 1 : Nu + j) : Nu + j); };
  int32_t* as = assign + b * N;
  if (t >= Na) {
    if (t < Na + Nb) as[b_tok[t - Na]] = slot_b(t - Na);
    return;
  }
  const int32_t* rk = rank + b * Na;
  const int64_t k = rk[t];
  if (k < r) {
    const int32_t j = arg[b * Na + t];
    src[b * r + k] = a_tok[t];
    dst[b * r + k] = b_tok[j];
    as[a_tok[t]] = slot_b(j);
    return;
  }
  int64_t pos = k - r;
  if (cls) {  // unmerged in ascending a position
    pos = 0;
    for (int64_t q = 0; q < t; ++q) pos += rk[q] >= r ? 1 : 0;
  }
  unm[b * Nu + pos] = a_tok[t];
  as[a_tok[t]] = static_cast<int32_t>(distill ? (pos == 0 ? 0 : pos + 1) : pos);
}

// Each slot's members in token order, [B, M + 1] offsets into [B, N]
// members: one block of kCsrWarps warps per batch row, warp w owning the
// token range [w·R, (w+1)·R). Pass 1 counts every warp's tokens per slot
// into wcount [B, kCsrWarps, M] (a chunk of 32 tokens at a time:
// __match_any_sync groups the lanes of a slot, and its lowest lane adds the
// group's size); the block then scans the slot totals into offsets and turns
// wcount into each warp's first position per slot; pass 2 places every
// token at its warp's position plus its rank among the lower lanes of its
// group. So a slot lists its members by warp, chunk and lane: token order,
// and every sum over them runs in the CPU's order. A bad assign value sets
// flag bit 2, and the block then writes nothing more (merge_kernel reads
// the flag and does nothing).
constexpr int kCsrWarps = 8;
__global__ void __launch_bounds__(kCsrWarps * 32) csr_kernel(const int32_t* __restrict__ assign, int64_t N, int64_t M,
                                                             int32_t* __restrict__ offsets /* [B, M + 1] */,
                                                             int32_t* __restrict__ members /* [B, N] */,
                                                             int32_t* __restrict__ wcount /* [B, kCsrWarps, M] */,
                                                             int* flag) {
  using Scan = cub::BlockScan<int, kCsrWarps * 32>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ int bad;
  const int64_t b = blockIdx.x;
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const unsigned lower_lanes = (1u << lane) - 1u;
  const int32_t* as = assign + b * N;
  int32_t* off = offsets + b * (M + 1);
  int32_t* wc = wcount + b * kCsrWarps * M;
  int32_t* mine = wc + warp * M;  // this warp's counts, then its next position, per slot
  const int64_t range = (N + kCsrWarps - 1) / kCsrWarps;
  const int64_t r0 = warp * range, r1 = r0 + range < N ? r0 + range : N;
  if (threadIdx.x == 0) bad = 0;
  for (int64_t i = threadIdx.x; i < kCsrWarps * M; i += blockDim.x) wc[i] = 0;
  __syncthreads();
  // Pass 1: per-warp counts.
  // Every lane takes part in the warp operations; a lane past the range
  // (key -2) or with a bad value (key -1) is grouped apart and counts nothing.
  for (int64_t c0 = r0; c0 < r1; c0 += 32) {
    const int64_t i = c0 + lane;
    const bool in = i < r1;
    const int32_t s = in ? as[i] : -2;
    const bool ok = in && s >= 0 && s < M;
    if (in && !ok) {
      atomicOr(flag, 2);
      bad = 1;
    }
    const unsigned peers = __match_any_sync(0xffffffffu, ok ? s : (in ? -1 : -2));
    if (ok && (peers & lower_lanes) == 0) mine[s] += __popc(peers);
    __syncwarp();  // the next chunk's leaders read these counts
  }
  __syncthreads();
  if (bad) return;
  // Slot totals -> offsets (a block scan over chunks of slots); each warp's
  // count -> its first position in the slot.
  int base = 0;
  for (int64_t s0 = 0; s0 < M; s0 += blockDim.x) {
    const int64_t s = s0 + threadIdx.x;
    int total = 0;
    if (s < M)
      for (int w = 0; w < kCsrWarps; ++w) total += wc[w * M + s];
    int start = 0, sum = 0;
    Scan(tmp).ExclusiveSum(total, start, sum);
    if (s < M) {
      int pos = base + start;
      off[s] = pos;
      for (int w = 0; w < kCsrWarps; ++w) {
        const int cnt = wc[w * M + s];
        wc[w * M + s] = pos;
        pos += cnt;
      }
    }
    base += sum;
    __syncthreads();  // tmp is reused by the next chunk's scan
  }
  if (threadIdx.x == 0) off[M] = base;
  __syncthreads();  // every warp's positions are written
  // Pass 2: placement.
  for (int64_t c0 = r0; c0 < r1; c0 += 32) {
    const int64_t i = c0 + lane;
    const bool in = i < r1;
    const int32_t s = in ? as[i] : -2;
    const unsigned peers = __match_any_sync(0xffffffffu, s);
    int pos = 0;
    if (in) {
      pos = mine[s] + __popc(peers & lower_lanes);
      members[b * N + pos] = static_cast<int32_t>(i);
    }
    __syncwarp();  // every lane of a group has read mine[s]
    if (in && (peers & lower_lanes) == 0) mine[s] = pos + __popc(peers);
    __syncwarp();
  }
}

template <typename T>
__global__ void merge_kernel(const T* __restrict__ x, int64_t stride_b, int64_t stride_n, int64_t N, int64_t C,
                             int64_t M, int mode, const float* __restrict__ sizes, const int32_t* __restrict__ offsets,
                             const int32_t* __restrict__ members, T* __restrict__ out, float* __restrict__ sizes_out,
                             const int* __restrict__ bad_assign) {
  if (*bad_assign != 0) return;  // the CSR is incomplete: nothing may be read through it (unchecked calls)
  const int64_t s = blockIdx.x % M, b = blockIdx.x / M;  // grid: [B × M]
  const int32_t* off = offsets + b * (M + 1);
  const int32_t m0 = off[s], m1 = off[s + 1];
  const int32_t* mem = members + b * N;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = mode == 2 ? -INFINITY : 0.0f;
    float w = 0.0f;
    for (int32_t m = m0; m < m1; ++m) {
      const int32_t i = mem[m];
      const float v = load_f32(x + b * stride_b + i * stride_n + c);
      if (mode == 2) {
        acc = fmaxf(acc, v);
      } else if (mode == 3) {
        const float sz = sizes ? sizes[b * N + i] : 1.0f;
        acc = fmaf(sz, v, acc);
        w = add_rn(w, sz);
      } else {
        acc = add_rn(acc, v);
        w = add_rn(w, 1.0f);
      }
    }
    if (mode == 1 || mode == 3) acc = mul_rn(acc, w != 0.0f ? div_rn(1.0f, w) : 0.0f);
    store(out + (b * M + s) * C + c, acc);
    if (mode == 3 && c == 0) sizes_out[b * M + s] = w;
  }
}

// The remaining tokens rem [B, ld] hold Nr per row: `nr`, or *live when the
// count is on the device (a keep mask's; 0 there when the mask is bad). The
// target stride follows from it: step = max(1, Nr / c).
struct RemainingCount {
  int64_t nr;
  const int* live;
  __device__ int64_t get() const { return live != nullptr ? *live : nr; }
};
__device__ __forceinline__ int64_t target_step(int64_t Nr, int64_t c) { return Nr / c > 1 ? Nr / c : 1; }

__global__ void owner_kernel(const float* __restrict__ normed, int64_t N, int64_t Cm, const int32_t* __restrict__ rem,
                             int64_t ld, RemainingCount count, int64_t c, int32_t* __restrict__ owner /* [B, ld] */,
                             int64_t xblocks) {
  const int64_t b = blockIdx.x / xblocks;  // grid: [B × blocks]
  const int64_t i = (blockIdx.x % xblocks) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t Nr = count.get(), step = target_step(Nr, c);
  if (i >= Nr) return;
  const int32_t* rb = rem + b * ld;
  if (i % step == 0 && i / step < c) {
    owner[b * ld + i] = -1;  // a target
    return;
  }
  const float* m = normed + (b * N + rb[i]) * Cm;
  float bv = -INFINITY;
  int32_t bi = 0;
  for (int64_t k = 0; k < c; ++k) {
    const float* t = normed + (b * N + rb[k * step]) * Cm;
    float acc = 0.0f;
    for (int64_t d = 0; d < Cm; ++d) acc = fmaf(m[d], t[d], acc);
    if (acc > bv) {
      bv = acc;
      bi = static_cast<int32_t>(k);
    }
  }
  owner[b * ld + i] = bi;
}

template <typename T>
__global__ void contextual_kernel(const T* __restrict__ x, int64_t stride_b, int64_t stride_n, int64_t C,
                                  const int32_t* __restrict__ rem, int64_t ld, RemainingCount cnt, int64_t c,
                                  const int32_t* __restrict__ owner, T* __restrict__ out) {
  const int64_t k = blockIdx.x % c, b = blockIdx.x / c;  // grid: [B × c]
  const int64_t Nr = cnt.get(), step = target_step(Nr, c);
  if (Nr < 1) {  // a bad keep mask (reported when the call waits): a defined out, all NaN
    for (int64_t ch = threadIdx.x; ch < C; ch += blockDim.x) store(out + (b * c + k) * C + ch, nanf(""));
    return;
  }
  const int32_t* rb = rem + b * ld;
  const int32_t* ob = owner + b * ld;
  int32_t count = 0;
  for (int64_t i = 0; i < Nr; ++i) count += ob[i] == k ? 1 : 0;
  const float inv = div_rn(1.0f, static_cast<float>(count > 1 ? count : 1));
  for (int64_t ch = threadIdx.x; ch < C; ch += blockDim.x) {
    float acc = 0.0f;
    for (int64_t i = 0; i < Nr; ++i)
      if (ob[i] == k) acc = add_rn(acc, load_f32(x + b * stride_b + rb[i] * stride_n + ch));
    const float t = load_f32(x + b * stride_b + rb[k * step] * stride_n + ch);
    store(out + (b * c + k) * C + ch, add_rn(t, mul_rn(acc, inv)));
  }
}

// out [B, N, C]: the L2-normalised rows of t's tokens rows [B, R] (the
// other tokens are neither written nor checked); flag set on NaN/Inf.
Status normalise(const TensorView& t, const int32_t* rows, int64_t R, const int* live, float* out, int* flag,
                 cudaStream_t stream) {
  const int64_t B = t.shape[0], N = t.shape[1], C = t.shape[2];
  TS_RETURN_IF_ERROR(check_grid_x(blocks_for(B * R, kThreads), "normalise"));
  return TS_DISPATCH_FLOAT(t.dtype, "normalise", [&] {
    normalise_kernel<scalar_t><<<static_cast<unsigned>(blocks_for(B * R, kThreads)), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(t.data), t.strides[0], t.strides[1], B, N, C, rows, R, live, out, flag);
    TS_CUDA_CHECK_LAUNCH("normalise_kernel");
    return Status::Ok();
  });
}

// The normalised rows for a tensor-core score pass: rounded to the operand
// type (bf16, or tf32 kept in f32) into out, and exactly (f32) into exact
// when it is not null; both [B, N, Cp], zero padded.
template <typename Out>
Status normalise_rows(const TensorView& t, int64_t Cp, Out* out, float* exact, int* flag, cudaStream_t stream) {
  const int64_t B = t.shape[0], N = t.shape[1], C = t.shape[2];
  const int64_t blocks = blocks_for(B * N, kThreads / 32 * kNormRowsPerWarp);
  TS_RETURN_IF_ERROR(check_grid_x(blocks, "normalise"));
  return TS_DISPATCH_FLOAT(t.dtype, "normalise", [&] {
    normalise_rows_kernel<scalar_t, Out><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(t.data), t.strides[0], t.strides[1], B, N, C, Cp, out, exact, flag);
    TS_CUDA_CHECK_LAUNCH("normalise_rows_kernel");
    return Status::Ok();
  });
}

}  // namespace

Status bipartite_match(const BipartiteMatchParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.metric, "metric"));
  const int64_t B = p.metric.shape[0], N = p.metric.shape[1], C = p.metric.shape[2];
  const int64_t Na = p.split_a.shape[0], Nb = p.split_b.shape[0], r = p.r;
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.metric.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const bool bf16 = p.precision == MatchPrecision::kBF16;
  const int64_t Cp = (C + kTcK - 1) / kTcK * kTcK;     // bf16: k-tiles of 32 channels
  const int64_t Cf = (C + kTfPad - 1) / kTfPad * kTfPad;  // f32 (TF32): k-tiles of 16 channels
  const int64_t row_tiles = blocks_for(Na, kTcM), col_tiles = blocks_for(Nb, kTcN);
  ScratchLayout L;
  const size_t o_exact = L.add<float>(bf16 ? 0 : B * N * Cf);              // f32: normalised [B, N, Cf]
  const size_t o_tf32 = L.add<float>(bf16 ? 0 : B * N * Cf);               // f32: normalised as tf32 [B, N, Cf]
  const size_t o_cand = L.add<TileCandidates>(bf16 ? 0 : B * Na * col_tiles);  // f32: [B, Na, col_tiles]
  const size_t o_bf = L.add<__nv_bfloat16>(bf16 ? B * N * Cp : 0);         // bf16: normalised [B, N, Cp]
  const size_t o_key = L.add<unsigned long long>(bf16 ? B * Na : 0);       // bf16: per-row best keys [B, Na]
  const size_t o_best = L.add<float>(B * Na);
  const size_t o_arg = L.add<int32_t>(B * Na);
  const size_t o_rank = L.add<int32_t>(B * Na);
  const size_t o_flag = L.add<int>(2);   // [NaN/Inf flag, lowest split position that breaks the partition]
  const size_t o_seen = L.add<int>(N);   // [N] occurrences of each token in the split
  Scratch scratch(p.metric.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  int* flag = scratch.at<int>(o_flag);
  TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  const int32_t* a_tok = p.split_a.ptr<const int32_t>();
  const int32_t* b_tok = p.split_b.ptr<const int32_t>();
  int* seen = scratch.at<int>(o_seen);
  int* bad_pos = flag + 1;
  TS_CUDA_TRY(cudaMemsetAsync(seen, 0, sizeof(int) * N, stream));
  TS_CUDA_TRY(cudaMemsetAsync(bad_pos, 0x7f, sizeof(int), stream));
  const unsigned split_blocks = static_cast<unsigned>(blocks_for(Na + Nb, kThreads));
  split_count_kernel<<<split_blocks, kThreads, 0, stream>>>(a_tok, Na, b_tok, Nb, N, seen);
  TS_CUDA_CHECK_LAUNCH("split_count_kernel");
  split_check_kernel<<<split_blocks, kThreads, 0, stream>>>(a_tok, Na, b_tok, Nb, N, seen, bad_pos);
  TS_CUDA_CHECK_LAUNCH("split_check_kernel");
  float* best = scratch.at<float>(o_best);
  int32_t* arg = scratch.at<int32_t>(o_arg);
  int32_t* rank = scratch.at<int32_t>(o_rank);
  const int64_t na_blocks = blocks_for(Na, kThreads), all_blocks = blocks_for(Na + Nb, kThreads);
  TS_RETURN_IF_ERROR(check_grid_x(B * na_blocks, "bipartiteSoftMatch"));
  TS_RETURN_IF_ERROR(check_grid_x(B * all_blocks, "bipartiteSoftMatch"));
  const bool any_b = Nb > 0;  // N = 1: no destination, no score pass (every row: -inf, column 0)
  if (any_b) TS_RETURN_IF_ERROR(check_grid_x(B * row_tiles * col_tiles, "bipartiteSoftMatch"));
  if (bf16) {
    __nv_bfloat16* rows = scratch.at<__nv_bfloat16>(o_bf);
    unsigned long long* keys = scratch.at<unsigned long long>(o_key);
    TS_RETURN_IF_ERROR(normalise_rows(p.metric, Cp, rows, static_cast<float*>(nullptr), flag, stream));
    TS_CUDA_TRY(cudaMemsetAsync(keys, 0, sizeof(unsigned long long) * B * Na, stream));
    if (any_b) {
      score_argmax_bf16_kernel<<<static_cast<unsigned>(B * row_tiles * col_tiles), kTcThreads, 0, stream>>>(
          rows, N, Cp, a_tok, Na, b_tok, Nb, p.protect_distill, row_tiles, col_tiles, keys, flag, bad_pos);
      TS_CUDA_CHECK_LAUNCH("score_argmax_bf16_kernel");
    }
    key_decode_kernel<<<static_cast<unsigned>(B * na_blocks), kThreads, 0, stream>>>(keys, B * Na, Na, p.protect_cls,
                                                                                    best, arg);
    TS_CUDA_CHECK_LAUNCH("key_decode_kernel");
  } else {
    float* exact = scratch.at<float>(o_exact);
    float* rows = scratch.at<float>(o_tf32);
    TileCandidates* cand = scratch.at<TileCandidates>(o_cand);
    const float window = tf32_window(C);
    TS_RETURN_IF_ERROR(normalise_rows(p.metric, Cf, rows, exact, flag, stream));
    if (any_b) {
      score_candidates_tf32_kernel<<<static_cast<unsigned>(B * row_tiles * col_tiles), kTcThreads, 0, stream>>>(
          rows, N, Cf, a_tok, Na, b_tok, Nb, p.protect_distill, row_tiles, col_tiles, window, cand, flag, bad_pos);
      TS_CUDA_CHECK_LAUNCH("score_candidates_tf32_kernel");
    }
    const int64_t rc_blocks = blocks_for(Na, kRecheckWarps);
    TS_RETURN_IF_ERROR(check_grid_x(B * rc_blocks, "bipartiteSoftMatch"));
    recheck_kernel<<<static_cast<unsigned>(B * rc_blocks), kThreads, 0, stream>>>(
        exact, N, C, Cf, a_tok, Na, b_tok, Nb, p.protect_distill, p.protect_cls, cand, col_tiles, window, best, arg,
        rc_blocks, bad_pos);
    TS_CUDA_CHECK_LAUNCH("recheck_kernel");
  }
  rank_kernel<<<static_cast<unsigned>(B * na_blocks), kThreads, 0, stream>>>(best, Na, rank, na_blocks);
  TS_CUDA_CHECK_LAUNCH("rank_kernel");
  plan_kernel<<<static_cast<unsigned>(B * all_blocks), kThreads, 0, stream>>>(
      rank, arg, Na, Nb, N, r, p.protect_cls, p.protect_distill, a_tok, b_tok, p.assign.ptr<int32_t>(),
      p.unm_idx.ptr<int32_t>(), p.src_idx.ptr<int32_t>(), p.dst_idx.ptr<int32_t>(), all_blocks, bad_pos);
  TS_CUDA_CHECK_LAUNCH("plan_kernel");
  if (!p.device_checks) return Status::Ok();  // the caller does not wait: no read-back (see merge.h)
  int host_flags[2] = {0, 0};
  TS_CUDA_TRY(cudaMemcpyAsync(host_flags, flag, sizeof host_flags, cudaMemcpyDeviceToHost, stream));
  TS_CUDA_TRY(cudaStreamSynchronize(stream));
  if (host_flags[1] != kNoBadSplit) {
    // Rare (the TS layer builds valid splits): fetch the offending token for the message.
    int32_t token = 0;
    const int32_t* where = host_flags[1] < Na ? a_tok + host_flags[1] : b_tok + (host_flags[1] - Na);
    TS_CUDA_TRY(cudaMemcpyAsync(&token, where, sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    TS_CUDA_TRY(cudaStreamSynchronize(stream));
    return Status(Code::kRange, "expected split_a and split_b to be a partition of [0, " + std::to_string(N) +
                                    ") but token " + std::to_string(token) + " is out of range or repeated");
  }
  if (host_flags[0] & 1) return Status(Code::kRange, "expected finite metric but it holds NaN or Inf");
  if (host_flags[0] & 4)
    return Status(Code::kUnsupported, std::string("bipartiteSoftMatch precision '") + (bf16 ? "bf16" : "f32") +
                                          "' needs a GPU of compute capability 8.0 or newer");
  return Status::Ok();
}

Status merge(const MergeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2], M = p.n_out;
  TS_RETURN_IF_ERROR(check_grid_x(B * M, "merge"));
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  ScratchLayout L;
  const size_t o_off = L.add<int32_t>(B * (M + 1));
  const size_t o_mem = L.add<int32_t>(B * N);
  const size_t o_wcount = L.add<int32_t>(B * kCsrWarps * M);  // csr_kernel's per-warp counts / positions
  const size_t o_flag = L.add<int>(1);
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  int* flag = scratch.at<int>(o_flag);
  TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  int32_t* offsets = scratch.at<int32_t>(o_off);
  int32_t* members = scratch.at<int32_t>(o_mem);
  TS_RETURN_IF_ERROR(check_grid_x(B, "merge"));
  csr_kernel<<<static_cast<unsigned>(B), kCsrWarps * 32, 0, stream>>>(p.assign.ptr<const int32_t>(), N, M, offsets,
                                                                      members, scratch.at<int32_t>(o_wcount), flag);
  TS_CUDA_CHECK_LAUNCH("csr_kernel");
  if (p.device_checks) {
    int host_flag = 0;
    TS_RETURN_IF_ERROR(read_device_flag(flag, stream, &host_flag));
    if (host_flag != 0) return Status(Code::kRange, "expected assign values in [0, " + std::to_string(M) + ")");
  }
  const float* sizes = p.mode == MergeMode::kWavg ? static_cast<const float*>(p.sizes.data) : nullptr;
  return TS_DISPATCH_FLOAT(p.x.dtype, "merge", [&] {
    merge_kernel<scalar_t><<<static_cast<unsigned>(B * M), 128, 0, stream>>>(
        static_cast<const scalar_t*>(p.x.data), p.x.strides[0], p.x.strides[1], N, C, M, static_cast<int>(p.mode),
        sizes, offsets, members, static_cast<scalar_t*>(p.out.data), static_cast<float*>(p.sizes_out.data), flag);
    TS_CUDA_CHECK_LAUNCH("merge_kernel");
    return Status::Ok();
  });
}

// keptIndices -> the remaining tokens, on the device (no read-back of the
// keep spec). mask [B, N] starts at kNoBadSplit ("not kept"); mark_kept
// stores in mask[b, t] the lowest j with kept[b, j] == t, and check_kept
// then flags every entry out of range or not the first of its value: the
// lowest such flat index lands in *bad, the entry the CPU would report.
__global__ void mark_kept_kernel(const int32_t* __restrict__ kept, int64_t B, int64_t K, int64_t N, int* mask,
                                 int* bad) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * K) return;
  const int32_t t = kept[i];
  if (t < 0 || t >= N)
    atomicMin(bad, static_cast<int>(i));
  else
    atomicMin(&mask[(i / K) * N + t], static_cast<int>(i % K));
}
__global__ void check_kept_kernel(const int32_t* __restrict__ kept, int64_t B, int64_t K, int64_t N,
                                  const int* __restrict__ mask, int* bad) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * K) return;
  const int32_t t = kept[i];
  if (t >= 0 && t < N && mask[(i / K) * N + t] != static_cast<int>(i % K)) atomicMin(bad, static_cast<int>(i));
}
// One block per batch row: the unmarked tokens in ascending order, by a
// block scan over chunks of kThreads. At most Nr are written: with a bad
// keep spec more than Nr are unmarked (the call then reports it when it
// waits), and the row is still fully written.
__global__ void list_remaining_kernel(const int* __restrict__ mask, int64_t N, int64_t Nr,
                                      int32_t* __restrict__ rem) {  // rem: [B, Nr]
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int64_t b = blockIdx.x;
  int64_t base = 0;
  for (int64_t i0 = 0; i0 < N && base < Nr; i0 += kThreads) {
    const int64_t i = i0 + threadIdx.x;
    const int free = (i < N && mask[b * N + i] == kNoBadSplit) ? 1 : 0;
    int pos = 0, total = 0;
    Scan(tmp).ExclusiveSum(free, pos, total);
    if (free && base + pos < Nr) rem[b * Nr + base + pos] = static_cast<int32_t>(i);
    base += total;
    __syncthreads();  // tmp is reused by the next chunk's scan
  }
}

// keepMask -> the remaining tokens, on the device: one block per batch row
// lists the zeros of its mask row in ascending order (a block scan over
// chunks of kThreads) into rem [B, N] and their count into counts [B]. The
// mask is read as raw bits U; value_bits drops the sign of a float dtype, so
// -0.0 is "not kept" and NaN is "kept", as in cpu/merge.cc's mask_set.
template <typename U>
__global__ void mask_list_kernel(const U* __restrict__ mask, U value_bits, int64_t N, int32_t* __restrict__ rem,
                                 int* __restrict__ counts) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int64_t b = blockIdx.x;
  int64_t base = 0;
  for (int64_t i0 = 0; i0 < N; i0 += kThreads) {
    const int64_t i = i0 + threadIdx.x;
    const int free = (i < N && (mask[b * N + i] & value_bits) == 0) ? 1 : 0;
    int pos = 0, total = 0;
    Scan(tmp).ExclusiveSum(free, pos, total);
    if (free) rem[b * N + base + pos] = static_cast<int32_t>(i);
    base += total;
    __syncthreads();  // tmp is reused by the next chunk's scan
  }
  if (threadIdx.x == 0) counts[b] = static_cast<int>(base);
}
// One block: counts [B] -> info[0], the count the later kernels read (0 when
// the mask is bad: rows that differ, no token left, or c > Nr; they then do
// nothing and out is NaN); info[1], the first row whose count differs from
// row 0's (kNoBadSplit if none); info[2] and info[3], the counts of row 0
// and of that row: the read-back's whole message in one copy.
__global__ void remaining_count_kernel(const int* __restrict__ counts, int64_t B, int64_t c, int* __restrict__ info) {
  __shared__ int first_bad;
  if (threadIdx.x == 0) first_bad = kNoBadSplit;
  __syncthreads();
  const int row0 = counts[0];
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x)
    if (counts[b] != row0) atomicMin(&first_bad, static_cast<int>(b));
  __syncthreads();
  if (threadIdx.x == 0) {
    info[1] = first_bad;
    info[0] = first_bad == kNoBadSplit && row0 >= 1 && row0 >= c ? row0 : 0;
    info[2] = row0;
    info[3] = first_bad == kNoBadSplit ? row0 : counts[first_bad];
  }
}

Status list_from_mask(const TensorView& mask, int32_t* rem, int* counts, cudaStream_t stream) {
  const int64_t B = mask.shape[0], N = mask.shape[1];
  TS_RETURN_IF_ERROR(check_grid_x(B, "contextualMerge"));
  const unsigned grid = static_cast<unsigned>(B);
  switch (dtype_size(mask.dtype)) {
    case 1:
      mask_list_kernel<uint8_t><<<grid, kThreads, 0, stream>>>(mask.ptr<const uint8_t>(), 0xff, N, rem, counts);
      break;
    case 2:  // f16, bf16
      mask_list_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(mask.ptr<const uint16_t>(), 0x7fff, N, rem, counts);
      break;
    case 4:
      mask_list_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(
          mask.ptr<const uint32_t>(), mask.dtype == DType::kF32 ? 0x7fffffffu : 0xffffffffu, N, rem, counts);
      break;
    case 8:  // i64
      mask_list_kernel<uint64_t><<<grid, kThreads, 0, stream>>>(mask.ptr<const uint64_t>(), ~uint64_t{0}, N, rem,
                                                                 counts);
      break;
    default:
      return Status(Code::kDType, "contextualMerge: keepMask of an unknown dtype");
  }
  TS_CUDA_CHECK_LAUNCH("mask_list_kernel");
  return Status::Ok();
}

Status contextual_merge(const ContextualMergeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2], Cm = p.metric.shape[2];
  const bool from_kept = p.kept.data != nullptr, from_mask = p.keep_mask.data != nullptr;
  const int64_t K = from_kept ? p.kept.shape[1] : 0, c = p.c;
  // With a keep mask the count is known on the device only: the lists are
  // [B, N] and the kernels read Nr there (RemainingCount).
  const int64_t Nr = from_kept ? N - K : from_mask ? N : p.remaining.shape[1];
  // The bad-entry record is a flat index of keptIndices below its "none".
  if (B * K >= kNoBadSplit)
    return Status(Code::kUnsupported, "contextualMerge: keptIndices of " + std::to_string(B * K) +
                                          " entries is more than the CUDA kernels index");
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  ScratchLayout L;
  const size_t o_norm = L.add<float>(B * N * Cm);
  const size_t o_owner = L.add<int32_t>(B * Nr);
  const size_t o_flag = L.add<int>(1);
  const size_t o_bad = L.add<int>(1);
  const size_t o_mask = L.add<int>(from_kept ? B * N : 0);
  const size_t o_rem = L.add<int32_t>(from_kept || from_mask ? B * Nr : 0);
  const size_t o_counts = L.add<int>(from_mask ? B : 0);  // [B] remaining tokens per mask row
  const size_t o_info = L.add<int>(from_mask ? 4 : 0);    // remaining_count_kernel's record (see there)
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  int* flag = scratch.at<int>(o_flag);
  TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  float* normed = scratch.at<float>(o_norm);
  const int32_t* rem = p.remaining.ptr<const int32_t>();
  int* bad = scratch.at<int>(o_bad);
  if (from_kept) {
    int* mask = scratch.at<int>(o_mask);
    int32_t* listed = scratch.at<int32_t>(o_rem);
    TS_CUDA_TRY(cudaMemsetAsync(bad, 0x7f, sizeof(int), stream));
    TS_CUDA_TRY(cudaMemsetAsync(mask, 0x7f, static_cast<size_t>(B * N) * sizeof(int), stream));
    if (K > 0) {
      const int64_t kblocks = blocks_for(B * K, kThreads);
      TS_RETURN_IF_ERROR(check_grid_x(kblocks, "contextualMerge"));
      mark_kept_kernel<<<static_cast<unsigned>(kblocks), kThreads, 0, stream>>>(p.kept.ptr<const int32_t>(), B, K, N,
                                                                                 mask, bad);
      TS_CUDA_CHECK_LAUNCH("mark_kept_kernel");
      check_kept_kernel<<<static_cast<unsigned>(kblocks), kThreads, 0, stream>>>(p.kept.ptr<const int32_t>(), B, K,
                                                                                  N, mask, bad);
      TS_CUDA_CHECK_LAUNCH("check_kept_kernel");
    }
    TS_RETURN_IF_ERROR(check_grid_x(B, "contextualMerge"));
    list_remaining_kernel<<<static_cast<unsigned>(B), kThreads, 0, stream>>>(mask, N, Nr, listed);
    TS_CUDA_CHECK_LAUNCH("list_remaining_kernel");
    rem = listed;
  }
  int* info = from_mask ? scratch.at<int>(o_info) : nullptr;
  if (from_mask) {
    int32_t* listed = scratch.at<int32_t>(o_rem);
    TS_RETURN_IF_ERROR(list_from_mask(p.keep_mask, listed, scratch.at<int>(o_counts), stream));
    remaining_count_kernel<<<1, kThreads, 0, stream>>>(scratch.at<int>(o_counts), B, c, info);
    TS_CUDA_CHECK_LAUNCH("remaining_count_kernel");
    rem = listed;
  }
  const RemainingCount count{Nr, info};
  // Only the remaining tokens are read (and checked), as on the CPU.
  TS_RETURN_IF_ERROR(normalise(p.metric, rem, Nr, info, normed, flag, stream));
  int32_t* owner = scratch.at<int32_t>(o_owner);
  const int64_t nr_blocks = blocks_for(Nr, kThreads);
  TS_RETURN_IF_ERROR(check_grid_x(B * nr_blocks, "contextualMerge"));
  TS_RETURN_IF_ERROR(check_grid_x(B * c, "contextualMerge"));
  owner_kernel<<<static_cast<unsigned>(B * nr_blocks), kThreads, 0, stream>>>(normed, N, Cm, rem, Nr, count, c, owner,
                                                                             nr_blocks);
  TS_CUDA_CHECK_LAUNCH("owner_kernel");
  TS_RETURN_IF_ERROR(TS_DISPATCH_FLOAT(p.x.dtype, "contextualMerge", [&] {
    contextual_kernel<scalar_t><<<static_cast<unsigned>(B * c), 128, 0, stream>>>(
        static_cast<const scalar_t*>(p.x.data), p.x.strides[0], p.x.strides[1], C, rem, Nr, count, c, owner,
        static_cast<scalar_t*>(p.out.data));
    TS_CUDA_CHECK_LAUNCH("contextual_kernel");
    return Status::Ok();
  }));
  if (!p.device_checks) return Status::Ok();  // the caller does not wait: no read-back (see merge.h)
  if (from_mask) {
    int host_info[4] = {0, 0, 0, 0};
    TS_CUDA_TRY(cudaMemcpyAsync(host_info, info, sizeof host_info, cudaMemcpyDeviceToHost, stream));
    TS_CUDA_TRY(cudaStreamSynchronize(stream));
    if (host_info[1] != kNoBadSplit)
      return Status(Code::kShape, "every batch row must leave the same number of remaining tokens (row 0: " +
                                      std::to_string(host_info[2]) + ", row " + std::to_string(host_info[1]) + ": " +
                                      std::to_string(host_info[3]) + ")");
    TS_RETURN_IF_ERROR(check_remaining_count(host_info[2], c));
  }
  if (from_kept) {
    int bad_at = kNoBadSplit;
    TS_RETURN_IF_ERROR(read_device_flag(bad, stream, &bad_at));
    if (bad_at != kNoBadSplit) {
      int t = 0;  // the entry itself, for the CPU's message
      TS_RETURN_IF_ERROR(read_device_flag(p.kept.ptr<const int>() + bad_at, stream, &t));
      return Status(Code::kRange, "expected keptIndices distinct and in [0, " + std::to_string(N) +
                                      ") but keptIndices[" + std::to_string(bad_at / K) + ", " +
                                      std::to_string(bad_at % K) + "] = " + std::to_string(t) +
                                      (t < 0 || t >= N ? " is out of range" : " repeats"));
    }
  }
  int host_flag = 0;
  TS_RETURN_IF_ERROR(read_device_flag(flag, stream, &host_flag));
  if (host_flag != 0) return Status(Code::kRange, "expected finite metric but it holds NaN or Inf");
  return Status::Ok();
}

}  // namespace cuda
}  // namespace tokensieve
