// CUDA block-sparse attention (flash-style, tensor cores), block attention
// mass, block pooling and per-head token reordering; the parameter checks are
// core/blocksparse.cc's.
//
// block_sparse_attention: one CTA of 4 warps owns 64 query rows (16 per
// warp) of one (b, head); it walks the kept kv blocks of its q-block in
// 64-key tiles (a skipped block is never loaded), each K and V tile staged
// row-major in shared memory (cp.async, overlapped with the MMAs of the
// previous stage), S = Q·Kᵀ and O += P·V on mma.sync m16n8k16 (INT8:
// m16n8k32) with f32 accumulators and ldmatrix fragments, and an online
// softmax in the exp2 domain with the scale folded into one multiply
// (FlashAttention-2's loop). Q stays in registers as A fragments for the
// whole row block; P goes from the S accumulators to A fragments without
// touching shared memory (the C and A fragment layouts line up). With a
// permutation the row loads and the output stores are indirect, so
// reordered attention costs no extra pass.
//
// Not yet measured on a GPU. What limits it by design: 64-row CTAs (K/V
// shared-memory traffic per FLOP twice FlashAttention-2's 128), mma.sync
// rather than Hopper's wgmma/TMA (FlashAttention-3 reaches ~75% of H100's
// bf16 peak with them, FlashAttention-2-style kernels ~35–45%).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"
#include "cuda/flash.cuh"
#include "cuda/mma.cuh"
#include "tokensieve/blocksparse.h"

namespace tokensieve {
namespace cuda {

namespace {

constexpr int kRows = 64;     // query rows per CTA
constexpr int kKeys = 64;     // keys per tile
constexpr int kThreads = 128; // 4 warps × 16 rows

struct BsaArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;                // [B, Hq, N] or null
  int64_t qs[3], ks[3], vs[3], os[3];  // element strides of (b, head, token)
  int N, Nk, Hq, group, nK, block_q, block_k;
  float scale_log2;          // scale · log2(e)
  bool dense;
  const int32_t* cnt;        // [Bm, Hm, nQ]
  const int32_t* idx;        // [Bm, Hm, nQ, L]
  const int32_t* fcnt;       // optional second list
  const int32_t* fidx;
  int Bm, Hm, nQ, L, Lf;
  const int32_t* perm;       // [Hq, N] or null
  bool aligned;              // every row starts 16-byte aligned: vector loads
  // kInt8: q and smoothed k as codes in attended order, [B·Hq, N|Nk, D], and
  // one scale per 64 attended rows, [B·Hq, ceil(N|Nk / 64)].
  const int8_t* q8;
  const int8_t* k8;
  const float* qsc;
  const float* ksc;
  int nqs, nks;
};

// Eight consecutive elements of a row (In) into shared memory as T; null
// src writes zeros (rows past the end, or an invalid permutation entry).
template <typename In, typename T>
__device__ __forceinline__ void load8(const In* src, bool aligned, T* dst) {
  if (src == nullptr) {
    for (int i = 0; i < 8; ++i) dst[i] = from_f32<T>(0.f);
    return;
  }
  if constexpr (std::is_same<In, T>::value) {
    if (aligned) {  // same type: 16 bytes straight through
      *reinterpret_cast<uint4*>(dst) = __ldg(reinterpret_cast<const uint4*>(src));
      return;
    }
  }
  float f[8];
  if constexpr (std::is_same<In, float>::value) {
    if (aligned) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(src)), b = __ldg(reinterpret_cast<const float4*>(src + 4));
      f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
    } else {
      for (int i = 0; i < 8; ++i) f[i] = __ldg(src + i);
    }
  } else {
    for (int i = 0; i < 8; ++i) f[i] = load_f32(src + i);
  }
  for (int i = 0; i < 8; ++i) dst[i] = from_f32<T>(f[i]);
}



// The kept 64-key tiles of one CTA, in order: the partial list's blocks, then
// the full list's, each block cut into tiles of kKeys keys (the last may be
// short). Every thread walks the same sequence, so barriers stay uniform.
struct TileWalk {
  const int32_t* l1;
  const int32_t* l2;
  int n1, n2, nK, block_k, Nk;
  bool dense;
  int it = -1;    // position in the block lists
  int kend = 0;   // end of the current block's keys
  int j0 = 0;     // first key of the current tile, or -1 when done

  __device__ int block_at(int i) const { return dense ? i : i < n1 ? l1[i] : l2[i - n1]; }
  // Moves to the next tile; false when there is none.
  __device__ bool next() {
    if (it >= 0 && j0 + kKeys < kend) {
      j0 += kKeys;
      return true;
    }
    for (++it; it < n1 + n2; ++it) {
      const int kb = block_at(it);
      if (kb < 0 || kb >= nK) continue;  // only a device list can hold one (BlockMask validates)
      j0 = kb * block_k;
      kend = min(Nk, j0 + block_k);
      return true;
    }
    j0 = -1;
    return false;
  }
};

