// The smoothing mean of INT8 quantization (quantize.h: SageAttention's K
// smoothing), shared by cpu/quantize.cc and the INT8 attention scores
// (cpu/attention.cc) so that both produce the same mean, and the same codes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/isa.h"
#include "tokensieve/quantize.h"

namespace tokensieve {
namespace cpu {

// A run of token rows as f32: rows [0, count) at row stride ld.
struct RowRun {
  const float* data;
  int64_t ld;
  int count;
};

// mean[c] = float((Σ over chunks of kMeanChunk tokens, in order, of the
// chunk's f64 sum in token order) / N) for c < D: quantize.h's fixed order.
// rows(n, most) returns tokens n, n + 1, … (at least one, at most `most`)
// as f32: in place where the input already holds them, else converted.
// With `hi` and `lo` (block i's D columns at hi + i·range_ld, lo + i·range_ld,
// filled with −inf / +inf by the caller): each block of range_rows tokens'
// column maxima and minima, from the same pass (runs then also end at block
// boundaries; the sums' order is unchanged).
template <class RowsOf>
void smoothing_mean(RowsOf rows, int64_t N, int64_t D, float* mean, int64_t range_rows = 0, float* hi = nullptr,
                    float* lo = nullptr, int64_t range_ld = 0) {
  const IsaKernels& K = isa();
  std::vector<double> sum(static_cast<size_t>(D), 0.0), chunk(static_cast<size_t>(D));
  for (int64_t n0 = 0; n0 < N; n0 += kMeanChunk) {
    std::fill(chunk.begin(), chunk.end(), 0.0);
    for (int64_t n = n0, end = std::min(N, n0 + kMeanChunk); n < end;) {
      if (hi != nullptr) {
        const int64_t blk = n / range_rows, stop = std::min(end, (blk + 1) * range_rows);
        const RowRun run = rows(n, static_cast<int>(stop - n));
        K.add_rows_f64_range(run.data, run.ld, run.count, D, chunk.data(), hi + blk * range_ld, lo + blk * range_ld);
        n += run.count;
      } else {
        const RowRun run = rows(n, static_cast<int>(end - n));
        K.add_rows_f64(run.data, run.ld, run.count, D, chunk.data());
        n += run.count;
      }
    }
    for (int64_t c = 0; c < D; ++c) sum[static_cast<size_t>(c)] += chunk[static_cast<size_t>(c)];
  }
  for (int64_t c = 0; c < D; ++c) mean[c] = static_cast<float>(sum[static_cast<size_t>(c)] / static_cast<double>(N));
}

}  // namespace cpu
}  // namespace tokensieve
