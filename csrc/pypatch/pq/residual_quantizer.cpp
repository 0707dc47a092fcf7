#include "pypatch/pq/residual_quantizer.h"

#include <algorithm>  // min, copy
#include <string>     // messages

#include "pypatch/errors.h"             // InvalidArgument
#include "pypatch/pq/kmeans.h"          // kmeans_wide, assign_by_ip, squared_norms
#include "pypatch/simd/kernels.h"       // ip_rows
#include "pypatch/util/parallel_for.h"  // encode threads
#include "pypatch/util/value_limits.h"  // |x| <= 1e15

namespace pypatch {
namespace {

int checked_dim(int dim, int m, int nbits) {
  PTCH_CHECK(dim >= 1, "dim must be >= 1; got " + std::to_string(dim));
  PTCH_CHECK(m >= 1 && m <= ResidualQuantizer::kMaxM,
             "m must be in 1.." + std::to_string(ResidualQuantizer::kMaxM) + "; got " + std::to_string(m));
  PTCH_CHECK(static_cast<int64_t>(m) * dim <= ResidualQuantizer::kMaxCodewordFloats,
             "m * dim must be <= 2**26; got m=" + std::to_string(m) + ", dim=" + std::to_string(dim));
  PTCH_CHECK(nbits == 8 || nbits == 4, "nbits must be 8 or 4; got " + std::to_string(nbits));
  return dim;
}

// Rows per encode task: every stage's codebook (ksub x dim floats, 512 KB at 256 x 512) is read
// once per chunk, so chunks are large; their residuals (2 MB at dim 512) stay in L2/L3.
constexpr int64_t kEncodeChunk = 1024;

// One stage for n residuals r (n, dim), in place: best[i] = the nearest of the stage's k
// codewords (panels/norms: pack_panels and squared_norms of them), which r[i] then loses.
void take_nearest(int64_t n, float* r, int dim, const float* codewords, const float* panels,
                  const float* norms, int k, int32_t* best) {
  assign_by_ip(n, r, dim, dim, panels, norms, k, best);
  for (int64_t i = 0; i < n; ++i) {
    const float* w = codewords + static_cast<int64_t>(best[i]) * dim;
    float* ri = r + i * dim;
    for (int t = 0; t < dim; ++t) ri[t] -= w[t];
  }
}

}  // namespace

ResidualQuantizer::ResidualQuantizer(int dim, int m, int nbits)
    : Quantizer(dim, m, nbits, checked_dim(dim, m, nbits), "ResidualQuantizer") {}

void ResidualQuantizer::on_centroids() {
  const int64_t cols = static_cast<int64_t>(m_) * ksub_, stage = static_cast<int64_t>(ksub_) * dim_;
  panels_.resize(static_cast<size_t>(cols) * dim_);
  norms_.resize(static_cast<size_t>(cols));
  for (int j = 0; j < m_; ++j)
    pack_panels(centroids_.data() + j * stage, ksub_, dim_, panels_.data() + j * stage);
  squared_norms(centroids_.data(), static_cast<int>(cols), dim_, norms_.data());
}

void ResidualQuantizer::train(int64_t n, const float* x, int iters, uint64_t seed, int num_threads,
                              int64_t max_points_per_centroid,
                              const std::function<void()>& interrupt) {
  std::vector<float> sample;
  int64_t ns = 0;
  const float* data = checked_training_rows(n, x, iters, seed, max_points_per_centroid, sample, ns);
  std::vector<float> r(data, data + ns * dim_);  // the residuals, stage after stage
  const int64_t stage = static_cast<int64_t>(ksub_) * dim_;
  std::vector<float> c(static_cast<size_t>(m_) * stage), panels(static_cast<size_t>(stage)), norms(ksub_);
  std::vector<int32_t> assign(static_cast<size_t>(ns));
  const int64_t tasks = (ns + kEncodeChunk - 1) / kEncodeChunk;
  const int nt = resolve_num_threads(num_threads, tasks);
  for (int j = 0; j < m_; ++j) {
    float* cj = c.data() + j * stage;
    kmeans_wide(ns, r.data(), dim_, dim_, ksub_, iters, seed + 1000003ull * j, num_threads, cj,
                interrupt);
    pack_panels(cj, ksub_, dim_, panels.data());
    squared_norms(cj, ksub_, dim_, norms.data());
    parallel_for(tasks, nt, [&](int64_t task, int) {
      const int64_t i0 = task * kEncodeChunk, cnt = std::min(kEncodeChunk, ns - i0);
      take_nearest(cnt, r.data() + i0 * dim_, dim_, cj, panels.data(), norms.data(), ksub_,
                   assign.data() + i0);
    }, interrupt);
  }
  set_centroids(c.data());
}

void ResidualQuantizer::encode_rows(int64_t n, float* r, uint8_t* codes) const {
  std::vector<int32_t> best(static_cast<size_t>(n));
  for (int j = 0; j < m_; ++j) {
    const int64_t c0 = static_cast<int64_t>(j) * ksub_;
    take_nearest(n, r, dim_, centroids_.data() + c0 * dim_, panels_.data() + c0 * dim_,
                 norms_.data() + c0, ksub_, best.data());
    for (int64_t i = 0; i < n; ++i) codes[i * m_ + j] = static_cast<uint8_t>(best[i]);
  }
}

void ResidualQuantizer::encode(int64_t n, const float* x, uint8_t* codes, int num_threads,
                               const std::function<void()>& interrupt) const {
  require_trained("encode");
  check_value_range(x, n * dim_, dim_, "encode: x");
  const int64_t tasks = (n + kEncodeChunk - 1) / kEncodeChunk;
  parallel_for(tasks, resolve_num_threads(num_threads, tasks), [&](int64_t task, int) {
    const int64_t i0 = task * kEncodeChunk, cnt = std::min(kEncodeChunk, n - i0);
    std::vector<float> r(x + i0 * dim_, x + (i0 + cnt) * dim_);
    encode_rows(cnt, r.data(), codes + i0 * m_);
  }, interrupt);
}

void ResidualQuantizer::decode(int64_t n, const uint8_t* codes, float* x) const {
  require_trained("decode");
  for (int64_t i = 0; i < n; ++i) {
    float* xi = x + i * dim_;
    std::fill(xi, xi + dim_, 0.f);
    for (int j = 0; j < m_; ++j) {  // ascending j: the order the encoder subtracted in
      const int c = codes[i * m_ + j];
      PTCH_CHECK(c < ksub_, "decode: codes must be < 2**nbits=" + std::to_string(ksub_) +
                                "; got " + std::to_string(c) + " at row " + std::to_string(i));
      const float* w = centroids_.data() + (static_cast<int64_t>(j) * ksub_ + c) * dim_;
      for (int t = 0; t < dim_; ++t) xi[t] += w[t];
    }
  }
}

void ResidualQuantizer::compute_lut(const float* q, float* lut) const { compute_luts(1, q, lut); }

void ResidualQuantizer::compute_luts(int64_t nq, const float* q, float* luts, int num_threads) const {
  require_trained("compute_lut");
  check_value_range(q, nq * dim_, dim_, "compute_lut: q");
  // Panel by panel: one panel of codewords (dim x 64) stays in cache while every query passes,
  // so the codebooks are read once whatever nq; the panels split over the threads.
  const int64_t cols = static_cast<int64_t>(m_) * ksub_;
  const int w = std::min(kPanel, ksub_);  // ksub is 16 or 256: every stage has whole panels
  const int64_t n_panels = cols / w;
  const KernelTable& kt = kernels();
  parallel_for(n_panels, resolve_num_threads(num_threads, n_panels), [&](int64_t p, int) {
    kt.ip_rows(nq, q, dim_, dim_, panels_.data() + p * w * dim_, w, w, luts + p * w, cols);
  });
}

}  // namespace pypatch
