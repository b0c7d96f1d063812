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
template <class RowsOf>
void smoothing_mean(RowsOf rows, int64_t N, int64_t D, float* mean) {
  const IsaKernels& K = isa();
  std::vector<double> sum(static_cast<size_t>(D), 0.0), chunk(static_cast<size_t>(D));
  for (int64_t n0 = 0; n0 < N; n0 += kMeanChunk) {
    std::fill(chunk.begin(), chunk.end(), 0.0);
    for (int64_t n = n0, end = std::min(N, n0 + kMeanChunk); n < end;) {
      const RowRun run = rows(n, static_cast<int>(end - n));
      K.add_rows_f64(run.data, run.ld, run.count, D, chunk.data());
      n += run.count;
    }
    for (int64_t c = 0; c < D; ++c) sum[static_cast<size_t>(c)] += chunk[static_cast<size_t>(c)];
  }
  for (int64_t c = 0; c < D; ++c) mean[c] = static_cast<float>(sum[static_cast<size_t>(c)] / static_cast<double>(N));
}

}  // namespace cpu
}  // namespace tokensieve
