// The CUDA token-merging entry points (cuda/merge.cu) under the emulator
// against the CPU back end (cpu/merge.cc, itself tested against float64
// references in test/merge.test.ts): precision f32 plans must match exactly
// (TF32 candidates, then every candidate within the TF32 error bound rescored
// with the CPU's fmaf chain: namespace f32t below), merged values to
// rounding; NaN input → ERR_RANGE; no scratch leaks. Precision bf16 (the
// WMMA score pass, include/mma.h) against the CPU's bf16 plans and a float64
// reference of the bf16 semantics: namespace bf16t below.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "core/dtype.h"
#include "tokensieve/merge.h"

using namespace tokensieve;
using emu_test::check_no_leak;
using emu_test::view;
static int& failures = emu_test::failures;
static int& checks = emu_test::checks;

static std::vector<uint8_t> values(int64_t n, DType dt, std::mt19937& g, int dup_every) {
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> f(n);
  for (int64_t i = 0; i < n; ++i) f[i] = nd(g);
  std::vector<uint8_t> b(n * dtype_size(dt));
  for (int64_t i = 0; i < n; ++i) {
    float v = f[i];
    if (dup_every > 0 && (i / 8) % dup_every == 1) v = f[i % 8];  // duplicated rows (C = 8 there): exact ties
    if (dt == DType::kF32) memcpy(&b[i * 4], &v, 4);
    else { uint16_t h = dt == DType::kF16 ? f32_to_f16(v) : f32_to_bf16(v); memcpy(&b[i * 2], &h, 2); }
  }
  return b;
}

static float as_f32(const uint8_t* p, DType dt) {
  if (dt == DType::kF32) { float f; memcpy(&f, p, 4); return f; }
  uint16_t h; memcpy(&h, p, 2);
  return dt == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
}

static void match_case(int64_t B, int64_t N, int64_t C, DType dt, bool cls, bool distill, int64_t r, bool split2d,
                       int dup, std::mt19937& g) {
  auto metric = values(B * N * C, dt, g, dup);
  std::vector<int32_t> a, b;
  if (!split2d) {
    for (int64_t i = 0; i < N; ++i) (i % 2 ? b : a).push_back(static_cast<int32_t>(i));
  } else {  // one destination in every 4 tokens, at a pseudo-random offset
    for (int64_t i = 0; i < N; ++i) ((i % 4) == (i / 4) % 4 ? b : a).push_back(static_cast<int32_t>(i));
  }
  const int64_t Na = a.size(), Nb = b.size();
  std::vector<int32_t> out[2][4];
  for (int dev = -1; dev <= 0; ++dev) {
    auto& o = out[dev + 1];
    o[0].assign(B * N, -7); o[1].assign(B * (Na - r), -7); o[2].assign(B * r, -7); o[3].assign(B * r, -7);
    BipartiteMatchParams p;
    p.metric = view(metric.data(), dt, {B, N, C}, dev);
    p.split_a = view(a.data(), DType::kI32, {Na}, dev);
    p.split_b = view(b.data(), DType::kI32, {Nb}, dev);
    p.r = r; p.protect_cls = cls; p.protect_distill = distill;
    p.assign = view(o[0].data(), DType::kI32, {B, N}, dev);
    p.unm_idx = view(o[1].data(), DType::kI32, {B, Na - r}, dev);
    p.src_idx = view(o[2].data(), DType::kI32, {B, r}, dev);
    p.dst_idx = view(o[3].data(), DType::kI32, {B, r}, dev);
    const Status s = dev < 0 ? cpu::bipartite_match(p) : cuda::bipartite_match(p);
    EXPECT(s.ok(), "bipartite_match dev %d: %s", dev, s.message.c_str());
  }
  for (int k = 0; k < 4; ++k)
    EXPECT(out[0][k] == out[1][k], "plan part %d differs: B%ld N%ld C%ld %s cls%d distill%d r%ld split2d%d dup%d", k,
           (long)B, (long)N, (long)C, dtype_name(dt), cls, distill, (long)r, split2d, dup);
  check_no_leak("bipartite_match");
  // merge every mode on the CPU plan
  const int64_t M = N - r, Cx = 5;
  auto x = values(B * N * Cx, dt, g, 0);
  std::vector<float> sizes(B * N);
  for (int64_t i = 0; i < B * N; ++i) sizes[i] = 1.0f + static_cast<float>(i % 4);
  for (int mode = 0; mode < 4; ++mode) {
    std::vector<uint8_t> res[2];
    std::vector<float> so[2];
    for (int dev = -1; dev <= 0; ++dev) {
      res[dev + 1].assign(B * M * Cx * dtype_size(dt), 0xEE);
      so[dev + 1].assign(B * M, -1.0f);
      MergeParams p;
      p.x = view(x.data(), dt, {B, N, Cx}, dev);
      p.assign = view(out[0][0].data(), DType::kI32, {B, N}, dev);
      p.n_out = M; p.mode = static_cast<MergeMode>(mode);
      if (mode == 3) {
        p.sizes = view(sizes.data(), DType::kF32, {B, N, 1}, dev);
        p.sizes_out = view(so[dev + 1].data(), DType::kF32, {B, M, 1}, dev);
      }
      p.out = view(res[dev + 1].data(), dt, {B, M, Cx}, dev);
      const Status s = dev < 0 ? cpu::merge(p) : cuda::merge(p);
      EXPECT(s.ok(), "merge mode %d dev %d: %s", mode, dev, s.message.c_str());
    }
    for (int64_t i = 0; i < B * M * Cx; ++i) {
      const float u = as_f32(&res[0][i * dtype_size(dt)], dt), v = as_f32(&res[1][i * dtype_size(dt)], dt);
      const float tol = dt == DType::kF32 ? 1e-5f : dt == DType::kF16 ? 2e-3f : 1.6e-2f;
      if (!(std::fabs(u - v) <= tol * (1 + std::fabs(u)))) {
        EXPECT(false, "merge mode %d %s: [%ld] cpu %g cuda %g", mode, dtype_name(dt), (long)i, u, v);
        break;
      }
    }
    if (mode == 3) EXPECT(so[0] == so[1], "merge sizes differ");
    check_no_leak("merge");
  }
}

// The merge CSR lists each slot's members in token order (csr_kernel: per-warp
// ranges, __match_any_sync groups): the f32 sums (mode sum and mean) must
// have the bits of a scalar loop over the tokens in order, for any assign —
// many members per slot, empty slots, ranges split across warps and chunks.
// Values of mixed magnitudes make a sum in another order differ in its bits.
static void csr_order_case(int64_t B, int64_t N, int64_t M, std::mt19937& g) {
  const int64_t Cx = 3;
  std::vector<float> x(B * N * Cx);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& v : x) v = std::ldexp(u(g), static_cast<int>(g() % 24) - 12);
  std::vector<int32_t> assign(B * N);
  for (int64_t i = 0; i < B * N; ++i)  // skewed: slot 0 takes a third of the tokens, the last slot none
    assign[i] = g() % 3 == 0 ? 0 : static_cast<int32_t>(g() % std::max<int64_t>(1, M - 1));
  for (int mode = 0; mode < 2; ++mode) {
    std::vector<float> ref(B * M * Cx), out(B * M * Cx, -7.0f);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t sl = 0; sl < M; ++sl)
        for (int64_t c = 0; c < Cx; ++c) {
          float acc = 0.0f, w = 0.0f;
          for (int64_t i = 0; i < N; ++i)
            if (assign[b * N + i] == sl) {
              acc = acc + x[(b * N + i) * Cx + c];
              w = w + 1.0f;
            }
          if (mode == 1) acc = acc * (w != 0.0f ? 1.0f / w : 0.0f);
          ref[(b * M + sl) * Cx + c] = acc;
        }
    MergeParams p;
    p.x = view(x.data(), DType::kF32, {B, N, Cx}, 0);
    p.assign = view(assign.data(), DType::kI32, {B, N}, 0);
    p.n_out = M;
    p.mode = static_cast<MergeMode>(mode);
    p.out = view(out.data(), DType::kF32, {B, M, Cx}, 0);
    const Status st = cuda::merge(p);
    EXPECT(st.ok(), "csr order B%ld N%ld M%ld: %s", (long)B, (long)N, (long)M, st.message.c_str());
    int64_t differ = 0;
    for (int64_t i = 0; i < B * M * Cx; ++i) differ += std::memcmp(&out[i], &ref[i], sizeof(float)) != 0;
    EXPECT(differ == 0, "csr order B%ld N%ld M%ld mode %d: %ld outputs differ from the token-order sum", (long)B,
           (long)N, (long)M, mode, (long)differ);
  }
  check_no_leak("merge csr order");
}

