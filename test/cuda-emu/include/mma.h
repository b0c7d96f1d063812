// Host emulation of the WMMA subset (nvcuda::wmma) that cuda/merge.cu uses,
// and of the PTX mma.sync.m16n8k16 (f16/bf16 -> f32) that cuda/mma.cuh wraps:
// 16×16×16 fragments of __nv_bfloat16 (matrix_a / matrix_b) with f32
// accumulators; fill_fragment, load_matrix_sync, mma_sync, store_matrix_sync.
//
// Every lane keeps the whole 16×16 tile (the hardware spreads it over the
// warp in an unspecified mapping; a kernel that touches only these four
// operations cannot tell the difference). The *_sync operations are
// warp-collective as on the GPU: each one passes the per-warp barrier of
// cuda_runtime.h, so a call that not all 32 lanes of a warp reach deadlocks
// (the launch watchdog aborts), and smem written by other lanes before a
// load is seen by it. store_matrix_sync writes a lane's share of the tile
// (element e by lane e % 32), so reading another lane's elements afterwards
// needs a __syncwarp, as on the hardware. mma_sync accumulates in f32 in
// ascending k: d = (((c + a0·b0) + a1·b1) + ...), each product exact (bf16 ×
// bf16 fits an f32), each sum rounded to nearest.
// The alignment rules of the real API are checked (pointer 256-bit aligned,
// ldm a multiple of 16 bytes): a violation aborts.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "emu: only 16x16x16 fragments");
  // The tile in logical (row, column) order: matrix_a is M×K, matrix_b K×N,
  // accumulator M×N (all 16×16 here). Values as f32 (bf16 values are exact).
  float v[16][16];
};

namespace detail {
inline float to_f(float x) { return x; }
inline float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
inline void warp_sync() {
  emu::progress++;
  emu::warp_bars[threadIdx.x / 32]->arrive_and_wait();
}
inline void check(const void* p, unsigned ldm, unsigned elem_bytes, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * elem_bytes) % 16 != 0) {
    fprintf(stderr, "emu: %s: pointer %p not 256-bit aligned or ldm %u not a multiple of 16 bytes\n", what, p, ldm);
    abort();
  }
}
template <class L> constexpr bool is_row() { return std::is_same<L, row_major>::value; }
}  // namespace detail

template <class Use, class T, class L>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float v) {
  for (auto& row : f.v)
    for (float& x : row) x = v;
}

// matrix_a / matrix_b: the layout is part of the fragment type.
template <class Use, class T, class L>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same<Use, accumulator>::value, "emu: accumulator loads need a layout_t");
  detail::check(p, ldm, sizeof(T), "load_matrix_sync");
  detail::warp_sync();  // every lane's earlier writes are visible to the load
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) f.v[i][j] = detail::to_f(detail::is_row<L>() ? p[i * ldm + j] : p[j * ldm + i]);
  detail::warp_sync();  // the load completes in every lane before any lane goes on
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  detail::check(p, ldm, 4, "load_matrix_sync");
  detail::warp_sync();
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) f.v[i][j] = l == mem_row_major ? p[i * ldm + j] : p[j * ldm + i];
  detail::warp_sync();
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  detail::check(p, ldm, 4, "store_matrix_sync");
  detail::warp_sync();
  const int lane = threadIdx.x % 32;
  for (int e = lane; e < 256; e += 32) {
    const int i = e / 16, j = e % 16;
    (l == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.v[i][j];
  }
}

// d = a·b + c, f32 accumulation in ascending k.
template <class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  detail::warp_sync();
  float out[16][16];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float acc = c.v[i][j];
      for (int k = 0; k < 16; ++k) acc += a.v[i][k] * b.v[k][j];  // the product is exact: one rounding per step
      out[i][j] = acc;
    }
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) d.v[i][j] = out[i][j];
}

}  // namespace wmma
}  // namespace nvcuda

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: d += a·b with the PTX
// fragment layout (g = lane / 4, t = lane % 4): a[0] = A[g][2t, 2t+1],
// a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..] (low half
// first); b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g]; d[0..1] =
// C[g][2t, 2t+1], d[2..3] = C[g+8][2t, 2t+1]. Warp-collective: every lane
// passes the per-warp barrier, as on the hardware. Products are exact in
// f32; the sum runs in ascending k (the hardware's order is unspecified).
namespace emu {
template <class T>
inline float mma_operand(uint32_t r, int hi) {
  const uint16_t bits = static_cast<uint16_t>(hi ? r >> 16 : r & 0xffffu);
  if constexpr (std::is_same<T, __half>::value) return __half2float(__half{bits});
  else return __bfloat162float(__nv_bfloat16{bits});
}
inline void warp_all_gather(uint32_t v, uint32_t out[32]) {
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  progress++;
  warp_buf[w][lane] = v;
  warp_bars[w]->arrive_and_wait();
  for (int l = 0; l < 32; ++l) out[l] = static_cast<uint32_t>(warp_buf[w][l]);
  warp_bars[w]->arrive_and_wait();
}
template <class T>
inline void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  uint32_t A[4][32], Bv[2][32];
  for (int r = 0; r < 4; ++r) warp_all_gather(a[r], A[r]);
  for (int r = 0; r < 2; ++r) warp_all_gather(b[r], Bv[r]);
  float Am[16][16], Bm[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int hi = 0; hi < 2; ++hi) {
      Am[g][2 * t + hi] = mma_operand<T>(A[0][l], hi);
      Am[g + 8][2 * t + hi] = mma_operand<T>(A[1][l], hi);
      Am[g][2 * t + 8 + hi] = mma_operand<T>(A[2][l], hi);
      Am[g + 8][2 * t + 8 + hi] = mma_operand<T>(A[3][l], hi);
      Bm[2 * t + hi][g] = mma_operand<T>(Bv[0][l], hi);
      Bm[2 * t + 8 + hi][g] = mma_operand<T>(Bv[1][l], hi);
    }
  }
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
    float acc = d[e];
    for (int k = 0; k < 16; ++k) acc += Am[row][k] * Bm[k][col];
    d[e] = acc;
  }
}

// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32: d += a·b on signed bytes,
// exact int32 sums. Fragments (g = lane / 4, t = lane % 4; byte i of a
// register is element 4t + i): a[0] = A[g][4t..4t+3], a[1] = A[g+8][4t..],
// a[2] = A[g][16+4t..], a[3] = A[g+8][16+4t..]; b[0] = B[4t..4t+3][g],
// b[1] = B[16+4t..][g]; d as in m16n8k16.
inline void mma_m16n8k32_s8(int d[4], const uint32_t a[4], const uint32_t b[2]) {
  uint32_t A[4][32], Bv[2][32];
  for (int r = 0; r < 4; ++r) warp_all_gather(a[r], A[r]);
  for (int r = 0; r < 2; ++r) warp_all_gather(b[r], Bv[r]);
  int Am[16][32], Bm[32][8];
  auto byte = [](uint32_t r, int i) { return static_cast<int>(static_cast<int8_t>(static_cast<uint8_t>(r >> (8 * i)))); };
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
      Am[g][4 * t + i] = byte(A[0][l], i);
      Am[g + 8][4 * t + i] = byte(A[1][l], i);
      Am[g][16 + 4 * t + i] = byte(A[2][l], i);
      Am[g + 8][16 + 4 * t + i] = byte(A[3][l], i);
      Bm[4 * t + i][g] = byte(Bv[0][l], i);
      Bm[16 + 4 * t + i][g] = byte(Bv[1][l], i);
    }
  }
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
    int acc = d[e];
    for (int k = 0; k < 32; ++k) acc += Am[row][k] * Bm[k][col];
    d[e] = acc;
  }
}

// cvt.rna.tf32.f32: keep 10 mantissa bits, round half away from zero on the
// magnitude (adding half an ulp of tf32 to the sign-magnitude bits carries
// into the exponent as the hardware does); NaN and Inf pass unchanged.
inline float to_tf32(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & ~0x1fffu;
  float r;
  memcpy(&r, &u, 4);
  return r;
}
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 (g = lane / 4,
// t = lane % 4): a[0] = A[g][t], a[1] = A[g+8][t], a[2] = A[g][t+4],
// a[3] = A[g+8][t+4]; b[0] = B[t][g], b[1] = B[t+4][g]; d as in m16n8k16.
// The low 13 bits of every operand are ignored (truncated), as on the
// hardware; products of two tf32 values are exact in f32, summed in
// ascending k.
inline void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  uint32_t A[4][32], Bv[2][32];
  for (int r = 0; r < 4; ++r) warp_all_gather(a[r], A[r]);
  for (int r = 0; r < 2; ++r) warp_all_gather(b[r], Bv[r]);
  auto op = [](uint32_t r) {
    r &= ~0x1fffu;
    float f;
    memcpy(&f, &r, 4);
    return f;
  };
  float Am[16][8], Bm[8][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    Am[g][t] = op(A[0][l]);
    Am[g + 8][t] = op(A[1][l]);
    Am[g][t + 4] = op(A[2][l]);
    Am[g + 8][t + 4] = op(A[3][l]);
    Bm[t][g] = op(Bv[0][l]);
    Bm[t + 4][g] = op(Bv[1][l]);
  }
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
    float acc = d[e];
    for (int k = 0; k < 8; ++k) acc += Am[row][k] * Bm[k][col];
    d[e] = acc;
  }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 (see cuda/mma.cuh): the
// row addresses are exchanged through the warp, then every lane reads its
// pairs. Addresses must be 16-byte aligned (checked).
inline void ldmatrix_x4(uint32_t r[4], const void* row, bool trans) {
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0) {
    fprintf(stderr, "emu: ldmatrix row address %p not 16-byte aligned\n", row);
    abort();
  }
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  progress++;
  warp_buf[w][lane] = reinterpret_cast<uintptr_t>(row);
  warp_bars[w]->arrive_and_wait();
  const uint16_t* rows[32];
  for (int l = 0; l < 32; ++l) rows[l] = reinterpret_cast<const uint16_t*>(static_cast<uintptr_t>(warp_buf[w][l]));
  warp_bars[w]->arrive_and_wait();
  const int g = lane / 4, t = lane % 4;
  for (int m = 0; m < 4; ++m) {
    uint16_t lo, hi;
    if (!trans) {
      lo = rows[m * 8 + g][2 * t];
      hi = rows[m * 8 + g][2 * t + 1];
    } else {
      lo = rows[m * 8 + 2 * t][g];
      hi = rows[m * 8 + 2 * t + 1][g];
    }
    r[m] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
}
}  // namespace emu
