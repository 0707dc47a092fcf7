#include "pypatch/pq/product_quantizer.h"

#include <algorithm>  // std::min
#include <string>     // messages

#include "pypatch/errors.h"             // InvalidArgument, NotTrained
#include "pypatch/pq/kmeans.h"          // kmeans, SplitMix64
#include "pypatch/simd/kernels.h"       // lut_ip, assign_l2
#include "pypatch/util/parallel_for.h"  // encode threads
#include "pypatch/util/value_limits.h"  // |x| <= 1e15

namespace pypatch {

namespace {
void check_settings(int dim, int m, int nbits) {
  PTCH_CHECK(dim >= 1, "dim must be >= 1; got " + std::to_string(dim));
  PTCH_CHECK(m >= 1 && m <= dim && dim % m == 0,
             "m must divide dim (dim=" + std::to_string(dim) + "); got m=" + std::to_string(m));
  PTCH_CHECK(nbits == 8 || nbits == 4, "nbits must be 8 or 4; got " + std::to_string(nbits));
}
int checked_dsub(int dim, int m, int nbits) {
  check_settings(dim, m, nbits);
  return dim / m;
}
}  // namespace

ProductQuantizer::ProductQuantizer(int dim, int m, int nbits)
    : Quantizer(dim, m, nbits, checked_dsub(dim, m, nbits), "ProductQuantizer") {}

void ProductQuantizer::train(int64_t n, const float* x, int iters, uint64_t seed, int num_threads,
                             int64_t max_points_per_centroid,
                             const std::function<void()>& interrupt) {
  // The same rows for every sub-space.
  std::vector<float> sample;
  int64_t ns = 0;
  const float* data = checked_training_rows(n, x, iters, seed, max_points_per_centroid, sample, ns);
  const int dsub = codeword_dim_;
  std::vector<float> c(static_cast<size_t>(m_) * ksub_ * dsub);
  for (int j = 0; j < m_; ++j)
    kmeans(ns, data + j * dsub, dim_, dsub, ksub_, iters, seed + 1000003ull * j, num_threads,
           c.data() + static_cast<int64_t>(j) * ksub_ * dsub, interrupt);
  set_centroids(c.data());
}

void ProductQuantizer::on_centroids() {
  const int dsub = codeword_dim_;
  centroids_t_.resize(centroids_.size());
  for (int j = 0; j < m_; ++j)
    for (int k = 0; k < ksub_; ++k)
      for (int t = 0; t < dsub; ++t)
        centroids_t_[(static_cast<size_t>(j) * dsub + t) * ksub_ + k] =
            centroids_[(static_cast<size_t>(j) * ksub_ + k) * dsub + t];
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
      kt.assign_l2(cnt, x + i0 * dim_ + j * codeword_dim_, dim_, codeword_dim_,
                   centroids_t_.data() + static_cast<int64_t>(j) * codeword_dim_ * ksub_, ksub_, tmp, nullptr);
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
      const float* src = centroids_.data() + (static_cast<int64_t>(j) * ksub_ + c) * codeword_dim_;
      std::copy(src, src + codeword_dim_, x + i * dim_ + j * codeword_dim_);
    }
}

void ProductQuantizer::compute_lut(const float* q, float* lut) const {
  require_trained("compute_lut");
  check_value_range(q, dim_, 0, "compute_lut: q");
  kernels().lut_ip(q, centroids_t_.data(), m_, ksub_, codeword_dim_, lut);
}

}  // namespace pypatch
