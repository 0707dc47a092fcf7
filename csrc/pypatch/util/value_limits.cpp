#include "pypatch/util/value_limits.h"

#include <cstring>  // memcpy
#include <sstream>  // message
#include <string>   // message

#include "pypatch/errors.h"  // InvalidArgument

namespace pypatch {

namespace {
// The test on the bit patterns, so that it vectorises with plain SSE2 (a float compare with
// fabs did not: 0.8 GB/s against memory speed): a = |x| as bits; NaN and inf have larger
// patterns than any finite float, so a > bits(1e15) is the whole rule. L - a is negative
// (sign bit set) exactly when a > L, and cannot overflow as both are in [0, 2^31).
inline int32_t abs_bits(const float* x, int64_t i) {
  uint32_t b;
  std::memcpy(&b, x + i, 4);
  return static_cast<int32_t>(b & 0x7fffffffu);
}
inline int32_t limit_bits() {
  uint32_t b;
  std::memcpy(&b, &kMaxAbsValue, 4);
  return static_cast<int32_t>(b);
}
// Half: exponent bits all set (inf or NaN) <=> (h & 0x7c00) + 0x0400 has bit 15 set.
inline uint32_t half_bad(uint16_t h) { return ((h & 0x7c00u) + 0x0400u) & 0x8000u; }
}  // namespace

// A branch-free OR over blocks, then the exact position only in the rare failing block.
int64_t first_out_of_range(const float* x, int64_t n) {
  constexpr int64_t kBlock = 4096;
  const int32_t lim = limit_bits();
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = n - b < kBlock ? n : b + kBlock;
    uint32_t acc = 0;
    for (int64_t i = b; i < e; ++i) acc |= static_cast<uint32_t>(lim - abs_bits(x, i));
    if (acc >> 31)
      for (int64_t i = b; i < e; ++i)
        if (abs_bits(x, i) > lim) return i;
  }
  return n;
}

int64_t first_nonfinite_half(const uint16_t* x, int64_t n) {
  constexpr int64_t kBlock = 8192;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = n - b < kBlock ? n : b + kBlock;
    uint32_t acc = 0;
    for (int64_t i = b; i < e; ++i) acc |= half_bad(x[i]);
    if (acc)
      for (int64_t i = b; i < e; ++i)
        if (half_bad(x[i])) return i;
  }
  return n;
}

void check_value_range(const float* x, int64_t n, int64_t cols, const char* what) {
  const int64_t i = first_out_of_range(x, n);
  if (i == n) return;
  std::ostringstream msg;
  msg << what << " contains " << x[i] << " at position " << i;
  if (cols > 0) msg << " (row " << i / cols << ", column " << i % cols << ")";
  msg << "; values must be finite with magnitude <= 1e15 (larger ones overflow float32 "
         "inner products)";
  throw InvalidArgument(msg.str());
}

}  // namespace pypatch
