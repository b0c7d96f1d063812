// The CPU primitives that are worth compiling per instruction set. The same
// source (cpu/isa_impl.inc) is compiled for baseline x86-64 and for
// AVX2+FMA+F16C; isa() picks the best one this machine supports.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {
namespace cpu {

// Key columns per micro-tile of qk_tile; packed kᵀ is padded to a multiple.
constexpr int64_t kColTile = 16;
// Query rows per micro-tile of qk_tile.
constexpr int kRowTile = 4;

struct IsaKernels {
  const char* name;
  // dst[i] = float(src[i]) for a contiguous run of n elements of dtype `dt`.
  void (*to_f32)(const void* src, DType dt, int64_t n, float* dst);
  // True when every x[i] is finite.
  bool (*all_finite)(const float* x, int64_t n);
  // s[r*lds + j] = Σ_d q[r*D + d] * kt[d*ldk + j] for r < rows (<= kRowTile)
  // and j < ncols (a multiple of kColTile).
  void (*qk_tile)(const float* q, int rows, int64_t D, const float* kt, int64_t ldk,
                  int64_t ncols, float* s, int64_t lds);
  // out[p*kColTile + c] = Σ_d q[d] * kt[p*panel_stride + d*kColTile + c] for
  // p < npanels, c < kColTile (panels of packed kᵀ): per element the same
  // sequential FMA chain over d as qk_tile, hence the same bits.
  void (*qk_row_panels)(const float* q, int64_t D, const float* kt, int64_t panel_stride, int64_t npanels,
                        float* out);
  // out[c] = Σ_d panel[d*kColTile + c]² for c < kColTile (qk_tile's chain).
  void (*panel_self_dots)(const float* panel, int64_t D, float* out);
  // out[j] = Σ_d q[d] * k[j*ldk + d] for j < n.
  void (*dot_rows)(const float* q, int64_t D, const float* k, int64_t ldk, int64_t n,
                   float* out);
  // max over x[0..n), n >= 1.
  float (*max)(const float* x, int64_t n);
  // x[i] = exp(x[i] - shift) in place; returns Σ x[i] (after the update).
  // exp of -inf (or anything below ~-87.3) is exactly 0.
  float (*exp_shift_sum)(float* x, int64_t n, float shift);
  // y[i] += a * x[i]
  void (*axpy)(float a, const float* x, float* y, int64_t n);
  // y[i] += x[i]
  void (*add)(const float* x, float* y, int64_t n);
  // max |x[i]| over i < n (0 for n == 0); clears *finite when some x[i] is
  // NaN or infinite (the check rides along the same pass over memory).
  float (*amax)(const float* x, int64_t n, bool* finite);
  // out[i] = clamp(round_half_away(x[i] / scale[i * scale_step]), -q, q)
  // with an IEEE f32 division (scale_step 0: one scale for all).
  void (*quantize_codes)(const float* x, int64_t n, const float* scale, int64_t scale_step, float q,
                         int8_t* out);
  // Benchmark probe: `iters` rounds of 12 independent 8-wide FMA chains
  // (96 FMAs each); returns a value that depends on all of them.
  float (*fma_probe)(int64_t iters, float seed);
};

const IsaKernels& isa();

namespace isa_baseline {
extern const IsaKernels kernels;
}
namespace isa_avx2 {
extern const IsaKernels kernels;
}

}  // namespace cpu
}  // namespace tokensieve
