#pragma once
// cub::DeviceRadixSort::SortPairs for the emulator: a stable ascending sort
// by the key bits [begin_bit, end_bit), as CUB's (LSD radix sort, stable).
#include <algorithm>
#include <cuda_runtime.h>
#include <cstdint>
#include <vector>
namespace cub {
struct DeviceRadixSort {
  template <class K, class V, class N>
  static cudaError_t SortPairs(void* tmp, size_t& bytes, const K* kin, K* kout, const V* vin, V* vout, N n,
                               int begin_bit = 0, int end_bit = sizeof(K) * 8, cudaStream_t = 0) {
    if (tmp == nullptr) { bytes = 1000; return cudaSuccess; }
    const int width = end_bit - begin_bit;
    const K mask = width >= static_cast<int>(sizeof(K) * 8) ? ~K{0} : ((K{1} << width) - 1);
    std::vector<std::pair<K, V>> v;
    v.reserve(static_cast<size_t>(n));
    for (N i = 0; i < n; ++i) v.push_back({kin[i], vin[i]});
    std::stable_sort(v.begin(), v.end(),
                     [&](const auto& a, const auto& b) { return ((a.first >> begin_bit) & mask) < ((b.first >> begin_bit) & mask); });
    for (N i = 0; i < n; ++i) { kout[i] = v[static_cast<size_t>(i)].first; vout[i] = v[static_cast<size_t>(i)].second; }
    return cudaSuccess;
  }
};
}  // namespace cub
