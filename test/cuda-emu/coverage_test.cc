// The coverage family under the emulator (cuda/coverage.cu) against the CPU
// back end (cpu/coverage.cc, itself checked against float64 references in
// test/coverage.test.ts). MMTok's coverage matrix (cuda::mmtok_coverage) uses
// CUDA's expf against the CPU's vector exp: a few ulps. Greedy maximum
// coverage (cuda::max_coverage): both back ends keep each gain in f64,
// updated pick by pick with the same operations in the same row order, and
// set it to exactly 0 when no positive term is left, so the picks, their
// order and the gains must be identical — bit for bit, ties included (the
// lower column wins).
// Covered: awkward sizes (N = 1, k = 1, k = N, primes, N not a multiple of the
// 256-thread block, N above the 4,096 columns kept in shared memory, R = 1,
// R = 592, R above the 2,048 rows of best[] kept in shared memory), f32, f16
// and bf16, batches, strided batch/row strides, exclude masks, heavy exact
// ties (duplicated, all-equal and zero columns, coarse values, fully covered
// columns whose f64 gains round), MMTok-like softmax rows; poisoned outputs;
// optional outputs left out; NaN/Inf and too many excluded columns (the
// CPU's exact messages, lowest batch/row first); wrong shapes, dtypes,
// devices; the cudaMalloc path; no scratch leaks.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>

#include "check.h"
#include "tokensieve/coverage.h"

using namespace tokensieve;
using emu_test::check_no_leak;
using emu_test::encode;
using emu_test::view;

