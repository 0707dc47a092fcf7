// One quantiser for the tables of both two-stage exact scans (8-bit: scan_quantized.cpp, 256
// entries per row; 4-bit fast scan: scan_fastscan4.cpp, 16): a query's float table lut[j][c]
// becomes u8 with one scale for all rows, qlut = round((lut - min_j) / scale), and the bounds
// below make the two-stage result bit-identical to the float scan (simd/README.md).
#pragma once
#include <cstdint>  // int64_t, uint8_t

namespace pypatch {

struct QuantBounds {
  bool usable = true;  // false: a non-finite or unboundable table; the exact float path must run
  int64_t margin = 0;  // candidate window below the k-th best Q, in table units
  double base = 0;     // sum_j min_j
  double scale = 1;
  double err = 0;      // |exact float score - (base + scale * Q)| <= err, for every patch
  /// Upper bound of the exact score of an image whose quantised score is qv.
  double upper(int64_t qv) const { return base + scale * static_cast<double>(qv) + err; }
};

/// Quantises the m rows of ksub entries of lut into out (row j at out + j * ksub) and returns the
/// bounds; with usable == false, out is unspecified.
QuantBounds quantize_rows(const float* lut, int m, int ksub, uint8_t* out);

}  // namespace pypatch
