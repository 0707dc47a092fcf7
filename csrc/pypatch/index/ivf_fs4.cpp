// The 4-bit IVF search (ivf_fs4.h): per query, its probed lists scanned one after another by the
// fast-scan kernel with ONE table (quantised once per query) and ONE running threshold, then one
// exact re-score. Scanning each list as a separate small search (build its run CSR, quantise,
// allocate, start the threshold from nothing, re-score) cost 2.5x the kernel time (perf: the
// kernel 38% of a single-query search at nprobe 16, building run CSRs 27%).
//
// Exactness is the argument of scan_fastscan4.cpp with images replaced by runs (an image's
// entries in one list), except that the running k-th best must count distinct IMAGES: an image
// may have a run in several probed lists, and k runs of fewer than k images would overstate it.
// So the sink keeps the best Q per image among its running top k (a min-heap with lazy deletion:
// an image's older, lower entries are skipped when they reach the top). Every image whose best
// run stays within the margin of the final k-th best is emitted with that run's Q; the re-score
// takes, per candidate image, the exact max over its emitted runs (runs not emitted score below
// the k-th exact score, so they can change neither the set nor the order of the top k).
#include "pypatch/index/ivf_fs4.h"

#include <algorithm>      // max, min, sort, push_heap
#include <functional>     // greater
#include <unordered_map>  // image -> best Q
#include <utility>        // pair

#include "pypatch/index/quant_candidates.h"  // rescore_candidates
#include "pypatch/index/scan.h"              // QuantTable4, rescore_fs4_range
#include "pypatch/pq/product_quantizer.h"
#include "pypatch/simd/fastscan4.h"          // kernel, Fs4Sink
#include "pypatch/util/parallel_for.h"       // threads

namespace pypatch {
namespace {

struct RunCand {
  int32_t q;      // quantised max of the run
  uint32_t image;
  int32_t list;
  int64_t entry;  // one entry of the run (its extent is found again when re-scored)
};

// Per worker: the sink of one (query, part) item, reused from item to item. The kernel runs
// with every entry as its own "image" (offsets 0, 1, 2, ...), so no run CSR is built per list
// (that pass over the list's image ids cost as much as the scan); the sink joins the emitted
// entries of one image (they are adjacent: a list is sorted by image) into a run.
struct Sink : Fs4Sink {
  // the list being scanned
  const uint32_t* ids = nullptr;
  int ord_bits = 0;
  int32_t list = 0;
  // the run being joined
  bool open = false;
  uint32_t run_image = 0;
  int32_t run_q = 0;
  int64_t run_entry = 0;
  // the query
  const uint8_t* removed = nullptr;
  int k = 1;
  int64_t margin = 0;
  std::vector<std::pair<int32_t, uint32_t>> heap;  // (Q, image), min first; may hold stale entries
  std::unordered_map<uint32_t, int32_t> best;      // the running top k: image -> best Q
  std::vector<RunCand> cand;

