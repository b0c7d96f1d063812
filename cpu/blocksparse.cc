// CPU block-sparse attention, block attention mass, block pooling and the
// per-head token reordering; the parameter checks are core/blocksparse.cc's.
//
// The CPU path exists for correctness and small inputs: per (batch, head) the
// keys are packed once, in attended (permuted) order, into 16-column panels,
// and the values into 16-channel panels; every kept (q-chunk, kv-block) tile
// is one register-tiled QKᵀ (isa().gemm_tile), an online softmax, and P·V on
// the same tile, as the flash kernels do on the GPU, so skipped blocks cost
// nothing. INT8 multiplies the codes as f32 on the same tile: the sums of
// code products stay below 2²⁴ for head dims up to 1040, so they are exact.
// bf16 operands (bf16 inputs, or precision kBF16) take the bf16 dot tile
// where the CPU has AVX512_BF16 (cpu/isa_avx512_bf16.cc): QKᵀ over channel
// pairs, P·V over key pairs. INT8 QKᵀ takes vpdpbusd where it has
// AVX512_VNNI (cpu/isa_avx512_vnni.cc), with the same bits.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/thread_pool.h"
#include "tokensieve/blocksparse.h"

namespace tokensieve {
namespace cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// The softmaxes run in the base-2 domain, log2(e) (kLog2e, cpu/isa.h)
// folded into the logit scale as FlashAttention (and cuda/blocksparse.cu)
// do: 2^x costs half the vector operations of e^x (exp2_shift_sum), which
// was a fifth of block-sparse attention's time and a quarter of
// blockAttentionMass's. The lse goes back to base e through ln 2 (kLn2).
// Query rows per task: 4 groups of the ymm tile's 6 rows, 3 of the zmm tile's 8.
constexpr int64_t kRowsPerTask = 24;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

const char* row_ptr(const TensorView& t, int64_t b, int64_t h, int64_t n) {
  return static_cast<const char*>(t.data) +
         (b * t.strides[0] + h * t.strides[1] + n * t.strides[2]) * static_cast<int64_t>(dtype_size(t.dtype));
}

void load_row(const TensorView& t, int64_t b, int64_t h, int64_t n, float* dst) {
  isa().to_f32(row_ptr(t, b, h, n), t.dtype, t.shape[3], dst);
}

void store_row(const TensorView& t, int64_t b, int64_t h, int64_t n, const float* src) {
  char* dst = const_cast<char*>(row_ptr(t, b, h, n));
  const int64_t D = t.shape[3];
  if (t.dtype == DType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(D) * 4);
  } else {
    uint16_t* d16 = reinterpret_cast<uint16_t*>(dst);
    for (int64_t d = 0; d < D; ++d) d16[d] = t.dtype == DType::kF16 ? f32_to_f16(src[d]) : f32_to_bf16(src[d]);
  }
}

// The type a product operand is rounded to before the product.
enum class Round { kNone, kF16, kBF16 };

// A row rounded to the operand type (f32_to_f16 then f16_to_f32, or bf16),
// on vectors (a loop here is baseline x86-64 and the f16 conversion a
// software routine: rounding P to f16 was most of the INT8 path's time).
void round_row(float* x, int64_t n, Round r) {
  if (r == Round::kF16) isa().round_f16(x, n);
  if (r == Round::kBF16) isa().round_bf16(x, n);
}

Round native_round(DType t) {
  return t == DType::kF16 ? Round::kF16 : t == DType::kBF16 ? Round::kBF16 : Round::kNone;
}

// Symmetric INT8 codes of n values in place, as floats (exact small
// integers), with scale amax / 127 (0 when all are 0): round half away from
// zero after an IEEE f32 division, clamped — code_values_rows' codes.
float quantize_block(float* x, int64_t n) {
  bool finite = true;  // a NaN or Inf is refused before (or, unchecked, reaches the output anyway)
  const float scale = isa().amax(x, n, &finite) / 127.f;
  if (scale > 0.f)
    isa().code_values_rows(x, n, 1, n, nullptr, scale, 127.f, x, n);
  else
    std::fill(x, x + n, 0.f);
  return scale;
}

