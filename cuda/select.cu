// CUDA top-k and gather.
//
// top-k: one block per row. Scores map to order-preserving uint32 keys (NaN
// lowest, -0 = +0); a 4-pass block radix select finds the k-th largest key
// T and how many of the keys equal to T to take; an ordered block scan then
// compacts the winners in index order — keys above T, and the first
// (k − #above) keys equal to T, i.e. ties go to the lower index exactly as
// the CPU's stable order does. For order 'score' the k winners are sorted by
// (key desc, index asc): in shared memory (bitonic) when k <= 2048, with
// CUB's stable segmented sort otherwise.
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_sort.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/common.cuh"
#include "tokensieve/select.h"

namespace tokensieve {
namespace cuda {
namespace {

constexpr int kTopkThreads = 512;
constexpr int kSmallSort = 2048;  // k up to this is sorted inside the top-k kernel

__device__ __forceinline__ uint32_t order_key(float x) {
  if (isnan(x)) return 0u;
  if (x == 0.0f) x = 0.0f;  // -0 and +0 tie
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Radix select of the k-th largest key of a row; returns it, and in *take_eq
// how many keys equal to it belong to the top k.
template <typename T>
__device__ uint32_t select_threshold(const T* row, int64_t N, int64_t k, int64_t* take_eq) {
  __shared__ uint32_t hist[256];
  __shared__ uint32_t prefix_s, mask_s;
  __shared__ int64_t rank_s;
  if (threadIdx.x == 0) {
    prefix_s = 0;
    mask_s = 0;
    rank_s = k;  // 1-based rank of the wanted key among keys matching the prefix
  }
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    const uint32_t prefix = prefix_s, mask = mask_s;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
      const uint32_t key = order_key(load_f32(row + i));
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t above = 0;
      int digit = 255;
      for (; digit > 0; --digit) {
        if (above + hist[digit] >= rank_s) break;
        above += hist[digit];
      }
      rank_s -= above;
      prefix_s = prefix | (static_cast<uint32_t>(digit) << shift);
      mask_s = mask | (255u << shift);
    }
    __syncthreads();
  }
  *take_eq = rank_s;
  return prefix_s;
}

template <typename T>
__global__ void __launch_bounds__(kTopkThreads)
    topk_kernel(const T* scores, int64_t stride_b, int64_t N, int64_t k, bool by_score, int32_t* out_idx,
                float* out_val, uint32_t* out_key) {
  using Scan = cub::BlockScan<int64_t, kTopkThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int64_t carry_eq, carry_sel;
  __shared__ unsigned long long sorted[kSmallSort];

  const int b = blockIdx.x;
  const T* row = scores + b * stride_b;
  int64_t take_eq = 0;
  const uint32_t threshold = select_threshold(row, N, k, &take_eq);
  if (threadIdx.x == 0) carry_eq = carry_sel = 0;
  __syncthreads();

  int32_t* idx_row = out_idx + static_cast<int64_t>(b) * k;
  uint32_t* key_row = out_key != nullptr ? out_key + static_cast<int64_t>(b) * k : nullptr;
  for (int64_t base = 0; base < N; base += kTopkThreads) {
    const int64_t i = base + threadIdx.x;
    const uint32_t key = i < N ? order_key(load_f32(row + i)) : 0u;
    const int64_t is_eq = (i < N && key == threshold) ? 1 : 0;
    int64_t eq_before = 0, eq_total = 0;
    Scan(scan_tmp).ExclusiveSum(is_eq, eq_before, eq_total);
    __syncthreads();
    const int64_t sel = (i < N && (key > threshold || (is_eq && carry_eq + eq_before < take_eq))) ? 1 : 0;
    int64_t sel_before = 0, sel_total = 0;
    Scan(scan_tmp).ExclusiveSum(sel, sel_before, sel_total);
    if (sel) {
      const int64_t pos = carry_sel + sel_before;
      if (by_score && k <= kSmallSort) {
        // (key desc, index asc) as one descending 64-bit value.
        sorted[pos] = (static_cast<unsigned long long>(key) << 32) | (0xffffffffull - static_cast<uint32_t>(i));
      } else {
        idx_row[pos] = static_cast<int32_t>(i);
        if (key_row != nullptr) key_row[pos] = key;
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      carry_eq += eq_total;
      carry_sel += sel_total;
    }
    __syncthreads();
  }

  if (by_score && k <= kSmallSort) {
    int P = 1;
    while (P < k) P <<= 1;
    for (int i = static_cast<int>(k) + threadIdx.x; i < P; i += kTopkThreads) sorted[i] = 0ull;  // sorts last
    __syncthreads();
    // Bitonic sort, descending.
    for (int size = 2; size <= P; size <<= 1) {
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        for (int i = threadIdx.x; i < P; i += kTopkThreads) {
          const int j = i ^ stride;
          if (j > i) {
            const bool desc = (i & size) == 0;
            const unsigned long long a = sorted[i], c = sorted[j];
            if (desc ? (a < c) : (a > c)) {
              sorted[i] = c;
              sorted[j] = a;
            }
          }
        }
        __syncthreads();
      }
    }
    for (int i = threadIdx.x; i < k; i += kTopkThreads)
      idx_row[i] = static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(sorted[i] & 0xffffffffull));
    __syncthreads();
  }
  if (out_val != nullptr) {
    __syncthreads();
    // Written after every index of the row is final (the large-k score
    // path fills values in a later kernel instead).
    if (!(by_score && k > kSmallSort))
      for (int64_t i = threadIdx.x; i < k; i += kTopkThreads) out_val[static_cast<int64_t>(b) * k + i] = load_f32(row + idx_row[i]);
  }
}

__global__ void segment_offsets_kernel(int64_t* offsets, int B, int64_t k) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i <= B; i += gridDim.x * blockDim.x) offsets[i] = i * k;
}

