// STC-Pruner scores (cuda/stc.cu, cuda::stc_scores) under the emulator
// against the CPU back end (cpu::stc_scores, itself checked against the
// float64 reference in test/stc.test.ts).
//
// What must match and why (the cross-device rule, README "CPU and GPU:
// tolerance and ties"; here the CPU is the same-precision baseline):
//   channels   — equal: the same f64 variances ranked with the same rule.
//   chunk_mean — within 1 float ulp: f64 sums in other orders, rounded once.
//   scores     — within 4 float ulps: f64 sums in other orders (warp trees on
//     the device), then exp; the f32 rounding of the result may move by an ulp
//     or two. The number of bit-equal scores is printed.
// Both memory modes run (authors: chunk means by position, [Cs]; aligned: by
// channel, [C]).
// Every output is filled with a NaN sentinel first, so an element the kernels
// never write is caught. Every call is followed by the scratch-leak check.
#include <cuda_runtime.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "tokensieve/stc.h"

using namespace tokensieve;
using emu_test::check_no_leak;
using emu_test::encode;
using emu_test::normal;

namespace {

constexpr uint32_t kSentinel = 0x7fa5a5a5u;  // a NaN no kernel produces
int64_t exact_scores = 0, total_scores = 0;
uint32_t worst_ulps = 0;

float sentinel() {
  float f;
  std::memcpy(&f, &kSentinel, 4);
  return f;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Distance in ulps between two finite floats (order-preserving integer keys).
uint32_t ulps(float a, float b) {
  auto key = [](float f) {
    const uint32_t u = bits(f);
    return (u & 0x80000000u) ? 0x80000000u - (u & 0x7fffffffu) : 0x80000000u + u;
  };
  const uint32_t ka = key(a), kb = key(b);
  return ka > kb ? ka - kb : kb - ka;
}

// x as logical [F, T, C] inside a buffer with element strides (s0, s1, 1).
struct Input {
  int64_t F, T, C, s0, s1;
  DType dt;
  std::vector<uint8_t> bytes;  // the whole strided buffer, in dt
};

// Lays `vals` ([F, T, C] row-major, f32) out with the given strides; the gaps
// hold huge values, which a kernel reading outside the view would pick up.
Input make_input(const std::vector<float>& vals, int64_t F, int64_t T, int64_t C, DType dt, int64_t s0, int64_t s1) {
  Input in{F, T, C, s0, s1, dt, {}};
  const int64_t span = (F - 1) * s0 + (T - 1) * s1 + C;
  std::vector<float> buf(static_cast<size_t>(span), 3.0e4f);
  for (int64_t f = 0; f < F; ++f)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) buf[f * s0 + t * s1 + c] = vals[(f * T + t) * C + c];
  in.bytes = encode(buf, dt);
  return in;
}

Input contiguous(const std::vector<float>& vals, int64_t F, int64_t T, int64_t C, DType dt) {
  return make_input(vals, F, T, C, dt, T * C, C);
}

TensorView x_view(Input& in, int dev) {
  TensorView v = emu_test::view(in.bytes.data(), in.dt, {in.F, in.T, in.C}, dev);
  v.strides[0] = in.s0;
  v.strides[1] = in.s1;
  return v;
}

struct Out {
  std::vector<float> scores, chunk_mean;
  std::vector<int32_t> channels;
  Status status;
};

StcMemory g_mode = StcMemory::kAuthors;  // the memory mode of every call

// Length of a chunk mean (and of the memory sum) in the current mode.
int64_t mean_len(int64_t C) { return g_mode == StcMemory::kAuthors ? stc_scoring_channels(C) : C; }

// One call on dev (-1: cpu::stc_scores, 0: cuda::stc_scores under the emulator).
Out run(Input& in, const std::vector<float>* msum, int64_t count, int dev, bool device_checks = true) {
  Out o;
  const int64_t Cm = mean_len(in.C), Cs = stc_scoring_channels(in.C);
  o.scores.assign(static_cast<size_t>(in.F * in.T), sentinel());
  o.chunk_mean.assign(static_cast<size_t>(Cm), sentinel());
  o.channels.assign(static_cast<size_t>(Cs), -7);
  std::vector<float> m = msum ? *msum : std::vector<float>();
  StcScoresParams p;
  p.x = x_view(in, dev);
  p.memory_mode = g_mode;
  if (msum) p.memory_sum = emu_test::view(m.data(), DType::kF32, {Cm}, dev);
  p.memory_count = count;
  p.scores = emu_test::view(o.scores.data(), DType::kF32, {in.F, in.T}, dev);
  p.chunk_mean = emu_test::view(o.chunk_mean.data(), DType::kF32, {Cm}, dev);
  p.channels = emu_test::view(o.channels.data(), DType::kI32, {Cs}, dev);
  p.device_checks = device_checks;
  o.status = dev < 0 ? cpu::stc_scores(p) : cuda::stc_scores(p);
  if (dev >= 0) check_no_leak("stc_scores");
  return o;
}

// CUDA against the CPU on one input; `what` names the case in failures.
void compare(Input& in, const std::vector<float>* msum, int64_t count, const std::string& what) {
  const Out a = run(in, msum, count, -1), b = run(in, msum, count, 0);
  EXPECT(a.status.ok(), "%s: cpu: %s", what.c_str(), a.status.message.c_str());
  EXPECT(b.status.ok(), "%s: cuda: %s", what.c_str(), b.status.message.c_str());
  if (!a.status.ok() || !b.status.ok()) return;
  EXPECT(a.channels == b.channels, "%s: scoring channels differ (first cpu %d cuda %d)", what.c_str(), a.channels[0],
         b.channels[0]);
  int bad = 0;
  for (size_t c = 0; c < a.chunk_mean.size(); ++c) {
    const bool same = std::isfinite(b.chunk_mean[c]) && ulps(a.chunk_mean[c], b.chunk_mean[c]) <= 1;
    if (!same && bad++ < 3)
      EXPECT(false, "%s: chunk_mean[%zu] cpu %.9g cuda %.9g (%s)", what.c_str(), c, a.chunk_mean[c],
             b.chunk_mean[c], bits(b.chunk_mean[c]) == kSentinel ? "never written" : "more than 1 ulp apart");
  }
  EXPECT(bad == 0, "%s: %d chunk_mean values more than 1 ulp from the CPU", what.c_str(), bad);
  bad = 0;
  for (int64_t i = 0; i < in.F * in.T; ++i) {
    const float u = a.scores[i], v = b.scores[i];
    const bool ok = std::isfinite(u) && std::isfinite(v) && ulps(u, v) <= 4;
    if (ok) {
      const uint32_t d = ulps(u, v);
      worst_ulps = d > worst_ulps ? d : worst_ulps;
      exact_scores += d == 0;
    }
    ++total_scores;
    if (!ok && bad++ < 3)
      EXPECT(false, "%s: scores[%" PRId64 ", %" PRId64 "] cpu %.9g cuda %.9g (%s)", what.c_str(), i / in.T, i % in.T, u,
             v, bits(v) == kSentinel ? "never written" : "more than 4 ulps apart");
  }
  EXPECT(bad == 0, "%s: %d scores more than 4 ulps from the CPU", what.c_str(), bad);
}

std::string name(const char* tag, int64_t F, int64_t T, int64_t C, DType dt, int64_t count) {
  char b[160];
  snprintf(b, sizeof b, "%s F%" PRId64 " T%" PRId64 " C%" PRId64 " %s count%" PRId64, tag, F, T, C, dtype_name(dt), count);
  return b;
}

// The memory sum of `count` earlier chunk means: small values, as real ones are.
std::vector<float> memory_for(int64_t C, int64_t count, std::mt19937& g) {
  std::vector<float> m(static_cast<size_t>(C), 0.0f);
  for (int64_t k = 0; k < count; ++k) {
    const auto v = normal(C, g, 0.1f);
    for (int64_t c = 0; c < C; ++c) m[c] += v[c];
  }
  return m;
}

// Random data in every dtype, with and without memory, contiguous and strided.
void random_cases(std::mt19937& g) {
  const int64_t shapes[][3] = {
      {1, 1, 1}, {1, 1, 5}, {2, 1, 3}, {1, 7, 1}, {3, 5, 2}, {2, 13, 31},
      {5, 17, 127},  // C odd prime
      {3, 131, 7},   // T over one 128-token block
      {1, 97, 257},  // C over one 256-channel rank/compact tile; Cs = 128 = one score tile
      {2, 3, 601},   // Cs = 300: three score tiles
  };
  for (const auto& s : shapes) {
    const int64_t F = s[0], T = s[1], C = s[2];
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      // Per-channel scales spread the variances apart, as in real features.
      auto vals = normal(F * T * C, g);
      for (int64_t i = 0; i < F * T * C; ++i) vals[i] = vals[i] * (0.25f + static_cast<float>((i % C) % 7)) + 0.1f * (i % C % 3);
      Input in = contiguous(vals, F, T, C, dt);
      for (int64_t count : {0, 1, 5}) {
        const auto m = memory_for(mean_len(C), count, g);
        compare(in, count ? &m : nullptr, count, name("random", F, T, C, dt, count));
      }
      // Strided: padded rows and frames, and frames interleaved ([T, F, C] storage).
      Input padded = make_input(vals, F, T, C, dt, T * (C + 3) + 5, C + 3);
      const auto m1 = memory_for(mean_len(C), 1, g);
      compare(padded, &m1, 1, name("padded", F, T, C, dt, 1));
      Input interleaved = make_input(vals, F, T, C, dt, C, F * C);
      compare(interleaved, nullptr, 0, name("interleaved", F, T, C, dt, 0));
    }
  }
  // A wide dynamic range (each element scaled by 2^-k): f64 sums of such
  // f32 values are no longer exact, so here the summation orders show.
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    const int64_t F = 3, T = 50, C = 9;
    std::uniform_int_distribution<int> e(0, dt == DType::kF16 ? 12 : 60);
    auto vals = normal(F * T * C, g);
    for (auto& v : vals) v = std::ldexp(v, -e(g));
    Input in = contiguous(vals, F, T, C, dt);
    const auto m = memory_for(mean_len(C), 5, g);
    compare(in, &m, 5, name("wide range", F, T, C, dt, 5));
  }
  // A real chunk size: 4 frames of 14×14 tokens, 96 channels.
  for (DType dt : {DType::kF32, DType::kBF16}) {
    auto vals = normal(4 * 196 * 96, g);
    Input in = contiguous(vals, 4, 196, 96, dt);
    const auto m = memory_for(mean_len(96), 5, g);
    compare(in, &m, 5, name("large", 4, 196, 96, dt, 5));
    compare(in, nullptr, 0, name("large", 4, 196, 96, dt, 0));
  }
}

