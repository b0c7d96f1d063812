// CUDA token merging: bipartite soft matching, scatter merge, contextual merge.
//
// bipartite_match (all on the stream, no host round trip until the final
// finite-input flag is read back):
//   1. normalise_kernel: one thread per token, metric / ‖metric‖ in f32 (the
//      norm summed in f64 in the CPU's order) into scratch [B, N, C]; a flag
//      records NaN/Inf.
//   2. score_argmax_kernel: 16 a-rows per block, 16 column lanes; the a and b
//      rows stream through shared memory in 32-channel chunks, each thread
//      keeps one score as a sequential fmaf chain over the channels — the
//      same chain as the CPU's AVX2 kernel, so scores are bit-identical — and
//      folds it into its lane's running max/first argmax. The [Na, Nb] score
//      matrix is never written. Lanes combine at the end: larger score, then
//      lower column.
//   3. rank_kernel: the stable descending rank of every a-row's best score
//      (count of rows that beat it: larger score, or equal and lower index),
//      so ties go to the lower index exactly as the CPU's stable sort.
//   4. plan_kernel: sources = ranks < r, unmerged = the rest (in rank order,
//      or ascending with CLS), and the output slot of every token.
// merge: a per-batch CSR of each slot's members in token order (one thread
// per batch row), then one block per (slot, batch row) reduces its members
// in that order over the channels.
// contextual_merge: normalise, each member's argmax target (sequential fmaf
// chains again), CSR per target in member order, target + mean(members).
// The split is checked to be a partition of [0, N) first (split_count /
// split_check kernels; the later kernels do nothing through a bad split, and
// the one read-back at the end reports it): a bad one would leave tokens
// unassigned.
//
// MatchPrecision::kF32 (the default) runs steps 1–2 above on the FP32 pipes.
// MatchPrecision::kBF16 replaces them with tensor-core steps (the rank and
// plan kernels are shared):
//   1'. normalise_bf16_kernel: 8 rows per warp; the four interleaved f64
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
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
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

constexpr int kRows = 16;   // a-rows per score block
constexpr int kLanes = 16;  // column lanes per score block
constexpr int kChunk = 32;  // channels per shared-memory chunk
constexpr int kThreads = 256;
constexpr int kNoBadSplit = 0x7f7f7f7f;  // split_check's "no bad position" (memset 0x7f)

// One thread per token: the f64 sum of squares runs in the CPU's order (four
// interleaved partial sums), so the f32 norm — and every normalised value —
// is bit-identical to the CPU's.
template <typename T>
__global__ void normalise_kernel(const T* __restrict__ x, int64_t stride_b, int64_t stride_n, int64_t B, int64_t N,
                                 int64_t C, float* __restrict__ out, int* flag) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= B * N) return;
  const int64_t b = t / N, n = t % N;
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
  float* dst = out + t * C;
  for (int64_t d = 0; d < C; ++d) dst[d] = norm > 0.0f ? div_rn(load_f32(row + d), norm) : 0.0f;
}

