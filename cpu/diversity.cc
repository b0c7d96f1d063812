// CPU k-center (greedy farthest point) and k-medoids, per contiguous segment
// of tokens; their parameter checks are core/diversity.cc's, the rows and
// distance passes cpu/rows.cc's (shared with the coverage family).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/rows.h"
#include "cpu/thread_pool.h"
#include "tokensieve/diversity.h"

namespace tokensieve {
namespace cpu {
namespace {

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
  std::vector<float> assign_d(static_cast<size_t>(S));
  // Nearest medoid, ties to the earlier one in `med`; a medoid is its own
  // (medoids are distinct: each is picked from its own cluster). Medoid by
  // medoid over contiguous rows of D, strict '<' in `med` order: the first
  // minimum, as a scan over the medoids per token finds it.
  auto assign_all = [&]() {
    std::fill(assign.begin(), assign.end(), 0);
    std::fill(assign_d.begin(), assign_d.end(), kInf);
    for (int64_t m = 0; m < k; ++m) {
      const float* row = D.data() + static_cast<int64_t>(med[m]) * S;
      for (int64_t j = 0; j < S; ++j) {
        const bool closer = row[j] < assign_d[j];
        assign_d[j] = closer ? row[j] : assign_d[j];
        assign[j] = closer ? static_cast<int32_t>(m) : assign[j];
      }
    }
    for (int64_t m = 0; m < k; ++m) assign[med[m]] = static_cast<int32_t>(m);
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
      if (next[m] == med[m]) continue;  // the same row: it moved by exactly 0
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

}  // namespace cpu
}  // namespace tokensieve
