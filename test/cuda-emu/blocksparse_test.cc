// Block-sparse attention, block attention mass, block pooling and reordering
// (cuda/blocksparse.cu) under the emulator, against a float64 reference and
// the CPU back end.
//
// The rule (README "CPU and GPU: tolerance and ties", FlashAttention's): the
// tensor-core kernel rounds q, k, v and P to f16/bf16 and accumulates in f32
// in another order than the CPU; the CPU back end at the same precision is
// the same-precision baseline. Per output element,
//   |cuda − ref64| ≤ 2 · max|cpu − ref64| + atol,   atol = one ulp of the output type at 1,
// with ref64 the exact masked softmax (renormalised over the kept keys) of
// the rounded inputs. LSE: |cuda − ref64| ≤ 1e-3 + 2·max|cpu − ref64|.
// Covered: f16 and bf16 inputs, f32 inputs at precision bf16 and f16 (the
// cp.async and the scalar-load staging; rows off 16-byte alignment), head
// dims 64/80/96/128, GQA, N ≠ Nk, tails (1, 65, 130 tokens), both layouts
// (bnhd as strided views), masks with an empty row, a full list, broadcast
// over heads, block sizes 64 and 128, the fused permutation, and the
// INT8 (m16n8k32 QKᵀ after the quantize pre-pass) and the unsupported
// combinations (ERR_UNSUPPORTED, never a silent fallback).
// Outputs start as NaN so an unwritten element fails.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "tokensieve/blocksparse.h"

using namespace tokensieve;
using emu_test::Buf;
using emu_test::check_no_leak;
using emu_test::make_buf;
using emu_test::normal;
using emu_test::strided_view;

