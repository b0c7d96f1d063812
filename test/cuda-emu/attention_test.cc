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
    // Float64 checks of features the tolerance matrix (parity::run) does not
    // rotate through: a batch whose keys are all masked, a one-column key
    // range far from the rows, scale given, the cudaMalloc fallback.
    std::vector<AttCase> cases;
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) cases.push_back({2, 3, 1, 1, 15, dt, false});
    AttCase c;
    c = {3, 2, 20, 90, 72, DType::kBF16, true}; c.mask_all_b0 = true; c.hr = HeadReduce::kNone; cases.push_back(c);
    c = {2, 2, 66, 66, 40, DType::kF32, false}; c.causal = true; c.offset = -80; cases.push_back(c);  // no row sees a key
    c = {1, 1, 5, 300, 16, DType::kF32, false}; c.rows = {4}; c.bias = false; c.kb = 250; c.ke = 251; c.scale = 0.7f; cases.push_back(c);
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
using emu_test::as_f32;

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


// The tolerance rule (README, "CPU and GPU: tolerance and ties"): against a
// float64 reference of what the precision computes (inputs rounded as it
// rounds them), |cuda − ref64| <= 2·max|cpu − ref64| + atol, the CPU at the
// same precision being the baseline. atol covers f32 rounding of the output
// sums: 1e-6 of the largest reference value plus 2^-21 of the element.
struct Case {
  int64_t B, H, Nq, Nk, D;
  DType dt;
  ScorePrecision prec = ScorePrecision::kNative;
  bool bnhd = false;
  bool causal = false;
  int64_t offset = 0;
  std::vector<int32_t> rows = {};  // empty: all rows
  int64_t kb = 0, ke = -1;
  QueryReduce qr = QueryReduce::kMean;
  HeadReduce hr = HeadReduce::kMean;
  bool bias = true;
  bool accumulate = false;
  int unaligned = 0;  // 1: row stride D + 1 elements; 2: data one element past a 16-byte boundary
};

static const char* prec_name(ScorePrecision p) {
  return p == ScorePrecision::kNative ? "native" : p == ScorePrecision::kTF32 ? "tf32" : p == ScorePrecision::kBF16 ? "bf16" : "int8";
}

// cvt.rna.tf32: 10 mantissa bits, ties away from zero.
static float round_tf32(float x) {
  uint32_t u; memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & ~0x1fffu;
  float r; memcpy(&r, &u, 4); return r;
}

// The input as the precision's products see it (kInt8: the exact input;
// its quantization error is the baseline's too).
static double as_seen(float x, DType dt, ScorePrecision p) {
  if (p == ScorePrecision::kTF32 && dt == DType::kF32) return round_tf32(x);
  if (p == ScorePrecision::kBF16) return bf16_to_f32(f32_to_bf16(x));
  return x;
}

static int64_t tol_checks = 0;

