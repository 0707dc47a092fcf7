// Slicing-by-8 CRC-32 (Intel, Kounavis & Berry 2005): table t[k][b] is the CRC of byte
// b followed by k zero bytes, so eight input bytes are folded with eight lookups.
#include "pypatch/io/crc32.h"

#include <array>  // std::array (constexpr table)

namespace pypatch {
namespace io {
namespace {

constexpr uint32_t kPoly = 0xEDB88320u;  // reflected IEEE polynomial

using Table = std::array<std::array<uint32_t, 256>, 8>;

constexpr Table make_table() {
  Table t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ kPoly : c >> 1;
    t[0][b] = c;
  }
  for (int k = 1; k < 8; ++k)
    for (uint32_t b = 0; b < 256; ++b)
      t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
  return t;
}

constexpr Table kTable = make_table();  // compile-time: no static-init code
static_assert(kTable[0][1] == 0x77073096u, "CRC table");

// Little-endian 32-bit load from bytes; compiles to one load on little-endian targets.
inline uint32_t load_le32(const unsigned char* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t size) noexcept {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  while (size >= 8) {
    const uint32_t lo = load_le32(p) ^ c;
    const uint32_t hi = load_le32(p + 4);
    c = kTable[7][lo & 0xFF] ^ kTable[6][(lo >> 8) & 0xFF] ^ kTable[5][(lo >> 16) & 0xFF] ^
        kTable[4][lo >> 24] ^ kTable[3][hi & 0xFF] ^ kTable[2][(hi >> 8) & 0xFF] ^
        kTable[1][(hi >> 16) & 0xFF] ^ kTable[0][hi >> 24];
    p += 8;
    size -= 8;
  }
  while (size--) c = (c >> 8) ^ kTable[0][(c ^ *p++) & 0xFF];
  return ~c;
}

}  // namespace io
}  // namespace pypatch
