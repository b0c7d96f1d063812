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
//
// Kernels by granularity (x is [R, C], rows of C contiguous values):
//   token, group   one warp per row: the group maxima (a group at a time,
//                  lanes striding over it), then the codes (elements, or
//                  bytes for INT4, whose two nibbles may sit in two groups);
//   rows           one block per (b, h, block of tokens): block maximum, codes;
//   tensor/channel a maxima pass (atomicMax per block), a pass turning the
//                  maxima into scales, and an elementwise codes pass.
// A kernel that meets NaN or Inf sets a flag; with check_finite the entry
// point reads it back (a stream synchronisation) and fails with ERR_RANGE.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "cuda/quantize.cuh"
#include "tokensieve/quantize.h"

namespace tokensieve {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride kernels cap their grid here
constexpr int64_t kChannelRowsPerBlock = 64;

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

unsigned grid_for(int64_t units, int64_t per_block) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, (units + per_block - 1) / per_block)));
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

// ---- token / group: one warp per row -------------------------------------------------

template <typename T, int kBits>
__global__ void __launch_bounds__(kThreads)
    row_groups_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean, void* data,
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
      for (int64_t c = lane; c < g.C; c += 32)
        out[c] = static_cast<int8_t>(code_of(value_at(row, c, mean, mean_row + c), row_scales[c / g.group], kQ));
    } else {
      const int64_t bytes = (g.C + 1) / 2;
      uint8_t* out = static_cast<uint8_t*>(data) + r * bytes;
      for (int64_t i = lane; i < bytes; i += 32) {
        const int64_t c = 2 * i;
        const int lo = code_of(value_at(row, c, mean, mean_row + c), row_scales[c / g.group], kQ);
        const int hi = c + 1 < g.C
                           ? code_of(value_at(row, c + 1, mean, mean_row + c + 1), row_scales[(c + 1) / g.group], kQ)
                           : 0;
        out[i] = pack_nibbles(lo, hi);
      }
    }
    __syncwarp();  // lane 0 rewrites row_scales only after every lane has read them
  }
  if (bad) atomicOr(flag, kBadValue);
}

// ---- rows: one block per (b, h, token block) --------------------------------------------

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
    rows_kernel(TokenView x, const float* __restrict__ mean, int64_t block, int64_t nblocks, BlockFilter filter,
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
  if (bad) atomicOr(flag, flag_bit);
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

// ---- tensor / channel: maxima, scales, codes -----------------------------------------------

// amax_bits[0] = max |x − mean| over everything (bit pattern of a
// non-negative float; zeroed before the launch).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    tensor_amax_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean,
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
  if (bad) atomicOr(flag, kBadValue);
  m = block_max<kThreads>(m);
  if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(m));
}

