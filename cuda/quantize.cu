// CUDA INT8/INT4 quantization and dequantization (layouts and arithmetic in
// quantize.h).
//
// Byte-equal with the CPU back end by construction:
//   * scales come from maxima of |x − mean|, and a maximum does not depend
//     on the order it is taken in (cross-block maxima use atomicMax on the
//     bit patterns, which order like the non-negative floats they encode);
//   * codes are clamp(roundf(__fdiv_rn(v, scale))) — IEEE division and
//     round-half-away-from-zero, the CPU's expression; explicit _rn
//     intrinsics keep nvcc from contracting anything into an FMA;
//   * the smoothing mean is summed in the order quantize.h fixes (double sums
//     over kMeanChunk-token chunks, added in order).
// Only the memory access differs between the kernels below, never the
// arithmetic, so every path gives the same bytes.
//
// The work is bandwidth-bound (INT8 from f32: 5 bytes moved per element, a
// few FLOPs), so the kernels are built around the loads:
//
// Vector paths (the common case): every load is one 16-byte vector of x (4
// f32 or 8 f16/bf16 values), every code store the matching 4/8 (INT8) or
// 2/4 (INT4) bytes, so a warp moves 512 contiguous bytes per load. They need
// x 16-byte aligned, rows of a whole number of vectors (C, or D and the token
// strides, a multiple of 16 / sizeof(T)) and codes aligned to their store.
//   token, group   a "team" of 1, 2, 4 or 8 warps per row (the fewest whose
//                  threads, kHold vectors each, cover the row): per token the
//                  row is loaded once into registers, reduced (warp
//                  butterflies, then the team's warps through shared
//                  memory), and coded from registers; a row longer than
//                  8 warps × kHold vectors (> 4,096 f32 / 8,192 f16 values)
//                  reads its tail a second time, from L2. Per group (group
//                  size a multiple of the vector, at most 32 vectors, a
//                  power of two) a group sits in adjacent lanes: a width-P
//                  butterfly gives its maximum, so each vector is coded as
//                  soon as it is loaded — one read.
//   rows           one block per (b, h, token block), as on the scalar path,
//                  the block's vectors held in registers (kHold per thread).
//   tensor/channel a maxima pass (atomicMax per block; channel: a block per
//                  kChannelRowsPerBlock rows, a thread per channel vector), a
//                  pass turning maxima into scales, and a vector codes pass:
//                  two reads of x, the least a global scale allows.
//   dequantize     one 16-byte output vector per thread per step.
// Scalar paths (any alignment, any width): the same arithmetic one element
// (or INT4 byte) per thread: token/group one warp per row, rows one block
// per token block, tensor/channel and dequantize elementwise.
// Grids: token/group one block per 8 / team rows, elementwise kernels one
// vector or element per thread, both grid-strided beyond kMaxBlocks blocks.
//
// A kernel that meets NaN or Inf sets a flag when given one. With
// check_finite the entry point reads it back (the only host synchronisation;
// the binding asks for it only when the call waits) and fails with
// ERR_RANGE. Without check_finite and without tensor/channel scales or
// smoothing, quantize allocates no scratch at all.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "cuda/quantize.cuh"
#include "tokensieve/quantize.h"

