#include "pypatch/index/quant_table.h"

#include <algorithm>  // max, min
#include <cfloat>     // FLT_MAX, FLT_MIN
#include <cmath>      // fabs, ceil, ldexp, isfinite
#include <vector>

namespace pypatch {

QuantBounds quantize_rows(const float* lut, int m, int ksub, uint8_t* out) {
  QuantBounds t;
  std::vector<float> lo(m);
  float range = 0;
  double abs_sum = 0;
  for (int j = 0; j < m; ++j) {
    const float* r = lut + static_cast<int64_t>(j) * ksub;
    float mn = r[0], mx = r[0], amax = 0;
    for (int c = 0; c < ksub; ++c) {
      if (!(std::fabs(r[c]) <= FLT_MAX)) {  // NaN or +-inf: never converted to an integer
        t.usable = false;
        return t;
      }
      mn = std::min(mn, r[c]);
      mx = std::max(mx, r[c]);
      amax = std::max(amax, std::fabs(r[c]));
    }
    lo[j] = mn;
    range = std::max(range, mx - mn);
    abs_sum += amax;
  }
  // With finite entries and sum_j max|lut_j| < 2^126, every patch score, the range (<= 2
  // max|entry|) and the error bound stay finite. A scale that underflows (range < 255 *
  // FLT_MIN) cannot be inverted. Both are impossible within util/value_limits.h.
  const float scale = range > 0 ? range / 255.f : 1.f;
  if (!(abs_sum < std::ldexp(1.0, 126)) || !(scale >= FLT_MIN) || !std::isfinite(1.f / scale)) {
    t.usable = false;
    return t;
  }
  t.scale = scale;
  // Rounding error of the table, measured per row (about scale/2 each): the bound uses the
  // error actually made, so any rounding rule keeps results exact; this one (multiply, add 0.5,
  // truncate a value >= 0) vectorises, unlike lrint and a division: it took 100 us per query,
  // a serial step of a ~3 ms two-thread scan.
  const float inv = 1.f / scale;
  double round_err = 0;
  for (int j = 0; j < m; ++j) {
    const float* r = lut + static_cast<int64_t>(j) * ksub;
    uint8_t* qr = out + static_cast<int64_t>(j) * ksub;
    float ej = 0;
    for (int c = 0; c < ksub; ++c) {
      const float v = std::min(255.f, (r[c] - lo[j]) * inv + 0.5f);  // >= 0.5: lo is the min
      const uint8_t qv = static_cast<uint8_t>(static_cast<int>(v));
      qr[c] = qv;
      ej = std::max(ej, std::fabs(r[c] - lo[j] - scale * static_cast<float>(qv)));
    }
    // ej was computed in float: widen it by the rounding of those three operations
    round_err += static_cast<double>(ej) * (1 + 1e-6) +
                 4 * std::ldexp(std::fabs(static_cast<double>(lo[j])) + range, -24);
    t.base += lo[j];
  }
  // + the float error of the exact score itself (m float additions), + slack for the double
  // arithmetic of these bounds.
  const double float_err = m * abs_sum * std::ldexp(1.0, -23);
  t.err = (round_err + float_err) * (1 + 1e-9) + 1e-6 * t.scale;
  if (!std::isfinite(t.err) || !std::isfinite(t.base)) {
    t.usable = false;
    return t;
  }
  t.margin = 2 + static_cast<int64_t>(std::ceil(std::min(2 * t.err / t.scale, 1e9)));
  return t;
}

}  // namespace pypatch
