// The CPU primitives that are worth compiling per instruction set. The same
// source (cpu/isa_impl.inc) is compiled for baseline x86-64 and for
// AVX2+FMA+F16C; isa() picks the best one this machine supports.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {
namespace cpu {

// Columns per packed panel and per register tile; packed operands are
// padded to a multiple.
constexpr int64_t kColTile = 16;
// Rows per register tile of gemm_tile: 6 rows x 16 columns are 12 of the 16
// ymm registers, enough independent FMA chains to cover the FMA latency at
// two FMAs per cycle, with 2 loads and 6 broadcasts per 12 FMAs.
constexpr int kGemmRows = 6;
// log2(e): the softmaxes (attention scores, block-sparse attention, block
// mass) fold it into the logit scale and run in base 2 (exp2_shift_sum).
constexpr float kLog2e = 1.44269504088896341f;
// ln 2: a base-2 log-sum-exp back to base e (block-sparse attention's lse).
constexpr float kLn2 = 0.693147180559945309f;

struct IsaKernels {
  const char* name;
  // dst[i] = float(src[i]) for a contiguous run of n elements of dtype `dt`.
  void (*to_f32)(const void* src, DType dt, int64_t n, float* dst);
  // x[i] = f32_round_bf16(x[i]) in place: rounded to bf16 (nearest even;
  // NaN quieted) and kept as f32, the same bits as core/dtype.h's.
  void (*round_bf16)(float* x, int64_t n);
  // x[i] = f16_to_f32(f32_to_f16(x[i])) in place: rounded to f16 (nearest
  // even; overflow to ±Inf, subnormals kept, NaN quieted with its payload's
  // top bits), as the scalar conversions round it (F16C where the set has it).
  void (*round_f16)(float* x, int64_t n);
  // True when every x[i] is finite.
  bool (*all_finite)(const float* x, int64_t n);
  // out[p*kColTile + c] = Σ_d q[d] * kt[p*panel_stride + d*kColTile + c] for
  // p < npanels, c < kColTile (panels of packed kᵀ): per element the same
  // sequential FMA chain over d as gemm_tile, hence the same bits.
  void (*qk_row_panels)(const float* q, int64_t D, const float* kt, int64_t panel_stride, int64_t npanels,
                        float* out);
  // out[c] = Σ_d panel[d*kColTile + c]² for c < kColTile (gemm_tile's chain).
  void (*panel_self_dots)(const float* panel, int64_t D, float* out);
  // The register-blocked micro-kernel of every a·bᵀ on the CPU:
  // part[r*ldp + c] (+)= Σ_{d < depth} a[r*a_row + d*a_depth] * panel[d*kColTile + c]
  // for r < rows (1..tile_rows), c < kColTile. Each element is one
  // sequential FMA chain over d, continued from `part` when `resume` (an f32
  // partial sum stores and reloads exactly), so blocking over depth changes
  // no bit: a tile equals qk_row_panels' chains for the same pair. a is rows (a_row = lda, a_depth = 1) or a panel (a_row = 1,
  // a_depth = kColTile, the rows inside one 16-row panel).
  void (*gemm_tile)(const float* a, int64_t a_row, int64_t a_depth, int rows, const float* panel, int64_t depth,
                    float* part, int64_t ldp, bool resume);
  // gemm_tile over two panels at once: columns c < kColTile from `panel`,
  // kColTile <= c < 2*kColTile from `panel + panel_stride` (the same chains,
  // so the same bits as two gemm_tile calls). With AVX-512 a zmm register is
  // one panel row and rows × 2 of them are the accumulators; elsewhere it is
  // two gemm_tile calls.
  void (*gemm_tile_wide)(const float* a, int64_t a_row, int64_t a_depth, int rows, const float* panel,
                         int64_t panel_stride, int64_t depth, float* part, int64_t ldp, bool resume);
  // gemm_tile over three panels (48 columns; panel p at panel + p *
  // panel_stride): with AVX-512, rows × 3 zmm accumulators, so each
  // broadcast row value feeds three FMAs; elsewhere three gemm_tile calls.
  void (*gemm_tile_triple)(const float* a, int64_t a_row, int64_t a_depth, int rows, const float* panel,
                           int64_t panel_stride, int64_t depth, float* part, int64_t ldp, bool resume);
  // panel[c*kColTile + j] = rows[j*ld + c] for j < nrows (<= kColTile), c < C;
  // zero for j >= nrows: up to 16 rows transposed into one packed panel.
  void (*pack_panel)(const float* rows, int64_t ld, int nrows, int64_t C, float* panel);
  // pack_panel with non-temporal stores where the panel is 64-byte aligned
  // (the same values), then a store fence: for packs of a MB or more, which
  // leave the cache before the product reads them, so that plain stores
  // would first read every line back from memory.
  void (*pack_panel_stream)(const float* rows, int64_t ld, int nrows, int64_t C, float* panel);
  // dst[j*ldd + i] = src[i*lds + j] for i < rows, j < cols: a block copied
  // transposed (8 × 8 through registers where the ISA has them), the mirror
  // half of a symmetric matrix written from its upper triangle.
  void (*transpose_block)(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd);
  // out[j] = Σ_c (double)panel[c*kColTile + j]², c in order (one f64 chain
  // per row, the order of a scalar loop over the row) for j < kColTile.
  void (*panel_sq_norms)(const float* panel, int64_t C, double* out);
  // panel[c*kColTile + j] *= scale[j] for c < C, j < kColTile.
  void (*panel_scale)(float* panel, int64_t C, const float* scale);
  // dst[r*ldd + i] = src[r][i] / ‖src[r]‖ for r < rows, i < n (an IEEE
  // division, not a multiply by 1/‖·‖; a zero row stays zero), where ‖x‖ is
  // float(sqrt(f64 sum of squares)) with element d in partial sum d % 4,
  // combined as (s0 + s1) + (s2 + s3) (cuda/merge.cu's order). False when a
  // row holds NaN or Inf (exactly when its f64 sum is not finite: a finite
  // f32 squared is below 2^256). src[r] may be dst's row r.
  bool (*normalise_rows)(const float* const* src, int rows, int64_t n, float* dst, int64_t ldd);
  // The rows (rows <= kColTile) normalised as normalise_rows does, written
  // transposed as one panel [n][kColTile] (column r = row r, zero padded):
  // the bits of normalise_rows followed by pack_panel, without the staging;
  // `stream` as for pack_panel_stream (AVX-512, 16 rows).
  bool (*normalise_panel)(const float* const* src, int rows, int64_t n, bool stream, float* panel);
  // The greedy coverage gains, kept in f64 (cpu/coverage.cc): for each
  // listed row r = rows[i] in order, whose best rises from from[i] to to[i],
  // gain[j] −= (or += without `subtract`) min(max(double(c) − from[i], 0),
  // double(to[i]) − double(from[i])) with c = cov[r*ldc + j], and terms[j]
  // (the count of rows with c > best) drops by one where from[i] < c <=
  // to[i] (or, without `subtract`, rises by one where c > from[i]); then
  // gain[j] = 0 where terms[j] == 0. For j < n; the same operations in
  // every set, so the same bits.
  void (*coverage_update)(const float* cov, int64_t ldc, const int32_t* rows, const float* from, const float* to,
                          int64_t count, int64_t n, bool subtract, double* gain, int32_t* terms);
  // out[j] = Σ_d q[d] * k[j*ldk + d] for j < n. rows_in_order: read the rows
  // one after the other (for keys that come from memory); else eight rows
  // side by side (keys in cache). The same bits either way.
  void (*dot_rows)(const float* q, int64_t D, const float* k, int64_t ldk, int64_t n, bool rows_in_order,
                   float* out);
  // min over x[0..n) (+Inf for n == 0); x holds no NaN.
  float (*min)(const float* x, int64_t n);
  // max over x[0..n), n >= 1; with `finite`, clears *finite when some x[i]
  // is NaN or ±Inf (the max is then meaningless).
  float (*max)(const float* x, int64_t n, bool* finite);
  // The first i < n with x[i] == v (IEEE equality: −0 == +0, NaN never), or
  // n when there is none.
  int64_t (*find_first)(const float* x, int64_t n, float v);
  // x[i] = exp(x[i] - shift) in place; returns Σ x[i] (after the update).
  // exp of -inf (or anything below ~-87.3) is exactly 0.
  float (*exp_shift_sum)(float* x, int64_t n, float shift);
  // x[i] = 2^(x[i] - shift) in place (x[i] - shift <= 127); returns Σ x[i].
  // Exactly 0 at or below -127. For softmax rows whose logits carry the
  // factor log2(e) already (folded into the query scale).
  float (*exp2_shift_sum)(float* x, int64_t n, float shift);
  // acc[j] += Σ_{r < rows} w[r] · x[r·ldx + j] for j < n: per column one
  // sum over the rows in order (w[0]·x[j], then an FMA per row), then one
  // add into acc: the column sums of a tile of softmax rows.
  void (*weighted_column_sum)(const float* x, int64_t ldx, int rows, const float* w, int64_t n, float* acc);
  // y[i] += a * x[i]
  void (*axpy)(float a, const float* x, float* y, int64_t n);
  // out[i] = x[i] * f for i < n (one rounding each; out may be x): the
  // scaling loops outside this table compile for baseline x86-64.
  void (*scale)(const float* x, float f, int64_t n, float* out);
  // x[i] = (x[i] * f) * w[i] for i < n, two roundings in that order: the
  // INT8 logits' row factor, then each key's scale.
  void (*scale_mul)(float* x, float f, const float* w, int64_t n);
  // out[j] = (((0 + w[0]·rows[0][j]) + w[1]·rows[1][j]) + …) · scale for
  // j < n: each term added as axpy adds it (an FMA where the set has FMA,
  // else a multiply and an add), then one multiply — the bits of a zeroed
  // row, `count` axpy calls and a scaling pass, in one pass over memory.
  // A lone row of weight 1 and scale 1 gives x + 0 (−0 becomes +0).
  void (*weighted_row_sum)(const float* const* rows, const float* w, int count, float scale, int64_t n, float* out);
  // y[i] += x[i]
  void (*add)(const float* x, float* y, int64_t n);
  // max |x[i]| over i < n (0 for n == 0); clears *finite when some x[i] is
  // NaN or infinite (the check rides along the same pass over memory).
  float (*amax)(const float* x, int64_t n, bool* finite);
  // out[i] = clamp(round_half_away(x[i] / scale[i * scale_step]), -q, q)
  // with an IEEE f32 division (scale_step 0: one scale for all).
  void (*quantize_codes)(const float* x, int64_t n, const float* scale, int64_t scale_step, float q,
                         int8_t* out);
  // INT4 packing: out[b] = (codes[2b] & 0xf) | (codes[2b + 1] & 0xf) << 4
  // for b < ceil(n / 2), low nibble first; an odd n leaves the last high
  // nibble 0 (quantize.h).
  void (*pack_int4)(const int8_t* codes, int64_t n, uint8_t* out);
  // Groups of `group` values (the last one shorter): scales[i] =
  // max(amax of group i, amax_floor) / q, then the group's codes as
  // quantize_codes makes them; clears *finite when a value is NaN or
  // infinite. One call per row instead of two per group.
  void (*quantize_groups)(const float* x, int64_t n, int64_t group, float q, float amax_floor, float* scales,
                          int8_t* codes, bool* finite);
  // acc[c] += double(x[r·ldx + c]) for c < n, rows r = 0..rows−1 in order:
  // one exact conversion and one f64 add per element, the bits of a scalar
  // loop over the rows (the smoothing mean's chunk sums, quantize.h).
  void (*add_rows_f64)(const float* x, int64_t ldx, int rows, int64_t n, double* acc);
  // add_rows_f64 (the same bits) and each column's range over the rows:
  // hi[c] = max(hi[c], x[r·ldx + c]), lo[c] = min(lo[c], …). For finite x
  // (a NaN or infinity leaves the range unspecified, the sums non-finite):
  // the INT8 block amax of k − mean from one pass over the keys.
  void (*add_rows_f64_range)(const float* x, int64_t ldx, int rows, int64_t n, double* acc, float* hi, float* lo);
  // max |x[r·ldx + c] − m[c]| over rows r < rows and c < n (0 when empty;
  // m null: max |x|), each difference rounded once (the bits of axpy(−1, m,
  // x) then amax, without the copy); clears *finite when some difference is
  // NaN or infinite.
  float (*amax_diff_rows)(const float* x, int64_t ldx, int rows, int64_t n, const float* m, bool* finite);
  // out[r·ldo + c] = clamp(round_half_away((x[r·ldx + c] − m[c]) / scale),
  // -q, q) as f32 (m null: x alone), an IEEE f32 division: quantize_codes'
  // codes, as the values the f32 tiles multiply. out may be x (ldo == ldx).
  void (*code_values_rows)(const float* x, int64_t ldx, int rows, int64_t n, const float* m, float scale, float q,
                           float* out, int64_t ldo);
  // out[r] = Σ_c qcodes[c] · code_c for r < rows, with code_c the value
  // code_values_rows writes for x[r·ldx + c] (minus m[c], by `scale`,
  // clamped to ±q): the INT8 logits of one query row without storing the
  // key codes. Integer products and sums below 2^24 (|codes| <= 127, n <=
  // 1040), exact in any order: the bits of dot_rows over those codes.
  void (*code_dot_rows)(const float* x, int64_t ldx, int rows, int64_t n, const float* m, float scale, float q,
                        const float* qcodes, float* out);
  // One block of block-sparse attention's online softmax in the base-2
  // domain (the logits carry the scale and log2(e), as FlashAttention folds
  // them), for rows r < rows of S (n logits at S + r·lds): mx = max(m[r],
  // max of the row), corr = std::exp2(m[r] − mx), the acc row (D values at
  // acc + r·ldacc) multiplied by corr unless corr == 1, the row replaced by
  // 2^(s − mx) (exp2_shift_sum) and l[r] = l[r]·corr + its sum (a multiply,
  // then an add: never fused), m[r] = mx, then the row rounded to f16
  // (round 1) or bf16 (round 2). The bits of those calls one row at a time,
  // in one call per tile.
  void (*softmax_block_rows)(float* S, int64_t lds, int rows, int64_t n, float* m, float* l, float* acc,
                             int64_t ldacc, int64_t D, int round);
  // Benchmark probe: `iters` rounds of 12 independent FMA chains of
  // fma_lanes floats each (the widest vector this set has: 8 for ymm, 16 for
  // zmm); returns a value that depends on all of them.
  float (*fma_probe)(int64_t iters, float seed);
  int fma_lanes;
  // Rows per gemm_tile / gemm_tile_wide / gemm_tile_triple call this set is
  // built for (they take 1..tile_rows): kGemmRows (6) for the ymm tiles, 8
  // for the zmm one (8 rows × 3 panels = 24 accumulators of 32 registers,
  // and a 16-row panel splits 8 + 8 instead of 6 + 6 + 4).
  int tile_rows;
};

const IsaKernels& isa();

// bf16 products at twice the f32 tile's multiply-adds per instruction
// (AVX-512 BF16, cpu/isa_avx512_bf16.cc). Operands are bf16 channel pairs:
// one uint32_t holds channels 2p (low half) and 2p + 1 (high half), and an
// odd channel count ends with a zero high half.
struct Bf16DotKernels {
  // part[r*ldp + q*kColTile + c] (+)= Σ_{p < pairs} a_r(2p)·b_c(2p) +
  // a_r(2p+1)·b_c(2p+1) for r < rows (1..8), panels q < panels (1..3), c <
  // kColTile: a row r's pairs at a + r*a_row, panel q at panel + q*
  // panel_stride laid out [pairs][kColTile]. Every product is exact in f32;
  // each lane adds a pair's two products to its sum (each addition
  // rounded), continued from `part` when `resume`.
  void (*gemm_tile)(const uint32_t* a, int64_t a_row, int rows, const uint32_t* panel, int64_t panel_stride,
                    int panels, int64_t pairs, float* part, int64_t ldp, bool resume);
  // out[p] = the pair (x[2p], x[2p + 1]) for p < ceil(n / 2), each value
  // rounded to bf16 as f32_to_bf16 rounds it (the high half 0 past n).
  // out may be x.
  void (*to_pairs)(const float* x, int64_t n, uint32_t* out);
  // An f32 panel [depth][kColTile] as pairs [ceil(depth / 2)][kColTile]:
  // out[p*kColTile + c] = the pair (panel[2p][c], panel[2p + 1][c]), rounded
  // as to_pairs rounds. out may be panel.
  void (*panel_to_pairs)(const float* panel, int64_t depth, uint32_t* out);
  // Benchmark probe: `iters` rounds of 16 independent vdpbf16ps chains (32
  // multiply-adds each); returns a value that depends on all of them.
  float (*dot_probe)(int64_t iters, float seed);
};

// The bf16 dot kernels, or null where the CPU lacks AVX512_BF16 or
// TOKENSIEVE_CPU_ISA names a set (baseline, avx2, avx512) that has none.
const Bf16DotKernels* bf16_dot();

// INT8 products on AVX-512 VNNI (cpu/isa_avx512_vnni.cc), for INT8 codes
// (integers in [-127, 127]) held as floats elsewhere. Operands are 4-code
// quads: one uint32_t holds channels 4p..4p+3, lowest byte first.
struct Int8DotKernels {
  // out[r*ldo + q*kColTile + c] = Σ_d a_r(d)·k_c(d), exactly, as f32, for r <
  // rows (1..8), panels q < panels (1..3), c < kColTile: row r's quads
  // (codes + 128, unsigned) at a + r*a_row, panel q at panel +
  // q*panel_stride laid out [quads][kColTile] (signed codes), colsum[q*16 +
  // c] the code sum of panel q's column c (panel_to_quads). The exact
  // integer for depths up to kMaxInt8DotDepth, rounded once to f32: the f32
  // tile's bits wherever that tile sums exactly (|Σ a·k| < 2^24, D <= 1040).
  void (*gemm_tile)(const uint32_t* a, int64_t a_row, int rows, const uint32_t* panel, int64_t panel_stride,
                    int panels, int64_t quads, const int32_t* colsum, float* out, int64_t ldo);
  // out[p] = the bytes code(x[4p + b]) + 128 for b < 4 (128, a zero code,
  // past n), for p < ceil(n / 4); x holds codes as floats. out may be x.
  void (*to_quads_u8)(const float* x, int64_t n, uint32_t* out);
  // A panel of codes as floats [depth][kColTile] as quads [ceil(depth /
  // 4)][kColTile] of signed bytes (zero past depth); colsum[c] = Σ_d of
  // column c's codes. out may be panel.
  void (*panel_to_quads)(const float* panel, int64_t depth, uint32_t* out, int32_t* colsum);
};

// The longest depth whose vpdpbusd sums stay exact in int32 (255·127·D <
// 2^31); callers use the f32 tile beyond it.
constexpr int64_t kMaxInt8DotDepth = 65536;

// The INT8 dot kernels, or null where the CPU lacks AVX512_VNNI (or BW) or
// TOKENSIEVE_CPU_ISA names a set (baseline, avx2, avx512) that has none.
const Int8DotKernels* int8_dot();

namespace isa_baseline {
extern const IsaKernels kernels;
}
namespace isa_avx2 {
extern const IsaKernels kernels;
}
namespace isa_avx512 {
extern const IsaKernels kernels;
}
namespace isa_avx512_bf16 {
extern const Bf16DotKernels kernels;
}
namespace isa_avx512_vnni {
extern const Int8DotKernels kernels;
}

}  // namespace cpu
}  // namespace tokensieve