static void contextual_case(int64_t B, int64_t N, int64_t C, int64_t Cm, int64_t Nr, int64_t c, DType dt, std::mt19937& g) {
  auto x = values(B * N * C, dt, g, 0);
  auto m = values(B * N * Cm, dt, g, 0);
  std::vector<int32_t> rem(B * Nr);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Nr; ++i) rem[b * Nr + i] = static_cast<int32_t>((i * N) / Nr + (b % 2) * (N / Nr > 1));
  std::vector<uint8_t> res[2];
  for (int dev = -1; dev <= 0; ++dev) {
    res[dev + 1].assign(B * c * C * dtype_size(dt), 0xEE);
    ContextualMergeParams p;
    p.x = view(x.data(), dt, {B, N, C}, dev);
    p.metric = view(m.data(), dt, {B, N, Cm}, dev);
    p.remaining = view(rem.data(), DType::kI32, {B, Nr}, dev);
    p.c = c;
    p.out = view(res[dev + 1].data(), dt, {B, c, C}, dev);
    const Status s = dev < 0 ? cpu::contextual_merge(p) : cuda::contextual_merge(p);
    EXPECT(s.ok(), "contextual dev %d: %s", dev, s.message.c_str());
  }
  for (int64_t i = 0; i < B * c * C; ++i) {
    const float u = as_f32(&res[0][i * dtype_size(dt)], dt), v = as_f32(&res[1][i * dtype_size(dt)], dt);
    const float tol = dt == DType::kF32 ? 1e-5f : dt == DType::kF16 ? 2e-3f : 1.6e-2f;
    if (!(std::fabs(u - v) <= tol * (1 + std::fabs(u)))) {
      EXPECT(false, "contextual %s: [%ld] cpu %g cuda %g", dtype_name(dt), (long)i, u, v);
      break;
    }
  }
  check_no_leak("contextual_merge");
}

// contextual_merge with a keep spec (set_spec puts keptIndices or keepMask
// into the params) against the same call on the equivalent `remaining`.
struct SpecCase {
  const char* label;
  int64_t B, N, C, Cm, Nr, c;
  const std::vector<uint8_t>& x;  // f32 bytes [B, N, C]
  const std::vector<uint8_t>& m;  // f32 bytes [B, N, Cm]
  const std::vector<int32_t>& rem;
  std::function<void(ContextualMergeParams&, int)> set_spec;

  Status run(bool from_spec, int dev, std::vector<float>& out, bool checks = true) const {
    out.assign(B * c * C, -7.0f);
    ContextualMergeParams p;
    p.x = view(const_cast<uint8_t*>(x.data()), DType::kF32, {B, N, C}, dev);
    p.metric = view(const_cast<uint8_t*>(m.data()), DType::kF32, {B, N, Cm}, dev);
    if (from_spec)
      set_spec(p, dev);
    else
      p.remaining = view(const_cast<int32_t*>(rem.data()), DType::kI32, {B, Nr}, dev);
    p.c = c;
    p.out = view(out.data(), DType::kF32, {B, c, C}, dev);
    p.device_checks = checks;
    return dev < 0 ? cpu::contextual_merge(p) : cuda::contextual_merge(p);
  }
  // The spec's result equals the same back end's on `remaining` bit for bit
  // (the same kernels after the listing), and CUDA's the CPU's within the
  // tolerance.
  void expect_parity() const {
    std::vector<float> cs, cr, hs, hr;
    Status s = run(true, 0, cs);
    EXPECT(s.ok(), "%s B%ld N%ld Nr%ld: cuda %s", label, (long)B, (long)N, (long)Nr, s.message.c_str());
    s = run(false, 0, cr);
    EXPECT(s.ok() && cs == cr, "%s B%ld N%ld Nr%ld: cuda from the spec differs from cuda on remaining", label, (long)B,
           (long)N, (long)Nr);
    s = run(true, -1, hs);
    EXPECT(s.ok(), "%s: cpu %s", label, s.message.c_str());
    s = run(false, -1, hr);
    EXPECT(s.ok() && hs == hr, "%s B%ld N%ld Nr%ld: cpu from the spec differs from cpu on remaining", label, (long)B,
           (long)N, (long)Nr);
    int far = 0;
    for (size_t i = 0; i < cs.size(); ++i) far += !(std::fabs(cs[i] - hs[i]) <= 1e-5f * (1 + std::fabs(hs[i])));
    EXPECT(far == 0, "%s B%ld N%ld Nr%ld: %d outputs beyond the tolerance of the cpu's", label, (long)B, (long)N,
           (long)Nr, far);
    check_no_leak(label);
  }
  // A bad spec: the CPU's code and message on both back ends when checked;
  // unchecked, an Ok call (and with all_nan, every output NaN).
  void expect_bad(const char* what, Code code, bool all_nan) const {
    std::vector<float> o1, o2, o3;
    const Status hc = run(true, -1, o1), dc = run(true, 0, o2), du = run(true, 0, o3, false);
    EXPECT(hc.code == code && dc.code == code && hc.message == dc.message, "%s, bad (%s): cpu '%s' cuda '%s'", label,
           what, hc.message.c_str(), dc.message.c_str());
    int not_nan = 0;
    for (float v : o3) not_nan += !std::isnan(v);
    EXPECT(du.ok() && (!all_nan || not_nan == 0), "%s, bad (%s) unchecked: %s, %d outputs not NaN", label, what,
           du.message.c_str(), not_nan);
    check_no_leak(label);
  }
};

// N tokens of B rows, K of each kept at random: kept [B, K] (any order, as a
// top-k returns them), is_kept [B, N] and the remaining tokens [B, N − K].
static void random_keep(int64_t B, int64_t N, int64_t K, std::mt19937& g, std::vector<int32_t>* kept,
                        std::vector<char>* is_kept, std::vector<int32_t>* rem) {
  kept->assign(B * K, 0);
  is_kept->assign(B * N, 0);
  rem->assign(B * (N - K), 0);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> perm(N);
    for (int64_t i = 0; i < N; ++i) perm[i] = static_cast<int32_t>(i);
    std::shuffle(perm.begin(), perm.end(), g);
    for (int64_t j = 0; j < K; ++j) {
      (*kept)[b * K + j] = perm[j];
      (*is_kept)[b * N + perm[j]] = 1;
    }
    for (int64_t i = 0, w = 0; i < N; ++i)
      if (!(*is_kept)[b * N + i]) (*rem)[b * (N - K) + w++] = static_cast<int32_t>(i);
  }
}

