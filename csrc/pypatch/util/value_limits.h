// The magnitude rule for every float the core stores, trains on or searches with:
// |x| <= kMaxAbsValue (1e15), which also rules out NaN and infinity.
// Why: scores are float32 inner products. With |q|, |x| <= 1e15 and dim <= 2**20 (the file
// format's limit), every product, partial sum, table entry and table range stays below
// 2 * 2**20 * 1e30 ~ 2e36, far from FLT_MAX (3.4e38), so no search path can overflow to inf or
// make NaN (inf - inf). Real embeddings are O(1); a value near 1e15 is a bug upstream.
// Checked by: ProductQuantizer (centroids, train, encode, compute_lut), PatchIndex::add and
// ::search, and loads (PQ centroids always; flat vectors whenever the VECS payload is read,
// see io/README.md). The float16 store needs only finiteness (|half| <= 65504).
#pragma once
#include <cstdint>  // int64_t

namespace pypatch {

constexpr float kMaxAbsValue = 1e15f;

/// Index of the first x[i] with !(|x[i]| <= kMaxAbsValue) (NaN included), or n if none.
int64_t first_out_of_range(const float* x, int64_t n);
/// Index of the first non-finite IEEE binary16 value (exponent bits all set), or n if none.
int64_t first_nonfinite_half(const uint16_t* x, int64_t n);
/// Throws InvalidArgument "<what> contains <value> at position <i> (row r, column c) ..."
/// unless every value obeys the rule; cols (> 0) only words the position.
void check_value_range(const float* x, int64_t n, int64_t cols, const char* what);

}  // namespace pypatch
