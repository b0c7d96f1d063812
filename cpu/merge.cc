// CPU token merging: bipartite soft matching, scatter merge, contextual merge.
//
// bipartite_match never stores the [Na, Nb] similarity matrix: the normalised
// destinations are packed once as 16-column panels (the size of the metric),
// and cpu/gemm.h's blocked a·bᵀ reduces each finished tile to its rows' best
// column in the epilogue.
// MatchPrecision::kBF16 rounds the normalised a-rows and b-panels to bf16
// values (kept as f32) and runs the same score pass: products of bf16 values
// are exact in f32, so only the f32 sums round.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cpu/isa.h"
#include "cpu/gemm.h"
#include "cpu/rank_key.h"
#include "cpu/thread_pool.h"
#include "tokensieve/merge.h"

namespace tokensieve {

namespace cpu {
namespace {

constexpr int64_t kMergeCols = 256;   // channels per merge task

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

const char* row_ptr(const TensorView& t, int64_t b, int64_t i) {
  return static_cast<const char*>(t.data) +
         (b * t.strides[0] + i * t.strides[1]) * static_cast<int64_t>(dtype_size(t.dtype));
}

// Rows tok[0..n) of batch row b of `t` (f32/f16/bf16) as f32, L2-normalised
// into dst + r * C (a zero row stays zero). Returns false when a row holds
// NaN or Inf. f32 rows are read in place; the norm uses four interleaved
// f64 partial sums (element d into sum d % 4), combined as (s0 + s1) +
// (s2 + s3): the exact order cuda/merge.cu uses, so both back ends get the
// same norm bits. Divided by the norm as ToMe does (metric /
// metric.norm()): a multiply by 1/norm can turn exact ±1 entries into
// 0.99999994 and break exact ties.
bool normalised_rows(const TensorView& t, int64_t b, const int32_t* tok, int64_t n, int64_t C, float* dst) {
  const float* src[16];
  for (int64_t r0 = 0; r0 < n; r0 += 16) {
    const int g = static_cast<int>(std::min<int64_t>(16, n - r0));
    for (int r = 0; r < g; ++r) {
      const char* row = row_ptr(t, b, tok[r0 + r]);
      if (t.dtype == DType::kF32) {
        src[r] = reinterpret_cast<const float*>(row);
      } else {
        isa().to_f32(row, t.dtype, C, dst + (r0 + r) * C);
        src[r] = dst + (r0 + r) * C;
      }
    }
    if (!isa().normalise_rows(src, g, C, dst + r0 * C, C)) return false;
  }
  return true;
}
// Rows tok[0..n) (n <= 16) normalised as normalised_rows does, written as
// one panel [C][16] (zero padded); f16/bf16 rows are converted into stage
// ([16, C]) first. Returns false when a row holds NaN or Inf.
bool normalised_panel(const TensorView& t, int64_t b, const int32_t* tok, int n, int64_t C, float* stage,
                      bool stream, float* panel) {
  const float* src[16];
  for (int r = 0; r < n; ++r) {
    const char* row = row_ptr(t, b, tok[r]);
    if (t.dtype == DType::kF32) {
      src[r] = reinterpret_cast<const float*>(row);
    } else {
      isa().to_f32(row, t.dtype, C, stage + r * C);
      src[r] = stage + r * C;
    }
  }
  return isa().normalise_panel(src, n, C, stream, panel);
}
bool normalised_row(const TensorView& t, int64_t b, int32_t i, int64_t C, float* dst) {
  return normalised_rows(t, b, &i, 1, C, dst);
}

// MatchPrecision::kBF16: the normalised values rounded to bf16 (nearest
// even) and kept as f32, so the score kernels below sum products that are
// exact in f32 (8-bit × 8-bit significands) — the defined bf16 semantics.
// Vectorised (isa().round_bf16): a scalar loop here, compiled for baseline
// x86-64, made the bf16 match ~20% slower than the f32 one.
void round_to_bf16(float* x, int64_t n) { isa().round_bf16(x, n); }

void store_row(const float* src, DType dt, int64_t n, void* dst) {
  if (dt == DType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * 4);
  } else if (dt == DType::kF16) {
    auto* o = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_f16(src[i]);
  } else {
    auto* o = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(src[i]);
  }
}

Status non_finite(const char* name, int64_t b) {
  return Status(Code::kRange, std::string("expected finite ") + name + " but batch row " + std::to_string(b) +
                                  " holds NaN or Inf");
}

// Per-thread scratch for the packed destinations (megabytes at 12,544
// tokens): fresh pages every call cost more than the packing.
thread_local Scratch tl_panels;
struct ScratchTrim {
  ~ScratchTrim() { tl_panels.trim(); }
};

// Column j of the destinations in the panel layout [P][C][16].
inline float* panel_col(float* panels, int64_t C, int64_t j) { return panels + (j / 16) * C * 16 + j % 16; }

// Per a-row (tokens a_tok[0..n) of batch row b): max and first argmax of the
// cosine against the normalised columns packed as 16-column panels
// [ceil(ncols/16)][C][16] (zero padded; with `dot`, the bf16 dot kernels,
// as pair panels [ceil(C/2)][16] at the same panel stride C·16). Tasks are
// row blocks (about kGemmTile rows, as many per thread): each normalises its
// rows into thread scratch (about 300 KB at 1,024 channels: they stay in the
// core's L2 for the product, instead of a separate pass writing all a-rows
// out and the product reading them back) and runs the blocked product over
// every column, reducing each finished tile in the epilogue: tiles arrive
// left to right and a strict '>' keeps the first maximum, as one pass over
// the columns would. skip_col0: column 0 never wins (ToMe's distill
// protection). Returns false when a row holds NaN or Inf.
// `parallel`: the row blocks run on all threads (else on this one).
bool match_rows(const TensorView& metric, int64_t b, const int32_t* a_tok, int64_t n, int64_t C, bool bf16,
                const Bf16DotKernels* dot, const float* panels, int64_t ncols, bool skip_col0, float* best,
                int32_t* arg, bool parallel) {
  const std::vector<int64_t> starts = gemm_row_blocks(n, 1, /*balance=*/parallel);
  const int64_t blocks = static_cast<int64_t>(starts.size()) - 1;
  std::vector<char> bad(static_cast<size_t>(blocks), 0);
  auto block = [&](int64_t I) {
    const int64_t i0 = starts[static_cast<size_t>(I)], i1 = starts[static_cast<size_t>(I + 1)];
    if (i1 <= i0) return;
    thread_local Scratch tl_block;
    float* rows = tl_block.get((i1 - i0) * C);  // [i1 - i0, C] normalised
    if (!normalised_rows(metric, b, a_tok + i0, i1 - i0, C, rows)) {
      bad[static_cast<size_t>(I)] = 1;
      return;
    }
    for (int64_t i = i0; i < i1; ++i) {
      best[i] = -std::numeric_limits<float>::infinity();
      arg[i] = 0;
    }
    auto reduce = [&](int64_t r0, int64_t r1, int64_t j0, int64_t j1, const float* tile) {
      // The tile's row maximum (vector max), then its first column: the
      // first j with s[j] > every earlier score, as the scalar scan finds
      // it (scores are finite), without its data-dependent branch per column.
      const int64_t jb = (skip_col0 && j0 == 0) ? 1 : j0;
      if (jb >= j1) return;
      for (int64_t r = r0; r < r1; ++r) {
        const float* s = tile + (r - r0) * kGemmTile;  // column j at s[j - j0]
        const float m = isa().max(s + (jb - j0), j1 - jb, nullptr);
        if (m > best[i0 + r]) {
          best[i0 + r] = m;
          arg[i0 + r] = static_cast<int32_t>(jb + isa().find_first(s + (jb - j0), j1 - jb, m));
        }
      }
    };
    if (dot != nullptr) {
      // Each row's bf16 pairs in place of its f32 values (row stride C
      // kept: ceil(C/2) pairs fill the front of each row).
      auto* pairs = reinterpret_cast<uint32_t*>(rows);
      for (int64_t i = 0; i < i1 - i0; ++i) dot->to_pairs(rows + i * C, C, pairs + i * C);
      gemm_tiles_bf16(pairs, C, i1 - i0, reinterpret_cast<const uint32_t*>(panels), C * kColTile, ncols, C,
                      /*parallel=*/false, reduce);
    } else {
      if (bf16) round_to_bf16(rows, (i1 - i0) * C);
      gemm_tiles(GemmA{rows, C, false}, i1 - i0, panels, ncols, C, /*upper=*/false, /*parallel=*/false, reduce);
    }
    tl_block.trim();
  };
  if (parallel)
    parallel_for(blocks, block);
  else
    for (int64_t I = 0; I < blocks; ++I) block(I);
  return std::find(bad.begin(), bad.end(), 1) == bad.end();
}

}  // namespace

Status bipartite_match(const BipartiteMatchParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.metric.on_host()) return Status(Code::kDevice, "cpu::bipartite_match needs host tensors");
  const int64_t B = p.metric.shape[0], N = p.metric.shape[1], C = p.metric.shape[2];
  const int64_t Na = p.split_a.shape[0], Nb = p.split_b.shape[0], r = p.r;
  const int32_t* a_tok = p.split_a.ptr<int32_t>();
  const int32_t* b_tok = p.split_b.ptr<int32_t>();
  {
    // The split must be a partition of [0, N): otherwise `assign` would leave
    // tokens unassigned (a wrong answer, not an error) downstream.
    std::vector<char> seen(static_cast<size_t>(N), 0);
    for (int64_t i = 0; i < Na + Nb; ++i) {
      const int32_t t = i < Na ? a_tok[i] : b_tok[i - Na];
      if (t < 0 || t >= N || seen[static_cast<size_t>(t)])
        return Status(Code::kRange, "expected split_a and split_b to be a partition of [0, " + std::to_string(N) +
                                        ") but token " + std::to_string(t) + " is out of range or repeated");
      seen[static_cast<size_t>(t)] = 1;
    }
  }
  const int64_t ldk = round_up(Nb, 16);
  const int64_t pack_tasks = ldk / 16;
  const bool bf16 = p.precision == MatchPrecision::kBF16;
  // bf16 scores on vdpbf16ps where the CPU has it: the same rounded
  // values, two channels per multiply-add lane (cpu/isa_avx512_bf16.cc).
  const Bf16DotKernels* dot = bf16 ? bf16_dot() : nullptr;
  // One batch row: every image of a batch on its own thread when there are
  // enough of them (no barriers between the phases), else one image at a
  // time on all threads.
  auto match_image = [&](int64_t b, bool parallel) -> Status {
    ScratchTrim trim;
    float* panels = tl_panels.get(C * ldk);  // [Nb/16][C][16] normalised b, zero padded
    std::vector<float> node_max(static_cast<size_t>(Na));
    std::vector<int32_t> node_idx(static_cast<size_t>(Na));
    std::vector<int32_t> order(static_cast<size_t>(Na));
    std::vector<char> bad(static_cast<size_t>(pack_tasks), 0);
    // Pack b one panel per task: 16 rows normalised and transposed in
    // registers; streamed when the panels outgrow the cache (not for bf16,
    // which rounds each panel in place right after).
    const bool stream = !bf16 && ldk * C * static_cast<int64_t>(sizeof(float)) >= kStreamPackBytes;
    auto pack = [&](int64_t t) {
      thread_local std::vector<float> stage;
      if (stage.size() < static_cast<size_t>(16 * C)) stage.resize(static_cast<size_t>(16 * C));
      const int rows = static_cast<int>(std::min<int64_t>(16, Nb - t * 16));
      float* panel = panels + t * C * 16;
      if (!normalised_panel(p.metric, b, b_tok + t * 16, rows, C, stage.data(), stream, panel))
        bad[static_cast<size_t>(t)] = 1;
      if (dot != nullptr)
        dot->panel_to_pairs(panel, C, reinterpret_cast<uint32_t*>(panel));  // (zero padding stays zero)
      else if (bf16)
        round_to_bf16(panel, C * 16);
    };
    if (parallel)
      parallel_for(pack_tasks, pack);
    else
      for (int64_t t = 0; t < pack_tasks; ++t) pack(t);
    if (std::find(bad.begin(), bad.end(), 1) != bad.end()) return non_finite("metric", b);
    // The CLS row's scores are never used (its best is −inf): its row is
    // only checked, and the product starts at a[1] (ToMe 577: 288 rows, a
    // whole number of 8-row tiles, instead of 289).
    const int64_t skip = p.protect_cls ? 1 : 0;
    if (skip) {
      std::vector<float> cls(static_cast<size_t>(C));
      if (!normalised_row(p.metric, b, a_tok[0], C, cls.data())) return non_finite("metric", b);
      node_max[0] = -std::numeric_limits<float>::infinity();
      node_idx[0] = 0;
    }
    if (Na > skip && !match_rows(p.metric, b, a_tok + skip, Na - skip, C, bf16, dot, panels, Nb, p.protect_distill,
                                 node_max.data() + skip, node_idx.data() + skip, parallel))
      return non_finite("metric", b);
    // Edge order: descending best score, ties to the lower a position
    // (stable). Only the first r need to be ordered for the sources, the
    // rest keep edge order too (ToMe without class_token outputs them so).
    // Sorted as rank keys (cpu/rank_key.h: the same order, the scores are
    // finite or −inf), not through an index comparator.
    std::vector<uint64_t> keys(static_cast<size_t>(Na));
    for (int64_t a = 0; a < Na; ++a) keys[static_cast<size_t>(a)] = rank_key(node_max[static_cast<size_t>(a)], a);
    std::sort(keys.begin(), keys.end());
    for (int64_t a = 0; a < Na; ++a) order[static_cast<size_t>(a)] = static_cast<int32_t>(keys[static_cast<size_t>(a)] & 0xffffffffu);
    if (p.protect_cls) std::sort(order.begin() + r, order.end());
    const int64_t Nu = Na - r;
    const bool dist = p.protect_distill;
    auto slot_unm = [&](int64_t k) -> int32_t { return static_cast<int32_t>(dist ? (k == 0 ? 0 : k + 1) : k); };
    auto slot_b = [&](int64_t j) -> int32_t { return static_cast<int32_t>(dist ? (j == 0 ? 1 : Nu + j) : Nu + j); };
    int32_t* assign = p.assign.ptr<int32_t>() + b * N;
    int32_t* unm = p.unm_idx.ptr<int32_t>() + b * Nu;
    for (int64_t j = 0; j < Nb; ++j) assign[b_tok[j]] = slot_b(j);
    for (int64_t k = 0; k < Nu; ++k) {
      const int32_t a = order[static_cast<size_t>(r + k)];
      unm[k] = a_tok[a];
      assign[a_tok[a]] = slot_unm(k);
    }
    for (int64_t k = 0; k < r; ++k) {
      const int32_t a = order[static_cast<size_t>(k)];
      const int32_t j = node_idx[static_cast<size_t>(a)];
      p.src_idx.ptr<int32_t>()[b * r + k] = a_tok[a];
      p.dst_idx.ptr<int32_t>()[b * r + k] = b_tok[j];
      assign[a_tok[a]] = slot_b(j);
    }
    return Status::Ok();
  };
  return for_units(B, Na * Nb * C, match_image);
}