// kInt8: S = (Q8·K8ᵀ on mma m16n8k32, exact int32) · sq · sk, then the same
// softmax and P·V in f16 (T = __half); the codes come from the quantize
// pre-pass in attended order, so their loads need no permutation.
//
// The loop is FlashAttention-2's with one K and one V buffer: V(j) streams in
// (cp.async when the input already has the compute type and rows are 16-byte
// aligned) while S(j) = Q·K(j)ᵀ runs, and K(j+1) while P(j)·V(j) runs. K
// and V stay row-major in shared memory; ldmatrix (.trans for V) turns them
// into B fragments, conflict-free with the padded row stride.
template <typename In, typename T, int D, bool kInt8>
__global__ void __launch_bounds__(kThreads) block_sparse_attention_kernel(BsaArgs a) {
  constexpr int kLd = D + 8;       // K/V row stride (elements): 16-byte rows, ldmatrix rows on distinct banks
  constexpr int kChunks = D / 8;   // 8-element chunks per row
  constexpr int kD8 = (D + 31) / 32 * 32;  // kInt8: codes per row padded to the k32 step
  constexpr int kLd8 = kD8 + 16;           // kInt8: tile row stride (bytes)
  static_assert(!kInt8 || kKeys * kLd8 <= kKeys * kLd * 2, "the INT8 tile fits the K tile's storage");
  static_assert(D % 16 == 0, "head dims are multiples of 16");
  // 16-bit storage viewed as T (a __shared__ array of a class type would need a trivial constructor).
  __shared__ __align__(16) uint16_t ks_raw[kKeys * kLd];  // [64 keys][D] (Q staging first; kInt8: codes)
  __shared__ __align__(16) uint16_t vs_raw[kKeys * kLd];  // [64 keys][D]
  T* Ks = reinterpret_cast<T*>(ks_raw);
  T* Vs = reinterpret_cast<T*>(vs_raw);
  int8_t* K8 = reinterpret_cast<int8_t*>(ks_raw);  // kInt8: [64][kLd8] codes

  const int qtiles = (a.N + kRows - 1) / kRows;
  int bid = blockIdx.x;
  const int qt = bid % qtiles;
  bid /= qtiles;
  const int h = bid % a.Hq, b = bid / a.Hq, kvh = h / a.group;
  const int q0 = qt * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int32_t* ph = a.perm ? a.perm + static_cast<int64_t>(h) * a.N : nullptr;
  // The original token at attended position pos, or -1 (past the end, or a bad permutation entry).
  auto source = [&](int pos, int n) -> int {
    if (pos >= n) return -1;
    if (ph == nullptr) return pos;
    const int r = ph[pos];
    return r >= 0 && r < n ? r : -1;
  };
  const In* qbase = static_cast<const In*>(a.q) + b * a.qs[0] + h * a.qs[1];
  const In* kbase = static_cast<const In*>(a.k) + b * a.ks[0] + kvh * a.ks[1];
  const In* vbase = static_cast<const In*>(a.v) + b * a.vs[0] + kvh * a.vs[1];
  const int64_t bh = static_cast<int64_t>(b) * a.Hq + h;
  const bool async_rows = std::is_same<In, T>::value && a.aligned;

  // One 64-row tile of K or V (keys [j0, kend)) into shared memory; rows past
  // kend are zeros. Asynchronous where it can be: completes at cp_async_wait_all.
  auto stage = [&](const In* base, int64_t stride, T* dst, int j0, int kend) {
    for (int c = threadIdx.x; c < kKeys * kChunks; c += kThreads) {
      const int r = c / kChunks, d0 = (c % kChunks) * 8;
      const int src = j0 + r < kend ? source(j0 + r, a.Nk) : -1;
      if (async_rows && src >= 0)
        cp_async16(dst + r * kLd + d0, base + src * stride + d0);
      else
        load8<In, T>(src < 0 ? nullptr : base + src * stride + d0, a.aligned, dst + r * kLd + d0);
    }
    cp_async_commit();
  };
  auto stage_k8 = [&](int j0, int kend) {
    for (int c = threadIdx.x; c < kKeys * (kD8 / 16); c += kThreads) {
      const int r = c / (kD8 / 16), d0 = (c % (kD8 / 16)) * 16;
      const bool live = j0 + r < kend && d0 < D;
      if (live)
        cp_async16(K8 + r * kLd8 + d0, a.k8 + (bh * a.Nk + j0 + r) * D + d0);
      else
        *reinterpret_cast<uint4*>(K8 + r * kLd8 + d0) = make_uint4(0, 0, 0, 0);
    }
    cp_async_commit();
  };

  // Q tile → shared → A fragments in registers, for the whole kv loop.
  constexpr int kFrags = kInt8 ? kD8 / 32 : D / 16;
  uint32_t qf[kFrags][4];
  float qscale = 1.f;
  if constexpr (kInt8) {
    for (int c = threadIdx.x; c < kRows * (kD8 / 16); c += kThreads) {
      const int r = c / (kD8 / 16), d0 = (c % (kD8 / 16)) * 16;
      const bool live = q0 + r < a.N && d0 < D;
      *reinterpret_cast<uint4*>(K8 + r * kLd8 + d0) =
          live ? *reinterpret_cast<const uint4*>(a.q8 + (bh * a.N + q0 + r) * D + d0) : make_uint4(0, 0, 0, 0);
    }
    qscale = a.qsc[bh * a.nqs + q0 / kRows];
    __syncthreads();
    const int8_t* q = K8 + (warp * 16 + g) * kLd8 + 4 * t;
    for (int kk = 0; kk < kFrags; ++kk) {
      qf[kk][0] = lds32(q + kk * 32);
      qf[kk][1] = lds32(q + 8 * kLd8 + kk * 32);
      qf[kk][2] = lds32(q + kk * 32 + 16);
      qf[kk][3] = lds32(q + 8 * kLd8 + kk * 32 + 16);
    }
  } else {
    for (int c = threadIdx.x; c < kRows * kChunks; c += kThreads) {
      const int r = c / kChunks, d0 = (c % kChunks) * 8;
      const int src = source(q0 + r, a.N);
      load8<In, T>(src < 0 ? nullptr : qbase + src * a.qs[2] + d0, a.aligned, Ks + r * kLd + d0);
    }
    __syncthreads();
    for (int kk = 0; kk < kFrags; ++kk)  // matrices: rows +0/+8 × columns +0/+8 of the warp's 16×16 chunk
      ldmatrix_x4(qf[kk], Ks + (warp * 16 + (lane / 8 % 2) * 8 + lane % 8) * kLd + kk * 16 + (lane / 16) * 8);
  }
  __syncthreads();  // the Q staging is read before K(0) overwrites it

  float o[D / 8][4];
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};  // running max of rows g and g + 8 (log2 domain)
  float l[2] = {0.f, 0.f};              // this lane's share of their sums

  // The kv blocks of this CTA's q-block: the partial list, then the full list.
  const int qb = q0 / a.block_q;
  TileWalk walk{nullptr, nullptr, a.nK, 0, a.nK, a.block_k, a.Nk, a.dense};
  if (!a.dense) {
    const int64_t row = (static_cast<int64_t>(a.Bm == 1 ? 0 : b) * a.Hm + (a.Hm == 1 ? 0 : h)) * a.nQ + qb;
    walk.n1 = max(0, min(a.cnt[row], a.L));
    walk.l1 = a.idx + row * a.L;
    if (a.fcnt != nullptr) {
      walk.n2 = max(0, min(a.fcnt[row], a.Lf));
      walk.l2 = a.fidx + row * a.Lf;
    }
  }
  walk.next();
  if (walk.j0 >= 0) {
    if constexpr (kInt8) stage_k8(walk.j0, walk.kend);
    else stage(kbase, a.ks[2], Ks, walk.j0, walk.kend);
  }
  while (walk.j0 >= 0) {
    const int j0 = walk.j0, kend = walk.kend;
    cp_async_wait_all();
    __syncthreads();  // K(j) is in; every warp is done with V(j-1)
    stage(vbase, a.vs[2], Vs, j0, kend);
    // S = Q·Kᵀ for this warp's 16 rows × 64 keys.
    float s[8][4];
    float sscale = a.scale_log2;
    if constexpr (kInt8) {
      sscale *= qscale * a.ksc[bh * a.nks + j0 / kKeys];
      for (int nt = 0; nt < 8; ++nt) {
        int acc[4] = {0, 0, 0, 0};
        const int8_t* kr = K8 + (nt * 8 + g) * kLd8 + 4 * t;
        for (int kk = 0; kk < kFrags; ++kk) {
          const uint32_t bf[2] = {lds32(kr + kk * 32), lds32(kr + kk * 32 + 16)};
          mma_m16n8k32_s8(acc, qf[kk], bf);
        }
        for (int e = 0; e < 4; ++e) s[nt][e] = static_cast<float>(acc[e]);
      }
    } else {
      for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
      for (int nt = 0; nt < 8; ++nt)
        for (int kk = 0; kk < kFrags; kk += 2) {
          // Matrices: keys nt*8.. × channels kk*16 + {0, 8, 16, 24} (the b0, b1 of two k-steps).
          // With an odd count of k-steps (D = 80) the last load's upper half
          // is clamped inside the row and not used.
          uint32_t kf[4];
          ldmatrix_x4(kf, Ks + (nt * 8 + lane % 8) * kLd + min(kk * 16 + (lane / 8) * 8, D - 8));
          const uint32_t b0[2] = {kf[0], kf[1]};
          mma_m16n8k16<T>(s[nt], qf[kk], b0);
          if (kk + 1 < kFrags) {
            const uint32_t b1[2] = {kf[2], kf[3]};
            mma_m16n8k16<T>(s[nt], qf[kk + 1], b1);
          }
        }
    }
    // Online softmax (log2 domain); keys past this block's end are -inf.
    float mx[2] = {-INFINITY, -INFINITY};
    for (int nt = 0; nt < 8; ++nt)
      for (int e = 0; e < 4; ++e) {
        const int key = j0 + nt * 8 + 2 * t + (e & 1);
        s[nt][e] = key < kend ? s[nt][e] * sscale : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
      }
    float corr[2], base[2];
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float mnew = fmaxf(m[r], mx[r]);
      base[r] = mnew == -INFINITY ? 0.f : mnew;
      corr[r] = exp2f(m[r] - base[r]);  // 0 before the first tile
      m[r] = mnew;
      l[r] *= corr[r];
    }
    for (int dt = 0; dt < D / 8; ++dt) {
      o[dt][0] *= corr[0];
      o[dt][1] *= corr[0];
      o[dt][2] *= corr[1];
      o[dt][3] *= corr[1];
    }
    for (int nt = 0; nt < 8; ++nt)
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = exp2f(s[nt][e] - base[e >> 1]);
        l[e >> 1] += s[nt][e];
      }
    cp_async_wait_all();
    __syncthreads();  // V(j) is in; every warp is done with K(j)
    if (walk.next()) {
      if constexpr (kInt8) stage_k8(walk.j0, walk.kend);
      else stage(kbase, a.ks[2], Ks, walk.j0, walk.kend);
    }
    // O += P·V: the S accumulators of n-tiles 2kc, 2kc+1 are the A fragment of keys [16kc, 16kc+16).
    for (int kc = 0; kc < kKeys / 16; ++kc) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kc][0], s[2 * kc][1]), pack2<T>(s[2 * kc][2], s[2 * kc][3]),
                              pack2<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                              pack2<T>(s[2 * kc + 1][2], s[2 * kc + 1][3])};
      for (int dt = 0; dt < D / 8; dt += 2) {
        // Matrices (transposed): keys kc*16 + {0, 8} × channels dt*8 and (dt+1)*8.
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, Vs + (kc * 16 + (lane / 8 % 2) * 8 + lane % 8) * kLd + (dt + lane / 16) * 8);
        const uint32_t b0[2] = {vf[0], vf[1]}, b1[2] = {vf[2], vf[3]};
        mma_m16n8k16<T>(o[dt], pa, b0);
        mma_m16n8k16<T>(o[dt + 1], pa, b1);
      }
    }
  }
  // Row sums over the quad, then the normalised rows in original order.
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  In* obase = static_cast<In*>(a.out) + b * a.os[0] + h * a.os[1];
  for (int r = 0; r < 2; ++r) {
    const int dst = source(q0 + warp * 16 + g + 8 * r, a.N);
    if (dst < 0) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;  // a row with no kept key stays 0
    In* orow = obase + dst * a.os[2];
    for (int dt = 0; dt < D / 8; ++dt) {
      orow[dt * 8 + 2 * t] = from_f32<In>(o[dt][2 * r] * inv);
      orow[dt * 8 + 2 * t + 1] = from_f32<In>(o[dt][2 * r + 1] * inv);
    }
    if (a.lse != nullptr && t == 0)
      a.lse[(static_cast<int64_t>(b) * a.Hq + h) * a.N + dst] = l[r] > 0.f ? (m[r] + log2f(l[r])) * kLn2 : -INFINITY;
  }
}

