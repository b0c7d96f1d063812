// The CUDA k-center and k-medoids entry points (cuda/diversity.cu) under the
// emulator against the CPU back end (cpu/diversity.cc, itself tested against
// float64 references in test/diversity.test.ts).
//
// Both back ends compute every distance as the same sequential FMA chain, so
// k-center and k-medoids must agree bit for bit — picks, pick order, max–min
// distances, medoids, assignments, iteration counts — ties included; the
// inputs below are full of exact ties (duplicated, identical and zero rows).
// Outputs are poisoned first so unwritten elements show.
#include <algorithm>
#include <cstring>

#include "check.h"
#include "tokensieve/diversity.h"

using namespace tokensieve;
using emu_test::as_f32;
using emu_test::check_no_leak;
using emu_test::encode;
using emu_test::normal;
using emu_test::view;

namespace {

// Features with exact ties: every `dup`-th row copies row 0..7, some rows
// are zero, and with `same` every row of the first segment is one vector.
std::vector<float> features(int64_t B, int64_t N, int64_t C, std::mt19937& g, int dup, bool zero_rows, bool same) {
  std::vector<float> f = normal(B * N * C, g);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i) {
      float* row = f.data() + (b * N + i) * C;
      if (dup > 0 && i >= 8 && i % dup == 0) std::memcpy(row, f.data() + (b * N + i % 8) * C, C * sizeof(float));
      if (zero_rows && i % 11 == 5) std::fill(row, row + C, 0.0f);
      if (same) std::fill(row, row + C, 0.5f);
    }
  return f;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct KCenterOut {
  std::vector<int32_t> order, sorted;
  std::vector<float> dist;
  Status status;
};

KCenterOut run_kcenter(int dev, const std::vector<uint8_t>& x, DType dt, std::vector<int64_t> shape,
                       std::vector<uint8_t>* exclude, int64_t k, int64_t segments, DistanceMetric metric,
                       CenterSeed seed, int64_t seed_index, bool with_optional = true) {
  const int64_t B = shape[0], N = shape[1], K = segments * k;
  KCenterOut o;
  o.order.assign(B * K, -7);
  o.sorted.assign(B * K, -7);
  o.dist.assign(B * K, NAN);
  KCenterParams p;
  p.x = view(const_cast<uint8_t*>(x.data()), dt, shape, dev);
  if (exclude) p.exclude = view(exclude->data(), DType::kU8, {B, N}, dev);
  p.k = k;
  p.segments = segments;
  p.metric = metric;
  p.seed = seed;
  p.seed_index = seed_index;
  p.order = view(o.order.data(), DType::kI32, {B, K}, dev);
  if (with_optional) {
    p.sorted = view(o.sorted.data(), DType::kI32, {B, K}, dev);
    p.distances = view(o.dist.data(), DType::kF32, {B, K}, dev);
  }
  o.status = dev < 0 ? cpu::k_center(p) : cuda::k_center(p);
  return o;
}

// full: every metric × seed; otherwise three of the six (the emulator is slow).
void kcenter_case(bool full, int64_t B, int64_t N, int64_t C, int64_t k, int64_t segments, DType dt, std::mt19937& g,
                  int dup = 0, bool zero_rows = false, bool same = false, int exclude_every = 0) {
  const auto f = features(B, N, C, g, dup, zero_rows, same);
  const auto x = encode(f, dt);
  std::vector<uint8_t> ex(B * N, 0);
  if (exclude_every > 0)
    for (int64_t i = 0; i < B * N; ++i) ex[i] = (i * 7 + 3) % exclude_every == 0;
  const int64_t S = N / segments;
  for (DistanceMetric metric : {DistanceMetric::kCosine, DistanceMetric::kL2})
    for (CenterSeed seed : {CenterSeed::kIsolated, CenterSeed::kMaxNorm, CenterSeed::kIndex}) {
      if (!full && static_cast<int>(seed) != (static_cast<int>(metric) + N) % 3) continue;
      int64_t seed_index = S / 3;
      if (seed == CenterSeed::kIndex && exclude_every > 0) {
        // a position that is active in every segment of every batch row
        seed_index = -1;
        for (int64_t c = 0; c < S && seed_index < 0; ++c) {
          bool ok = true;
          for (int64_t b = 0; b < B; ++b)
            for (int64_t s = 0; s < segments; ++s) ok = ok && !ex[b * N + s * S + c];
          if (ok) seed_index = c;
        }
        if (seed_index < 0) continue;
      }
      auto* exp = exclude_every > 0 ? &ex : nullptr;
      const KCenterOut a = run_kcenter(-1, x, dt, {B, N, C}, exp, k, segments, metric, seed, seed_index);
      const KCenterOut b = run_kcenter(0, x, dt, {B, N, C}, exp, k, segments, metric, seed, seed_index);
      char what[160];
      snprintf(what, sizeof what, "kCenter B%ld N%ld C%ld k%ld seg%ld %s metric%d seed%d dup%d zero%d same%d excl%d",
               (long)B, (long)N, (long)C, (long)k, (long)segments, dtype_name(dt), (int)metric, (int)seed, dup, zero_rows,
               same, exclude_every);
      EXPECT(a.status.ok(), "%s: cpu %s", what, a.status.message.c_str());
      EXPECT(b.status.ok(), "%s: cuda %s", what, b.status.message.c_str());
      EXPECT(a.order == b.order, "%s: order differs (first %d vs %d)", what, a.order[0], b.order[0]);
      EXPECT(a.sorted == b.sorted, "%s: sorted differs", what);
      EXPECT(same_bits(a.dist, b.dist), "%s: distances differ (first %g vs %g)", what, a.dist[0], b.dist[0]);
      check_no_leak(what);
    }
}

void kcenter_errors(std::mt19937& g) {
  const int64_t B = 2, N = 12, C = 5;
  auto f = features(B, N, C, g, 0, false, false);
  std::vector<uint8_t> ex(B * N, 0);
  // NaN in an excluded token is never read: not an error (as on the CPU).
  f[(1 * N + 4) * C + 2] = NAN;
  ex[1 * N + 4] = 1;
  auto x = encode(f, DType::kF32);
  KCenterOut o = run_kcenter(0, x, DType::kF32, {B, N, C}, &ex, 3, 1, DistanceMetric::kCosine, CenterSeed::kIsolated, 0);
  EXPECT(o.status.ok(), "NaN in an excluded token: %s", o.status.message.c_str());
  // ... but in an active one it is.
  ex[1 * N + 4] = 0;
  o = run_kcenter(0, x, DType::kF32, {B, N, C}, &ex, 3, 1, DistanceMetric::kCosine, CenterSeed::kIsolated, 0);
  EXPECT(o.status.code == Code::kRange && o.status.message.find("x[1, 4]") != std::string::npos, "NaN: %s",
         o.status.message.c_str());
  check_no_leak("kCenter NaN");
  f[(1 * N + 4) * C + 2] = INFINITY;
  x = encode(f, DType::kF32);
  o = run_kcenter(0, x, DType::kF32, {B, N, C}, &ex, 3, 1, DistanceMetric::kL2, CenterSeed::kMaxNorm, 0);
  EXPECT(o.status.code == Code::kRange, "Inf: %s", o.status.message.c_str());
  f[(1 * N + 4) * C + 2] = 0.25f;
  x = encode(f, DType::kF32);
  // Too many excluded in segment 1 of batch 0: the CPU's message.
  for (int64_t i = 6; i < 11; ++i) ex[i] = 1;
  const KCenterOut c = run_kcenter(-1, x, DType::kF32, {B, N, C}, &ex, 2, 2, DistanceMetric::kCosine, CenterSeed::kIsolated, 0);
  o = run_kcenter(0, x, DType::kF32, {B, N, C}, &ex, 2, 2, DistanceMetric::kCosine, CenterSeed::kIsolated, 0);
  EXPECT(o.status.code == Code::kRange && o.status.message == c.status.message, "too few: cuda '%s' cpu '%s'",
         o.status.message.c_str(), c.status.message.c_str());
  check_no_leak("kCenter too few");
  std::fill(ex.begin(), ex.end(), 0);
  ex[N + 2] = 1;  // the seed position, excluded in batch 1
  o = run_kcenter(0, x, DType::kF32, {B, N, C}, &ex, 2, 1, DistanceMetric::kCosine, CenterSeed::kIndex, 2);
  EXPECT(o.status.code == Code::kRange && o.status.message.find("not to be excluded") != std::string::npos,
         "excluded seed: %s", o.status.message.c_str());
  check_no_leak("kCenter excluded seed");
  // Validation runs first on the device path too.
  o = run_kcenter(0, x, DType::kF32, {B, N, C}, nullptr, 13, 1, DistanceMetric::kCosine, CenterSeed::kIsolated, 0);
  EXPECT(o.status.code == Code::kRange, "k > N: %s", o.status.message.c_str());
  o = run_kcenter(0, x, DType::kF32, {B, N, C}, nullptr, 2, 5, DistanceMetric::kCosine, CenterSeed::kIsolated, 0);
  EXPECT(o.status.code == Code::kRange, "segments not dividing N: %s", o.status.message.c_str());
  o = run_kcenter(-1, x, DType::kF32, {B, N, C}, nullptr, 2, 1, DistanceMetric::kCosine, CenterSeed::kIsolated, 0);
  KCenterParams p;  // host tensors on the CUDA entry point
  p.x = view(x.data(), DType::kF32, {B, N, C}, -1);
  p.k = 2;
  p.order = view(o.order.data(), DType::kI32, {B, 2}, -1);
  EXPECT(cuda::k_center(p).code == Code::kDevice, "host tensors on cuda::k_center");
  check_no_leak("kCenter validation");
}

struct MedoidOut {
  std::vector<int32_t> medoids, assignments, iterations;
  Status status;
};

MedoidOut run_kmedoids(int dev, const std::vector<uint8_t>& x, DType dt, std::vector<int64_t> shape, int64_t k,
                       int64_t segments, DistanceMetric metric, int64_t max_iters, double tol) {
  const int64_t B = shape[0], N = shape[1];
  MedoidOut o;
  o.medoids.assign(B * segments * k, -7);
  o.assignments.assign(B * N, -7);
  o.iterations.assign(B * segments, -7);
  KMedoidsParams p;
  p.x = view(const_cast<uint8_t*>(x.data()), dt, shape, dev);
  p.k = k;
  p.segments = segments;
  p.metric = metric;
  p.max_iters = max_iters;
  p.tol = tol;
  p.medoids = view(o.medoids.data(), DType::kI32, {B, segments * k}, dev);
  p.assignments = view(o.assignments.data(), DType::kI32, {B, N}, dev);
  p.iterations = view(o.iterations.data(), DType::kI32, {B, segments}, dev);
  o.status = dev < 0 ? cpu::k_medoids(p) : cuda::k_medoids(p);
  return o;
}

void kmedoids_case(int64_t B, int64_t N, int64_t C, int64_t k, int64_t segments, DType dt, std::mt19937& g, int dup,
                   int64_t max_iters, double tol, bool clustered) {
  std::vector<float> f = features(B, N, C, g, dup, false, false);
  if (clustered)  // well separated blobs: converges in a few steps
    for (int64_t i = 0; i < B * N; ++i)
      for (int64_t c = 0; c < C; ++c) f[i * C + c] = 0.05f * f[i * C + c] + static_cast<float>((i % 5) * 3 + (c % 2));
  const auto x = encode(f, dt);
  for (DistanceMetric metric : {DistanceMetric::kL2, DistanceMetric::kCosine}) {
    const MedoidOut a = run_kmedoids(-1, x, dt, {B, N, C}, k, segments, metric, max_iters, tol);
    const MedoidOut b = run_kmedoids(0, x, dt, {B, N, C}, k, segments, metric, max_iters, tol);
    char what[160];
    snprintf(what, sizeof what, "kMedoids B%ld N%ld C%ld k%ld seg%ld %s metric%d dup%d iters%ld tol%g", (long)B,
             (long)N, (long)C, (long)k, (long)segments, dtype_name(dt), (int)metric, dup, (long)max_iters, tol);
    EXPECT(a.status.ok(), "%s: cpu %s", what, a.status.message.c_str());
    EXPECT(b.status.ok(), "%s: cuda %s", what, b.status.message.c_str());
    EXPECT(a.medoids == b.medoids, "%s: medoids differ", what);
    EXPECT(a.assignments == b.assignments, "%s: assignments differ", what);
    EXPECT(a.iterations == b.iterations, "%s: iterations differ (%d vs %d)", what, a.iterations[0], b.iterations[0]);
    check_no_leak(what);
  }
}

void kmedoids_errors(std::mt19937& g) {
  auto f = normal(2 * 10 * 3, g);
  f[(1 * 10 + 7) * 3] = NAN;
  const auto x = encode(f, DType::kF32);
  MedoidOut o = run_kmedoids(0, x, DType::kF32, {2, 10, 3}, 3, 1, DistanceMetric::kL2, 10, 1e-6);
  EXPECT(o.status.code == Code::kRange && o.status.message.find("x[1, 7]") != std::string::npos, "NaN: %s",
         o.status.message.c_str());
  check_no_leak("kMedoids NaN");
  o = run_kmedoids(0, x, DType::kF32, {2, 10, 3}, 6, 2, DistanceMetric::kL2, 10, 1e-6);
  EXPECT(o.status.code == Code::kRange, "k > S: %s", o.status.message.c_str());
  o = run_kmedoids(0, x, DType::kF32, {2, 10, 3}, 2, 1, DistanceMetric::kL2, -1, 1e-6);
  EXPECT(o.status.code == Code::kRange, "maxIters < 0: %s", o.status.message.c_str());
  check_no_leak("kMedoids validation");
}

}  // namespace