namespace tokensieve {
namespace cuda {

namespace {

std::atomic<uint64_t> g_path_counts[static_cast<int>(QuantPath::kCount)];

void count_path(QuantPath p) { g_path_counts[static_cast<int>(p)].fetch_add(1, std::memory_order_relaxed); }

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride kernels cap their grid here
constexpr int64_t kChannelRowsPerBlock = 64;
// 16-byte vectors a thread keeps in registers (16 f32 / 32 f16 values): with
// 8-warp teams, a 4,096-value f32 row is read once. More would cost
// occupancy (registers) for rows that long; the tail beyond is re-read.
constexpr int kHold = 4;

// ---- arithmetic (quantize.h) ----------------------------------------------------

__device__ __forceinline__ float scale_of(float amax, float qmax) { return __fdiv_rn(fmaxf(amax, kAmaxFloor), qmax); }

__device__ __forceinline__ int code_of(float v, float scale, float qmax) {
  const float r = roundf(__fdiv_rn(v, scale));  // roundf: halves away from zero
  return static_cast<int>(fminf(qmax, fmaxf(-qmax, r)));
}

// Two INT4 codes in one byte, element 2i in the low nibble.
__device__ __forceinline__ uint8_t pack_nibbles(int lo, int hi) {
  return static_cast<uint8_t>((lo & 0xf) | ((hi & 0xf) << 4));
}

// x[i] − mean (the mean of the element's (b, h), channel c) as f32.
template <typename T>
__device__ __forceinline__ float value_at(const T* x, int64_t i, const float* mean, int64_t mean_i) {
  const float v = load_f32(x + i);
  return mean != nullptr ? __fsub_rn(v, mean[mean_i]) : v;
}

__device__ __forceinline__ void store_f32(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f32(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_f32(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ void raise_flag(int* flag, int bit, bool bad) {
  if (bad && flag != nullptr) atomicOr(flag, bit);
}

unsigned grid_for(int64_t units, int64_t per_block) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, (units + per_block - 1) / per_block)));
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// ---- 16-byte vectors -------------------------------------------------------------

// Values of T in one 16-byte vector.
template <typename T>
constexpr int vec_elems() {
  return static_cast<int>(16 / sizeof(T));
}

// One 16-byte vector of x (16-byte aligned), through the read-only path.
template <typename T>
__device__ __forceinline__ uint4 load_raw(const T* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// The E values of a raw vector as f32, minus mean[0..E) when mean is not null
// (the smoothing mean: small and reused by every row, so scalar loads that
// hit L1), noting NaN/Inf in *bad.
template <typename T, int E>
__device__ __forceinline__ void to_values(const uint4& raw, const float* mean, float (&v)[E], bool& bad) {
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < E; ++i) {
    v[i] = load_f32(e + i);
    if (mean != nullptr) v[i] = __fsub_rn(v[i], __ldg(mean + i));
    bad |= !isfinite(v[i]);
  }
}

template <typename T, int E>
__device__ __forceinline__ void load_vec(const T* p, const float* mean, float (&v)[E], bool& bad) {
  to_values<T, E>(load_raw(p), mean, v, bad);
}

template <int E>
__device__ __forceinline__ float vec_amax(const float (&v)[E]) {
  float m = 0.0f;
#pragma unroll
  for (int i = 0; i < E; ++i) m = fmaxf(m, fabsf(v[i]));
  return m;
}

template <int E>
__device__ __forceinline__ void zero_vec(float (&v)[E]) {
#pragma unroll
  for (int i = 0; i < E; ++i) v[i] = 0.0f;
}

// E codes stored at out in one store: E bytes (INT8) or E / 2 (INT4, two
// codes a byte, low nibble first).
template <int kBits, int E>
__device__ __forceinline__ void store_codes(uint8_t* out, const int (&q)[E]) {
  if constexpr (kBits == 8) {
    uint32_t w[E / 4];
#pragma unroll
    for (int k = 0; k < E / 4; ++k)
      w[k] = static_cast<uint32_t>(q[4 * k] & 0xff) | (static_cast<uint32_t>(q[4 * k + 1] & 0xff) << 8) |
             (static_cast<uint32_t>(q[4 * k + 2] & 0xff) << 16) | (static_cast<uint32_t>(q[4 * k + 3] & 0xff) << 24);
    if constexpr (E == 4) {
      *reinterpret_cast<uint32_t*>(out) = w[0];
    } else {
      uint2 u;
      u.x = w[0];
      u.y = w[1];
      *reinterpret_cast<uint2*>(out) = u;
    }
  } else {
    uint32_t w = 0;
#pragma unroll
    for (int k = 0; k < E / 2; ++k) w |= static_cast<uint32_t>(pack_nibbles(q[2 * k], q[2 * k + 1])) << (8 * k);
    if constexpr (E == 4) {
      *reinterpret_cast<uint16_t*>(out) = static_cast<uint16_t>(w);
    } else {
      *reinterpret_cast<uint32_t*>(out) = w;
    }
  }
}

// The codes of E values with one scale, stored at out.
template <int kBits, int E>
__device__ __forceinline__ void code_vec(uint8_t* out, const float (&v)[E], float scale) {
  constexpr float kQ = kBits == 8 ? 127.0f : 7.0f;
  int q[E];
#pragma unroll
  for (int i = 0; i < E; ++i) q[i] = code_of(v[i], scale, kQ);
  store_codes<kBits, E>(out, q);
}

// Byte offset of the codes of element e (the first of a vector) in a row.
template <int kBits>
__device__ __forceinline__ int64_t code_offset(int64_t e) {
  return kBits == 8 ? e : e / 2;
}

// The shape of x [R, C] as the kernels see it; N > 1 only when x is
// [B, H, N, D] (the mean of row r belongs to (b, h) = r / N).
struct RowGeometry {
  int64_t R = 1, C = 1, N = 1;
  int64_t group = 1;   // kGroup: group size; kToken: C
  int64_t groups = 1;  // scales per row
};

// ---- smoothing mean ---------------------------------------------------------------

// Block (bh, chunk): double sums of kMeanChunk tokens, per channel.
template <typename T>
__global__ void __launch_bounds__(kThreads) mean_partial_kernel(TokenView x, int64_t chunks, double* partials) {
  const int64_t bh = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int64_t b = bh / x.H, h = bh % x.H;
  const int64_t n0 = chunk * kMeanChunk;
  const int64_t n1 = n0 + kMeanChunk < x.N ? n0 + kMeanChunk : x.N;
  const T* base = static_cast<const T*>(x.data) + b * x.sb + h * x.sh;
  for (int64_t d = threadIdx.x; d < x.D; d += kThreads) {
    double s = 0.0;
    for (int64_t n = n0; n < n1; ++n) s += static_cast<double>(load_f32(base + n * x.sn + d));
    partials[(bh * chunks + chunk) * x.D + d] = s;
  }
}

// Thread (bh, d): the chunk sums in order, / N, to f32.
__global__ void __launch_bounds__(kThreads)
    mean_finish_kernel(const double* partials, int64_t BH, int64_t chunks, int64_t D, int64_t N, float* mean) {
  const int64_t total = BH * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t bh = i / D, d = i % D;
    double s = 0.0;
    for (int64_t c = 0; c < chunks; ++c) s += partials[(bh * chunks + c) * D + d];
    mean[i] = static_cast<float>(s / static_cast<double>(N));
  }
}

// ---- token / group, scalar: one warp per row -------------------------------------------

template <typename T, int kBits>
__global__ void __launch_bounds__(kThreads)
    row_groups_scalar_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean, void* data,
                      float* scales, int* flag) {
  constexpr float kQ = kBits == 8 ? 127.0f : 7.0f;
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  bool bad = false;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; r < g.R; r += warps) {
    const T* row = x + r * g.C;
    const int64_t mean_row = (r / g.N) * g.C;
    float* row_scales = scales + r * g.groups;
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      const int64_t c1 = min(g.C, (gi + 1) * g.group);
      float m = 0.0f;
      for (int64_t c = gi * g.group + lane; c < c1; c += 32) {
        const float v = value_at(row, c, mean, mean_row + c);
        bad |= !isfinite(v);
        m = fmaxf(m, fabsf(v));
      }
      m = warp_max(m);
      if (lane == 0) row_scales[gi] = scale_of(m, kQ);
    }
    __syncwarp();  // the row's scales, written by lane 0, are visible to the warp
    if (kBits == 8) {
      int8_t* out = static_cast<int8_t*>(data) + r * g.C;
      // Group by group, as the maxima: no division per element.
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        const float scale = row_scales[gi];
        const int64_t c1 = min(g.C, (gi + 1) * g.group);
        for (int64_t c = gi * g.group + lane; c < c1; c += 32)
          out[c] = static_cast<int8_t>(code_of(value_at(row, c, mean, mean_row + c), scale, kQ));
      }
    } else {
      const int64_t bytes = (g.C + 1) / 2;
      uint8_t* out = static_cast<uint8_t*>(data) + r * bytes;
      for (int64_t i = lane; i < bytes; i += 32) {
        const int64_t c = 2 * i;
        const int64_t gi = c / g.group;
        const int64_t gi1 = c + 1 == (gi + 1) * g.group ? gi + 1 : gi;  // (c + 1) / group, one division fewer
        const int lo = code_of(value_at(row, c, mean, mean_row + c), row_scales[gi], kQ);
        const int hi = c + 1 < g.C ? code_of(value_at(row, c + 1, mean, mean_row + c + 1), row_scales[gi1], kQ) : 0;
        out[i] = pack_nibbles(lo, hi);
      }
    }
    __syncwarp();  // lane 0 rewrites row_scales only after every lane has read them
  }
  raise_flag(flag, kBadValue, bad);
}

// ---- token / group, vectors: a team of warps per row --------------------------------------

