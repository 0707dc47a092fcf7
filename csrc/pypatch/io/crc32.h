// CRC-32 (IEEE 802.3 / zlib / PNG: reflected polynomial 0xEDB88320, init and final
// xor 0xFFFFFFFF), so a section's CRC equals Python's `zlib.crc32(section_bytes)`.
// On x86-64 CPUs with PCLMULQDQ the bulk is folded with carry-less multiplies (about
// 10 GB/s per core); elsewhere, and for short inputs and tails, portable slicing-by-8
// (about 1 byte per cycle). The CPU check runs on first use and the 8 x 256 table is built
// at compile time, so nothing runs in static initialisers.
#pragma once

#include <cstddef>  // size_t
#include <cstdint>  // uint32_t

namespace pypatch {
namespace io {

/// Continue a CRC: crc32_update(crc32_update(0, a, n), b, m) == crc32(a ++ b).
/// Start with crc = 0.
uint32_t crc32_update(uint32_t crc, const void* data, size_t size) noexcept;

/// The portable slicing-by-8 path alone (tests and benchmarks compare the two).
uint32_t crc32_update_portable(uint32_t crc, const void* data, size_t size) noexcept;

/// CRC-32 of one buffer. crc32("123456789", 9) == 0xCBF43926.
inline uint32_t crc32(const void* data, size_t size) noexcept {
  return crc32_update(0, data, size);
}

}  // namespace io
}  // namespace pypatch
