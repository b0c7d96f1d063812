// The attention family's CUDA entry points (cuda/attention.cu) under the emulator (see
// run.sh): attention scores and their reductions, against float64 references (with bad input and scratch-leak checks) and against the CPU back end.
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
#include "tokensieve/attention.h"
#include "tokensieve/select.h"

using namespace tokensieve;
using emu_test::check_no_leak;

// ---- against float64 references, bad input, no-leak checks of scratch memory
namespace reference {

static int& failures = emu_test::failures;

using emu_test::Buf;
using emu_test::make_buf;

static std::vector<int64_t> contiguous(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size());
  int64_t e = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) { s[i] = e; e *= shape[i]; }
  return s;
}

// ---------------------------------------------------------------- attention

struct AttCase {
  int64_t B, H, Nq, Nk, D;
  DType dt;
  bool bnhd;        // storage [B, N, H, D] viewed as [B, H, N, D]
  std::vector<int32_t> rows;  // empty: all rows
  bool causal = false;
  int64_t offset = 0;
  int64_t kb = 0, ke = -1;
  QueryReduce qr = QueryReduce::kMean;
  HeadReduce hr = HeadReduce::kMean;
  bool bias = true;
  bool mask_all_b0 = false;  // every key of batch 0 masked with -inf
  float scale = -1;
};

static void run_att(const AttCase& c, std::mt19937& g) {
  const int64_t B = c.B, H = c.H, Nq = c.Nq, Nk = c.Nk, D = c.D;
  std::normal_distribution<float> nd(0.0f, 1.5f);
  auto mk = [&](int64_t N, Buf& buf, std::vector<int64_t>& strides) {
    buf = make_buf(B * H * N * D, c.dt);
    for (int64_t i = 0; i < B * H * N * D; ++i) buf.set(i, nd(g));
    strides = c.bnhd ? std::vector<int64_t>{N * H * D, D, H * D, 1} : contiguous({B, H, N, D});
  };
  Buf q, k;
  std::vector<int64_t> qs, ks;
  mk(Nq, q, qs);
  mk(Nk, k, ks);
  std::vector<float> bias(B * Nk);
  for (int64_t i = 0; i < B * Nk; ++i) bias[i] = (i % 7 == 2) ? -INFINITY : nd(g);
  if (c.mask_all_b0) for (int64_t j = 0; j < Nk; ++j) bias[j] = -INFINITY;
  std::vector<int32_t> rows = c.rows;
  if (rows.empty()) { rows.resize(Nq); std::iota(rows.begin(), rows.end(), 0); }
  const int64_t kb = c.kb, ke = c.ke < 0 ? Nk : c.ke, W = ke - kb;
  const float scale = c.scale < 0 ? 1.0f / std::sqrt(static_cast<float>(D)) : c.scale;

  // reference (float64)
  const int64_t nsel = rows.size();
  std::vector<double> per_head(B * H * W, 0.0);
  auto qv = [&](int64_t b, int64_t h, int64_t n, int64_t d) { return (double)q.get(b * qs[0] + h * qs[1] + n * qs[2] + d); };
  auto kv = [&](int64_t b, int64_t h, int64_t n, int64_t d) { return (double)k.get(b * ks[0] + h * ks[1] + n * ks[2] + d); };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < nsel; ++s) {
        const int64_t i = rows[s];
        int64_t end = Nk;
        if (c.causal) end = std::max<int64_t>(0, std::min<int64_t>(Nk, i + c.offset + 1));
        std::vector<double> lg(end);
        double m = -INFINITY;
        for (int64_t j = 0; j < end; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qv(b, h, i, d) * kv(b, h, j, d);
          lg[j] = (double)scale * dot + (c.bias ? (double)bias[b * Nk + j] : 0.0);
          m = std::max(m, lg[j]);
        }
        if (end == 0 || m == -INFINITY) continue;
        double sum = 0;
        for (int64_t j = 0; j < end; ++j) sum += std::exp(lg[j] - m);
        for (int64_t j = kb; j < std::min(ke, end); ++j) per_head[(b * H + h) * W + j - kb] += std::exp(lg[j] - m) / sum;
      }
  const double w = c.qr == QueryReduce::kMean ? 1.0 / nsel : 1.0;
  std::vector<double> ref;
  if (c.hr == HeadReduce::kNone) { ref.resize(B * H * W); for (size_t i = 0; i < ref.size(); ++i) ref[i] = w * per_head[i]; }
  else {
    ref.assign(B * W, 0.0);
    for (int64_t b = 0; b < B; ++b) for (int64_t h = 0; h < H; ++h) for (int64_t j = 0; j < W; ++j) ref[b * W + j] += per_head[(b * H + h) * W + j];
    for (auto& v : ref) v *= w * (c.hr == HeadReduce::kMean ? 1.0 / H : 1.0);
  }

  AttentionScoresParams p;
  p.q = emu_test::strided_view(q.bytes.data(), c.dt, {B, H, Nq, D}, qs);
  p.k = emu_test::strided_view(k.bytes.data(), c.dt, {B, H, Nk, D}, ks);
  p.key_bias = emu_test::strided_view(bias.data(), DType::kF32, {B, Nk}, {Nk, 1});
  p.has_key_bias = c.bias;
  p.scale = scale;
  p.causal = c.causal;
  p.causal_offset = c.offset;
  p.reduce.query_rows = rows.data();
  p.reduce.num_query_rows = nsel;
  p.reduce.query_reduce = c.qr;
  p.reduce.head_reduce = c.hr;
  p.reduce.key_begin = kb;
  p.reduce.key_end = ke;
  std::vector<float> out(ref.size(), NAN);  // poisoned
  p.out = c.hr == HeadReduce::kNone ? emu_test::strided_view(out.data(), DType::kF32, {B, H, W}, contiguous({B, H, W}))
                                    : emu_test::strided_view(out.data(), DType::kF32, {B, W}, contiguous({B, W}));
  Status st = cuda::attention_scores(p);
  EXPECT(st.ok(), "attention_scores failed: %s", st.message.c_str());
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(out[i] - ref[i]);
    const double tol = 2e-6 + 2e-4 * std::fabs(ref[i]);
    if (!(err <= tol)) { worst = std::max(worst, err); }
    EXPECT(err <= tol, "att B%" PRId64 " H%" PRId64 " Nq%" PRId64 " Nk%" PRId64 " D%" PRId64 " dt%d out[%zu]=%g ref=%g", B, H, Nq, Nk, D, (int)c.dt, i, out[i], ref[i]);
    if (!(err <= tol)) break;
  }
  // accumulate: adds the same again; also checks determinism bit for bit
  std::vector<float> first = out;
  p.reduce.accumulate = true;
  st = cuda::attention_scores(p);
  EXPECT(st.ok(), "accumulate failed: %s", st.message.c_str());
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT(out[i] == first[i] + first[i], "accumulate mismatch at %zu: %g vs 2*%g", i, out[i], first[i]);
    if (out[i] != first[i] + first[i]) break;
  }
  check_no_leak("attention_scores");
}

