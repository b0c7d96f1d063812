// Feature preparation shared by the CUDA diversity family (k-center,
// k-medoids; cuda/diversity.cu) and MMTok's coverage matrix
// (cuda/coverage.cu): rows of a [B, N, C] view as f32, optionally
// normalised (launch_prep, cuda/features.cu), and the 64 × 64 tile of dot
// products both build their pair distances and logits from (tile_dots).
//
// Exactness. Every dot product is one sequential fmaf chain over the
// channels — the chain of the CPU back end's gemm_tile (cpu/gemm.h). Norms are
// float64 sums in channel order, as on the CPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "tokensieve/tensor.h"

namespace tokensieve {
namespace cuda {

constexpr int kPrepWarps = 4;               // prep: one warp per token
constexpr int kTile = 64;                   // pair GEMM: 64 × 64 outputs per block
constexpr int kTileK = 16;                  // channels per shared-memory stage
constexpr int kGemmThreads = 256;           // 16 × 16 threads, 4 × 4 outputs each

// Rows of x [B, N, C] as f32 into rows [B, N, C] (normalised when asked: by
// max(norm, eps) with eps > 0, else zero rows stay zero), with each row's raw
// norm and (l2) its own dot chain when those are not null; excluded tokens are
// skipped. NaN/Inf → st (kBadValue, the lowest bad token).
Status launch_prep(const TensorView& x, const uint8_t* exclude, bool normalise, double eps, float* rows,
                   float* raw_norm, float* sq, DeviceStatus* st, cudaStream_t stream);

namespace {

// acc[r][c] = Σ_d a_rows[ty + 16r][d] · b_rows[tx + 16c][d] over one 64 × 64
// tile (tx, ty = thread % 16, thread / 16): every element one sequential
// fmaf chain over d = 0..C−1, the CPU's gemm_tile chain. Row pointers live in
// shared memory; a null pointer is a zero row. 256 threads call it.
__device__ inline void tile_dots(const float* const* a_rows, const float* const* b_rows, int64_t C, float (&acc)[4][4]) {
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

}  // namespace
}  // namespace cuda
}  // namespace tokensieve
