// The tensor-core instruction of the flash-style kernels: PTX
// mma.sync.aligned.m16n8k16 (f16 or bf16 operands, f32 accumulators) and
// m16n8k32 on INT8 (s32 accumulators), m16n8k8 on TF32 (f32 accumulators), with
// its register fragments as PTX defines them (g = lane / 4, t = lane % 4):
//   A (16×16, row):  a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]
//   B (16×8, col):   b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   C/D (16×8, f32): d[0..1] = C[g][2t..2t+1], d[2..3] = C[g+8][2t..2t+1]
// Two 16-bit values share a register, the lower column (or k) in the low half.
// Under the CPU emulator (test/cuda-emu) the same call runs emu::mma_m16n8k16.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

namespace tokensieve {
namespace cuda {

// Two values of type T (__half or __nv_bfloat16) in one register, x in the low half.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float x, float y);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float x, float y) {
  const __half a = __float2half_rn(x), b = __float2half_rn(y);
  uint16_t ua, ub;
  memcpy(&ua, &a, 2);
  memcpy(&ub, &b, 2);
  return static_cast<uint32_t>(ua) | (static_cast<uint32_t>(ub) << 16);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float x, float y) {
  const __nv_bfloat16 a = __float2bfloat16_rn(x), b = __float2bfloat16_rn(y);
  uint16_t ua, ub;
  memcpy(&ua, &a, 2);
  memcpy(&ub, &b, 2);
  return static_cast<uint32_t>(ua) | (static_cast<uint32_t>(ub) << 16);
}

// d += a·b on one warp (all 32 lanes must call it).
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDACC__)
  if constexpr (std::is_same<T, __half>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  emu::mma_m16n8k16<T>(d, a, b);
#endif
}

// d += a·b on signed bytes (mma.sync m16n8k32, s32 accumulators). Fragments,
// byte i of a register being element 4t + i: a[0] = A[g][4t..4t+3],
// a[1] = A[g+8][4t..], a[2] = A[g][16+4t..], a[3] = A[g+8][16+4t..];
// b[0] = B[4t..4t+3][g], b[1] = B[16+4t..][g]; d as above.
__device__ __forceinline__ void mma_m16n8k32_s8(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDACC__)
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  emu::mma_m16n8k32_s8(d, a, b);
#endif
}

// f32 → tf32 (cvt.rna.tf32.f32: round to nearest, ties away from zero), as
// a float whose low 13 mantissa bits are zero. x − to_tf32(x) is exact in
// f32, which is what the 3×TF32 split (hi·hi + hi·lo + lo·hi) relies on.
__device__ __forceinline__ float to_tf32(float x) {
#if defined(__CUDACC__)
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return __uint_as_float(r);
#else
  return emu::to_tf32(x);
#endif
}

// d += a·b on TF32 operands (mma.sync m16n8k8, f32 accumulators). Operands
// are f32 registers already rounded by to_tf32 (the MMA ignores the low 13
// bits). Fragments: a[0] = A[g][t], a[1] = A[g+8][t], a[2] = A[g][t+4],
// a[3] = A[g+8][t+4]; b[0] = B[t][g], b[1] = B[t+4][g]; d as in m16n8k16.
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDACC__)
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  emu::mma_m16n8k8_tf32(d, a, b);
#endif
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: four 8×8 matrices of 16-bit
// values; lane l gives the address of row l % 8 of matrix l / 8 (16 bytes,
// 16-byte aligned) and receives in r[m] the pair (row l / 4, columns
// 2(l % 4), +1) of matrix m — an A or B fragment quarter. With .trans each
// matrix is transposed on the way: r[m] = (rows 2(l % 4), +1; column l / 4).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
#if defined(__CUDACC__)
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#else
  emu::ldmatrix_x4(r, row, false);
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
#if defined(__CUDACC__)
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#else
  emu::ldmatrix_x4(r, row, true);
#endif
}

// cp.async.cg: 16 bytes global → shared without a register round trip (L2
// only); completes at cp_async_wait_all of the issuing thread (followed by a
// barrier before other threads read). The emulator copies at once.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#if defined(__CUDACC__)
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(addr), "l"(gmem));
#else
  memcpy(smem, gmem, 16);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDACC__)
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDACC__)
  asm volatile("cp.async.wait_group 0;\n" ::);
#endif
}

}  // namespace cuda
}  // namespace tokensieve
