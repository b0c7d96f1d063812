// The few-rows path of attention_scores: softmax(q·kᵀ·scale + key_bias) for
// up to kRowsPathMaxRows selected query rows (FasterVLM's CLS row over many
// frames, FastV's last row of an LLM), reduced over rows and heads.
//
// With so few rows the work is a GEMV: every byte of k is used by nsel·2
// FLOPs per element at most, so the goal is to stream k once at HBM speed.
// The two-pass tile kernels of attention.cu waste 63/64 of a 64-row tile and
// read k twice; here:
//
//   Kernel A, rows_logits_kernel — grid (b·h, key split), kWarps warps. Each
//   key is read by a group of LPK lanes (lanes_per_key, a power of two),
//   lane i of a group loading vectors i, i + LPK, ... of the key row with
//   kVecBytes-wide loads (16 bytes when the pointer, the strides and D allow
//   it). The group's partial dots are combined by a width-LPK butterfly, so
//   every lane of the group holds the dot for each selected row (the rows'
//   q values sit in registers, converted to f32 once). Each lane keeps an
//   online (max, sum) per row in base 2 (s2 = dot·scale·log2e + bias·log2e,
//   one FMA, as attention.cu), and the base-2 logits of the output keys
//   [key_begin, key_end) are written to scratch [B·H, nsel, W]. The block's
//   (m, l) per row are merged over its groups and warps in a fixed order;
//   with several splits the last split block of a (b, h) to finish (a
//   ticket) merges the splits in split order into lse2 [B·H, nsel].
//
//   Kernel B, rows_columns_kernel — grid (b, tile of kColThreads output
//   keys), one thread per key, kHeadStep heads' loads in flight: out = Σ_h Σ_rows weight · 2^(s2 − lse2), the
//   rows in selection order inside a head and heads added in order
//   h = 0..H−1 (no float atomics: results do not depend on scheduling).
//
// Traffic: k once (B·H·Nk·D·esize; with checkFinite, kernel A checks the k
// values it loads in registers and a separate scan reads only the rows no
// selected row sees), plus 8 bytes per (b, h, row, output key)
// of logits (written by A, read by B); rows_path_applies keeps the latter
// below a quarter of k's bytes. Grid shapes depend on the problem shape
// only, so results do not depend on the device.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <string>

#include "cuda/attention.cuh"
#include "cuda/common.cuh"
#include "cuda/mma.cuh"

