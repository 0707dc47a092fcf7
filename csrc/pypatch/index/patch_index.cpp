// PatchIndex: storage, add/remove, and the fused per-image max search.
#include "pypatch/index/patch_index.h"

#include <algorithm>  // lower_bound, fill
#include <cmath>      // INFINITY
#include <cstring>    // memcpy
#include <mutex>      // unique_lock

#include "pypatch/errors.h"             // InvalidArgument, NotTrained
#include "pypatch/index/code_layout.h"  // blocked64 PQ codes
#include "pypatch/index/code_layout_fs4.h"  // blocked32_fs4 (4-bit) PQ codes
#include "pypatch/index/scan.h"         // scan_chunk
#include "pypatch/index/topk.h"         // TopK
#include "pypatch/pq/kmeans.h"          // coarse quantizer training
#include "pypatch/io/container.h"       // io::Container (kept alive for views)
#include "pypatch/simd/kernels.h"       // float_to_half, half_to_float
#include "pypatch/util/parallel_for.h"  // threads
#include "pypatch/util/value_limits.h"  // |x| <= 1e15

namespace pypatch {

namespace {
int code_size_of(int dim, StoreKind kind, const Quantizer* pq) {
  switch (kind) {
    case StoreKind::PQ: return pq->m();
    case StoreKind::FlatF32: return 4 * dim;
    case StoreKind::FlatF16: return 2 * dim;
  }
  throw InvalidArgument("unknown store kind");
}
}  // namespace

PatchIndex::PatchIndex(int dim, StoreKind kind, std::shared_ptr<Quantizer> pq, int nlist)
    : dim_(dim), kind_(kind), pq_(std::move(pq)), nlist_(nlist) {
  PTCH_CHECK(dim >= 1 && dim <= kMaxDim,
             "dim must be in 1.." + std::to_string(kMaxDim) + "; got " + std::to_string(dim));
  PTCH_CHECK(kind != StoreKind::PQ || pq_, "a PQ index needs a quantizer");
  PTCH_CHECK(!pq_ || pq_->dim() == dim, "pq.dim (" + std::to_string(pq_ ? pq_->dim() : 0) +
                                            ") must equal the index dim (" + std::to_string(dim) + ")");
  code_size_ = code_size_of(dim, kind, pq_.get());
  PTCH_CHECK(nlist >= 0 && nlist <= kMaxNlist,
             "nlist must be in 1.." + std::to_string(kMaxNlist) + "; got " + std::to_string(nlist));
  PTCH_CHECK(nlist == 0 || kind == StoreKind::PQ, "an inverted file (nlist) needs a PQ store");
  if (nlist > 0) {
    // 16 probes: ~1.6% of the codes at nlist = 1024 (inside the 1/20-of-exhaustive budget with
    // room for per-list overheads); image recall@10 against exhaustive ADC on the clustered
    // synthetic data (benchmarks/ivf_core_timing.py): 0.969 at 10k x 30 / nlist 128 (0.913 at
    // 4 probes, 0.956 at 8), 1.000 at 100k x 30 / nlist 1024. Fewer lists: all are probed.
    nprobe_ = std::min(nlist, 16);
    lists_.reset(nlist);
  }
}

PatchIndex::PatchIndex(int dim, std::shared_ptr<Quantizer> pq, int nlist)
    : PatchIndex(dim, StoreKind::PQ, std::move(pq), nlist) {}

PatchIndex::PatchIndex(int dim, StoreKind kind) : PatchIndex(dim, kind, nullptr) {
  PTCH_CHECK(kind != StoreKind::PQ, "use the quantizer constructor for a PQ index");
}

PatchIndex::PatchIndex(int dim, std::shared_ptr<Quantizer> pq)
    : PatchIndex(dim, StoreKind::PQ, std::move(pq)) {}

PatchIndex::~PatchIndex() = default;

void PatchIndex::train(int64_t n, const float* x, int iters, uint64_t seed, int num_threads,
                       const Interrupt& interrupt) {
  std::unique_lock<FairSharedMutex> lock(mu_);
  if (kind_ != StoreKind::PQ) return;  // flat stores need no training
  if (nlist_ > 0 && !cq_) {
    PTCH_CHECK(n >= nlist_, "train: the coarse quantizer needs at least nlist=" + std::to_string(nlist_) +
                                " training vectors; got " + std::to_string(n));
    check_value_range(x, n * dim_, dim_, "train: vectors");
    // At most 256 rows per centroid (faiss's cap): Lloyd's cost is rows * nlist * dim.
    const int64_t cap = int64_t{256} * nlist_;
    std::vector<float> sample;
    const float* xs = x;
    int64_t ns = n;
    if (n > cap) {
      SplitMix64 rng(seed ^ 0x1F0C0A55EULL);
      std::vector<int64_t> idx(n);
      for (int64_t i = 0; i < n; ++i) idx[i] = i;
      sample.resize(static_cast<size_t>(cap) * dim_);
      for (int64_t i = 0; i < cap; ++i) {
        std::swap(idx[i], idx[i + static_cast<int64_t>(rng.next() % static_cast<uint64_t>(n - i))]);
        std::memcpy(sample.data() + i * dim_, x + idx[i] * dim_, static_cast<size_t>(dim_) * 4);
      }
      xs = sample.data();
      ns = cap;
    }
    std::vector<float> c(static_cast<size_t>(nlist_) * dim_);
    kmeans(ns, xs, dim_, dim_, nlist_, iters, seed, num_threads, c.data(), interrupt);
    cq_ = std::make_shared<const CoarseQuantizer>(nlist_, dim_, c.data());
  }
  if (!pq_->is_trained()) pq_->train(n, x, iters, seed, num_threads, 256, interrupt);
}

void PatchIndex::set_nprobe(int n) {
  PTCH_CHECK(nlist_ > 0, "nprobe: this index is exhaustive (no inverted file)");
  PTCH_CHECK(n >= 1, "nprobe must be >= 1; got " + std::to_string(n));
  nprobe_ = std::min(n, nlist_);
}

std::vector<float> PatchIndex::coarse_centroids() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  return cq_ ? cq_->centroids() : std::vector<float>{};
}