template <typename In, typename T, bool kInt8>
Status launch_attention(const BsaArgs& a, int64_t D, int64_t grid, cudaStream_t stream) {
  switch (D) {
    case 64: block_sparse_attention_kernel<In, T, 64, kInt8><<<grid, kThreads, 0, stream>>>(a); break;
    case 80: block_sparse_attention_kernel<In, T, 80, kInt8><<<grid, kThreads, 0, stream>>>(a); break;
    case 96: block_sparse_attention_kernel<In, T, 96, kInt8><<<grid, kThreads, 0, stream>>>(a); break;
    case 128: block_sparse_attention_kernel<In, T, 128, kInt8><<<grid, kThreads, 0, stream>>>(a); break;
    default: return Status(Code::kUnsupported, "blockSparseAttention: head dim " + std::to_string(D));
  }
  TS_CUDA_CHECK_LAUNCH("block_sparse_attention_kernel");
  return Status::Ok();
}

void strides3(const TensorView& t, int64_t* s) {
  s[0] = t.strides[0];
  s[1] = t.strides[1];
  s[2] = t.strides[2];
}

// Rows of 8-element chunks can be loaded 16 bytes at a time.
bool rows_aligned(const TensorView& t) {
  const int64_t es = static_cast<int64_t>(dtype_size(t.dtype));
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0) return false;
  for (int i = 0; i < 3; ++i)
    if ((t.strides[i] * es) % 16 != 0) return false;
  return true;
}

