#include "pypatch/pq/product_quantizer.h"

#include <algorithm>  // std::min
#include <string>     // messages

#include "pypatch/errors.h"             // InvalidArgument, NotTrained
#include "pypatch/pq/kmeans.h"          // kmeans, SplitMix64
#include "pypatch/simd/kernels.h"       // lut_ip, assign_l2
#include "pypatch/util/parallel_for.h"  // encode threads
#include "pypatch/util/value_limits.h"  // |x| <= 1e15

namespace pypatch {

ProductQuantizer::ProductQuantizer(int dim, int m, int nbits) : dim_(dim), m_(m), nbits_(nbits) {
  PTCH_CHECK(dim >= 1, "dim must be >= 1; got " + std::to_string(dim));
  PTCH_CHECK(m >= 1 && m <= dim && dim % m == 0,
             "m must divide dim (dim=" + std::to_string(dim) + "); got m=" + std::to_string(m));
  PTCH_CHECK(nbits == 8 || nbits == 4, "nbits must be 8 or 4; got " + std::to_string(nbits));
  ksub_ = 1 << nbits;
  dsub_ = dim / m;
}

void ProductQuantizer::require_trained(const char* what) const {
  if (!trained_) throw NotTrained(std::string("ProductQuantizer.") + what +
                                  ": the quantizer is not trained; call train() or from_centroids()");
}

void ProductQuantizer::require_not_frozen(const char* what) const {
  if (state_.load() == kFrozen)
    throw InvalidArgument(std::string("ProductQuantizer.") + what +
                          ": this quantizer encodes the codes of an index, and new centroids would "
                          "silently change what those codes mean; train a new ProductQuantizer "
                          "and build a new index with it");
}

void ProductQuantizer::freeze() {
  int s = state_.load();
  while (s != kFrozen) {
    if (s == kWriting)
      throw InvalidArgument("ProductQuantizer: centroids are being set by another thread while an "
                            "index adds codes with it; train the quantizer before adding");
    if (state_.compare_exchange_weak(s, kFrozen)) return;
  }
}

void ProductQuantizer::train(int64_t n, const float* x, int iters, uint64_t seed, int num_threads,
                             int64_t max_points_per_centroid,
                             const std::function<void()>& interrupt) {
  require_not_frozen("train");  // before the (long) k-means
  PTCH_CHECK(n >= ksub_, "train: need at least ksub=" + std::to_string(ksub_) +
                             " training vectors; got " + std::to_string(n));
  PTCH_CHECK(iters >= 0, "train: iters must be >= 0; got " + std::to_string(iters));
  check_value_range(x, n * dim_, dim_, "train: x");
  // Sample the same rows for every sub-space (partial Fisher-Yates with the seed).
  const int64_t cap = max_points_per_centroid > 0 ? max_points_per_centroid * ksub_ : n;
  std::vector<float> sample;
  const float* data = x;
  int64_t ns = n;
  if (n > cap) {
    std::vector<int64_t> perm(n);
    for (int64_t i = 0; i < n; ++i) perm[i] = i;
    SplitMix64 rng(seed ^ 0x5a3c9e1ull);
    for (int64_t i = 0; i < cap; ++i) {
      const int64_t j = i + static_cast<int64_t>(rng.next() % static_cast<uint64_t>(n - i));
      std::swap(perm[i], perm[j]);
    }
    std::sort(perm.begin(), perm.begin() + cap);  // memory order: cache friendly, same set
    sample.resize(static_cast<size_t>(cap) * dim_);
    for (int64_t i = 0; i < cap; ++i)
      std::copy(x + perm[i] * dim_, x + (perm[i] + 1) * dim_, sample.begin() + i * dim_);
    data = sample.data();
    ns = cap;
  }
  std::vector<float> c(static_cast<size_t>(m_) * ksub_ * dsub_);
  for (int j = 0; j < m_; ++j)
    kmeans(ns, data + j * dsub_, dim_, dsub_, ksub_, iters, seed + 1000003ull * j, num_threads,
           c.data() + static_cast<int64_t>(j) * ksub_ * dsub_, interrupt);
  set_centroids(c.data());
}

void ProductQuantizer::set_centroids(const float* c) {
  // Bounded centroids keep every table entry and score finite (util/value_limits.h).
  check_value_range(c, static_cast<int64_t>(m_) * ksub_ * dsub_, dsub_, "centroids");
  int expected = kFree;
  if (!state_.compare_exchange_strong(expected, kWriting)) {
    require_not_frozen("set_centroids");
    throw InvalidArgument("ProductQuantizer.set_centroids: centroids are being set by another thread");
  }
  struct Release {  // back to kFree whatever happens (bad_alloc)
    std::atomic<int>& s;
    ~Release() { s.store(kFree); }
  } release{state_};
  centroids_.assign(c, c + static_cast<size_t>(m_) * ksub_ * dsub_);
  centroids_t_.resize(centroids_.size());
  for (int j = 0; j < m_; ++j)
    for (int k = 0; k < ksub_; ++k)
      for (int t = 0; t < dsub_; ++t)
        centroids_t_[(static_cast<size_t>(j) * dsub_ + t) * ksub_ + k] =
            centroids_[(static_cast<size_t>(j) * ksub_ + k) * dsub_ + t];
  trained_ = true;
}

void ProductQuantizer::encode(int64_t n, const float* x, uint8_t* codes, int num_threads,
                              const std::function<void()>& interrupt) const {
  require_trained("encode");
  check_value_range(x, n * dim_, dim_, "encode: x");
  constexpr int64_t kChunk = 256;
  const KernelTable& kt = kernels();
  const int64_t tasks = (n + kChunk - 1) / kChunk;
  parallel_for(tasks, resolve_num_threads(num_threads, tasks), [&](int64_t task, int) {
    int32_t tmp[kChunk];
    const int64_t i0 = task * kChunk, cnt = std::min(kChunk, n - i0);
    for (int j = 0; j < m_; ++j) {
      kt.assign_l2(cnt, x + i0 * dim_ + j * dsub_, dim_, dsub_,
                   centroids_t_.data() + static_cast<int64_t>(j) * dsub_ * ksub_, ksub_, tmp, nullptr);
      for (int64_t i = 0; i < cnt; ++i) codes[(i0 + i) * m_ + j] = static_cast<uint8_t>(tmp[i]);
    }
  }, interrupt);
}

void ProductQuantizer::decode(int64_t n, const uint8_t* codes, float* x) const {
  require_trained("decode");
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < m_; ++j) {
      const int c = codes[i * m_ + j];
      PTCH_CHECK(c < ksub_, "decode: codes must be < 2**nbits=" + std::to_string(ksub_) +
                                "; got " + std::to_string(c) + " at row " + std::to_string(i));
      const float* src = centroids_.data() + (static_cast<int64_t>(j) * ksub_ + c) * dsub_;
      std::copy(src, src + dsub_, x + i * dim_ + j * dsub_);
    }
}

void ProductQuantizer::compute_lut(const float* q, float* lut) const {
  require_trained("compute_lut");
  check_value_range(q, dim_, 0, "compute_lut: q");
  kernels().lut_ip(q, centroids_t_.data(), m_, ksub_, dsub_, lut);
}

}  // namespace pypatch
