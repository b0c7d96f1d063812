// Rows and panels of the CPU diversity and coverage families (cpu/rows.h).
#include "cpu/rows.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "cpu/isa.h"
#include "cpu/thread_pool.h"

namespace tokensieve {
namespace cpu {
namespace {

// Atomic "m = min(m, v)" on a float kept as bits; distances may be slightly
// negative (1 - cos rounding), so compare as floats, not as integers.
void atomic_min(std::atomic<float>& m, float v) {
  float cur = m.load(std::memory_order_relaxed);
  while (v < cur && !m.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

// Tiles of a·bᵀ for rows a [ma, C] and b packed as panels `kt` (nb columns):
// fn(i0, i1, j0, j1, buf) receives buf[(i − i0)·kTile + (j − j0)] = a_i · b_j
// for one kTile × kTile block, 4 rows × 16 columns per qk_tile call. With
// `upper` (a == b) only blocks on or above the diagonal are computed.
template <class Fn>
void for_each_tile(const float* a, int64_t ma, const float* kt, int64_t nb, int64_t C, bool upper, bool parallel,
                   Fn&& fn) {
  const int64_t rb = (ma + kTile - 1) / kTile, cb = (nb + kTile - 1) / kTile;
  std::vector<std::pair<int32_t, int32_t>> pairs;
  for (int64_t I = 0; I < rb; ++I)
    for (int64_t J = upper ? I : 0; J < cb; ++J) pairs.emplace_back(static_cast<int32_t>(I), static_cast<int32_t>(J));
  auto run = [&](int64_t t) {
    const int64_t i0 = pairs[t].first * kTile, j0 = pairs[t].second * kTile;
    const int64_t i1 = std::min(ma, i0 + kTile), j1 = std::min(nb, j0 + kTile);
    float buf[kTile * kTile];
    for (int64_t c0 = j0; c0 < j1; c0 += kColTile)
      for (int64_t r0 = i0; r0 < i1; r0 += kRowTile)
        isa().qk_tile(a + r0 * C, static_cast<int>(std::min<int64_t>(kRowTile, i1 - r0)), C,
                      kt + (c0 / kColTile) * C * kColTile, kColTile, kColTile, buf + (r0 - i0) * kTile + (c0 - j0),
                      kTile);
    fn(i0, i1, j0, j1, static_cast<const float*>(buf));
  };
  const int64_t tasks = static_cast<int64_t>(pairs.size());
  if (parallel)
    parallel_for(tasks, run);
  else
    for (int64_t t = 0; t < tasks; ++t) run(t);
}

}  // namespace

// Rows of a [B, N, C] view as f32: row r of batch b into dst (C floats).
void load_row(const TensorView& x, int64_t b, int64_t r, float* dst) {
  const int64_t es = static_cast<int64_t>(dtype_size(x.dtype));
  const char* src = static_cast<const char*>(x.data) + (b * x.strides[0] + r * x.strides[1]) * es;
  isa().to_f32(src, x.dtype, x.shape[2], dst);
}

// Rows [n, C] into panels [round_up16(n) / 16][C][16] (padding columns zero):
// each panel is one contiguous run, where a plain xᵀ would touch a new page
// per channel when C is in the thousands.
void pack_panels(const float* x, int64_t n, int64_t C, FloatBuffer& kt, bool parallel) {
  const int64_t panels = round_up16(n) / kColTile;
  kt.reset(new float[static_cast<size_t>(panels * kColTile * C)]);
  auto run = [&](int64_t p) {
    // Channel-major: the panel is written in order while its 16 rows are read
    // as 16 sequential streams (row-major writes would scatter at 64-byte strides).
    float* dst = kt.get() + p * C * kColTile;
    const int64_t rows = std::min(n, (p + 1) * kColTile) - p * kColTile;
    const float* src = x + p * kColTile * C;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t j = 0; j < kColTile; ++j) dst[c * kColTile + j] = j < rows ? src[j * C + c] : 0.0f;
  };
  if (parallel && panels > 1)
    parallel_for(panels, run);
  else
    for (int64_t p = 0; p < panels; ++p) run(p);
}

// Packs the segment's rows and, for l2, their squared norms.
void prepare(Segment& s, DistanceMetric metric, bool parallel) {
  s.ld = round_up16(s.n);
  pack_panels(s.x.data(), s.n, s.C, s.kt, parallel);
  if (metric == DistanceMetric::kL2) {
    s.sq.assign(static_cast<size_t>(s.ld), 0.0f);
    for (int64_t p = 0; p < s.ld / kColTile; ++p)
      isa().panel_self_dots(s.kt.get() + p * s.C * kColTile, s.C, s.sq.data() + p * kColTile);
  }
}

// dist[j] = d(row i, row j) for all active j; `parallel` splits the panels.
void distances_from(const Segment& s, DistanceMetric metric, int64_t i, float* dist, bool parallel) {
  const int64_t panels = s.ld / kColTile;
  const int64_t per_task = std::max<int64_t>(4, (int64_t{1} << 16) / std::max<int64_t>(1, s.C * kColTile) / 4 * 4);
  const int64_t tasks = (panels + per_task - 1) / per_task;
  const bool l2 = metric == DistanceMetric::kL2;
  auto run = [&](int64_t t) {
    const int64_t p0 = t * per_task, p1 = std::min(panels, p0 + per_task);
    std::vector<float> dots(static_cast<size_t>((p1 - p0) * kColTile));
    isa().qk_row_panels(s.x.data() + i * s.C, s.C, s.kt.get() + p0 * s.C * kColTile, s.C * kColTile, p1 - p0,
                        dots.data());
    for (int64_t j = p0 * kColTile; j < std::min(s.n, p1 * kColTile); ++j)
      dist[j] = to_distance(metric, dots[j - p0 * kColTile], l2 ? s.sq[i] : 0.f, l2 ? s.sq[j] : 0.f);
  };
  if (parallel && tasks > 1)
    parallel_for(tasks, run);
  else
    for (int64_t t = 0; t < tasks; ++t) run(t);
}

// out[i * ldo + j] = a_i · b_j for i < ma, j < nb (rows of C floats). With
// `upper` (a == b), only j >= i is computed and mirrored.
void gemm_nt(const float* a, int64_t ma, const float* b, int64_t nb, int64_t C, float* out, int64_t ldo, bool upper,
             bool parallel) {
  FloatBuffer kt;
  pack_panels(b, nb, C, kt, parallel);
  for_each_tile(a, ma, kt.get(), nb, C, upper, parallel,
                [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, const float* buf) {
                  for (int64_t i = i0; i < i1; ++i)
                    for (int64_t j = upper ? std::max(j0, i) : j0; j < j1; ++j) {
                      const float v = buf[(i - i0) * kTile + (j - j0)];
                      out[i * ldo + j] = v;
                      if (upper) out[j * ldo + i] = v;
                    }
                });
}

// The full distance matrix (diagonal 0) over the upper triangle, mirrored,
// and every row's nearest-neighbour distance (itself excluded).
void distance_matrix(const Segment& s, DistanceMetric metric, float* nn, float* matrix, bool parallel) {
  const int64_t n = s.n;
  const bool l2 = metric == DistanceMetric::kL2;
  for_each_tile(s.x.data(), n, s.kt.get(), n, s.C, /*upper=*/true, parallel,
                [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, const float* buf) {
                  for (int64_t i = i0; i < i1; ++i)
                    for (int64_t j = std::max(j0, i); j < j1; ++j) {
                      const float d = j == i ? 0.0f
                                             : to_distance(metric, buf[(i - i0) * kTile + (j - j0)],
                                                           l2 ? s.sq[i] : 0.f, l2 ? s.sq[j] : 0.f);
                      matrix[i * n + j] = d;
                      matrix[j * n + i] = d;
                    }
                });
  auto finish = [&](int64_t i) {
    const float* row = matrix + i * n;
    float m = kInf;
    for (int64_t j = 0; j < n; ++j)
      if (j != i) m = std::min(m, row[j]);
    nn[i] = m;
  };
  if (parallel)
    parallel_for(n, finish);
  else
    for (int64_t i = 0; i < n; ++i) finish(i);
}

// Nearest-neighbour distance of every active row (excluding itself); fills
// the full distance matrix when `matrix`, otherwise reduces each tile of the
// upper triangle to row and column minima without storing it.
void nearest_neighbours(const Segment& s, DistanceMetric metric, float* nn, float* matrix, bool parallel) {
  if (matrix != nullptr) return distance_matrix(s, metric, nn, matrix, parallel);
  const int64_t n = s.n;
  const bool l2 = metric == DistanceMetric::kL2;
  std::vector<std::atomic<float>> best(static_cast<size_t>(n));
  for (auto& b : best) b.store(kInf, std::memory_order_relaxed);
  for_each_tile(s.x.data(), n, s.kt.get(), n, s.C, /*upper=*/true, parallel,
                [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, const float* buf) {
                  float colmin[kTile];
                  std::fill(colmin, colmin + kTile, kInf);
                  for (int64_t i = i0; i < i1; ++i) {
                    float rowmin = kInf;
                    for (int64_t j = std::max(j0, i + 1); j < j1; ++j) {
                      const float d = to_distance(metric, buf[(i - i0) * kTile + (j - j0)], l2 ? s.sq[i] : 0.f,
                                                  l2 ? s.sq[j] : 0.f);
                      rowmin = std::min(rowmin, d);
                      colmin[j - j0] = std::min(colmin[j - j0], d);
                    }
                    atomic_min(best[i], rowmin);
                  }
                  for (int64_t j = j0; j < j1; ++j) atomic_min(best[j], colmin[j - j0]);
                });
  for (int64_t i = 0; i < n; ++i) nn[i] = best[i].load(std::memory_order_relaxed);
}

// Runs fn over `units` independent (batch, segment) units: across units when
// there are enough to keep every thread busy, else inside each unit.
Status for_units(int64_t units, int64_t work_per_unit, const std::function<Status(int64_t, bool)>& fn) {
  std::vector<Status> st(static_cast<size_t>(units));
  if (units >= 4 || work_per_unit < (int64_t{1} << 16)) {
    parallel_for(units, [&](int64_t u) { st[u] = fn(u, false); });
  } else {
    for (int64_t u = 0; u < units; ++u) st[u] = fn(u, true);
  }
  for (auto& s : st)
    if (!s.ok()) return s;
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
