// AVX-512 VBMI quantised ADC scan over "blocked64" codes (compiled with -mavx512vbmi on top of
// the AVX-512 flags; called only when cpuid reports VBMI).
//
// Each sub-quantizer's 256-entry u8 table is four 64-byte registers. For 64 patches at once:
//   lo  = vpermi2b(t0, codes, t1)  -> entries 0..127 selected by the low 7 bits
//   hi  = vpermi2b(t2, codes, t3)  -> entries 128..255
//   v   = blend(lo, hi, top bit of each code)
// and the bytes are widened into two u16 accumulators (even / odd patches), so sums of up to
// 257 tables of values <= 255 cannot overflow. faiss's 4-bit fast scan does the same with pshufb.
#include <immintrin.h>  // AVX-512 VBMI intrinsics

#include <cstdint>  // uintptr_t

#include "pypatch/simd/kernels.h"

namespace pypatch {

void qscan_blocks_avx512vbmi(const uint8_t* codes, int m, const uint8_t* qlut, int64_t b0,
                             int64_t b1, uint16_t* out) {
  const __m512i low_byte = _mm512_set1_epi16(0x00FF);
  // Output word w of the first half takes even[w/2] (w even) or odd[w/2] (w odd); second half +16.
  alignas(64) uint16_t perm_a[32], perm_b[32];
  for (int w = 0; w < 32; ++w) {
    perm_a[w] = static_cast<uint16_t>((w & 1 ? 32 : 0) + (w >> 1));
    perm_b[w] = static_cast<uint16_t>((w & 1 ? 32 : 0) + 16 + (w >> 1));
  }
  const __m512i pa = _mm512_load_si512(perm_a), pb = _mm512_load_si512(perm_b);
  auto lookup = [](const uint8_t* t, __m512i idx) {
    const __m512i lo = _mm512_permutex2var_epi8(_mm512_loadu_si512(t), idx, _mm512_loadu_si512(t + 64));
    const __m512i hi = _mm512_permutex2var_epi8(_mm512_loadu_si512(t + 128), idx, _mm512_loadu_si512(t + 192));
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi);
  };
  auto store = [&](uint16_t* o, __m512i even, __m512i odd) {
    _mm512_storeu_si512(o, _mm512_permutex2var_epi16(even, pa, odd));
    _mm512_storeu_si512(o + 32, _mm512_permutex2var_epi16(even, pb, odd));
  };
  int64_t b = b0;
  // Software prefetch kPrefetchBlocks blocks ahead: the scan is bound by memory latency at one
  // thread (the hardware prefetcher alone left it at 2.4 ns/code from DRAM on the loaded box;
  // with this, 1.8). Prefetches never fault, so running past the end of the codes is harmless.
  constexpr int64_t kPrefetchBlocks = 4;
  const int64_t pf = kPrefetchBlocks * 64 * m;
  for (; b + 2 <= b1; b += 2) {  // two blocks per pass: each table row is loaded once for both
    const uint8_t* c0 = codes + b * 64 * m;
    const uint8_t* c1 = c0 + 64 * m;
    __m512i e0 = _mm512_setzero_si512(), o0 = e0, e1 = e0, o1 = e0;
    const uint8_t* t = qlut;
    for (int j = 0; j < m; ++j, c0 += 64, c1 += 64, t += 256) {
      _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(c0) + pf), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(c1) + pf), _MM_HINT_T0);
      const __m512i t0 = _mm512_loadu_si512(t), t1 = _mm512_loadu_si512(t + 64);
      const __m512i t2 = _mm512_loadu_si512(t + 128), t3 = _mm512_loadu_si512(t + 192);
      const __m512i i0 = _mm512_loadu_si512(c0), i1 = _mm512_loadu_si512(c1);
      const __m512i v0 = _mm512_mask_blend_epi8(_mm512_movepi8_mask(i0), _mm512_permutex2var_epi8(t0, i0, t1),
                                                _mm512_permutex2var_epi8(t2, i0, t3));
      const __m512i v1 = _mm512_mask_blend_epi8(_mm512_movepi8_mask(i1), _mm512_permutex2var_epi8(t0, i1, t1),
                                                _mm512_permutex2var_epi8(t2, i1, t3));
      e0 = _mm512_add_epi16(e0, _mm512_and_si512(v0, low_byte));
      o0 = _mm512_add_epi16(o0, _mm512_srli_epi16(v0, 8));
      e1 = _mm512_add_epi16(e1, _mm512_and_si512(v1, low_byte));
      o1 = _mm512_add_epi16(o1, _mm512_srli_epi16(v1, 8));
    }
    store(out + (b - b0) * 64, e0, o0);
    store(out + (b + 1 - b0) * 64, e1, o1);
  }
  for (; b < b1; ++b) {
    const uint8_t* c = codes + b * 64 * m;
    __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
    const uint8_t* t = qlut;
    for (int j = 0; j < m; ++j, c += 64, t += 256) {
      const __m512i v = lookup(t, _mm512_loadu_si512(c));
      even = _mm512_add_epi16(even, _mm512_and_si512(v, low_byte));
      odd = _mm512_add_epi16(odd, _mm512_srli_epi16(v, 8));
    }
    store(out + (b - b0) * 64, even, odd);
  }
}

void qsegmax_u16_avx512vbmi(int64_t n_images, const int64_t* off, const uint16_t* sc, int32_t* out) {
  for (int64_t i = 0; i < n_images; ++i) {
    int64_t p = off[i];
    const int64_t end = off[i + 1];
    if (p == end) { out[i] = -1; continue; }
    __m512i mx = _mm512_setzero_si512();
    for (; p < end; p += 32) {
      const int64_t left = end - p;
      const __mmask32 k = left >= 32 ? 0xffffffffu : ((1u << left) - 1);
      mx = _mm512_max_epu16(mx, _mm512_maskz_loadu_epi16(k, sc + p));
    }
    __m256i h = _mm256_max_epu16(_mm512_castsi512_si256(mx), _mm512_extracti64x4_epi64(mx, 1));
    __m128i q = _mm_max_epu16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    // max of 8 u16 = ~min of their complements (phminposuw)
    q = _mm_minpos_epu16(_mm_xor_si128(q, _mm_set1_epi16(-1)));
    out[i] = 0xffff - (_mm_cvtsi128_si32(q) & 0xffff);
  }
}

}  // namespace pypatch