namespace tokensieve {
namespace cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxD = 256;          // as attention.cu's kernels
constexpr int kColThreads = 128;    // kernel B: output keys per block
constexpr int64_t kTargetBlocks = 1024;  // kernel A: split keys until B·H·splits reaches this
constexpr int64_t kMinSplitKeys = 64;    // ... but never below this many keys per split
constexpr int kMinGroupBytes = 64;  // a group reads at least two whole 32-byte sectors per load

// Flag bits (as attention.cu: same meaning, same messages).
constexpr int kBadInput = 1;
constexpr int kBadBias = 2;
constexpr int kBadLogit = 4;

// Vectors of kVec elements (kVecBytes each) each lane loads per key: enough
// for D = 256 with 32 lanes; otherwise about 32 bytes (two 16-byte or four
// 8-byte vectors: fewer lanes per key means fewer shuffles, more means fewer
// registers), and at most 64 q values per lane for R rows.
constexpr int max_vectors(int vec, int vec_bytes, int R) {
  const int want = std::max(kMaxD / (32 * vec), std::min(4, 32 / vec_bytes));
  return std::min(want, 64 / (R * vec));
}

// Kernel A's blocks per SM to keep resident: one row (the CLS and last-row
// cases) needs little besides its loads, so cap its registers for 3 blocks
// (768 threads) of loads in flight; more rows may use up to 255 registers.
template <int R>
constexpr int kMinBlocks = R == 1 ? 3 : 1;

template <int kBytes> struct RawOf;
template <> struct RawOf<16> { using type = uint4; };
template <> struct RawOf<8> { using type = uint2; };
template <> struct RawOf<4> { using type = unsigned int; };
template <> struct RawOf<2> { using type = unsigned short; };

struct RowsParams : QkOperands {
  int round_mode;     // RoundMode: the operand rounding of precision 'tf32' / 'bf16'
  int lanes_per_key;  // LPK: a power of two <= 32
  int nvec;           // kVecBytes vectors per key row
  int64_t key_read_end;  // keys [0, key_read_end) are visible to some row
  int splits;
  int64_t split_keys;
  float* part_m;          // [B·H, splits, nsel] when splits > 1
  float* part_l;
  unsigned int* tickets;  // [B·H] when splits > 1, zeroed
  float* lse2;            // [B·H, nsel]
  float* logits;          // [B·H, nsel, W] base-2 logits of the output keys
  int64_t key_begin, key_end, W;
  // kernel B
  float* out;    // [B, H, W] (heads none) or [B, W]
  float weight;  // row weight (mean: 1/nsel), / H for heads mean
  bool heads_none;
  bool accumulate;
  int col_tiles;
  bool check;
  int* flag;
};

__device__ __forceinline__ int64_t visible_end(const RowsParams& p, int64_t row) {
  if (!p.causal) return p.Nk;
  const int64_t lim = row + p.causal_offset + 1;  // |causal_offset| <= 2^40 (validate)
  return lim < 0 ? 0 : (lim > p.Nk ? p.Nk : lim);
}

__device__ __forceinline__ float lse_of(float m, float l) { return m == -INFINITY ? -INFINITY : m + log2f(l); }

// Precision 'tf32' and 'bf16' round q and k before the f32 dot, as the CPU
// (core/dtype.h: f32_round_tf32, f32_round_bf16) and the tile kernels'
// staging do (to_tf32 is cvt.rna, mma.cuh); the few rows then keep those
// semantics at GEMV speed.
enum RoundMode : int { kRoundNone = 0, kRoundTF32 = 1, kRoundBF16 = 2 };
__device__ __forceinline__ float round_operand(float v, int mode) {
  if (mode == kRoundTF32) return to_tf32(v);
  if (mode == kRoundBF16) return __bfloat162float(__float2bfloat16_rn(v));
  return v;
}

template <typename T, int kVec, typename Raw>
__device__ __forceinline__ void unpack(const Raw& raw, float (&f)[kVec]) {
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec; ++i) f[i] = load_f32(e + i);
}

