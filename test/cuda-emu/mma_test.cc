// The tensor-core wrappers of cuda/mma.cuh under the emulator: each MMA shape
// is fed fragments loaded as its PTX fragment layout says, one warp, and the
// product is compared with a float64 one of the operands as the hardware
// sees them. Also cvt.rna.tf32 by hand-checked values and ldmatrix(.trans)
// against a direct read. These pin the emulation that the kernel programs
// (blocksparse_test, attention_test, merge_test) rely on. And the emulator
// itself: threads as fibers meet at block and warp barriers in both run
// orders, and a barrier that not every thread reaches aborts (in a child
// process) instead of hanging or passing.
#include <cuda_runtime.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"
#include "cuda/mma.cuh"

using namespace tokensieve;
using namespace tokensieve::cuda;

namespace {

std::mt19937 rng(20261205);

uint32_t bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}
float from_bits(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

void tf32_rounding() {
  // 1 + 2^-11 is exactly half a tf32 ulp above 1: ties away from zero.
  EXPECT(to_tf32(1.0f + 0x1p-11f) == 1.0f + 0x1p-10f, "tf32 tie rounds away");
  EXPECT(to_tf32(-(1.0f + 0x1p-11f)) == -(1.0f + 0x1p-10f), "tf32 negative tie rounds away");
  EXPECT(to_tf32(1.0f + 0x1p-12f) == 1.0f, "tf32 below half rounds down");
  EXPECT(to_tf32(1.0f + 0x1p-11f + 0x1p-20f) == 1.0f + 0x1p-10f, "tf32 above half rounds up");
  EXPECT(to_tf32(2.0f - 0x1p-23f) == 2.0f, "tf32 carries into the exponent");
  EXPECT(std::isinf(to_tf32(INFINITY)) && std::isnan(to_tf32(NAN)), "tf32 keeps Inf and NaN");
  std::uniform_real_distribution<float> u(-1e3f, 1e3f);
  for (int i = 0; i < 2000; ++i) {
    const float x = u(rng), r = to_tf32(x);
    EXPECT((bits(r) & 0x1fffu) == 0, "tf32 low bits cleared");
    EXPECT(std::fabs(static_cast<double>(r) - x) <= std::ldexp(std::fabs(static_cast<double>(x)), -11),
           "tf32 within half an ulp");
    // the 3xTF32 split is exact: hi + lo == x in f32 and lo fits its own tf32 closely
    const float lo = x - r;
    EXPECT(static_cast<double>(r) + lo == static_cast<double>(x), "hi + lo == x");
  }
}

// One warp: A [16][K] row-major, B [K][8], D [16][8].
template <int K, class Load, class Mma>
void run_warp(Load load, Mma mma, std::vector<float>& d) {
  emu::launch(
      [&] {
        const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
        float acc[4] = {0.5f, -0.25f, 1.0f, 0.0f};  // non-zero C: the MMA accumulates
        load(lane);
        mma(acc);
        d[g * 8 + 2 * t] = acc[0];
        d[g * 8 + 2 * t + 1] = acc[1];
        d[(g + 8) * 8 + 2 * t] = acc[2];
        d[(g + 8) * 8 + 2 * t + 1] = acc[3];
      },
      1, 32);
}

void check_product(const char* what, const std::vector<double>& A, const std::vector<double>& B, int K,
                   const std::vector<float>& d, double tol) {
  const float c0[4] = {0.5f, -0.25f, 1.0f, 0.0f};
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 8; ++c) {
      double ref = c0[(r >= 8 ? 2 : 0) + (c & 1)];
      for (int k = 0; k < K; ++k) ref += A[r * K + k] * B[k * 8 + c];
      EXPECT(std::fabs(d[r * 8 + c] - ref) <= tol * (1 + std::fabs(ref)), "%s: D[%d][%d] = %g, want %g", what, r, c,
             d[r * 8 + c], ref);
    }
}

void tf32_mma() {
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> A(16 * 8), B(8 * 8);
  for (float& x : A) x = n(rng);
  for (float& x : B) x = n(rng);
  // what the hardware multiplies: the operands' high 19 bits
  std::vector<double> Ad(A.size()), Bd(B.size());
  for (size_t i = 0; i < A.size(); ++i) Ad[i] = from_bits(bits(to_tf32(A[i])));
  for (size_t i = 0; i < B.size(); ++i) Bd[i] = from_bits(bits(to_tf32(B[i])));
  std::vector<float> d(16 * 8, NAN);
  uint32_t a[32][4], b[32][2];
  run_warp<8>(
      [&](int lane) {
        const int g = lane / 4, t = lane % 4;
        a[lane][0] = bits(to_tf32(A[g * 8 + t]));
        a[lane][1] = bits(to_tf32(A[(g + 8) * 8 + t]));
        a[lane][2] = bits(to_tf32(A[g * 8 + t + 4]));
        a[lane][3] = bits(to_tf32(A[(g + 8) * 8 + t + 4]));
        b[lane][0] = bits(to_tf32(B[t * 8 + g]));
        b[lane][1] = bits(to_tf32(B[(t + 4) * 8 + g]));
      },
      [&](float (&acc)[4]) {
        const int lane = threadIdx.x % 32;
        mma_m16n8k8_tf32(acc, a[lane], b[lane]);
      },
      d);
  check_product("tf32", Ad, Bd, 8, d, 1e-6);
  // Unrounded operands: the low 13 bits are ignored (truncation), not rounded.
  std::vector<double> At(A.size()), Bt(B.size());
  for (size_t i = 0; i < A.size(); ++i) At[i] = from_bits(bits(A[i]) & ~0x1fffu);
  for (size_t i = 0; i < B.size(); ++i) Bt[i] = from_bits(bits(B[i]) & ~0x1fffu);
  std::fill(d.begin(), d.end(), NAN);
  run_warp<8>(
      [&](int lane) {
        const int g = lane / 4, t = lane % 4;
        a[lane][0] = bits(A[g * 8 + t]);
        a[lane][1] = bits(A[(g + 8) * 8 + t]);
        a[lane][2] = bits(A[g * 8 + t + 4]);
        a[lane][3] = bits(A[(g + 8) * 8 + t + 4]);
        b[lane][0] = bits(B[t * 8 + g]);
        b[lane][1] = bits(B[(t + 4) * 8 + g]);
      },
      [&](float (&acc)[4]) {
        const int lane = threadIdx.x % 32;
        mma_m16n8k8_tf32(acc, a[lane], b[lane]);
      },
      d);
  check_product("tf32 truncation", At, Bt, 8, d, 1e-6);
}

