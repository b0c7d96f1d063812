// The bf16 dot-product tile (AVX-512 BF16's vdpbf16ps) and the conversions
// that feed it; cpu/isa_dispatch.cc hands it out (bf16_dot()) only where
// the CPU has AVX512_BF16. CMakeLists.txt compiles this file alone with
// -mavx512bf16 on top of the AVX-512 set's flags.
//
// Why: one vdpbf16ps multiplies 32 bf16 pairs and adds them into 16 f32
// lanes at the issue rate of one 16-lane FMA (Zen 5, measured: 6.6 G
// instructions/s a core for both), so a product whose operands are bf16
// anyway (ToMe's `precision: 'bf16'`) does twice the multiply-adds per
// instruction of the f32 tile over the same rounded values.
//
// Each lane of a vdpbf16ps adds the two exact products of a channel pair to
// its f32 sum (Intel: the odd channel, then the even one, each rounded;
// denormal bf16 inputs read as zero): the same exact products as the f32
// tile over the rounded values, in another order of additions, which the
// bf16 precision's definition allows (include/tokensieve/merge.h).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "core/dtype.h"
#include "cpu/isa.h"
#include "cpu/tile_dispatch.h"

namespace tokensieve {
namespace cpu {
namespace isa_avx512_bf16 {
namespace {

// f32_to_bf16's bits (nearest even; a NaN quieted) in the top half of each
// lane, the bottom half zero: round_bf16's integer rounding on zmm.
inline __m512i rounded_bf16(__m512 x) {
  const __m512i b = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  const __m512i top = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  const __m512i rounded = _mm512_and_si512(_mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), top);
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  const __m512i quieted = _mm512_or_si512(_mm512_and_si512(b, top), _mm512_set1_epi32(0x00400000));
  return _mm512_mask_blend_epi32(nan, rounded, quieted);
}

inline uint32_t pair_bits(float lo, float hi) {
  return static_cast<uint32_t>(f32_to_bf16(lo)) | static_cast<uint32_t>(f32_to_bf16(hi)) << 16;
}

void to_pairs(const float* x, int64_t n, uint32_t* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // Loaded before the store: out may be x (the store lands at or below
    // the bytes just read).
    const __m512i b = _mm512_srli_epi32(rounded_bf16(_mm512_loadu_ps(x + i)), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i / 2), _mm512_cvtepi32_epi16(b));
  }
  for (; i + 2 <= n; i += 2) out[i / 2] = pair_bits(x[i], x[i + 1]);
  if (i < n) out[i / 2] = pair_bits(x[i], 0.0f);
}

void panel_to_pairs(const float* panel, int64_t depth, uint32_t* out) {
  const __m512i top = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t d = 0; d < depth; d += 2) {
    const __m512i even = rounded_bf16(_mm512_loadu_ps(panel + d * kColTile));
    const __m512i odd =
        d + 1 < depth ? rounded_bf16(_mm512_loadu_ps(panel + (d + 1) * kColTile)) : _mm512_setzero_si512();
    _mm512_storeu_si512(out + (d / 2) * kColTile,
                        _mm512_or_si512(_mm512_srli_epi32(even, 16), _mm512_and_si512(odd, top)));
  }
}

// The zmm tile of gemm_rows_zmm with a channel pair per step: R rows × P
// panels of f32 accumulators, P loads of 16 column pairs and R broadcasts
// of a row's pair per step, R·P vdpbf16ps.
struct Bf16Tile {
  template <int R, int P>
  static void run(const uint32_t* a, int64_t a_row, const uint32_t* panel, int64_t panel_stride, int64_t pairs,
                  float* part, int64_t ldp, bool resume) {
    __m512 acc[R][P];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p)
        acc[r][p] = resume ? _mm512_loadu_ps(part + r * ldp + p * kColTile) : _mm512_setzero_ps();
    const uint32_t* kp = panel;
    for (int64_t d = 0; d < pairs; ++d, kp += kColTile) {
      __m512bh k[P];
      for (int p = 0; p < P; ++p) k[p] = (__m512bh)_mm512_loadu_si512(kp + p * panel_stride);
      for (int r = 0; r < R; ++r) {
        const __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * a_row + d]));
        for (int p = 0; p < P; ++p) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], b, k[p]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p) _mm512_storeu_ps(part + r * ldp + p * kColTile, acc[r][p]);
  }
};

void gemm_tile(const uint32_t* a, int64_t a_row, int rows, const uint32_t* panel, int64_t panel_stride, int panels,
               int64_t pairs, float* part, int64_t ldp, bool resume) {
  dispatch_tile<Bf16Tile>(rows, panels, a, a_row, panel, panel_stride, pairs, part, ldp, resume);
}

// The benchmarks' bf16 ceiling: 16 independent vdpbf16ps chains (enough for
// two per cycle at up to 8 cycles' latency), 32 multiply-adds each.
float dot_probe(int64_t iters, float seed) {
  __m512 a[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_ps(seed + 0.001f * static_cast<float>(i));
  const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3a833a83);  // bf16 pairs ≈ 1e-3
  const __m512bh y = (__m512bh)_mm512_set1_epi32(0x3f803f80);  // (1, 1)
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 16; ++i) a[i] = _mm512_dpbf16_ps(a[i], x, y);
  __m512 s = a[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, a[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

}  // namespace

extern const Bf16DotKernels kernels;
const Bf16DotKernels kernels = {gemm_tile, to_pairs, panel_to_pairs, dot_probe};

}  // namespace isa_avx512_bf16
}  // namespace cpu
}  // namespace tokensieve
