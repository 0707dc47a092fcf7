// NEON quantised ADC scan over "blocked64" codes and its u16 segmented max (aarch64 only;
// NEON is part of the base ISA there, so this file needs no extra flags).
//
// A 256-byte table row is 16 q-registers; tbl/tbx with four registers look up 64 entries, and
// an index past 63 gives 0 (tbl) or keeps the destination (tbx). So qlut[c] for 16 codes is
// tbl(row[0:64], c), then tbx(row[64:128], c ^ 64), tbx(row[128:192], c ^ 128),
// tbx(row[192:256], c ^ 192): the xor brings exactly the codes of that quarter into 0..63 and
// leaves every other code at 64 or above. 7 ops per 16 lookups, against ~35 per 32 for the
// AVX2 pshufb + blend tree. The bytes are widened straight into u16 lane-order accumulators
// (uaddw/uaddw2), which wrap mod 2^16 exactly as the scalar kernel's u16 sums do (no wrap for
// m <= 257).
#include <arm_neon.h>  // NEON intrinsics

#include <cstdint>  // uintptr_t

#include "pypatch/simd/kernels.h"

namespace pypatch {
namespace {

struct Row256 {
  uint8x16x4_t q[4];  // entries 64 r .. 64 r + 63 in q[r]
};

inline Row256 load_row(const uint8_t* t) {
  Row256 r;
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 4; ++i) r.q[k].val[i] = vld1q_u8(t + 64 * k + 16 * i);
  return r;
}

// qlut[c] for 16 codes.
inline uint8x16_t lookup256(const Row256& r, uint8x16_t c) {
  uint8x16_t v = vqtbl4q_u8(r.q[0], c);
  v = vqtbx4q_u8(v, r.q[1], veorq_u8(c, vdupq_n_u8(64)));
  v = vqtbx4q_u8(v, r.q[2], veorq_u8(c, vdupq_n_u8(128)));
  return vqtbx4q_u8(v, r.q[3], veorq_u8(c, vdupq_n_u8(192)));
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
      const Row256 row = load_row(t);
      for (int k = 0; k < 4; ++k) {  // patches 16 k .. 16 k + 15
        const uint8x16_t v = lookup256(row, vld1q_u8(c + 16 * k));
        acc[2 * k] = vaddw_u8(acc[2 * k], vget_low_u8(v));
        acc[2 * k + 1] = vaddw_high_u8(acc[2 * k + 1], v);
      }
    }
    uint16_t* o = out + (b - b0) * 64;
    for (int k = 0; k < 8; ++k) vst1q_u16(o + 8 * k, acc[k]);
  }
}

// Reads only inside [off[i], off[i+1]): full 8-wide chunks, then one chunk ending at the
// image's end that overlaps the previous one (max is idempotent); images shorter than 8 are
// read one by one. sc may end right after the last image, so nothing past it is touched.
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
