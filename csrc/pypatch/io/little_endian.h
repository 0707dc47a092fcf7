// Little-endian field access for the container header and table, independent of the
// host byte order and of alignment (the compiler turns these into plain loads/stores
// on little-endian machines).
#pragma once

#include <cstdint>  // fixed-width integers

namespace pypatch {
namespace io {
namespace le {

inline uint16_t load16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
inline uint32_t load32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t load64(const uint8_t* p) { return load32(p) | uint64_t(load32(p + 4)) << 32; }

inline void store16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}
inline void store32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void store64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

}  // namespace le
}  // namespace io
}  // namespace pypatch