void PatchIndex::set_coarse_centroids(const float* c) {
  std::unique_lock<FairSharedMutex> lock(mu_);
  PTCH_CHECK(nlist_ > 0, "set_coarse_centroids: this index is exhaustive (no inverted file)");
  PTCH_CHECK(patches_() == 0, "set_coarse_centroids: the index already holds patches assigned to its "
                              "lists; set the centroids before adding");
  check_value_range(c, static_cast<int64_t>(nlist_) * dim_, dim_, "set_coarse_centroids: centroids");
  cq_ = std::make_shared<const CoarseQuantizer>(nlist_, dim_, c);
}

std::vector<int32_t> PatchIndex::probe(int64_t nq, const float* q, int nprobe) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  PTCH_CHECK(nlist_ > 0, "probe: this index is exhaustive (no inverted file)");
  if (!cq_) throw NotTrained("probe: the coarse quantizer is not trained; call train() first");
  PTCH_CHECK(nprobe >= 1, "nprobe must be >= 1; got " + std::to_string(nprobe));
  nprobe = std::min(nprobe, nlist_);
  check_value_range(q, nq * dim_, dim_, "probe: queries");
  std::vector<int32_t> out(static_cast<size_t>(nq * nprobe));
  for (int64_t i = 0; i < nq; ++i) cq_->probe(q + i * dim_, nprobe, out.data() + i * nprobe);
  return out;
}