// The kv blocks of one mask row in ascending order: the union of the
// partial and full lists (each sorted; validated disjoint).
void row_blocks(const BlockMaskView& m, int64_t b, int64_t h, int64_t qb, int64_t nK, std::vector<int32_t>& out) {
  out.clear();
  if (m.dense) {
    for (int64_t j = 0; j < nK; ++j) out.push_back(static_cast<int32_t>(j));
    return;
  }
  auto list = [&](const TensorView& counts, const TensorView& idx) {
    if (counts.data == nullptr) return;
    const int64_t bm = counts.shape[0] == 1 ? 0 : b, hm = counts.shape[1] == 1 ? 0 : h;
    const int64_t row = (bm * counts.shape[1] + hm) * counts.shape[2] + qb;
    const int32_t n = counts.ptr<int32_t>()[row];
    const int32_t* ix = idx.ptr<int32_t>() + row * idx.shape[3];
    for (int32_t t = 0; t < n; ++t) out.push_back(ix[t]);
  };
  list(m.num_blocks, m.indices);
  list(m.full_num_blocks, m.full_indices);
  std::sort(out.begin(), out.end());
}

// S[r][c] = q_r · k_(col0 + c) for r < R and c < ncols (a multiple of 16),
// col0 a multiple of 16; kt holds the keys as zero-padded 16-column panels.
void qk_tile(const float* q, int64_t R, int64_t D, const float* kt, int64_t col0, int64_t ncols, float* S,
             int64_t lds) {
  const IsaKernels& k = isa();
  for (int64_t c = col0; c < col0 + ncols;) {
    const bool wide = c + kColTile < col0 + ncols;  // two panels per tile call (zmm tile with AVX-512)
    for (int64_t r = 0; r < R; r += k.tile_rows) {
      const int rows = static_cast<int>(std::min<int64_t>(k.tile_rows, R - r));
      for (int64_t d0 = 0; d0 < D; d0 += kGemmDepth) {
        const float* panel = kt + (c / kColTile) * D * kColTile + d0 * kColTile;
        if (wide)
          k.gemm_tile_wide(q + r * D + d0, D, 1, rows, panel, D * kColTile, std::min(kGemmDepth, D - d0),
                           S + r * lds + (c - col0), lds, d0 > 0);
        else
          k.gemm_tile(q + r * D + d0, D, 1, rows, panel, std::min(kGemmDepth, D - d0), S + r * lds + (c - col0), lds,
                      d0 > 0);
      }
    }
    c += wide ? 2 * kColTile : kColTile;
  }
}

// qk_tile on the bf16 dot tile: q as rows of channel pairs (row r at q + r
// * D, ceil(D/2) pairs), kt's panels converted to pairs in place (panel
// stride D·16 kept).
void qk_tile_bf16(const Bf16DotKernels& dot, const uint32_t* q, int64_t R, int64_t D, const float* kt, int64_t col0,
                  int64_t ncols, float* S, int64_t lds) {
  const int64_t pairs = (D + 1) / 2;
  for (int64_t c = col0; c < col0 + ncols;) {
    const int np = c + kColTile < col0 + ncols ? 2 : 1;
    for (int64_t r = 0; r < R; r += 8) {
      const int rows = static_cast<int>(std::min<int64_t>(8, R - r));
      for (int64_t d0 = 0; d0 < pairs; d0 += kGemmDepth) {
        const auto* panel = reinterpret_cast<const uint32_t*>(kt + (c / kColTile) * D * kColTile + d0 * kColTile);
        dot.gemm_tile(q + r * D + d0, D, rows, panel, D * kColTile, np, std::min(kGemmDepth, pairs - d0),
                      S + r * lds + (c - col0), lds, d0 > 0);
      }
    }
    c += np * kColTile;
  }
}

// qk_tile on the INT8 dot tile: q as rows of biased code quads (row r at q
// + r * D, ceil(D/4) quads), kt's panels converted to signed quads in place
// (panel stride D·16 kept), colsum[j] key j's code sum.
void qk_tile_i8(const Int8DotKernels& dot, const uint32_t* q, int64_t R, int64_t D, const float* kt,
                const int32_t* colsum, int64_t col0, int64_t ncols, float* S, int64_t lds) {
  const int64_t quads = (D + 3) / 4;
  for (int64_t c = col0; c < col0 + ncols;) {
    const int np = c + kColTile < col0 + ncols ? 2 : 1;
    const auto* panel = reinterpret_cast<const uint32_t*>(kt + (c / kColTile) * D * kColTile);
    for (int64_t r = 0; r < R; r += 8)
      dot.gemm_tile(q + r * D, D, static_cast<int>(std::min<int64_t>(8, R - r)), panel, D * kColTile, np, quads,
                    colsum + c, S + r * lds + (c - col0), lds);
    c += np * kColTile;
  }
}

