// Per-ISA kernels private to cpu/merge.cc.
#pragma once

#include <cstdint>

namespace tokensieve {
namespace cpu {

// For each of the n rows (f32 [n, C], contiguous): running max / first
// argmax of row · column over ncols columns packed as 16-column panels
// [ceil(ncols/16)][C][16] (32-byte aligned, zero padded). best/arg hold the
// running values on entry (start from -inf / 0). skip_col0: column 0 never wins.
void score_argmax_avx2(const float* rows, int64_t n, int64_t C, const float* panels, int64_t ncols, bool skip_col0,
                       float* best, int32_t* arg);

// ‖x‖ as float: f64 sum of squares with element d in partial sum d % 4,
// combined as (s0 + s1) + (s2 + s3) (the order of the scalar code and of
// cuda/merge.cu).
float l2norm_avx2(const float* x, int64_t C);
// x[d] /= norm (IEEE division, as the scalar code).
void divide_avx2(float* x, int64_t C, float norm);

}  // namespace cpu
}  // namespace tokensieve
