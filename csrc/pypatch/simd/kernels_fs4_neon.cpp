// The 4-bit fast scan, NEON (aarch64 only; NEON is part of the base ISA there, so this file
// needs no extra flags): per block of 32 patches and pair g of sub-quantizers, two 16-byte
// loads; the low and high nibbles index the two 16-byte table rows with tbl (one register
// each: vqtbl1q_u8 is exactly pshufb without the zeroing rule, and every index is < 16). The
// looked-up bytes are widened into four u16x8 lane-order accumulators (uaddl + add), which
// wrap mod 2^16 like the scalar kernel's u16 sums (no wrap for m <= 257). A block whose 32 sums
// are all below the threshold costs a max-reduction, one compare and a branch; the rest goes to
// the shared emitter (fastscan4_emit.h, in an unnamed namespace: each kernel TU has its own copy).
#include <arm_neon.h>  // NEON intrinsics

#include <cstdint>  // uintptr_t

#include "pypatch/index/code_layout_fs4.h"  // fs4 layout
#include "pypatch/simd/fastscan4.h"
#include "pypatch/simd/fastscan4_emit.h"    // Fs4Emitter

namespace pypatch {

void fs4_scan_neon(const uint8_t* codes, int m, const uint8_t* qlut, const int64_t* off,
                   int64_t i0, int64_t i1, Fs4Sink* sink) {
  const int64_t p_begin = off[i0], p_end = off[i1];
  if (p_begin >= p_end) return;
  const int G = fs4_groups(m);
  const int64_t bb = fs4_block_bytes(m);
  Fs4Emitter em(off, i0, i1, sink);
  const uint8x16_t nib = vdupq_n_u8(0x0f);
  // Lane l of an accumulator holds patch 8 k + l of accumulator k; the bit weights turn four
  // u16 compare masks into the 32-bit patch mask.
  static constexpr uint16_t kBits[8] = {1, 2, 4, 8, 16, 32, 64, 128};
  const uint16x8_t bits = vld1q_u16(kBits);
  alignas(16) uint16_t s[kFs4Block];
  // Prefetch kPrefetchBlocks ahead: one line per pair of sub-quantizers covers a block's lines.
  constexpr int64_t kPrefetchBlocks = 4;
  const int64_t b_end = (p_end + kFs4Block - 1) / kFs4Block;
  for (int64_t b = p_begin / kFs4Block; b < b_end; ++b) {
    const uint8_t* c = codes + b * bb;
    uint16x8_t a0 = vdupq_n_u16(0), a1 = a0, a2 = a0, a3 = a0;
    const uint8_t* t = qlut;
    for (int g = 0; g < G; ++g, c += kFs4Block, t += 32) {
      if ((g & 1) == 0)  // a 64-byte line holds two pairs
        __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(c) + kPrefetchBlocks * bb), 0, 3);
      const uint8x16_t tl = vld1q_u8(t), th = vld1q_u8(t + 16);
      const uint8x16_t x0 = vld1q_u8(c), x1 = vld1q_u8(c + 16);  // patches 0-15, 16-31
      const uint8x16_t l0 = vqtbl1q_u8(tl, vandq_u8(x0, nib)), h0 = vqtbl1q_u8(th, vshrq_n_u8(x0, 4));
      const uint8x16_t l1 = vqtbl1q_u8(tl, vandq_u8(x1, nib)), h1 = vqtbl1q_u8(th, vshrq_n_u8(x1, 4));
      a0 = vaddq_u16(a0, vaddl_u8(vget_low_u8(l0), vget_low_u8(h0)));
      a1 = vaddq_u16(a1, vaddl_high_u8(l0, h0));
      a2 = vaddq_u16(a2, vaddl_u8(vget_low_u8(l1), vget_low_u8(h1)));
      a3 = vaddq_u16(a3, vaddl_high_u8(l1, h1));
    }
    const uint16_t t16 = fs4_u16_threshold(sink->threshold);
    if (vmaxvq_u16(vmaxq_u16(vmaxq_u16(a0, a1), vmaxq_u16(a2, a3))) < t16) continue;
    const uint16x8_t thr = vdupq_n_u16(t16);
    const uint32_t mask = (static_cast<uint32_t>(vaddvq_u16(vandq_u16(vcgeq_u16(a0, thr), bits)))) |
                          (static_cast<uint32_t>(vaddvq_u16(vandq_u16(vcgeq_u16(a1, thr), bits))) << 8) |
                          (static_cast<uint32_t>(vaddvq_u16(vandq_u16(vcgeq_u16(a2, thr), bits))) << 16) |
                          (static_cast<uint32_t>(vaddvq_u16(vandq_u16(vcgeq_u16(a3, thr), bits))) << 24);
    const uint32_t in_range = mask & fs4_range_mask(b * kFs4Block, p_begin, p_end);
    if (!in_range) continue;
    vst1q_u16(s, a0);
    vst1q_u16(s + 8, a1);
    vst1q_u16(s + 16, a2);
    vst1q_u16(s + 24, a3);
    em.block(b * kFs4Block, s, in_range);
  }
  em.flush();
}

}  // namespace pypatch
