#pragma once
#include <algorithm>
#include <cuda_runtime.h>
#include <vector>
namespace cub {
struct DeviceSegmentedSort {
  template <class K, class V, class BI, class EI>
  static cudaError_t StableSortPairsDescending(void* tmp, size_t& bytes, const K* kin, K* kout, const V* vin, V* vout,
                                               int64_t n, int64_t segs, BI begin, EI end, cudaStream_t = 0) {
    if (tmp == nullptr) { bytes = 1000; return cudaSuccess; }
    (void)n;
    for (int64_t s = 0; s < segs; ++s) {
      std::vector<std::pair<K, V>> v;
      for (int64_t i = begin[s]; i < end[s]; ++i) v.push_back({kin[i], vin[i]});
      std::stable_sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.first > b.first; });
      for (int64_t i = begin[s]; i < end[s]; ++i) { kout[i] = v[i - begin[s]].first; vout[i] = v[i - begin[s]].second; }
    }
    return cudaSuccess;
  }
};
}  // namespace cub