// keptIndices instead of remaining: the back end lists the remaining tokens
// (CUDA: mark, check and scan kernels, no read-back). K spans 1, a few, most
// of N, and rows longer than one scan chunk (256). Bad entries (out of
// range, repeated) are ERR_RANGE with the CPU's message when checked, Ok
// unchecked.
static void contextual_kept_case(int64_t B, int64_t N, int64_t K, int64_t c, std::mt19937& g) {
  const int64_t C = 7, Cm = 5, Nr = N - K;
  auto x = values(B * N * C, DType::kF32, g, 0);
  auto m = values(B * N * Cm, DType::kF32, g, 0);
  std::vector<int32_t> kept, rem;
  std::vector<char> is_kept;
  random_keep(B, N, K, g, &kept, &is_kept, &rem);
  const SpecCase sc{"kept", B, N, C, Cm, Nr, c, x, m, rem,
                    [&](ContextualMergeParams& p, int dev) { p.kept = view(kept.data(), DType::kI32, {B, K}, dev); }};
  sc.expect_parity();
  if (K < 2) return;
  // Bad entries in the last batch row: out of range twice, a repeat.
  for (int bad = 0; bad < 3; ++bad) {
    const int64_t at = (B - 1) * K + K - 1;
    const int32_t was = kept[at];
    kept[at] = bad == 0 ? static_cast<int32_t>(N) : bad == 1 ? -1 : kept[(B - 1) * K];
    sc.expect_bad(bad == 2 ? "a repeat" : "out of range", Code::kRange, false);
    kept[at] = was;
  }
}

// keepMask instead of remaining: the back end lists each row's zeros (CUDA:
// a scan kernel, the count read by the later kernels from device memory, no
// read-back). Every mask dtype, with "kept" written as any non-zero value
// (negative, denormal, NaN) and "not kept" as 0 or -0.0; rows longer than
// one scan chunk. Bad masks (rows leaving different counts, every token
// kept, fewer than c left) give the CPU's code and message when checked,
// and unchecked an Ok call with an all-NaN out.
static void contextual_mask_case(int64_t B, int64_t N, int64_t K, int64_t c, DType mdt, std::mt19937& g) {
  const int64_t C = 6, Cm = 5, Nr = N - K, es = static_cast<int64_t>(dtype_size(mdt));
  auto x = values(B * N * C, DType::kF32, g, 0);
  auto m = values(B * N * Cm, DType::kF32, g, 0);
  const bool is_float = mdt == DType::kF32 || mdt == DType::kF16 || mdt == DType::kBF16;
  const uint64_t sign = es == 8 ? 0 : uint64_t{1} << (8 * es - 1);  // -0.0 for the float dtypes
  const uint64_t one = !is_float ? 1u : es == 4 ? 0x3f800000u : mdt == DType::kF16 ? 0x3c00u : 0x3f80u;
  std::vector<uint8_t> mask(B * N * es);
  auto put = [&](int64_t i, uint64_t bits) { std::memcpy(&mask[i * es], &bits, es); };
  std::vector<int32_t> kept, rem;
  std::vector<char> is_kept;
  random_keep(B, N, K, g, &kept, &is_kept, &rem);
  for (int64_t i = 0; i < B * N; ++i) {
    const uint64_t pick = g() % 3;
    if (is_kept[i])  // 1, all bits set (-1 / NaN), or the smallest magnitude (a denormal for floats)
      put(i, pick == 0 ? one : pick == 1 ? ~uint64_t{0} : (1u | (is_float ? sign : 0)));
    else
      put(i, is_float && pick == 1 ? sign : 0);
  }
  char label[32];
  std::snprintf(label, sizeof label, "mask %s", dtype_name(mdt));
  const SpecCase sc{label, B, N, C, Cm, Nr, c, x, m, rem,
                    [&](ContextualMergeParams& p, int dev) { p.keep_mask = view(mask.data(), mdt, {B, N}, dev); }};
  sc.expect_parity();
  if (B > 1) {  // the last row keeps one token more: its count differs from row 0's
    const int64_t at = (B - 1) * N + rem[(B - 1) * Nr + Nr / 2];
    put(at, 1);
    sc.expect_bad("uneven rows", Code::kShape, true);
    put(at, 0);
  }
  const std::vector<uint8_t> was = mask;
  for (int64_t i = 0; i < B * N; ++i) put(i, i % N >= c - 1 ? 1 : 0);  // c - 1 tokens left in every row
  if (c > 1) sc.expect_bad("c > Nr", Code::kRange, true);
  for (int64_t i = 0; i < B * N; ++i) put(i, 1);
  sc.expect_bad("all kept", Code::kRange, true);
  mask = was;
}

// A non-finite metric is ERR_RANGE when the call checks (waits); unchecked
// (wait: false) nothing is read back and the call is Ok.
static void contextual_unchecked_case() {
  std::vector<float> x(2 * 9 * 5), m(2 * 9 * 4), out(2 * 3 * 5, -7.0f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i));
  for (size_t i = 0; i < m.size(); ++i) m[i] = std::cos(0.11f * static_cast<float>(i));
  std::vector<int32_t> rem = {1, 2, 3, 5, 6, 8, 0, 2, 4, 5, 7, 8};
  m[5 * 4 + 1] = NAN;  // batch 0, token 5 (a remaining token)
  ContextualMergeParams p;
  p.x = view(x.data(), DType::kF32, {2, 9, 5}, 0);
  p.metric = view(m.data(), DType::kF32, {2, 9, 4}, 0);
  p.remaining = view(rem.data(), DType::kI32, {2, 6}, 0);
  p.c = 3;
  p.out = view(out.data(), DType::kF32, {2, 3, 5}, 0);
  Status s = cuda::contextual_merge(p);
  EXPECT(s.code == Code::kRange && s.message == "expected finite metric but it holds NaN or Inf",
         "checked NaN metric: got %s", s.message.c_str());
  p.device_checks = false;
  s = cuda::contextual_merge(p);
  EXPECT(s.ok(), "unchecked NaN metric: got %s", s.message.c_str());
  m[5 * 4 + 1] = 0.5f;  // finite again: the unchecked call gives the checked call's result
  std::vector<float> checked(out.size(), -7.0f);
  s = cuda::contextual_merge(p);
  EXPECT(s.ok(), "unchecked finite metric: got %s", s.message.c_str());
  p.device_checks = true;
  p.out = view(checked.data(), DType::kF32, {2, 3, 5}, 0);
  s = cuda::contextual_merge(p);
  EXPECT(s.ok(), "checked finite metric: got %s", s.message.c_str());
  EXPECT(out == checked, "unchecked and checked contextual merges differ");
  check_no_leak("contextual unchecked");
}

// ---- precision bf16 (tensor-core scores) ------------------------------------
// The CUDA back end (WMMA) against the CPU back end and a float64 reference
// of the defined semantics: rows L2-normalised as the back ends do (f64
// partial sums of d % 4, f32 norm, f32 division), rounded to bf16, scores =
// Σ of the (exact) products. Both back ends sum in f32, in orders that may
// differ (the hardware's tensor cores; this emulator happens to use the
// CPU's order), so a selection is checked only where the reference does not
// leave two candidates within 1e-5 (relative to max(|x|, |y|, 0.1)) of each
// other — exact ties (duplicated rows) included: they must go to the lower
// index on both devices. The counters make sure most positions are checked.
namespace bf16t {

struct Stats {
  long positions = 0, pinned = 0;   // edge-order positions seen / checked (per device)
  long rows = 0, rows_pinned = 0;   // merged rows seen / destination checked (per device)
  long tie_rows = 0, tie_ranks = 0; // checked destinations / positions decided by an exact tie
  long cases = 0, full_equal = 0;   // runs / runs where every decision is pinned and the plans are compared whole
  double max_gap = 0;               // max over merged rows of (reference row max − reference score of the chosen b)
};
Stats st;

bool close_rel(double x, double y) {
  if (x == y) return true;  // also -inf == -inf
  if (std::isinf(x) || std::isinf(y)) return false;
  return std::fabs(x - y) <= 1e-5 * std::max({std::fabs(x), std::fabs(y), 0.1});
}

// Metric rows (f32 normal, rounded to dt); dup: rows t ≡ 2, 3 (mod 6) copy row
// t − 2 (same parity: duplicated a-rows and duplicated b-columns, exact ties);
// same: every row equal.
std::vector<uint8_t> metric_rows(int64_t B, int64_t N, int64_t C, DType dt, std::mt19937& g, bool dup, bool same) {
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> f(B * N * C);
  for (auto& v : f) v = nd(g);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < N; ++t) {
      const int64_t src = same ? 0 : (dup && t >= 2 && (t % 6 == 2 || t % 6 == 3)) ? t - 2 : t;
      if (src != t) std::copy_n(&f[(b * N + src) * C], C, &f[(b * N + t) * C]);
    }
  std::vector<uint8_t> out(f.size() * dtype_size(dt));
  for (size_t i = 0; i < f.size(); ++i) {
    if (dt == DType::kF32) memcpy(&out[i * 4], &f[i], 4);
    else { const uint16_t h = dt == DType::kF16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]); memcpy(&out[i * 2], &h, 2); }
  }
  return out;
}