static void att_errors() {
  const int64_t B = 2, H = 2, N = 9, D = 8;
  std::vector<float> q(B * H * N * D, 0.5f), bias(B * N, 0.0f), out(B * N);
  std::vector<int32_t> rows = {0, 3, 3, 8};
  AttentionScoresParams p;
  p.q = emu_test::strided_view(q.data(), DType::kF32, {B, H, N, D}, contiguous({B, H, N, D}));
  p.k = p.q;
  p.key_bias = emu_test::strided_view(bias.data(), DType::kF32, {B, N}, {N, 1});
  p.reduce.query_rows = rows.data();
  p.reduce.num_query_rows = rows.size();
  p.reduce.key_end = N;
  p.out = emu_test::strided_view(out.data(), DType::kF32, {B, N}, {N, 1});
  auto run = [&]() { Status s = cuda::attention_scores(p); check_no_leak("att_errors"); return s; };
  EXPECT(run().ok(), "clean input");
  q[(1 * H + 1) * N * D + 5 * D + 3] = NAN;  // row 5: not selected in q, but k holds every row
  Status s = run();
  EXPECT(s.code == Code::kRange && s.message.find("q and k") != std::string::npos, "NaN in k: got %d %s", (int)s.code, s.message.c_str());
  p.check_finite = false;
  EXPECT(run().ok(), "check_finite false");
  p.check_finite = true;
  q[(1 * H + 1) * N * D + 5 * D + 3] = 0.5f;
  p.has_key_bias = true;
  bias[3] = -INFINITY;
  EXPECT(run().ok(), "-inf bias allowed: %s", run().message.c_str());
  bias[4] = INFINITY;
  s = run();
  EXPECT(s.code == Code::kRange && s.message.find("keyBias") != std::string::npos, "+inf bias: %d %s", (int)s.code, s.message.c_str());
  bias[4] = NAN;
  EXPECT(run().code == Code::kRange, "NaN bias");
  bias[4] = 0;
  // logit overflow: finite inputs, huge scale
  p.scale = 3e38f;
  s = run();
  EXPECT(s.code == Code::kRange && s.message.find("logits") != std::string::npos, "overflow: %d %s", (int)s.code, s.message.c_str());
  p.scale = 1;
  // host tensors
  TensorView hq = p.q; hq.device = -1;
  AttentionScoresParams ph = p; ph.q = hq; ph.k = hq; ph.key_bias.device = -1; ph.out.device = -1;
  EXPECT(cuda::attention_scores(ph).code == Code::kDevice, "host tensors -> kDevice");
  // invalid device ordinal
  AttentionScoresParams pd = p; pd.q.device = 3; pd.k.device = 3; pd.key_bias.device = 3; pd.out.device = 3;
  s = cuda::attention_scores(pd);
  EXPECT(s.code == Code::kDevice, "device 3 -> kDevice: %d %s", (int)s.code, s.message.c_str());
  // D > 256
  std::vector<float> big(1 * 1 * 2 * 300, 0.1f), out2(2);
  AttentionScoresParams pb = p;
  pb.q = emu_test::strided_view(big.data(), DType::kF32, {1, 1, 2, 300}, contiguous({1, 1, 2, 300}));
  pb.k = pb.q;
  pb.has_key_bias = false;
  std::vector<int32_t> r0 = {0};
  pb.reduce.query_rows = r0.data(); pb.reduce.num_query_rows = 1; pb.reduce.key_end = 2;
  pb.out = emu_test::strided_view(out2.data(), DType::kF32, {1, 2}, {2, 1});
  EXPECT(cuda::attention_scores(pb).code == Code::kUnsupported, "D=300 -> kUnsupported");
  check_no_leak("att_errors end");
}


