// CUDA attention-score extraction (attentionScores) and reduction of given
// probabilities (reduceAttention).
//
// attention_scores: two launches for the whole batch, never more than one
// kBQ × kBK tile of logits alive per block, scratch O(B·H·(rows + W)).
//
//   Pass 1, row_lse_kernel — grid (b, h, tile of kBQ selected rows, key
//   split): the block walks its split of the keys in tiles of kBK, keeping an
//   online max m and sum l per row (flash style, base 2). With one split the
//   block writes lse2 = m + log2(l); with several, each split writes (m, l)
//   and the last split to finish (a ticket) merges them in split order.
//   Splits exist only to fill the GPU when B·H·row tiles is small (one CLS or
//   last row); their number depends on the shape only.
//
//   Pass 2, column_sum_kernel — grid (b, h, tile of kBK output keys): the
//   block walks the selected rows in tiles of kBQ, recomputes the logits and
//   adds 2^(s2 − lse2) into per-column sums (row tiles that cannot see the
//   key tile, causal, are skipped). Heads are reduced without float atomics:
//   each block stores its head's column sums, and the last block of a
//   (b, key tile) to finish adds the H heads in order h = 0..H−1.
//
// Logits are base 2: s2 = (q·k)·scale·log2(e) + bias·log2(e), so
// exp(s − lse) = 2^(s2 − lse2) and exp2f does the work. Both passes compute
// q·k for a (row, key) pair in the same order (same chunking of D, same FMA
// sequence), so pass 2 sees exactly the logits pass 1 normalised.
//
// The q·k tile is SIMT f32 FMA for every dtype (inputs are converted to f32
// when staged into shared memory). See qk_tile for where a tensor-core path
// would slot in.
//
// precision kInt8 (SageAttention style, attention.h): q and k are first
// quantized into scratch by cuda/quantize.cu's kRows launcher (k minus its
// smoothing mean; q only in the blocks that hold a selected row), then both
// passes run on the INT8 codes: qk_tile<int8_t> stages 4 codes per 32-bit
// word and accumulates exact int32 sums with dp4a, and the logit is
// (Σ q8·k8) · (sq · sk) · scale.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/attention.cuh"
#include "cuda/common.cuh"
#include "cuda/quantize.cuh"
#include "tokensieve/attention.h"

