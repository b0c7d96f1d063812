// CPU greedy maximum coverage and MMTok's coverage matrix; the parameter
// checks are core/coverage.cc's, the blocked GEMM cpu/rows.cc's.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/rows.h"
#include "cpu/thread_pool.h"
#include "tokensieve/coverage.h"

namespace tokensieve {
namespace cpu {

Status max_coverage(const MaxCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.coverage.on_host()) return Status(Code::kDevice, "cpu::max_coverage needs host tensors");
  const int64_t B = p.coverage.shape[0], R = p.coverage.shape[1], N = p.coverage.shape[2], k = p.k;
  const int64_t es = static_cast<int64_t>(dtype_size(p.coverage.dtype));
  // f32 rows with unit stride are read in place (ldc: their row stride);
  // other layouts and dtypes are converted into a [R, N] copy.
  const bool in_place = p.coverage.dtype == DType::kF32 && p.coverage.strides[2] == 1;
  const int64_t ldc = in_place ? p.coverage.strides[1] : N;
  return for_units(B, R * N * k, [&](int64_t b, bool parallel) -> Status {
    std::vector<float> copy(in_place ? 0 : static_cast<size_t>(R * N));
    const float* cov = in_place ? p.coverage.ptr<float>() + b * p.coverage.strides[0] : copy.data();  // [R, ldc]
    for (int64_t r = 0; r < R; ++r) {
      const float* row = cov + r * ldc;
      if (!in_place) {
        const char* src = static_cast<const char*>(p.coverage.data) + (b * p.coverage.strides[0] + r * p.coverage.strides[1]) * es;
        isa().to_f32(src, p.coverage.dtype, N, copy.data() + r * N);
      }
      if (!isa().all_finite(row, N))
        return Status(Code::kRange, "expected finite coverage but row " + std::to_string(r) + " of batch " +
                                        std::to_string(b) + " holds NaN or Inf");
    }
    std::vector<uint8_t> blocked(static_cast<size_t>(N), 0);
    int64_t available = N;
    if (p.exclude.data) {
      const uint8_t* e = p.exclude.ptr<uint8_t>() + b * N;
      for (int64_t j = 0; j < N; ++j)
        if (e[j]) {
          blocked[j] = 1;
          --available;
        }
    }
    if (available < k)
      return Status(Code::kRange, "expected at least k = " + std::to_string(k) + " columns that are not excluded in batch " +
                                      std::to_string(b) + " but it has " + std::to_string(available));
    // Greedy, exact: every step recomputes every open column's gain
    // Σ_r max(0, C[r, j] − best[r]), each one f32 sum in row order (the
    // reference's value), 64 columns at a time across the vector lanes, in
    // column chunks on all threads; then the largest gain, ties to the lower
    // column. k·R·N/8 vector adds: a lazy heap (stale gains as upper bounds)
    // recomputes fewer columns but one scalar chain at a time, which lost on
    // MMTok's softmax coverage, where most gains go stale every step.
    std::vector<float> best(static_cast<size_t>(R), 0.0f);
    std::vector<float> gain(static_cast<size_t>(N));
    const int64_t chunk = 256, chunks = (N + chunk - 1) / chunk;
    auto gains_of = [&](int64_t c) {
      const int64_t j0 = c * chunk, j1 = std::min(N, j0 + chunk);
      isa().coverage_gains(cov + j0, R, ldc, j1 - j0, best.data(), gain.data() + j0);
    };
    int32_t* order = p.order.ptr<int32_t>() + b * k;
    float* gains = p.gains.data ? p.gains.ptr<float>() + b * k : nullptr;
    for (int64_t t = 0; t < k; ++t) {
      if (parallel && chunks > 1)
        parallel_for(chunks, gains_of);
      else
        for (int64_t c = 0; c < chunks; ++c) gains_of(c);
      int64_t pick = -1;
      for (int64_t j = 0; j < N; ++j)
        if (!blocked[j] && (pick < 0 || gain[j] > gain[pick])) pick = j;
      blocked[pick] = 1;  // picked: never again
      order[t] = static_cast<int32_t>(pick);
      if (gains) gains[t] = gain[pick];
      for (int64_t r = 0; r < R; ++r) best[r] = std::max(best[r], cov[r * ldc + pick]);
    }
    if (p.sorted.data) {
      int32_t* sorted = p.sorted.ptr<int32_t>() + b * k;
      std::copy(order, order + k, sorted);
      std::sort(sorted, sorted + k);
    }
    return Status::Ok();
  });
}

Status mmtok_coverage(const MmtokCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.vision.on_host()) return Status(Code::kDevice, "cpu::mmtok_coverage needs host tensors");
  const int64_t B = p.vision.shape[0], n = p.vision.shape[1], m = p.text.shape[1], D = p.vision.shape[2];
  const TensorView& aux = p.vision_aux.data ? p.vision_aux : p.vision;
  const int64_t Da = aux.shape[2];
  float* out = p.out.ptr<float>();
  TrimScratch trim;
  for (int64_t b = 0; b < B; ++b) {
    // L2-normalised rows, max(norm, 1e-8) as the reference's F.normalize,
    // packed as panels for the tiles.
    auto normalised = [&](const TensorView& t, int64_t rows, float* dst, const char* name) -> Status {
      const int64_t bad = pack_rows(
          t, b, rows, [](int64_t r) { return r; },
          [](double ss) { return static_cast<float>(1.0 / std::max(std::sqrt(ss), 1e-8)); }, true, dst, nullptr,
          nullptr, true);
      if (bad < 0) return Status::Ok();
      return Status(Code::kRange, std::string("expected finite ") + name + " but row " + std::to_string(bad) +
                                      " of batch " + std::to_string(b) + " holds NaN or Inf");
    };
    std::vector<float> z(static_cast<size_t>(round_up16(m) * D));
    float* v = tl_panels.get(round_up16(n) * D);
    float* a = p.vision_aux.data ? tl_aux_panels.get(round_up16(n) * Da) : v;
    TS_RETURN_IF_ERROR(normalised(p.text, m, z.data(), "text"));
    TS_RETURN_IF_ERROR(normalised(p.vision, n, v, "vision"));
    if (p.vision_aux.data) TS_RETURN_IF_ERROR(normalised(aux, n, a, "visionAux"));
    float* ob = out + b * (m + n) * n;  // [m + n, n]
    // Logits by blocked GEMM straight into the output rows (the vision–vision
    // block symmetric), then an in-place softmax per row.
    gemm_nt(GemmA{z.data(), 0, true}, m, v, n, D, ob, n, /*upper=*/false, true);
    gemm_nt(GemmA{a, 0, true}, n, a, n, Da, ob + m * n, n, /*upper=*/true, true);
    parallel_for(m + n, [&](int64_t r) {
      float* row = ob + r * n;
      const bool text = r < m;
      const float inv_tau = static_cast<float>(1.0 / (text ? p.tau_tv : p.tau_vv));
      for (int64_t j = 0; j < n; ++j) row[j] *= inv_tau;
      const float sum = isa().exp_shift_sum(row, n, isa().max(row, n, nullptr));
      const float scale = static_cast<float>((text ? 1.0 / static_cast<double>(m) : p.alpha / static_cast<double>(n)) / sum);
      for (int64_t j = 0; j < n; ++j) row[j] *= scale;
    });
  }
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