// ---- INT8 pre-pass (SageAttention-style, as the CPU back end) -------------------

// K smoothing: per (b, kv head, channel) the mean over the Nk keys, summed
// in double in key order (the CPU's order, so the means are the same).
template <typename In>
__global__ void key_mean_kernel(const In* k, int64_t s0, int64_t s1, int64_t s2, int Hkv, int Nk, int D, double* mean) {
  const int b = blockIdx.x / Hkv, h = blockIdx.x % Hkv;
  const In* base = k + b * s0 + h * s1;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    double acc = 0.0;
    for (int j = 0; j < Nk; ++j) acc += load_f32(base + static_cast<int64_t>(j) * s2 + d);
    mean[static_cast<int64_t>(blockIdx.x) * D + d] = acc / Nk;
  }
}

// One CTA per (b, head, 64 attended rows): symmetric scale amax / 127 over
// the block (after subtracting the kv head's mean when `mean` is given) and
// codes round-half-away(x / scale) clamped to ±127, written in attended order.
template <typename In>
__global__ void __launch_bounds__(128) quantize_blocks_kernel(const In* x, int64_t s0, int64_t s1, int64_t s2, int H,
                                                              int group, int N, int D, const int32_t* perm,
                                                              const double* mean, int nblk, int8_t* codes,
                                                              float* scales) {
  const int blk = blockIdx.x % nblk;
  const int64_t bh = blockIdx.x / nblk;
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H), xh = h / group;
  const int r0 = blk * kRows, rows = min(kRows, N - r0);
  const In* base = x + b * s0 + xh * s1;
  const double* mu = mean ? mean + (static_cast<int64_t>(b) * (H / group) + xh) * D : nullptr;
  auto value = [&](int r, int d) -> float {
    int src = r0 + r;
    if (perm) {
      src = perm[static_cast<int64_t>(h) * N + src];
      if (src < 0 || src >= N) return 0.f;
    }
    const float v = load_f32(base + static_cast<int64_t>(src) * s2 + d);
    return mu ? static_cast<float>(static_cast<double>(v) - mu[d]) : v;
  };
  float amax = 0.f;
  for (int e = threadIdx.x; e < rows * D; e += 128) amax = fmaxf(amax, fabsf(value(e / D, e % D)));
  amax = block_max<128>(amax);
  const float scale = amax / 127.f;
  for (int e = threadIdx.x; e < rows * D; e += 128) {
    const float c = scale > 0.f ? roundf(value(e / D, e % D) / scale) : 0.f;
    codes[(bh * N + r0) * D + e] = static_cast<int8_t>(fminf(127.f, fmaxf(-127.f, c)));
  }
  if (threadIdx.x == 0) scales[bh * nblk + blk] = scale;
}