Status merge(const MergeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.x.on_host()) return Status(Code::kDevice, "cpu::merge needs host tensors");
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2], M = p.n_out;
  const int32_t* assign = p.assign.ptr<int32_t>();
  for (int64_t i = 0; i < B * N; ++i)
    if (assign[i] < 0 || assign[i] >= M)
      return Status(Code::kRange, "expected assign values in [0, " + std::to_string(M) + ") but got " +
                                      std::to_string(assign[i]) + " at [" + std::to_string(i / N) + ", " +
                                      std::to_string(i % N) + "]");
  const float* sizes = p.mode == MergeMode::kWavg ? p.sizes.ptr<const float>() : nullptr;
  if (sizes != nullptr && !isa().all_finite(sizes, B * N))
    return Status(Code::kRange, "expected finite sizes but they hold NaN or Inf");
  // Gather form: each slot's members in token order (a CSR per batch row),
  // then tasks over slot ranges reduce their members into one row and write
  // it once. No [n_out, C] accumulator, and x is read once.
  std::vector<int32_t> offsets(static_cast<size_t>(B * (M + 1)), 0);  // [B, M + 1]
  std::vector<int32_t> members(static_cast<size_t>(B * N));           // [B, N]
  for (int64_t b = 0; b < B; ++b) {
    int32_t* off = offsets.data() + b * (M + 1);
    const int32_t* as = assign + b * N;
    for (int64_t i = 0; i < N; ++i) off[as[i] + 1]++;
    for (int64_t s = 0; s < M; ++s) off[s + 1] += off[s];
    std::vector<int32_t> cursor(off, off + M);
    for (int64_t i = 0; i < N; ++i) members[static_cast<size_t>(b * N + cursor[static_cast<size_t>(as[i])]++)] = static_cast<int32_t>(i);
  }
  const int64_t esize = static_cast<int64_t>(dtype_size(p.x.dtype));
  const int64_t slots_per_task = std::max<int64_t>(1, (64 * 1024) / std::max<int64_t>(1, C * 4));
  const int64_t tasks_per_b = (M + slots_per_task - 1) / slots_per_task;
  parallel_for(B * tasks_per_b, [&](int64_t task) {
    const int64_t b = task / tasks_per_b;
    const int64_t s0 = (task % tasks_per_b) * slots_per_task, s1 = std::min(M, s0 + slots_per_task);
    const int32_t* off = offsets.data() + b * (M + 1);
    const int32_t* mem = members.data() + b * N;
    std::vector<float> acc, row;  // [C] each, for the general loop
    std::vector<const float*> member_rows;
    std::vector<float> member_w;
    for (int64_t s = s0; s < s1; ++s) {
      // f32 sums (sum, mean, wavg): the slot's rows reduced and scaled in
      // registers, written once (isa().weighted_row_sum: the bits of the
      // general loop below — a zeroed row, axpy per member, one multiply).
      if (p.x.dtype == DType::kF32 && p.mode != MergeMode::kAmax) {
        const int32_t count = off[s + 1] - off[s];
        member_rows.resize(static_cast<size_t>(count));
        member_w.resize(static_cast<size_t>(count));
        float weight = 0.0f;  // Σ size (wavg) or member count
        for (int32_t m = 0; m < count; ++m) {
          const int64_t i = mem[off[s] + m];
          const float w = p.mode == MergeMode::kWavg && sizes ? sizes[b * N + i] : 1.0f;
          member_rows[static_cast<size_t>(m)] = reinterpret_cast<const float*>(row_ptr(p.x, b, i));
          member_w[static_cast<size_t>(m)] = w;
          weight += w;
        }
        // An unused slot (impossible for a plan's assign) stays 0, not NaN.
        const float scale = p.mode == MergeMode::kSum ? 1.0f : weight != 0.0f ? 1.0f / weight : 0.0f;
        float* o = reinterpret_cast<float*>(static_cast<char*>(p.out.data) + (b * M + s) * C * esize);
        isa().weighted_row_sum(member_rows.data(), member_w.data(), count, scale, C, o);
        if (p.mode == MergeMode::kWavg) p.sizes_out.ptr<float>()[b * M + s] = weight;
        continue;
      }
      acc.resize(static_cast<size_t>(C));
      row.resize(static_cast<size_t>(C));
      std::fill(acc.begin(), acc.end(), p.mode == MergeMode::kAmax ? -std::numeric_limits<float>::infinity() : 0.0f);
      float weight = 0.0f;  // Σ size (wavg) or member count
      for (int32_t m = off[s]; m < off[s + 1]; ++m) {
        const int64_t i = mem[m];
        // f32 rows are read in place (a row's C values are contiguous); others are converted.
        const float* x = reinterpret_cast<const float*>(row_ptr(p.x, b, i));
        if (p.x.dtype != DType::kF32) {
          isa().to_f32(row_ptr(p.x, b, i), p.x.dtype, C, row.data());
          x = row.data();
        }
        if (p.mode == MergeMode::kAmax) {
          for (int64_t d = 0; d < C; ++d) acc[static_cast<size_t>(d)] = std::max(acc[static_cast<size_t>(d)], x[d]);
        } else if (p.mode == MergeMode::kWavg) {
          const float w = sizes ? sizes[b * N + i] : 1.0f;
          isa().axpy(w, x, acc.data(), C);
          weight += w;
        } else {
          isa().add(x, acc.data(), C);
          weight += 1.0f;
        }
      }
      if (p.mode == MergeMode::kWavg || p.mode == MergeMode::kMean) {
        // An unused slot (impossible for a plan's assign) stays 0, not NaN.
        const float inv = weight != 0.0f ? 1.0f / weight : 0.0f;
        for (int64_t d = 0; d < C; ++d) acc[static_cast<size_t>(d)] *= inv;
      }
      store_row(acc.data(), p.x.dtype, C, static_cast<char*>(p.out.data) + (b * M + s) * C * esize);
      if (p.mode == MergeMode::kWavg) p.sizes_out.ptr<float>()[b * M + s] = weight;
    }
  });
  return Status::Ok();
}