std::vector<int32_t> PatchIndex::patch_lists() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  PTCH_CHECK(nlist_ > 0, "patch_lists: this index is exhaustive (no inverted file)");
  std::vector<int32_t> out(static_cast<size_t>(patches_()), -1);
  for (int l = 0; l < nlist_; ++l)
    for (int64_t e = 0; e < lists_.size[l]; ++e)
      out[offsets_[ivf_image(lists_.ids[l][e], lists_.ord_bits)] + ivf_ord(lists_.ids[l][e], lists_.ord_bits)] = l;
  return out;
}

int64_t PatchIndex::storage_bytes(int64_t n) const {
  if (fs4_()) return fs4_bytes(n, code_size_);
  return kind_ == StoreKind::PQ ? blocked_bytes(n, code_size_) : n * code_size_;
}

int64_t PatchIndex::n_images() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  return images_();
}

int64_t PatchIndex::n_patches() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  return patches_();
}

bool PatchIndex::is_view() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  return file_ != nullptr;
}

int64_t PatchIndex::n_removed() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  return n_removed_;
}

std::vector<int64_t> PatchIndex::image_offsets() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  return offsets_;
}

std::vector<uint8_t> PatchIndex::removed_mask() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  return removed_;
}

void PatchIndex::check_image_(int64_t image, const char* what) const {
  PTCH_CHECK(image >= 0 && image < images_(), std::string(what) + "image index " + std::to_string(image) +
                                                  " out of range [0, " + std::to_string(images_()) + ")");
}

int64_t PatchIndex::image_patches(int64_t image) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  check_image_(image, "");
  return offsets_[image + 1] - offsets_[image];
}

void PatchIndex::ivf_copy_rows_(int64_t p0, int64_t n, uint8_t* out) const {
  if (n <= 0) return;
  // Images owning patches [p0, p0 + n): each list is sorted by image, so a binary search finds
  // where they start in it. Cost O(nlist log(list size) + their entries).
  const int64_t i0 = std::upper_bound(offsets_.begin(), offsets_.end(), p0) - offsets_.begin() - 1;
  const int64_t i1 = std::upper_bound(offsets_.begin(), offsets_.end(), p0 + n - 1) - offsets_.begin() - 1;
  const int m = code_size_;
  const int bits = lists_.ord_bits;
  for (int l = 0; l < nlist_; ++l) {
    const uint32_t* ids = lists_.ids[l];
    const int64_t sz = lists_.size[l];
    for (int64_t e = std::lower_bound(ids, ids + sz, ivf_id(static_cast<uint32_t>(i0), 0, bits)) - ids;
         e < sz && ivf_image(ids[e], bits) <= static_cast<uint64_t>(i1); ++e) {
      const int64_t p = offsets_[ivf_image(ids[e], bits)] + ivf_ord(ids[e], bits);
      if (p < p0 || p >= p0 + n) continue;
      if (fs4_()) fs4_to_rows(lists_.codes[l], e, 1, m, out + (p - p0) * m);
      else blocked_to_rows(lists_.codes[l], e, 1, m, out + (p - p0) * m);
    }
  }
}

void PatchIndex::copy_rows_(int64_t p0, int64_t n, uint8_t* out) const {
  if (nlist_ > 0) ivf_copy_rows_(p0, n, out);
  else if (fs4_()) fs4_to_rows(view_, p0, n, code_size_, out);
  else if (kind_ == StoreKind::PQ) blocked_to_rows(view_, p0, n, code_size_, out);
  else if (n > 0) std::memcpy(out, view_ + p0 * code_size_, static_cast<size_t>(n) * code_size_);
}

void PatchIndex::copy_rows(int64_t p0, int64_t n, uint8_t* out) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  PTCH_CHECK(p0 >= 0 && n >= 0 && p0 <= patches_() - n,
             "copy_rows: rows [" + std::to_string(p0) + ", " + std::to_string(p0) + "+" + std::to_string(n) +
                 ") out of range [0, " + std::to_string(patches_()) + ")");
  copy_rows_(p0, n, out);
}

bool PatchIndex::copy_all_rows(int64_t n, uint8_t* out) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  if (n != patches_()) return false;
  copy_rows_(0, n, out);
  return true;
}