namespace tokensieve {
namespace cuda {
namespace {

// ---- tile configuration (the one place) ------------------------------------
// 256 threads as kTQ × kTK = 16 × 16; thread (tq, tk) owns rows tq + kTQ·i
// (i < kMQ) and keys tk + kTK·j (j < kMK) of the kBQ × kBK tile. The kTK
// threads of one row are kTK consecutive lanes of one warp, so row
// reductions are width-kTK shuffles. D is staged kDC dims at a time, rows
// padded to kLd floats: float4 reads stay 16-byte aligned and the 8 lanes of
// a quarter warp read 8 different bank groups (row stride 9 × 16 bytes).
// Shared memory: (kBQ + kBK)·kLd·4 = 18 KiB + small arrays, < 48 KiB.
constexpr int kThreads = 256;
constexpr int kBQ = 64;  // selected query rows per tile
constexpr int kBK = 64;  // keys per tile
constexpr int kMQ = 4;   // rows per thread
constexpr int kMK = 4;   // keys per thread
constexpr int kTQ = kBQ / kMQ;
constexpr int kTK = kBK / kMK;
constexpr int kDC = 32;       // head dims per staging step
constexpr int kLd = kDC + 4;  // shared row stride, in floats
constexpr int kMaxD = 256;    // larger head dims: ERR_UNSUPPORTED
// Pass 1 splits the keys when B·H·row tiles is below this many blocks.
constexpr int kTargetBlocks = 512;
constexpr int kMaxSplits = 64;
// reduceAttention: kReduceWarps warps share a tile of kReduceCols keys (two
// per lane), each warp taking every kReduceWarps-th selected row.
constexpr int kReduceWarps = 8;
constexpr int kReduceThreads = kReduceWarps * 32;
constexpr int kReduceCols = 64;

static_assert(kTQ * kTK == kThreads, "thread grid must cover the tile");
static_assert(kTK == 16 || kTK == 32, "a row's threads must be an aligned lane group");
static_assert(kBQ <= kThreads && kBK <= kThreads, "per-row/per-key metadata is written by one thread each");
static_assert(kDC % 4 == 0 && kLd % 4 == 0, "float4 reads of shared rows must stay aligned");
static_assert(kMaxD % kDC == 0, "");
static_assert(kReduceCols == 64, "reduce kernel: two columns per lane");
// kInt8: head dims per staging step, as 32-bit words of 4 codes; a step's
// words fit the f32 staging rows.
constexpr int kDC8 = 128;
constexpr int kWords8 = kDC8 / 4;
static_assert(kWords8 <= kLd && kWords8 % 4 == 0, "INT8 staging reuses the f32 rows with 16-byte reads");

constexpr float kLog2e = 1.4426950408889634f;
constexpr int64_t kNoRow = INT64_MIN;  // padding in a tile: reads as zeros

// Flag bits set by the kernels when check_finite is on.
constexpr int kBadInput = 1;  // NaN/Inf in q, k or probs
constexpr int kBadBias = 2;   // NaN/+Inf in key_bias
constexpr int kBadLogit = 4;  // q·k·scale not finite (values too large for f32)

// Where the per-head column sums of a (b, h, column tile) go.
struct HeadSink {
  float* out;              // [B, H, W] (heads none) or [B, W]
  float* head_sums;        // [B, H, W] scratch when reducing heads
  unsigned int* tickets;   // [B, tiles], zeroed before the launch
  int H;
  int64_t W;
  int tiles;               // column tiles per (b, h)
  bool reduce_heads;
  float weight;            // row weight (heads none) or row weight / H (mean) or row weight (sum)
  bool accumulate;
};

struct ScoresParams {
  // q[b, h, n, d] = q + b·q_sb + h·q_sh + n·q_sn + d (elements); k likewise.
  const void* q;
  int64_t q_sb, q_sh, q_sn;
  const void* k;
  int64_t k_sb, k_sh, k_sn;
  // kInt8 (q, k are then contiguous INT8 codes): the scale of token n of
  // (b, h) is q_scales[bh·q_nb + n / q_block], likewise for k.
  const float* q_scales;
  int64_t q_nb, q_block;
  const float* k_scales;
  int64_t k_nb, k_block;
  const float* bias;  // key_bias[b, j] = bias + b·bias_sb + j; null: no bias
  int64_t bias_sb;
  int H, D;
  int64_t Nk;
  float scale_log2;  // scale · log2(e)
  bool causal;
  int64_t causal_offset;
  RowMap rows;
  int nsel;
  // pass 1
  int row_tiles;
  int splits;
  int64_t split_keys;  // keys per split, a multiple of kBK
  float* part_m;       // [B·H·row_tiles, splits, kBQ] when splits > 1
  float* part_l;
  unsigned int* split_tickets;  // [B·H·row_tiles] when splits > 1
  float* lse2;                  // [B·H, nsel]
  // pass 2
  int64_t key_begin, key_end;
  int key_tiles;
  HeadSink sink;
  bool check;
  int* flag;
};

// Keys [0, end) are visible to query row `row`.
__device__ __forceinline__ int64_t visible_end(const ScoresParams& p, int64_t row) {
  if (!p.causal) return p.Nk;
  const int64_t lim = row + p.causal_offset + 1;  // |causal_offset| <= 2^40 (validate)
  return lim < 0 ? 0 : (lim > p.Nk ? p.Nk : lim);
}

// The base-2 logit of a (row, key) pair; one expression (an explicit FMA) for
// both passes, so they agree bit for bit.
__device__ __forceinline__ float logit2(float dot, float scale_log2, float bias2) {
  return __fmaf_rn(dot, scale_log2, bias2);
}

__device__ __forceinline__ float lse_of(float m, float l) { return m == -INFINITY ? -INFINITY : m + log2f(l); }

// acc[i][j] = Σ_d q[row tq + kTQ·i][d] · k[key tk + kTK·j][d] for one tile.
// Rows and keys are element offsets in q_off / k_off (kNoRow: padding, read
// as zeros; so are dims >= D). Every thread of the block must call it. It
// starts with __syncthreads(), which publishes q_off/k_off written just
// before the call and retires the previous users of qs/ks; it ends right
// after the last FMA (no trailing barrier).
//
// Tensor cores would slot in here: for f16/bf16 stage the chunks unconverted
// and replace the FMA loop with mma.sync m16n8k16 (or wgmma on sm_90)
// producing the same acc[][] ownership, e.g. via an accumulator shuffle or by
// moving the epilogues onto the mma fragment layout.
template <typename T>
__device__ __forceinline__ void qk_tile(const T* __restrict__ q, const T* __restrict__ k, int D,
                                        const int64_t* q_off, const int64_t* k_off, float (*qs)[kLd],
                                        float (*ks)[kLd], float (&acc)[kMQ][kMK]) {
  const int tid = threadIdx.x;
  const int tq = tid / kTK, tk = tid % kTK;
#pragma unroll
  for (int i = 0; i < kMQ; ++i)
#pragma unroll
    for (int j = 0; j < kMK; ++j) acc[i][j] = 0.0f;

  for (int d0 = 0; d0 < D; d0 += kDC) {
    __syncthreads();
    // Stage dims [d0, d0 + kDC) of the tile's rows: consecutive threads read
    // consecutive dims of one row (coalesced) and write consecutive words.
    for (int e = tid; e < kBQ * kDC; e += kThreads) {
      const int r = e / kDC, d = e % kDC;
      const int64_t off = q_off[r];
      qs[r][d] = (off != kNoRow && d0 + d < D) ? load_f32(q + off + d0 + d) : 0.0f;
    }
    for (int e = tid; e < kBK * kDC; e += kThreads) {
      const int c = e / kDC, d = e % kDC;
      const int64_t off = k_off[c];
      ks[c][d] = (off != kNoRow && d0 + d < D) ? load_f32(k + off + d0 + d) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int d = 0; d < kDC; d += 4) {
      float4 a[kMQ], b[kMK];
#pragma unroll
      for (int i = 0; i < kMQ; ++i) a[i] = *reinterpret_cast<const float4*>(&qs[tq + kTQ * i][d]);
#pragma unroll
      for (int j = 0; j < kMK; ++j) b[j] = *reinterpret_cast<const float4*>(&ks[tk + kTK * j][d]);
#pragma unroll
      for (int i = 0; i < kMQ; ++i)
#pragma unroll
        for (int j = 0; j < kMK; ++j) {
          acc[i][j] = fmaf(a[i].x, b[j].x, acc[i][j]);
          acc[i][j] = fmaf(a[i].y, b[j].y, acc[i][j]);
          acc[i][j] = fmaf(a[i].z, b[j].z, acc[i][j]);
          acc[i][j] = fmaf(a[i].w, b[j].w, acc[i][j]);
        }
    }
  }
}

// Four consecutive codes d..d+3 of a row as one word (zeros past D or for a
// padding row). With D % 4 == 0 every row starts 4-byte aligned (the code
// buffers are contiguous [.., D] and 256-byte aligned).
__device__ __forceinline__ int code_word(const int8_t* base, int64_t off, int d, int D, bool aligned) {
  if (off == kNoRow || d >= D) return 0;
  const int8_t* p = base + off + d;
  if (aligned) return *reinterpret_cast<const int*>(p);
  unsigned v = 0;
  for (int i = 0; i < 4 && d + i < D; ++i) v |= static_cast<unsigned>(static_cast<uint8_t>(p[i])) << (8 * i);
  return static_cast<int>(v);
}

// kInt8: the same tile and ownership from INT8 codes, accumulated exactly in
// int32 by dp4a (|Σ| <= 127² · 256 < 2^24, so the final f32 is exact too).
template <>
__device__ __forceinline__ void qk_tile<int8_t>(const int8_t* __restrict__ q, const int8_t* __restrict__ k, int D,
                                                const int64_t* q_off, const int64_t* k_off, float (*qs)[kLd],
                                                float (*ks)[kLd], float (&acc)[kMQ][kMK]) {
  const int tid = threadIdx.x;
  const int tq = tid / kTK, tk = tid % kTK;
  int (*qw)[kLd] = reinterpret_cast<int (*)[kLd]>(qs);
  int (*kw)[kLd] = reinterpret_cast<int (*)[kLd]>(ks);
  const bool aligned = D % 4 == 0;
  int iacc[kMQ][kMK];
#pragma unroll
  for (int i = 0; i < kMQ; ++i)
#pragma unroll
    for (int j = 0; j < kMK; ++j) iacc[i][j] = 0;

  for (int d0 = 0; d0 < D; d0 += kDC8) {
    __syncthreads();
    for (int e = tid; e < kBQ * kWords8; e += kThreads) {
      const int r = e / kWords8, w = e % kWords8;
      qw[r][w] = code_word(q, q_off[r], d0 + 4 * w, D, aligned);
    }
    for (int e = tid; e < kBK * kWords8; e += kThreads) {
      const int c = e / kWords8, w = e % kWords8;
      kw[c][w] = code_word(k, k_off[c], d0 + 4 * w, D, aligned);
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < kWords8; w += 4) {
      uint4 a[kMQ], b[kMK];
#pragma unroll
      for (int i = 0; i < kMQ; ++i) a[i] = *reinterpret_cast<const uint4*>(&qw[tq + kTQ * i][w]);
#pragma unroll
      for (int j = 0; j < kMK; ++j) b[j] = *reinterpret_cast<const uint4*>(&kw[tk + kTK * j][w]);
#pragma unroll
      for (int i = 0; i < kMQ; ++i)
#pragma unroll
        for (int j = 0; j < kMK; ++j) {
          iacc[i][j] = __dp4a(static_cast<int>(a[i].x), static_cast<int>(b[j].x), iacc[i][j]);
          iacc[i][j] = __dp4a(static_cast<int>(a[i].y), static_cast<int>(b[j].y), iacc[i][j]);
          iacc[i][j] = __dp4a(static_cast<int>(a[i].z), static_cast<int>(b[j].z), iacc[i][j]);
          iacc[i][j] = __dp4a(static_cast<int>(a[i].w), static_cast<int>(b[j].w), iacc[i][j]);
        }
    }
  }
#pragma unroll
  for (int i = 0; i < kMQ; ++i)
#pragma unroll
    for (int j = 0; j < kMK; ++j) acc[i][j] = static_cast<float>(iacc[i][j]);
}

// kInt8: acc[i][j] · (sq(row) · sk(key)) turns integer dots into q·k.
__device__ __forceinline__ void apply_code_scales(float (&acc)[kMQ][kMK], const float* q_sc, const float* k_sc) {
  const int tq = threadIdx.x / kTK, tk = threadIdx.x % kTK;
#pragma unroll
  for (int i = 0; i < kMQ; ++i)
#pragma unroll
    for (int j = 0; j < kMK; ++j) acc[i][j] *= q_sc[tq + kTQ * i] * k_sc[tk + kTK * j];
}

// Stores a per-head column value (thread t < ncols holds column col0 + t of
// the output key range) into out, or into head_sums with the last block of
// the (b, column tile) adding the heads in order. All threads must call it.
__device__ void emit_columns(const HeadSink& s, int64_t b, int64_t h, int tile, int64_t col0, int ncols,
                             float v) {
  const int t = threadIdx.x;
  if (!s.reduce_heads) {
    if (t < ncols) {
      float* dst = s.out + (b * s.H + h) * s.W + col0 + t;
      *dst = (s.accumulate ? *dst : 0.0f) + s.weight * v;
    }
    return;
  }
  if (t < ncols) s.head_sums[(b * s.H + h) * s.W + col0 + t] = v;
  if (!last_block_arrives(&s.tickets[b * s.tiles + tile], static_cast<unsigned int>(s.H))) return;
  if (t < ncols) {
    float sum = 0.0f;
    for (int hh = 0; hh < s.H; ++hh) sum += __ldcg(&s.head_sums[(b * s.H + hh) * s.W + col0 + t]);
    float* dst = s.out + b * s.W + col0 + t;
    *dst = (s.accumulate ? *dst : 0.0f) + s.weight * sum;
  }
}

// ---- pass 1 -----------------------------------------------------------------
// Block: (bh, row tile rt, split); blockIdx.x = (bh·row_tiles + rt)·splits + split.
template <typename T>
__global__ void __launch_bounds__(kThreads) row_lse_kernel(const ScoresParams p) {
  __shared__ __align__(16) float qs[kBQ][kLd];
  __shared__ __align__(16) float ks[kBK][kLd];
  __shared__ int64_t q_off[kBQ];
  __shared__ int64_t k_off[kBK];
  __shared__ int64_t row_end[kBQ];  // tile row r sees keys [0, row_end[r]); 0 for padding
  constexpr bool kInt8 = std::is_same<T, int8_t>::value;
  __shared__ float q_sc[kInt8 ? kBQ : 1];  // kInt8: code scales of the tile's rows and keys
  __shared__ float k_sc[kInt8 ? kBK : 1];

  const int tid = threadIdx.x;
  const int tq = tid / kTK, tk = tid % kTK;
  const int split = static_cast<int>(blockIdx.x % static_cast<unsigned>(p.splits));
  const int64_t tile_id = blockIdx.x / static_cast<unsigned>(p.splits);  // bh·row_tiles + rt
  const int rt = static_cast<int>(tile_id % p.row_tiles);
  const int64_t bh = tile_id / p.row_tiles;
  const int64_t b = bh / p.H, h = bh % p.H;
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);