namespace {
// The tokens of [0, N) not in `kept` (i32 [B, K]), ascending, per batch row:
// [B, N − K] into *out. Kept indices out of range or repeated in a row are
// ERR_RANGE (cuda/merge.cu's remaining kernels report the same).
Status remaining_from_kept(const TensorView& kept, int64_t N, std::vector<int32_t>* out) {
  const int64_t B = kept.shape[0], K = kept.shape[1], Nr = N - K;
  const int32_t* k = kept.ptr<int32_t>();
  out->resize(static_cast<size_t>(B * Nr));
  std::vector<char> is_kept(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b) {
    std::fill(is_kept.begin(), is_kept.end(), 0);
    for (int64_t j = 0; j < K; ++j) {
      const int32_t t = k[b * K + j];
      if (t < 0 || t >= N || is_kept[static_cast<size_t>(t)])
        return Status(Code::kRange, "expected keptIndices distinct and in [0, " + std::to_string(N) +
                                        ") but keptIndices[" + std::to_string(b) + ", " + std::to_string(j) +
                                        "] = " + std::to_string(t) + (t < 0 || t >= N ? " is out of range" : " repeats"));
      is_kept[static_cast<size_t>(t)] = 1;
    }
    int32_t* row = out->data() + b * Nr;
    for (int64_t i = 0, w = 0; i < N; ++i)
      if (!is_kept[static_cast<size_t>(i)]) row[w++] = static_cast<int32_t>(i);
  }
  return Status::Ok();
}

// Whether element i of a mask is set: non-zero, with -0.0 as zero for the
// float dtypes (NaN counts as set), as the TS layer's `value !== 0` reads it.
bool mask_set(const TensorView& m, int64_t i) {
  switch (m.dtype) {
    case DType::kF32: return (m.ptr<uint32_t>()[i] & 0x7fffffffu) != 0;
    case DType::kF16:
    case DType::kBF16: return (m.ptr<uint16_t>()[i] & 0x7fffu) != 0;
    case DType::kI32: return m.ptr<int32_t>()[i] != 0;
    case DType::kI64: return m.ptr<int64_t>()[i] != 0;
    case DType::kI8:
    case DType::kU8: return m.ptr<uint8_t>()[i] != 0;
  }
  return false;
}

// The zeros of each row of keep_mask [B, N], ascending: [B, Nr] into *out,
// Nr into *nr. Every row must leave the same Nr, and 1 <= c <= Nr.
Status remaining_from_mask(const TensorView& mask, int64_t c, std::vector<int32_t>* out, int64_t* nr) {
  const int64_t B = mask.shape[0], N = mask.shape[1];
  out->clear();
  out->reserve(static_cast<size_t>(B * N));
  int64_t row0 = 0;
  for (int64_t b = 0; b < B; ++b) {
    const size_t before = out->size();
    for (int64_t i = 0; i < N; ++i)
      if (!mask_set(mask, b * N + i)) out->push_back(static_cast<int32_t>(i));
    const int64_t cnt = static_cast<int64_t>(out->size() - before);
    if (b == 0) row0 = cnt;
    if (cnt != row0)
      return Status(Code::kShape, "every batch row must leave the same number of remaining tokens (row 0: " +
                                      std::to_string(row0) + ", row " + std::to_string(b) + ": " +
                                      std::to_string(cnt) + ")");
  }
  *nr = row0;
  return check_remaining_count(row0, c);
}
}  // namespace

