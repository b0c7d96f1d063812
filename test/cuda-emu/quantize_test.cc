// cuda/quantize.cu and the INT8 path of cuda/attention.cu under the emulator
// against the CPU back end (see run.sh). The CPU back end is checked
// byte-exact against float64-derived reference arithmetic in
// test/quantize.test.ts; here the CUDA codes, scales and means must equal the
// CPU's byte for byte, dequantized values bit for bit, and INT8 attention
// scores must agree within f32 rounding. Output buffers of the CUDA side are
// poisoned first, so an element it does not write fails the comparison.
#include <cuda_runtime.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "core/dtype.h"
#include "tokensieve/attention.h"
#include "tokensieve/quantize.h"

using namespace tokensieve;
using emu_test::view;
static int& failures = emu_test::failures;
static int& checks = emu_test::checks;

static int64_t numel(const std::vector<int64_t>& s) {
  return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>());
}

// Values in x's dtype: normal with a per-channel offset (what K smoothing
// removes), a row of exact zeros, exact halves of the code grid (ties of the
// rounding) and one large outlier.
static std::vector<uint8_t> make_input(const std::vector<int64_t>& shape, DType dt, std::mt19937& g) {
  const int64_t n = numel(shape), C = shape.back();
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> f(n);
  for (int64_t i = 0; i < n; ++i) f[i] = nd(g) + 0.5f * static_cast<float>(i % C % 5);
  const int64_t R = n / C;
  if (R > 2)
    for (int64_t c = 0; c < C; ++c) f[C + c] = 0.0f;  // row 1: zeros
  if (R > 3) {
    f[2 * C] = 127.0f;  // row 2: amax 127, so scale 1 and k + 0.5 ties
    for (int64_t c = 1; c < C; ++c) f[2 * C + c] = (static_cast<float>(c % 40) - 20.0f) + 0.5f;
  }
  if (n > 7) f[n / 2] = 40.0f;
  std::vector<uint8_t> b(n * dtype_size(dt));
  for (int64_t i = 0; i < n; ++i) {
    if (dt == DType::kF32) {
      std::memcpy(&b[i * 4], &f[i], 4);
    } else {
      const uint16_t h = dt == DType::kF16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
      std::memcpy(&b[i * 2], &h, 2);
    }
  }
  return b;
}

static std::vector<int64_t> scale_shape(const std::vector<int64_t>& x, const QuantScheme& s) {
  const int64_t C = x.back();
  switch (s.granularity) {
    case Granularity::kTensor: return {1};
    case Granularity::kToken: { auto r = x; r.back() = 1; return r; }
    case Granularity::kChannel: return {C};
    case Granularity::kGroup: { auto r = x; r.back() = (C + s.block - 1) / s.block; return r; }
    case Granularity::kRows: return {x[0], x[1], (x[2] + s.block - 1) / s.block, 1};
  }
  return {1};
}

static const char* gran_name(Granularity g) {
  static const char* names[] = {"tensor", "token", "channel", "group", "rows"};
  return names[static_cast<int>(g)];
}

static bool same_bytes(const void* a, const void* b, size_t n, const char* what, const std::string& label) {
  ++checks;
  if (std::memcmp(a, b, n) == 0) return true;
  const uint8_t* x = static_cast<const uint8_t*>(a);
  const uint8_t* y = static_cast<const uint8_t*>(b);
  size_t i = 0;
  while (x[i] == y[i]) ++i;
  ++failures;
  fprintf(stderr, "FAIL %s %s: first difference at byte %zu: cuda %02x cpu %02x\n", label.c_str(), what, i, x[i], y[i]);
  return false;
}

