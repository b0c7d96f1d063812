#include "cpu/host_pool.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace tokensieve {
namespace cpu {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMinPooled = size_t{64} << 10;
constexpr size_t kIdleCapMax = size_t{256} << 20;
constexpr auto kIdleTime = std::chrono::seconds(5);

// Four classes per power of two (at most 25% unused): requests that vary a
// little from one call to the next (top-k's k, a crop) still reuse a block.
size_t size_class(size_t bytes) {
  if (bytes < kMinPooled) return (bytes + 63) / 64 * 64;
  const int log2 = 63 - __builtin_clzll(static_cast<unsigned long long>(bytes));
  const size_t step = size_t{1} << (log2 - 2);
  return (bytes + step - 1) / step * step;
}

// A sixteenth of the machine's memory, at most kIdleCapMax.
size_t idle_cap() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return kIdleCapMax;
  return std::min(kIdleCapMax, static_cast<size_t>(pages) / 16 * static_cast<size_t>(page));
}

class Pool {
 public:
  static Pool& instance() {
    static Pool* pool = new Pool();  // leaked: blocks may come back during exit
    return *pool;
  }

  char* take(size_t cls) {
    char* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // The most recently returned block of the class: the warmest in cache.
      for (size_t i = idle_.size(); i-- > 0;)
        if (idle_[i].size == cls) {
          p = idle_[i].p;
          idle_bytes_ -= cls;
          idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
          break;
        }
    }
    if (p == nullptr) p = static_cast<char*>(std::aligned_alloc(64, cls));
    return p;
  }

  // Runs in a shared_ptr deleter, so it must not throw: a block it cannot
  // keep (no memory for the list, no trimmer thread) is freed instead.
  void give(char* p, size_t cls) noexcept {
    bool keep = cls <= cap_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (keep && !trimmer_started_) {
        try {
          std::thread(&Pool::trim_loop, this).detach();
          trimmer_started_ = true;
        } catch (...) {
          keep = false;  // without the thread nothing would free idle blocks
        }
      }
      if (keep) {
        try {
          idle_.push_back(Idle{p, cls, Clock::now()});
        } catch (...) {
          keep = false;
        }
      }
      if (keep) {
        idle_bytes_ += cls;
        // The oldest go first (idle_ is in return order) until under the cap.
        size_t drop = 0;
        while (idle_bytes_ > cap_) {
          idle_bytes_ -= idle_[drop].size;
          std::free(idle_[drop++].p);
        }
        idle_.erase(idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(drop));
      }
    }
    if (!keep) std::free(p);
    wake_.notify_one();
  }

  HostCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return HostCacheStats{idle_bytes_, idle_.size()};
  }

  size_t empty() {
    std::vector<Idle> all;
    size_t bytes;
    {
      std::lock_guard<std::mutex> lock(mu_);
      all.swap(idle_);
      bytes = idle_bytes_;
      idle_bytes_ = 0;
    }
    for (const Idle& b : all) std::free(b.p);
    return bytes;
  }

 private:
  struct Idle {
    char* p;
    size_t size;
    Clock::time_point since;
  };

  Pool() : cap_(idle_cap()) {}

  // Frees blocks idle past kIdleTime, sleeping until the oldest one's time
  // (or until a block comes back to an empty pool).
  void trim_loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (idle_.empty()) {
        wake_.wait(lock);
        continue;
      }
      const Clock::time_point due = idle_.front().since + kIdleTime;
      if (Clock::now() < due) {
        wake_.wait_until(lock, due);
        continue;
      }
      const Clock::time_point now = Clock::now();
      size_t drop = 0;
      while (drop < idle_.size() && now - idle_[drop].since >= kIdleTime) {
        idle_bytes_ -= idle_[drop].size;
        std::free(idle_[drop++].p);
      }
      idle_.erase(idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(drop));
    }
  }

  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Idle> idle_;  // in return order
  size_t idle_bytes_ = 0;
  bool trimmer_started_ = false;
  const size_t cap_;
};

}  // namespace

std::shared_ptr<char> host_block(size_t bytes) {
  const size_t cls = size_class(bytes);
  if (cls < kMinPooled) {
    char* p = static_cast<char*>(std::aligned_alloc(64, cls));
    if (p == nullptr) return nullptr;
    return std::shared_ptr<char>(p, std::free);
  }
  char* p = Pool::instance().take(cls);
  if (p == nullptr) return nullptr;
  return std::shared_ptr<char>(p, [cls](char* q) { Pool::instance().give(q, cls); });
}

HostCacheStats host_cache_stats() { return Pool::instance().stats(); }

size_t empty_host_cache() { return Pool::instance().empty(); }

}  // namespace cpu
}  // namespace tokensieve
