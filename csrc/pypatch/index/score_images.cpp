// PatchIndex::score_images: the exact score of given images, for a re-rank of another index's
// candidates (pypatch/index/patch_index.py search(rerank=)). Each image is scored by the same
// kernel the store's exhaustive search uses for it, so the scores and winning patches are bit for
// bit what that search returns: the flat and 8-bit kernels called on a one-image range (their
// per-patch sums do not depend on the range: simd/kernels.h), the 4-bit store's exact re-score.
// Only the candidates' rows are read, so a mapped (mmap) store pages in just those.
#include <cmath>    // INFINITY
#include <mutex>    // shared_lock
#include <string>   // messages
#include <vector>   // tables

#include "pypatch/errors.h"             // InvalidArgument, NotTrained
#include "pypatch/index/patch_index.h"
#include "pypatch/index/scan.h"         // ScanSetup, fastscan4_score_image
#include "pypatch/simd/kernels.h"       // segmax kernels
#include "pypatch/util/parallel_for.h"  // threads
#include "pypatch/util/value_limits.h"  // check_value_range

namespace pypatch {

void PatchIndex::score_images(int64_t nq, const float* q, int64_t n_cand, const int64_t* images,
                              float* scores, int64_t* patches, int num_threads) const {
  std::shared_lock<FairSharedMutex> lock(mu_);
  PTCH_CHECK(nlist_ == 0, "score_images: an inverted-file index has no image-ordered store to re-score "
                          "from; use an exhaustive index (flat or PQ) as the re-rank store");
  PTCH_CHECK(n_cand >= 0, "score_images: n_cand must be >= 0");
  if (!is_trained()) throw NotTrained("score_images: the PQ index is not trained; call train() and add()");
  check_value_range(q, nq * dim_, dim_, "score_images: queries");
  const int64_t n_img = images_();
  for (int64_t i = 0; i < nq * n_cand; ++i)  // all checked before anything is written
    PTCH_CHECK(images[i] >= -1 && images[i] < n_img,
               "score_images: image " + std::to_string(images[i]) + " out of range [0, " +
                   std::to_string(n_img) + ") (-1 skips)");
  if (nq == 0 || n_cand == 0) return;
  const ScanSetup s = scan_setup();
  const KernelTable& kt = kernels();
  const bool pq = kind_ == StoreKind::PQ;
  const int m = pq ? pq_->m() : 0, ksub = pq ? pq_->ksub() : 0;
  const int64_t lut_size = static_cast<int64_t>(m) * ksub;
  const int nt = resolve_num_threads(num_threads, nq);
  std::vector<std::vector<float>> lut(nt, std::vector<float>(static_cast<size_t>(lut_size)));
  parallel_for(nq, nt, [&](int64_t qi, int w) {
    const float* qv = q + qi * dim_;
    if (pq) pq_->compute_lut(qv, lut[w].data());  // the table the store's own search builds
    for (int64_t c = 0; c < n_cand; ++c) {
      const int64_t at = qi * n_cand + c, image = images[at];
      float best = -INFINITY;
      int32_t arg = -1;
      if (image >= 0 && !removed_[image] && offsets_[image + 1] > offsets_[image]) {
        const int64_t* off = offsets_.data() + image;  // a one-image range, absolute patches
        if (kind_ == StoreKind::FlatF32) {
          kt.flat_segmax_f32(1, off, reinterpret_cast<const float*>(s.data), dim_, qv, &best, &arg);
        } else if (kind_ == StoreKind::FlatF16) {
          kt.flat_segmax_f16(1, off, reinterpret_cast<const uint16_t*>(s.data), dim_, qv, &best, &arg);
        } else if (fs4_()) {  // "blocked32_fs4" codes
          const Hit h = fastscan4_score_image(s, lut[w].data(), image);
          best = h.score;
          arg = h.patch;
        } else {
          kt.adc_segmax(1, off, s.data, m, ksub, lut[w].data(), &best, &arg);
        }
      }
      scores[at] = arg >= 0 ? best : -INFINITY;
      patches[at] = arg;
    }
  });
}

}  // namespace pypatch