// Token (kGroups false) or group scales of x [R, C], C a multiple of E =
// vec_elems<T>(), x 16-byte aligned. A team is team_warps (1, 2, 4 or 8)
// warps; a block holds kWarps / team_warps teams, one row each. Thread t of
// a team owns the row's vectors t, t + TT, t + 2·TT, ... (TT = the team's
// threads), so every load instruction of a warp reads 512 contiguous bytes.
//   token: the first kHold vectors of each thread stay in registers between
//          the maximum and the codes; later ones (rows longer than TT·kHold
//          vectors) are read again, which hits L2: the team re-reads what it
//          read a moment before.
//   group: P = group / E vectors per group (a power of two <= 32), which
//          are P adjacent lanes of one warp: a width-P butterfly gives the
//          group's maximum and the vector is coded at once.
template <typename T, int kBits, bool kGroups>
__global__ void __launch_bounds__(kThreads)
    row_vec_kernel(const T* __restrict__ x, RowGeometry g, int team_warps, int log2_p,
                   const float* __restrict__ mean, uint8_t* __restrict__ data, float* __restrict__ scales, int* flag) {
  constexpr int E = vec_elems<T>();
  constexpr float kQ = kBits == 8 ? 127.0f : 7.0f;
  __shared__ float team_part[kWarps];  // token: each warp's maximum, for its team
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int team = warp / team_warps, tt = team_warps * 32;
  const int t = (warp % team_warps) * 32 + lane;
  const int rows_per_block = kWarps / team_warps;
  const int64_t V = g.C / E;                      // vectors per row
  const int64_t slots = (V + tt - 1) >> (5 + __ffs(team_warps) - 1);  // vectors per thread, rounded up (tt a power of two)
  const int P = 1 << log2_p;                      // group: vectors per group
  const int64_t code_row = kBits == 8 ? g.C : g.C / 2;  // bytes of codes per row
  bool bad = false;
  // Block-uniform loop (every team of a block takes part in the barriers).
  for (int64_t r0 = static_cast<int64_t>(blockIdx.x) * rows_per_block; r0 < g.R;
       r0 += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    const int64_t r = r0 + team;
    const bool active = r < g.R;  // whole warps: uniform within each warp
    const T* row = x + (active ? r : 0) * g.C;
    const float* mrow = mean != nullptr ? mean + ((active ? r : 0) / g.N) * g.C : nullptr;
    uint8_t* out = data + (active ? r : 0) * code_row;
    uint4 held[kHold];  // raw: 4 registers a vector whatever the dtype
    if constexpr (kGroups) {
      if (!active) continue;  // no barrier in this branch
      for (int64_t j0 = 0; j0 < slots; j0 += kHold) {
        // All loads of the batch first: kHold vectors in flight per thread.
#pragma unroll
        for (int k = 0; k < kHold; ++k) {
          const int64_t vi = (j0 + k) * tt + t;
          if (j0 + k < slots && vi < V) held[k] = load_raw(row + vi * E);
        }
#pragma unroll
        for (int k = 0; k < kHold; ++k) {
          if (j0 + k < slots) {  // uniform over the team
            const int64_t vi = (j0 + k) * tt + t;
            float v[E];
            if (vi < V)
              to_values<T, E>(held[k], mrow != nullptr ? mrow + vi * E : nullptr, v, bad);
            else
              zero_vec(v);
            const float scale = scale_of(warp_max(vec_amax(v), P), kQ);
            if (vi < V) {
              if ((t & (P - 1)) == 0) scales[r * g.groups + (vi >> log2_p)] = scale;
              code_vec<kBits, E>(out + code_offset<kBits>(vi * E), v, scale);
            }
          }
        }
      }
    } else {
      float m = 0.0f;
#pragma unroll
      for (int k = 0; k < kHold; ++k) {
        const int64_t vi = static_cast<int64_t>(k) * tt + t;
        if (active && vi < V) held[k] = load_raw(row + vi * E);
      }
#pragma unroll
      for (int k = 0; k < kHold; ++k) {
        const int64_t vi = static_cast<int64_t>(k) * tt + t;
        if (active && vi < V) {
          float v[E];
          to_values<T, E>(held[k], mrow != nullptr ? mrow + vi * E : nullptr, v, bad);
          m = fmaxf(m, vec_amax(v));
        }
      }
      for (int64_t j = kHold; active && j < slots; ++j) {
        const int64_t vi = j * tt + t;
        if (vi < V) {
          float v[E];
          load_vec<T, E>(row + vi * E, mrow != nullptr ? mrow + vi * E : nullptr, v, bad);
          m = fmaxf(m, vec_amax(v));
        }
      }
      m = warp_max(m);
      if (team_warps > 1) {  // kernel-uniform
        if (lane == 0) team_part[warp] = m;
        __syncthreads();
        m = team_part[team * team_warps];
        for (int w = 1; w < team_warps; ++w) m = fmaxf(m, team_part[team * team_warps + w]);
        __syncthreads();  // team_part is rewritten for the next rows
      }
      const float scale = scale_of(m, kQ);
      if (!active) continue;
      if (t == 0) scales[r] = scale;
      bool seen = false;  // NaN/Inf were noted in the first read
#pragma unroll
      for (int k = 0; k < kHold; ++k) {
        const int64_t vi = static_cast<int64_t>(k) * tt + t;
        if (vi < V) {
          float v[E];
          to_values<T, E>(held[k], mrow != nullptr ? mrow + vi * E : nullptr, v, seen);
          code_vec<kBits, E>(out + code_offset<kBits>(vi * E), v, scale);
        }
      }
      for (int64_t j = kHold; j < slots; ++j) {
        const int64_t vi = j * tt + t;
        if (vi < V) {
          float v[E];
          load_vec<T, E>(row + vi * E, mrow != nullptr ? mrow + vi * E : nullptr, v, seen);
          code_vec<kBits, E>(out + code_offset<kBits>(vi * E), v, scale);
        }
      }
    }
  }
  raise_flag(flag, kBadValue, bad);
}

// ---- rows, scalar: one block per (b, h, token block) --------------------------------------

// Whether token block [n0, n1) holds a selected row.
__device__ __forceinline__ bool block_selected(const BlockFilter& f, int64_t n0, int64_t n1) {
  if (f.count < 0) return true;
  if (f.rows == nullptr) return f.first < n1 && f.first + f.count > n0;  // the range [first, first + count)
  int hit = 0;
  for (int64_t i = threadIdx.x; i < f.count; i += kThreads) {
    const int64_t row = f.rows[i];
    hit |= row >= n0 && row < n1;
  }
  return __syncthreads_or(hit) != 0;
}

