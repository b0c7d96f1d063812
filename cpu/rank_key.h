// Score ranks as plain integers, for selections that sort or select many
// scores (top-k, ToMe's edge order): one 64-bit key per score, compared
// with no NaN tests and no loads through an index.
#pragma once

#include <cstdint>
#include <cstring>

namespace tokensieve {
namespace cpu {

// Ascends as the score descends: larger values first, every NaN last (all
// ones), −0 equal to +0. Branch-free (random scores made every branch of
// the comparator version a coin toss).
inline uint32_t rank_key(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  u = (u << 1) == 0 ? 0u : u;  // −0 ties +0
  const uint32_t ascending = u ^ (static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u);
  return nan ? 0xffffffffu : ~ascending;
}

// (rank << 32) | i for rank = rank_key(v): ascends exactly when i ranks
// before — larger value first, NaN last, ties (−0 and +0 equal, every NaN
// equal) to the lower index i (0 <= i < 2^32).
inline uint64_t rank_key_of(uint32_t rank, int64_t i) { return (uint64_t{rank} << 32) | static_cast<uint64_t>(i); }
inline uint64_t rank_key(float v, int64_t i) { return rank_key_of(rank_key(v), i); }

}  // namespace cpu
}  // namespace tokensieve