// ---------------------------------------------------------------- reduce

static void run_reduce(int64_t B, int64_t H, int64_t Nq, int64_t Nk, DType dt, std::vector<int32_t> rows, int64_t kb,
                       int64_t ke, QueryReduce qr, HeadReduce hr, bool strided, std::mt19937& g) {
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  std::vector<int64_t> shape = {B, H, Nq, Nk};
  // strided: pad the row stride
  const int64_t ld = strided ? Nk + 5 : Nk;
  std::vector<int64_t> st = {H * Nq * ld, Nq * ld, ld, 1};
  Buf P = make_buf(B * H * Nq * ld, dt);
  for (int64_t i = 0; i < B * H * Nq * ld; ++i) P.set(i, ud(g));
  if (rows.empty()) { rows.resize(Nq); std::iota(rows.begin(), rows.end(), 0); }
  const int64_t W = ke - kb, nsel = rows.size();
  std::vector<double> ph(B * H * W, 0);
  for (int64_t b = 0; b < B; ++b) for (int64_t h = 0; h < H; ++h) for (int64_t s = 0; s < nsel; ++s)
    for (int64_t j = kb; j < ke; ++j) ph[(b * H + h) * W + j - kb] += P.get(b * st[0] + h * st[1] + rows[s] * st[2] + j);
  const double w = qr == QueryReduce::kMean ? 1.0 / nsel : 1.0;
  std::vector<double> ref;
  if (hr == HeadReduce::kNone) { ref = ph; for (auto& v : ref) v *= w; }
  else {
    ref.assign(B * W, 0);
    for (int64_t b = 0; b < B; ++b) for (int64_t h = 0; h < H; ++h) for (int64_t j = 0; j < W; ++j) ref[b * W + j] += ph[(b * H + h) * W + j];
    for (auto& v : ref) v *= w * (hr == HeadReduce::kMean ? 1.0 / H : 1.0);
  }
  ReduceAttentionParams p;
  p.probs = emu_test::strided_view(P.bytes.data(), dt, shape, st);
  p.reduce.query_rows = rows.data();
  p.reduce.num_query_rows = nsel;
  p.reduce.query_reduce = qr;
  p.reduce.head_reduce = hr;
  p.reduce.key_begin = kb;
  p.reduce.key_end = ke;
  std::vector<float> out(ref.size(), NAN);
  p.out = hr == HeadReduce::kNone ? emu_test::strided_view(out.data(), DType::kF32, {B, H, W}, contiguous({B, H, W}))
                                  : emu_test::strided_view(out.data(), DType::kF32, {B, W}, contiguous({B, W}));
  Status s = cuda::reduce_attention(p);
  EXPECT(s.ok(), "reduce failed: %s", s.message.c_str());
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(out[i] - ref[i]);
    EXPECT(err <= 1e-6 + 1e-5 * std::fabs(ref[i]), "reduce out[%zu]=%g ref=%g", i, out[i], ref[i]);
    if (!(err <= 1e-6 + 1e-5 * std::fabs(ref[i]))) break;
  }
  // NaN inside the read region -> kRange; outside -> fine
  const int64_t inside = 0 * st[0] + (H - 1) * st[1] + rows[nsel - 1] * st[2] + (ke - 1);
  const float keep = P.get(inside);
  P.set(inside, NAN);
  s = cuda::reduce_attention(p);
  EXPECT(s.code == Code::kRange, "reduce NaN inside -> kRange, got %d", (int)s.code);
  p.check_finite = false;
  EXPECT(cuda::reduce_attention(p).ok(), "reduce no check");
  p.check_finite = true;
  P.set(inside, keep);
  if (kb > 0) {
    P.set(0 * st[0] + 0 * st[1] + rows[0] * st[2] + (kb - 1), NAN);
    EXPECT(cuda::reduce_attention(p).ok(), "reduce NaN outside range is fine");
  }
  check_no_leak("reduce");
}


