// PatchIndex: vectors of image patches grouped by image (CSR offsets), searched with the
// per-image MAX over patches. Storage is PQ codes (n_patches, m) u8 or an exact flat store of
// f32/f16 vectors. search() returns, per query, the top-k images by (score desc, image asc),
// each with its best score and the ordinal of the winning patch inside the image.
//
// Concurrency: search/reconstruct/save and the getters are const and may run from many threads
// at once; train/add/remove/compact/set_metadata take an exclusive lock. The lock is fair to
// writers (util/fair_shared_mutex.h): an add() waits for the searches already running, not
// for the ones that arrive after it. Every getter that reads
// mutable state takes the shared lock and returns a copy (never a reference into vectors that
// add() may reallocate).
// Storage may view a loaded file (mmap or eager buffer); the first mutation copies it.
#pragma once
#include <atomic>        // nprobe
#include <cstdint>       // int64_t
#include <functional>    // interrupt callback
#include <memory>        // shared_ptr
#include <shared_mutex>  // shared_lock
#include <string>        // metadata, paths
#include <utility>       // pair
#include <vector>        // owned storage

#include "pypatch/index/ivf.h"               // CoarseQuantizer, IvfLists (inverted file)
#include "pypatch/index/linear_transform.h"  // LinearTransform (optional pre-transform)
#include "pypatch/pq/product_quantizer.h"   // ProductQuantizer (the usual codebooks)
#include "pypatch/pq/residual_quantizer.h"  // ResidualQuantizer
#include "pypatch/util/huge_page_allocator.h"    // storage streamed by the scans
#include "pypatch/util/fair_shared_mutex.h"     // the index lock (fair to writers)

namespace pypatch {
namespace io { class Container; }
struct ScanSetup;  // index/scan.h

enum class StoreKind : uint32_t { PQ = 0, FlatF32 = 1, FlatF16 = 2 };

class PatchIndex {
 public:
  using Interrupt = std::function<void()>;
  /// Largest dim: what a file's reader accepts (PIDX), so every index that saves also loads.
  static constexpr int kMaxDim = 1 << 20;

  /// Exact flat store (kind FlatF32 or FlatF16). Throws InvalidArgument unless 1 <= dim <= kMaxDim.
  PatchIndex(int dim, StoreKind kind);
  /// PQ store over `pq` (product or residual codebooks; shared, possibly untrained);
  /// pq->dim() must equal dim. Once the index holds codes, the quantizer is frozen
  /// (Quantizer::freeze): retraining it would silently change what the codes mean.
  PatchIndex(int dim, std::shared_ptr<Quantizer> pq);
  /// Inverted file over patches (ivf.h) with nlist >= 1 lists of PQ codes; nlist = 0 is the
  /// exhaustive index above. Throws InvalidArgument for nlist < 0 or > kMaxNlist.
  PatchIndex(int dim, std::shared_ptr<Quantizer> pq, int nlist);
  ~PatchIndex();
  static constexpr int kMaxNlist = 1 << 20;

  /// 0 for an exhaustive index.
  int nlist() const { return nlist_; }
  bool is_ivf() const { return nlist_ > 0; }
  /// Lists probed by a search that passes nprobe = 0 (IVF only; default min(nlist, 16)).
  int nprobe() const { return nprobe_.load(); }
  /// Throws InvalidArgument unless IVF and n >= 1; n > nlist is stored as nlist.
  void set_nprobe(int n);
  /// (nlist, dim) f32 coarse centroids; empty until trained.
  std::vector<float> coarse_centroids() const;
  /// IVF only, while the index holds no patches: c (nlist, dim) f32 finite, |x| <= 1e15
  /// (trained elsewhere, e.g. shared by shards). Throws InvalidArgument otherwise.
  void set_coarse_centroids(const float* c);
  /// IVF only: (n_patches) list of every patch, in patch order (scans every list once).
  std::vector<int32_t> patch_lists() const;
  /// IVF only: (nq, nprobe) lists a search probes, nearest first.
  std::vector<int32_t> probe(int64_t nq, const float* q, int nprobe) const;

