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
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* c = codes + b * 64 * m;
    __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
    const uint8_t* t = qlut;
    for (int j = 0; j < m; ++j, c += 64, t += 256) {
      const __m512i idx = _mm512_loadu_si512(c);
      const __m512i lo = _mm512_permutex2var_epi8(_mm512_loadu_si512(t), idx, _mm512_loadu_si512(t + 64));
      const __m512i hi = _mm512_permutex2var_epi8(_mm512_loadu_si512(t + 128), idx, _mm512_loadu_si512(t + 192));
      const __m512i v = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi);
      even = _mm512_add_epi16(even, _mm512_and_si512(v, low_byte));
      odd = _mm512_add_epi16(odd, _mm512_srli_epi16(v, 8));
    }
    uint16_t* o = out + (b - b0) * 64;
    _mm512_storeu_si512(o, _mm512_permutex2var_epi16(even, pa, odd));
    _mm512_storeu_si512(o + 32, _mm512_permutex2var_epi16(even, pb, odd));
  }
}

}  // namespace pypatch
