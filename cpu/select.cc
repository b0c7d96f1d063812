// CPU top-k and gather.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/rank_key.h"
#include "cpu/thread_pool.h"
#include "tokensieve/select.h"

namespace tokensieve {
namespace cpu {
namespace {

// The top k by a radix step on the rank keys (cpu/rank_key.h) and a
// selection among one bucket's keys, which replaced nth_element over
// indices with a comparator that loaded both values through the index and
// tested for NaN on every comparison (top-k 12,544 k1254 on a Zen 4 VM:
// 57 → 40 µs a call; 4,784 k1196 32 → 18 µs; 16 × 576 k144 34 → 23 µs).
constexpr int kBucketBits = 11;

}  // namespace

Status topk(const TopkParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.scores.on_host()) return Status(Code::kDevice, "cpu::topk needs host tensors");
  const int64_t B = p.scores.shape[0], N = p.scores.shape[1], k = p.k;
  const size_t esize = dtype_size(p.scores.dtype);
  parallel_for(B, [&](int64_t b) {
    const char* src = static_cast<const char*>(p.scores.data) + b * p.scores.strides[0] * static_cast<int64_t>(esize);
    std::vector<float> converted;
    const float* v = reinterpret_cast<const float*>(src);
    if (p.scores.dtype != DType::kF32) {
      converted.resize(static_cast<size_t>(N));
      isa().to_f32(src, p.scores.dtype, N, converted.data());
      v = converted.data();
    }
    // The k-th smallest key T by a radix step: a histogram of the keys' top
    // 11 bits finds the bucket that holds it, and only that bucket's keys
    // are selected among. The top k are then exactly the keys <= T (keys
    // are distinct), found in one scan in index order.
    std::vector<uint32_t> hi(static_cast<size_t>(N));  // [N] rank_key of each score
    std::vector<int32_t> hist(size_t{1} << kBucketBits, 0);
    for (int64_t i = 0; i < N; ++i) {
      const uint32_t h = rank_key(v[i]);
      hi[static_cast<size_t>(i)] = h;
      hist[h >> (32 - kBucketBits)]++;
    }
    uint32_t bucket = 0;
    int64_t before = 0;  // keys in the buckets below `bucket`
    while (before + hist[bucket] < k) before += hist[bucket++];
    std::vector<uint64_t> cand;  // the bucket's keys
    cand.reserve(static_cast<size_t>(hist[bucket]));
    for (int64_t i = 0; i < N; ++i)
      if (hi[static_cast<size_t>(i)] >> (32 - kBucketBits) == bucket) cand.push_back(rank_key_of(hi[static_cast<size_t>(i)], i));
    const size_t need = static_cast<size_t>(k - before);  // 1 <= need <= cand.size()
    std::nth_element(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(need - 1), cand.end());
    const uint64_t T = cand[need - 1];
    int32_t* out_idx = p.indices.ptr<int32_t>() + b * k;
    if (p.order_by_score) {
      std::vector<uint64_t> top;
      top.reserve(static_cast<size_t>(k));
      for (int64_t i = 0; i < N; ++i) {
        const uint64_t key = rank_key_of(hi[static_cast<size_t>(i)], i);
        if (key <= T) top.push_back(key);
      }
      std::sort(top.begin(), top.end());
      for (int64_t i = 0; i < k; ++i) out_idx[i] = static_cast<int32_t>(top[static_cast<size_t>(i)] & 0xffffffffu);
    } else {
      // Branch-free: each index is written, and kept when its key is in.
      int64_t w = 0;
      for (int64_t i = 0; i < N && w < k; ++i) {
        out_idx[w] = static_cast<int32_t>(i);
        w += rank_key_of(hi[static_cast<size_t>(i)], i) <= T ? 1 : 0;
      }
    }
    if (p.values.data != nullptr) {
      float* out_val = p.values.ptr<float>() + b * k;
      for (int64_t i = 0; i < k; ++i) out_val[i] = v[out_idx[i]];
    }
  });
  return Status::Ok();
}

Status gather(const GatherParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.x.on_host()) return Status(Code::kDevice, "cpu::gather needs host tensors");
  const int64_t B = p.x.shape[0], N = p.x.shape[1], C = p.x.shape[2];
  const int64_t K = p.indices.shape[1];
  const int32_t* idx = p.indices.ptr<int32_t>();
  for (int64_t i = 0; i < B * K; ++i) {
    if (idx[i] < 0 || idx[i] >= N)
      return Status(Code::kRange, "expected indices in [0, " + std::to_string(N) + ") but got " +
                                      std::to_string(idx[i]) + " at [" + std::to_string(i / K) +
                                      ", " + std::to_string(i % K) + "]");
  }
  const int64_t esize = static_cast<int64_t>(dtype_size(p.x.dtype));
  const int64_t row_bytes = C * esize;
  const char* x = static_cast<const char*>(p.x.data);
  char* out = static_cast<char*>(p.out.data);
  // Rows are copied in blocks so small C does not pay one task per row.
  const int64_t rows_per_task = std::max<int64_t>(1, (64 * 1024) / std::max<int64_t>(1, row_bytes));
  const int64_t tasks = (B * K + rows_per_task - 1) / rows_per_task;
  parallel_for(tasks, [&](int64_t t) {
    const int64_t end = std::min(B * K, (t + 1) * rows_per_task);
    for (int64_t i = t * rows_per_task; i < end; ++i) {
      const int64_t b = i / K;
      const char* src = x + (b * p.x.strides[0] + static_cast<int64_t>(idx[i]) * p.x.strides[1]) * esize;
      std::memcpy(out + i * row_bytes, src, static_cast<size_t>(row_bytes));
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
