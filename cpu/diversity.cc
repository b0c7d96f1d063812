// CPU greedy k-center, greedy maximum coverage and the MMTok coverage
// builder, plus their parameter checks (shared with the CUDA back end).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/thread_pool.h"
#include "cpu/validate.h"
#include "tokensieve/diversity.h"

namespace tokensieve {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

using check::shape_str;

Status check_input(const TensorView& t, const char* name, int rank, const char* dims) {
  if (t.data == nullptr) return Status(Code::kArg, std::string("expected data for ") + name + " but got a null pointer");
  if (t.ndim != rank)
    return Status(Code::kShape, std::string("expected ") + name + " of rank " + std::to_string(rank) + " " + dims +
                                    " but got shape " + shape_str(t));
  for (int i = 0; i < rank; ++i)
    if (t.shape[i] < 1)
      return Status(Code::kShape, std::string("expected every dimension of ") + name + " " + dims +
                                      " to be >= 1 but got shape " + shape_str(t));
  if (!is_float_dtype(t.dtype))
    return Status(Code::kDType, std::string("expected f32, f16 or bf16 for ") + name + " but got " + dtype_name(t.dtype));
  if (t.strides[rank - 1] != 1 && t.shape[rank - 1] != 1)
    return Status(Code::kUnsupported, std::string("expected the last dimension of ") + name + " to be contiguous");
  return Status::Ok();
}

// An output (or the optional exclude mask) of exact shape, dtype and device.
Status check_exact(const TensorView& t, const char* name, DType dt, std::initializer_list<int64_t> dims,
                   const TensorView& ref, bool optional) {
  if (t.data == nullptr) {
    if (optional) return Status::Ok();
    return Status(Code::kArg, std::string("expected data for ") + name + " but got a null pointer");
  }
  if (t.dtype != dt)
    return Status(Code::kDType, std::string("expected ") + dtype_name(dt) + " for " + name + " but got " + dtype_name(t.dtype));
  bool ok = t.ndim == static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) ok = ok && t.shape[i++] == d;
  if (!ok) {
    std::string want = "[";
    i = 0;
    for (int64_t d : dims) want += (i++ ? ", " : "") + std::to_string(d);
    return Status(Code::kShape, std::string("expected ") + name + " of shape " + want + "] but got " + shape_str(t));
  }
  if (!t.is_contiguous()) return Status(Code::kUnsupported, std::string("expected ") + name + " to be contiguous");
  if (t.device != ref.device) return Status(Code::kDevice, std::string("expected ") + name + " on the device of the input");
  return Status::Ok();
}

}  // namespace