void PatchIndex::materialize() {
  if (!file_) return;
  owned_.assign(view_, view_ + storage_bytes(patches_()));
  view_ = owned_.data();
  file_.reset();
}

int64_t PatchIndex::append_counts(int64_t n_new, const int64_t* counts) {
  PTCH_CHECK(n_new >= 0, "number of new images must be >= 0");
  int64_t total = 0;
  for (int64_t i = 0; i < n_new; ++i) {
    PTCH_CHECK(counts[i] >= 0, "patch counts must be >= 0; image " + std::to_string(i) +
                                   " has " + std::to_string(counts[i]));
    PTCH_CHECK(counts[i] <= INT32_MAX, "an image may have at most 2**31-1 patches");
    total += counts[i];
  }
  return total;
}

void PatchIndex::append_rows(const uint8_t* rows, int64_t n) {
  materialize();
  const int64_t p0 = patches_();
  owned_.resize(static_cast<size_t>(storage_bytes(p0 + n)), 0);
  if (fs4_()) rows_to_fs4(rows, p0, n, code_size_, owned_.data());
  else if (kind_ == StoreKind::PQ) rows_to_blocked(rows, p0, n, code_size_, owned_.data());
  else if (n > 0) std::memcpy(owned_.data() + p0 * code_size_, rows, static_cast<size_t>(n) * code_size_);
  view_ = owned_.data();
}

int PatchIndex::ivf_check_counts_(int64_t n_new, const int64_t* counts) const {
  int64_t most = 0;
  for (int64_t i = 0; i < n_new; ++i) {
    PTCH_CHECK(counts[i] <= kIvfMaxPatchesPerImage,
               "an inverted-file index holds at most " + std::to_string(kIvfMaxPatchesPerImage) +
                   " patches per image (8-bit ordinals); image " + std::to_string(i) + " has " +
                   std::to_string(counts[i]));
    most = std::max(most, counts[i]);
  }
  const int bits = std::max(lists_.ord_bits, ivf_ord_bits_for(most));
  PTCH_CHECK(images_() + n_new <= ivf_max_images(bits),
             "an inverted-file index whose images have up to " + std::to_string(int64_t{1} << bits) +
                 " patches holds at most 2**" + std::to_string(32 - bits) +
                 " images (4-byte ids: image << " + std::to_string(bits) +
                 " | patch ordinal); it has " + std::to_string(images_()) + " and " +
                 std::to_string(n_new) + " would be added: split the collection into shards");
  return bits;
}

void PatchIndex::ivf_widen_ids_(int bits) {
  const int old = lists_.ord_bits;
  if (bits == old) return;
  for (int l = 0; l < nlist_; ++l)
    for (uint32_t& id : lists_.owned[l].ids) id = ivf_id(ivf_image(id, old), ivf_ord(id, old), bits);
  lists_.ord_bits = bits;
}

void PatchIndex::ivf_materialize_() {
  if (!file_) return;
  for (int l = 0; l < nlist_; ++l) {
    const int64_t n = lists_.size[l];
    IvfLists::Owned& o = lists_.owned[l];
    o.codes.assign(lists_.codes[l], lists_.codes[l] + storage_bytes(n));
    o.ids.assign(lists_.ids[l], lists_.ids[l] + n);
  }
  lists_.point_at_owned();
  file_.reset();
}