namespace {

constexpr int32_t kIdxPoison = -7;
constexpr uint32_t kGainPoison = 0x7fc0dead;  // a NaN no kernel computes

// Coverage values [B, R, N] in f32 before rounding to the dtype.
using Gen = std::function<std::vector<float>(int64_t B, int64_t R, int64_t N, std::mt19937& g)>;

// Sparse-ish, mostly non-negative (as softmax rows), some negatives and zeros.
std::vector<float> gen_mixed(int64_t B, int64_t R, int64_t N, std::mt19937& g) {
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> v(static_cast<size_t>(B * R * N));
  for (auto& x : v) {
    const float a = u(g);
    x = a < 0.6f ? u(g) * u(g) : a < 0.85f ? -u(g) * 0.1f : 0.0f;
  }
  return v;
}

// Multiples of 1/8 in [0, 3/8]: sums are exact, so many gains tie exactly.
std::vector<float> gen_coarse(int64_t B, int64_t R, int64_t N, std::mt19937& g) {
  std::uniform_int_distribution<int> d(0, 3);
  std::vector<float> v(static_cast<size_t>(B * R * N));
  for (auto& x : v) x = static_cast<float>(d(g)) / 8.0f;
  return v;
}

// Over 14 decades, some negatives: even the f64 gains round, so the exact 0
// of a fully covered column comes only from its count of positive terms.
std::vector<float> gen_wide(int64_t B, int64_t R, int64_t N, std::mt19937& g) {
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> v(static_cast<size_t>(B * R * N));
  for (auto& x : v) x = u(g) < 0.6f ? u(g) * std::pow(10.0f, -14.0f * u(g)) : -u(g);
  return v;
}

// Columns copied from a few originals (duplicates tie at every step), some
// all-zero columns, negatives.
std::vector<float> gen_duplicates(int64_t B, int64_t R, int64_t N, std::mt19937& g) {
  auto base = gen_mixed(B, R, N, g);
  std::vector<float> v(base.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < N; ++j) {
        const int64_t src = j % 5 == 4 ? -1 : (j * 7) % 3;  // every fifth column zero, the rest copies of 0..2
        v[(b * R + r) * N + j] = src < 0 ? 0.0f : base[(b * R + r) * N + std::min<int64_t>(src, N - 1)];
      }
  return v;
}

// Every column the same: every step is a full tie.
std::vector<float> gen_all_equal(int64_t B, int64_t R, int64_t N, std::mt19937& g) {
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> v(static_cast<size_t>(B * R * N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < R; ++r) {
      const float c = u(g);
      for (int64_t j = 0; j < N; ++j) v[(b * R + r) * N + j] = c;
    }
  return v;
}

// All zeros: every gain is 0 from the first step.
std::vector<float> gen_zero(int64_t B, int64_t R, int64_t N, std::mt19937&) {
  return std::vector<float>(static_cast<size_t>(B * R * N), 0.0f);
}

// MMTok-like: each row a softmax over the N columns (sharp, τ = 0.02 on unit
// cosines, or softer) divided by R.
std::vector<float> gen_softmax(int64_t B, int64_t R, int64_t N, std::mt19937& g) {
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> v(static_cast<size_t>(B * R * N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < R; ++r) {
      float* row = v.data() + (b * R + r) * N;
      const float inv_tau = r % 2 ? 1.0f / 0.02f : 1.0f / 0.2f;
      float mx = -INFINITY;
      for (int64_t j = 0; j < N; ++j) {
        row[j] = std::tanh(nd(g) * 0.3f) * inv_tau;
        mx = std::max(mx, row[j]);
      }
      double s = 0;
      for (int64_t j = 0; j < N; ++j) s += row[j] = std::exp(row[j] - mx);
      for (int64_t j = 0; j < N; ++j) row[j] = static_cast<float>(row[j] / s / R);
    }
  return v;
}

struct Case {
  const char* name;
  int64_t B, R, N, k;
  DType dt;
  Gen gen;
  double exclude = 0;   // fraction of columns excluded (the first k never)
  int64_t pad_r = 0;    // extra elements after each row (stride of R = N + pad_r)
  int64_t pad_b = 0;    // extra elements after each batch row
  bool bare = false;    // also run without sorted/gains (the emulator is slow: a few cases only)
};

struct Outputs {
  std::vector<int32_t> order, sorted;
  std::vector<float> gains;
};

// The coverage bytes in a (possibly strided) layout and its view.
struct Input {
  std::vector<uint8_t> bytes;
  int64_t sr = 0, sb = 0;
};

Input layout(const std::vector<float>& v, const Case& c) {
  Input in;
  const size_t es = dtype_size(c.dt);
  in.sr = c.N + c.pad_r;
  in.sb = c.R * in.sr + c.pad_b;
  in.bytes.assign(static_cast<size_t>(c.B * in.sb) * es, 0xCD);  // padding: garbage that must never be read as data
  const auto enc = encode(v, c.dt);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t r = 0; r < c.R; ++r)
      std::memcpy(&in.bytes[static_cast<size_t>(b * in.sb + r * in.sr) * es], &enc[static_cast<size_t>((b * c.R + r) * c.N) * es],
                  static_cast<size_t>(c.N) * es);
  return in;
}

TensorView coverage_view(Input& in, const Case& c, int dev) {
  TensorView t = view(in.bytes.data(), c.dt, {c.B, c.R, c.N}, dev);
  t.strides[0] = in.sb;
  t.strides[1] = in.sr;
  return t;
}

Status run(int dev, const TensorView& cov, std::vector<uint8_t>* exclude, int64_t k, Outputs& o, bool want_sorted = true,
           bool want_gains = true) {
  const int64_t B = cov.shape[0];
  o.order.assign(static_cast<size_t>(B * k), kIdxPoison);
  o.sorted.assign(static_cast<size_t>(B * k), kIdxPoison);
  o.gains.assign(static_cast<size_t>(B * k), 0.0f);
  for (auto& g : o.gains) std::memcpy(&g, &kGainPoison, 4);
  MaxCoverageParams p;
  TensorView c = cov;
  c.device = dev;
  p.coverage = c;
  if (exclude) p.exclude = view(exclude->data(), DType::kU8, {B, cov.shape[2]}, dev);
  p.k = k;
  p.order = view(o.order.data(), DType::kI32, {B, k}, dev);
  p.sorted = view(want_sorted ? o.sorted.data() : nullptr, DType::kI32, {B, k}, dev);
  p.gains = view(want_gains ? o.gains.data() : nullptr, DType::kF32, {B, k}, dev);
  const Status s = dev < 0 ? cpu::max_coverage(p) : cuda::max_coverage(p);
  if (dev >= 0) check_no_leak("max_coverage");
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// First position where two index/gain vectors differ, for the message.
template <class T>
long first_diff(const std::vector<T>& a, const std::vector<T>& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<long>(i);
  return -1;
}

void parity(const Case& c, std::mt19937& g) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto v = c.gen(c.B, c.R, c.N, g);
  Input in = layout(v, c);
  std::vector<uint8_t> ex;
  if (c.exclude > 0) {
    std::uniform_real_distribution<double> u(0, 1);
    ex.assign(static_cast<size_t>(c.B * c.N), 0);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t j = c.k; j < c.N; ++j) ex[b * c.N + j] = u(g) < c.exclude ? static_cast<uint8_t>(1 + j % 200) : 0;
  }
  std::vector<uint8_t>* exp = c.exclude > 0 ? &ex : nullptr;
  Outputs want, got;
  const TensorView cov = coverage_view(in, c, 0);
  const Status sc = run(-1, cov, exp, c.k, want);
  EXPECT(sc.ok(), "%s: cpu failed: %s", c.name, sc.message.c_str());
  const Status sg = run(0, cov, exp, c.k, got);
  EXPECT(sg.ok(), "%s: cuda failed: %s", c.name, sg.message.c_str());
  const long od = std::max(0L, first_diff(got.order, want.order));
  EXPECT(got.order == want.order, "%s: order differs at %ld (cuda %d, cpu %d)", c.name, od, got.order[od], want.order[od]);
  EXPECT(got.sorted == want.sorted, "%s: sorted differs at %ld", c.name, first_diff(got.sorted, want.sorted));
  const long gd = first_diff(got.gains, want.gains);
  EXPECT(same_bits(got.gains, want.gains), "%s: gains differ at %ld (cuda %.9g, cpu %.9g)", c.name, gd,
         gd >= 0 ? got.gains[gd] : 0.0f, gd >= 0 ? want.gains[gd] : 0.0f);
  bool poisoned = false;
  for (size_t i = 0; i < got.order.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &got.gains[i], 4);
    poisoned = poisoned || got.order[i] == kIdxPoison || got.sorted[i] == kIdxPoison || bits == kGainPoison;
  }
  EXPECT(!poisoned, "%s: an output element was left unwritten", c.name);
  // Each batch row's picks: distinct, never excluded, sorted = order ascending.
  bool valid = true;
  for (int64_t b = 0; b < c.B; ++b) {
    std::vector<int32_t> o(got.order.begin() + b * c.k, got.order.begin() + (b + 1) * c.k);
    std::sort(o.begin(), o.end());
    valid = valid && std::adjacent_find(o.begin(), o.end()) == o.end() &&
            std::equal(o.begin(), o.end(), got.sorted.begin() + b * c.k);
    for (int32_t j : o) valid = valid && j >= 0 && j < c.N && (!exp || ex[b * c.N + j] == 0);
  }
  EXPECT(valid, "%s: picks not distinct, excluded or not matching sorted", c.name);
  // The optional outputs may be left out: order alone is the same.
  if (c.bare) {
    Outputs bare;
    const Status sb = run(0, cov, exp, c.k, bare, false, false);
    EXPECT(sb.ok() && bare.order == want.order, "%s: order without sorted/gains differs: %s", c.name, sb.message.c_str());
    bool untouched = true;
    for (size_t i = 0; i < bare.sorted.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &bare.gains[i], 4);
      untouched = untouched && bare.sorted[i] == kIdxPoison && bits == kGainPoison;
    }
    EXPECT(untouched, "%s: null sorted/gains were written", c.name);
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  fprintf(stderr, "  %-34s B%ld R%ld N%ld k%ld %s: %.0f ms\n", c.name, (long)c.B, (long)c.R, (long)c.N, (long)c.k,
          dtype_name(c.dt), ms);
}

