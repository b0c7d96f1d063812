// The few-rows path of attention_scores (cuda/attention_rows.cu) under the
// emulator (see run.sh): against a float64 reference and the CPU back end
// under the README's tolerance rule (error vs float64 <= 2 × the CPU's error
// + atol + one f32 ulp), for every dtype, reduce mode, causal offsets, -inf
// bias, key ranges, row lists, unaligned strides (narrow loads), bad input
// and scratch leaks. Each case runs attention_scores_rows directly and, where
// rows_path_applies, through attention_scores, counting that the path ran.
#include <cuda_runtime.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "attention_ref.h"
#include "check.h"
#include "cuda/attention.cuh"
#include "tokensieve/attention.h"

using namespace tokensieve;
using emu_test::check_no_leak;

namespace {

enum class Layout { kBHND, kBNHD, kUnaligned };

struct RowsCase {
  int64_t B, H, Nq, Nk, D;
  DType dt;
  std::vector<int32_t> rows;
  Layout layout = Layout::kBHND;
  bool causal = false;
  int64_t offset = 0;
  bool bias = true;
  bool mask_all_b0 = false;  // every key of batch 0 masked with -inf
  int64_t kb = 0, ke = -1;
  QueryReduce qr = QueryReduce::kMean;
  HeadReduce hr = HeadReduce::kMean;
  ScorePrecision prec = ScorePrecision::kNative;
};

std::string describe(const RowsCase& c) {
  char buf[256];
  snprintf(buf, sizeof buf, "B%" PRId64 " H%" PRId64 " Nq%" PRId64 " Nk%" PRId64 " D%" PRId64 " %s nsel%zu layout%d%s%s keys[%" PRId64 ",%" PRId64 ") qr%d hr%d prec%d",
           c.B, c.H, c.Nq, c.Nk, c.D, dtype_name(c.dt), c.rows.size(), static_cast<int>(c.layout),
           c.causal ? (" causal" + std::to_string(c.offset)).c_str() : "", c.bias ? " bias" : "", c.kb,
           c.ke < 0 ? c.Nk : c.ke,
           static_cast<int>(c.qr), static_cast<int>(c.hr), static_cast<int>(c.prec));
  return buf;
}

// Storage of one [B, H, N, D] input and its element strides. kUnaligned: rows
// padded by one element and the view starting one element in, so neither
// the base nor the row stride allows 8- or 16-byte loads.
struct Input {
  emu_test::Buf buf;
  std::vector<int64_t> strides;
  int64_t offset = 0;
};

Input make_input(const RowsCase& c, int64_t N, std::mt19937& g) {
  const int64_t B = c.B, H = c.H, D = c.D;
  Input in;
  const int64_t ld = c.layout == Layout::kUnaligned ? D + 1 : D;
  in.offset = c.layout == Layout::kUnaligned ? 1 : 0;
  if (c.layout == Layout::kBNHD) in.strides = {N * H * ld, ld, H * ld, 1};
  else in.strides = {H * N * ld, N * ld, ld, 1};
  const int64_t total = B * H * N * ld + in.offset;
  in.buf = emu_test::make_buf(total, c.dt);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  for (int64_t i = 0; i < total; ++i) in.buf.set(i, nd(g));
  return in;
}

void* data_of(Input& in) { return in.buf.bytes.data() + in.offset * dtype_size(in.buf.dtype); }

// The input with every element rounded as precision `prec` rounds operands
// (core/dtype.h), in the same dtype and layout: exact there for the cases
// used (f32 to tf32 or bf16, f16 to bf16 keep the value representable).
Input rounded(const Input& in, ScorePrecision prec) {
  Input r = in;
  const int64_t n = static_cast<int64_t>(in.buf.bytes.size() / dtype_size(in.buf.dtype));
  for (int64_t i = 0; i < n; ++i) {
    const float v = in.buf.get(i);
    r.buf.set(i, prec == ScorePrecision::kTF32 ? f32_round_tf32(v) : prec == ScorePrecision::kBF16 ? f32_round_bf16(v) : v);
  }
  return r;
}

void run_case(const RowsCase& c, std::mt19937& g) {
  const std::string name = describe(c);
  const int64_t B = c.B, H = c.H, Nk = c.Nk, D = c.D;
  Input q = make_input(c, c.Nq, g), k = make_input(c, Nk, g);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> bias(B * Nk);
  for (int64_t i = 0; i < B * Nk; ++i) bias[i] = (i % 7 == 2) ? -INFINITY : nd(g);
  if (c.mask_all_b0)
    for (int64_t j = 0; j < Nk; ++j) bias[j] = -INFINITY;
  const int64_t ke = c.ke < 0 ? Nk : c.ke, W = ke - c.kb;
  const std::vector<int64_t> osh =
      c.hr == HeadReduce::kNone ? std::vector<int64_t>{B, H, W} : std::vector<int64_t>{B, W};
  const size_t n_out = static_cast<size_t>(c.hr == HeadReduce::kNone ? B * H * W : B * W);

  auto params = [&](int dev, float* out) {
    AttentionScoresParams p;
    p.q = emu_test::strided_view(data_of(q), c.dt, {B, H, c.Nq, D}, q.strides, dev);
    p.k = emu_test::strided_view(data_of(k), c.dt, {B, H, Nk, D}, k.strides, dev);
    p.key_bias = emu_test::strided_view(bias.data(), DType::kF32, {B, Nk}, {Nk, 1}, dev);
    p.has_key_bias = c.bias;
    p.scale = 1.0f / std::sqrt(static_cast<float>(D));
    p.causal = c.causal;
    p.causal_offset = c.offset;
    p.reduce.query_rows = c.rows.data();
    p.reduce.num_query_rows = static_cast<int64_t>(c.rows.size());
    p.reduce.query_reduce = c.qr;
    p.reduce.head_reduce = c.hr;
    p.reduce.key_begin = c.kb;
    p.reduce.key_end = ke;
    p.out = emu_test::view(out, DType::kF32, osh, dev);
    p.precision = c.prec;
    return p;
  };

  std::vector<float> o_gpu(n_out, NAN), o_cpu(n_out, NAN);  // poisoned: unwritten elements show
  AttentionScoresParams p = params(0, o_gpu.data());
  EXPECT(cuda::rows_path_supports(p), "%s: the rows path should support this case", name.c_str());

  // The narrow-load fallback is what kUnaligned exists for; aligned f32/f16
  // rows whose length is a multiple of 16 bytes take 16-byte loads.
  const int vb = cuda::rows_path_load_bytes(p);
  const int es = static_cast<int>(dtype_size(c.dt));
  if (c.layout == Layout::kUnaligned) EXPECT(vb == es, "%s: unaligned views must load one element (got %d bytes)", name.c_str(), vb);
  else if ((D * es) % 16 == 0) EXPECT(vb == 16, "%s: aligned rows must load 16 bytes (got %d)", name.c_str(), vb);
  else if ((D * es) % 8 == 0) EXPECT(vb == 8, "%s: rows of 8k bytes must load 8 bytes (got %d)", name.c_str(), vb);

  const uint64_t calls0 = cuda::rows_path_calls();
  Status st = cuda::attention_scores_rows(p);
  EXPECT(st.ok(), "%s: attention_scores_rows: %s", name.c_str(), st.message.c_str());
  EXPECT(cuda::rows_path_calls() == calls0 + 1, "%s: the rows path did not run", name.c_str());

  AttentionScoresParams pc = params(-1, o_cpu.data());
  st = cpu::attention_scores(pc);
  EXPECT(st.ok(), "%s: cpu: %s", name.c_str(), st.message.c_str());
  // The float64 reference of the semantics: for 'tf32' / 'bf16', of the
  // rounded operands (so a path that skipped the rounding would be off by
  // the rounding error, far outside the CPU's error against it).
  Input qr_in = rounded(q, c.prec), kr_in = rounded(k, c.prec);
  AttentionScoresParams pr = p;
  pr.q = emu_test::strided_view(data_of(qr_in), c.dt, {B, H, c.Nq, D}, q.strides, 0);
  pr.k = emu_test::strided_view(data_of(kr_in), c.dt, {B, H, Nk, D}, k.strides, 0);
  pr.precision = ScorePrecision::kNative;
  const std::vector<double> exact = emu_test::attention_reference(pr);

  // Tolerance rule (README "CPU and GPU: tolerance and ties").
  double scale = 0;
  for (double e : exact) scale = std::max(scale, std::fabs(e));
  const double atol = 1e-6 * scale + 1e-30;
  double worst = 0;
  int bad = 0;
  for (size_t i = 0; i < n_out; ++i) {
    const double e = exact[i];
    const double allowed = 2 * std::fabs(o_cpu[i] - e) + atol + std::fabs(e) * std::ldexp(1.0, -23);
    const double err = std::fabs(static_cast<double>(o_gpu[i]) - e);
    if (!(err <= allowed) && bad++ < 3)
      EXPECT(false, "%s: out[%zu] = %.9g, exact %.9g, cpu %.9g (error %.3g, allowed %.3g)", name.c_str(), i, o_gpu[i], e,
             o_cpu[i], err, allowed);
    worst = std::max(worst, err / allowed);
  }
  EXPECT(bad == 0, "%s: %d elements outside the tolerance", name.c_str(), bad);

  // accumulate adds the same again, bit for bit (also: deterministic).
  std::vector<float> first = o_gpu;
  p.reduce.accumulate = true;
  st = cuda::attention_scores_rows(p);
  EXPECT(st.ok(), "%s: accumulate: %s", name.c_str(), st.message.c_str());
  size_t mismatch = 0;
  for (size_t i = 0; i < n_out; ++i) mismatch += !(o_gpu[i] == first[i] + first[i]);
  EXPECT(mismatch == 0, "%s: accumulate differs from 2× the first result in %zu elements", name.c_str(), mismatch);

  // Through the entry point: the rows path exactly when it applies, and then
  // the same bits as the direct call.
  p.reduce.accumulate = false;
  std::fill(o_gpu.begin(), o_gpu.end(), NAN);
  const bool applies = cuda::rows_path_applies(p);
  const uint64_t calls1 = cuda::rows_path_calls();
  st = cuda::attention_scores(p);
  EXPECT(st.ok(), "%s: attention_scores: %s", name.c_str(), st.message.c_str());
  EXPECT(cuda::rows_path_calls() == calls1 + (applies ? 1 : 0), "%s: dispatch (applies %d)", name.c_str(), applies);
  if (applies) {
    size_t diff = 0;
    for (size_t i = 0; i < n_out; ++i) diff += !(o_gpu[i] == first[i]);
    EXPECT(diff == 0, "%s: attention_scores differs from attention_scores_rows in %zu elements", name.c_str(), diff);
  }
  check_no_leak(name.c_str());
  fprintf(stderr, "ok %s: %d-byte loads, worst error/allowed %.3f%s\n", name.c_str(), vb, worst,
          applies ? "" : " (entry point: tile path)");
}

// Bad input: the same checks and messages as attention.cu.
void bad_input() {
  const int64_t B = 2, H = 2, N = 9, D = 8;
  std::vector<float> q(B * H * N * D), bias(B * N, 0.0f), out(B * N);
  std::mt19937 g(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : q) v = nd(g);
  std::vector<int32_t> rows = {3, 0};
  AttentionScoresParams p;
  p.q = emu_test::view(q.data(), DType::kF32, {B, H, N, D}, 0);
  p.k = p.q;
  p.key_bias = emu_test::view(bias.data(), DType::kF32, {B, N}, 0);
  p.reduce.query_rows = rows.data();
  p.reduce.num_query_rows = 2;
  p.reduce.key_end = N;
  p.out = emu_test::view(out.data(), DType::kF32, {B, N}, 0);
  p.causal = true;  // rows 3 and 0 see keys [0, 4): row 7 of k is never read by the logits kernel
  auto run = [&]() {
    Status s = cuda::attention_scores_rows(p);
    check_no_leak("bad_input");
    return s;
  };
  EXPECT(run().ok(), "clean input");
  float& k7 = q[(1 * H + 1) * N * D + 7 * D + 2];
  const float keep = k7;
  k7 = NAN;  // k row 7 (also q row 7, not selected)
  Status s = run();
  EXPECT(s.code == Code::kRange && s.message == "expected finite values in q and k but found NaN or Inf",
         "NaN in an unread k row: %d %s", static_cast<int>(s.code), s.message.c_str());
  p.check_finite = false;
  EXPECT(run().ok(), "check_finite false skips the scan");
  p.check_finite = true;
  k7 = keep;
  // A k row the logits kernel reads (row 2 < 4) is checked there, in registers.
  float& k2 = q[(1 * H + 0) * N * D + 2 * D + (D - 1)];
  const float keep2 = k2;
  for (const float v : {NAN, INFINITY, -INFINITY}) {
    k2 = v;
    s = run();
    EXPECT(s.code == Code::kRange && s.message == "expected finite values in q and k but found NaN or Inf",
           "%g in a read k row: %d %s", static_cast<double>(v), static_cast<int>(s.code), s.message.c_str());
  }
  p.check_finite = false;
  EXPECT(run().ok(), "check_finite false: a NaN in a read k row is not reported");
  p.check_finite = true;
  k2 = keep2;
  EXPECT(run().ok(), "clean input again");
  q[(0 * H + 1) * N * D + 3 * D] = INFINITY;  // selected q row 3
  s = run();
  EXPECT(s.code == Code::kRange && s.message.find("q and k") != std::string::npos, "Inf in a selected q row: %d %s",
         static_cast<int>(s.code), s.message.c_str());
  q[(0 * H + 1) * N * D + 3 * D] = 0.5f;
  p.has_key_bias = true;
  bias[5] = -INFINITY;
  EXPECT(run().ok(), "-inf bias is a mask");
  bias[6] = INFINITY;
  s = run();
  EXPECT(s.code == Code::kRange && s.message.find("keyBias") != std::string::npos, "+inf bias: %d %s",
         static_cast<int>(s.code), s.message.c_str());
  bias[6] = NAN;
  EXPECT(run().code == Code::kRange, "NaN bias");
  bias[6] = 0.0f;
  p.scale = 3e38f;  // finite inputs, logits overflow f32
  s = run();
  EXPECT(s.code == Code::kRange && s.message.find("logits") != std::string::npos, "overflow: %d %s",
         static_cast<int>(s.code), s.message.c_str());
  p.scale = 1.0f;
  // What the path refuses, and what attention_scores then routes elsewhere.
  AttentionScoresParams pi = p;
  pi.precision = ScorePrecision::kInt8;
  EXPECT(!cuda::rows_path_applies(pi) && cuda::attention_scores_rows(pi).code == Code::kUnsupported, "int8 refused");
  std::vector<int32_t> nine(9, 1);
  AttentionScoresParams pn = p;
  pn.reduce.query_rows = nine.data();
  pn.reduce.num_query_rows = 9;
  EXPECT(!cuda::rows_path_applies(pn) && cuda::attention_scores_rows(pn).code == Code::kUnsupported, "9 rows refused");
  TensorView hq = p.q;
  hq.device = -1;
  AttentionScoresParams ph = p;
  ph.q = hq;
  ph.k = hq;
  ph.key_bias.device = -1;
  ph.out.device = -1;
  EXPECT(cuda::attention_scores_rows(ph).code == Code::kDevice, "host tensors -> kDevice");
  check_no_leak("bad_input end");
}

}  // namespace