static void run(int argc, char** argv, std::mt19937& g) {
  const std::string only = argc > 1 ? argv[1] : "";
  if (only.empty() || only == "att") {
    std::vector<AttCase> cases;
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      cases.push_back({2, 3, 1, 1, 15, dt, false});
      cases.push_back({1, 2, 70, 70, 64, dt, true, {}, false});
    }
    AttCase c;
    c = {2, 4, 7, 7, 80, DType::kBF16, false}; c.causal = true; cases.push_back(c);
    c = {2, 3, 130, 150, 33, DType::kF32, false}; c.kb = 1; cases.push_back(c);
    c = {1, 2, 100, 100, 128, DType::kF16, false}; c.causal = true; c.rows = {99, 5, 64, 63, 0, 0}; cases.push_back(c);
    c = {2, 3, 7, 200, 80, DType::kF32, true}; c.causal = true; c.offset = 193; c.hr = HeadReduce::kNone; cases.push_back(c);
    c = {2, 2, 31, 140, 15, DType::kBF16, false}; c.hr = HeadReduce::kSum; c.qr = QueryReduce::kSum; c.rows = {3, 3, 30}; cases.push_back(c);
    c = {1, 1, 150, 2, 128, DType::kF32, false}; c.causal = true; c.offset = -5; cases.push_back(c);
    c = {1, 2, 40, 40, 256, DType::kF16, false}; c.rows = {39}; cases.push_back(c);
    c = {1, 3, 73, 73, 1, DType::kF32, true}; c.kb = 7; c.ke = 70; cases.push_back(c);
    c = {3, 2, 20, 90, 72, DType::kBF16, true}; c.mask_all_b0 = true; c.hr = HeadReduce::kNone; cases.push_back(c);
    c = {2, 2, 66, 66, 40, DType::kF32, false}; c.causal = true; c.offset = -80; cases.push_back(c);  // no row sees a key
    c = {1, 1, 5, 300, 16, DType::kF32, false}; c.rows = {4}; c.bias = false; c.kb = 250; c.ke = 251; cases.push_back(c);
    c = {1, 2, 200, 200, 9, DType::kF16, false}; c.causal = true; c.offset = 0; c.rows = {}; cases.push_back(c);
    for (size_t i = 0; i < cases.size(); ++i) {
      fprintf(stderr, "att case %zu\n", i);
      run_att(cases[i], g);
    }
    // pools unsupported: cudaMalloc/cudaFree fallback
    emu::pools_supported = 0;
    run_att(cases[0], g);
    emu::pools_supported = 1;
    att_errors();
  }
  if (only.empty() || only == "reduce") {
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      run_reduce(2, 3, 77, 140, dt, {}, 0, 140, QueryReduce::kMean, HeadReduce::kMean, false, g);
      run_reduce(2, 3, 77, 140, dt, {0}, 1, 140, QueryReduce::kMean, HeadReduce::kMean, true, g);
      run_reduce(2, 3, 77, 140, dt, {5, 5, 76}, 0, 129, QueryReduce::kSum, HeadReduce::kNone, true, g);
      run_reduce(1, 4, 20, 64, dt, {3, 9}, 0, 64, QueryReduce::kMean, HeadReduce::kSum, false, g);
    }
  }
}

}  // namespace reference

