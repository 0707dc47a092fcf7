// NEON quantised ADC scan over "blocked64" codes and its u16 segmented max (aarch64 only;
// NEON is part of the base ISA there, so this file needs no extra flags).
//
// A 256-byte table row is 16 q-registers; tbl/tbx with four registers look up 64 entries, and
// an index past 63 gives 0 (tbl) or keeps the destination (tbx). So qlut[c] for 16 codes is
// tbl(row[0:64], c), then tbx(row[64:128], c ^ 64), tbx(row[128:192], c ^ 128),
// tbx(row[192:256], c ^ 192): the xor brings exactly the codes of that quarter into 0..63 and
// leaves every other code at 64 or above. 7 ops per 16 lookups (+ 4 four-register loads of
// the row per 64), against ~35 per 32 for the AVX2 pshufb + blend tree. The bytes are widened straight into u16 lane-order accumulators
// (uaddw/uaddw2), which wrap mod 2^16 exactly as the scalar kernel's u16 sums do (no wrap for
// m <= 257).
#include <arm_neon.h>  // NEON intrinsics

#include <cstdint>  // uintptr_t

#include "pypatch/simd/kernels.h"

namespace pypatch {
namespace {

// qlut[c] for 64 codes (four registers) from one 256-byte table row t, a quarter at a time:
// each quarter is loaded straight into the four consecutive registers tbl/tbx read (ld1 x4; a
// struct of all 16 registers made GCC 12 copy the row through the stack).
inline void lookup256x4(const uint8_t* t, const uint8x16_t c[4], uint8x16_t v[4]) {
  uint8x16x4_t q = vld1q_u8_x4(t);
  for (int k = 0; k < 4; ++k) v[k] = vqtbl4q_u8(q, c[k]);
  for (int r = 1; r < 4; ++r) {
    q = vld1q_u8_x4(t + 64 * r);
    const uint8x16_t x = vdupq_n_u8(static_cast<uint8_t>(64 * r));
    for (int k = 0; k < 4; ++k) v[k] = vqtbx4q_u8(v[k], q, veorq_u8(c[k], x));
  }
}

}  // namespace

void qscan_blocks_neon(const uint8_t* codes, int m, const uint8_t* qlut, int64_t b0, int64_t b1,
                       uint16_t* out) {
  // Prefetch 4 blocks ahead, as the x86 kernels do; prfm never faults past the end.
  constexpr int64_t kPrefetchBlocks = 4;
  const int64_t pf = kPrefetchBlocks * 64 * m;
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* c = codes + b * 64 * m;
    uint16x8_t acc[8];
    for (auto& a : acc) a = vdupq_n_u16(0);
    const uint8_t* t = qlut;
    for (int j = 0; j < m; ++j, c += 64, t += 256) {
      __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(c) + pf), 0, 3);
      uint8x16_t x[4], v[4];
      for (int k = 0; k < 4; ++k) x[k] = vld1q_u8(c + 16 * k);  // patches 16 k .. 16 k + 15
      lookup256x4(t, x, v);
      for (int k = 0; k < 4; ++k) {
        acc[2 * k] = vaddw_u8(acc[2 * k], vget_low_u8(v[k]));
        acc[2 * k + 1] = vaddw_high_u8(acc[2 * k + 1], v[k]);
      }
    }
    uint16_t* o = out + (b - b0) * 64;
    for (int k = 0; k < 8; ++k) vst1q_u16(o + 8 * k, acc[k]);
  }
}

// Reads only inside [off[i], off[i+1]): 16-wide then 8-wide chunks, and one 8-wide chunk
// ending at the image's end that overlaps the previous ones (max is idempotent); images shorter
// than 8 are read one by one. sc may end right after the last image, so nothing past it is touched.
void qsegmax_u16_neon(int64_t n_images, const int64_t* off, const uint16_t* sc, int32_t* out) {
  for (int64_t i = 0; i < n_images; ++i) {
    const int64_t p0 = off[i], end = off[i + 1], n = end - p0;
    if (n <= 0) { out[i] = -1; continue; }
    if (n < 8) {
      int32_t best = sc[p0];
      for (int64_t p = p0 + 1; p < end; ++p) best = best > sc[p] ? best : sc[p];
      out[i] = best;
      continue;
    }
    uint16x8_t mx = vld1q_u16(sc + end - 8);
    int64_t p = p0;
    for (; p + 16 <= end; p += 16)
      mx = vmaxq_u16(mx, vmaxq_u16(vld1q_u16(sc + p), vld1q_u16(sc + p + 8)));
    if (p + 8 <= end) mx = vmaxq_u16(mx, vld1q_u16(sc + p));
    out[i] = vmaxvq_u16(mx);
  }
}

}  // namespace pypatch
