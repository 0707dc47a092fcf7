// PQ code layout "blocked64": patches are grouped in blocks of 64; inside a block the codes are
// sub-quantizer-major, i.e. byte (p, j) lives at block(p) * 64 * m + j * 64 + p % 64.
// A scan then reads, for each sub-quantizer j, 64 consecutive code bytes: one SIMD register
// (AVX-512 VBMI byte lookups) or 64 lanes of independent float sums (gather kernels).
// Storage is padded to whole blocks with zero codes (< 64 * m bytes in all).
#pragma once
#include <cstdint>  // uint8_t, int64_t

namespace pypatch {

constexpr int kCodeBlock = 64;

inline int64_t blocked_bytes(int64_t n_patches, int m) {
  return (n_patches + kCodeBlock - 1) / kCodeBlock * kCodeBlock * m;
}

inline int64_t blocked_pos(int64_t p, int j, int m) {
  return (p / kCodeBlock) * kCodeBlock * m + static_cast<int64_t>(j) * kCodeBlock + p % kCodeBlock;
}

/// rows: (n, m) row-major codes of patches p0 .. p0+n-1 -> blocked storage.
inline void rows_to_blocked(const uint8_t* rows, int64_t p0, int64_t n, int m, uint8_t* blocked) {
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j) blocked[blocked_pos(p0 + i, j, m)] = rows[i * m + j];
}

/// blocked storage -> rows: (n, m) row-major codes of patches p0 .. p0+n-1.
inline void blocked_to_rows(const uint8_t* blocked, int64_t p0, int64_t n, int m, uint8_t* rows) {
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j) rows[i * m + j] = blocked[blocked_pos(p0 + i, j, m)];
}

}  // namespace pypatch
