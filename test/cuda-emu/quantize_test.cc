// cuda/quantize.cu and the INT8 path of cuda/attention.cu under the emulator
// against the CPU back end (see run.sh). The CPU back end is checked
// byte-exact against float64-derived reference arithmetic in
// test/quantize.test.ts; here the CUDA codes, scales and means must equal the
// CPU's byte for byte, dequantized values bit for bit, and INT8 attention
// scores must agree within f32 rounding. Output buffers of the CUDA side are
// poisoned first, so an element it does not write fails the comparison.
// width_sweep() drives both kernel variants of every granularity (16-byte
// vectors; the scalar fallback for misaligned pointers, odd widths and
// strides) and checks through cuda::quantize_path_count which one ran.
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
#include "cuda/quantize.cuh"
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

// ---- vector and scalar paths ----------------------------------------------------------

// A buffer whose data starts `offset` bytes past a 64-byte boundary, filled
// with `fill`: misaligned views without copying anything.
struct OffsetBuf {
  std::vector<uint8_t> raw;
  uint8_t* p = nullptr;
  OffsetBuf(size_t bytes, size_t offset, uint8_t fill) : raw(bytes + offset + 64, fill) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(raw.data());
    p = raw.data() + ((64 - a % 64) % 64) + offset;
  }
};

static uint64_t path_count(cuda::QuantPath q) { return cuda::quantize_path_count(q); }

// Each path's count, before a call: after it, exactly `want` must have grown.
struct PathProbe {
  uint64_t before[static_cast<int>(cuda::QuantPath::kCount)];
  PathProbe() {
    for (int i = 0; i < static_cast<int>(cuda::QuantPath::kCount); ++i) before[i] = path_count(static_cast<cuda::QuantPath>(i));
  }
  bool took(cuda::QuantPath want) const {
    bool ok = true;
    for (int i = 0; i < static_cast<int>(cuda::QuantPath::kCount); ++i) {
      const uint64_t d = path_count(static_cast<cuda::QuantPath>(i)) - before[i];
      ok &= (i == static_cast<int>(want)) ? d >= 1 : d == 0;
    }
    return ok;
  }
};

static const char* path_name(cuda::QuantPath q) {
  static const char* n[] = {"token/vector", "token/scalar", "group/vector", "group/scalar", "rows/vector",
                            "rows/scalar",  "shared/vector", "shared/scalar", "dequant/vector", "dequant/scalar"};
  return n[static_cast<int>(q)];
}

