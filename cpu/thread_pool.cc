// A small work-sharing pool: a job is an index range claimed through an
// atomic counter by the caller and by any idle worker. Several callers can
// run jobs at once (async calls arrive on libuv's threads); workers serve the
// oldest job first. The pool is process-wide and never destroyed, so it is
// shared by every Node environment (main thread and worker_threads) and has
// no destructor-order problems at exit.
//
// Workers (for a new job) and callers (for their job's last index) spin for
// up to 50 µs before they block: a ToMe step is three jobs of a few hundred
// microseconds, and a futex sleep and wake per job, plus the wake-up latency
// before the worker starts, cost more (ToMe match 577x1024, 2 threads,
// interleaved A/B: 1.47-1.50 ms with the spin, 1.55-1.60 without).
#include "cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tokensieve/runtime.h"

namespace tokensieve {
namespace cpu {
namespace {

struct Job {
  const std::function<void(int64_t)>* fn;
  int64_t n;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable finished;
};

class Pool {
 public:
  static Pool& instance() {
    static Pool* pool = new Pool();  // intentionally leaked, see above
    return *pool;
  }

  int size() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(workers_.size()) + 1;
  }

  void resize(int total) {
    total = std::max(1, total);
    std::vector<std::thread> retired;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const int want = total - 1;
      if (want == static_cast<int>(workers_.size())) return;
      ++generation_;  // every current worker exits after its current index
      posted_.fetch_add(1);
      retired.swap(workers_);
      for (int i = 0; i < want; ++i) workers_.emplace_back(&Pool::worker_loop, this, generation_);
    }
    wake_.notify_all();
    for (auto& t : retired) t.join();
  }

  void run(int64_t n, const std::function<void(int64_t)>& fn) {
    if (n <= 0) return;
    bool solo;
    {
      std::lock_guard<std::mutex> lock(mu_);
      solo = workers_.empty();
    }
    if (n == 1 || solo) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->n = n;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(job);
      posted_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work_on(*job);
    if (!spin_until([&] { return job->done.load(std::memory_order_acquire) == job->n; })) {
      std::unique_lock<std::mutex> lock(job->mu);
      job->finished.wait(lock, [&] { return job->done.load() == job->n; });
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it != queue_.end()) queue_.erase(it);
  }

 private:
  Pool() { resize(default_num_threads()); }

  static void work_on(Job& job) {
    for (;;) {
      const int64_t i = job.next.fetch_add(1);
      if (i >= job.n) return;
      (*job.fn)(i);
      if (job.done.fetch_add(1) + 1 == job.n) {
        std::lock_guard<std::mutex> lock(job.mu);
        job.finished.notify_all();
      }
    }
  }

  void worker_loop(uint64_t generation) {
    uint64_t seen = posted_.load();
    for (;;) {
      // Only a shortcut past the sleep: the locked check below decides.
      spin_until([&] { return posted_.load(std::memory_order_acquire) != seen; });
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] {
          if (generation != generation_) return true;
          // Drop exhausted jobs so workers do not spin on them.
          while (!queue_.empty() && queue_.front()->next.load() >= queue_.front()->n)
            queue_.pop_front();
          return !queue_.empty();
        });
        if (generation != generation_) return;
        job = queue_.front();
        seen = posted_.load();
      }
      work_on(*job);
    }
  }

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> workers_;
  uint64_t generation_ = 0;
  std::atomic<uint64_t> posted_{0};  // jobs pushed plus resizes: what the spins watch
};

}  // namespace

int default_num_threads() {
  if (const char* env = std::getenv("TOKENSIEVE_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return std::min(n, 1024);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

void set_num_threads(int n) { Pool::instance().resize(n <= 0 ? default_num_threads() : n); }

int num_threads() { return Pool::instance().size(); }

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  Pool::instance().run(n, fn);
}

Status for_units(int64_t units, int64_t work_per_unit, const std::function<Status(int64_t, bool)>& fn) {
  std::vector<Status> st(static_cast<size_t>(units));
  if (units >= 4 || work_per_unit < (int64_t{1} << 16)) {
    parallel_for(units, [&](int64_t u) { st[u] = fn(u, false); });
  } else {
    for (int64_t u = 0; u < units; ++u) st[u] = fn(u, true);
  }
  for (auto& s : st)
    if (!s.ok()) return s;
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