// ---- block attention mass (SIMT) -------------------------------------------------

constexpr int kMassWarps = 4;
constexpr int kMassMaxD = 256;

// One warp per (b, head, selected row). Each lane owns a contiguous run of
// keys: pass 1 its max and sum of exp (combined over the warp into the
// row's log-sum-exp), pass 2 the probabilities, added into the row's
// (q-block, kv-block) cell once per run of keys in one kv block.
template <typename In>
__global__ void __launch_bounds__(kMassWarps * 32) block_attention_mass_kernel(
    const In* q, const In* k, int64_t qs0, int64_t qs1, int64_t qs2, int64_t ks0, int64_t ks1, int64_t ks2, int H, int group,
    int N, int Nk, int D, const int32_t* rows, int R, int64_t tasks, float scale, int block_q, int block_k, int nQ, int nK,
    float* out) {
  __shared__ float qrow[kMassWarps][kMassMaxD];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t task = static_cast<int64_t>(blockIdx.x) * kMassWarps + warp;  // (b·H + h)·R + r
  const bool live = task < tasks;
  const int r = static_cast<int>(task % R);
  const int64_t bh = task / R;
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H), kvh = h / group;
  const int i = rows != nullptr ? rows[r] : r;
  if (live)
    for (int d = lane; d < D; d += 32) qrow[warp][d] = load_f32(q + b * qs0 + h * qs1 + static_cast<int64_t>(i) * qs2 + d);
  __syncwarp();
  if (!live) return;
  const In* kb = k + b * ks0 + kvh * ks1;
  const int per = (Nk + 31) / 32, j0 = lane * per, j1 = min(Nk, j0 + per);
  auto logit = [&](int j) {
    const In* kr = kb + static_cast<int64_t>(j) * ks2;
    float acc = 0.f;
    for (int d = 0; d < D; ++d) acc = fmaf(qrow[warp][d], load_f32(kr + d), acc);
    return acc * scale;
  };
  float mx = -INFINITY, sum = 0.f;
  for (int j = j0; j < j1; ++j) {
    const float s = logit(j);
    if (s > mx) {
      sum = sum * expf(mx - s) + 1.f;
      mx = s;
    } else {
      sum += expf(s - mx);
    }
  }
  const float M = warp_max(mx);
  const float total = warp_sum(mx == -INFINITY ? 0.f : sum * expf(mx - M));
  float* cell = out + (bh * nQ + i / block_q) * nK;
  float run = 0.f;
  int cur = j0 < j1 ? j0 / block_k : -1;
  for (int j = j0; j < j1; ++j) {
    if (j / block_k != cur) {
      atomicAdd(cell + cur, run);
      run = 0.f;
      cur = j / block_k;
    }
    run += expf(logit(j) - M) / total;
  }
  if (cur >= 0) atomicAdd(cell + cur, run);
}

// ---- block pooling -------------------------------------------------------------

constexpr int kPoolMaxPerLane = 32;  // D up to 1024

// One warp per (b, head, block): lane owns channels lane, lane + 32, ...
template <typename In>
__global__ void block_pool_kernel(const In* x, int64_t s0, int64_t s1, int64_t s2, int H, int N, int D, int block, int nB,
                                  int64_t tasks, float* mean, float* self_sim) {
  const int64_t task = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (task >= tasks) return;
  const int blk = static_cast<int>(task % nB);
  const int64_t bh = task / nB;
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
  const int r0 = blk * block, r1 = min(N, r0 + block);
  double sum[kPoolMaxPerLane], unit[kPoolMaxPerLane];
  for (int c = 0; c < kPoolMaxPerLane; ++c) sum[c] = unit[c] = 0.0;
  for (int r = r0; r < r1; ++r) {
    const In* row = x + b * s0 + h * s1 + static_cast<int64_t>(r) * s2;
    double nn = 0.0;
    for (int c = 0, d = lane; d < D; ++c, d += 32) {
      const double v = load_f32(row + d);
      sum[c] += v;
      nn += v * v;
    }
    nn = warp_sum(nn);
    const double inv = nn > 0.0 ? 1.0 / sqrt(nn) : 0.0;
    for (int c = 0, d = lane; d < D; ++c, d += 32) unit[c] += load_f32(row + d) * inv;
  }
  const double n = static_cast<double>(r1 - r0);
  double ss = 0.0;
  for (int c = 0, d = lane; d < D; ++c, d += 32) {
    mean[task * D + d] = static_cast<float>(sum[c] / n);
    ss += unit[c] * unit[c];
  }
  ss = warp_sum(ss);
  if (lane == 0) self_sim[task] = static_cast<float>(ss / (n * n));
}

