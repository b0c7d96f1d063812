// The one CPU thread pool every kernel shares. Callers (the JS thread or one
// of libuv's workers) take part in their own loops, so concurrent async calls
// share the same workers instead of each spawning a team.
#pragma once

#include <cstdint>
#include <functional>

namespace tokensieve {
namespace cpu {

// Runs fn(i) for every i in [0, n) on the pool and the calling thread;
// returns when all are done. fn must not throw.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace cpu
}  // namespace tokensieve