// ---- kernel A -----------------------------------------------------------------
// Block: (bh, split); blockIdx.x = bh·splits + split. R: rows rounded up to
// 1, 2, 4 or 8 (rows >= nsel are zeros and ignored).
template <typename T, int kVecBytes, int R>
__global__ void __launch_bounds__(kThreads, kMinBlocks<R>) rows_logits_kernel(const RowsParams p) {
  constexpr int kVec = kVecBytes / static_cast<int>(sizeof(T));
  constexpr int kMaxV = max_vectors(kVec, kVecBytes, R);
  using Raw = typename RawOf<kVecBytes>::type;
  // Key slots per group in flight per iteration; with 4+ rows the FMAs and
  // q registers grow and one slot keeps the kernel free of spills.
  constexpr int kUnroll = R <= 2 ? 2 : 1;
  __shared__ float red_m[kWarps][32][R];  // per (warp, group): at most 32 groups
  __shared__ float red_l[kWarps][32][R];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int lpk = p.lanes_per_key;
  const int gi = lane & (lpk - 1);  // lane within its key group
  const int g = lane / lpk;         // group within the warp
  const int groups = 32 / lpk;
  const int split = static_cast<int>(blockIdx.x % static_cast<unsigned>(p.splits));
  const int64_t bh = blockIdx.x / static_cast<unsigned>(p.splits);
  const int64_t b = bh / p.H, h = bh % p.H;

  // The selected rows' q values this lane multiplies, as f32 (scalar loads:
  // q is tiny next to k and may have any alignment).
  float qv[R][kMaxV][kVec];
  int64_t row_end[R];
  const T* q = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const bool live = r < p.nsel;
    const int64_t row = live ? p.rows(r) : 0;
    row_end[r] = live ? visible_end(p, row) : 0;
#pragma unroll
    for (int t = 0; t < kMaxV; ++t) {
      const int v = gi + lpk * t;
#pragma unroll
      for (int i = 0; i < kVec; ++i)
        qv[r][t][i] = (live && v < p.nvec) ? round_operand(load_f32(q + row * p.q_sn + v * kVec + i), p.round_mode) : 0.0f;
    }
  }

  const T* kb = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh;
  const float* bias_b = p.bias != nullptr ? p.bias + b * p.bias_sb : nullptr;
  float* logits_bh = p.logits + bh * p.nsel * p.W;
  const int64_t key_lo = static_cast<int64_t>(split) * p.split_keys;
  const int64_t key_hi = min(p.key_read_end, key_lo + p.split_keys);

  float m[R], l[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  bool bad = false;     // a logit overflowed
  bool bad_in = false;  // a k value this block loaded is NaN/Inf (checked in registers: k is read once)

  // Warp-uniform trip count: every lane reaches the butterflies.
  const int64_t chunk = static_cast<int64_t>(groups) * kUnroll;  // keys per warp iteration
  for (int64_t base = key_lo + warp * chunk; base < key_hi; base += kWarps * chunk) {
    // Issue every load of the iteration before using any (memory-level parallelism).
    Raw raw[kUnroll][kMaxV];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t key = base + u * groups + g;
      const T* krow = kb + key * p.k_sn;
#pragma unroll
      for (int t = 0; t < kMaxV; ++t) {
        const int v = gi + lpk * t;
        if (key < key_hi && v < p.nvec) raw[u][t] = __ldg(reinterpret_cast<const Raw*>(krow + v * kVec));
        else raw[u][t] = Raw{};
      }
    }
    float s[kUnroll][R];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float acc[R];
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] = 0.0f;
#pragma unroll
      for (int t = 0; t < kMaxV; ++t) {
        float kf[kVec];
        unpack<T, kVec>(raw[u][t], kf);
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          bad_in |= !isfinite(kf[i]);  // unloaded slots hold zeros
          const float kr = round_operand(kf[i], p.round_mode);
#pragma unroll
          for (int r = 0; r < R; ++r) acc[r] = fmaf(qv[r][t][i], kr, acc[r]);
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r], lpk);  // every lane of the group: the whole dot
      const int64_t key = base + u * groups + g;
      const bool in = key < key_hi;
      const float bias2 = (bias_b != nullptr && in) ? bias_b[key] * kLog2e : 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const bool seen = in && key < row_end[r];  // row_end = 0 for padding rows
        if (seen && p.check && !isfinite(acc[r] * p.scale_log2)) bad = true;
        s[u][r] = seen ? __fmaf_rn(acc[r], p.scale_log2, bias2) : -INFINITY;
        // One lane of the group per row stores the logit (rows spread over lanes).
        if (r < p.nsel && gi == (r & (lpk - 1)) && in && key >= p.key_begin && key < p.key_end)
          logits_bh[r * p.W + (key - p.key_begin)] = s[u][r];
      }
    }
    // Online softmax, one rescale per iteration.
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float tmax = s[0][r];
#pragma unroll
      for (int u = 1; u < kUnroll; ++u) tmax = fmaxf(tmax, s[u][r]);
      const float m_new = fmaxf(m[r], tmax);
      if (m_new != -INFINITY) {
        float part = 0.0f;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) part += exp2f(s[u][r] - m_new);  // masked: exp2f(-inf) = 0
        l[r] = l[r] * exp2f(m[r] - m_new) + part;  // m[r] = -inf: l[r] = 0 · 0
        m[r] = m_new;
      }
    }
  }
  if (bad) atomicOr(p.flag, kBadLogit);
  if (bad_in && p.check) atomicOr(p.flag, kBadInput);

  // Merge the groups and warps in a fixed order (all lanes of a group agree).
  if (gi == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      red_m[warp][g][r] = m[r];
      red_l[warp][g][r] = l[r];
    }
  }
  __syncthreads();
  float M = -INFINITY, L = 0.0f;
  if (tid < p.nsel) {
    const int r = tid;
    for (int w = 0; w < kWarps; ++w)
      for (int gg = 0; gg < groups; ++gg) M = fmaxf(M, red_m[w][gg][r]);
    if (M != -INFINITY) {
      for (int w = 0; w < kWarps; ++w)
        for (int gg = 0; gg < groups; ++gg) {
          const float mg = red_m[w][gg][r];
          if (mg != -INFINITY) L += red_l[w][gg][r] * exp2f(mg - M);
        }
    }
  }
  if (p.splits == 1) {  // block-uniform
    if (tid < p.nsel) p.lse2[bh * p.nsel + tid] = lse_of(M, L);
    return;
  }
  const int64_t part = (bh * p.splits + split) * p.nsel;
  if (tid < p.nsel) {
    p.part_m[part + tid] = M;
    p.part_l[part + tid] = L;
  }
  if (!last_block_arrives(&p.tickets[bh], static_cast<unsigned int>(p.splits))) return;
  if (tid < p.nsel) {
    const int64_t base = bh * p.splits * p.nsel + tid;
    float MM = -INFINITY;
    for (int sp = 0; sp < p.splits; ++sp) MM = fmaxf(MM, __ldcg(&p.part_m[base + static_cast<int64_t>(sp) * p.nsel]));
    float LL = 0.0f;
    if (MM != -INFINITY) {
      for (int sp = 0; sp < p.splits; ++sp) {
        const float ms = __ldcg(&p.part_m[base + static_cast<int64_t>(sp) * p.nsel]);
        if (ms != -INFINITY) LL += __ldcg(&p.part_l[base + static_cast<int64_t>(sp) * p.nsel]) * exp2f(ms - MM);
      }
    }
    p.lse2[bh * p.nsel + tid] = lse_of(MM, LL);
  }
}