namespace {

std::mt19937 rng(20261205);

struct Case {
  const char* name;
  DType dt;
  BlockSparsePrecision prec;
  int64_t B, Hq, Hkv, N, Nk, D;
  bool bnhd;
  int64_t bq, bk;
  int mask;  // 0 dense, 1 random with an empty row, 2 random + full list, broadcast over heads
  bool perm;
  bool shifted = false;  // q, k, v start one element past a 16-byte boundary: the scalar-load path
};

// The value the kernels multiply: rounded to the tensor-core type; kInt8 is
// compared with exact attention on the inputs as given (its error is the
// quantization's, which the CPU baseline carries too).
double round_to(double x, BlockSparsePrecision p, DType dt) {
  if (p == BlockSparsePrecision::kInt8) return x;
  const bool half = p == BlockSparsePrecision::kF16 || (p == BlockSparsePrecision::kNative && dt == DType::kF16);
  return half ? f16_to_f32(f32_to_f16(static_cast<float>(x))) : bf16_to_f32(f32_to_bf16(static_cast<float>(x)));
}

// Logical [B, H, N, D] strides of a tensor stored [B, H, N, D] or [B, N, H, D].
std::vector<int64_t> strides_of(int64_t H, int64_t N, int64_t D, bool bnhd) {
  return bnhd ? std::vector<int64_t>{N * H * D, D, H * D, 1} : std::vector<int64_t>{H * N * D, N * D, D, 1};
}

void run_case(const Case& c) {
  const int64_t B = c.B, Hq = c.Hq, Hkv = c.Hkv, N = c.N, Nk = c.Nk, D = c.D;
  const int64_t nQ = (N + c.bq - 1) / c.bq, nK = (Nk + c.bk - 1) / c.bk;
  const int64_t sh = c.shifted ? 1 : 0;
  Buf q = make_buf(B * Hq * N * D + sh, c.dt), k = make_buf(B * Hkv * Nk * D + sh, c.dt), v = make_buf(B * Hkv * Nk * D + sh, c.dt);
  const auto qf = normal(B * Hq * N * D, rng), kf = normal(B * Hkv * Nk * D, rng), vf = normal(B * Hkv * Nk * D, rng);
  for (size_t i = 0; i < qf.size(); ++i) q.set(static_cast<int64_t>(i) + sh, qf[i]);
  for (size_t i = 0; i < kf.size(); ++i) k.set(static_cast<int64_t>(i) + sh, kf[i]), v.set(static_cast<int64_t>(i) + sh, vf[i]);
  const auto qs = strides_of(Hq, N, D, c.bnhd), ks = strides_of(Hkv, Nk, D, c.bnhd);
  auto at = [&](const Buf& t, const std::vector<int64_t>& s, int64_t b, int64_t h, int64_t n, int64_t d) {
    return static_cast<double>(t.get(sh + b * s[0] + h * s[1] + n * s[2] + d));
  };
  // The mask: [Bm, Hm, nQ] counts, [.., L] lists; L = nK (+1 padding slot).
  const int64_t Hm = c.mask == 2 ? 1 : Hq, L = nK + 1, rows = B * Hm * nQ;
  std::vector<int32_t> cnt(rows, 0), idx(rows * L, -7), fcnt(rows, 0), fidx(rows * L, -7);
  std::vector<uint8_t> keep(rows * nK, 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < nK; ++j) {
      const bool kept = c.mask == 0 || (rng() % 100) < 45;
      if (!kept) continue;
      keep[r * nK + j] = 1;
      if (c.mask == 2 && rng() % 2) fidx[r * L + fcnt[r]++] = static_cast<int32_t>(j);
      else idx[r * L + cnt[r]++] = static_cast<int32_t>(j);
    }
    if (cnt[r] + fcnt[r] == 0) {  // every row computes something (the empty row is made below)
      const int64_t j = r % nK;
      keep[r * nK + j] = 1;
      idx[r * L + cnt[r]++] = static_cast<int32_t>(j);
    }
  }
  if (c.mask == 1) {  // one empty row
    cnt[rows - 1] = 0;
    for (int64_t j = 0; j < nK; ++j) keep[(rows - 1) * nK + j] = 0;
  }
  std::vector<int32_t> perm;
  if (c.perm) {
    perm.resize(Hq * N);
    for (int64_t h = 0; h < Hq; ++h) {
      for (int64_t i = 0; i < N; ++i) perm[h * N + i] = static_cast<int32_t>(i);
      std::shuffle(perm.begin() + h * N, perm.begin() + (h + 1) * N, rng);
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // float64 reference on the inputs as the kernel rounds them, in attended order.
  std::vector<double> ref(B * Hq * N * D, 0.0), ref_lse(B * Hq * N, -INFINITY);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t p = 0; p < N; ++p) {
        const int64_t i = c.perm ? perm[h * N + p] : p, kvh = h / (Hq / Hkv);
        const int64_t mrow = (b * Hm + (Hm == 1 ? 0 : h)) * nQ + p / c.bq;
        std::vector<double> s(Nk, -INFINITY);
        double mx = -INFINITY;
        for (int64_t jp = 0; jp < Nk; ++jp) {
          if (!keep[mrow * nK + jp / c.bk]) continue;
          const int64_t j = c.perm ? perm[h * N + jp] : jp;
          double acc = 0;
          for (int64_t d = 0; d < D; ++d)
            acc += round_to(at(q, qs, b, h, i, d), c.prec, c.dt) * round_to(at(k, ks, b, kvh, j, d), c.prec, c.dt);
          s[jp] = acc * scale;
          mx = std::max(mx, s[jp]);
        }
        if (mx == -INFINITY) continue;
        double l = 0;
        for (int64_t jp = 0; jp < Nk; ++jp) l += std::exp(s[jp] - mx);
        ref_lse[(b * Hq + h) * N + i] = mx + std::log(l);
        for (int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (int64_t jp = 0; jp < Nk; ++jp) {
            if (s[jp] == -INFINITY) continue;
            const int64_t j = c.perm ? perm[h * N + jp] : jp;
            o += std::exp(s[jp] - mx) / l * round_to(at(v, ks, b, kvh, j, d), c.prec, c.dt);
          }
          ref[((b * Hq + h) * N + i) * D + d] = o;
        }
      }
  auto run = [&](bool device, Buf& out, std::vector<float>& lse) {
    out = make_buf(B * Hq * N * D, c.dt);
    for (int64_t i = 0; i < B * Hq * N * D; ++i) out.set(i, NAN);
    lse.assign(B * Hq * N, NAN);
    const int dev = device ? 0 : -1;
    BlockSparseAttentionParams p;
    const size_t off = static_cast<size_t>(sh) * dtype_size(c.dt);
    p.q = strided_view(q.bytes.data() + off, c.dt, {B, Hq, N, D}, qs, dev);
    p.k = strided_view(k.bytes.data() + off, c.dt, {B, Hkv, Nk, D}, ks, dev);
    p.v = strided_view(v.bytes.data() + off, c.dt, {B, Hkv, Nk, D}, ks, dev);
    p.out = strided_view(out.bytes.data(), c.dt, {B, Hq, N, D}, qs, dev);
    p.lse = emu_test::view(lse.data(), DType::kF32, {B, Hq, N}, dev);
    p.mask.dense = c.mask == 0;
    p.mask.block_q = c.bq;
    p.mask.block_k = c.bk;
    if (c.mask != 0) {
      p.mask.num_blocks = emu_test::view(cnt.data(), DType::kI32, {B, Hm, nQ}, dev);
      p.mask.indices = emu_test::view(idx.data(), DType::kI32, {B, Hm, nQ, L}, dev);
      if (c.mask == 2) {
        p.mask.full_num_blocks = emu_test::view(fcnt.data(), DType::kI32, {B, Hm, nQ}, dev);
        p.mask.full_indices = emu_test::view(fidx.data(), DType::kI32, {B, Hm, nQ, L}, dev);
      }
    }
    if (c.perm) p.perm = emu_test::view(perm.data(), DType::kI32, {Hq, N}, dev);
    p.scale = scale;
    p.precision = c.prec;
    return device ? cuda::block_sparse_attention(p) : cpu::block_sparse_attention(p);
  };
  Buf out_cpu, out_gpu;
  std::vector<float> lse_cpu, lse_gpu;
  const Status sc = run(false, out_cpu, lse_cpu);
  const Status sg = run(true, out_gpu, lse_gpu);
  check_no_leak(c.name);
  EXPECT(sc.ok() && sg.ok(), "%s: cpu %s / cuda %s", c.name, sc.message.c_str(), sg.message.c_str());
  if (!sc.ok() || !sg.ok()) return;
  double cpu_err = 0, gpu_err = 0, cpu_lse_err = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t n = 0; n < N; ++n) {
        const int64_t li = (b * Hq + h) * N + n;
        if (std::isfinite(ref_lse[li])) cpu_lse_err = std::max(cpu_lse_err, std::fabs(lse_cpu[li] - ref_lse[li]));
        for (int64_t d = 0; d < D; ++d)
          cpu_err = std::max(cpu_err, std::fabs(out_cpu.get(b * qs[0] + h * qs[1] + n * qs[2] + d) - ref[li * D + d]));
      }
  const bool half_out = c.dt == DType::kF16;
  const double atol = c.dt == DType::kF32 ? 1e-6 : half_out ? 1.0 / 1024 : 1.0 / 128;
  const double bound = 2 * cpu_err + atol;
  int64_t bad = 0, bad_lse = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t n = 0; n < N; ++n) {
        const int64_t li = (b * Hq + h) * N + n;
        const double gl = lse_gpu[li];
        if (std::isfinite(ref_lse[li]) ? !(std::fabs(gl - ref_lse[li]) <= 1e-3 + 2 * cpu_lse_err) : gl != -INFINITY) {
          if (bad_lse++ < 3) fprintf(stderr, "  %s lse[%ld] cuda %g ref %g\n", c.name, (long)li, gl, ref_lse[li]);
        }
        for (int64_t d = 0; d < D; ++d) {
          const double g = out_gpu.get(b * qs[0] + h * qs[1] + n * qs[2] + d);
          const double e = std::fabs(g - ref[li * D + d]);
          gpu_err = std::max(gpu_err, std::isnan(e) ? INFINITY : e);
          if (!(e <= bound) && bad++ < 3)
            fprintf(stderr, "  %s out[%ld,%ld,%ld,%ld] cuda %g ref %g cpu err %g\n", c.name, (long)b, (long)h, (long)n,
                    (long)d, g, ref[li * D + d], cpu_err);
        }
      }
  EXPECT(bad == 0, "%s: %ld outputs beyond 2·cpu_err + atol (cpu err %.3g, cuda err %.3g)", c.name, (long)bad, cpu_err,
         gpu_err);
  if (c.prec == BlockSparsePrecision::kInt8) {
    // The codes and scales are the CPU's (same rounding, same order of the
    // f64 means); only the f32 logit products and the f16 P·V sums differ.
    double diff = 0;
    for (int64_t i = 0; i < B * Hq * N * D; ++i) diff = std::max(diff, static_cast<double>(std::fabs(out_gpu.get(i) - out_cpu.get(i))));
    EXPECT(diff <= 4e-3, "%s: INT8 CUDA vs CPU differ by %g", c.name, diff);
  }
  EXPECT(bad_lse == 0, "%s: %ld lse values off", c.name, (long)bad_lse);
  fprintf(stderr, "%s: cpu err %.3g, cuda err %.3g (bound %.3g)\n", c.name, cpu_err, gpu_err, bound);
}