Status contextual_merge(const ContextualMergeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.x.on_host()) return Status(Code::kDevice, "cpu::contextual_merge needs host tensors");
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2], Cm = p.metric.shape[2];
  const int64_t c = p.c;
  std::vector<int32_t> listed;  // the remaining tokens when `kept` or `keep_mask` is given
  int64_t Nr = p.remaining.data != nullptr ? p.remaining.shape[1] : 0;
  if (p.kept.data != nullptr) {
    TS_RETURN_IF_ERROR(remaining_from_kept(p.kept, N, &listed));
    Nr = N - p.kept.shape[1];
  } else if (p.keep_mask.data != nullptr) {
    TS_RETURN_IF_ERROR(remaining_from_mask(p.keep_mask, c, &listed, &Nr));
  }
  const int32_t* rem_all = p.remaining.data != nullptr ? p.remaining.ptr<int32_t>() : listed.data();
  for (int64_t i = 0; i < B * Nr; ++i)
    if (rem_all[i] < 0 || rem_all[i] >= N)
      return Status(Code::kRange, "expected remaining indices in [0, " + std::to_string(N) + ") but got " +
                                      std::to_string(rem_all[i]));
  const int64_t step = std::max<int64_t>(1, Nr / c);
  const int64_t Nm = Nr - c;  // members (non-target remaining tokens)
  const int64_t ldk = round_up(c, 16);
  const int64_t esize = static_cast<int64_t>(dtype_size(p.x.dtype));
  std::vector<char> is_target(static_cast<size_t>(Nr), 0);
  for (int64_t k = 0; k < c; ++k) is_target[static_cast<size_t>(k * step)] = 1;
  std::vector<int64_t> members;  // positions in `remaining` that are not targets
  for (int64_t i = 0; i < Nr; ++i)
    if (!is_target[static_cast<size_t>(i)]) members.push_back(i);
  std::vector<float> panels(static_cast<size_t>(Cm * ldk));  // [c/16][Cm][16] normalised targets, zero padded
  std::vector<int32_t> member_tok(static_cast<size_t>(std::max<int64_t>(1, Nm)));  // [Nm] their tokens
  std::vector<float> best(static_cast<size_t>(std::max<int64_t>(1, Nm)));
  std::vector<int32_t> owner(static_cast<size_t>(std::max<int64_t>(1, Nm)));
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* rem = rem_all + b * Nr;
    std::vector<float> row(static_cast<size_t>(Cm));
    std::fill(panels.begin(), panels.end(), 0.0f);
    for (int64_t k = 0; k < c; ++k) {
      if (!normalised_row(p.metric, b, rem[k * step], Cm, row.data())) return non_finite("metric", b);
      float* col = panel_col(panels.data(), Cm, k);
      for (int64_t d = 0; d < Cm; ++d) col[d * 16] = row[static_cast<size_t>(d)];
    }
    for (int64_t i = 0; i < Nm; ++i) member_tok[static_cast<size_t>(i)] = rem[members[static_cast<size_t>(i)]];
    if (Nm > 0 && !match_rows(p.metric, b, member_tok.data(), Nm, Cm, /*bf16=*/false, /*dot=*/nullptr, panels.data(), c,
                              /*skip_col0=*/false, best.data(), owner.data(), /*parallel=*/true))
      return non_finite("metric", b);
    std::vector<float> count(static_cast<size_t>(c), 0.0f);
    for (int64_t i = 0; i < Nm; ++i) count[static_cast<size_t>(owner[static_cast<size_t>(i)])] += 1.0f;
    const int64_t col_tasks = (C + kMergeCols - 1) / kMergeCols;
    parallel_for(col_tasks, [&](int64_t t) {
      const int64_t c0 = t * kMergeCols, cw = std::min(kMergeCols, C - c0);
      std::vector<float> acc(static_cast<size_t>(c * cw), 0.0f);
      std::vector<float> xr(static_cast<size_t>(cw));
      for (int64_t i = 0; i < Nm; ++i) {
        isa().to_f32(row_ptr(p.x, b, rem[members[static_cast<size_t>(i)]]) + c0 * esize, p.x.dtype, cw, xr.data());
        isa().add(xr.data(), acc.data() + owner[static_cast<size_t>(i)] * cw, cw);
      }
      for (int64_t k = 0; k < c; ++k) {
        float* a = acc.data() + k * cw;
        const float inv = 1.0f / std::max(1.0f, count[static_cast<size_t>(k)]);
        isa().to_f32(row_ptr(p.x, b, rem[k * step]) + c0 * esize, p.x.dtype, cw, xr.data());
        for (int64_t d = 0; d < cw; ++d) a[d] = xr[static_cast<size_t>(d)] + a[d] * inv;
        store_row(a, p.x.dtype, cw, static_cast<char*>(p.out.data) + ((b * c + k) * C + c0) * esize);
      }
    });
  }
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
