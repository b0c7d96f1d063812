// The CUDA entry points (cuda/*.cu) under the emulator against the CPU back
// end (cpu/*.cc), on the shapes of test/cuda.test.ts (see run.sh).
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tokensieve/attention.h"
#include "tokensieve/select.h"

using namespace tokensieve;
static int failures = 0;

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

static TensorView view(void* d, DType dt, std::vector<int64_t> sh, std::vector<int64_t> st, int dev) {
  TensorView t; t.data = d; t.dtype = dt; t.ndim = (int)sh.size(); t.device = dev;
  for (size_t i = 0; i < sh.size(); ++i) { t.shape[i] = sh[i]; t.strides[i] = st[i]; }
  return t;
}
static std::vector<int64_t> cont(std::vector<int64_t> sh) { std::vector<int64_t> s(sh.size()); int64_t e = 1; for (int i = (int)sh.size() - 1; i >= 0; --i) { s[i] = e; e *= sh[i]; } return s; }

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

struct Case { int64_t B, H, Nq, Nk, D; DType dt; bool bnhd; bool causal; int64_t offset; std::vector<int32_t> rows; int64_t kb, ke; QueryReduce qr; HeadReduce hr; };

static void att(const Case& c, std::mt19937& g) {
  const int64_t B = c.B, H = c.H, Nq = c.Nq, Nk = c.Nk, D = c.D;
  auto q = fill(B * H * Nq * D, c.dt, g, 1.5f), k = fill(B * H * Nk * D, c.dt, g, 1.5f);
  std::vector<float> bias(B * Nk);
  std::normal_distribution<float> nd(0, 1);
  for (int64_t i = 0; i < B * Nk; ++i) bias[i] = i % 7 == 2 ? -INFINITY : nd(g);
  auto qs = c.bnhd ? std::vector<int64_t>{Nq * H * D, D, H * D, 1} : cont({B, H, Nq, D});
  auto ks = c.bnhd ? std::vector<int64_t>{Nk * H * D, D, H * D, 1} : cont({B, H, Nk, D});
  std::vector<int32_t> rows = c.rows;
  if (rows.empty()) { rows.resize(Nq); std::iota(rows.begin(), rows.end(), 0); }
  const int64_t ke = c.ke < 0 ? Nk : c.ke, W = ke - c.kb;
  std::vector<int64_t> osh = c.hr == HeadReduce::kNone ? std::vector<int64_t>{B, H, W} : std::vector<int64_t>{B, W};
  std::vector<float> o_cpu(B * H * W, 3.0f), o_gpu(B * H * W, NAN);
  for (int dev : {-1, 0}) {
    AttentionScoresParams p;
    p.q = view(q.data(), c.dt, {B, H, Nq, D}, qs, dev);
    p.k = view(k.data(), c.dt, {B, H, Nk, D}, ks, dev);
    p.key_bias = view(bias.data(), DType::kF32, {B, Nk}, {Nk, 1}, dev);
    p.has_key_bias = true;
    p.scale = 1.0f / std::sqrt((float)D);
    p.causal = c.causal; p.causal_offset = c.offset;
    p.reduce.query_rows = rows.data(); p.reduce.num_query_rows = rows.size();
    p.reduce.query_reduce = c.qr; p.reduce.head_reduce = c.hr; p.reduce.key_begin = c.kb; p.reduce.key_end = ke;
    p.out = view(dev < 0 ? o_cpu.data() : o_gpu.data(), DType::kF32, osh, cont(osh), dev);
    Status s = dev < 0 ? cpu::attention_scores(p) : cuda::attention_scores(p);
    if (!s.ok()) { ++failures; fprintf(stderr, "FAIL att dev %d: %s\n", dev, s.message.c_str()); return; }
  }
  const int64_t n = c.hr == HeadReduce::kNone ? B * H * W : B * W;
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double err = std::fabs((double)o_gpu[i] - o_cpu[i]), tol = 1e-7 + 2e-4 * std::fabs(o_cpu[i]);
    worst = std::max(worst, err / (std::fabs(o_cpu[i]) + 1e-12));
    if (!(err <= tol)) { ++failures; fprintf(stderr, "FAIL att B%" PRId64 " Nq%" PRId64 " Nk%" PRId64 " D%" PRId64 ": [%" PRId64 "] gpu %g cpu %g\n", B, Nq, Nk, D, i, o_gpu[i], o_cpu[i]); return; }
  }
  fprintf(stderr, "att ok B%" PRId64 " H%" PRId64 " Nq%" PRId64 " Nk%" PRId64 " D%" PRId64 " dt%d, worst rel %.2g\n", B, H, Nq, Nk, D, (int)c.dt, worst);
}