  void start(const uint8_t* rm, int kk, int64_t mg) {
    removed = rm;
    k = kk;
    margin = mg;
    threshold = 0;
    open = false;
    heap.clear();
    best.clear();
    cand.clear();
  }
  void start_list(const uint32_t* list_ids, int bits, int32_t l) {
    ids = list_ids;
    ord_bits = bits;
    list = l;
    open = false;
  }
  bool stale(const std::pair<int32_t, uint32_t>& e) const {
    const auto it = best.find(e.second);
    return it == best.end() || it->second != e.first;
  }
  void clean_top() {
    while (!heap.empty() && stale(heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      heap.pop_back();
    }
  }
  void push(int32_t q, uint32_t image) {
    heap.emplace_back(q, image);
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  }

  static void on_emit(Fs4Sink* self, int64_t entry, int32_t q) {
    Sink& st = *static_cast<Sink*>(self);
    const uint32_t image = st.ids[entry] >> st.ord_bits;
    if (st.open && image == st.run_image) {
      if (q > st.run_q) st.run_q = q;
      return;
    }
    st.flush();
    st.open = true;
    st.run_image = image;
    st.run_q = q;
    st.run_entry = entry;
  }

  // The run joined so far is complete: a candidate, and maybe a new running k-th best.
  void flush() {
    if (!open) return;
    open = false;
    const uint32_t image = run_image;
    const int32_t q = run_q;
    if (removed && removed[image]) return;  // tombstoned: never a result
    cand.push_back({q, image, list, run_entry});  // q >= threshold: the kernel checked
    const auto it = best.find(image);
    if (it != best.end()) {
      if (q <= it->second) return;  // the k-th best cannot rise
      it->second = q;
      push(q, image);  // the old entry is now stale
    } else if (static_cast<int>(best.size()) < k) {
      best.emplace(image, q);
      push(q, image);
    } else {
      clean_top();
      if (q <= heap.front().first) return;
      best.erase(heap.front().second);
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      heap.pop_back();
      best.emplace(image, q);
      push(q, image);
    }
    if (static_cast<int>(best.size()) == k) {
      clean_top();
      threshold = static_cast<int32_t>(std::max<int64_t>(threshold, heap.front().first - margin));
    }
    if (cand.size() > static_cast<size_t>(4 * k + 256)) {
      const int32_t t = threshold;
      cand.erase(std::remove_if(cand.begin(), cand.end(), [&](const RunCand& c) { return c.q < t; }), cand.end());
    }
  }
};

// Per worker: 0, 1, 2, ... (the kernel's offsets, one "image" per entry), grown as needed and
// kept across searches; the run CSR of a list for the exact path.
thread_local std::vector<int64_t> t_iota;
const int64_t* iota_upto(int64_t n) {
  if (static_cast<int64_t>(t_iota.size()) < n + 1) {
    const int64_t old = static_cast<int64_t>(t_iota.size());
    t_iota.resize(n + 1);
    for (int64_t i = old; i <= n; ++i) t_iota[i] = i;
  }
  return t_iota.data();
}

struct Visit {
  int32_t list, rank, query;  // query: index in the item's group
};

// Queries per work item: a list probed by several of them is scanned for each while hot.
constexpr int64_t kGroup = 64;

struct Scratch {
  std::vector<int64_t> runs;  // exact path: a list's run CSR
  std::vector<Sink> sinks;    // per query of the group
  std::vector<Visit> visits;
  std::vector<std::pair<int32_t, size_t>> order;
};

// runs of list l into sc.runs; returns the number of runs.
int64_t build_runs(const IvfLists& lists, int l, std::vector<int64_t>& runs) {
  const int64_t n = lists.size[l];
  const uint32_t* ids = lists.ids[l];
  const int bits = lists.ord_bits;
  if (static_cast<int64_t>(runs.size()) < n + 1) runs.resize(n + 1);
  int64_t* r = runs.data();
  int64_t n_runs = 0;
  r[n_runs++] = 0;
  for (int64_t e = 1; e < n; ++e) {
    r[n_runs] = e;
    n_runs += (ids[e] >> bits) != (ids[e - 1] >> bits);
  }
  r[n_runs] = n;
  return n_runs;
}

}  // namespace

std::vector<TopK> ivf_search_fs4(const IvfSearchSetup& s, int64_t nq, const float* luts,
                                 const int32_t* probes, int nprobe, int k, int num_threads,
                                 const std::function<void()>& interrupt) {
  const int m = s.pq->m();
  const int64_t lut_size = static_cast<int64_t>(m) * 16;
  const IvfLists& lists = *s.lists;
  const Fs4ScanFn scan = fastscan4_kernel();
  const int nt_max = resolve_num_threads(num_threads, nq * static_cast<int64_t>(nprobe));
  // Work items: (group of queries, part of their probes). Whole queries when there are enough
  // to keep the threads busy; otherwise each query's probes are cut into parts (each part
  // carries its own threshold, which is still a valid lower bound of the final one). Within a
  // group a list is scanned for all the group's queries probing it back to back, while hot in
  // cache; each query keeps its own sink (table, threshold) across the lists.
  const int parts = static_cast<int>(std::min<int64_t>(nprobe, std::max<int64_t>(1, (nt_max + nq - 1) / nq)));
  const int64_t group = parts > 1 ? 1 : std::min<int64_t>(kGroup, (nq + nt_max - 1) / nt_max);
  const int64_t n_groups = (nq + group - 1) / group;
  const int64_t n_items = n_groups * parts;
  const int nt = resolve_num_threads(num_threads, n_items);

  // Tables quantised once per query; a query whose table cannot be bounded (or no kernel at
  // this level, or m > 257) takes the exact float path over its lists.
  std::vector<QuantTable4> tables(nq);
  parallel_for(nq, resolve_num_threads(num_threads, nq), [&](int64_t qi, int) {
    if (scan != nullptr && m <= 257) tables[qi] = quantize_lut4(luts + qi * lut_size, m);
    else tables[qi].usable = false;
  }, interrupt);

  std::vector<std::vector<RunCand>> item_cand(nq * parts);  // per (query, part)
  std::vector<std::vector<IvfHit>> item_hits(nq * parts);   // exact path
  std::vector<Scratch> scratch(nt);
  parallel_for(n_items, nt, [&](int64_t it, int w) {
    const int64_t q0 = it / parts * group, q1 = std::min(nq, q0 + group);
    const int part = static_cast<int>(it % parts);
    const int p0 = static_cast<int>(static_cast<int64_t>(nprobe) * part / parts);
    const int p1 = static_cast<int>(static_cast<int64_t>(nprobe) * (part + 1) / parts);
    Scratch& sc = scratch[w];
    if (static_cast<int64_t>(sc.sinks.size()) < q1 - q0) sc.sinks.resize(q1 - q0);
    // The (list, query) visits of the group, lists in the order of their best probe rank
    // (a query's nearest lists first: they raise its threshold soonest).
    std::vector<Visit>& v = sc.visits;
    v.clear();
    for (int64_t qi = q0; qi < q1; ++qi) {
      if (!tables[qi].usable) continue;
      Sink& st = sc.sinks[qi - q0];
      st.emit = &Sink::on_emit;
      st.start(s.removed, k, tables[qi].margin);
      for (int p = p0; p < p1; ++p) {
        const int32_t l = probes[qi * nprobe + p];
        if (lists.size[l] > 0) v.push_back({l, p, static_cast<int32_t>(qi - q0)});
      }
    }
    std::sort(v.begin(), v.end(), [](const Visit& a, const Visit& b) {
      return a.list != b.list ? a.list < b.list : a.query < b.query;
    });
    std::vector<std::pair<int32_t, size_t>>& order = sc.order;  // (best rank, first visit)
    order.clear();
    for (size_t i = 0; i < v.size(); ++i) {
      if (i == 0 || v[i].list != v[i - 1].list) order.emplace_back(v[i].rank, i);
      else order.back().first = std::min(order.back().first, v[i].rank);
    }
    std::sort(order.begin(), order.end());
    for (const auto& o : order) {
      const int32_t l = v[o.second].list;
      const int64_t* off = iota_upto(lists.size[l]);
      for (size_t i = o.second; i < v.size() && v[i].list == l; ++i) {
        const int64_t qi = q0 + v[i].query;
        Sink& st = sc.sinks[v[i].query];
        st.start_list(lists.ids[l], lists.ord_bits, l);
        scan(lists.codes[l], m, tables[qi].q.data(), off, 0, lists.size[l], &st);
        st.flush();
      }
    }
    for (int64_t qi = q0; qi < q1; ++qi) {
      if (tables[qi].usable) {
        item_cand[qi * parts + part] = sc.sinks[qi - q0].cand;
        continue;
      }
      // Exact: every run of every probed list; each list's top k of runs (distinct images
      // within a list) holds the best run of every image of the final top k.
      const float* lut = luts + qi * lut_size;
      std::vector<IvfHit>& out = item_hits[qi * parts + part];
      for (int p = p0; p < p1; ++p) {
        const int l = probes[qi * nprobe + p];
        if (lists.size[l] == 0) continue;
        const int64_t n_runs = build_runs(lists, l, sc.runs);
        const uint32_t* ids = lists.ids[l];
        TopK top(k);
        for (int64_t r = 0; r < n_runs; ++r) {
          const uint32_t image = ivf_image(ids[sc.runs[r]], lists.ord_bits);
          if (s.removed && s.removed[image]) continue;
          Hit h = rescore_fs4_range(lists.codes[l], m, lut, sc.runs[r], sc.runs[r + 1]);
          h.image = r;
          top.push(h);
        }
        for (const Hit& h : top.sorted()) {
          const uint32_t id = ids[sc.runs[h.image] + h.patch];
          out.push_back({h.score, ivf_image(id, lists.ord_bits), static_cast<uint8_t>(ivf_ord(id, lists.ord_bits))});
        }
      }
    }
  }, interrupt);

  std::vector<TopK> result(nq, TopK(k));
  parallel_for(nq, resolve_num_threads(num_threads, nq), [&](int64_t qi, int) {
    const float* lut = luts + qi * lut_size;
    const QuantTable4& tab = tables[qi];
    if (!tab.usable) {
      std::vector<IvfHit> all;
      for (int part = 0; part < parts; ++part) {
        const std::vector<IvfHit>& h = item_hits[qi * parts + part];
        all.insert(all.end(), h.begin(), h.end());
      }
      result[qi] = best_per_image(std::move(all), k);
      return;
    }
    std::vector<RunCand> all;
    for (int part = 0; part < parts; ++part) {
      const std::vector<RunCand>& c = item_cand[qi * parts + part];
      all.insert(all.end(), c.begin(), c.end());
    }
    // Group the runs by image: an image's Q is its best run's.
    std::sort(all.begin(), all.end(), [](const RunCand& a, const RunCand& b) { return a.image < b.image; });
    std::vector<QuantCandidate> by_image;
    std::vector<size_t> first;  // group g: all[first[g] .. first[g + 1])
    for (size_t i = 0; i < all.size(); ++i) {
      if (i == 0 || all[i].image != all[i - 1].image) {
        first.push_back(i);
        by_image.push_back({all[i].q, static_cast<int64_t>(by_image.size())});
      } else {
        by_image.back().q = std::max(by_image.back().q, all[i].q);
      }
    }
    first.push_back(all.size());
    result[qi] = rescore_candidates(
        std::move(by_image), k, tab.margin, [&](int64_t q) { return tab.upper(q); },
        [&](int64_t g) {
          // exact max over the image's emitted runs; ties: the lowest ordinal
          Hit best{0.f, static_cast<int64_t>(all[first[g]].image), -1};
          for (size_t i = first[g]; i < first[g + 1]; ++i) {
            const RunCand& c = all[i];
            const uint32_t* ids = lists.ids[c.list];
            const int bits = lists.ord_bits;
            int64_t e0 = c.entry, e1 = c.entry + 1;
            while (e0 > 0 && ivf_image(ids[e0 - 1], bits) == c.image) --e0;
            while (e1 < lists.size[c.list] && ivf_image(ids[e1], bits) == c.image) ++e1;
            const Hit h = rescore_fs4_range(lists.codes[c.list], m, lut, e0, e1);
            const int32_t ord = static_cast<int32_t>(ivf_ord(ids[e0 + h.patch], bits));
            if (best.patch < 0 || h.score > best.score || (h.score == best.score && ord < best.patch)) {
              best.score = h.score;
              best.patch = ord;
            }
          }
          return best;
        });
  });
  return result;
}

}  // namespace pypatch