// ---- reordering ----------------------------------------------------------------

template <typename E>
__global__ void apply_reorder_kernel(const E* x, E* out, const int32_t* perm, int64_t xs0, int64_t xs1, int64_t xs2,
                                     int64_t os0, int64_t os1, int64_t os2, int H, int N, int D, int64_t total,
                                     bool inverse) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(e % D);
    const int64_t row = e / D;
    const int i = static_cast<int>(row % N);
    const int64_t bh = row / N;
    const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
    const int p = perm[static_cast<int64_t>(h) * N + i];
    if (p < 0 || p >= N) continue;  // a bad device permutation writes nothing instead of out of bounds
    const int from = inverse ? i : p, to = inverse ? p : i;
    out[b * os0 + h * os1 + static_cast<int64_t>(to) * os2 + d] = x[b * xs0 + h * xs1 + static_cast<int64_t>(from) * xs2 + d];
  }
}

}  // namespace

Status block_sparse_attention(const BlockSparseAttentionParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.q, "q"));
  const int64_t B = p.q.shape[0], Hq = p.q.shape[1], N = p.q.shape[2], D = p.q.shape[3];
  const int64_t Hkv = p.k.shape[1], Nk = p.k.shape[2];
  const char* op = "blockSparseAttention";
  if (D != 64 && D != 80 && D != 96 && D != 128)
    return Status(Code::kUnsupported, std::string(op) + ": the CUDA kernel takes head dims 64, 80, 96 and 128 but got " +
                                          std::to_string(D));
  if (p.mask.block_q % kRows != 0 || p.mask.block_k % kKeys != 0)
    return Status(Code::kUnsupported, std::string(op) + ": the CUDA kernel takes block sizes that are multiples of 64 "
                                                        "but got blockQ " + std::to_string(p.mask.block_q) +
                                          ", blockK " + std::to_string(p.mask.block_k));
  if (N > INT32_MAX / 2 || Nk > INT32_MAX / 2)
    return Status(Code::kUnsupported, std::string(op) + ": sequences above 2^30 tokens");
  const bool f32_in = p.q.dtype == DType::kF32;
  const bool int8 = p.precision == BlockSparsePrecision::kInt8;
  if (f32_in && p.precision == BlockSparsePrecision::kNative)
    return Status(Code::kUnsupported, std::string(op) + ": f32 inputs on CUDA run on the tensor cores: pass precision "
                                                        "'bf16' or 'f16' (the CPU computes f32 in f32)");
  const int64_t qtiles = (N + kRows - 1) / kRows, grid = B * Hq * qtiles;
  TS_RETURN_IF_ERROR(check_grid_x(grid, op));
  BsaArgs a{};
  a.q = p.q.data;
  a.k = p.k.data;
  a.v = p.v.data;
  a.out = p.out.data;
  a.lse = p.lse.data ? p.lse.ptr<float>() : nullptr;
  strides3(p.q, a.qs);
  strides3(p.k, a.ks);
  strides3(p.v, a.vs);
  strides3(p.out, a.os);
  a.N = static_cast<int>(N);
  a.Nk = static_cast<int>(Nk);
  a.Hq = static_cast<int>(Hq);
  a.group = static_cast<int>(Hq / Hkv);
  a.block_q = static_cast<int>(p.mask.block_q);
  a.block_k = static_cast<int>(p.mask.block_k);
  a.nQ = static_cast<int>((N + p.mask.block_q - 1) / p.mask.block_q);
  a.nK = static_cast<int>((Nk + p.mask.block_k - 1) / p.mask.block_k);
  a.scale_log2 = p.scale * kLog2e;
  a.dense = p.mask.dense;
  if (!a.dense) {
    a.cnt = p.mask.num_blocks.ptr<int32_t>();
    a.idx = p.mask.indices.ptr<int32_t>();
    a.Bm = static_cast<int>(p.mask.num_blocks.shape[0]);
    a.Hm = static_cast<int>(p.mask.num_blocks.shape[1]);
    a.L = static_cast<int>(p.mask.indices.shape[3]);
    if (p.mask.full_num_blocks.data != nullptr) {
      a.fcnt = p.mask.full_num_blocks.ptr<int32_t>();
      a.fidx = p.mask.full_indices.ptr<int32_t>();
      a.Lf = static_cast<int>(p.mask.full_indices.shape[3]);
    }
  }
  a.perm = p.perm.data ? p.perm.ptr<int32_t>() : nullptr;
  a.aligned = rows_aligned(p.q) && rows_aligned(p.k) && rows_aligned(p.v);

  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.q.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const bool half = p.precision == BlockSparsePrecision::kF16 ||
                    (p.precision == BlockSparsePrecision::kNative && p.q.dtype == DType::kF16);
  // Scratch: [NaN flag | kInt8: q codes, k codes, q scales, k scales, k means].
  const int64_t nqs = (N + kRows - 1) / kRows, nks = (Nk + kKeys - 1) / kKeys, BH = B * Hq;
  ScratchLayout lay;
  const size_t o_flag = lay.add<int>(p.check_finite ? 1 : 0);
  const size_t o_q8 = lay.add<int8_t>(int8 ? BH * N * D : 0);
  const size_t o_k8 = lay.add<int8_t>(int8 ? BH * Nk * D : 0);
  const size_t o_qsc = lay.add<float>(int8 ? BH * nqs : 0);
  const size_t o_ksc = lay.add<float>(int8 ? BH * nks : 0);
  const size_t o_mean = lay.add<double>(int8 ? B * Hkv * D : 0);
  Scratch scratch(p.q.device, stream);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.bytes()));
  int* flag = p.check_finite ? scratch.at<int>(o_flag) : nullptr;
  if (flag) TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  // One pass over q, k and v when asked to reject NaN/Inf (the binding asks
  // only when the call waits: reading the flag drains the stream).
  auto scan_inputs = [&]() -> Status {
    if (!flag) return Status::Ok();
    return TS_DISPATCH_FLOAT(p.q.dtype, op, [&] {
      for (const TensorView* t : {&p.q, &p.k, &p.v})
        TS_RETURN_IF_ERROR(launch_nonfinite<scalar_t>(t->ptr<scalar_t>(), t->shape[0], t->shape[1], t->shape[2],
                                                      t->strides[0], t->strides[1], t->strides[2], RowMap{nullptr, 0},
                                                      D, false, 1, flag, stream));
      return Status::Ok();
    });
  };
  auto read_flag = [&]() -> Status {
    if (!flag) return Status::Ok();
    int bad = 0;
    TS_RETURN_IF_ERROR(read_device_flag(flag, stream, &bad));
    if (bad) return Status(Code::kRange, std::string(op) + ": expected finite values in q, k and v but found NaN or Inf");
    return Status::Ok();
  };
  TS_RETURN_IF_ERROR(scan_inputs());
  if (!int8) {
    TS_RETURN_IF_ERROR(TS_DISPATCH_FLOAT(p.q.dtype, op, [&] {
      return half ? launch_attention<scalar_t, __half, false>(a, D, grid, stream)
                  : launch_attention<scalar_t, __nv_bfloat16, false>(a, D, grid, stream);
    }));
    return read_flag();
  }
  // INT8: quantize q and smoothed k per 64 attended rows into scratch, then
  // the same kernel with QKᵀ on the INT8 tensor cores and P·V in f16.
  a.q8 = scratch.at<int8_t>(o_q8);
  a.k8 = scratch.at<int8_t>(o_k8);
  a.qsc = scratch.at<float>(o_qsc);
  a.ksc = scratch.at<float>(o_ksc);
  a.nqs = static_cast<int>(nqs);
  a.nks = static_cast<int>(nks);
  TS_RETURN_IF_ERROR(check_grid_x(BH * nks, op));
  TS_RETURN_IF_ERROR(TS_DISPATCH_FLOAT(p.q.dtype, op, [&] {
    double* mean = scratch.at<double>(o_mean);
    key_mean_kernel<scalar_t><<<B * Hkv, 128, 0, stream>>>(p.k.ptr<scalar_t>(), p.k.strides[0], p.k.strides[1],
                                                             p.k.strides[2], static_cast<int>(Hkv), static_cast<int>(Nk),
                                                             static_cast<int>(D), mean);
    TS_CUDA_CHECK_LAUNCH("key_mean_kernel");
    quantize_blocks_kernel<scalar_t><<<BH * nqs, 128, 0, stream>>>(
        p.q.ptr<scalar_t>(), p.q.strides[0], p.q.strides[1], p.q.strides[2], static_cast<int>(Hq), 1,
        static_cast<int>(N), static_cast<int>(D), a.perm, nullptr, static_cast<int>(nqs), scratch.at<int8_t>(o_q8),
        scratch.at<float>(o_qsc));
    TS_CUDA_CHECK_LAUNCH("quantize_blocks_kernel");
    quantize_blocks_kernel<scalar_t><<<BH * nks, 128, 0, stream>>>(
        p.k.ptr<scalar_t>(), p.k.strides[0], p.k.strides[1], p.k.strides[2], static_cast<int>(Hq), a.group,
        static_cast<int>(Nk), static_cast<int>(D), a.perm, mean, static_cast<int>(nks), scratch.at<int8_t>(o_k8),
        scratch.at<float>(o_ksc));
    TS_CUDA_CHECK_LAUNCH("quantize_blocks_kernel");
    return launch_attention<scalar_t, __half, true>(a, D, grid, stream);
  }));
  return read_flag();
}

