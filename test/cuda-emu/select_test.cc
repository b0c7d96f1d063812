// The select family's CUDA entry points (cuda/select.cu) under the emulator (see
// run.sh): top-k and gather, against float64 references (with bad input and scratch-leak checks) and top-k against the CPU back end.
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "tokensieve/select.h"

using namespace tokensieve;
using emu_test::check_no_leak;

// ---- against float64 references, bad input, no-leak checks of scratch memory
namespace reference {

static int& failures = emu_test::failures;

using emu_test::Buf;
using emu_test::make_buf;


// ---------------------------------------------------------------- topk

static bool ranks_before(const std::vector<float>& v, int32_t a, int32_t b) {
  const float x = v[a], y = v[b];
  const bool xn = std::isnan(x), yn = std::isnan(y);
  if (xn != yn) return yn;
  if (!xn && x != y) return x > y;
  return a < b;
}

static void run_topk(int64_t B, int64_t N, int64_t k, DType dt, bool by_score, int pattern, bool values, int64_t row_pad,
                     std::mt19937& g) {
  const int64_t ld = N + row_pad;
  Buf S = make_buf(B * ld, dt);
  std::uniform_real_distribution<float> ud(0, 1);
  for (int64_t i = 0; i < B * ld; ++i) {
    const float u = ud(g);
    float v;
    if (pattern == 0) v = u < 0.02f ? NAN : u < 0.03f ? INFINITY : u < 0.04f ? -INFINITY : u < 0.06f ? -0.0f : u < 0.08f ? 0.0f : std::floor(ud(g) * 64) / 8 - 4;
    else if (pattern == 1) v = 1.0f;               // all equal
    else if (pattern == 2) v = NAN;                // all NaN
    else v = std::ldexp(ud(g) - 0.5f, static_cast<int>(ud(g) * 60) - 30);  // wide range
    S.set(i, v);
  }
  std::vector<int32_t> idx(B * k, -7);
  std::vector<float> val(B * k, 12345.0f);
  TopkParams p;
  p.scores = emu_test::strided_view(S.bytes.data(), dt, {B, N}, {ld, 1});
  p.k = k;
  p.order_by_score = by_score;
  p.indices = emu_test::strided_view(idx.data(), DType::kI32, {B, k}, {k, 1});
  if (values) p.values = emu_test::strided_view(val.data(), DType::kF32, {B, k}, {k, 1});
  Status s = cuda::topk(p);
  EXPECT(s.ok(), "topk failed: %s", s.message.c_str());
  for (int64_t b = 0; b < B; ++b) {
    std::vector<float> v(N);
    for (int64_t i = 0; i < N; ++i) v[i] = S.get(b * ld + i);
    std::vector<int32_t> r(N);
    std::iota(r.begin(), r.end(), 0);
    std::stable_sort(r.begin(), r.end(), [&](int32_t a, int32_t c) { return ranks_before(v, a, c); });
    r.resize(k);
    if (!by_score) std::sort(r.begin(), r.end());
    bool ok = true;
    for (int64_t i = 0; i < k && ok; ++i) {
      if (idx[b * k + i] != r[i]) {
        ok = false;
        EXPECT(false, "topk B%" PRId64 " N%" PRId64 " k%" PRId64 " dt%d score%d pat%d: row %" PRId64 " pos %" PRId64 " got %d want %d", B, N, k, (int)dt, by_score, pattern, b, i, idx[b * k + i], r[i]);
      }
      if (values && ok) {
        const float want = v[r[i]];
        const bool same = f32_to_bits(want) == f32_to_bits(val[b * k + i]) || (std::isnan(want) && std::isnan(val[b * k + i]));
        if (!same) { ok = false; EXPECT(false, "topk value mismatch row %" PRId64 " pos %" PRId64 ": %g vs %g", b, i, val[b * k + i], want); }
      }
    }
    if (!ok) break;
  }
  check_no_leak("topk");
}


// ---------------------------------------------------------------- gather

static void run_gather(int64_t B, int64_t N, int64_t C, int64_t K, DType dt, int64_t row_pad, int64_t base_off, bool bad,
                       bool check, std::mt19937& g) {
  const int64_t es = dtype_size(dt);
  const int64_t sn = C + row_pad, sb = N * sn + 3;
  std::vector<uint8_t> storage((B * sb + base_off + 16) * es + 64);
  for (auto& x : storage) x = static_cast<uint8_t>(g());
  uint8_t* base = storage.data() + base_off * es;
  std::vector<int32_t> idx(B * K);
  for (auto& i : idx) i = static_cast<int32_t>(g() % N);
  if (bad) idx[K / 2] = static_cast<int32_t>(N);
  std::vector<uint8_t> out(B * K * C * es + 16, 0xEE);
  uint8_t* out_p = out.data() + (base_off % 2) * es;  // vary alignment of out as well
  GatherParams p;
  p.x = emu_test::strided_view(base, dt, {B, N, C}, {sb, sn, 1});
  p.indices = emu_test::strided_view(idx.data(), DType::kI32, {B, K}, {K, 1});
  p.out = emu_test::strided_view(out_p, dt, {B, K, C}, {K * C, C, 1});
  p.check_indices = check;
  Status s = cuda::gather(p);
  if (bad && check) EXPECT(s.code == Code::kRange, "gather OOB -> kRange, got %d %s", (int)s.code, s.message.c_str());
  else EXPECT(s.ok(), "gather failed: %s", s.message.c_str());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < K; ++i) {
      const int32_t n = idx[b * K + i];
      const uint8_t* dst = out_p + (b * K + i) * C * es;
      bool ok;
      if (n < 0 || n >= N) { ok = true; for (int64_t j = 0; j < C * es; ++j) ok = ok && dst[j] == 0; }
      else ok = memcmp(dst, base + (b * sb + n * sn) * es, C * es) == 0;
      EXPECT(ok, "gather B%" PRId64 " N%" PRId64 " C%" PRId64 " K%" PRId64 " es%" PRId64 " row (%" PRId64 ",%" PRId64 ") wrong", B, N, C, K, es, b, i);
      if (!ok) return;
    }
  check_no_leak("gather");
}


