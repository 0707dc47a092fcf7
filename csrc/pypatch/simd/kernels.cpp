// Dispatch: picks the kernel table for the selected SIMD level. Baseline flags.
#include "pypatch/simd/kernels.h"

#include <string>  // error message

#include "pypatch/errors.h"  // InvalidArgument

namespace pypatch {

const KernelTable& kernels_for(SimdLevel level) {
  if (!simd_level_usable(level))
    throw InvalidArgument(std::string("SIMD level '") + simd_level_name(level) +
                          "' is not available on this build/CPU");
  switch (level) {
#ifdef PYPATCH_HAVE_AVX512
    case SimdLevel::AVX512: return kernel_table_avx512();
#endif
#ifdef PYPATCH_HAVE_AVX2
    case SimdLevel::AVX2: return kernel_table_avx2();
#endif
    default: return kernel_table_scalar();
  }
}

const KernelTable& kernels() { return kernels_for(selected_simd_level()); }

QuantScanFn quant_scan_kernel() {
  const SimdLevel level = selected_simd_level();
#ifdef PYPATCH_HAVE_AVX512VBMI
  if (level == SimdLevel::AVX512 && cpu_has_avx512vbmi()) return qscan_blocks_avx512vbmi;
#endif
#ifdef PYPATCH_HAVE_AVX2
  if (level == SimdLevel::AVX2 || level == SimdLevel::AVX512) return qscan_blocks_avx2;
#endif
#ifdef PYPATCH_HAVE_NEON
  if (level == SimdLevel::NEON) return qscan_blocks_neon;
#endif
  (void)level;
  return nullptr;
}

const char* quant_scan_kernel_name() {
  const QuantScanFn f = quant_scan_kernel();
#ifdef PYPATCH_HAVE_AVX512VBMI
  if (f == qscan_blocks_avx512vbmi) return "avx512vbmi";
#endif
#ifdef PYPATCH_HAVE_AVX2
  if (f == qscan_blocks_avx2) return "avx2";
#endif
#ifdef PYPATCH_HAVE_NEON
  if (f == qscan_blocks_neon) return "neon";
#endif
  (void)f;
  return "";
}

QuantSegmaxFn quant_segmax_kernel() {
  const QuantScanFn f = quant_scan_kernel();
#ifdef PYPATCH_HAVE_AVX512VBMI
  if (f == qscan_blocks_avx512vbmi) return qsegmax_u16_avx512vbmi;
#endif
#ifdef PYPATCH_HAVE_AVX2
  if (f == qscan_blocks_avx2) return qsegmax_u16_avx2;
#endif
#ifdef PYPATCH_HAVE_NEON
  if (f == qscan_blocks_neon) return qsegmax_u16_neon;
#endif
  (void)f;
  return qsegmax_u16_scalar;
}

void qsegmax_u16_scalar(int64_t n_images, const int64_t* off, const uint16_t* sc, int32_t* out) {
  for (int64_t i = 0; i < n_images; ++i) {
    int32_t best = -1;
    for (int64_t p = off[i]; p < off[i + 1]; ++p) best = best > sc[p] ? best : sc[p];
    out[i] = best;
  }
}

void qscan_blocks_scalar(const uint8_t* codes, int m, const uint8_t* qlut, int64_t b0, int64_t b1,
                         uint16_t* out) {
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* c = codes + b * 64 * m;
    uint16_t* o = out + (b - b0) * 64;
    for (int l = 0; l < 64; ++l) o[l] = 0;
    for (int j = 0; j < m; ++j, c += 64)
      for (int l = 0; l < 64; ++l) o[l] = static_cast<uint16_t>(o[l] + qlut[j * 256 + c[l]]);
  }
}

}  // namespace pypatch