  if (tid < kBQ) {
    const int sel = rt * kBQ + tid;  // nsel <= INT_MAX - kBQ (host)
    if (sel < p.nsel) {
      const int64_t row = p.rows(sel);
      q_off[tid] = b * p.q_sb + h * p.q_sh + row * p.q_sn;
      row_end[tid] = visible_end(p, row);
      if (kInt8) q_sc[tid] = p.q_scales[bh * p.q_nb + row / p.q_block];
    } else {
      q_off[tid] = kNoRow;
      row_end[tid] = 0;
      if (kInt8) q_sc[tid] = 0.0f;
    }
  }
  __syncthreads();
  int64_t tile_end = 0;  // keys any row of the tile sees
  for (int r = 0; r < kBQ; ++r) tile_end = max(tile_end, row_end[r]);
  const int64_t key_lo = split * p.split_keys;
  const int64_t key_hi = min(tile_end, key_lo + p.split_keys);  // tile_end <= Nk
  const float* bias_b = p.bias != nullptr ? p.bias + b * p.bias_sb : nullptr;

  float m[kMQ], l[kMQ];
#pragma unroll
  for (int i = 0; i < kMQ; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
  }
  bool bad = false;

  for (int64_t key0 = key_lo; key0 < key_hi; key0 += kBK) {  // block-uniform trip count
    __syncthreads();  // previous tile's staging reads of k_off are done (qk_tile barriers, kept explicit)
    if (tid < kBK) {
      const int64_t key = key0 + tid;
      k_off[tid] = key < key_hi ? b * p.k_sb + h * p.k_sh + key * p.k_sn : kNoRow;
      if (kInt8) k_sc[tid] = key < key_hi ? p.k_scales[bh * p.k_nb + key / p.k_block] : 0.0f;
    }
    float acc[kMQ][kMK];
    qk_tile<T>(q, k, p.D, q_off, k_off, qs, ks, acc);
    if (kInt8) apply_code_scales(acc, q_sc, k_sc);

    float bias2[kMK];
#pragma unroll
    for (int j = 0; j < kMK; ++j) {
      const int64_t key = key0 + tk + kTK * j;
      bias2[j] = (bias_b != nullptr && key < key_hi) ? bias_b[key] * kLog2e : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kMQ; ++i) {
      const int64_t end = row_end[tq + kTQ * i];
      float s[kMK];
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < kMK; ++j) {
        const int64_t key = key0 + tk + kTK * j;
        s[j] = -INFINITY;
        if (key < key_hi && key < end) {
          if (p.check && !isfinite(acc[i][j] * p.scale_log2)) bad = true;
          s[j] = logit2(acc[i][j], p.scale_log2, bias2[j]);
        }
        tile_max = fmaxf(tile_max, s[j]);
      }
      // The kTK lanes of this row hold its kBK logits. Every lane of the warp
      // runs both shuffles (the other half-warp is another row).
      tile_max = warp_max(tile_max, kTK);
      const float m_new = fmaxf(m[i], tile_max);
      float part = 0.0f;
      if (m_new != -INFINITY) {
#pragma unroll
        for (int j = 0; j < kMK; ++j) part += exp2f(s[j] - m_new);  // masked: exp2f(-inf) = 0
      }
      part = warp_sum(part, kTK);
      if (m_new != -INFINITY) {
        l[i] = l[i] * exp2f(m[i] - m_new) + part;  // m[i] = -inf: l[i] = 0 · 0
        m[i] = m_new;
      }
    }
  }
  if (bad) atomicOr(p.flag, kBadLogit);