// The calling thread's scratch for one head's keys ([Nk, D] rows, then
// packed [ceil(Nk/16)][D][16]: INT8 codes as f32), its values as panels
// [ceil(D/16)][Nk][16] and INT8 q codes [N, D]: reused call after call (a
// fresh vector each call cost ~750 first-touch page faults, ~7 ms, per
// call of the bench's 4096-token, 8-head layer).
thread_local Scratch tl_bs_krows, tl_bs_kt, tl_bs_vp, tl_bs_qcodes, tl_bs_vpairs;

}  // namespace

Status block_sparse_attention(const BlockSparseAttentionParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.q.on_host()) return Status(Code::kDevice, "cpu::block_sparse_attention needs host tensors");
  const int64_t B = p.q.shape[0], Hq = p.q.shape[1], N = p.q.shape[2], D = p.q.shape[3];
  const int64_t Hkv = p.k.shape[1], Nk = p.k.shape[2], group = Hq / Hkv;
  const int64_t bq = p.mask.block_q, bk = p.mask.block_k, nQ = ceil_div(N, bq), nK = ceil_div(Nk, bk);
  const int64_t Dp = round_up16(D), vpanels = Dp / kColTile;
  const bool int8 = p.precision == BlockSparsePrecision::kInt8;
  const float scale_log2 = p.scale * kLog2e;
  constexpr int64_t kQB = kBlockSparseQuantBlock;
  // Operand rounding: inputs (q, k) and the P·V operands (P, v).
  Round in_round = native_round(p.q.dtype);
  if (p.precision == BlockSparsePrecision::kF16) in_round = Round::kF16;
  if (p.precision == BlockSparsePrecision::kBF16) in_round = Round::kBF16;
  const Round pv_round = int8 ? Round::kF16 : in_round;
  // bf16 operands on the bf16 dot tile where the CPU has it: QKᵀ over
  // channel pairs (q unscaled; the scale then multiplies the block's
  // logits) and P·V over key pairs (blocks of an even number of keys start
  // at an even key; P and v converted with the rounding they had).
  const Bf16DotKernels* dot = !int8 && in_round == Round::kBF16 ? bf16_dot() : nullptr;
  const bool pv_dot = dot != nullptr && bk % 2 == 0;
  // INT8 QKᵀ on vpdpbusd where the CPU has AVX512_VNNI: exact integer dots,
  // the bits of the f32 tile over the codes.
  const Int8DotKernels* i8dot = int8 && D <= kMaxInt8DotDepth ? int8_dot() : nullptr;
  std::vector<int32_t> key_code_sums(i8dot != nullptr ? static_cast<size_t>(ceil_div(Nk, kColTile) * kColTile) : 0);
  const int64_t nk_pairs = ceil_div(Nk, 2);
  const int32_t* perm = p.perm.data ? p.perm.ptr<int32_t>() : nullptr;
  const int64_t npanels = ceil_div(Nk, kColTile);
  std::atomic<bool> nonfinite{false};
  struct Trim {
    ~Trim() {
      for (Scratch* t : {&tl_bs_krows, &tl_bs_kt, &tl_bs_vp, &tl_bs_qcodes, &tl_bs_vpairs}) t->trim();
    }
  } trim;
  float* krows = tl_bs_krows.get(Nk * D);                    // [Nk, D]
  float* kt = tl_bs_kt.get(npanels * D * kColTile);          // [npanels][D][16]
  float* vp = tl_bs_vp.get(vpanels * Nk * kColTile);         // [vpanels][Nk][16]
  float* qcodes = int8 ? tl_bs_qcodes.get(N * D) : nullptr;  // [N, D]
  // [vpanels][ceil(Nk/2)][16] key pairs of v, for pv_dot.
  auto* vpairs = pv_dot ? reinterpret_cast<uint32_t*>(tl_bs_vpairs.get(vpanels * nk_pairs * kColTile)) : nullptr;
  std::vector<float> kscale(static_cast<size_t>(ceil_div(Nk, kQB))), qscale(static_cast<size_t>(ceil_div(N, kQB)));
  // Tasks of kQB (64) keys or queries: whole 16-key panels, and the INT8 blocks.
  const int64_t key_tasks = ceil_div(Nk, kQB), query_tasks = ceil_div(N, kQB);
  std::vector<int64_t> bad_key(static_cast<size_t>(key_tasks));

  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kvh = h / group;
      const int32_t* ph = perm ? perm + h * N : nullptr;
      auto src = [&](int64_t pos) { return ph ? static_cast<int64_t>(ph[pos]) : pos; };
      // The query heads of one kv head share its keys and values, unless
      // each attends in its own permuted order.
      const bool same_keys = h % group != 0 && perm == nullptr;
      // Keys and values in attended order, kQB keys per task: values
      // rounded and straight into panels; keys (unless INT8, which needs
      // the mean over all keys first) rounded and packed.
      auto pack_keys = [&](int64_t t) {
        const int64_t j0 = t * kQB, j1 = std::min(Nk, j0 + kQB);
        for (int64_t c = j0; c < j1; c += kColTile) {
          isa().pack_panel(krows + c * D, D, static_cast<int>(std::min(kColTile, j1 - c)), D, kt + c * D);
          if (dot != nullptr) dot->panel_to_pairs(kt + c * D, D, reinterpret_cast<uint32_t*>(kt + c * D));
          if (i8dot != nullptr)
            i8dot->panel_to_quads(kt + c * D, D, reinterpret_cast<uint32_t*>(kt + c * D), key_code_sums.data() + c);
        }
      };
      if (!same_keys) {
        std::fill(bad_key.begin(), bad_key.end(), -1);
        parallel_for(key_tasks, [&](int64_t t) {
          thread_local std::vector<float> vrow;
          vrow.resize(static_cast<size_t>(D));
          const int64_t j0 = t * kQB, j1 = std::min(Nk, j0 + kQB);
          for (int64_t j = j0; j < j1; ++j) {
            float* kr = krows + j * D;
            load_row(p.k, b, kvh, src(j), kr);
            load_row(p.v, b, kvh, src(j), vrow.data());
            if (p.check_finite && (!isa().all_finite(kr, D) || !isa().all_finite(vrow.data(), D))) {
              bad_key[static_cast<size_t>(t)] = j;
              return;
            }
            round_row(vrow.data(), D, pv_round);
            for (int64_t c = 0; c < vpanels; ++c) {  // channel panel c of key j: 16 values, zero padded
              float* dst = vp + (c * Nk + j) * kColTile;
              const int64_t n = std::min(kColTile, D - c * kColTile);
              std::copy(vrow.data() + c * kColTile, vrow.data() + c * kColTile + n, dst);
              std::fill(dst + n, dst + kColTile, 0.f);
            }
          }
          if (pv_dot)  // this task's keys (j0 even) as key pairs of each value panel
            for (int64_t c = 0; c < vpanels; ++c)
              dot->panel_to_pairs(vp + (c * Nk + j0) * kColTile, j1 - j0,
                                  vpairs + (c * nk_pairs + j0 / 2) * kColTile);
          if (!int8) {
            if (dot == nullptr) round_row(krows + j0 * D, (j1 - j0) * D, in_round);  // (else panel_to_pairs rounds)
            pack_keys(t);
          }
        });
        for (const int64_t j : bad_key)
          if (j >= 0)
            return Status(Code::kRange, "expected finite k and v but k[" + std::to_string(b) + ", " +
                                            std::to_string(kvh) + ", " + std::to_string(src(j)) +
                                            "] or v there holds NaN or Inf");
        if (int8) {
          // K smoothing: the mean over all Nk keys, per channel (f64, keys in
          // order), then codes per 64 attended keys (products of codes sum
          // exactly in f32).
          std::vector<double> mean(static_cast<size_t>(D), 0.0);
          isa().add_rows_f64(krows, D, static_cast<int>(Nk), D, mean.data());
          for (int64_t d = 0; d < D; ++d) mean[d] /= static_cast<double>(Nk);
          parallel_for(key_tasks, [&](int64_t t) {
            const int64_t j0 = t * kQB, j1 = std::min(Nk, j0 + kQB);
            for (int64_t j = j0; j < j1; ++j)
              for (int64_t d = 0; d < D; ++d) krows[j * D + d] = static_cast<float>(krows[j * D + d] - mean[d]);
            kscale[static_cast<size_t>(t)] = quantize_block(krows + j0 * D, (j1 - j0) * D);
            pack_keys(t);
          });
        }
      }
      // kInt8: the q codes and scales of the whole head, per 64 attended rows.
      if (int8)
        parallel_for(query_tasks, [&](int64_t t) {
          const int64_t i0 = t * kQB, i1 = std::min(N, i0 + kQB);
          for (int64_t i = i0; i < i1; ++i) {
            load_row(p.q, b, h, src(i), qcodes + i * D);
            if (p.check_finite && !isa().all_finite(qcodes + i * D, D)) nonfinite = true;
          }
          qscale[static_cast<size_t>(t)] = quantize_block(qcodes + i0 * D, (i1 - i0) * D);
        });
      // Tasks: chunks of up to kRowsPerTask rows inside one q-block.
      const int64_t chunks_per_block = ceil_div(std::min(bq, N), kRowsPerTask);
      const int64_t tasks = nQ * chunks_per_block;
      parallel_for(tasks, [&](int64_t t) {
        const int64_t qb = t / chunks_per_block;
        const int64_t r0 = qb * bq + (t % chunks_per_block) * kRowsPerTask;
        const int64_t r1 = std::min({r0 + kRowsPerTask, (qb + 1) * bq, N});
        if (r0 >= r1) return;
        const int64_t R = r1 - r0;
        thread_local std::vector<float> qrows, S, acc, m, l;
        thread_local std::vector<uint32_t> ppairs;  // [R][ceil(bk/2)] key pairs of P, for pv_dot
        thread_local std::vector<int32_t> blocks;
        const float* qp;
        if (int8) {
          qp = qcodes + r0 * D;
          // This task's rows only (tasks own disjoint rows of the head).
          if (i8dot != nullptr)
            for (int64_t r = r0; r < r1; ++r)
              i8dot->to_quads_u8(qcodes + r * D, D, reinterpret_cast<uint32_t*>(qcodes + r * D));
        } else {
          qrows.resize(static_cast<size_t>(R * D));
          for (int64_t r = 0; r < R; ++r) {
            load_row(p.q, b, h, src(r0 + r), qrows.data() + r * D);
            if (p.check_finite && !isa().all_finite(qrows.data() + r * D, D)) nonfinite = true;
          }
          if (dot != nullptr) {
            for (int64_t r = 0; r < R; ++r)
              dot->to_pairs(qrows.data() + r * D, D, reinterpret_cast<uint32_t*>(qrows.data() + r * D));
          } else {
            round_row(qrows.data(), R * D, in_round);
            // The logit scale (with log2(e)) on q's R·D values rather than on
            // every block's R·n logits, as attention_scores does.
            isa().scale(qrows.data(), scale_log2, R * D, qrows.data());
          }
          qp = qrows.data();
        }
        acc.assign(static_cast<size_t>(R * Dp), 0.f);  // [R, Dp]
        m.assign(static_cast<size_t>(R), kNegInf);
        l.assign(static_cast<size_t>(R), 0.f);
        row_blocks(p.mask, b, h, qb, nK, blocks);
        for (int32_t kb : blocks) {
          if (kb < 0 || kb >= nK) continue;
          const int64_t j0 = kb * bk, j1 = std::min(Nk, j0 + bk);
          const int64_t col0 = j0 / kColTile * kColTile, ncols = round_up16(j1) - col0;
          S.resize(static_cast<size_t>(R * ncols));
          const int64_t n = j1 - j0;
          if (dot != nullptr) {
            qk_tile_bf16(*dot, reinterpret_cast<const uint32_t*>(qp), R, D, kt, col0, ncols, S.data(), ncols);
            for (int64_t r = 0; r < R; ++r)
              isa().scale(S.data() + r * ncols + (j0 - col0), scale_log2, n, S.data() + r * ncols + (j0 - col0));
          } else if (i8dot != nullptr) {
            qk_tile_i8(*i8dot, reinterpret_cast<const uint32_t*>(qp), R, D, kt, key_code_sums.data(), col0, ncols, S.data(),
                       ncols);
          } else {
            qk_tile(qp, R, D, kt, col0, ncols, S.data(), ncols);
          }
          // INT8: one factor qs · ks per run of keys in the same k block
          // (otherwise the scale is in q already).
          if (int8)
            for (int64_t r = 0; r < R; ++r) {
              float* s = S.data() + r * ncols;
              const float qs = qscale[(r0 + r) / kQB] * scale_log2;
              for (int64_t j = j0; j < j1;) {
                const int64_t end = std::min(j1, (j / kQB + 1) * kQB);
                isa().scale(s + (j - col0), qs * kscale[static_cast<size_t>(j / kQB)], end - j, s + (j - col0));
                j = end;
              }
            }
          // Online softmax over this block's keys: P in place of S (rounded
          // to the P·V operand type here, or by to_pairs below).
          isa().softmax_block_rows(S.data() + (j0 - col0), ncols, static_cast<int>(R), n, m.data(), l.data(), acc.data(),
                                   Dp, D,
                                   pv_dot ? 0 : pv_round == Round::kF16 ? 1 : pv_round == Round::kBF16 ? 2 : 0);
          if (pv_dot) {
            // acc += P·V over key pairs: P's rows as pairs, v's pair panels
            // from key j0 (even).
            const int64_t np_keys = (n + 1) / 2;
            ppairs.resize(static_cast<size_t>(R * np_keys));
            for (int64_t r = 0; r < R; ++r)
              dot->to_pairs(S.data() + r * ncols + (j0 - col0), n, ppairs.data() + r * np_keys);
            for (int64_t vpi = 0; vpi < vpanels;) {
              const int np = vpi + 1 < vpanels ? 2 : 1;
              for (int64_t r = 0; r < R; r += 8) {
                const int rows = static_cast<int>(std::min<int64_t>(8, R - r));
                dot->gemm_tile(ppairs.data() + r * np_keys, np_keys, rows,
                               vpairs + (vpi * nk_pairs + j0 / 2) * kColTile, nk_pairs * kColTile, np, np_keys,
                               acc.data() + r * Dp + vpi * kColTile, Dp, true);
              }
              vpi += np;
            }
            continue;
          }
          // acc += P·V on the register tile: P rows against the value panels.
          for (int64_t vpi = 0; vpi < vpanels;) {
            const bool wide = vpi + 1 < vpanels;  // two value panels per tile call
            for (int64_t r = 0; r < R; r += isa().tile_rows) {
              const int rows = static_cast<int>(std::min<int64_t>(isa().tile_rows, R - r));
              const float* prow = S.data() + r * ncols + (j0 - col0);
              const float* panel = vp + (vpi * Nk + j0) * kColTile;
              float* out = acc.data() + r * Dp + vpi * kColTile;
              if (wide)
                isa().gemm_tile_wide(prow, ncols, 1, rows, panel, Nk * kColTile, n, out, Dp, true);
              else
                isa().gemm_tile(prow, ncols, 1, rows, panel, n, out, Dp, true);
            }
            vpi += wide ? 2 : 1;
          }
        }
        for (int64_t r = 0; r < R; ++r) {
          const int64_t orig = src(r0 + r);
          float* a = acc.data() + r * Dp;
          if (l[r] > 0.f) {
            isa().scale(a, 1.f / l[r], D, a);
          }  // no kept key: acc is 0
          store_row(p.out, b, h, orig, a);
          if (p.lse.data)
            p.lse.ptr<float>()[(b * Hq + h) * N + orig] = l[r] > 0.f ? (m[r] + std::log2(l[r])) * kLn2 : kNegInf;
        }
      });
      if (nonfinite) return Status(Code::kRange, "expected finite q but q[" + std::to_string(b) + ", " +
                                                     std::to_string(h) + "] holds NaN or Inf");
    }
  return Status::Ok();
}

