// Coarse quantizer, inverted lists and the IVF search (ivf.h).
#include "pypatch/index/ivf.h"

#include <algorithm>  // min, sort, partial_sort
#include <cmath>      // INFINITY
#include <cstring>    // memcpy

#include "pypatch/index/code_layout.h"  // kCodeBlock
#include "pypatch/index/ivf_fs4.h"      // 4-bit search, IvfHit
#include "pypatch/index/patch_index.h"  // StoreKind
#include "pypatch/index/scan.h"         // ScanSetup, scan_topk_*
#include "pypatch/pq/product_quantizer.h"
#include "pypatch/simd/kernels.h"       // lut_ip, quant_scan_kernel
#include "pypatch/util/parallel_for.h"  // threads

namespace pypatch {

CoarseQuantizer::CoarseQuantizer(int nlist, int dim, const float* c)
    : nlist_(nlist), dim_(dim), c_(c, c + static_cast<int64_t>(nlist) * dim), norms_(nlist) {
  for (int i = 0; i < nlist; ++i) {
    float s = 0.f;
    for (int t = 0; t < dim; ++t) s = s + c[static_cast<int64_t>(i) * dim + t] * c[static_cast<int64_t>(i) * dim + t];
    norms_[i] = s;
  }
  chunks_.resize(static_cast<size_t>(nlist) * dim);
  for (int ch = 0; ch * kChunk < nlist; ++ch) {
    const int c0 = ch * kChunk, n = std::min(kChunk, nlist - c0);
    float* dst = chunks_.data() + static_cast<int64_t>(c0) * dim;
    for (int i = 0; i < n; ++i)
      for (int t = 0; t < dim; ++t) dst[static_cast<int64_t>(t) * n + i] = c[static_cast<int64_t>(c0 + i) * dim + t];
  }
  if (static_cast<int64_t>(nlist) * dim * 4 > CoarseScreen::kMinFloatBytes)
    screen_ = CoarseScreen(nlist, dim, c, norms_.data());
}

int64_t CoarseQuantizer::bytes() const {
  return 4 * static_cast<int64_t>(c_.size() + chunks_.size() + norms_.size()) + screen_.bytes();
}

void CoarseQuantizer::chunk_scores(const float* x, int ch, float* ip, float* d) const {
  const int c0 = ch * kChunk, n = std::min(kChunk, nlist_ - c0);
  // lut_ip with one sub-space of dim and n "codewords": <x, c> summed in ascending t, the same
  // float at every SIMD level.
  kernels().lut_ip(x, chunks_.data() + static_cast<int64_t>(c0) * dim_, 1, n, dim_, ip);
  for (int i = 0; i < n; ++i) d[i] = norms_[c0 + i] - 2.f * ip[i];
}

void CoarseQuantizer::assign(int64_t n, const float* x, int32_t* out, int num_threads,
                             const std::function<void()>& interrupt) const {
  // Blocked: a task of kRows vectors meets each 64-centroid chunk (64 KB at dim 256) while it is
  // hot in L1/L2, instead of streaming all nlist * dim floats once per vector.
  constexpr int64_t kRows = 256;
  const int64_t tasks = (n + kRows - 1) / kRows;
  const int n_chunks = (nlist_ + kChunk - 1) / kChunk;
  parallel_for(tasks, resolve_num_threads(num_threads, tasks), [&](int64_t t, int) {
    const int64_t r0 = t * kRows, nr = std::min(kRows, n - r0);
    float best[kRows], ip[kChunk], d[kChunk];
    std::fill(best, best + nr, INFINITY);
    for (int ch = 0; ch < n_chunks; ++ch) {
      const int c0 = ch * kChunk, nc = std::min(kChunk, nlist_ - c0);
      for (int64_t r = 0; r < nr; ++r) {
        chunk_scores(x + (r0 + r) * dim_, ch, ip, d);
        for (int i = 0; i < nc; ++i)
          if (d[i] < best[r] || (ch == 0 && i == 0)) { best[r] = d[i]; out[r0 + r] = c0 + i; }
      }
    }
  }, interrupt);
}

void CoarseQuantizer::probe(const float* q, int nprobe, int32_t* out) const {
  nprobe = std::min(nprobe, nlist_);
  thread_local std::vector<int32_t> cand;
  cand.clear();
  // Not with the scalar kernels (also aarch64's table): there the integer screen measured
  // slower than the float32 scan (55 vs 49 ns a centroid at 4096 x 256, x86).
  if (!screen_.empty() && kernels().level != SimdLevel::Scalar && screen_.shortlist(q, nprobe, cand)) {
    // The shortlist's float32 distances, as chunk_scores computes them (lut_ip sums t ascending
    // with separate multiply and add for any ksub, so a one-centroid table gives the same float).
    thread_local std::vector<float> d;
    d.resize(nlist_);
    for (int32_t i : cand) {
      float ip;
      kernels().lut_ip(q, c_.data() + static_cast<int64_t>(i) * dim_, 1, 1, dim_, &ip);
      d[i] = norms_[i] - 2.f * ip;
    }
    std::partial_sort(cand.begin(), cand.begin() + nprobe, cand.end(), [&](int32_t a, int32_t b) {
      return d[a] < d[b] || (d[a] == d[b] && a < b);
    });
    std::copy(cand.begin(), cand.begin() + nprobe, out);
    return;
  }
  probe_exact(q, nprobe, out);
}

void CoarseQuantizer::probe_exact(const float* q, int nprobe, int32_t* out) const {
  nprobe = std::min(nprobe, nlist_);
  std::vector<float> d(nlist_);
  float ip[kChunk];
  for (int ch = 0; ch * kChunk < nlist_; ++ch) chunk_scores(q, ch, ip, d.data() + ch * kChunk);
  std::vector<int32_t> idx(nlist_);
  for (int i = 0; i < nlist_; ++i) idx[i] = i;
  std::partial_sort(idx.begin(), idx.begin() + nprobe, idx.end(), [&](int32_t a, int32_t b) {
    return d[a] < d[b] || (d[a] == d[b] && a < b);
  });
  std::copy(idx.begin(), idx.begin() + nprobe, out);
}

int64_t IvfLists::total() const {
  int64_t t = 0;
  for (int64_t s : size) t += s;
  return t;
}

void IvfLists::reset(int nlist) {
  owned.assign(nlist, Owned{});
  size.assign(nlist, 0);
  point_at_owned();
}

void IvfLists::point_at_owned() {
  const int nl = static_cast<int>(owned.size());
  codes.resize(nl);
  ids.resize(nl);
  for (int l = 0; l < nl; ++l) {
    codes[l] = owned[l].codes.data();
    ids[l] = owned[l].ids.data();
  }
}

namespace {

// Per worker: the run CSR of the list being scanned and a table buffer.
struct Scratch {
  std::vector<int64_t> runs;     // run offsets into the list (n_runs + 1)
  std::vector<uint8_t> removed;  // per run
  std::vector<float> luts;       // the tables of the queries probing the list
};

}  // namespace

TopK best_per_image(std::vector<IvfHit> all, int k) {
  std::sort(all.begin(), all.end(), [](const IvfHit& a, const IvfHit& b) {
    if (a.image != b.image) return a.image < b.image;
    if (a.score != b.score) return a.score > b.score;
    return a.ord < b.ord;
  });
  TopK top(k);
  for (size_t i = 0; i < all.size(); ++i)
    if (i == 0 || all[i].image != all[i - 1].image)
      top.push(Hit{all[i].score, static_cast<int64_t>(all[i].image), all[i].ord});
  return top;
}

std::vector<TopK> ivf_search(const IvfSearchSetup& s, int64_t nq, const float* q, int k, int nprobe,
                             int num_threads, const std::function<void()>& interrupt) {
  const Quantizer& pq = *s.pq;
  const int m = pq.m(), ksub = pq.ksub(), dim = s.dim;
  const int nl = s.cq->nlist();
  nprobe = std::min(nprobe, nl);
  const int64_t lut_size = static_cast<int64_t>(m) * ksub;
  std::vector<int32_t> probes(static_cast<size_t>(nq * nprobe));
  std::vector<float> luts(static_cast<size_t>(nq * lut_size));
  const bool fs4 = pq.nbits() == 4;
  const bool quantised8 = !fs4 && ksub == 256 && m <= 256 && quant_scan_kernel() != nullptr;
  // 8-bit: each query's table is quantised once for all the lists it probes (it cost as much
  // as scanning a 3k-patch list).
  std::vector<QuantTable> qtables(quantised8 ? nq : 0);
  // All tables in one call: residual codebooks (16 MB at 32 x 256 x 512) are then read once
  // for the whole batch instead of once per query.
  pq.compute_luts(nq, q, luts.data(), resolve_num_threads(num_threads, nq * m));
  parallel_for(nq, resolve_num_threads(num_threads, nq), [&](int64_t qi, int) {
    s.cq->probe(q + qi * dim, nprobe, probes.data() + qi * nprobe);
    if (quantised8) qtables[qi] = quantize_lut8(luts.data() + qi * lut_size, m);
  }, interrupt);

  if (fs4) return ivf_search_fs4(s, nq, luts.data(), probes.data(), nprobe, k, num_threads, interrupt);

  // Invert: for each list, the queries probing it (ascending), as a CSR over lists; slot_of
  // maps (query, probe) to its position there, where that pair's hits are stored.
  std::vector<int64_t> qoff(nl + 1, 0);
  for (int32_t l : probes) ++qoff[l + 1];
  for (int l = 0; l < nl; ++l) qoff[l + 1] += qoff[l];
  std::vector<int64_t> fill(qoff.begin(), qoff.end() - 1), slot_of(probes.size());
  std::vector<int32_t> qlist(probes.size());
  for (int64_t qi = 0; qi < nq; ++qi)
    for (int p = 0; p < nprobe; ++p) {
      const int32_t l = probes[qi * nprobe + p];
      slot_of[qi * nprobe + p] = fill[l];
      qlist[fill[l]++] = static_cast<int32_t>(qi);
    }
  std::vector<int32_t> todo;
  for (int l = 0; l < nl; ++l)
    if (qoff[l + 1] > qoff[l] && s.lists->size[l] > 0) todo.push_back(l);

  std::vector<std::vector<IvfHit>> hits(probes.size());
  const int nt = resolve_num_threads(num_threads, static_cast<int64_t>(todo.size()));
  std::vector<Scratch> scratch(nt);
  parallel_for(static_cast<int64_t>(todo.size()), nt, [&](int64_t t, int w) {
    const int l = todo[t];
    const int64_t n = s.lists->size[l];
    const uint32_t* ids = s.lists->ids[l];
    const int bits = s.lists->ord_bits;
    Scratch& sc = scratch[w];
    if (static_cast<int64_t>(sc.runs.size()) < n + 1) {
      sc.runs.resize(n + 1);
      sc.removed.resize(n);
    }
    int64_t n_runs = 0, n_removed = 0;
    int64_t* runs = sc.runs.data();
    runs[n_runs++] = 0;
    for (int64_t e = 1; e < n; ++e) {
      runs[n_runs] = e;
      n_runs += (ids[e] >> bits) != (ids[e - 1] >> bits);
    }
    runs[n_runs] = n;
    if (s.removed)
      for (int64_t r = 0; r < n_runs; ++r) n_removed += sc.removed[r] = s.removed[ivf_image(ids[runs[r]], bits)];
    ScanSetup ss{StoreKind::PQ, dim, m, &pq, s.lists->codes[l], sc.runs.data(), n_runs,
                 n_removed ? sc.removed.data() : nullptr, n_removed};
    const int64_t nql = qoff[l + 1] - qoff[l];
    const float* lp;
    if (nql == 1) {
      lp = luts.data() + qlist[qoff[l]] * lut_size;
    } else {
      sc.luts.resize(static_cast<size_t>(nql * lut_size));
      for (int64_t i = 0; i < nql; ++i)
        std::memcpy(sc.luts.data() + i * lut_size, luts.data() + qlist[qoff[l] + i] * lut_size, lut_size * 4);
      lp = sc.luts.data();
    }
    // One thread per list: the parallelism is across lists.
    std::vector<TopK> top;
    if (quantised8) {
      const QuantTable* tp[64];
      std::vector<const QuantTable*> many;
      const QuantTable** t = tp;
      if (nql > 64) { many.resize(nql); t = many.data(); }
      for (int64_t i = 0; i < nql; ++i) t[i] = &qtables[qlist[qoff[l] + i]];
      top = scan_topk_quantized_tables(ss, nql, lp, t, k, 1, {});
    } else {
      top = scan_topk_exact(ss, nql, nullptr, lp, k, 1, {});
    }
    for (int64_t i = 0; i < nql; ++i) {
      std::vector<IvfHit>& out = hits[qoff[l] + i];
      for (const Hit& h : top[i].sorted()) {
        const uint32_t id = ids[sc.runs[h.image] + h.patch];
        out.push_back({h.score, ivf_image(id, bits), static_cast<uint8_t>(ivf_ord(id, bits))});
      }
    }
  }, interrupt);

  // Merge per query: an image may be hit in several lists; keep its best (score desc, then
  // lowest ordinal, as the exhaustive segmax does). Within one list every run is a distinct
  // image, so each list's top-k holds the best run of every image of the global top-k.
  std::vector<TopK> result(nq, TopK(k));
  parallel_for(nq, resolve_num_threads(num_threads, nq), [&](int64_t qi, int) {
    std::vector<IvfHit> all;
    for (int p = 0; p < nprobe; ++p) {
      const std::vector<IvfHit>& h = hits[slot_of[qi * nprobe + p]];
      all.insert(all.end(), h.begin(), h.end());
    }
    result[qi] = best_per_image(std::move(all), k);
  });
  return result;
}

}  // namespace pypatch
