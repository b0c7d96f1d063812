// CUDA attention-score extraction: two launches for the whole batch.
//
// Pass 1 (row_lse_kernel): one block per (b, h, tile of 32 selected query
// rows). The rows' q stays in shared memory; k streams through in tiles of
// 32 keys; each row keeps an online max and sum (flash style) and ends with
// its base-2 log-sum-exp. Pass 2 (column_sum_kernel): one block per
// (b, h, tile of 32 output keys). The keys stay in shared memory; the
// selected rows stream through; exp2(s − lse) is summed per column. Neither
// pass materialises more than a 32×32 tile of logits; scratch is
// O(B·H·(rows + W)).
//
// Heads are reduced without float atomics: each block writes its head's
// column sums, and the last block to finish a (b, key tile) — a ticket from
// an integer atomic — adds the H heads in order h = 0..H-1. Results are
// deterministic.
//
// The tiles are SIMT f32 FMAs for every input dtype (inputs are converted
// when staged into shared memory), so f32 inputs keep f32 accuracy. A
// tensor-core path for f16/bf16 would replace qk_tile with mma.sync on the
// same tiles.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/common.cuh"
#include "tokensieve/attention.h"

namespace tokensieve {
namespace cuda {
namespace {

constexpr int kThreads = 256;    // 16 × 16 threads, each owning a 2 × 2 patch of the 32 × 32 tile
constexpr int kTile = 32;        // query rows and keys per tile
constexpr int kChunk = 32;       // head dims staged per step for the streamed operand
constexpr int kPad = kTile + 1;  // shared rows padded to dodge bank conflicts
constexpr int kMaxD = 256;
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kReduceThreads = 256;

struct Operand {
  const void* base;  // element [b, h, 0, 0]
  int64_t stride_b, stride_h, stride_n;
};

struct Common {
  Operand q, k;
  const float* bias;  // [B, Nk] or null
  int64_t bias_stride_b;
  int B, H, D, Dp;  // Dp: D rounded up to kChunk
  int64_t Nk;
  float scale_log2;  // scale · log2(e)
  bool causal;
  int64_t causal_offset;
  const int* rows;  // selected query rows (device)
  int nsel;
};

__device__ __forceinline__ int64_t visible_keys(const Common& c, int row) {
  if (row < 0) return 0;
  if (!c.causal) return c.Nk;
  const int64_t lim = static_cast<int64_t>(row) + c.causal_offset + 1;
  return lim < 0 ? 0 : (lim > c.Nk ? c.Nk : lim);
}

template <typename T>
__device__ __forceinline__ const T* row_ptr(const Operand& o, int b, int h, int64_t n) {
  return static_cast<const T*>(o.base) + b * o.stride_b + h * o.stride_h + n * o.stride_n;
}

// Stages `count` rows of an operand, all Dp dims, transposed into shared
// memory: dst[d * kPad + r] = row r, dim d (zero past D and for missing rows).
// `index(r)` gives the token index of tile row r, or -1.
template <typename T, typename Index>
__device__ void stage_resident(const Operand& o, int b, int h, int D, int Dp, Index index, float* dst) {
  for (int i = threadIdx.x; i < kTile * Dp; i += kThreads) {
    const int r = i / Dp, d = i % Dp;
    const int64_t n = index(r);
    float v = 0.0f;
    if (n >= 0 && d < D) v = load_f32(row_ptr<T>(o, b, h, n) + d);
    dst[d * kPad + r] = v;
  }
}

// Stages dims [d0, d0 + kChunk) of the tile's rows: dst[d * kPad + r].
template <typename T, typename Index>
__device__ void stage_chunk(const Operand& o, int b, int h, int D, int d0, Index index, float* dst) {
  for (int i = threadIdx.x; i < kTile * kChunk; i += kThreads) {
    const int r = i / kChunk, d = i % kChunk;
    const int64_t n = index(r);
    float v = 0.0f;
    if (n >= 0 && d0 + d < D) v = load_f32(row_ptr<T>(o, b, h, n) + d0 + d);
    dst[d * kPad + r] = v;
  }
}

// acc[i][j] = Σ_d rowside[d][2·ty + i] · colside[d][tx + 16·j] over one
// resident operand and one streamed operand. `q_resident` says which side
// of the tile (query rows or keys) stays in shared memory. Every thread of
// the block must call it (it synchronises).
template <typename T, bool q_resident, typename QIndex, typename KIndex>
__device__ void qk_tile(const Common& c, int b, int h, QIndex qidx, KIndex kidx, const float* resident,
                        float* chunk, float (&acc)[2][2]) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  acc[0][0] = acc[0][1] = acc[1][0] = acc[1][1] = 0.0f;
  for (int d0 = 0; d0 < c.Dp; d0 += kChunk) {
    if (q_resident)
      stage_chunk<T>(c.k, b, h, c.D, d0, kidx, chunk);
    else
      stage_chunk<T>(c.q, b, h, c.D, d0, qidx, chunk);
    __syncthreads();
    const float* qs = q_resident ? resident + d0 * kPad : chunk;
    const float* ks = q_resident ? chunk : resident + d0 * kPad;
#pragma unroll 8
    for (int d = 0; d < kChunk; ++d) {
      const float a0 = qs[d * kPad + 2 * ty], a1 = qs[d * kPad + 2 * ty + 1];
      const float b0 = ks[d * kPad + tx], b1 = ks[d * kPad + tx + 16];
      acc[0][0] = fmaf(a0, b0, acc[0][0]);
      acc[0][1] = fmaf(a0, b1, acc[0][1]);
      acc[1][0] = fmaf(a1, b0, acc[1][0]);
      acc[1][1] = fmaf(a1, b1, acc[1][1]);
    }
    __syncthreads();
  }
}

// Pass 1: lse2[b, h, s] = log2 Σ_visible 2^(s2_ij) for selected row s, where
// s2 = (q·k)·scale·log2e + bias·log2e; -inf when the row sees no key.
template <typename T>
__global__ void __launch_bounds__(kThreads) row_lse_kernel(Common c, int row_tiles, float* lse2) {
  extern __shared__ float smem[];
  float* qres = smem;                        // [Dp][kPad]
  float* chunk = smem + c.Dp * kPad;         // [kChunk][kPad]
  __shared__ int rows_s[kTile];
  __shared__ int64_t lim_s[kTile];
  __shared__ int64_t tile_keys_s;

  const int tile = blockIdx.x % row_tiles;
  const int bh = blockIdx.x / row_tiles;
  const int h = bh % c.H, b = bh / c.H;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

  if (threadIdx.x < kTile) {
    const int s = tile * kTile + threadIdx.x;
    const int row = s < c.nsel ? c.rows[s] : -1;
    rows_s[threadIdx.x] = row;
    lim_s[threadIdx.x] = visible_keys(c, row);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t m = 0;
    for (int r = 0; r < kTile; ++r) m = lim_s[r] > m ? lim_s[r] : m;
    tile_keys_s = m;
  }
  auto qidx = [&](int r) -> int64_t { return rows_s[r]; };
  stage_resident<T>(c.q, b, h, c.D, c.Dp, qidx, qres);
  __syncthreads();
  const int64_t tile_keys = tile_keys_s;

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  for (int64_t key0 = 0; key0 < tile_keys; key0 += kTile) {
    auto kidx = [&](int r) -> int64_t { return key0 + r < c.Nk ? key0 + r : -1; };
    float acc[2][2];
    qk_tile<T, true>(c, b, h, qidx, kidx, qres, chunk, acc);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t lim = lim_s[2 * ty + i];
      float s[2];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t key = key0 + tx + 16 * j;
        s[j] = -INFINITY;
        if (key < lim) {
          s[j] = acc[i][j] * c.scale_log2;
          if (c.bias != nullptr) s[j] += c.bias[b * c.bias_stride_b + key] * kLog2e;
        }
      }
      // The 16 threads of a half-warp hold one row's 32 logits. Both
      // shuffles run on every lane (full-warp masks), masked rows included.
      const float tile_max = warp_max(fmaxf(s[0], s[1]), 16);
      const float m_new = fmaxf(m[i], tile_max);
      const float shift = m_new == -INFINITY ? 0.0f : m_new;
      float part = 0.0f;
#pragma unroll
      for (int j = 0; j < 2; ++j) part += s[j] == -INFINITY ? 0.0f : exp2f(s[j] - shift);
      const float tile_sum = warp_sum(part, 16);
      if (m_new != -INFINITY) {
        l[i] = l[i] * exp2f(m[i] - m_new) + tile_sum;
        m[i] = m_new;
      }
    }
  }
  if (tx == 0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int s = tile * kTile + 2 * ty + i;
      if (s < c.nsel) lse2[(static_cast<int64_t>(b) * c.H + h) * c.nsel + s] = l[i] > 0.0f ? m[i] + log2f(l[i]) : -INFINITY;
    }
  }
}

