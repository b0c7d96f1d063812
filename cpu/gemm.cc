// gemm_nt (the stored product of cpu/gemm.h's driver) and its test hook
// on plain row-major inputs, with both layouts of operand a (runtime.h).
#include "cpu/gemm.h"

#include <algorithm>
#include <vector>

#include "core/dtype.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace cpu {
namespace {

// Rows [n, K] as panels [round_up16(n)/16][K][16], zero padded.
std::vector<float> packed(const float* x, int64_t n, int64_t K) {
  std::vector<float> p(static_cast<size_t>(round_up16(n) * K));
  for (int64_t r0 = 0; r0 < n; r0 += kColTile)
    isa().pack_panel(x + r0 * K, K, static_cast<int>(std::min<int64_t>(kColTile, n - r0)), K,
                     p.data() + (r0 / kColTile) * K * kColTile);
  return p;
}

}  // namespace

// out[i * ldo + j] = a_i · b_j for rows a (row-major [ma, C] or panels) and
// columns b packed as panels (nb columns). With `upper` (a == b), only j >= i
// is computed and mirrored.
void gemm_nt(GemmA a, int64_t ma, const float* b, int64_t nb, int64_t C, float* out, int64_t ldo, bool upper,
             bool parallel) {
  gemm_tiles(a, ma, b, nb, C, upper, parallel,
             [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, const float* tile) {
               if (upper && j0 >= i1) {  // off the diagonal: rows in runs, the mirror as one transposed block
                 for (int64_t i = i0; i < i1; ++i)
                   std::copy(tile + (i - i0) * kGemmTile, tile + (i - i0) * kGemmTile + (j1 - j0), out + i * ldo + j0);
                 isa().transpose_block(tile, kGemmTile, i1 - i0, j1 - j0, out + j0 * ldo + i0, ldo);
                 return;
               }
               for (int64_t i = i0; i < i1; ++i)
                 for (int64_t j = upper ? std::max(j0, i) : j0; j < j1; ++j) {
                   const float v = tile[(i - i0) * kGemmTile + (j - j0)];
                   out[i * ldo + j] = v;
                   if (upper) out[j * ldo + i] = v;
                 }
             });
}

void gemm_nt_check(const float* a, int64_t m, const float* b, int64_t n, int64_t K, bool upper, bool a_panels,
                   bool bf16, float* out) {
  if (bf16) {
    std::vector<float> bp = packed(b, n, K);
    if (const Bf16DotKernels* dot = bf16_dot()) {
      // As ToMe's bf16 match runs it: a as rows of pairs, b's panels
      // converted in place (panel stride K·16 kept).
      const int64_t kp = (K + 1) / 2;
      std::vector<uint32_t> ap(static_cast<size_t>(m * kp));
      for (int64_t i = 0; i < m; ++i) dot->to_pairs(a + i * K, K, ap.data() + i * kp);
      for (int64_t p = 0; p < round_up16(n) / kColTile; ++p) {
        float* panel = bp.data() + p * K * kColTile;
        dot->panel_to_pairs(panel, K, reinterpret_cast<uint32_t*>(panel));
      }
      gemm_tiles_bf16(ap.data(), kp, m, reinterpret_cast<const uint32_t*>(bp.data()), K * kColTile, n, K,
                      /*parallel=*/true, [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, const float* tile) {
                        for (int64_t i = i0; i < i1; ++i)
                          std::copy(tile + (i - i0) * kGemmTile, tile + (i - i0) * kGemmTile + (j1 - j0),
                                    out + i * n + j0);
                      });
      return;
    }
    // No bf16 dot on this CPU: the f32 tile over the rounded values.
    std::vector<float> ar(a, a + m * K);
    isa().round_bf16(ar.data(), m * K);
    isa().round_bf16(bp.data(), static_cast<int64_t>(bp.size()));
    gemm_nt(GemmA{ar.data(), K, false}, m, bp.data(), n, K, out, n, /*upper=*/false, /*parallel=*/true);
    return;
  }
  const std::vector<float> bp = packed(b, n, K);
  const std::vector<float> ap = a_panels ? packed(a, m, K) : std::vector<float>();
  const GemmA ga = a_panels ? GemmA{ap.data(), 0, true} : GemmA{a, K, false};
  gemm_nt(ga, m, bp.data(), n, K, out, n, upper, /*parallel=*/true);
}

bool normalise_check(const float* x, int rows, int64_t n, float* rows_out, float* panel_out, float* panel_stream_out) {
  std::vector<const float*> src(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) src[static_cast<size_t>(r)] = x + r * n;
  if (!isa().normalise_rows(src.data(), rows, n, rows_out, n)) return false;
  const int panel_rows = std::min(rows, static_cast<int>(kColTile));
  if (!isa().normalise_panel(src.data(), panel_rows, n, /*stream=*/false, panel_out)) return false;
  // The streaming stores need a 64-byte aligned panel (Scratch's).
  Scratch aligned;
  float* panel = aligned.get(n * kColTile);
  if (!isa().normalise_panel(src.data(), panel_rows, n, /*stream=*/true, panel)) return false;
  std::copy(panel, panel + n * kColTile, panel_stream_out);
  return true;
}

bool bf16_pairs_check(const float* x, int64_t n, float* rows_out, float* panel_out) {
  const Bf16DotKernels* dot = bf16_dot();
  if (dot == nullptr) return false;
  auto unpack = [](const uint32_t* pairs, int64_t count, float* dst) {
    for (int64_t i = 0; i < count; ++i) dst[i] = bits_to_f32((pairs[i / 2] >> (16 * (i % 2))) << 16);
  };
  // In place, as the kernels run it; the pair past an odd n must be 0 (the
  // slot after x's values holds 1 to show it is not read).
  std::vector<float> rows(static_cast<size_t>(n) + 1, 1.0f);
  std::copy(x, x + n, rows.begin());
  dot->to_pairs(rows.data(), n, reinterpret_cast<uint32_t*>(rows.data()));
  const uint32_t* row_pairs = reinterpret_cast<const uint32_t*>(rows.data());
  unpack(row_pairs, n + n % 2, rows_out);
  // x's first depth·16 values as a panel [depth][16].
  const int64_t depth = n / kColTile;
  if (depth == 0) return true;
  std::vector<float> panel(x, x + depth * kColTile);
  dot->panel_to_pairs(panel.data(), depth, reinterpret_cast<uint32_t*>(panel.data()));
  const uint32_t* pp = reinterpret_cast<const uint32_t*>(panel.data());
  for (int64_t d = 0; d < depth + depth % 2; ++d)
    for (int64_t c = 0; c < kColTile; ++c)
      panel_out[d * kColTile + c] = bits_to_f32((pp[(d / 2) * kColTile + c] >> (16 * (d % 2))) << 16);
  return true;
}

void round_check(const float* x, int64_t n, bool f16, float* out) {
  std::copy(x, x + n, out);
  if (f16) isa().round_f16(out, n);
  else isa().round_bf16(out, n);
}

}  // namespace cpu
}  // namespace tokensieve
