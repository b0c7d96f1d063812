#pragma once
#include <cstdint>
#include <cstring>
struct __nv_bfloat16 { uint16_t bits; };
inline float __bfloat162float(__nv_bfloat16 h) { uint32_t u = static_cast<uint32_t>(h.bits) << 16; float f; std::memcpy(&f, &u, 4); return f; }
#include "core/dtype.h"
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{tokensieve::f32_to_bf16(f)}; }
