#include "pypatch/index/scan.h"

#include <algorithm>  // lower_bound, upper_bound, max
#include <utility>    // move

#include "pypatch/errors.h"             // PTCH_CHECK

#include "pypatch/simd/kernels.h"       // segmax kernels
#include "pypatch/util/parallel_for.h"  // threads

namespace pypatch {
namespace {

constexpr int64_t kTaskBytes = 128 * 1024;  // a block stays in L2 across the query batch

}  // namespace

// Task t starts at the first image whose first patch is at or after t * patches_per_task.
// Each search starts at the linear-interpolation guess (exact for a constant number of patches
// per image) and gallops from there: the searches do not depend on each other, so their cache
// misses overlap, where a chain of dependent searches cost one DRAM miss per task in a row
// (~70 us for 100k images, a serial step before the threads start).
std::vector<int64_t> scan_task_bounds(const ScanSetup& s, int64_t patches_per_task) {
  const int64_t n_patches = s.offsets[s.n_images];
  const int64_t n_tasks = std::max<int64_t>(1, (n_patches + patches_per_task - 1) / patches_per_task);
  std::vector<int64_t> b(n_tasks + 1);
  const int64_t* off = s.offsets;
  const int64_t n = s.n_images;
  for (int64_t t = 1; t < n_tasks; ++t) {
    const int64_t target = t * patches_per_task;  // 0 < target < n_patches
    // first i in [0, n) with off[i] >= target (n if none), as std::lower_bound would give
    int64_t g = static_cast<int64_t>(static_cast<double>(target) / static_cast<double>(n_patches) * n);
    g = std::min(std::max<int64_t>(g, 0), n - 1);
    int64_t lo, hi;  // answer in [lo, hi]
    if (off[g] >= target) {  // gallop down
      int64_t step = 1;
      while (g - step >= 0 && off[g - step] >= target) step *= 2;
      lo = std::max<int64_t>(0, g - step);
      hi = g;
    } else {  // gallop up
      int64_t step = 1;
      while (g + step < n && off[g + step] < target) step *= 2;
      lo = g + 1;
      hi = std::min(n, g + step);
    }
    b[t] = std::lower_bound(off + lo, off + hi, target) - off;
  }
  b[0] = 0;
  b[n_tasks] = s.n_images;
  return b;
}

ScanParts::ScanParts(std::vector<ScanSetup> parts) : part(std::move(parts)), base{0} {
  PTCH_CHECK(!part.empty(), "ScanParts: no part");
  for (const ScanSetup& s : part) base.push_back(base.back() + s.n_images);
}

int64_t ScanParts::n_patches() const {
  int64_t n = 0;
  for (const ScanSetup& s : part) n += s.offsets[s.n_images];
  return n;
}

std::pair<int, int64_t> ScanParts::locate(int64_t g) const {
  // the last part starting at or before g (parts may be empty: several equal bases)
  const int p = static_cast<int>(std::upper_bound(base.begin(), base.end() - 1, g) - base.begin()) - 1;
  return {p, g - base[p]};
}

// Several parts: a part's short tail task (under half a task) joins the task before it. Every
// task call has a fixed cost (the kernels set up their tables), and one extra short task per
// part cost 16 shards ~9 % more calls than one store of the same images.
std::vector<ScanTask> scan_tasks(const ScanParts& p, int64_t patches_per_task) {
  std::vector<ScanTask> tasks;
  const bool several = p.part.size() > 1;
  for (int i = 0; i < static_cast<int>(p.part.size()); ++i) {
    const ScanSetup& s = p.part[i];
    if (s.n_images == 0) continue;
    const std::vector<int64_t> b = scan_task_bounds(s, patches_per_task);
    const size_t first = tasks.size();
    for (size_t t = 0; t + 1 < b.size(); ++t) tasks.push_back({i, b[t], b[t + 1]});
    if (several && tasks.size() - first >= 2 &&
        2 * (s.offsets[tasks.back().i1] - s.offsets[tasks.back().i0]) < patches_per_task) {
      tasks[tasks.size() - 2].i1 = tasks.back().i1;
      tasks.pop_back();
    }
  }
  if (tasks.empty()) tasks.push_back({0, 0, 0});  // one empty task: the loops need none special
  return tasks;
}

std::vector<TopK> scan_topk(const ScanParts& p, int64_t nq, const float* q, int k,
                            int num_threads, const std::function<void()>& interrupt) {
  const ScanSetup& s = p.first();  // kind, dim and quantizer of every part
  if (s.kind == StoreKind::PQ && s.pq->nbits() == 4)  // "blocked32_fs4" codes
    return scan_topk_fastscan4(p, nq, q, k, num_threads, interrupt);
  const int64_t per_task = std::max<int64_t>(16, kTaskBytes / s.code_size);
  // Wake the pool's helpers now: they come up while this thread builds the tables.
  parallel_prewake(resolve_num_threads(num_threads, p.n_patches() / per_task + 1));
  std::vector<float> luts;
  int ksub = 0;
  if (s.kind == StoreKind::PQ) {
    ksub = s.pq->ksub();
    const int64_t lut_size = static_cast<int64_t>(s.pq->m()) * ksub;
    luts.resize(static_cast<size_t>(nq * lut_size));
    s.pq->compute_luts(nq, q, luts.data(), resolve_num_threads(num_threads, nq * s.pq->m()));
  }
  if (s.kind == StoreKind::PQ && ksub == 256 && s.pq->m() <= 256 && quant_scan_kernel())
    return scan_topk_quantized(p, nq, luts.data(), k, num_threads, interrupt);
  return scan_topk_exact(p, nq, q, luts.data(), k, num_threads, interrupt);
}

std::vector<TopK> scan_topk_exact(const ScanParts& p, int64_t nq, const float* q, const float* luts,
                                  int k, int num_threads, const std::function<void()>& interrupt) {
  const KernelTable& kt = kernels();
  const ScanSetup& s0 = p.first();
  const int64_t per_task = std::max<int64_t>(16, kTaskBytes / s0.code_size);
  const int ksub = s0.kind == StoreKind::PQ ? s0.pq->ksub() : 0;
  const std::vector<ScanTask> tasks = scan_tasks(p, per_task);
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
  const int nt = resolve_num_threads(num_threads, n_tasks);
  std::vector<std::vector<TopK>> heaps(nt, std::vector<TopK>(nq, TopK(k)));
  std::vector<std::vector<float>> best(nt);
  std::vector<std::vector<int32_t>> arg(nt);

  parallel_for(n_tasks, nt, [&](int64_t task, int w) {
    const ScanTask& t = tasks[task];
    const ScanSetup& s = p.part[t.part];
    const int64_t i0 = t.i0, n = t.i1 - i0, g0 = p.base[t.part] + i0;  // g0: global image of i0
    if (n <= 0) return;
    if (static_cast<int64_t>(best[w].size()) < n) { best[w].resize(n); arg[w].resize(n); }
    float* b = best[w].data();
    int32_t* a = arg[w].data();
    const int64_t* off = s.offsets + i0;
    for (int64_t qi = 0; qi < nq; ++qi) {
      switch (s.kind) {
        case StoreKind::PQ:
          kt.adc_segmax(n, off, s.data, s.pq->m(), ksub,
                        luts + qi * static_cast<int64_t>(s.pq->m()) * ksub, b, a);
          break;
        case StoreKind::FlatF32:
          kt.flat_segmax_f32(n, off, reinterpret_cast<const float*>(s.data), s.dim, q + qi * s.dim, b, a);
          break;
        case StoreKind::FlatF16:
          kt.flat_segmax_f16(n, off, reinterpret_cast<const uint16_t*>(s.data), s.dim, q + qi * s.dim, b, a);
          break;
      }
      TopK& h = heaps[w][qi];
      for (int64_t i = 0; i < n; ++i) {
        if (a[i] < 0 || !h.may_enter(b[i])) continue;  // empty image, or cannot enter
        if (s.removed && s.removed[i0 + i]) continue;
        h.push(Hit{b[i], g0 + i, a[i]});
      }
    }
  }, interrupt);

  for (int w = 1; w < nt; ++w)
    for (int64_t qi = 0; qi < nq; ++qi) heaps[0][qi].merge(heaps[w][qi]);
  return std::move(heaps[0]);
}

}  // namespace pypatch
