// Several PatchIndex objects searched as one (the shards of a sharded index): ONE scan over all
// of them (one task list for the thread pool, the tables built once, one exact top-k merge) in
// place of a search per shard and a merge of their lists. The answer is the one a single index
// holding the shards' images in order would give: the same scores bit for bit (every image is
// scored by the same kernel with the same table) and the same tie order (shard s's image i
// ranks as global image base[s] + i).
#pragma once
#include <cstdint>     // int64_t
#include <functional>  // interrupt
#include <vector>      // shards

#include "pypatch/index/patch_index.h"  // PatchIndex

namespace pypatch {

class MultiIndexSearch {
 public:
  /// Non-owning: the shards must outlive this object. Checks that they can be scanned as one
  /// (throws InvalidArgument): at least one, no index twice, the same store kind, dim and code
  /// size, and for PQ the same m and nbits and identical trained centroids.
  explicit MultiIndexSearch(std::vector<const PatchIndex*> shards);

  int n_shards() const { return static_cast<int>(shards_.size()); }
  /// Images of all shards (removed ones included), each shard read under its lock.
  int64_t n_images() const;

  /// As PatchIndex::search over the shards in order; outputs (nq, k): scores (-inf padding),
  /// shard and image inside it (-1 padding), patch ordinal (-1 padding). The shards' shared
  /// locks are held for the whole scan (taken in order, so no lock-order cycle with a writer).
  void search(int64_t nq, const float* q, int k, int num_threads, float* scores, int32_t* shard,
              int64_t* images, int64_t* patches, const PatchIndex::Interrupt& interrupt = {}) const;

 private:
  std::vector<const PatchIndex*> shards_;
  std::vector<float> centroids_;  // the shared centroids (PQ): checked again for unfrozen ones
};

}  // namespace pypatch
