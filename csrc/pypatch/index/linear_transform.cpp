// LinearTransform: validation and the centre / project / normalise loop.
#include "pypatch/index/linear_transform.h"

#include <cmath>    // std::isfinite, std::sqrt
#include <string>   // messages
#include <utility>  // std::move

#include "pypatch/errors.h"  // PTCH_CHECK -> InvalidArgument

namespace pypatch {

namespace {
// Same floor as pypatch.transform (_EPS): a zero projection is left zero, not divided by 0.
constexpr double kNormFloor = 1e-12;

bool all_finite(const std::vector<float>& v) {
  for (float f : v)
    if (!std::isfinite(f)) return false;
  return true;
}
}  // namespace

LinearTransform::LinearTransform(int dim_in, int dim_out, std::vector<float> mean,
                                 std::vector<float> matrix)
    : dim_in_(dim_in), dim_out_(dim_out), mean_(std::move(mean)), matrix_(std::move(matrix)) {
  PTCH_CHECK(dim_in >= 1 && dim_in <= kMaxDim,
             "transform dim_in must be in 1.." + std::to_string(kMaxDim) + "; got " + std::to_string(dim_in));
  PTCH_CHECK(dim_out >= 1 && dim_out <= kMaxDim,
             "transform dim_out must be in 1.." + std::to_string(kMaxDim) + "; got " + std::to_string(dim_out));
  PTCH_CHECK(mean_.size() == static_cast<size_t>(dim_in),
             "transform mean must hold dim_in=" + std::to_string(dim_in) + " values; got " +
                 std::to_string(mean_.size()));
  const size_t cells = static_cast<size_t>(dim_out) * static_cast<size_t>(dim_in);
  PTCH_CHECK(matrix_.size() == cells, "transform matrix must hold dim_out x dim_in = " +
                                          std::to_string(cells) + " values; got " +
                                          std::to_string(matrix_.size()));
  PTCH_CHECK(all_finite(mean_) && all_finite(matrix_),
             "transform mean and matrix must not contain NaN or infinite values");
}

void LinearTransform::apply(int64_t n, const float* x, float* out) const {
  PTCH_CHECK(n >= 0, "transform apply: n must be >= 0; got " + std::to_string(n));
  if (n == 0) return;
  PTCH_CHECK(x != nullptr && out != nullptr, "transform apply: null input or output");
  const size_t din = static_cast<size_t>(dim_in_), dout = static_cast<size_t>(dim_out_);
  std::vector<double> centred(din), y(dout);
  // Plain loops in double: a query is one (dim_out x dim_in) product, so exactness (and
  // agreement with numpy's float32 result within rounding) matters more than speed here.
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + static_cast<size_t>(r) * din;
    for (size_t j = 0; j < din; ++j) centred[j] = double(xr[j]) - double(mean_[j]);
    double sq = 0.0;
    for (size_t i = 0; i < dout; ++i) {
      const float* row = matrix_.data() + i * din;
      double acc = 0.0;
      for (size_t j = 0; j < din; ++j) acc += double(row[j]) * centred[j];
      y[i] = acc;
      sq += acc * acc;
    }
    const double norm = std::sqrt(sq);
    const double inv = 1.0 / (norm > kNormFloor ? norm : kNormFloor);
    float* o = out + static_cast<size_t>(r) * dout;
    for (size_t i = 0; i < dout; ++i) o[i] = static_cast<float>(y[i] * inv);
  }
}

}  // namespace pypatch