template <class T>
void half_mma(const char* what) {
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<double> A(16 * 16), B(16 * 8);
  std::vector<float> Af(A.size()), Bf(B.size());
  for (size_t i = 0; i < A.size(); ++i) {
    Af[i] = n(rng);
    A[i] = emu::mma_operand<T>(pack2<T>(Af[i], 0.f), 0);
  }
  for (size_t i = 0; i < B.size(); ++i) {
    Bf[i] = n(rng);
    B[i] = emu::mma_operand<T>(pack2<T>(Bf[i], 0.f), 0);
  }
  std::vector<float> d(16 * 8, NAN);
  uint32_t a[32][4], b[32][2];
  run_warp<16>(
      [&](int lane) {
        const int g = lane / 4, t = lane % 4;
        auto at = [&](int r, int c) { return pack2<T>(Af[r * 16 + c], Af[r * 16 + c + 1]); };
        a[lane][0] = at(g, 2 * t);
        a[lane][1] = at(g + 8, 2 * t);
        a[lane][2] = at(g, 2 * t + 8);
        a[lane][3] = at(g + 8, 2 * t + 8);
        b[lane][0] = pack2<T>(Bf[2 * t * 8 + g], Bf[(2 * t + 1) * 8 + g]);
        b[lane][1] = pack2<T>(Bf[(2 * t + 8) * 8 + g], Bf[(2 * t + 9) * 8 + g]);
      },
      [&](float (&acc)[4]) {
        const int lane = threadIdx.x % 32;
        mma_m16n8k16<T>(acc, a[lane], b[lane]);
      },
      d);
  check_product(what, A, B, 16, d, 1e-6);
}

void ldmatrix() {
  alignas(16) uint16_t m[4][8][8];
  for (int i = 0; i < 4; ++i)
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 8; ++c) m[i][r][c] = static_cast<uint16_t>(i * 1000 + r * 10 + c);
  for (int trans = 0; trans < 2; ++trans) {
    uint32_t got[32][4];
    emu::launch(
        [&] {
          const int lane = threadIdx.x % 32;
          uint32_t r[4];
          if (trans) ldmatrix_x4_trans(r, &m[lane / 8][lane % 8][0]);
          else ldmatrix_x4(r, &m[lane / 8][lane % 8][0]);
          for (int i = 0; i < 4; ++i) got[lane][i] = r[i];
        },
        1, 32);
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < 4; ++i) {
        const int g = l / 4, t = l % 4;
        const uint16_t lo = trans ? m[i][2 * t][g] : m[i][g][2 * t];
        const uint16_t hi = trans ? m[i][2 * t + 1][g] : m[i][g][2 * t + 1];
        EXPECT(got[l][i] == (static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16)), "ldmatrix%s lane %d m%d",
               trans ? ".trans" : "", l, i);
      }
  }
}

// Shared memory written before a barrier and read across threads after it,
// plus a lane exchange: every element right, over several blocks and both
// launch orders (the emulator alternates ascending and descending).
__global__ void barrier_kernel(int* out) {  // [grid, 256]
  __shared__ int s[256];
  s[threadIdx.x] = static_cast<int>(blockIdx.x * 1000 + threadIdx.x);
  __syncthreads();
  const int other = s[255 - threadIdx.x];
  __syncthreads();
  s[threadIdx.x] = -1;  // a thread reading late would see this
  out[blockIdx.x * 256 + threadIdx.x] = other + __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 5);
}
__global__ void non_uniform_block_barrier(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void non_uniform_shuffle(int* out) {
  if (threadIdx.x < 40) out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
}

void emulator_barriers() {
  std::vector<int> out(7 * 256);
  for (int launch = 0; launch < 2; ++launch) {
    std::fill(out.begin(), out.end(), -7);
    emu::launch([&] { barrier_kernel(out.data()); }, 7, 256);
    int wrong = 0;
    for (int b = 0; b < 7; ++b)
      for (int t = 0; t < 256; ++t) wrong += out[b * 256 + t] != b * 1000 + (255 - t) + (t ^ 5);
    EXPECT(wrong == 0, "emulator barriers, launch %d: %d wrong", launch, wrong);
  }
  // A non-uniform barrier must abort the program, not hang or pass.
  for (int k = 0; k < 2; ++k) {
    fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
      freopen("/dev/null", "w", stderr);
      if (k == 0) emu::launch([&] { non_uniform_block_barrier(out.data()); }, 3, 64);
      else emu::launch([&] { non_uniform_shuffle(out.data()); }, 1, 64);
      _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "emulator: a non-uniform %s barrier aborts",
           k == 0 ? "block" : "warp");
  }
}

}  // namespace

int main() {
  emulator_barriers();
  tf32_rounding();
  tf32_mma();
  half_mma<__half>("f16");
  half_mma<__nv_bfloat16>("bf16");
  ldmatrix();
  return emu_test::finish();
}
