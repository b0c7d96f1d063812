// Token merging: bipartite soft matching (ToMe / tomesd), the scatter merge
// that applies a matching, and VisionZip/VisionDrop contextual merging.
//
// A matching is described by `assign` (i32 [B, N]): the output slot of every
// input token. Unmerging is then a gather of the merged tokens by `assign`,
// and composing a patch→token map with a matching is a gather of `assign`
// by that map, so both reuse tokensieve::cpu/cuda::gather.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {

// ToMe's bipartite_soft_matching over an explicit split: `split_a` holds the
// candidate (source) tokens, `split_b` the destinations, the same for every
// batch row (ToMe: a = even indices, b = odd; tomesd: b = one per window).
// Cosine similarity of the L2-normalised metric (a zero row counts as
// similarity 0 to everything: ToMe has no eps and would produce NaN); each a
// takes its best b (ties: lower b position); the r a-tokens with the highest
// best score are merged (ties: lower a position — stable, on both devices).
// No [Na, Nb] score matrix is ever stored.
//
// Output slots, as ToMe's merge(): [unmerged a (edge order), b (split order)];
// with protect_distill: [unm[0], b[0], unm[1:], b[1:]].
//
// Precision of the scores (the selections that follow are the same):
enum class MatchPrecision : int32_t {
  // Exact f32 (the default): a row's best score is the sequential f32 fma
  // chain over the channels (ascending, from +0) of its best column, and the
  // argmax the first column reaching it — bit-identical on the CPU and CUDA
  // back ends, so are the plans. (CUDA finds the candidates with a TF32
  // tensor-core GEMM and rescores, in that chain, every column within the
  // TF32 error bound of the row's maximum: see cuda/merge.cu.)
  kF32 = 0,
  // The L2-normalised f32 rows (computed exactly as for kF32) are rounded to
  // bf16 (nearest even); a score is the sum over channels of the products of
  // those bf16 values (exact in f32), accumulated in f32. Back ends differ
  // only in the order of the f32 additions (CUDA: tensor cores, sm_80+;
  // CPUs with AVX512_BF16: vdpbf16ps, a channel pair per lane).
  // ToMe in a bf16 model (normalise and matmul in the model dtype); valid for
  // every metric dtype.
  kBF16 = 1,
};

struct BipartiteMatchParams {
  TensorView metric;  // [B, N, C] f32/f16/bf16; stride(C) == 1; finite
  TensorView split_a;  // i32 [Na]: token indices, disjoint from split_b, Na >= 1
  TensorView split_b;  // i32 [Nb]: token indices, Nb >= 1; a ∪ b = [0, N)
  int64_t r = 0;       // 0 <= r <= Na (callers apply ToMe's cap first)
  // CLS at a[0]: its row is -inf (never a source) and the unmerged tokens are
  // sorted by token index so CLS comes back first (ToMe's class_token).
  bool protect_cls = false;
  // Distill token at b[0]: its column is -inf (nothing merges into it).
  bool protect_distill = false;
  MatchPrecision precision = MatchPrecision::kF32;
  // CUDA: read back the device-side checks (split_a ∪ split_b a partition of
  // [0, N), a finite metric) and report them. The read drains the stream, so
  // the binding sets this only when the call waits; without it a bad split
  // writes nothing (the outputs keep their contents) and a NaN/Inf metric
  // gives an unspecified plan, both silently. The CPU always checks.
  bool device_checks = true;
  TensorView assign;   // i32 [B, N] out: output slot of every token, in [0, N - r)
  TensorView unm_idx;  // i32 [B, Na - r] out: unmerged a tokens, in output order
  TensorView src_idx;  // i32 [B, r] out: merged a tokens (edge order); may be empty when r == 0
  TensorView dst_idx;  // i32 [B, r] out: the b token each src_idx merges into
  void* stream = nullptr;
};

enum class MergeMode : int32_t {
  kSum = 0,   // scatter_reduce "sum" (destination included)
  kMean = 1,  // scatter_reduce "mean" (destination included)
  kAmax = 2,  // scatter_reduce "amax"
  kWavg = 3,  // ToMe merge_wavg: Σ x·size / Σ size; sizes_out = Σ size
};

