// Rows and panels of the CPU diversity and coverage families (cpu/rows.h).
#include "cpu/rows.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <vector>

#include "cpu/isa.h"
#include "cpu/thread_pool.h"

namespace tokensieve {
namespace cpu {

thread_local Scratch tl_panels;
thread_local Scratch tl_matrix;
thread_local Scratch tl_aux_panels;

namespace {

// Atomic "m = min(m, v)" on a float kept as bits; distances may be slightly
// negative (1 - cos rounding), so compare as floats, not as integers.
void atomic_min(std::atomic<float>& m, float v) {
  float cur = m.load(std::memory_order_relaxed);
  while (v < cur && !m.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

// Row a of the segment, contiguous (C floats), from its panel.
void segment_row(const Segment& s, int64_t a, float* dst) {
  const float* src = s.kt + (a / kColTile) * s.C * kColTile + a % kColTile;
  for (int64_t c = 0; c < s.C; ++c) dst[c] = src[c * kColTile];
}

}  // namespace

// Rows of a [B, N, C] view as f32: row r of batch b into dst (C floats).
void load_row(const TensorView& x, int64_t b, int64_t r, float* dst) {
  const int64_t es = static_cast<int64_t>(dtype_size(x.dtype));
  const char* src = static_cast<const char*>(x.data) + (b * x.strides[0] + r * x.strides[1]) * es;
  isa().to_f32(src, x.dtype, x.shape[2], dst);
}

int64_t load_segment(Segment& s, const TensorView& x, int64_t b, int64_t base, DistanceMetric metric, float* raw,
                     bool parallel) {
  s.ld = round_up16(s.n);
  s.kt = tl_panels.get(s.ld * s.C);
  s.raw_norm.resize(static_cast<size_t>(s.n));
  const int64_t bad = pack_rows(
      x, b, s.n, [&](int64_t a) { return base + s.ids[static_cast<size_t>(a)]; },
      [](double ss) { return ss > 0 ? static_cast<float>(1.0 / std::sqrt(ss)) : 0.0f; },
      metric == DistanceMetric::kCosine, s.kt, s.raw_norm.data(), raw, parallel);
  if (bad >= 0) return bad;
  if (metric == DistanceMetric::kL2) {
    s.sq.assign(static_cast<size_t>(s.ld), 0.0f);
    for (int64_t p = 0; p < s.ld / kColTile; ++p)
      isa().panel_self_dots(s.kt + p * s.C * kColTile, s.C, s.sq.data() + p * kColTile);
  }
  return -1;
}

// dist[j] = d(row i, row j) for all active j; `parallel` splits the panels.
void distances_from(const Segment& s, DistanceMetric metric, int64_t i, float* dist, bool parallel) {
  const int64_t panels = s.ld / kColTile;
  const int64_t per_task = std::max<int64_t>(4, (int64_t{1} << 16) / std::max<int64_t>(1, s.C * kColTile) / 4 * 4);
  const int64_t tasks = (panels + per_task - 1) / per_task;
  const bool l2 = metric == DistanceMetric::kL2;
  std::vector<float> row(static_cast<size_t>(s.C));
  segment_row(s, i, row.data());
  auto run = [&](int64_t t) {
    const int64_t p0 = t * per_task, p1 = std::min(panels, p0 + per_task);
    std::vector<float> dots(static_cast<size_t>((p1 - p0) * kColTile));
    isa().qk_row_panels(row.data(), s.C, s.kt + p0 * s.C * kColTile, s.C * kColTile, p1 - p0, dots.data());
    for (int64_t j = p0 * kColTile; j < std::min(s.n, p1 * kColTile); ++j)
      dist[j] = to_distance(metric, dots[j - p0 * kColTile], l2 ? s.sq[i] : 0.f, l2 ? s.sq[j] : 0.f);
  };
  if (parallel && tasks > 1)
    parallel_for(tasks, run);
  else
    for (int64_t t = 0; t < tasks; ++t) run(t);
}

// The full distance matrix (diagonal 0) over the upper triangle, mirrored,
// and every row's nearest-neighbour distance (itself excluded).
void distance_matrix(const Segment& s, DistanceMetric metric, float* nn, float* matrix, bool parallel) {
  const int64_t n = s.n;
  const bool l2 = metric == DistanceMetric::kL2;
  gemm_tiles(GemmA{s.kt, 0, true}, n, s.kt, n, s.C, /*upper=*/true, parallel,
             [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, const float* tile) {
               if (j0 >= i1) {
                 // Off the diagonal every entry is valid: the rows in runs
                 // (the metric's branch out of the loop), then the mirror
                 // as one transposed block.
                 for (int64_t i = i0; i < i1; ++i) {
                   const float* t = tile + (i - i0) * kGemmTile - j0;
                   float* row = matrix + i * n;
                   if (l2)
                     for (int64_t j = j0; j < j1; ++j) row[j] = to_distance(metric, t[j], s.sq[i], s.sq[j]);
                   else
                     for (int64_t j = j0; j < j1; ++j) row[j] = to_distance(metric, t[j], 0.f, 0.f);
                 }
                 isa().transpose_block(matrix + i0 * n + j0, n, i1 - i0, j1 - j0, matrix + j0 * n + i0, n);
                 return;
               }
               for (int64_t i = i0; i < i1; ++i)
                 for (int64_t j = std::max(j0, i); j < j1; ++j) {
                   const float d = j == i ? 0.0f
                                          : to_distance(metric, tile[(i - i0) * kGemmTile + (j - j0)],
                                                        l2 ? s.sq[i] : 0.f, l2 ? s.sq[j] : 0.f);
                   matrix[i * n + j] = d;
                   matrix[j * n + i] = d;
                 }
             });
  // Rows in tasks of ~16K entries: one task per row (a few dozen
  // nanoseconds of work) alternated the rows between the threads and paid
  // a hand-off per row (k-center 576×4096: ~1% of the call).
  const int64_t rows_per_task = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n));
  const int64_t tasks = (n + rows_per_task - 1) / rows_per_task;
  auto finish = [&](int64_t t) {
    for (int64_t i = t * rows_per_task; i < std::min(n, (t + 1) * rows_per_task); ++i) {
      const float* row = matrix + i * n;
      nn[i] = std::min(isa().min(row, i), isa().min(row + i + 1, n - i - 1));
    }
  };
  if (parallel)
    parallel_for(tasks, finish);
  else
    for (int64_t t = 0; t < tasks; ++t) finish(t);
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
  gemm_tiles(GemmA{s.kt, 0, true}, n, s.kt, n, s.C, /*upper=*/true, parallel,
             [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, const float* tile) {
               float colmin[kGemmTile];
               std::fill(colmin, colmin + kGemmTile, kInf);
               for (int64_t i = i0; i < i1; ++i) {
                 float rowmin = kInf;
                 for (int64_t j = std::max(j0, i + 1); j < j1; ++j) {
                   const float d = to_distance(metric, tile[(i - i0) * kGemmTile + (j - j0)], l2 ? s.sq[i] : 0.f,
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

}  // namespace cpu
}  // namespace tokensieve
