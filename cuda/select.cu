// CUDA top-k and gather.
//
// top-k, one block per row (grid x = B):
//   1. Scores map to order-preserving uint32 keys: larger value, larger key;
//      NaN -> 0 (below -inf, which maps to 0x007fffff); -0 and +0 -> one key.
//   2. Radix select, 4 passes of 8 bits over the row in global memory: the
//      k-th largest key T and take_eq = k − #(keys > T), the number of keys
//      equal to T that belong to the top k.
//   3. Ordered compaction (block scans over tiles of the row, in index order):
//      a key is chosen iff key > T, or key == T and fewer than take_eq keys
//      == T precede it. Ties thus go to the lower index, exactly as the CPU's
//      stable comparator. The chosen land in index order.
//   4. order 'score': sort the k chosen by (key desc, index asc) — a bitonic
//      sort of 64-bit (key << 32 | ~index) in shared memory when
//      k <= kSortCap, otherwise one CUB stable radix sort (ascending) of
//      64-bit (row << 32 | ~key) over the index-ordered (key, index) pairs of
//      every row: rows stay apart, keys run descending within a row, and the
//      stability keeps lower indices first among equal keys. (CUB's
//      segmented sort would read segment sizes back to the host, which
//      synchronises; the radix sort runs a fixed number of passes.)
//
// gather: out[b, i, :] = x[b, indices[b, i], :] as a byte copy in the widest
// unit (16/8/4/2/1 bytes) that divides the row size, both strides and both
// base addresses. Groups of up to 32 lanes copy one row.
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "tokensieve/select.h"

namespace tokensieve {
namespace cuda {
namespace {

// ---- configuration ----------------------------------------------------------
constexpr int kTopkThreads = 512;
constexpr int kSortCap = 2048;  // order 'score' with k up to this sorts in shared memory (16 KiB)
constexpr int kGatherThreads = 256;
constexpr int kSmallThreads = 256;  // offsets / values kernels
static_assert(kTopkThreads % 32 == 0, "");
static_assert((kSortCap & (kSortCap - 1)) == 0, "bitonic sort needs a power of two");

// float_key (cuda/common.cuh), with NaN -> 0: below every number (-inf's
// key is 0x007fffff).
__device__ __forceinline__ uint32_t order_key(float x) { return isnan(x) ? 0u : float_key(x); }

struct TopkKernelParams {
  const void* scores;  // row b: scores + b·stride_b, N contiguous elements
  int64_t stride_b;
  int64_t N, k;
  bool sort_in_block;  // order 'score' with k <= kSortCap
  int32_t* idx;        // [B, k]: final indices, or index-ordered indices for the CUB sort
  float* val;          // [B, k] or null (index order: written at compaction; in-block sort: after it)
  uint32_t* keys;      // [B, k] index-ordered keys for the CUB sort, or null
};

template <typename T>
__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const TopkKernelParams p) {
  using Scan = cub::BlockScan<int, kTopkThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ uint32_t hist[256];
  __shared__ uint32_t prefix_s;  // high bits of T found so far
  __shared__ int64_t rank_s;     // rank (1-based, from the top) of T among keys matching prefix_s
  __shared__ int64_t carry_eq, carry_sel;
  __shared__ unsigned long long sorted[kSortCap];

  const int tid = threadIdx.x, lane = tid % 32;
  const int64_t b = blockIdx.x;
  const T* row = static_cast<const T*>(p.scores) + b * p.stride_b;
  const int64_t N = p.N, k = p.k;

  // ---- 2. radix select ----
  if (tid == 0) {
    prefix_s = 0u;
    rank_s = k;
  }
  uint32_t mask = 0u;  // bits of T fixed so far (same in every thread)
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = tid; i < 256; i += kTopkThreads) hist[i] = 0u;
    __syncthreads();  // hist zeroed; prefix_s/rank_s (init or previous pass) visible
    const uint32_t prefix = prefix_s;
    for (int64_t base = 0; base < N; base += kTopkThreads) {  // uniform trip count: whole warps stay converged
      const int64_t i = base + tid;
      uint32_t digit = 256u;  // 256: not counted
      if (i < N) {
        const uint32_t key = order_key(load_f32(row + i));
        if ((key & mask) == prefix) digit = (key >> shift) & 255u;
      }
      // One shared atomic per distinct digit in the warp (rows with many
      // equal scores would otherwise serialise on one bin).
      const unsigned peers = __match_any_sync(0xffffffffu, digit);
      if (digit < 256u && lane == __ffs(peers) - 1) atomicAdd(&hist[digit], static_cast<uint32_t>(__popc(peers)));
    }
    __syncthreads();  // histogram complete
    if (tid == 0) {
      int64_t rank = rank_s;
      int digit = 255;
      for (; digit > 0; --digit) {
        const int64_t c = hist[digit];
        if (c >= rank) break;
        rank -= c;
      }
      rank_s = rank;  // digit 0 when nothing above matched: the remaining rank lies there
      prefix_s = prefix | (static_cast<uint32_t>(digit) << shift);
    }
    mask |= 255u << shift;
    __syncthreads();  // thread 0 is done with hist before the next pass zeroes it
  }
  const uint32_t T_key = prefix_s;
  const int64_t take_eq = rank_s;  // in [1, k]

