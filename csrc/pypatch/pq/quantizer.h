// Quantizer: what a PatchIndex needs from its codebooks. A code is m bytes (one index of
// ksub = 2**nbits codewords per codebook) and a query scores it with m table lookups:
// score(q, code) = sum_j lut[j][code[j]]. Two kinds share that contract:
//   Product  (product_quantizer.h): codebook j holds sub-vectors of dims [j*dsub, (j+1)*dsub)
//   Residual (residual_quantizer.h): every codebook holds full-dimension vectors, summed
// so the scans, the file's code sections and the inverted file never depend on the kind.
#pragma once
#include <atomic>      // frozen state (read by index threads)
#include <cstdint>     // int64_t, uint8_t
#include <functional>  // interrupt
#include <vector>      // centroids

namespace pypatch {

enum class CodebookKind : uint32_t { Product = 0, Residual = 1 };

class Quantizer {
 public:
  virtual ~Quantizer() = default;
  Quantizer(const Quantizer&) = delete;
  Quantizer& operator=(const Quantizer&) = delete;

  virtual CodebookKind kind() const = 0;
  int dim() const { return dim_; }
  int m() const { return m_; }
  int nbits() const { return nbits_; }
  int ksub() const { return ksub_; }
  /// Floats per codeword: dim / m (product) or dim (residual).
  int codeword_dim() const { return codeword_dim_; }
  bool is_trained() const { return trained_; }

  /// x: (n, dim) f32. Throws InvalidArgument if frozen (checked before any work). Trains on at
  /// most max_points_per_centroid * ksub rows sampled with the seed (all rows if fewer).
  virtual void train(int64_t n, const float* x, int iters = 25, uint64_t seed = 0,
                     int num_threads = 0, int64_t max_points_per_centroid = 256,
                     const std::function<void()>& interrupt = {}) = 0;
  /// c: (m, ksub, codeword_dim) f32, finite with |x| <= 1e15. Throws InvalidArgument if frozen.
  void set_centroids(const float* c);
  /// Called by a PatchIndex that stores codes made with this quantizer: from then on
  /// train/set_centroids are refused (new centroids would silently reinterpret the codes).
  /// Permanent. Throws InvalidArgument if another thread is setting centroids right now.
  void freeze();
  bool is_frozen() const { return state_.load() == kFrozen; }
  /// (m, ksub, codeword_dim) f32; empty until trained.
  const std::vector<float>& centroids() const { return centroids_; }

  /// x: (n, dim) f32 -> codes: (n, m) u8.
  virtual void encode(int64_t n, const float* x, uint8_t* codes, int num_threads = 0,
                      const std::function<void()>& interrupt = {}) const = 0;
  /// codes: (n, m) u8 -> x: (n, dim) f32. Throws InvalidArgument on a code >= ksub.
  virtual void decode(int64_t n, const uint8_t* codes, float* x) const = 0;
  /// q: (dim) f32 -> lut: (m, ksub) f32 inner-product table.
  virtual void compute_lut(const float* q, float* lut) const = 0;
  /// nq queries (nq, dim) -> luts (nq, m, ksub): the same tables as compute_lut, bit for bit.
  /// A residual quantizer's cost m * ksub * dim multiply-adds a query: it splits its codebooks
  /// over num_threads (0: all) and streams the queries past each; PQ's are cheap: one thread.
  virtual void compute_luts(int64_t nq, const float* q, float* luts, int num_threads = 1) const;

 protected:
  Quantizer(int dim, int m, int nbits, int codeword_dim, const char* name);
  void require_trained(const char* what) const;
  void require_not_frozen(const char* what) const;
  /// train()'s argument checks (not frozen, n >= ksub, iters >= 0, values in range), then its
  /// rows: all of x or a seeded sample (training_sample); sets n_out.
  const float* checked_training_rows(int64_t n, const float* x, int iters, uint64_t seed,
                                     int64_t max_points_per_centroid, std::vector<float>& sample,
                                     int64_t& n_out) const;
  /// After centroids_ changed: derived tables (transposed copies, norms).
  virtual void on_centroids() = 0;

  const char* name_;  // "ProductQuantizer" / "ResidualQuantizer", for messages
  int dim_, m_, nbits_, ksub_, codeword_dim_;
  std::vector<float> centroids_;  // (m, ksub, codeword_dim)

 private:
  enum : int { kFree = 0, kWriting = 1, kFrozen = 2 };
  std::atomic<int> state_{kFree};  // kWriting while set_centroids runs
  bool trained_ = false;
};

/// Rows to train on: all of x, or max_points_per_centroid * ksub rows drawn with the seed and
/// copied in memory order into `sample` (returns the pointer to train on and sets n_out).
const float* training_sample(int64_t n, const float* x, int dim, int64_t cap, uint64_t seed,
                             std::vector<float>& sample, int64_t& n_out);

}  // namespace pypatch