// The normalised rows rounded to bf16 (as f32 values), [B, N, C].
std::vector<float> bf16_rows(const std::vector<uint8_t>& m, DType dt, int64_t B, int64_t N, int64_t C) {
  std::vector<float> y(B * N * C);
  for (int64_t t = 0; t < B * N; ++t) {
    double s4[4] = {0, 0, 0, 0};
    for (int64_t d = 0; d < C; ++d) {
      const double v = as_f32(&m[(t * C + d) * dtype_size(dt)], dt);
      s4[d & 3] += v * v;
    }
    const float norm = static_cast<float>(std::sqrt((s4[0] + s4[1]) + (s4[2] + s4[3])));
    for (int64_t d = 0; d < C; ++d) {
      const float v = as_f32(&m[(t * C + d) * dtype_size(dt)], dt);
      y[t * C + d] = norm > 0 ? bf16_to_f32(f32_to_bf16(v / norm)) : 0.0f;
    }
  }
  return y;
}

struct Plan {
  std::vector<int32_t> assign, unm, src, dst;
};

Plan run(int dev, const std::vector<uint8_t>& metric, DType dt, int64_t B, int64_t N, int64_t C,
         const std::vector<int32_t>& a, const std::vector<int32_t>& b, int64_t r, bool cls, bool distill, Status* s,
         MatchPrecision precision = MatchPrecision::kBF16) {
  const int64_t Na = a.size(), Nb = b.size();
  Plan o;
  o.assign.assign(B * N, -7); o.unm.assign(B * std::max<int64_t>(0, Na - r), -7); o.src.assign(B * r, -7); o.dst.assign(B * r, -7);
  BipartiteMatchParams p;
  p.metric = view(const_cast<uint8_t*>(metric.data()), dt, {B, N, C}, dev);
  p.split_a = view(const_cast<int32_t*>(a.data()), DType::kI32, {Na}, dev);
  p.split_b = view(const_cast<int32_t*>(b.data()), DType::kI32, {Nb}, dev);
  p.r = r; p.protect_cls = cls; p.protect_distill = distill;
  p.precision = precision;
  p.assign = view(o.assign.data(), DType::kI32, {B, N}, dev);
  p.unm_idx = view(o.unm.data(), DType::kI32, {B, Na - r}, dev);
  p.src_idx = view(o.src.data(), DType::kI32, {B, r}, dev);
  p.dst_idx = view(o.dst.data(), DType::kI32, {B, r}, dev);
  *s = dev < 0 ? cpu::bipartite_match(p) : cuda::bipartite_match(p);
  return o;
}

