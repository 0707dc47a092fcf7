// Residual quantizer (an additive quantizer, Chen et al. 2010; faiss ResidualQuantizer): m
// codebooks of ksub = 2**nbits full-dimension codewords; a vector is approximated by the sum
// x ~ C_0[b_0] + C_1[b_1] + ... + C_{m-1}[b_{m-1}], each b_j chosen greedily for what the earlier
// stages left (the residual). A code is still m bytes and a query still scores it with m table
// lookups (lut[j][c] = <q, C_j[c]>), so every scan is shared with the product quantizer; the
// table costs m * ksub * dim multiply-adds instead of ksub * dim. On whitened patch
// descriptors it loses far less to the exact store than PQ at the same bytes
// (benchmarks/README.md, "Residual codebooks").
// Greedy encoding (beam 1): in the measurements faiss's beam search (beam 2-8) gave no better
// retrieval at 32 x 8 bits, at 2-4x the cost.
#pragma once
#include "pypatch/pq/quantizer.h"  // Quantizer

namespace pypatch {

class ResidualQuantizer final : public Quantizer {
 public:
  /// Largest m, and largest m * dim: every table sum stays far from float overflow
  /// (util/value_limits.h: |centroid|, |q| <= 1e15).
  static constexpr int kMaxM = 256;
  static constexpr int64_t kMaxCodewordFloats = int64_t{1} << 26;
  /// Throws InvalidArgument unless dim >= 1, 1 <= m <= kMaxM, m * dim <= kMaxCodewordFloats and
  /// nbits in {4, 8}.
  ResidualQuantizer(int dim, int m, int nbits = 8);

  CodebookKind kind() const override { return CodebookKind::Residual; }

  /// Stage by stage on the sampled rows: k-means (kmeans_wide, `iters` Lloyd iterations) on
  /// the residuals, then each row's residual loses its nearest new codeword.
  void train(int64_t n, const float* x, int iters = 25, uint64_t seed = 0, int num_threads = 0,
             int64_t max_points_per_centroid = 256,
             const std::function<void()>& interrupt = {}) override;
  /// Greedy: stage j takes the codeword nearest (L2) to the residual x - sum_{i<j} C_i[b_i]
  /// (lowest index on ties).
  void encode(int64_t n, const float* x, uint8_t* codes, int num_threads = 0,
              const std::function<void()>& interrupt = {}) const override;
  void decode(int64_t n, const uint8_t* codes, float* x) const override;
  void compute_lut(const float* q, float* lut) const override;
  void compute_luts(int64_t nq, const float* q, float* luts, int num_threads = 1) const override;

 private:
  void on_centroids() override;
  // Greedy codes of n rows whose residuals are in r (n, dim), updated in place.
  void encode_rows(int64_t n, float* r, uint8_t* codes) const;
  std::vector<float> panels_;  // per stage, pack_panels of its codewords (kmeans.h)
  std::vector<float> norms_;   // (m * ksub) squared codeword norms
};

}  // namespace pypatch