void errors() {
  Buf q = make_buf(1 * 1 * 64 * 64, DType::kF16);
  std::vector<float> qf = normal(64 * 64, rng);
  for (int64_t i = 0; i < 64 * 64; ++i) q.set(i, qf[i]);
  Buf out = make_buf(64 * 64, DType::kF16);
  auto call = [&](DType dt, int64_t D, int64_t bq, BlockSparsePrecision pr) {
    BlockSparseAttentionParams p;
    p.q = p.k = p.v = emu_test::view(q.bytes.data(), dt, {1, 1, 64 * 64 / D, D}, 0);
    p.out = emu_test::view(out.bytes.data(), dt, {1, 1, 64 * 64 / D, D}, 0);
    p.mask.dense = true;
    p.mask.block_q = p.mask.block_k = bq;
    p.precision = pr;
    return cuda::block_sparse_attention(p);
  };
  EXPECT(call(DType::kF16, 32, 64, BlockSparsePrecision::kNative).code == Code::kUnsupported, "head dim 32");
  EXPECT(call(DType::kF16, 64, 32, BlockSparsePrecision::kNative).code == Code::kUnsupported, "block 32");
  EXPECT(call(DType::kF16, 64, 64, BlockSparsePrecision::kNative).ok(), "a supported call");
  check_no_leak("unsupported");
  // NaN in k: the device scan reports it (kRange) when asked, in both ops.
  q.set(64 * 64 - 5, NAN);
  BlockSparseAttentionParams p;
  p.q = p.k = p.v = emu_test::view(q.bytes.data(), DType::kF16, {1, 1, 64, 64}, 0);
  p.out = emu_test::view(out.bytes.data(), DType::kF16, {1, 1, 64, 64}, 0);
  p.mask.dense = true;
  for (BlockSparsePrecision pr : {BlockSparsePrecision::kNative, BlockSparsePrecision::kInt8}) {
    p.precision = pr;
    p.check_finite = true;
    const Status s = cuda::block_sparse_attention(p);
    EXPECT(s.code == Code::kRange && s.message.find("NaN") != std::string::npos, "NaN input: %s", s.message.c_str());
    p.check_finite = false;
    EXPECT(cuda::block_sparse_attention(p).ok(), "NaN input without the check runs");
  }
  std::vector<float> mass(1, 0.f);
  BlockAttentionMassParams m;
  m.q = m.k = p.q;
  m.block_q = m.block_k = 64;
  m.out = emu_test::view(mass.data(), DType::kF32, {1, 1, 1, 1}, 0);
  const Status sm = cuda::block_attention_mass(m);
  EXPECT(sm.code == Code::kRange, "mass with NaN input: %s", sm.message.c_str());
  check_no_leak("NaN checks");
}