  // Every lane of a row group holds the same (m, l); lane tk == 0 writes.
  if (p.splits == 1) {  // block-uniform
    if (tk == 0) {
#pragma unroll
      for (int i = 0; i < kMQ; ++i) {
        const int sel = rt * kBQ + tq + kTQ * i;
        if (sel < p.nsel) p.lse2[bh * p.nsel + sel] = lse_of(m[i], l[i]);
      }
    }
    return;
  }
  const int64_t part_base = (tile_id * p.splits + split) * kBQ;
  if (tk == 0) {
#pragma unroll
    for (int i = 0; i < kMQ; ++i) {
      p.part_m[part_base + tq + kTQ * i] = m[i];
      p.part_l[part_base + tq + kTQ * i] = l[i];
    }
  }
  if (!last_block_arrives(&p.split_tickets[tile_id], static_cast<unsigned int>(p.splits))) return;
  if (tid < kBQ) {
    const int sel = rt * kBQ + tid;
    if (sel < p.nsel) {
      const int64_t base = tile_id * p.splits * kBQ + tid;
      float M = -INFINITY;
      for (int s = 0; s < p.splits; ++s) M = fmaxf(M, __ldcg(&p.part_m[base + static_cast<int64_t>(s) * kBQ]));
      float L = 0.0f;
      if (M != -INFINITY) {
        for (int s = 0; s < p.splits; ++s) {
          const float ms = __ldcg(&p.part_m[base + static_cast<int64_t>(s) * kBQ]);
          if (ms != -INFINITY) L += __ldcg(&p.part_l[base + static_cast<int64_t>(s) * kBQ]) * exp2f(ms - M);
        }
      }
      p.lse2[bh * p.nsel + sel] = lse_of(M, L);
    }
  }
}

// ---- pass 2 -----------------------------------------------------------------
// Block: (bh, key tile kt); blockIdx.x = bh·key_tiles + kt.
template <typename T>
__global__ void __launch_bounds__(kThreads) column_sum_kernel(const ScoresParams p) {
  __shared__ __align__(16) float qs[kBQ][kLd];
  __shared__ __align__(16) float ks[kBK][kLd];
  __shared__ int64_t q_off[kBQ];
  __shared__ int64_t k_off[kBK];
  __shared__ int64_t row_end[kBQ];
  __shared__ float row_lse[kBQ];
  __shared__ float red[kTQ][kBK];
  constexpr bool kInt8 = std::is_same<T, int8_t>::value;
  __shared__ float q_sc[kInt8 ? kBQ : 1];
  __shared__ float k_sc[kInt8 ? kBK : 1];

  const int tid = threadIdx.x;
  const int tq = tid / kTK, tk = tid % kTK;
  const int kt = static_cast<int>(blockIdx.x % static_cast<unsigned>(p.key_tiles));
  const int64_t bh = blockIdx.x / static_cast<unsigned>(p.key_tiles);
  const int64_t b = bh / p.H, h = bh % p.H;
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const int64_t key0 = p.key_begin + static_cast<int64_t>(kt) * kBK;
  const int64_t key_hi = min(p.key_end, key0 + kBK);  // this block's keys: [key0, key_hi)

  if (tid < kBK) {
    const int64_t key = key0 + tid;
    k_off[tid] = key < key_hi ? b * p.k_sb + h * p.k_sh + key * p.k_sn : kNoRow;
    if (kInt8) k_sc[tid] = key < key_hi ? p.k_scales[bh * p.k_nb + key / p.k_block] : 0.0f;
  }
  const float* bias_b = p.bias != nullptr ? p.bias + b * p.bias_sb : nullptr;
  float bias2[kMK], colsum[kMK];
#pragma unroll
  for (int j = 0; j < kMK; ++j) {
    const int64_t key = key0 + tk + kTK * j;
    bias2[j] = (bias_b != nullptr && key < key_hi) ? bias_b[key] * kLog2e : 0.0f;
    colsum[j] = 0.0f;
  }
  const float* lse_bh = p.lse2 + bh * p.nsel;

  for (int s0 = 0; s0 < p.nsel; s0 += kBQ) {  // block-uniform trip count
    __syncthreads();  // the previous tile's epilogue is done with row_end/row_lse
    int live = 0;
    if (tid < kBQ) {
      const int sel = s0 + tid;  // nsel <= INT_MAX - kBQ (host)
      int64_t off = kNoRow, end = 0;
      float lse = -INFINITY, sc = 0.0f;
      if (sel < p.nsel) {
        const int64_t row = p.rows(sel);
        end = visible_end(p, row);
        lse = lse_bh[sel];
        // A row contributes to this key tile iff it has a finite lse (sees a
        // key with a finite logit) and sees key0.
        if (lse != -INFINITY && end > key0) {
          off = b * p.q_sb + h * p.q_sh + row * p.q_sn;
          live = 1;
          if (kInt8) sc = p.q_scales[bh * p.q_nb + row / p.q_block];
        }
      }
      q_off[tid] = off;
      if (kInt8) q_sc[tid] = sc;
      row_end[tid] = end;
      row_lse[tid] = lse;
    }
    if (!__syncthreads_or(live)) continue;  // uniform: nothing in this row tile reaches these keys

    float acc[kMQ][kMK];
    qk_tile<T>(q, k, p.D, q_off, k_off, qs, ks, acc);
    if (kInt8) apply_code_scales(acc, q_sc, k_sc);
#pragma unroll
    for (int i = 0; i < kMQ; ++i) {
      const int r = tq + kTQ * i;
      const float lse = row_lse[r];
      const int64_t end = row_end[r];
      if (lse == -INFINITY) continue;
#pragma unroll
      for (int j = 0; j < kMK; ++j) {
        const int64_t key = key0 + tk + kTK * j;
        if (key < key_hi && key < end) colsum[j] += exp2f(logit2(acc[i][j], p.scale_log2, bias2[j]) - lse);
      }
    }
  }

  // Column c = tk + kTK·j: add the kTQ row groups in order.
#pragma unroll
  for (int j = 0; j < kMK; ++j) red[tq][tk + kTK * j] = colsum[j];
  __syncthreads();
  const int ncols = static_cast<int>(key_hi - key0);
  float v = 0.0f;
  if (tid < ncols) {
    for (int g = 0; g < kTQ; ++g) v += red[g][tid];
  }
  emit_columns(p.sink, b, h, kt, key0 - p.key_begin, ncols, v);
}

// ---- reduceAttention ----------------------------------------------------------
struct ReduceParams {
  const void* probs;  // probs[b, h, n, j] = probs + b·sb + h·sh + n·sn + j
  int64_t sb, sh, sn;
  int H;
  RowMap rows;
  int nsel;
  int64_t key_begin, key_end;
  int col_tiles;
  HeadSink sink;
  bool check;
  int* flag;
};

// Block: (bh, column tile ct); blockIdx.x = bh·col_tiles + ct. Lanes read
// consecutive keys of a row (coalesced); warp w takes rows w, w + 8, ...
template <typename T>
__global__ void __launch_bounds__(kReduceThreads) probs_column_kernel(const ReduceParams p) {
  __shared__ float red[kReduceWarps][kReduceCols];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int ct = static_cast<int>(blockIdx.x % static_cast<unsigned>(p.col_tiles));
  const int64_t bh = blockIdx.x / static_cast<unsigned>(p.col_tiles);
  const int64_t b = bh / p.H, h = bh % p.H;
  const int64_t col0 = static_cast<int64_t>(ct) * kReduceCols;  // relative to key_begin
  const int64_t left = p.key_end - p.key_begin - col0;
  const int ncols = static_cast<int>(left < kReduceCols ? left : kReduceCols);
  const T* base = static_cast<const T*>(p.probs) + b * p.sb + h * p.sh + p.key_begin + col0;

  float acc0 = 0.0f, acc1 = 0.0f;
  bool bad = false;
#pragma unroll 4
  for (int sel = warp; sel < p.nsel; sel += kReduceWarps) {  // nsel <= INT_MAX - kBQ (host)
    const T* row = base + p.rows(sel) * p.sn;
    if (lane < ncols) {
      const float x = load_f32(row + lane);
      bad |= !isfinite(x);
      acc0 += x;
    }
    if (lane + 32 < ncols) {
      const float x = load_f32(row + lane + 32);
      bad |= !isfinite(x);
      acc1 += x;
    }
  }
  if (p.check && bad) atomicOr(p.flag, kBadInput);
  red[warp][lane] = acc0;
  red[warp][lane + 32] = acc1;
  __syncthreads();
  float v = 0.0f;
  if (tid < ncols) {
    for (int w = 0; w < kReduceWarps; ++w) v += red[w][tid];
  }
  emit_columns(p.sink, b, h, ct, col0, ncols, v);
}

// ---- host helpers ---------------------------------------------------------------

// Rows given as r0, r0 + 1, ... need no upload.
bool is_row_range(const ScoreReduction& r) {
  for (int64_t i = 1; i < r.num_query_rows; ++i)
    if (static_cast<int64_t>(r.query_rows[i]) != static_cast<int64_t>(r.query_rows[0]) + i) return false;
  return true;
}

Status check_sizes(const char* op, int64_t nsel, int64_t H) {
  if (nsel > INT_MAX - 1024)
    return Status(Code::kUnsupported, std::string(op) + ": at most 2^31 - 1025 query rows are supported on CUDA");
  if (H > INT_MAX) return Status(Code::kUnsupported, std::string(op) + ": too many heads for the CUDA kernels");
  return Status::Ok();
}

// Weights as the CPU back end applies them: w = 1/rows (mean) or 1; heads
// mean: w / H.
void fill_sink(HeadSink* s, const ScoreReduction& r, float* out, int64_t H, int64_t W, int tiles) {
  const float w = r.query_reduce == QueryReduce::kMean ? 1.0f / static_cast<float>(r.num_query_rows) : 1.0f;
  s->out = out;
  s->head_sums = nullptr;
  s->tickets = nullptr;
  s->H = static_cast<int>(H);
  s->W = W;
  s->tiles = tiles;
  s->reduce_heads = r.head_reduce != HeadReduce::kNone;
  s->weight = r.head_reduce == HeadReduce::kMean ? w / static_cast<float>(H) : w;
  s->accumulate = r.accumulate;
}

}  // namespace

