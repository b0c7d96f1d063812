// Host side of the benchmark helpers: the uniform fill (the CUDA kernel in
// cuda/bench.cu computes the same values).
#include <cstdint>

#include "core/dtype.h"
#include "cpu/thread_pool.h"
#include "tokensieve/bench.h"

namespace tokensieve {
namespace cpu {
namespace {

// splitmix64 of seed ⊕ index, top 24 bits as a float in [0, 1): exact in f32,
// so lo + (hi − lo)·u rounds identically on the host and on the device.
inline float unit(uint64_t seed, uint64_t i) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

}  // namespace

Status fill_uniform(const FillUniformParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.out.on_host()) return Status(Code::kDevice, "cpu::fill_uniform needs a host tensor");
  const int64_t n = p.out.numel();
  const float span = p.hi - p.lo;
  constexpr int64_t kChunk = 1 << 16;
  parallel_for((n + kChunk - 1) / kChunk, [&](int64_t c) {
    const int64_t end = n < (c + 1) * kChunk ? n : (c + 1) * kChunk;
    for (int64_t i = c * kChunk; i < end; ++i) {
      // Two roundings (no FMA) on both back ends, so the values agree bit for bit.
      const float v = span * unit(p.seed, static_cast<uint64_t>(i)) + p.lo;
      switch (p.out.dtype) {
        case DType::kF32: static_cast<float*>(p.out.data)[i] = v; break;
        case DType::kF16: static_cast<uint16_t*>(p.out.data)[i] = f32_to_f16(v); break;
        default: static_cast<uint16_t*>(p.out.data)[i] = f32_to_bf16(v); break;
      }
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
