// The one CPU thread pool every kernel shares. Callers (the JS thread or one
// of libuv's workers) take part in their own loops, so concurrent async calls
// share the same workers instead of each spawning a team.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "tokensieve/tensor.h"

namespace tokensieve {
namespace cpu {

// Spins (with a pause hint) until done() or about kSpinMicros have passed;
// returns done()'s last value. The pool's workers and callers spin this
// long before they block; a job's own waits between its tasks use it too.
constexpr int kSpinMicros = 50;
template <class Done>
bool spin_until(Done&& done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (std::chrono::steady_clock::now() >= until) return done();
  }
}

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