void PatchIndex::ivf_append_(int64_t n_new, const int64_t* counts, const uint8_t* rows, const int32_t* assign) {
  ivf_materialize_();
  const int bits = ivf_check_counts_(n_new, counts);
  ivf_widen_ids_(bits);  // an image with more patches than any before: wider ordinals
  const int m = code_size_;
  // Reserve what this batch adds to each list: one big add holds exactly its bytes (a
  // doubling vector would hold up to 2x), repeated small adds grow by at least 1/4.
  std::vector<int64_t> add_n(nlist_, 0);
  int64_t total = 0;
  for (int64_t i = 0; i < n_new; ++i) total += counts[i];
  for (int64_t q = 0; q < total; ++q) ++add_n[assign[q]];
  for (int l = 0; l < nlist_; ++l) {
    if (!add_n[l]) continue;
    IvfLists::Owned& L = lists_.owned[l];
    const size_t want = L.ids.size() + static_cast<size_t>(add_n[l]);
    if (want <= L.ids.capacity()) continue;
    const size_t cap = std::max(want, L.ids.capacity() + L.ids.capacity() / 4);
    L.ids.reserve(cap);
    L.codes.reserve(static_cast<size_t>(storage_bytes(static_cast<int64_t>(cap))));
  }
  int64_t p = 0;
  for (int64_t i = 0; i < n_new; ++i) {
    const uint32_t image = static_cast<uint32_t>(images_() + i);
    for (int64_t o = 0; o < counts[i]; ++o, ++p) {
      IvfLists::Owned& L = lists_.owned[assign[p]];
      const int64_t n = static_cast<int64_t>(L.ids.size());
      L.codes.resize(static_cast<size_t>(storage_bytes(n + 1)), 0);
      if (fs4_()) rows_to_fs4(rows + p * m, n, 1, m, L.codes.data());
      else rows_to_blocked(rows + p * m, n, 1, m, L.codes.data());
      L.ids.push_back(ivf_id(image, static_cast<uint32_t>(o), bits));
    }
  }
  for (int l = 0; l < nlist_; ++l) lists_.size[l] = static_cast<int64_t>(lists_.owned[l].ids.size());
  lists_.point_at_owned();
}

int64_t PatchIndex::add(int64_t n_new, const int64_t* counts, const float* x, int num_threads,
                        const Interrupt& interrupt) {
  std::unique_lock<FairSharedMutex> lock(mu_);
  if (!is_trained()) throw NotTrained("add: the PQ index is not trained; call train() first");
  const int64_t total = append_counts(n_new, counts);
  if (nlist_ > 0) ivf_check_counts_(n_new, counts);
  check_value_range(x, total * dim_, dim_, "add: vectors");  // before any change
  if (kind_ == StoreKind::PQ && total > 0) pq_->freeze();  // before encoding with it
  std::vector<uint8_t> enc(static_cast<size_t>(total) * code_size_);
  if (kind_ == StoreKind::PQ) {
    pq_->encode(total, x, enc.data(), num_threads, interrupt);
  } else if (kind_ == StoreKind::FlatF32) {
    if (total) std::memcpy(enc.data(), x, enc.size());
  } else {
    uint16_t* h = reinterpret_cast<uint16_t*>(enc.data());
    for (int64_t i = 0; i < total * dim_; ++i) h[i] = float_to_half(x[i]);
    PTCH_CHECK(first_nonfinite_half(h, total * dim_) == total * dim_,
               "add: vectors beyond +-65504 do not fit the float16 store");
  }
  if (nlist_ > 0) {
    std::vector<int32_t> assign(static_cast<size_t>(total));
    cq_->assign(total, x, assign.data(), num_threads, interrupt);
    ivf_append_(n_new, counts, enc.data(), assign.data());
  } else {
    append_rows(enc.data(), total);
  }
  const int64_t first = images_();
  for (int64_t i = 0; i < n_new; ++i) offsets_.push_back(offsets_.back() + counts[i]);
  removed_.resize(images_(), 0);
  return first;
}

