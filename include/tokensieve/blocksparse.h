// Block-sparse (optionally reordered) attention, after PAROAttention,
// SpargeAttn and FlexAttention: a flash-style attention that computes only
// the (q-block, kv-block) tiles a block mask keeps, plus the per-head token
// permutation (PARO's axis reorderings), the exact per-block attention mass
// that offline masks are calibrated from, and the mean-pooled blocks that
// online predictors (SpargeAttn) work on.
//
// The mask follows FlexAttention's BlockMask: per (batch, head, q-block) a
// count and the first `count` entries of a sorted, padded list of kv-block
// indices, optionally a second ("full") list. Batch and head dimensions of
// the mask may be 1 (broadcast). No mask_mod exists here, so a full block and
// a partial block are computed alike (the union of both lists, whole blocks).
//
// Semantics: out[i] = Σ_{j kept} softmax_j(s_ij) v_j, the softmax
// renormalised over the kept keys only; s_ij = (q_i·k_j)·scale. A row that
// keeps no key gets out = 0 and lse = −inf. Keys j >= Nk in a tail block
// never count.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {

// What the products run in. kNative: the inputs' own type (f32 inputs in
// f32; f16/bf16 inputs with f32 accumulation). kF16 / kBF16: q, k, v and the
// probabilities P are rounded to that type before their products (f32 inputs
// are converted on load), accumulation in f32, as FlashAttention does.
// kInt8: SageAttention-style QKᵀ on INT8 (below), P·V in f16.
enum class BlockSparsePrecision : int32_t { kNative = 0, kF16 = 1, kBF16 = 2, kInt8 = 3 };

// kInt8 quantizes in the order the kernel attends (after the permutation):
// q in blocks of kBlockSparseQuantBlock consecutive rows per (b, head), k
// minus its mean over the Nk keys (per b, kv head, channel; K smoothing,
// which leaves every softmax row unchanged) in blocks of
// kBlockSparseQuantBlock keys; symmetric scales amax / 127, codes
// round-half-away(x / scale) clamped to ±127, the quantize family's
// 'block' granularity. s_ij = (Σ_d q8·k8) · sq · sk · scale.
constexpr int64_t kBlockSparseQuantBlock = 64;

struct BlockMaskView {
  bool dense = false;      // every block of every row (the lists are unused)
  int64_t block_q = 64;    // query tokens per q-block
  int64_t block_k = 64;    // key tokens per kv-block
  TensorView num_blocks;   // i32 [Bm, Hm, nQ], Bm ∈ {1, B}, Hm ∈ {1, Hq}
  TensorView indices;      // i32 [Bm, Hm, nQ, L]: first num_blocks sorted ascending
  TensorView full_num_blocks;  // optional (data null), same shapes as above
  TensorView full_indices;     // optional
};

struct BlockSparseAttentionParams {
  TensorView q;  // logical [B, Hq, N, D]; f32/f16/bf16; stride(D) == 1
  TensorView k;  // logical [B, Hkv, Nk, D]; q's dtype; Hq a multiple of Hkv (GQA: head h reads kv head h / (Hq/Hkv))
  TensorView v;  // logical [B, Hkv, Nk, D]
  BlockMaskView mask;
  // Optional i32 [Hq, N] (needs Nk == N): the kernel attends in permuted
  // space, where position p of head h is original token perm[h, p] (for q,
  // k and v alike); the mask indexes permuted positions; out and lse are
  // written in original token order. Must be a permutation of 0..N-1 per
  // head (checked on the host; on a device the kernel skips out-of-range
  // entries instead of reading outside the tensors).
  TensorView perm;
  float scale = 1.0f;  // usually 1/sqrt(D)
  BlockSparsePrecision precision = BlockSparsePrecision::kNative;
  bool check_finite = true;  // reject NaN/Inf in q, k, v with kRange
  TensorView out;  // logical [B, Hq, N, D], q's dtype
  TensorView lse;  // optional f32 [B, Hq, N]: natural-log log-sum-exp of the kept s_ij
  void* stream = nullptr;
};

// Σ over query rows i of q-block I of Σ_{j in kv-block J} softmax_j(s_ij),
// the softmax over ALL Nk keys (exact, two passes, no N×N in memory).
struct BlockAttentionMassParams {
  TensorView q;  // logical [B, H, N, D]
  TensorView k;  // logical [B, Hkv, Nk, D]
  int64_t block_q = 64;
  int64_t block_k = 64;
  float scale = 1.0f;
  // Optional sorted, distinct query rows (host memory) to sum over; null: all.
  const int32_t* query_rows = nullptr;
  int64_t num_query_rows = 0;
  bool check_finite = true;
  TensorView out;  // f32 [B, H, ceil(N/block_q), ceil(Nk/block_k)]
  void* stream = nullptr;
};

// Mean-pooled blocks of x, and each block's mean pairwise cosine similarity
// (diagonal included: ‖Σ x̂_i‖² / n², x̂ = x/‖x‖, a zero row counting as 0),
// SpargeAttn's block statistics.
struct BlockPoolParams {
  TensorView x;  // logical [B, H, N, D]
  int64_t block = 64;
  TensorView mean;      // f32 [B, H, ceil(N/block), D]
  TensorView self_sim;  // f32 [B, H, ceil(N/block)]
  void* stream = nullptr;
};

// out[b, h, p] = x[b, h, perm[h, p]] (inverse: out[b, h, perm[h, p]] = x[b, h, p]).
struct ApplyReorderParams {
  TensorView x;     // logical [B, H, N, D], any dtype; stride(D) == 1
  TensorView perm;  // i32 [H, N], a permutation per head (checked on the host)
  bool inverse = false;
  TensorView out;   // logical [B, H, N, D], x's dtype
  void* stream = nullptr;
};

// Checks shared by both back ends: shapes, dtypes, devices, block sizes,
// and on the host the mask lists and permutations themselves.
Status validate(const BlockSparseAttentionParams& p);
Status validate(const BlockAttentionMassParams& p);
Status validate(const BlockPoolParams& p);
Status validate(const ApplyReorderParams& p);

namespace cpu {
Status block_sparse_attention(const BlockSparseAttentionParams& p);
Status block_attention_mass(const BlockAttentionMassParams& p);
Status block_pool(const BlockPoolParams& p);
Status apply_reorder(const ApplyReorderParams& p);
}  // namespace cpu

namespace cuda {
// Tensor cores (mma.sync): head dims 64, 80, 96, 128; mask block sizes that
// are multiples of 64; f16/bf16 inputs (f32 inputs with precision kF16 or
// kBF16) and kInt8 (m16n8k32 after a quantize pre-pass). Anything else is
// kUnsupported, never a fallback. check_finite scans q, k, v in one extra
// pass and reads a flag back (a stream synchronisation).
Status block_sparse_attention(const BlockSparseAttentionParams& p);
Status block_attention_mass(const BlockAttentionMassParams& p);
Status block_pool(const BlockPoolParams& p);
Status apply_reorder(const ApplyReorderParams& p);
}  // namespace cuda

}  // namespace tokensieve
