// LinearTransform: the learned pre-transform of an index (PCA, whitening, OPQ rotation folded
// in), applied to model-space vectors before they are stored or searched:
//   out = l2_normalize((x - mean) @ matrix^T)
// mean: dim_in floats; matrix: (dim_out, dim_in) row-major floats. Immutable once built, so
// one instance may be shared by an index and any number of threads.
// Saved with its PatchIndex as the XFRM section (patch_index_io.cpp, io/README.md).
#pragma once
#include <cstdint>  // int64_t
#include <vector>   // owned arrays

namespace pypatch {

class LinearTransform {
 public:
  /// Largest dim_in / dim_out accepted (the same bound as an index's dim in a file).
  static constexpr int kMaxDim = 1 << 20;

  /// Throws InvalidArgument unless 1 <= dims <= kMaxDim, the sizes match the dims and every
  /// value is finite.
  LinearTransform(int dim_in, int dim_out, std::vector<float> mean, std::vector<float> matrix);

  int dim_in() const { return dim_in_; }
  int dim_out() const { return dim_out_; }
  const std::vector<float>& mean() const { return mean_; }
  const std::vector<float>& matrix() const { return matrix_; }

  /// x: (n, dim_in) row-major; out: (n, dim_out), each row of unit L2 norm (a row that
  /// projects to zero stays zero). x and out must not overlap.
  void apply(int64_t n, const float* x, float* out) const;

 private:
  int dim_in_, dim_out_;
  std::vector<float> mean_, matrix_;
};

}  // namespace pypatch