int64_t PatchIndex::add_codes(int64_t n_new, const int64_t* counts, const uint8_t* codes,
                              const int32_t* lists) {
  std::unique_lock<FairSharedMutex> lock(mu_);
  PTCH_CHECK(kind_ == StoreKind::PQ, "add_codes needs a PQ index (this one is a flat store)");
  PTCH_CHECK(nlist_ > 0 || lists == nullptr, "add_codes: lists are for an inverted-file index; this one is exhaustive");
  const int64_t total = append_counts(n_new, counts);
  if (nlist_ > 0) {
    if (!is_trained()) throw NotTrained("add_codes: the IVF index is not trained; call train() first");
    ivf_check_counts_(n_new, counts);
  }
  const int ksub = pq_->ksub();
  for (int64_t i = 0; i < total * code_size_; ++i)
    PTCH_CHECK(codes[i] < ksub, "codes must be < 2**nbits=" + std::to_string(ksub) + "; got " +
                                    std::to_string(codes[i]) + " at flat position " + std::to_string(i));
  for (int64_t i = 0; lists && i < total; ++i)
    PTCH_CHECK(lists[i] >= 0 && lists[i] < nlist_, "add_codes: list " + std::to_string(lists[i]) + " of patch " +
                                                       std::to_string(i) + " out of range [0, " +
                                                       std::to_string(nlist_) + ")");
  if (total > 0) pq_->freeze();
  if (nlist_ > 0) {
    std::vector<int32_t> assign;
    if (!lists) {  // by the decoded vectors
      std::vector<float> x(static_cast<size_t>(total) * dim_);
      pq_->decode(total, codes, x.data());
      assign.resize(static_cast<size_t>(total));
      cq_->assign(total, x.data(), assign.data(), 0);
      lists = assign.data();
    }
    ivf_append_(n_new, counts, codes, lists);
  } else {
    append_rows(codes, total);
  }
  const int64_t first = images_();
  for (int64_t i = 0; i < n_new; ++i) offsets_.push_back(offsets_.back() + counts[i]);
  removed_.resize(images_(), 0);
  return first;
}

ScanSetup PatchIndex::scan_setup() const {
  if (!is_trained()) throw NotTrained("search: the PQ index is not trained; call train() and add()");
  // an inverted file keeps its codes in lists, not in one image-ordered store
  PTCH_CHECK(nlist_ == 0, "scan_setup: an inverted-file index is searched list by list");
  return ScanSetup{kind_, dim_, code_size_, pq_.get(), view_, offsets_.data(), images_(),
                   removed_.empty() ? nullptr : removed_.data(), n_removed_};
}

void PatchIndex::search(int64_t nq, const float* q, int k, int num_threads, float* scores,
                        int64_t* images, int64_t* patches, const Interrupt& interrupt, int nprobe) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  PTCH_CHECK(k >= 1, "k must be >= 1; got " + std::to_string(k));
  PTCH_CHECK(nprobe >= 0, "nprobe must be >= 1; got " + std::to_string(nprobe));
  if (!is_trained()) throw NotTrained("search: the PQ index is not trained; call train() and add()");
  check_value_range(q, nq * dim_, dim_, "search: queries");
  std::vector<TopK> result;
  if (nlist_ > 0) {
    IvfSearchSetup setup{pq_.get(), dim_, cq_.get(), &lists_, n_removed_ ? removed_.data() : nullptr};
    result = ivf_search(setup, nq, q, k, nprobe > 0 ? nprobe : nprobe_.load(), num_threads, interrupt);
  } else {
    result = scan_topk(scan_setup(), nq, q, k, num_threads, interrupt);
  }
  for (int64_t qi = 0; qi < nq; ++qi) {
    const std::vector<Hit> hits = result[qi].sorted();
    for (int r = 0; r < k; ++r) {
      const bool ok = r < static_cast<int>(hits.size());
      scores[qi * k + r] = ok ? hits[r].score : -INFINITY;
      images[qi * k + r] = ok ? hits[r].image : -1;
      patches[qi * k + r] = ok ? hits[r].patch : -1;
    }
  }
}

void PatchIndex::remove(int64_t n, const int64_t* images) {
  std::unique_lock<FairSharedMutex> lock(mu_);
  for (int64_t i = 0; i < n; ++i)
    check_image_(images[i], "remove: ");
  for (int64_t i = 0; i < n; ++i) {
    if (!removed_[images[i]]) ++n_removed_;
    removed_[images[i]] = 1;
  }
}

