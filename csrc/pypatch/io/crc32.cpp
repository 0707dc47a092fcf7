// CRC-32 two ways, same result:
// * Slicing-by-8 (Kounavis & Berry 2005): table t[k][b] is the CRC of byte b followed by k
//   zero bytes, so eight input bytes fold with eight lookups. Portable, ~1 byte/cycle.
// * On x86-64 with PCLMULQDQ (every x86-64 CPU since 2010): carry-less multiply folding
//   (Gopal et al., Intel 2009, "Fast CRC Computation for Generic Polynomials Using
//   PCLMULQDQ"), the bit-reflected constants and structure used by zlib/Chromium's
//   crc32_simd. Four 128-bit lanes fold 64 bytes per step, then a Barrett reduction.
//   Only that one function is compiled for PCLMUL (a function target attribute, not a
//   file-wide flag), and it is called only after a runtime CPU check, evaluated lazily.
#include "pypatch/io/crc32.h"

#include <array>  // std::array (constexpr table)

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define PYPATCH_CRC_PCLMUL 1
#include <immintrin.h>  // _mm_clmulepi64_si128 and SSE intrinsics
#else
#define PYPATCH_CRC_PCLMUL 0
#endif

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

uint32_t slice8(uint32_t c, const unsigned char* p, size_t size) noexcept {
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
  return c;
}

#if PYPATCH_CRC_PCLMUL

#define PYPATCH_PCLMUL_FN __attribute__((target("pclmul,sse4.1")))

PYPATCH_PCLMUL_FN inline __m128i load(const unsigned char* q) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
}

// fold(x, k) = x.lo * k.lo ^ x.hi * k.hi (carry-less), which shifts x forward by the
// distance k encodes; xor-ing the next data block continues the division.
PYPATCH_PCLMUL_FN inline __m128i fold(__m128i x, __m128i k) {
  return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

// Folds size bytes (size >= 64, a multiple of 16) into the running (pre-inverted) CRC c.
PYPATCH_PCLMUL_FN uint32_t fold_pclmul(uint32_t c, const unsigned char* p, size_t size) noexcept {
  const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4);  // fold by 512 bits
  const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);  // fold by 128 bits
  const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124);             // 64 -> 32 bits
  const __m128i poly = _mm_set_epi64x(0x01f7011641, 0x01db710641);  // P' and Barrett mu
  __m128i x1 = _mm_xor_si128(load(p), _mm_cvtsi32_si128(int(c)));
  __m128i x2 = load(p + 16), x3 = load(p + 32), x4 = load(p + 48);
  p += 64;
  size -= 64;
  for (; size >= 64; p += 64, size -= 64) {
    x1 = _mm_xor_si128(fold(x1, k1k2), load(p));
    x2 = _mm_xor_si128(fold(x2, k1k2), load(p + 16));
    x3 = _mm_xor_si128(fold(x3, k1k2), load(p + 32));
    x4 = _mm_xor_si128(fold(x4, k1k2), load(p + 48));
  }
  x1 = _mm_xor_si128(fold(x1, k3k4), x2);
  x1 = _mm_xor_si128(fold(x1, k3k4), x3);
  x1 = _mm_xor_si128(fold(x1, k3k4), x4);
  for (; size >= 16; p += 16, size -= 16) x1 = _mm_xor_si128(fold(x1, k3k4), load(p));
  // 128 -> 64 bits.
  const __m128i lo32 = _mm_setr_epi32(~0, 0, ~0, 0);
  x2 = _mm_clmulepi64_si128(x1, k3k4, 0x10);
  x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
  x2 = _mm_srli_si128(x1, 4);
  x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, lo32), k5k0, 0x00), x2);
  // Barrett reduction to 32 bits.
  x2 = _mm_clmulepi64_si128(_mm_and_si128(x1, lo32), poly, 0x10);
  x2 = _mm_clmulepi64_si128(_mm_and_si128(x2, lo32), poly, 0x00);
  x1 = _mm_xor_si128(x1, x2);
  return uint32_t(_mm_extract_epi32(x1, 1));
}

bool detect_pclmul() noexcept {
  __builtin_cpu_init();  // needed if first called from another TU's static initialiser
  return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
}

bool have_pclmul() noexcept {
  static const bool ok = detect_pclmul();  // function-local: first use, not static init
  return ok;
}

#endif

}  // namespace

uint32_t crc32_update_portable(uint32_t crc, const void* data, size_t size) noexcept {
  return ~slice8(~crc, static_cast<const unsigned char*>(data), size);
}

uint32_t crc32_update(uint32_t crc, const void* data, size_t size) noexcept {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
#if PYPATCH_CRC_PCLMUL
  if (size >= 64 && have_pclmul()) {
    const size_t bulk = size & ~size_t(15);
    c = fold_pclmul(c, p, bulk);
    p += bulk;
    size -= bulk;
  }
#endif
  return ~slice8(c, p, size);
}

}  // namespace io
}  // namespace pypatch
