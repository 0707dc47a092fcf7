// The second half of both quantised scans (8-bit, scan_quantized.cpp; 4-bit fast scan,
// scan_fastscan4.cpp): workers collect (Q, image) candidates within a margin of their running
// k-th best quantised score; the merge keeps those within the margin of the global k-th best and
// re-scores them exactly, best Q first, so the top-k equals the exact scan's (simd/README.md).
#pragma once
#include <algorithm>   // nth_element, remove_if, sort
#include <cstdint>     // int32_t, int64_t
#include <functional>  // greater
#include <vector>

#include "pypatch/index/topk.h"  // TopK, Hit

namespace pypatch {

struct QuantCandidate {
  int32_t q;  // quantised image score
  int64_t image;
};

/// The exact top-k of one query from its candidates. upper(q): an upper bound of the exact
/// score of an image whose quantised score is q; rescore(image): its exact Hit.
template <class UpperBound, class Rescore>
TopK rescore_candidates(std::vector<QuantCandidate> all, int k, int64_t margin,
                        const UpperBound& upper, const Rescore& rescore) {
  int64_t t = INT64_MIN / 2;
  if (static_cast<int>(all.size()) >= k) {
    std::vector<int32_t> qs(all.size());
    for (size_t i = 0; i < all.size(); ++i) qs[i] = all[i].q;
    std::nth_element(qs.begin(), qs.begin() + (k - 1), qs.end(), std::greater<int32_t>());
    t = qs[k - 1];
  }
  all.erase(std::remove_if(all.begin(), all.end(),
                           [&](const QuantCandidate& c) { return c.q < t - margin; }),
            all.end());
  // Best Q first: once a full exact top-k exists, an image whose upper bound is below its
  // k-th score cannot enter (ties still can, by image index), nor can any later candidate.
  std::sort(all.begin(), all.end(),
            [](const QuantCandidate& a, const QuantCandidate& b) { return a.q > b.q; });
  TopK result(k);
  for (const QuantCandidate& c : all) {
    if (result.full() && upper(c.q) < result.worst().score) break;
    result.push(rescore(c.image));
  }
  return result;
}

}  // namespace pypatch