// Mass, pooling and reordering against the CPU back end.
void helpers() {
  const int64_t B = 2, H = 2, Hkv = 1, N = 37, Nk = 41, D = 24;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    Buf q = make_buf(B * H * N * D, dt), k = make_buf(B * Hkv * Nk * D, dt);
    const auto qf = normal(B * H * N * D, rng), kf = normal(B * Hkv * Nk * D, rng);
    for (size_t i = 0; i < qf.size(); ++i) q.set(static_cast<int64_t>(i), qf[i]);
    for (size_t i = 0; i < kf.size(); ++i) k.set(static_cast<int64_t>(i), kf[i]);
    const int64_t bq = 8, bk = 16, nQ = (N + bq - 1) / bq, nK = (Nk + bk - 1) / bk;
    const std::vector<int32_t> rows{0, 3, 9, 10, 36};
    for (int sel = 0; sel < 2; ++sel) {
      std::vector<float> mc(B * H * nQ * nK, NAN), mg(B * H * nQ * nK, NAN);
      for (int dev = -1; dev <= 0; ++dev) {
        BlockAttentionMassParams p;
        p.q = emu_test::view(q.bytes.data(), dt, {B, H, N, D}, dev);
        p.k = emu_test::view(k.bytes.data(), dt, {B, Hkv, Nk, D}, dev);
        p.block_q = bq;
        p.block_k = bk;
        p.scale = 0.3f;
        if (sel) p.query_rows = rows.data(), p.num_query_rows = static_cast<int64_t>(rows.size());
        p.out = emu_test::view(dev < 0 ? mc.data() : mg.data(), DType::kF32, {B, H, nQ, nK}, dev);
        const Status s = dev < 0 ? cpu::block_attention_mass(p) : cuda::block_attention_mass(p);
        EXPECT(s.ok(), "mass: %s", s.message.c_str());
      }
      check_no_leak("mass");
      for (size_t i = 0; i < mc.size(); ++i)
        EXPECT(std::fabs(mc[i] - mg[i]) <= 1e-5f * std::max(1.f, std::fabs(mc[i])), "mass[%zu] cpu %g cuda %g", i, mc[i], mg[i]);
    }
    // pooling
    const int64_t blk = 10, nB = (N + blk - 1) / blk;
    std::vector<float> mean_c(B * H * nB * D, NAN), mean_g(B * H * nB * D, NAN), sim_c(B * H * nB, NAN), sim_g(B * H * nB, NAN);
    for (int dev = -1; dev <= 0; ++dev) {
      BlockPoolParams p;
      p.x = emu_test::view(q.bytes.data(), dt, {B, H, N, D}, dev);
      p.block = blk;
      p.mean = emu_test::view(dev < 0 ? mean_c.data() : mean_g.data(), DType::kF32, {B, H, nB, D}, dev);
      p.self_sim = emu_test::view(dev < 0 ? sim_c.data() : sim_g.data(), DType::kF32, {B, H, nB}, dev);
      const Status s = dev < 0 ? cpu::block_pool(p) : cuda::block_pool(p);
      EXPECT(s.ok(), "pool: %s", s.message.c_str());
    }
    for (size_t i = 0; i < mean_c.size(); ++i) EXPECT(std::fabs(mean_c[i] - mean_g[i]) <= 1e-6f, "pool mean[%zu]", i);
    for (size_t i = 0; i < sim_c.size(); ++i) EXPECT(std::fabs(sim_c[i] - sim_g[i]) <= 1e-6f, "pool selfSim[%zu]", i);
    // reordering, forward and inverse: byte-equal with the CPU
    std::vector<int32_t> perm(H * N);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < N; ++i) perm[h * N + i] = static_cast<int32_t>(i);
      std::shuffle(perm.begin() + h * N, perm.begin() + (h + 1) * N, rng);
    }
    for (int inv = 0; inv < 2; ++inv) {
      Buf oc = make_buf(B * H * N * D, dt), og = make_buf(B * H * N * D, dt);
      for (int64_t i = 0; i < B * H * N * D; ++i) oc.set(i, NAN), og.set(i, NAN);
      for (int dev = -1; dev <= 0; ++dev) {
        ApplyReorderParams p;
        p.x = emu_test::view(q.bytes.data(), dt, {B, H, N, D}, dev);
        p.perm = emu_test::view(perm.data(), DType::kI32, {H, N}, dev);
        p.inverse = inv;
        p.out = emu_test::view(dev < 0 ? oc.bytes.data() : og.bytes.data(), dt, {B, H, N, D}, dev);
        const Status s = dev < 0 ? cpu::apply_reorder(p) : cuda::apply_reorder(p);
        EXPECT(s.ok(), "reorder: %s", s.message.c_str());
      }
      EXPECT(oc.bytes == og.bytes, "reorder (inverse %d): CUDA differs from the CPU", inv);
      for (int64_t i = 0; i < B * H * N * D; ++i) EXPECT(!std::isnan(og.get(i)), "reorder left element %ld unwritten", (long)i);
    }
  }
}

}  // namespace

