// PQ code layout "blocked32_fs4" (4-bit codes, read by the fast scan, simd/README.md):
// patches in blocks of 32; inside a block the sub-quantizers go in pairs g = j / 2, G =
// ceil(m / 2) pairs, each pair 32 bytes, one per patch in patch order: the low nibble holds
// code(p, 2g), the high nibble code(p, 2g + 1) (0 past m when m is odd). So
//   byte (p, g) = (p / 32) * 32 * G + g * 32 + p % 32,   a block = 32 * G = 16 * 2G bytes,
// m / 2 bytes per patch (m even). One 32-byte load is two pshufb lookups for 32 patches; the
// tail block is padded with zero codes. A sequence of blocks plus CSR image offsets (absolute
// patch numbers) is all the kernels read, so an inverted list can reuse the layout as is.
#pragma once
#include <cstdint>  // uint8_t, int64_t

namespace pypatch {
// Unnamed namespace: the per-ISA kernel TUs include this too, and an inline function with
// external linkage compiled there could replace the baseline copy at link time.
namespace {

constexpr int kFs4Block = 32;

inline int fs4_groups(int m) { return (m + 1) / 2; }
inline int64_t fs4_block_bytes(int m) { return static_cast<int64_t>(kFs4Block) * fs4_groups(m); }
inline int64_t fs4_bytes(int64_t n_patches, int m) {
  return (n_patches + kFs4Block - 1) / kFs4Block * fs4_block_bytes(m);
}
inline int64_t fs4_pos(int64_t p, int j, int m) {
  return (p / kFs4Block) * fs4_block_bytes(m) + static_cast<int64_t>(j / 2) * kFs4Block + p % kFs4Block;
}
inline uint8_t fs4_get(const uint8_t* codes, int64_t p, int j, int m) {
  return static_cast<uint8_t>((codes[fs4_pos(p, j, m)] >> ((j & 1) * 4)) & 15);
}

/// rows: (n, m) row-major codes (< 16) of patches p0 .. p0+n-1 -> fs4 storage. Only the
/// nibbles of those patches are written, so appending to a partly filled tail block keeps the
/// codes already there.
inline void rows_to_fs4(const uint8_t* rows, int64_t p0, int64_t n, int m, uint8_t* fs4) {
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j) {
      uint8_t& b = fs4[fs4_pos(p0 + i, j, m)];
      const int sh = (j & 1) * 4;
      b = static_cast<uint8_t>((b & ~(15 << sh)) | ((rows[i * m + j] & 15) << sh));
    }
}

/// fs4 storage -> rows: (n, m) row-major codes of patches p0 .. p0+n-1.
inline void fs4_to_rows(const uint8_t* fs4, int64_t p0, int64_t n, int m, uint8_t* rows) {
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j) rows[i * m + j] = fs4_get(fs4, p0 + i, j, m);
}

}  // namespace
}  // namespace pypatch