// ---- against the CPU back end (cpu/*.cc), on the shapes of test/cuda-attention.test.ts
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
    p.q = emu_test::strided_view(q.data(), c.dt, {B, H, Nq, D}, qs, dev);
    p.k = emu_test::strided_view(k.data(), c.dt, {B, H, Nk, D}, ks, dev);
    p.key_bias = emu_test::strided_view(bias.data(), DType::kF32, {B, Nk}, {Nk, 1}, dev);
    p.has_key_bias = true;
    p.scale = 1.0f / std::sqrt((float)D);
    p.causal = c.causal; p.causal_offset = c.offset;
    p.reduce.query_rows = rows.data(); p.reduce.num_query_rows = rows.size();
    p.reduce.query_reduce = c.qr; p.reduce.head_reduce = c.hr; p.reduce.key_begin = c.kb; p.reduce.key_end = ke;
    p.out = emu_test::strided_view(dev < 0 ? o_cpu.data() : o_gpu.data(), DType::kF32, osh, cont(osh), dev);
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


static void reduce(DType dt, std::vector<int32_t> rows, int64_t kb, HeadReduce hr, QueryReduce qr, std::mt19937& g) {
  const int64_t B = 2, H = 3, Nq = 77, Nk = 300;
  auto pr = fill(B * H * Nq * Nk, dt, g, 1);
  if (rows.empty()) { rows.resize(Nq); std::iota(rows.begin(), rows.end(), 0); }
  const int64_t W = Nk - kb;
  std::vector<int64_t> osh = hr == HeadReduce::kNone ? std::vector<int64_t>{B, H, W} : std::vector<int64_t>{B, W};
  std::vector<float> oc(B * H * W), og(B * H * W);
  for (int dev : {-1, 0}) {
    ReduceAttentionParams p;
    p.probs = emu_test::strided_view(pr.data(), dt, {B, H, Nq, Nk}, cont({B, H, Nq, Nk}), dev);
    p.reduce.query_rows = rows.data(); p.reduce.num_query_rows = rows.size();
    p.reduce.key_begin = kb; p.reduce.key_end = Nk; p.reduce.head_reduce = hr; p.reduce.query_reduce = qr;
    p.out = emu_test::strided_view(dev < 0 ? oc.data() : og.data(), DType::kF32, osh, cont(osh), dev);
    Status st = dev < 0 ? cpu::reduce_attention(p) : cuda::reduce_attention(p);
    if (!st.ok()) { ++failures; fprintf(stderr, "FAIL reduce: %s\n", st.message.c_str()); return; }
  }
  const int64_t n = hr == HeadReduce::kNone ? B * H * W : B * W;
  for (int64_t i = 0; i < n; ++i)
    if (!(std::fabs(og[i] - oc[i]) <= 1e-7 + 1e-5 * std::fabs(oc[i]))) { ++failures; fprintf(stderr, "FAIL reduce [%" PRId64 "] %g vs %g\n", i, og[i], oc[i]); return; }
  fprintf(stderr, "reduce ok dt%d\n", (int)dt);
}


static void run() {
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
}

}  // namespace parity

// Optional argument: one section of the reference checks ("att", "reduce").
int main(int argc, char** argv) {
  std::mt19937 g(1234);
  reference::run(argc, argv, g);
  if (argc < 2) parity::run();
  fprintf(stderr, "%ld launches\n", emu::launches);
  return emu_test::finish();
}
