// CPU attention-score extraction.
//
// Work is split into tasks (b, h, chunk of selected query rows). A task packs
// its (b, h) keys once as f32 kᵀ panels (or reads them directly for a few
// rows), then walks its rows in tiles of kRowsPerTile: the tile's logits
// [kRowsPerTile, Nk] are computed with the 6 × 16 register tile gemm_tile
// over kᵀ packed as 16-column panels [Nk/16][D][16], and each
// row is turned into probabilities in place (max, exp, sum — the row's
// log-sum-exp) and added into the task's column sums. So QKᵀ is computed once,
// never more than kRowsPerTile × Nk logits are alive per thread, and extra
// memory is O((Nk + Nq)·D) per thread: the Nq×Nk matrix never exists.
//
// Column sums of each task land in their own scratch row; a final pass adds
// chunks and heads in a fixed order, so results do not depend on the thread
// count or on scheduling.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cpu/isa.h"
#include "cpu/smooth_mean.h"
#include "cpu/thread_pool.h"
#include "tokensieve/attention.h"
#include "tokensieve/quantize.h"

namespace tokensieve {
namespace cpu {
namespace {

constexpr int64_t kRowsPerTile = 24;        // query rows whose logits are live at once (4 groups of 6)
constexpr int64_t kColChunk = 256;          // kᵀ columns (16 panels) kept hot across a row tile
constexpr int64_t kDirectMaxRows = 4;       // up to this many rows: no kᵀ packing
// f32 keys up to this size stay in cache between calls on the development
// VMs (cls CLIP-L b5, 11.8 MB, read at 120% of the copy rate); above it
// they come from memory (Qwen2.5-VL b1, 24.5 MB). See dot_rows.
constexpr int64_t kKeysCachedBytes = int64_t{16} << 20;
constexpr int64_t kTargetTasks = 64;        // enough tasks to feed any pool size
constexpr int64_t kMinRowsPerChunk = 16;    // below this, splitting rows costs more than it gives

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Per-thread scratch that only grows, so repeated calls do not page-fault
// fresh allocations. Bounded by the largest problem a thread has seen.
struct Arena {
  std::vector<float> buf;
  float* get(int64_t n) {
    if (static_cast<int64_t>(buf.size()) < n) buf.assign(static_cast<size_t>(n), 0.0f);
    return buf.data();
  }
};
thread_local Arena tl_keys, tl_key_block, tl_logits, tl_queries, tl_bias;

// Number of row chunks per (b, h): a function of the problem shape only, so
// the summation order (and thus every bit of the result) is independent of
// the number of threads.
int64_t chunks_per_head(int64_t batch_heads, int64_t rows) {
  const int64_t want = (kTargetTasks + batch_heads - 1) / batch_heads;
  const int64_t most = std::max<int64_t>(1, rows / kMinRowsPerChunk);
  return std::max<int64_t>(1, std::min(want, most));
}

const char* elem(const TensorView& t, int64_t b, int64_t h, int64_t n) {
  return static_cast<const char*>(t.data) +
         (b * t.strides[0] + h * t.strides[1] + n * t.strides[2]) *
             static_cast<int64_t>(dtype_size(t.dtype));
}

// out (+)= w · Σ_chunks partial, then over heads as asked. partial is
// [B, H, chunks, W].
void finish(const std::vector<float>& partial, int64_t B, int64_t H, int64_t chunks, int64_t W,
            float w, HeadReduce heads, bool accumulate, float* out) {
  const float head_w = heads == HeadReduce::kMean ? w / static_cast<float>(H) : w;
  parallel_for(B, [&](int64_t b) {
    std::vector<float> sum(static_cast<size_t>(W));
    if (heads == HeadReduce::kNone) {
      for (int64_t h = 0; h < H; ++h) {
        std::fill(sum.begin(), sum.end(), 0.0f);
        for (int64_t c = 0; c < chunks; ++c)
          isa().add(&partial[static_cast<size_t>(((b * H + h) * chunks + c) * W)], sum.data(), W);
        float* o = out + (b * H + h) * W;
        for (int64_t j = 0; j < W; ++j) o[j] = (accumulate ? o[j] : 0.0f) + w * sum[j];
      }
    } else {
      std::vector<float> head(static_cast<size_t>(W));
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int64_t h = 0; h < H; ++h) {
        std::fill(head.begin(), head.end(), 0.0f);
        for (int64_t c = 0; c < chunks; ++c)
          isa().add(&partial[static_cast<size_t>(((b * H + h) * chunks + c) * W)], head.data(), W);
        isa().add(head.data(), sum.data(), W);
      }
      float* o = out + b * W;
      for (int64_t j = 0; j < W; ++j) o[j] = (accumulate ? o[j] : 0.0f) + head_w * sum[j];
    }
  });
}

struct TaskError {
  bool set = false;
  Status status;
};

Status first_error(const std::vector<TaskError>& errors) {
  for (const auto& e : errors)
    if (e.set) return e.status;
  return Status::Ok();
}

Status nonfinite_error(int64_t b, int64_t h, int32_t row) {
  return Status(Code::kRange,
                "expected finite q and k but the logits of query row " + std::to_string(row) +
                    " (batch " + std::to_string(b) + ", head " + std::to_string(h) +
                    ") are NaN or infinite: q or k holds NaN/Inf, or values too large for f32");
}

// ScorePrecision::kInt8 (attention.h): per (b, h), block scales of q and of
// k (minus its mean when smoothing), found in a pass over q and k before
// that head's tiles. The tiles then multiply the INT8 codes held as f32:
// every product and partial sum is an integer below 2^24 for D <= 1040, so
// the f32 micro-kernels accumulate exactly what an int32 accumulator would.
struct Int8Plan {
  bool on = false;
  int64_t q_block = 1, k_block = 1, nqb = 1, nkb = 1;
  std::vector<float> q_scale;  // [B·H, nqb]
  std::vector<float> k_scale;  // [B·H, nkb]
  std::vector<float> k_mean;   // [B·H, D], empty without smoothing
  std::vector<char> needed;    // [nqb]: the q blocks holding a selected row
};

const Status kInt8NonFinite(Code::kRange, "expected finite q and k but found NaN or Infinity");

void plan_int8(const AttentionScoresParams& p, Int8Plan* plan) {
  const int64_t B = p.q.shape[0], H = p.q.shape[1], Nq = p.q.shape[2], D = p.q.shape[3];
  const int64_t Nk = p.k.shape[2];
  plan->on = true;
  plan->q_block = p.q_block;
  plan->k_block = p.k_block;
  plan->nqb = (Nq + p.q_block - 1) / p.q_block;
  plan->nkb = (Nk + p.k_block - 1) / p.k_block;
  plan->q_scale.assign(static_cast<size_t>(B * H * plan->nqb), 0.0f);
  plan->k_scale.assign(static_cast<size_t>(B * H * plan->nkb), 0.0f);
  if (p.smooth_k) plan->k_mean.assign(static_cast<size_t>(B * H * D), 0.0f);
  plan->needed.assign(static_cast<size_t>(plan->nqb), 0);
  for (int64_t i = 0; i < p.reduce.num_query_rows; ++i) plan->needed[static_cast<size_t>(p.reduce.query_rows[i] / p.q_block)] = 1;
}

// Head bh's share of the plan: its mean, k block scales and the scales of
// the q blocks it needs (one block for a CLS or last row, not all of q).
// Returns false when q or k holds NaN or Inf.
bool plan_int8_head(const AttentionScoresParams& p, Int8Plan* plan, int64_t bh) {
  const IsaKernels& K = isa();
  const int64_t H = p.q.shape[1], Nq = p.q.shape[2], D = p.q.shape[3];
  const int64_t Nk = p.k.shape[2];
  const int64_t b = bh / H, h = bh % H;
  thread_local std::vector<float> row;
  if (row.size() < static_cast<size_t>(D)) row.resize(static_cast<size_t>(D));
  float* mean = p.smooth_k ? &plan->k_mean[static_cast<size_t>(bh * D)] : nullptr;
  // Runs of k's rows as f32: in place for plain f32 keys, else one row
  // converted at a time.
  auto keys = [&](int64_t j, int most) {
    if (p.k.dtype == DType::kF32) return RowRun{reinterpret_cast<const float*>(elem(p.k, b, h, j)), p.k.strides[2], most};
    K.to_f32(elem(p.k, b, h, j), p.k.dtype, D, row.data());
    return RowRun{row.data(), D, 1};
  };
  // Each k block's amax (of k − mean when smoothed, each difference
  // rounded once as the codes will take it).
  bool finite = true;
  float* k_scale = &plan->k_scale[static_cast<size_t>(bh * plan->nkb)];
  if (mean != nullptr) {
    // From the mean's pass over the keys (the only one from memory): each
    // block's column maxima and minima. Rounding is monotone, so the
    // largest k − m of a column is fl(hi − m) and the smallest fl(lo − m):
    // the amax is theirs, bit for bit, without a second pass over k. A NaN
    // or infinity in k makes the f64 sums, hence m and these differences,
    // non-finite, as does a difference that overflows.
    // (max(fl(hi − m), fl(m − lo)) is max(|fl(hi − m)|, |fl(lo − m)|):
    // lo <= hi. So the block's amax is amax_diff_rows over its two range
    // rows, which also flags a non-finite difference.)
    thread_local std::vector<float> range;  // [nkb][2][D]: block maxima, then minima
    range.resize(static_cast<size_t>(plan->nkb * 2 * D));
    for (int64_t blk = 0; blk < plan->nkb; ++blk) {
      std::fill_n(range.begin() + blk * 2 * D, D, -std::numeric_limits<float>::infinity());
      std::fill_n(range.begin() + (blk * 2 + 1) * D, D, std::numeric_limits<float>::infinity());
    }
    smoothing_mean(keys, Nk, D, mean, p.k_block, range.data(), range.data() + D, /*range_ld=*/2 * D);
    for (int64_t blk = 0; blk < plan->nkb; ++blk) {
      const float amax = K.amax_diff_rows(range.data() + blk * 2 * D, D, 2, D, mean, &finite);
      k_scale[blk] = std::max(amax, kAmaxFloor) / 127.0f;
    }
  } else {
    for (int64_t blk = 0; blk < plan->nkb; ++blk) {
      float amax = 0.0f;
      for (int64_t j = blk * p.k_block, end = std::min(Nk, (blk + 1) * p.k_block); j < end;) {
        const RowRun run = keys(j, static_cast<int>(end - j));
        amax = std::max(amax, K.amax_diff_rows(run.data, run.ld, run.count, D, nullptr, &finite));
        j += run.count;
      }
      k_scale[blk] = std::max(amax, kAmaxFloor) / 127.0f;
    }
  }
  float* q_scale = &plan->q_scale[static_cast<size_t>(bh * plan->nqb)];
  for (int64_t blk = 0; blk < plan->nqb; ++blk) {
    if (!plan->needed[static_cast<size_t>(blk)]) continue;
    float amax = 0.0f;
    for (int64_t i = blk * p.q_block; i < std::min(Nq, (blk + 1) * p.q_block); ++i) {
      const float* q_row = reinterpret_cast<const float*>(elem(p.q, b, h, i));
      if (p.q.dtype != DType::kF32) {
        K.to_f32(elem(p.q, b, h, i), p.q.dtype, D, row.data());
        q_row = row.data();
      }
      amax = std::max(amax, K.amax(q_row, D, &finite));
    }
    q_scale[blk] = std::max(amax, kAmaxFloor) / 127.0f;
  }
  return finite;
}

}  // namespace

Status attention_scores(const AttentionScoresParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.q.on_host()) return Status(Code::kDevice, "cpu::attention_scores needs host tensors");
  const IsaKernels& K = isa();
  const int64_t B = p.q.shape[0], H = p.q.shape[1], D = p.q.shape[3];
  const int64_t Nk = p.k.shape[2];
  const ScoreReduction& r = p.reduce;
  const int64_t W = r.key_end - r.key_begin;
  const int64_t nrows = r.num_query_rows;
  const int64_t chunks = chunks_per_head(B * H, nrows);
  const int64_t rows_per_chunk = (nrows + chunks - 1) / chunks;
  const int64_t tasks = B * H * chunks;

