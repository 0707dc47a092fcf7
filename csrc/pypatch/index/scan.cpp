#include "pypatch/index/scan.h"

#include <algorithm>  // lower_bound, max

#include "pypatch/simd/kernels.h"       // segmax kernels
#include "pypatch/util/parallel_for.h"  // threads

namespace pypatch {
namespace {

constexpr int64_t kTaskBytes = 128 * 1024;  // a block stays in L2 across the query batch

}  // namespace

// Task t starts at the first image whose first patch is at or after t * patches_per_task.
// Each search gallops forward from the previous bound: a few nearby cache lines per task,
// where a full binary search touched ~log2(n_images) scattered ones (a serial step before
// the threads start).
std::vector<int64_t> scan_task_bounds(const ScanSetup& s, int64_t patches_per_task) {
  const int64_t n_patches = s.offsets[s.n_images];
  const int64_t n_tasks = std::max<int64_t>(1, (n_patches + patches_per_task - 1) / patches_per_task);
  std::vector<int64_t> b(n_tasks + 1);
  const int64_t* end = s.offsets + s.n_images;
  const int64_t* lo = s.offsets;
  for (int64_t t = 0; t < n_tasks; ++t) {
    const int64_t target = t * patches_per_task;
    int64_t step = 1;
    while (step < end - lo && lo[step] < target) step *= 2;  // answer in [lo, lo + step]
    lo = std::lower_bound(lo, lo + std::min<int64_t>(step + 1, end - lo), target);
    b[t] = lo - s.offsets;
  }
  b[0] = 0;
  b[n_tasks] = s.n_images;
  return b;
}

std::vector<TopK> scan_topk(const ScanSetup& s, int64_t nq, const float* q, int k,
                            int num_threads, const std::function<void()>& interrupt) {
  const KernelTable& kt = kernels();
  std::vector<float> luts;
  int ksub = 0;
  if (s.kind == StoreKind::PQ) {
    ksub = s.pq->ksub();
    const int64_t lut_size = static_cast<int64_t>(s.pq->m()) * ksub;
    luts.resize(static_cast<size_t>(nq * lut_size));
    for (int64_t i = 0; i < nq; ++i) s.pq->compute_lut(q + i * s.dim, luts.data() + i * lut_size);
  }
  if (s.kind == StoreKind::PQ && ksub == 256 && s.pq->m() <= 256 && quant_scan_kernel())
    return scan_topk_quantized(s, nq, luts.data(), k, num_threads, interrupt);
  const int64_t per_task = std::max<int64_t>(16, kTaskBytes / s.code_size);
  const std::vector<int64_t> bounds = scan_task_bounds(s, per_task);
  const int64_t n_tasks = static_cast<int64_t>(bounds.size()) - 1;
  const int nt = resolve_num_threads(num_threads, n_tasks);
  std::vector<std::vector<TopK>> heaps(nt, std::vector<TopK>(nq, TopK(k)));
  std::vector<std::vector<float>> best(nt);
  std::vector<std::vector<int32_t>> arg(nt);

  parallel_for(n_tasks, nt, [&](int64_t task, int w) {
    const int64_t i0 = bounds[task], n = bounds[task + 1] - i0;
    if (n <= 0) return;
    if (static_cast<int64_t>(best[w].size()) < n) { best[w].resize(n); arg[w].resize(n); }
    float* b = best[w].data();
    int32_t* a = arg[w].data();
    const int64_t* off = s.offsets + i0;
    for (int64_t qi = 0; qi < nq; ++qi) {
      switch (s.kind) {
        case StoreKind::PQ:
          kt.adc_segmax(n, off, s.data, s.pq->m(), ksub,
                        luts.data() + qi * static_cast<int64_t>(s.pq->m()) * ksub, b, a);
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
        h.push(Hit{b[i], i0 + i, a[i]});
      }
    }
  }, interrupt);

  for (int w = 1; w < nt; ++w)
    for (int64_t qi = 0; qi < nq; ++qi) heaps[0][qi].merge(heaps[w][qi]);
  return std::move(heaps[0]);
}

}  // namespace pypatch
