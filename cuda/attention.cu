// CUDA attention-score extraction (attentionScores) and reduction of given
// probabilities (reduceAttention).
//
// attention_scores: softmax(q·kᵀ·scale + key_bias) over the keys, summed over
// a set of selected query rows (and heads) for a range of output keys, in two
// tensor-core passes over the whole batch (FlashAttention-2's loop, without
// P·V). Neither pass ever holds more than one 64 × 64 tile of logits per CTA;
// scratch is O(B·H·(rows + W)).
//
//   Pass 1, row_lse_kernel — grid (b, h, tile of 64 selected rows, key
//   split); 4 warps, warp w owns rows 16w..16w+15. The Q tile is staged once;
//   the CTA walks its split of the keys in 64-key tiles, K(j+1) streaming in
//   (cp.async) while S = Q·K(j)ᵀ runs on mma.sync; each thread keeps an
//   online max m and its share of the sum l for its two rows (g, g + 8 of
//   the accumulator layout), the max combined over the quad by two shuffles.
//   With one split the CTA writes lse2 = m + log2(l); with several, each
//   split writes (m, l) and the last split to finish (a ticket) merges them
//   in split order. Splits exist only when B·H·row tiles cannot fill the GPU
//   (kFillBlocks); their number depends on the shape only.
//
//   Pass 2, column_sum_kernel — grid (b, h, tile of 64 output keys). The K
//   tile stays in shared memory; the CTA walks the selected rows in 64-row
//   tiles (double-buffered like K in pass 1), recomputes S = Q·Kᵀ with the
//   same warp_scores call as pass 1 (so a (row, key) pair gets the same bits
//   in both passes), adds p = 2^(fma(s, scale·log2e, bias2) − lse2) into
//   per-thread column sums (each thread owns 16 keys, summed over its two
//   rows of every tile) and reduces them at the end: over the 8 lanes of a
//   key (3 shuffles), then the 4 warps in order through shared memory. Row
//   tiles in which no row can see the key tile (causal, or every logit
//   -inf) are skipped as a whole, their rows never loaded. Heads are reduced
//   without float atomics: each CTA stores its head's column sums and the
//   last CTA of a (b, key tile) to finish adds the H heads in order.
//
// Logits are base 2: s2 = (q·k)·scale·log2(e) + bias·log2(e) (one FMA), so
// exp(s − lse) = 2^(s2 − lse2) and exp2f (one MUFU op) does the work.
//
// Precisions (attention.h) map to one tensor-core instruction each
// (cuda/flash.cuh, MmaKind), chosen once on the host:
//   f16/bf16 inputs, kNative or kTF32   m16n8k16 on the inputs (exact in tf32)
//   f32, kNative                        3×TF32 on m16n8k8 (f32 accuracy)
//   f32, kTF32                          one TF32 product on m16n8k8
//   any, kBF16                          inputs rounded to bf16 when staged, m16n8k16
//   any, kInt8                          quantize pre-pass (cuda/quantize.cu,
//                                       SageAttention style), then m16n8k32 s8
//                                       on the codes: exact int32 dots · sq · sk
// Tiles are row-major [64 tokens][ld] in dynamic shared memory, dims padded
// with zeros to the instruction's k-step (any D <= 256); see flash.cuh for
// the paddings that keep fragment loads conflict-free. Shared memory per CTA
// is (64 + 2·64)·ld·sizeof(elem): 33 KiB for bf16 at D = 80, 51 KiB at
// D = 128, 65 KiB for f32 at D = 80. When two streaming buffers do not fit the
// device's per-block limit (f32, large D on sm_80) the loop runs with one
// (load, barrier, compute) — same results, less overlap. Rows are staged
// with cp.async when the input already has the staging type and every row
// is 16-byte aligned, otherwise by plain loads (and conversion). Q's A
// fragments are read from shared memory at every k-step rather than kept in
// registers: D is a runtime value (any D <= 256) and registers cannot be
// indexed at run time; per-D instantiations (as blocksparse.cu has) would
// save one ldmatrix per four of K's, about 20% of the fragment loads.
//
// Cost model (Qwen2.5-VL ViT, 16 heads, 4784 tokens, D = 80, bf16): each
// pass computes every logit once, so 2 × 366 M exp2 — two passes of the
// MUFU floor, 2 × 94 µs on an H100/H200 — and 2 × 59 GFLOP of MMA (about
// 0.1 ms per pass at mma.sync's practical ~600 TFLOP/s). The exp2 of one
// warp overlaps the MMAs of another (4 CTAs of 4 warps per SM at ~110–130
// registers), so each pass should take about max(exp, MMA) ≈ 100–130 µs:
// 2–3× the single-pass exp floor. Pass 1 must finish before pass 2 (lse2),
// so the two cannot overlap. Not yet measured on a GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/attention.cuh"
#include "cuda/common.cuh"
#include "cuda/flash.cuh"
#include "cuda/mma.cuh"
#include "cuda/quantize.cuh"
#include "tokensieve/attention.h"

