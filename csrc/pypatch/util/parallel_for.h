// A minimal fork-join loop on std::threads (no OpenMP): tasks are claimed from an atomic
// counter; the calling thread works too and is the only one that polls `interrupt`; the first
// exception thrown anywhere stops the loop and is rethrown on the caller after every thread
// has joined. num_threads == 1 runs inline. Results must not depend on which thread ran a
// task (callers index their state by task, or merge per-thread state deterministically).
#pragma once
#include <cstdint>     // int64_t
#include <functional>  // std::function

namespace pypatch {

/// Threads used when a call passes num_threads <= 0: set_default_num_threads() or, by default,
/// the CPUs this process may run on.
int default_num_threads();
/// n <= 0 restores the automatic default.
void set_default_num_threads(int n);
/// Resolves a per-call request (<= 0 means the default) and caps it at `max_useful`.
int resolve_num_threads(int requested, int64_t max_useful);

/// A hint that parallel_for(.., num_threads, ..) follows shortly (after some serial set-up):
/// parked pool threads wake up now and spin briefly, so their wake-up latency overlaps the
/// set-up instead of delaying the loop. Optional; never changes results.
void parallel_prewake(int num_threads);

/// fn(task, worker) for task in [0, n_tasks), worker in [0, threads). `interrupt` (may be empty)
/// is called on the calling thread between its tasks, at most about every 50 ms; it throws to
/// abort the loop.
void parallel_for(int64_t n_tasks, int num_threads, const std::function<void(int64_t, int)>& fn,
                  const std::function<void()>& interrupt = {});

}  // namespace pypatch