// Both back ends fail with the same code and the same message.
void same_error(const char* what, const TensorView& cov, std::vector<uint8_t>* ex, int64_t k, Code code) {
  Outputs a, b;
  const Status sc = run(-1, cov, ex, k, a);
  const Status sg = run(0, cov, ex, k, b);
  EXPECT(sc.code == code, "%s: cpu code %d (%s), expected %d", what, (int)sc.code, sc.message.c_str(), (int)code);
  EXPECT(sg.code == code, "%s: cuda code %d (%s), expected %d", what, (int)sg.code, sg.message.c_str(), (int)code);
  EXPECT(sg.message == sc.message, "%s: cuda message \"%s\" != cpu \"%s\"", what, sg.message.c_str(), sc.message.c_str());
}

void errors(std::mt19937& g) {
  const DType dts[3] = {DType::kF32, DType::kF16, DType::kBF16};
  // NaN and Inf anywhere: ERR_RANGE naming the lowest (batch, row).
  for (DType dt : dts) {
    Case c{"nan", 3, 5, 37, 4, dt, gen_mixed};
    c.pad_r = 3;
    const auto v = gen_mixed(c.B, c.R, c.N, g);
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    struct Spot { int64_t b, r, j; };
    const std::vector<std::vector<Spot>> spots = {
        {{0, 0, 0}}, {{2, 4, 36}}, {{1, 3, 5}, {1, 2, 30}, {2, 0, 0}}, {{2, 1, 7}, {1, 4, 36}}, {{0, 4, 1}, {0, 1, 20}}};
    for (int bi = 0; bi < 3; ++bi)
      for (const auto& s : spots) {
        auto w = v;
        for (const Spot& p : s) w[(p.b * c.R + p.r) * c.N + p.j] = bad[bi];
        Input in = layout(w, c);
        same_error("non-finite coverage", coverage_view(in, c, 0), nullptr, c.k, Code::kRange);
      }
  }
  // Too many excluded, in one batch row or several; with a NaN elsewhere.
  {
    Case c{"excluded", 3, 4, 20, 6, DType::kF32, gen_mixed};
    const auto v = gen_mixed(c.B, c.R, c.N, g);
    for (int variant = 0; variant < 5; ++variant) {
      auto w = v;
      std::vector<uint8_t> ex(static_cast<size_t>(c.B * c.N), 0);
      auto exclude_row = [&](int64_t b, int64_t keep) {
        for (int64_t j = keep; j < c.N; ++j) ex[b * c.N + (j * 7) % c.N] = 1;
      };
      if (variant == 0) exclude_row(1, 5);                       // batch 1 keeps 5 < 6
      if (variant == 1) { exclude_row(2, 0); exclude_row(1, 3); }  // the lowest: batch 1
      if (variant == 2) { exclude_row(2, 2); w[(0 * c.R + 3) * c.N + 4] = NAN; }  // batch 0's NaN first
      if (variant == 3) { exclude_row(0, 1); w[(2 * c.R + 0) * c.N + 4] = NAN; }  // batch 0's shortage first
      if (variant == 4) { exclude_row(1, 5); w[(1 * c.R + 2) * c.N + 9] = INFINITY; }  // same batch: NaN/Inf first
      Input in = layout(w, c);
      same_error("too many excluded", coverage_view(in, c, 0), &ex, c.k, Code::kRange);
    }
    // Exactly k left is fine.
    std::vector<uint8_t> ex(static_cast<size_t>(c.B * c.N), 1);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t j = 0; j < c.k; ++j) ex[b * c.N + 3 * j + b] = 0;
    Input in = layout(v, c);
    Outputs a, b;
    const Status sc = run(-1, coverage_view(in, c, 0), &ex, c.k, a);
    const Status sg = run(0, coverage_view(in, c, 0), &ex, c.k, b);
    EXPECT(sc.ok() && sg.ok() && a.order == b.order && a.sorted == b.sorted && same_bits(a.gains, b.gains),
           "exactly k columns left: cpu %s, cuda %s", sc.message.c_str(), sg.message.c_str());
  }
  // Bad arguments: the shared validate() answers first, with the same code.
  std::vector<float> data(2 * 3 * 5, 0.5f);
  std::vector<int32_t> ibuf(64, 0);
  std::vector<float> fbuf(64, 0.0f);
  std::vector<uint8_t> ubuf(64, 0);
  for (int dev : {0}) {
    auto params = [&]() {
      MaxCoverageParams p;
      p.coverage = view(data.data(), DType::kF32, {2, 3, 5}, dev);
      p.k = 2;
      p.order = view(ibuf.data(), DType::kI32, {2, 2}, dev);
      p.sorted = view(ibuf.data() + 8, DType::kI32, {2, 2}, dev);
      p.gains = view(fbuf.data(), DType::kF32, {2, 2}, dev);
      return p;
    };
    struct Bad { const char* what; std::function<void(MaxCoverageParams&)> edit; Code code; };
    const std::vector<Bad> bads = {
        {"rank 2 coverage", [&](MaxCoverageParams& p) { p.coverage = view(data.data(), DType::kF32, {6, 5}, dev); }, Code::kShape},
        {"rank 4 coverage", [&](MaxCoverageParams& p) { p.coverage = view(data.data(), DType::kF32, {1, 2, 3, 5}, dev); }, Code::kShape},
        {"empty dimension", [&](MaxCoverageParams& p) { p.coverage = view(data.data(), DType::kF32, {2, 0, 5}, dev); }, Code::kShape},
        {"i32 coverage", [&](MaxCoverageParams& p) { p.coverage.dtype = DType::kI32; }, Code::kDType},
        {"strided N", [&](MaxCoverageParams& p) { p.coverage.shape[2] = 2; p.coverage.strides[2] = 2; }, Code::kUnsupported},
        {"null coverage", [&](MaxCoverageParams& p) { p.coverage.data = nullptr; }, Code::kArg},
        {"k = 0", [&](MaxCoverageParams& p) { p.k = 0; p.order.shape[1] = 0; }, Code::kRange},
        {"k > N", [&](MaxCoverageParams& p) { p.k = 6; p.order = view(ibuf.data(), DType::kI32, {2, 6}, dev); }, Code::kRange},
        {"order shape", [&](MaxCoverageParams& p) { p.order = view(ibuf.data(), DType::kI32, {2, 3}, dev); }, Code::kShape},
        {"order dtype", [&](MaxCoverageParams& p) { p.order.dtype = DType::kI64; }, Code::kDType},
        {"null order", [&](MaxCoverageParams& p) { p.order.data = nullptr; }, Code::kArg},
        {"sorted shape", [&](MaxCoverageParams& p) { p.sorted = view(ibuf.data() + 8, DType::kI32, {4}, dev); }, Code::kShape},
        {"gains dtype", [&](MaxCoverageParams& p) { p.gains.dtype = DType::kI32; }, Code::kDType},
        {"gains shape", [&](MaxCoverageParams& p) { p.gains = view(fbuf.data(), DType::kF32, {2, 2, 1}, dev); }, Code::kShape},
        {"exclude shape", [&](MaxCoverageParams& p) { p.exclude = view(ubuf.data(), DType::kU8, {2, 4}, dev); }, Code::kShape},
        {"exclude dtype", [&](MaxCoverageParams& p) { p.exclude = view(ubuf.data(), DType::kI8, {2, 5}, dev); }, Code::kDType},
        {"exclude strided", [&](MaxCoverageParams& p) { p.exclude = view(ubuf.data(), DType::kU8, {2, 5}, dev); p.exclude.strides[0] = 8; }, Code::kUnsupported},
        {"exclude on the host", [&](MaxCoverageParams& p) { p.exclude = view(ubuf.data(), DType::kU8, {2, 5}, -1); }, Code::kDevice},
        {"order on the host", [&](MaxCoverageParams& p) { p.order.device = -1; }, Code::kDevice},
    };
    for (const Bad& b : bads) {
      MaxCoverageParams p = params();
      b.edit(p);
      const Status s = cuda::max_coverage(p);
      EXPECT(s.code == b.code, "%s: code %d (%s), expected %d", b.what, (int)s.code, s.message.c_str(), (int)b.code);
      check_no_leak(b.what);
    }
    // Host tensors: ERR_DEVICE from the CUDA entry point, nothing computed.
    MaxCoverageParams p = params();
    p.coverage.device = p.order.device = p.sorted.device = p.gains.device = -1;
    const Status s = cuda::max_coverage(p);
    EXPECT(s.code == Code::kDevice, "host tensors: code %d (%s)", (int)s.code, s.message.c_str());
    EXPECT(ibuf[0] == 0 && ibuf[1] == 0, "host tensors: outputs written");
    check_no_leak("host tensors");
  }
}

}  // namespace