  if (p.has_key_bias && p.check_finite) {
    for (int64_t b = 0; b < B; ++b) {
      const float* bias = p.key_bias.ptr<float>() + b * p.key_bias.strides[0];
      for (int64_t j = 0; j < Nk; ++j)
        if (std::isnan(bias[j]) || bias[j] == std::numeric_limits<float>::infinity())
          return Status(Code::kRange, "expected keyBias values that are finite or -Infinity but got " +
                                          std::to_string(bias[j]) + " at [" + std::to_string(b) +
                                          ", " + std::to_string(j) + "]");
    }
  }

  // INT8: a head that is one task plans inside it, so that its keys come
  // from memory once and then from the core's cache (the mean with the
  // block scales, then the codes, are two passes over them — three, with
  // the amax pass of the unsmoothed scales: the CLS row of 16 images × 16
  // heads, 3.9 ms with the plan as a pass of its own, 3.3 ms in the task,
  // when the smoothed scales took a pass of their own too; Zen 5). Heads
  // split into chunks are planned first, once.
  Int8Plan q8;
  const bool plan_in_task = chunks == 1;
  if (p.precision == ScorePrecision::kInt8) {
    plan_int8(p, &q8);
    if (!plan_in_task) {
      std::vector<char> bad(static_cast<size_t>(B * H), 0);
      parallel_for(B * H, [&](int64_t bh) { bad[static_cast<size_t>(bh)] = !plan_int8_head(p, &q8, bh); });
      if (p.check_finite && std::find(bad.begin(), bad.end(), 1) != bad.end()) return kInt8NonFinite;
    }
  }
  // kTF32 / kBF16: q and k rounded to the tensor-core type before the f32
  // dot, so this back end is the same-precision baseline of the CUDA MMAs.
  float (*const round_input)(float) = p.precision == ScorePrecision::kTF32   ? f32_round_tf32
                                      : p.precision == ScorePrecision::kBF16 ? f32_round_bf16
                                                                             : nullptr;
  const bool bf16_round = p.precision == ScorePrecision::kBF16;
  auto round_all = [round_input, bf16_round, &K](float* v, int64_t n) {
    if (bf16_round)
      K.round_bf16(v, n);  // the same bits as f32_round_bf16, 16 lanes at a time
    else if (round_input != nullptr)
      for (int64_t d = 0; d < n; ++d) v[d] = round_input(v[d]);
  };
  // Logits on the bf16 dot tile (vdpbf16ps, where the CPU has it) when both
  // operands are bf16 values: kBF16, or bf16 q and k under kNative or kTF32
  // (which leave them unchanged, so all three give the same bits). The
  // same exact products, summed a channel pair per lane; the query scale
  // then multiplies each logit once instead of each q value (a rounding
  // apart). Row tiles only: the direct path's few rows are memory-bound.
  const bool bf16_operands = p.precision == ScorePrecision::kBF16 ||
                             ((p.precision == ScorePrecision::kNative || p.precision == ScorePrecision::kTF32) &&
                              p.q.dtype == DType::kBF16 && p.k.dtype == DType::kBF16);
  const Bf16DotKernels* const dot = bf16_operands ? bf16_dot() : nullptr;
  // INT8 logits of row tiles on vpdpbusd where the CPU has AVX512_VNNI: the
  // same exact integer dots as the f32 tile over the codes, so the same bits.
  const Int8DotKernels* const i8dot = q8.on ? int8_dot() : nullptr;

