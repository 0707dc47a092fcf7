// Dispatch: picks the kernel table for the selected SIMD level. Baseline flags.
#include "pypatch/simd/kernels.h"

#include <string>  // error message

#include "pypatch/errors.h"  // InvalidArgument

namespace pypatch {

const KernelTable& kernels_for(SimdLevel level) {
  if (level > detected_simd_level())
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

}  // namespace pypatch
