// The CUDA entry points (cuda/*.cu) run on the CPU under the emulator in
// include/, against float64 references (see run.sh).
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

#include "tokensieve/attention.h"
#include "tokensieve/select.h"

using namespace tokensieve;

static int failures = 0;
#define EXPECT(c, ...)                                       \
  do {                                                       \
    if (!(c)) {                                              \
      ++failures;                                            \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);   \
      fprintf(stderr, __VA_ARGS__);                          \
      fprintf(stderr, "\n");                                 \
    }                                                        \
  } while (0)

static float bits_to_f32(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static uint32_t f32_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }
static uint16_t f32_to_bf16(float f) {
  uint32_t b = f32_bits(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);
  b += 0x7fffu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}
static uint16_t f32_to_f16(float f) {  // round to nearest even, via double tricks for simplicity
  const uint32_t x = f32_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (ax == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);
  const float af = bits_to_f32(ax);
  if (af >= 65520.0f) return static_cast<uint16_t>(sign | 0x7c00u);
  if (af < 6.103515625e-05f) {  // subnormal
    const int m = static_cast<int>(std::nearbyint(af / 5.9604644775390625e-08f));
    return static_cast<uint16_t>(sign | m);
  }
  int e;
  const float fr = std::frexp(af, &e);  // af = fr * 2^e, fr in [0.5, 1)
  int mant = static_cast<int>(std::nearbyint((fr * 2.0f - 1.0f) * 1024.0f));
  int ee = e - 1 + 15;
  if (mant == 1024) { mant = 0; ++ee; }
  if (ee >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  return static_cast<uint16_t>(sign | (ee << 10) | mant);
}
static float f16_to_f32(uint16_t h) { __half x{h}; return __half2float(x); }
static float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

// A float tensor in host memory posing as device memory (the emulator's
// device is the host), stored in `dtype`, with values readable as f32.
struct Buf {
  std::vector<uint8_t> bytes;
  DType dtype;
  void set(int64_t i, float v) {
    if (dtype == DType::kF32) memcpy(&bytes[i * 4], &v, 4);
    else { uint16_t h = dtype == DType::kF16 ? f32_to_f16(v) : f32_to_bf16(v); memcpy(&bytes[i * 2], &h, 2); }
  }
  float get(int64_t i) const {
    if (dtype == DType::kF32) { float v; memcpy(&v, &bytes[i * 4], 4); return v; }
    uint16_t h; memcpy(&h, &bytes[i * 2], 2);
    return dtype == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
};

static Buf make_buf(int64_t n, DType dt) { Buf b; b.dtype = dt; b.bytes.assign(n * dtype_size(dt), 0); return b; }

static TensorView view(void* data, DType dt, std::vector<int64_t> shape, std::vector<int64_t> strides, int device = 0) {
  TensorView t;
  t.data = data; t.dtype = dt; t.ndim = static_cast<int>(shape.size()); t.device = device;
  for (size_t i = 0; i < shape.size(); ++i) { t.shape[i] = shape[i]; t.strides[i] = strides[i]; }
  return t;
}
static std::vector<int64_t> contiguous(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size());
  int64_t e = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) { s[i] = e; e *= shape[i]; }
  return s;
}

static void check_no_leak(const char* what) {
  EXPECT(emu::live_allocs == 0, "%s: %ld scratch allocations leaked", what, emu::live_allocs);
  emu::live_allocs = 0;
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
  p.q = view(q.bytes.data(), c.dt, {B, H, Nq, D}, qs);
  p.k = view(k.bytes.data(), c.dt, {B, H, Nk, D}, ks);
  p.key_bias = view(bias.data(), DType::kF32, {B, Nk}, {Nk, 1});
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
  p.out = c.hr == HeadReduce::kNone ? view(out.data(), DType::kF32, {B, H, W}, contiguous({B, H, W}))
                                    : view(out.data(), DType::kF32, {B, W}, contiguous({B, W}));
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
  p.q = view(q.data(), DType::kF32, {B, H, N, D}, contiguous({B, H, N, D}));
  p.k = p.q;
  p.key_bias = view(bias.data(), DType::kF32, {B, N}, {N, 1});
  p.reduce.query_rows = rows.data();
  p.reduce.num_query_rows = rows.size();
  p.reduce.key_end = N;
  p.out = view(out.data(), DType::kF32, {B, N}, {N, 1});
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
  pb.q = view(big.data(), DType::kF32, {1, 1, 2, 300}, contiguous({1, 1, 2, 300}));
  pb.k = pb.q;
  pb.has_key_bias = false;
  std::vector<int32_t> r0 = {0};
  pb.reduce.query_rows = r0.data(); pb.reduce.num_query_rows = 1; pb.reduce.key_end = 2;
  pb.out = view(out2.data(), DType::kF32, {1, 2}, {2, 1});
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
  p.probs = view(P.bytes.data(), dt, shape, st);
  p.reduce.query_rows = rows.data();
  p.reduce.num_query_rows = nsel;
  p.reduce.query_reduce = qr;
  p.reduce.head_reduce = hr;
  p.reduce.key_begin = kb;
  p.reduce.key_end = ke;
  std::vector<float> out(ref.size(), NAN);
  p.out = hr == HeadReduce::kNone ? view(out.data(), DType::kF32, {B, H, W}, contiguous({B, H, W}))
                                  : view(out.data(), DType::kF32, {B, W}, contiguous({B, W}));
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
  p.scores = view(S.bytes.data(), dt, {B, N}, {ld, 1});
  p.k = k;
  p.order_by_score = by_score;
  p.indices = view(idx.data(), DType::kI32, {B, k}, {k, 1});
  if (values) p.values = view(val.data(), DType::kF32, {B, k}, {k, 1});
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
        const bool same = f32_bits(want) == f32_bits(val[b * k + i]) || (std::isnan(want) && std::isnan(val[b * k + i]));
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
  p.x = view(base, dt, {B, N, C}, {sb, sn, 1});
  p.indices = view(idx.data(), DType::kI32, {B, K}, {K, 1});
  p.out = view(out_p, dt, {B, K, C}, {K * C, C, 1});
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

int main(int argc, char** argv) {
  std::mt19937 g(1234);
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
  fprintf(stderr, "%s: %d failure(s), %ld launches\n", failures ? "FAILED" : "PASSED", failures, emu::launches);
  return failures ? 1 : 0;
}
