#include "pypatch/index/multi_scan.h"

#include <algorithm>  // find
#include <cmath>      // INFINITY
#include <mutex>      // shared_lock (via patch_index.h)
#include <string>     // messages

#include "pypatch/errors.h"             // InvalidArgument
#include "pypatch/index/scan.h"         // ScanParts, scan_topk
#include "pypatch/util/value_limits.h"  // |x| <= 1e15

namespace pypatch {
namespace {

// A quantizer's centroids may still change while it is not frozen (an index freezes it when it
// first stores codes; an empty shard's may not be): those are compared again at every search.
bool same_centroids(const Quantizer& pq, const std::vector<float>& ref) {
  return pq.is_trained() && pq.centroids() == ref;
}

}  // namespace

MultiIndexSearch::MultiIndexSearch(std::vector<const PatchIndex*> shards) : shards_(std::move(shards)) {
  PTCH_CHECK(!shards_.empty(), "multi-index search: no index given");
  const PatchIndex& a = *shards_[0];
  for (size_t s = 0; s < shards_.size(); ++s) {
    const PatchIndex& b = *shards_[s];
    PTCH_CHECK(std::find(shards_.begin(), shards_.begin() + s, &b) == shards_.begin() + s,
               "multi-index search: index " + std::to_string(s) + " is given twice");
    PTCH_CHECK(b.nlist() == 0, "multi-index search: index " + std::to_string(s) +
                                   " is an inverted file (search its lists per index)");
    PTCH_CHECK(b.kind() == a.kind() && b.dim() == a.dim() && b.code_size() == a.code_size(),
               "multi-index search: index " + std::to_string(s) +
                   " has another store (kind, dim or code size) than index 0");
    if (a.kind() == StoreKind::PQ) {
      const Quantizer &pa = *a.pq(), &pb = *b.pq();
      PTCH_CHECK(pb.kind() == pa.kind() && pb.m() == pa.m() && pb.nbits() == pa.nbits(),
                 "multi-index search: index " + std::to_string(s) + " has another quantizer shape");
      PTCH_CHECK(pa.is_trained() && pb.is_trained(),
                 "multi-index search: index " + std::to_string(s) + " is not trained");
      if (s == 0) centroids_ = pa.centroids();
      PTCH_CHECK(pb.centroids() == centroids_,
                 "multi-index search: index " + std::to_string(s) +
                     " was not encoded with index 0's centroids");
    }
  }
}

int64_t MultiIndexSearch::n_images() const {
  int64_t n = 0;
  for (const PatchIndex* s : shards_) n += s->n_images();
  return n;
}

void MultiIndexSearch::search(int64_t nq, const float* q, int k, int num_threads, float* scores,
                              int32_t* shard, int64_t* images, int64_t* patches,
                              const PatchIndex::Interrupt& interrupt) const {
  PTCH_CHECK(k >= 1, "k must be >= 1; got " + std::to_string(k));
  std::vector<std::shared_lock<FairSharedMutex>> locks;
  locks.reserve(shards_.size());
  std::vector<ScanSetup> parts;
  parts.reserve(shards_.size());
  for (const PatchIndex* s : shards_) {
    locks.push_back(s->lock_shared());
    parts.push_back(s->scan_setup());  // NotTrained
    if (s->kind() == StoreKind::PQ && !s->pq()->is_frozen())
      PTCH_CHECK(same_centroids(*s->pq(), centroids_),
                 "multi-index search: an index's centroids changed after the search was set up");
  }
  const ScanParts all(std::move(parts));
  check_value_range(q, nq * all.first().dim, all.first().dim, "search: queries");
  const std::vector<TopK> result = scan_topk(all, nq, q, k, num_threads, interrupt);
  for (int64_t qi = 0; qi < nq; ++qi) {
    const std::vector<Hit> hits = result[qi].sorted();
    for (int r = 0; r < k; ++r) {
      const int64_t at = qi * k + r;
      if (r < static_cast<int>(hits.size())) {
        const std::pair<int, int64_t> where = all.locate(hits[r].image);
        scores[at] = hits[r].score;
        shard[at] = where.first;
        images[at] = where.second;
        patches[at] = hits[r].patch;
      } else {
        scores[at] = -INFINITY;
        shard[at] = -1;
        images[at] = -1;
        patches[at] = -1;
      }
    }
  }
}

}  // namespace pypatch
