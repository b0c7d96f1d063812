// AVX2+FMA micro-kernel for the bipartite-matching score pass: 6 rows × 16
// columns of cosine scores in 12 ymm accumulators (enough independent FMA
// chains to cover the FMA latency, which the shared 4×16 qk_tile cannot), over
// the full depth C, with the row max/argmax folded in. Compiled with
// -mavx2 -mfma (CMakeLists.txt); cpu/merge.cc calls it only when the CPU has
// both, and falls back to isa().qk_tile otherwise.
#include <immintrin.h>

#include <cstdint>

#include "cpu/merge_kernels.h"

namespace tokensieve {
namespace cpu {
namespace {

template <int R>
void tile(const float* a, int64_t C, const float* panel, float* out /* [R][16] */) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  const float* kp = panel;
  for (int64_t d = 0; d < C; ++d, kp += 16) {
    const __m256 k0 = _mm256_load_ps(kp), k1 = _mm256_load_ps(kp + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 b = _mm256_broadcast_ss(a + r * C + d);
      acc[r][0] = _mm256_fmadd_ps(b, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(b, k1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(out + r * 16, acc[r][0]);
    _mm256_storeu_ps(out + r * 16 + 8, acc[r][1]);
  }
}

}  // namespace

void score_argmax_avx2(const float* rows, int64_t n, int64_t C, const float* panels, int64_t ncols, bool skip_col0,
                       float* best, int32_t* arg) {
  alignas(32) float s[6 * 16];
  const int64_t npanels = (ncols + 15) / 16;
  for (int64_t p = 0; p < npanels; ++p) {
    const float* panel = panels + p * C * 16;
    const int64_t cn = ncols - p * 16 < 16 ? ncols - p * 16 : 16;
    for (int64_t i0 = 0; i0 < n; i0 += 6) {
      const int rr = static_cast<int>(n - i0 < 6 ? n - i0 : 6);
      const float* a = rows + i0 * C;
      switch (rr) {
        case 6: tile<6>(a, C, panel, s); break;
        case 5: tile<5>(a, C, panel, s); break;
        case 4: tile<4>(a, C, panel, s); break;
        case 3: tile<3>(a, C, panel, s); break;
        case 2: tile<2>(a, C, panel, s); break;
        default: tile<1>(a, C, panel, s); break;
      }
      // Columns in increasing order with a strict '>': the first maximum wins.
      for (int r = 0; r < rr; ++r) {
        float bv = best[i0 + r];
        int32_t bi = arg[i0 + r];
        for (int64_t j = (skip_col0 && p == 0) ? 1 : 0; j < cn; ++j) {
          if (s[r * 16 + j] > bv) {
            bv = s[r * 16 + j];
            bi = static_cast<int32_t>(p * 16 + j);
          }
        }
        best[i0 + r] = bv;
        arg[i0 + r] = bi;
      }
    }
  }
}

}  // namespace cpu
}  // namespace tokensieve
