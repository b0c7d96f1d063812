// The one CPU thread pool every kernel shares. Callers (the JS thread or one
// of libuv's workers) take part in their own loops, so concurrent async calls
// share the same workers instead of each spawning a team.
#pragma once

#include <cstdint>
#include <functional>

#include "tokensieve/tensor.h"

namespace tokensieve {
namespace cpu {

// Runs fn(i) for every i in [0, n) on the pool and the calling thread;
// returns when all are done. fn must not throw.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

// Runs fn(u, parallel) over `units` independent units (batch rows,
// segments): across units, fn(u, false), when there are enough of them to
// keep every thread busy or each is small; else one after the other with
// fn(u, true), each parallel inside. Returns the error of the first unit (in
// order) that failed.
Status for_units(int64_t units, int64_t work_per_unit, const std::function<Status(int64_t, bool)>& fn);

}  // namespace cpu
}  // namespace tokensieve