  // ---- 3. ordered compaction ----
  if (tid == 0) {
    carry_eq = 0;
    carry_sel = 0;
  }
  __syncthreads();
  int32_t* idx_row = p.idx + b * k;
  float* val_row = (p.val != nullptr && !p.sort_in_block) ? p.val + b * k : nullptr;
  uint32_t* key_row = p.keys != nullptr ? p.keys + b * k : nullptr;
  for (int64_t base = 0; base < N; base += kTopkThreads) {  // uniform trip count
    const int64_t i = base + tid;
    float x = 0.0f;
    uint32_t key = 0u;
    if (i < N) {
      x = load_f32(row + i);
      key = order_key(x);
    }
    const int64_t eq_seen = carry_eq, sel_seen = carry_sel;  // updated only after the barriers below
    const int is_eq = (i < N && key == T_key) ? 1 : 0;
    int eq_before = 0, eq_total = 0;
    Scan(scan_tmp).ExclusiveSum(is_eq, eq_before, eq_total);
    const int sel = (i < N && (key > T_key || (is_eq && eq_seen + eq_before < take_eq))) ? 1 : 0;
    __syncthreads();  // scan_tmp is reused
    int sel_before = 0, sel_total = 0;
    Scan(scan_tmp).ExclusiveSum(sel, sel_before, sel_total);
    if (sel) {
      const int64_t pos = sel_seen + sel_before;  // < k
      if (p.sort_in_block) {
        sorted[pos] = (static_cast<unsigned long long>(key) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
      } else {
        idx_row[pos] = static_cast<int32_t>(i);
        if (val_row != nullptr) val_row[pos] = x;
        if (key_row != nullptr) key_row[pos] = key;
      }
    }
    __syncthreads();  // everyone has read carry_*; scan_tmp is free
    if (tid == 0) {
      carry_eq = eq_seen + eq_total;
      carry_sel = sel_seen + sel_total;
    }
    __syncthreads();
    if (carry_sel >= k) break;  // uniform: all k chosen, nothing later can be
  }

  // ---- 4. in-block sort by (key desc, index asc) ----
  if (!p.sort_in_block) return;  // uniform
  int P = 1;
  while (P < k) P <<= 1;  // k <= kSortCap, so P <= kSortCap
  for (int i = static_cast<int>(k) + tid; i < P; i += kTopkThreads) sorted[i] = 0ull;  // below every real entry
  __syncthreads();
  for (int size = 2; size <= P; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = tid; i < P; i += kTopkThreads) {
        const int j = i ^ stride;
        if (j > i) {  // each pair once
          const bool descending = (i & size) == 0;
          const unsigned long long a = sorted[i], c = sorted[j];
          if (descending ? (a < c) : (a > c)) {
            sorted[i] = c;
            sorted[j] = a;
          }
        }
      }
      __syncthreads();
    }
  }
  float* vrow = p.val != nullptr ? p.val + b * k : nullptr;
  for (int i = tid; i < k; i += kTopkThreads) {
    const uint32_t index = 0xffffffffu - static_cast<uint32_t>(sorted[i] & 0xffffffffull);
    idx_row[i] = static_cast<int32_t>(index);
    if (vrow != nullptr) vrow[i] = load_f32(row + index);
  }
}

// keys[i] = (row << 32) | ~key[i] for the k chosen of every row: one
// ascending radix sort then orders rows, and within a row keys descending.
__global__ void row_keys_kernel(const uint32_t* __restrict__ key, int64_t total, int64_t k,
                                unsigned long long* __restrict__ keys) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < total) keys[i] = (static_cast<unsigned long long>(i / k) << 32) | static_cast<uint32_t>(~key[i]);
}

