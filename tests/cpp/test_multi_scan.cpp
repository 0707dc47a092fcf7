// MultiIndexSearch in C++: shards searched as one equal one PatchIndex over their images in
// order (scores bit-equal, global image = shard base + row, ties by global image), for PQ
// (the scan the selected level picks) and flat stores, with removed images and an empty shard;
// shards encoded with other centroids are refused.
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "pypatch/errors.h"
#include "pypatch/index/multi_scan.h"
#include "pypatch/index/patch_index.h"
#include "test_data.h"
#include "test_main.h"

using namespace pypatch;

namespace {

using test_data::randn;

// Images [0, 40) | none | [40, 90) | [90, 120) of `whole`'s vectors, and `whole` itself.
struct Split {
  std::unique_ptr<PatchIndex> whole;
  std::vector<std::unique_ptr<PatchIndex>> shards;
  std::vector<int64_t> base;
};

Split split(int dim, const std::function<std::unique_ptr<PatchIndex>()>& make) {
  const int P = 5;
  const std::vector<int64_t> bounds = {0, 40, 40, 90, 120};
  auto x = randn(120 * P * dim, 7);
  for (int t = 0; t < P * dim; ++t) x[(100 * P) * dim + t] = x[(10 * P) * dim + t];  // a tie
  Split s;
  s.whole = make();
  std::vector<int64_t> counts(120, P);
  s.whole->add(120, counts.data(), x.data(), 1);
  for (size_t i = 0; i + 1 < bounds.size(); ++i) {
    s.shards.push_back(make());
    const int64_t n = bounds[i + 1] - bounds[i];
    if (n) s.shards.back()->add(n, counts.data(), x.data() + bounds[i] * P * dim, 1);
    s.base.push_back(bounds[i]);
  }
  const int64_t gone[] = {3, 95};
  s.whole->remove(2, gone);
  const int64_t g0[] = {3}, g3[] = {5};
  s.shards[0]->remove(1, g0);
  s.shards[3]->remove(1, g3);
  return s;
}

void check_same(const Split& s, int dim) {
  std::vector<const PatchIndex*> ptrs;
  for (const auto& p : s.shards) ptrs.push_back(p.get());
  MultiIndexSearch multi(ptrs);
  CHECK(multi.n_images() == 120);
  const int nq = 3, k = 125;  // more than the live images: padding too
  auto q = randn(nq * dim, 8);
  for (int t = 0; t < dim; ++t) q[t] = 0;
  std::vector<float> s1(nq * k), s2(nq * k);
  std::vector<int64_t> i1(nq * k), p1(nq * k), i2(nq * k), p2(nq * k);
  std::vector<int32_t> sh(nq * k);
  for (int threads : {1, 2}) {
    s.whole->search(nq, q.data(), k, threads, s1.data(), i1.data(), p1.data());
    multi.search(nq, q.data(), k, threads, s2.data(), sh.data(), i2.data(), p2.data());
    for (int j = 0; j < nq * k; ++j) {
      CHECK(s1[j] == s2[j] || (s1[j] == -INFINITY && s2[j] == -INFINITY));
      CHECK(i1[j] == (i2[j] < 0 ? -1 : s.base[sh[j]] + i2[j]));
      CHECK(p1[j] == p2[j]);
    }
  }
}

}  // namespace

TEST(multi_search_equals_one_pq_index) {
  const int dim = 16;
  auto x = randn(2000 * dim, 3);
  auto pq = std::make_shared<ProductQuantizer>(dim, 8);
  pq->train(2000, x.data(), 5, 0, 1);
  // every shard its own quantizer object with the same centroids (as loaded shard files)
  Split s = split(dim, [&] {
    auto own = std::make_shared<ProductQuantizer>(dim, 8);
    own->set_centroids(pq->centroids().data());
    return std::make_unique<PatchIndex>(dim, own);
  });
  check_same(s, dim);

  auto other = std::make_shared<ProductQuantizer>(dim, 8);
  other->train(2000, x.data(), 5, 1, 1);
  PatchIndex foreign(dim, other);
  const int64_t one = 5;
  foreign.add(1, &one, x.data(), 1);
  CHECK_THROWS(MultiIndexSearch({s.shards[0].get(), &foreign}), InvalidArgument);
  CHECK_THROWS(MultiIndexSearch({s.shards[0].get(), s.shards[0].get()}), InvalidArgument);
  CHECK_THROWS(MultiIndexSearch({}), InvalidArgument);
}

TEST(multi_search_equals_one_flat_index) {
  for (StoreKind kind : {StoreKind::FlatF32, StoreKind::FlatF16}) {
    Split s = split(12, [&] { return std::make_unique<PatchIndex>(12, kind); });
    check_same(s, 12);
  }
  PatchIndex a(12, StoreKind::FlatF32), b(12, StoreKind::FlatF16);
  CHECK_THROWS(MultiIndexSearch({&a, &b}), InvalidArgument);
}