template <typename T, int kBits>
__global__ void __launch_bounds__(kThreads)
    rows_scalar_kernel(TokenView x, const float* __restrict__ mean, int64_t block, int64_t nblocks, BlockFilter filter,
                void* codes, float* scales, int* flag, int flag_bit) {
  constexpr float kQ = kBits == 8 ? 127.0f : 7.0f;
  const int64_t bh = blockIdx.x / nblocks, blk = blockIdx.x % nblocks;
  const int64_t b = bh / x.H, h = bh % x.H;
  const int64_t n0 = blk * block, n1 = min(x.N, n0 + block);
  if (!block_selected(filter, n0, n1)) return;  // block-uniform
  const T* base = static_cast<const T*>(x.data) + b * x.sb + h * x.sh;
  const float* mean_bh = mean != nullptr ? mean + bh * x.D : nullptr;
  const int64_t count = (n1 - n0) * x.D;

  float m = 0.0f;
  bool bad = false;
  for (int64_t e = threadIdx.x; e < count; e += kThreads) {
    const int64_t n = n0 + e / x.D, d = e % x.D;
    const float v = value_at(base, n * x.sn + d, mean_bh, d);
    bad |= !isfinite(v);
    m = fmaxf(m, fabsf(v));
  }
  raise_flag(flag, flag_bit, bad);
  const float scale = scale_of(block_max<kThreads>(m), kQ);
  if (threadIdx.x == 0) scales[bh * nblocks + blk] = scale;

  if (kBits == 8) {
    int8_t* out = static_cast<int8_t*>(codes) + (bh * x.N + n0) * x.D;
    for (int64_t e = threadIdx.x; e < count; e += kThreads) {
      const int64_t n = n0 + e / x.D, d = e % x.D;
      out[e] = static_cast<int8_t>(code_of(value_at(base, n * x.sn + d, mean_bh, d), scale, kQ));
    }
  } else {
    const int64_t bpr = (x.D + 1) / 2;  // bytes per token row
    uint8_t* out = static_cast<uint8_t*>(codes) + (bh * x.N + n0) * bpr;
    for (int64_t e = threadIdx.x; e < (n1 - n0) * bpr; e += kThreads) {
      const int64_t n = n0 + e / bpr, d = 2 * (e % bpr);
      const int lo = code_of(value_at(base, n * x.sn + d, mean_bh, d), scale, kQ);
      const int hi = d + 1 < x.D ? code_of(value_at(base, n * x.sn + d + 1, mean_bh, d + 1), scale, kQ) : 0;
      out[e] = pack_nibbles(lo, hi);
    }
  }
}

// ---- rows, vectors: one block per (b, h, token block) --------------------------------------

// As rows_scalar_kernel, with x 16-byte aligned and D and the token strides
// multiples of E: vector e of the block is token n0 + e / (D / E), channels
// from (e % (D / E))·E. A thread keeps its first kHold vectors in registers
// (a 64-token block of D = 128 f16 is 4 a thread), and re-reads the rest.
template <typename T, int kBits>
__global__ void __launch_bounds__(kThreads)
    rows_vec_kernel(TokenView x, const float* __restrict__ mean, int64_t block, int64_t nblocks, BlockFilter filter,
                    uint8_t* codes, float* scales, int* flag, int flag_bit) {
  constexpr int E = vec_elems<T>();
  constexpr float kQ = kBits == 8 ? 127.0f : 7.0f;
  const int64_t bh = blockIdx.x / nblocks, blk = blockIdx.x % nblocks;
  const int64_t b = bh / x.H, h = bh % x.H;
  const int64_t n0 = blk * block, n1 = min(x.N, n0 + block);
  if (!block_selected(filter, n0, n1)) return;  // block-uniform
  const T* base = static_cast<const T*>(x.data) + b * x.sb + h * x.sh;
  const float* mean_bh = mean != nullptr ? mean + bh * x.D : nullptr;
  // 32-bit vector indices (the host checks block · D / E < 2^31): cheap divisions.
  const uint32_t VD = static_cast<uint32_t>(x.D / E), V = static_cast<uint32_t>((n1 - n0) * VD);
  const uint32_t slots = (V + kThreads - 1) / kThreads;
  const int64_t code_row = kBits == 8 ? x.D : x.D / 2;
  uint8_t* out = codes + (bh * x.N + n0) * code_row;

  uint4 held[kHold];  // raw vectors: 4 registers each
  float m = 0.0f;
  bool bad = false;
#pragma unroll
  for (int k = 0; k < kHold; ++k) {
    const uint32_t e = static_cast<uint32_t>(k) * kThreads + threadIdx.x;
    if (e < V) held[k] = load_raw(base + (n0 + e / VD) * x.sn + static_cast<int64_t>(e % VD) * E);
  }
#pragma unroll
  for (int k = 0; k < kHold; ++k) {
    const uint32_t e = static_cast<uint32_t>(k) * kThreads + threadIdx.x;
    if (e < V) {
      const int64_t d = static_cast<int64_t>(e % VD) * E;
      float v[E];
      to_values<T, E>(held[k], mean_bh != nullptr ? mean_bh + d : nullptr, v, bad);
      m = fmaxf(m, vec_amax(v));
    }
  }
  for (uint32_t j = kHold; j < slots; ++j) {
    const uint32_t e = j * kThreads + threadIdx.x;
    if (e < V) {
      const int64_t n = e / VD, d = static_cast<int64_t>(e % VD) * E;
      float v[E];
      load_vec<T, E>(base + (n0 + n) * x.sn + d, mean_bh != nullptr ? mean_bh + d : nullptr, v, bad);
      m = fmaxf(m, vec_amax(v));
    }
  }
  raise_flag(flag, flag_bit, bad);
  const float scale = scale_of(block_max<kThreads>(m), kQ);
  if (threadIdx.x == 0) scales[bh * nblocks + blk] = scale;
  bool seen = false;  // NaN/Inf were noted in the first read
#pragma unroll
  for (int k = 0; k < kHold; ++k) {
    const uint32_t e = static_cast<uint32_t>(k) * kThreads + threadIdx.x;
    if (e < V) {
      const int64_t n = e / VD, d = static_cast<int64_t>(e % VD) * E;
      float v[E];
      to_values<T, E>(held[k], mean_bh != nullptr ? mean_bh + d : nullptr, v, seen);
      code_vec<kBits, E>(out + n * code_row + code_offset<kBits>(d), v, scale);
    }
  }
  for (uint32_t j = kHold; j < slots; ++j) {
    const uint32_t e = j * kThreads + threadIdx.x;
    if (e < V) {
      const int64_t n = e / VD, d = static_cast<int64_t>(e % VD) * E;
      float v[E];
      load_vec<T, E>(base + (n0 + n) * x.sn + d, mean_bh != nullptr ? mean_bh + d : nullptr, v, seen);
      code_vec<kBits, E>(out + n * code_row + code_offset<kBits>(d), v, scale);
    }
  }
}