namespace tokensieve {
namespace cuda {
namespace {

// ---- tile configuration (the one place) ------------------------------------
constexpr int kRows = 64;  // selected query rows per tile (16 per warp)
constexpr int kKeys = 64;  // keys per tile (8 n-tiles of the MMA per warp)
constexpr int kWarps = kRows / 16;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxD = 256;  // larger head dims: ERR_UNSUPPORTED
// Pass 1 splits the keys when B·H·row tiles is below this many CTAs (two
// per SM of an H100/H200: several CTAs fit per SM, fewer leave SMs idle).
constexpr int kFillBlocks = 2 * 132;
constexpr int kMaxSplits = 64;
// Shared memory kept for the kernels' static arrays when sizing the dynamic
// tiles against the device's per-block limit.
constexpr int kStaticSmemReserve = 4096;
// reduceAttention: kReduceWarps warps share a tile of kReduceCols keys (two
// per lane), each warp taking every kReduceWarps-th selected row.
constexpr int kReduceWarps = 8;
constexpr int kReduceThreads = kReduceWarps * 32;
constexpr int kReduceCols = 64;

static_assert(kRows == 2 * kThreads / 4 && kKeys == kRows, "staging: two threads per tile row");
static_assert(kKeys <= kThreads, "per-key column sums are emitted one thread each");
static_assert(kReduceCols == 64, "reduce kernel: two columns per lane");

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

struct ScoresParams : QkOperands {
  bool q_aligned, k_aligned;  // every row 16-byte aligned: cp.async staging
  // kInt8 (q, k are then contiguous INT8 codes): the scale of token n of
  // (b, h) is q_scales[bh·q_nb + n / q_block], likewise for k.
  const float* q_scales;
  int64_t q_nb, q_block;
  const float* k_scales;
  int64_t k_nb, k_block;
  int nbuf;  // streaming tile buffers in shared memory: 2 (overlapped) or 1
  // pass 1
  int row_tiles;
  int splits;
  int64_t split_keys;  // keys per split, a multiple of kKeys
  float* part_m;       // [B·H·row_tiles, splits, kRows] when splits > 1
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

// Tile geometry of an MMA kind for head dim D: padded dims, row stride, k-steps.
template <MmaKind M>
struct TileShape {
  int Dp, ld, ksteps;
  __host__ __device__ explicit TileShape(int D) {
    constexpr int S = MmaTraits<M>::kStep;
    Dp = (D + S - 1) / S * S;
    ld = Dp + MmaTraits<M>::kPad;
    ksteps = Dp / S;
  }
};

// Bytes of dynamic shared memory: one fixed tile and nbuf streamed tiles.
template <MmaKind M>
size_t tile_smem_bytes(int D, int nbuf) {
  return static_cast<size_t>(kRows + nbuf * kKeys) * TileShape<M>(D).ld * sizeof(typename MmaTraits<M>::Elem);
}

// The dynamic shared memory of the flash kernels. The emulator has no
// dynamic shared memory: there a static buffer of the largest size stands in
// (one per kernel instantiation, shared by the block's threads like
// __shared__).
#if defined(__CUDACC__)
#define TS_FLASH_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#else
constexpr size_t kEmuSmemBytes = static_cast<size_t>(kRows + 2 * kKeys) * (kMaxD + 4) * 4;
#define TS_FLASH_SMEM(name) __shared__ __align__(16) unsigned char name[kEmuSmemBytes]
#endif

// One tile row of a staged tile: two threads per row, each taking every
// other 16-byte chunk. Null src writes zeros.
template <typename In, typename Elem>
__device__ __forceinline__ void stage_row(Elem* dst_row, const In* src, int Dp, int D, bool aligned) {
  constexpr int E = 16 / static_cast<int>(sizeof(Elem));
  for (int d0 = (threadIdx.x % 2) * E; d0 < Dp; d0 += 2 * E) stage_chunk<In, Elem>(dst_row + d0, src, d0, D, aligned);
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
// CTA: (bh, row tile rt, split); blockIdx.x = (bh·row_tiles + rt)·splits + split.
// Dynamic shared memory: [Q tile | nbuf K tiles], each [64][ld] (pass-1 layout).
template <typename In, MmaKind M>
__global__ void __launch_bounds__(kThreads) row_lse_kernel(const ScoresParams p) {
  using Elem = typename MmaTraits<M>::Elem;
  constexpr bool kInt8 = M == MmaKind::kS8;
  TS_FLASH_SMEM(smem_raw);
  __shared__ int64_t row_end_s[kRows];  // tile row r sees keys [0, row_end_s[r]); 0 for padding
  __shared__ float kbias[2][kKeys];     // bias·log2(e) of the staged keys (0: no bias or past the end)
  __shared__ float kscale[2][kKeys];    // kInt8: code scales of the staged keys

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int split = static_cast<int>(blockIdx.x % static_cast<unsigned>(p.splits));
  const int64_t tile_id = blockIdx.x / static_cast<unsigned>(p.splits);  // bh·row_tiles + rt
  const int rt = static_cast<int>(tile_id % p.row_tiles);
  const int64_t bh = tile_id / p.row_tiles;
  const int64_t b = bh / p.H, h = bh % p.H;
  const TileShape<M> ts(p.D);
  Elem* Qs = reinterpret_cast<Elem*>(smem_raw);  // [kRows][ld]
  Elem* Kb = Qs + kRows * ts.ld;                 // [nbuf][kKeys][ld]
  const In* q = static_cast<const In*>(p.q);
  const In* k = static_cast<const In*>(p.k);
  const int sel0 = rt * kRows;  // nsel <= INT_MAX - 1024 (host)

  if (tid < kRows) {
    const int sel = sel0 + tid;
    row_end_s[tid] = sel < p.nsel ? visible_end(p, p.rows(sel)) : 0;
  }
  {  // Q tile, rows past nsel zero
    const int r = tid / 2, sel = sel0 + r;
    const In* src = sel < p.nsel ? q + b * p.q_sb + h * p.q_sh + p.rows(sel) * p.q_sn : nullptr;
    stage_row<In, Elem>(Qs + r * ts.ld, src, ts.Dp, p.D, p.q_aligned);
    cp_async_commit();
  }
  __syncthreads();
  int64_t tile_end = 0;  // keys any row of the tile sees
  for (int r = 0; r < kRows; ++r) tile_end = max(tile_end, row_end_s[r]);
  const int64_t key_lo = split * p.split_keys;
  const int64_t key_hi = min(tile_end, key_lo + p.split_keys);  // tile_end <= Nk
  const float* bias_b = p.bias != nullptr ? p.bias + b * p.bias_sb : nullptr;

  // This thread's accumulator rows: 16·warp + g and + 8.
  int64_t my_end[2];
  float my_qsc[2] = {0.0f, 0.0f};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp * 16 + g + 8 * i;
    my_end[i] = row_end_s[r];
    if (kInt8 && sel0 + r < p.nsel) my_qsc[i] = p.q_scales[bh * p.q_nb + p.rows(sel0 + r) / p.q_block];
  }

  // K tile of keys [key0, key0 + 64) into buffer buf (keys >= key_hi: zeros).
  auto stage_keys = [&](int64_t key0, int buf) {
    const int r = tid / 2;
    const int64_t key = key0 + r;
    const bool live = key < key_hi;
    const In* src = live ? k + b * p.k_sb + h * p.k_sh + key * p.k_sn : nullptr;
    stage_row<In, Elem>(Kb + (buf * kKeys + r) * ts.ld, src, ts.Dp, p.D, p.k_aligned);
    cp_async_commit();
    if (tid % 2 == 0) {
      kbias[buf][r] = (bias_b != nullptr && live) ? bias_b[key] * kLog2e : 0.0f;
      if (kInt8) kscale[buf][r] = live ? p.k_scales[bh * p.k_nb + key / p.k_block] : 0.0f;
    }
  };

  float m[2] = {-INFINITY, -INFINITY};  // running max of rows g, g + 8 (log2 domain), same in the quad
  float l[2] = {0.0f, 0.0f};            // this lane's share of their sums
  bool bad = false;
  const int ntiles = key_lo < key_hi ? static_cast<int>((key_hi - key_lo + kKeys - 1) / kKeys) : 0;
  if (ntiles > 0) stage_keys(key_lo, 0);
  for (int it = 0; it < ntiles; ++it) {  // CTA-uniform trip count
    const int64_t key0 = key_lo + static_cast<int64_t>(it) * kKeys;
    const int buf = it % p.nbuf;
    cp_async_wait_all();
    __syncthreads();  // K(it) (and Q) landed for every thread; everyone is done with tile it − 1
    if (p.nbuf == 2 && it + 1 < ntiles) stage_keys(key0 + kKeys, (it + 1) % 2);
    float s[8][4];
    warp_scores<M>(Qs, Kb + buf * kKeys * ts.ld, ts.ld, ts.ksteps, s);

    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = nt * 8 + 2 * t + (e & 1), i = e >> 1;
        const int64_t key = key0 + j;
        float v = -INFINITY;
        if (key < key_hi && key < my_end[i]) {
          float dot = s[nt][e];
          if (kInt8) dot *= my_qsc[i] * kscale[buf][j];
          if (p.check && !isfinite(dot * p.scale_log2)) bad = true;
          v = logit2(dot, p.scale_log2, kbias[buf][j]);
        }
        s[nt][e] = v;
        mx[i] = fmaxf(mx[i], v);
      }
    float base[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      const float m_new = fmaxf(m[i], mx[i]);
      base[i] = m_new == -INFINITY ? 0.0f : m_new;  // all -inf so far: every term below is 0
      l[i] *= exp2f(m[i] - base[i]);                // 0 before the first finite logit
      m[i] = m_new;
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) l[e >> 1] += exp2f(s[nt][e] - base[e >> 1]);  // masked: exp2f(-inf) = 0
    if (p.nbuf == 1 && it + 1 < ntiles) {
      __syncthreads();  // every warp is done with the one K buffer
      stage_keys(key0 + kKeys, 0);
    }
  }
  cp_async_wait_all();  // with no key tile, the Q copies are still in flight
  if (bad) atomicOr(p.flag, kBadLogit);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }

  if (p.splits == 1) {  // CTA-uniform
    if (t == 0) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int sel = sel0 + warp * 16 + g + 8 * i;
        if (sel < p.nsel) p.lse2[bh * p.nsel + sel] = lse_of(m[i], l[i]);
      }
    }
    return;
  }
  const int64_t part_base = (tile_id * p.splits + split) * kRows;
  if (t == 0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = warp * 16 + g + 8 * i;
      p.part_m[part_base + r] = m[i];
      p.part_l[part_base + r] = l[i];
    }
  }
  if (!last_block_arrives(&p.split_tickets[tile_id], static_cast<unsigned int>(p.splits))) return;
  if (tid < kRows) {
    const int sel = sel0 + tid;
    if (sel < p.nsel) {
      const int64_t base = tile_id * p.splits * kRows + tid;
      float mx = -INFINITY;
      for (int s = 0; s < p.splits; ++s) mx = fmaxf(mx, __ldcg(&p.part_m[base + static_cast<int64_t>(s) * kRows]));
      float L = 0.0f;
      if (mx != -INFINITY) {
        for (int s = 0; s < p.splits; ++s) {
          const float ms = __ldcg(&p.part_m[base + static_cast<int64_t>(s) * kRows]);
          if (ms != -INFINITY) L += __ldcg(&p.part_l[base + static_cast<int64_t>(s) * kRows]) * exp2f(ms - mx);
        }
      }
      p.lse2[bh * p.nsel + sel] = lse_of(mx, L);
    }
  }
}

