// Launchers of the quantization family shared by cuda/quantize.cu (the
// public quantize) and cuda/attention.cu (INT8 attention scores). The
// arithmetic is quantize.h's, bit for bit the CPU back end's.
#pragma once

#include <cstdint>

#include "cuda/common.cuh"
#include "tokensieve/quantize.h"

namespace tokensieve {
namespace cuda {

// A [B, H, N, D] view of f32/f16/bf16 elements; D contiguous, the other
// strides in elements.
struct TokenView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t B = 1, H = 1, N = 1, D = 1;
  int64_t sb = 0, sh = 0, sn = 0;
};

// Chunks of the smoothing mean (kMeanChunk tokens each) of an N-token view.
inline int64_t mean_chunks(int64_t N) { return (N + kMeanChunk - 1) / kMeanChunk; }

// mean[bh, d] ([B·H, D] f32) of x over its N tokens, summed as quantize.h
// prescribes (double sums per chunk, chunks added in order). `partials` is
// scratch of B·H·mean_chunks(N)·D doubles.
Status launch_token_mean(const TokenView& x, double* partials, float* mean, cudaStream_t stream);

// Which row blocks a kRows quantization writes: all (count < 0), or only
// those holding one of the `count` selected token rows (rows[i], or first + i
// when rows is null) — the q blocks an attention-score pass reads.
struct BlockFilter {
  const int32_t* rows = nullptr;  // device
  int64_t first = 0;
  int64_t count = -1;
};

// kRows quantization of x (minus mean[bh, d] when mean is not null) in blocks
// of `block` tokens per (b, h): codes into a contiguous [B, H, N, D] i8 (bits
// 8) or [B, H, N, ceil(D / 2)] u8 (bits 4) buffer, scales [B·H, ceil(N /
// block)]. Sets `flag_bit` in *flag when a block holds NaN or Inf (flag may
// be null: no check). Takes 16-byte vectors when x is 16-byte aligned and D
// and the token strides are multiples of 16 / sizeof(element), else one
// element a thread; the bytes are the same.
Status launch_rows_quantize(const TokenView& x, const float* mean, int bits, int64_t block, BlockFilter filter,
                            void* codes, float* scales, int* flag, int flag_bit, cudaStream_t stream);

// Which kernel variant the launches above and quantize()/dequantize() took,
// counted on the host (relaxed atomics): the emulator tests check that every
// path ran. Not an API; the counts only grow.
enum class QuantPath : int {
  kTokenVector,
  kTokenScalar,
  kGroupVector,
  kGroupScalar,
  kRowsVector,
  kRowsScalar,
  kSharedVector,  // tensor and channel scales
  kSharedScalar,
  kDequantVector,
  kDequantScalar,
  kCount,
};
uint64_t quantize_path_count(QuantPath path);

}  // namespace cuda
}  // namespace tokensieve
