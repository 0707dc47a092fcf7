// AVX2 quantised ADC scan over "blocked64" codes and its u16 segmented max (compiled with the
// AVX2 flags; used at the avx2 level, and at avx512 when the CPU lacks VBMI).
//
// AVX2 has no 256-entry byte permute, so each sub-quantizer's 256-byte table row is looked up
// as 16 sub-tables of 16 bytes: vpshufb of every sub-table (broadcast to both 128-bit lanes)
// by the code's low nibble, then a tree of vpblendvb on the high nibble's bits 4, 5, 6
// (vpblendvb reads each byte's top bit, so the codes shifted left by 3, 2, 1 are the masks)
// and, for bit 7, vpshufb's own zeroing of bytes whose index has the top bit set: ~35 ops per
// 32 lookups, against ~64 for 16 x (shuffle, compare, and, or). Tried and slower: telescoped
// prefix tables selected by saturating adds (no blends, ~48 ops: 3.95 vs 3.5 ns/code).
// The bytes are widened into even/odd u16 accumulators (no overflow for m <= 257; beyond that
// they wrap exactly like the scalar kernel's u16 sums).
#include <immintrin.h>  // AVX2 intrinsics

#include <cstdint>  // uintptr_t

#include "pypatch/simd/kernels.h"

namespace pypatch {
namespace {

inline __m256i row16(const uint8_t* t) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
}

// Sub-tables s .. s+2^D-1 looked up by idx and chosen by bits 4 .. 3+D of the codes.
template <int D>
inline __m256i select(const uint8_t* t, int s, __m256i idx, const __m256i* mask) {
  if constexpr (D == 0) {
    return _mm256_shuffle_epi8(row16(t + 16 * s), idx);
  } else {
    const __m256i a = select<D - 1>(t, s, idx, mask);
    const __m256i b = select<D - 1>(t, s + (1 << (D - 1)), idx, mask);
    return _mm256_blendv_epi8(a, b, mask[D - 1]);
  }
}

// qlut[code] for 32 codes, t one 256-byte table row.
inline __m256i lookup256(const uint8_t* t, __m256i c) {
  // Bit 4+d of each byte moved to bit 7 by doubling (byte adds: no carry into the next byte;
  // adds run on every vector port, shifts and shuffles compete for two).
  const __m256i c2 = _mm256_add_epi8(c, c), c4 = _mm256_add_epi8(c2, c2);
  const __m256i mask[3] = {_mm256_add_epi8(c4, c4), c4, c2};
  // Bit 7 by vpshufb's zeroing: indexed by c, sub-tables 0-7 give 0 for codes >= 128; indexed
  // by c ^ 0x80, sub-tables 8-15 give 0 for codes < 128; so the two halves just OR together.
  const __m256i lo = select<3>(t, 0, c, mask);
  const __m256i hi = select<3>(t, 8, _mm256_xor_si256(c, _mm256_set1_epi8(-128)), mask);
  return _mm256_or_si256(lo, hi);
}

// Stores 32 u16 sums in lane order: even[w] is patch 2w, odd[w] patch 2w + 1 (w per 128-bit
// lane: unpack interleaves within lanes, the permutes put the lanes back in order).
inline void store32(uint16_t* o, __m256i even, __m256i odd) {
  const __m256i a = _mm256_unpacklo_epi16(even, odd);  // patches 0-7 | 16-23
  const __m256i b = _mm256_unpackhi_epi16(even, odd);  // patches 8-15 | 24-31
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm256_permute2x128_si256(a, b, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 16), _mm256_permute2x128_si256(a, b, 0x31));
}

inline __m128i max8(__m128i a, __m128i b) { return _mm_max_epu16(a, b); }

}  // namespace

void qscan_blocks_avx2(const uint8_t* codes, int m, const uint8_t* qlut, int64_t b0, int64_t b1,
                       uint16_t* out) {
  const __m256i low_byte = _mm256_set1_epi16(0x00FF);
  // Prefetch 4 blocks ahead, as the VBMI kernel does. This kernel is compute-bound (as fast from
  // memory as from L1), so it matters less here; prefetches never fault past the end.
  constexpr int64_t kPrefetchBlocks = 4;
  const int64_t pf = kPrefetchBlocks * 64 * m;
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* c = codes + b * 64 * m;
    __m256i e0 = _mm256_setzero_si256(), o0 = e0, e1 = e0, o1 = e0;
    const uint8_t* t = qlut;
    for (int j = 0; j < m; ++j, c += 64, t += 256) {
      _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(c) + pf), _MM_HINT_T0);
      const __m256i v0 = lookup256(t, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
      const __m256i v1 = lookup256(t, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32)));
      e0 = _mm256_add_epi16(e0, _mm256_and_si256(v0, low_byte));
      o0 = _mm256_add_epi16(o0, _mm256_srli_epi16(v0, 8));
      e1 = _mm256_add_epi16(e1, _mm256_and_si256(v1, low_byte));
      o1 = _mm256_add_epi16(o1, _mm256_srli_epi16(v1, 8));
    }
    uint16_t* o = out + (b - b0) * 64;
    store32(o, e0, o0);
    store32(o + 32, e1, o1);
  }
}

// Reads only inside [off[i], off[i+1]): full 16-wide chunks, then one chunk ending at the
// image's end that overlaps the previous one (max is idempotent); short images use 8-wide or
// scalar reads. sc may end right after the last image, so nothing past it is touched.
void qsegmax_u16_avx2(int64_t n_images, const int64_t* off, const uint16_t* sc, int32_t* out) {
  for (int64_t i = 0; i < n_images; ++i) {
    const int64_t p0 = off[i], end = off[i + 1], n = end - p0;
    if (n <= 0) { out[i] = -1; continue; }
    if (n < 8) {
      int32_t best = sc[p0];
      for (int64_t p = p0 + 1; p < end; ++p) best = best > sc[p] ? best : sc[p];
      out[i] = best;
      continue;
    }
    __m128i q;
    if (n < 16) {
      q = max8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + p0)),
               _mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + end - 8)));
    } else {
      __m256i mx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc + end - 16));
      for (int64_t p = p0; p + 16 <= end; p += 16)
        mx = _mm256_max_epu16(mx, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc + p)));
      q = max8(_mm256_castsi256_si128(mx), _mm256_extracti128_si256(mx, 1));
    }
    // max of 8 u16 = ~min of their complements (phminposuw)
    q = _mm_minpos_epu16(_mm_xor_si128(q, _mm_set1_epi16(-1)));
    out[i] = 0xffff - (_mm_cvtsi128_si32(q) & 0xffff);
  }
}

}  // namespace pypatch