static void att(const Case& c, std::mt19937& g) {
  const int64_t B = c.B, H = c.H, Nq = c.Nq, Nk = c.Nk, D = c.D;
  const int64_t es = dtype_size(c.dt);
  const int64_t ldd = D + (c.unaligned == 1 ? 1 : 0);  // row length in storage
  auto strides = [&](int64_t N) {
    return c.bnhd ? std::vector<int64_t>{N * H * ldd, ldd, H * ldd, 1} : std::vector<int64_t>{H * N * ldd, N * ldd, ldd, 1};
  };
  const int64_t lead = c.unaligned == 2 ? 1 : 0;  // elements before the data
  auto q = fill(lead + B * H * Nq * ldd, c.dt, g, 1.5f), k = fill(lead + B * H * Nk * ldd, c.dt, g, 1.5f);
  // The emulator's buffers are 16-byte aligned (std::vector of bytes from operator new): shift by `lead`.
  uint8_t* qd = q.data() + lead * es;
  uint8_t* kd = k.data() + lead * es;
  std::vector<float> bias(B * Nk);
  std::normal_distribution<float> nd(0, 1);
  for (int64_t i = 0; i < B * Nk; ++i) bias[i] = i % 7 == 2 ? -INFINITY : nd(g);
  const auto qs = strides(Nq), ks = strides(Nk);
  std::vector<int32_t> rows = c.rows;
  if (rows.empty()) { rows.resize(Nq); std::iota(rows.begin(), rows.end(), 0); }
  const int64_t nsel = rows.size();
  const int64_t ke = c.ke < 0 ? Nk : c.ke, W = ke - c.kb;
  const float scale = 1.0f / std::sqrt((float)D);

  // float64 reference
  std::vector<double> per_head(B * H * W, 0.0);
  std::vector<double> qrow(D), lg(Nk);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < nsel; ++s) {
        const int64_t i = rows[s];
        const int64_t end = c.causal ? std::max<int64_t>(0, std::min<int64_t>(Nk, i + c.offset + 1)) : Nk;
        for (int64_t d = 0; d < D; ++d) qrow[d] = as_seen(as_f32(qd + (b * qs[0] + h * qs[1] + i * qs[2] + d) * es, c.dt), c.dt, c.prec);
        double m = -INFINITY;
        for (int64_t j = 0; j < end; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qrow[d] * as_seen(as_f32(kd + (b * ks[0] + h * ks[1] + j * ks[2] + d) * es, c.dt), c.dt, c.prec);
          lg[j] = (double)scale * dot + (c.bias ? (double)bias[b * Nk + j] : 0.0);
          m = std::max(m, lg[j]);
        }
        if (end == 0 || m == -INFINITY) continue;
        double sum = 0;
        for (int64_t j = 0; j < end; ++j) sum += std::exp(lg[j] - m);
        for (int64_t j = c.kb; j < std::min(ke, end); ++j) per_head[(b * H + h) * W + j - c.kb] += std::exp(lg[j] - m) / sum;
      }
  const double w = c.qr == QueryReduce::kMean ? 1.0 / nsel : 1.0;
  const double prior = c.accumulate ? 0.25 : 0.0;  // what `out` holds before an accumulating call
  std::vector<double> ref;
  if (c.hr == HeadReduce::kNone) { ref.resize(B * H * W); for (size_t i = 0; i < ref.size(); ++i) ref[i] = prior + w * per_head[i]; }
  else {
    ref.assign(B * W, 0.0);
    for (int64_t b = 0; b < B; ++b) for (int64_t h = 0; h < H; ++h) for (int64_t j = 0; j < W; ++j) ref[b * W + j] += per_head[(b * H + h) * W + j];
    for (auto& v : ref) v = prior + v * w * (c.hr == HeadReduce::kMean ? 1.0 / H : 1.0);
  }

  std::vector<int64_t> osh = c.hr == HeadReduce::kNone ? std::vector<int64_t>{B, H, W} : std::vector<int64_t>{B, W};
  const int64_t n = c.hr == HeadReduce::kNone ? B * H * W : B * W;
  std::vector<float> o_cpu(n, c.accumulate ? 0.25f : 3.0f), o_gpu(n, c.accumulate ? 0.25f : NAN);  // gpu: poisoned
  Status st[2];
  for (int dev : {-1, 0}) {
    AttentionScoresParams p;
    p.q = emu_test::strided_view(qd, c.dt, {B, H, Nq, D}, qs, dev);
    p.k = emu_test::strided_view(kd, c.dt, {B, H, Nk, D}, ks, dev);
    p.key_bias = emu_test::strided_view(bias.data(), DType::kF32, {B, Nk}, {Nk, 1}, dev);
    p.has_key_bias = c.bias;
    p.scale = scale;
    p.causal = c.causal; p.causal_offset = c.offset;
    p.precision = c.prec;
    p.reduce.query_rows = rows.data(); p.reduce.num_query_rows = nsel;
    p.reduce.query_reduce = c.qr; p.reduce.head_reduce = c.hr; p.reduce.key_begin = c.kb; p.reduce.key_end = ke;
    p.reduce.accumulate = c.accumulate;
    p.out = emu_test::strided_view(dev < 0 ? o_cpu.data() : o_gpu.data(), DType::kF32, osh, cont(osh), dev);
    st[dev + 1] = dev < 0 ? cpu::attention_scores(p) : cuda::attention_scores(p);
  }
  check_no_leak("attention_scores (tolerance)");
  EXPECT(st[1].ok(), "cuda attention_scores failed: %s", st[1].message.c_str());
  // Until the CPU implements a precision, the float64 reference of the rounded inputs stands alone (base 0).
  const bool have_cpu = st[0].ok();
  EXPECT(have_cpu || st[0].code == Code::kUnsupported, "cpu attention_scores failed: %s", st[0].message.c_str());
  if (!st[1].ok()) return;
  double base = 0, maxref = 0;
  for (int64_t i = 0; i < n; ++i) maxref = std::max(maxref, std::fabs(ref[i]));
  if (have_cpu)
    for (int64_t i = 0; i < n; ++i) base = std::max(base, std::fabs((double)o_cpu[i] - ref[i]));
  double worst = 0;  // largest err / allowed
  int64_t worst_i = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double err = std::fabs((double)o_gpu[i] - ref[i]);
    const double allowed = 2 * base + 1e-6 * maxref + 0x1p-21 * std::fabs(ref[i]) + 1e-12;
    const double r = err / allowed;
    if (!(r <= worst)) { worst = r; worst_i = i; }  // NaN sticks
  }
  // kInt8: both back ends multiply the same codes (quantize_test pins them
  // byte for byte), so beyond the rule they agree to f32 rounding; the
  // quantization error in `base` would hide a wrong key by itself.
  if (c.prec == ScorePrecision::kInt8 && have_cpu) {
    double d = 0;
    for (int64_t i = 0; i < n; ++i) d = std::max(d, std::fabs((double)o_gpu[i] - o_cpu[i]) / (1e-5 * maxref + 1e-6 * std::fabs(ref[i]) + 1e-12));
    EXPECT(d <= 1.0, "att int8 %s: cuda vs cpu beyond f32 rounding (%.3g of allowed)", dtype_name(c.dt), d);
  }
  ++tol_checks;
  EXPECT(worst <= 1.0, "att %s/%s B%" PRId64 " H%" PRId64 " Nq%" PRId64 " Nk%" PRId64 " D%" PRId64 " causal%d off%" PRId64 ": [%" PRId64 "] cuda %.9g ref %.9g cpu %.9g (base %.3g, err/allowed %.3g)",
         dtype_name(c.dt), prec_name(c.prec), B, H, Nq, Nk, D, (int)c.causal, c.offset, worst_i, o_gpu[worst_i], ref[worst_i], o_cpu[worst_i], base, worst);
  fprintf(stderr, "att %s/%s B%" PRId64 " H%" PRId64 " Nq%" PRId64 " Nk%" PRId64 " D%" PRId64 ": err/allowed %.3g (cpu base %.3g%s)\n",
          dtype_name(c.dt), prec_name(c.prec), B, H, Nq, Nk, D, worst, base, have_cpu ? "" : ", no cpu");
}

