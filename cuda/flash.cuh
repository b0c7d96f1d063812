// Pieces shared by the flash-style kernels (cuda/attention.cu,
// cuda/blocksparse.cu): dtype conversion into staging buffers, 32-bit shared
// loads, and the score GEMM of one warp — S (16 rows × 64 keys, f32) =
// Q·Kᵀ from row-major tiles in shared memory — for each tensor-core
// instruction (cuda/mma.cuh) a precision maps to.
//
// Tile storage (one row per token, ld elements apart, dims [D, Dp) zero):
//   MmaKind     smem element   k-step  Dp multiple  row padding  fragments
//   kF16/kBF16  __half/bf16    16      16           8 elements   ldmatrix.x4
//   kTF32(x3)   float          8       8            4 floats     lds32
//   kS8         int8_t         32      32           16 bytes     lds32
// Padding keeps every fragment load free of bank conflicts: 16-bit rows are
// 16 bytes longer than a multiple of 32 (ldmatrix's 8 row addresses land on
// distinct 16-byte bank groups); f32 and int8 rows are an odd multiple of 4
// words apart, so the 8 rows g = lane / 4 of a fragment hit banks 4g(2m+1) +
// t, all distinct.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/mma.cuh"

namespace tokensieve {
namespace cuda {

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ uint32_t lds32(const void* p) { return *reinterpret_cast<const uint32_t*>(p); }

// The tensor-core instruction of a score GEMM. kTF32x3 is 3×TF32: x = hi +
// lo with hi = tf32(x), lo = tf32(x − hi), and q·k ≈ lo·hi + hi·lo + hi·hi
// (the dropped lo·lo is below f32's rounding), which keeps f32 accuracy.
enum class MmaKind { kF16, kBF16, kTF32, kTF32x3, kS8 };

template <MmaKind M>
struct MmaTraits;
template <>
struct MmaTraits<MmaKind::kF16> {
  using Elem = __half;
  static constexpr int kStep = 16, kPad = 8;
};
template <>
struct MmaTraits<MmaKind::kBF16> {
  using Elem = __nv_bfloat16;
  static constexpr int kStep = 16, kPad = 8;
};
template <>
struct MmaTraits<MmaKind::kTF32> {
  using Elem = float;
  static constexpr int kStep = 8, kPad = 4;
};
template <>
struct MmaTraits<MmaKind::kTF32x3> {
  using Elem = float;
  static constexpr int kStep = 8, kPad = 4;
};
template <>
struct MmaTraits<MmaKind::kS8> {
  using Elem = int8_t;
  static constexpr int kStep = 32, kPad = 16;
};

// Converts one input element into the staging type (In == Elem: a copy).
template <typename Elem, typename In>
__device__ __forceinline__ Elem stage_convert(In x) {
  if constexpr (std::is_same<In, Elem>::value) return x;
  else return from_f32<Elem>(load_f32(&x));
}
template <typename Elem>
__device__ __forceinline__ Elem stage_zero() {
  if constexpr (std::is_same<Elem, int8_t>::value) return 0;
  else return from_f32<Elem>(0.0f);
}

// One 16-byte chunk (dims [d0, d0 + 16 / sizeof(Elem))) of a staged row:
// cp.async when no conversion is needed and the source is 16-byte aligned
// and wholly inside the row, element by element otherwise (dims >= D and a
// null row give zeros). Completes at cp_async_wait_all.
template <typename In, typename Elem>
__device__ __forceinline__ void stage_chunk(Elem* dst, const In* row, int d0, int D, bool aligned) {
  constexpr int E = 16 / static_cast<int>(sizeof(Elem));
  if constexpr (std::is_same<In, Elem>::value) {
    if (row != nullptr && aligned && d0 + E <= D) {
      cp_async16(dst, row + d0);
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < E; ++i)
    dst[i] = (row != nullptr && d0 + i < D) ? stage_convert<Elem>(row[d0 + i]) : stage_zero<Elem>();
}

// s[nt][e] = Σ_d Q[r][d]·K[c][d] for this warp's rows r = 16·warp + g +
// 8·(e / 2) of Qs and keys c = 8·nt + 2t + e % 2 of Ks (g = lane / 4,
// t = lane % 4: the accumulator layout of mma.sync), over ksteps k-steps
// (Dp = ksteps · kStep dims, zero past D). Warp-collective; reads shared
// memory only. The same function serves both passes of attention_scores, so
// a (row, key) pair gets the same bits in each.
template <MmaKind M>
__device__ __forceinline__ void warp_scores(const typename MmaTraits<M>::Elem* Qs,
                                            const typename MmaTraits<M>::Elem* Ks, int ld, int ksteps,
                                            float (&s)[8][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
  if constexpr (M == MmaKind::kF16 || M == MmaKind::kBF16) {
    using T = typename MmaTraits<M>::Elem;
    const int Dp = ksteps * 16;
    for (int kk = 0; kk < ksteps; kk += 2) {
      // A: matrices rows +0/+8 × dims +0/+8 of the warp's 16×16 chunk, for k-steps kk and kk + 1.
      uint32_t a0[4], a1[4];
      const T* qrow = Qs + (warp * 16 + (lane / 8 % 2) * 8 + lane % 8) * ld + (lane / 16) * 8;
      ldmatrix_x4(a0, qrow + kk * 16);
      const bool two = kk + 1 < ksteps;
      if (two) ldmatrix_x4(a1, qrow + kk * 16 + 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        // Matrices: keys 8nt.. × dims 16kk + {0, 8, 16, 24} (b0, b1 of two k-steps). With an odd
        // count of k-steps the last load's upper half is clamped inside the row and not used.
        uint32_t kf[4];
        ldmatrix_x4(kf, Ks + (nt * 8 + lane % 8) * ld + min(kk * 16 + (lane / 8) * 8, Dp - 8));
        const uint32_t b0[2] = {kf[0], kf[1]};
        mma_m16n8k16<T>(s[nt], a0, b0);
        if (two) {
          const uint32_t b1[2] = {kf[2], kf[3]};
          mma_m16n8k16<T>(s[nt], a1, b1);
        }
      }
    }
  } else if constexpr (M == MmaKind::kTF32 || M == MmaKind::kTF32x3) {
    const float* q0 = Qs + (warp * 16 + g) * ld + t;
    const float* k0 = Ks + g * ld + t;
    for (int kk = 0; kk < ksteps; ++kk) {
      const float av[4] = {q0[kk * 8], q0[8 * ld + kk * 8], q0[kk * 8 + 4], q0[8 * ld + kk * 8 + 4]};
      uint32_t ahi[4], alo[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float hi = to_tf32(av[i]);
        ahi[i] = __float_as_uint(hi);
        if constexpr (M == MmaKind::kTF32x3) alo[i] = __float_as_uint(to_tf32(av[i] - hi));
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const float bv[2] = {k0[nt * 8 * ld + kk * 8], k0[nt * 8 * ld + kk * 8 + 4]};
        const float bh0 = to_tf32(bv[0]), bh1 = to_tf32(bv[1]);
        const uint32_t bhi[2] = {__float_as_uint(bh0), __float_as_uint(bh1)};
        if constexpr (M == MmaKind::kTF32x3) {
          // Small terms first: they are then added into an accumulator of their own size.
          const uint32_t blo[2] = {__float_as_uint(to_tf32(bv[0] - bh0)), __float_as_uint(to_tf32(bv[1] - bh1))};
          mma_m16n8k8_tf32(s[nt], alo, bhi);
          mma_m16n8k8_tf32(s[nt], ahi, blo);
        }
        mma_m16n8k8_tf32(s[nt], ahi, bhi);
      }
    }
  } else {
    static_assert(M == MmaKind::kS8, "");
    // Exact int32 sums (|Σ| <= 127² · 256 < 2^24, so the float below is exact too).
    int acc[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0;
    const int8_t* q0 = Qs + (warp * 16 + g) * ld + 4 * t;
    const int8_t* k0 = Ks + g * ld + 4 * t;
    for (int kk = 0; kk < ksteps; ++kk) {
      const uint32_t a[4] = {lds32(q0 + kk * 32), lds32(q0 + 8 * ld + kk * 32), lds32(q0 + kk * 32 + 16),
                             lds32(q0 + 8 * ld + kk * 32 + 16)};
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const uint32_t b[2] = {lds32(k0 + nt * 8 * ld + kk * 32), lds32(k0 + nt * 8 * ld + kk * 32 + 16)};
        mma_m16n8k32_s8(acc[nt], a, b);
      }
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = static_cast<float>(acc[nt][e]);
  }
}

}  // namespace cuda
}  // namespace tokensieve