  int dim() const { return dim_; }
  StoreKind kind() const { return kind_; }
  /// Bytes per patch: m (PQ), 4*dim (f32), 2*dim (f16).
  int code_size() const { return code_size_; }
  std::shared_ptr<const Quantizer> pq() const { return pq_; }
  bool is_trained() const {
    return kind_ != StoreKind::PQ || (pq_->is_trained() && (nlist_ == 0 || cq_ != nullptr));
  }
  int64_t n_images() const;
  int64_t n_patches() const;
  /// (n_images + 1) CSR offsets: image i owns patches [off[i], off[i+1]) (a snapshot).
  std::vector<int64_t> image_offsets() const;
  /// Raw storage: 8-bit PQ codes in the "blocked64" layout (code_layout.h), 4-bit ones in
  /// "blocked32_fs4" (code_layout_fs4.h, m/2 bytes per patch), flat vectors row-major.
  /// Not locked: valid only while no thread mutates the index.
  const uint8_t* data() const { return view_; }
  /// Bytes of storage for n patches (PQ: padded to whole blocks; 4-bit: two codes a byte).
  int64_t storage_bytes(int64_t n) const;
  /// Row-major copy of patches [p0, p0+n): out (n, code_size) bytes; the range must lie
  /// inside [0, n_patches).
  void copy_rows(int64_t p0, int64_t n, uint8_t* out) const;
  /// Copies all patches into out (n, code_size) and returns true if the index holds exactly n
  /// patches; returns false, writing nothing, if it changed since the caller read n_patches().
  bool copy_all_rows(int64_t n, uint8_t* out) const;
  bool is_view() const;

  /// PQ only: trains the quantizer on x (n, dim) unless it is already trained. IVF: first the
  /// coarse quantizer (k-means on at most 256 * nlist rows sampled with the seed; n >= nlist),
  /// unless set; then the PQ on the same raw vectors (codes are not residuals: ivf.h).
  void train(int64_t n, const float* x, int iters, uint64_t seed, int num_threads,
             const Interrupt& interrupt = {});
  /// Appends n_new images; counts[i] patches each, vectors x (sum(counts), dim) f32.
  /// Returns the index of the first new image.
  int64_t add(int64_t n_new, const int64_t* counts, const float* x, int num_threads,
              const Interrupt& interrupt = {});
  /// PQ only: appends pre-encoded codes (sum(counts), m) u8 (each < 2**nbits). IVF: lists
  /// (sum(counts)) gives each patch's list (e.g. patch_lists() of an index with the same coarse
  /// centroids); nullptr assigns each patch by its decoded vector.
  int64_t add_codes(int64_t n_new, const int64_t* counts, const uint8_t* codes,
                    const int32_t* lists = nullptr);

  /// q: (nq, dim) f32; outputs (nq, k): scores (-inf padding), images and patches (-1 padding).
  /// IVF: probes nprobe lists per query (0: nprobe(); clamped to nlist); ignored otherwise.
  void search(int64_t nq, const float* q, int k, int num_threads, float* scores, int64_t* images,
              int64_t* patches, const Interrupt& interrupt = {}, int nprobe = 0) const;

  /// Exact re-score of given images (exhaustive stores only; an IVF index throws
  /// InvalidArgument). q: (nq, dim) f32; images: (nq, n_cand) int64, -1 = skip. For each
  /// candidate: the max over ALL the image's patches of the store's exact score (inner product
  /// for flat stores, float ADC for PQ) and the winning patch ordinal (lowest on ties), bit for
  /// bit what this store's own search returns for that image. Skipped, removed and empty images
  /// give -inf / -1. Throws InvalidArgument (writing nothing) for an image outside [-1, n_images).
  /// Outputs scores, patches: (nq, n_cand). Parallel over queries (score_images.cpp).
  void score_images(int64_t nq, const float* q, int64_t n_cand, const int64_t* images, float* scores,
                    int64_t* patches, int num_threads = 1) const;

  /// For scans over several indexes at once (index/multi_scan.h): the caller holds
  /// lock_shared() while it scans scan_setup(), a view of the storage (throws NotTrained).
  std::shared_lock<FairSharedMutex> lock_shared() const { return std::shared_lock<FairSharedMutex>(mu_); }
  ScanSetup scan_setup() const;

  /// Tombstones images (excluded from search; counts unchanged until compact()).
  void remove(int64_t n, const int64_t* images);
  bool is_removed(int64_t image) const;
  int64_t n_removed() const;
  /// (n_images) u8 mask, 1 = removed (a snapshot).
  std::vector<uint8_t> removed_mask() const;
  /// Drops removed images; returns old -> new image index (-1 for removed).
  std::vector<int64_t> compact();

  /// out: (patch count of image, dim) f32: stored vectors (decoded for PQ).
  void reconstruct(int64_t image, float* out) const;
  /// The same, but only if the image has exactly n_rows patches (out holds n_rows * dim);
  /// returns false, writing nothing, if the index changed since the caller sized out.
  bool reconstruct_if(int64_t image, int64_t n_rows, float* out) const;
  /// Patch count of one image (range-checked).
  int64_t image_patches(int64_t image) const;