// amax_bits[c] = max over rows of |x[r, c] − mean|; a block takes
// kChannelRowsPerBlock rows, its threads stride over the channels.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    channel_amax_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean,
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
  if (bad) atomicOr(flag, kBadValue);
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
    shared_scale_codes_kernel(const T* __restrict__ x, RowGeometry g, const float* __restrict__ mean,
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

// ---- dequantize -------------------------------------------------------------------------------

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
    dequantize_kernel(const void* data, DequantGeometry q, const float* __restrict__ scales,
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
    for (int64_t k = 0; k < n; ++k) {
      const int64_t c = c0 + k;
      float v = __fmul_rn(static_cast<float>(codes[k]), scales[scale_index(q, r, c)]);
      if (mean != nullptr) v = __fadd_rn(v, mean[mean_row + c]);
      store_f32(out + r * g.C + c, v);
    }
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

// Token, group, tensor and channel quantization of a contiguous x [R, C].
template <typename T, int kBits>
Status launch_codes(const QuantizeParams& p, const RowGeometry& g, const float* mean, unsigned int* amax_bits,
                    int64_t n_amax, int* flag, cudaStream_t stream) {
  const T* x = static_cast<const T*>(p.x.data);
  float* scales = p.scales.ptr<float>();
  const Granularity gran = p.scheme.granularity;
  if (gran == Granularity::kToken || gran == Granularity::kGroup) {
    row_groups_kernel<T, kBits><<<grid_for(g.R, kWarps), kThreads, 0, stream>>>(x, g, mean, p.data.data, scales, flag);
    TS_CUDA_CHECK_LAUNCH("row_groups_kernel");
    return Status::Ok();
  }
  if (gran == Granularity::kTensor) {
    tensor_amax_kernel<T><<<grid_for(g.R * g.C, kThreads), kThreads, 0, stream>>>(x, g, mean, amax_bits, flag);
    TS_CUDA_CHECK_LAUNCH("tensor_amax_kernel");
  } else {
    const int64_t blocks = (g.R + kChannelRowsPerBlock - 1) / kChannelRowsPerBlock;
    TS_RETURN_IF_ERROR(check_grid_x(blocks, "quantize (channel maxima)"));
    channel_amax_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, g, mean, amax_bits, flag);
    TS_CUDA_CHECK_LAUNCH("channel_amax_kernel");
  }
  const float qmax = kBits == 8 ? 127.0f : 7.0f;
  scales_from_amax_kernel<<<grid_for(n_amax, kThreads), kThreads, 0, stream>>>(amax_bits, n_amax, qmax, scales);
  TS_CUDA_CHECK_LAUNCH("scales_from_amax_kernel");
  const int64_t units = g.R * (kBits == 8 ? g.C : (g.C + 1) / 2);
  shared_scale_codes_kernel<T, kBits><<<grid_for(units, kThreads), kThreads, 0, stream>>>(
      x, g, mean, scales, gran == Granularity::kChannel, p.data.data);
  TS_CUDA_CHECK_LAUNCH("shared_scale_codes_kernel");
  return Status::Ok();
}

}  // namespace

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
  const unsigned grid = static_cast<unsigned>(x.B * x.H * nblocks);
  return TS_DISPATCH_FLOAT(x.dtype, "quantize", [&] {
    if (bits == 8) {
      rows_kernel<scalar_t, 8><<<grid, kThreads, 0, stream>>>(x, mean, block, nblocks, filter, codes, scales, flag,
                                                                flag_bit);
    } else {
      rows_kernel<scalar_t, 4><<<grid, kThreads, 0, stream>>>(x, mean, block, nblocks, filter, codes, scales, flag,
                                                                flag_bit);
    }
    TS_CUDA_CHECK_LAUNCH("rows_kernel");
    return Status::Ok();
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

  // Scratch: [flag, amax bits (tensor/channel) | mean partials (smooth)].
  const int64_t n_amax = shared_scale ? (s.granularity == Granularity::kTensor ? 1 : g.C) : 0;
  const TokenView tv = p.smooth ? token_view(p.x) : TokenView{};
  ScratchLayout lay;
  const size_t o_counters = lay.add<unsigned int>(1 + n_amax);
  const size_t o_partials = lay.add<double>(p.smooth ? tv.B * tv.H * mean_chunks(tv.N) * tv.D : 0);
  Scratch scratch(p.x.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.bytes()));
  unsigned int* counters = scratch.at<unsigned int>(o_counters);
  int* flag = reinterpret_cast<int*>(counters);
  unsigned int* amax_bits = counters + 1;
  TS_CUDA_TRY(cudaMemsetAsync(counters, 0, static_cast<size_t>(1 + n_amax) * sizeof(unsigned int), stream));

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
      return s.bits == 8 ? launch_codes<scalar_t, 8>(p, g, mean, amax_bits, n_amax, flag, stream)
                         : launch_codes<scalar_t, 4>(p, g, mean, amax_bits, n_amax, flag, stream);
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
  const int64_t units = q.g.R * (s.bits == 8 ? q.g.C : (q.g.C + 1) / 2);
  return TS_DISPATCH_FLOAT(p.out.dtype, "dequantize", [&] {
    scalar_t* out = static_cast<scalar_t*>(p.out.data);
    if (s.bits == 8) {
      dequantize_kernel<scalar_t, 8><<<grid_for(units, kThreads), kThreads, 0, stream>>>(p.data.data, q, scales, mean,
                                                                                         out);
    } else {
      dequantize_kernel<scalar_t, 4><<<grid_for(units, kThreads), kThreads, 0, stream>>>(p.data.data, q, scales, mean,
                                                                                         out);
    }
    TS_CUDA_CHECK_LAUNCH("dequantize_kernel");
    return Status::Ok();
  });
}

}  // namespace cuda
}  // namespace tokensieve