// Where a head's column sums go: straight to out (heads: none), or to
// scratch, the last block of a (b, column tile) adding the heads in order.
struct HeadOut {
  float* out;
  float* heads;   // [B, H, W] scratch (mean/sum)
  int* tickets;   // [B, tiles], zeroed before the launch
  int H;
  int64_t W;
  int tiles;
  HeadReduce mode;
  float head_weight;  // 1/H for mean, 1 for sum
  bool accumulate;
};

// Called by every thread of the block; thread t < ncols holds the value of
// column col0 + t (col0 relative to the output's key range).
__device__ void emit_columns(const HeadOut& o, int b, int h, int tile, int64_t col0, int ncols, float v) {
  __shared__ int ticket_s;
  const int t = threadIdx.x;
  if (o.mode == HeadReduce::kNone) {
    if (t < ncols) {
      float* dst = o.out + (static_cast<int64_t>(b) * o.H + h) * o.W + col0 + t;
      *dst = (o.accumulate ? *dst : 0.0f) + v;
    }
    return;
  }
  if (t < ncols) o.heads[(static_cast<int64_t>(b) * o.H + h) * o.W + col0 + t] = v;
  __threadfence();
  __syncthreads();
  if (t == 0) ticket_s = atomicAdd(&o.tickets[b * o.tiles + tile], 1);
  __syncthreads();
  if (ticket_s != o.H - 1) return;
  __threadfence();
  if (t < ncols) {
    float sum = 0.0f;
    for (int hh = 0; hh < o.H; ++hh) sum += __ldcg(&o.heads[(static_cast<int64_t>(b) * o.H + hh) * o.W + col0 + t]);
    float* dst = o.out + static_cast<int64_t>(b) * o.W + col0 + t;
    *dst = (o.accumulate ? *dst : 0.0f) + o.head_weight * sum;
  }
}