  /// JSON text saved with the index (opaque to the core; "{}" by default).
  std::string metadata_json() const;
  void set_metadata_json(std::string json);

  /// Optional learned pre-transform from model space to the index's space (saved in the XFRM
  /// section). The index never applies it itself: callers transform their vectors with
  /// transform()->apply() before add/search. Throws InvalidArgument unless
  /// t->dim_out() == dim(); nullptr removes it.
  void set_transform(std::shared_ptr<const LinearTransform> t);
  /// The transform, or nullptr when none is set.
  std::shared_ptr<const LinearTransform> transform() const;

  /// Writes atomically (tmp file, fsync, rename). Format: patch_index_io.cpp.
  void save(const std::string& path) const;
  std::vector<uint8_t> to_bytes() const;
  /// The same bytes straight into a caller's buffer (no intermediate copy): write_to fills
  /// exactly `size` bytes and returns true, or returns false (writing nothing) if the index
  /// no longer serialises to `size` bytes because it changed since serialized_size().
  uint64_t serialized_size() const;
  bool write_to(void* dst, uint64_t size) const;
  /// mmap: map the file (codes are not copied); verify: CRC-check every section now.
  static std::unique_ptr<PatchIndex> load(const std::string& path, bool mmap = true,
                                          bool verify = false);
  static std::unique_ptr<PatchIndex> from_bytes(const void* data, size_t size);

  /// Bytes by part: "codes" (or "vectors"), "image_offsets", "removed", "centroids",
  /// "metadata", "transform", and "mapped" (bytes of storage that are views of a file, not owned);
  /// IVF adds "ivf_ids" (4 bytes a patch: image << ord_bits | ordinal), "ivf_lists" (per-list
  /// bookkeeping) and "coarse_centroids" (the centroids, their transposed copy and norms).
  std::vector<std::pair<std::string, int64_t>> memory_usage() const;

 private:
  PatchIndex(int dim, StoreKind kind, std::shared_ptr<Quantizer> pq, int nlist = 0);
  static std::unique_ptr<PatchIndex> from_container(std::shared_ptr<io::Container> c);
  class Writer;                       // builds the file sections (patch_index_io.cpp)
  // Unlocked reads for callers that already hold mu_ (shared_mutex is not recursive).
  int64_t images_() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t patches_() const { return offsets_.back(); }
  bool fs4_() const { return kind_ == StoreKind::PQ && pq_->nbits() == 4; }  // blocked32_fs4
  void check_image_(int64_t image, const char* what) const;
  void copy_rows_(int64_t p0, int64_t n, uint8_t* out) const;
  void reconstruct_(int64_t image, float* out) const;
  void materialize();                 // copy a file view into owned storage
  int64_t append_counts(int64_t n_new, const int64_t* counts);  // validate, extend offsets
  void append_rows(const uint8_t* rows, int64_t n);  // n patches, row-major
  // IVF: append n_new images' rows (row-major codes) to the lists `assign` gives each patch.
  void ivf_append_(int64_t n_new, const int64_t* counts, const uint8_t* rows, const int32_t* assign);
  // Checks a batch's patch counts against the id limits; returns the ordinal bits it needs.
  int ivf_check_counts_(int64_t n_new, const int64_t* counts) const;
  void ivf_widen_ids_(int bits);  // repacks every (owned) id with more ordinal bits
  void ivf_materialize_();
  void ivf_copy_rows_(int64_t p0, int64_t n, uint8_t* out) const;

  int dim_;
  StoreKind kind_;
  int code_size_;
  std::shared_ptr<Quantizer> pq_;
  std::vector<uint8_t, HugePageAllocator<uint8_t>> owned_;  // storage when not a view
  const uint8_t* view_ = nullptr;           // = owned_.data() or into file_
  std::shared_ptr<io::Container> file_;     // keeps a loaded file alive while viewed
  std::vector<int64_t> offsets_{0};
  std::vector<uint8_t> removed_;
  int64_t n_removed_ = 0;
  std::string metadata_ = "{}";
  std::shared_ptr<const LinearTransform> transform_;  // nullptr: none
  int nlist_ = 0;                                   // 0: exhaustive
  std::atomic<int> nprobe_{0};
  std::shared_ptr<const CoarseQuantizer> cq_;       // IVF, once trained or set
  IvfLists lists_;                                  // IVF storage (view_ stays empty)
  mutable FairSharedMutex mu_;
};

}  // namespace pypatch