// NaN in a k row that no selected row... every k row is read: NaN -> kRange for each precision.
static void att_nan(DType dt, ScorePrecision prec, std::mt19937& g) {
  const int64_t B = 1, H = 2, N = 9, D = 16;
  auto q = fill(B * H * N * D, dt, g, 1.0f);
  std::vector<uint8_t> k = q;
  const float bad = NAN;
  const int64_t at = (1 * N + 6) * D + 5;  // head 1, token 6
  if (dt == DType::kF32) memcpy(&k[at * 4], &bad, 4);
  else { const uint16_t h = dt == DType::kF16 ? 0x7e00 : 0x7fc0; memcpy(&k[at * 2], &h, 2); }
  std::vector<int32_t> rows = {0, 1};
  std::vector<float> out(B * N, NAN);
  AttentionScoresParams p;
  p.q = emu_test::strided_view(q.data(), dt, {B, H, N, D}, cont({B, H, N, D}));
  p.k = emu_test::strided_view(k.data(), dt, {B, H, N, D}, cont({B, H, N, D}));
  p.precision = prec;
  p.scale = 0.25f;
  p.reduce.query_rows = rows.data(); p.reduce.num_query_rows = 2; p.reduce.key_end = N;
  p.out = emu_test::strided_view(out.data(), DType::kF32, {B, N}, {N, 1});
  const Status s = cuda::attention_scores(p);
  EXPECT(s.code == Code::kRange && s.message.find("q and k") != std::string::npos, "NaN in k (%s/%s): got %d %s",
         dtype_name(dt), prec_name(prec), (int)s.code, s.message.c_str());
  check_no_leak("att_nan");
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
  const ScorePrecision precs[] = {ScorePrecision::kNative, ScorePrecision::kTF32, ScorePrecision::kBF16, ScorePrecision::kInt8};
  const int64_t Ds[] = {1, 3, 16, 64, 80, 96, 128, 200, 256};
  const int64_t Ns[] = {1, 7, 64, 65, 130};  // 130: three tiles; only for D < 96 (emulator time)
  // Every dtype × precision with three head dims each, rotating so that each
  // dtype meets all nine head dims (36 cases; the full product is too slow
  // under the emulator), the other features rotating with the case number:
  // sizes, B/H, causal offsets (some rows see no key), bias with -inf, key
  // ranges, row lists with repeats, accumulate, query/head reductions,
  // [B, N, H, D] layout, unaligned rows.
  int i = 0;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    for (ScorePrecision pr : precs)
      for (int j = 0; j < 3; ++j) {
        const int64_t D = Ds[i % 9];  // a dtype's 12 cases hold 9 consecutive i
        Case c{1 + i % 2, 1 + (i / 2) % 2, Ns[i % 5], Ns[(3 * i + 1) % 5], D, dt, pr};
        if (D >= 96) {  // the emulator pays per emulated MMA: keep big head dims to one or two tiles
          c.B = 1; c.H = 1 + (i % 3 == 0); c.Nq = std::min<int64_t>(c.Nq, 65); c.Nk = std::min<int64_t>(c.Nk, 65);
        }
        c.bnhd = i % 4 == 2;
        c.causal = i % 4 == 0;  // 4 and 9 coprime: causal meets every head dim
        const int64_t offs[] = {c.Nk - c.Nq, 0, -3, 5};
        c.offset = offs[(i / 3) % 4];
        c.bias = i % 5 != 4;
        if (i % 4 == 1 && c.Nk > 2) { c.kb = 1; c.ke = c.Nk - 1; }
        if (i % 5 == 2) c.rows = {static_cast<int32_t>(c.Nq - 1), 0, static_cast<int32_t>(c.Nq / 2), 0};
        c.accumulate = i % 6 == 3;
        c.qr = i % 2 ? S : M;
        const int hsel = (i + i / 9) % 3;  // not tied to the head dim
        c.hr = hsel == 0 ? HM : hsel == 1 ? HS : HN;
        c.unaligned = i % 7 == 4 ? 1 : i % 7 == 5 ? 2 : 0;
        att(c, g);
        ++i;
      }
  // Larger shapes: several key and row tiles, split keys, the two-buffer and
  // one-buffer loops (f32 D >= 128 takes the one-buffer loop in the emulator).
  {
    Case c{1, 1, 577, 577, 16, DType::kF16};  // 10 × 10 tiles, pass 1 split over 10 CTAs
    c.causal = true; c.offset = 0; c.rows = {}; att(c, g);
    c = {1, 1, 300, 300, 80, DType::kBF16}; c.kb = 3; att(c, g);
    c = {1, 1, 130, 300, 64, DType::kF32}; c.causal = true; c.offset = 300 - 130; att(c, g);
    c = {1, 1, 100, 150, 128, DType::kF32}; c.hr = HeadReduce::kNone; att(c, g);
    c = {1, 1, 200, 200, 72, DType::kF16, ScorePrecision::kInt8}; c.rows = {199, 3, 3, 150}; att(c, g);
    c = {1, 2, 130, 130, 64, DType::kF16, ScorePrecision::kBF16}; c.causal = true; c.offset = -70; c.unaligned = 1; att(c, g);
  }
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    for (ScorePrecision pr : precs) att_nan(dt, pr, g);
  EXPECT(tol_checks == 36 + 6, "tolerance cases run: %" PRId64, tol_checks);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    reduce(dt, {}, 0, HM, M, g);
    reduce(dt, {0}, 1, HM, M, g);
    reduce(dt, {5, 5, 76}, 0, HN, S, g);
  }
}

}  // namespace parity

// Optional argument: one section: the reference checks "att" or "reduce", or "tol" (the CPU/float64 tolerance matrix).
int main(int argc, char** argv) {
  std::mt19937 g(1234);
  const std::string only = argc > 1 ? argv[1] : "";
  if (only != "tol") reference::run(argc, argv, g);
  if (only.empty() || only == "tol") parity::run();
  fprintf(stderr, "%ld launches\n", emu::launches);
  return emu_test::finish();
}
