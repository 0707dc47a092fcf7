// The coarse probe's integer screen: a shortlist that provably holds the nprobe nearest
// centroids, found by reading int8 copies of them (a quarter of the float32 bytes).
//
// Why: at nlist 4096 x dim 256 the float32 centroids are 4 MB, past the per-core L2, and the
// plain probe streams them from L3 on every query (~170 us, most of a low-nprobe search). The
// int8 copy (1 MB) stays in L2. A first screen that converted int8 to float and multiplied in
// float was compute-bound and no faster; this one multiplies int16 x int8 into exact int32
// (vpmaddwd), a quarter of the bytes and no conversions.
//
// The bound: with c^ = s_c c8 and q^ = s_q q16 (the rounded copies),
//   |<q, c> - <q^, c^>| <= ||q|| ||c - c^|| + ||q - q^|| ||c^||   (Cauchy-Schwarz, twice),
// plus the rounding of the float32 distance the exact probe computes (sum of dim products:
// gamma_{dim+2} ||q|| ||c||) and of this file's double arithmetic. So every centroid's float32
// distance d lies in [a - b, a + b]; with U the nprobe-th smallest a + b, the nprobe nearest
// have d <= U, and a centroid with a - b > U has d > U: it cannot be among them, ties included.
#pragma once
#include <cstdint>  // fixed-width ints
#include <vector>

namespace pypatch {

class CoarseScreen {
 public:
  /// Below this many centroid bytes the float32 probe is as fast (they fit in L2; measured in
  /// csrc/pypatch/simd/README.md, "The inverted file").
  static constexpr int64_t kMinFloatBytes = 512 * 1024;

  CoarseScreen() = default;
  /// c: (nlist, dim) f32, finite; norms: ||c||^2 as the float probe computes it.
  CoarseScreen(int nlist, int dim, const float* c, const float* norms);
  bool empty() const { return nlist_ == 0; }
  /// Bytes held.
  int64_t bytes() const;
  /// Appends to out the centroids that may be among the nprobe nearest to q (a superset of
  /// them, ascending). Returns false (out untouched) when the bound is not finite (overflow):
  /// the caller then probes exactly.
  bool shortlist(const float* q, int nprobe, std::vector<int32_t>& out) const;

 private:
  int nlist_ = 0, dim_ = 0, npair_ = 0;
  std::vector<int8_t> c8_;     // chunk ch: (npair, 64, 2) at ch * npair * 128; lanes past nlist 0
  std::vector<double> scale_;  // s_c
  std::vector<double> norm2_;  // the float probe's ||c||^2, as double
  // b_c = ||q|| p_[c] + ||q - q^|| h_[c] + n_[c] (coarse_screen.cpp), and their maxima
  std::vector<double> p_, h_, n_;
  double p_max_ = 0, h_max_ = 0, n_max_ = 0;
};

}  // namespace pypatch
