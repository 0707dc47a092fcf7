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
#include "pypatch/io/container.h"       // io::Container (kept alive for views)
#include "pypatch/simd/kernels.h"       // float_to_half, half_to_float
#include "pypatch/util/parallel_for.h"  // threads
#include "pypatch/util/value_limits.h"  // |x| <= 1e15

namespace pypatch {

namespace {
int code_size_of(int dim, StoreKind kind, const ProductQuantizer* pq) {
  switch (kind) {
    case StoreKind::PQ: return pq->m();
    case StoreKind::FlatF32: return 4 * dim;
    case StoreKind::FlatF16: return 2 * dim;
  }
  throw InvalidArgument("unknown store kind");
}
}  // namespace

PatchIndex::PatchIndex(int dim, StoreKind kind, std::shared_ptr<ProductQuantizer> pq)
    : dim_(dim), kind_(kind), pq_(std::move(pq)) {
  PTCH_CHECK(dim >= 1 && dim <= kMaxDim,
             "dim must be in 1.." + std::to_string(kMaxDim) + "; got " + std::to_string(dim));
  PTCH_CHECK(kind != StoreKind::PQ || pq_, "a PQ index needs a ProductQuantizer");
  PTCH_CHECK(!pq_ || pq_->dim() == dim, "pq.dim (" + std::to_string(pq_ ? pq_->dim() : 0) +
                                            ") must equal the index dim (" + std::to_string(dim) + ")");
  code_size_ = code_size_of(dim, kind, pq_.get());
}

PatchIndex::PatchIndex(int dim, StoreKind kind) : PatchIndex(dim, kind, nullptr) {
  PTCH_CHECK(kind != StoreKind::PQ, "use the ProductQuantizer constructor for a PQ index");
}

PatchIndex::PatchIndex(int dim, std::shared_ptr<ProductQuantizer> pq)
    : PatchIndex(dim, StoreKind::PQ, std::move(pq)) {}

PatchIndex::~PatchIndex() = default;

void PatchIndex::train(int64_t n, const float* x, int iters, uint64_t seed, int num_threads,
                       const Interrupt& interrupt) {
  std::unique_lock<FairSharedMutex> lock(mu_);
  if (kind_ != StoreKind::PQ || pq_->is_trained()) return;  // flat stores need no training
  pq_->train(n, x, iters, seed, num_threads, 256, interrupt);
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

void PatchIndex::copy_rows_(int64_t p0, int64_t n, uint8_t* out) const {
  if (fs4_()) fs4_to_rows(view_, p0, n, code_size_, out);
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

int64_t PatchIndex::add(int64_t n_new, const int64_t* counts, const float* x, int num_threads,
                        const Interrupt& interrupt) {
  std::unique_lock<FairSharedMutex> lock(mu_);
  if (!is_trained()) throw NotTrained("add: the PQ index is not trained; call train() first");
  const int64_t total = append_counts(n_new, counts);
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
  append_rows(enc.data(), total);
  const int64_t first = images_();
  for (int64_t i = 0; i < n_new; ++i) offsets_.push_back(offsets_.back() + counts[i]);
  removed_.resize(images_(), 0);
  return first;
}

int64_t PatchIndex::add_codes(int64_t n_new, const int64_t* counts, const uint8_t* codes) {
  std::unique_lock<FairSharedMutex> lock(mu_);
  PTCH_CHECK(kind_ == StoreKind::PQ, "add_codes needs a PQ index (this one is a flat store)");
  const int64_t total = append_counts(n_new, counts);
  if (total > 0) pq_->freeze();
  const int ksub = pq_->ksub();
  for (int64_t i = 0; i < total * code_size_; ++i)
    PTCH_CHECK(codes[i] < ksub, "codes must be < 2**nbits=" + std::to_string(ksub) + "; got " +
                                    std::to_string(codes[i]) + " at flat position " + std::to_string(i));
  append_rows(codes, total);
  const int64_t first = images_();
  for (int64_t i = 0; i < n_new; ++i) offsets_.push_back(offsets_.back() + counts[i]);
  removed_.resize(images_(), 0);
  return first;
}

ScanSetup PatchIndex::scan_setup() const {
  if (!is_trained()) throw NotTrained("search: the PQ index is not trained; call train() and add()");
  return ScanSetup{kind_, dim_, code_size_, pq_.get(), view_, offsets_.data(), images_(),
                   removed_.empty() ? nullptr : removed_.data(), n_removed_};
}

void PatchIndex::search(int64_t nq, const float* q, int k, int num_threads, float* scores,
                        int64_t* images, int64_t* patches, const Interrupt& interrupt) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  PTCH_CHECK(k >= 1, "k must be >= 1; got " + std::to_string(k));
  const ScanSetup setup = scan_setup();
  check_value_range(q, nq * dim_, dim_, "search: queries");
  std::vector<TopK> result = scan_topk(setup, nq, q, k, num_threads, interrupt);
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
  const uint8_t* src = view_ + p0 * code_size_;
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