Status block_attention_mass(const BlockAttentionMassParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.q.on_host()) return Status(Code::kDevice, "cpu::block_attention_mass needs host tensors");
  const int64_t B = p.q.shape[0], H = p.q.shape[1], N = p.q.shape[2], D = p.q.shape[3];
  const int64_t Hkv = p.k.shape[1], Nk = p.k.shape[2], group = H / Hkv;
  const int64_t bq = p.block_q, bk = p.block_k, nQ = ceil_div(N, bq), nK = ceil_div(Nk, bk);
  const int64_t npanels = ceil_div(Nk, kColTile);
  const float scale_log2 = p.scale * kLog2e;
  // The rows to sum, grouped by q-block: one task per q-block writes its own output row.
  std::vector<int32_t> rows;
  if (p.query_rows) rows.assign(p.query_rows, p.query_rows + p.num_query_rows);
  else for (int64_t i = 0; i < N; ++i) rows.push_back(static_cast<int32_t>(i));
  std::vector<int64_t> first(static_cast<size_t>(nQ + 1), 0);  // rows of q-block I: [first[I], first[I+1])
  for (int32_t r : rows) first[r / bq + 1]++;
  for (int64_t I = 0; I < nQ; ++I) first[I + 1] += first[I];
  std::atomic<bool> nonfinite{false};
  struct Trim {
    ~Trim() {
      for (Scratch* t : {&tl_bs_krows, &tl_bs_kt}) t->trim();
    }
  } trim;
  float* krows = tl_bs_krows.get(Nk * D);            // [Nk, D]
  float* kt = tl_bs_kt.get(npanels * D * kColTile);  // [npanels][D][16]
  const int64_t ncols = npanels * kColTile;
  // bf16 q and k: the logits on the bf16 dot tile where the CPU has it (the
  // same exact products summed in pairs; the scale then multiplies each
  // logit instead of each q value).
  const Bf16DotKernels* dot = p.q.dtype == DType::kBF16 && p.k.dtype == DType::kBF16 ? bf16_dot() : nullptr;
  std::vector<int64_t> bad_key(static_cast<size_t>(npanels));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / group;
      if (h % group == 0) {  // the query heads of one kv head share its packed keys
        std::fill(bad_key.begin(), bad_key.end(), -1);
        parallel_for(npanels, [&](int64_t c) {
          const int64_t j0 = c * kColTile, j1 = std::min(Nk, j0 + kColTile);
          for (int64_t j = j0; j < j1; ++j) {
            load_row(p.k, b, kvh, j, krows + j * D);
            if (p.check_finite && !isa().all_finite(krows + j * D, D)) {
              bad_key[static_cast<size_t>(c)] = j;
              return;
            }
          }
          float* panel = kt + c * D * kColTile;
          isa().pack_panel(krows + j0 * D, D, static_cast<int>(j1 - j0), D, panel);
          if (dot != nullptr) dot->panel_to_pairs(panel, D, reinterpret_cast<uint32_t*>(panel));
        });
        for (const int64_t j : bad_key)
          if (j >= 0)
            return Status(Code::kRange, "expected finite k but k[" + std::to_string(b) + ", " + std::to_string(kvh) +
                                            ", " + std::to_string(j) + "] holds NaN or Inf");
      }
      float* out = p.out.ptr<float>() + (b * H + h) * nQ * nK;
      // One task per q-block; its rows in tiles of kRowsPerTask, each tile's
      // logits over all keys one register-tiled product (the keys read once
      // per tile, not once per row: qk_row_panels per row had streamed the
      // packed keys from L2/L3 for every row; the same chains, so the same
      // logits).
      parallel_for(nQ, [&](int64_t I) {
        thread_local std::vector<float> q, s;
        thread_local std::vector<double> sums;
        q.resize(static_cast<size_t>(kRowsPerTask * D));
        s.resize(static_cast<size_t>(kRowsPerTask * ncols));
        sums.assign(static_cast<size_t>(nK), 0.0);
        for (int64_t t0 = first[I]; t0 < first[I + 1]; t0 += kRowsPerTask) {
          const int64_t R = std::min(kRowsPerTask, first[I + 1] - t0);
          for (int64_t r = 0; r < R; ++r) {
            load_row(p.q, b, h, rows[t0 + r], q.data() + r * D);
            if (p.check_finite && !isa().all_finite(q.data() + r * D, D)) {
              nonfinite = true;
              return;
            }
            if (dot != nullptr)
              dot->to_pairs(q.data() + r * D, D, reinterpret_cast<uint32_t*>(q.data() + r * D));
            else
              isa().scale(q.data() + r * D, scale_log2, D, q.data() + r * D);  // the logit scale, with log2(e)
          }
          if (dot != nullptr)
            qk_tile_bf16(*dot, reinterpret_cast<const uint32_t*>(q.data()), R, D, kt, 0, ncols, s.data(), ncols);
          else
            qk_tile(q.data(), R, D, kt, 0, ncols, s.data(), ncols);
          for (int64_t r = 0; r < R; ++r) {
            float* sr = s.data() + r * ncols;
            if (dot != nullptr) isa().scale(sr, scale_log2, Nk, sr);
            const float mx = isa().max(sr, Nk, nullptr);
            const double total = isa().exp2_shift_sum(sr, Nk, mx);
            for (int64_t J = 0; J < nK; ++J) {
              // The block's probabilities summed in f64, eight partial sums side by side.
              const int64_t j0 = J * bk, j1 = std::min(Nk, j0 + bk);
              double part[8] = {};
              int64_t j = j0;
              for (; j + 8 <= j1; j += 8)
                for (int u = 0; u < 8; ++u) part[u] += sr[j + u];
              for (; j < j1; ++j) part[0] += sr[j];
              const double acc = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
              sums[J] += acc / total;
            }
          }
        }
        for (int64_t J = 0; J < nK; ++J) out[I * nK + J] = static_cast<float>(sums[J]);
      });
      if (nonfinite) return Status(Code::kRange, "expected finite q but q[" + std::to_string(b) + ", " +
                                                     std::to_string(h) + "] holds NaN or Inf");
    }
  return Status::Ok();
}