// Exactly equal variances across the Cs boundary must go to the lower
// channel. Values are multiples of 1/8 and F·T = 16 is a power of two, so
// every sum is exact and channels 3, 4 and 5 — the same values in different
// token orders — have bit-equal variances. C = 7 → Cs = 3: channel 1 (the
// smallest variance), then 3 and 4 of the tied three. 5 differs from 3 and 4
// token by token, so keeping it instead would change the scores (with a
// random memory, no symmetry hides it).
void tie_cases(std::mt19937& g) {
  const int64_t F = 2, T = 8, C = 7, M = F * T;
  std::uniform_int_distribution<int> small(-2, 2), mid(-6, 6), wide(-24, 24);
  std::vector<float> col3(M);
  for (auto& v : col3) v = mid(g) / 8.0f;
  std::vector<float> vals(static_cast<size_t>(M * C));
  for (int64_t i = 0; i < M; ++i) {
    float* r = &vals[i * C];
    r[0] = wide(g) / 8.0f + 3.0f;
    r[1] = small(g) / 8.0f;
    r[2] = wide(g) / 8.0f;
    r[3] = col3[i];
    r[4] = col3[M - 1 - i];             // reversed
    r[5] = col3[(i * 5 + 3) % M];       // another permutation (5 is invertible mod 16)
    r[6] = wide(g) / 8.0f - 1.0f;
  }
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    Input in = contiguous(vals, F, T, C, dt);
    const auto m = memory_for(mean_len(C), 5, g);
    compare(in, &m, 5, name("ties", F, T, C, dt, 5));
    compare(in, nullptr, 0, name("ties", F, T, C, dt, 0));
  }
  // Every channel constant over the tokens: every variance is 0, so the
  // first Cs channels are kept.
  std::vector<float> flat(static_cast<size_t>(3 * 5 * 9));
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = 0.5f * static_cast<float>(i % 9) - 1.0f;
  Input in = contiguous(flat, 3, 5, 9, DType::kF32);
  const auto m = memory_for(mean_len(9), 1, g);
  compare(in, &m, 1, "all variances zero");
  // Duplicated channels (ch c + 5 = ch c) with random data.
  const int64_t D = 5;
  auto base = normal(2 * 11 * D, g);
  std::vector<float> dup(static_cast<size_t>(2 * 11 * 2 * D));
  for (int64_t i = 0; i < 22; ++i)
    for (int64_t c = 0; c < 2 * D; ++c) dup[i * 2 * D + c] = base[i * D + c % D] * (1.0f + static_cast<float>(c % D));
  for (DType dt : {DType::kF32, DType::kBF16}) {
    Input d = contiguous(dup, 2, 11, 2 * D, dt);
    compare(d, nullptr, 0, name("duplicated channels", 2, 11, 2 * D, dt, 0));
  }
}

