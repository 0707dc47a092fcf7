// Two-stage exact PQ search with quantised tables (AVX-512 VBMI or AVX2 kernel:
// kernels_avx512vbmi.cpp, kernels_qscan_avx2.cpp).
//
// Stage 1: each query's float table lut[j][c] is quantised to u8, qlut = round((lut - min_j) /
// scale) with one scale for all j, and every image gets Q_i = max over its patches of the u16
// sum of qlut. If S is a patch's exact float score (summed in ascending j, as by the float
// kernels), |S - (sum_j min_j + scale * Q)| <= E with E = sum_j e_j, e_j <= scale / 2 the
// largest rounding error made in row j (measured while quantising), plus the float error of S
// itself (<= m * A * 2^-23, A = sum_j max_c |lut[j][c]|).
// Let T be the k-th largest Q_i. Some k images have S_i >= base + scale*T - E, so an image with
// base + scale*Q_i + E below that cannot be in the top k: only images with
// Q_i >= T - margin, margin = ceil(2E / scale) + 2, are candidates.
// Stage 2: the candidates are re-scored exactly with the float table in the float kernels'
// order, so the result is bit-identical to the float path (ties by image index included).
// They are re-scored best Q first, and once k exact scores are known, re-scoring stops at the
// first candidate whose upper bound base + scale*Q + E is below the exact k-th score (in double,
// with slack; equal does not stop, as a tie can still enter by image index).
// Each worker keeps its own candidates; its running k-th largest Q never exceeds the global T,
// so the union over workers holds every global candidate.
#include <algorithm>  // max, min
#include <functional> // greater
#include <queue>      // priority_queue
#include <utility>    // move, pair

#include "pypatch/index/code_layout.h"  // blocked_pos
#include "pypatch/index/quant_candidates.h"  // merge + exact re-score
#include "pypatch/index/quant_table.h"       // quantize_rows
#include "pypatch/index/scan.h"
#include "pypatch/simd/kernels.h"       // quant_scan_kernel
#include "pypatch/util/parallel_for.h"  // threads

namespace pypatch {
namespace {

constexpr int64_t kTaskBlocks = 64;  // 64 blocks of 64 patches per task

}  // namespace

QuantTable quantize_lut8(const float* lut, int m) {
  QuantTable t;
  t.q.resize(static_cast<size_t>(m) * 256);
  static_cast<QuantBounds&>(t) = quantize_rows(lut, m, 256, t.q.data());
  return t;
}

namespace {

// Per worker and query: the running k largest Q (min-heap) and the candidate list.
struct QueryState {
  std::priority_queue<int32_t, std::vector<int32_t>, std::greater<int32_t>> top;
  std::vector<QuantCandidate> cand;
  int64_t threshold(int k) const { return static_cast<int>(top.size()) < k ? INT64_MIN / 2 : top.top(); }
  void offer(int32_t q, int64_t image, int k, int64_t margin) {
    if (q < threshold(k) - margin) return;
    cand.push_back({q, image});
    if (static_cast<int>(top.size()) < k) top.push(q);
    else if (q > top.top()) { top.pop(); top.push(q); }
    if (cand.size() > static_cast<size_t>(4 * k + 256)) prune(k, margin);
  }
  void prune(int k, int64_t margin) {
    const int64_t t = threshold(k) - margin;
    cand.erase(std::remove_if(cand.begin(), cand.end(), [&](const QuantCandidate& c) { return c.q < t; }),
               cand.end());
  }
};

// Exact float max/argmax of one image, each patch summing j ascending like the float kernels
// (so bit-identical scores); eight patches in flight, as one sum is a chain of m dependent adds.
Hit rescore(const ScanSetup& s, const float* lut, int64_t image) {
  const int m = s.pq->m();
  const int64_t p0 = s.offsets[image], p1 = s.offsets[image + 1];
  Hit h{0.f, image, -1};
  constexpr int kLanes = 8;
  for (int64_t p = p0; p < p1; p += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, p1 - p));
    const uint8_t* c[kLanes];
    float sc[kLanes];
    for (int l = 0; l < kLanes; ++l) {  // lanes past the image repeat its last patch
      c[l] = s.data + blocked_pos(p + std::min(l, n - 1), 0, m);
      sc[l] = 0.f;
    }
    const float* t = lut;
    for (int j = 0; j < m; ++j, t += 256)
      for (int l = 0; l < kLanes; ++l) sc[l] = sc[l] + t[c[l][j * kCodeBlock]];
    for (int l = 0; l < n; ++l)
      if (h.patch < 0 || sc[l] > h.score) { h.score = sc[l]; h.patch = static_cast<int32_t>(p + l - p0); }
  }
  return h;
}

}  // namespace

