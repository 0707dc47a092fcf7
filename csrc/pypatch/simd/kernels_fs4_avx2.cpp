// The 4-bit fast scan, AVX2 (-mavx2): per block of 32 patches and pair g of sub-quantizers,
// one 32-byte load; the low and high nibbles index two 16-byte table rows with vpshufb (each
// row broadcast to both lanes). The looked-up bytes are summed as u16 words (faiss's trick):
// a0 += v collects even + 256 * odd patches mod 2^16, a1 += v >> 8 the odd ones, so
// even = a0 - (a1 << 8) exactly while sums stay < 2^16 (m <= 257). A block whose 32 sums are all
// below the threshold costs one compare and a branch; the rest goes to the shared emitter.
#include <immintrin.h>  // AVX2 intrinsics

#include "pypatch/index/code_layout_fs4.h"  // fs4 layout
#include "pypatch/simd/fastscan4.h"
#include "pypatch/simd/fastscan4_emit.h"    // Fs4Emitter

namespace pypatch {

void fs4_scan_avx2(const uint8_t* codes, int m, const uint8_t* qlut, const int64_t* off,
                   int64_t i0, int64_t i1, Fs4Sink* sink) {
  const int64_t p_begin = off[i0], p_end = off[i1];
  if (p_begin >= p_end) return;
  const int G = fs4_groups(m);
  const int64_t bb = fs4_block_bytes(m);
  Fs4Emitter em(off, i0, i1, sink);
  const __m256i nib = _mm256_set1_epi8(0x0f);
  alignas(32) uint16_t ev[16], od[16], s[kFs4Block];
  // Prefetch kPrefetchBlocks ahead: one line per pair of sub-quantizers covers a block's lines.
  constexpr int64_t kPrefetchBlocks = 4;
  const int64_t b_end = (p_end + kFs4Block - 1) / kFs4Block;
  for (int64_t b = p_begin / kFs4Block; b < b_end; ++b) {
    const uint8_t* c = codes + b * bb;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0;
    const uint8_t* t = qlut;
    for (int g = 0; g < G; ++g, c += kFs4Block, t += 32) {
      if ((g & 1) == 0)  // a 64-byte line holds two pairs
        _mm_prefetch(reinterpret_cast<const char*>(c + kPrefetchBlocks * bb), _MM_HINT_T0);
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
      const __m256i tl = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
      const __m256i th = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t + 16)));
      const __m256i v0 = _mm256_shuffle_epi8(tl, _mm256_and_si256(x, nib));
      const __m256i v1 = _mm256_shuffle_epi8(th, _mm256_and_si256(_mm256_srli_epi16(x, 4), nib));
      a0 = _mm256_add_epi16(a0, _mm256_add_epi16(v0, v1));  // mod 2^16: fine, see above
      a1 = _mm256_add_epi16(a1, _mm256_add_epi16(_mm256_srli_epi16(v0, 8), _mm256_srli_epi16(v1, 8)));
    }
    const __m256i even = _mm256_sub_epi16(a0, _mm256_slli_epi16(a1, 8)), odd = a1;
    const __m256i thr = _mm256_set1_epi16(static_cast<int16_t>(fs4_u16_threshold(sink->threshold)));
    // u16 s >= thr  <=>  max(s, thr) == s
    const uint32_t me = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(even, thr), even)));
    const uint32_t mo = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(odd, thr), odd)));
    uint32_t mask = (me & 0x55555555u) | (mo & 0xaaaaaaaau);  // bit p: patch p of the block
    if (!mask) continue;
    mask &= fs4_range_mask(b * kFs4Block, p_begin, p_end);
    if (!mask) continue;
    _mm256_store_si256(reinterpret_cast<__m256i*>(ev), even);
    _mm256_store_si256(reinterpret_cast<__m256i*>(od), odd);
    for (int w = 0; w < 16; ++w) { s[2 * w] = ev[w]; s[2 * w + 1] = od[w]; }
    em.block(b * kFs4Block, s, mask);
  }
  em.flush();
}

}  // namespace pypatch