// x of `shape` in dt, quantized on the CPU (contiguous, aligned) and on the
// emulated GPU with x starting x_off elements and the codes data_off bytes
// past an aligned address; the CUDA outputs are poisoned. Codes and scales
// byte-equal, then dequantize both codes (out_off elements past alignment on
// the GPU side) into odt, byte-equal. Each CUDA call must take the kernel
// variant cuda/quantize.cu's conditions choose (`want`, PathProbe).
static void path_case(std::vector<int64_t> shape, DType dt, int bits, Granularity gran, int64_t block, bool pad,
                      int64_t x_off, int64_t data_off, int64_t out_off, DType odt, std::mt19937& g) {
  QuantScheme s;
  s.bits = bits;
  s.granularity = gran;
  s.block = block;
  s.pad = pad;
  const int64_t C = shape.back(), E = 16 / static_cast<int64_t>(dtype_size(dt));
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? "," : "") + std::to_string(shape[i]);
  char label[200];
  snprintf(label, sizeof label, "paths [%s] dt%d bits%d %s/%" PRId64 " offsets x%" PRId64 " data%" PRId64 " out%" PRId64,
           dims.c_str(), static_cast<int>(dt), bits, gran_name(gran), block, x_off, data_off, out_off);
  const size_t es = dtype_size(dt);
  const auto xs = make_input(shape, dt, g);
  auto dshape = shape;
  if (bits == 4) dshape.back() = (dshape.back() + 1) / 2;
  const auto sshape = scale_shape(shape, s);
  const int64_t nd = numel(dshape), ns = numel(sshape), nx = numel(shape);

  // Which kernel should run (cuda/quantize.cu's conditions).
  const bool aligned_io = x_off * static_cast<int64_t>(es) % 16 == 0 && C % E == 0 &&
                          data_off % (bits == 8 ? E : E / 2) == 0;
  const int64_t P = block / E;
  cuda::QuantPath want;
  switch (gran) {
    case Granularity::kToken: want = aligned_io ? cuda::QuantPath::kTokenVector : cuda::QuantPath::kTokenScalar; break;
    case Granularity::kGroup:
      want = aligned_io && block % E == 0 && P >= 1 && P <= 32 && (P & (P - 1)) == 0 ? cuda::QuantPath::kGroupVector
                                                                                     : cuda::QuantPath::kGroupScalar;
      break;
    case Granularity::kRows: want = aligned_io ? cuda::QuantPath::kRowsVector : cuda::QuantPath::kRowsScalar; break;
    default: want = aligned_io ? cuda::QuantPath::kSharedVector : cuda::QuantPath::kSharedScalar; break;
  }

  std::vector<uint8_t> cpu_data(nd);
  std::vector<float> cpu_scales(ns);
  {
    QuantizeParams p;
    p.x = view(const_cast<uint8_t*>(xs.data()), dt, shape, -1);
    p.scheme = s;
    p.data = view(cpu_data.data(), bits == 8 ? DType::kI8 : DType::kU8, dshape, -1);
    p.scales = view(cpu_scales.data(), DType::kF32, sshape, -1);
    const Status st = cpu::quantize(p);
    if (!st.ok()) {
      ++failures;
      fprintf(stderr, "FAIL %s cpu: %s\n", label, st.message.c_str());
      return;
    }
  }
  OffsetBuf xb(xs.size(), x_off * es, 0), db(nd, data_off, 0xA5), sb(ns * 4, 0, 0xFF);  // scales poisoned to NaN
  std::memcpy(xb.p, xs.data(), xs.size());
  {
    QuantizeParams p;
    p.x = view(xb.p, dt, shape, 0);
    p.scheme = s;
    p.data = view(db.p, bits == 8 ? DType::kI8 : DType::kU8, dshape, 0);
    p.scales = view(sb.p, DType::kF32, sshape, 0);
    p.check_finite = (nx % 2) == 0;  // both with and without the flag
    const PathProbe probe;
    const Status st = cuda::quantize(p);
    if (!st.ok()) {
      ++failures;
      fprintf(stderr, "FAIL %s cuda: %s\n", label, st.message.c_str());
      return;
    }
    EXPECT(probe.took(want), "%s: expected the %s kernel", label, path_name(want));
  }
  emu_test::check_no_leak(label);
  if (!same_bytes(db.p, cpu_data.data(), nd, "data", label)) return;
  if (!same_bytes(sb.p, cpu_scales.data(), ns * 4, "scales", label)) return;

  {
    const size_t os = dtype_size(odt);
    const int64_t OE = 16 / static_cast<int64_t>(os);
    std::vector<uint8_t> cpu_out(nx * os);
    OffsetBuf ob(nx * os, out_off * os, 0xA5);
    for (int dev : {-1, 0}) {
      DequantizeParams p;
      p.data = view(dev < 0 ? cpu_data.data() : db.p, bits == 8 ? DType::kI8 : DType::kU8, dshape, dev);
      p.scales = view(dev < 0 ? static_cast<void*>(cpu_scales.data()) : static_cast<void*>(sb.p), DType::kF32, sshape, dev);
      p.scheme = s;
      p.out = view(dev < 0 ? cpu_out.data() : ob.p, odt, shape, dev);
      const PathProbe probe;
      const Status st = dev < 0 ? cpu::dequantize(p) : cuda::dequantize(p);
      if (!st.ok()) {
        ++failures;
        fprintf(stderr, "FAIL %s dequantize dev %d: %s\n", label, dev, st.message.c_str());
        return;
      }
      if (dev == 0) {
        const bool dvec = out_off * static_cast<int64_t>(os) % 16 == 0 && C % OE == 0 &&
                          data_off % (bits == 8 ? OE : OE / 2) == 0;
        const auto dw = dvec ? cuda::QuantPath::kDequantVector : cuda::QuantPath::kDequantScalar;
        EXPECT(probe.took(dw), "%s dequantize dt%d: expected the %s kernel", label, static_cast<int>(odt), path_name(dw));
      }
    }
    const std::string dl = std::string(label) + " dequantize dt" + std::to_string(static_cast<int>(odt));
    if (!same_bytes(ob.p, cpu_out.data(), cpu_out.size(), "out", dl)) return;
  }
  fprintf(stderr, "ok %s\n", label);
}