std::vector<TopK> scan_topk_quantized(const ScanParts& p, int64_t nq, const float* luts, int k,
                                      int num_threads, const std::function<void()>& interrupt) {
  const int m = p.first().pq->m();
  std::vector<QuantTable> tables;
  std::vector<const QuantTable*> ptrs;
  tables.reserve(nq);
  for (int64_t qi = 0; qi < nq; ++qi) {
    tables.push_back(quantize_lut8(luts + qi * m * 256, m));
    if (!tables.back().usable) return scan_topk_exact(p, nq, nullptr, luts, k, num_threads, interrupt);
  }
  for (const QuantTable& t : tables) ptrs.push_back(&t);
  return scan_topk_quantized_tables(p, nq, luts, ptrs.data(), k, num_threads, interrupt);
}

std::vector<TopK> scan_topk_quantized_tables(const ScanParts& p, int64_t nq, const float* luts,
                                             const QuantTable* const* tables, int k, int num_threads,
                                             const std::function<void()>& interrupt) {
  const QuantScanFn qscan = quant_scan_kernel();
  const QuantSegmaxFn qsegmax = quant_segmax_kernel();
  const int m = p.first().pq->m();
  for (int64_t qi = 0; qi < nq; ++qi)
    if (!tables[qi]->usable) return scan_topk_exact(p, nq, nullptr, luts, k, num_threads, interrupt);

  const std::vector<ScanTask> tasks = scan_tasks(p, kTaskBlocks * kCodeBlock);
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
  const int nt = resolve_num_threads(num_threads, n_tasks);
  std::vector<std::vector<QueryState>> state(nt, std::vector<QueryState>(nq));
  std::vector<std::vector<uint16_t>> buf(nt);
  std::vector<std::vector<int32_t>> image_q(nt);

  parallel_for(n_tasks, nt, [&](int64_t task, int w) {
    const ScanSetup& s = p.part[tasks[task].part];
    const int64_t i0 = tasks[task].i0, i1 = tasks[task].i1;
    const int64_t g = p.base[tasks[task].part];  // global number of the part's image 0

    const int64_t p0 = s.offsets[i0], p1 = s.offsets[i1];
    if (p1 <= p0) return;
    const int64_t b0 = p0 / kCodeBlock, b1 = (p1 + kCodeBlock - 1) / kCodeBlock;
    if (static_cast<int64_t>(buf[w].size()) < (b1 - b0) * kCodeBlock) buf[w].resize((b1 - b0) * kCodeBlock);
    if (static_cast<int64_t>(image_q[w].size()) < i1 - i0) image_q[w].resize(i1 - i0);
    const uint16_t* sc = buf[w].data() - b0 * kCodeBlock;  // indexed by absolute patch
    int32_t* iq = image_q[w].data();
    for (int64_t qi = 0; qi < nq; ++qi) {
      qscan(s.data, m, tables[qi]->q.data(), b0, b1, buf[w].data());
      qsegmax(i1 - i0, s.offsets + i0, sc, iq);
      QueryState& st = state[w][qi];
      for (int64_t i = i0; i < i1; ++i) {
        if (iq[i - i0] < 0 || (s.removed && s.removed[i])) continue;  // empty or removed
        st.offer(iq[i - i0], g + i, k, tables[qi]->margin);
      }
    }
  }, interrupt);

  // Merge candidates, keep those within the margin of the global k-th best, re-score exactly.
  std::vector<TopK> result;
  result.reserve(nq);
  for (int64_t qi = 0; qi < nq; ++qi) {
    std::vector<QuantCandidate> all;
    for (int w = 0; w < nt; ++w) all.insert(all.end(), state[w][qi].cand.begin(), state[w][qi].cand.end());
    const QuantTable& tab = *tables[qi];
    const float* lut = luts + qi * m * 256;
    result.push_back(rescore_candidates(
        std::move(all), k, tab.margin, [&](int64_t q) { return tab.upper(q); },
        [&](int64_t image) {
          const std::pair<int, int64_t> at = p.locate(image);
          Hit h = rescore(p.part[at.first], lut, at.second);
          h.image = image;
          return h;
        }));
  }
  return result;
}

}  // namespace pypatch
