// CPU top-k and gather.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/thread_pool.h"
#include "tokensieve/select.h"

namespace tokensieve {
namespace cpu {
namespace {

// Strict "ranks before": larger value, NaN last, ties to the lower index.
struct RanksBefore {
  const float* v;
  bool operator()(int32_t a, int32_t b) const {
    const float x = v[a], y = v[b];
    const bool xn = std::isnan(x), yn = std::isnan(y);
    if (xn != yn) return yn;          // a number ranks before NaN
    if (!xn && x != y) return x > y;  // both numbers
    return a < b;                     // equal, or both NaN
  }
};

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
    std::vector<int32_t> idx(static_cast<size_t>(N));
    std::iota(idx.begin(), idx.end(), 0);
    const RanksBefore before{v};
    if (k < N) std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), before);
    if (p.order_by_score)
      std::sort(idx.begin(), idx.begin() + k, before);
    else
      std::sort(idx.begin(), idx.begin() + k);
    int32_t* out_idx = p.indices.ptr<int32_t>() + b * k;
    std::copy(idx.begin(), idx.begin() + k, out_idx);
    if (p.values.data != nullptr) {
      float* out_val = p.values.ptr<float>() + b * k;
      for (int64_t i = 0; i < k; ++i) out_val[i] = v[idx[static_cast<size_t>(i)]];
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
