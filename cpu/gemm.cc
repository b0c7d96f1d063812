// gemm_nt (the stored product of cpu/gemm.h's driver) and its test hook
// on plain row-major inputs, with both layouts of operand a (runtime.h).
#include "cpu/gemm.h"

#include <algorithm>
#include <vector>

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
                   float* out) {
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

void round_check(const float* x, int64_t n, bool f16, float* out) {
  std::copy(x, x + n, out);
  if (f16) isa().round_f16(out, n);
  else isa().round_bf16(out, n);
}

}  // namespace cpu
}  // namespace tokensieve