static void quant_case(std::vector<int64_t> shape, DType dt, int bits, Granularity gran, int64_t block, bool pad,
                       bool smooth, std::mt19937& g) {
  QuantScheme s;
  s.bits = bits;
  s.granularity = gran;
  s.block = block;
  s.pad = pad;
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? "," : "") + std::to_string(shape[i]);
  char label[200];
  snprintf(label, sizeof label, "quantize [%s] dt%d bits%d %s/%" PRId64 "%s", dims.c_str(), static_cast<int>(dt), bits,
           gran_name(gran), block, smooth ? " smooth" : "");
  const auto x = make_input(shape, dt, g);
  auto dshape = shape;
  if (bits == 4) dshape.back() = (dshape.back() + 1) / 2;
  const auto sshape = scale_shape(shape, s);
  const std::vector<int64_t> mshape = smooth ? std::vector<int64_t>{shape[0], shape[1], 1, shape[3]} : std::vector<int64_t>{1};
  std::vector<uint8_t> data[2];
  std::vector<float> scales[2], mean[2];
  for (int dev : {-1, 0}) {
    const int i = dev + 1;
    data[i].assign(numel(dshape), dev < 0 ? 0x00 : 0xA5);
    scales[i].assign(numel(sshape), dev < 0 ? 0.0f : NAN);
    mean[i].assign(numel(mshape), dev < 0 ? 0.0f : NAN);
    QuantizeParams p;
    p.x = view(const_cast<uint8_t*>(x.data()), dt, shape, dev);
    p.scheme = s;
    p.smooth = smooth;
    p.data = view(data[i].data(), bits == 8 ? DType::kI8 : DType::kU8, dshape, dev);
    p.scales = view(scales[i].data(), DType::kF32, sshape, dev);
    if (smooth) p.mean = view(mean[i].data(), DType::kF32, mshape, dev);
    const Status st = dev < 0 ? cpu::quantize(p) : cuda::quantize(p);
    if (!st.ok()) {
      ++failures;
      fprintf(stderr, "FAIL %s dev %d: %s\n", label, dev, st.message.c_str());
      return;
    }
  }
  bool ok = same_bytes(data[1].data(), data[0].data(), data[0].size(), "data", label);
  ok &= same_bytes(scales[1].data(), scales[0].data(), scales[0].size() * 4, "scales", label);
  if (smooth) ok &= same_bytes(mean[1].data(), mean[0].data(), mean[0].size() * 4, "mean", label);
  if (!ok) return;

  // Dequantize the same codes on both sides into every dtype.
  for (DType odt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (bool add_mean : smooth ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
      std::vector<uint8_t> out[2];
      for (int dev : {-1, 0}) {
        const int i = dev + 1;
        out[i].assign(numel(shape) * dtype_size(odt), dev < 0 ? 0x00 : 0xA5);
        DequantizeParams p;
        p.data = view(data[0].data(), bits == 8 ? DType::kI8 : DType::kU8, dshape, dev);
        p.scales = view(scales[0].data(), DType::kF32, sshape, dev);
        if (add_mean) p.mean = view(mean[0].data(), DType::kF32, mshape, dev);
        p.add_mean = add_mean;
        p.scheme = s;
        p.out = view(out[i].data(), odt, shape, dev);
        const Status st = dev < 0 ? cpu::dequantize(p) : cuda::dequantize(p);
        if (!st.ok()) {
          ++failures;
          fprintf(stderr, "FAIL %s dequantize dev %d: %s\n", label, dev, st.message.c_str());
          return;
        }
      }
      const std::string dl = std::string(label) + " dequantize dt" + std::to_string(static_cast<int>(odt)) +
                             (add_mean ? " +mean" : "");
      if (!same_bytes(out[1].data(), out[0].data(), out[0].size(), "out", dl)) return;
    }
  }
  fprintf(stderr, "ok %s\n", label);
}

// NaN/Inf in x: ERR_RANGE on both back ends, for every granularity.
static void nonfinite_case(Granularity gran, float bad, std::mt19937& g) {
  std::vector<int64_t> shape = {1, 2, 70, 16};
  auto x = make_input(shape, DType::kF32, g);
  std::memcpy(&x[(2 * 70 - 3) * 16 * 4 + 8], &bad, 4);
  QuantScheme s;
  s.granularity = gran;
  s.block = gran == Granularity::kRows ? 32 : 8;
  s.pad = true;
  const auto sshape = scale_shape(shape, s);
  std::vector<int8_t> data(numel(shape));
  std::vector<float> scales(numel(sshape)), mean(2 * 16);
  for (bool smooth : {false, true}) {
    for (int dev : {-1, 0}) {
      QuantizeParams p;
      p.x = view(x.data(), DType::kF32, shape, dev);
      p.scheme = s;
      p.smooth = smooth;
      p.data = view(data.data(), DType::kI8, shape, dev);
      p.scales = view(scales.data(), DType::kF32, sshape, dev);
      if (smooth) p.mean = view(mean.data(), DType::kF32, {1, 2, 1, 16}, dev);
      const Status st = dev < 0 ? cpu::quantize(p) : cuda::quantize(p);
      ++checks;
      if (st.code != Code::kRange) {
        ++failures;
        fprintf(stderr, "FAIL nonfinite %s %g smooth %d dev %d: got code %d (%s)\n", gran_name(gran), bad, smooth, dev,
                static_cast<int>(st.code), st.message.c_str());
      }
    }
  }
}