// ---- kernel B -----------------------------------------------------------------
// Block: (b, column tile); one thread per output key. No barriers: threads
// past W simply return. The logits and lse of kHeadStep heads × R rows are
// independent loads (L2-resident: kernel A just wrote them), issued together
// rather than one round trip per head; the sums still run rows in order
// inside a head and heads in order h = 0..H−1.
constexpr int kHeadStep = 4;

template <int R>
__global__ void __launch_bounds__(kColThreads) rows_columns_kernel(const RowsParams p) {
  const int ct = static_cast<int>(blockIdx.x % static_cast<unsigned>(p.col_tiles));
  const int64_t b = blockIdx.x / static_cast<unsigned>(p.col_tiles);
  const int64_t j = static_cast<int64_t>(ct) * kColThreads + threadIdx.x;  // relative to key_begin
  if (j >= p.W) return;
  const int64_t key = p.key_begin + j;
  unsigned sees = 0;  // bit r: row r is selected and sees this key
#pragma unroll
  for (int r = 0; r < R; ++r)
    if (r < p.nsel && key < visible_end(p, p.rows(r))) sees |= 1u << r;
  float total = 0.0f;
  for (int h0 = 0; h0 < p.H; h0 += kHeadStep) {
    float head[kHeadStep];
#pragma unroll
    for (int hh = 0; hh < kHeadStep; ++hh) {
      const int64_t bh = b * p.H + h0 + hh;
      head[hh] = 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (h0 + hh < p.H && ((sees >> r) & 1u)) {
          const float lse = __ldg(&p.lse2[bh * p.nsel + r]);
          const float s = __ldg(&p.logits[(bh * p.nsel + r) * p.W + j]);
          // A row whose every key is masked (lse -inf) adds nothing, as on the CPU.
          if (lse != -INFINITY) head[hh] += exp2f(s - lse);
        }
      }
    }
#pragma unroll
    for (int hh = 0; hh < kHeadStep; ++hh) {
      if (h0 + hh >= p.H) break;
      if (p.heads_none) {
        float* o = p.out + (b * p.H + h0 + hh) * p.W + j;
        *o = (p.accumulate ? *o : 0.0f) + p.weight * head[hh];
      } else {
        total += head[hh];
      }
    }
  }
  if (!p.heads_none) {
    float* o = p.out + b * p.W + j;
    *o = (p.accumulate ? *o : 0.0f) + p.weight * total;
  }
}