Status attention_scores(const AttentionScoresParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.q, "q"));
  // A handful of rows (CLS row, last row): the memory-bound path of attention_rows.cu.
  if (rows_path_applies(p)) return attention_scores_rows(p);
  if (p.precision == ScorePrecision::kTF32 || p.precision == ScorePrecision::kBF16)
    return Status(Code::kUnsupported, "attentionScores: precision tf32/bf16 is not implemented on CUDA yet");
  const int64_t B = p.q.shape[0], H = p.q.shape[1], D = p.q.shape[3];
  const int64_t Nk = p.k.shape[2];
  const ScoreReduction& r = p.reduce;
  const int64_t nsel = r.num_query_rows;
  const int64_t W = r.key_end - r.key_begin;
  if (D > kMaxD)
    return Status(Code::kUnsupported, "attentionScores: the CUDA kernel supports head dims up to " +
                                          std::to_string(kMaxD) + " but got " + std::to_string(D));
  TS_RETURN_IF_ERROR(check_sizes("attentionScores", nsel, H));

  // Grid shapes (functions of the problem shape only: results do not depend
  // on the device).
  const int64_t BH = B * H;
  const int64_t row_tiles = (nsel + kBQ - 1) / kBQ;
  const int64_t all_key_tiles = (Nk + kBK - 1) / kBK;
  const int64_t base_blocks = BH * row_tiles;
  int64_t splits = 1;
  if (base_blocks < kTargetBlocks)
    splits = std::min<int64_t>({(kTargetBlocks + base_blocks - 1) / base_blocks, all_key_tiles, kMaxSplits});
  const int64_t split_keys = (all_key_tiles + splits - 1) / splits * kBK;
  splits = (Nk + split_keys - 1) / split_keys;  // drop empty splits
  const int64_t key_tiles = (W + kBK - 1) / kBK;
  TS_RETURN_IF_ERROR(check_grid_x(base_blocks * splits, "attentionScores"));
  TS_RETURN_IF_ERROR(check_grid_x(BH * key_tiles, "attentionScores"));
  const bool reduce_heads = r.head_reduce != HeadReduce::kNone;
  const bool upload_rows = !is_row_range(r);

  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.q.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);

  // Scratch: [rows | lse2 | part_m | part_l | head_sums | flag, split tickets,
  // column tickets | kInt8: q codes, k codes, q scales, k scales, k mean,
  // mean partials].
  const bool int8 = p.precision == ScorePrecision::kInt8;
  const int64_t Nq = p.q.shape[2];
  const int64_t q_nb = int8 ? (Nq + p.q_block - 1) / p.q_block : 0;
  const int64_t k_nb = int8 ? (Nk + p.k_block - 1) / p.k_block : 0;
  const bool smooth = int8 && p.smooth_k;
  ScratchLayout lay;
  const size_t o_rows = lay.add<int32_t>(upload_rows ? nsel : 0);
  const size_t o_lse = lay.add<float>(BH * nsel);
  const int64_t nparts = splits > 1 ? base_blocks * splits * kBQ : 0;
  const size_t o_pm = lay.add<float>(nparts);
  const size_t o_pl = lay.add<float>(nparts);
  const size_t o_heads = lay.add<float>(reduce_heads ? BH * W : 0);
  const int64_t n_split_tickets = splits > 1 ? base_blocks : 0;
  const int64_t n_col_tickets = reduce_heads ? B * key_tiles : 0;
  const int64_t n_counters = 1 + n_split_tickets + n_col_tickets;
  const size_t o_counters = lay.add<unsigned int>(n_counters);
  const size_t o_q8 = lay.add<int8_t>(int8 ? BH * Nq * D : 0);
  const size_t o_k8 = lay.add<int8_t>(int8 ? BH * Nk * D : 0);
  const size_t o_qsc = lay.add<float>(BH * q_nb);
  const size_t o_ksc = lay.add<float>(BH * k_nb);
  const size_t o_kmean = lay.add<float>(smooth ? BH * D : 0);
  const size_t o_kpart = lay.add<double>(smooth ? BH * mean_chunks(Nk) * D : 0);
  Scratch scratch(p.q.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.bytes()));
  unsigned int* counters = scratch.at<unsigned int>(o_counters);
  TS_CUDA_TRY(cudaMemsetAsync(counters, 0, static_cast<size_t>(n_counters) * sizeof(unsigned int), stream));

  ScoresParams kp{};
  if (upload_rows) {
    int32_t* rows = scratch.at<int32_t>(o_rows);
    TS_CUDA_TRY(cudaMemcpyAsync(rows, r.query_rows, static_cast<size_t>(nsel) * sizeof(int32_t),
                                cudaMemcpyHostToDevice, stream));
    kp.rows = RowMap{rows, 0};
  } else {
    kp.rows = RowMap{nullptr, r.query_rows[0]};
  }
  kp.q = p.q.data;
  kp.q_sb = p.q.strides[0];
  kp.q_sh = p.q.strides[1];
  kp.q_sn = p.q.strides[2];
  kp.k = p.k.data;
  kp.k_sb = p.k.strides[0];
  kp.k_sh = p.k.strides[1];
  kp.k_sn = p.k.strides[2];
  kp.bias = p.has_key_bias ? p.key_bias.ptr<const float>() : nullptr;
  kp.bias_sb = p.has_key_bias ? p.key_bias.strides[0] : 0;
  kp.H = static_cast<int>(H);
  kp.D = static_cast<int>(D);
  kp.Nk = Nk;
  kp.scale_log2 = p.scale * kLog2e;
  kp.causal = p.causal;
  kp.causal_offset = p.causal ? p.causal_offset : 0;
  kp.nsel = static_cast<int>(nsel);
  kp.row_tiles = static_cast<int>(row_tiles);
  kp.splits = static_cast<int>(splits);
  kp.split_keys = split_keys;
  kp.part_m = scratch.at<float>(o_pm);
  kp.part_l = scratch.at<float>(o_pl);
  kp.split_tickets = counters + 1;
  kp.lse2 = scratch.at<float>(o_lse);
  kp.key_begin = r.key_begin;
  kp.key_end = r.key_end;
  kp.key_tiles = static_cast<int>(key_tiles);
  fill_sink(&kp.sink, r, p.out.ptr<float>(), H, W, static_cast<int>(key_tiles));
  kp.sink.head_sums = scratch.at<float>(o_heads);
  kp.sink.tickets = counters + 1 + n_split_tickets;
  kp.check = p.check_finite;
  kp.flag = reinterpret_cast<int*>(counters);

  // kInt8: the passes read contiguous codes [B, H, N, D] instead of q and k.
  const TokenView q_view{p.q.data, p.q.dtype, B, H, Nq, D, kp.q_sb, kp.q_sh, kp.q_sn};
  const TokenView k_view{p.k.data, p.k.dtype, B, H, Nk, D, kp.k_sb, kp.k_sh, kp.k_sn};
  if (int8) {
    kp.q = scratch.at<int8_t>(o_q8);
    kp.q_sn = D;
    kp.q_sh = Nq * D;
    kp.q_sb = H * Nq * D;
    kp.k = scratch.at<int8_t>(o_k8);
    kp.k_sn = D;
    kp.k_sh = Nk * D;
    kp.k_sb = H * Nk * D;
    kp.q_scales = scratch.at<float>(o_qsc);
    kp.q_nb = q_nb;
    kp.q_block = p.q_block;
    kp.k_scales = scratch.at<float>(o_ksc);
    kp.k_nb = k_nb;
    kp.k_block = p.k_block;
  }

  const unsigned pass1_blocks = static_cast<unsigned>(base_blocks * splits);
  const unsigned pass2_blocks = static_cast<unsigned>(BH * key_tiles);
  return TS_DISPATCH_FLOAT(p.q.dtype, "attentionScores", [&] {
    if (p.check_finite) {
      TS_RETURN_IF_ERROR(launch_nonfinite<scalar_t>(static_cast<const scalar_t*>(p.q.data), B, H, nsel, kp.q_sb,
                                                    kp.q_sh, kp.q_sn, kp.rows, D, false, kBadInput, kp.flag, stream));
      TS_RETURN_IF_ERROR(launch_nonfinite<scalar_t>(static_cast<const scalar_t*>(p.k.data), B, H, Nk, kp.k_sb,
                                                    kp.k_sh, kp.k_sn, RowMap{nullptr, 0}, D, false, kBadInput,
                                                    kp.flag, stream));
      if (p.has_key_bias)
        TS_RETURN_IF_ERROR(launch_nonfinite<float>(kp.bias, B, 1, 1, kp.bias_sb, 0, 0, RowMap{nullptr, 0}, Nk, true,
                                                   kBadBias, kp.flag, stream));
    }
    if (int8) {
      float* k_mean = smooth ? scratch.at<float>(o_kmean) : nullptr;
      if (smooth) TS_RETURN_IF_ERROR(launch_token_mean(k_view, scratch.at<double>(o_kpart), k_mean, stream));
      TS_RETURN_IF_ERROR(launch_rows_quantize(k_view, k_mean, 8, p.k_block, BlockFilter{}, scratch.at<int8_t>(o_k8),
                                              scratch.at<float>(o_ksc), kp.flag, kBadInput, stream));
      // q: only the blocks holding a selected row (one block for a CLS row).
      const BlockFilter q_blocks{kp.rows.list, kp.rows.first, nsel};
      TS_RETURN_IF_ERROR(launch_rows_quantize(q_view, nullptr, 8, p.q_block, q_blocks, scratch.at<int8_t>(o_q8),
                                              scratch.at<float>(o_qsc), kp.flag, kBadInput, stream));
      row_lse_kernel<int8_t><<<pass1_blocks, kThreads, 0, stream>>>(kp);
      TS_CUDA_CHECK_LAUNCH("row_lse_kernel");
      column_sum_kernel<int8_t><<<pass2_blocks, kThreads, 0, stream>>>(kp);
      TS_CUDA_CHECK_LAUNCH("column_sum_kernel");
    } else {
      row_lse_kernel<scalar_t><<<pass1_blocks, kThreads, 0, stream>>>(kp);
      TS_CUDA_CHECK_LAUNCH("row_lse_kernel");
      column_sum_kernel<scalar_t><<<pass2_blocks, kThreads, 0, stream>>>(kp);
      TS_CUDA_CHECK_LAUNCH("column_sum_kernel");
    }
    if (!p.check_finite) return Status::Ok();
    int bad = 0;
    TS_RETURN_IF_ERROR(read_device_flag(kp.flag, stream, &bad));
    if (bad & kBadInput) return Status(Code::kRange, "expected finite values in q and k but found NaN or Inf");
    if (bad & kBadBias)
      return Status(Code::kRange, "expected keyBias values that are finite or -Infinity but found NaN or +Infinity");
    if (bad & kBadLogit)
      return Status(Code::kRange,
                    "expected finite logits but q·kᵀ·scale overflowed f32 (q and k hold values too large)");
    return Status::Ok();
  });
}

