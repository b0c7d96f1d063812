// Measures this machine's ceilings for the benchmarks' "fraction of roof":
// FMA throughput (and the bf16 dot tile's, where the CPU has it),
// vector-exp throughput and copy bandwidth, each on every thread of the
// shared pool at once.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <vector>

#include "cpu/isa.h"
#include "cpu/thread_pool.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace cpu {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best of a few runs of fn (which runs on all threads) in seconds.
template <typename F>
double best_time(F fn, int runs) {
  double best = 1e30;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

std::atomic<float> sink{0};

}  // namespace

Roof measure_roof() {
  const IsaKernels& K = isa();
  Roof roof;
  roof.threads = num_threads();
  const int64_t T = roof.threads;

  const int64_t fma_iters = 20000000;
  const double t_fma = best_time([&] {
    parallel_for(T, [&](int64_t i) { sink.store(K.fma_probe(fma_iters, 1.0f + static_cast<float>(i))); });
  }, 3);
  roof.fma_gflops = static_cast<double>(T) * fma_iters * 12 * K.fma_lanes * 2 / t_fma / 1e9;
  if (const Bf16DotKernels* dot = bf16_dot()) {
    const double t_dot = best_time([&] {
      parallel_for(T, [&](int64_t i) { sink.store(dot->dot_probe(fma_iters, 1.0f + static_cast<float>(i))); });
    }, 3);
    roof.bf16_dot_gflops = static_cast<double>(T) * fma_iters * 16 * 32 * 2 / t_dot / 1e9;
  }

  // exp_shift_sum overwrites its row, so each rep first copies the inputs
  // back (a memcpy of 16 KiB within L1, counted as exp time: a floor close
  // to the peak). The refill used to be a loop compiled for baseline x86-64 (an
  // integer modulo and a conversion per element) that took more time than
  // the exps: the probe reported 1.2–1.6 G exp/s per thread on the Zen 5
  // VM against 3.9 measured in a harness, and every "% (exp)" was inflated
  // by up to 2.5×.
  const int64_t n = 4096, reps = 20000;
  std::vector<float> inputs(static_cast<size_t>(n));  // in [-15.75, 0]
  for (int64_t i = 0; i < n; ++i) inputs[static_cast<size_t>(i)] = -static_cast<float>(i % 64) * 0.25f;
  const double t_exp = best_time([&] {
    parallel_for(T, [&](int64_t) {
      std::vector<float> x(static_cast<size_t>(n));
      float acc = 0;
      for (int64_t r = 0; r < reps; ++r) {
        std::memcpy(x.data(), inputs.data(), static_cast<size_t>(n) * sizeof(float));
        acc += K.exp_shift_sum(x.data(), n, 0.0f);
      }
      sink.store(acc);
    });
  }, 3);
  roof.exp_per_second = static_cast<double>(T) * n * reps / t_exp;

  const size_t bytes = 256u << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  const int64_t chunks = T * 8;
  const size_t chunk = bytes / static_cast<size_t>(chunks);
  const double t_copy = best_time([&] {
    parallel_for(chunks, [&](int64_t c) {
      std::memcpy(dst.data() + c * chunk, src.data() + c * chunk, chunk);
    });
  }, 5);
  roof.copy_gbytes_per_second = 2.0 * static_cast<double>(chunk * chunks) / t_copy / 1e9;
  return roof;
}

}  // namespace cpu
}  // namespace tokensieve
