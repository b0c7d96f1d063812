// CPU STC-Pruner scores of one chunk of video frames; the parameter checks
// are core/stc.cc's.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/rows.h"
#include "cpu/thread_pool.h"
#include "tokensieve/stc.h"

namespace tokensieve {
namespace cpu {

Status stc_scores(const StcScoresParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.x.on_host()) return Status(Code::kDevice, "cpu::stc_scores needs host tensors");
  const int64_t F = p.x.shape[0], T = p.x.shape[1], C = p.x.shape[2], M = F * T, Cs = stc_scoring_channels(C);
  std::vector<float> xs(static_cast<size_t>(M * C));  // [F·T, C]
  for (int64_t f = 0; f < F; ++f)
    for (int64_t t = 0; t < T; ++t) {
      float* row = xs.data() + (f * T + t) * C;
      load_row(p.x, f, t, row);
      if (!isa().all_finite(row, C))
        return Status(Code::kRange, "expected finite features but x[" + std::to_string(f) + ", " + std::to_string(t) +
                                        "] holds NaN or Inf");
    }
  // Per-channel mean and population variance of the raw features (two-pass, float64).
  std::vector<double> mean(static_cast<size_t>(C), 0.0), var(static_cast<size_t>(C), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t c = 0; c < C; ++c) mean[c] += xs[i * C + c];
  for (int64_t c = 0; c < C; ++c) mean[c] /= static_cast<double>(M);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t c = 0; c < C; ++c) {
      const double d = xs[i * C + c] - mean[c];
      var[c] += d * d;
    }
  // The scoring channels in ascending-variance order (topk(largest=False)
  // returns them sorted); every later step uses this order.
  std::vector<int32_t> ch(static_cast<size_t>(C));  // [Cs] after the resize
  for (int64_t c = 0; c < C; ++c) ch[c] = static_cast<int32_t>(c);
  std::stable_sort(ch.begin(), ch.end(), [&](int32_t a, int32_t b) { return var[a] < var[b]; });
  ch.resize(static_cast<size_t>(Cs));
  if (p.channels.data) std::copy(ch.begin(), ch.end(), p.channels.ptr<int32_t>());
  // The chunk's raw mean, and the memory: by position (authors) or by channel.
  const bool aligned = p.memory_mode == StcMemory::kAligned;
  float* chunk_mean = p.chunk_mean.ptr<float>();
  if (aligned)
    for (int64_t c = 0; c < C; ++c) chunk_mean[c] = static_cast<float>(mean[c]);
  else
    for (int64_t j = 0; j < Cs; ++j) chunk_mean[j] = static_cast<float>(mean[ch[j]]);
  const float* msum = p.memory_sum.data ? p.memory_sum.ptr<float>() : nullptr;
  std::vector<double> memory(static_cast<size_t>(Cs));  // [Cs], normalised below
  double mss = 0.0;
  for (int64_t j = 0; j < Cs; ++j) {
    const int64_t slot = aligned ? ch[j] : j;
    memory[j] = ((msum ? msum[slot] : 0.0) + mean[ch[j]]) / static_cast<double>(p.memory_count + 1);
    mss += memory[j] * memory[j];
  }
  const double minv = 1.0 / std::max(std::sqrt(mss), kStcNormEps);
  for (double& m : memory) m *= minv;
  // x̂ [F·T, Cs]: the scoring channels of each token, normalised over them.
  std::vector<double> xn(static_cast<size_t>(M * Cs));
  parallel_for(F, [&](int64_t f) {
    for (int64_t t = 0; t < T; ++t) {
      const float* row = xs.data() + (f * T + t) * C;
      double* out = xn.data() + (f * T + t) * Cs;
      double ss = 0.0;
      for (int64_t j = 0; j < Cs; ++j) {
        out[j] = row[ch[j]];
        ss += out[j] * out[j];
      }
      const double inv = 1.0 / std::max(std::sqrt(ss), kStcNormEps);
      for (int64_t j = 0; j < Cs; ++j) out[j] *= inv;
    }
  });
  static const double kAlphas[5] = {0.125, 0.25, 0.5, 1.0, 2.0};
  auto G = [](double d2) {
    double g = 0;
    for (double a : kAlphas) g += std::exp(-d2 / (2 * a));
    return g;
  };
  float* scores = p.scores.ptr<float>();
  parallel_for(F, [&](int64_t f) {
    std::vector<double> fmean(static_cast<size_t>(Cs), 0.0);  // [Cs] frame mean of x̂
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < Cs; ++j) fmean[j] += xn[(f * T + t) * Cs + j];
    for (int64_t j = 0; j < Cs; ++j) fmean[j] /= static_cast<double>(T);
    for (int64_t t = 0; t < T; ++t) {
      const double* row = xn.data() + (f * T + t) * Cs;
      double df = 0, dm = 0;
      for (int64_t j = 0; j < Cs; ++j) {
        df += (row[j] - fmean[j]) * (row[j] - fmean[j]);
        dm += (row[j] - memory[j]) * (row[j] - memory[j]);
      }
      scores[f * T + t] = static_cast<float>(G(df) + G(dm));
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