void match_case(int64_t B, int64_t N, int64_t C, DType dt, bool cls, bool distill, bool split2d, bool dup, bool same,
                std::mt19937& g) {
  const auto metric = metric_rows(B, N, C, dt, g, dup, same);
  const auto y = bf16_rows(metric, dt, B, N, C);
  std::vector<int32_t> a, b;
  for (int64_t i = 0; i < N; ++i) {
    const bool dst = split2d ? (i % 4) == (i / 4) % 4 : i % 2 == 1;
    (dst ? b : a).push_back(static_cast<int32_t>(i));
  }
  const int64_t Na = a.size(), Nb = b.size();
  const int64_t r_max = (cls || distill) ? Na - 1 : Na;
  const int64_t cap = split2d ? Na : (N - (cls ? 1 : 0) - (distill ? 1 : 0)) / 2;  // ToMe's / tomesd's cap
  char what[160];
  snprintf(what, sizeof what, "bf16 B%ld N%ld C%ld %s cls%d distill%d split2d%d dup%d same%d", (long)B, (long)N,
           (long)C, dtype_name(dt), cls, distill, split2d, dup, same);
  // r beyond what the entry point takes: ERR_RANGE on both devices.
  for (int dev = -1; dev <= 0; ++dev) {
    Status s;
    run(dev, metric, dt, B, N, C, a, b, r_max + 1, cls, distill, &s);
    EXPECT(s.code == Code::kRange, "%s: r = %ld > %ld on dev %d: %s", what, (long)(r_max + 1), (long)r_max, dev,
           s.message.c_str());
  }
  check_no_leak("bf16 r range");
  std::vector<int64_t> rs = {1, std::max<int64_t>(1, Na / 4), cap, r_max};
  std::sort(rs.begin(), rs.end());
  rs.erase(std::unique(rs.begin(), rs.end()), rs.end());
  const double tol = static_cast<double>(C + 1) * std::ldexp(1.0, -23);  // ≥ 2× the f32 summation error bound
  std::vector<int32_t> a_pos(N, -1), b_pos(N, -1);
  for (int64_t i = 0; i < Na; ++i) a_pos[a[i]] = static_cast<int32_t>(i);
  for (int64_t j = 0; j < Nb; ++j) b_pos[b[j]] = static_cast<int32_t>(j);
  // Reference per batch row and a-row: max, first argmax, whether it is
  // decided (the next distinct value is not close) and by an exact tie; the
  // reference edge order (stable: ties to the lower a position) and its
  // groups of close values. A position is pinned when its group is one value
  // or bit-equal values (then ordered by index).
  struct Ref {
    std::vector<double> top;
    std::vector<int32_t> arg, E;
    std::vector<char> decided, tie, pinned;
    std::vector<int64_t> grp, gend;
  };
  std::vector<Ref> ref(B);
  auto dot = [&](int64_t bb, int64_t i, int64_t j) {
    const float* u = &y[(bb * N + a[i]) * C];
    const float* v = &y[(bb * N + b[j]) * C];
    double s = 0;
    for (int64_t d = 0; d < C; ++d) s += static_cast<double>(u[d]) * v[d];
    return s;
  };
  for (int64_t bb = 0; bb < B; ++bb) {
    Ref& R = ref[bb];
    R.top.assign(Na, -INFINITY); R.arg.assign(Na, 0); R.decided.assign(Na, 1); R.tie.assign(Na, 0);
    for (int64_t i = 0; i < Na; ++i) {
      if (cls && i == 0) continue;
      double next = -INFINITY;
      int count = 0;
      for (int64_t j = (distill ? 1 : 0); j < Nb; ++j) {
        const double s = dot(bb, i, j);
        if (s > R.top[i]) { next = R.top[i]; R.top[i] = s; R.arg[i] = static_cast<int32_t>(j); count = 1; }
        else if (s == R.top[i]) ++count;
        else next = std::max(next, s);
      }
      if (std::isinf(R.top[i])) continue;  // no candidate: -inf, column 0 (as the back ends)
      R.decided[i] = !close_rel(R.top[i], next);
      R.tie[i] = count > 1;
    }
    R.E.resize(Na);
    std::iota(R.E.begin(), R.E.end(), 0);
    std::stable_sort(R.E.begin(), R.E.end(), [&](int32_t x, int32_t z) { return R.top[x] > R.top[z]; });
    R.grp.resize(Na); R.gend.resize(Na); R.pinned.resize(Na);
    for (int64_t k = 0; k < Na; ++k) R.grp[k] = (k > 0 && close_rel(R.top[R.E[k - 1]], R.top[R.E[k]])) ? R.grp[k - 1] : k;
    for (int64_t k = Na - 1; k >= 0; --k) R.gend[k] = (k + 1 < Na && R.grp[k + 1] == R.grp[k]) ? R.gend[k + 1] : k;
    for (int64_t k = 0; k < Na; ++k) R.pinned[k] = R.top[R.E[R.grp[k]]] == R.top[R.E[R.gend[k]]];
  }
  for (int64_t r : rs) {
    Plan pl[2];
    for (int dev = -1; dev <= 0; ++dev) {
      Status s;
      pl[dev + 1] = run(dev, metric, dt, B, N, C, a, b, r, cls, distill, &s);
      EXPECT(s.ok(), "%s r%ld dev %d: %s", what, (long)r, dev, s.message.c_str());
    }
    check_no_leak("bf16 match");
    ++st.cases;
    bool all_pinned = true;
    for (int64_t bb = 0; bb < B; ++bb) {
      const Ref& R = ref[bb];
      const bool boundary = r == Na || R.grp[r] != R.grp[r - 1] || R.pinned[r];
      all_pinned = all_pinned && boundary;
      for (int d = 0; d < 2; ++d) {
        const Plan& P = pl[d];
        const int32_t* src = P.src.data() + bb * r;
        const int32_t* dst = P.dst.data() + bb * r;
        const int32_t* unm = P.unm.data() + bb * (Na - r);
        const char* dev = d ? "cuda" : "cpu";
        for (int64_t k = 0; k < r; ++k) {
          ++st.positions;
          ++st.rows;
          const int32_t ia = src[k] >= 0 && src[k] < N ? a_pos[src[k]] : -1;
          const int32_t jb = dst[k] >= 0 && dst[k] < N ? b_pos[dst[k]] : -1;
          EXPECT(ia >= 0 && jb >= 0, "%s r%ld %s b%ld: src[%ld] = %d, dst = %d not in the split", what, (long)r, dev,
                 (long)bb, (long)k, src[k], dst[k]);
          if (ia < 0 || jb < 0) continue;
          if (R.pinned[k]) {
            ++st.pinned;
            if (R.grp[k] != R.gend[k]) ++st.tie_ranks;
            EXPECT(ia == R.E[k], "%s r%ld %s b%ld: edge %ld is a%d, reference a%d (best %.9g vs %.9g)", what,
                   (long)r, dev, (long)bb, (long)k, ia, R.E[k], R.top[ia], R.top[R.E[k]]);
          } else {
            all_pinned = false;
          }
          // The chosen destination's reference score is the row's reference
          // maximum up to rounding, and the edge's best that of the reference rank.
          if (!std::isinf(R.top[ia])) {
            EXPECT(!(distill && jb == 0), "%s r%ld %s b%ld: a%d merged into the distill token", what, (long)r, dev,
                   (long)bb, ia);
            const double got = dot(bb, ia, jb);
            st.max_gap = std::max(st.max_gap, R.top[ia] - got);
            EXPECT(got >= R.top[ia] - 2 * tol, "%s r%ld %s b%ld: a%d → b%d scores %.9g, the row max is %.9g", what,
                   (long)r, dev, (long)bb, ia, jb, got, R.top[ia]);
          }
          EXPECT(R.top[ia] == R.top[R.E[k]] || std::fabs(R.top[ia] - R.top[R.E[k]]) <= 2 * tol,
                 "%s r%ld %s b%ld: edge %ld has best %.9g, reference rank %.9g", what, (long)r, dev, (long)bb,
                 (long)k, R.top[ia], R.top[R.E[k]]);
          EXPECT(!(cls && ia == 0), "%s r%ld %s b%ld: CLS merged", what, (long)r, dev, (long)bb);
          if (ia == R.E[k] && R.pinned[k] && R.decided[ia]) {
            ++st.rows_pinned;
            if (R.tie[ia]) ++st.tie_rows;
            EXPECT(jb == R.arg[ia], "%s r%ld %s b%ld: a%d → b%d, reference b%d (%s, %.9g vs %.9g)", what, (long)r,
                   dev, (long)bb, ia, jb, R.arg[ia], R.tie[ia] ? "exact tie: the lower column" : "decided",
                   dot(bb, ia, jb), R.top[ia]);
          } else if (!R.decided[ia]) {
            all_pinned = false;
          }
        }
        // Unmerged: edge order, or ascending with CLS (then only the set
        // matters, decided when the r-th / (r+1)-th edges are apart).
        std::vector<int32_t> want;
        for (int64_t k = r; k < Na; ++k) want.push_back(a[R.E[k]]);
        if (cls) std::sort(want.begin(), want.end());
        for (int64_t k = r; k < Na; ++k) {
          ++st.positions;
          if (!(cls ? boundary : static_cast<bool>(R.pinned[k]))) { all_pinned = false; continue; }
          ++st.pinned;
          EXPECT(unm[k - r] == want[k - r], "%s r%ld %s b%ld: unmerged[%ld] = %d, reference %d", what, (long)r, dev,
                 (long)bb, (long)(k - r), unm[k - r], want[k - r]);
        }
      }
    }
    if (all_pinned) {
      ++st.full_equal;
      EXPECT(pl[0].assign == pl[1].assign && pl[0].unm == pl[1].unm && pl[0].src == pl[1].src && pl[0].dst == pl[1].dst,
             "%s r%ld: every decision is pinned but the CPU and CUDA plans differ", what, (long)r);
    }
  }
}

void errors() {
  // An unknown precision is ERR_ARG on both devices.
  std::vector<float> metric(6 * 3, 0.5f);
  std::vector<int32_t> a = {0, 2, 4}, b = {1, 3, 5}, assign(6), unm(2), src(1), dst(1);
  for (int dev = -1; dev <= 0; ++dev) {
    BipartiteMatchParams p;
    p.metric = view(metric.data(), DType::kF32, {1, 6, 3}, dev);
    p.split_a = view(a.data(), DType::kI32, {3}, dev);
    p.split_b = view(b.data(), DType::kI32, {3}, dev);
    p.r = 1;
    p.precision = static_cast<MatchPrecision>(2);
    p.assign = view(assign.data(), DType::kI32, {1, 6}, dev);
    p.unm_idx = view(unm.data(), DType::kI32, {1, 2}, dev);
    p.src_idx = view(src.data(), DType::kI32, {1, 1}, dev);
    p.dst_idx = view(dst.data(), DType::kI32, {1, 1}, dev);
    Status s = dev < 0 ? cpu::bipartite_match(p) : cuda::bipartite_match(p);
    EXPECT(s.code == Code::kArg, "precision 2 on dev %d: got %s", dev, s.message.c_str());
    // NaN: ERR_RANGE in bf16 mode too.
    p.precision = MatchPrecision::kBF16;
    metric[4] = NAN;
    s = dev < 0 ? cpu::bipartite_match(p) : cuda::bipartite_match(p);
    EXPECT(s.code == Code::kRange, "bf16 NaN on dev %d: got %s", dev, s.message.c_str());
    metric[4] = 0.5f;
    check_no_leak("bf16 errors");
  }
}

