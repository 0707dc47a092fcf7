// The per-image running max/argmax loop shared by every kernel level; the score functor is
// the ISA-specific part. Header-only so each kernel TU inlines it with its own flags, and in an
// unnamed namespace so that each TU keeps its own copy: with external linkage the TUs'
// instantiations (segmax_blocked<AdcBlockLoads>, compiled with -mavx512f in one TU and baseline
// flags in another) were one weak symbol, and the linker could hand the scalar path AVX-512 code.
#pragma once
#include <cmath>    // INFINITY
#include <cstdint>  // int64_t
#include <algorithm>  // std::min

namespace pypatch {
namespace {

template <class Score>
inline void segmax(int64_t n_images, const int64_t* off, const Score& score, float* best,
                   int32_t* arg) {
  for (int64_t i = 0; i < n_images; ++i) {
    float b = -INFINITY;
    int32_t a = -1;
    const int64_t p0 = off[i], p1 = off[i + 1];
    for (int64_t p = p0; p < p1; ++p) {
      const float s = score(p);
      // The first non-NaN patch always wins (even at -inf); a NaN score never does.
      if (s > b || (a < 0 && s == s)) { b = s; a = static_cast<int32_t>(p - p0); }
    }
    best[i] = b;
    arg[i] = a;
  }
}

/// ADC scores of one "blocked64" block with plain loads, four patches in flight: each patch
/// sums j ascending. Used by the scalar and AVX2 levels (on Zen 4 hardware gathers are slower:
/// 6.8 ns/code here against 14.7 for vpgatherdd at m = 32).
struct AdcBlockLoads {
  const uint8_t* codes; int m; int ksub; const float* lut;
  void operator()(int64_t block, float* out) const {
    const uint8_t* c = codes + block * 64 * m;
    for (int l = 0; l < 64; l += 4) {
      float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
      const uint8_t* cc = c + l;
      const float* t = lut;
      for (int j = 0; j < m; ++j, cc += 64, t += ksub) {
        s0 = s0 + t[cc[0]];
        s1 = s1 + t[cc[1]];
        s2 = s2 + t[cc[2]];
        s3 = s3 + t[cc[3]];
      }
      out[l] = s0; out[l + 1] = s1; out[l + 2] = s2; out[l + 3] = s3;
    }
  }
};

/// Same semantics over blocked storage: score_block(b, out) writes the 64 scores of block b.
/// Walks block by block; inside a block each image's run of patches is a tight branch-free
/// max/argmax loop (the first maximum wins: strict >).
template <class BlockScore>
inline void segmax_blocked(int64_t n_images, const int64_t* off, const BlockScore& score_block,
                           float* best, int32_t* arg) {
  alignas(64) float buf[64];
  int64_t i = 0;
  while (i < n_images && off[i + 1] == off[i]) { best[i] = -INFINITY; arg[i] = -1; ++i; }
  if (i == n_images) return;
  const int64_t p_end = off[n_images];
  int64_t p = off[i];
  float bv = -INFINITY;
  int64_t av = -1;
  for (int64_t blk = p >> 6; p < p_end; ++blk) {
    score_block(blk, buf);
    const int64_t block_end = std::min<int64_t>((blk + 1) << 6, p_end);
    while (p < block_end) {
      const int64_t seg_end = std::min(off[i + 1], block_end);
      // The image's first non-NaN patch starts the max (NaN > x is false, so the loop below
      // never picks a NaN either); an image may start in an earlier block with NaNs only.
      for (; av < 0 && p < seg_end; ++p)
        if (buf[p & 63] == buf[p & 63]) { bv = buf[p & 63]; av = p; }
      for (; p < seg_end; ++p) {
        const float s = buf[p & 63];
        const bool gt = s > bv;
        bv = gt ? s : bv;
        av = gt ? p : av;
      }
      if (p == off[i + 1]) {  // image i complete; emit it and any empty images after it
        best[i] = av < 0 ? -INFINITY : bv;  // all NaN: like an empty image, never a hit
        arg[i] = av < 0 ? -1 : static_cast<int32_t>(av - off[i]);
        av = -1;
        ++i;
        while (i < n_images && off[i + 1] == off[i]) { best[i] = -INFINITY; arg[i] = -1; ++i; }
      }
    }
  }
}

}  // namespace
}  // namespace pypatch
