// Shared pieces of the emulator test programs (one per family, see run.sh): a
// counting EXPECT, tensor views over host memory (device 0 = the emulated GPU,
// -1 = the CPU), seeded data in every float dtype, the scratch-leak check and
// the closing summary line.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "tokensieve/tensor.h"

namespace emu_test {

// A float tensor in host memory posing as device memory (the emulator's
// device is the host), stored in `dtype`, with values readable as f32.
struct Buf {
  std::vector<uint8_t> bytes;
  tokensieve::DType dtype;
  void set(int64_t i, float v) {
    if (dtype == tokensieve::DType::kF32) memcpy(&bytes[i * 4], &v, 4);
    else { uint16_t h = dtype == tokensieve::DType::kF16 ? tokensieve::f32_to_f16(v) : tokensieve::f32_to_bf16(v); memcpy(&bytes[i * 2], &h, 2); }
  }
  float get(int64_t i) const {
    if (dtype == tokensieve::DType::kF32) { float v; memcpy(&v, &bytes[i * 4], 4); return v; }
    uint16_t h; memcpy(&h, &bytes[i * 2], 2);
    return dtype == tokensieve::DType::kF16 ? tokensieve::f16_to_f32(h) : tokensieve::bf16_to_f32(h);
  }
};

inline Buf make_buf(int64_t n, tokensieve::DType dt) { Buf b; b.dtype = dt; b.bytes.assign(n * tokensieve::dtype_size(dt), 0); return b; }

inline int failures = 0, checks = 0;

#define EXPECT(cond, ...)                                    \
  do {                                                       \
    ++emu_test::checks;                                      \
    if (!(cond)) {                                           \
      ++emu_test::failures;                                  \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);   \
      fprintf(stderr, __VA_ARGS__);                          \
      fprintf(stderr, "\n");                                 \
    }                                                        \
  } while (0)

// A contiguous view of `sh` over d on `dev`.
inline tokensieve::TensorView view(void* d, tokensieve::DType dt, std::vector<int64_t> sh, int dev) {
  tokensieve::TensorView t;
  t.data = d;
  t.dtype = dt;
  t.ndim = static_cast<int>(sh.size());
  t.device = dev;
  int64_t e = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    t.shape[i] = sh[i];
    t.strides[i] = e;
    e *= sh[i];
  }
  return t;
}

// A view of `sh` with strides `st` (elements) over d on `dev`.
inline tokensieve::TensorView strided_view(void* d, tokensieve::DType dt, std::vector<int64_t> sh,
                                           std::vector<int64_t> st, int dev = 0) {
  tokensieve::TensorView t;
  t.data = d;
  t.dtype = dt;
  t.ndim = static_cast<int>(sh.size());
  t.device = dev;
  for (int i = 0; i < t.ndim; ++i) {
    t.shape[i] = sh[i];
    t.strides[i] = st[i];
  }
  return t;
}

// Raw bytes of f32 values rounded to dt.
inline std::vector<uint8_t> encode(const std::vector<float>& f, tokensieve::DType dt) {
  std::vector<uint8_t> b(f.size() * tokensieve::dtype_size(dt));
  for (size_t i = 0; i < f.size(); ++i) {
    if (dt == tokensieve::DType::kF32) {
      std::memcpy(&b[i * 4], &f[i], 4);
    } else {
      const uint16_t h = dt == tokensieve::DType::kF16 ? tokensieve::f32_to_f16(f[i]) : tokensieve::f32_to_bf16(f[i]);
      std::memcpy(&b[i * 2], &h, 2);
    }
  }
  return b;
}

inline std::vector<float> normal(int64_t n, std::mt19937& g, float scale = 1.0f) {
  std::normal_distribution<float> nd(0, scale);
  std::vector<float> f(static_cast<size_t>(n));
  for (auto& v : f) v = nd(g);
  return f;
}

inline float as_f32(const uint8_t* p, tokensieve::DType dt) {
  if (dt == tokensieve::DType::kF32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return dt == tokensieve::DType::kF16 ? tokensieve::f16_to_f32(h) : tokensieve::bf16_to_f32(h);
}

// Scratch memory of the emulated device must all be freed by the entry point.
inline void check_no_leak(const char* what) {
  EXPECT(emu::live_allocs == 0, "%s: %ld scratch allocations leaked", what, emu::live_allocs);
  emu::live_allocs = 0;
}

inline int finish() {
  fprintf(stderr, "%s: %d checks, %d failure(s)\n", failures ? "FAILED" : "PASSED", checks, failures);
  return failures != 0;
}

}  // namespace emu_test