static void topk(int64_t B, int64_t N, int64_t k, DType dt, std::mt19937& g) {
  auto s = fill(B * N, dt, g, 1, 1);
  for (bool by_score : {false, true}) {
    std::vector<int32_t> ic(B * k), ig(B * k);
    std::vector<float> vc(B * k), vg(B * k);
    for (int dev : {-1, 0}) {
      TopkParams p;
      p.scores = view(s.data(), dt, {B, N}, {N, 1}, dev);
      p.k = k; p.order_by_score = by_score;
      p.indices = view(dev < 0 ? ic.data() : ig.data(), DType::kI32, {B, k}, {k, 1}, dev);
      p.values = view(dev < 0 ? vc.data() : vg.data(), DType::kF32, {B, k}, {k, 1}, dev);
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

static void reduce(DType dt, std::vector<int32_t> rows, int64_t kb, HeadReduce hr, QueryReduce qr, std::mt19937& g) {
  const int64_t B = 2, H = 3, Nq = 77, Nk = 300;
  auto pr = fill(B * H * Nq * Nk, dt, g, 1);
  if (rows.empty()) { rows.resize(Nq); std::iota(rows.begin(), rows.end(), 0); }
  const int64_t W = Nk - kb;
  std::vector<int64_t> osh = hr == HeadReduce::kNone ? std::vector<int64_t>{B, H, W} : std::vector<int64_t>{B, W};
  std::vector<float> oc(B * H * W), og(B * H * W);
  for (int dev : {-1, 0}) {
    ReduceAttentionParams p;
    p.probs = view(pr.data(), dt, {B, H, Nq, Nk}, cont({B, H, Nq, Nk}), dev);
    p.reduce.query_rows = rows.data(); p.reduce.num_query_rows = rows.size();
    p.reduce.key_begin = kb; p.reduce.key_end = Nk; p.reduce.head_reduce = hr; p.reduce.query_reduce = qr;
    p.out = view(dev < 0 ? oc.data() : og.data(), DType::kF32, osh, cont(osh), dev);
    Status st = dev < 0 ? cpu::reduce_attention(p) : cuda::reduce_attention(p);
    if (!st.ok()) { ++failures; fprintf(stderr, "FAIL reduce: %s\n", st.message.c_str()); return; }
  }
  const int64_t n = hr == HeadReduce::kNone ? B * H * W : B * W;
  for (int64_t i = 0; i < n; ++i)
    if (!(std::fabs(og[i] - oc[i]) <= 1e-7 + 1e-5 * std::fabs(oc[i]))) { ++failures; fprintf(stderr, "FAIL reduce [%" PRId64 "] %g vs %g\n", i, og[i], oc[i]); return; }
  fprintf(stderr, "reduce ok dt%d\n", (int)dt);
}

int main() {
  std::mt19937 g(99);
  const auto M = QueryReduce::kMean, S = QueryReduce::kSum;
  const auto HM = HeadReduce::kMean, HS = HeadReduce::kSum, HN = HeadReduce::kNone;
  std::vector<Case> cases = {
      {2, 3, 1, 1, 15, DType::kF32, false, false, 0, {}, 0, -1, M, HM},
      {3, 2, 2, 2, 64, DType::kF16, true, false, 0, {}, 0, -1, M, HM},
      {2, 4, 7, 7, 80, DType::kBF16, false, true, 0, {}, 0, -1, M, HM},
      {2, 4, 129, 129, 64, DType::kF16, false, false, 0, {0}, 1, -1, M, HM},
      {1, 3, 129, 129, 64, DType::kBF16, true, false, 0, {}, 0, -1, M, HM},
      {1, 2, 160, 160, 128, DType::kF16, false, true, 0, {}, 0, -1, M, HM},
      {2, 3, 7, 200, 80, DType::kF32, true, true, 193, {}, 0, -1, M, HN},
      {2, 2, 31, 300, 15, DType::kBF16, false, false, 0, {3, 3, 30}, 0, -1, S, HS},
      {1, 1, 200, 2, 128, DType::kF32, false, true, -5, {}, 0, -1, M, HM},
      {2, 2, 70, 70, 256, DType::kF16, false, false, 0, {69}, 0, -1, M, HM},
      {1, 4, 150, 150, 72, DType::kBF16, true, false, 0, {}, 7, 140, M, HM},
  };
  for (auto& c : cases) att(c, g);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    reduce(dt, {}, 0, HM, M, g);
    reduce(dt, {0}, 1, HM, M, g);
    reduce(dt, {5, 5, 76}, 0, HN, S, g);
  }
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    for (auto t : std::vector<std::vector<int64_t>>{{1, 1, 1}, {3, 7, 3}, {4, 577, 144}, {2, 1031, 1031}, {2, 4784, 1196}, {1, 10003, 4097}, {30, 129, 64}})
      topk(t[0], t[1], t[2], dt, g);
  fprintf(stderr, "%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures != 0;
}