template <typename T>
__global__ void values_kernel(const T* scores, int64_t stride_b, int64_t k, int64_t total, const int32_t* idx,
                              float* out_val) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / k;
    out_val[i] = load_f32(scores + b * stride_b + idx[i]);
  }
}

// out rows are `units` elements of type U; x rows start at byte strides.
template <typename U>
__global__ void gather_kernel(const char* x, int64_t stride_b, int64_t stride_n, const int32_t* idx, int64_t K,
                              int64_t N, int64_t units, int64_t total, U* out, bool check, int* flag) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t u = i % units;
    const int64_t r = i / units;
    const int64_t b = r / K;
    const int64_t n = idx[r];
    if (n < 0 || n >= N) {
      if (check) atomicExch(flag, 1);
      out[i] = U();
      continue;
    }
    out[i] = reinterpret_cast<const U*>(x + b * stride_b + n * stride_n)[u];
  }
}

template <typename U>
Status launch_gather(const GatherParams& p, int64_t esize, int* flag, cudaStream_t stream) {
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2], K = p.indices.shape[1];
  const int64_t units = C * esize / static_cast<int64_t>(sizeof(U));
  const int64_t total = B * K * units;
  if (total == 0) return Status::Ok();
  const int blocks = static_cast<int>(std::min<int64_t>((total + 255) / 256, 65535));
  gather_kernel<U><<<blocks, 256, 0, stream>>>(static_cast<const char*>(p.x.data), p.x.strides[0] * esize,
                                              p.x.strides[1] * esize, p.indices.ptr<int32_t>(), K, N, units,
                                              total, static_cast<U*>(p.out.data), p.check_indices, flag);
  TS_CUDA_CHECK_LAUNCH("gather_kernel");
  return Status::Ok();
}

}  // namespace