// ---- tensor / channel, scalar: maxima, scales, codes ----------------------------------------

// amax_bits[0] = max |x − mean| over everything (bit pattern of a
// non-negative float; zeroed before the launch).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    tensor_amax_scalar_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean,
                       unsigned int* amax_bits, int* flag) {
  const int64_t total = g.R * g.C;
  float m = 0.0f;
  bool bad = false;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / g.C, c = i % g.C;
    const float v = value_at(x, i, mean, (r / g.N) * g.C + c);
    bad |= !isfinite(v);
    m = fmaxf(m, fabsf(v));
  }
  raise_flag(flag, kBadValue, bad);
  m = block_max<kThreads>(m);
  if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(m));
}

// amax_bits[c] = max over rows of |x[r, c] − mean|; a block takes
// kChannelRowsPerBlock rows, its threads stride over the channels.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    channel_amax_scalar_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean,
                        unsigned int* amax_bits, int* flag) {
  const int64_t r0 = blockIdx.x * kChannelRowsPerBlock, r1 = min(g.R, r0 + kChannelRowsPerBlock);
  bool bad = false;
  for (int64_t c = threadIdx.x; c < g.C; c += kThreads) {
    float m = 0.0f;
    for (int64_t r = r0; r < r1; ++r) {
      const float v = value_at(x, r * g.C + c, mean, (r / g.N) * g.C + c);
      bad |= !isfinite(v);
      m = fmaxf(m, fabsf(v));
    }
    atomicMax(&amax_bits[c], __float_as_uint(m));
  }
  raise_flag(flag, kBadValue, bad);
}

__global__ void __launch_bounds__(kThreads)
    scales_from_amax_kernel(const unsigned int* amax_bits, int64_t n, float qmax, float* scales) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    scales[i] = scale_of(__uint_as_float(amax_bits[i]), qmax);
}

// Codes with one scale (tensor) or one per channel; a thread per element
// (INT8) or per byte (INT4).
template <typename T, int kBits>
__global__ void __launch_bounds__(kThreads)
    shared_scale_codes_scalar_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean,
                              const float* __restrict__ scales, bool per_channel, void* data) {
  constexpr float kQ = kBits == 8 ? 127.0f : 7.0f;
  const int64_t per_row = kBits == 8 ? g.C : (g.C + 1) / 2;
  const int64_t total = g.R * per_row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / per_row, u = i % per_row;
    const int64_t mean_row = (r / g.N) * g.C;
    if (kBits == 8) {
      const float s = scales[per_channel ? u : 0];
      static_cast<int8_t*>(data)[i] = static_cast<int8_t>(code_of(value_at(x, r * g.C + u, mean, mean_row + u), s, kQ));
    } else {
      const int64_t c = 2 * u;
      const int lo = code_of(value_at(x, r * g.C + c, mean, mean_row + c), scales[per_channel ? c : 0], kQ);
      const int hi =
          c + 1 < g.C ? code_of(value_at(x, r * g.C + c + 1, mean, mean_row + c + 1), scales[per_channel ? c + 1 : 0], kQ)
                      : 0;
      static_cast<uint8_t*>(data)[i] = pack_nibbles(lo, hi);
    }
  }
}

// ---- tensor / channel, vectors ---------------------------------------------------------------
// x [R, C] with C a multiple of E, 16-byte aligned: vector i is row i / (C /
// E), channels from (i % (C / E))·E, and starts at element i·E.

template <typename T>
__global__ void __launch_bounds__(kThreads)
    tensor_amax_vec_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean,
                           unsigned int* amax_bits, int* flag) {
  constexpr int E = vec_elems<T>();
  const int64_t VC = g.C / E, total = g.R * VC;
  float m = 0.0f;
  bool bad = false;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / VC, c = (i % VC) * E;
    float v[E];
    load_vec<T, E>(x + i * E, mean != nullptr ? mean + (r / g.N) * g.C + c : nullptr, v, bad);
    m = fmaxf(m, vec_amax(v));
  }
  raise_flag(flag, kBadValue, bad);
  m = block_max<kThreads>(m);
  if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(m));
}

// A block per kChannelRowsPerBlock rows, a thread per channel vector (E
// running maxima), then one atomicMax per channel and block.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    channel_amax_vec_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean,
                            unsigned int* amax_bits, int* flag) {
  constexpr int E = vec_elems<T>();
  const int64_t VC = g.C / E;
  const int64_t r0 = blockIdx.x * kChannelRowsPerBlock, r1 = min(g.R, r0 + kChannelRowsPerBlock);
  bool bad = false;
  for (int64_t cv = threadIdx.x; cv < VC; cv += kThreads) {
    const float* mean_cv = mean != nullptr ? mean + cv * E : nullptr;
    float m[E];
    zero_vec(m);
#pragma unroll 4
    for (int64_t r = r0; r < r1; ++r) {
      float v[E];
      load_vec<T, E>(x + r * g.C + cv * E, mean_cv != nullptr ? mean_cv + (r / g.N) * g.C : nullptr, v, bad);
#pragma unroll
      for (int i = 0; i < E; ++i) m[i] = fmaxf(m[i], fabsf(v[i]));
    }
#pragma unroll
    for (int i = 0; i < E; ++i) atomicMax(&amax_bits[cv * E + i], __float_as_uint(m[i]));
  }
  raise_flag(flag, kBadValue, bad);
}

// Codes with one scale (tensor) or one per channel, a vector per thread.
template <typename T, int kBits>
__global__ void __launch_bounds__(kThreads)
    shared_scale_codes_vec_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean,
                                  const float* __restrict__ scales, bool per_channel, uint8_t* data) {
  constexpr int E = vec_elems<T>();
  constexpr float kQ = kBits == 8 ? 127.0f : 7.0f;
  const int64_t VC = g.C / E, total = g.R * VC;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / VC, c = (i % VC) * E;
    float v[E];
    bool ignored = false;  // the maxima pass saw every value
    load_vec<T, E>(x + i * E, mean != nullptr ? mean + (r / g.N) * g.C + c : nullptr, v, ignored);
    int q[E];
#pragma unroll
    for (int k = 0; k < E; ++k) q[k] = code_of(v[k], __ldg(scales + (per_channel ? c + k : 0)), kQ);
    store_codes<kBits, E>(data + code_offset<kBits>(i * E), q);
  }
}

// ---- dequantize ------------------------------------------------------------------------------

