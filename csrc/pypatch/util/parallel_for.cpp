// A persistent pool of helper threads shared by all calls (no OpenMP). A call posts up to
// num_threads - 1 "help" requests for its job; the calling thread works on the job too, and
// is the only one that polls `interrupt`. Tasks are claimed from an atomic counter; helpers
// that arrive after the tasks ran out leave without touching the job's function, so the
// caller only waits for helpers that are inside the job. Concurrent calls from several threads
// share the pool. After fork() the child starts a fresh pool (threads do not survive fork).
#include "pypatch/util/parallel_for.h"

#include <algorithm>           // min
#include <atomic>              // counters
#include <chrono>              // interrupt polling interval
#include <condition_variable>  // sleeping helpers, waiting caller
#include <deque>               // request queue
#include <exception>           // exception_ptr
#include <memory>              // shared_ptr
#include <mutex>               // locks
#include <thread>              // std::thread
#include <vector>              // workers

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // _mm_pause
#endif

#include <unistd.h>  // getpid: detect fork

#ifdef __linux__
#include <sched.h>  // sched_getaffinity: respect taskset / cgroup cpusets
#endif

namespace pypatch {
namespace {

std::atomic<int> g_default_threads{0};

// Bounded spinning before a thread parks on a condition variable: a futex wake-up of a parked
// thread took 2-33 us on a 2-vCPU KVM guest, and the caller's wait for a helper's last task
// (microseconds) paid a second one. Helpers spin after each job (catching back-to-back calls)
// and after parallel_prewake(); the caller spins before sleeping on the job. Every spin ends
// after kSpin: an idle pool parks and burns no CPU.
constexpr auto kSpin = std::chrono::microseconds(50);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until ready() or kSpin elapsed; returns ready().
template <class Ready>
bool spin_until(Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return ready();
  }
}

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

struct Job {
  int64_t n_tasks;
  const std::function<void(int64_t, int)>* fn;  // valid while the caller waits
  std::atomic<int64_t> next{0};
  std::atomic<int> next_worker{1};  // worker ids: caller is 0
  std::atomic<int> active{0};       // helpers inside run()
  std::mutex mu;
  std::condition_variable done;
  std::exception_ptr error;

  void fail(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mu);
    if (!error) error = e;
    next.store(n_tasks);  // nobody claims another task
  }
  void run(int worker, const std::function<void()>* interrupt) {
    using clock = std::chrono::steady_clock;
    auto last_poll = clock::now();
    try {
      for (;;) {
        if (interrupt && *interrupt && clock::now() - last_poll > std::chrono::milliseconds(50)) {
          (*interrupt)();
          last_poll = clock::now();
        }
        const int64_t task = next.fetch_add(1);
        if (task >= n_tasks) break;
        (*fn)(task, worker);
      }
    } catch (...) {
      fail(std::current_exception());
    }
  }
  void help() {  // called by pool threads
    active.fetch_add(1);
    if (next.load() < n_tasks) run(next_worker.fetch_add(1), nullptr);
    std::lock_guard<std::mutex> lock(mu);
    if (active.fetch_sub(1) == 1) done.notify_all();
  }
};

class Pool {
 public:
  void submit(const std::shared_ptr<Job>& job, int helpers) {
    int wake = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      grow(helpers);
      for (int i = 0; i < helpers; ++i) queue_.push_back(job);
      pending_.store(queue_.size());
      wake = std::min(helpers, sleepers_);
    }
    for (int i = 0; i < wake; ++i) cv_.notify_one();  // spinning helpers need no wake-up
  }
  /// Work for `helpers` threads is coming soon: parked helpers wake up and spin (bounded), so
  /// their wake-up latency overlaps the caller's serial set-up.
  void prewake(int helpers) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      grow(helpers);
      if (sleepers_ == 0) return;
      ++wake_gen_;
    }
    cv_.notify_all();
  }

 private:
  void grow(int helpers) {  // under mu_; threads live forever
    while (static_cast<int>(threads_) < helpers) {
      std::thread([this] { loop(); }).detach();
      ++threads_;
    }
  }
  void loop() {
    for (;;) {
      spin_until([this] { return pending_.load() > 0; });
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (queue_.empty()) {  // park until work or a pre-wake
          const uint64_t gen = wake_gen_;
          ++sleepers_;
          cv_.wait(lock, [&] { return !queue_.empty() || wake_gen_ != gen; });
          --sleepers_;
          if (queue_.empty()) continue;  // pre-woken: spin for the coming job
        }
        job = std::move(queue_.front());
        queue_.pop_front();
        pending_.store(queue_.size());
      }
      job->help();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::atomic<size_t> pending_{0};  // queue_.size(), readable without the lock while spinning
  int sleepers_ = 0;                // helpers parked on cv_
  uint64_t wake_gen_ = 0;           // bumped by prewake()
  size_t threads_ = 0;
};

Pool& pool() {
  static std::mutex mu;
  static Pool* p = nullptr;  // leaked on purpose: no thread joins at interpreter exit
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (!p || owner != getpid()) {  // first use, or a forked child (the parent's threads are gone)
    p = new Pool();
    owner = getpid();
  }
  return *p;
}

}  // namespace

int default_num_threads() {
  const int n = g_default_threads.load();
  return n > 0 ? n : available_cpus();
}

void set_default_num_threads(int n) { g_default_threads.store(n > 0 ? n : 0); }

void parallel_prewake(int num_threads) {
  if (num_threads <= 1) return;
  try {
    pool().prewake(num_threads - 1);
  } catch (...) {  // could not start a thread: parallel_for copes the same way
  }
}

int resolve_num_threads(int requested, int64_t max_useful) {
  int64_t n = requested > 0 ? requested : default_num_threads();
  if (n > max_useful) n = max_useful;
  return n < 1 ? 1 : static_cast<int>(n);
}

void parallel_for(int64_t n_tasks, int num_threads, const std::function<void(int64_t, int)>& fn,
                  const std::function<void()>& interrupt) {
  if (n_tasks <= 0) return;
  if (num_threads > n_tasks) num_threads = static_cast<int>(n_tasks);
  auto job = std::make_shared<Job>();
  job->n_tasks = n_tasks;
  job->fn = &fn;
  if (num_threads > 1) {
    try {
      pool().submit(job, num_threads - 1);
    } catch (...) {  // could not start a thread: the caller does all the work
    }
  }
  job->run(0, &interrupt);
  // The helpers' last tasks end microseconds after ours: spin (bounded) before sleeping.
  if (!spin_until([&] { return job->active.load() == 0; })) {
    std::unique_lock<std::mutex> lock(job->mu);
    job->done.wait(lock, [&] { return job->active.load() == 0; });
  }
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace pypatch