// rows: normalised [B, Nrows_all, C]; a-rows are tokens a_tok[i], columns
// tokens b_tok[j]. best/arg [B, Na].
__global__ void __launch_bounds__(kRows* kLanes)
    score_argmax_kernel(const float* __restrict__ normed, int64_t N, int64_t C, const int32_t* __restrict__ a_tok,
                        int64_t Na, const int32_t* __restrict__ b_tok, int64_t Nb, bool skip_col0, bool cls_row0,
                        float* __restrict__ best, int32_t* __restrict__ arg, int64_t xblocks,
                        const int* __restrict__ bad_split) {
  if (*bad_split != kNoBadSplit) return;  // tokens out of range: nothing may be read through them
  __shared__ float sa[kRows][kChunk + 1];
  __shared__ float sb[kLanes][kChunk + 1];
  __shared__ float rv[kRows][kLanes];
  __shared__ int32_t ri[kRows][kLanes];
  const int ty = threadIdx.x / kLanes, tx = threadIdx.x % kLanes;
  const int64_t b = blockIdx.x / xblocks, bx = blockIdx.x % xblocks;  // grid: [B × row blocks]
  const int64_t i = bx * kRows + ty;
  const float* base = normed + b * N * C;
  float bv = -INFINITY;
  int32_t bi = 0;
  for (int64_t c0 = 0; c0 < Nb; c0 += kLanes) {
    const int64_t j = c0 + tx;
    float acc = 0.0f;
    for (int64_t d0 = 0; d0 < C; d0 += kChunk) {
      // 256 threads load 16 × 32 of a and of b.
      for (int e = threadIdx.x; e < kRows * kChunk; e += kRows * kLanes) {
        const int r = e / kChunk, d = e % kChunk;
        const int64_t ii = bx * kRows + r;
        const int64_t jj = c0 + r;
        sa[r][d] = (ii < Na && d0 + d < C) ? base[a_tok[ii] * C + d0 + d] : 0.0f;
        sb[r][d] = (jj < Nb && d0 + d < C) ? base[b_tok[jj] * C + d0 + d] : 0.0f;
      }
      __syncthreads();
      const int dn = static_cast<int>(C - d0 < kChunk ? C - d0 : kChunk);
      for (int d = 0; d < dn; ++d) acc = fmaf(sa[ty][d], sb[tx][d], acc);
      __syncthreads();
    }
    if (j < Nb && !(skip_col0 && j == 0) && acc > bv) {
      bv = acc;
      bi = static_cast<int32_t>(j);
    }
  }
  rv[ty][tx] = bv;
  ri[ty][tx] = bi;
  __syncthreads();
  if (tx == 0 && i < Na) {
    float v = rv[ty][0];
    int32_t a = ri[ty][0];
    for (int l = 1; l < kLanes; ++l) {
      if (rv[ty][l] > v || (rv[ty][l] == v && ri[ty][l] < a)) {
        v = rv[ty][l];
        a = ri[ty][l];
      }
    }
    if (cls_row0 && i == 0) {
      v = -INFINITY;
      a = 0;
    }
    best[b * Na + i] = v;
    arg[b * Na + i] = a;
  }
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
constexpr int kNormRowsPerWarp = 8;                     // normalise_bf16_kernel: 4 lanes per row
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

// Normalised rows as bf16, [B, N, Cp] (channels C..Cp-1 zero). Warp w owns
// rows 8w .. 8w+7. Phase 1: lane 4r + q sums the squares of channels
// d ≡ q (mod 4) of row r in f64 (cpu/merge.cc's partial sum q), and two xor
// shuffles form (s0 + s1) + (s2 + s3) in every lane of the quad (a + b ==
// b + a exactly). Phase 2: the whole warp divides each row by its f32 norm
// (IEEE division) and rounds to bf16, 32 channels at a time (coalesced).
template <typename T>
__global__ void normalise_bf16_kernel(const T* __restrict__ x /* [B, N, C] strided */, int64_t stride_b,
                                      int64_t stride_n, int64_t B, int64_t N, int64_t C, int64_t Cp,
                                      __nv_bfloat16* __restrict__ out /* [B, N, Cp] */, int* flag) {
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
    __nv_bfloat16* dst = out + tk * Cp;
    for (int64_t d = lane; d < Cp; d += 32)
      dst[d] = to_bf16(d < C && nk > 0.0f ? div_rn(load_f32(row + d), nk) : 0.0f);
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

// keys [B, Na] → best [B, Na], arg [B, Na] as score_argmax_kernel writes
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

// One thread per batch row: members of each slot, in token order.
__global__ void csr_kernel(const int32_t* __restrict__ assign, int64_t B, int64_t N, int64_t M,
                           int32_t* __restrict__ offsets /* [B, M + 1] */, int32_t* __restrict__ members /* [B, N] */,
                           int* flag) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  const int32_t* as = assign + b * N;
  int32_t* off = offsets + b * (M + 1);
  for (int64_t s = 0; s <= M; ++s) off[s] = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (as[i] < 0 || as[i] >= M) {
      atomicOr(flag, 2);
      return;
    }
    off[as[i] + 1]++;
  }
  for (int64_t s = 0; s < M; ++s) off[s + 1] += off[s];
  // fill using off[s] as a cursor, then shift back
  for (int64_t i = 0; i < N; ++i) members[b * N + off[as[i]]++] = static_cast<int32_t>(i);
  for (int64_t s = M; s > 0; --s) off[s] = off[s - 1];
  off[0] = 0;
}