Status validate(const KCenterParams& p) {
  TS_RETURN_IF_ERROR(check_input(p.x, "x", 3, "[B, N, C]"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1];
  if (p.segments < 1 || N % p.segments != 0)
    return Status(Code::kRange, "expected segments >= 1 dividing N = " + std::to_string(N) + " but got " +
                                    std::to_string(p.segments));
  const int64_t S = N / p.segments;
  if (p.k < 1 || p.k > S)
    return Status(Code::kRange, "expected k in [1, " + std::to_string(S) + "] (tokens per segment) but got " +
                                    std::to_string(p.k));
  if (p.metric != DistanceMetric::kCosine && p.metric != DistanceMetric::kL2)
    return Status(Code::kArg, "unknown distance metric");
  if (p.seed != CenterSeed::kIsolated && p.seed != CenterSeed::kMaxNorm && p.seed != CenterSeed::kIndex)
    return Status(Code::kArg, "unknown seed rule");
  if (p.seed == CenterSeed::kIndex && (p.seed_index < 0 || p.seed_index >= S))
    return Status(Code::kRange, "expected a seed index in [0, " + std::to_string(S) + ") but got " +
                                    std::to_string(p.seed_index));
  const int64_t K = p.segments * p.k;
  TS_RETURN_IF_ERROR(check_exact(p.exclude, "exclude", DType::kU8, {B, N}, p.x, true));
  TS_RETURN_IF_ERROR(check_exact(p.order, "order", DType::kI32, {B, K}, p.x, false));
  TS_RETURN_IF_ERROR(check_exact(p.sorted, "sorted", DType::kI32, {B, K}, p.x, true));
  TS_RETURN_IF_ERROR(check_exact(p.distances, "distances", DType::kF32, {B, K}, p.x, true));
  return Status::Ok();
}

Status validate(const KMedoidsParams& p) {
  TS_RETURN_IF_ERROR(check_input(p.x, "x", 3, "[B, N, C]"));
  const int64_t B = p.x.shape[0], N = p.x.shape[1];
  if (p.segments < 1 || N % p.segments != 0)
    return Status(Code::kRange, "expected segments >= 1 dividing N = " + std::to_string(N) + " but got " +
                                    std::to_string(p.segments));
  const int64_t S = N / p.segments;
  if (p.k < 1 || p.k > S)
    return Status(Code::kRange, "expected k in [1, " + std::to_string(S) + "] (tokens per segment) but got " +
                                    std::to_string(p.k));
  if (S * S > (int64_t{16} << 20))
    return Status(Code::kUnsupported, "kMedoids keeps a segment's distance matrix; " + std::to_string(S) +
                                          " tokens per segment is above the 4096 supported (use more segments)");
  if (p.metric != DistanceMetric::kCosine && p.metric != DistanceMetric::kL2)
    return Status(Code::kArg, "unknown distance metric");
  if (p.max_iters < 0) return Status(Code::kRange, "expected maxIters >= 0 but got " + std::to_string(p.max_iters));
  if (!(p.tol >= 0)) return Status(Code::kRange, "expected tol >= 0 but got " + std::to_string(p.tol));
  TS_RETURN_IF_ERROR(check_exact(p.medoids, "medoids", DType::kI32, {B, p.segments * p.k}, p.x, false));
  TS_RETURN_IF_ERROR(check_exact(p.assignments, "assignments", DType::kI32, {B, N}, p.x, false));
  TS_RETURN_IF_ERROR(check_exact(p.iterations, "iterations", DType::kI32, {B, p.segments}, p.x, true));
  return Status::Ok();
}

Status validate(const StcScoresParams& p) {
  TS_RETURN_IF_ERROR(check_input(p.x, "x", 3, "[F, T, C]"));
  const int64_t F = p.x.shape[0], T = p.x.shape[1], C = p.x.shape[2], Cs = stc_scoring_channels(C);
  if (p.memory_mode != StcMemory::kAuthors && p.memory_mode != StcMemory::kAligned)
    return Status(Code::kArg, "expected memory mode 0 (authors) or 1 (aligned) but got " +
                                  std::to_string(static_cast<int>(p.memory_mode)));
  const int64_t Cm = p.memory_mode == StcMemory::kAuthors ? Cs : C;  // length of a chunk mean
  TS_RETURN_IF_ERROR(check_exact(p.memory_sum, "memorySum", DType::kF32, {Cm}, p.x, true));
  if (p.memory_count < 0 || (p.memory_sum.data == nullptr && p.memory_count != 0))
    return Status(Code::kRange, "expected a memory count >= 0 (0 without a memory sum) but got " +
                                    std::to_string(p.memory_count));
  TS_RETURN_IF_ERROR(check_exact(p.scores, "scores", DType::kF32, {F, T}, p.x, false));
  TS_RETURN_IF_ERROR(check_exact(p.chunk_mean, "chunkMean", DType::kF32, {Cm}, p.x, false));
  TS_RETURN_IF_ERROR(check_exact(p.channels, "channels", DType::kI32, {Cs}, p.x, true));
  return Status::Ok();
}

Status validate(const MaxCoverageParams& p) {
  TS_RETURN_IF_ERROR(check_input(p.coverage, "coverage", 3, "[B, R, N]"));
  const int64_t B = p.coverage.shape[0], N = p.coverage.shape[2];
  if (p.k < 1 || p.k > N)
    return Status(Code::kRange, "expected k in [1, " + std::to_string(N) + "] but got " + std::to_string(p.k));
  TS_RETURN_IF_ERROR(check_exact(p.exclude, "exclude", DType::kU8, {B, N}, p.coverage, true));
  TS_RETURN_IF_ERROR(check_exact(p.order, "order", DType::kI32, {B, p.k}, p.coverage, false));
  TS_RETURN_IF_ERROR(check_exact(p.sorted, "sorted", DType::kI32, {B, p.k}, p.coverage, true));
  TS_RETURN_IF_ERROR(check_exact(p.gains, "gains", DType::kF32, {B, p.k}, p.coverage, true));
  return Status::Ok();
}

Status validate(const MmtokCoverageParams& p) {
  TS_RETURN_IF_ERROR(check_input(p.text, "text", 3, "[B, m, D]"));
  TS_RETURN_IF_ERROR(check_input(p.vision, "vision", 3, "[B, n, D]"));
  const int64_t B = p.vision.shape[0], n = p.vision.shape[1], m = p.text.shape[1];
  if (p.text.shape[0] != B || p.text.shape[2] != p.vision.shape[2])
    return Status(Code::kShape, "expected text [B, m, D] to match vision " + shape_str(p.vision) + " in B and D but got " +
                                    shape_str(p.text));
  if (p.vision_aux.data != nullptr) {
    TS_RETURN_IF_ERROR(check_input(p.vision_aux, "visionAux", 3, "[B, n, D']"));
    if (p.vision_aux.shape[0] != B || p.vision_aux.shape[1] != n)
      return Status(Code::kShape, "expected visionAux [B, n, D'] to match vision " + shape_str(p.vision) +
                                      " in B and n but got " + shape_str(p.vision_aux));
    if (p.vision_aux.device != p.vision.device) return Status(Code::kDevice, "expected visionAux on the device of vision");
  }
  if (p.text.device != p.vision.device) return Status(Code::kDevice, "expected text on the device of vision");
  if (!(p.tau_tv > 0) || !std::isfinite(p.tau_tv))
    return Status(Code::kRange, "expected tauTV > 0 but got " + std::to_string(p.tau_tv));
  if (!(p.tau_vv > 0) || !std::isfinite(p.tau_vv))
    return Status(Code::kRange, "expected tauVV > 0 but got " + std::to_string(p.tau_vv));
  if (!(p.alpha >= 0) || !std::isfinite(p.alpha))
    return Status(Code::kRange, "expected a finite alpha >= 0 but got " + std::to_string(p.alpha));
  TS_RETURN_IF_ERROR(check_exact(p.out, "out", DType::kF32, {B, m + n, n}, p.vision, false));
  return Status::Ok();
}

namespace cpu {
namespace {

// Rows of a [B, N, C] view as f32: row r of batch b into dst (C floats).
void load_row(const TensorView& x, int64_t b, int64_t r, float* dst) {
  const int64_t es = static_cast<int64_t>(dtype_size(x.dtype));
  const char* src = static_cast<const char*>(x.data) + (b * x.strides[0] + r * x.strides[1]) * es;
  isa().to_f32(src, x.dtype, x.shape[2], dst);
}

// Atomic "m = min(m, v)" on a float kept as bits; distances may be slightly
// negative (1 - cos rounding), so compare as floats, not as integers.
void atomic_min(std::atomic<float>& m, float v) {
  float cur = m.load(std::memory_order_relaxed);
  while (v < cur && !m.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

// Every distance of this family comes from one dot product, and every dot
// product is one sequential FMA chain over the channels: gemm_tile's
// register tile over rows packed as panels of 16 (cpu/gemm.h), whether it
// runs as the matrix pass, the nearest-neighbour pass, one row per step
// (qk_row_panels) or the squared norms (panel_self_dots). The same pair thus
// gets the same bits wherever it is computed: exact duplicates tie exactly
// (and the lower index wins), the matrix is exactly symmetric (fma(a, b, c) ==
// fma(b, a, c)), and cuda/diversity.cu, whose threads run the same chains,
// picks the same tokens as the AVX2 back end.
// Keep the whole distance matrix of a segment (steps then read one row each)
// when it needs at most this many floats; otherwise recompute per step.
constexpr int64_t kMaxMatrixFloats = int64_t{16} << 20;

// Per-thread scratch for the packed rows and the distance matrix: both are
// megabytes, and fresh pages per call cost more than filling them.
thread_local Scratch tl_panels;
thread_local Scratch tl_matrix;
thread_local Scratch tl_aux_panels;
// Hands scratch above Scratch::kKeepBytes back when the call ends.
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

// Row a of the segment, contiguous (C floats), from its panel.
void segment_row(const Segment& s, int64_t a, float* dst) {
  const float* src = s.kt + (a / kColTile) * s.C * kColTile + a % kColTile;
  for (int64_t c = 0; c < s.C; ++c) dst[c] = src[c * kColTile];
}

// Packs rows row_of(0..n) of x[b] as f32 panels [round_up16(n)/16][C][16]
// into `kt`, 16 rows per task: each row is converted and checked, the panel
// transposed through registers, the f64 squared norms taken per row in
// channel order (one chain per row, 16 in flight), and the panel scaled by
// scale_of(ss) per row when scale_of is given (row[c] * scale, as a scalar
// loop over the row would). norm[a] = float(sqrt(ss)) when norm is given;
// raw (when given) receives the unscaled rows [n, C]. Returns the first row
// (in order) that holds NaN or Inf, or -1.
template <class RowOf, class ScaleOf>
int64_t pack_rows(const TensorView& x, int64_t b, int64_t n, RowOf row_of, ScaleOf scale_of, bool scale, float* kt,
                  float* norm, float* raw, bool parallel) {
  const int64_t C = x.shape[2];
  const int64_t panels = round_up16(n) / kColTile;
  std::vector<int64_t> bad(static_cast<size_t>(panels), -1);
  auto run = [&](int64_t p) {
    thread_local std::vector<float> stage;
    if (stage.size() < static_cast<size_t>(kColTile * C)) stage.resize(static_cast<size_t>(kColTile * C));
    const int64_t a0 = p * kColTile;
    const int rows = static_cast<int>(std::min<int64_t>(kColTile, n - a0));
    for (int j = 0; j < rows; ++j) {
      float* row = stage.data() + j * C;
      load_row(x, b, row_of(a0 + j), row);
      if (!isa().all_finite(row, C)) {
        bad[static_cast<size_t>(p)] = a0 + j;
        return;
      }
      if (raw != nullptr) std::memcpy(raw + (a0 + j) * C, row, static_cast<size_t>(C) * sizeof(float));
    }
    float* panel = kt + p * C * kColTile;
    isa().pack_panel(stage.data(), C, rows, C, panel);
    if (norm == nullptr && !scale) return;
    double ss[kColTile];
    isa().panel_sq_norms(panel, C, ss);
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

// Loads the segment's active rows into panels (normalised for cosine) and,
// for l2, their squared norms. Returns the first bad active row or -1.
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

// Distance from the dot product (cosine: rows are unit or zero).
inline float to_distance(DistanceMetric m, float dot, float sqi, float sqj) {
  if (m == DistanceMetric::kCosine) return 1.0f - dot;
  return std::sqrt(std::max(0.0f, sqi + sqj - 2.0f * dot));
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

// out[i * ldo + j] = a_i · b_j for rows a (row-major [ma, C] or panels) and
// columns b packed as panels (nb columns). With `upper` (a == b), only j >= i
// is computed and mirrored.
void gemm_nt(GemmA a, int64_t ma, const float* b, int64_t nb, int64_t C, float* out, int64_t ldo, bool upper,
             bool parallel) {
  gemm_tiles(a, ma, b, nb, C, upper, parallel,
             [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, const float* tile) {
               for (int64_t i = i0; i < i1; ++i)
                 for (int64_t j = upper ? std::max(j0, i) : j0; j < j1; ++j) {
                   const float v = tile[(i - i0) * kGemmTile + (j - j0)];
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
  gemm_tiles(GemmA{s.kt, 0, true}, n, s.kt, n, s.C, /*upper=*/true, parallel,
             [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, const float* tile) {
               for (int64_t i = i0; i < i1; ++i)
                 for (int64_t j = std::max(j0, i); j < j1; ++j) {
                   const float d = j == i ? 0.0f
                                          : to_distance(metric, tile[(i - i0) * kGemmTile + (j - j0)],
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

// One segment: returns a Status only for data errors (NaN, too few tokens).
Status k_center_segment(const KCenterParams& p, int64_t b, int64_t seg, bool parallel) {
  TrimScratch trim;
  const int64_t N = p.x.shape[1], C = p.x.shape[2], S = N / p.segments, base = seg * S, k = p.k;
  const uint8_t* excl = p.exclude.data ? p.exclude.ptr<uint8_t>() + b * N + base : nullptr;
  Segment s;
  s.C = C;
  for (int64_t i = 0; i < S; ++i)
    if (excl == nullptr || excl[i] == 0) s.ids.push_back(static_cast<int32_t>(i));
  s.n = static_cast<int64_t>(s.ids.size());
  if (s.n < k)
    return Status(Code::kRange, "expected at least k = " + std::to_string(k) + " tokens that are not excluded in segment " +
                                    std::to_string(seg) + " of batch " + std::to_string(b) + " but it has " +
                                    std::to_string(s.n));
  const int64_t bad = load_segment(s, p.x, b, base, p.metric, nullptr, parallel);
  if (bad >= 0)
    return Status(Code::kRange, "expected finite features but x[" + std::to_string(b) + ", " +
                                    std::to_string(base + s.ids[static_cast<size_t>(bad)]) + "] holds NaN or Inf");
  std::vector<float> mind(static_cast<size_t>(s.n));  // [n] distance to the nearest pick
  float* matrix = nullptr;                            // [n, n] when kept (thread scratch)
  std::vector<uint8_t> picked(static_cast<size_t>(s.n), 0);
  int64_t seed = 0;
  float seed_value = kInf;
  if (p.seed == CenterSeed::kIsolated) {
    std::vector<float> nn(static_cast<size_t>(s.n));
    if (s.n * s.n <= kMaxMatrixFloats) matrix = tl_matrix.get(s.n * s.n);
    nearest_neighbours(s, p.metric, nn.data(), matrix, parallel);
    for (int64_t a = 1; a < s.n; ++a)
      if (nn[a] > nn[seed]) seed = a;
    seed_value = nn[seed];
  } else if (p.seed == CenterSeed::kMaxNorm) {
    for (int64_t a = 1; a < s.n; ++a)
      if (s.raw_norm[a] > s.raw_norm[seed]) seed = a;
  } else {
    auto it = std::lower_bound(s.ids.begin(), s.ids.end(), static_cast<int32_t>(p.seed_index));
    if (it == s.ids.end() || *it != p.seed_index)
      return Status(Code::kRange, "expected the seed index " + std::to_string(p.seed_index) + " not to be excluded");
    seed = it - s.ids.begin();
  }
  const int64_t K = p.segments * k;
  int32_t* order = p.order.ptr<int32_t>() + b * K + seg * k;
  float* dist_out = p.distances.data ? p.distances.ptr<float>() + b * K + seg * k : nullptr;
  std::vector<float> step_dist(matrix == nullptr && k > 1 ? static_cast<size_t>(s.n) : 0);  // one step's distances
  auto pick = [&](int64_t t, int64_t a, float value) {
    picked[a] = 1;
    order[t] = static_cast<int32_t>(base + s.ids[a]);
    if (dist_out) dist_out[t] = value;
    if (t + 1 == k) return;
    if (matrix != nullptr) {
      const float* row = matrix + a * s.n;
      if (t == 0) std::copy(row, row + s.n, mind.begin());
      else
        for (int64_t j = 0; j < s.n; ++j) mind[j] = std::min(mind[j], row[j]);
    } else if (t == 0) {
      distances_from(s, p.metric, a, mind.data(), parallel);
    } else {
      distances_from(s, p.metric, a, step_dist.data(), parallel);
      for (int64_t j = 0; j < s.n; ++j) mind[j] = std::min(mind[j], step_dist[j]);
    }
  };
  pick(0, seed, seed_value);
  for (int64_t t = 1; t < k; ++t) {
    int64_t arg = -1;
    float best = -kInf;
    for (int64_t j = 0; j < s.n; ++j)
      if (!picked[j] && (arg < 0 || mind[j] > best)) {
        arg = j;
        best = mind[j];
      }
    pick(t, arg, best);
  }
  if (p.sorted.data) {
    int32_t* sorted = p.sorted.ptr<int32_t>() + b * K + seg * k;
    std::copy(order, order + k, sorted);
    std::sort(sorted, sorted + k);
  }
  return Status::Ok();
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

}  // namespace

Status k_center(const KCenterParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.x.on_host()) return Status(Code::kDevice, "cpu::k_center needs host tensors");
  const int64_t B = p.x.shape[0], S = p.x.shape[1] / p.segments;
  return for_units(B * p.segments, S * S * p.x.shape[2],
                   [&](int64_t u, bool parallel) { return k_center_segment(p, u / p.segments, u % p.segments, parallel); });
}

namespace {

Status k_medoids_segment(const KMedoidsParams& p, int64_t b, int64_t seg, bool parallel) {
  TrimScratch trim;
  const int64_t N = p.x.shape[1], C = p.x.shape[2], S = N / p.segments, base = seg * S, k = p.k;
  Segment s;
  s.C = C;
  s.n = S;
  s.ids.resize(static_cast<size_t>(S));
  std::vector<float> raw(static_cast<size_t>(S * C));  // [S, C] for the movement measure
  for (int64_t a = 0; a < S; ++a) s.ids[a] = static_cast<int32_t>(a);
  const int64_t bad = load_segment(s, p.x, b, base, p.metric, raw.data(), parallel);
  if (bad >= 0)
    return Status(Code::kRange, "expected finite features but x[" + std::to_string(b) + ", " +
                                    std::to_string(base + bad) + "] holds NaN or Inf");
  std::vector<float> D(static_cast<size_t>(S * S));  // [S, S]
  std::vector<float> nn(static_cast<size_t>(S));
  nearest_neighbours(s, p.metric, nn.data(), D.data(), parallel);
  // KKZ: largest norm, then farthest point (picked ones masked).
  std::vector<int32_t> med;  // local indices, in KKZ order during the iterations
  std::vector<uint8_t> picked(static_cast<size_t>(S), 0);
  int64_t first = 0;
  for (int64_t a = 1; a < S; ++a)
    if (s.raw_norm[a] > s.raw_norm[first]) first = a;
  med.push_back(static_cast<int32_t>(first));
  picked[first] = 1;
  std::vector<float> mind(D.begin() + first * S, D.begin() + (first + 1) * S);
  while (static_cast<int64_t>(med.size()) < k) {
    int64_t arg = -1;
    for (int64_t j = 0; j < S; ++j)
      if (!picked[j] && (arg < 0 || mind[j] > mind[arg])) arg = j;
    med.push_back(static_cast<int32_t>(arg));
    picked[arg] = 1;
    for (int64_t j = 0; j < S; ++j) mind[j] = std::min(mind[j], D[arg * S + j]);
  }
  std::vector<int32_t> assign(static_cast<size_t>(S));
  // Nearest medoid, ties to the earlier one in `med`; a medoid is its own.
  auto assign_all = [&]() {
    for (int64_t j = 0; j < S; ++j) {
      int32_t best = 0;
      float bd = kInf;
      for (int64_t m = 0; m < k; ++m) {
        if (med[m] == j) {
          best = static_cast<int32_t>(m);
          break;
        }
        const float d = D[med[m] * S + j];
        if (d < bd) {
          bd = d;
          best = static_cast<int32_t>(m);
        }
      }
      // A later medoid equal to j still wins (self-nearest), so check it.
      for (int64_t m = 0; m < k; ++m)
        if (med[m] == j) best = static_cast<int32_t>(m);
      assign[j] = best;
    }
  };
  int64_t iters = 0;
  std::vector<std::vector<int32_t>> members(static_cast<size_t>(k));
  for (; iters < p.max_iters; ) {
    assign_all();
    for (auto& m : members) m.clear();
    for (int64_t j = 0; j < S; ++j) members[assign[j]].push_back(static_cast<int32_t>(j));
    std::vector<int32_t> next(med);
    for (int64_t m = 0; m < k; ++m) {
      double best_sum = std::numeric_limits<double>::infinity();
      for (int32_t i : members[m]) {
        double sum = 0;
        for (int32_t j : members[m]) sum += D[i * S + j];
        if (sum < best_sum) {
          best_sum = sum;
          next[m] = i;
        }
      }
    }
    ++iters;
    double moved = 0;
    for (int64_t m = 0; m < k; ++m) {
      double d2 = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double d = static_cast<double>(raw[next[m] * C + c]) - raw[med[m] * C + c];
        d2 += d * d;
      }
      moved += std::sqrt(d2);
    }
    med = next;
    if (moved < p.tol) break;
  }
  // id_sort: medoids ascending, then assigned again against the sorted list.
  std::sort(med.begin(), med.end());
  assign_all();
  const int64_t K = p.segments * k;
  int32_t* out_med = p.medoids.ptr<int32_t>() + b * K + seg * k;
  for (int64_t m = 0; m < k; ++m) out_med[m] = static_cast<int32_t>(base + med[m]);
  int32_t* out_assign = p.assignments.ptr<int32_t>() + b * N + base;
  for (int64_t j = 0; j < S; ++j) out_assign[j] = static_cast<int32_t>(seg * k + assign[j]);
  if (p.iterations.data) p.iterations.ptr<int32_t>()[b * p.segments + seg] = static_cast<int32_t>(iters);
  return Status::Ok();
}

}  // namespace

Status k_medoids(const KMedoidsParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.x.on_host()) return Status(Code::kDevice, "cpu::k_medoids needs host tensors");
  const int64_t B = p.x.shape[0], S = p.x.shape[1] / p.segments;
  return for_units(B * p.segments, S * S * p.x.shape[2],
                   [&](int64_t u, bool parallel) { return k_medoids_segment(p, u / p.segments, u % p.segments, parallel); });
}

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

Status max_coverage(const MaxCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.coverage.on_host()) return Status(Code::kDevice, "cpu::max_coverage needs host tensors");
  const int64_t B = p.coverage.shape[0], R = p.coverage.shape[1], N = p.coverage.shape[2], k = p.k;
  const int64_t es = static_cast<int64_t>(dtype_size(p.coverage.dtype));
  return for_units(B, R * N * k, [&](int64_t b, bool parallel) -> Status {
    std::vector<float> cov(static_cast<size_t>(R * N));  // [R, N]
    for (int64_t r = 0; r < R; ++r) {
      const char* src = static_cast<const char*>(p.coverage.data) + (b * p.coverage.strides[0] + r * p.coverage.strides[1]) * es;
      float* row = cov.data() + r * N;
      isa().to_f32(src, p.coverage.dtype, N, row);
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
    // Lazy greedy, exact: a column's gain Σ_r max(0, C[r, j] − best[r]) never
    // grows as `best` grows, and with the same order of additions neither does
    // its float value (rounding is monotone), so a stale gain is an upper
    // bound. A max-heap on (gain, then lower index) whose top is fresh is the
    // argmax with the reference's tie rule; only stale tops are recomputed.
    std::vector<float> covt(static_cast<size_t>(R * N));  // [N, R]: one column per row, contiguous
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < N; ++j) covt[j * R + r] = cov[r * N + j];
    std::vector<float> best(static_cast<size_t>(R), 0.0f);
    auto column_gain = [&](int64_t j) {
      const float* c = covt.data() + j * R;
      float g = 0.0f;
      for (int64_t r = 0; r < R; ++r) g += std::max(0.0f, c[r] - best[r]);
      return g;
    };
    struct Entry {
      float gain;
      int32_t j;
      int32_t step;  // the step whose `best` the gain was computed against
    };
    auto below = [](const Entry& a, const Entry& b) { return a.gain < b.gain || (a.gain == b.gain && a.j > b.j); };
    std::vector<float> first(static_cast<size_t>(N));
    const int64_t chunk = 64, chunks = (N + chunk - 1) / chunk;
    auto initial = [&](int64_t c) {
      for (int64_t j = c * chunk; j < std::min(N, (c + 1) * chunk); ++j) first[j] = column_gain(j);
    };
    if (parallel && chunks > 1)
      parallel_for(chunks, initial);
    else
      for (int64_t c = 0; c < chunks; ++c) initial(c);
    std::vector<Entry> heap;
    heap.reserve(static_cast<size_t>(N));
    for (int64_t j = 0; j < N; ++j)
      if (!blocked[j]) heap.push_back({first[j], static_cast<int32_t>(j), 0});
    std::make_heap(heap.begin(), heap.end(), below);
    int32_t* order = p.order.ptr<int32_t>() + b * k;
    float* gains = p.gains.data ? p.gains.ptr<float>() + b * k : nullptr;
    for (int64_t t = 0; t < k; ++t) {
      for (;;) {
        std::pop_heap(heap.begin(), heap.end(), below);
        Entry& top = heap.back();
        if (top.step == t) break;
        top.gain = column_gain(top.j);
        top.step = static_cast<int32_t>(t);
        std::push_heap(heap.begin(), heap.end(), below);
      }
      const Entry pick = heap.back();
      heap.pop_back();
      order[t] = pick.j;
      if (gains) gains[t] = pick.gain;
      const float* c = covt.data() + static_cast<int64_t>(pick.j) * R;
      for (int64_t r = 0; r < R; ++r) best[r] = std::max(best[r], c[r]);
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
      const float sum = isa().exp_shift_sum(row, n, isa().max(row, n));
      const float scale = static_cast<float>((text ? 1.0 / static_cast<double>(m) : p.alpha / static_cast<double>(n)) / sum);
      for (int64_t j = 0; j < n; ++j) row[j] *= scale;
    });
  }
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
