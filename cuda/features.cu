// Feature preparation of the CUDA diversity and coverage families
// (cuda/features.cuh).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "cuda/features.cuh"

namespace tokensieve {
namespace cuda {
namespace {

struct PrepParams {
  const void* x;  // [B, N, C], stride(C) == 1
  int64_t stride_b, stride_n;
  int64_t B, N, C;
  const uint8_t* exclude;  // u8 [B, N] or null: excluded tokens are skipped (not even checked)
  bool normalise;          // scale rows to unit norm
  double eps;              // > 0: divide by max(norm, eps) (MMTok's F.normalize); 0: zero rows stay zero
  float* rows;             // [B, N, C] f32 out
  float* raw_norm;         // [B, N] or null: the norm of the raw row
  float* sq;               // [B, N] or null: the stored row's own dot chain (l2)
  DeviceStatus* st;
};

// One warp per token. The lanes load 32 channels at a time (coalesced) and
// every lane then adds them in channel order (shuffles), so the float64 sum
// runs in the CPU's order; its products are exact in float64, so an FMA
// could not change it either.
template <typename T>
__global__ void __launch_bounds__(kPrepWarps * 32) prep_kernel(const PrepParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t t = blockIdx.x * static_cast<int64_t>(kPrepWarps) + threadIdx.x / 32;  // token b·N + n
  if (t >= p.B * p.N) return;  // the whole warp leaves together
  if (p.exclude != nullptr && p.exclude[t] != 0) return;
  const int64_t b = t / p.N, n = t % p.N, C = p.C;
  const T* row = static_cast<const T*>(p.x) + b * p.stride_b + n * p.stride_n;
  double ss = 0.0;
  bool finite = true;
  for (int64_t c0 = 0; c0 < C; c0 += 32) {
    const float v = c0 + lane < C ? load_f32(row + c0 + lane) : 0.0f;
    finite = finite && isfinite(v);
    const int cn = static_cast<int>(C - c0 < 32 ? C - c0 : 32);
    for (int i = 0; i < cn; ++i) {
      const double vi = __shfl_sync(kFullMask, v, i);
      ss = __dadd_rn(ss, __dmul_rn(vi, vi));
    }
  }
  if (__ballot_sync(kFullMask, !finite) != 0) {
    if (lane == 0) {
      atomicOr(&p.st->flags, kBadValue);
      atomicMin(&p.st->bad_token, static_cast<int>(t));
    }
    return;
  }
  const double norm = sqrt(ss);
  float inv = 1.0f;
  if (p.normalise) {
    if (p.eps > 0)
      inv = static_cast<float>(1.0 / (norm > p.eps ? norm : p.eps));
    else
      inv = ss > 0 ? static_cast<float>(1.0 / norm) : 0.0f;
  }
  float* dst = p.rows + t * C;
  float self = 0.0f;
  for (int64_t c0 = 0; c0 < C; c0 += 32) {
    float v = c0 + lane < C ? load_f32(row + c0 + lane) : 0.0f;
    if (p.normalise) v = __fmul_rn(v, inv);
    if (c0 + lane < C) dst[c0 + lane] = v;
    if (p.sq != nullptr) {
      const int cn = static_cast<int>(C - c0 < 32 ? C - c0 : 32);
      for (int i = 0; i < cn; ++i) {
        const float vi = __shfl_sync(kFullMask, v, i);
        self = fmaf(vi, vi, self);
      }
    }
  }
  if (lane == 0) {
    if (p.raw_norm != nullptr) p.raw_norm[t] = static_cast<float>(norm);
    if (p.sq != nullptr) p.sq[t] = self;
  }
}

}  // namespace

Status launch_prep(const TensorView& x, const uint8_t* exclude, bool normalise, double eps, float* rows,
                   float* raw_norm, float* sq, DeviceStatus* st, cudaStream_t stream) {
  PrepParams pp;
  pp.x = x.data;
  pp.stride_b = x.strides[0];
  pp.stride_n = x.strides[1];
  pp.B = x.shape[0];
  pp.N = x.shape[1];
  pp.C = x.shape[2];
  pp.exclude = exclude;
  pp.normalise = normalise;
  pp.eps = eps;
  pp.rows = rows;
  pp.raw_norm = raw_norm;
  pp.sq = sq;
  pp.st = st;
  // The status record names a bad token as an int below its 0x7f7f7f7f "none".
  if (pp.B * pp.N >= 0x7f7f7f7f)
    return Status(Code::kUnsupported, "the CUDA diversity kernels index at most 2139062142 tokens per call, got " +
                                          std::to_string(pp.B * pp.N));
  const int64_t blocks = blocks_for(pp.B * pp.N, kPrepWarps);
  TS_RETURN_IF_ERROR(check_grid_x(blocks, "diversity prep"));
  return TS_DISPATCH_FLOAT(x.dtype, "diversity prep", [&] {
    prep_kernel<scalar_t><<<static_cast<unsigned>(blocks), kPrepWarps * 32, 0, stream>>>(pp);
    TS_CUDA_CHECK_LAUNCH("prep_kernel");
    return Status::Ok();
  });
}

}  // namespace cuda
}  // namespace tokensieve