// MMTok's coverage matrix [P; α·Q] against the CPU's; outputs poisoned first.
namespace mmtok {

using emu_test::normal;

void mmtok_case(int64_t B, int64_t m, int64_t n, int64_t D, int64_t Da, DType dt, std::mt19937& g, bool zero_row) {
  std::vector<float> tf = normal(B * m * D, g), vf = normal(B * n * D, g), af = normal(B * n * std::max<int64_t>(Da, 1), g);
  if (zero_row) std::fill(vf.begin(), vf.begin() + D, 0.0f);  // clamped norm: a zero row stays zero
  const auto t = encode(tf, dt), v = encode(vf, dt), a = encode(af, dt);
  std::vector<float> out[2];
  for (int dev = -1; dev <= 0; ++dev) {
    out[dev + 1].assign(B * (m + n) * n, NAN);
    MmtokCoverageParams p;
    p.text = view(const_cast<uint8_t*>(t.data()), dt, {B, m, D}, dev);
    p.vision = view(const_cast<uint8_t*>(v.data()), dt, {B, n, D}, dev);
    if (Da > 0) p.vision_aux = view(const_cast<uint8_t*>(a.data()), dt, {B, n, Da}, dev);
    p.tau_tv = 0.02;
    p.tau_vv = 0.2;
    p.alpha = 0.5;
    p.out = view(out[dev + 1].data(), DType::kF32, {B, m + n, n}, dev);
    const Status s = dev < 0 ? cpu::mmtok_coverage(p) : cuda::mmtok_coverage(p);
    EXPECT(s.ok(), "mmtok dev %d: %s", dev, s.message.c_str());
  }
  double worst = 0;
  for (size_t i = 0; i < out[0].size(); ++i) {
    const double e = out[0][i], c = out[1][i];
    const double r = std::fabs(c - e) / (1e-9 + 2e-5 * std::fabs(e));
    if (!(r <= worst)) worst = std::isnan(r) ? INFINITY : r;
  }
  EXPECT(worst <= 1, "mmtok B%ld m%ld n%ld D%ld Da%ld %s: worst ratio %g", (long)B, (long)m, (long)n, (long)D, (long)Da,
         dtype_name(dt), worst);
  check_no_leak("mmtok");
}

void mmtok_errors(std::mt19937& g) {
  auto tf = normal(2 * 3 * 4, g), vf = normal(2 * 5 * 4, g);
  tf[(1 * 3 + 2) * 4 + 1] = -INFINITY;
  const auto t = encode(tf, DType::kF32), v = encode(vf, DType::kF32);
  std::vector<float> out(2 * 8 * 5);
  MmtokCoverageParams p;
  p.text = view(const_cast<uint8_t*>(t.data()), DType::kF32, {2, 3, 4}, 0);
  p.vision = view(const_cast<uint8_t*>(v.data()), DType::kF32, {2, 5, 4}, 0);
  p.out = view(out.data(), DType::kF32, {2, 8, 5}, 0);
  Status s = cuda::mmtok_coverage(p);
  EXPECT(s.code == Code::kRange && s.message.find("text but row 2 of batch 1") != std::string::npos, "Inf text: %s",
         s.message.c_str());
  check_no_leak("mmtok Inf");
  p.tau_tv = 0;
  s = cuda::mmtok_coverage(p);
  EXPECT(s.code == Code::kRange, "tau 0: %s", s.message.c_str());
  p.tau_tv = 0.02;
  p.out = view(out.data(), DType::kF32, {2, 7, 5}, 0);
  s = cuda::mmtok_coverage(p);
  EXPECT(s.code == Code::kShape, "out shape: %s", s.message.c_str());
  check_no_leak("mmtok validation");
}

}  // namespace mmtok