// Pass 2: per-head column sums of exp2(s2 − lse2) over the selected rows,
// for keys [key_begin, key_end).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    column_sum_kernel(Common c, const float* lse2, int64_t key_begin, int64_t key_end, int key_tiles,
                      float row_weight, HeadOut o) {
  extern __shared__ float smem[];
  float* kres = smem;                 // [Dp][kPad]
  float* chunk = smem + c.Dp * kPad;  // [kChunk][kPad]
  __shared__ int rows_s[kTile];
  __shared__ float lse_s[kTile];
  __shared__ int64_t lim_s[kTile];
  __shared__ float red[16][kTile];

  const int tile = blockIdx.x % key_tiles;
  const int bh = blockIdx.x / key_tiles;
  const int h = bh % c.H, b = bh / c.H;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t key0 = key_begin + static_cast<int64_t>(tile) * kTile;

  auto kidx = [&](int r) -> int64_t { return key0 + r < key_end ? key0 + r : -1; };
  stage_resident<T>(c.k, b, h, c.D, c.Dp, kidx, kres);

  float colsum[2] = {0.0f, 0.0f};
  float bias2[2] = {0.0f, 0.0f};
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int64_t key = key0 + tx + 16 * j;
    if (c.bias != nullptr && key < key_end) bias2[j] = c.bias[b * c.bias_stride_b + key] * kLog2e;
  }
  const float* lse_bh = lse2 + (static_cast<int64_t>(b) * c.H + h) * c.nsel;
  for (int s0 = 0; s0 < c.nsel; s0 += kTile) {
    __syncthreads();  // the previous tile is done with rows_s/lse_s
    if (threadIdx.x < kTile) {
      const int s = s0 + threadIdx.x;
      const int row = s < c.nsel ? c.rows[s] : -1;
      rows_s[threadIdx.x] = row;
      lse_s[threadIdx.x] = s < c.nsel ? lse_bh[s] : -INFINITY;
      lim_s[threadIdx.x] = visible_keys(c, row);
    }
    __syncthreads();
    auto qidx = [&](int r) -> int64_t { return rows_s[r]; };
    float acc[2][2];
    qk_tile<T, false>(c, b, h, qidx, kidx, kres, chunk, acc);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = 2 * ty + i;
      const float lse = lse_s[r];
      if (lse == -INFINITY) continue;  // padding row, or a row that sees no key
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t key = key0 + tx + 16 * j;
        if (key < key_end && key < lim_s[r]) colsum[j] += exp2f(acc[i][j] * c.scale_log2 + bias2[j] - lse);
      }
    }
  }
  // Sum the 16 row groups of each column in a fixed order.
  __syncthreads();
  red[ty][tx] = colsum[0];
  red[ty][tx + 16] = colsum[1];
  __syncthreads();
  float v = 0.0f;
  if (threadIdx.x < kTile) {
    for (int g = 0; g < 16; ++g) v += red[g][threadIdx.x];
    v *= row_weight;
  }
  const int ncols = static_cast<int>(std::min<int64_t>(kTile, key_end - key0));
  emit_columns(o, b, h, tile, key0 - key_begin, ncols, v);
}