struct DequantGeometry {
  RowGeometry g;
  Granularity granularity;
  int64_t block;    // kRows: tokens per block
  int64_t nblocks;  // kRows: blocks per (b, h)
};

__device__ __forceinline__ int64_t scale_index(const DequantGeometry& q, int64_t r, int64_t c) {
  switch (q.granularity) {
    case Granularity::kTensor: return 0;
    case Granularity::kToken: return r;
    case Granularity::kChannel: return c;
    case Granularity::kGroup: return r * q.g.groups + c / q.g.group;
    case Granularity::kRows: return (r / q.g.N) * q.nblocks + (r % q.g.N) / q.block;
  }
  return 0;
}

// A thread per element (INT8) or per byte (INT4): q · scale (+ mean), rounded
// once to the output dtype.
template <typename T, int kBits>
__global__ void __launch_bounds__(kThreads)
    dequantize_scalar_kernel(const void* data, DequantGeometry q, const float* __restrict__ scales,
                      const float* __restrict__ mean, T* out) {
  const RowGeometry& g = q.g;
  const int64_t per_row = kBits == 8 ? g.C : (g.C + 1) / 2;
  const int64_t total = g.R * per_row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / per_row, u = i % per_row;
    const int64_t mean_row = (r / g.N) * g.C;
    int codes[2];
    int64_t c0, n;
    if (kBits == 8) {
      codes[0] = static_cast<const int8_t*>(data)[i];
      c0 = u;
      n = 1;
    } else {
      const int byte = static_cast<const uint8_t*>(data)[i];
      codes[0] = static_cast<int>(static_cast<int8_t>(static_cast<uint8_t>(byte << 4))) >> 4;  // low nibble, sign-extended
      codes[1] = static_cast<int>(static_cast<int8_t>(static_cast<uint8_t>(byte))) >> 4;       // high nibble
      c0 = 2 * u;
      n = c0 + 1 < g.C ? 2 : 1;
    }
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      if (k >= n) break;
      const int64_t c = c0 + k;
      float v = __fmul_rn(static_cast<float>(codes[k]), scales[scale_index(q, r, c)]);
      if (mean != nullptr) v = __fadd_rn(v, mean[mean_row + c]);
      store_f32(out + r * g.C + c, v);
    }
  }
}


// A 16-byte output vector (E values) per thread per step: out [R, C] with C
// a multiple of E and out 16-byte aligned, codes aligned to their E (INT8)
// or E / 2 (INT4) bytes. Scales are read through the read-only cache (a
// handful per row, reused by neighbouring threads).
template <typename T, int kBits>
__global__ void __launch_bounds__(kThreads)
    dequantize_vec_kernel(const uint8_t* __restrict__ data, DequantGeometry q, const float* __restrict__ scales,
                          const float* __restrict__ mean, T* __restrict__ out) {
  constexpr int E = vec_elems<T>();
  const RowGeometry& g = q.g;
  const int64_t VC = g.C / E, total = g.R * VC;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / VC, c0 = (i % VC) * E;
    int codes[E];
    if constexpr (kBits == 8) {
      uint32_t w[E / 4];
      if constexpr (E == 4) {
        w[0] = __ldg(reinterpret_cast<const uint32_t*>(data + i * E));
      } else {
        const uint2 u = __ldg(reinterpret_cast<const uint2*>(data + i * E));
        w[0] = u.x;
        w[1] = u.y;
      }
#pragma unroll
      for (int k = 0; k < E; ++k)
        codes[k] = static_cast<int>(static_cast<int8_t>(static_cast<uint8_t>(w[k / 4] >> (8 * (k % 4)))));
    } else {
      uint32_t w;
      if constexpr (E == 4) {
        w = __ldg(reinterpret_cast<const uint16_t*>(data + i * E / 2));
      } else {
        w = __ldg(reinterpret_cast<const uint32_t*>(data + i * E / 2));
      }
#pragma unroll
      for (int k = 0; k < E / 2; ++k) {
        const uint8_t byte = static_cast<uint8_t>(w >> (8 * k));
        codes[2 * k] = static_cast<int>(static_cast<int8_t>(static_cast<uint8_t>(byte << 4))) >> 4;  // low nibble
        codes[2 * k + 1] = static_cast<int>(static_cast<int8_t>(byte)) >> 4;                          // high nibble
      }
    }
    // Scale index of each value: constant along the vector but for channel
    // scales (one each) and groups (a step at each group boundary).
    const int64_t s0 = scale_index(q, r, c0);
    int64_t s = s0, boundary = (c0 / g.group + 1) * g.group;
    uint4 raw;
    T* o = reinterpret_cast<T*>(&raw);
    const int64_t mean_row = (r / g.N) * g.C;
#pragma unroll
    for (int k = 0; k < E; ++k) {
      const int64_t c = c0 + k;
      if (q.granularity == Granularity::kChannel) {
        s = s0 + k;
      } else if (q.granularity == Granularity::kGroup) {
        while (c >= boundary) {
          ++s;
          boundary += g.group;
        }
      }
      float v = __fmul_rn(static_cast<float>(codes[k]), __ldg(scales + s));
      if (mean != nullptr) v = __fadd_rn(v, __ldg(mean + mean_row + c));
      store_f32(o + k, v);
    }
    *reinterpret_cast<uint4*>(out + i * E) = raw;
  }
}

// ---- host helpers ---------------------------------------------------------------------------------

RowGeometry row_geometry(const TensorView& x, const QuantScheme& s) {
  RowGeometry g;
  g.C = x.shape[x.ndim - 1];
  g.R = x.numel() / g.C;
  g.N = x.ndim == 4 ? x.shape[2] : 1;
  g.group = s.granularity == Granularity::kGroup ? s.block : g.C;
  g.groups = (g.C + g.group - 1) / g.group;
  return g;
}

TokenView token_view(const TensorView& x) {  // contiguous [B, H, N, D]
  TokenView v;
  v.data = x.data;
  v.dtype = x.dtype;
  v.B = x.shape[0];
  v.H = x.shape[1];
  v.N = x.shape[2];
  v.D = x.shape[3];
  v.sn = v.D;
  v.sh = v.N * v.D;
  v.sb = v.H * v.sh;
  return v;
}

// Whether the vector kernels can take x (16-byte aligned, rows of whole
// vectors) and its codes (aligned to one vector's codes).
template <typename T, int kBits>
bool vector_ok(const void* x, int64_t C, const void* codes) {
  constexpr int E = vec_elems<T>();
  return aligned(x, 16) && C % E == 0 && aligned(codes, kBits == 8 ? E : E / 2);
}