// With --kcenter: only the k-center cases (the second build of
// cuda/diversity.cu, whose small TS_KCENTER_LOOP_MAX sends them through the
// launch-per-step path).
int main(int argc, char** argv) {
  const bool kcenter_only = argc > 1 && std::string(argv[1]) == "--kcenter";
  std::mt19937 g(11);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    const bool full = dt == DType::kF32;
    kcenter_case(full, 1, 1, 1, 1, 1, dt, g);
    kcenter_case(full, 2, 5, 3, 2, 1, dt, g);
    kcenter_case(full, 3, 17, 8, 5, 1, dt, g, /*dup=*/3);
    kcenter_case(full, 2, 17, 7, 17, 1, dt, g, 2, /*zero_rows=*/true);  // k = N
    kcenter_case(full, 1, 130, 33, 12, 1, dt, g, 4, true);               // three 64-row tiles
    kcenter_case(full, 2, 96, 5, 7, 3, dt, g, 5, false, false, /*exclude_every=*/4);
  }
  kcenter_case(true, 2, 20, 6, 6, 2, DType::kF32, g, 0, false, /*same=*/true);  // every distance ties
  kcenter_case(false, 1, 577, 24, 58, 1, DType::kF32, g, 9, true);
  kcenter_case(false, 2, 192, 16, 9, 4, DType::kBF16, g, 6, true, false, 5);
  kcenter_errors(g);
  if (kcenter_only) return emu_test::finish();
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    kmedoids_case(1, 1, 2, 1, 1, dt, g, 0, 100, 1e-6, false);
    kmedoids_case(2, 17, 5, 4, 1, dt, g, 3, 100, 1e-6, false);
    kmedoids_case(1, 98, 8, 49, 1, dt, g, 0, 100, 1e-6, true);   // CenterCLIP: 2 frames × 49, K = 49
    kmedoids_case(2, 60, 6, 5, 3, dt, g, 4, 100, 1e-6, false);
  }
  kmedoids_case(1, 40, 4, 40, 1, DType::kF32, g, 0, 100, 1e-6, false);  // k = S
  kmedoids_case(1, 70, 6, 7, 1, DType::kF32, g, 2, 0, 1e-6, false);     // no update step
  kmedoids_case(1, 70, 6, 7, 1, DType::kF32, g, 2, 1, 1e-6, false);
  kmedoids_case(1, 70, 6, 7, 1, DType::kF32, g, 2, 100, 1e9, false);    // stops after one step
  kmedoids_case(1, 130, 12, 20, 1, DType::kF32, g, 0, 100, 1e-6, true);
  kmedoids_errors(g);
  return emu_test::finish();
}