// Values from 1 down to 2^-70 in one chunk: tiny variances, tiny channels
// next to unit ones, sums whose order shows in the last bits.
void order_cases() {
  const float A = std::ldexp(1.0f, -13), d = std::ldexp(1.0f, -70);
  const std::vector<float> vals = {1.0f, A, 1.0f, d, 1.0f, -A, 1.0f, d};
  for (DType dt : {DType::kF32, DType::kBF16}) {  // f16 cannot hold 2^-70
    Input in = contiguous(vals, 2, 2, 2, dt);
    compare(in, nullptr, 0, std::string("tiny values ") + dtype_name(dt));
  }
}

// All-zero tokens keep x̂ = 0 (inv = 0), and whole zero inputs work.
void zero_cases(std::mt19937& g) {
  const int64_t F = 3, T = 10, C = 6;
  auto vals = normal(F * T * C, g);
  for (int64_t c = 0; c < C; ++c) {
    vals[(0 * T + 0) * C + c] = 0.0f;
    vals[(1 * T + 4) * C + c] = 0.0f;
    vals[((F - 1) * T + T - 1) * C + c] = 0.0f;
  }
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    Input in = contiguous(vals, F, T, C, dt);
    const auto m = memory_for(mean_len(C), 1, g);
    compare(in, &m, 1, name("zero tokens", F, T, C, dt, 1));
  }
  std::vector<float> zeros(static_cast<size_t>(2 * 4 * 3), 0.0f);
  Input z = contiguous(zeros, 2, 4, 3, DType::kF32);
  compare(z, nullptr, 0, "all zero");
  // Every x̂ of an all-zero chunk is exactly 0, and so is its chunk mean.
  const Out o = run(z, nullptr, 0, 0);
  bool zero = o.status.ok();
  for (float v : o.chunk_mean) zero = zero && v == 0.0f;
  EXPECT(zero, "all-zero chunk: chunk mean not zero");
}

