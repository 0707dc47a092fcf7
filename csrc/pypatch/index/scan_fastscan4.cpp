// The 4-bit PQ search over "blocked32_fs4" codes (index/code_layout_fs4.h), exact in two stages
// like the 8-bit quantised scan (scan_quantized.cpp; the bounds are the same, only the table has
// 16 entries per row):
// Stage 1: each query's float table is quantised to u8 with one scale for all rows; the fast-scan
// kernel (simd/fastscan4.h) keeps, per worker and query, the running k largest image maxima Q and
// a threshold T_run - margin below which patches are skipped inside the kernel. T_run never
// exceeds the final k-th largest Q, so every image with Q >= T - margin is emitted with its exact
// Q (its best patch passes whatever the threshold was when it was reached).
// Stage 2: candidates within the margin of the global k-th Q are re-scored with the float table,
// each patch summing j ascending from 0.f (the order of the float kernels), best Q first, and
// re-scoring stops once the upper bound of the next candidate is below the exact k-th score.
// So the result is bit-identical to the exact float path, which runs instead at the scalar level,
// for m > 257 (u16 sums could wrap) and for tables with non-finite values (no float -> int
// conversion of those).
#include <algorithm>   // max, min, sort, nth_element
#include <atomic>      // search counter
#include <functional>  // greater
#include <queue>       // priority_queue
#include <utility>     // move, pair

#include "pypatch/index/code_layout_fs4.h"  // fs4 layout
#include "pypatch/index/quant_candidates.h"  // merge + exact re-score
#include "pypatch/index/quant_table.h"       // quantize_rows
#include "pypatch/index/scan.h"
#include "pypatch/simd/fastscan4.h"         // kernels
#include "pypatch/util/parallel_for.h"      // threads

namespace pypatch {
namespace {

// A task's codes stay in L2 across a query batch; one query streams bigger tasks (each task
// restarts the kernel's prefetch and rebuilds its tables).
constexpr int64_t kTaskBytes = 128 * 1024;
constexpr int64_t kTaskBytesOneQuery = 1024 * 1024;

}  // namespace

QuantTable4 quantize_lut4(const float* lut, int m) {
  QuantTable4 t;
  t.q.assign(static_cast<size_t>(2 * fs4_groups(m)) * 16, 0);
  static_cast<QuantBounds&>(t) = quantize_rows(lut, m, 16, t.q.data());
  return t;
}

namespace {

// Per worker and query: the sink the kernel emits into.
struct QueryState4 : Fs4Sink {
  const uint8_t* removed = nullptr;  // of the part being scanned
  int64_t base = 0;                  // its first image's global number
  int k = 1;
  int64_t margin = 0;
  std::priority_queue<int32_t, std::vector<int32_t>, std::greater<int32_t>> top;
  std::vector<QuantCandidate> cand;

  static void on_emit(Fs4Sink* self, int64_t image, int32_t q) {
    QueryState4& st = *static_cast<QueryState4*>(self);
    if (st.removed && st.removed[image]) return;  // tombstoned: never a result
    st.cand.push_back({q, st.base + image});      // q >= threshold: the kernel checked
    if (static_cast<int>(st.top.size()) < st.k) st.top.push(q);
    else if (q > st.top.top()) { st.top.pop(); st.top.push(q); }
    if (static_cast<int>(st.top.size()) == st.k)
      st.threshold = static_cast<int32_t>(std::max<int64_t>(0, st.top.top() - st.margin));
    if (st.cand.size() > static_cast<size_t>(4 * st.k + 256)) {
      const int32_t t = st.threshold;
      st.cand.erase(std::remove_if(st.cand.begin(), st.cand.end(), [&](const QuantCandidate& c) { return c.q < t; }),
                    st.cand.end());
    }
  }
};

}  // namespace

// Every patch sums j ascending from 0.f, like the float kernels; eight patches in flight (a sum
// is a chain of m dependent adds).
Hit rescore_fs4_range(const uint8_t* codes, int m, const float* lut, int64_t p0, int64_t p1) {
  const int64_t bb = fs4_block_bytes(m);
  Hit h{0.f, 0, -1};
  constexpr int kLanes = 8;
  for (int64_t p = p0; p < p1; p += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, p1 - p));
    const uint8_t* c[kLanes];
    float sc[kLanes];
    for (int l = 0; l < kLanes; ++l) {  // lanes past the range repeat its last patch
      const int64_t pl = p + std::min(l, n - 1);
      c[l] = codes + (pl / kFs4Block) * bb + pl % kFs4Block;
      sc[l] = 0.f;
    }
    const float* t = lut;
    for (int j = 0; j < m; ++j, t += 16) {
      const int64_t at = (j / 2) * kFs4Block;
      const int sh = (j & 1) * 4;
      for (int l = 0; l < kLanes; ++l) sc[l] = sc[l] + t[(c[l][at] >> sh) & 15];
    }
    for (int l = 0; l < n; ++l)
      if (h.patch < 0 || sc[l] > h.score) { h.score = sc[l]; h.patch = static_cast<int32_t>(p + l - p0); }
  }
  return h;
}