void run_all(std::mt19937& g) {
  const DType dts[] = {DType::kF32, DType::kF16, DType::kBF16};
  for (DType dt : dts) {
    match_case(1, 2, 1, dt, false, false, false, false, false, g);   // N = 2: one a, one b
    match_case(2, 5, 3, dt, true, false, false, false, false, g);    // odd N, CLS
    match_case(3, 17, 8, dt, true, true, false, true, false, g);     // prime N, CLS + distill, duplicated rows
    match_case(2, 31, 1, dt, false, false, false, false, false, g);  // C = 1: every score is ±1 (all exact ties)
    match_case(2, 64, 33, dt, false, true, false, true, false, g);   // C not a multiple of 16, distill only
    match_case(1, 197, 64, dt, true, false, false, false, false, g);
    match_case(2, 97, 24, dt, false, false, true, true, false, g);   // 2-D split, duplicates
    match_case(1, 263, 130, dt, true, false, false, true, false, g); // Na, Nb > the 128 tile; C > 64, C % 16 != 0
  }
  match_case(1, 41, 24, DType::kBF16, true, false, false, false, true, g);  // every row equal
  // Exact ties across every boundary of the column split (lane halves,
  // warps, tiles): every score equal, or ±1 (C = 1), with Nb > 128.
  match_case(1, 300, 24, DType::kBF16, true, false, false, false, true, g);
  match_case(2, 301, 1, DType::kF32, false, true, false, false, false, g);
  match_case(1, 3, 5, DType::kF32, false, true, false, false, false, g);    // Nb = 1 with distill: no candidate
  match_case(1, 577, 72, DType::kF16, true, false, false, true, false, g);  // 3 × 3 tiles
  match_case(1, 4419, 16, DType::kBF16, true, false, false, true, false, g);  // 18 × 18 tiles: a partial raster group
  errors();
  fprintf(stderr,
          "bf16: %ld runs (%ld compared whole), edge positions %ld/%ld pinned (%ld by exact ties), "
          "destinations %ld/%ld checked (%ld exact ties), max reference gap of a chosen destination %.3g\n",
          st.cases, st.full_equal, st.pinned, st.positions, st.tie_ranks, st.rows_pinned, st.rows, st.tie_rows,
          st.max_gap);
  // Not vacuous: most decisions were checked, ties included.
  EXPECT(st.pinned >= 0.9 * st.positions, "only %ld of %ld edge positions were checked", st.pinned, st.positions);
  EXPECT(st.rows_pinned >= 0.9 * st.rows, "only %ld of %ld destinations were checked", st.rows_pinned, st.rows);
  EXPECT(st.tie_rows > 100 && st.tie_ranks > 100, "too few exact ties checked: %ld destinations, %ld positions",
         st.tie_rows, st.tie_ranks);
  EXPECT(st.full_equal > 20, "only %ld runs compared whole", st.full_equal);
}

}  // namespace bf16t

// ---- precision f32 (TF32 tensor-core candidates + exact recheck) -----------
// The CUDA f32 path nominates candidates from TF32 scores and rescoring them
// exactly in the CPU's fma order, so its plans must equal the CPU's bit for
// bit — near-ties included. The test recomputes, per a-row, the exact f32
// scores (the CPU's chain over the normalised rows), a float64 reference and
// the TF32 scores the emulated tensor cores produce (operands rounded by
// cvt.rna, exact products summed in f32 in ascending k: one fmaf chain), and
// counts the rows where the TF32 argmax alone would be wrong and the tiles
// whose window holds more than two entries: both recheck paths (the short
// list and the full tile) must have been taken, and got the exact answer.
namespace f32t {

struct Stats {
  long rows = 0, tf32_wrong = 0, full_tiles = 0, short_lists = 0, ties = 0, cases = 0;
  double max_gap64 = 0;  // max over rows of (f64 row max − f64 score of the chosen column)
};
Stats st;

float tf32(float x) {  // cvt.rna.tf32.f32
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & ~0x1fffu;
  memcpy(&x, &u, 4);
  return x;
}

// cuda/merge.cu's tf32_window (the test's own copy of the bound).
float window(int64_t C) {
  const double c = static_cast<double>(C);
  return static_cast<float>(2 * ((std::ldexp(1.0, -10) + std::ldexp(1.0, -22) + (c + 8) * std::ldexp(1.0, -21) +
                                  c * std::ldexp(1.0, -23)) * 1.002 + std::ldexp(1.0, -100)));
}

enum Kind { kRandom, kDup, kSame, kNudge, kUlp };

// Metric rows [B, N, C] f32 (split: even tokens a, odd tokens b).
//  kDup:   tokens t ≡ 2, 3 (mod 6) copy t − 2 (duplicated a-rows and b-columns: exact ties);
//  kSame:  every row equal (every score equal: full-tile rechecks, lowest column);
//  kNudge: b-token 4k + 3 is b-token 4k + 1 with every value scaled by
//          1 + m·2^-21 (|m| ≤ 4, below tf32's resolution), a-tokens 4k, 4k + 2
//          are it plus small noise: each a-row's two best columns differ in
//          the last bits, which tf32 cannot see;
//  kUlp:   as kNudge with only one value of the copy moved by one ulp.
std::vector<float> metric_rows(int64_t B, int64_t N, int64_t C, Kind kind, std::mt19937& g) {
  std::normal_distribution<float> nd(0, 1);
  std::uniform_int_distribution<int> ud(-4, 4);
  std::vector<float> f(B * N * C);
  for (auto& v : f) v = nd(g);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < N; ++t) {
      float* row = &f[(b * N + t) * C];
      if (kind == kDup && t >= 2 && (t % 6 == 2 || t % 6 == 3)) std::copy_n(row - 2 * C, C, row);
      if (kind == kSame) std::copy_n(&f[b * N * C], C, row);
      if ((kind == kNudge || kind == kUlp) && t % 4 != 1) {
        const int64_t base = t - t % 4 + 1;
        if (base >= N) continue;
        const float* src = &f[(b * N + base) * C];
        for (int64_t d = 0; d < C; ++d) {
          if (t % 4 == 3) {
            row[d] = kind == kNudge ? src[d] * (1.0f + static_cast<float>(ud(g)) * std::ldexp(1.0f, -21))
                                    : (d == static_cast<int64_t>(t / 4) % C ? std::nextafter(src[d], 10.0f) : src[d]);
          } else {
            row[d] = src[d] + 0.03f * row[d];  // an a-token near both
          }
        }
      }
    }
  return f;
}

// The normalised rows as both back ends compute them.
std::vector<float> normalised(const std::vector<float>& m, int64_t rows, int64_t C) {
  std::vector<float> y(rows * C);
  for (int64_t t = 0; t < rows; ++t) {
    double s4[4] = {0, 0, 0, 0};
    for (int64_t d = 0; d < C; ++d) s4[d & 3] += static_cast<double>(m[t * C + d]) * m[t * C + d];
    const float norm = static_cast<float>(std::sqrt((s4[0] + s4[1]) + (s4[2] + s4[3])));
    for (int64_t d = 0; d < C; ++d) y[t * C + d] = norm > 0 ? m[t * C + d] / norm : 0.0f;
  }
  return y;
}