// launch_rows_quantize (the INT8 attention path's entry) on strided views
// [B, H, N, D] (token stride sn = D + pad_n): against cpu::quantize of the
// same values made contiguous. pad_n a multiple of 16 / sizeof(T) keeps the
// vector kernel.
static void strided_rows_case(int64_t B, int64_t H, int64_t N, int64_t D, int64_t pad_n, DType dt, int bits,
                              int64_t block, std::mt19937& g) {
  const size_t es = dtype_size(dt);
  const int64_t E = 16 / static_cast<int64_t>(es), sn = D + pad_n, sh = N * sn, sb = H * sh;
  char label[160];
  snprintf(label, sizeof label, "strided rows [%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 "] sn %" PRId64 " dt%d bits%d block %" PRId64,
           B, H, N, D, sn, static_cast<int>(dt), bits, block);
  const auto xs = make_input({B, H, N, D}, dt, g);  // contiguous values
  std::vector<uint8_t> strided(B * sb * es, 0xCD);  // padding: garbage that must not be read into results
  for (int64_t r = 0; r < B * H * N; ++r) std::memcpy(&strided[(r * sn) * es], &xs[r * D * es], D * es);
  const int64_t nblocks = (N + block - 1) / block, bpr = bits == 8 ? D : (D + 1) / 2;
  QuantScheme s;
  s.bits = bits;
  s.granularity = Granularity::kRows;
  s.block = block;
  s.pad = true;
  std::vector<uint8_t> cpu_data(B * H * N * bpr);
  std::vector<float> cpu_scales(B * H * nblocks);
  QuantizeParams p;
  p.x = view(const_cast<uint8_t*>(xs.data()), dt, {B, H, N, D}, -1);
  p.scheme = s;
  p.data = view(cpu_data.data(), bits == 8 ? DType::kI8 : DType::kU8, {B, H, N, bpr}, -1);
  p.scales = view(cpu_scales.data(), DType::kF32, {B, H, nblocks, 1}, -1);
  if (!cpu::quantize(p).ok()) {
    ++failures;
    fprintf(stderr, "FAIL %s: cpu\n", label);
    return;
  }
  cuda::TokenView tv{strided.data(), dt, B, H, N, D, sb, sh, sn};
  std::vector<uint8_t> codes(cpu_data.size(), 0xA5);
  std::vector<float> scales(cpu_scales.size(), NAN);
  int flag = 0;
  const PathProbe probe;
  const Status st = cuda::launch_rows_quantize(tv, nullptr, bits, block, cuda::BlockFilter{}, codes.data(),
                                               scales.data(), &flag, 1, nullptr);
  EXPECT(st.ok(), "%s: %s", label, st.message.c_str());
  const auto want = pad_n % E == 0 && D % E == 0 ? cuda::QuantPath::kRowsVector : cuda::QuantPath::kRowsScalar;
  EXPECT(probe.took(want), "%s: expected the %s kernel", label, path_name(want));
  EXPECT(flag == 0, "%s: NaN flag set on finite input", label);
  same_bytes(codes.data(), cpu_data.data(), codes.size(), "codes", label);
  same_bytes(scales.data(), cpu_scales.data(), scales.size() * 4, "scales", label);
  fprintf(stderr, "ok %s\n", label);
}