namespace {

// Exact float max/argmax of one image.
Hit rescore4(const ScanSetup& s, const float* lut, int64_t image) {
  Hit h = rescore_fs4_range(s.data, s.pq->m(), lut, s.offsets[image], s.offsets[image + 1]);
  h.image = image;
  return h;
}

// Hit of global image g, exactly scored.
Hit rescore4_global(const ScanParts& p, const float* lut, int64_t g) {
  const std::pair<int, int64_t> at = p.locate(g);
  Hit h = rescore4(p.part[at.first], lut, at.second);
  h.image = g;
  return h;
}

std::vector<TopK> exact_float4(const ScanParts& p, int64_t nq, const float* luts, int k, int num_threads,
                               const std::function<void()>& interrupt) {
  const int m = p.first().pq->m();
  const std::vector<ScanTask> tasks = scan_tasks(p, std::max<int64_t>(64, kTaskBytes / std::max(1, m / 2)));
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
  const int nt = resolve_num_threads(num_threads, n_tasks);
  std::vector<std::vector<TopK>> heaps(nt, std::vector<TopK>(nq, TopK(k)));
  parallel_for(n_tasks, nt, [&](int64_t task, int w) {
    const ScanTask& t = tasks[task];
    const ScanSetup& s = p.part[t.part];
    for (int64_t qi = 0; qi < nq; ++qi)
      for (int64_t i = t.i0; i < t.i1; ++i) {
        if (s.offsets[i + 1] == s.offsets[i] || (s.removed && s.removed[i])) continue;
        Hit h = rescore4(s, luts + qi * m * 16, i);
        h.image += p.base[t.part];
        heaps[w][qi].push(h);
      }
  }, interrupt);
  for (int w = 1; w < nt; ++w)
    for (int64_t qi = 0; qi < nq; ++qi) heaps[0][qi].merge(heaps[w][qi]);
  return std::move(heaps[0]);
}

std::atomic<int64_t> g_quantised_searches{0};

}  // namespace

Hit fastscan4_score_image(const ScanSetup& s, const float* lut, int64_t image) { return rescore4(s, lut, image); }

int64_t fastscan4_quantised_searches() { return g_quantised_searches.load(std::memory_order_relaxed); }

std::vector<TopK> scan_topk_fastscan4(const ScanParts& p, int64_t nq, const float* q, int k,
                                      int num_threads, const std::function<void()>& interrupt) {
  const ScanSetup& s0 = p.first();
  const int m = s0.pq->m();
  const int64_t per_task = std::max<int64_t>(kFs4Block, (nq == 1 ? kTaskBytesOneQuery : kTaskBytes) / std::max(1, m / 2));
  parallel_prewake(resolve_num_threads(num_threads, p.n_patches() / per_task + 1));
  std::vector<float> luts(static_cast<size_t>(nq * m * 16));
  s0.pq->compute_luts(nq, q, luts.data(), resolve_num_threads(num_threads, nq * m));
  return scan_topk_fastscan4_luts(p, nq, luts.data(), k, num_threads, interrupt);
}

std::vector<TopK> scan_topk_fastscan4_luts(const ScanParts& p, int64_t nq, const float* luts, int k,
                                           int num_threads, const std::function<void()>& interrupt) {
  const int m = p.first().pq->m();
  const int64_t per_task = std::max<int64_t>(kFs4Block, (nq == 1 ? kTaskBytesOneQuery : kTaskBytes) / std::max(1, m / 2));
  const Fs4ScanFn scan = fastscan4_kernel();
  bool quantised = scan != nullptr && m <= 257;
  std::vector<QuantTable4> tables;
  for (int64_t i = 0; quantised && i < nq; ++i) {
    tables.push_back(quantize_lut4(luts + i * m * 16, m));
    quantised = tables.back().usable;
  }
  if (!quantised) return exact_float4(p, nq, luts, k, num_threads, interrupt);
  g_quantised_searches.fetch_add(1, std::memory_order_relaxed);

  const std::vector<ScanTask> tasks = scan_tasks(p, per_task);
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
  const int nt = resolve_num_threads(num_threads, n_tasks);
  std::vector<std::vector<QueryState4>> state(nt, std::vector<QueryState4>(nq));
  for (auto& per_worker : state)
    for (int64_t qi = 0; qi < nq; ++qi) {
      QueryState4& st = per_worker[qi];
      st.emit = &QueryState4::on_emit;
      st.k = k;
      st.margin = tables[qi].margin;
    }
  parallel_for(n_tasks, nt, [&](int64_t task, int w) {
    const ScanTask& t = tasks[task];
    const ScanSetup& s = p.part[t.part];
    if (t.i1 <= t.i0) return;
    for (int64_t qi = 0; qi < nq; ++qi) {
      QueryState4& st = state[w][qi];  // this worker's, so set per task: the task's part
      st.removed = s.removed;
      st.base = p.base[t.part];
      scan(s.data, m, tables[qi].q.data(), s.offsets, t.i0, t.i1, &st);
    }
  }, interrupt);

  std::vector<TopK> result;
  result.reserve(nq);
  for (int64_t qi = 0; qi < nq; ++qi) {
    std::vector<QuantCandidate> all;
    for (int w = 0; w < nt; ++w) all.insert(all.end(), state[w][qi].cand.begin(), state[w][qi].cand.end());
    const QuantTable4& tab = tables[qi];
    const float* lut = luts + qi * m * 16;
    result.push_back(rescore_candidates(
        std::move(all), k, tab.margin, [&](int64_t q) { return tab.upper(q); },
        [&](int64_t image) { return rescore4_global(p, lut, image); }));
  }
  return result;
}

}  // namespace pypatch