static void run(int argc, char** argv, std::mt19937& g) {
  const std::string only = argc > 1 ? argv[1] : "";
  if (only.empty() || only == "topk") {
    struct T { int64_t B, N, k; };
    for (T t : std::vector<T>{{1, 1, 1}, {3, 7, 3}, {4, 577, 144}, {2, 1031, 1031}, {2, 1031, 1}, {3, 129, 64}, {2, 2500, 2048}, {1, 5000, 3000}, {2, 700, 513}}) {
      for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
        for (int pat : {0, 3}) {
          fprintf(stderr, "topk B%" PRId64 " N%" PRId64 " k%" PRId64 " dt%d pat%d\n", t.B, t.N, t.k, (int)dt, pat);
          run_topk(t.B, t.N, t.k, dt, false, pat, true, 0, g);
          run_topk(t.B, t.N, t.k, dt, true, pat, true, 3, g);
        }
      }
    }
    run_topk(2, 1000, 300, DType::kF32, true, 1, true, 0, g);
    run_topk(2, 1000, 300, DType::kF32, false, 2, true, 0, g);
    run_topk(2, 3000, 2900, DType::kF16, true, 2, false, 1, g);
    run_topk(2, 3000, 2900, DType::kBF16, true, 1, true, 1, g);
    // Several rows through the radix sort (k > kSortCap) with distinct and
    // tied keys: rows must stay apart and ties keep index order.
    run_topk(3, 2600, 2300, DType::kF32, true, 0, true, 1, g);
    run_topk(5, 2100, 2049, DType::kBF16, true, 3, true, 0, g);
  }
  if (only.empty() || only == "gather") {
    for (DType dt : {DType::kF32, DType::kF16, DType::kI64, DType::kU8, DType::kBF16, DType::kI8}) {
      run_gather(3, 50, 33, 20, dt, 0, 0, false, true, g);
      run_gather(3, 50, 32, 20, dt, 0, 0, false, true, g);
      run_gather(2, 40, 64, 7, dt, 4, 0, false, true, g);
      run_gather(2, 40, 64, 7, dt, 4, 1, false, true, g);
      run_gather(2, 40, 1, 9, dt, 0, 0, false, true, g);
      run_gather(3, 50, 200, 20, dt, 8, 0, true, true, g);
      run_gather(3, 50, 16, 20, dt, 0, 0, true, false, g);
    }
  }
}

}  // namespace reference