// values[b, i] = scores[b, idx[b, i]] (after the CUB sort).
template <typename T>
__global__ void topk_values_kernel(const T* scores, int64_t stride_b, int64_t k, int64_t total, const int32_t* idx,
                                   float* values) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / k;
    values[i] = load_f32(scores + b * stride_b + idx[i]);
  }
}

// Rows of out are `units` elements of U; groups of 2^log2_group lanes copy
// one row, rows grid-strided.
template <typename U>
__global__ void __launch_bounds__(kGatherThreads)
    gather_kernel(const char* __restrict__ x, int64_t stride_b_bytes, int64_t stride_n_bytes,
                  const int32_t* __restrict__ idx, int64_t K, int64_t N, int64_t rows, int64_t units, int log2_group,
                  U* __restrict__ out, int* flag) {
  const int64_t group_size = int64_t{1} << log2_group;
  const int64_t t = blockIdx.x * static_cast<int64_t>(kGatherThreads) + threadIdx.x;
  const int64_t lane = t & (group_size - 1);
  const int64_t groups = (static_cast<int64_t>(gridDim.x) * kGatherThreads) >> log2_group;
  for (int64_t r = t >> log2_group; r < rows; r += groups) {
    const int64_t n = idx[r];
    U* dst = out + r * units;
    if (n < 0 || n >= N) {  // never read out of bounds: write zeros
      if (flag != nullptr && lane == 0) atomicOr(flag, 1);
      for (int64_t u = lane; u < units; u += group_size) dst[u] = U{};
      continue;
    }
    const int64_t b = r / K;
    const U* src = reinterpret_cast<const U*>(x + b * stride_b_bytes + n * stride_n_bytes);
    for (int64_t u = lane; u < units; u += group_size) dst[u] = src[u];
  }
}

template <typename U>
Status launch_gather(const GatherParams& p, int64_t esize, int* flag, cudaStream_t stream) {
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2], K = p.indices.shape[1];
  const int64_t units = C * esize / static_cast<int64_t>(sizeof(U));
  const int64_t rows = B * K;
  int log2_group = 0;
  while (log2_group < 5 && (int64_t{1} << log2_group) < units) ++log2_group;  // up to a warp per row
  const int64_t rows_per_block = kGatherThreads >> log2_group;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((rows + rows_per_block - 1) / rows_per_block, 65535));
  gather_kernel<U><<<blocks, kGatherThreads, 0, stream>>>(
      static_cast<const char*>(p.x.data), p.x.strides[0] * esize, p.x.strides[1] * esize,
      p.indices.ptr<const int32_t>(), K, N, rows, units, log2_group, static_cast<U*>(p.out.data), flag);
  TS_CUDA_CHECK_LAUNCH("gather_kernel");
  return Status::Ok();
}

}  // namespace