// NaN, +Inf, -Inf: ERR_RANGE naming the lowest (f, t), the CPU's message.
void bad_value_cases(std::mt19937& g) {
  const int64_t F = 3, T = 7, C = 5;
  const float bad[] = {NAN, INFINITY, -INFINITY};
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    for (float b : bad) {
      auto vals = normal(F * T * C, g);
      vals[(2 * T + 1) * C + 0] = b;  // a later token, first channel
      vals[(1 * T + 3) * C + 4] = b;  // the lowest offending token, last channel
      Input in = contiguous(vals, F, T, C, dt);
      const Out a = run(in, nullptr, 0, -1), d = run(in, nullptr, 0, 0);
      EXPECT(d.status.code == Code::kRange, "%s %g: got %s", dtype_name(dt), b, d.status.message.c_str());
      EXPECT(d.status.message == a.status.message, "%s %g: cuda '%s' vs cpu '%s'", dtype_name(dt), b,
             d.status.message.c_str(), a.status.message.c_str());
      EXPECT(d.status.message.find("x[1, 3]") != std::string::npos, "%s %g: message '%s'", dtype_name(dt), b,
             d.status.message.c_str());
    }
  // Unchecked (a call that does not wait): no read-back, so no error, and no
  // scratch left behind; a finite chunk gives the checked call's scores.
  {
    auto vals = normal(F * T * C, g);
    vals[(1 * T + 3) * C + 4] = NAN;
    Input in = contiguous(vals, F, T, C, DType::kF32);
    const Out u = run(in, nullptr, 0, 0, false);
    EXPECT(u.status.ok(), "unchecked NaN: got %s", u.status.message.c_str());
    vals[(1 * T + 3) * C + 4] = 0.25f;
    Input fin = contiguous(vals, F, T, C, DType::kF32);
    const Out c = run(fin, nullptr, 0, 0), v = run(fin, nullptr, 0, 0, false);
    EXPECT(c.status.ok() && v.status.ok() && c.scores == v.scores && c.chunk_mean == v.chunk_mean,
           "unchecked finite chunk: scores differ from the checked call's");
  }
  // A lone bad value in the very last element (the ranking then sees NaN
  // variances: no out-of-bounds reads, still ERR_RANGE).
  auto vals = normal(2 * 3 * 300, g);
  vals.back() = NAN;
  Input in = contiguous(vals, 2, 3, 300, DType::kF32);
  const Out d = run(in, nullptr, 0, 0);
  EXPECT(d.status.code == Code::kRange && d.status.message.find("x[1, 2]") != std::string::npos, "last element: %s",
         d.status.message.c_str());
  // NaN in every channel of every token.
  std::vector<float> all(static_cast<size_t>(2 * 2 * 4), NAN);
  Input nan_all = contiguous(all, 2, 2, 4, DType::kF16);
  const Out e = run(nan_all, nullptr, 0, 0);
  EXPECT(e.status.code == Code::kRange && e.status.message.find("x[0, 0]") != std::string::npos, "all NaN: %s",
         e.status.message.c_str());
}