Status topk(const TopkParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.scores, "scores"));
  const int64_t B = p.scores.shape[0], N = p.scores.shape[1], k = p.k;
  if (B > 2147483647 || N > 2147483647)
    return Status(Code::kUnsupported, "topk: rows of more than 2^31-1 elements or batches are not supported on CUDA");
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.scores.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const bool large_sort = p.order_by_score && k > kSmallSort;
  int32_t* out_idx = p.indices.ptr<int32_t>();
  float* out_val = static_cast<float*>(p.values.data);

  return TS_DISPATCH_FLOAT(p.scores.dtype, "topk", [&] {
    const scalar_t* scores = static_cast<const scalar_t*>(p.scores.data);
    if (!large_sort) {
      topk_kernel<scalar_t><<<static_cast<unsigned>(B), kTopkThreads, 0, stream>>>(
          scores, p.scores.strides[0], N, k, p.order_by_score, out_idx, out_val, nullptr);
      TS_CUDA_CHECK_LAUNCH("topk_kernel");
      return Status::Ok();
    }
    // Large k by score: compact in index order with keys, then a stable
    // descending segmented sort (stability keeps lower indices first on ties).
    const int64_t total = B * k;
    size_t sort_bytes = 0;
    TS_CUDA_TRY(cub::DeviceSegmentedSort::StableSortPairsDescending(
        nullptr, sort_bytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
        static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), total, static_cast<int>(B),
        static_cast<const int64_t*>(nullptr), static_cast<const int64_t*>(nullptr), stream));
    const size_t off_keys_in = 0;
    const size_t off_keys_out = off_keys_in + align256(total * sizeof(uint32_t));
    const size_t off_idx_in = off_keys_out + align256(total * sizeof(uint32_t));
    const size_t off_offsets = off_idx_in + align256(total * sizeof(int32_t));
    const size_t off_tmp = off_offsets + align256((B + 1) * sizeof(int64_t));
    Scratch scratch(p.scores.device, stream);
    TS_RETURN_IF_ERROR(scratch.allocate(off_tmp + sort_bytes));
    uint32_t* keys_in = scratch.as<uint32_t>(off_keys_in);
    uint32_t* keys_out = scratch.as<uint32_t>(off_keys_out);
    int32_t* idx_in = scratch.as<int32_t>(off_idx_in);
    int64_t* offsets = scratch.as<int64_t>(off_offsets);
    topk_kernel<scalar_t><<<static_cast<unsigned>(B), kTopkThreads, 0, stream>>>(
        scores, p.scores.strides[0], N, k, true, idx_in, nullptr, keys_in);
    TS_CUDA_CHECK_LAUNCH("topk_kernel");
    segment_offsets_kernel<<<static_cast<unsigned>((B + 256) / 256), 256, 0, stream>>>(offsets, static_cast<int>(B), k);
    TS_CUDA_CHECK_LAUNCH("segment_offsets_kernel");
    TS_CUDA_TRY(cub::DeviceSegmentedSort::StableSortPairsDescending(
        scratch.as<void>(off_tmp), sort_bytes, keys_in, keys_out, idx_in, out_idx, total, static_cast<int>(B),
        offsets, offsets + 1, stream));
    if (out_val != nullptr) {
      const int blocks = static_cast<int>(std::min<int64_t>((total + 255) / 256, 65535));
      values_kernel<scalar_t><<<blocks, 256, 0, stream>>>(scores, p.scores.strides[0], k, total, out_idx, out_val);
      TS_CUDA_CHECK_LAUNCH("values_kernel");
    }
    return Status::Ok();
  });
}

Status gather(const GatherParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const int64_t esize = static_cast<int64_t>(dtype_size(p.x.dtype));
  const int64_t row_bytes = p.x.shape[2] * esize;
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(sizeof(int)));
  int* flag = scratch.as<int>();
  TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  // The widest copy unit that divides every row's bytes, stride and address.
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p.x.data) | reinterpret_cast<uintptr_t>(p.out.data);
  const int64_t common = row_bytes | (p.x.strides[0] * esize) | (p.x.strides[1] * esize) | static_cast<int64_t>(addr & 15);
  Status s;
  if ((common & 15) == 0) s = launch_gather<uint4>(p, esize, flag, stream);
  else if ((common & 7) == 0) s = launch_gather<uint2>(p, esize, flag, stream);
  else if ((common & 3) == 0) s = launch_gather<uint32_t>(p, esize, flag, stream);
  else if ((common & 1) == 0) s = launch_gather<uint16_t>(p, esize, flag, stream);
  else s = launch_gather<uint8_t>(p, esize, flag, stream);
  TS_RETURN_IF_ERROR(s);
  if (!p.check_indices) return Status::Ok();
  int host = 0;
  TS_CUDA_TRY(cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, stream));
  TS_CUDA_TRY(cudaStreamSynchronize(stream));
  if (host != 0) return Status(Code::kRange, "expected indices in [0, N) but found one outside");
  return Status::Ok();
}

}  // namespace cuda
}  // namespace tokensieve