// reduceAttention: column sums of precomputed probabilities, one thread per
// column, reading the selected rows in order (coalesced along keys).
template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    probs_column_kernel(const void* probs, int64_t sb, int64_t sh, int64_t sq, int H, const int* rows, int nsel,
                        int64_t key_begin, int64_t key_end, int col_tiles, float row_weight, bool check,
                        int* flag, HeadOut o) {
  const int tile = blockIdx.x % col_tiles;
  const int bh = blockIdx.x / col_tiles;
  const int h = bh % H, b = bh / H;
  const int64_t col0 = static_cast<int64_t>(tile) * kReduceThreads;
  const int64_t key = key_begin + col0 + threadIdx.x;
  float acc = 0.0f;
  if (key < key_end) {
    const T* base = static_cast<const T*>(probs) + b * sb + h * sh + key;
    bool bad = false;
    for (int s = 0; s < nsel; ++s) {
      const float x = load_f32(base + rows[s] * sq);
      bad |= !isfinite(x);
      acc += x;
    }
    if (check && bad) atomicExch(flag, 1);
  }
  const int ncols = static_cast<int>(std::min<int64_t>(kReduceThreads, key_end - key_begin - col0));
  emit_columns(o, b, h, tile, col0, ncols, acc * row_weight);
}

// Sets *flag when any element of a strided [n0, n1, n2, n3] view is NaN or
// infinite (-inf allowed with allow_neg_inf). `rows` (optional) maps dim 2.
template <typename T>
__global__ void nonfinite_kernel(const void* base, int64_t n0, int64_t n1, int64_t n2, int64_t n3, int64_t s0,
                                 int64_t s1, int64_t s2, int64_t s3, const int* rows, bool allow_neg_inf,
                                 int* flag) {
  const int64_t total = n0 * n1 * n2 * n3;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t r = i;
    const int64_t i3 = r % n3;
    r /= n3;
    const int64_t i2 = r % n2;
    r /= n2;
    const int64_t i1 = r % n1;
    const int64_t i0 = r / n1;
    const int64_t n = rows != nullptr ? rows[i2] : i2;
    const float x = load_f32(static_cast<const T*>(base) + i0 * s0 + i1 * s1 + n * s2 + i3 * s3);
    const bool ok = isfinite(x) || (allow_neg_inf && x == -INFINITY);
    if (!ok) atomicExch(flag, 1);
  }
}

template <typename T>
Status launch_nonfinite(const void* base, int64_t n0, int64_t n1, int64_t n2, int64_t n3, int64_t s0, int64_t s1,
                        int64_t s2, int64_t s3, const int* rows, bool allow_neg_inf, int* flag,
                        cudaStream_t stream) {
  const int64_t total = n0 * n1 * n2 * n3;
  if (total == 0) return Status::Ok();
  const int blocks = static_cast<int>(std::min<int64_t>((total + 255) / 256, 4096));
  nonfinite_kernel<T><<<blocks, 256, 0, stream>>>(base, n0, n1, n2, n3, s0, s1, s2, s3, rows, allow_neg_inf, flag);
  TS_CUDA_CHECK_LAUNCH("nonfinite_kernel");
  return Status::Ok();
}

// Copies the flag back (waiting for the stream) and turns it into ERR_RANGE.
Status read_flag(const int* flag, cudaStream_t stream, const char* message) {
  int host = 0;
  TS_CUDA_TRY(cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, stream));
  TS_CUDA_TRY(cudaStreamSynchronize(stream));
  if (host != 0) return Status(Code::kRange, message);
  return Status::Ok();
}

