// Rows and panels shared by the CPU diversity family (k-center, k-medoids)
// and the coverage family (MMTok's coverage matrix): rows of a [B, N, C] view
// packed as f32 panels of 16 (normalised on the way), the blocked a·bᵀ of
// cpu/gemm.h as a stored product (gemm_nt), distance matrices and nearest
// neighbours over one segment, and the (batch, segment) work split.
// cpu/rows.cc defines what is not a template.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/thread_pool.h"
#include "tokensieve/diversity.h"
#include "tokensieve/tensor.h"

namespace tokensieve {
namespace cpu {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Rows of a [B, N, C] view as f32: row r of batch b into dst (C floats).
void load_row(const TensorView& x, int64_t b, int64_t r, float* dst);

// Every distance of this family comes from one dot product, and every dot
// product is one sequential FMA chain over the channels: gemm_tile's
// register tile over rows packed as panels of 16 (cpu/gemm.h), whether it
// runs as the matrix pass, the nearest-neighbour pass, one row per step
// (qk_row_panels) or the squared norms (panel_self_dots). The same pair thus
// gets the same bits wherever it is computed: exact duplicates tie exactly
// (and the lower index wins), the matrix is exactly symmetric (fma(a, b, c) ==
// fma(b, a, c)), and the CUDA back end, whose threads run the same chains
// (tile_dots, cuda/features.cuh), picks the same tokens as the AVX2 back end.
// Keep the whole distance matrix of a segment (steps then read one row each)
// when it needs at most this many floats; otherwise recompute per step.
constexpr int64_t kMaxMatrixFloats = int64_t{16} << 20;

// Per-thread scratch for packed rows and distance matrices: megabytes, and
// fresh pages per call cost more than filling them (cpu/gemm.h, Scratch).
extern thread_local Scratch tl_panels;
extern thread_local Scratch tl_matrix;
extern thread_local Scratch tl_aux_panels;
// Hands this thread's scratch above Scratch::kKeepBytes back when the call ends.
struct TrimScratch {
  ~TrimScratch() {
    tl_panels.trim();
    tl_matrix.trim();
    tl_aux_panels.trim();
  }
};

struct Segment {
  int64_t n = 0;              // active (non-excluded) tokens
  int64_t C = 0;
  int64_t ld = 0;             // n padded to a multiple of kColTile
  std::vector<int32_t> ids;   // active token -> position in the segment (ascending)
  float* kt = nullptr;        // [ld / 16][C][16]: the rows (normalised for cosine) as panels, zero padding
  std::vector<float> sq;      // [ld] squared norms (l2): the chains' diagonal
  std::vector<float> raw_norm;// [n] L2 norm of the raw features (maxnorm seed)
};

// Packs rows row_of(0..n) of x[b] as f32 panels [round_up16(n)/16][C][16]
// into `kt`, 16 rows per task: each row is converted and checked, the panel
// transposed through registers, the f64 squared norms taken per row in
// channel order (one chain per row, 16 in flight), and the panel scaled by
// scale_of(ss) per row when scale_of is given (row[c] * scale, as a scalar
// loop over the row would). norm[a] = float(sqrt(ss)) when norm is given;
// raw (when given) receives the unscaled rows [n, C]. Returns the first row
// (in order) that holds NaN or Inf, or -1. f32 rows that follow each other
// in x are transposed straight from x, and checked by their f64 squared
// norms (not finite exactly when the row holds NaN or Inf: a finite f32
// squared is below 2^256) instead of a copy and a separate scan.
template <class RowOf, class ScaleOf>
int64_t pack_rows(const TensorView& x, int64_t b, int64_t n, RowOf row_of, ScaleOf scale_of, bool scale, float* kt,
                  float* norm, float* raw, bool parallel) {
  const int64_t C = x.shape[2];
  const int64_t panels = round_up16(n) / kColTile;
  std::vector<int64_t> bad(static_cast<size_t>(panels), -1);
  const auto pack = panels * kColTile * C * static_cast<int64_t>(sizeof(float)) >= kStreamPackBytes
                        ? isa().pack_panel_stream
                        : isa().pack_panel;
  auto run = [&](int64_t p) {
    thread_local std::vector<float> stage;
    if (stage.size() < static_cast<size_t>(kColTile * C)) stage.resize(static_cast<size_t>(kColTile * C));
    const int64_t a0 = p * kColTile;
    const int rows = static_cast<int>(std::min<int64_t>(kColTile, n - a0));
    float* panel = kt + p * C * kColTile;
    const int64_t r0 = row_of(a0);
    bool direct = x.dtype == DType::kF32 && raw == nullptr && (norm != nullptr || scale);
    for (int j = 1; direct && j < rows; ++j) direct = row_of(a0 + j) == r0 + j;
    if (direct) {
      pack(x.ptr<float>() + b * x.strides[0] + r0 * x.strides[1], x.strides[1], rows, C, panel);
    } else {
      for (int j = 0; j < rows; ++j) {
        float* row = stage.data() + j * C;
        load_row(x, b, row_of(a0 + j), row);
        if (!isa().all_finite(row, C)) {
          bad[static_cast<size_t>(p)] = a0 + j;
          return;
        }
        if (raw != nullptr) std::memcpy(raw + (a0 + j) * C, row, static_cast<size_t>(C) * sizeof(float));
      }
      pack(stage.data(), C, rows, C, panel);
    }
    if (norm == nullptr && !scale) return;
    double ss[kColTile];
    isa().panel_sq_norms(panel, C, ss);
    if (direct)
      for (int j = 0; j < rows; ++j)
        if (!std::isfinite(ss[j])) {
          bad[static_cast<size_t>(p)] = a0 + j;
          return;
        }
    float factor[kColTile] = {};
    for (int j = 0; j < rows; ++j) {
      if (norm != nullptr) norm[a0 + j] = static_cast<float>(std::sqrt(ss[j]));
      if (scale) factor[j] = scale_of(ss[j]);
    }
    if (scale) isa().panel_scale(panel, C, factor);
  };
  if (parallel && panels > 1)
    parallel_for(panels, run);
  else
    for (int64_t p = 0; p < panels; ++p) run(p);
  for (int64_t v : bad)
    if (v >= 0) return v;
  return -1;
}

// Loads the segment's active rows (x[b, base + ids[a]]) into panels in this
// thread's scratch (normalised for cosine), their raw norms and, for l2,
// their squared norms; raw (when given) receives the unscaled rows [n, C].
// Returns the first active row that holds NaN or Inf, or -1.
int64_t load_segment(Segment& s, const TensorView& x, int64_t b, int64_t base, DistanceMetric metric, float* raw,
                     bool parallel);

// Distance from the dot product (cosine: rows are unit or zero).
inline float to_distance(DistanceMetric m, float dot, float sqi, float sqj) {
  if (m == DistanceMetric::kCosine) return 1.0f - dot;
  return std::sqrt(std::max(0.0f, sqi + sqj - 2.0f * dot));
}

// dist[j] = d(row i, row j) for all active j; `parallel` splits the panels.
void distances_from(const Segment& s, DistanceMetric metric, int64_t i, float* dist, bool parallel);

// The full distance matrix (diagonal 0) over the upper triangle, mirrored,
// and every row's nearest-neighbour distance (itself excluded).
void distance_matrix(const Segment& s, DistanceMetric metric, float* nn, float* matrix, bool parallel);

// Nearest-neighbour distance of every active row (excluding itself); fills
// the full distance matrix when `matrix`, otherwise reduces each tile of the
// upper triangle to row and column minima without storing it.
void nearest_neighbours(const Segment& s, DistanceMetric metric, float* nn, float* matrix, bool parallel);

}  // namespace cpu
}  // namespace tokensieve
