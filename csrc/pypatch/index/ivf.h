// The inverted file over patches (issue 11): a coarse quantizer of nlist centroids in the
// index's space, and nlist lists holding (id u32, PQ code) per patch, where the id packs the
// image and the patch ordinal: image << ord_bits | ordinal (4 bytes a patch, not 5).
//
// Codes are NOT residuals: a list holds exactly the codes the exhaustive index would hold for
// the same quantizer, so an IVF search equals the exhaustive ADC scan restricted to the
// probed patches, and exhaustive and IVF indexes (and shards) can share one quantizer.
// (Measured with faiss IndexIVFPQ as a proxy, benchmarks/ivf_residual_choice.py.)
//
// Assignment is to the nearest centroid in L2, computed as argmin_c ||c||^2 - 2 <x, c> (the
// same order as ||x - c||^2 up to rounding) with the lut_ip kernel, which is bit-exact across
// SIMD levels: a patch lands in the same list, and a query probes the same lists, at every
// level. Ties go to the lower list.
//
// Each list is sorted by (image, ordinal), i.e. by id: adds append larger image numbers,
// compact keeps the order. So an image's entries in one list are contiguous ("runs"), and a
// list is a small CSR store whose "images" are those runs, scanned by the exhaustive scan's own
// code (8-bit, and 4-bit at the exact float path); the 4-bit fast scan goes query by query
// (ivf_fs4.h).
#pragma once
#include <cstdint>     // fixed-width ints
#include <functional>  // interrupt
#include <vector>

#include "pypatch/index/coarse_screen.h"  // CoarseScreen
#include "pypatch/index/topk.h"          // TopK

namespace pypatch {

class Quantizer;

/// Largest patch ordinal + 1 an IVF entry can hold (at most 8 ordinal bits).
constexpr int64_t kIvfMaxPatchesPerImage = 256;
/// Largest image number + 1 for ord_bits ordinal bits (the rest of a u32 id).
constexpr int64_t ivf_max_images(int ord_bits) { return int64_t{1} << (32 - ord_bits); }
/// Bits an ordinal in [0, max_patches) needs: 0 for at most one patch an image.
inline int ivf_ord_bits_for(int64_t max_patches) {
  int b = 0;
  while ((int64_t{1} << b) < max_patches) ++b;
  return b;
}
/// The image and the ordinal of a packed id.
inline uint32_t ivf_image(uint32_t id, int ord_bits) { return id >> ord_bits; }
inline uint32_t ivf_ord(uint32_t id, int ord_bits) { return id & ((uint32_t{1} << ord_bits) - 1); }
inline uint32_t ivf_id(uint32_t image, uint32_t ord, int ord_bits) { return image << ord_bits | ord; }

class CoarseQuantizer {
 public:
  CoarseQuantizer() = default;
  /// c: (nlist, dim) f32.
  CoarseQuantizer(int nlist, int dim, const float* c);
  int nlist() const { return nlist_; }
  int dim() const { return dim_; }
  const std::vector<float>& centroids() const { return c_; }
  /// x: (n, dim) -> out: (n) nearest list.
  void assign(int64_t n, const float* x, int32_t* out, int num_threads,
              const std::function<void()>& interrupt = {}) const;
  /// q: (dim) -> out: the nprobe nearest lists, nearest first (ties: lower list first). The
  /// same lists whether or not the screen runs (it only skips centroids that cannot qualify).
  void probe(const float* q, int nprobe, int32_t* out) const;
  /// The same, scoring every centroid in float32 (what probe does when it does not screen).
  void probe_exact(const float* q, int nprobe, int32_t* out) const;
  /// Whether probe screens (the float32 centroids exceed CoarseScreen::kMinFloatBytes).
  bool screens() const { return !screen_.empty(); }
  /// Bytes held (float32 centroids, their transposed chunks and norms, the screen).
  int64_t bytes() const;

 private:
  static constexpr int kChunk = 64;  // centroids per transposed chunk (64 KB at dim 256)
  // d[c] = ||c||^2 - 2 <x, c> for the centroids of chunk ch (ip: scratch of kChunk).
  void chunk_scores(const float* x, int ch, float* ip, float* d) const;
  int nlist_ = 0, dim_ = 0;
  std::vector<float> c_;       // (nlist, dim)
  std::vector<float> norms_;   // ||c||^2
  std::vector<float> chunks_;  // chunk ch: (dim, n_ch) transposed, at ch * kChunk * dim
  CoarseScreen screen_;        // empty when the float32 centroids are small
};

/// nlist lists; each one either owned (vectors) or a view into a loaded file.
struct IvfLists {
  struct Owned {
    std::vector<uint8_t> codes;    // blocked64 (8-bit) or blocked32_fs4 (4-bit), whole blocks
    std::vector<uint32_t> ids;     // ascending
  };
  std::vector<int64_t> size;               // entries per list
  std::vector<const uint8_t*> codes;       // views (into owned or a file)
  std::vector<const uint32_t*> ids;
  std::vector<Owned> owned;                // empty while viewing a file
  int ord_bits = 0;                        // of every id; grows (repacking) as adds need

  int nlist() const { return static_cast<int>(size.size()); }
  int64_t total() const;
  void reset(int nlist);                   // nlist empty owned lists
  void point_at_owned();                   // views = owned storage
};

struct IvfSearchSetup {
  const Quantizer* pq;
  int dim;
  const CoarseQuantizer* cq;
  const IvfLists* lists;
  const uint8_t* removed;  // (n_images) mask or nullptr
};

/// Top-k per query over the patches of the nprobe lists nearest each query: per image the max
/// over its probed patches (lowest ordinal on ties), images by (score desc, image asc); the
/// same scores, bit for bit, as the exhaustive scan restricted to those patches.
std::vector<TopK> ivf_search(const IvfSearchSetup& s, int64_t nq, const float* q, int k, int nprobe,
                             int num_threads, const std::function<void()>& interrupt);

}  // namespace pypatch