Status check_grid(int64_t blocks, const char* what) {
  if (blocks > 2147483647)
    return Status(Code::kUnsupported, std::string(what) + ": the problem needs more than 2^31-1 thread blocks");
  return Status::Ok();
}

// Scratch layout shared by both entry points: [rows | lse | heads | tickets | flag].
struct Layout {
  size_t rows = 0, lse = 0, heads = 0, tickets = 0, flag = 0, total = 0;
  Layout(int64_t nsel, int64_t lse_count, int64_t head_count, int64_t ticket_count) {
    rows = 0;
    lse = rows + align256(nsel * sizeof(int));
    heads = lse + align256(lse_count * sizeof(float));
    tickets = heads + align256(head_count * sizeof(float));
    flag = tickets + align256(ticket_count * sizeof(int));
    total = flag + align256(sizeof(int));
  }
};

}  // namespace

Status attention_scores(const AttentionScoresParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.q, "q"));
  const int64_t B = p.q.shape[0], H = p.q.shape[1], D = p.q.shape[3];
  const int64_t Nk = p.k.shape[2];
  const ScoreReduction& r = p.reduce;
  const int64_t nsel = r.num_query_rows;
  const int64_t W = r.key_end - r.key_begin;
  if (D > kMaxD)
    return Status(Code::kUnsupported, "the CUDA attention-score kernel supports head dims up to " +
                                          std::to_string(kMaxD) + " (got " + std::to_string(D) + ")");
  if (nsel > 2147483647 || B > 2147483647 || H > 2147483647)
    return Status(Code::kUnsupported, "attentionScores: too many query rows, batches or heads for the CUDA kernel");
  const int row_tiles = static_cast<int>((nsel + kTile - 1) / kTile);
  const int64_t key_tiles64 = (W + kTile - 1) / kTile;
  TS_RETURN_IF_ERROR(check_grid(B * H * row_tiles, "attentionScores"));
  TS_RETURN_IF_ERROR(check_grid(B * H * key_tiles64, "attentionScores"));
  const int key_tiles = static_cast<int>(key_tiles64);

  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.q.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const bool reduce_heads = r.head_reduce != HeadReduce::kNone;
  const Layout lay(nsel, B * H * nsel, reduce_heads ? B * H * W : 0, reduce_heads ? B * key_tiles : 0);
  Scratch scratch(p.q.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.total));
  int* rows = scratch.as<int>(lay.rows);
  float* lse2 = scratch.as<float>(lay.lse);
  int* tickets = scratch.as<int>(lay.tickets);
  int* flag = scratch.as<int>(lay.flag);
  TS_CUDA_TRY(cudaMemcpyAsync(rows, r.query_rows, nsel * sizeof(int), cudaMemcpyHostToDevice, stream));
  if (reduce_heads) TS_CUDA_TRY(cudaMemsetAsync(tickets, 0, B * key_tiles * sizeof(int), stream));
  TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));

  Common c;
  c.q = {p.q.data, p.q.strides[0], p.q.strides[1], p.q.strides[2]};
  c.k = {p.k.data, p.k.strides[0], p.k.strides[1], p.k.strides[2]};
  c.bias = p.has_key_bias ? p.key_bias.ptr<float>() : nullptr;
  c.bias_stride_b = p.has_key_bias ? p.key_bias.strides[0] : 0;
  c.B = static_cast<int>(B);
  c.H = static_cast<int>(H);
  c.D = static_cast<int>(D);
  c.Dp = static_cast<int>((D + kChunk - 1) / kChunk * kChunk);
  c.Nk = Nk;
  c.scale_log2 = p.scale * kLog2e;
  c.causal = p.causal;
  c.causal_offset = p.causal_offset;
  c.rows = rows;
  c.nsel = static_cast<int>(nsel);

  HeadOut o;
  o.out = p.out.ptr<float>();
  o.heads = scratch.as<float>(lay.heads);
  o.tickets = tickets;
  o.H = c.H;
  o.W = W;
  o.tiles = key_tiles;
  o.mode = r.head_reduce;
  o.head_weight = r.head_reduce == HeadReduce::kMean ? 1.0f / static_cast<float>(H) : 1.0f;
  o.accumulate = r.accumulate;
  const float row_weight = r.query_reduce == QueryReduce::kMean ? 1.0f / static_cast<float>(nsel) : 1.0f;
  const size_t smem = static_cast<size_t>(c.Dp + kChunk) * kPad * sizeof(float);

  return TS_DISPATCH_FLOAT(p.q.dtype, "attentionScores", [&] {
    if (p.check_finite) {
      TS_RETURN_IF_ERROR(launch_nonfinite<scalar_t>(p.q.data, B, H, nsel, D, p.q.strides[0], p.q.strides[1],
                                                    p.q.strides[2], 1, rows, false, flag, stream));
      TS_RETURN_IF_ERROR(launch_nonfinite<scalar_t>(p.k.data, B, H, Nk, D, p.k.strides[0], p.k.strides[1],
                                                    p.k.strides[2], 1, nullptr, false, flag, stream));
      if (p.has_key_bias)
        TS_RETURN_IF_ERROR(launch_nonfinite<float>(p.key_bias.data, B, 1, 1, Nk, p.key_bias.strides[0], 0, 0, 1,
                                                   nullptr, true, flag, stream));
    }
    row_lse_kernel<scalar_t><<<static_cast<unsigned>(B * H * row_tiles), kThreads, smem, stream>>>(c, row_tiles, lse2);
    TS_CUDA_CHECK_LAUNCH("row_lse_kernel");
    column_sum_kernel<scalar_t><<<static_cast<unsigned>(B * H * key_tiles), kThreads, smem, stream>>>(
        c, lse2, r.key_begin, r.key_end, key_tiles, row_weight, o);
    TS_CUDA_CHECK_LAUNCH("column_sum_kernel");
    if (p.check_finite)
      return read_flag(flag, stream,
                       "expected finite values in q, k and keyBias (keyBias may be -Infinity) but found NaN or "
                       "Infinity");
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
  if (nsel > 2147483647 || B > 2147483647 || H > 2147483647)
    return Status(Code::kUnsupported, "reduceAttention: too many query rows, batches or heads for the CUDA kernel");
  const int64_t col_tiles64 = (W + kReduceThreads - 1) / kReduceThreads;
  TS_RETURN_IF_ERROR(check_grid(B * H * col_tiles64, "reduceAttention"));
  const int col_tiles = static_cast<int>(col_tiles64);

  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(P.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const bool reduce_heads = r.head_reduce != HeadReduce::kNone;
  const Layout lay(nsel, 0, reduce_heads ? B * H * W : 0, reduce_heads ? B * col_tiles : 0);
  Scratch scratch(P.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.total));
  int* rows = scratch.as<int>(lay.rows);
  int* tickets = scratch.as<int>(lay.tickets);
  int* flag = scratch.as<int>(lay.flag);
  TS_CUDA_TRY(cudaMemcpyAsync(rows, r.query_rows, nsel * sizeof(int), cudaMemcpyHostToDevice, stream));
  if (reduce_heads) TS_CUDA_TRY(cudaMemsetAsync(tickets, 0, B * col_tiles * sizeof(int), stream));
  TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));

  HeadOut o;
  o.out = p.out.ptr<float>();
  o.heads = scratch.as<float>(lay.heads);
  o.tickets = tickets;
  o.H = static_cast<int>(H);
  o.W = W;
  o.tiles = col_tiles;
  o.mode = r.head_reduce;
  o.head_weight = r.head_reduce == HeadReduce::kMean ? 1.0f / static_cast<float>(H) : 1.0f;
  o.accumulate = r.accumulate;
  const float row_weight = r.query_reduce == QueryReduce::kMean ? 1.0f / static_cast<float>(nsel) : 1.0f;

  return TS_DISPATCH_FLOAT(P.dtype, "reduceAttention", [&] {
    probs_column_kernel<scalar_t><<<static_cast<unsigned>(B * H * col_tiles), kReduceThreads, 0, stream>>>(
        P.data, P.strides[0], P.strides[1], P.strides[2], static_cast<int>(H), rows, static_cast<int>(nsel),
        r.key_begin, r.key_end, col_tiles, row_weight, p.check_finite, flag, o);
    TS_CUDA_CHECK_LAUNCH("probs_column_kernel");
    if (p.check_finite)
      return read_flag(flag, stream, "expected finite probabilities but found NaN or Infinity");
    return Status::Ok();
  });
}

}  // namespace cuda
}  // namespace tokensieve
