// AVX2+FMA micro-kernel for the bipartite-matching score pass: 6 rows × 16
// columns of cosine scores in 12 ymm accumulators (enough independent FMA
// chains to cover the FMA latency, which the shared 4×16 qk_tile cannot),
// blocked over depth and columns, with the row max/argmax folded in. Compiled with
// -mavx2 -mfma (CMakeLists.txt); cpu/merge.cc calls it only when the CPU has
// both, and falls back to isa().qk_tile otherwise.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/merge_kernels.h"

namespace tokensieve {
namespace cpu {
namespace {

constexpr int64_t kDepth = 256;     // channels per depth block: a 16-column panel slice is 16 KiB (L1)
constexpr int64_t kBlockCols = 256;  // columns whose partial sums a task keeps ([rows, 256] floats)

// acc[r][0..15] (+)= Σ_{d < depth} a[r·lda + d] · panel[d·16 + 0..15], a
// sequential fma chain per element, continued from `part` when `resume`.
template <int R>
void tile(const float* a, int64_t lda, int64_t depth, const float* panel, float* part, int64_t ldp, bool resume) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) {
    acc[r][0] = resume ? _mm256_loadu_ps(part + r * ldp) : _mm256_setzero_ps();
    acc[r][1] = resume ? _mm256_loadu_ps(part + r * ldp + 8) : _mm256_setzero_ps();
  }
  const float* kp = panel;
  for (int64_t d = 0; d < depth; ++d, kp += 16) {
    const __m256 k0 = _mm256_load_ps(kp), k1 = _mm256_load_ps(kp + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 b = _mm256_broadcast_ss(a + r * lda + d);
      acc[r][0] = _mm256_fmadd_ps(b, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(b, k1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(part + r * ldp, acc[r][0]);
    _mm256_storeu_ps(part + r * ldp + 8, acc[r][1]);
  }
}

void tile_rows(int rr, const float* a, int64_t lda, int64_t depth, const float* panel, float* part, int64_t ldp,
               bool resume) {
  switch (rr) {
    case 6: tile<6>(a, lda, depth, panel, part, ldp, resume); break;
    case 5: tile<5>(a, lda, depth, panel, part, ldp, resume); break;
    case 4: tile<4>(a, lda, depth, panel, part, ldp, resume); break;
    case 3: tile<3>(a, lda, depth, panel, part, ldp, resume); break;
    case 2: tile<2>(a, lda, depth, panel, part, ldp, resume); break;
    default: tile<1>(a, lda, depth, panel, part, ldp, resume); break;
  }
}

}  // namespace

// Blocked like a GEMM: per block of 256 columns, the depth runs in slices of
// 256 channels, and for each slice every 16-column panel slice (L1) meets
// every 6-row group of the task; partial sums live in `part` [n, 256]. The
// fma chain per score still runs over the channels in order, so the result
// is bit-identical to an unblocked chain (and to the CUDA kernel).
void score_argmax_avx2(const float* rows, int64_t n, int64_t C, const float* panels, int64_t ncols, bool skip_col0,
                       float* best, int32_t* arg) {
  thread_local std::vector<float> part_buf;
  if (part_buf.size() < static_cast<size_t>(n * kBlockCols)) part_buf.resize(static_cast<size_t>(n * kBlockCols));
  float* part = part_buf.data();
  const int64_t npanels = (ncols + 15) / 16;
  for (int64_t p0 = 0; p0 < npanels; p0 += kBlockCols / 16) {
    const int64_t p1 = std::min<int64_t>(npanels, p0 + kBlockCols / 16);
    for (int64_t d0 = 0; d0 < C; d0 += kDepth) {
      const int64_t depth = std::min<int64_t>(kDepth, C - d0);
      for (int64_t p = p0; p < p1; ++p) {
        const float* panel = panels + (p * C + d0) * 16;
        for (int64_t i0 = 0; i0 < n; i0 += 6) {
          const int rr = static_cast<int>(std::min<int64_t>(6, n - i0));
          tile_rows(rr, rows + i0 * C + d0, C, depth, panel, part + i0 * kBlockCols + (p - p0) * 16, kBlockCols,
                    d0 > 0);
        }
      }
    }
    // Columns in increasing order with a strict '>': the first maximum wins.
    for (int64_t i = 0; i < n; ++i) {
      float bv = best[i];
      int32_t bi = arg[i];
      const float* s = part + i * kBlockCols;
      const int64_t j_end = std::min<int64_t>(ncols, p1 * 16);
      for (int64_t j = p0 * 16; j < j_end; ++j) {
        if (skip_col0 && j == 0) continue;
        if (s[j - p0 * 16] > bv) {
          bv = s[j - p0 * 16];
          bi = static_cast<int32_t>(j);
        }
      }
      best[i] = bv;
      arg[i] = bi;
    }
  }
}

float l2norm_avx2(const float* x, int64_t C) {
  // Lane l of the f64 vector holds the sum of elements d ≡ l (mod 4) — the
  // order of the scalar code (float·float is exact in f64, so the multiply-
  // add rounds once either way).
  __m256d acc = _mm256_setzero_pd();
  int64_t d = 0;
  for (; d + 4 <= C; d += 4) {
    const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + d));
    acc = _mm256_add_pd(acc, _mm256_mul_pd(v, v));
  }
  alignas(32) double s4[4];
  _mm256_store_pd(s4, acc);
  for (; d < C; ++d) s4[d & 3] += static_cast<double>(x[d]) * x[d];
  return static_cast<float>(std::sqrt((s4[0] + s4[1]) + (s4[2] + s4[3])));
}

void divide_avx2(float* x, int64_t C, float norm) {
  const __m256 n = _mm256_set1_ps(norm);
  int64_t d = 0;
  for (; d + 8 <= C; d += 8) _mm256_storeu_ps(x + d, _mm256_div_ps(_mm256_loadu_ps(x + d), n));
  for (; d < C; ++d) x[d] /= norm;
}

}  // namespace cpu
}  // namespace tokensieve