Status block_attention_mass(const BlockAttentionMassParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.q, "q"));
  const int64_t B = p.q.shape[0], H = p.q.shape[1], N = p.q.shape[2], D = p.q.shape[3];
  const int64_t Nk = p.k.shape[2], group = H / p.k.shape[1];
  if (D > kMassMaxD)
    return Status(Code::kUnsupported, "blockAttentionMass: the CUDA kernel takes head dims up to " +
                                          std::to_string(kMassMaxD) + " but got " + std::to_string(D));
  const int64_t R = p.query_rows ? p.num_query_rows : N;
  const int64_t nQ = (N + p.block_q - 1) / p.block_q, nK = (Nk + p.block_k - 1) / p.block_k;
  const int64_t grid = (B * H * R + kMassWarps - 1) / kMassWarps;
  TS_RETURN_IF_ERROR(check_grid_x(grid, "blockAttentionMass"));
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.q.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  Scratch scratch(p.q.device, stream);
  ScratchLayout lay;  // [rows | NaN flag]
  const size_t o_rows = lay.add<int32_t>(p.query_rows ? R : 0);
  const size_t o_flag = lay.add<int>(p.check_finite ? 1 : 0);
  TS_RETURN_IF_ERROR(scratch.allocate(lay.bytes()));
  int32_t* rows = nullptr;
  if (p.query_rows) {
    rows = scratch.at<int32_t>(o_rows);
    TS_CUDA_TRY(cudaMemcpyAsync(rows, p.query_rows, static_cast<size_t>(R) * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  }
  int* flag = p.check_finite ? scratch.at<int>(o_flag) : nullptr;
  TS_CUDA_TRY(cudaMemsetAsync(p.out.data, 0, static_cast<size_t>(B * H * nQ * nK) * sizeof(float), stream));
  if (flag) {
    TS_CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), stream));
    TS_RETURN_IF_ERROR(TS_DISPATCH_FLOAT(p.q.dtype, "blockAttentionMass", [&] {
      for (const TensorView* t : {&p.q, &p.k})
        TS_RETURN_IF_ERROR(launch_nonfinite<scalar_t>(t->ptr<scalar_t>(), t->shape[0], t->shape[1], t->shape[2],
                                                      t->strides[0], t->strides[1], t->strides[2], RowMap{nullptr, 0},
                                                      D, false, 1, flag, stream));
      return Status::Ok();
    }));
  }
  TS_RETURN_IF_ERROR(TS_DISPATCH_FLOAT(p.q.dtype, "blockAttentionMass", [&] {
    const int64_t tasks = B * H * R;
    block_attention_mass_kernel<scalar_t><<<grid, kMassWarps * 32, 0, stream>>>(
        p.q.ptr<scalar_t>(), p.k.ptr<scalar_t>(), p.q.strides[0], p.q.strides[1], p.q.strides[2], p.k.strides[0],
        p.k.strides[1], p.k.strides[2], static_cast<int>(H), static_cast<int>(group), static_cast<int>(N),
        static_cast<int>(Nk), static_cast<int>(D), rows, static_cast<int>(R), tasks, p.scale, static_cast<int>(p.block_q),
        static_cast<int>(p.block_k), static_cast<int>(nQ), static_cast<int>(nK), p.out.ptr<float>());
    TS_CUDA_CHECK_LAUNCH("block_attention_mass_kernel");
    return Status::Ok();
  }));
  if (!flag) return Status::Ok();
  int bad = 0;
  TS_RETURN_IF_ERROR(read_device_flag(flag, stream, &bad));
  if (bad) return Status(Code::kRange, "blockAttentionMass: expected finite values in q and k but found NaN or Inf");
  return Status::Ok();
}