  std::vector<float> partial(static_cast<size_t>(tasks * W), 0.0f);
  std::vector<TaskError> errors(static_cast<size_t>(tasks));

  parallel_for(tasks, [&](int64_t t) {
    const int64_t b = t / (H * chunks), h = (t / chunks) % H, c = t % chunks;
    const int64_t bh = b * H + h;
    if (q8.on && plan_in_task && !plan_int8_head(p, &q8, bh) && p.check_finite) {
      errors[static_cast<size_t>(t)] = {true, kInt8NonFinite};
      return;
    }
    const int64_t row_begin = c * rows_per_chunk;
    const int64_t row_end = std::min(nrows, row_begin + rows_per_chunk);
    if (row_begin >= row_end) return;
    const int32_t* rows = r.query_rows + row_begin;
    const int64_t n = row_end - row_begin;
    float* acc = &partial[static_cast<size_t>(t * W)];

    // Visible key count of a row, and the keys any row of this chunk sees.
    auto limit_of = [&](int32_t row) -> int64_t {
      if (!p.causal) return Nk;
      const int64_t lim = static_cast<int64_t>(row) + p.causal_offset + 1;
      return std::max<int64_t>(0, std::min(Nk, lim));
    };
    int64_t nk_used = 0;
    for (int64_t i = 0; i < n; ++i) nk_used = std::max(nk_used, limit_of(rows[i]));
    if (nk_used == 0) return;

    // Logits in base 2 (FlashAttention's fold): the query scale carries
    // log2(e), so the softmax is 2^(s − max), half the work of e^(s − max);
    // the key bias (natural units) is scaled to match once per task.
    const float logit_scale = p.scale * kLog2e;
    const float* bias = nullptr;
    if (p.has_key_bias) {
      const float* kb = p.key_bias.ptr<float>() + b * p.key_bias.strides[0];
      float* bias_log2 = tl_bias.get(nk_used);  // [nk_used]
      for (int64_t j = 0; j < nk_used; ++j) {
        // A finite bias above FLT_MAX / log2(e) stays finite (the largest
        // float): it still dominates its row, as it did in natural units.
        const float v = kb[j] * kLog2e;
        bias_log2[j] = v == std::numeric_limits<float>::infinity() ? std::numeric_limits<float>::max() : v;
      }
      bias = bias_log2;
    }
    const bool direct = n <= kDirectMaxRows;
    const bool on_dot = dot != nullptr && !direct;
    // (int32 sums of (q + 128)·k stay exact up to kMaxInt8DotDepth.)
    const bool on_i8 = i8dot != nullptr && !direct && D <= kMaxInt8DotDepth;
    // bf16 inputs on the dot tile need no conversion: a row's channel pairs
    // are its bf16 values as they lie in memory (even D, 4-byte aligned
    // rows), so k's panels are a transpose of 32-bit pairs and q's rows a
    // copy. (bf16 values are unchanged by every precision's rounding.)
    auto pairs_in_place = [&](const TensorView& t) {
      return on_dot && t.dtype == DType::kBF16 && D % 2 == 0 && t.strides[2] % 2 == 0 &&
             (reinterpret_cast<uintptr_t>(elem(t, b, h, 0)) & 3) == 0;
    };
    const bool k_pairs = pairs_in_place(p.k), q_pairs = pairs_in_place(p.q);
    const int64_t ldk = direct ? D : round_up(nk_used, kColTile);
    // Per key: its codes' sum (the vpdpbusd correction), for on_i8.
    thread_local std::vector<int32_t> key_code_sums;
    if (on_i8) key_code_sums.resize(static_cast<size_t>(ldk));
    // Plain f32 operands (no INT8 codes, no rounding to a lower precision)
    // are read in place: k transposed straight into its panels, q scaled in
    // its copy.
    const bool plain_k = p.k.dtype == DType::kF32 && !q8.on && round_input == nullptr;
    const bool plain_q = p.q.dtype == DType::kF32 && !q8.on && round_input == nullptr;
    // Keys read in place from a k larger than the last level cache come
    // from memory on every call: the direct path then reads each key row in
    // order (isa.h, dot_rows).
    const bool keys_from_memory = plain_k && Nk * D * H * B * static_cast<int64_t>(sizeof(float)) > kKeysCachedBytes;

    // Keys j0 .. j0 + count − 1 as the f32 values the tiles multiply (the
    // input, or its INT8 codes: those of k − mean, one call per run of keys
    // that share a block scale, straight from plain f32 keys) into rows
    // dst [count, D].
    const float* k_mean = q8.on && !q8.k_mean.empty() ? &q8.k_mean[static_cast<size_t>(bh * D)] : nullptr;
    auto load_keys = [&](int64_t j0, int64_t count, float* dst) {
      for (int64_t j = j0; j < j0 + count;) {
        const int64_t end = q8.on ? std::min(j0 + count, (j / q8.k_block + 1) * q8.k_block) : j0 + count;
        float* d = dst + (j - j0) * D;
        const float* x = d;
        int64_t ldx = D;
        if (p.k.dtype == DType::kF32 && q8.on) {
          x = reinterpret_cast<const float*>(elem(p.k, b, h, j));
          ldx = p.k.strides[2];
        } else {
          for (int64_t i = j; i < end; ++i) {
            K.to_f32(elem(p.k, b, h, i), p.k.dtype, D, d + (i - j) * D);
            round_all(d + (i - j) * D, D);
          }
        }
        if (q8.on)
          K.code_values_rows(x, ldx, static_cast<int>(end - j), D, k_mean,
                             q8.k_scale[static_cast<size_t>(bh * q8.nkb + j / q8.k_block)], 127.0f, d, D);
        j = end;
      }
    };

    // INT8, one query row, f32 keys: each key's codes are made and
    // multiplied in registers (code_dot_rows), never stored.
    const bool codes_in_dot = q8.on && direct && n == 1 && p.k.dtype == DType::kF32;
    // Keys as f32: rows [nk_used, D] for the direct path, kᵀ panels [ldk/16][D][16].
    const float* keys = nullptr;
    int64_t keys_ld = 0;
    if (codes_in_dot) {
      // (read in place by code_dot_rows below)
    } else if (direct) {
      if (plain_k) {
        keys = reinterpret_cast<const float*>(elem(p.k, b, h, 0));
        keys_ld = p.k.strides[2];
      } else {
        float* kf = tl_keys.get(nk_used * D);
        load_keys(0, nk_used, kf);
        keys = kf;
        keys_ld = D;
      }
    } else {
      float* kt = tl_keys.get(D * ldk);
      // 16 keys at a time as rows, then transposed into their panel; plain
      // f32 keys straight from k (no copy).
      float* block = tl_key_block.get(kColTile * D);
      for (int64_t j0 = 0; j0 < ldk; j0 += kColTile) {
        const int m = static_cast<int>(std::min<int64_t>(kColTile, std::max<int64_t>(0, nk_used - j0)));
        if (plain_k && m > 0) {
          K.pack_panel(reinterpret_cast<const float*>(elem(p.k, b, h, j0)), p.k.strides[2], m, D,
                       kt + (j0 / kColTile) * D * kColTile);
          continue;
        }
        if (k_pairs && m > 0) {  // 32-bit pairs moved, not converted
          K.pack_panel(reinterpret_cast<const float*>(elem(p.k, b, h, j0)), p.k.strides[2] / 2, m, D / 2,
                       kt + (j0 / kColTile) * D * kColTile);
          continue;
        }
        if (m > 0) load_keys(j0, m, block);
        float* panel = kt + (j0 / kColTile) * D * kColTile;
        K.pack_panel(block, D, m, D, panel);
        // As bf16 pairs [ceil(D/2)][16] or INT8 quads [ceil(D/4)][16] in
        // place (panel stride D·16 kept).
        if (on_dot) dot->panel_to_pairs(panel, D, reinterpret_cast<uint32_t*>(panel));
        if (on_i8) i8dot->panel_to_quads(panel, D, reinterpret_cast<uint32_t*>(panel), key_code_sums.data() + j0);
      }
      keys = kt;
      keys_ld = ldk;
    }

    const int64_t lds = direct ? nk_used : ldk;
    float* logits = tl_logits.get(kRowsPerTile * lds);
    float* qs = tl_queries.get(kRowsPerTile * D);
    // kInt8: logit = (integer dot) · (sq · scale) · sk, per row and key.
    float row_factor[kRowsPerTile];
    std::vector<float> key_scale;
    if (q8.on) {
      key_scale.resize(static_cast<size_t>(nk_used));
      for (int64_t j = 0; j < nk_used; ++j) key_scale[static_cast<size_t>(j)] = q8.k_scale[static_cast<size_t>(bh * q8.nkb + j / q8.k_block)];
    }

    for (int64_t i0 = 0; i0 < n; i0 += kRowsPerTile) {
      const int64_t tile = std::min(kRowsPerTile, n - i0);
      int64_t tile_cols = 0;
      for (int64_t i = 0; i < tile; ++i) {
        const int32_t row = rows[i0 + i];
        float* qrow = qs + i * D;
        if (plain_q) {
          // Copied and scaled in one pass (the same single rounding).
          K.scale(reinterpret_cast<const float*>(elem(p.q, b, h, row)), logit_scale, D, qrow);
        } else if (q_pairs) {
          std::memcpy(qrow, elem(p.q, b, h, row), static_cast<size_t>(D) * 2);
        } else if (on_dot) {
          // Unscaled bf16 pairs in place (the scale multiplies the logits).
          K.to_f32(elem(p.q, b, h, row), p.q.dtype, D, qrow);
          dot->to_pairs(qrow, D, reinterpret_cast<uint32_t*>(qrow));
        } else {
          K.to_f32(elem(p.q, b, h, row), p.q.dtype, D, qrow);
          round_all(qrow, D);
          if (q8.on) {
            const float sq = q8.q_scale[static_cast<size_t>(bh * q8.nqb + row / q8.q_block)];
            K.code_values_rows(qrow, D, 1, D, nullptr, sq, 127.0f, qrow, D);
            if (on_i8) i8dot->to_quads_u8(qrow, D, reinterpret_cast<uint32_t*>(qrow));
            row_factor[i] = sq * logit_scale;
          } else {
            K.scale(qrow, logit_scale, D, qrow);
          }
        }
        tile_cols = std::max(tile_cols, limit_of(row));
      }
      if (tile_cols == 0) continue;

      if (codes_in_dot) {
        const int64_t L = limit_of(rows[i0]);
        for (int64_t j = 0; j < L;) {
          const int64_t blk = j / q8.k_block, end = std::min(L, (blk + 1) * q8.k_block);
          K.code_dot_rows(reinterpret_cast<const float*>(elem(p.k, b, h, j)), p.k.strides[2], static_cast<int>(end - j), D,
                          k_mean, q8.k_scale[static_cast<size_t>(bh * q8.nkb + blk)], 127.0f, qs, logits + j);
          j = end;
        }
      } else if (direct) {
        for (int64_t i = 0; i < tile; ++i)
          K.dot_rows(qs + i * D, D, keys, keys_ld, limit_of(rows[i0 + i]), keys_from_memory, logits + i * lds);
      } else {
        const int64_t ncols = round_up(tile_cols, kColTile);
        for (int64_t c0 = 0; c0 < ncols; c0 += kColChunk) {
          const int64_t cn = std::min(kColChunk, ncols - c0);
          for (int64_t c = c0; c < c0 + cn;) {
            // Three panels per tile call where the chunk has them (the zmm
            // tile: 24 accumulators, each broadcast feeding three FMAs),
            // four as two pairs, else two or one. The depth is only D, so a
            // wider call also spreads its setup over more FMAs.
            const int64_t left = (c0 + cn - c) / kColTile;
            const int64_t np = left == 4 ? 2 : std::min<int64_t>(3, left);
            const float* panel = keys + (c / kColTile) * D * kColTile;
            for (int64_t g = 0; g < tile; g += K.tile_rows) {
              const int rows_in_group = static_cast<int>(std::min<int64_t>(K.tile_rows, tile - g));
              if (on_i8)
                i8dot->gemm_tile(reinterpret_cast<const uint32_t*>(qs + g * D), D, rows_in_group,
                                 reinterpret_cast<const uint32_t*>(panel), D * kColTile, static_cast<int>(np),
                                 (D + 3) / 4, key_code_sums.data() + c, logits + g * lds + c, lds);
              else if (on_dot)
                dot->gemm_tile(reinterpret_cast<const uint32_t*>(qs + g * D), D, rows_in_group,
                               reinterpret_cast<const uint32_t*>(panel), D * kColTile, static_cast<int>(np),
                               (D + 1) / 2, logits + g * lds + c, lds, false);
              else if (np == 3)
                K.gemm_tile_triple(qs + g * D, D, 1, rows_in_group, panel, D * kColTile, D, logits + g * lds + c, lds,
                                   false);
              else if (np == 2)
                K.gemm_tile_wide(qs + g * D, D, 1, rows_in_group, panel, D * kColTile, D, logits + g * lds + c, lds,
                                 false);
              else
                K.gemm_tile(qs + g * D, D, 1, rows_in_group, panel, D, logits + g * lds + c, lds, false);
            }
            c += np * kColTile;
          }
        }
      }

      // Each row's probabilities over keys [key_begin, hi) in its logits
      // row (zero past the row's own limit), added into the column sums in
      // one pass over the tile: one read and write of acc per tile instead
      // of one per row.
      const int64_t hi = std::min(r.key_end, tile_cols);
      float inv_sum[kRowsPerTile];
      for (int64_t i = 0; i < tile; ++i) {
        const int64_t L = limit_of(rows[i0 + i]);
        float* s = logits + i * lds;
        inv_sum[i] = 0.0f;
        const int64_t zero_from = std::max(r.key_begin, std::min(L, hi));
        if (zero_from < hi) std::fill(s + zero_from, s + hi, 0.0f);
        if (L == 0) continue;
        if (q8.on) {
          K.scale_mul(s, row_factor[i], key_scale.data(), L);
        } else if (on_dot) {
          K.scale(s, logit_scale, L, s);
        }
        // The logits are checked before the bias (whose −inf entries mask
        // keys); without a bias the max pass checks them.
        bool finite = true;
        if (p.check_finite && bias && !K.all_finite(s, L)) finite = false;
        if (bias) K.add(bias, s, L);
        const float m = K.max(s, L, p.check_finite && !bias ? &finite : nullptr);
        if (!finite) {
          errors[static_cast<size_t>(t)] = {true, nonfinite_error(b, h, rows[i0 + i])};
          return;
        }
        if (m == -std::numeric_limits<float>::infinity()) {  // every key masked: adds nothing
          if (r.key_begin < hi) std::fill(s + r.key_begin, s + hi, 0.0f);
          continue;
        }
        inv_sum[i] = 1.0f / K.exp2_shift_sum(s, L, m);
      }
      if (hi > r.key_begin)
        K.weighted_column_sum(logits + r.key_begin, lds, static_cast<int>(tile), inv_sum, hi - r.key_begin, acc);
    }
  });
  TS_RETURN_IF_ERROR(first_error(errors));

