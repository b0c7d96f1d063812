// Symmetric INT8/INT4 quantization (SageAttention / PAROAttention style).
//
// Layouts (stable: the block-sparse attention work reads them).
// x is a contiguous tensor [..., C]; R = numel / C rows.
//
//   data, 8 bits: i8, x's shape, row-major.
//   data, 4 bits: u8 [..., ceil(C / 2)]: element c of a row is byte c / 2,
//                 the low nibble for even c, the high nibble for odd c; each
//                 nibble is a 4-bit two's-complement value in [-7, 7]. An odd
//                 C leaves the high nibble of a row's last byte 0.
//   scales: f32, by granularity
//     kTensor   [1]                      one scale for everything
//     kToken    [..., 1] (R values)      one per row
//     kChannel  [C]                      one per last-dim channel, over all rows
//     kGroup    [..., ceil(C / g)]       contiguous groups of g along the last dim
//     kRows     [B, H, ceil(N / n), 1]   x is [B, H, N, D]: one per n consecutive
//                                        tokens of a (b, h) (SageAttention's
//                                        per-block Q 128 / K 64, per-warp Q 32)
//   A group or row block that does not divide C or N is an error unless
//   `pad`; then the last block is short (its scale covers what exists).
//   mean (smooth): f32 [B, H, 1, D], the per-(b, h, channel) mean over the N
//   tokens, subtracted before quantizing (SageAttention's K smoothing). It is
//   summed in double over chunks of kMeanChunk consecutive tokens, the chunk
//   sums added in token order, then divided by N and rounded to f32: a fixed
//   order, so both back ends produce the same mean and hence the same codes.
//
// Arithmetic: scale = max(amax, kAmaxFloor) / Q with Q = 127 (8 bits) or 7
// (4 bits); q = clamp(round_half_away_from_zero(v / scale), -Q, Q) with v / scale
// computed in f32; dequantized value = q · scale (+ mean). The floor makes an
// all-zero block quantize (and dequantize) exactly to zeros.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {

enum class Granularity : int32_t {
  kTensor = 0,
  kToken = 1,
  kChannel = 2,
  kGroup = 3,
  kRows = 4,
};

constexpr float kAmaxFloor = 1e-20f;
constexpr int64_t kMeanChunk = 64;  // tokens per partial sum of the smoothing mean

struct QuantScheme {
  int bits = 8;  // 8 or 4
  Granularity granularity = Granularity::kToken;
  int64_t block = 0;  // group size (kGroup) or rows per block (kRows)
  bool pad = false;   // allow a short last group / row block
};

struct QuantizeParams {
  TensorView x;  // [..., C] f32/f16/bf16, contiguous
  QuantScheme scheme;
  bool smooth = false;  // x is [B, H, N, D]; subtract the mean over N
  bool check_finite = true;  // NaN/Inf in x → Code::kRange
  TensorView data;    // i8 (8 bits) or u8 (4 bits), layout above, contiguous
  TensorView scales;  // f32, layout above, contiguous
  TensorView mean;    // f32 [B, H, 1, D] when smooth, contiguous
  void* stream = nullptr;
};

struct DequantizeParams {
  TensorView data;
  TensorView scales;
  TensorView mean;  // when add_mean
  QuantScheme scheme;
  bool add_mean = false;
  TensorView out;  // f32/f16/bf16, the original shape, contiguous
  void* stream = nullptr;
};

// Shape checks shared by both back ends; `shape`/`ndim` of the original x.
Status validate(const QuantizeParams& p);
Status validate(const DequantizeParams& p);

namespace cpu {
Status quantize(const QuantizeParams& p);
Status dequantize(const DequantizeParams& p);
}  // namespace cpu

namespace cuda {
Status quantize(const QuantizeParams& p);
Status dequantize(const DequantizeParams& p);
}  // namespace cuda

}  // namespace tokensieve