Status topk(const TopkParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.scores, "scores"));
  const int64_t B = p.scores.shape[0], N = p.scores.shape[1], k = p.k;
  if (N > INT32_MAX)
    return Status(Code::kUnsupported, "topk: rows longer than 2^31 - 1 do not fit i32 indices");
  TS_RETURN_IF_ERROR(check_grid_x(B, "topk"));
  const bool sort_in_block = p.order_by_score && k <= kSortCap;
  const bool cub_sort = p.order_by_score && !sort_in_block;

  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.scores.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  int32_t* out_idx = p.indices.ptr<int32_t>();
  float* out_val = static_cast<float*>(p.values.data);

  return TS_DISPATCH_FLOAT(p.scores.dtype, "topk", [&] {
    const scalar_t* scores = static_cast<const scalar_t*>(p.scores.data);
    TopkKernelParams kp{};
    kp.scores = scores;
    kp.stride_b = p.scores.strides[0];
    kp.N = N;
    kp.k = k;
    kp.sort_in_block = sort_in_block;
    if (!cub_sort) {
      kp.idx = out_idx;
      kp.val = out_val;
      kp.keys = nullptr;
      topk_kernel<scalar_t><<<static_cast<unsigned>(B), kTopkThreads, 0, stream>>>(kp);
      TS_CUDA_CHECK_LAUNCH("topk_kernel");
      return Status::Ok();
    }

    // order 'score', k > kSortCap: index-ordered (key, index) pairs, then one
    // stable radix sort of (row, ~key) over all rows (file header).
    const int64_t total = B * k;
    int row_bits = 0;
    while ((int64_t{1} << row_bits) < B) ++row_bits;
    const int end_bit = 32 + row_bits;
    size_t sort_bytes = 0;
    TS_CUDA_TRY(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const unsigned long long*>(nullptr),
                                                static_cast<unsigned long long*>(nullptr),
                                                static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
                                                total, 0, end_bit, stream));
    ScratchLayout lay;
    const size_t o_key32 = lay.add<uint32_t>(total);
    const size_t o_keys_in = lay.add<unsigned long long>(total);
    const size_t o_keys_out = lay.add<unsigned long long>(total);
    const size_t o_idx_in = lay.add<int32_t>(total);
    const size_t o_tmp = lay.add<char>(static_cast<int64_t>(sort_bytes));
    Scratch scratch(p.scores.device, stream);
    TS_RETURN_IF_ERROR(scratch.allocate(lay.bytes()));
    uint32_t* key32 = scratch.at<uint32_t>(o_key32);
    unsigned long long* keys_in = scratch.at<unsigned long long>(o_keys_in);
    int32_t* idx_in = scratch.at<int32_t>(o_idx_in);

    kp.idx = idx_in;
    kp.val = nullptr;
    kp.keys = key32;
    topk_kernel<scalar_t><<<static_cast<unsigned>(B), kTopkThreads, 0, stream>>>(kp);
    TS_CUDA_CHECK_LAUNCH("topk_kernel");
    const int64_t key_blocks = (total + kSmallThreads - 1) / kSmallThreads;
    TS_RETURN_IF_ERROR(check_grid_x(key_blocks, "topk"));
    row_keys_kernel<<<static_cast<unsigned>(key_blocks), kSmallThreads, 0, stream>>>(key32, total, k, keys_in);
    TS_CUDA_CHECK_LAUNCH("row_keys_kernel");
    TS_CUDA_TRY(cub::DeviceRadixSort::SortPairs(scratch.at<void>(o_tmp), sort_bytes, keys_in,
                                                scratch.at<unsigned long long>(o_keys_out), idx_in, out_idx, total, 0,
                                                end_bit, stream));
    if (out_val != nullptr) {
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kSmallThreads - 1) / kSmallThreads, 65535));
      topk_values_kernel<scalar_t><<<blocks, kSmallThreads, 0, stream>>>(scores, p.scores.strides[0], k, total,
                                                                          out_idx, out_val);
      TS_CUDA_CHECK_LAUNCH("topk_values_kernel");
    }
    return Status::Ok();
  });
}

Status gather(const GatherParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const int64_t esize = static_cast<int64_t>(dtype_size(p.x.dtype));
  if (esize == 0) return Status(Code::kDType, "gather: unknown dtype of x");
  const int64_t row_bytes = p.x.shape[2] * esize;

  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  Scratch scratch(p.x.device, stream);
  int* flag = nullptr;
  if (p.check_indices) {
    TS_RETURN_IF_ERROR(scratch.allocate(sizeof(int)));
    flag = scratch.at<int>(0);
    TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  }

  // The widest copy unit dividing the row size, both byte strides of x and
  // both base addresses (two's complement keeps the low bits of negative
  // strides right).
  const uint64_t bits = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p.x.data)) |
                        static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p.out.data)) |
                        static_cast<uint64_t>(p.x.strides[0] * esize) | static_cast<uint64_t>(p.x.strides[1] * esize) |
                        static_cast<uint64_t>(row_bytes);
  Status s;
  if ((bits & 15u) == 0)
    s = launch_gather<uint4>(p, esize, flag, stream);
  else if ((bits & 7u) == 0)
    s = launch_gather<uint2>(p, esize, flag, stream);
  else if ((bits & 3u) == 0)
    s = launch_gather<uint32_t>(p, esize, flag, stream);
  else if ((bits & 1u) == 0)
    s = launch_gather<uint16_t>(p, esize, flag, stream);
  else
    s = launch_gather<uint8_t>(p, esize, flag, stream);
  TS_RETURN_IF_ERROR(s);

  if (!p.check_indices) return Status::Ok();
  int bad = 0;
  TS_RETURN_IF_ERROR(read_device_flag(flag, stream, &bad));
  if (bad != 0)
    return Status(Code::kRange, "expected indices in [0, " + std::to_string(p.x.shape[1]) +
                                    ") but found one outside");
  return Status::Ok();
}

}  // namespace cuda
}  // namespace tokensieve
