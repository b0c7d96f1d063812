// Rows and panels shared by the CPU diversity family (k-center, k-medoids)
// and the coverage family (MMTok's coverage matrix): rows of a [B, N, C] view
// as f32, rows packed as panels of 16 columns, the blocked a·bᵀ (gemm_nt),
// distance matrices and nearest neighbours over one segment, and the
// (batch, segment) work split. cpu/rows.cc defines them.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include "cpu/isa.h"
#include "tokensieve/diversity.h"
#include "tokensieve/tensor.h"

namespace tokensieve {
namespace cpu {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Rows of a [B, N, C] view as f32: row r of batch b into dst (C floats).
void load_row(const TensorView& x, int64_t b, int64_t r, float* dst);

// Every distance of this family comes from one dot product, and every dot
// product is one sequential FMA chain over the channels: qk_tile's
// micro-kernel over rows packed as panels of 16 columns, whether it runs as
// the matrix pass, the nearest-neighbour pass, one row per step
// (qk_row_panels) or the squared norms (panel_self_dots). The same pair thus
// gets the same bits wherever it is computed: exact duplicates tie exactly
// (and the lower index wins), the matrix is exactly symmetric (fma(a, b, c) ==
// fma(b, a, c)), and the CUDA back end, whose threads run the same chains
// (tile_dots, cuda/features.cuh), picks the same tokens as the AVX2 back end.
// Keep the whole distance matrix of a segment (steps then read one row each)
// when it needs at most this many floats; otherwise recompute per step.
constexpr int64_t kMaxMatrixFloats = int64_t{16} << 20;
// Rows and columns of one GEMM task (a 16 KiB tile of results).
constexpr int64_t kTile = 64;

// Uninitialised f32 storage: pack_panels writes every element, padding
// included, so no zero fill precedes it.
using FloatBuffer = std::unique_ptr<float[]>;

struct Segment {
  int64_t n = 0;              // active (non-excluded) tokens
  int64_t C = 0;
  int64_t ld = 0;             // n padded to a multiple of kColTile
  std::vector<int32_t> ids;   // active token -> position in the segment (ascending)
  std::vector<float> x;       // [ld, C] f32 (normalised for cosine), zero padding rows
  FloatBuffer kt;             // [ld / 16][C][16]: the rows packed as panels of 16 columns
  std::vector<float> sq;      // [ld] squared norms (l2): the chains' diagonal
  std::vector<float> raw_norm;// [n] L2 norm of the raw features (maxnorm seed)
};

inline int64_t round_up16(int64_t n) { return (n + kColTile - 1) / kColTile * kColTile; }

// Rows [n, C] into panels [round_up16(n) / 16][C][16] (padding columns zero):
// each panel is one contiguous run, where a plain xᵀ would touch a new page
// per channel when C is in the thousands.
void pack_panels(const float* x, int64_t n, int64_t C, FloatBuffer& kt, bool parallel);

// Packs the segment's rows and, for l2, their squared norms.
void prepare(Segment& s, DistanceMetric metric, bool parallel);

// Distance from the dot product (cosine: rows are unit or zero).
inline float to_distance(DistanceMetric m, float dot, float sqi, float sqj) {
  if (m == DistanceMetric::kCosine) return 1.0f - dot;
  return std::sqrt(std::max(0.0f, sqi + sqj - 2.0f * dot));
}

// dist[j] = d(row i, row j) for all active j; `parallel` splits the panels.
void distances_from(const Segment& s, DistanceMetric metric, int64_t i, float* dist, bool parallel);

// out[i * ldo + j] = a_i · b_j for i < ma, j < nb (rows of C floats). With
// `upper` (a == b), only j >= i is computed and mirrored.
void gemm_nt(const float* a, int64_t ma, const float* b, int64_t nb, int64_t C, float* out, int64_t ldo, bool upper,
             bool parallel);

// The full distance matrix (diagonal 0) over the upper triangle, mirrored,
// and every row's nearest-neighbour distance (itself excluded).
void distance_matrix(const Segment& s, DistanceMetric metric, float* nn, float* matrix, bool parallel);

// Nearest-neighbour distance of every active row (excluding itself); fills
// the full distance matrix when `matrix`, otherwise reduces each tile of the
// upper triangle to row and column minima without storing it.
void nearest_neighbours(const Segment& s, DistanceMetric metric, float* nn, float* matrix, bool parallel);

// Runs fn over `units` independent (batch, segment) units: across units when
// there are enough to keep every thread busy, else inside each unit.
Status for_units(int64_t units, int64_t work_per_unit, const std::function<Status(int64_t, bool)>& fn);

}  // namespace cpu
}  // namespace tokensieve
