// The 4-bit fast scan, AVX-512 (F + BW): as the AVX2 kernel (kernels_fs4_avx2.cpp), but one
// 64-byte load covers two pairs of sub-quantizers of a block: 128-bit lanes 0-1 hold pair g,
// lanes 2-3 pair g + 1, so the table registers are built once per call with row 2g in lanes
// 0-1 and row 2g + 2 in lanes 2-3 (low nibbles), rows 2g + 1 / 2g + 3 (high nibbles). The two
// 256-bit halves are added at the end (word sums mod 2^16, recovered exactly as in AVX2); an
// odd number of pairs ends with one 256-bit step.
#include <immintrin.h>  // AVX-512 intrinsics

#include "pypatch/index/code_layout_fs4.h"  // fs4 layout
#include "pypatch/simd/fastscan4.h"
#include "pypatch/simd/fastscan4_emit.h"    // Fs4Emitter

namespace pypatch {
namespace {
struct HeapTable {  // the tables of a large m (unnamed namespace: this TU's own copy)
  uint8_t* p = nullptr;
  ~HeapTable() { delete[] p; }
};
}  // namespace

void fs4_scan_avx512(const uint8_t* codes, int m, const uint8_t* qlut, const int64_t* off,
                     int64_t i0, int64_t i1, Fs4Sink* sink) {
  const int64_t p_begin = off[i0], p_end = off[i1];
  if (p_begin >= p_end) return;
  const int G = fs4_groups(m), G2 = G / 2;
  const int64_t bb = fs4_block_bytes(m);
  // Tables: lo/hi for each double pair (2 * G2 registers; m = 32: 16 registers, 1 KiB).
  alignas(64) uint8_t local[2 * 33 * 64];
  HeapTable heap;  // not std::vector: its out-of-line members would be shared with baseline code
  uint8_t* tab = local;
  if (G2 > 33) {
    heap.p = new uint8_t[static_cast<size_t>(2 * G2 * 64 + 64)];
    tab = heap.p + (64 - reinterpret_cast<uintptr_t>(heap.p) % 64) % 64;
  }
  for (int s = 0; s < G2; ++s)
    for (int h = 0; h < 2; ++h) {  // h = 0: low nibbles (even rows), 1: high nibbles
      // row 4s + h (pair 2s) in lanes 0-1, row 4s + 2 + h (pair 2s + 1) in lanes 2-3
      const __m256i a = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qlut + (4 * s + h) * 16)));
      const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qlut + (4 * s + 2 + h) * 16)));
      _mm512_store_si512(tab + (2 * s + h) * 64, _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1));
    }
  const uint8_t* tail_t = qlut + 4 * G2 * 16;  // rows of the last pair when G is odd
  Fs4Emitter em(off, i0, i1, sink);
  const __m512i nib = _mm512_set1_epi8(0x0f);
  const __m256i nib8 = _mm256_set1_epi8(0x0f);
  alignas(32) uint16_t ev[16], od[16], sc[kFs4Block];
  constexpr int64_t kPrefetchBlocks = 4;
  const int64_t b_end = (p_end + kFs4Block - 1) / kFs4Block;
  for (int64_t b = p_begin / kFs4Block; b < b_end; ++b) {
    const uint8_t* c = codes + b * bb;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    const uint8_t* t = tab;
    for (int s = 0; s < G2; ++s, c += 64, t += 128) {
      _mm_prefetch(reinterpret_cast<const char*>(c + kPrefetchBlocks * bb), _MM_HINT_T0);
      const __m512i x = _mm512_loadu_si512(c);
      const __m512i v0 = _mm512_shuffle_epi8(_mm512_load_si512(t), _mm512_and_si512(x, nib));
      const __m512i v1 = _mm512_shuffle_epi8(_mm512_load_si512(t + 64), _mm512_and_si512(_mm512_srli_epi16(x, 4), nib));
      a0 = _mm512_add_epi16(a0, _mm512_add_epi16(v0, v1));
      a1 = _mm512_add_epi16(a1, _mm512_add_epi16(_mm512_srli_epi16(v0, 8), _mm512_srli_epi16(v1, 8)));
    }
    __m256i y0 = _mm256_add_epi16(_mm512_castsi512_si256(a0), _mm512_extracti64x4_epi64(a0, 1));
    __m256i y1 = _mm256_add_epi16(_mm512_castsi512_si256(a1), _mm512_extracti64x4_epi64(a1, 1));
    if (G & 1) {  // last pair: 32 bytes, 256-bit step
      _mm_prefetch(reinterpret_cast<const char*>(c + kPrefetchBlocks * bb), _MM_HINT_T0);
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
      const __m256i tl = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tail_t)));
      const __m256i th = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tail_t + 16)));
      const __m256i v0 = _mm256_shuffle_epi8(tl, _mm256_and_si256(x, nib8));
      const __m256i v1 = _mm256_shuffle_epi8(th, _mm256_and_si256(_mm256_srli_epi16(x, 4), nib8));
      y0 = _mm256_add_epi16(y0, _mm256_add_epi16(v0, v1));
      y1 = _mm256_add_epi16(y1, _mm256_add_epi16(_mm256_srli_epi16(v0, 8), _mm256_srli_epi16(v1, 8)));
    }
    const __m256i even = _mm256_sub_epi16(y0, _mm256_slli_epi16(y1, 8)), odd = y1;
    const __m256i thr = _mm256_set1_epi16(static_cast<int16_t>(fs4_u16_threshold(sink->threshold)));
    const uint32_t me = _mm256_cmpge_epu16_mask(even, thr), mo = _mm256_cmpge_epu16_mask(odd, thr);
    if (!(me | mo)) continue;
    uint32_t mask = 0;  // interleave: bit 2w from me, bit 2w + 1 from mo (rare path)
    for (int w = 0; w < 16; ++w) mask |= ((me >> w) & 1u) << (2 * w) | ((mo >> w) & 1u) << (2 * w + 1);
    mask &= fs4_range_mask(b * kFs4Block, p_begin, p_end);
    if (!mask) continue;
    _mm256_store_si256(reinterpret_cast<__m256i*>(ev), even);
    _mm256_store_si256(reinterpret_cast<__m256i*>(od), odd);
    for (int w = 0; w < 16; ++w) { sc[2 * w] = ev[w]; sc[2 * w + 1] = od[w]; }
    em.block(b * kFs4Block, sc, mask);
  }
  em.flush();
}

}  // namespace pypatch
