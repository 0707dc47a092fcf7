#include "pypatch/pq/quantizer.h"

#include <algorithm>  // sort, copy
#include <string>     // messages

#include "pypatch/errors.h"             // InvalidArgument, NotTrained
#include "pypatch/pq/kmeans.h"          // SplitMix64
#include "pypatch/util/value_limits.h"  // |x| <= 1e15

namespace pypatch {

Quantizer::Quantizer(int dim, int m, int nbits, int codeword_dim, const char* name)
    : name_(name), dim_(dim), m_(m), nbits_(nbits), ksub_(1 << nbits), codeword_dim_(codeword_dim) {}

void Quantizer::require_trained(const char* what) const {
  if (!trained_) throw NotTrained(std::string(name_) + "." + what +
                                  ": the quantizer is not trained; call train() or from_centroids()");
}

void Quantizer::require_not_frozen(const char* what) const {
  if (state_.load() == kFrozen)
    throw InvalidArgument(std::string(name_) + "." + what +
                          ": this quantizer encodes the codes of an index, and new centroids would "
                          "silently change what those codes mean; train a new " + name_ +
                          " and build a new index with it");
}

const float* Quantizer::checked_training_rows(int64_t n, const float* x, int iters, uint64_t seed,
                                             int64_t max_points_per_centroid,
                                             std::vector<float>& sample, int64_t& n_out) const {
  require_not_frozen("train");  // before the (long) k-means
  PTCH_CHECK(n >= ksub_, "train: need at least ksub=" + std::to_string(ksub_) +
                             " training vectors; got " + std::to_string(n));
  PTCH_CHECK(iters >= 0, "train: iters must be >= 0; got " + std::to_string(iters));
  check_value_range(x, n * dim_, dim_, "train: x");
  return training_sample(n, x, dim_, max_points_per_centroid * ksub_, seed ^ 0x5a3c9e1ull, sample,
                         n_out);
}

void Quantizer::freeze() {
  int s = state_.load();
  while (s != kFrozen) {
    if (s == kWriting)
      throw InvalidArgument(std::string(name_) + ": centroids are being set by another thread "
                            "while an index adds codes with it; train the quantizer before adding");
    if (state_.compare_exchange_weak(s, kFrozen)) return;
  }
}

void Quantizer::set_centroids(const float* c) {
  const int64_t n = static_cast<int64_t>(m_) * ksub_ * codeword_dim_;
  // Bounded centroids keep every table entry and score finite (util/value_limits.h).
  check_value_range(c, n, codeword_dim_, "centroids");
  int expected = kFree;
  if (!state_.compare_exchange_strong(expected, kWriting)) {
    require_not_frozen("set_centroids");
    throw InvalidArgument(std::string(name_) + ".set_centroids: centroids are being set by another thread");
  }
  struct Release {  // back to kFree whatever happens (bad_alloc)
    std::atomic<int>& s;
    ~Release() { s.store(kFree); }
  } release{state_};
  centroids_.assign(c, c + n);
  on_centroids();
  trained_ = true;
}

void Quantizer::compute_luts(int64_t nq, const float* q, float* luts, int /*num_threads*/) const {
  const int64_t size = static_cast<int64_t>(m_) * ksub_;
  for (int64_t i = 0; i < nq; ++i) compute_lut(q + i * dim_, luts + i * size);
}

const float* training_sample(int64_t n, const float* x, int dim, int64_t cap, uint64_t seed,
                             std::vector<float>& sample, int64_t& n_out) {
  n_out = n;
  if (cap <= 0 || n <= cap) return x;
  // Partial Fisher-Yates with the seed, then memory order: cache friendly, same set.
  std::vector<int64_t> perm(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  SplitMix64 rng(seed);
  for (int64_t i = 0; i < cap; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng.next() % static_cast<uint64_t>(n - i));
    std::swap(perm[i], perm[j]);
  }
  std::sort(perm.begin(), perm.begin() + cap);
  sample.resize(static_cast<size_t>(cap) * dim);
  for (int64_t i = 0; i < cap; ++i)
    std::copy(x + perm[i] * dim, x + (perm[i] + 1) * dim, sample.begin() + i * dim);
  n_out = cap;
  return sample.data();
}

}  // namespace pypatch