Status reduce_attention(const ReduceAttentionParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.probs, "probs"));
  const TensorView& P = p.probs;
  const int64_t B = P.shape[0], H = P.shape[1];
  const ScoreReduction& r = p.reduce;
  const int64_t nsel = r.num_query_rows;
  const int64_t W = r.key_end - r.key_begin;
  TS_RETURN_IF_ERROR(check_sizes("reduceAttention", nsel, H));
  const int64_t BH = B * H;
  const int64_t col_tiles = (W + kReduceCols - 1) / kReduceCols;
  TS_RETURN_IF_ERROR(check_grid_x(BH * col_tiles, "reduceAttention"));
  const bool reduce_heads = r.head_reduce != HeadReduce::kNone;
  const bool upload_rows = !is_row_range(r);

  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(P.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);

  // Scratch: [rows | head_sums | flag, column tickets].
  ScratchLayout lay;
  const size_t o_rows = lay.add<int32_t>(upload_rows ? nsel : 0);
  const size_t o_heads = lay.add<float>(reduce_heads ? BH * W : 0);
  const int64_t n_counters = 1 + (reduce_heads ? B * col_tiles : 0);
  const size_t o_counters = lay.add<unsigned int>(n_counters);
  Scratch scratch(P.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.bytes()));
  unsigned int* counters = scratch.at<unsigned int>(o_counters);
  TS_CUDA_TRY(cudaMemsetAsync(counters, 0, static_cast<size_t>(n_counters) * sizeof(unsigned int), stream));

  ReduceParams kp{};
  if (upload_rows) {
    int32_t* rows = scratch.at<int32_t>(o_rows);
    TS_CUDA_TRY(cudaMemcpyAsync(rows, r.query_rows, static_cast<size_t>(nsel) * sizeof(int32_t),
                                cudaMemcpyHostToDevice, stream));
    kp.rows = RowMap{rows, 0};
  } else {
    kp.rows = RowMap{nullptr, r.query_rows[0]};
  }
  kp.probs = P.data;
  kp.sb = P.strides[0];
  kp.sh = P.strides[1];
  kp.sn = P.strides[2];
  kp.H = static_cast<int>(H);
  kp.nsel = static_cast<int>(nsel);
  kp.key_begin = r.key_begin;
  kp.key_end = r.key_end;
  kp.col_tiles = static_cast<int>(col_tiles);
  fill_sink(&kp.sink, r, p.out.ptr<float>(), H, W, static_cast<int>(col_tiles));
  kp.sink.head_sums = scratch.at<float>(o_heads);
  kp.sink.tickets = counters + 1;
  kp.check = p.check_finite;
  kp.flag = reinterpret_cast<int*>(counters);

  const unsigned blocks = static_cast<unsigned>(BH * col_tiles);
  return TS_DISPATCH_FLOAT(P.dtype, "reduceAttention", [&] {
    probs_column_kernel<scalar_t><<<blocks, kReduceThreads, 0, stream>>>(kp);
    TS_CUDA_CHECK_LAUNCH("probs_column_kernel");
    if (!p.check_finite) return Status::Ok();
    int bad = 0;
    TS_RETURN_IF_ERROR(read_device_flag(kp.flag, stream, &bad));
    if (bad != 0)
      return Status(Code::kRange,
                    "expected finite probabilities in the selected rows and key range but found NaN or Inf");
    return Status::Ok();
  });
}

}  // namespace cuda
}  // namespace tokensieve