// The fewest warps (1, 2, 4, 8) whose threads hold a row of V vectors,
// kHold each; 8 for longer rows.
int team_warps_for(int64_t V) {
  int w = 1;
  while (w < kWarps && static_cast<int64_t>(w) * 32 * kHold < V) w *= 2;
  return w;
}

// Token and group quantization of a contiguous x [R, C].
template <typename T, int kBits>
Status launch_row_scales(const QuantizeParams& p, const RowGeometry& g, const float* mean, int* flag,
                         cudaStream_t stream) {
  constexpr int E = vec_elems<T>();
  const T* x = static_cast<const T*>(p.x.data);
  float* scales = p.scales.ptr<float>();
  uint8_t* data = static_cast<uint8_t*>(p.data.data);
  const bool groups = p.scheme.granularity == Granularity::kGroup;
  // Groups: a whole number of vectors, at most a warp's worth, a power of two.
  const int64_t P = g.group / E;
  const bool group_ok = g.group % E == 0 && P >= 1 && P <= 32 && (P & (P - 1)) == 0;
  if (vector_ok<T, kBits>(x, g.C, data) && (!groups || group_ok)) {
    const int team = team_warps_for(g.C / E);
    const unsigned grid = grid_for(g.R, kWarps / team);
    int log2_p = 0;
    while (groups && (int64_t{1} << log2_p) < P) ++log2_p;
    if (groups) {
      count_path(QuantPath::kGroupVector);
      row_vec_kernel<T, kBits, true><<<grid, kThreads, 0, stream>>>(x, g, team, log2_p, mean, data, scales, flag);
    } else {
      count_path(QuantPath::kTokenVector);
      row_vec_kernel<T, kBits, false><<<grid, kThreads, 0, stream>>>(x, g, team, 0, mean, data, scales, flag);
    }
    TS_CUDA_CHECK_LAUNCH("row_vec_kernel");
    return Status::Ok();
  }
  count_path(groups ? QuantPath::kGroupScalar : QuantPath::kTokenScalar);
  row_groups_scalar_kernel<T, kBits><<<grid_for(g.R, kWarps), kThreads, 0, stream>>>(x, g, mean, data, scales, flag);
  TS_CUDA_CHECK_LAUNCH("row_groups_scalar_kernel");
  return Status::Ok();
}

// Tensor and channel quantization of a contiguous x [R, C]: maxima, scales,
// codes.
template <typename T, int kBits>
Status launch_shared_scales(const QuantizeParams& p, const RowGeometry& g, const float* mean,
                            unsigned int* amax_bits, int64_t n_amax, int* flag, cudaStream_t stream) {
  constexpr int E = vec_elems<T>();
  const T* x = static_cast<const T*>(p.x.data);
  float* scales = p.scales.ptr<float>();
  uint8_t* data = static_cast<uint8_t*>(p.data.data);
  const bool per_channel = p.scheme.granularity == Granularity::kChannel;
  const bool vec = vector_ok<T, kBits>(x, g.C, data);
  count_path(vec ? QuantPath::kSharedVector : QuantPath::kSharedScalar);
  if (!per_channel) {
    if (vec) {
      tensor_amax_vec_kernel<T><<<grid_for(g.R * g.C / E, kThreads), kThreads, 0, stream>>>(x, g, mean, amax_bits,
                                                                                              flag);
    } else {
      tensor_amax_scalar_kernel<T><<<grid_for(g.R * g.C, kThreads), kThreads, 0, stream>>>(x, g, mean, amax_bits,
                                                                                             flag);
    }
    TS_CUDA_CHECK_LAUNCH("tensor_amax_kernel");
  } else {
    const int64_t blocks = (g.R + kChannelRowsPerBlock - 1) / kChannelRowsPerBlock;
    TS_RETURN_IF_ERROR(check_grid_x(blocks, "quantize (channel maxima)"));
    if (vec) {
      channel_amax_vec_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, g, mean, amax_bits, flag);
    } else {
      channel_amax_scalar_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, g, mean, amax_bits,
                                                                                            flag);
    }
    TS_CUDA_CHECK_LAUNCH("channel_amax_kernel");
  }
  const float qmax = kBits == 8 ? 127.0f : 7.0f;
  scales_from_amax_kernel<<<grid_for(n_amax, kThreads), kThreads, 0, stream>>>(amax_bits, n_amax, qmax, scales);
  TS_CUDA_CHECK_LAUNCH("scales_from_amax_kernel");
  if (vec) {
    shared_scale_codes_vec_kernel<T, kBits><<<grid_for(g.R * g.C / E, kThreads), kThreads, 0, stream>>>(
        x, g, mean, scales, per_channel, data);
  } else {
    const int64_t units = g.R * (kBits == 8 ? g.C : (g.C + 1) / 2);
    shared_scale_codes_scalar_kernel<T, kBits><<<grid_for(units, kThreads), kThreads, 0, stream>>>(
        x, g, mean, scales, per_channel, data);
  }
  TS_CUDA_CHECK_LAUNCH("shared_scale_codes_kernel");
  return Status::Ok();
}

template <typename T, int kBits>
Status launch_rows_typed(const TokenView& x, const float* mean, int64_t block, BlockFilter filter, void* codes,
                         float* scales, int* flag, int flag_bit, cudaStream_t stream) {
  constexpr int E = vec_elems<T>();
  const int64_t nblocks = (x.N + block - 1) / block;
  const unsigned grid = static_cast<unsigned>(x.B * x.H * nblocks);
  const bool vec = vector_ok<T, kBits>(x.data, x.D, codes) && x.sn % E == 0 && x.sh % E == 0 && x.sb % E == 0 &&
                   std::min(block, x.N) * (x.D / E) < (int64_t{1} << 31);
  if (vec) {
    count_path(QuantPath::kRowsVector);
    rows_vec_kernel<T, kBits><<<grid, kThreads, 0, stream>>>(x, mean, block, nblocks, filter,
                                                             static_cast<uint8_t*>(codes), scales, flag, flag_bit);
  } else {
    count_path(QuantPath::kRowsScalar);
    rows_scalar_kernel<T, kBits><<<grid, kThreads, 0, stream>>>(x, mean, block, nblocks, filter, codes, scales, flag,
                                                                flag_bit);
  }
  TS_CUDA_CHECK_LAUNCH("rows_kernel");
  return Status::Ok();
}