// Malformed calls: the CUDA entry point's codes (validate(), then the device).
void shape_cases() {
  const int64_t F = 2, T = 3, C = 4;
  std::vector<float> x(static_cast<size_t>(F * T * C + 16), 0.5f), scores(F * T + 8), cm(C + 8), ms(C + 8);
  std::vector<int32_t> xi(F * T * C);
  auto base = [&]() {
    StcScoresParams p;
    p.x = emu_test::view(x.data(), DType::kF32, {F, T, C}, 0);
    p.scores = emu_test::view(scores.data(), DType::kF32, {F, T}, 0);
    p.chunk_mean = emu_test::view(cm.data(), DType::kF32, {C / 2}, 0);
    return p;
  };
  auto expect = [&](StcScoresParams p, Code want, const char* what) {
    const Status s = cuda::stc_scores(p);
    EXPECT(s.code == want, "%s: want %s, got %s (%s)", what, code_name(want), code_name(s.code), s.message.c_str());
    check_no_leak(what);
  };
  StcScoresParams p = base();
  expect(p, Code::kOk, "well-formed");
  p = base(); p.x = emu_test::view(x.data(), DType::kF32, {F * T, C}, 0);
  expect(p, Code::kShape, "x of rank 2");
  p = base(); p.x = emu_test::view(x.data(), DType::kF32, {F, 0, C}, 0);
  expect(p, Code::kShape, "T = 0");
  p = base(); p.x.data = nullptr;
  expect(p, Code::kArg, "x null");
  p = base(); p.x = emu_test::view(xi.data(), DType::kI32, {F, T, C}, 0);
  expect(p, Code::kDType, "x i32");
  p = base(); p.x.strides[2] = 2;
  expect(p, Code::kUnsupported, "x stride(C) = 2");
  p = base(); p.scores = emu_test::view(scores.data(), DType::kF32, {F, T + 1}, 0);
  expect(p, Code::kShape, "scores [F, T + 1]");
  p = base(); p.scores = emu_test::view(scores.data(), DType::kF32, {F * T}, 0);
  expect(p, Code::kShape, "scores of rank 1");
  p = base(); p.scores = emu_test::view(scores.data(), DType::kF16, {F, T}, 0);
  expect(p, Code::kDType, "scores f16");
  p = base(); p.scores.strides[0] = T + 1;
  expect(p, Code::kUnsupported, "scores strided");
  p = base(); p.scores.data = nullptr;
  expect(p, Code::kArg, "scores null");
  p = base(); p.chunk_mean = emu_test::view(cm.data(), DType::kF32, {C + 1}, 0);
  expect(p, Code::kShape, "chunk_mean [C + 1]");
  p = base(); p.memory_sum = emu_test::view(ms.data(), DType::kF32, {C - 1}, 0); p.memory_count = 1;
  expect(p, Code::kShape, "memory_sum [C - 1]");
  p = base(); p.memory_sum = emu_test::view(ms.data(), DType::kF16, {C}, 0); p.memory_count = 1;
  expect(p, Code::kDType, "memory_sum f16");
  p = base(); p.memory_count = 2;
  expect(p, Code::kRange, "memory_count without memory_sum");
  p = base(); p.memory_sum = emu_test::view(ms.data(), DType::kF32, {C / 2}, 0); p.memory_count = -1;
  expect(p, Code::kRange, "memory_count -1");
  p = base(); p.memory_sum = emu_test::view(ms.data(), DType::kF32, {C / 2}, -1); p.memory_count = 1;
  expect(p, Code::kDevice, "memory_sum on the host");
  p = base(); p.scores.device = -1;
  expect(p, Code::kDevice, "scores on the host");
  p = base(); p.x.device = -1; p.scores.device = -1; p.chunk_mean.device = -1;
  expect(p, Code::kDevice, "everything on the host");
  p = base(); p.x.device = 3; p.scores.device = 3; p.chunk_mean.device = 3;
  expect(p, Code::kDevice, "no such device");
}

}  // namespace

int main() {
  std::mt19937 g(12);
  for (StcMemory mode : {StcMemory::kAuthors, StcMemory::kAligned}) {
    g_mode = mode;
    random_cases(g);
    tie_cases(g);
    order_cases();
    zero_cases(g);
  }
  g_mode = StcMemory::kAuthors;
  bad_value_cases(g);
  shape_cases();
  fprintf(stderr, "stc scores: %" PRId64 " of %" PRId64 " bit-equal to the CPU, worst %u ulp(s)\n", exact_scores,
          total_scores, worst_ulps);
  return emu_test::finish();
}