template <typename T>
__global__ void merge_kernel(const T* __restrict__ x, int64_t stride_b, int64_t stride_n, int64_t N, int64_t C,
                             int64_t M, int mode, const float* __restrict__ sizes, const int32_t* __restrict__ offsets,
                             const int32_t* __restrict__ members, T* __restrict__ out, float* __restrict__ sizes_out) {
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

__global__ void owner_kernel(const float* __restrict__ normed, int64_t N, int64_t Cm, const int32_t* __restrict__ rem,
                             int64_t Nr, int64_t c, int64_t step, int32_t* __restrict__ owner /* [B, Nr] */, int64_t xblocks) {
  const int64_t b = blockIdx.x / xblocks;  // grid: [B × blocks]
  const int64_t i = (blockIdx.x % xblocks) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= Nr) return;
  const int32_t* rb = rem + b * Nr;
  if (i % step == 0 && i / step < c) {
    owner[b * Nr + i] = -1;  // a target
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
  owner[b * Nr + i] = bi;
}

template <typename T>
__global__ void contextual_kernel(const T* __restrict__ x, int64_t stride_b, int64_t stride_n, int64_t C,
                                  const int32_t* __restrict__ rem, int64_t Nr, int64_t c, int64_t step,
                                  const int32_t* __restrict__ owner, T* __restrict__ out) {
  const int64_t k = blockIdx.x % c, b = blockIdx.x / c;  // grid: [B × c]
  const int32_t* rb = rem + b * Nr;
  const int32_t* ob = owner + b * Nr;
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

Status normalise(const TensorView& t, float* out, int* flag, cudaStream_t stream) {
  const int64_t B = t.shape[0], N = t.shape[1], C = t.shape[2];
  TS_RETURN_IF_ERROR(check_grid_x(blocks_for(B * N, kThreads), "normalise"));
  return TS_DISPATCH_FLOAT(t.dtype, "normalise", [&] {
    normalise_kernel<scalar_t><<<static_cast<unsigned>(blocks_for(B * N, kThreads)), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(t.data), t.strides[0], t.strides[1], B, N, C, out, flag);
    TS_CUDA_CHECK_LAUNCH("normalise_kernel");
    return Status::Ok();
  });
}

Status normalise_bf16(const TensorView& t, int64_t Cp, __nv_bfloat16* out, int* flag, cudaStream_t stream) {
  const int64_t B = t.shape[0], N = t.shape[1], C = t.shape[2];
  const int64_t blocks = blocks_for(B * N, kThreads / 32 * kNormRowsPerWarp);
  TS_RETURN_IF_ERROR(check_grid_x(blocks, "normalise"));
  return TS_DISPATCH_FLOAT(t.dtype, "normalise", [&] {
    normalise_bf16_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(t.data), t.strides[0], t.strides[1], B, N, C, Cp, out, flag);
    TS_CUDA_CHECK_LAUNCH("normalise_bf16_kernel");
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
  const bool tc = p.precision == MatchPrecision::kBF16;  // tensor-core scores
  const int64_t Cp = (C + kTcK - 1) / kTcK * kTcK;
  ScratchLayout L;
  const size_t o_norm = L.add<float>(tc ? 0 : B * N * C);                // f32: normalised [B, N, C]
  const size_t o_bf = L.add<__nv_bfloat16>(tc ? B * N * Cp : 0);         // bf16: normalised [B, N, Cp]
  const size_t o_key = L.add<unsigned long long>(tc ? B * Na : 0);       // bf16: per-row best keys [B, Na]
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
  if (tc) {
    __nv_bfloat16* rows = scratch.at<__nv_bfloat16>(o_bf);
    unsigned long long* keys = scratch.at<unsigned long long>(o_key);
    TS_RETURN_IF_ERROR(normalise_bf16(p.metric, Cp, rows, flag, stream));
    TS_CUDA_TRY(cudaMemsetAsync(keys, 0, sizeof(unsigned long long) * B * Na, stream));
    const int64_t row_tiles = blocks_for(Na, kTcM), col_tiles = blocks_for(Nb, kTcN);
    TS_RETURN_IF_ERROR(check_grid_x(B * row_tiles * col_tiles, "bipartiteSoftMatch"));
    score_argmax_bf16_kernel<<<static_cast<unsigned>(B * row_tiles * col_tiles), kTcThreads, 0, stream>>>(
        rows, N, Cp, a_tok, Na, b_tok, Nb, p.protect_distill, row_tiles, col_tiles, keys, flag, bad_pos);
    TS_CUDA_CHECK_LAUNCH("score_argmax_bf16_kernel");
    key_decode_kernel<<<static_cast<unsigned>(B * na_blocks), kThreads, 0, stream>>>(keys, B * Na, Na, p.protect_cls,
                                                                                    best, arg);
    TS_CUDA_CHECK_LAUNCH("key_decode_kernel");
  } else {
    float* normed = scratch.at<float>(o_norm);
    TS_RETURN_IF_ERROR(normalise(p.metric, normed, flag, stream));
    const int64_t row_blocks = blocks_for(Na, kRows);
    TS_RETURN_IF_ERROR(check_grid_x(B * row_blocks, "bipartiteSoftMatch"));
    score_argmax_kernel<<<static_cast<unsigned>(B * row_blocks), kRows * kLanes, 0, stream>>>(
        normed, N, C, a_tok, Na, b_tok, Nb, p.protect_distill, p.protect_cls, best, arg, row_blocks, bad_pos);
    TS_CUDA_CHECK_LAUNCH("score_argmax_kernel");
  }
  rank_kernel<<<static_cast<unsigned>(B * na_blocks), kThreads, 0, stream>>>(best, Na, rank, na_blocks);
  TS_CUDA_CHECK_LAUNCH("rank_kernel");
  plan_kernel<<<static_cast<unsigned>(B * all_blocks), kThreads, 0, stream>>>(
      rank, arg, Na, Nb, N, r, p.protect_cls, p.protect_distill, a_tok, b_tok, p.assign.ptr<int32_t>(),
      p.unm_idx.ptr<int32_t>(), p.src_idx.ptr<int32_t>(), p.dst_idx.ptr<int32_t>(), all_blocks, bad_pos);
  TS_CUDA_CHECK_LAUNCH("plan_kernel");
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
    return Status(Code::kUnsupported, "bipartiteSoftMatch precision 'bf16' needs a GPU of compute capability 8.0 or newer");
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
  const size_t o_flag = L.add<int>(1);
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  int* flag = scratch.at<int>(o_flag);
  TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  int32_t* offsets = scratch.at<int32_t>(o_off);
  int32_t* members = scratch.at<int32_t>(o_mem);
  csr_kernel<<<static_cast<unsigned>(blocks_for(B, 64)), 64, 0, stream>>>(p.assign.ptr<const int32_t>(), B, N, M, offsets, members, flag);
  TS_CUDA_CHECK_LAUNCH("csr_kernel");
  int host_flag = 0;
  TS_RETURN_IF_ERROR(read_device_flag(flag, stream, &host_flag));
  if (host_flag != 0) return Status(Code::kRange, "expected assign values in [0, " + std::to_string(M) + ")");
  const float* sizes = p.mode == MergeMode::kWavg ? static_cast<const float*>(p.sizes.data) : nullptr;
  return TS_DISPATCH_FLOAT(p.x.dtype, "merge", [&] {
    merge_kernel<scalar_t><<<static_cast<unsigned>(B * M), 128, 0, stream>>>(
        static_cast<const scalar_t*>(p.x.data), p.x.strides[0], p.x.strides[1], N, C, M, static_cast<int>(p.mode),
        sizes, offsets, members, static_cast<scalar_t*>(p.out.data), static_cast<float*>(p.sizes_out.data));
    TS_CUDA_CHECK_LAUNCH("merge_kernel");
    return Status::Ok();
  });
}

Status contextual_merge(const ContextualMergeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2], Cm = p.metric.shape[2];
  const int64_t Nr = p.remaining.shape[1], c = p.c;
  const int64_t step = Nr / c > 1 ? Nr / c : 1;
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  ScratchLayout L;
  const size_t o_norm = L.add<float>(B * N * Cm);
  const size_t o_owner = L.add<int32_t>(B * Nr);
  const size_t o_flag = L.add<int>(1);
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(L.bytes()));
  int* flag = scratch.at<int>(o_flag);
  TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  float* normed = scratch.at<float>(o_norm);
  TS_RETURN_IF_ERROR(normalise(p.metric, normed, flag, stream));
  int32_t* owner = scratch.at<int32_t>(o_owner);
  const int32_t* rem = p.remaining.ptr<const int32_t>();
  const int64_t nr_blocks = blocks_for(Nr, kThreads);
  TS_RETURN_IF_ERROR(check_grid_x(B * nr_blocks, "contextualMerge"));
  TS_RETURN_IF_ERROR(check_grid_x(B * c, "contextualMerge"));
  owner_kernel<<<static_cast<unsigned>(B * nr_blocks), kThreads, 0, stream>>>(normed, N, Cm, rem, Nr, c, step, owner,
                                                                             nr_blocks);
  TS_CUDA_CHECK_LAUNCH("owner_kernel");
  TS_RETURN_IF_ERROR(TS_DISPATCH_FLOAT(p.x.dtype, "contextualMerge", [&] {
    contextual_kernel<scalar_t><<<static_cast<unsigned>(B * c), 128, 0, stream>>>(
        static_cast<const scalar_t*>(p.x.data), p.x.strides[0], p.x.strides[1], C, rem, Nr, c, step, owner,
        static_cast<scalar_t*>(p.out.data));
    TS_CUDA_CHECK_LAUNCH("contextual_kernel");
    return Status::Ok();
  }));
  int host_flag = 0;
  TS_RETURN_IF_ERROR(read_device_flag(flag, stream, &host_flag));
  if (host_flag != 0) return Status(Code::kRange, "expected finite metric but it holds NaN or Inf");
  return Status::Ok();
}

}  // namespace cuda
}  // namespace tokensieve
