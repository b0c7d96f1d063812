#include "binding/staging_pool.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace tokensieve {
namespace binding {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMinPooled = size_t{64} << 10;
constexpr size_t kIdleCapMax = size_t{256} << 20;
constexpr auto kIdleSeconds = std::chrono::seconds(5);

// Four classes per power of two (at most 25% unused): a call whose spans
// vary a little from one call to the next (top-k's k, a crop) still reuses.
size_t size_class(size_t bytes) {
  if (bytes < kMinPooled) return (bytes + 63) / 64 * 64;
  const int log2 = 63 - __builtin_clzll(static_cast<unsigned long long>(bytes));
  const size_t step = size_t{1} << (log2 - 2);
  return (bytes + step - 1) / step * step;
}

// An idle cap of a sixteenth of the machine's memory, at most kIdleCapMax.
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
    std::vector<char*> freed;
    char* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drop_stale(Clock::now(), &freed);
      // The most recently returned block of the class: the warmest in cache.
      for (size_t i = idle_.size(); i-- > 0;)
        if (idle_[i].size == cls) {
          p = idle_[i].p;
          idle_bytes_ -= cls;
          idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
          break;
        }
    }
    for (char* f : freed) std::free(f);
    if (p == nullptr) p = static_cast<char*>(std::aligned_alloc(64, cls));
    return p;
  }

  void give(char* p, size_t cls) {
    std::vector<char*> freed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const Clock::time_point now = Clock::now();
      drop_stale(now, &freed);
      if (cls > cap_) {
        freed.push_back(p);
      } else {
        idle_.push_back(Idle{p, cls, now});
        idle_bytes_ += cls;
        // Oldest first (idle_ is in return order) until under the cap.
        size_t drop = 0;
        while (idle_bytes_ > cap_) {
          idle_bytes_ -= idle_[drop].size;
          freed.push_back(idle_[drop++].p);
        }
        idle_.erase(idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(drop));
      }
    }
    for (char* f : freed) std::free(f);
  }

  // Frees the blocks idle past kIdleSeconds (a call staging only small spans).
  void trim() {
    std::vector<char*> freed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drop_stale(Clock::now(), &freed);
    }
    for (char* f : freed) std::free(f);
  }

  StagingCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return StagingCacheStats{idle_bytes_, idle_.size()};
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

  // Blocks idle past kIdleSeconds go (idle_ is in return order, oldest first).
  void drop_stale(Clock::time_point now, std::vector<char*>* freed) {
    size_t drop = 0;
    while (drop < idle_.size() && now - idle_[drop].since > kIdleSeconds) {
      idle_bytes_ -= idle_[drop].size;
      freed->push_back(idle_[drop++].p);
    }
    idle_.erase(idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(drop));
  }

  std::mutex mu_;
  std::vector<Idle> idle_;
  size_t idle_bytes_ = 0;
  const size_t cap_;
};

}  // namespace

std::shared_ptr<char> staging_block(size_t bytes) {
  const size_t cls = size_class(bytes);
  if (cls < kMinPooled) {
    Pool::instance().trim();
    char* p = static_cast<char*>(std::aligned_alloc(64, cls));
    if (p == nullptr) return nullptr;
    return std::shared_ptr<char>(p, std::free);
  }
  char* p = Pool::instance().take(cls);
  if (p == nullptr) return nullptr;
  return std::shared_ptr<char>(p, [cls](char* q) { Pool::instance().give(q, cls); });
}

StagingCacheStats staging_cache_stats() { return Pool::instance().stats(); }

size_t empty_staging_cache() { return Pool::instance().empty(); }

}  // namespace binding
}  // namespace tokensieve