static void width_sweep(std::mt19937& g) {
  const auto T = Granularity::kTensor, K = Granularity::kToken, C = Granularity::kChannel, G = Granularity::kGroup,
             R = Granularity::kRows;
  const uint64_t before[] = {
      path_count(cuda::QuantPath::kTokenVector),  path_count(cuda::QuantPath::kTokenScalar),
      path_count(cuda::QuantPath::kGroupVector),  path_count(cuda::QuantPath::kGroupScalar),
      path_count(cuda::QuantPath::kRowsVector),   path_count(cuda::QuantPath::kRowsScalar),
      path_count(cuda::QuantPath::kSharedVector), path_count(cuda::QuantPath::kSharedScalar),
      path_count(cuda::QuantPath::kDequantVector), path_count(cuda::QuantPath::kDequantScalar)};
  const int before_checks = checks;
  // Every width, row count, granularity and INT8/INT4 for f32 (4 values a
  // vector) and bf16 (8, as f16: the same kernels); f16 through the rest.
  // The emulator starts 256 threads per launch, so the sweep is sized to run
  // in minutes on a loaded machine.
  int n = 0;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int bits : {8, 4}) {
      for (int64_t W : {1, 3, 7, 8, 9, 4095, 4096, 4097}) {
        for (int64_t rows : {1, 13}) {
          const DType odt = n++ % 2 ? DType::kF16 : DType::kF32;
          path_case({rows, W}, dt, bits, K, 0, false, 0, 0, 0, odt, g);
          // f32: 2 vectors a group; bf16: 1. Odd long rows (scalar) take 48:
          // the emulator's watchdog sees no progress in a long run of shuffles.
          path_case({rows, W}, dt, bits, G, W < 16 || W % 16 == 0 ? 8 : 48, true, 0, 0, 0, odt, g);
          path_case({rows, W}, dt, bits, G, 256, true, 0, 0, 0, odt, g);  // f32: 64 vectors (scalar), bf16: 32
          // Not whole vectors (f32) / not a power of two of them: scalar. The
          // scalar kernel reduces group after group; 48 keeps the emulator's
          // shuffle count (and its deadlock watchdog) in bounds at 4,097.
          path_case({rows, W}, dt, bits, G, W < 16 ? 5 : 48, true, 0, 0, 0, odt, g);
          path_case({rows, W}, dt, bits, C, 0, false, 0, 0, 0, odt, g);
          path_case({rows, W}, dt, bits, T, 0, false, 0, 0, 0, odt, g);
          path_case({1, 2, rows, W}, dt, bits, R, 4, true, 0, 0, 0, odt, g);
        }
        // Misaligned x, codes and outputs: the scalar kernels, same bytes.
        path_case({5, W}, dt, bits, K, 0, false, 1, 0, 1, DType::kBF16, g);
        path_case({5, W}, dt, bits, G, 8, true, 0, 1, 0, DType::kF32, g);
        path_case({5, W}, dt, bits, C, 0, false, 3, 0, 0, DType::kF16, g);
        path_case({1, 1, 5, W}, dt, bits, R, 2, true, 1, 1, 3, DType::kF32, g);
      }
    }
  }
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int bits : {8, 4}) {
      // f16 at a few widths (the sweep covers its kernels through bf16).
      for (int64_t W : {8, 9, 4096})
        for (Granularity gran : {K, G, C, T}) path_case({13, W}, dt, bits, gran, 16, true, 0, 0, 0, DType::kBF16, g);
      path_case({2, 512}, dt, bits, G, 32, true, 0, 0, 0, DType::kF32, g);
      path_case({2, 300}, dt, bits, G, 16, true, 0, 0, 0, DType::kF16, g);  // a short last group
      path_case({2, 2048}, dt, bits, G, 128, false, 0, 0, 0, DType::kBF16, g);
      path_case({3, 8192 + 64}, dt, bits, K, 0, false, 0, 0, 0, DType::kF32, g);  // the long-row re-read
      for (int64_t pad_n : {0, 8, 3}) strided_rows_case(2, 3, 77, 64, pad_n, dt, bits, 32, g);
      strided_rows_case(1, 2, 130, 128, 16, dt, bits, 64, g);  // > kHold vectors a thread: the re-read
    }
  }
  // Many rows: grid-strided teams and row blocks, 12,544 tokens.
  path_case({12544, 8}, DType::kF32, 8, K, 0, false, 0, 0, 0, DType::kF32, g);
  path_case({12544, 16}, DType::kF16, 4, G, 8, false, 0, 0, 0, DType::kF16, g);
  path_case({1, 1, 12544, 16}, DType::kBF16, 8, R, 64, true, 0, 0, 0, DType::kBF16, g);
  const char* names[] = {"token/vector", "token/scalar", "group/vector", "group/scalar", "rows/vector",
                         "rows/scalar",  "shared/vector", "shared/scalar", "dequant/vector", "dequant/scalar"};
  for (int i = 0; i < static_cast<int>(cuda::QuantPath::kCount); ++i) {
    const uint64_t n = path_count(static_cast<cuda::QuantPath>(i)) - before[i];
    EXPECT(n > 0, "path %s never ran", names[i]);
    fprintf(stderr, "path %-15s %6llu launches\n", names[i], static_cast<unsigned long long>(n));
  }
  fprintf(stderr, "width sweep: %d checks\n", checks - before_checks);
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
  width_sweep(g);

  const auto HM = HeadReduce::kMean, HN = HeadReduce::kNone;
  int8_scores(2, 3, 77, 77, 64, DType::kF32, {0}, false, true, 32, 64, HM, g);
  int8_scores(1, 2, 130, 130, 80, DType::kF16, {}, false, true, 32, 64, HM, g);
  int8_scores(2, 2, 9, 200, 15, DType::kBF16, {}, true, false, 4, 16, HN, g);
  int8_scores(1, 2, 150, 150, 72, DType::kF32, {149, 3, 3}, true, true, 128, 64, HM, g);
  int8_scores(1, 1, 70, 70, 256, DType::kF16, {69}, false, true, 32, 64, HM, g);
  fprintf(stderr, "%s: %d failure(s) in %d checks\n", failures ? "FAILED" : "PASSED", failures, checks);
  return failures != 0;
}
