#include "pypatch/util/value_limits.h"

#include <cmath>    // fabs
#include <sstream>  // message
#include <string>   // message

#include "pypatch/errors.h"  // InvalidArgument

namespace pypatch {

// Branch-free OR over blocks (vectorises at baseline: memory speed), then the exact position
// only in the rare failing block.
int64_t first_out_of_range(const float* x, int64_t n) {
  constexpr int64_t kBlock = 4096;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = n - b < kBlock ? n : b + kBlock;
    bool bad = false;
    for (int64_t i = b; i < e; ++i) bad |= !(std::fabs(x[i]) <= kMaxAbsValue);
    if (bad)
      for (int64_t i = b; i < e; ++i)
        if (!(std::fabs(x[i]) <= kMaxAbsValue)) return i;
  }
  return n;
}

int64_t first_nonfinite_half(const uint16_t* x, int64_t n) {
  constexpr int64_t kBlock = 8192;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = n - b < kBlock ? n : b + kBlock;
    bool bad = false;
    for (int64_t i = b; i < e; ++i) bad |= (x[i] & 0x7c00u) == 0x7c00u;
    if (bad)
      for (int64_t i = b; i < e; ++i)
        if ((x[i] & 0x7c00u) == 0x7c00u) return i;
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
