#pragma once
#include <cstdint>
#include <cstring>
struct __half { uint16_t bits; };
inline float __half2float(__half h) {
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t mant = h.bits & 0x3ffu;
  uint32_t out;
  if (exp == 0x1f) out = sign | 0x7f800000u | (mant << 13);
  else if (exp != 0) out = sign | ((exp + 112u) << 23) | (mant << 13);
  else if (mant == 0) out = sign;
  else { int e = -1; do { ++e; mant <<= 1; } while ((mant & 0x400u) == 0); out = sign | static_cast<uint32_t>(112 - e) << 23 | ((mant & 0x3ffu) << 13); }
  float f; std::memcpy(&f, &out, 4); return f;
}
// f32 → half, round to nearest even: the hardware's rounding, which the CPU
// back end's converter implements.
#include "core/dtype.h"
inline __half __float2half_rn(float f) { return __half{tokensieve::f32_to_f16(f)}; }