int main() {
  using P = BlockSparsePrecision;
  const Case cases[] = {
      {"f16 d64 GQA random mask, empty row", DType::kF16, P::kNative, 1, 2, 1, 130, 130, 64, false, 64, 64, 1, false},
      {"bf16 d80 dense N!=Nk 128-blocks", DType::kBF16, P::kNative, 1, 1, 1, 65, 150, 80, false, 128, 128, 0, false},
      {"f32->bf16 d96 bnhd perm full list", DType::kF32, P::kBF16, 2, 2, 2, 70, 70, 96, true, 64, 64, 2, true},
      {"f16 d128 one token", DType::kF16, P::kNative, 1, 1, 1, 1, 1, 128, false, 64, 64, 0, false},
      {"bf16->f16 d64 bnhd perm random", DType::kBF16, P::kF16, 1, 2, 1, 129, 129, 64, true, 64, 128, 1, true},
      {"int8 f16 d64 GQA random mask", DType::kF16, P::kInt8, 1, 2, 1, 130, 130, 64, false, 64, 64, 1, false},
      {"int8 bf16 d80 bnhd perm full list", DType::kBF16, P::kInt8, 1, 2, 2, 197, 197, 80, true, 64, 64, 2, true},
      {"int8 f32 d96 dense", DType::kF32, P::kInt8, 1, 1, 1, 70, 70, 96, false, 64, 64, 0, false},
      {"f16 d64 rows not 16-byte aligned", DType::kF16, P::kNative, 1, 2, 2, 100, 100, 64, false, 64, 64, 1, false, true},
      {"int8 bf16 d128 rows not 16-byte aligned", DType::kBF16, P::kInt8, 1, 1, 1, 80, 80, 128, false, 64, 64, 0, true, true},
  };
  for (const Case& c : cases) run_case(c);
  errors();
  helpers();
  return emu_test::finish();
}
