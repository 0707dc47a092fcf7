// parallel_for: every task runs once, worker exceptions reach the caller, interrupts stop it.
#include <atomic>
#include <stdexcept>
#include <vector>

#include "pypatch/errors.h"
#include "pypatch/util/parallel_for.h"
#include "test_main.h"

using namespace pypatch;

TEST(every_task_runs_once) {
  for (int threads : {1, 2, 4}) {
    std::vector<std::atomic<int>> hits(1000);
    parallel_for(1000, threads, [&](int64_t t, int w) {
      CHECK(w >= 0 && w < threads);
      hits[t]++;
    });
    for (auto& h : hits) CHECK(h.load() == 1);
  }
}

TEST(worker_exception_is_rethrown_on_caller) {
  CHECK_THROWS(parallel_for(100, 2, [](int64_t t, int) {
    if (t == 57) throw InvalidArgument("task 57");
  }), InvalidArgument);
}

TEST(interrupt_stops_the_loop) {
  std::atomic<int64_t> done{0};
  CHECK_THROWS(parallel_for(1000000, 2, [&](int64_t, int) {
    volatile double x = 0;
    for (int i = 0; i < 20000; ++i) x = x + i;
    done++;
  }, [] { throw Interrupted("stop"); }), Interrupted);
  CHECK(done.load() < 1000000);
}

TEST(thread_defaults) {
  const int before = default_num_threads();
  set_default_num_threads(3);
  CHECK(default_num_threads() == 3 && resolve_num_threads(0, 100) == 3 && resolve_num_threads(8, 2) == 2);
  set_default_num_threads(0);
  CHECK(default_num_threads() >= 1);
  (void)before;
}