bool PatchIndex::is_removed(int64_t image) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  check_image_(image, "");
  return removed_[image] != 0;
}

std::vector<int64_t> PatchIndex::compact() {
  std::unique_lock<FairSharedMutex> lock(mu_);
  const int64_t n = images_();
  std::vector<int64_t> mapping(n, -1);
  if (nlist_ > 0) {  // filter every list in place order: the mapping is increasing
    std::vector<int64_t> off{0};
    for (int64_t i = 0; i < n; ++i) {
      if (removed_[i]) continue;
      mapping[i] = static_cast<int64_t>(off.size()) - 1;
      off.push_back(off.back() + offsets_[i + 1] - offsets_[i]);
    }
    const int m = code_size_;
    std::vector<uint8_t> row(m);
    for (int l = 0; l < nlist_; ++l) {
      IvfLists::Owned kept;
      const int64_t nl = lists_.size[l];
      int64_t n_kept = 0;
      const int bits = lists_.ord_bits;
      for (int64_t e = 0; e < nl; ++e) n_kept += !removed_[ivf_image(lists_.ids[l][e], bits)];
      kept.ids.reserve(static_cast<size_t>(n_kept));  // exact: memory_usage counts capacity
      kept.codes.reserve(static_cast<size_t>(storage_bytes(n_kept)));
      for (int64_t e = 0; e < nl; ++e) {
        const uint32_t id = lists_.ids[l][e], img = ivf_image(id, bits);
        if (removed_[img]) continue;
        if (fs4_()) fs4_to_rows(lists_.codes[l], e, 1, m, row.data());
        else blocked_to_rows(lists_.codes[l], e, 1, m, row.data());
        const int64_t j = static_cast<int64_t>(kept.ids.size());
        kept.codes.resize(static_cast<size_t>(storage_bytes(j + 1)), 0);
        if (fs4_()) rows_to_fs4(row.data(), j, 1, m, kept.codes.data());
        else rows_to_blocked(row.data(), j, 1, m, kept.codes.data());
        kept.ids.push_back(ivf_id(static_cast<uint32_t>(mapping[img]), ivf_ord(id, bits), bits));
      }
      lists_.owned[l] = std::move(kept);  // list l of a file view is read before it is replaced
      lists_.size[l] = static_cast<int64_t>(lists_.owned[l].ids.size());
      lists_.codes[l] = lists_.owned[l].codes.data();
      lists_.ids[l] = lists_.owned[l].ids.data();
    }
    file_.reset();
    offsets_ = std::move(off);
    removed_.assign(images_(), 0);
    n_removed_ = 0;
    return mapping;
  }
  std::vector<uint8_t> rows(static_cast<size_t>(patches_()) * code_size_), kept;
  copy_rows_(0, patches_(), rows.data());
  std::vector<int64_t> off{0};
  kept.reserve(rows.size());
  for (int64_t i = 0; i < n; ++i) {
    if (removed_[i]) continue;
    mapping[i] = static_cast<int64_t>(off.size()) - 1;
    kept.insert(kept.end(), rows.begin() + offsets_[i] * code_size_, rows.begin() + offsets_[i + 1] * code_size_);
    off.push_back(off.back() + offsets_[i + 1] - offsets_[i]);
  }
  file_.reset();
  owned_.clear();
  view_ = owned_.data();
  offsets_.assign(1, 0);
  append_rows(kept.data(), off.back());
  offsets_ = std::move(off);
  removed_.assign(images_(), 0);
  n_removed_ = 0;
  return mapping;
}

void PatchIndex::reconstruct(int64_t image, float* out) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  reconstruct_(image, out);
}

bool PatchIndex::reconstruct_if(int64_t image, int64_t n_rows, float* out) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  check_image_(image, "reconstruct: ");
  if (offsets_[image + 1] - offsets_[image] != n_rows) return false;
  reconstruct_(image, out);
  return true;
}

