#include "pypatch/util/parallel_for.h"

#include <atomic>     // task counter, stop flag
#include <chrono>     // interrupt polling interval
#include <exception>  // exception_ptr
#include <mutex>      // first-exception capture
#include <thread>     // std::thread
#include <vector>     // worker list

#ifdef __linux__
#include <sched.h>  // sched_getaffinity: respect taskset / cgroup cpusets
#endif

namespace pypatch {
namespace {

std::atomic<int> g_default_threads{0};

int available_cpus() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

}  // namespace

int default_num_threads() {
  const int n = g_default_threads.load();
  return n > 0 ? n : available_cpus();
}

void set_default_num_threads(int n) { g_default_threads.store(n > 0 ? n : 0); }

int resolve_num_threads(int requested, int64_t max_useful) {
  int64_t n = requested > 0 ? requested : default_num_threads();
  if (n > max_useful) n = max_useful;
  return n < 1 ? 1 : static_cast<int>(n);
}

void parallel_for(int64_t n_tasks, int num_threads, const std::function<void(int64_t, int)>& fn,
                  const std::function<void()>& interrupt) {
  if (n_tasks <= 0) return;
  if (num_threads > n_tasks) num_threads = static_cast<int>(n_tasks);
  if (num_threads < 1) num_threads = 1;
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  std::exception_ptr error;
  std::mutex error_mu;
  auto fail = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(error_mu);
    if (!error) error = e;
    stop.store(true);
  };
  auto work = [&](int worker, bool caller) {
    using clock = std::chrono::steady_clock;
    auto last_poll = clock::now();
    try {
      while (!stop.load(std::memory_order_relaxed)) {
        if (caller && interrupt && clock::now() - last_poll > std::chrono::milliseconds(50)) {
          interrupt();
          last_poll = clock::now();
        }
        const int64_t task = next.fetch_add(1);
        if (task >= n_tasks) break;
        fn(task, worker);
      }
    } catch (...) {
      fail(std::current_exception());
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(num_threads - 1);
  try {
    for (int w = 1; w < num_threads; ++w) threads.emplace_back(work, w, false);
  } catch (...) {  // could not start a thread: stop and report after joining the others
    fail(std::current_exception());
  }
  work(0, true);
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace pypatch
