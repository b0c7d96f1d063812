// The CUDA token-merging entry points (cuda/merge.cu) under the emulator
// against the CPU back end (cpu/merge.cc, itself tested against float64
// references in test/merge.test.ts): plans must match exactly (the score
// chains are the same sequential fmaf over channels), merged values to
// rounding; NaN input → ERR_RANGE; no scratch leaks.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/dtype.h"
#include "tokensieve/merge.h"

using namespace tokensieve;
static int failures = 0, checks = 0;
#define EXPECT(cond, ...)                        \
  do {                                           \
    ++checks;                                    \
    if (!(cond)) {                               \
      ++failures;                                \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);              \
      fprintf(stderr, "\n");                     \
    }                                            \
  } while (0)

static TensorView view(void* d, DType dt, std::vector<int64_t> sh, int dev) {
  TensorView t;
  t.data = d; t.dtype = dt; t.ndim = static_cast<int>(sh.size()); t.device = dev;
  int64_t e = 1;
  for (int i = t.ndim - 1; i >= 0; --i) { t.shape[i] = sh[i]; t.strides[i] = e; e *= sh[i]; }
  return t;
}

static std::vector<uint8_t> values(int64_t n, DType dt, std::mt19937& g, int dup_every) {
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> f(n);
  for (int64_t i = 0; i < n; ++i) f[i] = nd(g);
  std::vector<uint8_t> b(n * dtype_size(dt));
  for (int64_t i = 0; i < n; ++i) {
    float v = f[i];
    if (dup_every > 0 && (i / 8) % dup_every == 1) v = f[i % 8];  // duplicated rows (C = 8 there): exact ties
    if (dt == DType::kF32) memcpy(&b[i * 4], &v, 4);
    else { uint16_t h = dt == DType::kF16 ? cpu::f32_to_f16(v) : cpu::f32_to_bf16(v); memcpy(&b[i * 2], &h, 2); }
  }
  return b;
}

static float as_f32(const uint8_t* p, DType dt) {
  if (dt == DType::kF32) { float f; memcpy(&f, p, 4); return f; }
  uint16_t h; memcpy(&h, p, 2);
  return dt == DType::kF16 ? cpu::f16_to_f32(h) : cpu::bf16_to_f32(h);
}

static void check_no_leak(const char* what) {
  EXPECT(emu::live_allocs == 0, "%s: %ld scratch allocations leaked", what, emu::live_allocs);
  emu::live_allocs = 0;
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
  errors();
  fprintf(stderr, "%s: %d checks, %d failure(s)\n", failures ? "FAILED" : "PASSED", checks, failures);
  return failures != 0;
}