  const float w = r.query_reduce == QueryReduce::kMean ? 1.0f / static_cast<float>(nrows) : 1.0f;
  finish(partial, B, H, chunks, W, w, r.head_reduce, r.accumulate, p.out.ptr<float>());
  return Status::Ok();
}

Status reduce_attention(const ReduceAttentionParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.probs.on_host()) return Status(Code::kDevice, "cpu::reduce_attention needs host tensors");
  const IsaKernels& K = isa();
  const TensorView& P = p.probs;
  const int64_t B = P.shape[0], H = P.shape[1];
  const ScoreReduction& r = p.reduce;
  const int64_t W = r.key_end - r.key_begin;
  const int64_t nrows = r.num_query_rows;
  const int64_t chunks = chunks_per_head(B * H, nrows);
  const int64_t rows_per_chunk = (nrows + chunks - 1) / chunks;
  const int64_t tasks = B * H * chunks;
  const size_t esize = dtype_size(P.dtype);

  std::vector<float> partial(static_cast<size_t>(tasks * W), 0.0f);
  std::vector<TaskError> errors(static_cast<size_t>(tasks));
  parallel_for(tasks, [&](int64_t t) {
    const int64_t b = t / (H * chunks), h = (t / chunks) % H, c = t % chunks;
    const int64_t row_begin = c * rows_per_chunk;
    const int64_t row_end = std::min(nrows, row_begin + rows_per_chunk);
    float* acc = &partial[static_cast<size_t>(t * W)];
    float* row = P.dtype == DType::kF32 ? nullptr : tl_logits.get(W);
    for (int64_t i = row_begin; i < row_end; ++i) {
      const char* src = elem(P, b, h, r.query_rows[i]) + r.key_begin * static_cast<int64_t>(esize);
      const float* x = reinterpret_cast<const float*>(src);
      if (row) {
        K.to_f32(src, P.dtype, W, row);
        x = row;
      }
      if (p.check_finite && !K.all_finite(x, W)) {
        errors[static_cast<size_t>(t)] = {
            true, Status(Code::kRange, "expected finite probabilities but row " +
                                           std::to_string(r.query_rows[i]) + " (batch " +
                                           std::to_string(b) + ", head " + std::to_string(h) +
                                           ") holds NaN or Infinity")};
        return;
      }
      K.add(x, acc, W);
    }
  });
  TS_RETURN_IF_ERROR(first_error(errors));
  const float w = r.query_reduce == QueryReduce::kMean ? 1.0f / static_cast<float>(nrows) : 1.0f;
  finish(partial, B, H, chunks, W, w, r.head_reduce, r.accumulate, p.out.ptr<float>());
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
