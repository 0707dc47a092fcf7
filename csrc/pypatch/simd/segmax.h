// The per-image running max/argmax loop shared by every kernel level; the score functor is
// the ISA-specific part. Header-only so each kernel TU inlines it with its own flags.
#pragma once
#include <cmath>    // INFINITY
#include <cstdint>  // int64_t

namespace pypatch {

template <class Score>
inline void segmax(int64_t n_images, const int64_t* off, const Score& score, float* best,
                   int32_t* arg) {
  for (int64_t i = 0; i < n_images; ++i) {
    float b = -INFINITY;
    int32_t a = -1;
    const int64_t p0 = off[i], p1 = off[i + 1];
    for (int64_t p = p0; p < p1; ++p) {
      const float s = score(p);
      if (s > b || a < 0) { b = s; a = static_cast<int32_t>(p - p0); }  // first patch always wins
    }
    best[i] = b;
    arg[i] = a;
  }
}

/// Same semantics over blocked storage: score_block(b, out) writes the 64 scores of block b.
template <class BlockScore>
inline void segmax_blocked(int64_t n_images, const int64_t* off, const BlockScore& score_block,
                           float* best, int32_t* arg) {
  alignas(64) float buf[64];
  int64_t cur = -1;
  for (int64_t i = 0; i < n_images; ++i) {
    float b = -INFINITY;
    int32_t a = -1;
    const int64_t p0 = off[i], p1 = off[i + 1];
    for (int64_t p = p0; p < p1; ++p) {
      if ((p >> 6) != cur) { cur = p >> 6; score_block(cur, buf); }
      const float s = buf[p & 63];
      if (s > b || a < 0) { b = s; a = static_cast<int32_t>(p - p0); }
    }
    best[i] = b;
    arg[i] = a;
  }
}

}  // namespace pypatch