// INT8 attention scores, CUDA against CPU.
static void int8_scores(int64_t B, int64_t H, int64_t Nq, int64_t Nk, int64_t D, DType dt, std::vector<int32_t> rows,
                        bool causal, bool smooth, int64_t qb, int64_t kb, HeadReduce hr, std::mt19937& g) {
  const auto q = make_input({B, H, Nq, D}, dt, g), k = make_input({B, H, Nk, D}, dt, g);
  if (rows.empty()) {
    rows.resize(Nq);
    std::iota(rows.begin(), rows.end(), 0);
  }
  const std::vector<int64_t> osh = hr == HeadReduce::kNone ? std::vector<int64_t>{B, H, Nk} : std::vector<int64_t>{B, Nk};
  std::vector<float> out[2];
  for (int dev : {-1, 0}) {
    const int i = dev + 1;
    out[i].assign(numel(osh), dev < 0 ? 0.0f : NAN);
    AttentionScoresParams p;
    p.q = view(const_cast<uint8_t*>(q.data()), dt, {B, H, Nq, D}, dev);
    p.k = view(const_cast<uint8_t*>(k.data()), dt, {B, H, Nk, D}, dev);
    p.scale = 1.0f / std::sqrt(static_cast<float>(D));
    p.causal = causal;
    p.causal_offset = Nk - Nq;
    p.reduce.query_rows = rows.data();
    p.reduce.num_query_rows = static_cast<int64_t>(rows.size());
    p.reduce.head_reduce = hr;
    p.reduce.key_begin = 0;
    p.reduce.key_end = Nk;
    p.precision = ScorePrecision::kInt8;
    p.q_block = qb;
    p.k_block = kb;
    p.smooth_k = smooth;
    p.out = view(out[i].data(), DType::kF32, osh, dev);
    const Status st = dev < 0 ? cpu::attention_scores(p) : cuda::attention_scores(p);
    if (!st.ok()) {
      ++failures;
      fprintf(stderr, "FAIL int8 scores dev %d: %s\n", dev, st.message.c_str());
      return;
    }
  }
  ++checks;
  double worst = 0;
  for (size_t i = 0; i < out[0].size(); ++i) {
    const double c = out[0][i], u = out[1][i], err = std::fabs(u - c);
    worst = std::max(worst, err / (std::fabs(c) + 1e-12));
    if (!(err <= 1e-7 + 3e-4 * std::fabs(c))) {
      ++failures;
      fprintf(stderr, "FAIL int8 scores B%" PRId64 " Nq%" PRId64 " Nk%" PRId64 " D%" PRId64 " [%zu]: cuda %g cpu %g\n", B,
              Nq, Nk, D, i, u, c);
      return;
    }
  }
  fprintf(stderr, "ok int8 scores B%" PRId64 " H%" PRId64 " Nq%" PRId64 " Nk%" PRId64 " D%" PRId64 " dt%d rows %zu, worst rel %.2g\n",
          B, H, Nq, Nk, D, static_cast<int>(dt), rows.size(), worst);
}

int main() {
  std::mt19937 g(2026);
  const auto T = Granularity::kTensor, K = Granularity::kToken, C = Granularity::kChannel, G = Granularity::kGroup,
             R = Granularity::kRows;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int bits : {8, 4}) {
      quant_case({1}, dt, bits, K, 0, false, false, g);
      quant_case({3, 5, 37}, dt, bits, K, 0, false, false, g);
      quant_case({9, 1031}, dt, bits, K, 0, false, false, g);
      quant_case({7, 96}, dt, bits, G, 32, false, false, g);
      quant_case({5, 100}, dt, bits, G, 64, true, false, g);
      quant_case({4, 300}, dt, bits, G, 128, true, false, g);
      quant_case({6, 23}, dt, bits, G, 7, true, false, g);  // odd groups: an INT4 byte spans two groups
      quant_case({33, 70}, dt, bits, C, 0, false, false, g);
      quant_case({130, 9}, dt, bits, C, 0, false, false, g);  // several channel-maxima blocks
      quant_case({1000, 3}, dt, bits, T, 0, false, false, g);
      quant_case({2, 3, 77, 64}, dt, bits, R, 32, true, false, g);
      quant_case({1, 2, 128, 80}, dt, bits, R, 64, false, false, g);
      quant_case({2, 1, 5, 7}, dt, bits, R, 2, true, false, g);
      quant_case({2, 3, 130, 64}, dt, bits, R, 64, true, true, g);  // 3 mean chunks
      quant_case({1, 2, 65, 33}, dt, bits, K, 0, false, true, g);
      quant_case({1, 2, 40, 24}, dt, bits, C, 0, false, true, g);
      quant_case({2, 2, 9, 16}, dt, bits, T, 0, false, true, g);
      quant_case({1, 1, 70, 40}, dt, bits, G, 16, true, true, g);
    }
  }
  for (Granularity gran : {T, K, C, G, R})
    for (float bad : {NAN, INFINITY, -INFINITY}) nonfinite_case(gran, bad, g);

  const auto HM = HeadReduce::kMean, HN = HeadReduce::kNone;
  int8_scores(2, 3, 77, 77, 64, DType::kF32, {0}, false, true, 32, 64, HM, g);
  int8_scores(1, 2, 130, 130, 80, DType::kF16, {}, false, true, 32, 64, HM, g);
  int8_scores(2, 2, 9, 200, 15, DType::kBF16, {}, true, false, 4, 16, HN, g);
  int8_scores(1, 2, 150, 150, 72, DType::kF32, {149, 3, 3}, true, true, 128, 64, HM, g);
  int8_scores(1, 1, 70, 70, 256, DType::kF16, {69}, false, true, 32, 64, HM, g);
  fprintf(stderr, "%s: %d failure(s) in %d checks\n", failures ? "FAILED" : "PASSED", failures, checks);
  return failures != 0;
}