void match_case(int64_t B, int64_t N, int64_t C, Kind kind, bool cls, bool distill, std::mt19937& g) {
  const auto m = metric_rows(B, N, C, kind, g);
  const auto y = normalised(m, B * N, C);
  std::vector<int32_t> a, b;
  for (int64_t i = 0; i < N; ++i) (i % 2 ? b : a).push_back(static_cast<int32_t>(i));
  const int64_t Na = a.size(), Nb = b.size();
  const int64_t r_max = (cls || distill) ? Na - 1 : Na;
  char what[128];
  snprintf(what, sizeof what, "f32 B%ld N%ld C%ld kind%d cls%d distill%d", (long)B, (long)N, (long)C, kind, cls, distill);
  const float win = window(C);
  // Reference per batch row: exact f32 best / first argmax (the CPU's chain),
  // its edge order, and what the TF32 pass sees.
  std::vector<float> best(B * Na);
  std::vector<int32_t> arg(B * Na);
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t i = 0; i < Na; ++i) {
      const float* u = &y[(bb * N + a[i]) * C];
      float bv = -INFINITY, tv = -INFINITY;
      int32_t bj = 0, tj = 0;
      std::vector<float> approx(Nb, -INFINITY);
      double top64 = -INFINITY;
      std::vector<double> s64(Nb, -INFINITY);
      for (int64_t j = distill ? 1 : 0; j < Nb; ++j) {
        const float* v = &y[(bb * N + b[j]) * C];
        float s = 0.0f, t = 0.0f;
        double d64 = 0;
        for (int64_t d = 0; d < C; ++d) {
          s = std::fma(u[d], v[d], s);
          t = std::fma(tf32(u[d]), tf32(v[d]), t);
          d64 += static_cast<double>(u[d]) * v[d];
        }
        approx[j] = t;
        s64[j] = d64;
        top64 = std::max(top64, d64);
        if (s > bv) { bv = s; bj = static_cast<int32_t>(j); }
        if (t > tv) { tv = t; tj = static_cast<int32_t>(j); }
      }
      if (cls && i == 0) { bv = -INFINITY; bj = 0; }
      best[bb * Na + i] = bv;
      arg[bb * Na + i] = bj;
      if (std::isinf(bv)) continue;
      ++st.rows;
      if (tj != bj) ++st.tf32_wrong;
      // The chosen (exact) column against float64: within the f32 chain's error.
      const double gap = top64 - s64[bj];
      st.max_gap64 = std::max(st.max_gap64, gap);
      EXPECT(gap <= 2.0 * C * std::ldexp(1.0, -24) * 1.01, "%s b%ld a%ld: exact argmax b%d is %.3g below the f64 max",
             what, (long)bb, (long)i, bj, gap);
      int equal = 0;
      for (int64_t j = 0; j < Nb; ++j) {
        const float* v = &y[(bb * N + b[j]) * C];
        (void)v;
        if (j != bj && s64[j] == s64[bj]) ++equal;
      }
      if (equal > 0) ++st.ties;
      for (int64_t t0 = 0; t0 < Nb; t0 += 128) {
        float tm = -INFINITY;
        for (int64_t j = t0; j < std::min(Nb, t0 + 128); ++j) tm = std::max(tm, approx[j]);
        if (!(tm >= tv - win)) continue;
        int count = 0;
        for (int64_t j = t0; j < std::min(Nb, t0 + 128); ++j) count += approx[j] >= tm - win;
        if (count > 2) ++st.full_tiles; else if (count == 2) ++st.short_lists;
      }
    }
  // Every emulated run of a large case costs seconds: two values of r there.
  std::vector<int64_t> rs = N > 500 ? std::vector<int64_t>{Na / 3, r_max}
                                    : std::vector<int64_t>{0, 1, std::max<int64_t>(0, r_max / 2), r_max};
  std::sort(rs.begin(), rs.end());
  rs.erase(std::unique(rs.begin(), rs.end()), rs.end());
  for (int64_t r : rs) {
    bf16t::Plan pl[2];
    std::vector<uint8_t> bytes(m.size() * 4);
    memcpy(bytes.data(), m.data(), bytes.size());
    for (int dev = -1; dev <= 0; ++dev) {
      Status s;
      pl[dev + 1] = bf16t::run(dev, bytes, DType::kF32, B, N, C, a, b, r, cls, distill, &s, MatchPrecision::kF32);
      EXPECT(s.ok(), "%s r%ld dev %d: %s", what, (long)r, dev, s.message.c_str());
    }
    check_no_leak("f32 match");
    ++st.cases;
    EXPECT(pl[0].assign == pl[1].assign && pl[0].unm == pl[1].unm && pl[0].src == pl[1].src && pl[0].dst == pl[1].dst,
           "%s r%ld: CPU and CUDA plans differ", what, (long)r);
    // Against the test's own exact-f32 reference: edge order (stable, ties
    // to the lower a position) and every merged row's exact first argmax.
    for (int64_t bb = 0; bb < B; ++bb) {
      std::vector<int32_t> E(Na);
      std::iota(E.begin(), E.end(), 0);
      std::stable_sort(E.begin(), E.end(), [&](int32_t x, int32_t z) { return best[bb * Na + x] > best[bb * Na + z]; });
      for (int64_t k = 0; k < r; ++k) {
        EXPECT(pl[1].src[bb * r + k] == a[E[k]] && pl[1].dst[bb * r + k] == b[arg[bb * Na + E[k]]],
               "%s r%ld b%ld: edge %ld is %d → %d, exact f32 reference %d → %d", what, (long)r, (long)bb, (long)k,
               pl[1].src[bb * r + k], pl[1].dst[bb * r + k], a[E[k]], b[arg[bb * Na + E[k]]]);
      }
    }
  }
}

// N = 1: one a-token, no destination. validate() refuses an empty split_b,
// so both back ends must refuse it alike (and write nothing).
void single_token() {
  std::vector<uint8_t> bytes(4 * 3);
  const float v[3] = {0.5f, -1.0f, 2.0f};
  memcpy(bytes.data(), v, sizeof v);
  std::vector<int32_t> a = {0}, b;
  bf16t::Plan pl[2];
  Status st2[2];
  for (int dev = -1; dev <= 0; ++dev)
    pl[dev + 1] = bf16t::run(dev, bytes, DType::kF32, 1, 1, 3, a, b, 0, false, false, &st2[dev + 1], MatchPrecision::kF32);
  EXPECT(!st2[0].ok() && st2[0].code == st2[1].code && st2[0].message == st2[1].message,
         "N = 1: cpu '%s', cuda '%s'", st2[0].message.c_str(), st2[1].message.c_str());
  EXPECT(pl[1].assign == std::vector<int32_t>{-7}, "N = 1: assign written (%d)", pl[1].assign[0]);
  check_no_leak("f32 N = 1");
}

void run_all(std::mt19937& g) {
  single_token();
  match_case(1, 2, 1, kRandom, false, false, g);     // N = 2: one a, one b
  match_case(2, 3, 3, kRandom, false, true, g);      // N = 3, distill: a-row 1 has no candidate
  match_case(3, 17, 1, kRandom, true, false, g);     // C = 1: every score ±1 (exact ties, full tiles)
  match_case(2, 17, 64, kDup, true, true, g);        // duplicated rows and columns
  match_case(2, 41, 65, kSame, true, false, g);      // all rows equal → lower index
  match_case(1, 300, 3, kSame, false, false, g);     // all equal across 2 column tiles (full-tile rechecks)
  match_case(2, 200, 64, kNudge, false, false, g);   // last-bit near-ties tf32 cannot see
  match_case(1, 262, 65, kUlp, true, false, g);      // one-ulp near-ties, Nb > 128
  match_case(1, 577, 64, kDup, true, false, g);      // ToMe's 577 tokens
  match_case(2, 160, 1024, kNudge, false, true, g);  // ToMe's widths: C = 1,024
  match_case(1, 1030, 96, kRandom, true, false, g);  // 515 × 515: 5 × 5 tiles
  match_case(2, 1031, 65, kNudge, false, true, g);   // 1,000+ tokens, batched (C = 1,024 at 1,000+ tokens is the GPU suite's: minutes here)
  fprintf(stderr,
          "f32: %ld runs, %ld rows; the TF32 argmax alone was wrong in %ld, recheck windows with two entries %ld, "
          "full tiles %ld; rows with an exact f64 tie %ld; max f64 gap of the chosen column %.3g\n",
          st.cases, st.rows, st.tf32_wrong, st.short_lists, st.full_tiles, st.ties, st.max_gap64);
  // Not vacuous: both recheck paths ran and had to overrule the TF32 argmax.
  EXPECT(st.tf32_wrong >= 50, "only %ld rows where the TF32 argmax was wrong", st.tf32_wrong);
  EXPECT(st.short_lists >= 50 && st.full_tiles >= 50, "recheck paths: %ld short lists, %ld full tiles",
         st.short_lists, st.full_tiles);
  EXPECT(st.ties >= 50, "only %ld exactly tied rows", st.ties);
}

}  // namespace f32t