template <typename T, int kBits>
Status launch_dequantize(const DequantizeParams& p, const DequantGeometry& q, const float* scales, const float* mean,
                         cudaStream_t stream) {
  constexpr int E = vec_elems<T>();
  T* out = static_cast<T*>(p.out.data);
  const uint8_t* data = static_cast<const uint8_t*>(p.data.data);
  if (vector_ok<T, kBits>(out, q.g.C, data)) {
    count_path(QuantPath::kDequantVector);
    dequantize_vec_kernel<T, kBits><<<grid_for(q.g.R * q.g.C / E, kThreads), kThreads, 0, stream>>>(data, q, scales,
                                                                                                     mean, out);
  } else {
    count_path(QuantPath::kDequantScalar);
    const int64_t units = q.g.R * (kBits == 8 ? q.g.C : (q.g.C + 1) / 2);
    dequantize_scalar_kernel<T, kBits><<<grid_for(units, kThreads), kThreads, 0, stream>>>(data, q, scales, mean,
                                                                                            out);
  }
  TS_CUDA_CHECK_LAUNCH("dequantize_kernel");
  return Status::Ok();
}

}  // namespace

uint64_t quantize_path_count(QuantPath path) {
  return g_path_counts[static_cast<int>(path)].load(std::memory_order_relaxed);
}

Status launch_token_mean(const TokenView& x, double* partials, float* mean, cudaStream_t stream) {
  const int64_t chunks = mean_chunks(x.N);
  TS_RETURN_IF_ERROR(check_grid_x(x.B * x.H * chunks, "quantize (smoothing mean)"));
  return TS_DISPATCH_FLOAT(x.dtype, "quantize", [&] {
    mean_partial_kernel<scalar_t><<<static_cast<unsigned>(x.B * x.H * chunks), kThreads, 0, stream>>>(x, chunks,
                                                                                                        partials);
    TS_CUDA_CHECK_LAUNCH("mean_partial_kernel");
    mean_finish_kernel<<<grid_for(x.B * x.H * x.D, kThreads), kThreads, 0, stream>>>(partials, x.B * x.H, chunks,
                                                                                     x.D, x.N, mean);
    TS_CUDA_CHECK_LAUNCH("mean_finish_kernel");
    return Status::Ok();
  });
}

Status launch_rows_quantize(const TokenView& x, const float* mean, int bits, int64_t block, BlockFilter filter,
                            void* codes, float* scales, int* flag, int flag_bit, cudaStream_t stream) {
  const int64_t nblocks = (x.N + block - 1) / block;
  TS_RETURN_IF_ERROR(check_grid_x(x.B * x.H * nblocks, "quantize (row blocks)"));
  return TS_DISPATCH_FLOAT(x.dtype, "quantize", [&] {
    return bits == 8 ? launch_rows_typed<scalar_t, 8>(x, mean, block, filter, codes, scales, flag, flag_bit, stream)
                     : launch_rows_typed<scalar_t, 4>(x, mean, block, filter, codes, scales, flag, flag_bit, stream);
  });
}

Status quantize(const QuantizeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const QuantScheme& s = p.scheme;
  const RowGeometry g = row_geometry(p.x, s);
  const bool shared_scale = s.granularity == Granularity::kTensor || s.granularity == Granularity::kChannel;

  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);

  // Scratch, only what the call needs: [flag (check_finite), amax bits
  // (tensor/channel) | mean partials (smooth)]. Token, group and row scales
  // without the NaN check need none: no allocation, no memset.
  const int64_t n_flag = p.check_finite ? 1 : 0;
  const int64_t n_amax = shared_scale ? (s.granularity == Granularity::kTensor ? 1 : g.C) : 0;
  const TokenView tv = p.smooth ? token_view(p.x) : TokenView{};
  ScratchLayout lay;
  const size_t o_counters = lay.add<unsigned int>(n_flag + n_amax);
  const size_t o_partials = lay.add<double>(p.smooth ? tv.B * tv.H * mean_chunks(tv.N) * tv.D : 0);
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.bytes()));
  unsigned int* counters = lay.bytes() > 0 ? scratch.at<unsigned int>(o_counters) : nullptr;
  int* flag = p.check_finite ? reinterpret_cast<int*>(counters) : nullptr;
  unsigned int* amax_bits = shared_scale ? counters + n_flag : nullptr;
  if (n_flag + n_amax > 0)
    TS_CUDA_TRY(cudaMemsetAsync(counters, 0, static_cast<size_t>(n_flag + n_amax) * sizeof(unsigned int), stream));

  float* mean = nullptr;
  if (p.smooth) {
    mean = p.mean.ptr<float>();
    TS_RETURN_IF_ERROR(launch_token_mean(tv, scratch.at<double>(o_partials), mean, stream));
  }

  Status st;
  if (s.granularity == Granularity::kRows) {
    st = launch_rows_quantize(token_view(p.x), mean, s.bits, s.block, BlockFilter{}, p.data.data, p.scales.ptr<float>(),
                              flag, kBadValue, stream);
  } else {
    st = TS_DISPATCH_FLOAT(p.x.dtype, "quantize", [&] {
      if (shared_scale)
        return s.bits == 8 ? launch_shared_scales<scalar_t, 8>(p, g, mean, amax_bits, n_amax, flag, stream)
                           : launch_shared_scales<scalar_t, 4>(p, g, mean, amax_bits, n_amax, flag, stream);
      return s.bits == 8 ? launch_row_scales<scalar_t, 8>(p, g, mean, flag, stream)
                         : launch_row_scales<scalar_t, 4>(p, g, mean, flag, stream);
    });
  }
  TS_RETURN_IF_ERROR(st);
  if (!p.check_finite) return Status::Ok();
  int bad = 0;
  TS_RETURN_IF_ERROR(read_device_flag(flag, stream, &bad));
  if (bad != 0) return Status(Code::kRange, "expected finite values in x but found NaN or Infinity");
  return Status::Ok();
}

Status dequantize(const DequantizeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.out, "out"));
  const QuantScheme& s = p.scheme;
  DequantGeometry q;
  q.g = row_geometry(p.out, s);
  q.granularity = s.granularity;
  q.block = s.granularity == Granularity::kRows ? s.block : 1;
  q.nblocks = s.granularity == Granularity::kRows ? (q.g.N + s.block - 1) / s.block : 1;

  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.out.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const float* mean = p.add_mean ? p.mean.ptr<const float>() : nullptr;
  const float* scales = p.scales.ptr<const float>();
  return TS_DISPATCH_FLOAT(p.out.dtype, "dequantize", [&] {
    return s.bits == 8 ? launch_dequantize<scalar_t, 8>(p, q, scales, mean, stream)
                       : launch_dequantize<scalar_t, 4>(p, q, scales, mean, stream);
  });
}

}  // namespace cuda
}  // namespace tokensieve