// out[b, s, :] = reduce over {i : assign[b, i] == s} of x[b, i, :]
struct MergeParams {
  TensorView x;          // [B, N, C] f32/f16/bf16; stride(C) == 1
  TensorView assign;     // i32 [B, N] contiguous, values in [0, n_out); every slot used
  int64_t n_out = 0;     // 1 <= n_out <= N
  MergeMode mode = MergeMode::kWavg;
  TensorView sizes;      // kWavg: f32 [B, N, 1] contiguous, or null data for all ones
  TensorView out;        // [B, n_out, C], dtype of x, contiguous
  TensorView sizes_out;  // kWavg: f32 [B, n_out, 1] contiguous
  // CUDA: read back the device-side check of assign (values in [0, n_out))
  // and report it; set by the binding only when the call waits (the read
  // drains the stream). Without it a bad assign leaves out unwritten. The
  // CPU always checks.
  bool device_checks = true;
  void* stream = nullptr;
};

// VisionZip/VisionDrop contextual tokens from the `remaining` tokens of each
// row: c targets at uniform stride (step = max(1, Nr / c), positions
// 0, step, ..., (c-1)·step of `remaining`), every other remaining token
// assigned to its argmax-cosine target (ties: lower target), and
// out[k] = x[target_k] + mean(x[members of k]) (empty cluster: x[target_k]).
struct ContextualMergeParams {
  TensorView x;          // [B, N, C] f32/f16/bf16; stride(C) == 1
  TensorView metric;     // [B, N, Cm] f32/f16/bf16; stride(Cm) == 1; finite
  // The remaining tokens come from exactly one of `remaining`, `kept` and
  // `keep_mask` (the other two have data null).
  TensorView remaining;  // i32 [B, Nr] contiguous: token indices in [0, N)
  // i32 [B, K] contiguous, K >= 1: the kept tokens, distinct and in [0, N)
  // (ERR_RANGE otherwise); the remaining tokens are then the other
  // Nr = N − K, ascending, listed by the back end (on CUDA by a kernel: a
  // device keptIndices needs no read-back).
  TensorView kept;
  // [B, N] contiguous, any dtype, non-zero = kept: the remaining tokens are
  // the zeros of each row, ascending, listed by the back end. Every row must
  // leave the same Nr >= c (ERR_SHAPE / ERR_RANGE otherwise). On CUDA, Nr is
  // counted by a kernel and read by the later kernels from device memory, so
  // a device mask needs no read-back; a bad mask is then reported only with
  // device_checks, and without them out is all NaN.
  TensorView keep_mask;
  int64_t c = 0;         // 1 <= c <= Nr (with keep_mask: c <= N here, c <= Nr where the mask is counted)
  TensorView out;        // [B, c, C], dtype of x, contiguous
  // CUDA: read back the device-side checks (NaN/Inf in metric, a bad
  // keptIndices or keep_mask) and report them; set by the binding only when
  // the call waits (the read drains the stream). Without it a non-finite
  // metric gives an unspecified out.
  bool device_checks = true;
  void* stream = nullptr;
};

Status validate(const BipartiteMatchParams& p);
Status validate(const MergeParams& p);
Status validate(const ContextualMergeParams& p);
// The count of remaining tokens a keep_mask leaves, against c: ERR_RANGE
// when none remains or c > nr (the CPU and the CUDA read-back report alike).
Status check_remaining_count(int64_t nr, int64_t c);

namespace cpu {
Status bipartite_match(const BipartiteMatchParams& p);
Status merge(const MergeParams& p);
Status contextual_merge(const ContextualMergeParams& p);
}  // namespace cpu

namespace cuda {
Status bipartite_match(const BipartiteMatchParams& p);
Status merge(const MergeParams& p);
Status contextual_merge(const ContextualMergeParams& p);
}  // namespace cuda

}  // namespace tokensieve