Status block_pool(const BlockPoolParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const int64_t B = p.x.shape[0], H = p.x.shape[1], N = p.x.shape[2], D = p.x.shape[3];
  if (D > 32 * kPoolMaxPerLane)
    return Status(Code::kUnsupported, "blockPool: the CUDA kernel takes head dims up to " +
                                          std::to_string(32 * kPoolMaxPerLane) + " but got " + std::to_string(D));
  const int64_t nB = (N + p.block - 1) / p.block, tasks = B * H * nB;
  const int64_t grid = (tasks + 3) / 4;
  TS_RETURN_IF_ERROR(check_grid_x(grid, "blockPool"));
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  return TS_DISPATCH_FLOAT(p.x.dtype, "blockPool", [&] {
    block_pool_kernel<scalar_t><<<grid, 128, 0, stream>>>(
        p.x.ptr<scalar_t>(), p.x.strides[0], p.x.strides[1], p.x.strides[2], static_cast<int>(H), static_cast<int>(N),
        static_cast<int>(D), static_cast<int>(p.block), static_cast<int>(nB), tasks, p.mean.ptr<float>(),
        p.self_sim.ptr<float>());
    TS_CUDA_CHECK_LAUNCH("block_pool_kernel");
    return Status::Ok();
  });
}

Status apply_reorder(const ApplyReorderParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  TS_RETURN_IF_ERROR(require_device(p.x, "x"));
  const int64_t B = p.x.shape[0], H = p.x.shape[1], N = p.x.shape[2], D = p.x.shape[3];
  const int64_t total = B * H * N * D;
  if (total == 0) return Status::Ok();
  const int64_t grid = std::min<int64_t>((total + 255) / 256, int64_t{1} << 20);
  DeviceGuard guard;
  TS_RETURN_IF_ERROR(guard.enter(p.x.device));
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const int32_t* perm = p.perm.ptr<int32_t>();
  auto run = [&](auto tag) -> Status {
    using E = decltype(tag);
    apply_reorder_kernel<E><<<grid, 256, 0, stream>>>(
        p.x.ptr<E>(), p.out.ptr<E>(), perm, p.x.strides[0], p.x.strides[1], p.x.strides[2], p.out.strides[0],
        p.out.strides[1], p.out.strides[2], static_cast<int>(H), static_cast<int>(N), static_cast<int>(D), total,
        p.inverse);
    TS_CUDA_CHECK_LAUNCH("apply_reorder_kernel");
    return Status::Ok();
  };
  switch (dtype_size(p.x.dtype)) {
    case 1: return run(uint8_t{});
    case 2: return run(uint16_t{});
    case 4: return run(uint32_t{});
    default: return run(uint64_t{});
  }
}

}  // namespace cuda
}  // namespace tokensieve