static void errors() {
  std::vector<float> metric(2 * 6 * 3, 0.5f);
  metric[7] = NAN;
  std::vector<int32_t> a = {0, 2, 4}, b = {1, 3, 5}, assign(12), unm(4), src(2), dst(2);
  BipartiteMatchParams p;
  p.metric = view(metric.data(), DType::kF32, {2, 6, 3}, 0);
  p.split_a = view(a.data(), DType::kI32, {3}, 0);
  p.split_b = view(b.data(), DType::kI32, {3}, 0);
  p.r = 1;
  p.assign = view(assign.data(), DType::kI32, {2, 6}, 0);
  p.unm_idx = view(unm.data(), DType::kI32, {2, 2}, 0);
  p.src_idx = view(src.data(), DType::kI32, {2, 1}, 0);
  p.dst_idx = view(dst.data(), DType::kI32, {2, 1}, 0);
  Status s = cuda::bipartite_match(p);
  EXPECT(s.code == Code::kRange, "NaN metric: got %s", s.message.c_str());
  check_no_leak("errors nan");
  metric[7] = 1.0f;
  p.r = 4;
  s = cuda::bipartite_match(p);
  EXPECT(s.code == Code::kRange, "r > Na: got %s", s.message.c_str());
  p.r = 1;
  // Splits that are not a partition of [0, N): a repeated and an out-of-range
  // token (the CUDA back end checks, and writes nothing through them).
  std::vector<int32_t> rep = {1, 3, 3}, oor = {1, 3, 6};
  std::fill(assign.begin(), assign.end(), -7);
  p.split_b = view(rep.data(), DType::kI32, {3}, 0);
  s = cuda::bipartite_match(p);
  EXPECT(s.code == Code::kRange && s.message.find("token 3 is out of range or repeated") != std::string::npos,
         "repeated split token: got %s", s.message.c_str());
  p.split_b = view(oor.data(), DType::kI32, {3}, 0);
  s = cuda::bipartite_match(p);
  EXPECT(s.code == Code::kRange && s.message.find("token 6 is out of range or repeated") != std::string::npos,
         "out-of-range split token: got %s", s.message.c_str());
  EXPECT(std::all_of(assign.begin(), assign.end(), [](int32_t v) { return v == -7; }), "a bad split wrote assign");
  check_no_leak("errors split");
  // Without device_checks (a call that does not wait) nothing is read back:
  // the same bad split is Ok and still writes nothing; NaN is Ok too.
  p.device_checks = false;
  p.split_b = view(rep.data(), DType::kI32, {3}, 0);
  s = cuda::bipartite_match(p);
  EXPECT(s.ok(), "unchecked bad split: got %s", s.message.c_str());
  EXPECT(std::all_of(assign.begin(), assign.end(), [](int32_t v) { return v == -7; }), "an unchecked bad split wrote assign");
  p.split_b = view(b.data(), DType::kI32, {3}, 0);
  metric[7] = NAN;
  s = cuda::bipartite_match(p);
  EXPECT(s.ok(), "unchecked NaN metric: got %s", s.message.c_str());
  metric[7] = 1.0f;
  p.device_checks = true;
  check_no_leak("errors unchecked");
  {
    // merge: an assign value out of range is ERR_RANGE when checked; unchecked
    // it is Ok and out stays unwritten (the reduction reads nothing through the CSR).
    std::vector<float> x(2 * 6 * 3, 1.0f), out(2 * 4 * 3, -7.0f), so(2 * 4, -7.0f);
    std::vector<int32_t> bad_assign = {0, 1, 2, 3, 0, 1, 0, 1, 2, 9, 3, 2};
    MergeParams mp;
    mp.x = view(x.data(), DType::kF32, {2, 6, 3}, 0);
    mp.assign = view(bad_assign.data(), DType::kI32, {2, 6}, 0);
    mp.n_out = 4;
    mp.mode = MergeMode::kMean;
    mp.out = view(out.data(), DType::kF32, {2, 4, 3}, 0);
    s = cuda::merge(mp);
    EXPECT(s.code == Code::kRange && s.message == "expected assign values in [0, 4)", "merge bad assign: got %s",
           s.message.c_str());
    std::fill(out.begin(), out.end(), -7.0f);
    mp.device_checks = false;
    s = cuda::merge(mp);
    EXPECT(s.ok(), "unchecked merge bad assign: got %s", s.message.c_str());
    EXPECT(std::all_of(out.begin(), out.end(), [](float v) { return v == -7.0f; }), "an unchecked bad assign wrote out");
    check_no_leak("merge unchecked");
  }
  p.split_b = view(b.data(), DType::kI32, {3}, 0);
  p.assign = view(assign.data(), DType::kI32, {2, 5}, 0);
  s = cuda::bipartite_match(p);
  EXPECT(s.code == Code::kShape, "assign shape: got %s", s.message.c_str());
  check_no_leak("errors");
}

int main() {
  std::mt19937 g(7);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    match_case(1, 2, 1, dt, false, false, 1, false, 0, g);
    match_case(2, 5, 3, dt, true, false, 2, false, 0, g);
    match_case(3, 17, 8, dt, true, true, 7, false, 3, g);  // duplicated rows: exact ties
    match_case(2, 64, 33, dt, false, false, 20, false, 0, g);
    match_case(1, 197, 64, dt, true, false, 13, false, 0, g);
    match_case(2, 97, 8, dt, false, false, 30, true, 2, g);
  }
  match_case(1, 577, 64, DType::kF32, true, false, 144, false, 0, g);
  match_case(2, 300, 130, DType::kBF16, true, true, 149, false, 0, g);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    contextual_case(1, 10, 3, 4, 7, 3, dt, g);
    contextual_case(2, 120, 17, 33, 80, 9, dt, g);
  }
  contextual_case(1, 577, 64, 64, 415, 30, DType::kF32, g);
  contextual_unchecked_case();
  csr_order_case(1, 1, 1, g);
  csr_order_case(2, 31, 4, g);
  csr_order_case(3, 257, 2, g);     // one range per warp of 33 tokens: chunks of 32 + 1
  csr_order_case(1, 1000, 7, g);
  csr_order_case(2, 3001, 300, g);  // ranges of 376 tokens across 12 chunks
  contextual_kept_case(1, 10, 1, 3, g);
  contextual_kept_case(2, 37, 5, 4, g);
  contextual_kept_case(3, 600, 531, 17, g);
  contextual_kept_case(2, 1000, 64, 200, g);
  for (DType mdt : {DType::kU8, DType::kI8, DType::kI32, DType::kI64, DType::kF32, DType::kF16, DType::kBF16})
    contextual_mask_case(2, 37, 5, 4, mdt, g);
  contextual_mask_case(1, 10, 9, 1, DType::kU8, g);  // one token left, c = 1
  contextual_mask_case(3, 600, 531, 17, DType::kU8, g);
  contextual_mask_case(2, 1000, 64, 200, DType::kF32, g);
  errors();
  bf16t::run_all(g);
  f32t::run_all(g);
  fprintf(stderr, "%s: %d checks, %d failure(s)\n", failures ? "FAILED" : "PASSED", checks, failures);
  return failures != 0;
}
