// The 4-bit fast scan: scalar reference kernel and dispatch (baseline flags). The AVX2, AVX-512
// and NEON kernels must emit exactly what this one emits (tests/cpp/test_fastscan4.cpp).
#include "pypatch/index/code_layout_fs4.h"  // fs4 layout
#include "pypatch/simd/fastscan4.h"
#include "pypatch/simd/fastscan4_emit.h"    // Fs4Emitter
#include "pypatch/simd/simd_level.h"        // selected_simd_level

namespace pypatch {

void fs4_scan_scalar(const uint8_t* codes, int m, const uint8_t* qlut, const int64_t* off,
                     int64_t i0, int64_t i1, Fs4Sink* sink) {
  const int64_t p_begin = off[i0], p_end = off[i1];
  if (p_begin >= p_end) return;
  const int G = fs4_groups(m);
  Fs4Emitter em(off, i0, i1, sink);
  uint16_t s[kFs4Block];
  for (int64_t b = p_begin / kFs4Block; b * kFs4Block < p_end; ++b) {
    const uint8_t* c = codes + b * fs4_block_bytes(m);
    for (int l = 0; l < kFs4Block; ++l) s[l] = 0;
    for (int g = 0; g < G; ++g, c += kFs4Block) {
      const uint8_t* lo = qlut + 32 * g;  // row 2g
      const uint8_t* hi = lo + 16;        // row 2g + 1 (zero past m)
      for (int l = 0; l < kFs4Block; ++l)
        s[l] = static_cast<uint16_t>(s[l] + lo[c[l] & 15] + hi[c[l] >> 4]);
    }
    em.block(b * kFs4Block, s, fs4_range_mask(b * kFs4Block, p_begin, p_end));
  }
  em.flush();
}

Fs4ScanFn fastscan4_kernel_for(int level) {
  if (!simd_level_usable(static_cast<SimdLevel>(level))) return nullptr;
#ifdef PYPATCH_HAVE_AVX512
  if (level == static_cast<int>(SimdLevel::AVX512)) return fs4_scan_avx512;
#endif
#ifdef PYPATCH_HAVE_AVX2
  if (level == static_cast<int>(SimdLevel::AVX2)) return fs4_scan_avx2;
#endif
#ifdef PYPATCH_HAVE_NEON
  if (level == static_cast<int>(SimdLevel::NEON)) return fs4_scan_neon;
#endif
  if (level == static_cast<int>(SimdLevel::Scalar)) return fs4_scan_scalar;
  return nullptr;
}

Fs4ScanFn fastscan4_kernel() {
  const SimdLevel level = selected_simd_level();
  if (level == SimdLevel::Scalar) return nullptr;  // scalar level: the exact float path
  return fastscan4_kernel_for(static_cast<int>(level));
}

const char* fastscan4_kernel_name() {
  const Fs4ScanFn f = fastscan4_kernel();
#ifdef PYPATCH_HAVE_AVX512
  if (f == fs4_scan_avx512) return "avx512";
#endif
#ifdef PYPATCH_HAVE_AVX2
  if (f == fs4_scan_avx2) return "avx2";
#endif
#ifdef PYPATCH_HAVE_NEON
  if (f == fs4_scan_neon) return "neon";
#endif
  (void)f;
  return "";
}

}  // namespace pypatch
