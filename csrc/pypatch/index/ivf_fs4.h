// The 4-bit search of the inverted file (ivf_fs4.cpp) and the per-image merge it shares with
// the 8-bit one (ivf.cpp).
#pragma once
#include <cstdint>     // fixed-width ints
#include <functional>  // interrupt
#include <vector>

#include "pypatch/index/ivf.h"   // IvfSearchSetup
#include "pypatch/index/topk.h"  // TopK

namespace pypatch {

/// One image's best probed patch in one list.
struct IvfHit {
  float score;
  uint32_t image;
  uint8_t ord;
};

/// The top k images of hits that may hold an image several times (one per list): each image
/// keeps its best hit (score desc, then the lowest ordinal, as the exhaustive segmax does).
TopK best_per_image(std::vector<IvfHit> all, int k);

/// ivf_search for 4-bit codes: luts (nq, m, 16) f32, probes (nq, nprobe) lists nearest first.
/// Each query's lists are scanned one after another with one quantised table and one running
/// threshold; the same results, bit for bit, as the exhaustive scan restricted to them.
std::vector<TopK> ivf_search_fs4(const IvfSearchSetup& s, int64_t nq, const float* luts,
                                 const int32_t* probes, int nprobe, int k, int num_threads,
                                 const std::function<void()>& interrupt);

}  // namespace pypatch
