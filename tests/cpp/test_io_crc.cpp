// CRC-32 of the index container against independent references: published check values
// (zlib / PNG CRC-32) and a bit-at-a-time implementation written from the definition.
// Both the dispatched path (PCLMUL folding on x86-64) and the portable one are checked.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "pypatch/io/crc32.h"
#include "test_main.h"

namespace {

// Bitwise CRC-32: reflected polynomial 0xEDB88320, init and final xor ~0.
uint32_t crc32_bitwise(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

}  // namespace

using pypatch::io::crc32;
using pypatch::io::crc32_update;
using pypatch::io::crc32_update_portable;

TEST(published_check_values) {
  CHECK(crc32("123456789", 9) == 0xCBF43926u);  // the standard check value
  const char* fox = "The quick brown fox jumps over the lazy dog";
  CHECK(crc32(fox, std::strlen(fox)) == 0x414FA339u);
  CHECK(crc32(nullptr, 0) == 0u);
  CHECK(crc32("a", 1) == 0xE8B7BE43u);
}

TEST(every_short_length_and_offset_matches_the_bitwise_reference) {
  // Every length 0..300 at every start offset 0..7 (unaligned loads, the 8-byte loop and
  // its tail), against the bitwise reference; and split points for crc32_update.
  std::vector<uint8_t> buf(320);
  uint64_t s = 0x9E3779B97F4A7C15ull;
  for (auto& b : buf) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    b = uint8_t(s >> 56);
  }
  for (size_t start = 0; start < 8; ++start)
    for (size_t n = 0; n <= 300; ++n) {
      const uint32_t ref = crc32_bitwise(buf.data() + start, n);
      CHECK(crc32(buf.data() + start, n) == ref);
      CHECK(crc32_update_portable(0, buf.data() + start, n) == ref);
      const size_t cut = (n * 7 + start) % (n + 1);
      CHECK(crc32_update(crc32(buf.data() + start, cut), buf.data() + start + cut, n - cut) == ref);
    }
}

TEST(long_buffers_match_the_bitwise_reference) {
  // Long buffers: the 64-byte folding loop (PCLMUL path on x86-64) and every tail length.
  uint64_t s = 0x2545F4914F6CDD1Dull;
  std::vector<uint8_t> big(70000);
  for (auto& b : big) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    b = uint8_t(s >> 56);
  }
  for (size_t n : {64u, 65u, 79u, 80u, 127u, 128u, 129u, 191u, 1000u, 4109u, 65536u, 69999u}) {
    const uint32_t ref = crc32_bitwise(big.data() + 1, n);
    CHECK(crc32(big.data() + 1, n) == ref);
    CHECK(crc32_update_portable(0, big.data() + 1, n) == ref);
    CHECK(crc32_update(crc32(big.data() + 1, n / 3), big.data() + 1 + n / 3, n - n / 3) == ref);
  }
  const std::vector<uint8_t> zeros(4096, 0), ones(4096, 0xFF);
  CHECK(crc32(zeros.data(), zeros.size()) == crc32_bitwise(zeros.data(), zeros.size()));
  CHECK(crc32(ones.data(), ones.size()) == crc32_bitwise(ones.data(), ones.size()));
}