void PatchIndex::reconstruct_(int64_t image, float* out) const {
  check_image_(image, "reconstruct: ");
  const int64_t p0 = offsets_[image], np = offsets_[image + 1] - p0;
  const uint8_t* src = kind_ == StoreKind::PQ ? nullptr : view_ + p0 * code_size_;  // IVF: no view_
  if (kind_ == StoreKind::PQ) {
    std::vector<uint8_t> rows(static_cast<size_t>(np) * code_size_);
    copy_rows_(p0, np, rows.data());
    pq_->decode(np, rows.data(), out);
  } else if (kind_ == StoreKind::FlatF32) {
    if (np) std::memcpy(out, src, static_cast<size_t>(np) * code_size_);
  } else {
    for (int64_t i = 0; i < np * dim_; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      out[i] = half_to_float(h);
    }
  }
}

std::string PatchIndex::metadata_json() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  return metadata_;
}

void PatchIndex::set_metadata_json(std::string json) {
  std::unique_lock<FairSharedMutex> lock(mu_);
  metadata_ = std::move(json);
}

void PatchIndex::set_transform(std::shared_ptr<const LinearTransform> t) {
  PTCH_CHECK(!t || t->dim_out() == dim_, "transform dim_out (" + std::to_string(t ? t->dim_out() : 0) +
                                             ") must equal the index dim (" + std::to_string(dim_) + ")");
  std::unique_lock<FairSharedMutex> lock(mu_);
  transform_ = std::move(t);
}

std::shared_ptr<const LinearTransform> PatchIndex::transform() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  return transform_;
}

std::vector<std::pair<std::string, int64_t>> PatchIndex::memory_usage() const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  if (nlist_ > 0) {
    // Owned lists count their capacity (what they hold in memory), mapped ones their size.
    int64_t code_bytes = 0, ids = 0;
    for (int l = 0; l < nlist_; ++l) {
      const IvfLists::Owned& o = lists_.owned[l];
      code_bytes += file_ ? storage_bytes(lists_.size[l]) : static_cast<int64_t>(o.codes.capacity());
      ids += file_ ? 4 * lists_.size[l] : static_cast<int64_t>(4 * o.ids.capacity());
    }
    const int64_t transform_bytes =
        transform_ ? static_cast<int64_t>((transform_->mean().size() + transform_->matrix().size()) * 4) : 0;
    return {
        {"codes", code_bytes},
        {"ivf_ids", ids},
        {"ivf_lists", static_cast<int64_t>(nlist_) * static_cast<int64_t>(8 + 3 * sizeof(void*) + sizeof(IvfLists::Owned))},
        {"coarse_centroids", cq_ ? cq_->bytes() : 0},
        {"image_offsets", static_cast<int64_t>(offsets_.size() * sizeof(int64_t))},
        {"removed", static_cast<int64_t>(removed_.size())},
        {"centroids", pq_->is_trained() ? static_cast<int64_t>(pq_->centroids().size() * 8) : 0},
        {"metadata", static_cast<int64_t>(metadata_.size())},
        {"transform", transform_bytes},
        {"mapped", file_ ? code_bytes + ids : 0},
    };
  }
  const int64_t data_bytes = storage_bytes(patches_());
  const int64_t transform_bytes =
      transform_ ? static_cast<int64_t>((transform_->mean().size() + transform_->matrix().size()) * 4) : 0;
  return {
      {kind_ == StoreKind::PQ ? "codes" : "vectors", data_bytes},
      {"image_offsets", static_cast<int64_t>(offsets_.size() * sizeof(int64_t))},
      {"removed", static_cast<int64_t>(removed_.size())},
      {"centroids", pq_ && pq_->is_trained() ? static_cast<int64_t>(pq_->centroids().size() * 8) : 0},
      {"metadata", static_cast<int64_t>(metadata_.size())},
      {"transform", transform_bytes},
      {"mapped", file_ ? data_bytes : 0},
  };
}

}  // namespace pypatch