int main(int argc, char** argv) {
  std::mt19937 g(4321);
  const auto M = QueryReduce::kMean, S = QueryReduce::kSum;
  const auto HM = HeadReduce::kMean, HS = HeadReduce::kSum, HN = HeadReduce::kNone;
  const DType F32 = DType::kF32, F16 = DType::kF16, BF16 = DType::kBF16;
  std::vector<RowsCase> cases;
  auto add = [&](RowsCase c) { cases.push_back(std::move(c)); };
  // nsel 1..8 (every register bucket), every dtype, aligned and not.
  {
    const DType dts[] = {F32, F16, BF16};
    for (int n = 1; n <= cuda::kRowsPathMaxRows; ++n) {
      std::vector<int32_t> rows;
      for (int i = 0; i < n; ++i) rows.push_back((i * 5 + 3) % 11);  // unsorted
      if (n >= 3) rows[n - 1] = rows[0];                                // a row listed twice counts twice
      RowsCase c{2, 3, 11, 577, 64, dts[n % 3], rows};
      c.layout = n % 2 ? Layout::kBHND : Layout::kBNHD;
      add(c);
      c.dt = dts[(n + 1) % 3];
      c.layout = Layout::kUnaligned;
      c.D = n % 2 ? 80 : 3;
      c.Nk = 7;
      add(c);
    }
  }
  // Nk 1, 7, 4099; D 1, 3, 128, 256.
  add({1, 2, 1, 1, 1, F32, {0}});
  add({2, 1, 5, 7, 3, BF16, {4, 0}});
  add({1, 2, 3, 4099, 64, F16, {0}});
  {
    RowsCase c{2, 2, 4, 4099, 16, F32, {3, 1}};
    c.kb = 1;
    add(c);
  }
  add({1, 2, 2, 300, 128, BF16, {1}});
  add({2, 2, 3, 150, 6, F32, {2, 0}});   // 24-byte rows: 8-byte loads
  add({1, 3, 2, 150, 20, F16, {1}});     // 40-byte rows: 8-byte loads
  add({1, 2, 4, 130, 256, F32, {3, 2, 0}});
  add({2, 1, 2, 77, 256, F16, {1}, Layout::kUnaligned});
  {
    RowsCase c{1, 4, 3, 200, 128, F16, {2, 0, 1, 2, 2}};  // nsel 5: bucket 8
    c.layout = Layout::kBNHD;
    add(c);
  }
  // Causal, several offsets (a row that sees nothing, keys past the rows, the last-rows convention).
  for (int64_t off : {-3, 0, 5, 120}) {
    RowsCase c{2, 2, 9, 130, 64, off % 2 ? F16 : F32, {8, 2, 0}};
    c.causal = true;
    c.offset = off;
    c.hr = off == 0 ? HN : HM;
    add(c);
  }
  {
    RowsCase c{1, 4, 40, 600, 128, BF16, {39}};  // FastV: the last row of an LLM, causal, no bias
    c.causal = true;
    c.offset = 600 - 40;
    c.bias = false;
    add(c);
  }
  // Bias masking a whole batch, key ranges, every reduce mode.
  {
    RowsCase c{3, 2, 6, 90, 72, BF16, {5, 1}};
    c.mask_all_b0 = true;
    c.hr = HN;
    add(c);
    c.hr = HS;
    c.qr = S;
    c.kb = 7;
    c.ke = 70;
    add(c);
    c.mask_all_b0 = false;
    c.hr = HM;
    c.qr = S;
    c.kb = 89;
    c.ke = 90;
    add(c);
    c.qr = M;
    c.hr = HS;
    c.kb = 0;
    c.ke = 1;
    c.bias = false;
    add(c);
  }
  // Precision 'tf32' / 'bf16': q and k rounded in registers as the CPU rounds them.
  for (ScorePrecision pr : {ScorePrecision::kTF32, ScorePrecision::kBF16}) {
    RowsCase c{2, 3, 5, 300, 64, F32, {0}};
    c.prec = pr;
    c.kb = 1;
    add(c);
    RowsCase d{1, 2, 7, 130, 80, pr == ScorePrecision::kBF16 ? F16 : F32, {6, 2}};
    d.prec = pr;
    d.causal = true;
    d.offset = 123;
    add(d);
  }
  // FasterVLM's CLS row over frames (key range without the CLS column).
  {
    RowsCase c{6, 4, 577, 577, 64, F16, {0}};
    c.kb = 1;
    add(c);
  }
  const std::string only = argc > 1 ? argv[1] : "";
  for (size_t i = 0; i < cases.size(); ++i) {
    if (!only.empty() && std::to_string(i) != only) continue;
    run_case(cases[i], g);
  }
  // Scratch without memory pools: the cudaMalloc/cudaFree fallback.
  emu::pools_supported = 0;
  run_case(cases[0], g);
  emu::pools_supported = 1;
  if (only.empty()) bad_input();
  fprintf(stderr, "%ld launches\n", emu::launches);
  return emu_test::finish();
}
