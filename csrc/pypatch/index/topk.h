// Bounded top-k of (score, image) with the library-wide order: higher score first, and among
// equal scores the lower image index first. Deterministic whatever order items arrive in.
#pragma once
#include <algorithm>  // push_heap, pop_heap, sort
#include <cstdint>    // int64_t
#include <vector>     // storage

namespace pypatch {

struct Hit {
  float score;
  int64_t image;
  int32_t patch;
};

/// a ranks before b.
inline bool ranks_before(const Hit& a, const Hit& b) {
  return a.score > b.score || (a.score == b.score && a.image < b.image);
}

class TopK {
 public:
  explicit TopK(int k) : k_(k) { heap_.reserve(k < 1024 ? k : 1024); }  // grows if needed
  /// Cheap pre-check: can a hit with this score enter? (Exact check happens in push.)
  bool may_enter(float score) const {
    return static_cast<int>(heap_.size()) < k_ || score >= heap_.front().score;
  }
  void push(const Hit& h) {
    if (h.score != h.score) return;  // NaN never ranks (it would break the heap's order)
    if (static_cast<int>(heap_.size()) < k_) {
      heap_.push_back(h);
      std::push_heap(heap_.begin(), heap_.end(), ranks_before);  // front = worst kept
    } else if (ranks_before(h, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), ranks_before);
      heap_.back() = h;
      std::push_heap(heap_.begin(), heap_.end(), ranks_before);
    }
  }
  void merge(const TopK& other) {
    for (const Hit& h : other.heap_) push(h);
  }
  /// Best first.
  std::vector<Hit> sorted() const {
    std::vector<Hit> v = heap_;
    std::sort(v.begin(), v.end(), ranks_before);
    return v;
  }
  void clear() { heap_.clear(); }
  bool full() const { return static_cast<int>(heap_.size()) >= k_; }
  /// The worst kept hit (the k-th when full); only valid when not empty.
  const Hit& worst() const { return heap_.front(); }

 private:
  int k_;
  std::vector<Hit> heap_;
};

}  // namespace pypatch
