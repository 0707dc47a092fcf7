// The index lock lets a writer in while readers keep arriving (FairSharedMutex), and a
// quantizer whose codes an index holds refuses new centroids.
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "pypatch/errors.h"
#include "pypatch/index/patch_index.h"
#include "pypatch/util/fair_shared_mutex.h"
#include "test_data.h"
#include "test_main.h"

using namespace pypatch;
using Clock = std::chrono::steady_clock;

TEST(waiting_writer_closes_the_gate_to_new_readers) {
  FairSharedMutex mu;
  mu.lock_shared();  // a search in progress
  std::atomic<bool> entered{false};
  std::thread writer([&] {
    mu.lock();
    entered = true;
    mu.unlock();
  });
  // Once the writer waits, a new reader is refused (it would be let in by std::shared_mutex).
  const auto give_up = Clock::now() + std::chrono::seconds(60);
  bool gate_closed = false;
  while (!gate_closed && Clock::now() < give_up) {
    if (mu.try_lock_shared()) {
      mu.unlock_shared();
      std::this_thread::yield();
    } else {
      gate_closed = true;
    }
  }
  CHECK(gate_closed);
  CHECK(!entered.load());  // the first reader is still inside
  mu.unlock_shared();
  writer.join();
  CHECK(entered.load());
  CHECK(mu.try_lock_shared());  // open again
  CHECK(!mu.try_lock());        // a reader is inside
  mu.unlock_shared();
  CHECK(mu.try_lock());
  CHECK(!mu.try_lock_shared());
  mu.unlock();
}

TEST(add_gets_in_while_four_threads_search_back_to_back) {
  // glibc's reader-preferring std::shared_mutex kept this add() waiting for minutes. Real
  // threads, progress only: the add must return while every searcher is still looping (they
  // give up after a generous minute, which ends a starved run), and they go on after it.
  const int dim = 32;
  PatchIndex ix(dim, StoreKind::FlatF32);
  const std::vector<float> x = test_data::randn(40000 * dim, 1);
  const std::vector<int64_t> counts(2000, 20);
  ix.add(2000, counts.data(), x.data(), 1);
  const std::vector<float> q = test_data::randn(4 * dim, 2);
  std::atomic<bool> stop{false};
  std::atomic<int> gave_up{0};
  std::vector<std::atomic<int64_t>> searches(4);
  std::vector<std::thread> readers;
  for (int w = 0; w < 4; ++w)
    readers.emplace_back([&, w] {
      const auto give_up = Clock::now() + std::chrono::seconds(60);
      std::vector<float> s(4 * 5);
      std::vector<int64_t> im(4 * 5), pa(4 * 5);
      while (!stop.load()) {
        if (Clock::now() > give_up) {
          gave_up++;
          return;
        }
        ix.search(4, q.data(), 5, 1, s.data(), im.data(), pa.data());
        searches[w]++;
      }
    });
  for (auto& n : searches)
    while (n.load() < 3) std::this_thread::yield();
  const std::vector<int64_t> one{20};
  const int64_t first = ix.add(1, one.data(), x.data(), 1);
  const bool added_while_searching = gave_up.load() == 0;
  bool searches_went_on = true;  // readers are not starved by the writer either
  for (auto& n : searches) {
    const int64_t seen = n.load();
    while (n.load() == seen && gave_up.load() == 0) std::this_thread::yield();
    searches_went_on = searches_went_on && n.load() > seen;
  }
  stop = true;
  for (auto& t : readers) t.join();
  CHECK(first == 2000);
  CHECK(ix.n_images() == 2001);
  CHECK(added_while_searching);
  CHECK(searches_went_on);
}

TEST(quantizer_with_codes_in_an_index_is_frozen) {
  const int dim = 8;
  const std::vector<float> x = test_data::randn(512 * dim, 3);
  auto pq = std::make_shared<ProductQuantizer>(dim, 4);
  pq->train(512, x.data(), 2, 0, 1);
  pq->train(512, x.data(), 2, 1, 1);  // no codes yet: retraining is fine
  PatchIndex ix(dim, pq);
  const std::vector<int64_t> none;
  ix.add(0, none.data(), x.data(), 1);
  CHECK(!pq->is_frozen());  // no codes added
  const std::vector<int64_t> two{2};
  ix.add(1, two.data(), x.data(), 1);
  CHECK(pq->is_frozen());
  const std::vector<float> before = pq->centroids();
  CHECK_THROWS(pq->train(512, x.data(), 2, 7, 1), InvalidArgument);
  CHECK_THROWS(pq->set_centroids(x.data()), InvalidArgument);
  CHECK(pq->centroids() == before);
  ix.add(1, two.data(), x.data() + 2 * dim, 1);  // the index itself goes on adding
  CHECK(ix.n_patches() == 4);
}

TEST(dim_is_limited_to_what_a_file_reader_accepts) {
  CHECK_THROWS(PatchIndex(PatchIndex::kMaxDim + 1, StoreKind::FlatF32), InvalidArgument);
  PatchIndex ok(PatchIndex::kMaxDim, StoreKind::FlatF16);
  const std::vector<uint8_t> bytes = ok.to_bytes();
  CHECK(PatchIndex::from_bytes(bytes.data(), bytes.size())->dim() == PatchIndex::kMaxDim);
}
