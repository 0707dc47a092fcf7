// Product quantizer: dim = m * dsub; each sub-vector is replaced by the index of its nearest of
// ksub = 2**nbits centroids (nbits 8 or 4; codes are one byte per sub-space here, a PatchIndex
// packs 4-bit ones two a byte: index/code_layout_fs4.h).
// Scores are inner products: score(q, code) = sum_j lut[j][code[j]], lut[j][c] = <q_j, C_j[c]>.
#pragma once
#include "pypatch/pq/quantizer.h"  // Quantizer

namespace pypatch {

class ProductQuantizer final : public Quantizer {
 public:
  /// Throws InvalidArgument unless dim >= 1, 1 <= m <= dim, dim % m == 0, nbits in {4, 8}.
  ProductQuantizer(int dim, int m, int nbits = 8);

  CodebookKind kind() const override { return CodebookKind::Product; }
  int dsub() const { return codeword_dim_; }

  /// Each sub-space: k-means++ and `iters` Lloyd iterations on the same sampled rows.
  void train(int64_t n, const float* x, int iters = 25, uint64_t seed = 0, int num_threads = 0,
             int64_t max_points_per_centroid = 256,
             const std::function<void()>& interrupt = {}) override;
  /// Nearest centroid per sub-space (lowest on ties).
  void encode(int64_t n, const float* x, uint8_t* codes, int num_threads = 0,
              const std::function<void()>& interrupt = {}) const override;
  void decode(int64_t n, const uint8_t* codes, float* x) const override;
  void compute_lut(const float* q, float* lut) const override;

 private:
  void on_centroids() override;
  std::vector<float> centroids_t_;  // (m, dsub, ksub): layout of the SIMD kernels
};

}  // namespace pypatch
