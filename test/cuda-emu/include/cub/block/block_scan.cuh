#pragma once
#include <cuda_runtime.h>
namespace cub {
// Same contract as CUB: a barrier is needed before temp storage is reused.
template <class T, int N>
struct BlockScan {
  struct TempStorage { T buf[N]; };
  TempStorage& t;
  explicit BlockScan(TempStorage& s) : t(s) {}
  void ExclusiveSum(T in, T& out, T& total) {
    t.buf[threadIdx.x] = in;
    __syncthreads();
    T s = T(), all = T();
    for (int i = 0; i < N; ++i) { if (i < static_cast<int>(threadIdx.x)) s += t.buf[i]; all += t.buf[i]; }
    out = s; total = all;
  }
};
}  // namespace cub