int main() {
  std::mt19937 g(20240611);
  const DType f32 = DType::kF32, f16 = DType::kF16, bf16 = DType::kBF16;
  std::vector<Case> cases = {
      {"N = 1, k = 1", 1, 1, 1, 1, f32, gen_mixed, 0, 0, 0, true},
      {"N = 1, three batches", 3, 4, 1, 1, bf16, gen_mixed},
      {"R = 1, k = N", 2, 1, 7, 7, f32, gen_mixed, 0, 0, 0, true},
      {"R = 1, many ties", 1, 1, 300, 24, f16, gen_coarse},
      {"primes, f16", 2, 3, 13, 5, f16, gen_mixed},
      {"k = N, bf16, strided", 2, 17, 23, 23, bf16, gen_mixed, 0, 3, 11},
      {"N > block, strided", 2, 5, 257, 24, f32, gen_mixed, 0, 1, 0},
      {"N > block, exclude", 2, 9, 300, 14, f16, gen_mixed, 0.4, 0, 0, true},
      {"prime N > 4 blocks", 1, 61, 1031, 40, f32, gen_mixed},
      {"prime N, bf16, exclude", 2, 13, 1031, 16, bf16, gen_mixed, 0.5, 5, 7},
      {"duplicated + zero columns", 1, 6, 29, 29, f32, gen_duplicates},
      {"duplicates, exclude", 1, 11, 613, 30, bf16, gen_duplicates, 0.3},
      {"all-equal columns", 1, 4, 41, 41, f16, gen_all_equal},
      {"all-equal, N > block", 1, 3, 520, 20, f32, gen_all_equal, 0.2},
      {"zero coverage", 2, 3, 19, 19, bf16, gen_zero},
      {"zero coverage, exclude", 1, 5, 290, 12, f32, gen_zero, 0.6},
      {"coarse ties", 2, 5, 31, 31, f32, gen_coarse},
      {"coarse ties, N > block", 1, 30, 600, 50, f32, gen_coarse},
      {"coarse ties, f16, strided", 1, 13, 263, 30, f16, gen_coarse, 0.1, 2, 9},
      {"14 decades, k = N (zero gains tie)", 1, 50, 120, 120, f32, gen_wide},
      {"14 decades, k = N, N > block", 2, 7, 300, 300, f32, gen_wide},
      {"softmax R = 592 (MMTok)", 1, 592, 576, 64, f32, gen_softmax},
      {"softmax, bf16, batch 2", 2, 80, 577, 20, bf16, gen_softmax},
      {"softmax, f16, exclude", 1, 37, 1000, 30, f16, gen_softmax, 0.25},
      {"N > 4096 (global state)", 1, 6, 4099, 20, f32, gen_mixed},
      {"N > 4096, ties, exclude", 2, 3, 4100, 10, bf16, gen_coarse, 0.3},
      {"R > 2048 (global best)", 1, 2051, 37, 12, f16, gen_mixed, 0, 1, 0},
      {"R > 2048, softmax", 1, 2100, 300, 16, f32, gen_softmax},
  };
  for (const Case& c : cases) parity(c, g);
  {
    std::mt19937 gm(11);
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      mmtok::mmtok_case(1, 1, 1, 1, 0, dt, gm, false);
      mmtok::mmtok_case(2, 3, 17, 8, 5, dt, gm, true);
      mmtok::mmtok_case(1, 16, 130, 33, 0, dt, gm, false);
    }
    mmtok::mmtok_case(1, 16, 70, 65, 24, DType::kF32, gm, false);
    mmtok::mmtok_errors(gm);
  }
  errors(g);
  // The path without stream-ordered pools (cudaMalloc/cudaFree).
  emu::pools_supported = 0;
  parity({"no memory pools", 2, 7, 129, 10, bf16, gen_mixed, 0.2}, g);
  emu::pools_supported = 1;
  return emu_test::finish();
}
