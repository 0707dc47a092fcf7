// Product quantizer: dim = m * dsub; each sub-vector is replaced by the index of its nearest of
// ksub = 2**nbits centroids (nbits 8 or 4; codes are one byte per sub-space here, a PatchIndex
// packs 4-bit ones two a byte: index/code_layout_fs4.h).
// Scores are inner products: score(q, code) = sum_j lut[j][code[j]], lut[j][c] = <q_j, C_j[c]>.
#pragma once
#include <atomic>      // frozen state (read by index threads)
#include <cstdint>     // uint8_t
#include <functional>  // interrupt
#include <vector>      // centroids

namespace pypatch {

class ProductQuantizer {
 public:
  /// Throws InvalidArgument unless dim >= 1, 1 <= m <= dim, dim % m == 0, nbits in {4, 8}.
  ProductQuantizer(int dim, int m, int nbits = 8);

  int dim() const { return dim_; }
  int m() const { return m_; }
  int nbits() const { return nbits_; }
  int ksub() const { return ksub_; }
  int dsub() const { return dsub_; }
  bool is_trained() const { return trained_; }

  /// x: (n, dim) f32. Throws InvalidArgument if frozen (checked before any work). Trains each sub-space with k-means++ and `iters` Lloyd iterations on at
  /// most max_points_per_centroid * ksub rows sampled with the seed (all rows if fewer).
  void train(int64_t n, const float* x, int iters = 25, uint64_t seed = 0, int num_threads = 0,
             int64_t max_points_per_centroid = 256, const std::function<void()>& interrupt = {});
  /// c: (m, ksub, dsub) f32. Throws InvalidArgument if frozen.
  void set_centroids(const float* c);
  /// Called by a PatchIndex that stores codes made with this quantizer: from then on
  /// train/set_centroids are refused (new centroids would silently reinterpret the codes).
  /// Permanent. Throws InvalidArgument if another thread is setting centroids right now.
  void freeze();
  bool is_frozen() const { return state_.load() == kFrozen; }
  /// (m, ksub, dsub) f32; empty until trained.
  const std::vector<float>& centroids() const { return centroids_; }

  /// x: (n, dim) f32 -> codes: (n, m) u8, nearest centroid per sub-space (lowest on ties).
  void encode(int64_t n, const float* x, uint8_t* codes, int num_threads = 0,
              const std::function<void()>& interrupt = {}) const;
  /// codes: (n, m) u8 -> x: (n, dim) f32. Throws InvalidArgument on a code >= ksub.
  void decode(int64_t n, const uint8_t* codes, float* x) const;
  /// q: (dim) f32 -> lut: (m, ksub) f32 inner-product table.
  void compute_lut(const float* q, float* lut) const;

 private:
  void require_trained(const char* what) const;
  void require_not_frozen(const char* what) const;
  enum : int { kFree = 0, kWriting = 1, kFrozen = 2 };
  std::atomic<int> state_{kFree};  // kWriting while set_centroids runs
  int dim_, m_, nbits_, ksub_, dsub_;
  bool trained_ = false;
  std::vector<float> centroids_;    // (m, ksub, dsub)
  std::vector<float> centroids_t_;  // (m, dsub, ksub): layout of the SIMD kernels
};

}  // namespace pypatch
