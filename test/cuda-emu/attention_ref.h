// A float64 reference of attention_scores that reads the params' own views
// (any dtype, any strides), shared by the emulator programs: the softmax of
// each selected row over its visible keys in double, reduced as the params
// ask (without accumulate: the caller adds what it started from).
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "check.h"
#include "tokensieve/attention.h"

namespace emu_test {

inline std::vector<double> attention_reference(const tokensieve::AttentionScoresParams& p) {
  using namespace tokensieve;
  const int64_t B = p.q.shape[0], H = p.q.shape[1], D = p.q.shape[3], Nk = p.k.shape[2];
  const ScoreReduction& r = p.reduce;
  const int64_t W = r.key_end - r.key_begin, nsel = r.num_query_rows;
  const size_t es = dtype_size(p.q.dtype);
  auto at = [&](const TensorView& t, int64_t b, int64_t h, int64_t n, int64_t d) {
    return static_cast<double>(as_f32(static_cast<const uint8_t*>(t.data) +
                                          (b * t.strides[0] + h * t.strides[1] + n * t.strides[2] + d) * es,
                                      t.dtype));
  };
  std::vector<double> per_head(static_cast<size_t>(B * H * W), 0.0), lg(static_cast<size_t>(Nk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < nsel; ++s) {
        const int64_t i = r.query_rows[s];
        const int64_t end = p.causal ? std::max<int64_t>(0, std::min<int64_t>(Nk, i + p.causal_offset + 1)) : Nk;
        double m = -INFINITY;
        for (int64_t j = 0; j < end; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += at(p.q, b, h, i, d) * at(p.k, b, h, j, d);
          const double bias = p.has_key_bias ? p.key_bias.ptr<float>()[b * p.key_bias.strides[0] + j] : 0.0;
          lg[j] = static_cast<double>(p.scale) * dot + bias;
          m = std::max(m, lg[j]);
        }
        if (end == 0 || m == -INFINITY) continue;  // every key masked: the row adds nothing
        double sum = 0;
        for (int64_t j = 0; j < end; ++j) sum += std::exp(lg[j] - m);
        for (int64_t j = r.key_begin; j < std::min(r.key_end, end); ++j)
          per_head[(b * H + h) * W + j - r.key_begin] += std::exp(lg[j] - m) / sum;
      }
  const double w = r.query_reduce == QueryReduce::kMean ? 1.0 / nsel : 1.0;
  std::vector<double> ref;
  if (r.head_reduce == HeadReduce::kNone) {
    ref = per_head;
    for (auto& v : ref) v *= w;
  } else {
    ref.assign(static_cast<size_t>(B * W), 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t j = 0; j < W; ++j) ref[b * W + j] += per_head[(b * H + h) * W + j];
    for (auto& v : ref) v *= w * (r.head_reduce == HeadReduce::kMean ? 1.0 / H : 1.0);
  }
  return ref;
}

}  // namespace emu_test
