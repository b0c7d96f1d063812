// The INT8 dot-product tile (AVX-512 VNNI's vpdpbusd) and the conversions
// that feed it; cpu/isa_dispatch.cc hands it out (int8_dot()) only where
// the CPU has AVX512_VNNI. CMakeLists.txt compiles this file alone with
// -mavx512vnni on top of the AVX-512 set's flags.
//
// Why: INT8 attention logits are integer dot products of codes in
// [-127, 127]. On the f32 tile (codes held as floats) they cost what f32
// logits cost, plus the coding passes, so INT8 scores were slower than f32
// ones on the CPU. One vpdpbusd multiplies 64 byte pairs into 16 int32 sums
// (Zen 5, measured: 2.7 G instructions/s a core, 173 G multiply-adds/s
// against 105 for f32 FMAs).
//
// vpdpbusd multiplies unsigned by signed bytes, so the q codes go in as
// q + 128 (1..255) and each logit drops 128·Σ_d k_d, the key's code sum:
// Σ (q + 128)·k − 128·Σ k = Σ q·k exactly, in int32 (|Σ (q + 128)·k| <=
// 255·127·D < 2^31 for D <= kMaxInt8DotDepth; deeper products stay on the
// f32 tile). The result is the same integer the f32 tile sums exactly
// (|Σ q·k| <= 127²·D < 2^24 for D <= 1040), converted to f32: the same bits.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/isa.h"
#include "cpu/tile_dispatch.h"

namespace tokensieve {
namespace cpu {
namespace isa_avx512_vnni {
namespace {

// Codes held as floats (exact integers in [-127, 127]) as int32 lanes.
inline __m512i codes(const float* x) { return _mm512_cvttps_epi32(_mm512_loadu_ps(x)); }

void to_quads_u8(const float* x, int64_t n, uint32_t* out) {
  int64_t i = 0;
  const __m512i bias = _mm512_set1_epi32(128);
  for (; i + 16 <= n; i += 16) {
    // Loaded before the store: out may be x (16 bytes written where 64 were read).
    const __m512i c = _mm512_add_epi32(codes(x + i), bias);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i / 4), _mm512_cvtepi32_epi8(c));
  }
  for (; i < n; i += 4) {
    uint32_t q = 0;
    for (int b = 0; b < 4; ++b) {
      // Past n: 128, a zero code (its key bytes are zero too).
      const int v = i + b < n ? static_cast<int>(x[i + b]) + 128 : 128;
      q |= static_cast<uint32_t>(v & 0xff) << (8 * b);
    }
    out[i / 4] = q;
  }
}

void panel_to_quads(const float* panel, int64_t depth, uint32_t* out, int32_t* colsum) {
  __m512i sum = _mm512_setzero_si512();
  const __m512i lo8 = _mm512_set1_epi32(0xff);
  for (int64_t d = 0; d < depth; d += 4) {
    __m512i q = _mm512_setzero_si512();
    for (int b = 0; b < 4 && d + b < depth; ++b) {
      const __m512i c = codes(panel + (d + b) * kColTile);
      sum = _mm512_add_epi32(sum, c);
      q = _mm512_or_si512(q, _mm512_slli_epi32(_mm512_and_si512(c, lo8), 8 * b));
    }
    // Rows d..d+3 were read above: the store lands at or below them.
    _mm512_storeu_si512(out + (d / 4) * kColTile, q);
  }
  _mm512_storeu_si512(colsum, sum);
}

// R rows × P panels of int32 accumulators; per quad step P loads of 16
// columns' 4 codes and R broadcasts of a row's 4 biased codes.
struct U8S8Tile {
  template <int R, int P>
  static void run(const uint32_t* a, int64_t a_row, const uint32_t* panel, int64_t panel_stride, int64_t quads,
                  const int32_t* colsum, float* out, int64_t ldo) {
    __m512i acc[R][P];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p) acc[r][p] = _mm512_setzero_si512();
    const uint32_t* kp = panel;
    for (int64_t d = 0; d < quads; ++d, kp += kColTile) {
      __m512i k[P];
      for (int p = 0; p < P; ++p) k[p] = _mm512_loadu_si512(kp + p * panel_stride);
      for (int r = 0; r < R; ++r) {
        const __m512i b = _mm512_set1_epi32(static_cast<int>(a[r * a_row + d]));
        for (int p = 0; p < P; ++p) acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], b, k[p]);
      }
    }
    for (int p = 0; p < P; ++p) {
      const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(colsum + p * kColTile), 7);  // 128·Σ k
      for (int r = 0; r < R; ++r)
        _mm512_storeu_ps(out + r * ldo + p * kColTile, _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][p], corr)));
    }
  }
};

void gemm_tile(const uint32_t* a, int64_t a_row, int rows, const uint32_t* panel, int64_t panel_stride, int panels,
               int64_t quads, const int32_t* colsum, float* out, int64_t ldo) {
  dispatch_tile<U8S8Tile>(rows, panels, a, a_row, panel, panel_stride, quads, colsum, out, ldo);
}

}  // namespace

extern const Int8DotKernels kernels;
const Int8DotKernels kernels = {gemm_tile, to_quads_u8, panel_to_quads};

}  // namespace isa_avx512_vnni
}  // namespace cpu
}  // namespace tokensieve
