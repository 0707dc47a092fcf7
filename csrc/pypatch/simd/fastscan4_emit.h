// The rare path shared by every fast-scan kernel (fastscan4.h): a patch that reached the
// threshold joins its image's running max; images are found by galloping forward from the
// last one (any CSR layout, empty images included). In an unnamed namespace on purpose: each
// kernel TU gets its own copy compiled with its own flags (an inline function shared across
// TUs could be resolved by the linker to the AVX-512 copy).
#pragma once
#include <algorithm>  // upper_bound, min
#include <cstdint>    // int64_t
#if defined(_MSC_VER)
#include <intrin.h>  // _BitScanForward
#endif

#include "pypatch/simd/fastscan4.h"  // Fs4Sink

namespace pypatch {
namespace {

inline int fs4_ctz(uint32_t x) {  // x != 0
#if defined(_MSC_VER)
  unsigned long i;
  _BitScanForward(&i, x);
  return static_cast<int>(i);
#else
  return __builtin_ctz(x);
#endif
}

/// The threshold as the kernels compare it in u16 lanes: clamped to [0, 65535] (a sum is at
/// most 65535, so this passes the same patches; the emitter re-checks the exact value).
inline uint16_t fs4_u16_threshold(int32_t t) {
  return static_cast<uint16_t>(t < 0 ? 0 : t > 65535 ? 65535 : t);
}

struct Fs4Emitter {
  const int64_t* off;
  int64_t i1;
  Fs4Sink* sink;
  int64_t next;         // the next image a search starts from
  int64_t cur = -1;     // running image, -1 none
  int64_t cur_end;      // its end patch (so a patch >= cur_end belongs to a later image)
  int32_t cur_max = 0;

  Fs4Emitter(const int64_t* o, int64_t first, int64_t last, Fs4Sink* s)
      : off(o), i1(last), sink(s), next(first), cur_end(o[first]) {}

  void patch(int64_t p, int32_t s) {
    if (s < sink->threshold) return;
    if (p >= cur_end) {
      flush();
      // last image i in [next, i1) with off[i] <= p (off[next] <= p < off[i1]): gallop, bisect
      int64_t lo = next, hi = next + 1, step = 1;
      while (hi < i1 && off[hi] <= p) { lo = hi; hi = lo + step; step *= 2; }
      hi = std::min(hi, i1);
      cur = std::upper_bound(off + lo, off + hi, p) - off - 1;
      cur_end = off[cur + 1];
      next = cur + 1;
      cur_max = s;
      return;
    }
    if (s > cur_max) cur_max = s;
  }
  void flush() {
    if (cur >= 0) sink->emit(sink, cur, cur_max);
    cur = -1;
  }
  /// 32 scores of the block starting at patch p0; mask: patches that may pass (a superset of
  /// those >= the current threshold), already restricted to [off[first], off[last]).
  void block(int64_t p0, const uint16_t* s, uint32_t mask) {
    while (mask) {
      const int l = fs4_ctz(mask);
      mask &= mask - 1;
      patch(p0 + l, s[l]);
    }
  }
};

/// Bits of the patches in [p_begin, p_end) among the 32 of the block starting at p0.
inline uint32_t fs4_range_mask(int64_t p0, int64_t p_begin, int64_t p_end) {
  uint32_t m = 0xffffffffu;
  if (p_begin > p0) m &= 0xffffffffu << (p_begin - p0);           // p_begin - p0 < 32
  if (p_end < p0 + 32) m &= (p_end - p0) <= 0 ? 0 : 0xffffffffu >> (32 - (p_end - p0));
  return m;
}

}  // namespace
}  // namespace pypatch