// ---- against the CPU back end (cpu/*.cc), on the shapes of test/cuda-select.test.ts
namespace parity {

static int& failures = emu_test::failures;

static uint16_t to_bf16(float f) { uint32_t b; memcpy(&b, &f, 4); if ((b & 0x7fffffffu) > 0x7f800000u) return (b >> 16) | 0x40; b += 0x7fffu + ((b >> 16) & 1u); return b >> 16; }
static uint16_t to_f16(float f) {  // truncating is fine here: any bits are valid inputs
  uint32_t x; memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  int e = ((x >> 23) & 0xff) - 127 + 15;
  if (((x >> 23) & 0xff) == 0xff) return sign | 0x7c00u | ((x & 0x7fffff) ? 0x200 : 0);
  if (e >= 31) return sign | 0x7c00u;
  if (e <= 0) return sign;
  return sign | (e << 10) | ((x >> 13) & 0x3ff);
}


static std::vector<uint8_t> fill(int64_t n, DType dt, std::mt19937& g, float sd, int special = 0) {
  std::normal_distribution<float> nd(0, sd);
  std::uniform_real_distribution<float> ud(0, 1);
  std::vector<uint8_t> b(n * dtype_size(dt));
  for (int64_t i = 0; i < n; ++i) {
    float v = nd(g);
    if (special) { const float u = ud(g); v = u < 0.02f ? NAN : u < 0.03f ? INFINITY : u < 0.04f ? -INFINITY : std::floor(ud(g) * 64) / 8; }
    if (dt == DType::kF32) memcpy(&b[i * 4], &v, 4);
    else { uint16_t h = dt == DType::kF16 ? to_f16(v) : to_bf16(v); memcpy(&b[i * 2], &h, 2); }
  }
  return b;
}


static void topk(int64_t B, int64_t N, int64_t k, DType dt, std::mt19937& g) {
  auto s = fill(B * N, dt, g, 1, 1);
  for (bool by_score : {false, true}) {
    std::vector<int32_t> ic(B * k), ig(B * k);
    std::vector<float> vc(B * k), vg(B * k);
    for (int dev : {-1, 0}) {
      TopkParams p;
      p.scores = emu_test::strided_view(s.data(), dt, {B, N}, {N, 1}, dev);
      p.k = k; p.order_by_score = by_score;
      p.indices = emu_test::strided_view(dev < 0 ? ic.data() : ig.data(), DType::kI32, {B, k}, {k, 1}, dev);
      p.values = emu_test::strided_view(dev < 0 ? vc.data() : vg.data(), DType::kF32, {B, k}, {k, 1}, dev);
      Status st = dev < 0 ? cpu::topk(p) : cuda::topk(p);
      if (!st.ok()) { ++failures; fprintf(stderr, "FAIL topk: %s\n", st.message.c_str()); return; }
    }
    for (int64_t i = 0; i < B * k; ++i) {
      const bool vsame = memcmp(&vc[i], &vg[i], 4) == 0 || (std::isnan(vc[i]) && std::isnan(vg[i]));
      if (ic[i] != ig[i] || !vsame) { ++failures; fprintf(stderr, "FAIL topk B%" PRId64 " N%" PRId64 " k%" PRId64 " dt%d score%d at %" PRId64 ": %d/%g vs cpu %d/%g\n", B, N, k, (int)dt, by_score, i, ig[i], vg[i], ic[i], vc[i]); return; }
    }
  }
  fprintf(stderr, "topk ok B%" PRId64 " N%" PRId64 " k%" PRId64 " dt%d\n", B, N, k, (int)dt);
}


static void run() {
  std::mt19937 g(99);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    for (auto t : std::vector<std::vector<int64_t>>{{1, 1, 1}, {3, 7, 3}, {4, 577, 144}, {2, 1031, 1031}, {2, 4784, 1196}, {1, 10003, 4097}, {30, 129, 64}})
      topk(t[0], t[1], t[2], dt, g);
}

}  // namespace parity

// Optional argument: one section of the reference checks ("topk", "gather").
int main(int argc, char** argv) {
  std::mt19937 g(1234);
  reference::run(argc, argv, g);
  if (argc < 2) parity::run();
  fprintf(stderr, "%ld launches\n", emu::launches);
  return emu_test::finish();
}