// ---- host -----------------------------------------------------------------------

std::atomic<uint64_t> g_calls{0};

int rows_bucket(int64_t nsel) { return nsel <= 1 ? 1 : nsel <= 2 ? 2 : nsel <= 4 ? 4 : 8; }

// The widest load (16, 8 bytes, or one element) that every key row allows:
// base pointer, the strides of dims that have more than one index, and the
// row length D·esize all multiples of it.
int load_bytes(const TensorView& k) {
  const int64_t es = static_cast<int64_t>(dtype_size(k.dtype));
  for (int vb : {16, 8}) {
    bool ok = reinterpret_cast<uintptr_t>(k.data) % vb == 0 && (k.shape[3] * es) % vb == 0;
    for (int d = 0; d < 3; ++d)
      if (k.shape[d] > 1 && (k.strides[d] * es) % vb != 0) ok = false;
    if (ok) return vb;
  }
  return static_cast<int>(es);
}

int64_t row_visible_end(const AttentionScoresParams& p, int32_t row) {
  const int64_t Nk = p.k.shape[2];
  if (!p.causal) return Nk;
  return std::max<int64_t>(0, std::min<int64_t>(Nk, static_cast<int64_t>(row) + p.causal_offset + 1));
}

template <int R>
Status launch_columns_r(const RowsParams& kp, unsigned blocks, cudaStream_t stream) {
  rows_columns_kernel<R><<<blocks, kColThreads, 0, stream>>>(kp);
  TS_CUDA_CHECK_LAUNCH("rows_columns_kernel");
  return Status::Ok();
}

Status launch_columns(const RowsParams& kp, int R, unsigned blocks, cudaStream_t stream) {
  switch (R) {
    case 1: return launch_columns_r<1>(kp, blocks, stream);
    case 2: return launch_columns_r<2>(kp, blocks, stream);
    case 4: return launch_columns_r<4>(kp, blocks, stream);
    default: return launch_columns_r<8>(kp, blocks, stream);
  }
}

template <typename T, int kVecBytes, int R>
Status launch_logits(const RowsParams& kp, unsigned blocks, cudaStream_t stream) {
  rows_logits_kernel<T, kVecBytes, R><<<blocks, kThreads, 0, stream>>>(kp);
  TS_CUDA_CHECK_LAUNCH("rows_logits_kernel");
  return Status::Ok();
}

template <typename T, int kVecBytes>
Status launch_logits_rows(const RowsParams& kp, int R, unsigned blocks, cudaStream_t stream) {
  switch (R) {
    case 1: return launch_logits<T, kVecBytes, 1>(kp, blocks, stream);
    case 2: return launch_logits<T, kVecBytes, 2>(kp, blocks, stream);
    case 4: return launch_logits<T, kVecBytes, 4>(kp, blocks, stream);
    default: return launch_logits<T, kVecBytes, 8>(kp, blocks, stream);
  }
}

template <typename T>
Status launch_logits_any(const RowsParams& kp, int vb, int R, unsigned blocks, cudaStream_t stream) {
  if (vb == 16) return launch_logits_rows<T, 16>(kp, R, blocks, stream);
  if (vb == 8) return launch_logits_rows<T, 8>(kp, R, blocks, stream);
  return launch_logits_rows<T, static_cast<int>(sizeof(T))>(kp, R, blocks, stream);
}

}  // namespace

bool rows_path_supports(const AttentionScoresParams& p) {
  return p.precision != ScorePrecision::kInt8 && p.q.ndim == 4 && p.q.shape[3] >= 1 &&
         p.q.shape[3] <= kMaxD && p.reduce.num_query_rows >= 1 &&
         p.reduce.num_query_rows <= kRowsPathMaxRows &&
         (p.q.dtype == DType::kF32 || p.q.dtype == DType::kF16 || p.q.dtype == DType::kBF16);
}