Status block_pool(const BlockPoolParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.x.on_host()) return Status(Code::kDevice, "cpu::block_pool needs host tensors");
  const int64_t B = p.x.shape[0], H = p.x.shape[1], N = p.x.shape[2], D = p.x.shape[3], nB = ceil_div(N, p.block);
  parallel_for(B * H * nB, [&](int64_t t) {
    const int64_t blk = t % nB, bh = t / nB, b = bh / H, h = bh % H;
    const int64_t r0 = blk * p.block, r1 = std::min(N, r0 + p.block);
    std::vector<float> row(static_cast<size_t>(D));
    std::vector<double> sum(static_cast<size_t>(D), 0.0), unit(static_cast<size_t>(D), 0.0);
    for (int64_t r = r0; r < r1; ++r) {
      load_row(p.x, b, h, r, row.data());
      double nn = 0.0;
      for (int64_t d = 0; d < D; ++d) {
        sum[d] += row[d];
        nn += static_cast<double>(row[d]) * row[d];
      }
      const double inv = nn > 0.0 ? 1.0 / std::sqrt(nn) : 0.0;
      for (int64_t d = 0; d < D; ++d) unit[d] += row[d] * inv;
    }
    const double n = static_cast<double>(r1 - r0);
    float* mean = p.mean.ptr<float>() + t * D;
    double ss = 0.0;
    for (int64_t d = 0; d < D; ++d) {
      mean[d] = static_cast<float>(sum[d] / n);
      ss += unit[d] * unit[d];
    }
    p.self_sim.ptr<float>()[t] = static_cast<float>(ss / (n * n));
  });
  return Status::Ok();
}

Status apply_reorder(const ApplyReorderParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.x.on_host()) return Status(Code::kDevice, "cpu::apply_reorder needs host tensors");
  const int64_t B = p.x.shape[0], H = p.x.shape[1], N = p.x.shape[2];
  const size_t bytes = static_cast<size_t>(p.x.shape[3]) * dtype_size(p.x.dtype);
  const int32_t* perm = p.perm.ptr<int32_t>();
  parallel_for(B * H, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    for (int64_t i = 0; i < N; ++i) {
      const int64_t t = perm[h * N + i];
      const int64_t from = p.inverse ? i : t, to = p.inverse ? t : i;
      std::memcpy(const_cast<char*>(row_ptr(p.out, b, h, to)), row_ptr(p.x, b, h, from), bytes);
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