// ---- pass 2 -----------------------------------------------------------------
// CTA: (bh, key tile kt); blockIdx.x = bh·key_tiles + kt.
// Dynamic shared memory: [K tile | nbuf Q tiles], each [64][ld].
template <typename In, MmaKind M>
__global__ void __launch_bounds__(kThreads) column_sum_kernel(const ScoresParams p) {
  using Elem = typename MmaTraits<M>::Elem;
  constexpr bool kInt8 = M == MmaKind::kS8;
  TS_FLASH_SMEM(smem_raw);
  __shared__ float row_lse[2][kRows];    // lse2 of the staged rows; -inf: the row adds nothing here
  __shared__ int64_t row_end[2][kRows];  // keys [0, end) visible to the staged rows
  __shared__ float row_qsc[2][kRows];    // kInt8: code scales of the staged rows
  __shared__ float red[kWarps][kKeys];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int kt = static_cast<int>(blockIdx.x % static_cast<unsigned>(p.key_tiles));
  const int64_t bh = blockIdx.x / static_cast<unsigned>(p.key_tiles);
  const int64_t b = bh / p.H, h = bh % p.H;
  const TileShape<M> ts(p.D);
  Elem* Ks = reinterpret_cast<Elem*>(smem_raw);  // [kKeys][ld]
  Elem* Qb = Ks + kKeys * ts.ld;                 // [nbuf][kRows][ld]
  const In* q = static_cast<const In*>(p.q);
  const In* k = static_cast<const In*>(p.k);
  const int64_t key0 = p.key_begin + static_cast<int64_t>(kt) * kKeys;
  const int64_t key_hi = min(p.key_end, key0 + kKeys);  // this CTA's keys: [key0, key_hi)

  {  // K tile, keys past key_hi zero
    const int r = tid / 2;
    const int64_t key = key0 + r;
    const In* src = key < key_hi ? k + b * p.k_sb + h * p.k_sh + key * p.k_sn : nullptr;
    stage_row<In, Elem>(Ks + r * ts.ld, src, ts.Dp, p.D, p.k_aligned);
    cp_async_commit();
  }
  // This thread's 16 keys 8nt + 2t + x: bias·log2(e) and (kInt8) code scales.
  const float* bias_b = p.bias != nullptr ? p.bias + b * p.bias_sb : nullptr;
  float bias2[8][2], ksc[8][2], colsum[8][2];
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int x = 0; x < 2; ++x) {
      const int64_t key = key0 + nt * 8 + 2 * t + x;
      bias2[nt][x] = (bias_b != nullptr && key < key_hi) ? bias_b[key] * kLog2e : 0.0f;
      ksc[nt][x] = (kInt8 && key < key_hi) ? p.k_scales[bh * p.k_nb + key / p.k_block] : 0.0f;
      colsum[nt][x] = 0.0f;
    }
  const float* lse_bh = p.lse2 + bh * p.nsel;

  // Row tile `it` into buffer buf. A row adds to these keys iff it has a
  // finite lse (sees a key with a finite logit) and sees key0; other rows are
  // zeros and not loaded. Returns whether this thread's row is live.
  auto stage_rows = [&](int it, int buf) -> int {
    const int r = tid / 2, sel = it * kRows + r;  // nsel <= INT_MAX - 1024 (host)
    const In* src = nullptr;
    float lse = -INFINITY, sc = 0.0f;
    int64_t end = 0;
    if (sel < p.nsel) {
      const int64_t row = p.rows(sel);
      end = visible_end(p, row);
      lse = lse_bh[sel];
      if (lse != -INFINITY && end > key0) {
        src = q + b * p.q_sb + h * p.q_sh + row * p.q_sn;
        if (kInt8) sc = p.q_scales[bh * p.q_nb + row / p.q_block];
      }
    }
    stage_row<In, Elem>(Qb + (buf * kRows + r) * ts.ld, src, ts.Dp, p.D, p.q_aligned);
    cp_async_commit();
    if (tid % 2 == 0) {
      row_lse[buf][r] = src != nullptr ? lse : -INFINITY;
      row_end[buf][r] = end;
      row_qsc[buf][r] = sc;
    }
    return src != nullptr;
  };

  const int ntiles = (p.nsel + kRows - 1) / kRows;
  int live = ntiles > 0 ? stage_rows(0, 0) : 0;
  for (int it = 0; it < ntiles; ++it) {  // CTA-uniform trip count
    const int buf = it % p.nbuf;
    cp_async_wait_all();
    // Barrier: row tile it (and K) landed; everyone is done with tile it − 1.
    const bool any = __syncthreads_or(live) != 0;
    live = 0;
    if (p.nbuf == 2 && it + 1 < ntiles) live = stage_rows(it + 1, (it + 1) % 2);
    if (any) {
      float s[8][4];
      warp_scores<M>(Qb + buf * kRows * ts.ld, Ks, ts.ld, ts.ksteps, s);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int r = warp * 16 + g + 8 * i;
        const float lse = row_lse[buf][r];
        if (lse == -INFINITY) continue;
        const int64_t end = min(row_end[buf][r], key_hi);
        const float qsc = row_qsc[buf][r];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int x = 0; x < 2; ++x) {
            const int64_t key = key0 + nt * 8 + 2 * t + x;
            if (key < end) {
              float dot = s[nt][2 * i + x];
              if (kInt8) dot *= qsc * ksc[nt][x];
              colsum[nt][x] += exp2f(logit2(dot, p.scale_log2, bias2[nt][x]) - lse);
            }
          }
      }
    }
    if (p.nbuf == 1 && it + 1 < ntiles) {
      __syncthreads();  // every warp is done with the one Q buffer
      live = stage_rows(it + 1, 0);
    }
  }

  // Key 8nt + 2t + x: add the 8 lanes g = 0..7 (fixed shuffle tree), then the
  // warps in order.
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int x = 0; x < 2; ++x) {
      float v = colsum[nt][x];
      v += __shfl_xor_sync(0xffffffffu, v, 4);
      v += __shfl_xor_sync(0xffffffffu, v, 8);
      v += __shfl_xor_sync(0xffffffffu, v, 16);
      if (g == 0) red[warp][nt * 8 + 2 * t + x] = v;
    }
  __syncthreads();
  const int ncols = static_cast<int>(key_hi - key0);
  float v = 0.0f;
  if (tid < ncols) {
    for (int w = 0; w < kWarps; ++w) v += red[w][tid];
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
  for (int sel = warp; sel < p.nsel; sel += kReduceWarps) {  // nsel <= INT_MAX - 1024 (host)
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

// Every row of the view starts 16-byte aligned (pointer and the three outer
// strides): the staging may then use cp.async.
bool rows_aligned16(const TensorView& t) {
  const int64_t es = static_cast<int64_t>(dtype_size(t.dtype));
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0) return false;
  for (int i = 0; i < 3; ++i)
    if ((t.strides[i] * es) % 16 != 0) return false;
  return true;
}

// The per-block shared-memory limit of the device (opt-in), asked once per
// device. The emulator has no such attribute; its stand-in is deliberately
// small (100 KiB) so that the f32 tiles of large head dims take the
// one-buffer loop there and both loops are tested.
constexpr int kCachedDevices = 64;
Status smem_limit(int device, int64_t* bytes) {
#if defined(__CUDACC__)
  static std::atomic<int> cached[kCachedDevices] = {};  // 0: not asked yet
  int v = device >= 0 && device < kCachedDevices ? cached[device].load(std::memory_order_relaxed) : 0;
  if (v == 0) {
    TS_CUDA_TRY(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (device >= 0 && device < kCachedDevices) cached[device].store(v, std::memory_order_relaxed);
  }
  *bytes = v;
#else
  (void)device;
  *bytes = 100 * 1024;
#endif
  return Status::Ok();
}

// Launches both passes with the tensor-core kind M on inputs In (kInt8: the
// codes). Chooses one or two streaming buffers from the shared-memory limit.
template <typename In, MmaKind M>
Status launch_passes(ScoresParams kp, int device, unsigned pass1_blocks, unsigned pass2_blocks, cudaStream_t stream) {
  int64_t limit = 0;
  TS_RETURN_IF_ERROR(smem_limit(device, &limit));
  kp.nbuf = static_cast<int64_t>(tile_smem_bytes<M>(kp.D, 2)) + kStaticSmemReserve <= limit ? 2 : 1;
  const size_t smem = tile_smem_bytes<M>(kp.D, kp.nbuf);
#if defined(__CUDACC__)
  if (smem > 48 * 1024) {
    // Above the default per-block limit: opt in, per kernel and device, once
    // for the largest size asked so far (a call costs microseconds; two
    // threads racing both set it, which is harmless).
    static std::atomic<size_t> opted[kCachedDevices] = {};
    const bool known = device >= 0 && device < kCachedDevices;
    if (!known || opted[device].load(std::memory_order_relaxed) < smem) {
      TS_CUDA_TRY(cudaFuncSetAttribute(row_lse_kernel<In, M>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
      TS_CUDA_TRY(cudaFuncSetAttribute(column_sum_kernel<In, M>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
      if (known) opted[device].store(smem, std::memory_order_relaxed);
    }
  }
#endif
  row_lse_kernel<In, M><<<pass1_blocks, kThreads, smem, stream>>>(kp);
  TS_CUDA_CHECK_LAUNCH("row_lse_kernel");
  column_sum_kernel<In, M><<<pass2_blocks, kThreads, smem, stream>>>(kp);
  TS_CUDA_CHECK_LAUNCH("column_sum_kernel");
  return Status::Ok();
}

// The instruction a (dtype, precision) pair runs on (file header).
template <typename In>
Status launch_for_precision(ScorePrecision precision, const ScoresParams& kp, int device, unsigned b1, unsigned b2,
                            cudaStream_t stream) {
  if (precision == ScorePrecision::kBF16) return launch_passes<In, MmaKind::kBF16>(kp, device, b1, b2, stream);
  if constexpr (std::is_same<In, float>::value) {
    if (precision == ScorePrecision::kTF32) return launch_passes<In, MmaKind::kTF32>(kp, device, b1, b2, stream);
    return launch_passes<In, MmaKind::kTF32x3>(kp, device, b1, b2, stream);
  } else if constexpr (std::is_same<In, __half>::value) {
    return launch_passes<In, MmaKind::kF16>(kp, device, b1, b2, stream);  // f16 values are exact in tf32
  } else {
    return launch_passes<In, MmaKind::kBF16>(kp, device, b1, b2, stream);
  }
}

}  // namespace

bool is_row_range(const ScoreReduction& r) {
  for (int64_t i = 1; i < r.num_query_rows; ++i)
    if (static_cast<int64_t>(r.query_rows[i]) != static_cast<int64_t>(r.query_rows[0]) + i) return false;
  return true;
}

Status upload_rows(const ScoreReduction& r, int32_t* scratch, cudaStream_t stream, RowMap* rows) {
  if (is_row_range(r)) {
    *rows = RowMap{nullptr, r.query_rows[0]};
    return Status::Ok();
  }
  TS_CUDA_TRY(cudaMemcpyAsync(scratch, r.query_rows, static_cast<size_t>(r.num_query_rows) * sizeof(int32_t),
                              cudaMemcpyHostToDevice, stream));
  *rows = RowMap{scratch, 0};
  return Status::Ok();
}

void fill_qk_operands(const AttentionScoresParams& p, RowMap rows, QkOperands* o) {
  o->q = p.q.data;
  o->q_sb = p.q.strides[0];
  o->q_sh = p.q.strides[1];
  o->q_sn = p.q.strides[2];
  o->k = p.k.data;
  o->k_sb = p.k.strides[0];
  o->k_sh = p.k.strides[1];
  o->k_sn = p.k.strides[2];
  o->bias = p.has_key_bias ? p.key_bias.ptr<const float>() : nullptr;
  o->bias_sb = p.has_key_bias ? p.key_bias.strides[0] : 0;
  o->H = static_cast<int>(p.q.shape[1]);
  o->D = static_cast<int>(p.q.shape[3]);
  o->Nk = p.k.shape[2];
  o->scale_log2 = p.scale * kLog2e;
  o->causal = p.causal;
  o->causal_offset = p.causal ? p.causal_offset : 0;
  o->rows = rows;
  o->nsel = static_cast<int>(p.reduce.num_query_rows);
}

Status attention_scores(const AttentionScoresParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.q, "q"));
  // A handful of rows (CLS row, last row): the memory-bound path of attention_rows.cu.
  if (rows_path_applies(p)) return attention_scores_rows(p);
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
  const int64_t row_tiles = (nsel + kRows - 1) / kRows;
  const int64_t all_key_tiles = (Nk + kKeys - 1) / kKeys;
  const int64_t base_blocks = BH * row_tiles;
  int64_t splits = 1;
  if (base_blocks < kFillBlocks)
    splits = std::min<int64_t>({(kFillBlocks + base_blocks - 1) / base_blocks, all_key_tiles, kMaxSplits});
  const int64_t split_keys = (all_key_tiles + splits - 1) / splits * kKeys;
  splits = (Nk + split_keys - 1) / split_keys;  // drop empty splits
  const int64_t key_tiles = (W + kKeys - 1) / kKeys;
  TS_RETURN_IF_ERROR(check_grid_x(base_blocks * splits, "attentionScores"));
  TS_RETURN_IF_ERROR(check_grid_x(BH * key_tiles, "attentionScores"));
  const bool reduce_heads = r.head_reduce != HeadReduce::kNone;
  const bool list_rows = !is_row_range(r);

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
  const size_t o_rows = lay.add<int32_t>(list_rows ? nsel : 0);
  const size_t o_lse = lay.add<float>(BH * nsel);                    // [B·H, nsel] lse2
  const int64_t nparts = splits > 1 ? base_blocks * splits * kRows : 0;
  const size_t o_pm = lay.add<float>(nparts);                         // [B·H·row_tiles, splits, 64]
  const size_t o_pl = lay.add<float>(nparts);
  const size_t o_heads = lay.add<float>(reduce_heads ? BH * W : 0);  // [B, H, W]
  const int64_t n_split_tickets = splits > 1 ? base_blocks : 0;
  const int64_t n_col_tickets = reduce_heads ? B * key_tiles : 0;
  const int64_t n_counters = 1 + n_split_tickets + n_col_tickets;
  const size_t o_counters = lay.add<unsigned int>(n_counters);
  const size_t o_q8 = lay.add<int8_t>(int8 ? BH * Nq * D : 0);        // [B, H, Nq, D] codes
  const size_t o_k8 = lay.add<int8_t>(int8 ? BH * Nk * D : 0);        // [B, H, Nk, D] codes
  const size_t o_qsc = lay.add<float>(BH * q_nb);                     // [B·H, q blocks]
  const size_t o_ksc = lay.add<float>(BH * k_nb);                     // [B·H, k blocks]
  const size_t o_kmean = lay.add<float>(smooth ? BH * D : 0);         // [B·H, D]
  const size_t o_kpart = lay.add<double>(smooth ? BH * mean_chunks(Nk) * D : 0);
  Scratch scratch(p.q.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.bytes()));
  unsigned int* counters = scratch.at<unsigned int>(o_counters);
  TS_CUDA_TRY(cudaMemsetAsync(counters, 0, static_cast<size_t>(n_counters) * sizeof(unsigned int), stream));

  ScoresParams kp{};
  RowMap rows;
  TS_RETURN_IF_ERROR(upload_rows(r, scratch.at<int32_t>(o_rows), stream, &rows));
  fill_qk_operands(p, rows, &kp);
  kp.q_aligned = rows_aligned16(p.q);
  kp.k_aligned = rows_aligned16(p.k);
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
    kp.q_aligned = kp.k_aligned = D % 16 == 0;  // the code buffers are 256-byte aligned
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
      TS_RETURN_IF_ERROR(launch_nonfinite<scalar_t>(static_cast<const scalar_t*>(p.q.data), B, H, nsel, p.q.strides[0],
                                                    p.q.strides[1], p.q.strides[2], kp.rows, D, false, kBadInput,
                                                    kp.flag, stream));
      TS_RETURN_IF_ERROR(launch_nonfinite<scalar_t>(static_cast<const scalar_t*>(p.k.data), B, H, Nk, p.k.strides[0],
                                                    p.k.strides[1], p.k.strides[2], RowMap{nullptr, 0}, D, false,
                                                    kBadInput, kp.flag, stream));
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
      TS_RETURN_IF_ERROR(
          (launch_passes<int8_t, MmaKind::kS8>(kp, p.q.device, pass1_blocks, pass2_blocks, stream)));
    } else {
      TS_RETURN_IF_ERROR(launch_for_precision<scalar_t>(p.precision, kp, p.q.device, pass1_blocks, pass2_blocks, stream));
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
  const bool list_rows = !is_row_range(r);

  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(P.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);

  // Scratch: [rows | head_sums | flag, column tickets].
  ScratchLayout lay;
  const size_t o_rows = lay.add<int32_t>(list_rows ? nsel : 0);
  const size_t o_heads = lay.add<float>(reduce_heads ? BH * W : 0);
  const int64_t n_counters = 1 + (reduce_heads ? B * col_tiles : 0);
  const size_t o_counters = lay.add<unsigned int>(n_counters);
  Scratch scratch(P.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.bytes()));
  unsigned int* counters = scratch.at<unsigned int>(o_counters);
  TS_CUDA_TRY(cudaMemsetAsync(counters, 0, static_cast<size_t>(n_counters) * sizeof(unsigned int), stream));

  ReduceParams kp{};
  TS_RETURN_IF_ERROR(upload_rows(r, scratch.at<int32_t>(o_rows), stream, &kp.rows));
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