bool rows_path_applies(const AttentionScoresParams& p) {
  if (!rows_path_supports(p)) return false;
  // Logit scratch (4 bytes written + 4 read per row and output key) at most
  // a quarter of k's bytes; a single row always qualifies.
  const int64_t nsel = p.reduce.num_query_rows;
  if (nsel == 1) return true;
  const int64_t W = p.reduce.key_end - p.reduce.key_begin;
  const int64_t k_row_bytes = p.q.shape[3] * static_cast<int64_t>(dtype_size(p.q.dtype));
  return 8 * nsel * W * 4 <= p.k.shape[2] * k_row_bytes;
}

uint64_t rows_path_calls() { return g_calls.load(); }

int rows_path_load_bytes(const AttentionScoresParams& p) { return load_bytes(p.k); }

Status attention_scores_rows(const AttentionScoresParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.q, "q"));
  if (!rows_path_supports(p))
    return Status(Code::kUnsupported, "attentionScores: the few-rows CUDA path takes precision native, tf32 or bf16, D <= " +
                                          std::to_string(kMaxD) + " and 1.." + std::to_string(kRowsPathMaxRows) +
                                          " query rows");
  const int64_t B = p.q.shape[0], H = p.q.shape[1], D = p.q.shape[3];
  const int64_t Nk = p.k.shape[2];
  const ScoreReduction& r = p.reduce;
  const int64_t nsel = r.num_query_rows;
  const int64_t W = r.key_end - r.key_begin;
  if (H > INT_MAX) return Status(Code::kUnsupported, "attentionScores: too many heads for the CUDA kernels");
  const int64_t BH = B * H;

  // Keys any selected row sees; nothing past them is read.
  int64_t key_read_end = 0;
  for (int64_t i = 0; i < nsel; ++i) key_read_end = std::max(key_read_end, row_visible_end(p, r.query_rows[i]));

  // Grid shapes (functions of the problem shape only).
  int64_t splits = 1;
  if (BH < kTargetBlocks && key_read_end > 0)
    splits = std::max<int64_t>(1, std::min((kTargetBlocks + BH - 1) / BH, (key_read_end + kMinSplitKeys - 1) / kMinSplitKeys));
  const int64_t split_keys = key_read_end > 0 ? (key_read_end + splits - 1) / splits : 1;
  if (key_read_end > 0) splits = (key_read_end + split_keys - 1) / split_keys;  // drop empty splits
  const int64_t col_tiles = (W + kColThreads - 1) / kColThreads;
  TS_RETURN_IF_ERROR(check_grid_x(BH * splits, "attentionScores"));
  TS_RETURN_IF_ERROR(check_grid_x(B * col_tiles, "attentionScores"));

  // Loads and lanes per key.
  const int vb = load_bytes(p.k);
  const int esize = static_cast<int>(dtype_size(p.k.dtype));
  const int vec = vb / esize;
  const int R = rows_bucket(nsel);
  const int nvec = static_cast<int>(D / vec);  // load_bytes guarantees D % vec == 0
  const int maxv = max_vectors(vec, vb, R);
  auto pow2_at_least = [](int x) { int v = 1; while (v < x) v *= 2; return v; };
  int lpk = pow2_at_least((nvec + maxv - 1) / maxv);
  lpk = std::max(lpk, std::min(pow2_at_least(nvec), std::max(1, kMinGroupBytes / vb)));
  lpk = std::min(lpk, 32);  // max_vectors makes 32 lanes enough for D <= 256

  const bool list_rows = !is_row_range(r);
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.q.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);

  // Scratch: [rows | lse2 | part_m | part_l | logits | flag, split tickets].
  ScratchLayout lay;
  const size_t o_rows = lay.add<int32_t>(list_rows ? nsel : 0);
  const size_t o_lse = lay.add<float>(BH * nsel);
  const int64_t nparts = splits > 1 ? BH * splits * nsel : 0;
  const size_t o_pm = lay.add<float>(nparts);
  const size_t o_pl = lay.add<float>(nparts);
  const size_t o_logits = lay.add<float>(BH * nsel * W);
  const int64_t n_counters = 1 + (splits > 1 ? BH : 0);
  const size_t o_counters = lay.add<unsigned int>(n_counters);
  Scratch scratch(p.q.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.bytes()));
  unsigned int* counters = scratch.at<unsigned int>(o_counters);
  TS_CUDA_TRY(cudaMemsetAsync(counters, 0, static_cast<size_t>(n_counters) * sizeof(unsigned int), stream));

  RowsParams kp{};
  kp.round_mode = p.precision == ScorePrecision::kTF32   ? kRoundTF32
                  : p.precision == ScorePrecision::kBF16 ? kRoundBF16
                                                         : kRoundNone;
  RowMap rows;
  TS_RETURN_IF_ERROR(upload_rows(r, scratch.at<int32_t>(o_rows), stream, &rows));
  fill_qk_operands(p, rows, &kp);
  kp.lanes_per_key = lpk;
  kp.nvec = nvec;
  kp.key_read_end = key_read_end;
  kp.splits = static_cast<int>(splits);
  kp.split_keys = split_keys;
  kp.part_m = scratch.at<float>(o_pm);
  kp.part_l = scratch.at<float>(o_pl);
  kp.tickets = counters + 1;
  kp.lse2 = scratch.at<float>(o_lse);
  kp.logits = scratch.at<float>(o_logits);
  kp.key_begin = r.key_begin;
  kp.key_end = r.key_end;
  kp.W = W;
  kp.out = p.out.ptr<float>();
  // Weights as the CPU back end applies them: w = 1/rows (mean) or 1; heads mean: w / H.
  const float w = r.query_reduce == QueryReduce::kMean ? 1.0f / static_cast<float>(nsel) : 1.0f;
  kp.weight = r.head_reduce == HeadReduce::kMean ? w / static_cast<float>(H) : w;
  kp.heads_none = r.head_reduce == HeadReduce::kNone;
  kp.accumulate = r.accumulate;
  kp.col_tiles = static_cast<int>(col_tiles);
  kp.check = p.check_finite;
  kp.flag = reinterpret_cast<int*>(counters);

  g_calls.fetch_add(1);
  const unsigned logits_blocks = static_cast<unsigned>(BH * splits);
  const unsigned column_blocks = static_cast<unsigned>(B * col_tiles);
  return TS_DISPATCH_FLOAT(p.q.dtype, "attentionScores", [&] {
    if (p.check_finite) {
      TS_RETURN_IF_ERROR(launch_nonfinite<scalar_t>(static_cast<const scalar_t*>(p.q.data), B, H, nsel, kp.q_sb,
                                                    kp.q_sh, kp.q_sn, kp.rows, D, false, kBadInput, kp.flag, stream));
      // k rows [0, key_read_end) are checked by the logits kernel as it loads
      // them (one pass over k); only the rows no selected row sees are scanned.
      TS_RETURN_IF_ERROR(launch_nonfinite<scalar_t>(static_cast<const scalar_t*>(p.k.data), B, H, Nk - key_read_end,
                                                    kp.k_sb, kp.k_sh, kp.k_sn, RowMap{nullptr, key_read_end}, D,
                                                    false, kBadInput, kp.flag, stream));
      if (p.has_key_bias)
        TS_RETURN_IF_ERROR(launch_nonfinite<float>(kp.bias, B, 1, 1, kp.bias_sb, 0, 0, RowMap{nullptr, 0}, Nk, true,
                                                   kBadBias, kp.flag, stream));
    }
    TS_RETURN_IF_ERROR(launch_logits_any<scalar_t>(kp, vb, R, logits_blocks, stream));
    TS_RETURN_IF_ERROR(launch_columns(kp, R, column_blocks, stream));
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

}  // namespace cuda
}  // namespace tokensieve
